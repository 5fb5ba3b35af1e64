use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to open raft log at {dir}: {detail}")]
    Open { dir: PathBuf, detail: String },
    #[error("raft log {op} failed (region {region_id:?}): {detail}")]
    Engine {
        op: &'static str,
        region_id: Option<u64>,
        detail: String,
    },
    #[error("raft log of region {region_id}: index {index} is compacted")]
    Compacted { region_id: u64, index: u64 },
    #[error("raft log of region {region_id} does not hold entries [{low}, {high})")]
    Unavailable { region_id: u64, low: u64, high: u64 },
    #[error("corrupted raft log at {dir}, region {region_id}: {detail}")]
    Corruption {
        dir: PathBuf,
        region_id: u64,
        detail: String,
    },
}
