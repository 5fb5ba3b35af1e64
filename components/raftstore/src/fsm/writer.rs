//! The store writer (`store-io-pool-size = 1`): raft rounds hand their raft-log batch to one
//! thread, which merges the rounds that queued while it wrote into one write and one fsync,
//! then sends the messages that waited for durability and tells each peer which ready is
//! durable (`PeerMsg::Persisted`). A raft round never waits on the disk, and an fsync serves
//! the rounds of every raft poller of the store.
//!
//! Invariants:
//! - Rounds are written in the order they were queued, so a region's writes reach the log in
//!   the order its rounds made them (a region is in one round at a time, and its next round
//!   starts only after this one queued its batch).
//! - A write that must come after a region's queued ones without going through the queue (a
//!   received snapshot replacing the log, a destroy cleaning it, a peer reading its raft state
//!   when it is created) waits first with [`LogWriter::barrier`].
//! - A failed write stops the store (`StoreContext::fatal`), as a failed write of a raft round
//!   does; nothing queued after it is written.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crossbeam::channel::{Receiver, SendTimeoutError, Sender};
use engine::KvEngine;
use proto::raft_serverpb::RaftMessage;
use raft_log::RaftLogBatch;

use super::StoreContext;
use crate::metrics::METRICS;
use crate::router::PeerMsg;
use crate::transport::Transport;
use crate::{Error, Result};

/// A peer's ready that a write makes durable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PersistedReady {
    pub(crate) region_id: u64,
    pub(crate) peer_id: u64,
    pub(crate) number: u64,
}

/// One raft round's part for the store writer.
pub(crate) struct WriteTask {
    pub(crate) batch: RaftLogBatch,
    /// Some ready of the round appended entries or changed term or vote.
    pub(crate) sync: bool,
    pub(crate) entries: usize,
    pub(crate) regions: usize,
    /// The readies whose peers are told once the batch is durable.
    pub(crate) readies: Vec<PersistedReady>,
    /// Messages that may leave only once the batch is durable (votes, append responses).
    pub(crate) messages: Vec<RaftMessage>,
    pub(crate) queued_at: Instant,
}

/// What a write made durable and has not announced yet.
pub(crate) struct Written {
    readies: Vec<PersistedReady>,
    messages: Vec<RaftMessage>,
}

/// The store's side of the writer's queue, in `StoreContext`: counts rounds queued and
/// written, so a barrier knows what to wait for. The raft pollers hold the senders.
pub struct LogWriter {
    rx: Receiver<WriteTask>,
    /// Rounds handed to the queue, counted before they enter it.
    queued: AtomicU64,
    /// Rounds written (or dropped by a stopped store), under the lock barriers wait on.
    written: Mutex<u64>,
    progress: Condvar,
    /// The writer thread is gone: barriers stop waiting.
    dead: AtomicBool,
    /// Run by hand (`StoreBuilder::manual`): a barrier writes the queue itself and tells the
    /// peers, and keeps the messages here for `StoreSystem::step` to send.
    manual: Option<Mutex<Vec<RaftMessage>>>,
}

impl LogWriter {
    /// The queue of a store with a writer (`store-io-pool-size = 1`). `manual`: no thread
    /// takes the queue; the store's `step` does.
    pub(crate) fn new(capacity: usize, manual: bool) -> (LogWriter, Sender<WriteTask>) {
        // Run by hand, one thread fills and drains the queue: it must never be full.
        let (tx, rx) = if manual {
            crossbeam::channel::unbounded()
        } else {
            crossbeam::channel::bounded(capacity)
        };
        let writer = LogWriter {
            rx,
            queued: AtomicU64::new(0),
            written: Mutex::new(0),
            progress: Condvar::new(),
            dead: AtomicBool::new(false),
            manual: manual.then(Mutex::default),
        };
        (writer, tx)
    }

    /// Queues a round; waits while the queue is full. False if the writer is gone (the store
    /// stopped).
    pub(crate) fn submit(&self, tx: &Sender<WriteTask>, task: WriteTask) -> bool {
        // Counted before it is queued: a barrier that reads the count then waits for at least
        // every round queued before it (see `barrier`).
        self.queued.fetch_add(1, Ordering::SeqCst);
        METRICS.store_writer_queue.inc();
        let mut task = task;
        loop {
            // The queue's receiver lives as long as the store: a writer that unwound leaves
            // it open, so a full queue is waited on only while the writer lives.
            match tx.send_timeout(task, std::time::Duration::from_millis(100)) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(t)) if !self.dead.load(Ordering::SeqCst) => task = t,
                Err(_) => {
                    METRICS.store_writer_queue.dec();
                    return false;
                }
            }
        }
    }

    /// Waits until every round queued before the call is written and its peers were told (a
    /// peer created after it hears nothing of an earlier peer's writes). A round counted but
    /// still being queued by another poller is waited for too: that is at most one round more.
    /// Fails with `StoreStopped` once the store stopped: the writer then drops what is queued,
    /// and the caller must persist nothing more either.
    pub(crate) fn barrier<EK: KvEngine>(&self, ctx: &StoreContext<EK>) -> Result<()> {
        let stopped = || Error::StoreStopped {
            store_id: ctx.store_id,
            reason: ctx
                .stopped_reason()
                .unwrap_or_else(|| "the store writer stopped".into()),
        };
        if ctx.is_stopped() {
            return Err(stopped());
        }
        let target = self.queued.load(Ordering::SeqCst);
        if let Some(held) = &self.manual {
            // The same thread queues and writes: write and tell the peers now, send the
            // messages at the next step (the transport is the step's).
            let tasks: Vec<_> = self.rx.try_iter().collect();
            let count = tasks.len() as u64;
            self.write(ctx, tasks, |written| {
                notify(ctx, written.readies);
                util::lock(held).extend(written.messages);
            });
            self.mark_written(count);
        }
        let mut written = util::lock(&self.written);
        while *written < target {
            if self.dead.load(Ordering::SeqCst) || ctx.is_stopped() {
                return Err(stopped());
            }
            written = self
                .progress
                .wait(written)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(written);
        // What was "written" while the store was stopping may have been dropped.
        if ctx.is_stopped() {
            return Err(stopped());
        }
        Ok(())
    }

    /// Writes `tasks` in order, merged into as few writes as the size limit allows, each
    /// fsynced if any of its rounds needs it, and hands what each write made durable to
    /// `done` before the next write. A failed write stops the store; so does another
    /// thread's error, before any later write. The caller marks the tasks written after.
    fn write<EK: KvEngine>(
        &self,
        ctx: &StoreContext<EK>,
        tasks: Vec<WriteTask>,
        mut done: impl FnMut(Written),
    ) {
        METRICS.store_writer_queue.sub(tasks.len() as i64);
        let limit = ctx.cfg.store_io_write_size_limit;
        let mut tasks = tasks.into_iter().peekable();
        while let Some(first) = tasks.next() {
            if ctx.is_stopped() {
                // Another thread's fatal error stopped the store: persist and announce nothing.
                return;
            }
            let started = ctx.clock.now();
            let WriteTask {
                mut batch,
                mut sync,
                mut entries,
                mut regions,
                readies,
                messages,
                queued_at,
            } = first;
            let mut written = Written { readies, messages };
            let mut rounds = 1;
            let mut oldest = queued_at;
            while let Some(next) =
                tasks.next_if(|t| batch.approximate_size() + t.batch.approximate_size() <= limit)
            {
                let mut next = next;
                if let Err(e) = batch.merge(&mut next.batch) {
                    ctx.fatal("merging raft-log batches", &e);
                }
                sync |= next.sync;
                entries += next.entries;
                regions += next.regions;
                written.readies.append(&mut next.readies);
                written.messages.append(&mut next.messages);
                oldest = oldest.min(next.queued_at);
                rounds += 1;
            }
            METRICS
                .write_hop
                .log_queue
                .observe(started.saturating_duration_since(oldest).as_secs_f64());
            METRICS.store_writer_rounds_per_write.observe(rounds as f64);
            super::peer::write_round(ctx, &mut batch, sync, entries, regions);
            done(written);
        }
    }

    fn mark_written(&self, count: u64) {
        *util::lock(&self.written) += count;
        self.progress.notify_all();
    }

    /// The writer thread is gone (ended or unwound): barriers must not wait for it.
    fn mark_dead(&self) {
        self.dead.store(true, Ordering::SeqCst);
        // Under the lock, so a barrier between its check and its wait cannot miss it.
        let _written = util::lock(&self.written);
        self.progress.notify_all();
    }

    /// Run by hand: writes what is queued and announces it with what barriers wrote. Returns
    /// the rounds handled.
    pub(crate) fn step<EK: KvEngine, T: Transport>(
        &self,
        ctx: &StoreContext<EK>,
        transport: &mut T,
    ) -> usize {
        let held = match &self.manual {
            Some(held) => std::mem::take(&mut *util::lock(held)),
            None => Vec::new(),
        };
        // Called between every two rounds of a store run by hand: idle, it must cost nothing.
        if held.is_empty() && self.rx.is_empty() {
            return 0;
        }
        let mut ran = usize::from(!held.is_empty());
        announce(
            ctx,
            transport,
            Written {
                readies: Vec::new(),
                messages: held,
            },
        );
        let tasks: Vec<_> = self.rx.try_iter().collect();
        let count = tasks.len();
        self.write(ctx, tasks, |written| announce(ctx, transport, written));
        self.mark_written(count as u64);
        ran += count;
        ran
    }
}

/// Tells each peer its ready is durable, then sends what waited for the write. In this
/// order: an answer to those messages (a vote that makes a candidate leader) must not reach
/// the peer before the notice, or raft-rs would find the candidate's earlier readies still
/// unpersisted as it becomes leader (which it asserts never happens). The notice goes into
/// the peer's internal queue, which its poller drains before the messages from other stores.
fn announce<EK: KvEngine, T: Transport>(ctx: &StoreContext<EK>, transport: &mut T, w: Written) {
    if ctx.is_stopped() {
        return;
    }
    notify(ctx, w.readies);
    if !w.messages.is_empty() {
        for msg in w.messages {
            transport.send(msg);
        }
        transport.flush();
    }
}

/// Tells each peer which of its readies are durable.
fn notify<EK: KvEngine>(ctx: &StoreContext<EK>, readies: Vec<PersistedReady>) {
    if ctx.is_stopped() {
        return;
    }
    for r in readies {
        // A peer destroyed meanwhile has no mailbox: nothing to tell.
        let _ = ctx.routers.raft.force_send(
            r.region_id,
            PeerMsg::Persisted {
                peer_id: r.peer_id,
                number: r.number,
            },
        );
    }
}

/// Starts the writer thread. It ends once every raft poller (every sender) is gone and the
/// queue is written.
pub(crate) fn spawn<EK: KvEngine, T: Transport>(
    ctx: std::sync::Arc<StoreContext<EK>>,
    mut transport: T,
) -> Result<std::thread::JoinHandle<()>> {
    let name = format!("store-{}-writer", ctx.store_id);
    let store_id = ctx.store_id;
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _guard = DeadOnExit(&ctx);
            let writer = &ctx.log_writer;
            let max = ctx.cfg.store_io_queue_capacity;
            while let Ok(first) = writer.rx.recv() {
                let mut tasks = vec![first];
                tasks.extend(writer.rx.try_iter().take(max.saturating_sub(1)));
                let count = tasks.len() as u64;
                writer.write(&ctx, tasks, |written| {
                    announce(&ctx, &mut transport, written)
                });
                writer.mark_written(count);
            }
        })
        .map_err(|e| Error::Store {
            store_id,
            detail: format!("cannot spawn thread {name}: {e}"),
        })
}

/// Marks the writer gone when its thread ends, and the store stopped if it unwound.
struct DeadOnExit<'a, EK: KvEngine>(&'a StoreContext<EK>);

impl<EK: KvEngine> Drop for DeadOnExit<'_, EK> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.on_poller_panic("store writer");
        }
        self.0.log_writer.mark_dead();
    }
}
