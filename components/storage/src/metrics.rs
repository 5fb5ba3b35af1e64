//! The storage layer's prometheus metrics (default registry, served on `/metrics`).

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

pub struct Metrics {
    pub gc_versions_scanned: IntCounter,
    pub gc_versions_deleted: IntCounter,
    pub gc_safe_point: IntGauge,
    pub gc_region_passes: IntCounterVec,
    pub memory_locks: IntGauge,
    pub max_ts_syncs: IntCounter,
    pub undetermined_latches: IntGauge,
    pub lock_waiters: IntGauge,
    pub deadlocks: IntCounter,
    pub deadlock_detect_failures: IntCounter,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    gc_versions_scanned: register(
        IntCounter::new(
            "regionstore_gc_versions_scanned_total",
            "MVCC versions the GC worker looked at.",
        )
        .expect("valid metric"),
    ),
    gc_versions_deleted: register(
        IntCounter::new(
            "regionstore_gc_versions_deleted_total",
            "MVCC versions (write records) the GC worker deleted.",
        )
        .expect("valid metric"),
    ),
    gc_safe_point: register(
        IntGauge::new(
            "regionstore_gc_safe_point",
            "The GC safe point the worker last collected up to.",
        )
        .expect("valid metric"),
    ),
    gc_region_passes: register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_gc_region_passes_total",
                "GC passes over a region, by result (done, not_leader, failed).",
            ),
            &["result"],
        )
        .expect("valid metric"),
    ),
    memory_locks: register(
        IntGauge::new(
            "regionstore_txn_memory_locks",
            "Locks of async-commit and one-phase prewrites still being replicated.",
        )
        .expect("valid metric"),
    ),
    max_ts_syncs: register(
        IntCounter::new(
            "regionstore_txn_max_ts_syncs_total",
            "Times a new leader raised max_ts to a fresh timestamp before async commit.",
        )
        .expect("valid metric"),
    ),
    lock_waiters: register(
        IntGauge::new(
            "regionstore_txn_lock_waiters",
            "Pessimistic lock requests waiting for another transaction's lock.",
        )
        .expect("valid metric"),
    ),
    deadlocks: register(
        IntCounter::new(
            "regionstore_txn_deadlocks_total",
            "Pessimistic lock requests answered Deadlock (their wait would close a cycle).",
        )
        .expect("valid metric"),
    ),
    deadlock_detect_failures: register(
        IntCounter::new(
            "regionstore_txn_deadlock_detect_failures_total",
            "Lock waits the cluster's deadlock detector did not check (queue full, answer \
             late, scheduler failed or paused after a failure, detector full) and clean-ups \
             not sent (their edges expire by TTL); unchecked waits end by their timeout.",
        )
        .expect("valid metric"),
    ),
    undetermined_latches: register(
        IntGauge::new(
            "regionstore_txn_undetermined_latches",
            "Commands whose write timed out undetermined, holding their latches until it \
             settles.",
        )
        .expect("valid metric"),
    ),
});
