//! A workload for the process tests: tikv-client clients that share a few keys, doing
//! puts, gets, deletes and compare-and-swaps, recorded in a [`History`] for the
//! linearizability checker.

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
            let (raw, history, stop) = (raw.with_atomic_for_cas(), history.clone(), stop.clone());
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
                            Err(_) => continue,
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
                            let swapped = match raw
                                .compare_and_swap(key.clone(), previous, value.to_string())
                                .await
                            {
                                // The client retries a CAS whose answer was lost; the retry
                                // then finds this CAS's own value and says "not swapped".
                                Ok((prev, false)) if value_of(prev.clone()) == value => None,
                                Ok((prev, swapped)) => {
                                    seen[k] = if swapped { value } else { value_of(prev) };
                                    Some(swapped)
                                }
                                Err(_) => None,
                            };
                            Op::Cas {
                                expect,
                                new: value,
                                swapped,
                            }
                        }
                    };
                    history.record(&key, op, start);
                }
            })
        })
        .collect()
}

/// A read of every shared key, once the faults are healed, joins the history: the checker
/// then also sees whether every acknowledged write survived.
pub async fn final_reads(raw: &RawClient, history: &History) {
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
    assert!(
        acked > 50 && reads > 50 && swaps > 5,
        "only {acked} acknowledged writes ({swaps} swaps) and {reads} reads ({context})"
    );
    (acked, swaps, reads)
}
