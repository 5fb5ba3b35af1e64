/// Settings of the store. The store issue turns this into the serde config of `[raftstore]`;
/// today it holds what the storage layer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Memory the entry caches of all regions may use for entries already durable in the raft
    /// log (metric `regionstore_entry_cache_bytes`). Entries not yet durable are always kept.
    /// Default 256 MiB; 0 keeps only what is not yet durable.
    pub entry_cache_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entry_cache_limit: 256 << 20,
        }
    }
}
