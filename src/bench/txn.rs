//! `bench txn`: bank transfers (two keys per transaction: read both balances, move an amount)
//! in optimistic, pessimistic and async-commit transactions, beside a raw baseline doing the
//! same two-key writes as raw batch puts, in one run against one cluster. Reports
//! transactions per second, abort and retry rates, p50/p99 latency, and checks at the end
//! that the bank's total is unchanged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Client, ClientConfig, TransactionClient, TxnOptions};
use rand::{Rng, SeedableRng};

use super::{start_cluster, wait_replicated, Common, Distribution, Zipf};

/// Balance every account starts with.
const START_BALANCE: u64 = 1000;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Mode {
    Optimistic,
    Pessimistic,
    AsyncCommit,
    /// The baseline: the same two writes as one raw batch put (no isolation).
    Raw,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TxnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Measured seconds per mode.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Accounts in the bank.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// How transfers pick accounts: uniform (low contention) or zipfian (hot accounts).
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,
    /// Modes to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "raw,optimistic,pessimistic,async-commit"
    )]
    pub modes: Vec<Mode>,
    /// A cluster the bench starts is split into this many regions first.
    #[arg(long, default_value_t = 4)]
    pub regions: usize,
}

fn account(i: u64) -> Vec<u8> {
    format!("acct-{i:08}").into_bytes()
}

fn raw_account(i: u64) -> Vec<u8> {
    format!("raw-acct-{i:08}").into_bytes()
}

fn parse(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Stats {
    committed: AtomicU64,
    aborted: AtomicU64,
    failed: AtomicU64,
    latencies: Mutex<Vec<u64>>,
}

#[derive(serde::Serialize)]
struct ModeResult {
    mode: Mode,
    txn_per_sec: f64,
    aborts_per_committed: f64,
    failures: u64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// One transfer in `mode`: `Ok(true)` committed, `Ok(false)` aborted (conflict: the caller
/// tries another transfer).
async fn transfer(
    txns: &TransactionClient,
    raw: &Client,
    mode: Mode,
    (from, to): (u64, u64),
) -> client::Result<bool> {
    if mode == Mode::Raw {
        let amount = 1u64;
        raw.batch_put([
            (
                raw_account(from),
                (START_BALANCE - amount).to_string().into_bytes(),
            ),
            (
                raw_account(to),
                (START_BALANCE + amount).to_string().into_bytes(),
            ),
        ])
        .await?;
        return Ok(true);
    }
    let options = match mode {
        Mode::Pessimistic => TxnOptions::pessimistic(),
        Mode::AsyncCommit => TxnOptions::optimistic().with_async_commit(),
        _ => TxnOptions::optimistic(),
    };
    let mut t = txns.begin(options).await?;
    let read = |v: Option<Vec<u8>>| v.as_deref().map_or(0, parse);
    let (a, b) = if mode == Mode::Pessimistic {
        // Locked in account order, as an application avoids deadlocks.
        let (first, second) = (from.min(to), from.max(to));
        let x = read(t.get_for_update(account(first)).await?);
        let y = read(t.get_for_update(account(second)).await?);
        if first == from {
            (x, y)
        } else {
            (y, x)
        }
    } else {
        // Both balances in one round trip.
        let got = t.batch_get([account(from), account(to)]).await?;
        let of = |k: Vec<u8>| {
            read(
                got.iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.clone()),
            )
        };
        (of(account(from)), of(account(to)))
    };
    let amount = 1 + (a % 7).min(a);
    if a < amount {
        t.rollback().await?;
        return Ok(true);
    }
    t.put(account(from), (a - amount).to_string()).await?;
    t.put(account(to), (b + amount).to_string()).await?;
    match t.commit().await {
        Ok(_) => Ok(true),
        Err(e) if e.is_write_conflict() => Ok(false),
        Err(client::Error::Txn { key_error, .. }) if key_error.locked.is_some() => Ok(false),
        Err(e) => Err(e),
    }
}

async fn run_mode(
    args: &TxnArgs,
    txns: &TransactionClient,
    raw: &Client,
    mode: Mode,
) -> ModeResult {
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let zipf = Arc::new(Zipf::new(args.accounts));
    let mut workers = Vec::new();
    for w in 0..args.common.concurrency {
        let (txns, raw, stats, stop, zipf) = (
            txns.clone(),
            raw.clone(),
            stats.clone(),
            stop.clone(),
            zipf.clone(),
        );
        let (n, distribution) = (args.accounts, args.distribution);
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let mut pick = || match distribution {
                    Distribution::Uniform => rng.gen_range(0..n),
                    Distribution::Zipfian => zipf.next(&mut rng),
                };
                let (from, to) = (pick(), pick());
                if from == to {
                    continue;
                }
                let began = Instant::now();
                match transfer(&txns, &raw, mode, (from, to)).await {
                    Ok(true) => {
                        stats.committed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut l) = stats.latencies.lock() {
                            l.push(began.elapsed().as_micros() as u64);
                        }
                    }
                    Ok(false) => {
                        stats.aborted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let committed = stats.committed.load(Ordering::Relaxed);
    let mut latencies = stats
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    ModeResult {
        mode,
        txn_per_sec: committed as f64 / elapsed,
        aborts_per_committed: stats.aborted.load(Ordering::Relaxed) as f64
            / committed.max(1) as f64,
        failures: stats.failed.load(Ordering::Relaxed),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// The bank's total at a fresh timestamp, account by account in batches.
async fn bank_total(txns: &TransactionClient, accounts: u64) -> client::Result<u64> {
    let mut t = txns.begin(TxnOptions::optimistic()).await?;
    let pairs = t
        .scan(account(0), account(accounts), accounts as usize)
        .await?;
    t.rollback().await?;
    Ok(pairs.iter().map(|(_, v)| parse(v)).sum())
}

pub async fn run(args: TxnArgs) -> Result<(), String> {
    let cluster = start_cluster(&args.common, &|_| {})?;
    let config = ClientConfig {
        keyspace: args.common.keyspace.clone(),
        ..Default::default()
    };
    let pd = std::slice::from_ref(&cluster.pd);
    let raw = Client::connect(pd, config.clone())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let txns = TransactionClient::connect(pd, config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if cluster.owned() && args.regions > 1 {
        wait_replicated(&raw, 1).await?;
        // Split points at accounts, in the encoded form transactional keys route by.
        for i in 1..args.regions as u64 {
            let at = api_version::memcomparable::encode(&account(
                i * args.accounts / args.regions as u64,
            ));
            let op = raw.split(at).await.map_err(|e| format!("pre-split: {e}"))?;
            raw.wait_operator(&op, Duration::from_secs(60))
                .await
                .map_err(|e| format!("pre-split: {e}"))?;
        }
        wait_replicated(&raw, args.regions).await?;
    }
    println!("loading {} accounts of {START_BALANCE}", args.accounts);
    for chunk in (0..args.accounts).collect::<Vec<_>>().chunks(500) {
        let mut t = txns
            .begin(TxnOptions::optimistic())
            .await
            .map_err(|e| format!("load: {e}"))?;
        for i in chunk {
            t.put(account(*i), START_BALANCE.to_string())
                .await
                .map_err(|e| format!("load: {e}"))?;
        }
        t.commit().await.map_err(|e| format!("load: {e}"))?;
    }
    let mut results = Vec::new();
    for mode in &args.modes {
        println!("running {mode:?} for {} s", args.duration_secs);
        results.push(run_mode(&args, &txns, &raw, *mode).await);
    }
    let total = bank_total(&txns, args.accounts)
        .await
        .map_err(|e| format!("bank check: {e}"))?;
    let want = args.accounts * START_BALANCE;
    let baseline = results
        .iter()
        .find(|r| r.mode == Mode::Raw)
        .map(|r| r.txn_per_sec);
    println!(
        "\n{:<14} {:>10} {:>9} {:>14} {:>9} {:>9} {:>9}",
        "mode", "txn/s", "vs raw", "aborts/commit", "failures", "p50 ms", "p99 ms"
    );
    for r in &results {
        let ratio = baseline.map_or("-".to_string(), |b| {
            format!("{:.2}x", r.txn_per_sec / b.max(1e-9))
        });
        println!(
            "{:<14} {:>10.0} {:>9} {:>14.3} {:>9} {:>9.2} {:>9.2}",
            format!("{:?}", r.mode),
            r.txn_per_sec,
            ratio,
            r.aborts_per_committed,
            r.failures,
            r.p50_ms,
            r.p99_ms
        );
    }
    let ok = total == want;
    println!(
        "\nbank total: {total} (expected {want}) {}",
        if ok { "OK" } else { "MISMATCH" }
    );
    std::fs::create_dir_all(&args.common.out).map_err(|e| format!("out dir: {e}"))?;
    let name = args.common.name.clone().unwrap_or_else(|| "txn".into());
    let path = args.common.out.join(format!("{name}.json"));
    let json = serde_json::json!({
        "workload": "txn",
        "accounts": args.accounts,
        "distribution": args.distribution,
        "concurrency": args.common.concurrency,
        "results": results,
        "bank_total": total,
        "bank_expected": want,
    });
    std::fs::write(&path, json.to_string())
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("result: {}", path.display());
    if !ok {
        return Err(format!("the bank total changed: {total}, expected {want}"));
    }
    Ok(())
}
