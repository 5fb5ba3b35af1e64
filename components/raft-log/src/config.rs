use std::path::PathBuf;

use raft_engine::ReadableSize;

/// What to do with a damaged log found at start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryMode {
    /// Drop a torn last batch (a write interrupted by a crash, never acknowledged); any other
    /// damage is an error. The default: `kill -9` must not stop a store from starting.
    #[default]
    TolerateTailCorruption,
    /// Any damage is an error, including a torn tail.
    AbsoluteConsistency,
    /// Skip damaged batches anywhere. Loses acknowledged writes: for salvage only.
    TolerateAnyCorruption,
}

/// raft-engine settings: the `[raft-log]` section of a store's TOML config (kebab-case keys; a
/// missing key takes its default). `dir` is not a key: the store puts the log under its data
/// directory.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RaftLogConfig {
    /// Directory of the log files (`<data>/raft-engine`).
    #[serde(skip)]
    pub dir: PathBuf,
    /// What to do with a damaged log at start-up: "tolerate-tail-corruption" (the default:
    /// drop a torn last batch, which a crash left unacknowledged; any other damage stops the
    /// store), "absolute-consistency" (any damage stops it), or "tolerate-any-corruption"
    /// (skips damaged batches anywhere and loses acknowledged writes: salvage only).
    pub recovery_mode: RecoveryMode,
    /// Threads replaying the log at start-up. Default 4.
    pub recovery_threads: usize,
    /// Size at which a log file is rotated. Default 128 MiB.
    pub target_file_size: u64,
    /// Total log size above which purging rewrites or forces compaction of lagging regions.
    /// Default 10 GiB.
    pub purge_threshold: u64,
    /// Batches larger than this are LZ4-compressed. Default 8 KiB.
    pub batch_compression_threshold: u64,
    /// Sync dirty file pages in the background every this many bytes. Default 4 MiB.
    pub bytes_per_sync: u64,
}

impl Default for RaftLogConfig {
    fn default() -> Self {
        RaftLogConfig::new(PathBuf::new())
    }
}

impl RaftLogConfig {
    pub fn new(dir: PathBuf) -> RaftLogConfig {
        RaftLogConfig {
            dir,
            recovery_mode: RecoveryMode::default(),
            recovery_threads: 4,
            target_file_size: 128 << 20,
            purge_threshold: 10 << 30,
            batch_compression_threshold: 8 << 10,
            bytes_per_sync: 4 << 20,
        }
    }

    pub(crate) fn to_engine_config(&self) -> raft_engine::Config {
        raft_engine::Config {
            dir: self.dir.to_string_lossy().into_owned(),
            recovery_mode: match self.recovery_mode {
                RecoveryMode::TolerateTailCorruption => {
                    raft_engine::RecoveryMode::TolerateTailCorruption
                }
                RecoveryMode::AbsoluteConsistency => raft_engine::RecoveryMode::AbsoluteConsistency,
                RecoveryMode::TolerateAnyCorruption => {
                    raft_engine::RecoveryMode::TolerateAnyCorruption
                }
            },
            recovery_threads: self.recovery_threads,
            target_file_size: ReadableSize(self.target_file_size),
            purge_threshold: ReadableSize(self.purge_threshold),
            batch_compression_threshold: ReadableSize(self.batch_compression_threshold),
            bytes_per_sync: Some(ReadableSize(self.bytes_per_sync)),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_kebab_case_toml() {
        let config = RaftLogConfig::default();
        let text = toml::to_string(&config).unwrap();
        assert!(
            text.contains("recovery-mode = \"tolerate-tail-corruption\""),
            "{text}"
        );
        assert!(
            !text.contains("dir"),
            "the directory is not a config key: {text}"
        );
        let back: RaftLogConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
        let partial: RaftLogConfig =
            toml::from_str("recovery-mode = \"absolute-consistency\"").unwrap();
        assert_eq!(partial.recovery_mode, RecoveryMode::AbsoluteConsistency);
        assert!(toml::from_str::<RaftLogConfig>("dir = \"/x\"").is_err());
    }
}
