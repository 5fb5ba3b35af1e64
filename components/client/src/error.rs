//! The client's one error type.

use std::fmt;
use std::time::Duration;

/// Result of every client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a client operation can fail with. Each variant names the operation or RPC and
/// the target (endpoint, region) so that a log line alone says what failed where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `ClientConfig` field is out of bounds.
    #[error("invalid client config: {0}")]
    InvalidConfig(String),

    /// A PD endpoint or a store address cannot be used as a gRPC endpoint.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },

    /// No PD endpoint answered `GetMembers`.
    #[error("no PD member reachable among {endpoints:?}; last error: {last}")]
    PdUnreachable {
        endpoints: Vec<String>,
        last: String,
    },

    /// PD answered with an error in its response header.
    #[error("PD {method} failed ({kind}): {message}")]
    Pd {
        method: &'static str,
        kind: String,
        message: String,
    },

    /// A gRPC call failed with a status (transport or server side).
    #[error("{method} to {target} failed: {status}")]
    Grpc {
        method: &'static str,
        target: String,
        // Boxed: `Status` is large and would bloat every `Result`.
        status: Box<tonic::Status>,
    },

    /// A gRPC call got no answer within the request timeout.
    #[error("{method} to {target}: no answer within {timeout:?}")]
    Timeout {
        method: &'static str,
        target: String,
        timeout: Duration,
    },

    /// A store answered with a region error (retryable ones end here only after the retry
    /// budget ran out, inside [`Error::RetriesExhausted`]).
    #[error("{method} on region {region_id}: region error: {message}")]
    Region {
        method: &'static str,
        region_id: u64,
        message: String,
    },

    /// A store answered with an error string (the response's `error` or a key error).
    #[error("{method} on region {region_id}: store error: {message}")]
    Server {
        method: &'static str,
        region_id: u64,
        message: String,
    },

    /// PD knows no region holding a key, or no usable address for a store.
    #[error("{what}")]
    NotFound { what: String },

    /// A response that breaks the protocol (missing field, region not holding its key...).
    #[error("{method}: malformed response from {target}: {reason}")]
    BadResponse {
        method: &'static str,
        target: String,
        reason: String,
    },

    /// Retrying went on for longer than `ClientConfig::max_retry_time`.
    #[error("{op}: gave up after {retries} retries over {elapsed:?}; last error: {last}")]
    RetriesExhausted {
        op: &'static str,
        retries: u32,
        elapsed: Duration,
        last: Box<Error>,
    },

    /// A non-idempotent request (compare-and-swap, an operator) failed after it may have
    /// reached the server: it may or may not have been applied, so it is not retried.
    #[error("{op}: outcome unknown, the request may have been applied: {source}")]
    Undetermined {
        op: &'static str,
        #[source]
        source: Box<Error>,
    },

    /// The caller's arguments cannot make a valid request.
    #[error("{op}: invalid argument: {reason}")]
    InvalidArgument { op: &'static str, reason: String },

    /// An operator ended without finishing (the scheduler gave it up: timed out or
    /// cancelled because a step could never run).
    #[error("operator on region {region_id} ({description}) did not finish: {state}")]
    OperatorFailed {
        region_id: u64,
        description: String,
        state: String,
    },

    /// A transactional request met a key error: a write conflict, an existing key, a lock
    /// that could not be resolved in time, or an aborted request. The transaction did not
    /// commit (after a commit's primary succeeded, errors are not returned).
    #[error("{method}: transaction {start_ts}: {message}")]
    Txn {
        method: &'static str,
        start_ts: u64,
        message: String,
        key_error: Box<proto::kvrpcpb::KeyError>,
    },

    /// An operator was still running when the caller stopped waiting; it may still finish.
    #[error("operator on region {region_id} ({description}) still running after {timeout:?}")]
    OperatorWait {
        region_id: u64,
        description: String,
        timeout: Duration,
    },
}

impl Error {
    /// A write conflict (another transaction committed a key this one wrote): retrying the
    /// transaction from the start may succeed.
    pub fn is_write_conflict(&self) -> bool {
        matches!(self, Error::Txn { key_error, .. } if key_error.conflict.is_some())
    }

    /// An insert of a key that exists.
    pub fn is_already_exist(&self) -> bool {
        matches!(self, Error::Txn { key_error, .. } if key_error.already_exist.is_some())
    }
}

/// Displays a key readably: printable ASCII as is, other bytes as `\xNN`, long keys cut.
pub(crate) struct KeyDisplay<'a>(pub &'a [u8]);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        f.write_str("\"")?;
        for &b in self.0.iter().take(MAX) {
            if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")?;
        if self.0.len() > MAX {
            write!(f, "... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_display_escapes_and_cuts() {
        assert_eq!(KeyDisplay(b"ab c").to_string(), "\"ab c\"");
        assert_eq!(KeyDisplay(b"a\x00\"").to_string(), "\"a\\x00\\x22\"");
        let long = vec![b'k'; 70];
        assert!(KeyDisplay(&long).to_string().ends_with("... (70 bytes)"));
    }
}
