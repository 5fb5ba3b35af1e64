//! The write CF's record: what a committed (or rolled back) version of a key is.

use crate::codec::{put_varint, Reader};
use crate::Result;

/// Values up to this many bytes live in the write record itself, not in the default CF.
pub const SHORT_VALUE_MAX_LEN: usize = 255;

/// A value short enough to live inline in a write or lock record: at most
/// [`SHORT_VALUE_MAX_LEN`] bytes, by construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShortValue(Vec<u8>);

impl ShortValue {
    /// `None` when `value` is too long to live inline (it goes to the default CF).
    pub fn new(value: Vec<u8>) -> Option<ShortValue> {
        (value.len() <= SHORT_VALUE_MAX_LEN).then_some(ShortValue(value))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub(crate) fn encode_to(&self, out: &mut Vec<u8>) {
        // At most SHORT_VALUE_MAX_LEN (255) bytes: one length byte.
        out.push(self.0.len() as u8);
        out.extend_from_slice(&self.0);
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<ShortValue> {
        let len = usize::from(r.byte()?);
        Ok(ShortValue(r.take(len)?.to_vec()))
    }
}

const SHORT_VALUE_TAG: u8 = b'v';
const OVERLAPPED_ROLLBACK_TAG: u8 = b'r';

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteType {
    Put,
    Delete,
    /// A locked-only key: no new value, the version before stays.
    Lock,
    /// The transaction at `start_ts` was rolled back; no commit may happen at it.
    Rollback,
}

impl WriteType {
    fn byte(self) -> u8 {
        match self {
            WriteType::Put => b'P',
            WriteType::Delete => b'D',
            WriteType::Lock => b'L',
            WriteType::Rollback => b'R',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub write_type: WriteType,
    pub start_ts: u64,
    /// The value, when it is short enough to live here.
    pub short_value: Option<ShortValue>,
    /// A rollback of the transaction whose start_ts equals this record's commit_ts happened
    /// on the same key: both would have the same write CF key, so this record carries it.
    pub has_overlapped_rollback: bool,
}

impl Write {
    pub fn new(write_type: WriteType, start_ts: u64, short_value: Option<ShortValue>) -> Write {
        Write {
            write_type,
            start_ts,
            short_value,
            has_overlapped_rollback: false,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let inline = self.short_value.as_ref().map_or(0, |v| v.as_bytes().len());
        let mut out = Vec::with_capacity(13 + inline);
        out.push(self.write_type.byte());
        put_varint(&mut out, self.start_ts);
        if let Some(v) = &self.short_value {
            out.push(SHORT_VALUE_TAG);
            v.encode_to(&mut out);
        }
        if self.has_overlapped_rollback {
            out.push(OVERLAPPED_ROLLBACK_TAG);
        }
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Write> {
        let mut r = Reader::new("write record", bytes);
        let write_type = match r.byte()? {
            b'P' => WriteType::Put,
            b'D' => WriteType::Delete,
            b'L' => WriteType::Lock,
            b'R' => WriteType::Rollback,
            other => return Err(r.corrupt(format!("unknown write type {other:#x}"))),
        };
        let start_ts = r.varint()?;
        let mut write = Write::new(write_type, start_ts, None);
        while !r.is_empty() {
            match r.byte()? {
                SHORT_VALUE_TAG => write.short_value = Some(ShortValue::decode_from(&mut r)?),
                OVERLAPPED_ROLLBACK_TAG => write.has_overlapped_rollback = true,
                other => return Err(r.corrupt(format!("unknown field tag {other:#x}"))),
            }
        }
        Ok(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        for w in [
            Write::new(WriteType::Put, 7, ShortValue::new(b"v".to_vec())),
            Write::new(WriteType::Put, u64::MAX, None),
            Write::new(WriteType::Delete, 1, None),
            Write::new(WriteType::Lock, 300, None),
            Write::new(WriteType::Rollback, 0, None),
            Write::new(
                WriteType::Put,
                9,
                ShortValue::new(vec![7; SHORT_VALUE_MAX_LEN]),
            ),
            Write {
                has_overlapped_rollback: true,
                ..Write::new(WriteType::Lock, 3, None)
            },
        ] {
            assert_eq!(Write::parse(&w.to_bytes()).unwrap(), w);
        }
        assert!(ShortValue::new(vec![0; SHORT_VALUE_MAX_LEN + 1]).is_none());
        for bad in [&b""[..], b"X\x01", b"P", b"P\x01v\x05ab", b"P\x01?"] {
            assert!(
                matches!(Write::parse(bad), Err(Error::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }
}
