//! A cluster of real `regionstore` processes on loopback: one scheduler and N stores, each
//! with its own config, data directory and log file under a temporary directory. Processes
//! are killed when the cluster is dropped; a failing test prints the tail of every log.

#![allow(dead_code)]

pub mod history;
pub mod mixed;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use regionstore::config::{SchedulerConfig, StoreConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_regionstore");

/// A free loopback port (bound, then released for the process to take), below the kernel's
/// ephemeral range (32768 and up): a store killed and restarted must find its ports still
/// free, and every outgoing connection of any process on the machine takes an ephemeral port
/// (CI saw a restarted store's status port taken that way). Above the playground's ports
/// (2379.., 20160.. plus offsets up to 5,000: see `free_offset`).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    const LOW: u64 = 26_000;
    const SPAN: u64 = 6_700;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    // Different processes start at different places; one process walks on from its last.
    let start = (u64::from(std::process::id()) * 7_919 + nanos) % SPAN;
    (0..SPAN)
        .map(|i| LOW + (start + (NEXT.fetch_add(1, Ordering::Relaxed) + i) * 7_907) % SPAN)
        .find_map(|port| {
            let port = u16::try_from(port).ok()?;
            TcpListener::bind(("127.0.0.1", port)).ok().map(|_| port)
        })
        .expect("a free loopback port below the ephemeral range")
}

/// Starts `regionstore <args>` and waits for its " ready on " line.
pub fn spawn_ready(args: &[&str], timeout: Duration) -> Child {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start regionstore");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains(" ready on ") {
                let _ = tx.send(line);
            }
        }
    });
    if rx.recv_timeout(timeout).is_err() {
        let _ = child.kill();
        panic!(
            "regionstore {args:?} not ready within {timeout:?}: {:?}",
            child.wait()
        );
    }
    child
}

/// How often [`wait_until`] and [`wait_ok`] look again.
const POLL: Duration = Duration::from_millis(200);

/// Polls `check` every 200 ms until it holds; panics saying what was awaited if `timeout`
/// passes first. The async twin of `test_cluster::wait_until`, for tests that run in tokio.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `poll` every 200 ms until it gives `Ok`; panics saying what was awaited and the last
/// `Err` if `timeout` passes first. The async twin of `test_cluster::wait_ok`.
pub async fn wait_ok<T, E, F, Fut>(what: &str, timeout: Duration, mut poll: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match poll().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; last: {last:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `regionstore ctl --pd <pd> <args>`: its output, trimmed (panics with its error output if
/// it fails).
pub fn ctl(pd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .args(["ctl", "--pd", pd])
        .args(args)
        .output()
        .expect("run ctl");
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An offset whose ports (scheduler 2379+o and 2381+o, stores 20160+o.. and 20180+o..) are
/// free now.
pub fn free_offset() -> u16 {
    let start = (std::process::id() % 50) as u16;
    (0..50)
        .map(|i| 100 * (1 + (start + i) % 50))
        .find(|o| {
            [2379, 2381, 20160, 20161, 20162, 20180, 20181, 20182]
                .iter()
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", p + o)).is_ok())
        })
        .expect("a free port range")
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

pub struct StoreProc {
    pub config: PathBuf,
    pub addr: String,
    pub status_addr: String,
    pub log: PathBuf,
    pub child: Option<Child>,
}

pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    pub pd: String,
    scheduler: Option<Child>,
    scheduler_config: PathBuf,
    scheduler_log: PathBuf,
    pub stores: Vec<StoreProc>,
    /// One per store when started with [`ProcCluster::start_proxied`]: the store advertises
    /// its proxy's address, so all its inbound traffic passes there.
    pub proxies: Vec<proxy::Proxy>,
}

impl ProcCluster {
    /// A scheduler and `n` stores; returns once every store is serving (not yet replicated:
    /// see [`ProcCluster::wait_replicated`]).
    pub fn start(n: usize) -> ProcCluster {
        Self::start_with(n, |_| {})
    }

    /// Like [`ProcCluster::start`], with the scheduler's config changed by `tune`.
    pub fn start_with(n: usize, tune: impl FnOnce(&mut SchedulerConfig)) -> ProcCluster {
        Self::start_tuned(n, tune, |_| {})
    }

    /// Like [`ProcCluster::start`], with every store's config changed by `tune_store`.
    pub fn start_with_stores(n: usize, tune_store: impl Fn(&mut StoreConfig)) -> ProcCluster {
        Self::start_tuned(n, |_| {}, tune_store)
    }

    /// Like [`ProcCluster::start_with_stores`], each store behind a fault-injecting proxy
    /// (`proxies[i]`); needs a tokio runtime.
    pub fn start_proxied(n: usize, tune_store: impl Fn(&mut StoreConfig)) -> ProcCluster {
        Self::start_inner(n, |_| {}, tune_store, true)
    }

    fn start_tuned(
        n: usize,
        tune: impl FnOnce(&mut SchedulerConfig),
        tune_store: impl Fn(&mut StoreConfig),
    ) -> ProcCluster {
        Self::start_inner(n, tune, tune_store, false)
    }

    fn start_inner(
        n: usize,
        tune: impl FnOnce(&mut SchedulerConfig),
        tune_store: impl Fn(&mut StoreConfig),
        proxied: bool,
    ) -> ProcCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let pd = format!("127.0.0.1:{}", free_port());
        let scheduler_log = dir.path().join("scheduler.log");
        let mut sched = SchedulerConfig {
            data_dir: dir.path().join("scheduler"),
            addr: pd.clone(),
            status_addr: String::new(),
            log: regionstore::config::LogConfig {
                file: scheduler_log.display().to_string(),
                ..Default::default()
            },
            schedule: regionstore::config::ScheduleConfig {
                max_replicas: n.min(3),
                ..Default::default()
            },
            ..Default::default()
        };
        tune(&mut sched);
        let sched_path = dir.path().join("scheduler.toml");
        write(&sched_path, &sched);
        let scheduler = spawn_ready(
            &["scheduler", "--config", &sched_path.display().to_string()],
            Duration::from_secs(30),
        );
        let mut cluster = ProcCluster {
            dir,
            pd,
            scheduler: Some(scheduler),
            scheduler_config: sched_path,
            scheduler_log,
            stores: Vec::new(),
            proxies: Vec::new(),
        };
        for i in 0..n {
            let store_dir = cluster.dir.path().join(format!("store-{i}"));
            std::fs::create_dir_all(&store_dir).expect("store dir");
            let mut cfg = StoreConfig {
                data_dir: store_dir.clone(),
                scheduler_endpoints: vec![cluster.pd.clone()],
                ..Default::default()
            };
            let log = store_dir.join("store.log");
            cfg.log.file = log.display().to_string();
            cfg.server.addr = format!("127.0.0.1:{}", free_port());
            cfg.server.status_addr = format!("127.0.0.1:{}", free_port());
            if proxied {
                let proxy = proxy::Proxy::start(cfg.server.addr.clone());
                cfg.server.advertise_addr = proxy.addr.clone();
                cluster.proxies.push(proxy);
            }
            cfg.rocksdb.block_cache_size = 32 << 20;
            cfg.rocksdb.max_background_jobs = 2;
            cfg.raftstore.store_pool_size = 1;
            cfg.raftstore.apply_pool_size = 1;
            cfg.raftstore.region_heartbeat_tick_interval_ms = 500;
            cfg.raftstore.hibernate_heartbeat_interval_ms = 500;
            cfg.raftstore.store_heartbeat_interval_ms = 1000;
            tune_store(&mut cfg);
            let config = store_dir.join("store.toml");
            write(&config, &cfg);
            cluster.stores.push(StoreProc {
                config,
                addr: cfg.server.addr.clone(),
                status_addr: cfg.server.status_addr.clone(),
                log,
                child: None,
            });
            cluster.start_store(i);
        }
        cluster
    }

    pub fn start_store(&mut self, i: usize) {
        assert!(self.stores[i].child.is_none(), "store {i} is running");
        let config = self.stores[i].config.display().to_string();
        self.stores[i].child = Some(spawn_ready(
            &["store", "--config", &config],
            Duration::from_secs(60),
        ));
    }

    /// kill -9: no shutdown, no flush.
    pub fn kill_store(&mut self, i: usize) {
        if let Some(mut child) = self.stores[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// kill -9 of the scheduler.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut child) = self.scheduler.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the scheduler again, on its address and data.
    pub fn start_scheduler(&mut self) {
        assert!(self.scheduler.is_none(), "the scheduler is running");
        let config = self.scheduler_config.display().to_string();
        self.scheduler = Some(spawn_ready(
            &["scheduler", "--config", &config],
            Duration::from_secs(30),
        ));
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to store `i`: a paused process, clock and all.
    pub fn pause_store(&mut self, i: usize, paused: bool) {
        if let Some(child) = &self.stores[i].child {
            signal(child, if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop_store(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.stores[i].child.take().expect("store running");
        signal(&child, libc::SIGTERM);
        child.wait().expect("wait for the store")
    }

    pub async fn client(&self) -> client::Client {
        client::Client::connect(
            std::slice::from_ref(&self.pd),
            client::ClientConfig::default(),
        )
        .await
        .expect("connect the admin client")
    }

    /// Waits until there are `regions` regions, each with `voters` voters, no learner and
    /// a known leader.
    pub async fn wait_replicated(&self, admin: &client::Client, regions: usize, voters: usize) {
        let what = format!("{regions} regions with {voters} voters each");
        // The last routing table seen.
        wait_ok(&what, Duration::from_secs(60), || async {
            let all = admin.regions().await.unwrap_or_default();
            let done = all.len() == regions
                && all.iter().all(|r| {
                    r.leader.is_some()
                        && r.region.peers.len() == voters
                        && r.region
                            .peers
                            .iter()
                            .all(|p| p.role() == proto::metapb::PeerRole::Voter)
                });
            if done {
                Ok(())
            } else {
                Err(all)
            }
        })
        .await
    }

    fn http_get(&self, i: usize, path: &str) -> String {
        use std::io::{Read, Write};
        // Bounded: a stopped store's status port must fail the test, not hang it.
        let addr = self.stores[i].status_addr.parse().expect("status address");
        let limit = Some(Duration::from_secs(5));
        let mut conn =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("status");
        conn.set_read_timeout(limit).expect("read timeout");
        conn.set_write_timeout(limit).expect("write timeout");
        conn.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .expect("send");
        let mut out = String::new();
        conn.read_to_string(&mut out).expect("read");
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
    }

    /// The `/status` document of store `i`.
    pub fn status(&self, i: usize) -> serde_json::Value {
        serde_json::from_str(&self.http_get(i, "/status")).expect("status is JSON")
    }

    /// The value of one metric series (`name{labels}`) on store `i`'s `/metrics`.
    pub fn metric(&self, i: usize, series: &str) -> f64 {
        self.http_get(i, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn dump_logs(&mut self) {
        // Whether each store still ran: a log that ends early is a dead process, or a live
        // one that stopped logging (stuck), and the two read the same.
        for (i, store) in self.stores.iter_mut().enumerate() {
            let state = match store.child.as_mut().map(Child::try_wait) {
                None => "not running (stopped by the test)".to_string(),
                Some(Ok(None)) => "running".to_string(),
                Some(Ok(Some(status))) => format!("exited: {status}"),
                Some(Err(e)) => format!("unknown: {e}"),
            };
            eprintln!("----- store {i}: {state}");
        }
        let mut logs = vec![self.scheduler_log.clone()];
        logs.extend(self.stores.iter().map(|s| s.log.clone()));
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("----- {} (last 40 lines) -----", log.display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for i in 0..self.stores.len() {
            self.kill_store(i);
        }
        if let Some(mut child) = self.scheduler.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn write<T: serde::Serialize>(path: &Path, cfg: &T) {
    std::fs::write(path, toml::to_string(cfg).expect("encode config")).expect("write config");
}

/// `GET path` over plain HTTP/1.1 at `addr` (host:port): the status line and the JSON body.
pub async fn http_get_json(addr: &str, path: &str) -> (String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut out = String::new();
    conn.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("a header");
    let status = head.lines().next().unwrap_or_default().to_string();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, body)
}
