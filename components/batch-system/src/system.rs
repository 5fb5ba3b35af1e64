use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam::channel::{self, Receiver};

use crate::config::Config;
use crate::error::Error;
use crate::fsm::Fsm;
use crate::mailbox::BasicMailbox;
use crate::metrics::SystemMetrics;
use crate::router::{Queue, Router, Scheduled};

/// The work a poller does with the FSMs of one round. One handler per poller thread, so it may
/// keep per-round state (a shared write batch, say) without locks.
pub trait PollHandler<N: Fsm, C: Fsm>: Send + 'static {
    /// A round starts with `batch_size` FSMs (the control FSM included when it is scheduled).
    fn begin(&mut self, _batch_size: usize) {}

    /// Handles the control FSM's messages. `msgs` holds at most `messages_per_tick` of them.
    fn handle_control(&mut self, control: &mut C, msgs: &mut Vec<C::Message>);

    /// Handles one normal FSM's messages; `msgs` holds at most `messages_per_tick` of them and
    /// may be empty. Whatever is left in `msgs` afterwards is dropped.
    fn handle_normal(&mut self, normal: &mut N, msgs: &mut Vec<N::Message>);

    /// The round is over: every normal FSM handled in it is in `normals`. This is where work is
    /// done once for the whole batch (e.g. one raft-log write and fsync for all regions).
    fn end(&mut self, _normals: &mut [Box<N>]) {}

    /// Called before the poller blocks waiting for work.
    fn pause(&mut self) {}
}

/// Makes one handler per poller thread.
pub trait HandlerBuilder<N: Fsm, C: Fsm> {
    type Handler: PollHandler<N, C>;
    fn build(&mut self) -> Self::Handler;
}

/// A pool of poller threads and the router that feeds them.
pub struct BatchSystem<N: Fsm, C: Fsm> {
    name: String,
    config: Config,
    router: Router<N, C>,
    queue: Arc<Queue<N, C>>,
    receivers: Receivers<N, C>,
    workers: Vec<JoinHandle<()>>,
    /// The poller of a system run by hand ([`BatchSystem::start_manual`]). In a mutex only so
    /// the system stays `Sync`; it is used through `&mut self`.
    manual: std::sync::Mutex<Option<ManualPoller<N, C>>>,
    metrics: SystemMetrics,
}

type BoxedHandler<N, C> = Box<dyn PollHandler<N, C>>;

impl<N: Fsm, C: Fsm> PollHandler<N, C> for BoxedHandler<N, C> {
    fn begin(&mut self, batch_size: usize) {
        (**self).begin(batch_size)
    }
    fn handle_control(&mut self, control: &mut C, msgs: &mut Vec<C::Message>) {
        (**self).handle_control(control, msgs)
    }
    fn handle_normal(&mut self, normal: &mut N, msgs: &mut Vec<N::Message>) {
        (**self).handle_normal(normal, msgs)
    }
    fn end(&mut self, normals: &mut [Box<N>]) {
        (**self).end(normals)
    }
    fn pause(&mut self) {
        (**self).pause()
    }
}

struct ManualPoller<N: Fsm, C: Fsm> {
    poller: Poller<N, C, BoxedHandler<N, C>>,
    batch: Batch<N, C>,
    bufs: RoundBuffers<N, C>,
}

/// What [`create_system`] returns: the router to send with, and the system to spawn and stop.
pub type RouterAndSystem<N, C> = (Router<N, C>, BatchSystem<N, C>);

/// Creates a batch system called `name` (used in thread names and metric labels) whose control
/// FSM is `control`. No thread runs until [`BatchSystem::spawn`].
pub fn create_system<N: Fsm, C: Fsm>(
    name: &str,
    config: &Config,
    control: Box<C>,
) -> Result<RouterAndSystem<N, C>, Error> {
    config.validate()?;
    let (sender, receiver) = channel::unbounded();
    let (control_sender, control_receiver) = channel::unbounded();
    let queue = Arc::new(Queue {
        sender,
        control_sender,
        shutting_down: Default::default(),
    });
    let metrics = SystemMetrics::new(name);
    let router = Router::new(control, queue.clone(), config.clone(), metrics.clone());
    let system = BatchSystem {
        name: name.to_owned(),
        config: config.clone(),
        router: router.clone(),
        queue,
        receivers: Receivers {
            normal: receiver,
            control: control_receiver,
        },
        workers: Vec::new(),
        manual: Default::default(),
        metrics,
    };
    Ok((router, system))
}

impl<N: Fsm, C: Fsm> BatchSystem<N, C> {
    pub fn router(&self) -> &Router<N, C> {
        &self.router
    }

    /// Starts `pool_size` poller threads, each with a handler from `builder`.
    pub fn spawn<B: HandlerBuilder<N, C>>(&mut self, builder: &mut B) -> Result<(), Error> {
        for i in 0..self.config.pool_size {
            let thread = format!("{}-{}", self.name, i);
            let poller = Poller {
                router: self.router.clone(),
                receivers: self.receivers.clone(),
                handler: builder.build(),
                config: self.config.clone(),
                metrics: self.metrics.clone(),
            };
            let handle = thread::Builder::new()
                .name(thread.clone())
                .spawn(move || poller.run())
                .map_err(|source| Error::Spawn { thread, source })?;
            self.workers.push(handle);
        }
        Ok(())
    }

    /// Runs the system by hand instead of on threads: nothing runs until [`Self::poll`], which
    /// does the rounds on the caller's thread. For a deterministic simulation; the rounds are
    /// the same code as a poller thread's.
    pub fn start_manual<B: HandlerBuilder<N, C>>(&mut self, builder: &mut B) {
        let poller = Poller {
            router: self.router.clone(),
            receivers: self.receivers.clone(),
            handler: Box::new(builder.build()) as BoxedHandler<N, C>,
            config: self.config.clone(),
            metrics: self.metrics.clone(),
        };
        *self.manual_slot() = Some(ManualPoller {
            batch: Batch::new(&self.config),
            bufs: RoundBuffers::new(&self.config),
            poller,
        });
    }

    /// Of a system started by hand: runs rounds until no FSM is scheduled, or `max_rounds`
    /// rounds. Returns how many rounds ran (0: there was nothing to do).
    pub fn poll(&mut self, max_rounds: usize) -> usize {
        let Some(manual) = self.manual_slot().as_mut() else {
            return 0;
        };
        let mut rounds = 0;
        while rounds < max_rounds {
            manual.poller.fill(&mut manual.batch);
            if manual.batch.len() == 0 {
                break;
            }
            manual.poller.round(&mut manual.batch, &mut manual.bufs);
            rounds += 1;
        }
        rounds
    }

    fn manual_slot(&mut self) -> &mut Option<ManualPoller<N, C>> {
        self.manual
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops accepting messages, lets the pollers drain what is already queued, joins them and
    /// then drops every FSM. Sends during and after shutdown fail with `ShuttingDown`.
    /// Returns the number of poller threads that panicked.
    pub fn shutdown(&mut self) -> usize {
        self.queue.shutting_down.store(true, Ordering::Release);
        for _ in 0..self.workers.len() {
            let _ = self.queue.sender.send(Scheduled::Wake);
        }
        let panicked = self
            .workers
            .drain(..)
            .map(JoinHandle::join)
            .filter(Result::is_err)
            .count();
        // A system run by hand drops what it holds: its caller stopped polling.
        *self.manual_slot() = None;
        self.router.close_all();
        // FSMs scheduled by a send that raced with shutdown: drop them now.
        while self.receivers.normal.try_recv().is_ok() {}
        while self.receivers.control.try_recv().is_ok() {}
        panicked
    }
}

impl<N: Fsm, C: Fsm> Drop for BatchSystem<N, C> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The FSMs one poller holds during a round.
struct Batch<N: Fsm, C: Fsm> {
    /// Most normal FSMs held at once (`max_batch_size`).
    limit: usize,
    normals: Vec<Box<N>>,
    mailboxes: Vec<BasicMailbox<N>>,
    control: Option<Box<C>>,
}

impl<N: Fsm, C: Fsm> Batch<N, C> {
    fn new(config: &Config) -> Self {
        Batch {
            limit: config.max_batch_size,
            normals: Vec::with_capacity(config.max_batch_size),
            mailboxes: Vec::with_capacity(config.max_batch_size),
            control: None,
        }
    }

    fn len(&self) -> usize {
        self.normals.len() + usize::from(self.control.is_some())
    }

    /// Takes what was scheduled; returns the part of a group the batch has no room for.
    #[must_use]
    fn push(&mut self, scheduled: Scheduled<N, C>) -> Option<Scheduled<N, C>> {
        match scheduled {
            Scheduled::Normal(fsm, mailbox) => {
                self.normals.push(fsm);
                self.mailboxes.push(mailbox);
            }
            Scheduled::Group(mut members) => {
                let room = self.limit.saturating_sub(self.normals.len()).max(1);
                let rest = members.split_off(room.min(members.len()));
                for (fsm, mailbox) in members {
                    self.normals.push(fsm);
                    self.mailboxes.push(mailbox);
                }
                if !rest.is_empty() {
                    return Some(Scheduled::Group(rest));
                }
            }
            Scheduled::Control(fsm) => self.control = Some(fsm),
            Scheduled::Wake => {}
        }
        None
    }
}

/// Message buffers reused across rounds.
struct RoundBuffers<N: Fsm, C: Fsm> {
    normal: Vec<N::Message>,
    control: Vec<C::Message>,
}

impl<N: Fsm, C: Fsm> RoundBuffers<N, C> {
    fn new(config: &Config) -> Self {
        RoundBuffers {
            normal: Vec::with_capacity(config.messages_per_tick),
            control: Vec::new(),
        }
    }
}

/// The pollers' ends of the system's two queues.
struct Receivers<N: Fsm, C: Fsm> {
    normal: Receiver<Scheduled<N, C>>,
    control: Receiver<Box<C>>,
}

impl<N: Fsm, C: Fsm> Clone for Receivers<N, C> {
    fn clone(&self) -> Self {
        Receivers {
            normal: self.normal.clone(),
            control: self.control.clone(),
        }
    }
}

impl<N: Fsm, C: Fsm> Receivers<N, C> {
    fn is_empty(&self) -> bool {
        self.normal.is_empty() && self.control.is_empty()
    }
}

struct Poller<N: Fsm, C: Fsm, H> {
    router: Router<N, C>,
    receivers: Receivers<N, C>,
    handler: H,
    config: Config,
    metrics: SystemMetrics,
}

impl<N: Fsm, C: Fsm, H: PollHandler<N, C>> Poller<N, C, H> {
    fn run(mut self) {
        let mut batch = Batch::new(&self.config);
        let mut bufs = RoundBuffers::new(&self.config);
        while self.fetch(&mut batch) {
            self.gather(&mut batch);
            self.round(&mut batch, &mut bufs);
        }
    }

    /// One round over the batch: each FSM's messages, then `end`, then [`Self::settle`].
    fn round(&mut self, batch: &mut Batch<N, C>, bufs: &mut RoundBuffers<N, C>) {
        self.metrics.batch_size.observe(batch.len() as f64);
        let mut handled = 0u64;
        self.handler.begin(batch.len());
        if let Some(control) = batch.control.as_mut() {
            self.router
                .control_mailbox()
                .drain_into(&mut bufs.control, self.config.messages_per_tick);
            self.handler.handle_control(control, &mut bufs.control);
            bufs.control.clear();
        }
        for (fsm, mailbox) in batch.normals.iter_mut().zip(&batch.mailboxes) {
            if mailbox.is_closed() {
                // Closed (or replaced) while queued: it must not run again.
                continue;
            }
            mailbox.drain_into(&mut bufs.normal, self.config.messages_per_tick);
            handled += bufs.normal.len() as u64;
            self.handler.handle_normal(fsm, &mut bufs.normal);
            bufs.normal.clear();
        }
        self.handler.end(&mut batch.normals);
        self.metrics.messages_handled.inc_by(handled);
        self.settle(batch);
    }

    /// Fills the batch from the queue. Blocks while there is nothing to do; returns false when
    /// the system is shutting down and no work is left.
    fn fetch(&mut self, batch: &mut Batch<N, C>) -> bool {
        self.fill(batch);
        if batch.len() > 0 {
            return true;
        }
        self.handler.pause();
        loop {
            if self.router.is_shutting_down() && self.receivers.is_empty() {
                return false;
            }
            let scheduled = channel::select! {
                recv(self.receivers.control) -> fsm => fsm.map(Scheduled::Control),
                recv(self.receivers.normal) -> scheduled => scheduled,
                default(self.config.idle_wait) => continue,
            };
            let Ok(scheduled) = scheduled else {
                return false;
            };
            self.take(batch, scheduled);
            self.fill(batch);
            if batch.len() > 0 {
                return true;
            }
        }
    }

    /// Waits up to `batch_wait` for more FSMs to join a batch that is not full.
    fn gather(&mut self, batch: &mut Batch<N, C>) {
        if self.config.batch_wait.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.config.batch_wait;
        while batch.len() < self.config.max_batch_size {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            match self.receivers.normal.recv_timeout(left) {
                Ok(scheduled) => {
                    self.take(batch, scheduled);
                    self.fill(batch);
                }
                Err(_) => return,
            }
        }
    }

    /// Takes the control FSM first if it is queued, then normal FSMs up to the batch size.
    fn fill(&mut self, batch: &mut Batch<N, C>) {
        if batch.control.is_none() {
            if let Ok(control) = self.receivers.control.try_recv() {
                batch.control = Some(control);
            }
        }
        while batch.len() < self.config.max_batch_size {
            match self.receivers.normal.try_recv() {
                Ok(scheduled) => self.take(batch, scheduled),
                Err(_) => break,
            }
        }
    }

    /// Adds to the batch; what a full batch has no room for goes back to the queue.
    fn take(&self, batch: &mut Batch<N, C>, scheduled: Scheduled<N, C>) {
        if let Some(rest) = batch.push(scheduled) {
            self.router.requeue(rest);
        }
    }

    /// Decides, after a round, what happens to each FSM: dropped if stopped, parked if it has no
    /// messages, kept for the next round if it has, or sent to the back of the queue if it has
    /// messages but other FSMs are waiting (fairness).
    fn settle(&mut self, batch: &mut Batch<N, C>) {
        let others_waiting = !self.receivers.normal.is_empty();
        for i in (0..batch.normals.len()).rev() {
            let has_messages = !batch.mailboxes[i].is_empty();
            let stopped = batch.normals[i].is_stopped() || batch.mailboxes[i].is_closed();
            if !stopped && has_messages && !others_waiting {
                continue;
            }
            let fsm = batch.normals.swap_remove(i);
            let mailbox = batch.mailboxes.swap_remove(i);
            if stopped {
                mailbox.close();
                self.router.remove_stopped(&mailbox);
                drop(fsm);
            } else if has_messages {
                self.metrics.yields.inc();
                self.router.requeue(Scheduled::Normal(fsm, mailbox));
            } else {
                mailbox.release(fsm);
            }
        }
        if let Some(control) = batch.control.take() {
            let mailbox = self.router.control_mailbox();
            if control.is_stopped() {
                mailbox.close();
            } else if mailbox.is_empty() {
                mailbox.release(control);
            } else if others_waiting {
                self.metrics.yields.inc();
                self.router.requeue(Scheduled::Control(control));
            } else {
                batch.control = Some(control);
            }
        }
    }
}
