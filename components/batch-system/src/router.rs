use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crossbeam::channel::{self, Sender};

use crate::config::Config;
use crate::error::SendError;
use crate::fsm::Fsm;
use crate::mailbox::{BasicMailbox, Schedule};
use crate::metrics::SystemMetrics;

/// The id the control FSM is addressed by in errors. Normal FSM ids are region ids, which start
/// at 1, so 0 never collides.
pub const CONTROL_ADDR: u64 = 0;

/// FSM ids are integers the router hashes on every send; SipHash (the std default, built to resist
/// untrusted keys) costs more than the rest of a send. A multiplicative hash spreads sequential
/// ids over the table, and ids are not attacker-chosen.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type MailboxMap<N> = HashMap<u64, BasicMailbox<N>, BuildHasherDefault<IdHasher>>;

/// What the pollers take from the shared queue.
pub(crate) enum Scheduled<N: Fsm, C: Fsm> {
    Normal(Box<N>, BasicMailbox<N>),
    Control(Box<C>),
    /// FSMs woken by one delivery (see [`Router::send_group`]): one poller takes them together,
    /// as many as its batch has room for.
    Group(Vec<(Box<N>, BasicMailbox<N>)>),
    /// Wakes a blocked poller so it notices shutdown without waiting out `idle_wait`.
    Wake,
}

/// The queue every notified FSM goes through, and the shutdown flag.
pub(crate) struct Queue<N: Fsm, C: Fsm> {
    pub(crate) sender: Sender<Scheduled<N, C>>,
    /// The control FSM has a queue of its own, which pollers take from first: behind
    /// thousands of notified peers (a failover wakes them all) the store's ticks and liveness
    /// heartbeats would wait seconds, and a store that is up would be taken for down.
    pub(crate) control_sender: Sender<Box<C>>,
    pub(crate) shutting_down: AtomicBool,
}

struct NormalScheduler<N: Fsm, C: Fsm>(Arc<Queue<N, C>>);
struct ControlScheduler<N: Fsm, C: Fsm>(Arc<Queue<N, C>>);

impl<N: Fsm, C: Fsm> Schedule<N> for NormalScheduler<N, C> {
    fn schedule(&self, fsm: Box<N>, mailbox: &BasicMailbox<N>) {
        // The system holds a receiver for its whole life, so this fails only while the system
        // itself is being dropped; the FSM is then dropped with it.
        if self
            .0
            .sender
            .send(Scheduled::Normal(fsm, mailbox.clone()))
            .is_err()
        {
            mailbox.close();
        }
    }

    fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire)
    }
}

impl<N: Fsm, C: Fsm> Schedule<C> for ControlScheduler<N, C> {
    fn schedule(&self, fsm: Box<C>, mailbox: &BasicMailbox<C>) {
        if self.0.control_sender.send(fsm).is_err() {
            mailbox.close();
        }
    }

    fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire)
    }
}

struct RouterInner<N: Fsm, C: Fsm> {
    normals: RwLock<MailboxMap<N>>,
    control: BasicMailbox<C>,
    normal_scheduler: Arc<dyn Schedule<N>>,
    queue: Arc<Queue<N, C>>,
    config: Config,
    metrics: SystemMetrics,
}

/// Routes messages to FSMs by id. Cheap to clone; all clones share one table.
pub struct Router<N: Fsm, C: Fsm> {
    inner: Arc<RouterInner<N, C>>,
}

impl<N: Fsm, C: Fsm> Clone for Router<N, C> {
    fn clone(&self) -> Self {
        Router {
            inner: self.inner.clone(),
        }
    }
}

impl<N: Fsm, C: Fsm> Router<N, C> {
    pub(crate) fn new(
        control: Box<C>,
        queue: Arc<Queue<N, C>>,
        config: Config,
        metrics: SystemMetrics,
    ) -> Router<N, C> {
        let control = BasicMailbox::new(
            CONTROL_ADDR,
            control,
            config.control_mailbox_capacity,
            Arc::new(ControlScheduler(queue.clone())),
            metrics.clone(),
        );
        Router {
            inner: Arc::new(RouterInner {
                normals: RwLock::new(MailboxMap::default()),
                control,
                normal_scheduler: Arc::new(NormalScheduler(queue.clone())),
                queue,
                config,
                metrics,
            }),
        }
    }

    // A poisoned lock means a panic while the map was being changed; the map itself is still
    // consistent (every change is a single insert or remove), so keep going.
    fn read(&self) -> RwLockReadGuard<'_, MailboxMap<N>> {
        self.inner.normals.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, MailboxMap<N>> {
        self.inner
            .normals
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `fsm` under `addr` with a fresh mailbox. An FSM already registered under `addr`
    /// is closed first.
    pub fn register(&self, addr: u64, fsm: Box<N>) -> BasicMailbox<N> {
        let mailbox = BasicMailbox::new(
            addr,
            fsm,
            self.inner.config.mailbox_capacity,
            self.inner.normal_scheduler.clone(),
            self.inner.metrics.clone(),
        );
        let old = self.write().insert(addr, mailbox.clone());
        match old {
            Some(old) => old.close(),
            None => self.inner.metrics.fsm_count.inc(),
        }
        mailbox
    }

    /// The mailbox of `addr`, for callers that send to it often and want to skip the lookup.
    pub fn mailbox(&self, addr: u64) -> Option<BasicMailbox<N>> {
        self.read().get(&addr).cloned()
    }

    /// Sends without waiting.
    pub fn send(&self, addr: u64, msg: N::Message) -> Result<(), SendError<N::Message>> {
        self.send_with(addr, msg, BasicMailbox::try_send)
    }

    /// Sends whatever the mailbox's capacity (see [`BasicMailbox::force_send`]).
    pub fn force_send(&self, addr: u64, msg: N::Message) -> Result<(), SendError<N::Message>> {
        self.send_with(addr, msg, BasicMailbox::force_send)
    }

    /// The mailbox is used under the read lock instead of being cloned: neither send blocks.
    fn send_with(
        &self,
        addr: u64,
        msg: N::Message,
        send: impl FnOnce(&BasicMailbox<N>, N::Message) -> Result<(), SendError<N::Message>>,
    ) -> Result<(), SendError<N::Message>> {
        let normals = self.read();
        match normals.get(&addr) {
            Some(mailbox) => send(mailbox, msg),
            None => {
                drop(normals);
                Err(self.not_found(addr, msg))
            }
        }
    }

    /// Sends messages that arrived together (one batch from another store) so that the FSMs
    /// they wake are queued as one unit: the poller that takes it handles them in one round, so
    /// with one raft-log write, instead of the pollers splitting them as they trickle in.
    /// Each message is bounded like [`Self::send`]; returns the ones refused, with why.
    pub fn send_group(
        &self,
        msgs: impl IntoIterator<Item = (u64, N::Message)>,
    ) -> Vec<SendError<N::Message>> {
        let mut woken = Vec::new();
        let mut refused = Vec::new();
        {
            let normals = self.read();
            for (addr, msg) in msgs {
                let Some(mailbox) = normals.get(&addr) else {
                    refused.push(self.not_found(addr, msg));
                    continue;
                };
                match mailbox.try_send_unscheduled(msg) {
                    Ok(Some(fsm)) => woken.push((fsm, mailbox.clone())),
                    Ok(None) => {}
                    Err(e) => refused.push(e),
                }
            }
        }
        let scheduled = match woken.len() {
            0 => return refused,
            1 => {
                let (fsm, mailbox) = woken.swap_remove(0);
                Scheduled::Normal(fsm, mailbox)
            }
            _ => Scheduled::Group(woken),
        };
        // As in `NormalScheduler::schedule`: this fails only while the system is dropped.
        if let Err(channel::SendError(scheduled)) = self.inner.queue.sender.send(scheduled) {
            match scheduled {
                Scheduled::Normal(_, mailbox) => mailbox.close(),
                Scheduled::Group(woken) => woken.iter().for_each(|(_, m)| m.close()),
                _ => {}
            }
        }
        refused
    }

    /// Sends, waiting up to `timeout` for room if the mailbox is full.
    pub fn send_timeout(
        &self,
        addr: u64,
        msg: N::Message,
        timeout: Duration,
    ) -> Result<(), SendError<N::Message>> {
        match self.mailbox(addr) {
            Some(mailbox) => mailbox.send_timeout(msg, timeout),
            None => Err(self.not_found(addr, msg)),
        }
    }

    fn not_found(&self, addr: u64, msg: N::Message) -> SendError<N::Message> {
        if self.is_shutting_down() {
            SendError::ShuttingDown { addr, msg }
        } else {
            SendError::Disconnected { addr, msg }
        }
    }

    pub fn send_control(&self, msg: C::Message) -> Result<(), SendError<C::Message>> {
        self.inner.control.try_send(msg)
    }

    pub fn send_control_timeout(
        &self,
        msg: C::Message,
        timeout: Duration,
    ) -> Result<(), SendError<C::Message>> {
        self.inner.control.send_timeout(msg, timeout)
    }

    /// Sends a message made by `make` to every normal FSM. Returns how many were delivered;
    /// full mailboxes are skipped (and counted in the mailbox-full metric).
    pub fn broadcast_normal(&self, mut make: impl FnMut() -> N::Message) -> usize {
        let mailboxes: Vec<_> = self.read().values().cloned().collect();
        mailboxes
            .iter()
            .filter(|mailbox| mailbox.try_send(make()).is_ok())
            .count()
    }

    /// Removes and closes `addr`: later sends fail with `Disconnected`, and the FSM is dropped
    /// once no poller holds it. Messages still queued are dropped with it.
    pub fn close(&self, addr: u64) -> bool {
        let removed = self.write().remove(&addr);
        match removed {
            Some(mailbox) => {
                mailbox.close();
                self.inner.metrics.fsm_count.dec();
                true
            }
            None => false,
        }
    }

    /// Removes `mailbox` from the table if it is still the one registered under its address.
    pub(crate) fn remove_stopped(&self, mailbox: &BasicMailbox<N>) {
        let mut normals = self.write();
        if normals
            .get(&mailbox.addr())
            .is_some_and(|current| current.same_as(mailbox))
        {
            normals.remove(&mailbox.addr());
            self.inner.metrics.fsm_count.dec();
        }
    }

    /// Closes every mailbox, the control one included. Used at shutdown, after the pollers
    /// have stopped, so idle FSMs are dropped now rather than whenever the last handle goes.
    pub(crate) fn close_all(&self) {
        let drained: Vec<_> = self.write().drain().map(|(_, mailbox)| mailbox).collect();
        self.inner.metrics.fsm_count.sub(drained.len() as i64);
        for mailbox in drained {
            mailbox.close();
        }
        self.inner.control.close();
    }

    /// Puts a still-notified FSM at the back of the queue. The system holds a receiver for its
    /// whole life, so the send cannot fail while a poller (the only caller) runs.
    pub(crate) fn requeue(&self, scheduled: Scheduled<N, C>) {
        let _ = match scheduled {
            Scheduled::Control(fsm) => self.inner.queue.control_sender.send(fsm).is_ok(),
            other => self.inner.queue.sender.send(other).is_ok(),
        };
    }

    pub(crate) fn control_mailbox(&self) -> &BasicMailbox<C> {
        &self.inner.control
    }

    /// Number of registered normal FSMs.
    pub fn alive_count(&self) -> usize {
        self.read().len()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.queue.shutting_down.load(Ordering::Acquire)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }
}
