//! What every regionstore crate shares and nothing else: the [`Clock`] that all time is read
//! through, lock helpers, and [`heap::CountingAlloc`] for the tests that measure memory.
//!
//! # Invariants
//! - A [`Clock`]'s monotonic time never goes backwards; [`ManualClock`] moves only when told.
//! - [`lock`], [`read`] and [`write`] never panic on a poisoned lock: a thread that panicked
//!   while holding it either stopped the store (a poller's panic is fatal) or left the guarded
//!   value whole (every holder keeps its critical section free of partial updates).
//!
//! # Must not depend on
//! Any other regionstore crate, or any crate outside the standard library: everything depends
//! on this one.

mod clock;
pub mod heap;
mod sync;

pub use clock::{Clock, ClockRef, ManualClock, SystemClock};
pub use sync::{lock, read, write};
