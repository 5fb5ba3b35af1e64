//! `regionstore ctl`: reads, writes and administration of a running cluster, through the
//! `client` crate (region cache, retries) and the scheduler's operator RPCs.

use std::time::Duration;

use std::future::Future;

use client::{Client, ClientConfig, Operator, TransactionClient, TxnOptions, TxnStatus};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The scheduler's endpoint (PD-compatible), host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub pd: String,
    /// Work in this keyspace (a cluster of API version 2), e.g. DEFAULT: keys are the
    /// keyspace's, and `regions` shows decoded boundaries.
    #[arg(long)]
    pub keyspace: Option<String>,
    /// Give up on a request after this many seconds of retries.
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
    /// Operators (split, transfer-leader, add-peer, remove-peer): return once the scheduler
    /// accepted it, without waiting for it to finish (`ctl operators` shows its progress).
    #[arg(long, global = true)]
    pub no_wait: bool,
    /// Operators: how long to wait for the region's running operator to end, and then for
    /// this one to finish.
    #[arg(long, global = true, default_value_t = 120)]
    pub wait_secs: u64,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CtlCommand {
    /// Write one key; `--ttl SECS` makes it expire (API version 1ttl or 2 clusters).
    Put {
        key: String,
        value: String,
        #[arg(long, default_value_t = 0)]
        ttl: u64,
    },
    /// Seconds a key has left to live (0: never expires), or "(not found)".
    Ttl { key: String },
    /// Read one key (prints the value, or "(not found)").
    Get { key: String },
    /// Delete one key.
    Delete { key: String },
    /// List keys in [start, end) (empty end: to the end of the key space, or of the keyspace
    /// with --keyspace).
    Scan {
        #[arg(default_value = "")]
        start: String,
        #[arg(default_value = "")]
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The routing table: every region with its range, epoch, peers and leader.
    Regions,
    /// Every store with its address.
    Stores,
    /// Split the region holding `key` at `key`.
    Split { key: String },
    /// Move a region's leadership to its peer on a store.
    TransferLeader { region_id: u64, store_id: u64 },
    /// Add a voter of a region on a store (a learner first, promoted once caught up).
    AddPeer { region_id: u64, store_id: u64 },
    /// Remove a region's peer from a store.
    RemovePeer { region_id: u64, store_id: u64 },
    /// Running operators, then recent ended ones.
    Operators,
    /// Keyspaces (API version 2 clusters).
    #[command(subcommand)]
    Keyspace(KeyspaceCommand),
    /// Transactional reads and writes, and what transactions left behind.
    #[command(subcommand)]
    Txn(TxnCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum TxnCommand {
    /// Read one key in a transaction at a fresh timestamp.
    Get { key: String },
    /// Write one key in a transaction (two-phase commit); prints the commit ts.
    Put { key: String, value: String },
    /// Locks in [start, end) (empty end: to the end) taken at or below now.
    Locks {
        #[arg(default_value = "")]
        start: String,
        #[arg(default_value = "")]
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The cluster's GC safe point.
    GcSafepoint,
    /// What became of the transaction started at `start_ts` with primary key `primary`.
    Status { start_ts: u64, primary: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyspaceCommand {
    /// Create a keyspace; regions split at its boundaries within a heartbeat or two.
    Create { name: String },
    /// Every keyspace with its id.
    List,
}

fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => format!(
            "0x{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

fn bound(bytes: &[u8], open: &str) -> String {
    if bytes.is_empty() {
        open.to_string()
    } else {
        format!("{:?}", show(bytes))
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let config = ClientConfig {
            max_retry_time: Duration::from_secs(args.timeout_secs),
            keyspace: args.keyspace.clone(),
            ..Default::default()
        };
        if let CtlCommand::Txn(command) = args.command {
            let client = TransactionClient::connect(std::slice::from_ref(&args.pd), config)
                .await
                .map_err(|e| e.to_string())?;
            return execute_txn(&client, command)
                .await
                .map_err(|e| e.to_string());
        }
        let client = Client::connect(std::slice::from_ref(&args.pd), config)
            .await
            .map_err(|e| e.to_string())?;
        let wait = (!args.no_wait).then(|| Duration::from_secs(args.wait_secs));
        execute(&client, args.command, wait)
            .await
            .map_err(|e| e.to_string())
    })
}

/// `ts` as TSO parts: physical milliseconds (as a UTC time) and the logical counter.
fn show_ts(ts: u64) -> String {
    format!(
        "{ts} (physical {} ms, logical {})",
        ts >> 18,
        ts & ((1 << 18) - 1)
    )
}

async fn execute_txn(client: &TransactionClient, command: TxnCommand) -> client::Result<()> {
    match command {
        TxnCommand::Get { key } => {
            let mut t = client.begin(TxnOptions::optimistic()).await?;
            match t.get(key).await? {
                Some(v) => println!("{}", show(&v)),
                None => println!("(not found)"),
            }
            t.rollback().await?;
        }
        TxnCommand::Put { key, value } => {
            let mut t = client.begin(TxnOptions::optimistic()).await?;
            t.put(key, value).await?;
            let commit_ts = t.commit().await?;
            println!("committed at {}", show_ts(commit_ts));
        }
        TxnCommand::Locks { start, end, limit } => {
            let now = client.timestamp().await?;
            let locks = client
                .scan_locks(start.as_bytes(), end.as_bytes(), now, limit)
                .await?;
            for l in &locks {
                println!(
                    "key {:?} start_ts {} primary {:?} ttl {} ms type {:?}{}",
                    show(&l.key),
                    l.lock_version,
                    show(&l.primary_lock),
                    l.lock_ttl,
                    proto::kvrpcpb::Op::try_from(l.lock_type).unwrap_or(proto::kvrpcpb::Op::Put),
                    if l.use_async_commit {
                        " async-commit"
                    } else {
                        ""
                    }
                );
            }
            println!("{} lock(s)", locks.len());
        }
        TxnCommand::GcSafepoint => println!("{}", show_ts(client.gc_safe_point().await?)),
        TxnCommand::Status { start_ts, primary } => {
            match client.txn_status(primary.as_bytes(), start_ts).await? {
                TxnStatus::Committed { commit_ts } => {
                    println!("committed at {}", show_ts(commit_ts))
                }
                TxnStatus::RolledBack => println!("rolled back"),
                TxnStatus::Locked { ttl_ms, lock } => println!(
                    "locked: primary {:?}, ttl {ttl_ms} ms from its start, min_commit_ts {}",
                    show(&lock.primary_lock),
                    lock.min_commit_ts
                ),
            }
        }
    }
    Ok(())
}

async fn execute(
    client: &Client,
    command: CtlCommand,
    wait: Option<Duration>,
) -> client::Result<()> {
    match command {
        CtlCommand::Put { key, value, ttl } => {
            if ttl == 0 {
                client.put(key, value).await?;
            } else {
                client.put_with_ttl(key, value, ttl).await?;
            }
            println!("OK");
        }
        CtlCommand::Ttl { key } => match client.ttl(key).await? {
            Some(secs) => println!("{secs}"),
            None => println!("(not found)"),
        },
        CtlCommand::Get { key } => match client.get(key).await? {
            Some(value) => println!("{}", show(&value)),
            None => println!("(not found)"),
        },
        CtlCommand::Delete { key } => {
            client.delete(key).await?;
            println!("OK");
        }
        CtlCommand::Scan { start, end, limit } => {
            let pairs = client.scan(start, end, limit, false).await?;
            for (key, value) in &pairs {
                println!("{}\t{}", show(key), show(value));
            }
            println!("({} pairs)", pairs.len());
        }
        CtlCommand::Regions => {
            let regions = client.regions().await?;
            println!(
                "{:<8} {:<20} {:<20} {:<10} {:<10} peers (id@store, * = leader)",
                "region", "start", "end", "conf_ver", "version"
            );
            for info in &regions {
                let r = &info.region;
                let epoch = r.region_epoch.unwrap_or_default();
                let peers: Vec<String> = r
                    .peers
                    .iter()
                    .map(|p| {
                        let leader = info.leader.is_some_and(|l| l.id == p.id);
                        let learner = p.role() == proto::metapb::PeerRole::Learner;
                        format!(
                            "{}@{}{}{}",
                            p.id,
                            p.store_id,
                            if leader { "*" } else { "" },
                            if learner { "(learner)" } else { "" }
                        )
                    })
                    .collect();
                println!(
                    "{:<8} {:<20} {:<20} {:<10} {:<10} {}",
                    r.id,
                    bound(&r.start_key, "-inf"),
                    bound(&r.end_key, "+inf"),
                    epoch.conf_ver,
                    epoch.version,
                    peers.join(" ")
                );
            }
            println!("({} regions)", regions.len());
        }
        CtlCommand::Stores => {
            for store in client.stores().await? {
                println!("store {:<6} {}", store.id, store.address);
            }
        }
        CtlCommand::Split { key } => {
            let region_id = client.region_of(key.as_bytes()).await?;
            operate(client, region_id, wait, || client.split(key.clone())).await?
        }
        CtlCommand::TransferLeader {
            region_id,
            store_id,
        } => {
            let op = || client.transfer_leader(region_id, store_id);
            operate(client, region_id, wait, op).await?
        }
        CtlCommand::AddPeer {
            region_id,
            store_id,
        } => {
            let op = || client.add_peer(region_id, store_id);
            operate(client, region_id, wait, op).await?
        }
        CtlCommand::RemovePeer {
            region_id,
            store_id,
        } => {
            let op = || client.remove_peer(region_id, store_id);
            operate(client, region_id, wait, op).await?
        }
        CtlCommand::Keyspace(KeyspaceCommand::Create { name }) => {
            let ks = client.create_keyspace(&name).await?;
            println!("keyspace {:?} created with id {}", ks.name, ks.id);
        }
        CtlCommand::Keyspace(KeyspaceCommand::List) => {
            for ks in client.keyspaces().await? {
                println!("keyspace {:<8} {}", ks.id, ks.name);
            }
        }
        CtlCommand::Txn(_) => {
            return Err(client::Error::InvalidArgument {
                op: "ctl txn",
                reason: "needs a transactional client".into(),
            })
        }
        CtlCommand::Operators => {
            for op in client.operators().await? {
                println!(
                    "region {:<6} {:<14} {:<10} step {}/{} age {} ms: {}",
                    op.region_id, op.kind, op.state, op.step, op.steps, op.age_ms, op.description
                );
            }
        }
    }
    Ok(())
}

/// Submits an operator on `region_id` and, unless `wait` is `None`, first waits for the
/// region's running operator to end (the scheduler runs one per region) and then for this one
/// to finish.
async fn operate<F: Future<Output = client::Result<Operator>>>(
    client: &Client,
    region_id: u64,
    wait: Option<Duration>,
    submit: impl Fn() -> F,
) -> client::Result<()> {
    let Some(wait) = wait else {
        println!(
            "{}: submitted (ctl operators shows its progress)",
            submit().await?
        );
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + wait;
    let op = loop {
        client.wait_region_idle(region_id, wait).await?;
        match submit().await {
            // A checker of the scheduler's own started one in between: wait for it too.
            Err(e)
                if e.to_string().contains("already has an operator")
                    && tokio::time::Instant::now() < deadline => {}
            other => break other?,
        }
    };
    println!("{op}: submitted");
    client.wait_operator(&op, wait).await?;
    println!("{op}: finished");
    Ok(())
}
