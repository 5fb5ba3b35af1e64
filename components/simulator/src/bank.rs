//! The bank: clients move money between accounts in different regions with Percolator
//! transactions (optimistic two-phase commit, primary first), run by each store's own
//! `storage::Storage` commands, and audit every account at one timestamp. Whatever the
//! faults do, money is neither made nor lost: every audit sums to the starting total and no
//! balance is negative. Locks of transactions whose client gave up (or whose store lost
//! power) are resolved the way TiKV's clients do: ask the primary's status, expire it when
//! its TTL has passed, then commit or roll back the lock met.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use engine::MemEngine;
use proto::kvrpcpb::{Context, LockInfo, Mutation, Op};
use rand::rngs::StdRng;
use rand::Rng;
use scheduler_client::InProcessClient;
use storage::raw_cas::Runtime;
use storage::{Error as StorageError, Storage, StorageConfig};
use txn::commands::{BatchRollback, CheckTxnStatus, Commit, Prewrite, TxnStatus};

use crate::cluster::SimCluster;
use crate::runtime::SimRuntime;

/// Accounts, one in each region the simulator's splits can make (between its split points
/// `h`, `k`, `k2`, `k4`), so a transfer usually spans two regions.
pub(crate) const ACCOUNTS: [&str; 5] = ["b-acct", "i-acct", "k1-acct", "k3-acct", "k5-acct"];
/// What an account never written holds.
const INITIAL: i64 = 100;
const LOCK_TTL_MS: u64 = 1_500;
/// A transaction or audit gives up (drops its future: commands already sent run on) after
/// this long.
const GIVE_UP_MS: u64 = 6_000;
/// A request that met a routing error, or a lock still alive, tries again after this long.
const RETRY_MS: u64 = 10;

/// What the bank did, for the report.
#[derive(Clone, Debug, Default)]
pub struct BankStats {
    pub committed: u64,
    /// Refused (a write conflict, a lock met at prewrite, rolled back by a resolver) or not
    /// worth running (too little money).
    pub aborted: u64,
    /// Gave up, or the primary's commit has an unknown outcome.
    pub unknown: u64,
    pub audits: u64,
    /// Why the last transfer that did not commit did not.
    pub last_failure: Option<String>,
}

#[derive(Debug)]
enum Failure {
    /// The answer says the transaction did not (and now cannot) commit.
    Aborted(String),
    /// It may have committed, or a read could not finish.
    Unknown(String),
}

type Outcome<T> = std::result::Result<T, Failure>;

/// Each running store's command layer, and the scheduler: what a transaction's requests
/// are routed by. Shared by the transactions in flight; refreshed on every step.
struct Router {
    scheduler: InProcessClient,
    /// Store → (its start, its storage): a restarted store has a new one.
    storages: BTreeMap<u64, (u64, Storage<MemEngine>)>,
    runtime: Arc<SimRuntime>,
}

type Shared = Rc<RefCell<Router>>;

enum Job {
    Transfer,
    Audit,
}

struct InFlight {
    job: Job,
    call_ms: u64,
    future: Pin<Box<dyn Future<Output = Outcome<Vec<i64>>>>>,
}

struct Client {
    next_ms: u64,
    in_flight: Option<InFlight>,
}

pub(crate) struct Bank {
    router: Shared,
    clients: Vec<Client>,
    pub(crate) stats: BankStats,
    /// Audits that found money made or lost.
    pub(crate) violations: Vec<String>,
}

fn sleep(router: &Shared, ms: u64) -> storage::raw_cas::Task {
    let runtime = router.borrow().runtime.clone();
    runtime.sleep(Duration::from_millis(ms))
}

fn tso(router: &Shared) -> Outcome<u64> {
    let scheduler = router.borrow().scheduler.get();
    scheduler
        .map_err(|e| Failure::Unknown(format!("no scheduler: {e}")))?
        .tso
        .get(1)
        .map_err(|e| Failure::Unknown(format!("tso: {e}")))
}

/// Sends `call` to the leader of `key`'s region (as the scheduler knows it), again after a
/// routing error (nothing was done), until it is answered; an outcome-unknown error or a
/// transactional one ends it.
async fn call<T, F, Fut>(router: &Shared, key: &[u8], call: F) -> Result<T, StorageError>
where
    F: Fn(Storage<MemEngine>, Context) -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let encoded = txn::key::encode(key);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let route = {
            let r = router.borrow();
            r.scheduler
                .get()
                .ok()
                .and_then(|s| s.cluster.region_by_key(&encoded))
                .and_then(|info| {
                    let peers = &info.region.peers;
                    // A leader unknown (or every other try): any peer, as a client with a
                    // stale cache would.
                    let peer = match info.leader {
                        Some(leader) if tries % 3 != 0 => leader,
                        _ => *peers.get(tries as usize % peers.len().max(1))?,
                    };
                    let (_, storage) = r.storages.get(&peer.store_id)?;
                    let ctx = Context {
                        region_id: info.region.id,
                        region_epoch: info.region.region_epoch,
                        peer: Some(peer),
                        ..Default::default()
                    };
                    Some((storage.clone(), ctx))
                })
        };
        if let Some((storage, ctx)) = route {
            match call(storage, ctx).await {
                Err(StorageError::Raft(e)) if !e.outcome_unknown() => {}
                other => return other,
            }
        }
        sleep(router, RETRY_MS).await;
    }
}

fn balance(value: Option<Vec<u8>>) -> Outcome<i64> {
    match value {
        None => Ok(INITIAL),
        Some(bytes) => String::from_utf8_lossy(&bytes)
            .parse()
            .map_err(|e| Failure::Unknown(format!("balance {bytes:?} does not parse: {e}"))),
    }
}

/// `key`'s balance at `ts`, resolving the locks met on the way.
async fn read(router: &Shared, key: &str, ts: u64) -> Outcome<i64> {
    loop {
        let got = call(router, key.as_bytes(), |s, ctx| async move {
            s.get(&ctx, key.as_bytes(), ts).await
        })
        .await;
        match got {
            Ok(value) => return balance(value),
            Err(StorageError::Txn(txn::Error::KeyIsLocked { lock })) => {
                resolve(router, &lock, ts).await?
            }
            Err(e) => return Err(Failure::Unknown(format!("read {key}: {e}"))),
        }
    }
}

/// Settles `lock` if its transaction's fate is known (or its TTL has passed, which decides
/// it); otherwise waits a little. The caller reads again either way.
async fn resolve(router: &Shared, lock: &LockInfo, caller_ts: u64) -> Outcome<()> {
    let current_ts = tso(router)?;
    let check = CheckTxnStatus {
        primary: lock.primary_lock.clone(),
        lock_ts: lock.lock_version,
        caller_start_ts: caller_ts,
        current_ts,
        rollback_if_not_exist: true,
        ..Default::default()
    };
    let status = call(router, &lock.primary_lock, |s, ctx| {
        let check = check.clone();
        async move { s.check_txn_status(&ctx, check).await }
    })
    .await
    .map_err(|e| Failure::Unknown(format!("check_txn_status: {e}")))?;
    let commit_ts = match status {
        TxnStatus::Committed { commit_ts } => commit_ts,
        TxnStatus::RolledBack { .. } => 0,
        TxnStatus::Locked { .. } => {
            sleep(router, RETRY_MS * 5).await;
            return Ok(());
        }
    };
    let txn_status = HashMap::from([(lock.lock_version, commit_ts)]);
    call(router, &lock.key, |s, ctx| {
        let (txn_status, key) = (txn_status.clone(), lock.key.clone());
        async move { s.resolve_lock(&ctx, txn_status, vec![key]).await }
    })
    .await
    .map_err(|e| Failure::Unknown(format!("resolve_lock: {e}")))
}

/// Every balance at one timestamp.
async fn audit(router: Shared) -> Outcome<Vec<i64>> {
    let ts = tso(&router)?;
    let mut balances = Vec::new();
    for key in ACCOUNTS {
        balances.push(read(&router, key, ts).await?);
    }
    Ok(balances)
}

fn put(key: &str, balance: i64) -> Mutation {
    Mutation {
        op: Op::Put as i32,
        key: key.as_bytes().to_vec(),
        value: balance.to_string().into_bytes(),
        ..Default::default()
    }
}

/// Moves `amount` from `from` to `to` (if `from` has it): read both at start_ts, prewrite
/// the primary (`from`) then the secondary, commit the primary at commit_ts, then the
/// secondary. Returns nothing useful: the audits judge.
async fn transfer(router: Shared, from: usize, to: usize, amount: i64) -> Outcome<Vec<i64>> {
    let (from, to) = (ACCOUNTS[from], ACCOUNTS[to]);
    let start_ts = tso(&router)?;
    let from_balance = read(&router, from, start_ts).await?;
    let to_balance = read(&router, to, start_ts).await?;
    if from_balance < amount {
        return Err(Failure::Aborted("not enough money".into()));
    }
    let primary = from.as_bytes().to_vec();
    let mut prewritten: Vec<&str> = Vec::new();
    for mutation in [
        put(from, from_balance - amount),
        put(to, to_balance + amount),
    ] {
        let prewrite = Prewrite {
            mutations: vec![mutation.clone()],
            primary: primary.clone(),
            start_ts,
            lock_ttl: LOCK_TTL_MS,
            txn_size: 2,
            min_commit_ts: start_ts + 1,
            ..Default::default()
        };
        let key = mutation.key.clone();
        let result = call(&router, &key, |s, ctx| {
            let prewrite = prewrite.clone();
            async move { s.prewrite(&ctx, prewrite).await }
        })
        .await;
        let refused = match result {
            Ok(result) if result.locks.is_empty() => None,
            Ok(result) => Some(format!("prewrite met {} locks", result.locks.len())),
            Err(StorageError::Txn(e)) => Some(format!("prewrite: {e}")),
            Err(e) => return Err(Failure::Unknown(format!("prewrite: {e}"))),
        };
        if let Some(why) = refused {
            rollback(&router, &prewritten, start_ts).await;
            return Err(Failure::Aborted(why));
        }
        prewritten.push(if key == from.as_bytes() { from } else { to });
    }
    let commit_ts = tso(&router)?;
    for (i, key) in [from, to].into_iter().enumerate() {
        let commit = Commit {
            keys: vec![key.as_bytes().to_vec()],
            start_ts,
            commit_ts,
        };
        let result = call(&router, key.as_bytes(), |s, ctx| {
            let commit = commit.clone();
            async move { s.commit(&ctx, commit).await }
        })
        .await;
        match (i, result) {
            (_, Ok(())) => {}
            // The primary's fate decides; a secondary left locked is resolved by readers.
            (0, Err(StorageError::Txn(e))) => return Err(Failure::Aborted(format!("commit: {e}"))),
            (0, Err(e)) => return Err(Failure::Unknown(format!("commit: {e}"))),
            (_, Err(_)) => {}
        }
    }
    Ok(Vec::new())
}

/// Best effort: a lock left behind expires and is rolled back by whoever meets it.
async fn rollback(router: &Shared, keys: &[&str], start_ts: u64) {
    for key in keys {
        let cmd = BatchRollback {
            keys: vec![key.as_bytes().to_vec()],
            start_ts,
        };
        let _ = call(router, key.as_bytes(), |s, ctx| {
            let cmd = cmd.clone();
            async move { s.batch_rollback(&ctx, cmd).await }
        })
        .await;
    }
}

impl Bank {
    pub(crate) fn new(clients: usize, cluster: &SimCluster, runtime: Arc<SimRuntime>) -> Bank {
        Bank {
            router: Rc::new(RefCell::new(Router {
                scheduler: cluster.scheduler.clone(),
                storages: BTreeMap::new(),
                runtime,
            })),
            clients: (0..clients)
                .map(|_| Client {
                    next_ms: 0,
                    in_flight: None,
                })
                .collect(),
            stats: BankStats::default(),
            violations: Vec::new(),
        }
    }

    /// Each running store's storage, made anew for a restarted store.
    fn refresh(&self, cluster: &SimCluster) {
        let mut router = self.router.borrow_mut();
        let runtime: Arc<dyn Runtime> = router.runtime.clone();
        for (store_id, store) in &cluster.stores {
            match cluster.api(*store_id) {
                Some(api) => {
                    if router.storages.get(store_id).map(|(s, _)| *s) != Some(store.starts) {
                        let storage =
                            Storage::with_runtime(api, StorageConfig::default(), runtime.clone());
                        router.storages.insert(*store_id, (store.starts, storage));
                    }
                }
                None => {
                    router.storages.remove(store_id);
                }
            }
        }
    }

    /// Starts a transfer or an audit for each idle client whose think time is over (unless
    /// `quiet`), and judges what finished. Returns whether any is in flight.
    pub(crate) fn step(
        &mut self,
        cluster: &SimCluster,
        rng: &mut StdRng,
        now_ms: u64,
        quiet: bool,
    ) -> bool {
        self.refresh(cluster);
        let mut busy = false;
        for i in 0..self.clients.len() {
            if self.clients[i].in_flight.is_none() && !quiet && self.clients[i].next_ms <= now_ms {
                let job = if rng.gen_bool(0.25) {
                    Job::Audit
                } else {
                    Job::Transfer
                };
                self.start(i, job, rng, now_ms);
            }
            self.poll(i, rng, now_ms);
            busy |= self.clients[i].in_flight.is_some();
        }
        busy
    }

    fn start(&mut self, i: usize, job: Job, rng: &mut StdRng, now_ms: u64) {
        let router = self.router.clone();
        let future: Pin<Box<dyn Future<Output = Outcome<Vec<i64>>>>> = match job {
            Job::Audit => Box::pin(audit(router)),
            Job::Transfer => {
                let from = rng.gen_range(0..ACCOUNTS.len());
                let to = (from + rng.gen_range(1..ACCOUNTS.len())) % ACCOUNTS.len();
                Box::pin(transfer(router, from, to, rng.gen_range(1..=30)))
            }
        };
        self.clients[i].in_flight = Some(InFlight {
            job,
            call_ms: now_ms,
            future,
        });
    }

    fn poll(&mut self, i: usize, rng: &mut StdRng, now_ms: u64) {
        let client = &mut self.clients[i];
        let Some(op) = client.in_flight.as_mut() else {
            return;
        };
        let mut cx = TaskContext::from_waker(Waker::noop());
        let outcome = match op.future.as_mut().poll(&mut cx) {
            Poll::Ready(outcome) => outcome,
            Poll::Pending if now_ms >= op.call_ms + GIVE_UP_MS => {
                Err(Failure::Unknown("gave up".into()))
            }
            Poll::Pending => return,
        };
        let Some(op) = client.in_flight.take() else {
            return;
        };
        client.next_ms = now_ms + rng.gen_range(0..=50);
        match (op.job, outcome) {
            (Job::Audit, Ok(balances)) => {
                self.stats.audits += 1;
                let total: i64 = balances.iter().sum();
                let expected = INITIAL * ACCOUNTS.len() as i64;
                if total != expected || balances.iter().any(|b| *b < 0) {
                    self.violations.push(format!(
                        "bank audit at {now_ms} ms (from {} ms): balances {balances:?} sum to \
                         {total}, not {expected}, or one is negative",
                        op.call_ms
                    ));
                }
            }
            (Job::Transfer, Ok(_)) => self.stats.committed += 1,
            (_, Err(Failure::Aborted(why))) => {
                self.stats.aborted += 1;
                self.stats.last_failure = Some(why);
            }
            (_, Err(Failure::Unknown(why))) => {
                self.stats.unknown += 1;
                self.stats.last_failure = Some(why);
            }
        }
    }

    /// An audit by client 0 (when idle), for the final check after the heal.
    pub(crate) fn start_final_audit(&mut self, rng: &mut StdRng, now_ms: u64) -> bool {
        if self.clients.is_empty() || self.clients[0].in_flight.is_some() {
            return false;
        }
        self.start(0, Job::Audit, rng, now_ms);
        true
    }

    pub(crate) fn idle(&self) -> bool {
        self.clients.iter().all(|c| c.in_flight.is_none())
    }
}
