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
    /// with a build that has the store's failpoints, `lease-read-without-lease`,
    /// `skip-epoch-check-at-apply`, `skip-compact-log-sync` and `release-cas-latch-early`.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Plant::ALL.map(Plant::name)))]
    pub plant: Option<String>,
    /// Where a failing seed's artifacts go: its history and fault schedule as JSON, and a
    /// timeline (SVG) of each history the linearizability check refused.
    #[arg(long, default_value = "sim-failures")]
    pub artifacts: std::path::PathBuf,
    /// Print every seed's faults and operations.
    #[arg(long)]
    pub verbose: bool,
    /// Stores' logs to stderr (very verbose; use with one seed).
    #[arg(long)]
    pub log: bool,
    /// A TOML file with a `[raftstore]` table laid over the simulation's store settings
    /// (keys as in `regionstore store --print-default-config`), e.g. to count instructions
    /// with and without a setting on the same schedule.
    #[arg(long)]
    pub store_config: Option<std::path::PathBuf>,
}

/// The `[raftstore]` table of `path`, as a change to the simulation's store settings.
fn store_tune(path: &std::path::Path) -> Result<simulator::StoreTune, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut file: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let raftstore = match file.remove("raftstore") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(format!("{}: raftstore must be a table", path.display())),
        None => toml::Table::new(),
    };
    if let Some(other) = file.keys().next() {
        return Err(format!(
            "{}: only [raftstore] settings apply to a simulation, not {other:?}",
            path.display()
        ));
    }
    let shown = path.display().to_string();
    let tune = move |cfg: &mut raftstore::Config| -> Result<(), String> {
        let mut value = toml::Value::try_from(&*cfg).map_err(|e| e.to_string())?;
        if let toml::Value::Table(base) = &mut value {
            base.extend(raftstore.clone());
        }
        *cfg = value.try_into().map_err(|e| format!("{shown}: {e}"))?;
        cfg.validate().map_err(|e| format!("{shown}: {e}"))
    };
    // Checked once before any seed runs, against the settings of both kinds of seed.
    for hibernate in [false, true] {
        tune(&mut simulator::store_config(hibernate))?;
    }
    Ok(simulator::StoreTune {
        apply: std::sync::Arc::new(tune),
        source: path.display().to_string(),
    })
}

pub fn run(args: Args) -> Result<(), String> {
    let cfg = SimConfig {
        stores: args.stores,
        clients: args.clients,
        duration_ms: args.duration_ms,
        faults: !args.no_faults,
        plant: args.plant.as_deref().and_then(Plant::from_name),
        tune: args.store_config.as_deref().map(store_tune).transpose()?,
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
                tune: cfg.tune.clone(),
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
            let bank = &report.bank;
            println!(
                "seed {seed}: {} ops ok, {} failed, {} unknown; transfers {} committed, {} \
                 aborted, {} unknown, {} audits; {} regions; {} events",
                report.workload.ok,
                report.workload.failed,
                report.workload.unknown,
                bank.committed,
                bank.aborted,
                bank.unknown,
                bank.audits,
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
            match simulator::write_artifacts(&args.artifacts, &report, &replay(*seed, cfg)) {
                Ok(paths) => {
                    for path in paths {
                        println!("seed {seed}: wrote {}", path.display());
                    }
                }
                Err(e) => println!(
                    "seed {seed}: could not write artifacts to {}: {e}",
                    args.artifacts.display()
                ),
            }
            failed.push((*seed, cfg.clone()));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let virtual_secs: u64 = seeds.iter().map(|(_, cfg)| cfg.duration_ms).sum::<u64>() / 1000;
    println!(
        "{} seeds in {wall:.1} s ({} virtual s each): {} failed; {:.1} seeds/s, {:.0} virtual s \
         per wall s",
        seeds.len(),
        cfg.duration_ms as f64 / 1000.0,
        failed.len(),
        seeds.len() as f64 / wall.max(1e-9),
        virtual_secs as f64 / wall.max(1e-9),
    );
    if failed.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = failed.iter().map(|(s, cfg)| replay(*s, cfg)).collect();
    Err(format!(
        "failing seeds; replay with:\n  {}",
        lines.join("\n  ")
    ))
}

/// The command that replays `seed` under `cfg`.
fn replay(seed: u64, cfg: &SimConfig) -> String {
    format!(
        "regionstore sim --seeds 1 --seed {seed} --duration-ms {} --stores {} --clients {}{}{}{} \
         --verbose",
        cfg.duration_ms,
        cfg.stores,
        cfg.clients,
        if cfg.faults { "" } else { " --no-faults" },
        cfg.plant
            .map(|p| format!(" --plant {}", p.name()))
            .unwrap_or_default(),
        cfg.tune
            .as_ref()
            .map(|t| format!(" --store-config {}", t.source))
            .unwrap_or_default()
    )
}
