//! Store liveness: one heartbeat per store pair, not per region. Every
//! `raft-heartbeat-ticks` ticks a store sends each store that hosts a peer of one of its
//! regions a `STORE_HEARTBEAT` (region 0). A store not heard from for an election timeout is
//! down: the hibernating regions here whose leader it hosts (found in `StoreMeta`'s leader
//! index, a lookup and not a scan) are woken, `hibernate-wake-batch` per tick so their
//! elections do not come as one storm. Sleeping followers never tick, so this is how they
//! learn their leader is gone. A store heard from again gets the mirror image: the sleeping
//! leaders here with a member there send one heartbeat round, so a leader deposed while the
//! store was cut off (or a member left behind) learns of it now, not at its next rare tick.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proto::metapb::Peer as PeerMeta;
use proto::raft_serverpb::{ExtraMessage, ExtraMessageType, RaftMessage};

/// The liveness of the other stores, as this store's control FSM sees it.
#[derive(Debug, Default)]
pub struct StoreLiveness {
    /// When each store was last heard from (first seen counts as heard).
    last_heard: HashMap<u64, Instant>,
    down: HashSet<u64>,
    /// Regions to tell, with the store whose liveness changed and how.
    to_wake: VecDeque<(u64, u64, StoreEvent)>,
}

/// What a queued wake-up tells a region's peer about another store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// The store, hosting the region's leader, went silent.
    Down,
    /// The store, hosting a member of a region led here, answers again.
    Up,
}

/// What one liveness check decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LivenessChange {
    pub down: Vec<u64>,
    pub up: Vec<u64>,
    /// Down stores no longer shared (forgotten while down).
    pub forgotten: usize,
}

impl StoreLiveness {
    pub fn heard(&mut self, store_id: u64, now: Instant) {
        self.last_heard.insert(store_id, now);
    }

    pub fn last_heard(&self, store_id: u64) -> Option<Instant> {
        self.last_heard.get(&store_id).copied()
    }

    pub fn is_down(&self, store_id: u64) -> bool {
        self.down.contains(&store_id)
    }

    /// Compares `stores` (the stores this one shares regions with) against what was heard:
    /// a store silent for `timeout` is down until heard from again. Stores no longer shared
    /// are forgotten.
    pub fn check(
        &mut self,
        stores: impl IntoIterator<Item = u64>,
        now: Instant,
        timeout: Duration,
    ) -> LivenessChange {
        let stores: std::collections::BTreeSet<u64> = stores.into_iter().collect();
        self.last_heard.retain(|s, _| stores.contains(s));
        let mut change = LivenessChange::default();
        let down = self.down.len();
        self.down.retain(|s| stores.contains(s));
        change.forgotten = down - self.down.len();
        for store in stores {
            let heard = *self.last_heard.entry(store).or_insert(now);
            let silent = now.saturating_duration_since(heard) >= timeout;
            if silent && self.down.insert(store) {
                self.to_wake.retain(|(_, s, _)| *s != store);
                change.down.push(store);
            } else if !silent && self.down.remove(&store) {
                // Its regions still queued need no wake-up any more.
                self.to_wake.retain(|(_, s, _)| *s != store);
                change.up.push(store);
            }
        }
        change.down.sort_unstable();
        change.up.sort_unstable();
        change
    }

    pub fn queue_wakes(
        &mut self,
        store_id: u64,
        event: StoreEvent,
        regions: impl IntoIterator<Item = u64>,
    ) {
        self.to_wake
            .extend(regions.into_iter().map(|r| (r, store_id, event)));
    }

    /// Up to `n` regions to tell now, with the store and what it did.
    pub fn next_wakes(&mut self, n: usize) -> Vec<(u64, u64, StoreEvent)> {
        let n = n.min(self.to_wake.len());
        self.to_wake.drain(..n).collect()
    }

    pub fn pending_wakes(&self) -> usize {
        self.to_wake.len()
    }
}

/// The liveness heartbeat from `from` to store `to`.
pub fn store_heartbeat(from: u64, to: u64) -> RaftMessage {
    let peer = |store_id| PeerMeta {
        store_id,
        ..Default::default()
    };
    RaftMessage {
        region_id: 0,
        from_peer: Some(peer(from)),
        to_peer: Some(peer(to)),
        extra: Some(ExtraMessage {
            r#type: ExtraMessageType::StoreHeartbeat as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The sending store, if `msg` is a liveness heartbeat.
pub fn is_store_heartbeat(msg: &RaftMessage) -> Option<u64> {
    let extra = msg.extra.as_ref()?;
    (msg.region_id == 0 && extra.r#type == ExtraMessageType::StoreHeartbeat as i32)
        .then(|| msg.from_peer.map_or(0, |p| p.store_id))
        .filter(|s| *s != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_silent_for_the_timeout_is_down_until_heard_again() {
        let mut l = StoreLiveness::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(l.check([2, 3], t0, timeout), LivenessChange::default());
        l.heard(2, ms(900));
        assert_eq!(
            l.check([2, 3], ms(1000), timeout),
            LivenessChange {
                down: vec![3],
                ..Default::default()
            }
        );
        // Reported once.
        assert_eq!(
            l.check([2, 3], ms(1100), timeout),
            LivenessChange::default()
        );
        assert!(l.is_down(3) && !l.is_down(2));
        l.heard(3, ms(1200));
        assert_eq!(
            l.check([2, 3], ms(1300), timeout),
            LivenessChange {
                up: vec![3],
                ..Default::default()
            }
        );
        // A store no longer shared is forgotten (counted if it was down).
        assert_eq!(l.check([2, 3], ms(2300), timeout).down, vec![2, 3]);
        assert_eq!(l.check([2], ms(2300), timeout).forgotten, 1);
        assert_eq!(l.last_heard(3), None);
        l.queue_wakes(2, StoreEvent::Down, [10, 11, 12]);
        assert_eq!(
            l.next_wakes(2),
            vec![(10, 2, StoreEvent::Down), (11, 2, StoreEvent::Down)]
        );
        assert_eq!(l.pending_wakes(), 1);
        // A store that answers again takes its queued wake-ups with it.
        l.heard(2, ms(2400));
        assert_eq!(l.check([2], ms(2500), timeout).up, vec![2]);
        assert_eq!(l.pending_wakes(), 0);
        // And one found down again takes its queued pings.
        l.queue_wakes(2, StoreEvent::Up, [10]);
        assert_eq!(l.check([2], ms(3500), timeout).down, vec![2]);
        assert_eq!(l.pending_wakes(), 0);
    }

    #[test]
    fn heartbeats_name_their_store() {
        let hb = store_heartbeat(4, 5);
        assert_eq!(is_store_heartbeat(&hb), Some(4));
        let mut region_msg = hb.clone();
        region_msg.region_id = 9;
        assert_eq!(is_store_heartbeat(&region_msg), None);
    }
}
