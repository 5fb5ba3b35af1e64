//! Bounded decoding of untrusted bytes.

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

/// Decodes a `M` from `buf`, refusing inputs larger than `limit` bytes. prost bounds nesting
/// depth itself, so garbage yields an error, never a panic or a stack overflow.
pub fn decode_bounded<M: prost::Message + Default>(
    buf: &[u8],
    limit: usize,
) -> Result<M, DecodeError> {
    let what = short_type_name::<M>();
    if buf.len() > limit {
        return Err(DecodeError::TooLarge {
            what,
            size: buf.len(),
            limit,
        });
    }
    M::decode(buf).map_err(|source| DecodeError::Malformed { what, source })
}

fn short_type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_serverpb::BatchRaftMessage;

    #[test]
    fn too_large_is_rejected_before_decoding() {
        let err = decode_bounded::<BatchRaftMessage>(&[0u8; 100], 99).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BatchRaftMessage of 100 bytes exceeds the limit of 99 bytes"
        );
    }

    #[test]
    fn truncated_input_is_malformed() {
        // Field 1 (msgs), length-delimited, claims 50 bytes but has none.
        let err = decode_bounded::<BatchRaftMessage>(&[0x0a, 50], 1024).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Malformed {
                    what: "BatchRaftMessage",
                    ..
                }
            ),
            "{err}"
        );
    }
}
