//! The clients' history of a process test, judged by the `linearizability` crate's checker
//! (a register per key; a write that failed may take effect at any later moment, or never).
//!
//! The workloads today give each key one writer of increasing values, and a writer leaves a
//! key alone after a failed write; the checker needs neither.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One operation on a key; values are u64s, 0 standing for "absent". `ok: false` (or an
/// outcome of `None`) means no answer came: the operation may or may not have applied.
#[derive(Clone, Debug)]
pub enum Op {
    Write {
        value: u64,
        ok: bool,
    },
    Read {
        value: u64,
    },
    Delete {
        ok: bool,
    },
    /// Writes `new` if the key holds `expect`; `swapped` is the answer, and `found` what a
    /// CAS that did not swap found there.
    Cas {
        expect: u64,
        new: u64,
        swapped: Option<bool>,
        found: u64,
    },
    /// Writes every (key, value) of a group at once (recorded under the group's name).
    BatchPut {
        pairs: Vec<(String, u64)>,
        ok: bool,
    },
    /// Reads every key of a group at once: a batch get or a scan (under the group's name).
    BatchRead {
        values: Vec<(String, u64)>,
    },
}

#[derive(Clone, Debug)]
pub struct Event {
    pub key: String,
    pub op: Op,
    pub start: Instant,
    pub end: Instant,
}

#[derive(Default)]
pub struct History {
    events: Mutex<Vec<Event>>,
}

impl History {
    pub fn record(&self, key: &str, op: Op, start: Instant) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Event {
                key: key.to_string(),
                op,
                start,
                end: Instant::now(),
            });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks every key; returns (reads checked, acknowledged writes) or the violations.
    pub fn check(&self) -> Result<(usize, usize), String> {
        use linearizability::{Input, Operation, Output};
        let events = self.events();
        let Some(origin) = events.iter().map(|e| e.start).min() else {
            return Ok((0, 0));
        };
        let at = |t: Instant| t.saturating_duration_since(origin).as_nanos() as u64;
        let (mut reads, mut acked) = (0, 0);
        let mut groups: HashMap<String, Vec<&Event>> = HashMap::new();
        let mut by_key: HashMap<String, Vec<Operation<u64>>> = HashMap::new();
        let mut originals: HashMap<String, Vec<&Event>> = HashMap::new();
        for e in &events {
            let op = match e.op {
                Op::BatchPut { ok, .. } => {
                    acked += usize::from(ok);
                    groups.entry(e.key.clone()).or_default().push(e);
                    continue;
                }
                Op::BatchRead { .. } => {
                    reads += 1;
                    groups.entry(e.key.clone()).or_default().push(e);
                    continue;
                }
                Op::Write { value, ok: true } => {
                    acked += 1;
                    Operation::done(Input::Put(value), Output::Done, at(e.start), at(e.end))
                }
                Op::Write { value, ok: false } => {
                    Operation::unknown(Input::Put(value), at(e.start))
                }
                Op::Read { value } => {
                    reads += 1;
                    let seen = (value != 0).then_some(value);
                    Operation::done(Input::Get, Output::Value(seen), at(e.start), at(e.end))
                }
                Op::Delete { ok: true } => {
                    acked += 1;
                    Operation::done(Input::Delete, Output::Done, at(e.start), at(e.end))
                }
                Op::Delete { ok: false } => Operation::unknown(Input::Delete, at(e.start)),
                Op::Cas {
                    expect,
                    new,
                    swapped,
                    found,
                } => {
                    let input = Input::Cas {
                        expect: (expect != 0).then_some(expect),
                        new: Some(new),
                    };
                    match swapped {
                        Some(swapped) => {
                            acked += 1;
                            let output = if swapped {
                                Output::Swapped(true)
                            } else {
                                Output::NotSwapped((found != 0).then_some(found))
                            };
                            Operation::done(input, output, at(e.start), at(e.end))
                        }
                        None => Operation::unknown(input, at(e.start)),
                    }
                }
            };
            by_key.entry(e.key.clone()).or_default().push(op);
            originals.entry(e.key.clone()).or_default().push(e);
        }
        let failures = linearizability::check_history(by_key, linearizability::DEFAULT_STEP_BUDGET);
        let mut group_failures = Vec::new();
        for (group, events) in groups {
            if let Err(e) = check_group(&group, &events, at) {
                group_failures.push(e);
            }
        }
        if failures.is_empty() && group_failures.is_empty() {
            return Ok((reads, acked));
        }
        Err(group_failures
            .into_iter()
            .chain(failures.iter().map(|f| match f.outcome {
                linearizability::Outcome::Violation { stuck } => {
                    let ms = |t: Instant| t.saturating_duration_since(origin).as_secs_f64() * 1e3;
                    let key_events = &originals[&f.key];
                    let e = key_events[stuck];
                    // The key's whole history, for a person to read.
                    let path = std::env::temp_dir().join(format!(
                        "history-{}-{}.txt",
                        f.key,
                        std::process::id()
                    ));
                    let mut sorted = key_events.clone();
                    sorted.sort_by_key(|e| e.start);
                    let text: String = sorted
                        .iter()
                        .map(|e| format!("{:>10.3} {:>10.3} {:?}\n", ms(e.start), ms(e.end), e.op))
                        .collect();
                    let written = std::fs::write(&path, text).is_ok();
                    format!(
                        "{f}: {:?} from {:.3} ms to {:.3} ms (history{}: {})",
                        e.op,
                        ms(e.start),
                        ms(e.end),
                        if written { "" } else { " not written" },
                        path.display()
                    )
                }
                _ => f.to_string(),
            }))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// A group's batch operations checked as one object: each batch put all or nothing, each
/// batch read one moment's values.
fn check_group(group: &str, events: &[&Event], at: impl Fn(Instant) -> u64) -> Result<(), String> {
    use linearizability::{GroupInput, GroupOperation, GroupOutput, Output};
    let mut names: Vec<&str> = events
        .iter()
        .flat_map(|e| match &e.op {
            Op::BatchPut { pairs: kv, .. } | Op::BatchRead { values: kv } => {
                kv.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let index = |k: &str| names.binary_search(&k).unwrap_or_default();
    let ops: Vec<GroupOperation<u64>> = events
        .iter()
        .filter_map(|e| {
            let (input, output) = match &e.op {
                Op::BatchPut { pairs, ok } => (
                    GroupInput::BatchPut(pairs.iter().map(|(k, v)| (index(k), *v)).collect()),
                    ok.then_some(GroupOutput::One(Output::Done)),
                ),
                Op::BatchRead { values } => (
                    GroupInput::BatchGet(values.iter().map(|(k, _)| index(k)).collect()),
                    Some(GroupOutput::Values(
                        values
                            .iter()
                            .map(|(_, v)| (*v != 0).then_some(*v))
                            .collect(),
                    )),
                ),
                _ => return None,
            };
            let ret = output.is_some().then(|| at(e.end));
            Some(GroupOperation {
                input,
                output,
                call: at(e.start),
                ret,
            })
        })
        .collect();
    match linearizability::check_group(names.len(), &ops, linearizability::DEFAULT_STEP_BUDGET) {
        linearizability::Outcome::Linearizable => Ok(()),
        linearizability::Outcome::Violation { stuck } => Err(format!(
            "group {group:?} ({} keys, {} batch operations): not linearizable; no order places \
             {:?} before its return",
            names.len(),
            ops.len(),
            events[stuck].op
        )),
        other => Err(format!("group {group:?}: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_checker_finds_stale_and_future_reads() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ev = |op, s, e| Event {
            key: "k".into(),
            op,
            start: at(s),
            end: at(e),
        };
        let h = |events: Vec<Event>| History {
            events: Mutex::new(events),
        };
        let good = h(vec![
            ev(Op::Write { value: 1, ok: true }, 0, 10),
            ev(Op::Read { value: 1 }, 11, 12),
            ev(
                Op::Write {
                    value: 2,
                    ok: false,
                },
                20,
                30,
            ),
            ev(Op::Read { value: 1 }, 31, 32),
            ev(Op::Read { value: 2 }, 40, 41),
        ]);
        assert!(good.check().is_ok());
        let stale = h(vec![
            ev(Op::Write { value: 1, ok: true }, 0, 10),
            ev(Op::Read { value: 0 }, 11, 12),
        ]);
        assert!(stale.check().unwrap_err().contains("not linearizable"));
        let future = h(vec![
            ev(Op::Read { value: 1 }, 0, 1),
            ev(Op::Write { value: 1, ok: true }, 5, 10),
        ]);
        assert!(future.check().unwrap_err().contains("not linearizable"));
        let back = h(vec![
            ev(Op::Write { value: 1, ok: true }, 0, 10),
            ev(
                Op::Write {
                    value: 2,
                    ok: false,
                },
                10,
                20,
            ),
            ev(Op::Read { value: 2 }, 21, 22),
            ev(Op::Read { value: 1 }, 23, 24),
        ]);
        assert!(back.check().unwrap_err().contains("not linearizable"));
    }
}
