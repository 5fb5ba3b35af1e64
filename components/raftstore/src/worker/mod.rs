//! Threads beside the poller pools. The snap-generator pool lives in `system` and `fsm::store`
//! (it needs the store context); the split checker is here.

mod split_check;

pub use split_check::SplitTask;
