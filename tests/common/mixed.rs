//! A workload for the process tests: tikv-client clients that share a few keys, doing
//! puts, gets, deletes and compare-and-swaps, and clients that write and read a group of keys
//! in one region only as a whole (batch put, batch get, scan), recorded in a [`History`] for
//! the linearizability checker (per key, and per group for batch atomicity).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tikv_client::{Backoff, RawClient};

use super::history::{History, Op};
use super::ProcCluster;

/// A tikv-client raw client whose retries ride out an election after a kill.
pub async fn tikv_client(cluster: &ProcCluster) -> RawClient {
    let config = tikv_client::Config::default().with_timeout(Duration::from_secs(10));
    RawClient::new_with_config(vec![cluster.pd.clone()], config)
        .await
        .expect("tikv-client connects")
        // Long enough to ride out an election after a kill.
        .with_backoff(Backoff::no_jitter_backoff(50, 1000, 40))
}

/// A client pauses this long after an error. Without retries, errors come fast while a
/// leader is down, and each unanswered write stays pending forever in the history: the
/// checker's search grows with their number.
const AFTER_ERROR: Duration = Duration::from_millis(100);

/// The workloads' client: atomic mode (writes take the CAS latches) and no retries. A
/// client that retries a write whose first attempt applied but whose answer was lost (a
/// reset connection, a killed leader) applies it twice, later than another client's write
/// in between: at-least-once, which no register explains (TiKV's raw API retries the same
/// way). Without retries such a write is an error, recorded as an unknown outcome.
fn once(raw: &RawClient) -> RawClient {
    raw.with_backoff(Backoff::no_backoff())
        .with_atomic_for_cas()
}

/// A register's value as the workloads write it (decimal u64; 0: absent or unreadable).
pub fn value_of(bytes: Option<Vec<u8>>) -> u64 {
    bytes
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub const SHARED_KEYS: usize = 3;
pub const MIXED_CLIENTS: usize = 4;

pub fn shared(k: usize) -> String {
    format!("shared-{k}")
}

/// Clients that share a few keys, each doing puts, gets, deletes and compare-and-swaps (all
/// `for_cas`, so the writes take the CAS latches) with values unique to the operation, until
/// `stop`. An error is an unknown outcome.
pub fn start_mixed(
    raw: &RawClient,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..MIXED_CLIENTS)
        .map(|c| {
            let (raw, history, stop) = (once(raw), history.clone(), stop.clone());
            tokio::spawn(async move {
                // The last value this client saw per key: what its CAS expects.
                let mut seen = [0u64; SHARED_KEYS];
                let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ (c as u64 + 1);
                for n in 1u64.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let k = (rng % SHARED_KEYS as u64) as usize;
                    let key = shared(k);
                    let value = (c as u64 + 1) << 40 | n;
                    let start = Instant::now();
                    let op = match (rng >> 8) % 8 {
                        0..=2 => match raw.get(key.clone()).await {
                            Ok(v) => {
                                seen[k] = value_of(v);
                                Op::Read { value: seen[k] }
                            }
                            // A read that failed says nothing.
                            Err(_) => {
                                tokio::time::sleep(AFTER_ERROR).await;
                                continue;
                            }
                        },
                        3 | 4 => Op::Write {
                            value,
                            ok: raw.put(key.clone(), value.to_string()).await.is_ok(),
                        },
                        5 => Op::Delete {
                            ok: raw.delete(key.clone()).await.is_ok(),
                        },
                        _ => {
                            let expect = seen[k];
                            let previous = (expect != 0).then(|| expect.to_string().into_bytes());
                            let (swapped, found) = match raw
                                .compare_and_swap(key.clone(), previous, value.to_string())
                                .await
                            {
                                Ok((prev, swapped)) => {
                                    let found = value_of(prev);
                                    seen[k] = if swapped { value } else { found };
                                    (Some(swapped), found)
                                }
                                Err(_) => (None, 0),
                            };
                            Op::Cas {
                                expect,
                                new: value,
                                swapped,
                                found,
                            }
                        }
                    };
                    let failed = matches!(
                        op,
                        Op::Write { ok: false, .. }
                            | Op::Delete { ok: false }
                            | Op::Cas { swapped: None, .. }
                    );
                    history.record(&key, op, start);
                    if failed {
                        tokio::time::sleep(AFTER_ERROR).await;
                    }
                }
            })
        })
        .collect()
}

/// Keys written and read only as a group, by batch puts, batch gets and scans; they sort
/// before every shared key, so one region holds them all (the tests split at shared keys).
pub const GROUP_KEYS: usize = 4;
pub const GROUP: &str = "batch";

fn group_key(k: usize) -> String {
    format!("{GROUP}-{k}")
}

/// Each of `keys` with its value among `pairs` (0: not found).
fn group_values(keys: &[String], pairs: &[tikv_client::KvPair]) -> Vec<(String, u64)> {
    keys.iter()
        .map(|k| {
            let v = pairs
                .iter()
                .find(|p| Vec::<u8>::from(p.key().clone()) == k.as_bytes())
                .map(|p| value_of(Some(p.value().clone())))
                .unwrap_or(0);
            (k.clone(), v)
        })
        .collect()
}

/// Clients that batch-put all the group's keys at once (one value per batch) and read them
/// back by batch get and by scan, until `stop`.
pub fn start_batches(
    raw: &RawClient,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..2u64)
        .map(|c| {
            let (raw, history, stop) = (once(raw), history.clone(), stop.clone());
            tokio::spawn(async move {
                let keys: Vec<String> = (0..GROUP_KEYS).map(group_key).collect();
                let read = |pairs: Vec<tikv_client::KvPair>| group_values(&keys, &pairs);
                for n in 1u64.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let start = Instant::now();
                    let op = match n % 3 {
                        0 => {
                            let value = (c + 100) << 40 | n;
                            let pairs: Vec<(String, u64)> =
                                keys.iter().map(|k| (k.clone(), value)).collect();
                            let ok = raw
                                .batch_put(
                                    pairs
                                        .iter()
                                        .map(|(k, v)| (k.clone(), v.to_string()))
                                        .collect::<Vec<_>>(),
                                )
                                .await
                                .is_ok();
                            Op::BatchPut { pairs, ok }
                        }
                        1 => match raw.batch_get(keys.clone()).await {
                            Ok(pairs) => Op::BatchRead {
                                values: read(pairs),
                            },
                            Err(_) => {
                                tokio::time::sleep(AFTER_ERROR).await;
                                continue;
                            }
                        },
                        _ => match raw
                            .scan(format!("{GROUP}-")..format!("{GROUP}."), 100)
                            .await
                        {
                            Ok(pairs) => Op::BatchRead {
                                values: read(pairs),
                            },
                            Err(_) => {
                                tokio::time::sleep(AFTER_ERROR).await;
                                continue;
                            }
                        },
                    };
                    let failed = matches!(op, Op::BatchPut { ok: false, .. });
                    history.record(GROUP, op, start);
                    if failed {
                        tokio::time::sleep(AFTER_ERROR).await;
                    }
                }
            })
        })
        .collect()
}

/// A read of every shared key, once the faults are healed, joins the history: the checker
/// then also sees whether every acknowledged write survived.
pub async fn final_reads(raw: &RawClient, history: &History) {
    let keys: Vec<String> = (0..GROUP_KEYS).map(group_key).collect();
    let start = Instant::now();
    let pairs = raw.batch_get(keys.clone()).await.expect("final batch read");
    let values = group_values(&keys, &pairs);
    history.record(GROUP, Op::BatchRead { values }, start);
    for k in 0..SHARED_KEYS {
        let key = shared(k);
        let start = Instant::now();
        let value = raw.get(key.clone()).await.expect("final read");
        history.record(
            &key,
            Op::Read {
                value: value_of(value),
            },
            start,
        );
    }
}

/// Checks the history; panics with `context` (how to replay) on a violation, or when too
/// little was acknowledged to mean anything. Returns (acknowledged writes, swaps, reads).
pub fn check_mixed(history: &History, context: &str) -> (usize, usize, usize) {
    let (reads, acked) = history
        .check()
        .unwrap_or_else(|e| panic!("not linearizable ({context}): {e}"));
    let swaps = history
        .events()
        .iter()
        .filter(|e| {
            matches!(
                e.op,
                Op::Cas {
                    swapped: Some(true),
                    ..
                }
            )
        })
        .count();
    let batches = history
        .events()
        .iter()
        .filter(|e| matches!(e.op, Op::BatchPut { ok: true, .. }))
        .count();
    assert!(
        acked > 50 && reads > 50 && swaps > 5 && batches > 5,
        "only {acked} acknowledged writes ({swaps} swaps, {batches} batches) and {reads} reads \
         ({context})"
    );
    (acked, swaps, reads)
}
