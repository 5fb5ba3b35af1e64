use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::SendError;
use crate::fsm::{Fsm, FsmState};
use crate::metrics::SystemMetrics;

/// Hands a notified FSM to the pollers. Implemented by the batch system's queue; kept behind a
/// trait so a mailbox does not need to know the control FSM's type.
pub(crate) trait Schedule<N: Fsm>: Send + Sync {
    fn schedule(&self, fsm: Box<N>, mailbox: &BasicMailbox<N>);
    fn is_shutting_down(&self) -> bool;
}

/// The messages waiting for one FSM. Plain deques under a lock rather than channels: a
/// bounded channel allocates every slot up front (4096 slots × two mailboxes per region is
/// most of an idle region's memory), while a deque allocates only while messages wait, and
/// its buffer is freed when the FSM is parked with nothing queued.
struct Queues<M> {
    /// From the system's own pollers (see `force_send`): unbounded, handled first.
    forced: VecDeque<M>,
    /// Everything else: at most `capacity`.
    normal: VecDeque<M>,
}

struct MailboxInner<N: Fsm> {
    addr: u64,
    capacity: usize,
    // Held by the mailbox, not the FSM, so the poller can drain it and see what is left.
    queues: Mutex<Queues<N::Message>>,
    /// Signalled when a full bounded queue gets room, for `send_timeout`.
    room: Condvar,
    state: FsmState<N>,
    scheduler: Arc<dyn Schedule<N>>,
    metrics: SystemMetrics,
}

/// A bounded queue of messages for one FSM, plus the FSM itself while it is idle. Cloning is
/// cheap (an `Arc`); every clone talks to the same FSM. An idle mailbox holds no buffer: its
/// memory does not depend on its capacity.
pub struct BasicMailbox<N: Fsm> {
    inner: Arc<MailboxInner<N>>,
}

impl<N: Fsm> Clone for BasicMailbox<N> {
    fn clone(&self) -> Self {
        BasicMailbox {
            inner: self.inner.clone(),
        }
    }
}

impl<N: Fsm> BasicMailbox<N> {
    pub(crate) fn new(
        addr: u64,
        fsm: Box<N>,
        capacity: usize,
        scheduler: Arc<dyn Schedule<N>>,
        metrics: SystemMetrics,
    ) -> BasicMailbox<N> {
        BasicMailbox {
            inner: Arc::new(MailboxInner {
                addr,
                capacity,
                queues: Mutex::new(Queues {
                    forced: VecDeque::new(),
                    normal: VecDeque::new(),
                }),
                room: Condvar::new(),
                state: FsmState::new(fsm),
                scheduler,
                metrics,
            }),
        }
    }

    pub fn addr(&self) -> u64 {
        self.inner.addr
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    // A poisoned lock means a panic in another thread between two queue operations, each of
    // which leaves the deques consistent: keep going.
    fn queues(&self) -> MutexGuard<'_, Queues<N::Message>> {
        self.inner.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages waiting to be handled.
    pub fn len(&self) -> usize {
        let queues = self.queues();
        queues.forced.len() + queues.normal.len()
    }

    pub fn is_empty(&self) -> bool {
        let queues = self.queues();
        queues.forced.is_empty() && queues.normal.is_empty()
    }

    pub(crate) fn same_as(&self, other: &BasicMailbox<N>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn is_closed(&self) -> bool {
        self.inner.state.is_dropped()
    }

    fn full(&self, msg: N::Message) -> SendError<N::Message> {
        self.inner.metrics.mailbox_full.inc();
        SendError::Full {
            addr: self.inner.addr,
            capacity: self.inner.capacity,
            msg,
        }
    }

    /// Queues `msg` without waiting and wakes the FSM if it is idle. A send that races with
    /// [`crate::Router::close`] or shutdown may return `Ok` and still be dropped with the
    /// mailbox; messages that must not vanish silently carry a callback that reports its drop.
    pub fn try_send(&self, msg: N::Message) -> Result<(), SendError<N::Message>> {
        self.push_bounded(msg)?;
        self.notify();
        Ok(())
    }

    /// Like [`Self::try_send`], but an idle FSM the message wakes is handed back instead of
    /// scheduled: the caller must schedule it (see [`crate::Router::send_group`]), or the FSM is
    /// lost with the mailbox left believing it is scheduled.
    pub(crate) fn try_send_unscheduled(
        &self,
        msg: N::Message,
    ) -> Result<Option<Box<N>>, SendError<N::Message>> {
        self.push_bounded(msg)?;
        Ok(self.inner.state.take_idle())
    }

    /// Queues `msg` in the bounded queue if the mailbox is open and has room.
    fn push_bounded(&self, msg: N::Message) -> Result<(), SendError<N::Message>> {
        let msg = self.check_open(msg)?;
        let mut queues = self.queues();
        if queues.normal.len() >= self.inner.capacity {
            drop(queues);
            return Err(self.full(msg));
        }
        queues.normal.push_back(msg);
        Ok(())
    }

    /// Queues `msg` whatever the mailbox's capacity. For messages between pollers of different
    /// systems (committed entries to apply, apply results back): if either side blocked on the
    /// other's full mailbox while holding its own batch, both pools could wait for each other
    /// forever. Their volume is bounded upstream (raft's in-flight and uncommitted limits), not
    /// here. Forced messages are handled before the bounded queue's.
    pub fn force_send(&self, msg: N::Message) -> Result<(), SendError<N::Message>> {
        let msg = self.check_open(msg)?;
        self.queues().forced.push_back(msg);
        self.notify();
        Ok(())
    }

    /// Like [`Self::try_send`], but waits up to `timeout` for room in a full mailbox.
    pub fn send_timeout(
        &self,
        msg: N::Message,
        timeout: Duration,
    ) -> Result<(), SendError<N::Message>> {
        let msg = self.check_open(msg)?;
        {
            let capacity = self.inner.capacity;
            let state = &self.inner.state;
            let (mut queues, _) = self
                .inner
                .room
                .wait_timeout_while(self.queues(), timeout, |q| {
                    q.normal.len() >= capacity && !state.is_dropped()
                })
                .unwrap_or_else(|e| e.into_inner());
            if state.is_dropped() {
                drop(queues);
                return Err(SendError::Disconnected {
                    addr: self.inner.addr,
                    msg,
                });
            }
            if queues.normal.len() >= capacity {
                drop(queues);
                return Err(self.full(msg));
            }
            queues.normal.push_back(msg);
        }
        self.notify();
        Ok(())
    }

    fn check_open(&self, msg: N::Message) -> Result<N::Message, SendError<N::Message>> {
        let addr = self.inner.addr;
        // Shutdown first: it closes every mailbox, and "shutting down" is the useful answer.
        if self.inner.scheduler.is_shutting_down() {
            return Err(SendError::ShuttingDown { addr, msg });
        }
        if self.inner.state.is_dropped() {
            return Err(SendError::Disconnected { addr, msg });
        }
        Ok(msg)
    }

    /// Schedules the FSM if it is idle. The message must already be queued: that order is what
    /// makes a concurrent release see it.
    pub(crate) fn notify(&self) {
        if let Some(fsm) = self.inner.state.take_idle() {
            self.inner.scheduler.schedule(fsm, self);
        }
    }

    /// Moves up to `limit` queued messages into `buf`, forced ones first.
    pub(crate) fn drain_into(&self, buf: &mut Vec<N::Message>, limit: usize) {
        let mut guard = self.queues();
        let queues = &mut *guard;
        let was_full = queues.normal.len() >= self.inner.capacity;
        for queue in [&mut queues.forced, &mut queues.normal] {
            let take = limit.saturating_sub(buf.len()).min(queue.len());
            buf.extend(queue.drain(..take));
        }
        // Only a sender that found the queue full waits; a notify costs a syscall.
        if was_full && queues.normal.len() < self.inner.capacity {
            self.inner.room.notify_all();
        }
    }

    /// Parks a held FSM. A message that arrived after the poller's last look at the queue found
    /// the FSM notified and did not schedule it, so look again after parking.
    /// An FSM parked with nothing queued gives its queues' buffers back, so an idle mailbox
    /// costs no memory for messages; they are freed after the lock is let go.
    pub(crate) fn release(&self, fsm: Box<N>) {
        self.inner.state.release(fsm);
        let (empty, _freed) = {
            let mut queues = self.queues();
            if queues.forced.is_empty() && queues.normal.is_empty() {
                let freed = (
                    std::mem::take(&mut queues.forced),
                    std::mem::take(&mut queues.normal),
                );
                (true, Some(freed))
            } else {
                (false, None)
            }
        };
        if !empty {
            self.notify();
        }
    }

    /// Closes the mailbox: later sends fail with `Disconnected`, and the FSM is dropped (now if
    /// idle, otherwise by the poller holding it). Senders waiting for room give up at once.
    pub(crate) fn close(&self) {
        self.inner.state.clear();
        // Under the lock, so a sender between its check and its wait cannot miss it.
        let _queues = self.queues();
        self.inner.room.notify_all();
    }
}
