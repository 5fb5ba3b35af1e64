//! Write throughput of a 3-store in-process cluster (real RocksDB and raft-engine in a temp
//! dir) with 64 concurrent writers of 256 B values, run with 1 region and with 64 regions side
//! by side. Reports writes/s, latency and the group-commit factor (entries made durable per
//! raft-log fsync, over all stores).
//!
//! `cargo bench -p test-cluster --bench cluster_write` (part of `make bench`).
//! `BENCH_SECS` sets the measured seconds per run (default 10); `BENCH_STORE_POOL` and
//! `BENCH_APPLY_POOL` override the pool sizes (default: the production defaults),
//! `BENCH_BATCH_WAIT_US` sets `store-batch-wait-us`, `BENCH_STORE_IO` `store-io-pool-size`
//! (0: no store writer); `BENCH_REGIONS=64` runs one shape only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use raftstore::fsm::StoreStats;
use raftstore::Modify;
use test_cluster::{region_key, Cluster, ClusterConfig};

const WRITERS: u64 = 64;
const VALUE_SIZE: usize = 256;

struct Outcome {
    regions: u64,
    writes: u64,
    errors: u64,
    secs: f64,
    fsyncs: u64,
    entries: u64,
    p50_us: u64,
    p99_us: u64,
}

fn totals(cluster: &Cluster) -> (u64, u64) {
    cluster
        .running_stores()
        .iter()
        .map(|s| {
            let st = cluster.store(*s).stats();
            (
                StoreStats::get(&st.fsyncs),
                StoreStats::get(&st.entries_written),
            )
        })
        .fold((0, 0), |(f, e), (f2, e2)| (f + f2, e + e2))
}

fn run(regions: u64, secs: u64) -> Outcome {
    let mut cfg = ClusterConfig::new(3, regions);
    // Production tick and pools, larger caches than the tests use.
    cfg.raftstore = raftstore::Config::default();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    cfg.raftstore.store_pool_size = env("BENCH_STORE_POOL", cfg.raftstore.store_pool_size);
    cfg.raftstore.apply_pool_size = env("BENCH_APPLY_POOL", cfg.raftstore.apply_pool_size);
    cfg.raftstore.store_batch_wait_us = env("BENCH_BATCH_WAIT_US", 0) as u64;
    cfg.raftstore.store_io_pool_size = env("BENCH_STORE_IO", cfg.raftstore.store_io_pool_size);
    cfg.rocks = engine::RocksConfig::default();
    let cluster = Cluster::run(cfg);
    let mut targets = Vec::new();
    for r in 1..=regions {
        let leader = cluster.wait_leader(r);
        targets.push((cluster.store(leader).api(), cluster.context(leader, r), r));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let value = vec![b'v'; VALUE_SIZE];
    // Warm up so elections and the first flushes are not measured.
    std::thread::sleep(Duration::from_millis(500));
    let (fsyncs0, entries0) = totals(&cluster);
    let start = Instant::now();
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (api, ctx, region) = targets[(w % regions) as usize].clone();
            let (stop, writes, errors, latencies, value) = (
                stop.clone(),
                writes.clone(),
                errors.clone(),
                latencies.clone(),
                value.clone(),
            );
            std::thread::spawn(move || {
                let mut local = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = [region_key(region), format!("/{w}/{i}").into_bytes()].concat();
                    let t = Instant::now();
                    match block_on(api.write(&ctx, vec![Modify::put(key, value.clone())])) {
                        Ok(()) => {
                            writes.fetch_add(1, Ordering::Relaxed);
                            local.push(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    i += 1;
                }
                util::lock(&latencies).extend(local);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (fsyncs1, entries1) = totals(&cluster);
    let mut lat = std::mem::take(&mut *util::lock(&latencies));
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Outcome {
        regions,
        writes: writes.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: elapsed,
        fsyncs: fsyncs1 - fsyncs0,
        entries: entries1 - entries0,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that does not match skips the run.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "cluster_write".contains(a.as_str())) {
        return;
    }
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let region_counts: Vec<u64> = std::env::var("BENCH_REGIONS")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 64]);
    let outcomes: Vec<Outcome> = region_counts.iter().map(|r| run(*r, secs)).collect();
    println!(
        "\ncluster_write: 3 stores in one process, {WRITERS} writers, {VALUE_SIZE} B values, {secs} s per run"
    );
    println!(
        "| regions | writes/s | errors | p50 | p99 | fsyncs (all stores) | entries per fsync |"
    );
    println!("|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {:.0} | {} | {:.1} ms | {:.1} ms | {} | {:.1} |",
            o.regions,
            o.writes as f64 / o.secs,
            o.errors,
            o.p50_us as f64 / 1000.0,
            o.p99_us as f64 / 1000.0,
            o.fsyncs,
            o.entries as f64 / o.fsyncs.max(1) as f64,
        );
    }
    let [one, many] = &outcomes[..] else {
        return;
    };
    println!(
        "ratio {} regions / {} region(s): writes/s {:.2}",
        many.regions,
        one.regions,
        (many.writes as f64 / many.secs) / (one.writes as f64 / one.secs).max(1e-9)
    );
}
