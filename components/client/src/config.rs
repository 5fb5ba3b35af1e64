//! Client settings and the retry backoff.

use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};

/// Settings of a [`crate::Client`]. `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Deadline of one RPC (default 10 s), sent as `grpc-timeout` and enforced locally.
    pub request_timeout: Duration,
    /// How long an operation keeps retrying without any request succeeding (default 20 s).
    pub max_retry_time: Duration,
    /// First backoff delay (default 10 ms); doubles on each backoff.
    pub backoff_base: Duration,
    /// Largest backoff delay (default 1 s).
    pub backoff_max: Duration,
    /// Largest gRPC message sent or accepted, in bytes (default 16 MiB).
    pub max_message_size: usize,
    /// Most keys in one batch request to one region (default 4096); bigger groups are split.
    pub max_batch_keys: usize,
    /// Region requests of one batch operation in flight at once (default 16).
    pub max_concurrent_requests: usize,
    /// Where retries and reconnections are logged (at debug and info); discards by default.
    pub logger: slog::Logger,
    /// The keyspace to work in (API V2 clusters), by name, e.g. "DEFAULT"; `None` (the
    /// default) speaks API V1, keys as given.
    pub keyspace: Option<String>,
    /// Sends KV requests over one `BatchCommands` stream per store, as TiKV's Go client does
    /// (default true): requests issued together share a message. False sends each as a
    /// unary call. Compare-and-swap and TTL reads are always unary (the stream has no such
    /// commands).
    pub batch_commands: bool,
    /// Most requests in one `BatchCommands` message (default 128).
    pub batch_commands_max_requests: usize,
    /// Requests share a `BatchCommands` message only up to this many bytes (default 4 MiB),
    /// so a merged message is no bigger than what a store takes as one request (its limit may
    /// be below ours). A bigger request goes alone, as its unary call would.
    pub batch_commands_max_shared_bytes: usize,
    /// Requests waiting per store for its stream's task (default 4096); beyond it callers
    /// wait for room. [`crate::Client::batch_commands_queued`] tells how many wait.
    pub batch_commands_queue_capacity: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(10),
            max_retry_time: Duration::from_secs(20),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            max_message_size: 16 * 1024 * 1024,
            max_batch_keys: 4096,
            max_concurrent_requests: 16,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            keyspace: None,
            batch_commands: true,
            batch_commands_max_requests: 128,
            batch_commands_max_shared_bytes: 4 << 20,
            batch_commands_queue_capacity: 4096,
        }
    }
}

impl ClientConfig {
    /// Checks every bound; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::InvalidConfig(format!("{field} {why}")));
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be positive");
        }
        if self.backoff_base.is_zero() {
            return bad("backoff_base", "must be positive");
        }
        if self.backoff_max < self.backoff_base {
            return bad("backoff_max", "must be at least backoff_base");
        }
        // Below 64 KiB not even a small batch fits; above 2 GiB gRPC cannot frame it.
        if !(64 * 1024..=i32::MAX as usize).contains(&self.max_message_size) {
            return bad("max_message_size", "must be within 64 KiB..=2 GiB");
        }
        if self.max_batch_keys == 0 {
            return bad("max_batch_keys", "must be positive");
        }
        if self.max_concurrent_requests == 0 {
            return bad("max_concurrent_requests", "must be positive");
        }
        if self.batch_commands_max_requests == 0 {
            return bad("batch_commands_max_requests", "must be positive");
        }
        if self.batch_commands_max_shared_bytes == 0 {
            return bad("batch_commands_max_shared_bytes", "must be positive");
        }
        if self.batch_commands_queue_capacity == 0 {
            return bad("batch_commands_queue_capacity", "must be positive");
        }
        Ok(())
    }

    /// Most bytes of keys and values put in one batch request: a quarter of the message
    /// limit (4 MiB by default), which leaves room for framing and per-pair overhead and
    /// stays below a store's default raft entry limit (8 MiB) once encoded as a command.
    pub(crate) fn max_batch_bytes(&self) -> usize {
        self.max_message_size / 4
    }
}

/// Exponential backoff with "equal jitter": the n-th delay is drawn from `[c/2, c]` where
/// `c = min(base * 2^n, max)`. Half the delay is kept so that retries do spread out, the other
/// half is random so that clients hit by the same failure do not retry in lockstep.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The upper bound of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        // 2^20 * base is far above any sensible max: stop doubling there (no overflow).
        let factor = 1u32 << self.attempt.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay; advances the backoff.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter_nanos = rng.gen_range(0..=(ceiling - half).as_nanos() as u64);
        half + Duration::from_nanos(jitter_nanos)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn default_config_is_valid() {
        ClientConfig::default().validate().unwrap();
    }

    #[test]
    fn validate_names_the_field() {
        let config = ClientConfig {
            backoff_max: Duration::from_millis(1),
            ..ClientConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("backoff_max"), "{err}");
        let config = ClientConfig {
            max_batch_keys: 0,
            ..ClientConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("max_batch_keys"), "{err}");
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(7);
        let ceilings: Vec<u64> = (0..10)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay(&mut rng);
                assert!(
                    d >= c / 2 && d <= c,
                    "delay {d:?} outside [{:?}, {c:?}]",
                    c / 2
                );
                c.as_millis() as u64
            })
            .collect();
        assert_eq!(
            ceilings,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000],
            "doubling from the base, capped at the max"
        );
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(3600));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(3600));
    }

    #[test]
    fn backoff_jitter_spreads_delays() {
        let mut rng = StdRng::seed_from_u64(3);
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
                b.next_delay(&mut rng)
            })
            .collect();
        assert!(
            delays.len() > 10,
            "jitter should vary the delay: {delays:?}"
        );
    }
}
