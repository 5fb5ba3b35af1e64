use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// A state machine driven by the batch system.
pub trait Fsm: Send + 'static {
    type Message: Send + 'static;

    /// A stopped FSM is dropped by its poller instead of being parked again. Whoever stops an
    /// FSM should also close its mailbox in the router so that senders get a clear error.
    fn is_stopped(&self) -> bool {
        false
    }
}

const NOTIFIED: usize = 0;
const IDLE: usize = 1;
const DROPPED: usize = 2;

/// Who owns an FSM right now.
///
/// - `IDLE`: the boxed FSM is parked in `data`; the first notifier to move the status to
///   `NOTIFIED` takes it out and schedules it.
/// - `NOTIFIED`: exactly one poller (or the scheduler queue) holds it; `data` is null.
/// - `DROPPED`: the mailbox is closed; a parked FSM has been dropped, and a held one is dropped
///   by its holder when it tries to release it.
///
/// Ownership of the pointer moves only through atomic swaps, so it is taken exactly once. The
/// status uses SeqCst: the no-lost-wake-up argument orders a sender's "push, then read status"
/// against a poller's "set IDLE, then check the queue", which needs a single total order.
pub(crate) struct FsmState<N> {
    status: AtomicUsize,
    data: AtomicPtr<N>,
}

impl<N> FsmState<N> {
    pub(crate) fn new(fsm: Box<N>) -> FsmState<N> {
        FsmState {
            status: AtomicUsize::new(IDLE),
            data: AtomicPtr::new(Box::into_raw(fsm)),
        }
    }

    /// Takes the FSM out if it is idle. Returns `None` if someone else holds it or it is dropped.
    pub(crate) fn take_idle(&self) -> Option<Box<N>> {
        if self
            .status
            .compare_exchange(IDLE, NOTIFIED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return None;
        }
        let p = self.data.swap(ptr::null_mut(), Ordering::AcqRel);
        debug_assert!(!p.is_null(), "idle fsm state holds no fsm");
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from `Box::into_raw` and the swap above made us its only owner.
        Some(unsafe { Box::from_raw(p) })
    }

    /// Parks a held FSM again. If the state was dropped meanwhile, the FSM is dropped here.
    pub(crate) fn release(&self, fsm: Box<N>) {
        let previous = self.data.swap(Box::into_raw(fsm), Ordering::AcqRel);
        debug_assert!(previous.is_null(), "released an fsm into an occupied state");
        if self
            .status
            .compare_exchange(NOTIFIED, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
        // Dropped while we held it: nobody else will look at `data` again except `Drop`.
        self.drop_parked();
    }

    /// Marks the state dropped; a parked FSM is dropped at once.
    pub(crate) fn clear(&self) {
        if self.status.swap(DROPPED, Ordering::SeqCst) == IDLE {
            self.drop_parked();
        }
    }

    pub(crate) fn is_dropped(&self) -> bool {
        self.status.load(Ordering::SeqCst) == DROPPED
    }

    fn drop_parked(&self) {
        let p = self.data.swap(ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: as in `take_idle`, the swap made us the only owner.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl<N> Drop for FsmState<N> {
    fn drop(&mut self) {
        self.drop_parked();
    }
}

// SAFETY: the state only moves a `Box<N>` between threads, which is sound when `N: Send`.
unsafe impl<N: Send> Send for FsmState<N> {}
unsafe impl<N: Send> Sync for FsmState<N> {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn take_release_clear() {
        let drops = Arc::new(AtomicUsize::new(0));
        let state = FsmState::new(Box::new(Counted(drops.clone())));
        let fsm = state.take_idle().expect("idle fsm can be taken");
        assert!(
            state.take_idle().is_none(),
            "a held fsm cannot be taken twice"
        );
        state.release(fsm);
        let fsm = state.take_idle().expect("released fsm is idle again");
        state.clear();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        state.release(fsm);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "release after clear drops the fsm"
        );
        assert!(state.take_idle().is_none());
        drop(state);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn clear_drops_parked_fsm_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let state = FsmState::new(Box::new(Counted(drops.clone())));
        state.clear();
        state.clear();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(state);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn concurrent_takers_get_one_fsm() {
        let drops = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(FsmState::new(Box::new(Counted(drops.clone()))));
        let taken = Arc::new(AtomicUsize::new(0));
        for _ in 0..200 {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (state, taken) = (state.clone(), taken.clone());
                    std::thread::spawn(move || {
                        state.take_idle().inspect(|_| {
                            taken.fetch_add(1, Ordering::SeqCst);
                        })
                    })
                })
                .collect();
            let mut held: Vec<_> = threads
                .into_iter()
                .filter_map(|t| t.join().ok().flatten())
                .collect();
            assert_eq!(held.len(), 1, "exactly one thread takes an idle fsm");
            state.release(held.pop().expect("one fsm"));
        }
        assert_eq!(taken.load(Ordering::SeqCst), 200);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
    }
}
