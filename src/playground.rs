//! `regionstore playground`: a scheduler and N stores on loopback, each its own process (the
//! same `scheduler` and `store` commands an operator runs), with configs, data and logs under
//! one directory. Ctrl-C stops them all cleanly; running it again reuses the data.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use api_version::ApiVersion;

use crate::config::{SchedulerConfig, StoreConfig, StoreOverlay};

pub struct Options {
    pub dir: PathBuf,
    pub stores: usize,
    /// Added to every default port, to run several playgrounds on one machine.
    pub port_offset: u16,
    /// Store settings laid over the playground's (`--store-config`).
    pub store_config: Option<PathBuf>,
}

struct Process {
    name: String,
    child: Child,
}

fn write_config<T: serde::Serialize>(path: &Path, cfg: &T) -> Result<(), String> {
    let text = toml::to_string(cfg).map_err(|e| format!("encode {}: {e}", path.display()))?;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Starts `regionstore <args>` and waits for its "ready" line on stdout.
fn spawn(name: &str, args: &[&str], ready_timeout: Duration) -> Result<(Process, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    // A process group of its own: a terminal's Ctrl-C reaches only the playground, which then
    // stops the processes in order.
    let mut command = Command::new(exe);
    // SAFETY: prctl(2) in the child before exec touches no memory of the parent. If the
    // playground dies without stopping its children (killed, or Ctrl-C while starting up),
    // each child gets SIGTERM and stops cleanly rather than holding ports and data.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .process_group(0)
        .args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let stdout = child.stdout.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains(" ready on ") {
                let _ = tx.send(line);
            }
        }
    });
    let process = Process {
        name: name.to_string(),
        child,
    };
    match rx.recv_timeout(ready_timeout) {
        Ok(line) => Ok((process, line)),
        Err(_) => {
            let mut process = process;
            let _ = process.child.kill();
            let status = process.child.wait().ok();
            Err(format!(
                "{name} did not become ready within {ready_timeout:?} (exit: {status:?}); see its log"
            ))
        }
    }
}

fn terminate(processes: &mut Vec<Process>) {
    for p in processes.iter() {
        // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory involved.
        unsafe {
            libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in processes.iter_mut().rev() {
        loop {
            match p.child.try_wait() {
                Ok(Some(status)) => {
                    println!("{} stopped ({status})", p.name);
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    println!("{} did not stop in time: killing it", p.name);
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
            }
        }
    }
    processes.clear();
}

/// A running playground: its processes stop when it is dropped.
pub struct Playground {
    pub dir: PathBuf,
    /// The scheduler's (PD) endpoint.
    pub pd: String,
    processes: Vec<Process>,
}

impl Playground {
    /// Starts the scheduler and the stores, each store's config first changed by `tune`;
    /// returns once every process is serving.
    pub fn start(opts: &Options, tune: &dyn Fn(&mut StoreConfig)) -> Result<Playground, String> {
        if opts.stores == 0 || opts.stores > 9 {
            return Err("--stores must be 1..=9".into());
        }
        // Multiples of 100 keep two playgrounds' ports apart (a store's 20160+i never meets
        // another's status 20180+i), and the sums below fit a port number.
        if opts.port_offset % 100 != 0 || opts.port_offset > 40_000 {
            return Err(format!(
                "--port-offset must be a multiple of 100, at most 40000 (got {})",
                opts.port_offset
            ));
        }
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| format!("cannot create {}: {e}", opts.dir.display()))?;
        let dir = opts
            .dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", opts.dir.display()))?;
        let off = opts.port_offset;
        let sched_addr = format!("127.0.0.1:{}", 2379 + off);
        let sched_cfg = SchedulerConfig {
            data_dir: dir.join("scheduler"),
            addr: sched_addr.clone(),
            status_addr: format!("127.0.0.1:{}", 2381 + off),
            log: crate::config::LogConfig {
                file: dir.join("scheduler.log").display().to_string(),
                ..Default::default()
            },
            schedule: crate::config::ScheduleConfig {
                max_replicas: opts.stores.min(3),
                ..Default::default()
            },
            ..Default::default()
        };
        write_config(&dir.join("scheduler.toml"), &sched_cfg)?;
        let mut processes = Vec::new();
        if let Err(e) = start_all(opts, &dir, &sched_cfg, tune, &mut processes) {
            terminate(&mut processes);
            return Err(e);
        }
        Ok(Playground {
            dir,
            pd: sched_addr,
            processes,
        })
    }

    /// The pid of store `i` (0-based), if it was started (it may have died since).
    pub fn store_pid(&self, i: usize) -> Option<u32> {
        self.processes.get(1 + i).map(|p| p.child.id())
    }

    /// kill -9 of store `i` (0-based): no shutdown, no flush.
    pub fn kill_store(&mut self, i: usize) -> Result<(), String> {
        let p = self
            .processes
            .get_mut(1 + i)
            .ok_or_else(|| format!("no store {i}"))?;
        p.child
            .kill()
            .and_then(|()| p.child.wait().map(drop))
            .map_err(|e| format!("kill {}: {e}", p.name))
    }

    /// Starts store `i` (0-based) again on its data and config; returns once it serves.
    pub fn restart_store(&mut self, i: usize) -> Result<(), String> {
        if self.processes.get(1 + i).is_none() {
            return Err(format!("no store {i}"));
        }
        let name = format!("store-{}", i + 1);
        let config = self.dir.join(&name).join("store.toml");
        let (p, _) = spawn(
            &name,
            &["store", "--config", &config.display().to_string()],
            Duration::from_secs(300),
        )?;
        self.processes[1 + i] = p;
        Ok(())
    }

    /// Stops every process (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(mut self) {
        terminate(&mut self.processes);
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        if !self.processes.is_empty() {
            terminate(&mut self.processes);
        }
    }
}

pub fn run(opts: Options) -> Result<(), String> {
    let overlay = opts
        .store_config
        .as_deref()
        .map(StoreOverlay::read)
        .transpose()?;
    let mut effective = StoreConfig::default();
    if let Some(overlay) = &overlay {
        overlay.apply(&mut effective)?;
    }
    let api_version = effective.api_version;
    println!(
        "store configs ({}/store-N/store.toml) are written anew at every start: put your \
         settings in a file and pass it with --store-config FILE",
        opts.dir.display()
    );
    let tune = |cfg: &mut StoreConfig| {
        if let Some(overlay) = &overlay {
            // Valid: checked when read.
            let _ = overlay.apply(cfg);
        }
    };
    let mut playground = Playground::start(&opts, &tune)?;
    let (dir, sched_addr) = (playground.dir.clone(), playground.pd.clone());
    let off = opts.port_offset;
    let processes = &mut playground.processes;
    let stores: Vec<String> = (0..opts.stores)
        .map(|i| format!("127.0.0.1:{}", 20160 + off + i as u16))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // "Running" means ready for operators too: the first region has all its replicas and no
    // operator of the scheduler's own is still at work on it (one runs per region).
    println!("waiting for every region's replicas...");
    let replicas = opts.stores.min(3);
    let ready = rt.block_on(async {
        let wait = async {
            let admin = client::Client::connect(
                std::slice::from_ref(&sched_addr),
                client::ClientConfig::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
            wait_replicated(&admin, 1, replicas, Duration::from_secs(120)).await
        };
        tokio::select! {
            r = wait => Ok(Some(r)),
            signal = crate::store::signalled() => {
                println!("\n{signal}: stopping the cluster");
                Ok(None)
            }
            died = first_exit(processes) => Err(died),
        }
    });
    match ready {
        Ok(None) => {
            terminate(processes);
            println!("stopped; the data stays in {}", dir.display());
            return Ok(());
        }
        Err(why) => {
            terminate(processes);
            return Err(format!("{why}; see the logs under {}", dir.display()));
        }
        Ok(Some(Err(e))) => {
            println!("warning: {e}; the cluster runs, but operators may be refused for now")
        }
        Ok(Some(Ok(()))) => {}
    }
    print_usage(&sched_addr, &stores, &dir, api_version);
    // Until Ctrl-C, or until a process dies on its own.
    let exited = rt.block_on(async {
        tokio::select! {
            signal = crate::store::signalled() => { println!("\n{signal}: stopping the cluster"); None }
            died = first_exit(processes) => Some(died),
        }
    });
    terminate(processes);
    match exited {
        Some(why) => Err(format!("{why}; see the logs under {}", dir.display())),
        None => {
            println!("stopped; the data stays in {}", dir.display());
            Ok(())
        }
    }
}

/// Resolves once one of `processes` has exited, saying which and how.
async fn first_exit(processes: &mut [Process]) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        for p in processes.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                return format!("{} exited unexpectedly ({status})", p.name);
            }
        }
    }
}

/// Waits until there are at least `regions` regions, each with `replicas` voters and a leader,
/// and no operator is running, for at most `timeout`.
pub async fn wait_replicated(
    admin: &client::Client,
    regions: usize,
    replicas: usize,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = admin.regions().await.unwrap_or_default();
        let replicated = all.len() >= regions
            && all.iter().all(|r| {
                r.leader.is_some()
                    && r.region.peers.len() == replicas
                    && r.region
                        .peers
                        .iter()
                        .all(|p| p.role() == proto::metapb::PeerRole::Voter)
            });
        if replicated {
            let operators = admin.operators().await.unwrap_or_default();
            if operators.iter().all(|o| o.state != "running") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster did not reach {regions} regions of {replicas} replicas, with no \
                 operator running, within {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start_all(
    opts: &Options,
    dir: &Path,
    sched_cfg: &SchedulerConfig,
    tune: &dyn Fn(&mut StoreConfig),
    processes: &mut Vec<Process>,
) -> Result<(), String> {
    let config = dir.join("scheduler.toml");
    let (p, line) = spawn(
        "scheduler",
        &["scheduler", "--config", &config.display().to_string()],
        Duration::from_secs(30),
    )?;
    processes.push(p);
    println!("{line}");
    for i in 0..opts.stores {
        let name = format!("store-{}", i + 1);
        let store_dir = dir.join(&name);
        std::fs::create_dir_all(&store_dir)
            .map_err(|e| format!("cannot create {}: {e}", store_dir.display()))?;
        let mut cfg = StoreConfig::default();
        // Three stores share one small machine.
        cfg.rocksdb.block_cache_size = 64 << 20;
        cfg.rocksdb.max_background_jobs = 2;
        cfg.raftstore.store_pool_size = 1;
        cfg.raftstore.apply_pool_size = 1;
        // Replicas and leaders settle within seconds rather than minutes.
        cfg.raftstore.region_heartbeat_tick_interval_ms = 2000;
        cfg.raftstore.hibernate_heartbeat_interval_ms = 10_000;
        tune(&mut cfg);
        // Where things are is the playground's to say, whatever `tune` (an overlay) asked.
        cfg.data_dir = store_dir.clone();
        cfg.scheduler_endpoints = vec![sched_cfg.addr.clone()];
        cfg.log.file = store_dir.join("store.log").display().to_string();
        cfg.server.addr = format!("127.0.0.1:{}", 20160 + opts.port_offset + i as u16);
        cfg.server.status_addr = format!("127.0.0.1:{}", 20180 + opts.port_offset + i as u16);
        let path = store_dir.join("store.toml");
        write_config(&path, &cfg)?;
        let (p, line) = spawn(
            &name,
            &["store", "--config", &path.display().to_string()],
            Duration::from_secs(60),
        )?;
        processes.push(p);
        println!("{line}");
    }
    Ok(())
}

fn print_usage(scheduler: &str, stores: &[String], dir: &Path, api_version: ApiVersion) {
    println!(
        r#"
regionstore playground is running (API version {api_version}: {serves}).
  scheduler (PD endpoint): {scheduler}
  stores:                  {stores}
  data, configs and logs:  {dir}
"#,
        serves = match api_version {
            ApiVersion::V1 => "raw or transactional clients without a keyspace (not both), no TTL",
            ApiVersion::V1Ttl => "raw clients without a keyspace, with TTL",
            ApiVersion::V2 => "raw and transactional clients with a keyspace, with TTL",
        },
        stores = stores.join(", "),
        dir = dir.display(),
    );
    if api_version == ApiVersion::V2 {
        println!(
            r#"Try it (in another terminal):
  regionstore ctl --pd {scheduler} --keyspace DEFAULT put hello world
  regionstore ctl --pd {scheduler} --keyspace DEFAULT put --ttl 60 brief gone-soon
  regionstore ctl --pd {scheduler} --keyspace DEFAULT get hello
  regionstore ctl --pd {scheduler} --keyspace DEFAULT scan
  regionstore ctl --pd {scheduler} regions      (five: keyspace DEFAULT's boundaries)
  regionstore ctl --pd {scheduler} keyspace create mine
  regionstore ctl --pd {scheduler} --keyspace DEFAULT txn put account 100   (a transaction)
  regionstore ctl --pd {scheduler} --keyspace DEFAULT txn get account
(from the source tree: cargo run --quiet -- ctl --pd {scheduler} ...)

From Rust with the TiKV client (tikv-client = "0.4", tokio):
  let client = tikv_client::RawClient::new_with_config(
      vec!["{scheduler}"],
      tikv_client::Config::default().with_default_keyspace(),
  ).await?;
  client.put("hello".to_owned(), "world".to_owned()).await?;
  client.put_with_ttl("brief".to_owned(), "gone soon".to_owned(), 60).await?;
  assert_eq!(client.get("hello".to_owned()).await?, Some(b"world".to_vec()));
Transactions the same way: tikv_client::TransactionClient::new_with_config(.., the same config),
then begin_optimistic() or begin_pessimistic(), put, get, commit()."#
        );
    } else {
        println!(
            r#"Try it (in another terminal):
  regionstore ctl --pd {scheduler} put hello world
  regionstore ctl --pd {scheduler} get hello
  regionstore ctl --pd {scheduler} scan
  regionstore ctl --pd {scheduler} regions
  regionstore ctl --pd {scheduler} split m      (returns once the split is done)
  regionstore ctl --pd {scheduler} stores
(from the source tree: cargo run --quiet -- ctl --pd {scheduler} ...)

From Rust with the TiKV client (tikv-client = "0.4", tokio):
  let client = tikv_client::RawClient::new(vec!["{scheduler}"]).await?;
  client.put("hello".to_owned(), "world".to_owned()).await?;
  assert_eq!(client.get("hello".to_owned()).await?, Some(b"world".to_vec()));"#
        );
        if api_version == ApiVersion::V1Ttl {
            println!(
                r#"  client.put_with_ttl("brief".to_owned(), "gone soon".to_owned(), 60).await?;"#
            );
        }
        println!(
            "(tikv-client 0.4's raw scans loop at the last region: split at a key above \
             yours first, e.g. `ctl split z`)"
        );
        if api_version == ApiVersion::V1 {
            println!(
                "Or transactions instead, on a fresh cluster (V1 routes raw and transactional \
                 keys differently): `ctl txn put KEY VALUE`, `ctl txn get KEY`, \
                 tikv_client::TransactionClient::new(vec![\"{scheduler}\"])"
            );
        }
    }
    println!(
        r#"
Other API versions: pass a file with e.g. api-version = "2" as --store-config FILE to a new
--dir (a cluster keeps the version it was made with).
Ctrl-C stops the cluster; running the playground again reuses the data."#
    );
}
