//! The region-split workload in the test cluster: sequential-key writes into one region with
//! small split thresholds until `BENCH_REGIONS` (default 200) regions exist, then the same
//! time again on the same cluster with automatic splits paused (steady state). Reports both
//! throughputs and their ratio, client-visible errors after retries, retries, and split
//! latency (ids asked for → the new region present on every store), p50 and p99.
//!
//! `cargo bench -p test-cluster --bench split`; `BENCH_REGIONS`, `BENCH_WRITERS` (16),
//! `BENCH_VALUE` (bytes, 512), `BENCH_SPLIT_KEYS` (keys per region after a split, 500; the
//! split threshold is 1.5 times that). Goals: ≥ 0.8 of steady state, 0 errors, split p99 < 1 s.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use test_cluster::{Cluster, ClusterConfig};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Records when each region is first present on every store; true if every store hosts the
/// same number of regions.
fn watch(cluster: &Cluster, stores: &[u64], seen: &mut HashMap<u64, Instant>) -> bool {
    let sets: Vec<HashSet<u64>> = stores
        .iter()
        .map(|s| cluster.store(*s).region_ids().into_iter().collect())
        .collect();
    let now = Instant::now();
    for id in &sets[0] {
        if sets.iter().all(|set| set.contains(id)) {
            seen.entry(*id).or_insert(now);
        }
    }
    sets.iter().all(|s| s.len() == sets[0].len())
}

struct Counters {
    next_key: AtomicU64,
    ops: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    stop: AtomicBool,
}

fn main() {
    let under_test = !std::env::args().any(|a| a == "--bench");
    let target = env("BENCH_REGIONS", if under_test { 8 } else { 200 }) as usize;
    let writers = env("BENCH_WRITERS", 16);
    let value = vec![7u8; env("BENCH_VALUE", 512) as usize];
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.raftstore.split_region_check_tick_interval_ms = 100;
    let split_keys = env("BENCH_SPLIT_KEYS", if under_test { 100 } else { 500 });
    cfg.raftstore.region_split_keys = split_keys;
    cfg.raftstore.region_max_keys = split_keys * 3 / 2;
    cfg.raftstore.store_pool_size = 1;
    cfg.raftstore.apply_pool_size = 1;
    let cluster = Cluster::run(cfg);
    cluster.wait_leader(1);
    let counters = Counters {
        next_key: AtomicU64::new(0),
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let stores = cluster.running_stores();
    let mut seen_everywhere: HashMap<u64, Instant> = HashMap::new();
    let (phase1, ops1, phase2, ops2) = std::thread::scope(|s| {
        for _ in 0..writers {
            let (cluster, counters, value) = (&cluster, &counters, &value);
            s.spawn(move || {
                let mut leaders = HashMap::new();
                while !counters.stop.load(Relaxed) {
                    let i = counters.next_key.fetch_add(1, Relaxed);
                    let key = format!("k{i:012}");
                    match cluster.put_retrying(key.as_bytes(), value, &mut leaders) {
                        Ok(retries) => {
                            counters.ops.fetch_add(1, Relaxed);
                            counters.retries.fetch_add(retries as u64, Relaxed);
                        }
                        Err(e) => {
                            counters.errors.fetch_add(1, Relaxed);
                            eprintln!("write of {key} failed: {e}");
                        }
                    }
                }
            });
        }
        let started = Instant::now();
        let limit = Duration::from_secs(if under_test { 60 } else { 600 });
        while cluster.scheduler().cluster.regions().len() < target {
            assert!(started.elapsed() < limit, "never reached {target} regions");
            watch(&cluster, &stores, &mut seen_everywhere);
            std::thread::sleep(Duration::from_millis(5));
        }
        let phase1 = started.elapsed();
        let ops1 = counters.ops.load(Relaxed);
        for store in &stores {
            cluster.store(*store).pause_split_checks(true);
        }
        let steady_from = Instant::now();
        let steady_for = phase1.min(Duration::from_secs(30));
        while steady_from.elapsed() < steady_for {
            watch(&cluster, &stores, &mut seen_everywhere);
            std::thread::sleep(Duration::from_millis(5));
        }
        let ops2 = counters.ops.load(Relaxed) - ops1;
        let phase2 = steady_from.elapsed();
        counters.stop.store(true, Relaxed);
        (phase1, ops1, phase2, ops2)
    });
    // Splits still in flight when the writers stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if watch(&cluster, &stores, &mut seen_everywhere) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut allocations = cluster.id_allocations();
    allocations.sort_by_key(|(id, _)| *id);
    let mut latencies: Vec<Duration> = seen_everywhere
        .iter()
        .filter(|(id, _)| **id != 1)
        .filter_map(|(id, seen)| {
            let idx = allocations.partition_point(|(first, _)| first <= id);
            let (_, asked) = allocations.get(idx.checked_sub(1)?)?;
            Some(seen.saturating_duration_since(*asked))
        })
        .collect();
    latencies.sort();
    let rate1 = ops1 as f64 / phase1.as_secs_f64();
    let rate2 = ops2 as f64 / phase2.as_secs_f64();
    let regions = cluster.scheduler().cluster.regions().len();
    println!(
        "split workload: 3 stores, {writers} writers, {}-byte values, sequential keys, a \
         split every {split_keys} keys",
        value.len()
    );
    println!(
        "{:<38} {:>12}",
        "splitting phase (1 -> N regions)",
        format!("{:.1?}", phase1)
    );
    println!("{:<38} {:>12}", "regions at the end", regions);
    println!("{:<38} {:>12.0}", "writes/s while splitting", rate1);
    println!("{:<38} {:>12.0}", "writes/s after (splits paused)", rate2);
    println!("{:<38} {:>12.2}", "ratio (goal >= 0.8)", rate1 / rate2);
    println!(
        "{:<38} {:>12}",
        "client-visible errors (goal 0)",
        counters.errors.load(Relaxed)
    );
    println!("{:<38} {:>12}", "retries", counters.retries.load(Relaxed));
    println!("{:<38} {:>12}", "splits timed", latencies.len());
    println!(
        "{:<38} {:>12}",
        "split latency p50",
        format!("{:.1?}", percentile(&latencies, 0.5))
    );
    println!(
        "{:<38} {:>12}",
        "split latency p99 (goal < 1 s)",
        format!("{:.1?}", percentile(&latencies, 0.99))
    );
    println!(
        "{:<38} {:>12}",
        "split latency max",
        format!("{:.1?}", latencies.last().copied().unwrap_or_default())
    );
}
