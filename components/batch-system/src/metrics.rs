//! Prometheus metrics of every batch system, labelled by the system's name (`raftstore`,
//! `apply`, ...). They live in the default registry, which the status server exposes.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    // Registration fails only if the name is taken, e.g. by a second copy of this crate in one
    // binary; the metric still works, it just is not exported twice.
    let _ = prometheus::default_registry().register(Box::new(collector.clone()));
    collector
}

static MAILBOX_FULL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_batch_system_mailbox_full_total",
                "Sends rejected because the target mailbox was full (bound: mailbox_capacity).",
            ),
            &["system"],
        )
        .expect("static metric definition is valid"),
    )
});

static FSM_COUNT: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "regionstore_batch_system_fsm_count",
                "Normal FSMs registered in the router.",
            ),
            &["system"],
        )
        .expect("static metric definition is valid"),
    )
});

static BATCH_SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "regionstore_batch_system_poll_batch_size",
                "FSMs handled in one poll round (bound: max_batch_size).",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
            &["system"],
        )
        .expect("static metric definition is valid"),
    )
});

static MESSAGES_HANDLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_batch_system_messages_handled_total",
                "Messages handed to handlers (at most messages_per_tick per FSM per round).",
            ),
            &["system"],
        )
        .expect("static metric definition is valid"),
    )
});

static YIELDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_batch_system_fsm_yield_total",
                "Times an FSM with messages left went to the back of the queue so others could run.",
            ),
            &["system"],
        )
        .expect("static metric definition is valid"),
    )
});

/// The metrics of one named system, resolved once so hot paths do not look labels up.
#[derive(Clone)]
pub struct SystemMetrics {
    pub mailbox_full: IntCounter,
    pub fsm_count: IntGauge,
    pub batch_size: Histogram,
    pub messages_handled: IntCounter,
    pub yields: IntCounter,
}

impl SystemMetrics {
    pub fn new(system: &str) -> SystemMetrics {
        SystemMetrics {
            mailbox_full: MAILBOX_FULL.with_label_values(&[system]),
            fsm_count: FSM_COUNT.with_label_values(&[system]),
            batch_size: BATCH_SIZE.with_label_values(&[system]),
            messages_handled: MESSAGES_HANDLED.with_label_values(&[system]),
            yields: YIELDS.with_label_values(&[system]),
        }
    }
}
