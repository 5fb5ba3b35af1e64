//! The checkers that turn a region heartbeat into an operator: the replica checker (bring a
//! region to `max-replicas` voters, off down stores, and no more), balance-leader and
//! balance-region (spread leaders and peers by count). Pure functions of the region, the
//! stores' loads and the down stores.

use std::collections::{HashMap, HashSet};

use proto::metapb::{Peer, PeerRole};

use crate::cluster::RegionInfo;
use crate::operator::{OperatorKind, Step};

/// Peers and leaders per store, from the routing table.
#[derive(Clone, Debug, Default)]
pub struct Loads {
    pub peers: HashMap<u64, u64>,
    pub leaders: HashMap<u64, u64>,
}

impl Loads {
    /// Adds (`delta` 1) or takes away (-1) one region's peers and leader.
    pub(crate) fn count(&mut self, info: &RegionInfo, delta: i64) {
        let add = |map: &mut HashMap<u64, u64>, store_id: u64| {
            let n = map.entry(store_id).or_default();
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                map.remove(&store_id);
            }
        };
        for p in &info.region.peers {
            add(&mut self.peers, p.store_id);
        }
        if let Some(l) = info.leader {
            add(&mut self.leaders, l.store_id);
        }
    }
}

/// What the checkers see.
pub struct Context<'a> {
    pub max_replicas: usize,
    /// Stores that are up (heartbeating), and may receive peers and leaders.
    pub up_stores: &'a [u64],
    pub down_stores: &'a HashSet<u64>,
    pub loads: &'a Loads,
}

/// A proposed operator: its kind, a description, and its steps (`new_peer` marks where a
/// fresh peer id is needed: the caller fills `AddLearner`/`PromoteLearner` peers with id 0).
pub struct Plan {
    pub kind: OperatorKind,
    pub description: String,
    pub steps: Vec<Step>,
}

fn voters(info: &RegionInfo) -> Vec<Peer> {
    info.region
        .peers
        .iter()
        .filter(|p| p.role() == PeerRole::Voter)
        .copied()
        .collect()
}

fn is_joint(info: &RegionInfo) -> bool {
    info.region
        .peers
        .iter()
        .any(|p| matches!(p.role(), PeerRole::IncomingVoter | PeerRole::DemotingVoter))
}

/// The up store not holding the region with the fewest peers.
fn target_store(info: &RegionInfo, ctx: &Context) -> Option<u64> {
    let holding: HashSet<u64> = info.region.peers.iter().map(|p| p.store_id).collect();
    ctx.up_stores
        .iter()
        .filter(|s| !holding.contains(s))
        .min_by_key(|s| (ctx.loads.peers.get(s).copied().unwrap_or(0), **s))
        .copied()
}

/// A fresh peer on `store_id` (its id is filled in by the caller).
fn new_peer(store_id: u64) -> Peer {
    Peer {
        id: 0,
        store_id,
        role: PeerRole::Learner as i32,
        ..Default::default()
    }
}

fn add_steps(store_id: u64) -> Vec<Step> {
    let peer = new_peer(store_id);
    vec![Step::AddLearner { peer }, Step::PromoteLearner { peer }]
}

pub fn replica_check(info: &RegionInfo, ctx: &Context) -> Option<Plan> {
    let leader = info.leader?;
    if is_joint(info) {
        return None;
    }
    let voters = voters(info);
    let down = |p: &Peer| ctx.down_stores.contains(&p.store_id);
    let plan = |description: String, steps| {
        Some(Plan {
            kind: OperatorKind::Replica,
            description,
            steps,
        })
    };
    // A learner left by an earlier operator: promote it.
    if voters.len() < ctx.max_replicas {
        let learner = info
            .region
            .peers
            .iter()
            .find(|p| p.role() == PeerRole::Learner && !down(p));
        if let Some(l) = learner {
            return plan(
                format!("promote learner {} on store {}", l.id, l.store_id),
                vec![Step::PromoteLearner { peer: *l }],
            );
        }
        let target = target_store(info, ctx)?;
        return plan(
            format!("add a replica on store {target}"),
            add_steps(target),
        );
    }
    // A peer on a down store: replace it (or just remove it when nowhere can take it).
    if let Some(gone) = info
        .region
        .peers
        .iter()
        .find(|p| down(p) && p.id != leader.id)
    {
        let mut steps = match (gone.role(), target_store(info, ctx)) {
            (PeerRole::Voter, Some(target)) => add_steps(target),
            _ => vec![],
        };
        steps.push(Step::RemovePeer { peer: *gone });
        return plan(
            format!("replace peer {} on down store {}", gone.id, gone.store_id),
            steps,
        );
    }
    // Too many voters: remove one from the busiest store, never the leader.
    if voters.len() > ctx.max_replicas {
        let extra = voters
            .iter()
            .filter(|p| p.id != leader.id)
            .max_by_key(|p| ctx.loads.peers.get(&p.store_id).copied().unwrap_or(0))?;
        return plan(
            format!("remove extra peer {} on store {}", extra.id, extra.store_id),
            vec![Step::RemovePeer { peer: *extra }],
        );
    }
    None
}

fn average(counts: &HashMap<u64, u64>, stores: &[u64]) -> f64 {
    if stores.is_empty() {
        return 0.0;
    }
    let total: u64 = stores
        .iter()
        .map(|s| counts.get(s).copied().unwrap_or(0))
        .sum();
    total as f64 / stores.len() as f64
}

/// Moves this region's leader to the least-led store among its voters, when its leader's
/// store leads more than average and more than one more than the target.
pub fn balance_leader(info: &RegionInfo, ctx: &Context) -> Option<Plan> {
    let leader = info.leader?;
    if is_joint(info) || !info.pending_peers.is_empty() || !info.down_peers.is_empty() {
        return None;
    }
    let count = |s: u64| ctx.loads.leaders.get(&s).copied().unwrap_or(0);
    let source = count(leader.store_id);
    if (source as f64) <= average(&ctx.loads.leaders, ctx.up_stores) {
        return None;
    }
    let target = voters(info)
        .into_iter()
        .filter(|p| p.id != leader.id && ctx.up_stores.contains(&p.store_id))
        .min_by_key(|p| (count(p.store_id), p.store_id))?;
    if source <= count(target.store_id) + 1 {
        return None;
    }
    Some(Plan {
        kind: OperatorKind::BalanceLeader,
        description: format!(
            "move leader from store {} ({source}) to store {} ({})",
            leader.store_id,
            target.store_id,
            count(target.store_id)
        ),
        steps: vec![Step::TransferLeader { to: target }],
    })
}

/// Moves one of this region's peers from the busiest of its stores to the least busy store
/// without one, when the difference is more than one peer and the source is above average.
pub fn balance_region(info: &RegionInfo, ctx: &Context) -> Option<Plan> {
    let leader = info.leader?;
    // Balancing is optional: never while a peer is down or behind (a new voter would need
    // every other one to answer).
    if is_joint(info)
        || !info.pending_peers.is_empty()
        || !info.down_peers.is_empty()
        || info
            .region
            .peers
            .iter()
            .any(|p| ctx.down_stores.contains(&p.store_id))
    {
        return None;
    }
    let count = |s: u64| ctx.loads.peers.get(&s).copied().unwrap_or(0);
    let source = info
        .region
        .peers
        .iter()
        .filter(|p| p.role() == PeerRole::Voter)
        .max_by_key(|p| (count(p.store_id), p.id != leader.id))?;
    let target = target_store(info, ctx)?;
    if count(source.store_id) <= count(target) + 1
        || (count(source.store_id) as f64) <= average(&ctx.loads.peers, ctx.up_stores)
    {
        return None;
    }
    let mut steps = add_steps(target);
    if source.id == leader.id {
        let other = voters(info).into_iter().find(|p| {
            p.id != leader.id
                && ctx.up_stores.contains(&p.store_id)
                && !info.pending_peers.iter().any(|q| q.id == p.id)
        })?;
        steps.push(Step::TransferLeader { to: other });
    }
    steps.push(Step::RemovePeer { peer: *source });
    Some(Plan {
        kind: OperatorKind::BalanceRegion,
        description: format!(
            "move peer {} from store {} to store {target}",
            source.id, source.store_id
        ),
        steps,
    })
}
