//! The `regionstore` binary. Subcommands (store, scheduler, playground, ctl, bench) are added by
//! the issues that implement them; today it reports its version and what it contains.

use clap::{CommandFactory, Parser};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// regionstore: a multi-raft region store engine.
///
/// The key space is cut into regions, each replicated by its own Raft group across stores; a
/// placement scheduler moves replicas and leaders, and regions split as they grow.
#[derive(Parser, Debug)]
#[command(name = "regionstore", version, about, long_about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    // No subcommand exists yet: say what there is instead of exiting silently.
    let mut cmd = Cli::command();
    let _ = cmd.print_long_help();
    println!();
    println!("{}", regionstore::status());
}
