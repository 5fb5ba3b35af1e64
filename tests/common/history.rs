//! A per-key register history and its linearizability check, for a workload where each key
//! has one writer that writes increasing values (1, 2, 3, ...) one at a time.
//!
//! A write that failed may still take effect at any later moment (it is pending forever), so
//! after a failed write the writer leaves that key alone: each key's history is acknowledged
//! writes v1 < v2 < ... < vk, then at most one pending write. With unique values, the history
//! is linearizable iff every read of value x (0 = not found):
//! - returns 0 or a value that was written;
//! - returns nothing written after it ended (the write of x started before the read ended);
//! - returns nothing older than the newest write acknowledged before the read started;
//! - does not go back: a read that starts after another read ended returns >= its value.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Debug)]
pub enum Op {
    Write { value: u64, ok: bool },
    Read { value: u64 },
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

    /// Checks every key; returns (reads checked, acknowledged writes) or the first violation.
    pub fn check(&self) -> Result<(usize, usize), String> {
        let mut by_key: HashMap<String, Vec<Event>> = HashMap::new();
        for e in self.events() {
            by_key.entry(e.key.clone()).or_default().push(e);
        }
        let (mut reads_checked, mut acked) = (0, 0);
        for (key, events) in by_key {
            let writes: Vec<&Event> = events
                .iter()
                .filter(|e| matches!(e.op, Op::Write { .. }))
                .collect();
            let written = |x: u64| {
                writes
                    .iter()
                    .find(|w| matches!(w.op, Op::Write { value, .. } if value == x))
                    .copied()
            };
            let mut reads: Vec<(&Event, u64)> = events
                .iter()
                .filter_map(|e| match e.op {
                    Op::Read { value } => Some((e, value)),
                    _ => None,
                })
                .collect();
            acked += writes
                .iter()
                .filter(|w| matches!(w.op, Op::Write { ok: true, .. }))
                .count();
            for (read, x) in &reads {
                if *x != 0 {
                    let Some(w) = written(*x) else {
                        return Err(format!("{key}: read {x}, which was never written"));
                    };
                    if w.start > read.end {
                        return Err(format!(
                            "{key}: read {x} before its write started ({:?} after the read ended)",
                            w.start - read.end
                        ));
                    }
                }
                let newest_done = writes
                    .iter()
                    .filter_map(|w| match w.op {
                        Op::Write { value, ok: true } if w.end < read.start => Some(value),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                if *x < newest_done {
                    return Err(format!(
                        "{key}: stale read of {x}; {newest_done} was acknowledged before the read began"
                    ));
                }
                reads_checked += 1;
            }
            reads.sort_by_key(|(r, _)| r.start);
            for (i, (later, y)) in reads.iter().enumerate() {
                for (earlier, x) in &reads[..i] {
                    if earlier.end < later.start && y < x {
                        return Err(format!(
                            "{key}: read {y} after an earlier read had returned {x}"
                        ));
                    }
                }
            }
        }
        Ok((reads_checked, acked))
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
        assert!(stale.check().unwrap_err().contains("stale"));
        let future = h(vec![
            ev(Op::Read { value: 1 }, 0, 1),
            ev(Op::Write { value: 1, ok: true }, 5, 10),
        ]);
        assert!(future.check().unwrap_err().contains("before its write"));
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
        assert!(back.check().unwrap_err().contains("earlier read"));
    }
}
