//! The binary's TOML configs: a store's and the scheduler's. Each section is the owning
//! crate's config struct; this module adds the process-level fields and the cross-section
//! checks. `--print-default-config` prints the defaults annotated with each field's doc, which
//! `build.rs` collects from the structs' sources (a test checks every key has one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

include!(concat!(env!("OUT_DIR"), "/field_docs.rs"));

/// The struct each section of a config is, for looking up field docs.
fn section_struct(top: &'static str, section: &str) -> &'static str {
    match section {
        "" => top,
        "log" => "log",
        "schedule" => "schedule",
        "server" => "server",
        "raftstore" => "raftstore",
        "rocksdb" => "rocksdb",
        "raft-log" => "raft-log",
        "gc" => "gc",
        _ => "",
    }
}

fn doc_of(structure: &str, key: &str) -> Option<&'static str> {
    FIELD_DOCS
        .iter()
        .find(|(s, k, _)| *s == structure && *k == key)
        .map(|(_, _, d)| *d)
}

/// Wraps a doc into `# ` comment lines of at most 100 columns.
fn comment(doc: &str, out: &mut String) {
    let mut line = String::from("#");
    for word in doc.split_whitespace() {
        if line.len() + word.len() + 1 > 100 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// `default` as an annotated TOML file: every key with its doc (default and bounds) and value.
/// `top` names the top-level struct ("store" or "scheduler").
pub fn annotated<T: Serialize>(top: &'static str, title: &str, default: &T) -> String {
    let mut out =
        format!("# {title}\n# Every key is optional: a missing key takes the value shown here.\n");
    let Ok(toml::Value::Table(table)) = toml::Value::try_from(default) else {
        return out;
    };
    let mut sections: Vec<(&String, &toml::Value)> = Vec::new();
    out.push('\n');
    for (key, value) in &table {
        if let toml::Value::Table(_) = value {
            sections.push((key, value));
            continue;
        }
        if let Some(doc) = doc_of(top, key).filter(|d| !d.is_empty()) {
            comment(doc, &mut out);
        }
        out.push_str(&format!("{key} = {value}\n\n"));
    }
    for (name, value) in sections {
        out.push_str(&format!("[{name}]\n"));
        let structure = section_struct(top, name);
        if let toml::Value::Table(fields) = value {
            for (key, value) in fields {
                if let Some(doc) = doc_of(structure, key).filter(|d| !d.is_empty()) {
                    comment(doc, &mut out);
                }
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        out.push('\n');
    }
    out
}

/// The `[log]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogConfig {
    /// Least severe level written: "trace", "debug", "info", "warn", "error" or "critical".
    /// Default "info".
    pub level: String,
    /// File the log is appended to; "" writes to stderr. Default "".
    pub file: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            file: String::new(),
        }
    }
}

impl LogConfig {
    pub fn level(&self) -> Result<slog::Level, String> {
        self.level
            .parse::<slog::Level>()
            .map_err(|()| format!("config field `log.level`: unknown level {:?}", self.level))
    }
}

/// A store's config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the store's data: `kv/` (RocksDB), `raft/` (raft-engine), `snap/`
    /// (snapshot files). Created if missing. Default "data/store".
    pub data_dir: PathBuf,
    /// The scheduler's gRPC endpoints (host:port). Default ["127.0.0.1:2379"].
    pub scheduler_endpoints: Vec<String>,
    /// The cluster's API version, as TiKV's: "1" (raw or transactional clients, no TTL),
    /// "1ttl" (raw clients with TTL) or "2" (keyspaces: raw and transactional clients
    /// together, TTL). Chosen by the cluster's first store; every store must match it and
    /// its data directory. Default "1".
    pub api_version: api_version::ApiVersion,
    pub log: LogConfig,
    pub server: server::Config,
    pub raftstore: raftstore::Config,
    pub rocksdb: engine::RocksConfig,
    pub raft_log: raft_log::RaftLogConfig,
    /// The MVCC garbage collector: versions below the cluster's GC safe point.
    pub gc: storage::GcConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: "data/store".into(),
            scheduler_endpoints: vec!["127.0.0.1:2379".into()],
            api_version: api_version::ApiVersion::default(),
            log: LogConfig::default(),
            server: server::Config::default(),
            raftstore: raftstore::Config::default(),
            rocksdb: engine::RocksConfig::default(),
            raft_log: raft_log::RaftLogConfig::default(),
            gc: storage::GcConfig::default(),
        }
    }
}

/// Slack for a request's own fields around the raft entry it becomes.
const MESSAGE_OVERHEAD: u64 = 64 << 10;

impl StoreConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("config field `data-dir`: must not be empty".into());
        }
        if self
            .server
            .addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified())
            && self.server.advertise_addr.is_empty()
        {
            return Err(format!(
                "config field `server.advertise-addr`: must be set when `server.addr` ({}) \
                 listens on every interface: other stores and clients connect to it",
                self.server.addr
            ));
        }
        if self.scheduler_endpoints.is_empty() {
            return Err("config field `scheduler-endpoints`: name at least one endpoint".into());
        }
        self.log.level()?;
        self.server.validate().map_err(|e| e.to_string())?;
        self.gc.validate()?;
        self.raftstore
            .validate()
            .map_err(|e| format!("[raftstore] {e}"))?;
        if (self.server.grpc_max_message_size as u64)
            < self.raftstore.raft_entry_max_size + MESSAGE_OVERHEAD
        {
            return Err(format!(
                "config field `server.grpc-max-message-size`: {} must exceed \
                 `raftstore.raft-entry-max-size` ({}) by at least {MESSAGE_OVERHEAD} bytes, or a \
                 batch that fits an entry cannot reach the store",
                self.server.grpc_max_message_size, self.raftstore.raft_entry_max_size
            ));
        }
        if (self.server.max_value_size as u64) + (self.server.max_key_size as u64)
            > self.raftstore.raft_entry_max_size
        {
            return Err(format!(
                "config field `server.max-value-size`: {} plus the key limit exceeds \
                 `raftstore.raft-entry-max-size` ({}): a single put could never be written",
                self.server.max_value_size, self.raftstore.raft_entry_max_size
            ));
        }
        Ok(())
    }
}

/// The `[schedule]` section: what the scheduler keeps regions at and how fast it moves them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Voters every region should have. Default 3; 1..=7.
    pub max_replicas: usize,
    /// A store not heard from for this long is down and its peers are replaced elsewhere.
    /// Default 30 min; >= 1 min.
    pub max_store_down_time_ms: u64,
    /// An operator not finished after this long is dropped. Default 10 min; >= 10 s.
    pub operator_timeout_ms: u64,
    /// Replica operators (add, replace, remove replicas) running at once; 0 turns the
    /// replica checker off. Default 8; <= 1024.
    pub replica_schedule_limit: usize,
    /// Leader-balance operators running at once; 0 turns leader balancing off. Default 4;
    /// <= 1024.
    pub leader_schedule_limit: usize,
    /// Region-balance operators running at once; 0 turns region balancing off. Default 4;
    /// <= 1024.
    pub region_schedule_limit: usize,
    /// Ended operators kept for `ctl operators`. Default 256; <= 65536.
    pub operator_history: usize,
    /// Ids reserved per synced write of the id bound. Default 1000; 1..=1000000.
    pub id_batch: u64,
    /// How far ahead of the clock the persisted timestamp bound runs. Default 3 s; 100 ms..=60 s.
    pub tso_window_ms: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        let d = scheduler::Config::default();
        ScheduleConfig {
            max_replicas: d.max_replicas,
            max_store_down_time_ms: d.max_store_down_time.as_millis() as u64,
            operator_timeout_ms: d.operator_timeout.as_millis() as u64,
            replica_schedule_limit: d.replica_schedule_limit,
            leader_schedule_limit: d.leader_schedule_limit,
            region_schedule_limit: d.region_schedule_limit,
            operator_history: d.operator_history,
            id_batch: d.id_batch,
            tso_window_ms: d.tso_window.as_millis() as u64,
        }
    }
}

fn bounded(field: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!(
            "config field `{field}`: {value} is outside {min}..={max}"
        ));
    }
    Ok(())
}

impl ScheduleConfig {
    pub fn validate(&self) -> Result<(), String> {
        bounded("schedule.max-replicas", self.max_replicas as u64, 1, 7)?;
        bounded(
            "schedule.max-store-down-time-ms",
            self.max_store_down_time_ms,
            60_000,
            u64::MAX,
        )?;
        bounded(
            "schedule.operator-timeout-ms",
            self.operator_timeout_ms,
            10_000,
            u64::MAX,
        )?;
        bounded(
            "schedule.replica-schedule-limit",
            self.replica_schedule_limit as u64,
            0,
            1024,
        )?;
        bounded(
            "schedule.leader-schedule-limit",
            self.leader_schedule_limit as u64,
            0,
            1024,
        )?;
        bounded(
            "schedule.region-schedule-limit",
            self.region_schedule_limit as u64,
            0,
            1024,
        )?;
        bounded(
            "schedule.operator-history",
            self.operator_history as u64,
            0,
            65536,
        )?;
        bounded("schedule.id-batch", self.id_batch, 1, 1_000_000)?;
        bounded("schedule.tso-window-ms", self.tso_window_ms, 100, 60_000)?;
        Ok(())
    }

    pub fn to_scheduler(&self) -> scheduler::Config {
        scheduler::Config {
            id_batch: self.id_batch,
            tso_window: Duration::from_millis(self.tso_window_ms),
            max_replicas: self.max_replicas,
            max_store_down_time: Duration::from_millis(self.max_store_down_time_ms),
            operator_timeout: Duration::from_millis(self.operator_timeout_ms),
            replica_schedule_limit: self.replica_schedule_limit,
            leader_schedule_limit: self.leader_schedule_limit,
            region_schedule_limit: self.region_schedule_limit,
            operator_history: self.operator_history,
        }
    }
}

/// The scheduler's config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Directory of the scheduler's metadata (a RocksDB under `meta/`). Default
    /// "data/scheduler".
    pub data_dir: PathBuf,
    /// Where the gRPC service (pdpb.PD and the scheduler's own) listens. Default
    /// "127.0.0.1:2379", PD's port, where TiKV clients look first.
    pub addr: String,
    /// The URL clients are told to use (GetMembers' client_urls). Default "" (http://`addr`).
    pub advertise_url: String,
    /// Status HTTP port (`/metrics`, `/status`). Default "127.0.0.1:2381"; "" turns it off.
    pub status_addr: String,
    /// Largest gRPC message accepted or sent. Default 16 MiB; 1 MiB..=1 GiB.
    pub grpc_max_message_size: usize,
    pub log: LogConfig,
    pub schedule: ScheduleConfig,
    pub rocksdb: engine::RocksConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            data_dir: "data/scheduler".into(),
            addr: "127.0.0.1:2379".into(),
            advertise_url: String::new(),
            status_addr: "127.0.0.1:2381".into(),
            grpc_max_message_size: 16 << 20,
            log: LogConfig::default(),
            schedule: ScheduleConfig::default(),
            rocksdb: engine::RocksConfig {
                // Metadata only: a small cache is plenty.
                block_cache_size: 32 << 20,
                ..Default::default()
            },
        }
    }
}

impl SchedulerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("config field `data-dir`: must not be empty".into());
        }
        match self.addr.parse::<std::net::SocketAddr>() {
            Err(_) => {
                return Err(format!(
                    "config field `addr`: {:?} is not an ip:port address",
                    self.addr
                ))
            }
            Ok(a) if a.ip().is_unspecified() && self.advertise_url.is_empty() => {
                return Err(format!(
                    "config field `advertise-url`: must be set when `addr` ({}) listens on \
                     every interface: clients connect to the URL the scheduler names",
                    self.addr
                ))
            }
            Ok(_) => {}
        }
        if !self.status_addr.is_empty() && self.status_addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!(
                "config field `status-addr`: {:?} is not an ip:port address",
                self.status_addr
            ));
        }
        bounded(
            "grpc-max-message-size",
            self.grpc_max_message_size as u64,
            1 << 20,
            1 << 30,
        )?;
        self.log.level()?;
        self.schedule.validate()
    }
}

/// Reads and checks a config file; a missing file is an error, a missing key its default.
/// A TOML file of store settings laid over a generated store config (`--store-config` of
/// `playground` and `bench`): any keys of `regionstore store --print-default-config`.
#[derive(Clone, Debug)]
pub struct StoreOverlay {
    path: PathBuf,
    value: toml::Value,
}

impl StoreOverlay {
    /// Reads `path`, and checks it against the defaults so a bad file fails before any
    /// process starts.
    pub fn read(path: &Path) -> Result<StoreOverlay, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let overlay = StoreOverlay {
            path: path.to_owned(),
            value,
        };
        overlay.apply(&mut StoreConfig::default())?;
        Ok(overlay)
    }

    /// Lays the overlay over `cfg`, key by key (tables merged, other values replaced), and
    /// validates the result.
    pub fn apply(&self, cfg: &mut StoreConfig) -> Result<(), String> {
        fn merge(base: &mut toml::Value, over: &toml::Value) {
            match (base, over) {
                (toml::Value::Table(b), toml::Value::Table(o)) => {
                    for (k, v) in o {
                        match b.get_mut(k) {
                            Some(slot) => merge(slot, v),
                            None => {
                                b.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
                (slot, v) => *slot = v.clone(),
            }
        }
        let mut value = toml::Value::try_from(&*cfg).map_err(|e| format!("store config: {e}"))?;
        merge(&mut value, &self.value);
        *cfg = value
            .try_into()
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        cfg.validate()
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

pub fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of `value` (dotted), for comparing a template's coverage with the defaults.
    fn keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = value {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_table() {
                    keys(&path, v, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    fn template_matches<T>(top: &'static str, default: &T)
    where
        T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
    {
        let template = annotated(top, "test", default);
        let parsed: T = toml::from_str(&template).expect("template parses");
        assert_eq!(&parsed, default, "template and defaults differ");
        let mut want = Vec::new();
        keys("", &toml::Value::try_from(default).unwrap(), &mut want);
        let mut have = Vec::new();
        keys(
            "",
            &toml::from_str::<toml::Value>(&template).unwrap(),
            &mut have,
        );
        want.sort();
        have.sort();
        assert_eq!(have, want, "template does not list every field");
        // Every key has a doc line right above it.
        let lines: Vec<&str> = template.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains(" = ") && !line.starts_with('#') {
                assert!(
                    i > 0 && lines[i - 1].starts_with("# "),
                    "{top}: `{line}` has no doc"
                );
            }
        }
    }

    #[test]
    fn templates_are_the_defaults_and_list_every_field() {
        template_matches("store", &StoreConfig::default());
        template_matches("scheduler", &SchedulerConfig::default());
        StoreConfig::default().validate().unwrap();
        SchedulerConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused_with_the_field_name() {
        let cfg: StoreConfig = toml::from_str("[server]\nmax-key-size = 0\n").unwrap();
        assert!(cfg.validate().unwrap_err().contains("max-key-size"));
        let cfg: StoreConfig =
            toml::from_str("[raftstore]\nraft-entry-max-size = 33554432\n").unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .contains("grpc-max-message-size"));
        let err = toml::from_str::<StoreConfig>("[server]\nno-such-field = 1\n").unwrap_err();
        assert!(err.to_string().contains("no-such-field"), "{err}");
        let cfg: SchedulerConfig = toml::from_str("[schedule]\nmax-replicas = 0\n").unwrap();
        assert!(cfg.validate().unwrap_err().contains("max-replicas"));
    }
}
