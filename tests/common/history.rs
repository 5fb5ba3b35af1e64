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
    /// Writes `new` if the key holds `expect`; `swapped` is the answer.
    Cas {
        expect: u64,
        new: u64,
        swapped: Option<bool>,
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
        let mut by_key: HashMap<String, Vec<Operation<u64>>> = HashMap::new();
        let mut originals: HashMap<String, Vec<&Event>> = HashMap::new();
        for e in &events {
            let op = match e.op {
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
                } => {
                    let input = Input::Cas {
                        expect: (expect != 0).then_some(expect),
                        new: Some(new),
                    };
                    match swapped {
                        Some(swapped) => {
                            acked += 1;
                            Operation::done(input, Output::Swapped(swapped), at(e.start), at(e.end))
                        }
                        None => Operation::unknown(input, at(e.start)),
                    }
                }
            };
            by_key.entry(e.key.clone()).or_default().push(op);
            originals.entry(e.key.clone()).or_default().push(e);
        }
        let failures = linearizability::check_history(by_key, linearizability::DEFAULT_STEP_BUDGET);
        if failures.is_empty() {
            return Ok((reads, acked));
        }
        Err(failures
            .iter()
            .map(|f| match f.outcome {
                linearizability::Outcome::Violation { stuck } => {
                    let e = originals[&f.key][stuck];
                    let ms = |t: Instant| t.saturating_duration_since(origin).as_secs_f64() * 1e3;
                    format!(
                        "{f}: {:?} from {:.3} ms to {:.3} ms",
                        e.op,
                        ms(e.start),
                        ms(e.end)
                    )
                }
                _ => f.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; "))
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
