use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown column family {cf:?}")]
    UnknownCf { cf: String },
    #[error("failed to open KV engine at {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("KV engine at {path} has no column family {cf:?}: it was not created by regionstore or is damaged")]
    MissingCf { path: PathBuf, cf: String },
    #[error("corrupted {what}: {detail}")]
    Corruption { what: String, detail: String },
    #[error("invalid range [{start:?}, {end:?})")]
    InvalidRange { start: Vec<u8>, end: Vec<u8> },
    #[error("RocksDB {op} failed: {detail}")]
    Rocks { op: &'static str, detail: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
        move |e| Error::Rocks {
            op,
            detail: e.into_string(),
        }
    }
}
