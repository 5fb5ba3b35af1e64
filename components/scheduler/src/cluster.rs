//! Stores, regions and the routing table. Regions are learnt from heartbeats and split
//! reports; an update with an older epoch than what is known is ignored, and a newer region
//! replaces every known region its range overlaps (the stale halves of a split, say).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prost::Message as _;
use proto::metapb::{Peer, Region, RegionEpoch, Store};

use util::ClockRef;

use crate::schedule::Loads;
use crate::{Error, MetaStore, Result};

const BOOTSTRAP_KEY: &[u8] = b"meta/bootstrapped";
const STORE_PREFIX: &[u8] = b"stores/";
const REGION_PREFIX: &[u8] = b"regions/";

/// A region as the scheduler knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionInfo {
    pub region: Region,
    pub leader: Option<Peer>,
    /// Peers the leader has not heard from for a while.
    pub down_peers: Vec<Peer>,
    /// Peers far behind the leader's log (catching up by snapshot).
    pub pending_peers: Vec<Peer>,
    pub approximate_size: u64,
    pub approximate_keys: u64,
}

/// What a store reports about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub capacity: u64,
    pub used: u64,
    pub available: u64,
    pub region_count: u64,
    pub leader_count: u64,
}

/// A store as the scheduler knows it.
#[derive(Clone, Debug)]
pub struct StoreInfo {
    pub store: Store,
    pub stats: StoreStats,
    /// The last heartbeat, or when this scheduler started (a store is not down just because
    /// the scheduler restarted).
    pub last_heartbeat: Instant,
}

/// The end of a range, ordered with "no end" last.
type EndKey = (bool, Vec<u8>);

fn end_key(region: &Region) -> EndKey {
    (region.end_key.is_empty(), region.end_key.clone())
}

/// `a` is older than `b` in either dimension of the epoch.
fn is_stale(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    a.version < b.version || a.conf_ver < b.conf_ver
}

#[derive(Default)]
struct State {
    first_region: Option<u64>,
    stores: HashMap<u64, StoreInfo>,
    regions: HashMap<u64, RegionInfo>,
    ranges: BTreeMap<EndKey, u64>,
    /// Peers and leaders per store over `regions`, kept as regions come and go: the checkers
    /// read them on every heartbeat, and recounting 100k regions each time (as this once did,
    /// cloning the table) made the scheduler the bottleneck of a failover.
    loads: Loads,
}

impl State {
    fn overlapping(&self, region: &Region) -> Vec<u64> {
        let start = (false, region.start_key.clone());
        let mut out = Vec::new();
        for (_, id) in self
            .ranges
            .range((Bound::Excluded(start), Bound::Unbounded))
        {
            let Some(other) = self.regions.get(id) else {
                continue;
            };
            // Ranges are sorted by end: stop at the first that starts at or after our end.
            if !region.end_key.is_empty() && other.region.start_key >= region.end_key {
                break;
            }
            out.push(*id);
        }
        out
    }

    /// Records a region with no leader or sizes known yet.
    fn insert(&mut self, region: Region) {
        self.put(RegionInfo {
            region,
            ..Default::default()
        });
    }

    /// Records `info`, replacing what was known of its region.
    fn put(&mut self, info: RegionInfo) {
        self.remove(info.region.id);
        self.ranges.insert(end_key(&info.region), info.region.id);
        self.loads.count(&info, 1);
        self.regions.insert(info.region.id, info);
    }

    fn remove(&mut self, region_id: u64) {
        if let Some(old) = self.regions.remove(&region_id) {
            self.loads.count(&old, -1);
            let end = end_key(&old.region);
            if self.ranges.get(&end) == Some(&region_id) {
                self.ranges.remove(&end);
            }
        }
    }
}

impl StoreInfo {
    fn new(store: Store, now: Instant) -> StoreInfo {
        StoreInfo {
            store,
            stats: StoreStats::default(),
            last_heartbeat: now,
        }
    }
}

pub struct Cluster {
    store: Arc<dyn MetaStore>,
    state: RwLock<State>,
    clock: ClockRef,
    logger: slog::Logger,
}

fn region_key(id: u64) -> Vec<u8> {
    [REGION_PREFIX, format!("{id:020}").as_bytes()].concat()
}

fn store_key(id: u64) -> Vec<u8> {
    [STORE_PREFIX, format!("{id:020}").as_bytes()].concat()
}

fn decode<M: prost::Message + Default>(key: &[u8], value: &[u8]) -> Result<M> {
    M::decode(value).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

impl Cluster {
    /// Loads what the metadata store holds (stores, regions, bootstrap state).
    pub fn open(
        store: Arc<dyn MetaStore>,
        clock: ClockRef,
        logger: &slog::Logger,
    ) -> Result<Cluster> {
        let mut state = State::default();
        if let Some(v) = store.get(BOOTSTRAP_KEY)? {
            state.first_region = Some(crate::id::decode_u64(BOOTSTRAP_KEY, &v)?);
        }
        for (k, v) in store.scan_prefix(STORE_PREFIX)? {
            let s: Store = decode(&k, &v)?;
            state.stores.insert(s.id, StoreInfo::new(s, clock.now()));
        }
        // Newest versions first: an older region that overlaps one of them was replaced but
        // its removal may not have reached the disk (removals are not synced).
        let mut regions: Vec<Region> = store
            .scan_prefix(REGION_PREFIX)?
            .iter()
            .map(|(k, v)| decode(k, v))
            .collect::<Result<_>>()?;
        regions.sort_by_key(|r| std::cmp::Reverse(r.region_epoch.unwrap_or_default().version));
        for region in regions {
            if state.overlapping(&region).is_empty() {
                state.insert(region);
            }
        }
        Ok(Cluster {
            store,
            state: RwLock::new(state),
            clock,
            logger: logger.new(slog::o!("component" => "scheduler")),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        util::read(&self.state)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        util::write(&self.state)
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.read().first_region.is_some()
    }

    /// Records the first store and the first region (the whole key space, one peer on it).
    pub fn bootstrap(&self, store: Store, region: Region) -> Result<()> {
        let mut state = self.write();
        if let Some(region_id) = state.first_region {
            return Err(Error::AlreadyBootstrapped { region_id });
        }
        if let Some(known) = state.regions.keys().next() {
            return Err(Error::AlreadyBootstrapped { region_id: *known });
        }
        if !region.start_key.is_empty() || !region.end_key.is_empty() {
            return Err(Error::Invalid {
                detail: "the first region must cover the whole key space".into(),
            });
        }
        if !region.peers.iter().any(|p| p.store_id == store.id) {
            return Err(Error::Invalid {
                detail: format!("the first region has no peer on store {}", store.id),
            });
        }
        self.store.put_batch(
            &[
                (store_key(store.id), store.encode_to_vec()),
                (region_key(region.id), region.encode_to_vec()),
                (BOOTSTRAP_KEY.to_vec(), region.id.to_be_bytes().to_vec()),
            ],
            true,
        )?;
        state.first_region = Some(region.id);
        state
            .stores
            .insert(store.id, StoreInfo::new(store, self.clock.now()));
        state.insert(region);
        Ok(())
    }

    /// Adds or updates a store (a joining store, a new address).
    pub fn put_store(&self, store: Store) -> Result<()> {
        if store.id == 0 {
            return Err(Error::Invalid {
                detail: "store id 0".into(),
            });
        }
        self.store
            .put_batch(&[(store_key(store.id), store.encode_to_vec())], true)?;
        let mut state = self.write();
        match state.stores.get_mut(&store.id) {
            Some(info) => info.store = store,
            None => {
                state
                    .stores
                    .insert(store.id, StoreInfo::new(store, self.clock.now()));
            }
        }
        Ok(())
    }

    pub fn get_store(&self, store_id: u64) -> Result<Store> {
        self.read()
            .stores
            .get(&store_id)
            .map(|s| s.store.clone())
            .ok_or(Error::StoreNotFound { store_id })
    }

    /// A store with its last reported statistics.
    pub fn store_info(&self, store_id: u64) -> Result<StoreInfo> {
        self.read()
            .stores
            .get(&store_id)
            .cloned()
            .ok_or(Error::StoreNotFound { store_id })
    }

    /// Regions whose last heartbeat came from a leader on `store_id`.
    pub fn leader_count(&self, store_id: u64) -> u64 {
        self.read()
            .loads
            .leaders
            .get(&store_id)
            .copied()
            .unwrap_or(0)
    }

    pub fn stores(&self) -> Vec<Store> {
        self.store_infos().into_iter().map(|s| s.store).collect()
    }

    pub fn store_infos(&self) -> Vec<StoreInfo> {
        let mut stores: Vec<_> = self.read().stores.values().cloned().collect();
        stores.sort_by_key(|s| s.store.id);
        stores
    }

    /// A store's heartbeat: its statistics, and that it is up.
    pub fn store_heartbeat(&self, store_id: u64, stats: StoreStats) -> Result<()> {
        let mut state = self.write();
        let info = state
            .stores
            .get_mut(&store_id)
            .ok_or(Error::StoreNotFound { store_id })?;
        info.stats = stats;
        info.last_heartbeat = self.clock.now();
        Ok(())
    }

    /// Stores not heard from for `max_down`.
    pub fn down_stores(&self, max_down: Duration) -> Vec<u64> {
        let now = self.clock.now();
        self.read()
            .stores
            .values()
            .filter(|s| now.saturating_duration_since(s.last_heartbeat) > max_down)
            .map(|s| s.store.id)
            .collect()
    }

    /// A region heartbeat from its leader. Returns false if it was ignored as stale.
    pub fn region_heartbeat(&self, info: RegionInfo) -> Result<bool> {
        self.put_regions(vec![info])
    }

    /// A split report: the parent with its new range and the regions split off it.
    pub fn report_split(&self, parent: &Region, new_regions: &[Region]) -> Result<bool> {
        let infos = std::iter::once(parent)
            .chain(new_regions)
            .map(|r| RegionInfo {
                region: r.clone(),
                ..Default::default()
            })
            .collect();
        self.put_regions(infos)
    }

    fn put_regions(&self, infos: Vec<RegionInfo>) -> Result<bool> {
        let mut state = self.write();
        let mut puts: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut all = true;
        for mut info in infos {
            let region = &info.region;
            let epoch = region.region_epoch.unwrap_or_default();
            if let Some(known) = state.regions.get(&region.id) {
                let known_epoch = known.region.region_epoch.unwrap_or_default();
                if is_stale(&epoch, &known_epoch) {
                    all = false;
                    continue;
                }
                // A split report carries no leader or sizes: keep what heartbeats said.
                if info.leader.is_none() && known_epoch == epoch {
                    info.leader = known.leader;
                    info.approximate_size = known.approximate_size;
                    info.approximate_keys = known.approximate_keys;
                }
            }
            let overlaps = state.overlapping(region);
            let newer_overlap = overlaps.iter().any(|id| {
                *id != region.id
                    && state.regions.get(id).is_some_and(|o| {
                        o.region.region_epoch.unwrap_or_default().version > epoch.version
                    })
            });
            if newer_overlap {
                all = false;
                continue;
            }
            for id in overlaps {
                if id != region.id {
                    slog::debug!(self.logger, "region replaced by an overlapping newer one";
                        "old" => id, "new" => region.id);
                    state.remove(id);
                    puts.push((region_key(id), None));
                }
            }
            let changed = state
                .regions
                .get(&region.id)
                .is_none_or(|known| known.region != *region);
            if changed {
                puts.push((region_key(region.id), Some(region.encode_to_vec())));
            }
            state.put(info);
        }
        if !puts.is_empty() {
            // Not synced: heartbeats rebuild the routing table after a crash.
            self.store.write_batch(&puts, false)?;
        }
        Ok(all)
    }

    pub fn region_by_id(&self, region_id: u64) -> Option<RegionInfo> {
        self.read().regions.get(&region_id).cloned()
    }

    /// The region whose range holds `key`.
    pub fn region_by_key(&self, key: &[u8]) -> Option<RegionInfo> {
        let state = self.read();
        let (_, id) = state
            .ranges
            .range((Bound::Excluded((false, key.to_vec())), Bound::Unbounded))
            .next()?;
        let info = state.regions.get(id)?;
        (info.region.start_key.as_slice() <= key).then(|| info.clone())
    }

    /// Up to `limit` regions from the one holding `start` on, in key order, stopping before
    /// `end` (empty: no end).
    pub fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<RegionInfo> {
        let state = self.read();
        let mut out = Vec::new();
        for (_, id) in state
            .ranges
            .range((Bound::Excluded((false, start.to_vec())), Bound::Unbounded))
        {
            let Some(info) = state.regions.get(id) else {
                continue;
            };
            if out.len() >= limit || (!end.is_empty() && info.region.start_key.as_slice() >= end) {
                break;
            }
            out.push(info.clone());
        }
        out
    }

    /// Every known region, in key order.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.scan_regions(b"", b"", usize::MAX)
    }

    pub fn region_count(&self) -> usize {
        self.read().regions.len()
    }

    /// Peers and leaders per store, each of `stores` listed (with 0 if it has none).
    pub fn loads(&self, stores: &[u64]) -> Loads {
        let mut loads = self.read().loads.clone();
        for s in stores {
            loads.peers.entry(*s).or_default();
            loads.leaders.entry(*s).or_default();
        }
        loads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::MemEngine;
    use proto::build;

    /// Region `id` over [start, end) with peer `id * 10` on store 1 (note: version first).
    fn region(id: u64, start: &[u8], end: &[u8], version: u64, conf_ver: u64) -> Region {
        build::region(id)
            .range(start, end)
            .epoch(conf_ver, version)
            .peers([build::peer(id * 10, 1)])
            .build()
    }

    fn info(r: Region) -> RegionInfo {
        RegionInfo {
            region: r,
            ..Default::default()
        }
    }

    fn logger() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    fn ids(c: &Cluster) -> Vec<u64> {
        c.regions().iter().map(|r| r.region.id).collect()
    }

    /// (store, count) of peers, then of leaders, sorted.
    type Counts = (Vec<(u64, u64)>, Vec<(u64, u64)>);

    /// Peers and leaders per store, counted afresh from the routing table.
    fn recount(c: &Cluster) -> Counts {
        let (mut peers, mut leaders) = (BTreeMap::new(), BTreeMap::new());
        for info in c.regions() {
            for p in &info.region.peers {
                *peers.entry(p.store_id).or_insert(0) += 1;
            }
            if let Some(l) = info.leader {
                *leaders.entry(l.store_id).or_insert(0) += 1;
            }
        }
        (peers.into_iter().collect(), leaders.into_iter().collect())
    }

    fn kept(c: &Cluster) -> Counts {
        let loads = c.loads(&[]);
        let sorted = |m: HashMap<u64, u64>| {
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort();
            v
        };
        (sorted(loads.peers), sorted(loads.leaders))
    }

    #[test]
    fn loads_kept_as_regions_change_match_a_recount() {
        let c = Cluster::open(
            Arc::new(MemEngine::new()),
            util::SystemClock::shared(),
            &logger(),
        )
        .unwrap();
        let store = |id| Store {
            id,
            ..Default::default()
        };
        let three = |id: u64, start: &[u8], end: &[u8], version| {
            build::region(id)
                .range(start, end)
                .epoch(1, version)
                .peers([
                    build::peer(id * 10 + 1, 1),
                    build::peer(id * 10 + 2, 2),
                    build::peer(id * 10 + 3, 3),
                ])
                .build()
        };
        let led = |r: Region, store_id: u64| RegionInfo {
            leader: r.peers.iter().find(|p| p.store_id == store_id).copied(),
            region: r,
            ..Default::default()
        };
        c.bootstrap(store(1), three(1, b"", b"", 1)).unwrap();
        assert_eq!(kept(&c), recount(&c));
        // Leaders come and move; a split replaces the parent's range; a stale heartbeat and
        // a newer overlapping region replace nothing twice.
        c.region_heartbeat(led(three(1, b"", b"", 1), 1)).unwrap();
        c.region_heartbeat(led(three(1, b"", b"", 1), 2)).unwrap();
        c.report_split(&three(1, b"", b"m", 2), &[three(2, b"m", b"", 2)])
            .unwrap();
        c.region_heartbeat(led(three(2, b"m", b"", 2), 3)).unwrap();
        c.region_heartbeat(led(three(1, b"", b"", 1), 1)).unwrap();
        c.region_heartbeat(led(three(3, b"a", b"z", 5), 1)).unwrap();
        assert_eq!(ids(&c), vec![3]);
        assert_eq!(kept(&c), recount(&c));
        assert_eq!(kept(&c), (vec![(1, 1), (2, 1), (3, 1)], vec![(1, 1)]));
        // A store with nothing is listed when asked for.
        assert_eq!(c.loads(&[9]).peers.get(&9), Some(&0));
    }

    #[test]
    fn routing_follows_splits_and_ignores_stale_heartbeats() {
        let meta: Arc<dyn MetaStore> = Arc::new(MemEngine::new());
        let c = Cluster::open(meta.clone(), util::SystemClock::shared(), &logger()).unwrap();
        assert!(!c.is_bootstrapped());
        let store = Store {
            id: 1,
            ..Default::default()
        };
        c.bootstrap(store.clone(), region(1, b"", b"", 1, 1))
            .unwrap();
        assert!(c.bootstrap(store, region(1, b"", b"", 1, 1)).is_err());
        assert_eq!(c.region_by_key(b"anything").unwrap().region.id, 1);

        // Split at "m": 1 = ["", m), 2 = [m, "").
        assert!(c
            .report_split(&region(1, b"", b"m", 2, 1), &[region(2, b"m", b"", 2, 1)])
            .unwrap());
        assert_eq!(c.region_by_key(b"a").unwrap().region.id, 1);
        assert_eq!(c.region_by_key(b"m").unwrap().region.id, 2);
        assert_eq!(c.region_by_key(b"zz").unwrap().region.id, 2);
        // A late heartbeat of the parent before the split changes nothing.
        assert!(!c.region_heartbeat(info(region(1, b"", b"", 1, 1))).unwrap());
        assert_eq!(ids(&c), vec![1, 2]);
        // Region 2 splits at "t" but only the new region 3 reports first: it replaces the
        // overlapping part of the older 2 only once 2 reports; until then 3 (newer) wins.
        assert!(c
            .region_heartbeat(info(region(3, b"t", b"", 3, 1)))
            .unwrap());
        assert_eq!(ids(&c), vec![1, 3]);
        assert!(!c
            .region_heartbeat(info(region(2, b"m", b"", 2, 1)))
            .unwrap());
        assert!(c
            .region_heartbeat(info(region(2, b"m", b"t", 3, 1)))
            .unwrap());
        assert_eq!(ids(&c), vec![1, 2, 3]);
        assert_eq!(
            c.scan_regions(b"n", b"u", 10)
                .iter()
                .map(|r| r.region.id)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        // A membership change (conf_ver) updates in place.
        assert!(c
            .region_heartbeat(info(region(2, b"m", b"t", 3, 2)))
            .unwrap());
        assert!(!c
            .region_heartbeat(info(region(2, b"m", b"t", 3, 1)))
            .unwrap());

        // A restart reloads the routing table.
        drop(c);
        let c = Cluster::open(meta, util::SystemClock::shared(), &logger()).unwrap();
        assert!(c.is_bootstrapped());
        assert_eq!(ids(&c), vec![1, 2, 3]);
        assert_eq!(
            c.region_by_id(2)
                .unwrap()
                .region
                .region_epoch
                .unwrap()
                .conf_ver,
            2
        );
        for (key, id) in [(&b"a"[..], 1), (b"m", 2), (b"s", 2), (b"t", 3), (b"zz", 3)] {
            assert_eq!(
                c.region_by_key(key).map(|r| r.region.id),
                Some(id),
                "{key:?}"
            );
        }
    }
}
