use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, SendTimeoutError, Sender, TrySendError};

use crate::error::SendError;
use crate::fsm::{Fsm, FsmState};
use crate::metrics::SystemMetrics;

/// Hands a notified FSM to the pollers. Implemented by the batch system's queue; kept behind a
/// trait so a mailbox does not need to know the control FSM's type.
pub(crate) trait Schedule<N: Fsm>: Send + Sync {
    fn schedule(&self, fsm: Box<N>, mailbox: &BasicMailbox<N>);
    fn is_shutting_down(&self) -> bool;
}

struct MailboxInner<N: Fsm> {
    addr: u64,
    capacity: usize,
    sender: Sender<N::Message>,
    // Held by the mailbox, not the FSM, so the poller can drain it and see what is left.
    receiver: Receiver<N::Message>,
    // Unbounded, for messages between the system's own pollers (see `force_send`).
    force_sender: Sender<N::Message>,
    force_receiver: Receiver<N::Message>,
    state: FsmState<N>,
    scheduler: Arc<dyn Schedule<N>>,
    metrics: SystemMetrics,
}

/// A bounded queue of messages for one FSM, plus the FSM itself while it is idle. Cloning is
/// cheap (an `Arc`); every clone talks to the same FSM.
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
        let (sender, receiver) = channel::bounded(capacity);
        let (force_sender, force_receiver) = channel::unbounded();
        BasicMailbox {
            inner: Arc::new(MailboxInner {
                addr,
                capacity,
                sender,
                receiver,
                force_sender,
                force_receiver,
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

    /// Messages waiting to be handled.
    pub fn len(&self) -> usize {
        self.inner.receiver.len() + self.inner.force_receiver.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.receiver.is_empty() && self.inner.force_receiver.is_empty()
    }

    pub(crate) fn same_as(&self, other: &BasicMailbox<N>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn is_closed(&self) -> bool {
        self.inner.state.is_dropped()
    }

    /// Queues `msg` without waiting and wakes the FSM if it is idle. A send that races with
    /// [`crate::Router::close`] or shutdown may return `Ok` and still be dropped with the
    /// mailbox; messages that must not vanish silently carry a callback that reports its drop.
    pub fn try_send(&self, msg: N::Message) -> Result<(), SendError<N::Message>> {
        let addr = self.inner.addr;
        self.check_open(msg)
            .and_then(|msg| match self.inner.sender.try_send(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(msg)) => {
                    self.inner.metrics.mailbox_full.inc();
                    Err(SendError::Full {
                        addr,
                        capacity: self.inner.capacity,
                        msg,
                    })
                }
                Err(TrySendError::Disconnected(msg)) => Err(SendError::Disconnected { addr, msg }),
            })?;
        self.notify();
        Ok(())
    }

    /// Queues `msg` whatever the mailbox's capacity. For messages between pollers of different
    /// systems (committed entries to apply, apply results back): if either side blocked on the
    /// other's full mailbox while holding its own batch, both pools could wait for each other
    /// forever. Their volume is bounded upstream (raft's in-flight and uncommitted limits), not
    /// here. Forced messages are handled before the bounded queue's.
    pub fn force_send(&self, msg: N::Message) -> Result<(), SendError<N::Message>> {
        let addr = self.inner.addr;
        let msg = self.check_open(msg)?;
        if let Err(e) = self.inner.force_sender.send(msg) {
            return Err(SendError::Disconnected { addr, msg: e.0 });
        }
        self.notify();
        Ok(())
    }

    /// Like [`Self::try_send`], but waits up to `timeout` for room in a full mailbox.
    pub fn send_timeout(
        &self,
        msg: N::Message,
        timeout: Duration,
    ) -> Result<(), SendError<N::Message>> {
        let addr = self.inner.addr;
        let msg = self.check_open(msg)?;
        match self.inner.sender.send_timeout(msg, timeout) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(msg)) => {
                self.inner.metrics.mailbox_full.inc();
                return Err(SendError::Full {
                    addr,
                    capacity: self.inner.capacity,
                    msg,
                });
            }
            Err(SendTimeoutError::Disconnected(msg)) => {
                return Err(SendError::Disconnected { addr, msg })
            }
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

    /// Moves up to `limit` queued messages into `buf`.
    pub(crate) fn drain_into(&self, buf: &mut Vec<N::Message>, limit: usize) {
        while buf.len() < limit {
            match self.inner.force_receiver.try_recv() {
                Ok(msg) => buf.push(msg),
                Err(_) => break,
            }
        }
        while buf.len() < limit {
            match self.inner.receiver.try_recv() {
                Ok(msg) => buf.push(msg),
                Err(_) => break,
            }
        }
    }

    /// Parks a held FSM. A message that arrived after the poller's last look at the queue found
    /// the FSM notified and did not schedule it, so look again after parking.
    pub(crate) fn release(&self, fsm: Box<N>) {
        self.inner.state.release(fsm);
        if !self.is_empty() {
            self.notify();
        }
    }

    /// Closes the mailbox: later sends fail with `Disconnected`, and the FSM is dropped (now if
    /// idle, otherwise by the poller holding it).
    pub(crate) fn close(&self) {
        self.inner.state.clear();
    }
}
