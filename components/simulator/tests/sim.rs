//! Seeds of the simulation: the regression seeds and fresh ones must pass, a seed must replay
//! exactly, and a planted bug must be caught. `SIM_SEEDS` sets how many fresh seeds run
//! (`make test-long`: 2,000); `SIM_SEED` the first (default: the clock, printed).

use simulator::{run, SimConfig, TEST_SEEDS};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn the_seeds_that_once_failed_pass() {
    for (seed, duration_ms, what) in TEST_SEEDS {
        let cfg = SimConfig {
            duration_ms: *duration_ms,
            ..SimConfig::default()
        };
        let report = run(*seed, &cfg, &logger()).expect("simulation runs");
        assert!(
            report.passed(),
            "seed {seed} ({what}) fails again: {:#?}",
            report.failures
        );
    }
}

#[test]
fn fresh_seeds_pass() {
    let count = env("SIM_SEEDS").unwrap_or(60);
    let first = env("SIM_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    });
    let cfg = SimConfig {
        duration_ms: 5_000,
        ..SimConfig::default()
    };
    eprintln!("seeds {first}..{}", first.wrapping_add(count));
    let mut events = 0;
    for seed in (0..count).map(|i| first.wrapping_add(i)) {
        let report = run(seed, &cfg, &logger()).expect("simulation runs");
        assert!(
            report.passed(),
            "seed {seed} failed: {:#?}\nevents: {:?}\nreplay: regionstore sim --seeds 1 --seed \
             {seed} --duration-ms 5000 --verbose",
            report.failures,
            report.events
        );
        assert!(report.workload.ok > 100, "seed {seed}: the workload ran");
        events += report.events.len();
    }
    assert!(events as u64 > count * 3, "faults and operators happened");
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = SimConfig {
        duration_ms: 4_000,
        ..SimConfig::default()
    };
    for seed in [11, 12] {
        let first = run(seed, &cfg, &logger()).expect("simulation runs");
        let second = run(seed, &cfg, &logger()).expect("simulation runs");
        assert!(!first.events.is_empty());
        assert_eq!(first.fingerprint, second.fingerprint, "seed {seed}");
        assert_eq!(
            format!("{:?}", first.events),
            format!("{:?}", second.events)
        );
    }
}

#[test]
fn a_lying_fsync_is_caught() {
    let cfg = SimConfig {
        duration_ms: 5_000,
        lying_fsync: true,
        ..SimConfig::default()
    };
    let caught = (100..110)
        .filter(|seed| !run(*seed, &cfg, &logger()).expect("runs").passed())
        .count();
    assert!(
        caught >= 5,
        "only {caught} of 10 seeds caught the planted bug"
    );
}
