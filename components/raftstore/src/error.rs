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
    #[error("key {key:?} is not in region {region_id} [{start_key:?}, {end_key:?})")]
    KeyNotInRegion {
        key: Vec<u8>,
        region_id: u64,
        start_key: Vec<u8>,
        end_key: Vec<u8>,
    },
    /// The command was proposed against another version of the region (split or merge since).
    #[error("region {region_id}: command for version {proposed_version} is stale; current region is {current:?}")]
    EpochNotMatch {
        region_id: u64,
        proposed_version: u64,
        current: Box<proto::metapb::Region>,
    },
    #[error("region {region_id}: invalid command: {detail}")]
    InvalidCommand { region_id: u64, detail: String },
    #[error("region {region_id}: raft: {detail}")]
    Raft { region_id: u64, detail: String },
    /// Persisted states contradict each other; the store must not start this region.
    #[error("region {region_id}: inconsistent persisted state: {detail}")]
    InvalidState { region_id: u64, detail: String },
}
