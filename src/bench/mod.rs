//! `regionstore bench`: named workloads against a regionstore cluster (given by `--pd`, or
//! one it starts itself) or etcd (`--target etcd`), with a progress bar, a summary table, a
//! JSON result file and an SVG plot per run, and `compare` for a side-by-side ratio table.
//!
//! - `kv`: uniform or zipfian keys, a read/write ratio, value size, key count, concurrency.
//! - `split`: sequential keys into a fresh cluster of one region, until N regions or T
//!   seconds; reports the throughput in the seconds with a split against the others.
//! - `txn`: bank transfers in transactions beside a raw two-key baseline, with the bank's
//!   total checked at the end.

mod driver;
mod regions;
mod report;
mod txn;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::config::{StoreConfig, StoreOverlay};
use crate::playground::{Options as PlaygroundOptions, Playground};
use driver::Driver;
use report::{Recorder, RunReport, Sample, Summary};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Reads and writes of random keys.
    Kv(KvArgs),
    /// Sequential writes into a cluster that starts with one region and splits as it grows.
    Split(SplitArgs),
    /// Bank transfers in transactions (optimistic, pessimistic, async commit) beside a raw
    /// two-key baseline; checks the bank's total at the end.
    Txn(txn::TxnArgs),
    /// Many idle regions: idle CPU and RSS per store, waking writes, failover of a dead
    /// store's regions, restart to serving.
    Regions(regions::RegionsArgs),
    /// Prints candidate/baseline ratios of two result files.
    Compare {
        baseline: PathBuf,
        candidate: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Regionstore,
    Etcd,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// What to drive.
    #[arg(long, value_enum, default_value = "regionstore")]
    pub target: Target,
    /// A running regionstore cluster's scheduler; without it the bench starts a 3-store
    /// cluster of its own under `--cluster-dir`.
    #[arg(long)]
    pub pd: Option<String>,
    /// etcd endpoints, comma-separated (with `--target etcd`).
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Where the JSON result and the plot go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Name of the run (file names); default `<workload>-<target>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Data directory of a cluster the bench starts (emptied first).
    #[arg(long, default_value = "target/bench/cluster")]
    pub cluster_dir: PathBuf,
    /// Port offset of a cluster the bench starts (see `playground --port-offset`).
    #[arg(long, default_value_t = 1000)]
    pub port_offset: u16,
    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
    /// A TOML file of store settings laid over the defaults of a cluster the bench starts
    /// (any keys of `regionstore store --print-default-config`), to compare tunings.
    #[arg(long)]
    pub store_config: Option<PathBuf>,
    /// Work in this keyspace (a cluster of API version 2, e.g. "DEFAULT").
    #[arg(long)]
    pub keyspace: Option<String>,
    /// Send each request as a unary call instead of over the client's `BatchCommands`
    /// stream per store (to compare the two).
    #[arg(long)]
    pub no_batch_commands: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct KvArgs {
    #[command(flatten)]
    pub common: Common,
    /// Measured seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Distinct keys; loaded before the run when it reads.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Share of operations that are reads, 0.0..=1.0.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,
    /// A cluster the bench starts is split into this many regions first (leaders spread over
    /// the stores, as in any cluster past its first minutes).
    #[arg(long, default_value_t = 16)]
    pub regions: usize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SplitArgs {
    #[command(flatten)]
    pub common: Common,
    /// Stop once the cluster has this many regions.
    #[arg(long, default_value_t = 64)]
    pub regions: u64,
    /// Stop after this many seconds at most.
    #[arg(long, default_value_t = 120)]
    pub duration_secs: u64,
    /// Split size of a cluster the bench starts (`region-split-size`; the maximum is 1.5x),
    /// small so that a bench run sees many splits.
    #[arg(long, default_value_t = 1024)]
    pub split_size_kib: u64,
}

pub fn run(args: Args) -> Result<(), String> {
    match args.command {
        BenchCommand::Compare {
            baseline,
            candidate,
        } => {
            let read = |p: &PathBuf| -> Result<RunReport, String> {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
            };
            report::compare(&read(&baseline)?, &read(&candidate)?);
            Ok(())
        }
        BenchCommand::Kv(kv) => {
            let rt = runtime()?;
            rt.block_on(run_kv(kv))
        }
        BenchCommand::Split(split) => {
            let rt = runtime()?;
            rt.block_on(run_split(split))
        }
        BenchCommand::Txn(args) => {
            let rt = runtime()?;
            rt.block_on(txn::run(args))
        }
        BenchCommand::Regions(args) => {
            let rt = runtime()?;
            rt.block_on(regions::run(args))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

/// The cluster under test: one the bench started (stopped when dropped), or given.
struct Cluster {
    pd: String,
    _own: Option<Playground>,
}

impl Cluster {
    /// Started by the bench (so it may be split and tuned).
    fn owned(&self) -> bool {
        self._own.is_some()
    }
}

/// The store settings of `--store-config` as a tuning of a store's config (none: no change).
/// Read and checked here, so a bad file fails before any process starts.
fn overlay_tune(path: Option<&std::path::Path>) -> Result<impl Fn(&mut StoreConfig), String> {
    let overlay = path.map(StoreOverlay::read).transpose()?;
    Ok(move |cfg: &mut StoreConfig| {
        if let Some(overlay) = &overlay {
            // Valid: checked when read.
            let _ = overlay.apply(cfg);
        }
    })
}

fn start_cluster(common: &Common, tune: &dyn Fn(&mut StoreConfig)) -> Result<Cluster, String> {
    let overlay = overlay_tune(common.store_config.as_deref())?;
    // The workload's own settings (split sizes) win over the overlay.
    let tune = |cfg: &mut StoreConfig| {
        overlay(cfg);
        tune(cfg);
    };
    let tune: &dyn Fn(&mut StoreConfig) = &tune;
    if let Some(pd) = &common.pd {
        return Ok(Cluster {
            pd: pd.clone(),
            _own: None,
        });
    }
    let _ = std::fs::remove_dir_all(&common.cluster_dir);
    println!(
        "starting a 3-store cluster under {}",
        common.cluster_dir.display()
    );
    let playground = Playground::start(
        &PlaygroundOptions {
            dir: common.cluster_dir.clone(),
            stores: 3,
            port_offset: common.port_offset,
            store_config: None,
        },
        tune,
    )?;
    Ok(Cluster {
        pd: playground.pd.clone(),
        _own: Some(playground),
    })
}

/// Waits until every region has three voters and a leader, and no operator runs.
async fn wait_replicated(admin: &client::Client, regions: usize) -> Result<(), String> {
    crate::playground::wait_replicated(admin, regions, 3, Duration::from_secs(120)).await
}

fn kv_key(i: u64) -> Vec<u8> {
    format!("bench-{i:012}").into_bytes()
}

/// Zipfian ranks over `0..n` (YCSB's generator, theta 0.99), scattered over the key space so
/// the hot keys do not all sit in one region.
struct Zipf {
    perm: Vec<u64>,
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64) -> Zipf {
        let theta = 0.99;
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2);
        let mut perm: Vec<u64> = (0..n).collect();
        rand::seq::SliceRandom::shuffle(&mut perm[..], &mut rand::rngs::StdRng::seed_from_u64(7));
        Zipf {
            perm,
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        let rank = if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1
        } else {
            (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        // Scatter: rank r lands on a pseudo-random key (a fixed permutation, so every key
        // can be drawn and the hot ones are spread over the regions).
        self.perm[rank.min(self.n - 1) as usize]
    }
}

async fn connect(common: &Common, pd: Option<&str>) -> Result<Driver, String> {
    match common.target {
        Target::Regionstore => {
            let config = client::ClientConfig {
                keyspace: common.keyspace.clone(),
                batch_commands: !common.no_batch_commands,
                ..Default::default()
            };
            Driver::regionstore(pd.unwrap_or("127.0.0.1:2379"), config).await
        }
        Target::Etcd => Driver::etcd(&common.etcd).await,
    }
}

fn progress(common: &Common, secs: u64) -> indicatif::ProgressBar {
    if common.quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(secs);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Samples `rec` once a second until `done`, for at most `secs` seconds; `regions` reads the
/// cluster's region count when there is one.
async fn sample(
    rec: &Recorder,
    driver: &Driver,
    admin: Option<&client::Client>,
    secs: u64,
    bar: &indicatif::ProgressBar,
    stop_at_regions: Option<u64>,
) -> Vec<Sample> {
    let start = Instant::now();
    let mut samples = Vec::new();
    let (mut last_ops, mut last_errors, mut last_retries) =
        (rec.ops(), rec.errors(), driver.retries());
    let mut last = start;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A slow second (a stalled region lookup) must not be followed by a burst of short ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    for _ in 0..secs {
        tick.tick().await;
        let now = Instant::now();
        let h = rec.take_interval();
        let ops = rec.ops();
        let mut s = Sample::new(
            now.duration_since(start).as_secs_f64(),
            ops - last_ops,
            now.duration_since(last).as_secs_f64(),
            &h,
        );
        let (errors, retries) = (rec.errors(), driver.retries());
        s.errors = errors - last_errors;
        s.retries = retries - last_retries;
        if let Some(admin) = admin {
            s.regions = admin.regions().await.ok().map(|r| r.len() as u64);
        }
        (last_ops, last_errors, last_retries, last) = (ops, errors, retries, now);
        bar.inc(1);
        bar.set_message(format!(
            "{:.0} ops/s  p99 {:.1} ms{}{}",
            s.ops_per_sec,
            s.p99_us as f64 / 1000.0,
            s.regions
                .map(|r| format!("  regions {r}"))
                .unwrap_or_default(),
            if rec.errors() > 0 {
                format!("  errors {}", rec.errors())
            } else {
                String::new()
            }
        ));
        let done = stop_at_regions.is_some_and(|n| s.regions.unwrap_or(0) >= n);
        samples.push(s);
        if done {
            break;
        }
    }
    bar.finish();
    samples
}

/// The whole measured window: the sampled seconds only (ops, errors and retries after the
/// last sample are not counted), throughput as operations over elapsed time.
fn summarize(rec: &Recorder, samples: &[Sample]) -> Summary {
    let total = rec.total();
    let duration = samples.last().map_or(0.0, |s| s.t);
    Summary {
        duration_secs: duration,
        ops: total.len(),
        ops_per_sec: total.len() as f64 / duration.max(1e-9),
        p50_us: total.value_at_quantile(0.50),
        p99_us: total.value_at_quantile(0.99),
        p999_us: total.value_at_quantile(0.999),
        max_us: total.max(),
        errors: samples.iter().map(|s| s.errors).sum(),
        retries: samples.iter().map(|s| s.retries).sum(),
        ..Default::default()
    }
}

async fn run_kv(args: KvArgs) -> Result<(), String> {
    let common = &args.common;
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err("--read-ratio must be within 0.0..=1.0".into());
    }
    if args.keys == 0 || common.concurrency == 0 {
        return Err("--keys and --concurrency must be positive".into());
    }
    if args.regions as u64 > args.keys {
        return Err("--regions must not exceed --keys (split points are keys)".into());
    }
    let cluster = match common.target {
        Target::Regionstore => Some(start_cluster(common, &|_| {})?),
        Target::Etcd => None,
    };
    let driver = connect(common, cluster.as_ref().map(|c| c.pd.as_str())).await?;
    if let (Some(cluster), Driver::Regionstore(admin)) = (&cluster, &driver) {
        if cluster._own.is_some() && args.regions > 1 {
            // Even split points over the key space, then wait for replicas and leaders.
            wait_replicated(admin, 1).await?;
            // Counted from what the cluster starts with: five regions under API V2 (the
            // keyspace boundaries), one otherwise.
            let base = admin.regions().await.map(|r| r.len()).unwrap_or(1);
            for i in 1..args.regions as u64 {
                let at = kv_key(args.keys * i / args.regions as u64);
                let op = admin
                    .split(at)
                    .await
                    .map_err(|e| format!("pre-split: {e}"))?;
                admin
                    .wait_operator(&op, Duration::from_secs(30))
                    .await
                    .map_err(|e| format!("pre-split: {e}"))?;
                let want = base + i as usize;
                let deadline = Instant::now() + Duration::from_secs(30);
                while admin.regions().await.map(|r| r.len()).unwrap_or(0) < want {
                    if Instant::now() > deadline {
                        return Err(format!("pre-split: region {want} did not appear"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            wait_replicated(admin, args.regions).await?;
            // Let leader balancing spread the leaders.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    // Where the leaders are when the run starts (recorded with the results).
    let mut leaders_per_store = std::collections::BTreeMap::<u64, u64>::new();
    if let Driver::Regionstore(admin) = &driver {
        for r in admin.regions().await.unwrap_or_default() {
            if let Some(l) = r.leader {
                *leaders_per_store.entry(l.store_id).or_default() += 1;
            }
        }
    }
    let value = vec![b'v'; common.value_size];
    if args.read_ratio > 0.0 {
        println!("loading {} keys", args.keys);
        let next = Arc::new(AtomicU64::new(0));
        let mut loaders = Vec::new();
        for w in 0..common.concurrency.min(16) {
            let (driver, next, value, keys) =
                (driver.clone(), next.clone(), value.clone(), args.keys);
            loaders.push(tokio::spawn(async move {
                loop {
                    let start = next.fetch_add(256, Ordering::Relaxed);
                    if start >= keys {
                        return Ok::<(), String>(());
                    }
                    let pairs = (start..(start + 256).min(keys))
                        .map(|i| (kv_key(i), value.clone()))
                        .collect();
                    driver.load(w, pairs).await?;
                }
            }));
        }
        for l in loaders {
            l.await.map_err(|e| format!("loader: {e}"))??;
        }
    }
    let rec = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let zipf = Arc::new(Zipf::new(args.keys));
    let mut workers = Vec::new();
    for w in 0..common.concurrency {
        let (driver, rec, stop, zipf, value) = (
            driver.clone(),
            rec.clone(),
            stop.clone(),
            zipf.clone(),
            value.clone(),
        );
        let (keys, read_ratio, dist) = (args.keys, args.read_ratio, args.distribution);
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_entropy();
            while !stop.load(Ordering::Relaxed) {
                let i = match dist {
                    Distribution::Uniform => rng.gen_range(0..keys),
                    Distribution::Zipfian => zipf.next(&mut rng),
                };
                let start = Instant::now();
                let result = if rng.gen_bool(read_ratio) {
                    driver.get(w, kv_key(i)).await.map(|_| ())
                } else {
                    driver.put(w, kv_key(i), value.clone()).await
                };
                match result {
                    Ok(()) => rec.ok(start.elapsed()),
                    Err(e) => {
                        rec.error(e);
                        // Failing fast in a loop would only burn the cores the servers need.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    // Warm-up, not measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rec.reset();
    let bar = progress(common, args.duration_secs);
    let samples = sample(&rec, &driver, None, args.duration_secs, &bar, None).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let summary = summarize(&rec, &samples);
    let name = common
        .name
        .clone()
        .unwrap_or_else(|| format!("kv-{}", driver.target()));
    let report = RunReport {
        name,
        workload: "kv".into(),
        target: driver.target().into(),
        settings: serde_json::json!({
            "concurrency": common.concurrency,
            "value_size": common.value_size,
            "keys": args.keys,
            "read_ratio": args.read_ratio,
            "distribution": args.distribution,
            "duration_secs": args.duration_secs,
            "regions": if common.target == Target::Regionstore && common.pd.is_none() {
                Some(args.regions)
            } else {
                None
            },
            "leaders_per_store": leaders_per_store,
            "etcd": common.etcd,
        }),
        machine: report::machine(),
        summary,
        samples,
    };
    report.print_summary();
    if let Some(e) = rec.last_error() {
        println!("  last error: {e}");
    }
    report.write(&common.out)
}

/// One run of the sequential-write workload on a fresh cluster with `split_size`: until
/// `stop_regions` regions (if any) or `secs` seconds.
struct SplitPhase {
    samples: Vec<Sample>,
    summary: Summary,
    last_error: Option<String>,
}

async fn split_phase(
    common: &Common,
    split_size: u64,
    stop_regions: Option<u64>,
    secs: u64,
) -> Result<SplitPhase, String> {
    let cluster = start_cluster(common, &|cfg| {
        cfg.raftstore.region_split_size = split_size;
        cfg.raftstore.region_max_size = split_size / 2 * 3;
        if split_size >= 1 << 40 {
            // The baseline: no split by key count either.
            cfg.raftstore.region_split_keys = u64::MAX / 4;
            cfg.raftstore.region_max_keys = u64::MAX / 2;
        }
        cfg.raftstore.split_region_check_tick_interval_ms = 1000;
    })?;
    let driver = connect(common, Some(&cluster.pd)).await?;
    let Driver::Regionstore(admin) = &driver else {
        return Err("the split workload needs a regionstore cluster".into());
    };
    let admin = admin.clone();
    wait_replicated(&admin, 1).await?;
    let regions_start = admin.regions().await.map(|r| r.len() as u64).unwrap_or(0);
    let value = vec![b'v'; common.value_size];
    let rec = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..common.concurrency {
        let (driver, rec, stop, next, value) = (
            driver.clone(),
            rec.clone(),
            stop.clone(),
            next.clone(),
            value.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let key = format!("split-{i:012}").into_bytes();
                match driver.put(w, key, value.clone()).await {
                    Ok(()) => rec.ok(start.elapsed()),
                    Err(e) => {
                        rec.error(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    let bar = progress(common, secs);
    let samples = sample(&rec, &driver, Some(&admin), secs, &bar, stop_regions).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let mut summary = summarize(&rec, &samples);
    summary.regions_start = Some(regions_start);
    summary.regions_end = samples.last().and_then(|s| s.regions);
    Ok(SplitPhase {
        samples,
        summary,
        last_error: rec.last_error(),
    })
}

async fn run_split(args: SplitArgs) -> Result<(), String> {
    let common = &args.common;
    if common.target != Target::Regionstore {
        return Err("the split workload runs against regionstore only".into());
    }
    let split_size = args.split_size_kib << 10;
    println!(
        "splitting run: until {} regions or {} s",
        args.regions, args.duration_secs
    );
    let splitting = split_phase(common, split_size, Some(args.regions), args.duration_secs).await?;
    let mut summary = splitting.summary.clone();
    // The baseline, side by side: the same workload for as long on a fresh cluster whose
    // regions never split. Only for a cluster the bench starts itself.
    if common.pd.is_none() {
        let secs = splitting.summary.duration_secs.ceil().max(1.0) as u64;
        println!("baseline run: {secs} s without splits");
        let steady = split_phase(common, 1 << 40, None, secs).await?;
        summary.splitting_ops_per_sec = Some(splitting.summary.ops_per_sec);
        summary.steady_ops_per_sec = Some(steady.summary.ops_per_sec);
        summary.splitting_ratio = (steady.summary.ops_per_sec > 0.0)
            .then(|| splitting.summary.ops_per_sec / steady.summary.ops_per_sec);
        let baseline = RunReport {
            name: format!(
                "{}-baseline",
                common
                    .name
                    .clone()
                    .unwrap_or_else(|| "split-regionstore".into())
            ),
            workload: "split (baseline, no splits)".into(),
            target: "regionstore".into(),
            settings: serde_json::json!({
                "concurrency": common.concurrency,
                "value_size": common.value_size,
                "duration_secs": secs,
            }),
            machine: report::machine(),
            summary: steady.summary,
            samples: steady.samples,
        };
        baseline.print_summary();
        baseline.write(&common.out)?;
    }
    let report = RunReport {
        name: common
            .name
            .clone()
            .unwrap_or_else(|| "split-regionstore".into()),
        workload: "split".into(),
        target: "regionstore".into(),
        settings: serde_json::json!({
            "concurrency": common.concurrency,
            "value_size": common.value_size,
            "regions": args.regions,
            "duration_secs": args.duration_secs,
            "split_size_kib": if common.pd.is_none() { Some(args.split_size_kib) } else { None },
        }),
        machine: report::machine(),
        summary,
        samples: splitting.samples,
    };
    report.print_summary();
    if let Some(e) = splitting.last_error {
        println!("  last error: {e}");
    }
    report.write(&common.out)
}
