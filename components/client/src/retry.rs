//! The retry budget of one operation: what may be retried, how long to wait, when to stop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Backoff, ClientConfig};
use crate::error::Error;

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A routing problem the cache has dealt with: retry at once (`now`) or after a backoff
    /// of at least `hint`.
    Retry {
        cause: Error,
        now: bool,
        hint: Option<Duration>,
    },
    /// The request got no answer. `maybe_sent`: it may have reached the server.
    Transport { cause: Error, maybe_sent: bool },
    /// Retrying cannot help.
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fatal(e)
    }
}

/// How long to wait before the next attempt, before combining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pause {
    Now,
    Backoff(Option<Duration>),
}

/// Immediate retries in a row before backing off anyway: a store that keeps answering with
/// "new" routing information that does not help must not be hammered.
const MAX_IMMEDIATE_RETRIES: u32 = 2;

/// Retry state of one operation.
pub(crate) struct RetryState<'a> {
    op: &'static str,
    max_retry_time: Duration,
    counter: &'a AtomicU64,
    logger: &'a slog::Logger,
    backoff: Backoff,
    base: Backoff,
    retries: u32,
    /// When the current run of failures began; `None` while requests succeed.
    failing_since: Option<Instant>,
    immediate_in_a_row: u32,
    last: Option<Error>,
}

impl<'a> RetryState<'a> {
    pub fn new(op: &'static str, config: &'a ClientConfig, counter: &'a AtomicU64) -> Self {
        let backoff = Backoff::new(config.backoff_base, config.backoff_max);
        RetryState {
            op,
            max_retry_time: config.max_retry_time,
            counter,
            logger: &config.logger,
            base: backoff.clone(),
            backoff,
            retries: 0,
            failing_since: None,
            immediate_in_a_row: 0,
            last: None,
        }
    }

    /// A KV request succeeded: the retry budget and the backoff start over. (A PD answer
    /// does not count: a region that fails after every fresh lookup must still give up.)
    pub fn progress(&mut self) {
        self.failing_since = None;
        self.immediate_in_a_row = 0;
        self.backoff = self.base.clone();
    }

    /// Decides whether `failure` may be retried; if so counts the retry and says how long to
    /// pause. `idempotent`: whether sending the request twice is harmless.
    pub fn admit(&mut self, failure: Failure, idempotent: bool) -> Result<Pause, Error> {
        let (cause, pause) = match failure {
            Failure::Fatal(e) => return Err(e),
            Failure::Transport { cause, maybe_sent } => {
                if maybe_sent && !idempotent {
                    return Err(Error::Undetermined {
                        op: self.op,
                        source: Box::new(cause),
                    });
                }
                (cause, Pause::Backoff(None))
            }
            Failure::Retry {
                cause, now: true, ..
            } => (cause, Pause::Now),
            Failure::Retry { cause, hint, .. } => (cause, Pause::Backoff(hint)),
        };
        self.failing_since.get_or_insert_with(Instant::now);
        self.retries += 1;
        self.counter.fetch_add(1, Ordering::Relaxed);
        slog::debug!(self.logger, "retrying"; "op" => self.op, "retry" => self.retries, "cause" => %cause);
        self.last = Some(cause);
        Ok(pause)
    }

    /// Waits as the admitted failures ask (the longest of them), or gives up when that would
    /// take the current run of failures past `max_retry_time`.
    pub async fn pause(&mut self, pauses: impl IntoIterator<Item = Pause>) -> Result<(), Error> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let mut backoff = false;
        let mut hint = Duration::ZERO;
        for p in pauses {
            if let Pause::Backoff(h) = p {
                backoff = true;
                hint = hint.max(h.unwrap_or_default());
            }
        }
        if !backoff && self.immediate_in_a_row < MAX_IMMEDIATE_RETRIES {
            self.immediate_in_a_row += 1;
            if since.elapsed() > self.max_retry_time {
                return Err(self.give_up(since));
            }
            return Ok(());
        }
        self.immediate_in_a_row = 0;
        let delay = self.backoff.next_delay(&mut rand::thread_rng()).max(hint);
        if since.elapsed() + delay > self.max_retry_time {
            return Err(self.give_up(since));
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    fn give_up(&mut self, since: Instant) -> Error {
        let last = self.last.take().unwrap_or_else(|| Error::NotFound {
            what: "no failure recorded".into(),
        });
        Error::RetriesExhausted {
            op: self.op,
            retries: self.retries,
            elapsed: since.elapsed(),
            last: Box::new(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_retry_time: Duration) -> ClientConfig {
        ClientConfig {
            max_retry_time,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            ..ClientConfig::default()
        }
    }

    fn busy() -> Failure {
        Failure::Retry {
            cause: Error::Region {
                method: "RawGet",
                region_id: 1,
                message: "server is busy".into(),
            },
            now: false,
            hint: None,
        }
    }

    fn transport(maybe_sent: bool) -> Failure {
        Failure::Transport {
            cause: Error::Timeout {
                method: "RawCompareAndSwap",
                target: "store 1".into(),
                timeout: Duration::from_secs(1),
            },
            maybe_sent,
        }
    }

    #[tokio::test]
    async fn retries_are_counted_then_given_up() {
        let config = config(Duration::from_millis(50));
        let counter = AtomicU64::new(0);
        let mut state = RetryState::new("get", &config, &counter);
        let err = loop {
            let pause = state.admit(busy(), true).unwrap();
            if let Err(e) = state.pause([pause]).await {
                break e;
            }
        };
        let retries = counter.load(Ordering::Relaxed);
        assert!(retries >= 5, "{retries}");
        match err {
            Error::RetriesExhausted {
                op,
                retries: r,
                last,
                ..
            } => {
                assert_eq!(op, "get");
                assert_eq!(u64::from(r), retries);
                assert!(last.to_string().contains("server is busy"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn progress_restarts_the_budget() {
        let config = config(Duration::from_millis(30));
        let counter = AtomicU64::new(0);
        let mut state = RetryState::new("scan", &config, &counter);
        for _ in 0..20 {
            let pause = state.admit(busy(), true).unwrap();
            state.pause([pause]).await.unwrap();
            // Every attempt after the pause succeeds for one region of the scan.
            state.progress();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 20);
    }

    #[tokio::test]
    async fn immediate_retries_are_bounded() {
        let config = ClientConfig {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(20),
            ..config(Duration::from_secs(5))
        };
        let counter = AtomicU64::new(0);
        let mut state = RetryState::new("put", &config, &counter);
        let start = Instant::now();
        for _ in 0..MAX_IMMEDIATE_RETRIES {
            state.pause([Pause::Now]).await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_millis(10));
        state.pause([Pause::Now]).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(10),
            "third immediate retry waits"
        );
    }

    #[tokio::test]
    async fn server_hint_lengthens_the_pause() {
        let config = config(Duration::from_secs(5));
        let counter = AtomicU64::new(0);
        let mut state = RetryState::new("put", &config, &counter);
        let start = Instant::now();
        state
            .pause([Pause::Now, Pause::Backoff(Some(Duration::from_millis(30)))])
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn fatal_and_ambiguous_failures_are_not_retried() {
        let config = config(Duration::from_secs(5));
        let counter = AtomicU64::new(0);
        let mut state = RetryState::new("compare_and_swap", &config, &counter);
        let fatal = Failure::Fatal(Error::Server {
            method: "RawPut",
            region_id: 1,
            message: "undetermined".into(),
        });
        assert!(matches!(
            state.admit(fatal, true),
            Err(Error::Server { .. })
        ));
        assert!(matches!(
            state.admit(transport(true), false),
            Err(Error::Undetermined {
                op: "compare_and_swap",
                ..
            })
        ));
        // Never sent, or harmless to repeat: retried.
        assert_eq!(
            state.admit(transport(false), false).unwrap(),
            Pause::Backoff(None)
        );
        assert_eq!(
            state.admit(transport(true), true).unwrap(),
            Pause::Backoff(None)
        );
        assert_eq!(counter.load(Ordering::Relaxed), 2);
    }
}
