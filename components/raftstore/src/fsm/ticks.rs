//! The tick registry: which peers the tick thread ticks. Only awake peers get a tick every
//! base tick; a hibernating peer gets a rare `PeerMsg::HibernateTick` (a leader reports its
//! region to the scheduler, a follower checks it is still a member), spread evenly over
//! `hibernate-heartbeat-interval`. So a store's tick cost follows its awake regions, not all
//! of them.
//!
//! The poller files a peer after every round that changed its [`SleepState`]; a new peer is
//! filed awake, a destroyed one removed (only by its destroy: a tick that finds no mailbox
//! may race the region's re-creation).

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::metrics::METRICS;
use crate::operation::hibernate::SleepState;

#[derive(Debug, Default)]
pub struct TickRegistry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Ordered sets throughout: the simulator replays a seed only if ticks go out in the
    /// same order every run.
    awake: BTreeSet<u64>,
    /// Ordered, so the hibernate ticks go round them from a cursor.
    asleep: BTreeSet<u64>,
    cursor: u64,
    /// Hibernate ticks owed (fractions carry over from tick to tick).
    credit: f64,
}

impl TickRegistry {
    pub fn set(&self, region_id: u64, state: SleepState) {
        let mut inner = util::lock(&self.inner);
        inner.remove(region_id);
        match state {
            SleepState::Awake => {
                inner.awake.insert(region_id);
                METRICS.regions_awake.inc();
            }
            SleepState::Asleep => {
                inner.asleep.insert(region_id);
                METRICS.regions_hibernated.inc();
            }
        }
    }

    pub fn remove(&self, region_id: u64) {
        util::lock(&self.inner).remove(region_id);
    }

    /// The peers to tick now into `awake`, and into `hibernating` the sleeping peers due a
    /// hibernate tick: `share` of them per call (base tick / hibernate heartbeat interval), so
    /// each gets one per interval.
    pub fn due(&self, awake: &mut Vec<u64>, hibernating: &mut Vec<u64>, share: f64) {
        let mut inner = util::lock(&self.inner);
        awake.extend(inner.awake.iter().copied());
        let sleeping = inner.asleep.len();
        if sleeping == 0 {
            inner.credit = 0.0;
            return;
        }
        inner.credit += sleeping as f64 * share;
        let mut owed = (inner.credit.floor() as usize).min(sleeping);
        inner.credit -= owed as f64;
        let cursor = inner.cursor;
        let mut last = cursor;
        for id in inner
            .asleep
            .range(cursor + 1..)
            .chain(inner.asleep.range(..=cursor))
        {
            if owed == 0 {
                break;
            }
            hibernating.push(*id);
            last = *id;
            owed -= 1;
        }
        inner.cursor = last;
    }

    /// (awake, hibernating) peers.
    pub fn counts(&self) -> (usize, usize) {
        let inner = util::lock(&self.inner);
        (inner.awake.len(), inner.asleep.len())
    }
}

impl Inner {
    fn remove(&mut self, region_id: u64) {
        if self.awake.remove(&region_id) {
            METRICS.regions_awake.dec();
        }
        if self.asleep.remove(&region_id) {
            METRICS.regions_hibernated.dec();
        }
    }
}

impl Drop for TickRegistry {
    fn drop(&mut self) {
        // The gauges are process-wide: a stopped store takes its peers out of them.
        let (awake, asleep) = self.counts();
        METRICS.regions_awake.sub(awake as i64);
        METRICS.regions_hibernated.sub(asleep as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_awake_peers_are_ticked_and_sleeping_ones_share_the_interval() {
        let reg = TickRegistry::default();
        for id in 1..=10 {
            reg.set(id, SleepState::Asleep);
        }
        reg.set(11, SleepState::Awake);
        assert_eq!(reg.counts(), (1, 10));
        let mut seen = std::collections::HashMap::new();
        // Each sleeping peer once per 4 calls: 2.5 per call.
        for _ in 0..8 {
            let (mut awake, mut hib) = (Vec::new(), Vec::new());
            reg.due(&mut awake, &mut hib, 0.25);
            assert_eq!(awake, vec![11]);
            assert!((2..=3).contains(&hib.len()), "{hib:?}");
            for id in hib {
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 10);
        assert!(seen.values().all(|n| *n == 2), "{seen:?}");
        reg.set(11, SleepState::Asleep);
        for id in 1..=10 {
            reg.remove(id);
        }
        let (mut awake, mut hib) = (Vec::new(), Vec::new());
        reg.due(&mut awake, &mut hib, 0.0);
        assert!(awake.is_empty() && hib.is_empty());
        assert_eq!(reg.counts(), (0, 1));
    }
}
