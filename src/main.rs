//! The `regionstore` binary: `scheduler`, `store`, `playground`, `ctl`, `bench` and `sim`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use regionstore::{bench, config, ctl, playground, scheduler, sim, store};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// regionstore: a multi-raft region store engine.
///
/// The key space is cut into regions, each replicated by its own Raft group across stores; a
/// placement scheduler moves replicas and leaders, and regions split as they grow. Clients
/// speak TiKV's RawKV protocol: the tikv-client crate works unmodified.
#[derive(Parser, Debug)]
#[command(name = "regionstore", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the placement scheduler (serves pdpb.PD to clients and stores).
    Scheduler {
        /// TOML config file; missing keys take their defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the default config, every field documented, and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// Run one store.
    Store {
        /// TOML config file; missing keys take their defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the default config, every field documented, and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// Start a scheduler and stores on loopback, each its own process; Ctrl-C stops them.
    Playground {
        /// Where configs, data and logs go; reused by the next run.
        #[arg(long, default_value = "regionstore-playground")]
        dir: PathBuf,
        /// How many stores.
        #[arg(long, default_value_t = 3)]
        stores: usize,
        /// Added to every port (scheduler 2379, stores 20160+i, status ports 2381 and
        /// 20180+i), to run more than one playground: a multiple of 100, at most 40000.
        #[arg(long, default_value_t = 0)]
        port_offset: u16,
        /// A TOML file of store settings laid over the playground's (any keys of `regionstore
        /// store --print-default-config`, e.g. api-version = "2"); the playground keeps its
        /// own data dirs, addresses and log files.
        #[arg(long)]
        store_config: Option<PathBuf>,
    },
    /// Talk to a running cluster: reads, writes and administration.
    Ctl(ctl::Args),
    /// Benchmarks: `kv` and `split` workloads against regionstore or etcd, and `compare`.
    Bench(bench::Args),
    /// Deterministic simulation: whole clusters in one thread under seeded faults, each seed
    /// judged by the linearizability checker and replayable exactly.
    Sim(sim::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scheduler {
            print_default_config: true,
            ..
        } => {
            print!(
                "{}",
                config::annotated(
                    "scheduler",
                    "regionstore scheduler config (regionstore scheduler --config FILE)",
                    &config::SchedulerConfig::default()
                )
            );
            Ok(())
        }
        Command::Store {
            print_default_config: true,
            ..
        } => {
            print!(
                "{}",
                config::annotated(
                    "store",
                    "regionstore store config (regionstore store --config FILE)",
                    &config::StoreConfig::default()
                )
            );
            Ok(())
        }
        Command::Scheduler { config: path, .. } => path
            .map_or_else(|| Ok(Default::default()), |p| config::load(&p))
            .and_then(scheduler::run),
        Command::Store { config: path, .. } => path
            .map_or_else(|| Ok(Default::default()), |p| config::load(&p))
            .and_then(store::run),
        Command::Playground {
            dir,
            stores,
            port_offset,
            store_config,
        } => playground::run(playground::Options {
            dir,
            stores,
            port_offset,
            store_config,
        }),
        Command::Ctl(args) => ctl::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Sim(args) => sim::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
