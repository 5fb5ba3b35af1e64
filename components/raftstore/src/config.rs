/// Settings of the store. The store issue turns this into the serde config of `[raftstore]`;
/// today it holds what the storage layer and the raft peer need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Memory the entry caches of all regions may use for entries already durable in the raft
    /// log (metric `regionstore_entry_cache_bytes`). Entries not yet durable are always kept.
    /// Default 256 MiB; 0 keeps only what is not yet durable.
    pub entry_cache_limit: usize,
    /// Ticks without a leader's heartbeat before a follower campaigns. Default 10.
    pub raft_election_timeout_ticks: usize,
    /// Ticks between a leader's heartbeats; must be below the election timeout. Default 2.
    pub raft_heartbeat_ticks: usize,
    /// Append messages a leader may have in flight to one follower. Default 256.
    pub raft_max_inflight_msgs: usize,
    /// Most bytes of entries in one append message. Default 1 MiB.
    pub raft_max_size_per_msg: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entry_cache_limit: 256 << 20,
            raft_election_timeout_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_max_inflight_msgs: 256,
            raft_max_size_per_msg: 1 << 20,
        }
    }
}
