//! The cluster's deadlock detector: one wait-for graph of pessimistic transactions for every
//! store. A store whose lock request is about to wait for another transaction's lock reports
//! the edge (waiter → holder) here first; if the holder already waits, transitively, for the
//! waiter, the edge would close a cycle and the waiter is told to give up (Deadlock). A
//! store-local graph misses every cycle whose locks are led by different stores, which is
//! most of them once regions spread.
//!
//! Edges leave when the waiter stops waiting (the store's clean-up) or, should that never
//! arrive (the store died), when their TTL runs out. The graph lives in memory only: after a
//! scheduler restart, waits in flight are not in it, and a cycle through one of them ends by
//! its wait timeout instead.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::schedulerpb::WaitForEdge;

/// Most edges the graph holds: beyond it new waits are not recorded (they end by timeout).
pub const MAX_EDGES: usize = 1 << 20;

/// Longest an edge lives without a clean-up: no wait is longer.
pub const MAX_EDGE_TTL: Duration = Duration::from_secs(600);

/// How often expired edges are swept out (a walk skips them meanwhile).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Graph {
    /// waiter_ts → its edges, each with when it expires.
    out: HashMap<u64, Vec<(WaitForEdge, Instant)>>,
    edges: usize,
    swept: Option<Instant>,
}

/// What [`Detector::detect`] answers.
#[derive(Debug, PartialEq)]
pub enum Detected {
    /// The edge is recorded: the waiter may wait.
    Recorded,
    /// The edge would close a cycle (not recorded): the chain from the holder back to the
    /// waiter, first edge first.
    Deadlock(Vec<WaitForEdge>),
    /// The graph is full: the edge is not recorded and the wait goes unchecked.
    Full,
}

/// An edge the detector refuses to look at.
#[derive(Debug, thiserror::Error)]
#[error("wait-for edge {waiter_ts} -> {holder_ts} needs two different non-zero start_ts")]
pub struct InvalidEdge {
    pub waiter_ts: u64,
    pub holder_ts: u64,
}

#[derive(Default)]
pub struct Detector {
    graph: Mutex<Graph>,
    max_edges: Option<usize>,
}

impl Detector {
    /// A detector holding at most `max_edges` (tests use small ones; the default is
    /// [`MAX_EDGES`]).
    pub fn with_capacity(max_edges: usize) -> Detector {
        Detector {
            graph: Mutex::default(),
            max_edges: Some(max_edges),
        }
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `edge` for `ttl` (at most [`MAX_EDGE_TTL`]) unless it closes a cycle.
    pub fn detect(
        &self,
        edge: WaitForEdge,
        ttl: Duration,
        now: Instant,
    ) -> Result<Detected, InvalidEdge> {
        if edge.waiter_ts == 0 || edge.holder_ts == 0 || edge.waiter_ts == edge.holder_ts {
            return Err(InvalidEdge {
                waiter_ts: edge.waiter_ts,
                holder_ts: edge.holder_ts,
            });
        }
        let mut graph = self.graph();
        if graph.swept.is_none_or(|at| now >= at + SWEEP_EVERY) {
            graph.expire(now);
        }
        if let Some(chain) = graph.path(edge.holder_ts, edge.waiter_ts, now) {
            return Ok(Detected::Deadlock(chain));
        }
        if graph.edges >= self.max_edges.unwrap_or(MAX_EDGES) {
            return Ok(Detected::Full);
        }
        let expires = now + ttl.min(MAX_EDGE_TTL);
        graph
            .out
            .entry(edge.waiter_ts)
            .or_default()
            .push((edge, expires));
        graph.edges += 1;
        Ok(Detected::Recorded)
    }

    /// The waiter of `edge` stopped waiting (woken, timed out or refused): one matching
    /// edge leaves.
    pub fn clean_up_wait_for(&self, edge: &WaitForEdge) {
        let mut graph = self.graph();
        let Some(edges) = graph.out.get_mut(&edge.waiter_ts) else {
            return;
        };
        if let Some(i) = edges.iter().position(|(e, _)| e == edge) {
            edges.swap_remove(i);
            let empty = edges.is_empty();
            if empty {
                graph.out.remove(&edge.waiter_ts);
            }
            graph.edges -= 1;
        }
    }

    /// Edges recorded now, expired ones not yet swept included (a metric).
    pub fn len(&self) -> usize {
        self.graph().edges
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Graph {
    /// A chain of live edges from `from` to `to`, if there is one.
    fn path(&self, from: u64, to: u64, now: Instant) -> Option<Vec<WaitForEdge>> {
        // Depth-first, remembering how each transaction was reached to rebuild the chain.
        let mut reached_by: HashMap<u64, &WaitForEdge> = HashMap::new();
        let mut seen = HashSet::from([from]);
        let mut stack = vec![from];
        while let Some(at) = stack.pop() {
            if at == to {
                let mut chain = Vec::new();
                let mut cur = to;
                while cur != from {
                    let edge = reached_by[&cur];
                    chain.push(edge.clone());
                    cur = edge.waiter_ts;
                }
                chain.reverse();
                return Some(chain);
            }
            for (edge, expires) in self.out.get(&at).into_iter().flatten() {
                if *expires > now && seen.insert(edge.holder_ts) {
                    reached_by.insert(edge.holder_ts, edge);
                    stack.push(edge.holder_ts);
                }
            }
        }
        None
    }

    fn expire(&mut self, now: Instant) {
        let mut removed = 0;
        self.out.retain(|_, edges| {
            let before = edges.len();
            edges.retain(|(_, expires)| *expires > now);
            removed += before - edges.len();
            !edges.is_empty()
        });
        self.edges -= removed;
        self.swept = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(waiter_ts: u64, holder_ts: u64) -> WaitForEdge {
        WaitForEdge {
            waiter_ts,
            holder_ts,
            key_hash: waiter_ts * 1000 + holder_ts,
            ..Default::default()
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    fn detect(d: &Detector, e: WaitForEdge, ttl: Duration, now: Instant) -> Detected {
        d.detect(e, ttl, now).expect("a valid edge")
    }

    #[test]
    fn a_cycle_is_refused_with_its_chain_and_clean_up_reopens_the_way() {
        let (d, now) = (Detector::default(), Instant::now());
        assert_eq!(detect(&d, edge(1, 2), TTL, now), Detected::Recorded);
        assert_eq!(detect(&d, edge(2, 3), TTL, now), Detected::Recorded);
        // 3 → 1 would close 1 → 2 → 3 → 1.
        assert_eq!(
            detect(&d, edge(3, 1), TTL, now),
            Detected::Deadlock(vec![edge(1, 2), edge(2, 3)])
        );
        assert_eq!(d.len(), 2);
        // Another transaction may wait for 1 (no cycle).
        assert_eq!(detect(&d, edge(4, 1), TTL, now), Detected::Recorded);
        d.clean_up_wait_for(&edge(2, 3));
        assert_eq!(detect(&d, edge(3, 1), TTL, now), Detected::Recorded);
        // A clean-up of an edge never recorded changes nothing.
        d.clean_up_wait_for(&edge(9, 8));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn two_requests_of_one_pair_are_two_edges() {
        let (d, now) = (Detector::default(), Instant::now());
        let (a, mut b) = (edge(1, 2), edge(1, 2));
        b.wait_id += 1;
        assert_eq!(detect(&d, a.clone(), TTL, now), Detected::Recorded);
        assert_eq!(detect(&d, b.clone(), TTL, now), Detected::Recorded);
        d.clean_up_wait_for(&a);
        assert!(matches!(
            detect(&d, edge(2, 1), TTL, now),
            Detected::Deadlock(_)
        ));
        d.clean_up_wait_for(&b);
        assert!(d.is_empty());
        assert_eq!(detect(&d, edge(2, 1), TTL, now), Detected::Recorded);
    }

    #[test]
    fn expired_edges_close_no_cycle_and_are_swept() {
        let (d, now) = (Detector::default(), Instant::now());
        let short = Duration::from_millis(5);
        assert_eq!(detect(&d, edge(1, 2), short, now), Detected::Recorded);
        let later = now + Duration::from_millis(6);
        assert_eq!(detect(&d, edge(2, 1), TTL, later), Detected::Recorded);
        assert_eq!(d.len(), 2, "not swept within a second of the last sweep");
        let much_later = now + SWEEP_EVERY + Duration::from_millis(1);
        assert_eq!(detect(&d, edge(5, 6), TTL, much_later), Detected::Recorded);
        assert_eq!(d.len(), 2, "1 -> 2 swept out");
    }

    #[test]
    fn a_full_graph_records_nothing_but_still_finds_cycles() {
        let (d, now) = (Detector::with_capacity(2), Instant::now());
        assert_eq!(detect(&d, edge(1, 2), TTL, now), Detected::Recorded);
        assert_eq!(detect(&d, edge(2, 3), TTL, now), Detected::Recorded);
        assert_eq!(detect(&d, edge(4, 5), TTL, now), Detected::Full);
        assert!(matches!(
            detect(&d, edge(3, 1), TTL, now),
            Detected::Deadlock(_)
        ));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn bad_edges_are_refused() {
        let (d, now) = (Detector::default(), Instant::now());
        assert!(d.detect(edge(1, 1), TTL, now).is_err());
        assert!(d.detect(edge(0, 1), TTL, now).is_err());
        assert!(d.is_empty());
    }
}
