//! kill -9 of store processes under load: acknowledged writes survive, the cluster keeps
//! serving, a restarted store catches up, and the clients' history is linearizable per key.
//! `KILL_ITERATIONS` (default 2; `make test-long` runs 10) sets how many kill/restart rounds
//! the loop test runs.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::history::{History, Op};
use common::mixed::{
    check_mixed, final_reads, shared, start_batches, start_mixed, tikv_client, value_of,
};
use common::{wait_ok, ProcCluster};
use tikv_client::RawClient;

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 4;
const READERS: usize = 2;

fn register(writer: usize, k: usize) -> String {
    format!("reg-{writer}-{k}")
}

/// Single-writer registers and random readers until `stop`.
struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    history: Arc<History>,
}

impl Workload {
    /// `next[w][k]` is the next value writer `w` writes to its key `k`.
    fn start(raw: &RawClient, history: Arc<History>, next: Vec<Vec<u64>>) -> Workload {
        // What the registers hold from earlier rounds counts as written before this one.
        for (w, row) in next.iter().enumerate() {
            for (k, v) in row.iter().enumerate() {
                if *v > 1 {
                    let key = register(w, k);
                    history.record(
                        &key,
                        Op::Write {
                            value: v - 1,
                            ok: true,
                        },
                        Instant::now(),
                    );
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (w, mut next) in next.into_iter().enumerate() {
            let (raw, stop, history) = (raw.clone(), stop.clone(), history.clone());
            tasks.push(tokio::spawn(async move {
                // A key whose write failed is left alone: that write may still land.
                let mut poisoned = [false; KEYS_PER_WRITER];
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) && poisoned.iter().any(|p| !p) {
                    k = (k + 1) % KEYS_PER_WRITER;
                    if poisoned[k] {
                        continue;
                    }
                    let key = register(w, k);
                    let value = next[k];
                    next[k] += 1;
                    let start = Instant::now();
                    let ok = raw.put(key.clone(), value.to_string()).await.is_ok();
                    history.record(&key, Op::Write { value, ok }, start);
                    poisoned[k] = !ok;
                }
            }));
        }
        for r in 0..READERS {
            let (raw, stop, history) = (raw.clone(), stop.clone(), history.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 7 + 3) % (WRITERS * KEYS_PER_WRITER);
                    let key = register(i / KEYS_PER_WRITER, i % KEYS_PER_WRITER);
                    let start = Instant::now();
                    if let Ok(value) = raw.get(key.clone()).await {
                        history.record(
                            &key,
                            Op::Read {
                                value: value_of(value),
                            },
                            start,
                        );
                    }
                }
            }));
        }
        Workload {
            stop,
            tasks,
            history,
        }
    }

    async fn stop(self) -> Arc<History> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("workload task");
        }
        self.history
    }
}

/// Every register's value now: what reads return after the workload, and the next values.
async fn final_values(raw: &RawClient) -> Vec<Vec<u64>> {
    let mut out = vec![vec![0; KEYS_PER_WRITER]; WRITERS];
    for (w, row) in out.iter_mut().enumerate() {
        for (k, v) in row.iter_mut().enumerate() {
            *v = value_of(raw.get(register(w, k)).await.expect("final read"));
        }
    }
    out
}

/// Acknowledged writes are all there: each register holds at least its newest acknowledged
/// value, and at most the newest attempted one.
fn check_durable(history: &History, finals: &[Vec<u64>]) {
    for (w, row) in finals.iter().enumerate() {
        for (k, fin) in row.iter().enumerate() {
            let key = register(w, k);
            let (mut acked, mut tried) = (0, 0);
            for e in history.events().iter().filter(|e| e.key == key) {
                if let Op::Write { value, ok } = e.op {
                    tried = tried.max(value);
                    if ok {
                        acked = acked.max(value);
                    }
                }
            }
            assert!(
                *fin >= acked && *fin <= tried.max(acked),
                "{key}: holds {fin}, acknowledged up to {acked}, tried up to {tried}"
            );
        }
    }
}

async fn wait_hosts_all_regions(cluster: &ProcCluster, admin: &client::Client, i: usize) {
    let what = format!("store {i} hosts every region");
    wait_ok(&what, Duration::from_secs(60), || async {
        let regions = admin.regions().await.map(|r| r.len()).unwrap_or(0);
        let hosted = cluster.status(i)["regions"].as_u64().unwrap_or(0) as usize;
        if regions > 0 && hosted == regions {
            Ok(())
        } else {
            Err(format!("store {i} hosts {hosted} of {regions} regions"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_one_store_under_load_loses_nothing_and_stays_linearizable() {
    let iterations: usize = std::env::var("KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut cluster = ProcCluster::start(3);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;
    // Two regions, so leaders spread and a kill hits leaders and followers.
    admin.split("reg-2").await.expect("split");
    cluster.wait_replicated(&admin, 2, 3).await;
    let raw = tikv_client(&cluster).await;
    let mut next = vec![vec![1u64; KEYS_PER_WRITER]; WRITERS];
    for iteration in 0..iterations {
        let victim = iteration % 3;
        let history = Arc::new(History::default());
        let workload = Workload::start(&raw, history.clone(), next.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.kill_store(victim);
        // The other two keep serving.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let served = history.events().len();
        cluster.start_store(victim);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let history = workload.stop().await;
        let (reads, acked) = history
            .check()
            .unwrap_or_else(|e| panic!("iteration {iteration}: not linearizable: {e}"));
        assert!(
            acked > 20 && reads > 20,
            "iteration {iteration}: only {acked} writes, {reads} reads"
        );
        assert!(
            served > 10,
            "iteration {iteration}: nothing served while store {victim} was down"
        );
        let finals = final_values(&raw).await;
        check_durable(&history, &finals);

        // The restarted store caught up: with another store down, every quorum needs it.
        wait_hosts_all_regions(&cluster, &admin, victim).await;
        let other = (victim + 1) % 3;
        cluster.kill_store(other);
        let check = Arc::new(History::default());
        let bumped: Vec<Vec<u64>> = finals
            .iter()
            .map(|r| r.iter().map(|v| v + 1).collect())
            .collect();
        for (w, row) in bumped.iter().enumerate() {
            for (k, v) in row.iter().enumerate() {
                let key = register(w, k);
                let start = Instant::now();
                raw.put(key.clone(), v.to_string())
                    .await
                    .unwrap_or_else(|e| panic!("write {key} with store {other} down: {e}"));
                check.record(
                    &key,
                    Op::Write {
                        value: *v,
                        ok: true,
                    },
                    start,
                );
            }
        }
        check_durable(&check, &final_values(&raw).await);
        cluster.start_store(other);
        next = bumped
            .iter()
            .map(|r| r.iter().map(|v| v + 1).collect())
            .collect();
        eprintln!(
            "iteration {iteration}: killed store {victim}: {acked} writes, {reads} reads checked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_every_store_mid_write_keeps_acknowledged_writes() {
    let mut cluster = ProcCluster::start(3);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;
    let raw = tikv_client(&cluster).await;
    // Acknowledged keys, recorded as each write returns; the writers are abandoned at the
    // crash (their last writes' outcome is unknown, and not counted).
    let acked_log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (raw, acked_log) = (raw.clone(), acked_log.clone());
        writers.push(tokio::spawn(async move {
            for n in 0u64.. {
                let key = format!("crash-{w}-{n:06}");
                if raw.put(key.clone(), format!("value-{n}")).await.is_err() {
                    return;
                }
                acked_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((key, n));
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The whole cluster dies at once, writes in flight, nothing flushed on the way out.
    for i in 0..3 {
        cluster.kill_store(i);
    }
    let acked: Vec<(String, u64)> = acked_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for w in writers {
        w.abort();
    }
    assert!(
        acked.len() > 50,
        "only {} writes before the crash",
        acked.len()
    );
    for i in 0..3 {
        cluster.start_store(i);
    }
    let raw = tikv_client(&cluster).await;
    for chunk in acked.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|(k, _)| k.clone()).collect();
        let got = raw.batch_get(keys).await.expect("read after restart");
        assert_eq!(
            got.len(),
            chunk.len(),
            "acknowledged writes lost in the crash"
        );
        for pair in got {
            let key = String::from_utf8(Vec::<u8>::from(pair.key().clone())).unwrap_or_default();
            let n = key.rsplit('-').next().and_then(|n| n.parse::<u64>().ok());
            assert_eq!(
                pair.value(),
                &format!("value-{}", n.unwrap_or(u64::MAX)).into_bytes(),
                "{key}"
            );
        }
    }
    // And the cluster takes writes again.
    raw.put("after-crash".to_owned(), "ok".to_owned())
        .await
        .expect("write after restart");
    eprintln!(
        "{} acknowledged writes survived kill -9 of every store",
        acked.len()
    );
}

/// Several clients share keys (put, get, delete, compare-and-swap) while a store is killed
/// and restarted; afterwards a read of every key joins the history, so the checker also
/// sees that every acknowledged write survived.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_keys_with_cas_stay_linearizable_across_a_kill_9() {
    let mut cluster = ProcCluster::start(3);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;
    // Two regions, so the kill hits a leader of one and a follower of the other.
    admin.split(shared(1)).await.expect("split");
    cluster.wait_replicated(&admin, 2, 3).await;
    let raw = tikv_client(&cluster).await;
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = start_mixed(&raw, history.clone(), stop.clone());
    clients.extend(start_batches(&raw, history.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill_store(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_store(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    final_reads(&raw, &history).await;
    let (acked, swaps, reads) = check_mixed(&history, "kill -9 of store 0");
    eprintln!("{acked} acknowledged writes ({swaps} swaps), {reads} reads: linearizable");
}
