//! Where the scheduler keeps its metadata. The trait is all the scheduler needs (point reads,
//! atomic durable batches, prefix scans), so an etcd backend can implement it later; every
//! `engine::KvEngine` already does, in its default CF.

use engine::{KvEngine, WriteBatch, CF_DEFAULT};

use crate::{Error, Result};

pub trait MetaStore: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Writes `puts` atomically; `sync` makes them durable before returning.
    fn put_batch(&self, puts: &[(Vec<u8>, Vec<u8>)], sync: bool) -> Result<()> {
        let writes: Vec<_> = puts
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        self.write_batch(&writes, sync)
    }
    /// Puts (`Some`) and deletes (`None`) atomically; `sync` makes them durable first.
    fn write_batch(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)], sync: bool) -> Result<()>;
    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

fn storage_err(op: &'static str) -> impl Fn(engine::Error) -> Error {
    move |e| Error::Storage {
        op,
        detail: e.to_string(),
    }
}

impl<E: KvEngine> MetaStore for E {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_value_cf(CF_DEFAULT, key)
            .map_err(storage_err("get"))
    }

    fn write_batch(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)], sync: bool) -> Result<()> {
        let mut wb = KvEngine::write_batch(self);
        for (k, v) in writes {
            match v {
                Some(v) => wb.put_cf(CF_DEFAULT, k, v).map_err(storage_err("put"))?,
                None => wb.delete_cf(CF_DEFAULT, k).map_err(storage_err("delete"))?,
            }
        }
        self.write(&mut wb, sync).map_err(storage_err("write"))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut end = prefix.to_vec();
        // The smallest key above every key with this prefix (prefixes here never end in 0xff).
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut out = Vec::new();
        self.scan_cf(CF_DEFAULT, prefix, &end, false, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .map_err(storage_err("scan"))?;
        Ok(out)
    }
}
