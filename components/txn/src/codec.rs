//! The little binary codec the records use: LEB128 varints and length-prefixed bytes.

use crate::{Error, Result};

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads from the front of a record, naming it in errors.
pub struct Reader<'a> {
    pub what: &'static str,
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(what: &'static str, data: &'a [u8]) -> Reader<'a> {
        Reader { what, data }
    }

    pub fn corrupt(&self, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what: self.what,
            detail: detail.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self
            .data
            .split_first()
            .ok_or_else(|| self.corrupt("ends early"))?;
        self.data = rest;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("a varint runs past 64 bits"))
    }

    pub fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.data.len() < len {
            return Err(self.corrupt(format!("{len} bytes wanted, {} left", self.data.len())));
        }
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Ok(head)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.corrupt("a length overflows"))?;
        self.take(len)
    }

    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}
