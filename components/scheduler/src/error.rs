pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("scheduler metadata store: {op}: {detail}")]
    Storage { op: &'static str, detail: String },
    #[error("scheduler metadata under {key:?} does not decode: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("the cluster is not bootstrapped")]
    NotBootstrapped,
    #[error("the cluster is already bootstrapped (first region {region_id})")]
    AlreadyBootstrapped { region_id: u64 },
    #[error("store {store_id} is not known to the scheduler")]
    StoreNotFound { store_id: u64 },
    #[error("invalid request: {detail}")]
    Invalid { detail: String },
    #[error(
        "keyspaces need API version 2; this cluster runs {api_version} (its first store's \
         api-version)"
    )]
    KeyspacesNeedV2 { api_version: String },
    #[error("keyspace {name:?} does not exist")]
    KeyspaceNotFound { name: String },
    #[error("timestamp oracle: {detail}")]
    Tso { detail: String },
}
