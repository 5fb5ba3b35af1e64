//! The server's prometheus metrics (default registry, served on `/metrics`).

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

pub struct Metrics {
    pub raft_messages_sent: IntCounter,
    pub raft_messages_dropped: IntCounterVec,
    pub raft_messages_received: IntCounter,
    pub raft_batches_queued: IntGauge,
    pub raft_bytes_queued: IntGauge,
    pub store_connections: IntGauge,
    pub store_reconnects: IntCounter,
    pub snapshots_sent: IntCounterVec,
    pub snapshots_received: IntCounterVec,
    pub kv_requests: IntCounterVec,
    pub kv_errors: IntCounterVec,
    pub kv_duration: HistogramVec,
    pub batch_commands_streams: IntGauge,
    pub batch_commands_in_flight: IntGauge,
    pub batch_commands_responses: Histogram,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    raft_messages_sent: register(
        IntCounter::new(
            "regionstore_raft_messages_sent_total",
            "Raft messages handed to store-to-store streams.",
        )
        .expect("valid metric"),
    ),
    raft_messages_dropped: register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_raft_messages_dropped_total",
                "Raft messages dropped before sending (raft retransmits), by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric"),
    ),
    raft_messages_received: register(
        IntCounter::new(
            "regionstore_raft_messages_received_total",
            "Raft messages received from other stores.",
        )
        .expect("valid metric"),
    ),
    raft_batches_queued: register(
        IntGauge::new(
            "regionstore_raft_batches_queued",
            "Message batches waiting in the per-store send queues.",
        )
        .expect("valid metric"),
    ),
    raft_bytes_queued: register(
        IntGauge::new(
            "regionstore_raft_bytes_queued",
            "Bytes of message batches waiting in the per-store send queues \
             (bounded per store by raft-msg-queue-bytes).",
        )
        .expect("valid metric"),
    ),
    store_connections: register(
        IntGauge::new(
            "regionstore_store_connections",
            "Open store-to-store raft streams.",
        )
        .expect("valid metric"),
    ),
    store_reconnects: register(
        IntCounter::new(
            "regionstore_store_reconnects_total",
            "Store-to-store raft streams that failed and were opened again.",
        )
        .expect("valid metric"),
    ),
    snapshots_sent: register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_snapshots_sent_total",
                "Snapshot streams sent, by result.",
            ),
            &["result"],
        )
        .expect("valid metric"),
    ),
    snapshots_received: register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_snapshots_received_total",
                "Snapshot streams received, by result.",
            ),
            &["result"],
        )
        .expect("valid metric"),
    ),
    kv_requests: register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_kv_requests_total",
                "Raw KV requests, by method.",
            ),
            &["method"],
        )
        .expect("valid metric"),
    ),
    kv_errors: register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_kv_errors_total",
                "Raw KV requests answered with an error, by method and kind.",
            ),
            &["method", "kind"],
        )
        .expect("valid metric"),
    ),
    kv_duration: register(
        HistogramVec::new(
            HistogramOpts::new(
                "regionstore_kv_request_duration_seconds",
                "Raw KV request handling time, by method.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
            &["method"],
        )
        .expect("valid metric"),
    ),
    batch_commands_streams: register(
        IntGauge::new(
            "regionstore_batch_commands_streams",
            "Open BatchCommands streams from clients.",
        )
        .expect("valid metric"),
    ),
    batch_commands_in_flight: register(
        IntGauge::new(
            "regionstore_batch_commands_in_flight",
            "Commands received on BatchCommands streams and not yet answered \
             (bounded per stream by batch-commands-max-in-flight).",
        )
        .expect("valid metric"),
    ),
    batch_commands_responses: register(
        Histogram::with_opts(
            HistogramOpts::new(
                "regionstore_batch_commands_responses",
                "Answers per BatchCommandsResponse message \
                 (bound: batch-commands-max-responses).",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 13).expect("valid buckets")),
        )
        .expect("valid metric"),
    ),
});
