use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The `[server]` section of a store's TOML config: addresses, request limits and the
/// store-to-store streams. Keys are kebab-case; a missing key takes its default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Where the gRPC services (raw KV, store-to-store) listen. Default "127.0.0.1:20160".
    pub addr: String,
    /// The address other stores and clients use to reach this one, as the scheduler records
    /// it. Default "" (the same as `addr`).
    pub advertise_addr: String,
    /// Where the status HTTP port (`/metrics`, `/status`) listens. Default "127.0.0.1:20180";
    /// "" turns it off.
    pub status_addr: String,
    /// Threads of the store's async runtime (gRPC, store-to-store streams). Default 2;
    /// 1..=64.
    pub grpc_threads: usize,
    /// Largest key a client may write or read. Default 8 KiB; 1 B..=64 KiB.
    pub max_key_size: usize,
    /// Largest value a client may write. Default 3 MiB, so a RawGet response fits the 4 MiB
    /// a TiKV client decodes; 1 B..=`grpc-max-message-size`.
    pub max_value_size: usize,
    /// Most keys (or pairs, or ranges) in one batch request. Default 4096; 1..=65536.
    pub max_batch_keys: usize,
    /// Largest gRPC message the store accepts or sends. Default 16 MiB (above the raft entry
    /// limit, so a batch put that fits an entry fits a message); 1 MiB..=1 GiB.
    pub grpc_max_message_size: usize,
    /// Message batches queued for one peer store before new ones are dropped (metric
    /// `regionstore_raft_messages_dropped_total`). Default 1024; 16..=65536.
    pub raft_msg_queue_capacity: usize,
    /// Bytes of message batches queued for one peer store before new ones are dropped.
    /// Default 128 MiB; 1 MiB..=16 GiB.
    pub raft_msg_queue_bytes: usize,
    /// Most raft messages in one batch on a store-to-store stream (a batch is also cut 1 MiB
    /// below `grpc-max-message-size`). Default 256; 1..=4096.
    pub raft_msg_max_batch: usize,
    /// First wait before reconnecting to a peer store; it doubles per failure. Default
    /// 100 ms; 10 ms..=`reconnect-backoff-max-ms`.
    pub reconnect_backoff_min_ms: u64,
    /// Longest wait before reconnecting to a peer store. Default 5 s; 10 ms..=60 s.
    pub reconnect_backoff_max_ms: u64,
    /// How long a peer store's address is cached before it is asked of the scheduler again
    /// (a failed connection forgets it at once). Default 60 s; 1 s..=1 h.
    pub store_address_ttl_ms: u64,
    /// Time allowed to open a connection to a peer store. Default 3 s; 100 ms..=60 s.
    pub connect_timeout_ms: u64,
    /// Pessimistic lock requests waiting for another transaction's lock at once; more are
    /// answered locked at once (metric `regionstore_txn_lock_waiters`). Default 10,000;
    /// 1..=1,000,000.
    pub max_lock_waiters: usize,
    /// How long a pessimistic lock request waits for a lock when it asks for the default
    /// (`wait_timeout` 0, as tikv-client sends). Default 1 s; 0..=`lock-wait-max-ms`.
    pub lock_wait_default_ms: u64,
    /// The longest wait a pessimistic lock request may ask for. Default 10 s; 1 ms..=10 min.
    pub lock_wait_max_ms: u64,
    /// Commands of one `BatchCommands` stream being handled at once; the stream is not read
    /// further until one finishes (metric `regionstore_batch_commands_in_flight`). Default
    /// 1024; 1..=65536.
    pub batch_commands_max_in_flight: usize,
    /// Most answers in one `BatchCommandsResponse` (a message is also cut 1 MiB below
    /// `grpc-max-message-size`). Default 128; 1..=4096.
    pub batch_commands_max_responses: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: "127.0.0.1:20160".into(),
            advertise_addr: String::new(),
            status_addr: "127.0.0.1:20180".into(),
            grpc_threads: 2,
            max_key_size: 8 << 10,
            max_value_size: 3 << 20,
            max_batch_keys: 4096,
            grpc_max_message_size: 16 << 20,
            raft_msg_queue_capacity: 1024,
            raft_msg_queue_bytes: 128 << 20,
            raft_msg_max_batch: 256,
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 5000,
            store_address_ttl_ms: 60_000,
            connect_timeout_ms: 3000,
            max_lock_waiters: 10_000,
            lock_wait_default_ms: 1000,
            lock_wait_max_ms: 10_000,
            batch_commands_max_in_flight: 1024,
            batch_commands_max_responses: 128,
        }
    }
}

fn bounded<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<()> {
    if value < min || value > max {
        return Err(Error::Config {
            field,
            detail: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(())
}

impl Config {
    /// The first field out of bounds, by name.
    pub fn validate(&self) -> Result<()> {
        if self.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::Config {
                field: "addr",
                detail: format!("{:?} is not an ip:port address", self.addr),
            });
        }
        if !self.status_addr.is_empty() && self.status_addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(Error::Config {
                field: "status-addr",
                detail: format!("{:?} is not an ip:port address", self.status_addr),
            });
        }
        bounded("grpc-threads", self.grpc_threads, 1, 64)?;
        bounded("max-key-size", self.max_key_size, 1, 64 << 10)?;
        bounded(
            "grpc-max-message-size",
            self.grpc_max_message_size,
            1 << 20,
            1 << 30,
        )?;
        bounded(
            "max-value-size",
            self.max_value_size,
            1,
            self.grpc_max_message_size,
        )?;
        bounded("max-batch-keys", self.max_batch_keys, 1, 65536)?;
        bounded(
            "raft-msg-queue-capacity",
            self.raft_msg_queue_capacity,
            16,
            65536,
        )?;
        bounded("raft-msg-max-batch", self.raft_msg_max_batch, 1, 4096)?;
        bounded(
            "raft-msg-queue-bytes",
            self.raft_msg_queue_bytes,
            1 << 20,
            16 << 30,
        )?;
        bounded(
            "reconnect-backoff-max-ms",
            self.reconnect_backoff_max_ms,
            10,
            60_000,
        )?;
        bounded(
            "reconnect-backoff-min-ms",
            self.reconnect_backoff_min_ms,
            10,
            self.reconnect_backoff_max_ms,
        )?;
        bounded(
            "store-address-ttl-ms",
            self.store_address_ttl_ms,
            1000,
            3_600_000,
        )?;
        bounded("connect-timeout-ms", self.connect_timeout_ms, 100, 60_000)?;
        bounded("max-lock-waiters", self.max_lock_waiters, 1, 1_000_000)?;
        bounded("lock-wait-max-ms", self.lock_wait_max_ms, 1, 600_000)?;
        bounded(
            "batch-commands-max-in-flight",
            self.batch_commands_max_in_flight,
            1,
            65536,
        )?;
        bounded(
            "batch-commands-max-responses",
            self.batch_commands_max_responses,
            1,
            4096,
        )?;
        bounded(
            "lock-wait-default-ms",
            self.lock_wait_default_ms,
            0,
            self.lock_wait_max_ms,
        )?;
        Ok(())
    }

    /// The address the scheduler should hand out for this store.
    pub fn advertised(&self) -> &str {
        if self.advertise_addr.is_empty() {
            &self.addr
        } else {
            &self.advertise_addr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        Config::default().validate().unwrap();
        let cfg = Config {
            max_value_size: 32 << 20,
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("max-value-size"), "{err}");
        let cfg = Config {
            addr: "nowhere".into(),
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("`addr`"));
    }
}
