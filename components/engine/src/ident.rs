//! The store ident: which cluster and store a data directory belongs to.

use std::path::Path;

use proto::raft_serverpb::StoreIdent;

use crate::{keys, Error, KvEngine, Peekable, Result, WriteBatch, CF_RAFT};

/// Reads the store ident and checks it belongs to `cluster_id`. `Ok(None)`: the directory has
/// not been bootstrapped yet. Another cluster's ident is [`Error::ClusterMismatch`].
pub fn check_store_ident<E: Peekable>(
    engine: &E,
    path: &Path,
    cluster_id: u64,
) -> Result<Option<StoreIdent>> {
    let Some(ident) = engine.get_msg_cf::<StoreIdent>(CF_RAFT, keys::STORE_IDENT_KEY)? else {
        return Ok(None);
    };
    if ident.cluster_id != cluster_id {
        return Err(Error::ClusterMismatch {
            path: path.to_owned(),
            expected: cluster_id,
            found: ident.cluster_id,
        });
    }
    Ok(Some(ident))
}

/// Writes the store ident durably.
pub fn write_store_ident<E: KvEngine>(engine: &E, ident: &StoreIdent) -> Result<()> {
    let mut batch = engine.write_batch();
    batch.put_msg_cf(CF_RAFT, keys::STORE_IDENT_KEY, ident)?;
    engine.write(&mut batch, true)
}
