//! The store's side of deadlock detection. Before a pessimistic lock request waits, its
//! wait-for edge (waiter start_ts → holder start_ts) goes to the cluster's detector, which the
//! scheduler hosts: only a graph of every store's waits sees a cycle whose locks are led by
//! different stores. When the request stops waiting, a clean-up removes the edge.
//!
//! Scheduler calls block, so one thread of this store makes them. Clean-ups have a queue of
//! their own, drained before every detection: under load they are neither lost behind
//! detections nor late (a late clean-up is a stale edge, and a stale edge can close a false
//! cycle). Both queues are bounded. A wait that cannot be checked goes ahead unchecked and a
//! cycle through it ends by its wait timeout: the detection queue is full, the caller stopped
//! listening (its own bounded wait for the answer ran out), or the scheduler failed, after
//! which calls are skipped for [`PAUSE_AFTER_FAILURE`] so a dead scheduler costs each wait
//! nothing. Clean-ups that fail or fall in a pause are kept (bounded) and sent first when it
//! ends; edges whose clean-up is lost anyway expire by their TTL in the detector.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, select, Receiver, Sender, TrySendError};
use proto::schedulerpb::WaitForEdge;
use raftstore::{DeadlockCheck, StoreApi};

use crate::metrics::METRICS;

/// After a failed call, calls are skipped for this long: waits go unchecked, and clean-ups
/// wait (bounded) to be sent when it ends.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

type Reply = tokio::sync::oneshot::Sender<raftstore::Result<DeadlockCheck>>;

struct Detect {
    edge: WaitForEdge,
    ttl: Duration,
    reply: Reply,
}

/// A handle on this store's detector thread; the thread ends with the last handle.
#[derive(Clone)]
pub struct DeadlockClient {
    detects: Sender<Detect>,
    clean_ups: Sender<WaitForEdge>,
    next_wait_id: Arc<AtomicU64>,
}

/// What the detector said of a wait.
#[derive(Debug)]
pub enum Verdict {
    /// Recorded: the request may wait; dropping the guard cleans the edge up.
    Wait(EdgeGuard),
    /// The wait would close this cycle (edges from the holder back to the waiter).
    Deadlock(Vec<WaitForEdge>),
    /// Not checked: wait; the timeout bounds it.
    Unchecked,
}

/// A recorded edge; dropping it asks the detector to forget the edge.
#[derive(Debug)]
pub struct EdgeGuard {
    clean_ups: Sender<WaitForEdge>,
    edge: WaitForEdge,
}

impl Drop for EdgeGuard {
    fn drop(&mut self) {
        clean_up(&self.clean_ups, self.edge.clone());
    }
}

/// Queues a clean-up; one that cannot be queued is left to the edge's TTL.
fn clean_up(clean_ups: &Sender<WaitForEdge>, edge: WaitForEdge) {
    if clean_ups.try_send(edge).is_err() {
        METRICS.deadlock_detect_failures.inc();
    }
}

/// The thread's state: calls are skipped until `paused_until` after a failure; clean-ups
/// that could not be sent wait in `unsent` (bounded) for the pause to end.
struct Caller<EK: engine::KvEngine> {
    api: StoreApi<EK>,
    paused_until: Option<Instant>,
    unsent: VecDeque<WaitForEdge>,
    max_unsent: usize,
}

impl<EK: engine::KvEngine> Caller<EK> {
    fn paused(&mut self) -> bool {
        match self.paused_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.paused_until = None;
                // Stale edges would close false cycles: send what waited first.
                while let Some(edge) = self.unsent.pop_front() {
                    if !self.send_clean_up(edge) {
                        return true;
                    }
                }
                false
            }
            None => false,
        }
    }

    fn failed(&mut self, what: &str, e: &raftstore::Error) {
        METRICS.deadlock_detect_failures.inc();
        slog::warn!(self.api.logger(), "deadlock detector call failed; waits go unchecked \
            for a while"; "call" => what, "pause" => ?PAUSE_AFTER_FAILURE, "error" => %e);
        self.paused_until = Some(Instant::now() + PAUSE_AFTER_FAILURE);
    }

    /// Keeps a clean-up for after the pause; one that does not fit is left to its TTL.
    fn keep(&mut self, edge: WaitForEdge) {
        if self.unsent.len() < self.max_unsent {
            self.unsent.push_back(edge);
        } else {
            METRICS.deadlock_detect_failures.inc();
        }
    }

    /// `false` if it failed (and is kept for later).
    fn send_clean_up(&mut self, edge: WaitForEdge) -> bool {
        match self.api.clean_up_wait_for(edge.clone()) {
            Ok(()) => true,
            Err(e) => {
                self.failed("CleanUpWaitFor", &e);
                self.keep(edge);
                false
            }
        }
    }

    fn clean_up(&mut self, edge: WaitForEdge) {
        if self.paused() {
            self.keep(edge);
            return;
        }
        self.send_clean_up(edge);
    }

    fn detect(&mut self, call: Detect) {
        // The caller stopped listening (its wait for the answer ran out, and counted it):
        // skip the call.
        if call.reply.is_closed() {
            return;
        }
        if self.paused() {
            METRICS.deadlock_detect_failures.inc();
            let _ = call.reply.send(Err(raftstore::Error::Scheduler {
                detail: "deadlock detector calls paused after a failure".into(),
            }));
            return;
        }
        let answer = self.api.detect_deadlock(call.edge.clone(), call.ttl);
        if let Err(e) = &answer {
            // The detector may have recorded the edge before the answer was lost.
            self.failed("DetectDeadlock", e);
            self.keep(call.edge);
            let _ = call.reply.send(answer);
            return;
        }
        if let Err(Ok(DeadlockCheck::Recorded)) = call.reply.send(answer) {
            // Recorded, but no one waits on it any more: take it out now.
            self.clean_up(call.edge);
        }
    }
}

/// A key's fingerprint as TiDB computes it (farmhash fingerprint64 of the key as sent), so
/// a client can tell which of its keys closed a cycle.
pub fn key_hash(key: &[u8]) -> u64 {
    farmhash::fingerprint64(key)
}

impl DeadlockClient {
    /// Starts the detector thread of a store; `capacity` bounds each queue.
    pub fn start<EK: engine::KvEngine>(
        api: StoreApi<EK>,
        capacity: usize,
    ) -> std::io::Result<DeadlockClient> {
        let (detects, detect_rx) = bounded::<Detect>(capacity.max(1));
        // Every queued clean-up is of an edge recorded for a waiting slot, so twice the
        // waiters leaves room for those of edges whose answers were late.
        let (clean_ups, clean_up_rx) = bounded::<WaitForEdge>(capacity.max(1) * 2);
        std::thread::Builder::new()
            .name("deadlock-client".into())
            .spawn(move || {
                let mut caller = Caller {
                    api,
                    paused_until: None,
                    unsent: VecDeque::new(),
                    max_unsent: capacity.max(1) * 2,
                };
                run(&mut caller, &detect_rx, &clean_up_rx);
            })?;
        Ok(DeadlockClient {
            detects,
            clean_ups,
            next_wait_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Asks whether `edge` may wait; the detector keeps it for at most `ttl`. The edge's
    /// `wait_id` is set here.
    pub async fn detect(&self, mut edge: WaitForEdge, ttl: Duration) -> Verdict {
        edge.wait_id = self.next_wait_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call = Detect {
            edge: edge.clone(),
            ttl,
            reply,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.detects.try_send(call)
        {
            METRICS.deadlock_detect_failures.inc();
            return Verdict::Unchecked;
        }
        match answer.await {
            Ok(Ok(DeadlockCheck::Recorded)) => Verdict::Wait(EdgeGuard {
                clean_ups: self.clean_ups.clone(),
                edge,
            }),
            Ok(Ok(DeadlockCheck::Deadlock(chain))) => Verdict::Deadlock(chain),
            Ok(Ok(DeadlockCheck::NotRecorded)) => {
                METRICS.deadlock_detect_failures.inc();
                Verdict::Unchecked
            }
            // Counted where it failed.
            Ok(Err(_)) | Err(_) => Verdict::Unchecked,
        }
    }
}

/// The thread: clean-ups first, then one detection at a time, until every handle (and so
/// every sender of detections) is gone.
fn run<EK: engine::KvEngine>(
    caller: &mut Caller<EK>,
    detects: &Receiver<Detect>,
    clean_ups: &Receiver<WaitForEdge>,
) {
    let drain = |caller: &mut Caller<EK>| {
        while let Ok(edge) = clean_ups.try_recv() {
            caller.clean_up(edge);
        }
    };
    loop {
        drain(caller);
        select! {
            recv(clean_ups) -> edge => match edge {
                Ok(edge) => caller.clean_up(edge),
                // Every guard and handle is gone (handles hold a clean-up sender too).
                Err(_) => return,
            },
            recv(detects) -> call => match call {
                Ok(call) => {
                    // A clean-up that came meanwhile goes before it (select picks at random).
                    drain(caller);
                    caller.detect(call);
                }
                Err(_) => return,
            },
        }
    }
}
