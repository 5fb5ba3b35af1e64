//! What a command reads from and what it asks to have written.

use crate::Result;

/// What a scan calls per pair; `Ok(false)` stops it.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// A consistent, read-only view of the data column families, keyed by stored keys (the
/// region's view: whoever implements it refuses keys outside the region).
pub trait Snapshot {
    fn get_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits the pairs of `[start, end)` (`end` empty: unbounded) in order, descending if
    /// `reverse`, until `f` answers false.
    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanVisitor<'_>,
    ) -> Result<()>;
}

/// One change a command asks to have replicated and applied; a command's changes apply
/// atomically or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modify {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
}

/// Runs `scan` (an engine's scan taking a callback that cannot fail with a `txn::Error`)
/// with `f`, handing `f`'s own error back out unchanged; `scan`'s errors become
/// [`crate::Error::Snapshot`].
pub fn scan_forwarding_errors<E: std::error::Error + Send + Sync + 'static>(
    f: &mut ScanVisitor<'_>,
    scan: impl FnOnce(
        &mut dyn FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E>,
) -> Result<()> {
    let mut inner = None;
    let scanned = scan(&mut |k, v| match f(k, v) {
        Ok(more) => Ok(more),
        Err(e) => {
            inner = Some(e);
            Ok(false)
        }
    });
    match inner {
        Some(e) => Err(e),
        None => scanned.map_err(crate::Error::snapshot),
    }
}
