//! The store ident: which cluster and store a data directory belongs to.

use proto::raft_serverpb::StoreIdent;

use crate::{keys, KvEngine, Peekable, Result, WriteBatch, CF_RAFT};

/// Reads the store ident (`Ok(None)`: the directory has not been bootstrapped yet). What it
/// must say is the store's business (`raftstore::bootstrap_store` and the store's start).
pub fn read_store_ident<E: Peekable>(engine: &E) -> Result<Option<StoreIdent>> {
    engine.get_msg_cf::<StoreIdent>(CF_RAFT, keys::STORE_IDENT_KEY)
}

/// Writes the store ident durably.
pub fn write_store_ident<E: KvEngine>(engine: &E, ident: &StoreIdent) -> Result<()> {
    let mut batch = engine.write_batch();
    batch.put_msg_cf(CF_RAFT, keys::STORE_IDENT_KEY, ident)?;
    engine.write(&mut batch, true)
}
