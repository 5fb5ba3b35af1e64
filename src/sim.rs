//! `regionstore sim`: runs seeds of the deterministic simulator (`components/simulator`) and
//! says which failed, with the line that replays each.

use std::time::Instant;

use simulator::{Plant, SimConfig, TEST_SEEDS};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many seeds to run, from `--seed` up (a failing seed replays with `--seeds 1`).
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// The first seed (default: the clock, so each run explores new schedules).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Virtual milliseconds of faults and workload per seed, before the final heal.
    #[arg(long, default_value_t = 30_000)]
    pub duration_ms: u64,
    #[arg(long, default_value_t = 4)]
    pub stores: u64,
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Run without faults (a baseline).
    #[arg(long)]
    pub no_faults: bool,
    /// Run each seed twice and fail if the runs differ (determinism check).
    #[arg(long)]
    pub check_replay: bool,
    /// Also run the seeds that once failed (`components/simulator/src/seeds.rs`).
    #[arg(long)]
    pub regressions: bool,
    /// Plant a bug to see the simulator catch it: `lying-fsync` (the raft logs' fsync makes
    /// nothing durable), `unknown-as-refused` (writes of unknown outcome taken as refused);
    /// with a build that has the store's failpoints, `lease-read-without-lease` and
    /// `skip-epoch-check-at-apply`.
    #[arg(long, value_parser = ["lying-fsync", "unknown-as-refused", "lease-read-without-lease", "skip-epoch-check-at-apply"])]
    pub plant: Option<String>,
    /// Print every seed's faults and operations.
    #[arg(long)]
    pub verbose: bool,
    /// Stores' logs to stderr (very verbose; use with one seed).
    #[arg(long)]
    pub log: bool,
}

pub fn run(args: Args) -> Result<(), String> {
    let cfg = SimConfig {
        stores: args.stores,
        clients: args.clients,
        duration_ms: args.duration_ms,
        faults: !args.no_faults,
        plant: match args.plant.as_deref() {
            Some("lying-fsync") => Some(Plant::LyingFsync),
            Some("lease-read-without-lease") => Some(Plant::LeaseReadWithoutLease),
            Some("skip-epoch-check-at-apply") => Some(Plant::SkipEpochCheckAtApply),
            Some(_) => Some(Plant::UnknownReportedAsRefused),
            None => None,
        },
        ..SimConfig::default()
    };
    let logger = if args.log {
        use slog::Drain;
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        slog::Logger::root(
            slog_term::FullFormat::new(decorator).build().fuse(),
            slog::o!(),
        )
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    };
    let first = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    // (seed, its config)
    let mut seeds: Vec<(u64, SimConfig)> = Vec::new();
    if args.regressions {
        seeds.extend(TEST_SEEDS.iter().map(|(seed, duration_ms, _)| {
            let cfg = SimConfig {
                duration_ms: *duration_ms,
                ..SimConfig::default()
            };
            (*seed, cfg)
        }));
    }
    seeds.extend((0..args.seeds).map(|i| (first.wrapping_add(i), cfg.clone())));
    let started = Instant::now();
    let mut failed = Vec::new();
    for (seed, cfg) in &seeds {
        let report =
            simulator::run(*seed, cfg, &logger).map_err(|e| format!("seed {seed}: {e}"))?;
        let mut problems = report.failures.clone();
        if args.check_replay {
            let again =
                simulator::run(*seed, cfg, &logger).map_err(|e| format!("seed {seed}: {e}"))?;
            if again.fingerprint != report.fingerprint {
                problems.push(format!(
                    "not deterministic: fingerprints {:x} and {:x}",
                    report.fingerprint, again.fingerprint
                ));
            }
        }
        if args.verbose || !problems.is_empty() {
            println!(
                "seed {seed}: {} ops ok, {} failed, {} unknown; {} regions; {} events",
                report.workload.ok,
                report.workload.failed,
                report.workload.unknown,
                report.regions,
                report.events.len()
            );
            for (at, event) in &report.events {
                println!("  {at:>6} ms  {event:?}");
            }
        }
        for problem in &problems {
            println!("seed {seed} FAILED: {problem}");
        }
        if !problems.is_empty() {
            failed.push((*seed, cfg.clone()));
        }
    }
    println!(
        "{} seeds in {:.1} s ({} virtual s each): {} failed",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        cfg.duration_ms as f64 / 1000.0,
        failed.len()
    );
    if failed.is_empty() {
        return Ok(());
    }
    let replay: Vec<String> = failed
        .iter()
        .map(|(s, cfg)| {
            format!(
                "regionstore sim --seeds 1 --seed {s} --duration-ms {} --stores {} --clients {}{} --verbose",
                cfg.duration_ms,
                cfg.stores,
                cfg.clients,
                if cfg.faults { "" } else { " --no-faults" }
            )
        })
        .collect();
    Err(format!(
        "failing seeds; replay with:\n  {}",
        replay.join("\n  ")
    ))
}
