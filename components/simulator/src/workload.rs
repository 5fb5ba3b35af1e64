//! Clients of the simulation: each has at most one operation in flight, routed as a TiKV
//! client routes (the scheduler's table, then the leader it last heard of). Every answer, and
//! every write whose answer never came, goes into the history the checkers judge.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use engine::CF_DEFAULT;
use linearizability::{GroupInput, GroupOperation, GroupOutput, Input, Operation, Output};
use proto::kvrpcpb::Context;
use raftstore::{Error as StoreError, Modify};
use rand::rngs::StdRng;
use rand::Rng;
use storage::raw_cas::{compare_and_swap, latched_write, CasContext, Runtime};
use storage::Latches;

use crate::cluster::SimCluster;
use crate::runtime::SimRuntime;

/// Keys each checked alone; the simulator's splits fall between them.
pub(crate) const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];
/// Keys one region always serves together (no split point falls inside), checked as one
/// object: batch puts whole, batch reads and scans one moment.
pub(crate) const GROUP: [&str; 4] = ["g0", "g1", "g2", "g3"];
/// Where splits may cut: between the single keys, never inside the group.
pub(crate) const SPLIT_POINTS: [&str; 4] = ["h", "k", "k2", "k4"];

/// An operation gives up (its outcome unknown, for a write) after this long.
const OP_TIMEOUT_MS: u64 = 3_000;

#[derive(Clone, Debug)]
enum Kind {
    Put(usize, String),
    Get(usize),
    Delete(usize),
    /// The store's own compare-and-swap (`storage::raw_cas`): `new` if the value is `expect`.
    Cas {
        key: usize,
        expect: Option<String>,
        new: String,
    },
    GroupPut(Vec<(usize, String)>),
    /// A compare-and-swap of one of the group's keys: checked with the group, against its
    /// batch puts (which take the same latches).
    GroupCas {
        key: usize,
        expect: Option<String>,
        new: String,
    },
    GroupGet {
        scan: bool,
    },
}

enum Answer {
    Done,
    Value(Option<String>),
    /// Whether it swapped, and the value it found.
    Cas(bool, Option<String>),
    Values(Vec<Option<String>>),
}

type OpFuture = Pin<Box<dyn Future<Output = Result<Answer, StoreError>>>>;

struct InFlight {
    kind: Kind,
    call_ms: u64,
    region_id: u64,
    store_id: u64,
    future: OpFuture,
}

struct Client {
    id: usize,
    next_ms: u64,
    writes: u64,
    in_flight: Option<InFlight>,
    /// Region → the store it last heard leads it.
    leaders: BTreeMap<u64, u64>,
    /// Key → the value it last saw there: what its compare-and-swaps expect.
    seen: BTreeMap<&'static str, Option<String>>,
}

/// What the workload did, for the report.
#[derive(Clone, Debug, Default)]
pub struct WorkloadStats {
    pub ok: u64,
    /// Failed with an error that means nothing was written (or a read that failed).
    pub failed: u64,
    /// Writes whose outcome is unknown (Undetermined, the store stopped, a timeout).
    pub unknown: u64,
}

/// Histories in virtual half-milliseconds: a call at ms t is at 2t and a return at 2t+1, so
/// a call and a return in the same ms still order call-before-return.
pub(crate) struct History {
    pub(crate) keys: BTreeMap<String, Vec<Operation<String>>>,
    pub(crate) group: Vec<GroupOperation<String>>,
    /// Writes answered with an error that says nothing was written (so not in the history),
    /// by value: a read of one of these values convicts the error.
    pub(crate) refused: BTreeMap<String, String>,
}

pub(crate) struct Workload {
    clients: Vec<Client>,
    pub(crate) history: History,
    pub(crate) stats: WorkloadStats,
    think_ms: (u64, u64),
    /// The planted bug [`crate::Plant::UnknownReportedAsRefused`].
    unknown_as_refused: bool,
    /// Timers and background tasks of the stores' command layer.
    runtime: Arc<SimRuntime>,
    /// Each store process's latches, by (store, start): a restarted store has fresh ones.
    latches: BTreeMap<(u64, u64), Arc<Latches>>,
    /// Compare-and-swaps and latched writes whose client gave up: on a store they run on
    /// (holding the key's latch) whatever the client does, as the server runs them detached.
    detached: Vec<OpFuture>,
}

fn key_of(kind: &Kind) -> &'static str {
    match kind {
        Kind::Put(k, _) | Kind::Get(k) | Kind::Delete(k) | Kind::Cas { key: k, .. } => KEYS[*k],
        Kind::GroupPut(_) | Kind::GroupGet { .. } | Kind::GroupCas { .. } => GROUP[0],
    }
}

impl Workload {
    pub(crate) fn new(
        clients: usize,
        think_ms: (u64, u64),
        unknown_as_refused: bool,
        runtime: Arc<SimRuntime>,
    ) -> Workload {
        Workload {
            clients: (0..clients)
                .map(|id| Client {
                    id,
                    next_ms: 0,
                    writes: 0,
                    in_flight: None,
                    leaders: BTreeMap::new(),
                    seen: BTreeMap::new(),
                })
                .collect(),
            history: History {
                keys: KEYS.iter().map(|k| (k.to_string(), Vec::new())).collect(),
                group: Vec::new(),
                refused: BTreeMap::new(),
            },
            stats: WorkloadStats::default(),
            think_ms,
            unknown_as_refused,
            runtime,
            latches: BTreeMap::new(),
            detached: Vec::new(),
        }
    }

    /// Compare-and-swaps still running after their client gave up, and tasks holding
    /// latches: neither may outlive the final checks unnoticed.
    pub(crate) fn background(&self) -> usize {
        self.detached.len() + self.runtime.pending()
    }

    /// Starts operations for idle clients whose think time is over (unless `quiet`), and
    /// collects answers. Returns whether any operation is still in flight.
    pub(crate) fn step(
        &mut self,
        cluster: &SimCluster,
        rng: &mut StdRng,
        now_ms: u64,
        quiet: bool,
    ) -> bool {
        self.runtime.run();
        let mut cx = TaskContext::from_waker(Waker::noop());
        self.detached
            .retain_mut(|task| task.as_mut().poll(&mut cx).is_pending());
        let mut busy = false;
        for i in 0..self.clients.len() {
            if self.clients[i].in_flight.is_none() && !quiet && self.clients[i].next_ms <= now_ms {
                let kind = random_kind(&mut self.clients[i], rng);
                self.start(i, kind, cluster, rng, now_ms);
            }
            self.poll(i, now_ms, rng);
            busy |= self.clients[i].in_flight.is_some();
        }
        busy
    }

    /// A read of every key and of the group, by client 0, retried until it is answered or
    /// `deadline_ms`: the final state joins the history.
    pub(crate) fn start_final_read(
        &mut self,
        index: usize,
        cluster: &SimCluster,
        rng: &mut StdRng,
        now_ms: u64,
    ) -> bool {
        if self.clients[0].in_flight.is_some() {
            return false;
        }
        let kind = match index {
            i if i < KEYS.len() => Kind::Get(i),
            _ => Kind::GroupGet { scan: false },
        };
        self.start(0, kind, cluster, rng, now_ms);
        true
    }

    pub(crate) fn idle(&self, client: usize) -> bool {
        self.clients[client].in_flight.is_none()
    }

    fn start(&mut self, i: usize, kind: Kind, cluster: &SimCluster, rng: &mut StdRng, now_ms: u64) {
        let client = &mut self.clients[i];
        let key = key_of(&kind).as_bytes();
        let Some(info) = cluster.region_for_key(key) else {
            self.stats.failed += 1;
            return;
        };
        let region = info.region;
        // One request in ten goes to a random peer, as from a client whose cache is stale (or
        // fresher than ours): a new leader and an old one both get traffic in the moments
        // both think they lead.
        let any_peer = region.peers[rng.gen_range(0..region.peers.len())].store_id;
        let store_id = if rng.gen_bool(0.1) {
            any_peer
        } else {
            client
                .leaders
                .get(&region.id)
                .copied()
                .filter(|s| region.peers.iter().any(|p| p.store_id == *s))
                .or(info.leader.map(|l| l.store_id))
                .unwrap_or(any_peer)
        };
        let Some(api) = cluster.api(store_id) else {
            // Connection refused: nothing was sent. Try another store next time.
            client.leaders.remove(&region.id);
            self.stats.failed += 1;
            return;
        };
        let ctx = Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: region
                .peers
                .iter()
                .find(|p| p.store_id == store_id)
                .copied(),
            ..Default::default()
        };
        // Every key sees compare-and-swaps, so every write is `for_cas` (takes the keys'
        // latches, as TiKV's atomic mode does).
        let starts = cluster.stores.get(&store_id).map_or(0, |s| s.starts);
        // A store's latches die with its process.
        self.latches
            .retain(|(s, started), _| *s != store_id || *started == starts);
        let latches = self
            .latches
            .entry((store_id, starts))
            .or_insert_with(|| Arc::new(Latches::new(64)))
            .clone();
        let runtime: Arc<dyn Runtime> = self.runtime.clone();
        let future: OpFuture = match kind.clone() {
            Kind::Put(..) | Kind::Delete(_) | Kind::GroupPut(_) => {
                let modifies = writes_of(&kind);
                Box::pin(async move {
                    let on = CasContext {
                        api: &api,
                        latches: &latches,
                        runtime: &runtime,
                    };
                    latched_write(on, &ctx, modifies).await?;
                    Ok(Answer::Done)
                })
            }
            Kind::Cas { key, expect, new } | Kind::GroupCas { key, expect, new } => {
                let key = match kind {
                    Kind::Cas { .. } => KEYS[key],
                    _ => GROUP[key],
                };
                Box::pin(async move {
                    let on = CasContext {
                        api: &api,
                        latches: &latches,
                        runtime: &runtime,
                    };
                    let key = key.as_bytes().to_vec();
                    let outcome = compare_and_swap(on, &ctx, CF_DEFAULT, key, |stored| {
                        let current = stored.map(<[u8]>::to_vec);
                        let matches = current.as_deref() == expect.as_deref().map(str::as_bytes);
                        Ok::<_, StoreError>((current, matches.then(|| new.into_bytes())))
                    })
                    .await?;
                    Ok(Answer::Cas(outcome.swapped, outcome.current.map(string)))
                })
            }
            Kind::Get(k) => Box::pin(async move {
                let snap = api.snapshot(&ctx).await?;
                let value = snap.get_cf(CF_DEFAULT, KEYS[k].as_bytes())?;
                Ok(Answer::Value(value.map(string)))
            }),
            Kind::GroupGet { scan } => Box::pin(async move {
                let snap = api.snapshot(&ctx).await?;
                let mut values = vec![None; GROUP.len()];
                if scan {
                    for (key, value) in snap.scan_cf(CF_DEFAULT, b"g", b"h", 100, false)? {
                        if let Some(i) = GROUP.iter().position(|g| g.as_bytes() == key) {
                            values[i] = Some(string(value));
                        }
                    }
                } else {
                    for (i, key) in GROUP.iter().enumerate() {
                        values[i] = snap.get_cf(CF_DEFAULT, key.as_bytes())?.map(string);
                    }
                }
                Ok(Answer::Values(values))
            }),
        };
        client.in_flight = Some(InFlight {
            kind,
            call_ms: now_ms,
            region_id: region.id,
            store_id,
            future,
        });
    }

    fn poll(&mut self, i: usize, now_ms: u64, rng: &mut StdRng) {
        let client = &mut self.clients[i];
        let Some(op) = client.in_flight.as_mut() else {
            return;
        };
        let mut cx = TaskContext::from_waker(Waker::noop());
        let result = match op.future.as_mut().poll(&mut cx) {
            Poll::Ready(result) => Some(result),
            Poll::Pending if now_ms >= op.call_ms + OP_TIMEOUT_MS => None,
            Poll::Pending => return,
        };
        let Some(op) = client.in_flight.take() else {
            return;
        };
        if result.is_none() && !matches!(op.kind, Kind::Get(_) | Kind::GroupGet { .. }) {
            self.detached.push(op.future);
        }
        let (min, max) = self.think_ms;
        client.next_ms = now_ms + rng.gen_range(min..=max);
        // Calls at ms t are at t*2, returns at t*2+1: an answer in the same ms as a call
        // still comes after it.
        let (call, ret) = (op.call_ms * 2, now_ms * 2 + 1);
        let history = &mut self.history;
        match result {
            Some(Ok(answer)) => {
                self.stats.ok += 1;
                match (&op.kind, &answer) {
                    (Kind::Get(k), Answer::Value(v)) => {
                        client.seen.insert(KEYS[*k], v.clone());
                    }
                    (Kind::GroupGet { .. }, Answer::Values(values)) => {
                        for (k, v) in values.iter().enumerate() {
                            client.seen.insert(GROUP[k], v.clone());
                        }
                    }
                    (Kind::Cas { key, new, .. }, Answer::Cas(swapped, current)) => {
                        let now = if *swapped {
                            Some(new.clone())
                        } else {
                            current.clone()
                        };
                        client.seen.insert(KEYS[*key], now);
                    }
                    (Kind::GroupCas { key, new, .. }, Answer::Cas(swapped, current)) => {
                        let now = if *swapped {
                            Some(new.clone())
                        } else {
                            current.clone()
                        };
                        client.seen.insert(GROUP[*key], now);
                    }
                    _ => {}
                }
                record(history, &op.kind, call, Some((ret, answer)));
            }
            Some(Err(e)) if !e.outcome_unknown() || self.unknown_as_refused => {
                self.stats.failed += 1;
                let values: Vec<&String> = match &op.kind {
                    Kind::Put(_, v) | Kind::Cas { new: v, .. } | Kind::GroupCas { new: v, .. } => {
                        vec![v]
                    }
                    Kind::GroupPut(pairs) => pairs.iter().map(|(_, v)| v).collect(),
                    _ => vec![],
                };
                for v in values {
                    history
                        .refused
                        .insert(v.clone(), format!("store {}: {e}", op.store_id));
                }
                match &e {
                    StoreError::NotLeader {
                        leader: Some(leader),
                        ..
                    } => {
                        client.leaders.insert(op.region_id, leader.store_id);
                    }
                    _ => {
                        client.leaders.remove(&op.region_id);
                    }
                }
            }
            _ => {
                // Unknown: a write may still apply; a read tells nothing.
                self.stats.unknown += 1;
                client.leaders.remove(&op.region_id);
                record(history, &op.kind, call, None);
            }
        }
    }
}

/// What a write puts and deletes (nothing, for the other kinds).
fn writes_of(kind: &Kind) -> Vec<Modify> {
    match kind {
        Kind::Put(k, v) => vec![Modify::put(KEYS[*k], v.as_str())],
        Kind::Delete(k) => vec![Modify::delete(KEYS[*k])],
        Kind::GroupPut(pairs) => pairs
            .iter()
            .map(|(k, v)| Modify::put(GROUP[*k], v.as_str()))
            .collect(),
        _ => Vec::new(),
    }
}

fn string(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

fn random_kind(client: &mut Client, rng: &mut StdRng) -> Kind {
    let mut value = || {
        client.writes += 1;
        format!("c{}-{}", client.id, client.writes)
    };
    // Mostly what it last saw (so some swap), sometimes absent.
    let expect = |key: &str, rng: &mut StdRng, seen: &BTreeMap<&str, Option<String>>| match rng
        .gen_bool(0.7)
    {
        true => seen.get(key).cloned().flatten(),
        false => None,
    };
    match rng.gen_range(0..100) {
        0..26 => Kind::Put(rng.gen_range(0..KEYS.len()), value()),
        26..52 => Kind::Get(rng.gen_range(0..KEYS.len())),
        52..58 => Kind::Delete(rng.gen_range(0..KEYS.len())),
        58..70 => {
            let key = rng.gen_range(0..KEYS.len());
            Kind::Cas {
                key,
                expect: expect(KEYS[key], rng, &client.seen),
                new: value(),
            }
        }
        70..78 => {
            let key = rng.gen_range(0..GROUP.len());
            Kind::GroupCas {
                key,
                expect: expect(GROUP[key], rng, &client.seen),
                new: value(),
            }
        }
        78..89 => {
            let n = rng.gen_range(2..=GROUP.len());
            let mut keys: Vec<usize> = (0..GROUP.len()).collect();
            for i in 0..n {
                keys.swap(i, rng.gen_range(i..GROUP.len()));
            }
            let mut pairs: Vec<_> = keys[..n].iter().map(|k| (*k, value())).collect();
            pairs.sort();
            Kind::GroupPut(pairs)
        }
        _ => Kind::GroupGet {
            scan: rng.gen_bool(0.5),
        },
    }
}

fn record(history: &mut History, kind: &Kind, call: u64, answer: Option<(u64, Answer)>) {
    let single = |input: Input<String>, k: usize, history: &mut History, output: Output<String>| {
        let op = match &answer {
            Some((ret, _)) => Operation::done(input, output, call, *ret),
            None => Operation::unknown(input, call),
        };
        if let Some(ops) = history.keys.get_mut(KEYS[k]) {
            ops.push(op);
        }
    };
    match (kind, &answer) {
        (Kind::Put(k, v), _) => single(Input::Put(v.clone()), *k, history, Output::Done),
        (Kind::Delete(k), _) => single(Input::Delete, *k, history, Output::Done),
        (Kind::Cas { key, expect, new }, _) => {
            let output = match &answer {
                Some((_, Answer::Cas(true, _))) => Output::Swapped(true),
                Some((_, Answer::Cas(false, current))) => Output::NotSwapped(current.clone()),
                _ => Output::Unknown,
            };
            let input = Input::Cas {
                expect: expect.clone(),
                new: Some(new.clone()),
            };
            single(input, *key, history, output)
        }
        (Kind::Get(k), Some((_, Answer::Value(v)))) => {
            single(Input::Get, *k, history, Output::Value(v.clone()))
        }
        (Kind::GroupCas { key, expect, new }, _) => {
            let output = match &answer {
                Some((_, Answer::Cas(true, _))) => Some(GroupOutput::One(Output::Swapped(true))),
                Some((_, Answer::Cas(false, current))) => {
                    Some(GroupOutput::One(Output::NotSwapped(current.clone())))
                }
                _ => None,
            };
            history.group.push(GroupOperation {
                input: GroupInput::One(
                    *key,
                    Input::Cas {
                        expect: expect.clone(),
                        new: Some(new.clone()),
                    },
                ),
                ret: output.as_ref().and(answer.as_ref().map(|(ret, _)| *ret)),
                output,
                call,
            })
        }
        (Kind::GroupPut(pairs), _) => history.group.push(GroupOperation {
            input: GroupInput::BatchPut(pairs.clone()),
            output: answer.as_ref().map(|_| GroupOutput::One(Output::Done)),
            call,
            ret: answer.as_ref().map(|(ret, _)| *ret),
        }),
        (Kind::GroupGet { .. }, Some((ret, Answer::Values(values)))) => {
            history.group.push(GroupOperation {
                input: GroupInput::BatchGet((0..GROUP.len()).collect()),
                output: Some(GroupOutput::Values(values.clone())),
                call,
                ret: Some(*ret),
            })
        }
        // A read without an answer tells nothing.
        _ => {}
    }
}
