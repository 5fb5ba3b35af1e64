pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("region {region_id}: KV engine: {source}")]
    Engine {
        region_id: u64,
        #[source]
        source: engine::Error,
    },
    #[error("region {region_id}: raft log: {source}")]
    RaftLog {
        region_id: u64,
        #[source]
        source: raft_log::Error,
    },
    #[error("region {region_id}: raft: {detail}")]
    Raft { region_id: u64, detail: String },
    /// Persisted states contradict each other; the store must not start this region.
    #[error("region {region_id}: inconsistent persisted state: {detail}")]
    InvalidState { region_id: u64, detail: String },
}
