//! The transaction crate's view of a region snapshot.

use engine::Snapshot as EngineSnapshot;
use raftstore::router::RegionSnapshot;

/// A [`RegionSnapshot`] read by the MVCC reader: stored keys, clipped to the region.
pub struct TxnSnapshot<S: EngineSnapshot>(pub RegionSnapshot<S>);

impl<S: EngineSnapshot> txn::Snapshot for TxnSnapshot<S> {
    fn get_cf(&self, cf: &str, key: &[u8]) -> txn::Result<Option<Vec<u8>>> {
        self.0.get_cf(cf, key).map_err(txn::Error::snapshot)
    }

    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut txn::snapshot::ScanVisitor<'_>,
    ) -> txn::Result<()> {
        txn::snapshot::scan_forwarding_errors(f, |visit| {
            self.0.scan_cf_with(cf, start, end, reverse, visit)
        })
    }
}
