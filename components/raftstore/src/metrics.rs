//! The store's prometheus metrics (default registry; the server exposes them). Process-wide:
//! several stores in one process (the test cluster) add up. Per-store counters for tests and
//! benches are in `fsm::StoreStats`.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

pub struct Metrics {
    pub ready_rounds: IntCounter,
    pub log_fsyncs: IntCounter,
    pub entries_per_fsync: Histogram,
    pub regions_per_fsync: Histogram,
    pub apply_batch_entries: Histogram,
    pub proposal_batch_commands: Histogram,
    pub apply_batch_bytes: Histogram,
    pub propose_to_apply: Histogram,
    /// `regionstore_write_hop_seconds{hop}`: the write path's cost model, hop by hop.
    pub write_hop: WriteHops,
    pub raft_mailbox_backlog: Histogram,
    pub ticks_coalesced: IntCounter,
    pub region_heartbeat_batch: Histogram,
    pub heartbeats_dropped: IntCounter,
    pub apply_mailbox_backlog: Histogram,
    pub regions: IntGauge,
    pub log_compactions: IntCounter,
    pub snapshots_sending: IntGauge,
    pub snapshots_receiving: IntGauge,
    pub snapshot_transfers_refused: IntCounter,
    pub split_checks: IntCounter,
    pub regions_split: IntCounter,
    pub regions_awake: IntGauge,
    pub regions_hibernated: IntGauge,
    pub hibernate_wakeups: IntCounterVec,
    pub stores_down: IntGauge,
    pub store_writer_queue: IntGauge,
    pub store_writer_rounds_per_write: Histogram,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Fails only if the name is taken (a second copy of the crate); the metric still works.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::with_opts(Opts::new(name, help)).expect("valid static metric"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::with_opts(Opts::new(name, help)).expect("valid static metric"))
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("valid static metric"),
    )
}

/// The hops of `regionstore_write_hop_seconds`, resolved once (a label lookup hashes).
pub struct WriteHops {
    pub mailbox: Histogram,
    pub propose_to_commit: Histogram,
    pub log_write: Histogram,
    pub log_queue: Histogram,
    pub apply_wait: Histogram,
    pub apply_write: Histogram,
    pub total: Histogram,
}

impl WriteHops {
    fn new(vec: HistogramVec) -> WriteHops {
        let hop = |name: &str| vec.with_label_values(&[name]);
        WriteHops {
            mailbox: hop("mailbox"),
            propose_to_commit: hop("propose_to_commit"),
            log_write: hop("log_write"),
            log_queue: hop("log_queue"),
            apply_wait: hop("apply_wait"),
            apply_write: hop("apply_write"),
            total: hop("total"),
        }
    }
}

fn counts() -> Vec<f64> {
    prometheus::exponential_buckets(1.0, 2.0, 16).expect("valid buckets")
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    ready_rounds: counter(
        "regionstore_raft_ready_rounds_total",
        "Raft poll rounds (each ends with at most one raft-log write).",
    ),
    log_fsyncs: counter(
        "regionstore_raft_log_fsyncs_total",
        "Raft-log writes with fsync (one per round that had something to persist).",
    ),
    entries_per_fsync: histogram(
        "regionstore_raft_entries_per_fsync",
        "Entries made durable by one raft-log fsync: the group-commit factor.",
        counts(),
    ),
    regions_per_fsync: histogram(
        "regionstore_raft_regions_per_fsync",
        "Regions whose entries shared one raft-log fsync (bound: max-batch-size; with the \
         store writer, a region in two merged rounds counts twice).",
        counts(),
    ),
    proposal_batch_commands: histogram(
        "regionstore_proposal_batch_commands",
        "Writes proposed together as one raft entry (bound: proposal-batch-max-commands).",
        counts(),
    ),
    apply_batch_entries: histogram(
        "regionstore_apply_batch_entries",
        "Entries applied by one KV write of an apply round.",
        counts(),
    ),
    apply_batch_bytes: histogram(
        "regionstore_apply_batch_bytes",
        "Bytes of one KV write of an apply round.",
        prometheus::exponential_buckets(256.0, 4.0, 12).expect("valid buckets"),
    ),
    propose_to_apply: histogram(
        "regionstore_propose_to_apply_seconds",
        "From a proposal being accepted by the leader to its callback after the apply write.",
        prometheus::exponential_buckets(0.0001, 2.0, 20).expect("valid buckets"),
    ),
    write_hop: WriteHops::new(register(
        HistogramVec::new(
            HistogramOpts::new(
                "regionstore_write_hop_seconds",
                "The write path hop by hop (docs/design/write-path.md, \"Cost model\"): mailbox \
                 (a write's wait in its region's mailbox until a raft round takes it), \
                 propose_to_commit (until the leader hands its entry to apply), log_write (one \
                 raft-engine write and fsync, by a raft round or the store writer), log_queue \
                 (a round's wait for the store writer), apply_wait (committed entries' wait \
                 for an apply round), apply_write (one apply round's KV write), total (a write \
                 through StoreApi, from its send to its answer).",
            )
            .buckets(prometheus::exponential_buckets(0.00002, 2.0, 20).expect("valid buckets")),
            &["hop"],
        )
        .expect("valid static metric"),
    )),
    raft_mailbox_backlog: histogram(
        "regionstore_raft_mailbox_backlog",
        "Messages a peer took from its mailbox in one round (bound: messages-per-tick; \
         capacity: peer-mailbox-capacity).",
        counts(),
    ),
    ticks_coalesced: counter(
        "regionstore_raft_ticks_coalesced_total",
        "Ticks dropped because an earlier one was still waiting in the same peer's mailbox \
         (a poller that lags does not run election timeouts out in a moment).",
    ),
    region_heartbeat_batch: histogram(
        "regionstore_region_heartbeat_batch",
        "Region heartbeats the scheduler worker sent at once (bound: heartbeat-concurrency).",
        counts(),
    ),
    heartbeats_dropped: counter(
        "regionstore_heartbeats_dropped_total",
        "Store and region heartbeats not queued for the scheduler worker because its queue was \
         full (bound: heartbeat-queue-capacity). The worker asks a leader whose report was \
         dropped to report again once the queue has room.",
    ),
    apply_mailbox_backlog: histogram(
        "regionstore_apply_mailbox_backlog",
        "Tasks an apply FSM took from its mailbox in one round.",
        counts(),
    ),
    log_compactions: counter(
        "regionstore_raft_log_compactions_total",
        "Raft-log compactions done after an applied CompactLog.",
    ),
    snapshots_sending: gauge(
        "regionstore_snapshots_sending",
        "Snapshots being sent now (bound per store: snap-max-concurrent-sends).",
    ),
    snapshots_receiving: gauge(
        "regionstore_snapshots_receiving",
        "Snapshots being received now (bound per store: snap-max-concurrent-recvs).",
    ),
    snapshot_transfers_refused: counter(
        "regionstore_snapshot_transfers_refused_total",
        "Snapshot sends or receives refused because the concurrency limit was reached.",
    ),
    split_checks: counter(
        "regionstore_split_checks_total",
        "Regions measured against the split thresholds.",
    ),
    regions_split: counter(
        "regionstore_regions_split_total",
        "Regions created by splits on this process's stores (each store counts its peers).",
    ),
    store_writer_queue: gauge(
        "regionstore_store_writer_queue",
        "Raft rounds waiting for the store writer (capacity: store-io-queue-capacity).",
    ),
    store_writer_rounds_per_write: histogram(
        "regionstore_store_writer_rounds_per_write",
        "Raft rounds the store writer merged into one raft-log write (bound: \
         store-io-queue-capacity).",
        counts(),
    ),
    regions_awake: gauge(
        "regionstore_awake_regions",
        "Region peers ticked every base tick (the rest hibernate).",
    ),
    regions_hibernated: gauge(
        "regionstore_hibernated_regions",
        "Region peers hibernating: not ticked, no raft heartbeats (hibernate-regions).",
    ),
    hibernate_wakeups: register(
        IntCounterVec::new(
            Opts::new(
                "regionstore_hibernate_wakeups_total",
                "Hibernating peers woken, by cause (write, read, raft, admin, store_down; \
                 store_down wakes are paced by hibernate-wake-batch).",
            ),
            &["cause"],
        )
        .expect("valid static metric"),
    ),
    stores_down: gauge(
        "regionstore_stores_down",
        "Other stores this process's stores have not heard a liveness heartbeat from for an \
         election timeout.",
    ),
    regions: register(
        IntGauge::with_opts(Opts::new(
            "regionstore_regions",
            "Regions hosted by the stores of this process.",
        ))
        .expect("valid static metric"),
    ),
});
