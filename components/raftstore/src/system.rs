//! Starting and stopping a store: load every region from the KV engine, create its peer and
//! apply FSMs, start the raft and apply poller pools and the tick thread.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use batch_system::{create_system, BatchSystem};
use crossbeam::channel::{self, RecvTimeoutError, Sender};
use std::path::{Path, PathBuf};

use engine::{keys, KvEngine, SstExt, CF_RAFT};
use proto::metapb::Region;
use proto::raft_serverpb::{PeerState, RaftApplyState, RegionLocalState, StoreIdent};
use raft_log::RaftLogEngine;

use crate::api::StoreApi;
use crate::fsm::{
    spawn_store_writer, ApplyControlFsm, ApplyFsm, ApplyPollerBuilder, Engines, GenTask, LogWriter,
    PeerFsm, RaftPollerBuilder, Routers, Snapshots, StoreContext, StoreFsm, StoreStats,
    WorkerQueues,
};
use crate::router::{PeerMsg, RaftRouter, StoreMsg};
use crate::snap::{SnapKey, SnapKind, SnapManager};
use crate::transport::Transport;
use crate::worker::{HeartbeatTask, SplitTask};

use util::ClockRef;

use crate::{Config, Error, Result};

/// The one check of a data directory's store ident: it must name store `store_id` (and
/// cluster `cluster_id`, when given). `Ok(None)`: the directory is not bootstrapped.
fn check_store_ident<EK: KvEngine>(
    kv: &EK,
    store_id: u64,
    cluster_id: Option<u64>,
) -> Result<Option<StoreIdent>> {
    let store_err = |detail: String| Error::Store { store_id, detail };
    let ident = engine::read_store_ident(kv)
        .map_err(|e| store_err(format!("reading the store ident: {e}")))?;
    match ident {
        Some(ident)
            if ident.store_id != store_id || cluster_id.is_some_and(|c| c != ident.cluster_id) =>
        {
            Err(store_err(format!(
                "data directory belongs to store {} of cluster {}",
                ident.store_id, ident.cluster_id
            )))
        }
        other => Ok(other),
    }
}

/// Marks a fresh data directory as store `store_id` of cluster `cluster_id`, holding data
/// of `api_version`. An already bootstrapped directory must carry the same ids.
pub fn bootstrap_store<EK: KvEngine>(
    kv: &EK,
    cluster_id: u64,
    store_id: u64,
    api_version: proto::kvrpcpb::ApiVersion,
) -> Result<()> {
    if check_store_ident(kv, store_id, Some(cluster_id))?.is_some() {
        return Ok(());
    }
    let ident = StoreIdent {
        cluster_id,
        store_id,
        api_version: api_version as i32,
    };
    engine::write_store_ident(kv, &ident).map_err(|e| Error::Store {
        store_id,
        detail: format!("writing the store ident: {e}"),
    })
}

/// Records `region` as hosted on this store, if it is not already (static bootstrap of the
/// first regions; later regions arrive by split or membership change).
pub fn bootstrap_region<EK: KvEngine>(kv: &EK, region: &Region) -> Result<()> {
    let region_id = region.id;
    let existing = kv
        .get_msg_cf::<RegionLocalState>(CF_RAFT, &keys::region_state_key(region_id))
        .map_err(|source| Error::Engine { region_id, source })?;
    if existing.is_some() {
        return Ok(());
    }
    crate::fsm::write_region_state(kv, region, PeerState::Normal)
}

/// Every region state persisted in `kv`.
fn load_regions<EK: KvEngine>(kv: &EK) -> Result<Vec<RegionLocalState>> {
    let (start, end) = keys::region_state_range();
    let mut states = Vec::new();
    let mut bad = None;
    kv.scan_cf(CF_RAFT, &start, &end, false, &mut |key, value| {
        let Some(region_id) = keys::region_id_of_state_key(key) else {
            return Ok(true);
        };
        match <RegionLocalState as prost::Message>::decode(value) {
            Ok(state) => states.push(state),
            Err(e) => {
                bad = Some(Error::InvalidState {
                    region_id,
                    detail: format!("region state does not decode: {e}"),
                });
                return Ok(false);
            }
        }
        Ok(true)
    })
    .map_err(|source| Error::Engine {
        region_id: 0,
        source,
    })?;
    match bad {
        Some(e) => Err(e),
        None => Ok(states),
    }
}

/// A running store.
pub struct StoreSystem<EK: KvEngine> {
    ctx: Arc<StoreContext<EK>>,
    raft_system: BatchSystem<PeerFsm<EK>, StoreFsm>,
    apply_system: BatchSystem<ApplyFsm<EK>, ApplyControlFsm>,
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
    workers: Vec<JoinHandle<()>>,
    /// Tells the worker threads to drop what is still queued.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The workers' queues of a store run by hand ([`StoreBuilder::manual`]).
    manual: Option<ManualWorkers<EK>>,
}

/// The worker queues a store run by hand drains itself, in [`StoreSystem::step`].
struct ManualWorkers<EK: KvEngine> {
    gen: channel::Receiver<GenTask<EK>>,
    split: channel::Receiver<SplitTask>,
    heartbeat: channel::Receiver<HeartbeatTask>,
    /// Writes the store writer's queue and announces it (with the store's transport).
    writer: ManualWriter<EK>,
}

/// In a mutex only so the store stays `Sync` (the transport it holds need not be).
type ManualWriter<EK> = Mutex<Box<dyn FnMut(&StoreContext<EK>) -> usize + Send>>;

/// How to start a store ([`StoreSystem::builder`]): its id, engines and snapshot directory
/// are required; the config, clock and logger have defaults.
pub struct StoreBuilder<EK: KvEngine> {
    store_id: u64,
    kv: EK,
    raft_log: RaftLogEngine,
    snap_dir: PathBuf,
    cfg: Config,
    clock: ClockRef,
    logger: slog::Logger,
    manual: bool,
    election_seed: Option<u64>,
}

impl<EK: SstExt> StoreBuilder<EK> {
    /// Starts no thread at all: the caller drives the store with [`StoreSystem::step`] and
    /// [`StoreSystem::tick`], on its own thread. For the deterministic simulator; the rounds,
    /// ticks and worker tasks are the same code the threads run.
    pub fn manual(mut self) -> Self {
        self.manual = true;
        self
    }

    /// Seeds the peers' randomized election timeouts, so a simulation replays exactly
    /// (default: a random seed per start, as raft-rs would draw).
    pub fn election_seed(mut self, seed: u64) -> Self {
        self.election_seed = Some(seed);
        self
    }

    /// The store's settings (default: [`Config::default`]).
    pub fn config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }

    /// Where the store reads time (default: the system's clocks).
    pub fn clock(mut self, clock: ClockRef) -> Self {
        self.clock = clock;
        self
    }

    /// Where the store logs (default: nowhere).
    pub fn logger(mut self, logger: &slog::Logger) -> Self {
        self.logger = logger.clone();
        self
    }

    /// Starts the store, talking to other stores through `transport` and to the placement
    /// scheduler through `scheduler` (which hands out ids for splits). See
    /// [`StoreSystem::builder`].
    pub fn start<T: Transport + Clone>(
        self,
        transport: T,
        scheduler: Arc<dyn crate::SchedulerClient>,
    ) -> Result<StoreSystem<EK>> {
        StoreSystem::start(self, transport, scheduler)
    }
}

impl<EK: SstExt> StoreSystem<EK> {
    /// Prepares store `store_id` over its engines: every region recorded in `kv` gets its peer
    /// back at [`StoreBuilder::start`] (hard state, log and applied index from disk; committed
    /// entries not yet applied are applied again from the log; a snapshot apply cut short is
    /// redone from its files). Snapshot files live in `snap_dir`.
    pub fn builder(
        store_id: u64,
        kv: EK,
        raft_log: RaftLogEngine,
        snap_dir: &Path,
    ) -> StoreBuilder<EK> {
        StoreBuilder {
            store_id,
            kv,
            raft_log,
            snap_dir: snap_dir.to_path_buf(),
            cfg: Config::default(),
            clock: util::SystemClock::shared(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            manual: false,
            election_seed: None,
        }
    }

    fn start<T: Transport + Clone>(
        builder: StoreBuilder<EK>,
        transport: T,
        scheduler: Arc<dyn crate::SchedulerClient>,
    ) -> Result<StoreSystem<EK>> {
        let StoreBuilder {
            store_id,
            kv,
            raft_log,
            snap_dir,
            cfg,
            clock,
            logger,
            manual,
            election_seed,
        } = builder;
        let snap_dir = snap_dir.as_path();
        let logger = &logger;
        cfg.validate()?;
        let logger = logger.new(slog::o!("store_id" => store_id));
        if check_store_ident(&kv, store_id, None)?.is_none() {
            return Err(Error::Store {
                store_id,
                detail: "data directory is not bootstrapped (no store ident)".into(),
            });
        }
        let system_err = |e: batch_system::Error| Error::Store {
            store_id,
            detail: e.to_string(),
        };
        let (apply_router, mut apply_system) = create_system(
            "apply",
            &cfg.batch_system(cfg.apply_pool_size, Duration::ZERO),
            Box::new(ApplyControlFsm),
        )
        .map_err(system_err)?;
        let (router, mut raft_system) = create_system(
            "raftstore",
            &cfg.batch_system(
                cfg.store_pool_size,
                Duration::from_micros(cfg.store_batch_wait_us),
            ),
            Box::new(StoreFsm::default()),
        )
        .map_err(system_err)?;
        let cfg = Arc::new(cfg);
        let snap_mgr = SnapManager::with_limits(
            kv.file_system(),
            snap_dir,
            cfg.snap_max_concurrent_sends,
            cfg.snap_max_concurrent_recvs,
        )?;
        let (gen_tx, gen_rx) = channel::unbounded::<GenTask<EK>>();
        let (split_tx, split_rx) = channel::bounded::<SplitTask>(cfg.split_check_queue_capacity);
        let (heartbeat_tx, heartbeat_rx) =
            channel::bounded::<HeartbeatTask>(cfg.heartbeat_queue_capacity);
        let (log_writer, writer_tx) = LogWriter::new(cfg.store_io_queue_capacity, manual);
        // Without a writer (`store-io-pool-size = 0`) each raft round writes itself.
        let writer_tx = (cfg.store_io_pool_size > 0).then_some(writer_tx);
        let ctx = Arc::new(StoreContext {
            store_id,
            cfg: cfg.clone(),
            logger: logger.clone(),
            clock: clock.clone(),
            engines: Engines {
                kv: kv.clone(),
                raft_log,
                cache_budget: crate::storage::CacheBudget::from_config(&cfg),
            },
            routers: Routers {
                raft: router.clone(),
                apply: apply_router,
            },
            snaps: Snapshots {
                mgr: snap_mgr.clone(),
                build: {
                    let (kv, mgr) = (kv.clone(), snap_mgr.clone());
                    Box::new(move |snapshot, region, key| mgr.build(&kv, snapshot, region, key))
                },
                ingest: {
                    let (kv, mgr) = (kv.clone(), snap_mgr.clone());
                    Box::new(move |region, key, meta| {
                        mgr.apply(&kv, region, SnapKind::Received, key, meta)
                    })
                },
            },
            meta: Mutex::default(),
            stats: StoreStats::default(),
            stop: Default::default(),
            workers: WorkerQueues {
                gen: Mutex::new(Some(gen_tx)),
                split: Mutex::new(Some(split_tx)),
                heartbeat: Mutex::new(Some(heartbeat_tx)),
            },
            scheduler,
            split_checks_paused: Default::default(),
            election_seed: election_seed.unwrap_or_else(crate::raft::random_seed),
            ticks: Default::default(),
            liveness: Default::default(),
            owed_reports: Default::default(),
            log_writer,
        });
        let mut loaded = 0;
        let loading = clock.now();
        let mut received = ctx.received_snapshots();
        let mut delete_received = |region_id: u64| {
            for key in received.remove(&region_id).unwrap_or_default() {
                ctx.snaps.mgr.delete(SnapKind::Received, key);
            }
        };
        for state in load_regions(&kv)? {
            let region = state.region.unwrap_or_default();
            let removed = !region.peers.iter().any(|p| p.store_id == store_id);
            match PeerState::try_from(state.state) {
                // No member anywhere: nothing of this store's to create or destroy (no path
                // writes such a state; a peer made by a raft message is not persisted).
                Ok(PeerState::Normal) if region.peers.is_empty() => {
                    slog::warn!(logger, "skipping a region state with no peers";
                        "region_id" => region.id, "epoch" => ?region.region_epoch);
                }
                // Applied a membership change that removed this store's peer (only a
                // committed entry writes such a state) and stopped before the destroy that
                // follows it (a crash, or a failed sync of the tombstone): finish it.
                Ok(PeerState::Normal) if removed => {
                    slog::info!(logger, "finishing the destroy of a peer removed before a stop";
                        "region_id" => region.id, "epoch" => ?region.region_epoch);
                    ctx.destroy_region(&region)?;
                    delete_received(region.id);
                }
                Ok(PeerState::Normal) => {
                    // Files of a snapshot whose apply finished just before a stop.
                    delete_received(region.id);
                    ctx.create_peer(region, PeerState::Normal)?;
                    loaded += 1;
                }
                Ok(PeerState::Tombstone) => ctx.clean_tombstone_log(region.id)?,
                Ok(PeerState::Applying) => {
                    resume_snapshot_apply(&ctx, &region, state.applying_snapshot)?;
                    ctx.create_peer(region, PeerState::Normal)?;
                    loaded += 1;
                }
                Err(_) => {
                    return Err(Error::InvalidState {
                        region_id: region.id,
                        detail: format!(
                            "peer state {} cannot be recovered by this build",
                            state.state
                        ),
                    })
                }
            }
        }
        slog::info!(logger, "store starting"; "regions" => loaded, "manual" => manual,
            "load_ms" => clock.now().saturating_duration_since(loading).as_millis());
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if manual {
            apply_system.start_manual(&mut ApplyPollerBuilder { ctx: ctx.clone() });
            let mut writer_transport = transport.clone();
            raft_system.start_manual(&mut RaftPollerBuilder {
                ctx: ctx.clone(),
                transport,
                writer: writer_tx,
            });
            return Ok(StoreSystem {
                ctx,
                raft_system,
                apply_system,
                ticker: None,
                workers: Vec::new(),
                stopping,
                manual: Some(ManualWorkers {
                    gen: gen_rx,
                    split: split_rx,
                    heartbeat: heartbeat_rx,
                    writer: Mutex::new(Box::new(move |ctx: &StoreContext<EK>| {
                        ctx.log_writer.step(ctx, &mut writer_transport)
                    })),
                }),
            });
        }
        apply_system
            .spawn(&mut ApplyPollerBuilder { ctx: ctx.clone() })
            .map_err(system_err)?;
        let mut workers = Vec::new();
        if writer_tx.is_some() {
            // Ends once the raft pollers, which hold its queue's senders, are gone.
            workers.push(spawn_store_writer(ctx.clone(), transport.clone())?);
        }
        raft_system
            .spawn(&mut RaftPollerBuilder {
                ctx: ctx.clone(),
                transport,
                writer: writer_tx,
            })
            .map_err(system_err)?;
        let ticker = spawn_ticker(ctx.clone(), cfg.base_tick(), store_id)?;
        for i in 0..cfg.snap_generator_pool_size {
            let c = ctx.clone();
            let name = format!("store-{store_id}-snap-gen-{i}");
            workers.push(spawn_worker(
                store_id,
                name,
                gen_rx.clone(),
                stopping.clone(),
                move |t| c.run_gen_task(t),
            )?);
        }
        let c = ctx.clone();
        let name = format!("store-{store_id}-split-check");
        workers.push(spawn_worker(
            store_id,
            name,
            split_rx,
            stopping.clone(),
            move |t| c.run_split_task(t),
        )?);
        let c = ctx.clone();
        let name = format!("store-{store_id}-scheduler");
        workers.push(spawn_batch_worker(
            store_id,
            name,
            heartbeat_rx,
            stopping.clone(),
            cfg.heartbeat_concurrency,
            move |tasks| c.run_heartbeat_tasks(tasks),
        )?);
        Ok(StoreSystem {
            ctx,
            raft_system,
            apply_system,
            ticker: Some(ticker),
            workers,
            stopping,
            manual: None,
        })
    }
}

/// A store that stopped while applying a snapshot redoes what may be missing: the raft side
/// (unless its synced state already covers the snapshot), then the data from the kept files.
fn resume_snapshot_apply<EK: KvEngine>(
    ctx: &StoreContext<EK>,
    region: &Region,
    snapshot: Option<proto::raft_serverpb::RaftTruncatedState>,
) -> Result<()> {
    let region_id = region.id;
    let snap = snapshot.ok_or_else(|| Error::InvalidState {
        region_id,
        detail: "Applying without the snapshot's index and term".into(),
    })?;
    let key = SnapKey {
        region_id,
        term: snap.term,
        index: snap.index,
    };
    slog::info!(ctx.logger, "resuming an interrupted snapshot apply"; "region_id" => region_id,
        "index" => snap.index);
    let raft_state = ctx
        .engines
        .raft_log
        .raft_state(region_id)
        .map_err(|source| Error::RaftLog { region_id, source })?
        .unwrap_or_default();
    let mut hs = raft_state.hard_state.unwrap_or_default();
    if hs.commit < snap.index {
        // Step 2 did not finish (its synced state has the snapshot's commit index).
        hs.commit = snap.index;
        let state = proto::raft_serverpb::RaftLocalState {
            hard_state: Some(hs),
            last_index: snap.index,
        };
        crate::storage::write_snapshot_raft_state(&ctx.engines.raft_log, region_id, &state)?;
    }
    let meta = ctx
        .snaps
        .mgr
        .read_meta(SnapKind::Received, key)?
        .ok_or_else(|| Error::InvalidState {
            region_id,
            detail: format!(
                "snapshot {key} was being applied but its files are gone from {}",
                ctx.snaps.mgr.dir().display()
            ),
        })?;
    let apply_state = RaftApplyState {
        applied_index: snap.index,
        truncated_state: Some(snap),
        commit_index: snap.index,
        commit_term: snap.term,
    };
    ctx.finish_snapshot(region, key, &meta, &apply_state, &[])
}

impl<EK: KvEngine> StoreSystem<EK> {
    pub fn store_id(&self) -> u64 {
        self.ctx.store_id
    }

    pub fn router(&self) -> &RaftRouter<EK> {
        &self.ctx.routers.raft
    }

    pub fn stats(&self) -> &StoreStats {
        &self.ctx.stats
    }

    pub fn kv(&self) -> &EK {
        &self.ctx.engines.kv
    }

    /// Bytes this store's entry caches hold (bound: `entry-cache-limit`).
    pub fn entry_cache_bytes(&self) -> usize {
        self.ctx.engines.cache_budget.used()
    }

    /// The store's snapshot directory: a transport receives snapshots for this store into it
    /// (so the store's limit on concurrent receives applies).
    pub fn snap_manager(&self) -> &SnapManager {
        &self.ctx.snaps.mgr
    }

    /// Pauses (or resumes) the periodic split checks of this store's leaders; splits asked
    /// for explicitly still run.
    pub fn pause_split_checks(&self, paused: bool) {
        self.ctx
            .split_checks_paused
            .store(paused, std::sync::atomic::Ordering::Relaxed);
        slog::info!(self.ctx.logger, "automatic split checks"; "paused" => paused);
    }

    /// Ids of the regions hosted here.
    pub fn region_ids(&self) -> Vec<u64> {
        self.ctx.meta().region_ids()
    }

    /// Why the store stopped, if a fatal error stopped it.
    pub fn stopped_reason(&self) -> Option<String> {
        self.ctx.stopped_reason()
    }

    /// The embedded API over this store.
    pub fn api(&self) -> StoreApi<EK> {
        StoreApi::new(self.ctx.clone())
    }

    /// Creates a peer of a new region on this store and waits for it to be registered.
    pub fn create_region(&self, region: Region) -> Result<()> {
        self.ask_store(|cb| StoreMsg::CreatePeer {
            region: Box::new(region),
            cb,
        })
    }

    /// Removes the peer of `region_id` from this store (its data, apply state and raft log;
    /// it stays a tombstone) and waits until that is durable.
    pub fn destroy_region(&self, region_id: u64) -> Result<()> {
        self.ask_store(|cb| StoreMsg::DestroyPeer { region_id, cb })
    }

    /// Sends a request to the StoreFsm and waits for its answer.
    fn ask_store(&self, make: impl FnOnce(crate::router::Callback<()>) -> StoreMsg) -> Result<()> {
        let (tx, rx) = channel::bounded(1);
        let cb = crate::router::Callback::new(move |r| {
            let _ = tx.send(r);
        });
        let store_id = self.ctx.store_id;
        self.ctx
            .routers
            .raft
            .send_control_timeout(make(cb), Duration::from_secs(5))
            .map_err(|e| Error::Store {
                store_id,
                detail: format!("cannot reach the store fsm: {e}"),
            })?;
        rx.recv().unwrap_or_else(|_| {
            Err(Error::StoreStopped {
                store_id,
                reason: "the request was dropped before it was answered".into(),
            })
        })
    }

    /// Of a store run by hand ([`StoreBuilder::manual`]): runs raft rounds, apply rounds and
    /// queued worker tasks (snapshot generation, split checks, heartbeats) until none is
    /// left or `max_steps` have run. Returns how many ran (0: the store was idle).
    pub fn step(&mut self, max_steps: usize) -> usize {
        let mut total = 0;
        while total < max_steps {
            let mut ran = self.raft_system.poll(max_steps - total);
            ran += self.apply_system.poll(max_steps - total);
            if let Some(manual) = &self.manual {
                ran += (util::lock(&manual.writer))(&self.ctx);
                for task in manual.gen.try_iter() {
                    self.ctx.run_gen_task(task);
                    ran += 1;
                }
                for task in manual.split.try_iter() {
                    self.ctx.run_split_task(task);
                    ran += 1;
                }
                // In batches, as the worker thread takes them.
                let max = self.ctx.cfg.heartbeat_concurrency.max(1);
                loop {
                    let batch: Vec<_> = manual.heartbeat.try_iter().take(max).collect();
                    if batch.is_empty() {
                        break;
                    }
                    ran += batch.len();
                    self.ctx.run_heartbeat_tasks(batch);
                }
            }
            if ran == 0 {
                break;
            }
            total += ran;
        }
        total
    }

    /// Of a store run by hand: one base tick, as the tick thread sends it every
    /// `base-tick-ms` (to every peer, then the store).
    pub fn tick(&self) {
        send_ticks(&self.ctx, &mut Vec::new(), &mut Vec::new());
    }

    /// The store's raft log.
    pub fn raft_log(&self) -> &RaftLogEngine {
        &self.ctx.engines.raft_log
    }

    /// Stops the tick thread, both poller pools and the store writer; requests still waiting
    /// are answered with `StoreStopped`. Returns how many poller or writer threads had
    /// panicked.
    pub fn shutdown(&mut self) -> usize {
        if let Some((stop, handle)) = self.ticker.take() {
            drop(stop);
            let _ = handle.join();
        }
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut panicked = self.raft_system.shutdown() + self.apply_system.shutdown();
        self.ctx.workers.close();
        // The store writer ends once the raft pollers are gone; the other workers once their
        // queues are closed. A worker that unwound counts with the pollers (the store writer
        // does on a failed write).
        for handle in self.workers.drain(..) {
            panicked += usize::from(handle.join().is_err());
        }
        slog::info!(self.ctx.logger, "store stopped"; "panicked_pollers" => panicked);
        panicked
    }
}

impl<EK: KvEngine> Drop for StoreSystem<EK> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A thread that runs `run` on every task of `rx` until the queue's senders are gone. Once
/// `stopping` is set, queued tasks are dropped instead: a shutdown must not wait for a
/// backlog of heartbeats or split checks to time out against an unreachable scheduler.
fn spawn_worker<T: Send + 'static>(
    store_id: u64,
    name: String,
    rx: crossbeam::channel::Receiver<T>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    run: impl Fn(T) + Send + 'static,
) -> Result<JoinHandle<()>> {
    spawn_batch_worker(store_id, name, rx, stopping, 1, move |tasks| {
        tasks.into_iter().for_each(&run)
    })
}

/// A worker thread that takes what is queued, up to `max_batch` tasks, at a time.
fn spawn_batch_worker<T: Send + 'static>(
    store_id: u64,
    name: String,
    rx: crossbeam::channel::Receiver<T>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    max_batch: usize,
    run: impl Fn(Vec<T>) + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            for first in rx.iter() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(max_batch.saturating_sub(1)));
                if !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    run(batch);
                }
            }
        })
        .map_err(|e| Error::Store {
            store_id,
            detail: format!("cannot spawn thread {name}: {e}"),
        })
}

/// One base tick: to every awake peer (skipping full mailboxes), a hibernate tick to the
/// sleeping peers whose turn it is, then to the store. `awake` and `hibernating` are
/// buffers kept across calls.
fn send_ticks<EK: KvEngine>(
    ctx: &StoreContext<EK>,
    awake: &mut Vec<u64>,
    hibernating: &mut Vec<u64>,
) {
    let router = &ctx.routers.raft;
    let cfg = &ctx.cfg;
    let share = cfg.raft_base_tick_interval_ms as f64 / cfg.hibernate_heartbeat_interval_ms as f64;
    ctx.ticks.due(awake, hibernating, share);
    for (ids, hibernating) in [(&mut *awake, false), (&mut *hibernating, true)] {
        for id in ids.drain(..) {
            let msg = match hibernating {
                false => PeerMsg::Tick,
                true => PeerMsg::HibernateTick,
            };
            // A full mailbox skips a tick; a peer that is gone is unfiled by its destroy.
            let _ = router.send(id, msg);
        }
    }
    let _ = router.send_control(StoreMsg::Tick);
}

fn spawn_ticker<EK: KvEngine>(
    ctx: Arc<StoreContext<EK>>,
    interval: Duration,
    store_id: u64,
) -> Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = channel::bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name(format!("store-{store_id}-tick"))
        .spawn(move || {
            let (mut awake, mut hibernating) = (Vec::new(), Vec::new());
            loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {
                        send_ticks(&ctx, &mut awake, &mut hibernating)
                    }
                    _ => return,
                }
            }
        })
        .map_err(|e| Error::Store {
            store_id,
            detail: format!("cannot spawn the tick thread: {e}"),
        })?;
    Ok((stop, handle))
}

#[cfg(test)]
mod tests {
    use engine::MemEngine;
    use proto::kvrpcpb::ApiVersion::V1;

    use super::*;

    #[test]
    fn a_data_directory_serves_only_the_store_and_cluster_it_was_made_for() {
        let kv = MemEngine::new();
        assert_eq!(check_store_ident(&kv, 3, None).unwrap(), None);
        bootstrap_store(&kv, 7, 3, V1).unwrap();
        // Again with the same ids: nothing to do.
        bootstrap_store(&kv, 7, 3, V1).unwrap();
        assert!(check_store_ident(&kv, 3, None).unwrap().is_some());
        for (cluster, store) in [(8, 3), (7, 4)] {
            let err = bootstrap_store(&kv, cluster, store, V1).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("store {store}: data directory belongs to store 3 of cluster 7")
            );
        }
        let err = check_store_ident(&kv, 4, None).unwrap_err();
        assert!(err.to_string().contains("belongs to store 3"), "{err}");
    }
}
