//! Deterministic simulation of a whole regionstore cluster: N stores and the scheduler run
//! in one thread, in virtual time, driven by one seeded random stream, under faults the seed
//! chooses (power cuts that lose unsynced writes, partitions, message loss, duplication and
//! reordering, lost big messages, paused and overloaded stores, slow disks, disk faults,
//! scheduler restarts) while clients put, get, delete, compare-and-swap (the service's own code,
//! `storage::raw_cas`), batch-put and scan, and splits, leader transfers and membership
//! changes run. The history is judged by the linearizability checker, replicas must agree at
//! the end, and a failing seed leaves artifacts a person can read (`artifacts`).
//!
//! # Invariants
//! - The stores are the real `StoreSystem` (run by hand: `StoreBuilder::manual`), the real
//!   scheduler and the real raft-rs; only the disks (`MemEngine`, the in-memory raft log,
//!   the snapshot files' `MemFileSystem`) and the network are simulated. Nothing here ships.
//! - Time is the one `ManualClock`: it moves only between steps, by 1 ms.
//! - A power cut stops a store between two steps and rolls its disks back to their last
//!   sync: what the store acknowledged must survive it.
//!
//! # Must not depend on
//! gRPC, the server or the client crates: it drives stores through `StoreApi`.

mod artifacts;
mod bank;
mod cluster;
mod net;
mod runtime;
mod seeds;
mod workload;

use std::time::Duration;

use std::collections::BTreeMap;

pub use linearizability::Outcome;
use linearizability::{check_group, check_key, GroupOperation, Operation, DEFAULT_STEP_BUDGET};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use scheduler::AdminOp;

pub use artifacts::write_artifacts;
pub use bank::BankStats;
pub use net::{LinkConfig, NetStats};
pub use seeds::TEST_SEEDS;
pub use workload::WorkloadStats;

use bank::Bank;
pub use cluster::PowerCutLoss;
use cluster::SimCluster;
use net::SimNetwork;
use workload::{Workload, GROUP, KEYS, SPLIT_POINTS};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("simulation setup failed: {0}")]
    Setup(String),
    #[error("store {store_id} failed to restart: {source}")]
    Restart {
        store_id: u64,
        #[source]
        source: raftstore::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What one simulation runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub stores: u64,
    pub replicas: u64,
    pub clients: usize,
    /// Clients of the bank: transfers between accounts in different regions as
    /// transactions, and audits of the total.
    pub bank_clients: usize,
    /// Virtual time of the faulty part, before the final heal.
    pub duration_ms: u64,
    /// Whether faults are injected (off: a fault-free baseline).
    pub faults: bool,
    /// A bug planted to show the checkers catch it.
    pub plant: Option<Plant>,
    /// Store settings laid over the simulation's own (`regionstore sim --store-config`): to
    /// count a setting's cost on the same schedule, say.
    pub tune: Option<StoreTune>,
}

/// A change to store settings that refuses settings that do not validate.
pub type TuneFn = dyn Fn(&mut raftstore::Config) -> std::result::Result<(), String> + Send + Sync;

/// Changes to the simulation's store settings, applied after its own.
#[derive(Clone)]
pub struct StoreTune {
    pub apply: std::sync::Arc<TuneFn>,
    /// Where the changes come from (the file), for replay lines.
    pub source: String,
}

impl std::fmt::Debug for StoreTune {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreTune({})", self.source)
    }
}

/// Bugs the simulator can plant, to prove its checks fail when they should.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// The raft logs' fsync makes nothing durable: power cuts lose acknowledged writes (and
    /// stores find their logs behind their applied data at restart).
    LyingFsync,
    /// Every write whose outcome is unknown is taken as refused, as if the store answered
    /// `StaleCommand` where it should say `Undetermined` (the bug the simulator found): the
    /// history then misses writes that did apply.
    UnknownReportedAsRefused,
    /// A leader serves lease reads whatever its lease (store failpoint
    /// `plant_lease_read_without_lease`). Caught when an overloaded leader (its ticks, so its
    /// check-quorum, 20× late) is cut off while a new leader takes writes.
    LeaseReadWithoutLease,
    /// Apply skips the epoch and range checks of writes (store failpoint
    /// `plant_skip_epoch_check_at_apply`). Caught by the replica check during the run: a write
    /// proposed before a split and applied after it lands in the new region's range on some
    /// of its replicas only.
    SkipEpochCheckAtApply,
    /// A compare-and-swap whose write's outcome is unknown releases the key's latch with its
    /// answer, instead of when the write can no longer apply (store failpoint
    /// `plant_release_cas_latch_early`).
    ReleaseCasLatchEarly,
    /// The apply round of a log compaction is not synced (store failpoint
    /// `plant_skip_compact_log_sync`): a power cut then loses the new truncated state and the
    /// data of the entries the (synced) raft log no longer has.
    SkipCompactLogSync,
}

impl Plant {
    pub const ALL: [Plant; 6] = [
        Plant::LyingFsync,
        Plant::UnknownReportedAsRefused,
        Plant::LeaseReadWithoutLease,
        Plant::SkipEpochCheckAtApply,
        Plant::SkipCompactLogSync,
        Plant::ReleaseCasLatchEarly,
    ];

    /// Its name on `regionstore sim --plant`.
    pub fn name(self) -> &'static str {
        match self {
            Plant::LyingFsync => "lying-fsync",
            Plant::UnknownReportedAsRefused => "unknown-as-refused",
            Plant::LeaseReadWithoutLease => "lease-read-without-lease",
            Plant::SkipEpochCheckAtApply => "skip-epoch-check-at-apply",
            Plant::SkipCompactLogSync => "skip-compact-log-sync",
            Plant::ReleaseCasLatchEarly => "release-cas-latch-early",
        }
    }

    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The store failpoint this plant turns on, if it lives in the store.
    fn failpoint(self) -> Option<&'static str> {
        match self {
            Plant::LeaseReadWithoutLease => Some("plant_lease_read_without_lease"),
            Plant::SkipEpochCheckAtApply => Some("plant_skip_epoch_check_at_apply"),
            Plant::SkipCompactLogSync => Some("plant_skip_compact_log_sync"),
            Plant::ReleaseCasLatchEarly => Some("plant_release_cas_latch_early"),
            Plant::LyingFsync | Plant::UnknownReportedAsRefused => None,
        }
    }
}

/// Failpoints are process-wide: a run that plants one holds this exclusively, others share it.
static FAILPOINTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Whether this build has the store's failpoints (the `failpoints` feature).
pub const HAS_FAILPOINTS: bool = cfg!(feature = "failpoints");

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            stores: 4,
            replicas: 3,
            clients: 4,
            bank_clients: 2,
            duration_ms: 30_000,
            faults: true,
            plant: None,
            tune: None,
        }
    }
}

/// A fault or an operation the seed chose, with when it happened.
#[derive(Clone, Debug)]
pub enum Event {
    PowerCut {
        store: u64,
        lost: PowerCutLoss,
    },
    /// Every fsync of the store's raft log fails from now on; it must stop at the first.
    DiskFault {
        store: u64,
    },
    /// The store's KV engine refuses every write (`Full`) or every synced one (`SyncFails`)
    /// from now on; it must stop at the first refused write.
    KvDiskFault {
        store: u64,
        fault: engine::DiskFault,
    },
    /// It did, and is crashed (and later restarted with a good disk).
    StoppedOnDiskFault {
        store: u64,
    },
    Restart {
        store: u64,
    },
    Isolate {
        store: u64,
        one_way: bool,
    },
    /// The two sides cannot reach each other; `bridge` reaches both.
    Bridge {
        bridge: u64,
        left: Vec<u64>,
        right: Vec<u64>,
    },
    Pause {
        store: u64,
    },
    Resume {
        store: u64,
    },
    /// The store's ticks slow down 20× (its tick thread starves), and it is cut off too when
    /// `isolated`: a leader whose timers lag must still not serve reads past its lease.
    Overload {
        store: u64,
        isolated: bool,
    },
    Recover {
        store: u64,
    },
    /// Every step of the store that writes its raft log takes `latency_ms`.
    SlowDisk {
        store: u64,
        latency_ms: u64,
    },
    DiskFast {
        store: u64,
    },
    LossyLinks {
        drop_per_mille: u32,
    },
    /// Messages with entries or a snapshot to or from the store are lost; small ones pass.
    BigMessagesLost {
        store: u64,
    },
    BigMessagesPass {
        store: u64,
    },
    RestartScheduler,
    Heal,
    Operator {
        region: u64,
        op: String,
    },
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub events: Vec<(u64, Event)>,
    pub workload: WorkloadStats,
    pub bank: BankStats,
    pub net: NetStats,
    pub regions: usize,
    /// Everything that went wrong; empty when the run passed.
    pub failures: Vec<String>,
    /// A digest of the history and final data: equal for two runs of one seed.
    pub fingerprint: u64,
    /// What the clients did and were told (for the failure artifacts).
    pub history: Recorded,
    /// The histories the linearizability check refused: each key (or `group`) with its
    /// outcome.
    pub violations: Vec<(String, Outcome)>,
}

/// The clients' history, in virtual half-milliseconds (a call at ms t is at 2t, a return at
/// 2t+1).
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Each single key's operations.
    pub keys: BTreeMap<String, Vec<Operation<String>>>,
    /// The group's operations (keys by index into [`GROUP_KEYS`]).
    pub group: Vec<GroupOperation<String>>,
}

/// The keys the group operations address by index.
pub const GROUP_KEYS: [&str; 4] = GROUP;

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The store settings of a simulation: small timeouts and thresholds, so elections, log GC
/// and snapshots happen within seconds of virtual time. `hibernate`: even seeds run with
/// hibernating regions, odd seeds without. Sleeping regions make some races rare (a write
/// proposed before a split and applied after it: the planted skipped epoch check went from 2
/// in 300 seeds to none in 400 with every seed hibernating), so both halves keep their share.
pub fn store_config(hibernate: bool) -> raftstore::Config {
    raftstore::Config {
        store_pool_size: 1,
        apply_pool_size: 1,
        // Mailboxes allocate every slot up front; a few peers need few.
        peer_mailbox_capacity: 256,
        raft_base_tick_interval_ms: 10,
        raft_election_timeout_ticks: 10,
        raft_heartbeat_ticks: 2,
        max_leader_lease_ms: 80,
        raft_log_gc_tick_interval_ms: 100,
        raft_log_gc_threshold: 8,
        raft_log_gc_count_limit: 24,
        split_region_check_tick_interval_ms: 500,
        region_heartbeat_tick_interval_ms: 200,
        hibernate_heartbeat_interval_ms: 200,
        // Sleep soon after a quiet spell, so schedules often catch regions asleep.
        hibernate_idle_ticks: 11,
        hibernate_regions: hibernate,
        store_heartbeat_interval_ms: 500,
        proposal_timeout_ms: 1_000,
        read_index_timeout_ms: 1_000,
        ..raftstore::Config::default()
    }
}

/// Runs one simulation of `seed`. A panic anywhere in it (a store's, raft-rs's) is a failure
/// of the seed, reported like any other.
pub fn run(seed: u64, cfg: &SimConfig, logger: &slog::Logger) -> Result<Report> {
    let run = std::panic::AssertUnwindSafe(|| run_seed(seed, cfg, logger));
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        Ok(Report {
            seed,
            events: Vec::new(),
            workload: WorkloadStats::default(),
            bank: BankStats::default(),
            net: NetStats::default(),
            regions: 0,
            failures: vec![format!("panicked: {message}")],
            fingerprint: 0,
            // Lost with the run's state: the replay (with --log) shows what led to it.
            history: Recorded::default(),
            violations: Vec::new(),
        })
    })
}

fn run_seed(seed: u64, cfg: &SimConfig, logger: &slog::Logger) -> Result<Report> {
    let failpoint = cfg.plant.and_then(Plant::failpoint);
    if failpoint.is_some() && !HAS_FAILPOINTS {
        return Err(Error::Setup(format!(
            "plant {:?} needs a build with the simulator's `failpoints` feature",
            cfg.plant
        )));
    }
    let _exclusive;
    let _shared;
    match failpoint {
        Some(name) => {
            _exclusive = FAILPOINTS
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            fail::cfg(name, "return").map_err(Error::Setup)?;
        }
        None => {
            _shared = FAILPOINTS
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
    // Off again however the run ends (the failpoint is process-wide).
    struct Unplant(Option<&'static str>);
    impl Drop for Unplant {
        fn drop(&mut self) {
            if let Some(name) = self.0 {
                fail::remove(name);
            }
        }
    }
    let _unplant = Unplant(failpoint);
    run_planted(seed, cfg, logger)
}

fn run_planted(seed: u64, cfg: &SimConfig, logger: &slog::Logger) -> Result<Report> {
    let mut rng = StdRng::seed_from_u64(seed);
    let net = SimNetwork::new(StdRng::seed_from_u64(rng.gen()), LinkConfig::default());
    let mut store_cfg = store_config(seed % 2 == 0);
    // Three seeds in four run a store writer (not the default, and the path with more to
    // get wrong), whose queue `StoreSystem::step` drains between rounds; the fourth has
    // each raft round write its own batch.
    store_cfg.store_io_pool_size = usize::from(seed % 4 != 3);
    if let Some(tune) = &cfg.tune {
        (tune.apply)(&mut store_cfg).map_err(Error::Setup)?;
    }
    let tick_ms = store_cfg.raft_base_tick_interval_ms;
    let mut cluster = SimCluster::new(
        rng.gen(),
        cfg.stores,
        cfg.replicas,
        net.clone(),
        store_cfg,
        scheduler::Config::default(),
        logger.clone(),
    )?;
    if cfg.plant == Some(Plant::LyingFsync) {
        for store in cluster.stores.values() {
            store.raft_log.set_sync_lies(true);
        }
    }
    let runtime = runtime::SimRuntime::new(cluster.clock.clone());
    let mut workload = Workload::new(
        cfg.clients,
        (0, 20),
        cfg.plant == Some(Plant::UnknownReportedAsRefused),
        runtime.clone(),
    );
    let mut bank = Bank::new(cfg.bank_clients, &cluster, runtime);
    let mut events = Vec::new();
    let mut faults = Faults::default();
    let mut failures = Vec::new();
    let mut now_ms = 0;
    let mut next_fault_ms = 1_000;
    let mut next_operator_ms = 500;
    let advance = |cluster: &mut SimCluster, now_ms: &mut u64| {
        cluster.clock.advance(Duration::from_millis(1));
        *now_ms += 1;
        if *now_ms % tick_ms == 0 {
            cluster.tick();
        }
        cluster.step(*now_ms);
    };
    let outcome: Result<()> = 'run: {
        // The faulty part.
        while now_ms < cfg.duration_ms {
            advance(&mut cluster, &mut now_ms);
            workload.step(&cluster, &mut rng, now_ms, false);
            bank.step(&cluster, &mut rng, now_ms, false);
            if cfg.faults && now_ms >= next_fault_ms {
                next_fault_ms = now_ms + rng.gen_range(300..1_500);
                if let Err(e) = faults.inject(&mut cluster, &mut rng, now_ms, &mut events) {
                    break 'run Err(e);
                }
            }
            if let Err(e) = faults.expire(&mut cluster, now_ms, &mut events) {
                break 'run Err(e);
            }
            if now_ms >= next_operator_ms {
                next_operator_ms = now_ms + rng.gen_range(300..1_500);
                random_operator(&cluster, &mut rng, now_ms, &mut events);
            }
            if let Some((store, reason)) = cluster.stopped_reason() {
                let expected =
                    faults.disk_faulty.contains(&store) && reason.contains("injected disk fault");
                if !expected {
                    failures.push(format!("store {store} stopped itself: {reason}"));
                    break 'run Ok(());
                }
                faults.stopped_on_disk_fault(&mut cluster, &mut rng, store, now_ms, &mut events);
            }
            if let Some(failure) = faults.kept_running_on_kv_fault(&cluster, now_ms) {
                failures.push(failure);
                break 'run Ok(());
            }
            if now_ms % LIVE_CHECK_MS == 0 {
                let found = check_replicas_now(&cluster);
                if !found.is_empty() {
                    failures.extend(found);
                    break 'run Ok(());
                }
            }
        }
        // Heal: every store up, every link whole; let the workload finish and the cluster settle.
        if let Err(e) = faults.heal(&mut cluster, &mut rng, now_ms, &mut events) {
            break 'run Err(e);
        }
        let settle_until = now_ms + 2_000;
        while now_ms < settle_until {
            advance(&mut cluster, &mut now_ms);
            workload.step(&cluster, &mut rng, now_ms, true);
            bank.step(&cluster, &mut rng, now_ms, true);
        }
        // Compare-and-swaps their clients gave up on, and latches held past writes of unknown
        // outcome, must end once the cluster is healed.
        let drain_until = now_ms + 10_000;
        while workload.background() > 0 || !bank.idle() {
            if now_ms >= drain_until {
                // With every peer's state: what does not make progress is what to look at.
                failures.push(format!(
                    "{} compare-and-swaps, held latches or transactional commands still \
                     running 12 s after the heal; peers:\n  {}",
                    workload.background(),
                    cluster.peer_states(now_ms).join("\n  ")
                ));
                break;
            }
            advance(&mut cluster, &mut now_ms);
            workload.step(&cluster, &mut rng, now_ms, true);
            bank.step(&cluster, &mut rng, now_ms, true);
        }
        // The final audit: every account at one timestamp after the heal, retried until
        // answered (it resolves what the transactions left locked).
        if cfg.bank_clients > 0 {
            let deadline = now_ms + 20_000;
            loop {
                let before = bank.stats.audits;
                bank.start_final_audit(&mut rng, now_ms);
                while !bank.idle() {
                    advance(&mut cluster, &mut now_ms);
                    workload.step(&cluster, &mut rng, now_ms, true);
                    bank.step(&cluster, &mut rng, now_ms, true);
                }
                if bank.stats.audits > before {
                    break;
                }
                if now_ms > deadline {
                    failures.push(format!(
                        "final bank audit not answered within 20 s of a healed cluster (last \
                         failure: {})",
                        bank.stats.last_failure.as_deref().unwrap_or("none")
                    ));
                    break;
                }
                for _ in 0..50 {
                    advance(&mut cluster, &mut now_ms);
                }
            }
        }
        // The final reads: each key and the group, retried until answered.
        for index in 0..=KEYS.len() {
            let deadline = now_ms + 20_000;
            loop {
                workload.start_final_read(index, &cluster, &mut rng, now_ms);
                let before = workload.stats.ok;
                while !workload.idle(0) {
                    advance(&mut cluster, &mut now_ms);
                    workload.step(&cluster, &mut rng, now_ms, true);
                }
                if workload.stats.ok > before {
                    break;
                }
                if now_ms > deadline {
                    failures.push(format!(
                        "final read {index} not answered within 20 s of a healed cluster"
                    ));
                    break;
                }
                for _ in 0..50 {
                    advance(&mut cluster, &mut now_ms);
                }
            }
        }
        Ok(())
    };
    let mut violations = Vec::new();
    match outcome {
        // A store that refuses to restart over its own disks is a failure of the run.
        Err(e @ Error::Restart { .. }) => failures.push(e.to_string()),
        Err(e) => return Err(e),
        Ok(()) => {
            violations = check_history(&workload);
            failures.extend(bank.violations.iter().cloned());
            failures.extend(describe_violations(&workload, &violations));
            failures.extend(check_replicas(
                &mut cluster,
                cfg.replicas,
                &mut now_ms,
                tick_ms,
            ));
            // After the heal no store may stop itself (no fault is left to excuse it).
            if let Some((store, reason)) = cluster.stopped_reason() {
                failures.push(format!(
                    "store {store} stopped itself after the heal: {reason}"
                ));
            }
        }
    }
    let fingerprint = fingerprint(&workload, &events, &failures, &cluster);
    Ok(Report {
        seed,
        events,
        workload: workload.stats.clone(),
        bank: bank.stats.clone(),
        net: net.stats(),
        regions: cluster.regions().len(),
        failures,
        fingerprint,
        history: Recorded {
            keys: std::mem::take(&mut workload.history.keys),
            group: std::mem::take(&mut workload.history.group),
        },
        violations,
    })
}

#[derive(Default)]
struct Faults {
    /// Store → when it comes back.
    down: std::collections::BTreeMap<u64, u64>,
    paused: std::collections::BTreeMap<u64, u64>,
    /// (store, until, one_way)
    isolated: Vec<(u64, u64, bool)>,
    /// (until, the links cut both ways) of each bridged partition.
    bridged: Vec<(u64, Vec<(u64, u64)>)>,
    lossy_until: Option<u64>,
    /// Stores whose raft log's fsync fails or whose KV engine refuses writes: stopping is
    /// what they must do.
    disk_faulty: std::collections::BTreeSet<u64>,
    /// Stores with a KV disk fault → when a write was first refused (once one was).
    kv_refused_at: std::collections::BTreeMap<u64, Option<u64>>,
    /// Overloaded store → when it recovers.
    slow: std::collections::BTreeMap<u64, u64>,
    /// Store losing big messages → when they pass again.
    big_lost: std::collections::BTreeMap<u64, u64>,
    /// Store with a slow disk → when it is fast again.
    slow_disk: std::collections::BTreeMap<u64, u64>,
}

impl Faults {
    fn inject(
        &mut self,
        cluster: &mut SimCluster,
        rng: &mut StdRng,
        now_ms: u64,
        events: &mut Vec<(u64, Event)>,
    ) -> Result<()> {
        let stores: Vec<u64> = cluster.stores.keys().copied().collect();
        let store = stores[rng.gen_range(0..stores.len())];
        let duration = rng.gen_range(200..3_000);
        match rng.gen_range(0..100) {
            25..30 => {
                if let Some(s) = cluster.stores.get(&store) {
                    if s.system.is_some() && self.disk_faulty.insert(store) {
                        let kv_fault = match rng.gen_range(0..3) {
                            0 => None,
                            1 => Some(engine::DiskFault::Full),
                            _ => Some(engine::DiskFault::SyncFails),
                        };
                        match kv_fault {
                            None => {
                                s.raft_log.set_sync_fails(true);
                                events.push((now_ms, Event::DiskFault { store }));
                            }
                            Some(fault) => {
                                s.kv.set_fault(Some(fault));
                                self.kv_refused_at.insert(store, None);
                                events.push((now_ms, Event::KvDiskFault { store, fault }));
                            }
                        }
                    }
                }
            }
            0..25 => {
                // Power cuts: a minority usually, a majority sometimes (it comes back).
                let victims = if rng.gen_bool(0.15) { 2 } else { 1 };
                for i in 0..victims {
                    let victim = stores
                        [(stores.iter().position(|s| *s == store).unwrap_or(0) + i) % stores.len()];
                    if let Some(lost) = cluster.power_cut(victim, rng) {
                        // Whatever its disk fault was, it comes back on a good disk (a store
                        // that cannot write refuses to start, which is right but ends the run).
                        self.repair_disk(cluster, victim);
                        self.down.insert(victim, now_ms + duration);
                        events.push((
                            now_ms,
                            Event::PowerCut {
                                store: victim,
                                lost,
                            },
                        ));
                    }
                }
            }
            47..55 => {
                // A bridge: the others split in two sides that only `store` joins.
                let mut others: Vec<u64> = stores.iter().copied().filter(|s| *s != store).collect();
                for i in (1..others.len()).rev() {
                    others.swap(i, rng.gen_range(0..=i));
                }
                let split = rng.gen_range(1..others.len().max(2));
                let (left, right) = others.split_at(split.min(others.len()));
                let cut: Vec<(u64, u64)> = left
                    .iter()
                    .flat_map(|l| right.iter().map(move |r| (*l, *r)))
                    .collect();
                for (l, r) in &cut {
                    cluster.net.set_cut(*l, *r, true);
                    cluster.net.set_cut(*r, *l, true);
                }
                self.bridged.push((now_ms + duration, cut));
                events.push((
                    now_ms,
                    Event::Bridge {
                        bridge: store,
                        left: left.to_vec(),
                        right: right.to_vec(),
                    },
                ));
            }
            30..47 => {
                let one_way = rng.gen_bool(0.3);
                self.isolate(cluster, store, one_way, now_ms + duration);
                events.push((now_ms, Event::Isolate { store, one_way }));
            }
            63..70 => {
                // The leader of the single keys' region, most often.
                let target = cluster
                    .region_for_key(KEYS[0].as_bytes())
                    .and_then(|info| info.leader)
                    .map_or(store, |leader| leader.store_id);
                let isolated = rng.gen_bool(0.5);
                if let Some(s) = cluster.stores.get_mut(&target) {
                    if s.system.is_some() && !s.slow_ticks {
                        s.slow_ticks = true;
                        self.slow.insert(target, now_ms + duration);
                        if isolated {
                            self.isolate(cluster, target, false, now_ms + duration);
                        }
                        events.push((
                            now_ms,
                            Event::Overload {
                                store: target,
                                isolated,
                            },
                        ));
                    }
                }
            }
            55..63 => {
                if let Some(s) = cluster.stores.get_mut(&store) {
                    if s.system.is_some() && !s.paused {
                        s.paused = true;
                        self.paused.insert(store, now_ms + duration);
                        events.push((now_ms, Event::Pause { store }));
                    }
                }
            }
            80..85 => {
                // The group's leader half the time: its rounds, so its heartbeats, lag.
                let target = match cluster.region_for_key(GROUP[0].as_bytes()) {
                    Some(info) if rng.gen_bool(0.5) => info.leader.map_or(store, |l| l.store_id),
                    _ => store,
                };
                let latency_ms = rng.gen_range(5..150);
                if let Some(s) = cluster.stores.get_mut(&target) {
                    if s.disk_latency_ms == 0 {
                        s.disk_latency_ms = latency_ms;
                        self.slow_disk.insert(target, now_ms + duration);
                        events.push((
                            now_ms,
                            Event::SlowDisk {
                                store: target,
                                latency_ms,
                            },
                        ));
                    }
                }
            }
            70..80 => {
                let drop_per_mille = rng.gen_range(20..200);
                {
                    let mut state = cluster.net.lock();
                    state.link.drop_per_mille = drop_per_mille;
                    state.link.duplicate_per_mille = 20;
                    state.link.delay_ms = (1, 20);
                }
                self.lossy_until = Some(now_ms + duration);
                events.push((now_ms, Event::LossyLinks { drop_per_mille }));
            }
            85..93 => {
                // The leader of the group's region, most often: its proposals stall while it
                // keeps its lease and serves.
                let target = cluster
                    .region_for_key(GROUP[0].as_bytes())
                    .and_then(|info| info.leader)
                    .map_or(store, |leader| leader.store_id);
                if cluster.net.lock().big_lost.insert(target) {
                    self.big_lost.insert(target, now_ms + duration);
                    events.push((now_ms, Event::BigMessagesLost { store: target }));
                }
            }
            _ => {
                cluster.restart_scheduler()?;
                events.push((now_ms, Event::RestartScheduler));
            }
        }
        Ok(())
    }

    /// Cuts `store` off from every other store until `until` (inbound only if `one_way`: it
    /// hears nothing but can still send).
    fn isolate(&mut self, cluster: &SimCluster, store: u64, one_way: bool, until: u64) {
        set_links(cluster, store, one_way, true);
        self.isolated.push((store, until, one_way));
    }

    /// A store stopped on its failing disk, as it must: crash it (a stopped store is down),
    /// give it a good disk, and bring it back later.
    fn stopped_on_disk_fault(
        &mut self,
        cluster: &mut SimCluster,
        rng: &mut StdRng,
        store: u64,
        now_ms: u64,
        events: &mut Vec<(u64, Event)>,
    ) {
        events.push((now_ms, Event::StoppedOnDiskFault { store }));
        if let Some(lost) = cluster.power_cut(store, rng) {
            events.push((now_ms, Event::PowerCut { store, lost }));
            self.down.insert(store, now_ms + rng.gen_range(200..2_000));
        }
        self.repair_disk(cluster, store);
    }

    /// The store's disks work again (and it owes no stop for a refused write).
    fn repair_disk(&mut self, cluster: &SimCluster, store: u64) {
        self.disk_faulty.remove(&store);
        self.kv_refused_at.remove(&store);
        if let Some(s) = cluster.stores.get(&store) {
            s.raft_log.set_sync_fails(false);
            s.kv.set_fault(None);
        }
    }

    /// A store whose KV engine refused a write must stop, not carry on or retry: it fails
    /// the seed if it still runs this long after the first refusal.
    fn kept_running_on_kv_fault(&mut self, cluster: &SimCluster, now_ms: u64) -> Option<String> {
        const STOP_WITHIN_MS: u64 = 200;
        for (store, refused_at) in self.kv_refused_at.iter_mut() {
            let Some(s) = cluster.stores.get(store) else {
                continue;
            };
            if refused_at.is_none() && s.kv.failed_writes() > 0 {
                *refused_at = Some(now_ms);
            }
            let running = s
                .system
                .as_ref()
                .is_some_and(|sys| sys.stopped_reason().is_none());
            if let Some(at) = *refused_at {
                if running && now_ms >= at + STOP_WITHIN_MS {
                    return Some(format!(
                        "store {store} still runs {STOP_WITHIN_MS} ms after its KV engine \
                         refused a write ({} refused): it must stop",
                        s.kv.failed_writes()
                    ));
                }
            }
        }
        None
    }

    fn expire(
        &mut self,
        cluster: &mut SimCluster,
        now_ms: u64,
        events: &mut Vec<(u64, Event)>,
    ) -> Result<()> {
        for store in take_due(&mut self.down, now_ms) {
            cluster.start_store(store)?;
            events.push((now_ms, Event::Restart { store }));
        }
        for store in take_due(&mut self.paused, now_ms) {
            if let Some(s) = cluster.stores.get_mut(&store) {
                s.paused = false;
            }
            events.push((now_ms, Event::Resume { store }));
        }
        for store in take_due(&mut self.slow, now_ms) {
            if let Some(s) = cluster.stores.get_mut(&store) {
                s.slow_ticks = false;
            }
            events.push((now_ms, Event::Recover { store }));
        }
        let cuts = self.isolated.len() + self.bridged.len();
        self.isolated.retain(|(_, until, _)| *until > now_ms);
        self.bridged.retain(|(until, _)| *until > now_ms);
        if self.isolated.len() + self.bridged.len() < cuts {
            // Mend every link, then cut again what the partitions still in force cut (two of
            // them may share a link).
            cluster.net.lock().cut.clear();
            for (store, _, one_way) in &self.isolated {
                set_links(cluster, *store, *one_way, true);
            }
            for (l, r) in self.bridged.iter().flat_map(|(_, cut)| cut) {
                cluster.net.set_cut(*l, *r, true);
                cluster.net.set_cut(*r, *l, true);
            }
        }
        for store in take_due(&mut self.big_lost, now_ms) {
            cluster.net.lock().big_lost.remove(&store);
            events.push((now_ms, Event::BigMessagesPass { store }));
        }
        for store in take_due(&mut self.slow_disk, now_ms) {
            if let Some(s) = cluster.stores.get_mut(&store) {
                s.disk_latency_ms = 0;
            }
            events.push((now_ms, Event::DiskFast { store }));
        }
        if self.lossy_until.is_some_and(|until| until <= now_ms) {
            self.lossy_until = None;
            cluster.net.lock().link = LinkConfig::default();
        }
        Ok(())
    }

    fn heal(
        &mut self,
        cluster: &mut SimCluster,
        rng: &mut StdRng,
        now_ms: u64,
        events: &mut Vec<(u64, Event)>,
    ) -> Result<()> {
        cluster.net.heal();
        for store in self.disk_faulty.clone() {
            let stopped = cluster
                .stores
                .get(&store)
                .and_then(|s| s.system.as_ref())
                .is_some_and(|sys| sys.stopped_reason().is_some());
            if stopped {
                self.stopped_on_disk_fault(cluster, rng, store, now_ms, events);
            } else if let Some(s) = cluster.stores.get(&store) {
                s.raft_log.set_sync_fails(false);
                s.kv.set_fault(None);
            }
        }
        self.disk_faulty.clear();
        self.kv_refused_at.clear();
        self.isolated.clear();
        self.bridged.clear();
        self.lossy_until = None;
        for store in std::mem::take(&mut self.down).into_keys() {
            cluster.start_store(store)?;
        }
        self.paused.clear();
        self.slow.clear();
        self.big_lost.clear();
        self.slow_disk.clear();
        for store in cluster.stores.values_mut() {
            store.paused = false;
            store.slow_ticks = false;
            store.disk_latency_ms = 0;
        }
        events.push((now_ms, Event::Heal));
        Ok(())
    }
}

/// Cuts (or mends) every link into `store` and, unless `one_way`, out of it.
fn set_links(cluster: &SimCluster, store: u64, one_way: bool, cut: bool) {
    for other in cluster.stores.keys().filter(|o| **o != store) {
        cluster.net.set_cut(*other, store, cut);
        if !one_way {
            cluster.net.set_cut(store, *other, cut);
        }
    }
}

/// Removes and returns the stores whose time in `until` (store → when) has come.
fn take_due(until: &mut std::collections::BTreeMap<u64, u64>, now_ms: u64) -> Vec<u64> {
    let due: Vec<u64> = until
        .iter()
        .filter(|(_, at)| **at <= now_ms)
        .map(|(s, _)| *s)
        .collect();
    for store in &due {
        until.remove(store);
    }
    due
}

/// Asks the scheduler for a split, a leader transfer or a membership change of a random
/// region, as an operator would; the stores carry it out through their heartbeats.
fn random_operator(
    cluster: &SimCluster,
    rng: &mut StdRng,
    now_ms: u64,
    events: &mut Vec<(u64, Event)>,
) {
    let Some(scheduler) = cluster.scheduler() else {
        return;
    };
    let regions = cluster.regions();
    if regions.is_empty() {
        return;
    }
    let region = &regions[rng.gen_range(0..regions.len())];
    let stores: Vec<u64> = cluster.stores.keys().copied().collect();
    let hosts: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
    let op = match rng.gen_range(0..4) {
        0 => {
            let inside: Vec<&str> = SPLIT_POINTS
                .iter()
                .copied()
                .filter(|p| {
                    let p = p.as_bytes();
                    p > region.start_key.as_slice()
                        && (region.end_key.is_empty() || p < region.end_key.as_slice())
                })
                .collect();
            if inside.is_empty() {
                return;
            }
            AdminOp::Split(vec![inside[rng.gen_range(0..inside.len())].into()])
        }
        1 => AdminOp::TransferLeader {
            to_store: hosts[rng.gen_range(0..hosts.len())],
        },
        2 => {
            let free: Vec<u64> = stores
                .iter()
                .copied()
                .filter(|s| !hosts.contains(s))
                .collect();
            if free.is_empty() {
                return;
            }
            AdminOp::AddPeer {
                store: free[rng.gen_range(0..free.len())],
            }
        }
        _ => {
            let leader = scheduler
                .cluster
                .region_by_key(&region.start_key)
                .and_then(|i| i.leader)
                .map(|l| l.store_id);
            let removable: Vec<u64> = hosts
                .iter()
                .copied()
                .filter(|s| Some(*s) != leader)
                .collect();
            if hosts.len() <= 3 || removable.is_empty() {
                return;
            }
            AdminOp::RemovePeer {
                store: removable[rng.gen_range(0..removable.len())],
            }
        }
    };
    if let Ok(description) = scheduler.add_admin_operator(region.id, op) {
        events.push((
            now_ms,
            Event::Operator {
                region: region.id,
                op: description,
            },
        ));
    }
}

/// The linearizability of each key, and of the group as one object: the histories that fail.
fn check_history(workload: &Workload) -> Vec<(String, Outcome)> {
    let mut violations: Vec<(String, Outcome)> = workload
        .history
        .keys
        .iter()
        .map(|(key, ops)| (key.clone(), check_key(None, ops, DEFAULT_STEP_BUDGET)))
        .filter(|(_, outcome)| *outcome != Outcome::Linearizable)
        .collect();
    match check_group(GROUP.len(), &workload.history.group, DEFAULT_STEP_BUDGET) {
        Outcome::Linearizable => {}
        outcome => violations.push(("group".to_string(), outcome)),
    }
    violations
}

/// One failure line per refused history, then the refused writes whose values were read (the
/// likely culprits).
fn describe_violations(workload: &Workload, violations: &[(String, Outcome)]) -> Vec<String> {
    let history = &workload.history;
    let mut failures: Vec<String> = violations
        .iter()
        .map(|(key, outcome)| match history.keys.get(key) {
            Some(ops) => format!(
                "key {key}: {outcome:?} over {} operations: {ops:?}",
                ops.len()
            ),
            None => format!(
                "group {GROUP:?}: {outcome:?} over {} operations: {:?}",
                history.group.len(),
                history.group
            ),
        })
        .collect();
    if !failures.is_empty() {
        let text = failures.join("\n");
        for (value, error) in &history.refused {
            if text.contains(&format!("\"{value}\"")) {
                failures.push(format!(
                    "write of {value:?} was refused ({error}) yet was read"
                ));
            }
        }
    }
    failures
}

/// Every replica of every region holds the same data once the healed cluster has caught up.
fn check_replicas(
    cluster: &mut SimCluster,
    replicas: u64,
    now_ms: &mut u64,
    tick_ms: u64,
) -> Vec<String> {
    let mut last = Vec::new();
    for _ in 0..100 {
        last = replica_differences(cluster, replicas);
        if last.is_empty() {
            return last;
        }
        for _ in 0..100 {
            cluster.clock.advance(Duration::from_millis(1));
            *now_ms += 1;
            if *now_ms % tick_ms == 0 {
                cluster.tick();
            }
            cluster.step(*now_ms);
        }
    }
    // With every peer's state: the replicas that do not converge are what to look at.
    last.push(format!(
        "peers:\n  {}",
        cluster.peer_states(*now_ms).join("\n  ")
    ));
    last
}

/// What differs: regions that do not tile the key space, a region with fewer replicas than
/// asked, replicas that differ, data left on a store that is not a member.
fn replica_differences(cluster: &SimCluster, replicas: u64) -> Vec<String> {
    let mut out = Vec::new();
    let regions = cluster.regions();
    let tiles = regions.first().is_some_and(|r| r.start_key.is_empty())
        && regions.last().is_some_and(|r| r.end_key.is_empty())
        && regions.windows(2).all(|w| w[0].end_key == w[1].start_key);
    if !tiles {
        out.push(format!(
            "the scheduler's regions do not cover the key space: {:?}",
            regions
                .iter()
                .map(|r| (r.id, &r.start_key, &r.end_key))
                .collect::<Vec<_>>()
        ));
    }
    for (store_id, store) in &cluster.stores {
        out.extend(overlapping_regions(*store_id, &store.kv));
    }
    for region in &regions {
        let voters = region
            .peers
            .iter()
            .filter(|p| p.role() == proto::metapb::PeerRole::Voter)
            .count();
        if (voters as u64) < replicas {
            out.push(format!(
                "region {} has {} replicas: {:?}",
                region.id,
                region.peers.len(),
                region.peers
            ));
        }
        for (store_id, store) in &cluster.stores {
            let member = region.peers.iter().any(|p| p.store_id == *store_id);
            if !member && !region_data(&store.kv, region).is_empty() {
                out.push(format!(
                    "store {store_id} holds data of region {} without a peer in it",
                    region.id
                ));
            }
        }
        let mut seen: Option<(u64, Pairs)> = None;
        for peer in &region.peers {
            let Some(store) = cluster.stores.get(&peer.store_id) else {
                continue;
            };
            let data = region_data(&store.kv, region);
            match &seen {
                None => seen = Some((peer.store_id, data)),
                Some((first, expected)) if *expected != data => out.push(format!(
                    "region {}: stores {first} and {} differ ({} vs {} keys)",
                    region.id,
                    peer.store_id,
                    expected.len(),
                    data.len()
                )),
                Some(_) => {}
            }
        }
    }
    out
}

/// Regions a store records as hosted (Normal, initialized) that overlap each other there.
fn overlapping_regions(store_id: u64, kv: &engine::MemEngine) -> Vec<String> {
    let (mut regions, bad) = hosted_regions(kv);
    let mut out: Vec<String> = bad
        .into_iter()
        .map(|b| format!("store {store_id}: {b}"))
        .collect();
    regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    for pair in regions.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.end_key.is_empty() || a.end_key > b.start_key {
            out.push(format!(
                "store {store_id}: regions {} [{:?}, {:?}) and {} [{:?}, {:?}) overlap",
                a.id, a.start_key, a.end_key, b.id, b.start_key, b.end_key
            ));
        }
    }
    out
}

/// Key/value pairs, in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Checked every [`LIVE_CHECK_MS`] of the faulty part, on every store (running or down: a
/// power cut keeps a store's data and apply states together): peers of a region that have
/// applied the same index hold the same data, and no two regions a store hosts overlap. A
/// divergence that a later snapshot would paper over is caught while it exists.
fn check_replicas_now(cluster: &SimCluster) -> Vec<String> {
    let mut out: Vec<String> = cluster
        .stores
        .iter()
        .flat_map(|(id, store)| overlapping_regions(*id, &store.kv))
        .collect();
    out.extend(applied_replicas_differ(
        cluster.stores.iter().map(|(id, store)| (*id, &store.kv)),
    ));
    out
}

/// Peers of a region (one per store) that have applied the same index but hold different
/// data.
fn applied_replicas_differ<'a>(
    stores: impl IntoIterator<Item = (u64, &'a engine::MemEngine)>,
) -> Vec<String> {
    use engine::{KvEngine, Peekable};
    let mut out = Vec::new();
    // (region, applied index) → (store, its data)
    let mut seen: BTreeMap<(u64, u64), (u64, Pairs)> = BTreeMap::new();
    for (store_id, kv) in stores {
        let snap = kv.snapshot();
        for region in hosted_regions(&snap).0 {
            let applied = match snap.get_msg_cf::<proto::raft_serverpb::RaftApplyState>(
                engine::CF_RAFT,
                &engine::keys::apply_state_key(region.id),
            ) {
                Ok(Some(state)) => state.applied_index,
                _ => continue,
            };
            let data = region_data(&snap, &region);
            match seen.get(&(region.id, applied)) {
                None => {
                    seen.insert((region.id, applied), (store_id, data));
                }
                Some((first, expected)) if *expected != data => out.push(format!(
                    "region {} at applied index {applied}: stores {first} and {store_id} \
                     differ ({} vs {} keys)",
                    region.id,
                    expected.len(),
                    data.len()
                )),
                Some(_) => {}
            }
        }
    }
    out
}

/// How often the faulty part checks replicas and overlaps ([`check_replicas_now`]).
const LIVE_CHECK_MS: u64 = 250;

/// The regions a store records as hosted (Normal, initialized), and a line for each region
/// state that does not decode.
fn hosted_regions(kv: &impl engine::Peekable) -> (Vec<proto::metapb::Region>, Vec<String>) {
    use prost::Message as _;
    let (start, end) = engine::keys::region_state_range();
    let (mut regions, mut bad) = (Vec::new(), Vec::new());
    let _ = kv.scan_cf(engine::CF_RAFT, &start, &end, false, &mut |key, value| {
        let Some(region_id) = engine::keys::region_id_of_state_key(key) else {
            return Ok(true);
        };
        match proto::raft_serverpb::RegionLocalState::decode(value) {
            Ok(state) if state.state == proto::raft_serverpb::PeerState::Normal as i32 => {
                regions.extend(state.region.filter(|r| !r.peers.is_empty()));
            }
            Ok(_) => {}
            Err(e) => bad.push(format!(
                "region {region_id}: its state does not decode: {e}"
            )),
        }
        Ok(true)
    });
    (regions, bad)
}

fn region_data(kv: &impl engine::Peekable, region: &proto::metapb::Region) -> Pairs {
    let start = engine::keys::data_key(&region.start_key);
    let end = engine::keys::data_end_key(&region.end_key);
    let mut out = Vec::new();
    let _ = kv.scan_cf(engine::CF_DEFAULT, &start, &end, false, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(true)
    });
    out
}

/// FNV-1a over the history, the events, the failures and every store's final data: a
/// digest that is the same for two runs of one seed, in any process or build.
fn fingerprint(
    workload: &Workload,
    events: &[(u64, Event)],
    failures: &[String],
    cluster: &SimCluster,
) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(format!("{:?}", workload.history.keys).as_bytes());
    feed(format!("{:?}", workload.history.group).as_bytes());
    feed(format!("{events:?}{failures:?}").as_bytes());
    let everything = proto::metapb::Region::default();
    for (store_id, store) in &cluster.stores {
        feed(&store_id.to_le_bytes());
        for (k, v) in region_data(&store.kv, &everything) {
            feed(&k);
            feed(&v);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use proto::build::{peer, region};

    use super::*;

    #[test]
    fn overlapping_regions_on_a_store_are_found() {
        let kv = engine::MemEngine::new();
        let of = |id: u64, start: &str, end: &str| {
            region(id)
                .range(start.as_bytes().to_vec(), end.as_bytes().to_vec())
                .epoch(1, 1)
                .peers([peer(id * 10, 1)])
                .build()
        };
        raftstore::bootstrap_region(&kv, &of(1, "a", "c")).unwrap();
        raftstore::bootstrap_region(&kv, &of(2, "c", "")).unwrap();
        assert!(overlapping_regions(1, &kv).is_empty());
        raftstore::bootstrap_region(&kv, &of(3, "b", "d")).unwrap();
        let found = overlapping_regions(1, &kv);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("regions 1") && found[0].contains("and 3"),
            "{found:?}"
        );
    }

    #[test]
    fn replicas_that_applied_the_same_index_must_hold_the_same_data() {
        use engine::{KvEngine, WriteBatch};
        let r = region(1)
            .range(Vec::new(), Vec::new())
            .epoch(1, 1)
            .peers([peer(11, 1), peer(12, 2)])
            .build();
        let put = |kv: &engine::MemEngine, value: &str| {
            let mut wb = kv.write_batch();
            wb.put_cf(
                engine::CF_DEFAULT,
                &engine::keys::data_key(b"k"),
                value.as_bytes(),
            )
            .unwrap();
            kv.write(&mut wb, false).unwrap();
        };
        let applied = |kv: &engine::MemEngine, index: u64| {
            let state = proto::raft_serverpb::RaftApplyState {
                applied_index: index,
                ..Default::default()
            };
            let mut wb = kv.write_batch();
            wb.put_msg_cf(engine::CF_RAFT, &engine::keys::apply_state_key(1), &state)
                .unwrap();
            kv.write(&mut wb, false).unwrap();
        };
        let (a, b) = (engine::MemEngine::new(), engine::MemEngine::new());
        for kv in [&a, &b] {
            raftstore::bootstrap_region(kv, &r).unwrap();
            applied(kv, 6);
            put(kv, "1");
        }
        assert!(applied_replicas_differ([(1, &a), (2, &b)]).is_empty());
        put(&b, "2");
        let found = applied_replicas_differ([(1, &a), (2, &b)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("stores 1 and 2 differ"), "{found:?}");
        // At another applied index it may differ: b is ahead.
        applied(&b, 7);
        assert!(applied_replicas_differ([(1, &a), (2, &b)]).is_empty());
    }
}
