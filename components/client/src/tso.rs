//! Timestamps from PD, batched: callers that ask while a `Tso` request is in flight wait for
//! the next one, which asks for all of them at once (`count`), as PD's clients do. Under
//! concurrent transactions this turns one PD round trip per timestamp into one per batch.
//!
//! Order: a waiter's timestamp comes from a request sent after it asked, so a timestamp is
//! above every timestamp any caller received before this one asked. PD answers the last of
//! `count` consecutive timestamps with one physical part, so the batch's are
//! `last - count + 1 ..= last`.
//!
//! A failed batch answers no one: each of its waiters asks again on its own, so every caller
//! gets its own error from its own retries.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::client::Inner;
use crate::error::Result;

/// Timestamps per request at most; PD's logical part has 18 bits.
pub(crate) const MAX_TSO_BATCH: usize = 4096;

const LOGICAL_MASK: u64 = (1 << 18) - 1;

#[derive(Default)]
struct Queue {
    waiters: Vec<oneshot::Sender<u64>>,
    /// A task is sending batches; it takes the waiters as they queue.
    driving: bool,
}

/// The waiters for the next batch.
#[derive(Default)]
pub(crate) struct TsoBatcher {
    queue: Mutex<Queue>,
}

impl TsoBatcher {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// A timestamp from PD's oracle, batched with concurrent callers'.
    pub(crate) async fn tso(self: &Arc<Self>) -> Result<u64> {
        // The driver is a task: without a runtime to spawn it on, ask alone.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.tso_batch(1).await;
        };
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queue = self.tso.queue();
            queue.waiters.push(tx);
            !std::mem::replace(&mut queue.driving, true)
        };
        if start {
            // A task of its own, so a caller that gives up does not strand the others.
            runtime.spawn(Arc::clone(self).drive_tso());
        }
        match rx.await {
            Ok(ts) => Ok(ts),
            // The batch failed: ask alone, with this call's own retries and error.
            Err(_) => self.tso_batch(1).await,
        }
    }

    /// Sends batches until no one waits.
    async fn drive_tso(self: Arc<Self>) {
        // However the driver ends (a panic, its runtime shutting down), it hands over: the
        // waiters left ask alone, and the next caller starts a new driver.
        struct HandOver<'a> {
            batcher: &'a TsoBatcher,
            armed: bool,
        }
        impl Drop for HandOver<'_> {
            fn drop(&mut self) {
                if self.armed {
                    let mut queue = self.batcher.queue();
                    queue.driving = false;
                    queue.waiters.clear();
                }
            }
        }
        let mut hand_over = HandOver {
            batcher: &self.tso,
            armed: true,
        };
        loop {
            let batch = {
                let mut queue = self.tso.queue();
                if queue.waiters.is_empty() {
                    queue.driving = false;
                    hand_over.armed = false;
                    return;
                }
                let n = queue.waiters.len().min(MAX_TSO_BATCH);
                queue.waiters.drain(..n).collect::<Vec<_>>()
            };
            let count = batch.len() as u64;
            // On an error the senders drop and each waiter asks alone.
            let Ok(last) = self.tso_batch(count as u32).await else {
                continue;
            };
            // All `count` must share the last one's physical part.
            if last & LOGICAL_MASK < count - 1 {
                slog::warn!(self.logger(), "PD answered a Tso batch that does not fit its \
                    logical part; each waiter asks alone"; "count" => count, "last" => last);
                continue;
            }
            for (ts, tx) in (last - (count - 1)..=last).zip(batch) {
                // A caller that gave up no longer listens; its timestamp goes unused.
                let _ = tx.send(ts);
            }
        }
    }
}
