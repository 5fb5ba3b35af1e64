//! Seeded faults against real processes (a scheduler and four stores, three replicas), under
//! tikv-client clients sharing keys with put, get, delete and compare-and-swap; the history,
//! with a final read of every key, must be linearizable.
//!
//! Each store sits behind a fault-injecting TCP proxy (`common::proxy`). Each round the seed
//! picks one fault: kill -9 of a store (restarted after 1–3 s), a SIGSTOP of a store for
//! 1–3 election timeouts (its clock stops too), a partition of everything inbound to a
//! store for 1–3 s (one-way: its own sends still flow), a reset of every connection to a
//! store, or kill -9 of the scheduler (restarted after 1–3 s). `CHAOS_SEEDS` (default 1 seed, `make test-long` more)
//! and `CHAOS_ROUNDS` (default 3) size the run; `CHAOS_SEED=<n>` replays one seed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::history::History;
use common::mixed::{check_mixed, final_reads, shared, start_batches, start_mixed, tikv_client};
use common::ProcCluster;

const STORES: usize = 4;

/// A small deterministic generator: the seed alone decides the faults.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug)]
enum Fault {
    KillStore(usize),
    PauseStore(usize),
    KillScheduler,
    /// Everything inbound to the store held (its own sends still flow).
    Isolate(usize),
    /// Every connection to the store closed.
    Reset(usize),
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run_seed(seed: u64, rounds: u64) {
    let replay =
        format!("CHAOS_SEED={seed} CHAOS_ROUNDS={rounds} cargo nextest run --test process_chaos");
    eprintln!("chaos seed {seed}, {rounds} rounds (replay: {replay})");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut cluster = ProcCluster::start_proxied(STORES);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;
    // Regions on different store sets, so faults hit leaders and followers.
    admin.split(shared(1)).await.expect("split");
    cluster.wait_replicated(&admin, 2, 3).await;
    admin.split(shared(2)).await.expect("split");
    cluster.wait_replicated(&admin, 3, 3).await;
    let raw = tikv_client(&cluster).await;
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = start_mixed(&raw, history.clone(), stop.clone());
    clients.extend(start_batches(&raw, history.clone(), stop.clone()));
    let mut faults = Vec::new();
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
        let store = rng.below(STORES as u64) as usize;
        let fault = match rng.below(5) {
            0 => Fault::KillStore(store),
            1 => Fault::PauseStore(store),
            2 => Fault::Isolate(store),
            3 => Fault::Reset(store),
            _ => Fault::KillScheduler,
        };
        let down = Duration::from_millis(1000 + rng.below(2000));
        let what = match fault {
            Fault::Reset(_) => format!("{fault:?}"),
            _ => format!("{fault:?} for {down:?}"),
        };
        eprintln!("seed {seed}: {what}");
        match fault {
            Fault::KillStore(i) => {
                cluster.kill_store(i);
                tokio::time::sleep(down).await;
                cluster.start_store(i);
            }
            Fault::PauseStore(i) => {
                cluster.pause_store(i, true);
                tokio::time::sleep(down).await;
                cluster.pause_store(i, false);
            }
            Fault::Isolate(i) => {
                cluster.proxies[i].set_blackhole(true);
                tokio::time::sleep(down).await;
                cluster.proxies[i].set_blackhole(false);
            }
            Fault::Reset(i) => cluster.proxies[i].reset(),
            Fault::KillScheduler => {
                cluster.kill_scheduler();
                tokio::time::sleep(down).await;
                cluster.start_scheduler();
            }
        }
        faults.push(what);
    }
    // Healed: let the clients run a little on a whole cluster, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    final_reads(&raw, &history).await;
    let context = format!(
        "seed {seed}, faults [{}]; replay: {replay}",
        faults.join(", ")
    );
    let (acked, swaps, reads) = check_mixed(&history, &context);
    eprintln!(
        "seed {seed}: {acked} acknowledged writes ({swaps} swaps), {reads} reads: linearizable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_process_faults_keep_shared_keys_linearizable() {
    let rounds = env("CHAOS_ROUNDS", 3);
    let seeds: Vec<u64> = match std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        // A different seed each run (printed, with the replay command), so CI explores.
        None => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            (0..env("CHAOS_SEEDS", 1)).map(|i| base + i).collect()
        }
    };
    for seed in seeds {
        run_seed(seed, rounds).await;
    }
}
