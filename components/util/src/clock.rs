//! Time behind a trait, so tests (and a simulator) decide what "now" is.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where time comes from. Production uses [`SystemClock`]; tests use [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for durations, deadlines, leases and timeouts.
    fn now(&self) -> Instant;
    /// Wall-clock time, for what must be comparable across machines and restarts
    /// (timestamps, file ages).
    fn wall(&self) -> SystemTime;

    /// Wall-clock time in whole seconds since the Unix epoch (0 before it): TTL expiries,
    /// creation times.
    fn unix_secs(&self) -> u64 {
        self.wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A shared clock, as components hold it.
pub type ClockRef = Arc<dyn Clock>;

/// The operating system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// A shared system clock.
    pub fn shared() -> ClockRef {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place that reads the system's clocks.
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[allow(clippy::disallowed_methods)]
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    wall_start: SystemTime,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock at an arbitrary instant, its wall time at `wall`.
    pub fn new(wall: SystemTime) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start: SystemClock.now(),
            wall_start: wall,
            elapsed: Mutex::new(Duration::ZERO),
        })
    }

    /// Moves both times forward by `by`.
    pub fn advance(&self, by: Duration) {
        *crate::lock(&self.elapsed) += by;
    }

    fn elapsed(&self) -> Duration {
        *crate::lock(&self.elapsed)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn wall(&self) -> SystemTime {
        self.wall_start + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let (t0, w0) = (clock.now(), clock.wall());
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
        assert_eq!(
            clock.wall().duration_since(w0).ok(),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn the_system_clock_is_monotonic() {
        let clock = SystemClock::shared();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}
