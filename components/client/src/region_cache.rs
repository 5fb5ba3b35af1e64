//! Which region holds a key and which peer to ask: the client's cache of PD's routing table,
//! corrected by what stores answer.
//!
//! Pure data structure: nothing here does I/O, so every update rule is unit-tested.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Duration;

use proto::{errorpb, kvrpcpb, metapb};

use crate::error::KeyDisplay;

/// Where to send a request for one region: the region as cached and the peer chosen.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Route {
    pub region: metapb::Region,
    pub peer: metapb::Peer,
}

impl Route {
    pub fn region_id(&self) -> u64 {
        self.region.id
    }

    pub fn start_key(&self) -> &[u8] {
        &self.region.start_key
    }

    /// Empty means the end of the key space.
    pub fn end_key(&self) -> &[u8] {
        &self.region.end_key
    }

    /// The routing context every KV request carries (API V1: `api_version` left at 0).
    pub fn context(&self) -> kvrpcpb::Context {
        kvrpcpb::Context {
            region_id: self.region.id,
            region_epoch: self.region.region_epoch,
            peer: Some(self.peer),
            ..Default::default()
        }
    }
}

/// What the caller should do after a region error, once the cache has been updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionErrorAction {
    /// The cache learned the right route: resend at once.
    RetryNow,
    /// Resend after a backoff of at least `hint` (the server's suggestion) if given.
    Backoff { hint: Option<Duration> },
    /// Not a routing problem: fail the operation.
    Fail,
}

/// One cached region with the leader last heard of (or the peer to try next).
#[derive(Clone, Debug)]
struct Entry {
    region: metapb::Region,
    leader: Option<metapb::Peer>,
}

impl Entry {
    /// The leader if known, else the first voter, else the first peer.
    fn target(&self) -> Option<metapb::Peer> {
        self.leader.or_else(|| {
            self.region
                .peers
                .iter()
                .find(|p| p.role == metapb::PeerRole::Voter as i32)
                .or_else(|| self.region.peers.first())
                .copied()
        })
    }

    fn route(&self) -> Option<Route> {
        Some(Route {
            region: self.region.clone(),
            peer: self.target()?,
        })
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.region.start_key.as_slice() <= key
            && (self.region.end_key.is_empty() || key < self.region.end_key.as_slice())
    }
}

/// Regions by start key, plus an index by id. Regions in the map never overlap.
#[derive(Debug, Default)]
pub(crate) struct RegionCache {
    by_start: BTreeMap<Vec<u8>, Entry>,
    start_of: HashMap<u64, Vec<u8>>,
}

/// Whether two peers are the same replica (role changes do not make another peer).
fn same_peer(a: &metapb::Peer, b: &metapb::Peer) -> bool {
    a.id == b.id && a.store_id == b.store_id
}

fn member(region: &metapb::Region, peer: &metapb::Peer) -> Option<metapb::Peer> {
    region.peers.iter().find(|p| same_peer(p, peer)).copied()
}

impl RegionCache {
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// The region holding `key`, if cached.
    pub fn locate(&self, key: &[u8]) -> Option<Route> {
        let (_, entry) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        if entry.contains(key) {
            entry.route()
        } else {
            None
        }
    }

    /// The region holding the keys just below `upper` (exclusive; empty means the end of the
    /// key space), for reverse scans: its start is below `upper` and its end at or above it.
    pub fn locate_before(&self, upper: &[u8]) -> Option<Route> {
        let entry = if upper.is_empty() {
            self.by_start.values().next_back()?
        } else {
            self.by_start
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(upper)))
                .next_back()?
                .1
        };
        let end = entry.region.end_key.as_slice();
        let reaches = end.is_empty() || (!upper.is_empty() && end >= upper);
        if reaches {
            entry.route()
        } else {
            None
        }
    }

    #[cfg(test)]
    pub fn get(&self, region_id: u64) -> Option<Route> {
        let start = self.start_of.get(&region_id)?;
        self.by_start.get(start)?.route()
    }

    /// Caches `region`, replacing every cached region it overlaps and any older version of
    /// itself. A leader that is not a member is dropped. Returns false (and caches nothing)
    /// for a region without peers: no request could be routed to it.
    pub fn insert(&mut self, region: metapb::Region, leader: Option<metapb::Peer>) -> bool {
        if region.peers.is_empty() {
            return false;
        }
        let leader = leader
            .filter(|l| l.id != 0)
            .and_then(|l| member(&region, &l));
        self.invalidate(region.id);
        self.remove_overlaps(&region.start_key, &region.end_key);
        self.start_of.insert(region.id, region.start_key.clone());
        self.by_start
            .insert(region.start_key.clone(), Entry { region, leader });
        true
    }

    /// Forgets a region: the next request for its keys asks PD.
    pub fn invalidate(&mut self, region_id: u64) {
        if let Some(start) = self.start_of.remove(&region_id) {
            self.by_start.remove(&start);
        }
    }

    /// Records the leader a store named. Returns false, and forgets the region, when the
    /// leader is not one of its cached peers (the cached membership is stale).
    pub fn update_leader(&mut self, region_id: u64, leader: &metapb::Peer) -> bool {
        let Some(entry) = self
            .start_of
            .get(&region_id)
            .and_then(|start| self.by_start.get_mut(start))
        else {
            return false;
        };
        match member(&entry.region, leader) {
            Some(peer) => {
                entry.leader = Some(peer);
                true
            }
            None => {
                self.invalidate(region_id);
                false
            }
        }
    }

    /// `route.peer` could not be reached: aim the region's next request at the next voter
    /// after it (round robin), which answers with the leader if it is not the leader itself.
    pub fn on_send_failure(&mut self, route: &Route) {
        let Some(entry) = self
            .start_of
            .get(&route.region.id)
            .and_then(|start| self.by_start.get_mut(start))
        else {
            return;
        };
        // Someone already moved on from the failed peer: keep their choice.
        if entry.leader.is_some_and(|l| !same_peer(&l, &route.peer)) {
            return;
        }
        let voters: Vec<metapb::Peer> = entry
            .region
            .peers
            .iter()
            .filter(|p| p.role != metapb::PeerRole::Learner as i32)
            .copied()
            .collect();
        let next = voters
            .iter()
            .position(|p| same_peer(p, &route.peer))
            .map(|i| voters[(i + 1) % voters.len()])
            .or_else(|| voters.first().copied())
            .filter(|p| !same_peer(p, &route.peer));
        entry.leader = next;
    }

    /// Applies what a store's region error says about routing to the cache and tells the
    /// caller how to go on. `route` is what the failed request was sent with.
    pub fn on_region_error(&mut self, route: &Route, err: &errorpb::Error) -> RegionErrorAction {
        let id = route.region.id;
        if let Some(not_leader) = &err.not_leader {
            return match not_leader.leader.filter(|l| l.id != 0) {
                // A new leader named: go there at once.
                Some(leader) if !same_peer(&leader, &route.peer) => {
                    if self.update_leader(id, &leader) {
                        RegionErrorAction::RetryNow
                    } else {
                        // Not a member we know: our membership is stale (forgotten above).
                        RegionErrorAction::Backoff { hint: None }
                    }
                }
                // The peer we asked claims it leads yet refused: an election is settling.
                Some(_) => RegionErrorAction::Backoff { hint: None },
                // No leader known (election, leader transfer): ask PD again after a pause.
                None => {
                    self.invalidate(id);
                    RegionErrorAction::Backoff { hint: None }
                }
            };
        }
        if let Some(epoch) = &err.epoch_not_match {
            if epoch.current_regions.is_empty() {
                self.invalidate(id);
                return RegionErrorAction::Backoff { hint: None };
            }
            self.replace_by_current(route, &epoch.current_regions);
            return RegionErrorAction::RetryNow;
        }
        if err.region_not_found.is_some()
            || err.key_not_in_region.is_some()
            || err.stale_command.is_some()
            || err.store_not_match.is_some()
            || err.mismatch_peer_id.is_some()
        {
            self.invalidate(id);
            return RegionErrorAction::Backoff { hint: None };
        }
        if let Some(busy) = &err.server_is_busy {
            let hint = (busy.backoff_ms > 0).then(|| Duration::from_millis(busy.backoff_ms));
            return RegionErrorAction::Backoff { hint };
        }
        if err.region_not_initialized.is_some() {
            // The peer exists but awaits its data (just split or added): it will be ready soon.
            return RegionErrorAction::Backoff { hint: None };
        }
        // DiskFull, RaftEntryTooLarge, or only a message: retrying cannot help.
        RegionErrorAction::Fail
    }

    /// Caches the regions a store says now cover the failed request's range. A region keeps
    /// its known leader if still a member; otherwise the peer on the store that answered is a
    /// good guess (after a split, the new regions' leaders start beside the parent's).
    fn replace_by_current(&mut self, route: &Route, current: &[metapb::Region]) {
        self.invalidate(route.region.id);
        for region in current {
            let known_leader = self
                .start_of
                .get(&region.id)
                .and_then(|start| self.by_start.get(start))
                .and_then(|e| e.leader)
                .and_then(|l| member(region, &l));
            let leader = known_leader.or_else(|| {
                region
                    .peers
                    .iter()
                    .find(|p| p.store_id == route.peer.store_id)
                    .copied()
            });
            self.insert(region.clone(), leader);
        }
    }

    fn remove_overlaps(&mut self, start: &[u8], end: &[u8]) {
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        // The region starting before `start` may reach into the new range.
        if let Some((s, e)) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(start)))
            .next_back()
        {
            let e_end = e.region.end_key.as_slice();
            if e_end.is_empty() || e_end > start {
                doomed.push(s.clone());
            }
        }
        for (s, _) in self
            .by_start
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
        {
            if !end.is_empty() && s.as_slice() >= end {
                break;
            }
            doomed.push(s.clone());
        }
        for s in doomed {
            if let Some(e) = self.by_start.remove(&s) {
                self.start_of.remove(&e.region.id);
            }
        }
    }

    #[cfg(test)]
    fn leader_of(&self, region_id: u64) -> Option<metapb::Peer> {
        let start = self.start_of.get(&region_id)?;
        self.by_start.get(start)?.leader
    }
}

/// A one-line description of a region error, for error messages and logs.
pub(crate) fn describe(err: &errorpb::Error) -> String {
    let what = if let Some(e) = &err.not_leader {
        match &e.leader {
            Some(l) if l.id != 0 => format!(
                "not leader; leader is peer {} on store {}",
                l.id, l.store_id
            ),
            _ => "not leader; leader unknown".to_owned(),
        }
    } else if let Some(e) = &err.epoch_not_match {
        let ids: Vec<u64> = e.current_regions.iter().map(|r| r.id).collect();
        format!("epoch not match; current regions {ids:?}")
    } else if let Some(e) = &err.region_not_found {
        format!("region {} not found on the store", e.region_id)
    } else if let Some(e) = &err.key_not_in_region {
        format!(
            "key {} not in region {} [{}, {})",
            KeyDisplay(&e.key),
            e.region_id,
            KeyDisplay(&e.start_key),
            KeyDisplay(&e.end_key)
        )
    } else if let Some(e) = &err.server_is_busy {
        format!("server is busy: {} (backoff {} ms)", e.reason, e.backoff_ms)
    } else if err.stale_command.is_some() {
        "stale command".to_owned()
    } else if let Some(e) = &err.store_not_match {
        format!(
            "store not match: asked store {}, reached store {}",
            e.request_store_id, e.actual_store_id
        )
    } else if let Some(e) = &err.raft_entry_too_large {
        format!(
            "raft entry too large: {} bytes in region {}",
            e.entry_size, e.region_id
        )
    } else if let Some(e) = &err.region_not_initialized {
        format!("region {} not initialized on the store", e.region_id)
    } else if let Some(e) = &err.disk_full {
        format!("disk full on stores {:?}: {}", e.store_id, e.reason)
    } else if let Some(e) = &err.mismatch_peer_id {
        format!(
            "peer id mismatch: asked peer {}, store has peer {}",
            e.request_peer_id, e.store_peer_id
        )
    } else {
        return if err.message.is_empty() {
            "unspecified region error".to_owned()
        } else {
            err.message.clone()
        };
    };
    if err.message.is_empty() {
        what
    } else {
        format!("{what} ({})", err.message)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    pub use proto::build::peer;

    use super::*;

    /// Region `id` over [start, end) with peers `id*10+s` on stores 1..=3, epoch version `ver`.
    pub fn region(id: u64, start: &[u8], end: &[u8], ver: u64) -> metapb::Region {
        proto::build::region(id)
            .range(start, end)
            .epoch(1, ver)
            .peers((1..=3).map(|s| peer(id * 10 + s, s)))
            .build()
    }

    /// Regions 1 [.., b), 2 [b, d), 3 [d, ..) with leaders on stores 1, 2, 3.
    pub fn three_regions() -> RegionCache {
        let mut c = RegionCache::default();
        assert!(c.insert(region(1, b"", b"b", 1), Some(peer(11, 1))));
        assert!(c.insert(region(2, b"b", b"d", 1), Some(peer(22, 2))));
        assert!(c.insert(region(3, b"d", b"", 1), Some(peer(33, 3))));
        c
    }

    #[test]
    fn locate_finds_the_holding_region() {
        let c = three_regions();
        assert_eq!(c.locate(b"").unwrap().region_id(), 1);
        assert_eq!(c.locate(b"a").unwrap().region_id(), 1);
        assert_eq!(c.locate(b"b").unwrap().region_id(), 2);
        assert_eq!(c.locate(b"c\xff").unwrap().region_id(), 2);
        assert_eq!(c.locate(b"d").unwrap().region_id(), 3);
        assert_eq!(c.locate(b"zzz").unwrap().region_id(), 3);
        assert_eq!(c.locate(b"b").unwrap().peer, peer(22, 2));
    }

    #[test]
    fn locate_misses_holes() {
        let mut c = RegionCache::default();
        c.insert(region(2, b"b", b"d", 1), None);
        assert!(c.locate(b"a").is_none());
        assert!(c.locate(b"d").is_none());
        assert_eq!(c.locate(b"c").unwrap().region_id(), 2);
    }

    #[test]
    fn locate_before_for_reverse_scans() {
        let c = three_regions();
        assert_eq!(c.locate_before(b"").unwrap().region_id(), 3);
        assert_eq!(c.locate_before(b"e").unwrap().region_id(), 3);
        // "d" is exclusive: the keys below it are in region 2.
        assert_eq!(c.locate_before(b"d").unwrap().region_id(), 2);
        assert_eq!(c.locate_before(b"b\x00").unwrap().region_id(), 2);
        assert_eq!(c.locate_before(b"b").unwrap().region_id(), 1);
        // Nothing is below the empty key... which as an upper bound means +inf; and a hole:
        let mut holes = RegionCache::default();
        holes.insert(region(1, b"", b"b", 1), None);
        holes.insert(region(3, b"d", b"", 1), None);
        assert!(holes.locate_before(b"c").is_none());
        assert!(holes.locate_before(b"d").is_none());
        assert_eq!(holes.locate_before(b"b").unwrap().region_id(), 1);
        let mut only_first = RegionCache::default();
        only_first.insert(region(1, b"", b"b", 1), None);
        assert!(only_first.locate_before(b"").is_none());
    }

    #[test]
    fn unknown_leader_routes_to_first_voter() {
        let mut c = RegionCache::default();
        let mut r = region(1, b"", b"", 1);
        r.peers[0].role = metapb::PeerRole::Learner as i32;
        c.insert(r, None);
        assert_eq!(c.locate(b"k").unwrap().peer, peer(12, 2));
    }

    #[test]
    fn context_carries_region_epoch_and_peer() {
        let c = three_regions();
        let ctx = c.locate(b"c").unwrap().context();
        assert_eq!(ctx.region_id, 2);
        assert_eq!(ctx.region_epoch.unwrap().version, 1);
        assert_eq!(ctx.peer.unwrap(), peer(22, 2));
        assert_eq!(ctx.api_version, kvrpcpb::ApiVersion::V1 as i32);
    }

    #[test]
    fn insert_replaces_overlapping_regions() {
        let mut c = three_regions();
        // Region 2 merged its neighbours' ranges: both disappear.
        c.insert(region(2, b"a", b"e", 2), None);
        assert_eq!(c.len(), 1);
        assert!(c.locate(b"").is_none());
        assert_eq!(c.locate(b"d").unwrap().region_id(), 2);
        assert!(c.locate(b"e").is_none());
        assert!(c.get(1).is_none() && c.get(3).is_none());
    }

    #[test]
    fn insert_replaces_older_version_of_itself() {
        let mut c = three_regions();
        // Region 2 shrank to [b, c): its old entry is gone, region 3 untouched.
        c.insert(region(2, b"b", b"c", 2), None);
        assert!(c.locate(b"c").is_none());
        assert_eq!(
            c.locate(b"b").unwrap().region.region_epoch.unwrap().version,
            2
        );
        assert_eq!(c.locate(b"d").unwrap().region_id(), 3);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn insert_refuses_regions_without_peers_and_drops_foreign_leaders() {
        let mut c = RegionCache::default();
        let mut r = region(1, b"", b"", 1);
        r.peers.clear();
        assert!(!c.insert(r, None));
        assert_eq!(c.len(), 0);
        c.insert(region(1, b"", b"", 1), Some(peer(99, 9)));
        assert_eq!(c.leader_of(1), None);
        c.insert(region(1, b"", b"", 1), Some(peer(0, 0)));
        assert_eq!(c.leader_of(1), None);
    }

    fn not_leader(leader: Option<metapb::Peer>) -> errorpb::Error {
        errorpb::Error {
            not_leader: Some(errorpb::NotLeader {
                region_id: 2,
                leader,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn not_leader_with_hint_updates_leader() {
        let mut c = three_regions();
        let route = c.locate(b"c").unwrap();
        let action = c.on_region_error(&route, &not_leader(Some(peer(23, 3))));
        assert_eq!(action, RegionErrorAction::RetryNow);
        assert_eq!(c.locate(b"c").unwrap().peer, peer(23, 3));
    }

    #[test]
    fn not_leader_without_hint_invalidates() {
        let mut c = three_regions();
        let route = c.locate(b"c").unwrap();
        let action = c.on_region_error(&route, &not_leader(None));
        assert_eq!(action, RegionErrorAction::Backoff { hint: None });
        assert!(c.locate(b"c").is_none());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn not_leader_naming_a_stranger_invalidates() {
        let mut c = three_regions();
        let route = c.locate(b"c").unwrap();
        let action = c.on_region_error(&route, &not_leader(Some(peer(77, 7))));
        assert_eq!(action, RegionErrorAction::Backoff { hint: None });
        assert!(c.get(2).is_none());
    }

    #[test]
    fn not_leader_naming_the_asked_peer_backs_off() {
        let mut c = three_regions();
        let route = c.locate(b"c").unwrap();
        let action = c.on_region_error(&route, &not_leader(Some(route.peer)));
        assert_eq!(action, RegionErrorAction::Backoff { hint: None });
        assert!(c.get(2).is_some());
    }

    #[test]
    fn epoch_not_match_with_current_regions_replaces_entries() {
        let mut c = three_regions();
        let route = c.locate(b"c").unwrap();
        // Region 2 split at "c": 2 keeps [b, c), 4 is new over [c, d).
        let err = errorpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch {
                current_regions: vec![region(2, b"b", b"c", 2), region(4, b"c", b"d", 2)],
            }),
            ..Default::default()
        };
        assert_eq!(c.on_region_error(&route, &err), RegionErrorAction::RetryNow);
        let left = c.locate(b"b").unwrap();
        assert_eq!(left.region_id(), 2);
        assert_eq!(left.region.region_epoch.unwrap().version, 2);
        let right = c.locate(b"c").unwrap();
        assert_eq!(right.region_id(), 4);
        // The new region's leader is guessed on the store that answered.
        assert_eq!(right.peer.store_id, route.peer.store_id);
        assert_eq!(c.locate(b"d").unwrap().region_id(), 3);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn epoch_not_match_without_regions_invalidates() {
        let mut c = three_regions();
        let route = c.locate(b"c").unwrap();
        let err = errorpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch::default()),
            ..Default::default()
        };
        let action = c.on_region_error(&route, &err);
        assert_eq!(action, RegionErrorAction::Backoff { hint: None });
        assert!(c.get(2).is_none());
    }

    #[test]
    fn routing_errors_invalidate() {
        let errors = [
            errorpb::Error {
                region_not_found: Some(errorpb::RegionNotFound { region_id: 2 }),
                ..Default::default()
            },
            errorpb::Error {
                key_not_in_region: Some(errorpb::KeyNotInRegion::default()),
                ..Default::default()
            },
            errorpb::Error {
                stale_command: Some(errorpb::StaleCommand {}),
                ..Default::default()
            },
            errorpb::Error {
                store_not_match: Some(errorpb::StoreNotMatch::default()),
                ..Default::default()
            },
            errorpb::Error {
                mismatch_peer_id: Some(errorpb::MismatchPeerId::default()),
                ..Default::default()
            },
        ];
        for err in errors {
            let mut c = three_regions();
            let route = c.locate(b"c").unwrap();
            let action = c.on_region_error(&route, &err);
            assert_eq!(action, RegionErrorAction::Backoff { hint: None }, "{err:?}");
            assert!(c.get(2).is_none(), "{err:?}");
            assert!(c.get(1).is_some() && c.get(3).is_some());
        }
    }

    #[test]
    fn server_is_busy_backs_off_with_hint_and_keeps_cache() {
        let mut c = three_regions();
        let route = c.locate(b"c").unwrap();
        let err = errorpb::Error {
            server_is_busy: Some(errorpb::ServerIsBusy {
                reason: "mailbox full".into(),
                backoff_ms: 50,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            c.on_region_error(&route, &err),
            RegionErrorAction::Backoff {
                hint: Some(Duration::from_millis(50))
            }
        );
        assert_eq!(c.locate(b"c").unwrap(), route);
    }

    #[test]
    fn other_errors_fail() {
        let mut c = three_regions();
        let route = c.locate(b"c").unwrap();
        let only_message = errorpb::Error {
            message: "something odd".into(),
            ..Default::default()
        };
        assert_eq!(
            c.on_region_error(&route, &only_message),
            RegionErrorAction::Fail
        );
        assert_eq!(describe(&only_message), "something odd");
        let too_large = errorpb::Error {
            raft_entry_too_large: Some(errorpb::RaftEntryTooLarge {
                region_id: 2,
                entry_size: 9,
            }),
            ..Default::default()
        };
        assert_eq!(
            c.on_region_error(&route, &too_large),
            RegionErrorAction::Fail
        );
        assert!(describe(&too_large).contains("too large"));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn send_failure_rotates_through_voters() {
        let mut c = three_regions();
        let first = c.locate(b"c").unwrap();
        assert_eq!(first.peer.store_id, 2);
        c.on_send_failure(&first);
        let second = c.locate(b"c").unwrap();
        assert_eq!(second.peer.store_id, 3);
        c.on_send_failure(&second);
        let third = c.locate(b"c").unwrap();
        assert_eq!(third.peer.store_id, 1);
        // A stale report (of a peer no longer targeted) leaves the newer choice alone.
        c.on_send_failure(&first);
        assert_eq!(c.locate(b"c").unwrap().peer.store_id, 1);
    }

    #[test]
    fn describe_mentions_the_leader() {
        let text = describe(&not_leader(Some(peer(23, 3))));
        assert!(text.contains("peer 23 on store 3"), "{text}");
    }
}
