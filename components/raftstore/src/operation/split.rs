//! Region split (BatchSplit): the checks, the regions a split produces, and finding split keys.
//!
//! The parent keeps the leftmost range; each split key starts a new region that has one peer
//! per parent peer (same store and role) and the parent's `conf_ver`. Every resulting region's
//! `version` is the parent's plus the number of splits, so any request made against the old
//! range gets EpochNotMatch. A split is refused while the region is in a joint configuration
//! (the new regions would inherit a state they never entered through raft).

use std::collections::HashSet;
use std::time::Instant;

use engine::KvEngine;
use engine::{keys, CF_DEFAULT, CF_LOCK, CF_WRITE};
use proto::metapb::Region;
use proto::raft_cmdpb::{BatchSplitRequest, SplitRequest};
use proto::raft_cmdpb::{RaftCmdRequest, RaftRequestHeader};
use proto::raft_serverpb::PeerState;

use super::conf_change::is_joint;
use crate::fsm::{PeerFsm, RaftPoller, StoreContext};
use crate::raft::Peer;
use crate::router::PeerMsg;
use crate::transport::Transport;
use crate::worker::SplitTask;
use crate::{Error, Result};

/// More split keys than this in one request are refused.
pub const MAX_SPLITS_PER_REQUEST: usize = 64;

fn refuse(region: &Region, detail: String) -> Error {
    Error::InvalidCommand {
        region_id: region.id,
        detail: format!("split refused: {detail}"),
    }
}

/// Checks a split against the region as this peer knows it.
pub fn check_split(region: &Region, req: &BatchSplitRequest) -> Result<()> {
    let splits = &req.requests;
    if splits.is_empty() || splits.len() > MAX_SPLITS_PER_REQUEST {
        return Err(refuse(
            region,
            format!(
                "{} split keys; 1 to {MAX_SPLITS_PER_REQUEST} per request",
                splits.len()
            ),
        ));
    }
    if is_joint(region) {
        return Err(refuse(
            region,
            "the region is in a joint configuration; retry once it has left it".into(),
        ));
    }
    let mut ids = HashSet::from([region.id]);
    let mut peer_ids: HashSet<u64> = region.peers.iter().map(|p| p.id).collect();
    let mut previous: &[u8] = &region.start_key;
    for split in splits {
        let key = split.split_key.as_slice();
        if key.is_empty() || key <= previous {
            return Err(refuse(
                region,
                format!(
                    "split key {key:?} is not above the region start or the previous key \
                     {previous:?}"
                ),
            ));
        }
        if !keys::region_contains(region, key) {
            return Err(Error::KeyNotInRegion {
                key: key.to_vec(),
                region_id: region.id,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
            });
        }
        previous = key;
        if split.new_region_id == 0 || !ids.insert(split.new_region_id) {
            return Err(refuse(
                region,
                format!("new region id {} is zero or reused", split.new_region_id),
            ));
        }
        if split.new_peer_ids.len() != region.peers.len() {
            return Err(refuse(
                region,
                format!(
                    "{} new peer ids for {} peers",
                    split.new_peer_ids.len(),
                    region.peers.len()
                ),
            ));
        }
        for id in &split.new_peer_ids {
            if *id == 0 || !peer_ids.insert(*id) {
                return Err(refuse(
                    region,
                    format!("new peer id {id} is zero or reused"),
                ));
            }
        }
    }
    Ok(())
}

/// The parent after the split, and the new regions in key order.
pub fn split_regions(region: &Region, req: &BatchSplitRequest) -> Result<(Region, Vec<Region>)> {
    check_split(region, req)?;
    let mut epoch = region.region_epoch.unwrap_or_default();
    epoch.version += req.requests.len() as u64;
    let mut parent = region.clone();
    parent.region_epoch = Some(epoch);
    let mut new_regions = Vec::with_capacity(req.requests.len());
    let ends = req
        .requests
        .iter()
        .skip(1)
        .map(|s| s.split_key.clone())
        .chain(std::iter::once(region.end_key.clone()));
    for (split, end_key) in req.requests.iter().zip(ends) {
        let peers = region
            .peers
            .iter()
            .zip(&split.new_peer_ids)
            .map(|(p, id)| proto::metapb::Peer { id: *id, ..*p })
            .collect();
        new_regions.push(Region {
            id: split.new_region_id,
            start_key: split.split_key.clone(),
            end_key,
            region_epoch: Some(epoch),
            peers,
            ..Default::default()
        });
    }
    parent.end_key = req.requests[0].split_key.clone();
    Ok((parent, new_regions))
}

/// A split request for `keys` with ids from `ids` (one region id, then one peer id per parent
/// peer, for each key).
pub fn build_request(region: &Region, split_keys: Vec<Vec<u8>>, ids: &[u64]) -> BatchSplitRequest {
    let per_key = 1 + region.peers.len();
    BatchSplitRequest {
        requests: split_keys
            .into_iter()
            .zip(ids.chunks(per_key))
            .map(|(split_key, ids)| SplitRequest {
                split_key,
                new_region_id: ids[0],
                new_peer_ids: ids[1..].to_vec(),
            })
            .collect(),
    }
}

/// How a region is measured against the split thresholds.
#[derive(Clone, Copy, Debug)]
pub struct SplitThresholds {
    pub max_size: u64,
    pub split_size: u64,
    pub max_keys: u64,
    pub split_keys: u64,
    pub max_splits: usize,
}

/// Keys at which to split `region` in `snapshot`, or none if it is within the thresholds.
/// `approximate` is the region's (size, keys) as the engine estimates them; the keys are found
/// by scanning, one every `split_size` bytes or `split_keys` keys of the default and write CFs,
/// for at most `max_splits` keys.
pub fn find_split_keys<S: engine::Snapshot>(
    snapshot: &S,
    region: &Region,
    approximate: (u64, u64),
    t: &SplitThresholds,
) -> Result<Vec<Vec<u8>>> {
    let (size, key_count) = approximate;
    if size < t.max_size && key_count < t.max_keys {
        return Ok(vec![]);
    }
    let (start, end) = keys::region_data_bounds(region);
    // Transactional data splits between user keys, never between two versions of one: a
    // versioned key (prewritten values have no write record yet) loses its timestamp.
    let split_key = |stored: &[u8]| txn::key::strip_ts_if_versioned(stored).to_vec();
    // Sizes per user key across the CFs that hold data (lock is tiny), merged by key order.
    let mut found: Vec<Vec<u8>> = Vec::new();
    let (mut bytes, mut count) = (0u64, 0u64);
    let engine_err = |source| Error::Engine {
        region_id: region.id,
        source,
    };
    // The default CF holds the values; write holds them for transactional keys. Scanning the
    // default CF alone is enough to place split keys when it holds the data; the write CF is
    // scanned when the default CF is empty.
    for cf in [CF_DEFAULT, CF_WRITE, CF_LOCK] {
        snapshot
            .scan_cf(cf, &start, &end, false, &mut |k, v| {
                bytes += (k.len() + v.len()) as u64;
                count += 1;
                if bytes >= t.split_size || count >= t.split_keys {
                    if let Some(stored) = keys::origin_key(k) {
                        let key = split_key(stored);
                        let inside = key.as_slice() > region.start_key.as_slice()
                            && (region.end_key.is_empty()
                                || key.as_slice() < region.end_key.as_slice());
                        if inside && found.last() != Some(&key) {
                            found.push(key);
                        }
                    }
                    bytes = 0;
                    count = 0;
                }
                Ok(found.len() < t.max_splits)
            })
            .map_err(engine_err)?;
        if !found.is_empty() || count > 0 {
            break;
        }
    }
    Ok(found)
}

impl<EK: KvEngine> Peer<EK> {
    /// A peer born by a split: its region never had another leader, so there is no lease to
    /// wait out before voting.
    pub fn take_votes_now(&mut self, now: Instant) {
        self.started = now
            .checked_sub(self.election_timeout)
            .unwrap_or(self.started);
    }

    /// An explicit split may go ahead: this peer leads and the caller saw this version.
    pub fn check_split_ask(&self, region_epoch: Option<proto::metapb::RegionEpoch>) -> Result<()> {
        let request = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: self.region_id(),
                region_epoch,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.check_request(&request)
    }
}

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    /// An explicit split request (the scheduler's, or an administrator's): checked on the
    /// leader, then the split checker finds the keys' ids and proposes it.
    pub(crate) fn on_ask_split(
        &mut self,
        fsm: &PeerFsm<EK>,
        region_epoch: Option<proto::metapb::RegionEpoch>,
        split_keys: Vec<Vec<u8>>,
        cb: crate::router::Callback<()>,
    ) {
        match fsm.peer.check_split_ask(region_epoch) {
            Ok(()) => self.ctx.send_split_task(SplitTask::Split {
                region: fsm.peer.region().clone(),
                leader: fsm.peer.meta(),
                split_keys,
                cb,
            }),
            Err(e) => cb.invoke(Err(e)),
        }
    }

    /// A split was applied: record the parent's narrowed range and create the new regions'
    /// peers on this store.
    pub(crate) fn on_split_applied(
        &mut self,
        fsm: &PeerFsm<EK>,
        parent: Region,
        new_regions: Vec<Region>,
    ) {
        // The parent's narrowed range, even if the peer ignored the result (a snapshot in
        // flight): the new regions' ranges must be free.
        if let Err(e) = self.ctx.meta().insert(parent.clone()) {
            slog::error!(fsm.peer.logger(), "store meta refused the split parent"; "error" => %e);
        }
        slog::info!(fsm.peer.logger(), "region split";
            "region" => ?parent, "new_regions" => new_regions.len());
        self.ctx
            .create_split_peers(&parent, new_regions, fsm.peer.is_leader());
    }
}

impl<EK: KvEngine> StoreContext<EK> {
    /// Creates this store's peers of regions a split made (the parent's range already
    /// narrowed in the meta). The new peer beside the parent's leader campaigns at once; the
    /// others have no earlier leader whose lease they must wait out, so they take votes now.
    pub fn create_split_peers(&self, parent: &Region, new_regions: Vec<Region>, leader: bool) {
        if leader && !new_regions.is_empty() {
            self.scheduler.report_split(parent, &new_regions);
        }
        for region in new_regions {
            let region_id = region.id;
            if self.meta().region(region_id).is_some() {
                slog::info!(self.logger, "split region already here"; "region_id" => region_id);
                continue;
            }
            let peer_id = match region.peers.iter().find(|p| p.store_id == self.store_id) {
                Some(p) => p.id,
                None => continue,
            };
            match self.create_peer_as(region, PeerState::Normal, peer_id, true) {
                Ok(()) => {
                    crate::metrics::METRICS.regions_split.inc();
                    if leader {
                        let _ = self.routers.raft.force_send(region_id, PeerMsg::Campaign);
                    }
                    let votes = self.meta().take_votes(region_id);
                    for vote in votes {
                        let _ = self
                            .routers
                            .raft
                            .force_send(region_id, PeerMsg::RaftMessage(Box::new(vote)));
                    }
                }
                Err(e) => slog::error!(self.logger, "cannot create a split region's peer";
                    "region_id" => region_id, "parent_id" => parent.id, "error" => %e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use engine::{KvEngine, MemEngine, WriteBatch};
    use proto::metapb::{Peer, PeerRole, RegionEpoch};

    use super::*;

    fn region() -> Region {
        Region {
            id: 1,
            start_key: b"b".to_vec(),
            end_key: b"x".to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 4,
            }),
            peers: vec![
                Peer {
                    id: 11,
                    store_id: 1,
                    ..Default::default()
                },
                Peer {
                    id: 12,
                    store_id: 2,
                    role: PeerRole::Learner as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_parent_keeps_the_left_and_every_region_gets_the_new_version() {
        let req = build_request(
            &region(),
            vec![b"f".to_vec(), b"m".to_vec()],
            &[2, 21, 22, 3, 31, 32],
        );
        let (parent, new) = split_regions(&region(), &req).unwrap();
        assert_eq!(
            (parent.start_key.as_slice(), parent.end_key.as_slice()),
            (&b"b"[..], &b"f"[..])
        );
        assert_eq!(new.len(), 2);
        assert_eq!(
            (
                new[0].id,
                new[0].start_key.as_slice(),
                new[0].end_key.as_slice()
            ),
            (2, &b"f"[..], &b"m"[..])
        );
        assert_eq!(
            (
                new[1].id,
                new[1].start_key.as_slice(),
                new[1].end_key.as_slice()
            ),
            (3, &b"m"[..], &b"x"[..])
        );
        for r in std::iter::once(&parent).chain(&new) {
            assert_eq!(
                r.region_epoch.unwrap(),
                RegionEpoch {
                    conf_ver: 3,
                    version: 6
                }
            );
        }
        assert_eq!(new[1].peers[1].id, 32);
        assert_eq!(new[1].peers[1].store_id, 2);
        assert_eq!(new[1].peers[1].role(), PeerRole::Learner);
    }

    #[test]
    fn bad_splits_are_refused() {
        let r = region();
        type Case<'a> = (Vec<&'a [u8]>, Vec<u64>, &'a str);
        let cases: Vec<Case> = vec![
            (vec![], vec![], "split keys"),
            (vec![b"b"], vec![2, 21, 22], "not above"),
            (vec![b"f", b"c"], vec![2, 21, 22, 3, 31, 32], "not above"),
            (vec![b"y"], vec![2, 21, 22], "not in region"),
            (vec![b"f"], vec![1, 21, 22], "reused"),
            (vec![b"f"], vec![2, 11, 22], "reused"),
        ];
        for (keys, ids, want) in cases {
            let req = build_request(&r, keys.iter().map(|k| k.to_vec()).collect(), &ids);
            let err = check_split(&r, &req).unwrap_err();
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
        let mut short = build_request(&r, vec![b"f".to_vec()], &[2, 21, 22]);
        short.requests[0].new_peer_ids.pop();
        assert!(check_split(&r, &short)
            .unwrap_err()
            .to_string()
            .contains("new peer ids"));
    }

    #[test]
    fn split_keys_are_found_every_split_size() {
        let kv = MemEngine::new();
        let mut wb = kv.write_batch();
        for i in 0..100u32 {
            wb.put_cf(
                CF_DEFAULT,
                &keys::data_key(format!("c{i:03}").as_bytes()),
                &[0; 96],
            )
            .unwrap();
        }
        kv.write(&mut wb, false).unwrap();
        let t = SplitThresholds {
            max_size: 5_000,
            split_size: 2_000,
            max_keys: u64::MAX,
            split_keys: u64::MAX,
            max_splits: 3,
        };
        let snap = kv.snapshot();
        assert!(find_split_keys(&snap, &region(), (4_000, 100), &t)
            .unwrap()
            .is_empty());
        // 100 bytes per key: a key every 20.
        let found = find_split_keys(&snap, &region(), (10_000, 100), &t).unwrap();
        assert_eq!(
            found,
            vec![b"c019".to_vec(), b"c039".to_vec(), b"c059".to_vec()]
        );
    }

    #[test]
    fn transactional_split_keys_lose_their_timestamp() {
        let kv = MemEngine::new();
        let mut wb = kv.write_batch();
        for i in 0..100u32 {
            let user = txn::key::encode(format!("t{i:03}").as_bytes());
            for ts in [10u64, 20] {
                let versioned = txn::key::append_ts(&user, ts);
                wb.put_cf(CF_DEFAULT, &keys::data_key(&versioned), &[0; 300])
                    .unwrap();
                wb.put_cf(CF_WRITE, &keys::data_key(&versioned), b"P")
                    .unwrap();
            }
        }
        kv.write(&mut wb, false).unwrap();
        let t = SplitThresholds {
            max_size: 5_000,
            split_size: 2_000,
            max_keys: u64::MAX,
            split_keys: u64::MAX,
            max_splits: 5,
        };
        let found = find_split_keys(&kv.snapshot(), &region(), (100_000, 400), &t).unwrap();
        assert_eq!(found.len(), 5);
        for key in &found {
            // A whole encoded user key: it decodes, with nothing after it.
            let user = txn::key::decode(key).expect("an encoded user key, without a timestamp");
            assert!(user.starts_with(b"t"), "{user:?}");
        }
    }
}
