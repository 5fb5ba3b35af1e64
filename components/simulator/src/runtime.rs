//! The command layer's runtime in the simulation ([`storage::raw_cas::Runtime`]): timers on
//! the virtual clock, and background tasks (a latch held past an unknown write) polled in
//! spawn order on every step of the simulation.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use storage::raw_cas::{Runtime, Task};
use util::{Clock, ManualClock};

pub(crate) struct SimRuntime {
    clock: Arc<ManualClock>,
    tasks: Mutex<Vec<Task>>,
}

impl SimRuntime {
    pub(crate) fn new(clock: Arc<ManualClock>) -> Arc<SimRuntime> {
        Arc::new(SimRuntime {
            clock,
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Polls every task once; drops those that finished. Tasks spawned meanwhile wait for
    /// the next call.
    pub(crate) fn run(&self) {
        let mut tasks = std::mem::take(&mut *util::lock(&self.tasks));
        let mut cx = Context::from_waker(Waker::noop());
        tasks.retain_mut(|task| task.as_mut().poll(&mut cx).is_pending());
        let mut shared = util::lock(&self.tasks);
        tasks.append(&mut shared);
        *shared = tasks;
    }

    pub(crate) fn pending(&self) -> usize {
        util::lock(&self.tasks).len()
    }
}

impl Runtime for SimRuntime {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn sleep(&self, d: Duration) -> Task {
        let (clock, until) = (self.clock.clone(), self.clock.now() + d);
        Box::pin(std::future::poll_fn(move |_| {
            if clock.now() >= until {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }))
    }

    fn spawn(&self, task: Task) {
        util::lock(&self.tasks).push(task);
    }
}
