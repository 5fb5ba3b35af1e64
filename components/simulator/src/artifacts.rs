//! What a failing seed leaves for a person: `seed-<n>.json` (the replay command, the
//! failures, the fault schedule and the whole history) and, for each history the
//! linearizability check refused, `seed-<n>-<key>.svg`: a timeline of the operations around
//! the one the search could not place, in the manner of Porcupine's visualisation.

use std::fmt::{Debug, Write as _};
use std::path::{Path, PathBuf};

use linearizability::{GroupInput, GroupOperation, Operation, Outcome};
use serde_json::{json, Value};

use crate::Report;

/// Writes the artifacts of `report` into `dir` (created if missing); returns their paths.
pub fn write_artifacts(dir: &Path, report: &Report, replay: &str) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let seed = report.seed;
    let json_path = dir.join(format!("seed-{seed}.json"));
    let text = serde_json::to_string_pretty(&to_json(report, replay))
        .map_err(|e| std::io::Error::other(format!("encoding seed {seed}'s report: {e}")))?;
    std::fs::write(&json_path, text)?;
    let mut paths = vec![json_path];
    for (key, outcome) in &report.violations {
        let bars: Vec<Bar> = match report.history.keys.get(key) {
            Some(ops) => ops.iter().map(single_bar).collect(),
            None => report.history.group.iter().map(group_bar).collect(),
        };
        let stuck = match outcome {
            Outcome::Violation { stuck } => Some(*stuck),
            _ => None,
        };
        let svg_path = dir.join(format!("seed-{seed}-{key}.svg"));
        std::fs::write(&svg_path, timeline(key, &bars, stuck))?;
        paths.push(svg_path);
    }
    Ok(paths)
}

fn op_json(call: u64, ret: Option<u64>, input: &impl Debug, output: &impl Debug) -> Value {
    json!({
        "call_ms": ms(call),
        "return_ms": ret.map(ms),
        "input": format!("{input:?}"),
        "output": format!("{output:?}"),
    })
}

fn to_json(report: &Report, replay: &str) -> Value {
    let keys: serde_json::Map<String, Value> = report
        .history
        .keys
        .iter()
        .map(|(key, ops)| {
            let ops: Vec<Value> = ops
                .iter()
                .map(|o| op_json(o.call, o.ret, &o.input, &o.output))
                .collect();
            (key.clone(), ops.into())
        })
        .collect();
    let group: Vec<Value> = report
        .history
        .group
        .iter()
        .map(|o| op_json(o.call, o.ret, &o.input, &o.output))
        .collect();
    json!({
        "seed": report.seed,
        "replay": replay,
        "failures": report.failures,
        "violations": report
            .violations
            .iter()
            .map(|(key, outcome)| json!({ "key": key, "outcome": format!("{outcome:?}") }))
            .collect::<Vec<_>>(),
        "events": report
            .events
            .iter()
            .map(|(at, event)| json!({ "at_ms": at, "event": format!("{event:?}") }))
            .collect::<Vec<_>>(),
        "workload": {
            "ok": report.workload.ok,
            "failed": report.workload.failed,
            "unknown": report.workload.unknown,
        },
        "history": { "keys": keys, "group": { "keys": crate::GROUP_KEYS, "ops": group } },
    })
}

/// One operation on the timeline: its call, its return (`None`: unknown outcome), a label.
struct Bar {
    call: u64,
    ret: Option<u64>,
    label: String,
    write: bool,
}

fn single_bar(op: &Operation<String>) -> Bar {
    Bar {
        call: op.call,
        ret: op.ret,
        label: format!("{:?} → {:?}", op.input, op.output),
        write: !matches!(op.input, linearizability::Input::Get),
    }
}

fn group_bar(op: &GroupOperation<String>) -> Bar {
    Bar {
        call: op.call,
        ret: op.ret,
        label: format!("{:?} → {:?}", op.input, op.output),
        write: !matches!(op.input, GroupInput::BatchGet(_)),
    }
}

/// A history time (half-milliseconds) in virtual ms.
fn ms(t: u64) -> f64 {
    t as f64 / 2.0
}

const WIDTH: f64 = 1400.0;
const LANE_HEIGHT: f64 = 22.0;
const TOP: f64 = 40.0;
/// Pixels a label's character takes (11 px monospace).
const CHAR_WIDTH: f64 = 6.7;
/// How far around the stuck operation the picture reaches, in history units (1.5 s, 0.5 s).
const BEFORE: u64 = 3_000;
const AFTER: u64 = 1_000;

/// The operations near `stuck` (all of them when there is none), each on the first lane free
/// at its call: the stuck one red, writes blue, reads green, unknown outcomes grey and open
/// to the right edge.
fn timeline(key: &str, bars: &[Bar], stuck: Option<usize>) -> String {
    let end_of = |b: &Bar| b.ret.unwrap_or(u64::MAX);
    let (from, to) = match stuck.and_then(|i| Some((i, bars.get(i)?))) {
        // The time before it, and at least the dozen operations before it however long ago.
        Some((i, b)) => (
            bars[i.saturating_sub(12)..i]
                .iter()
                .map(|b| b.call)
                .fold(b.call.saturating_sub(BEFORE), u64::min),
            b.ret.unwrap_or(b.call).saturating_add(AFTER),
        ),
        None => (
            bars.iter().map(|b| b.call).min().unwrap_or(0),
            bars.iter()
                .map(|b| b.ret.unwrap_or(b.call))
                .max()
                .unwrap_or(1),
        ),
    };
    let span = (to - from).max(1) as f64;
    let x = |t: u64| (t.clamp(from, to) - from) as f64 / span * WIDTH;
    let mut shown: Vec<(usize, &Bar)> = bars
        .iter()
        .enumerate()
        .filter(|(_, b)| b.call <= to && end_of(b) >= from)
        .collect();
    shown.sort_by_key(|(i, b)| (b.call, *i));
    // Lane i is free from pixel lanes[i] on: past the last bar there and its label.
    let mut lanes: Vec<f64> = Vec::new();
    let mut body = String::new();
    for (i, b) in &shown {
        let (x0, x1) = (x(b.call), x(b.ret.unwrap_or(to)));
        let label_end = x0 + 2.0 + (b.label.chars().count() + 5) as f64 * CHAR_WIDTH;
        let lane = match lanes.iter().position(|free| *free <= x0) {
            Some(lane) => lane,
            None => {
                lanes.push(0.0);
                lanes.len() - 1
            }
        };
        lanes[lane] = x1.max(label_end) + 4.0;
        let color = if Some(*i) == stuck {
            "#d62728"
        } else if b.ret.is_none() {
            "#999999"
        } else if b.write {
            "#1f77b4"
        } else {
            "#2ca02c"
        };
        let y = TOP + lane as f64 * LANE_HEIGHT;
        let _ = writeln!(
            body,
            r#"<g><title>#{i} {label} (call at {call} ms, return {ret})</title><rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{color}" fill-opacity="0.35" stroke="{color}"/><text x="{tx:.1}" y="{ty:.1}" font-size="11">#{i} {label}</text></g>"#,
            label = escape(&b.label),
            call = ms(b.call),
            ret = b
                .ret
                .map_or("unknown".to_string(), |r| format!("at {} ms", ms(r))),
            w = (x1 - x0).max(2.0),
            h = LANE_HEIGHT - 4.0,
            tx = x0 + 2.0,
            ty = y + LANE_HEIGHT - 9.0,
        );
    }
    let height = TOP + lanes.len().max(1) as f64 * LANE_HEIGHT + 10.0;
    let title = match stuck {
        Some(i) => format!(
            "{key}: no order explains the answers; operation #{i} (red) could not be placed before it returned. Virtual time {}..{} ms", ms(from), ms(to)
        ),
        None => format!(
            "{key}: the check did not finish. Virtual time {}..{} ms",
            ms(from),
            ms(to)
        ),
    };
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" font-family="monospace">
<text x="4" y="16" font-size="13">{title}</text>
<text x="4" y="32" font-size="11">blue: writes, green: reads, grey: outcome unknown (open to the right); hover for the whole operation</text>
{body}</svg>
"#,
        title = escape(&title),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use linearizability::{check_key, Input, Output, DEFAULT_STEP_BUDGET};

    use super::*;
    use crate::{Recorded, Report};

    #[test]
    fn a_violation_leaves_its_history_and_a_picture_of_it() {
        // Put 1 is acknowledged, then a later read finds nothing: no order explains that.
        let ops = vec![
            Operation::done(Input::Put("1".to_string()), Output::Done, 0, 10),
            Operation::done(Input::Get, Output::Value(None), 20, 30),
        ];
        let outcome = check_key(None, &ops, DEFAULT_STEP_BUDGET);
        assert!(matches!(outcome, Outcome::Violation { .. }), "{outcome:?}");
        let report = Report {
            seed: 7,
            events: Vec::new(),
            workload: Default::default(),
            bank: Default::default(),
            net: Default::default(),
            regions: 1,
            failures: vec!["key k0: violation".to_string()],
            fingerprint: 0,
            history: Recorded {
                keys: [("k0".to_string(), ops)].into_iter().collect(),
                group: Vec::new(),
            },
            violations: vec![("k0".to_string(), outcome)],
        };
        let dir = tempfile::tempdir().unwrap();
        let paths = write_artifacts(dir.path(), &report, "regionstore sim --seed 7").unwrap();
        assert_eq!(paths.len(), 2);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&paths[0]).unwrap()).unwrap();
        assert_eq!(json["seed"], 7);
        assert_eq!(json["replay"], "regionstore sim --seed 7");
        assert_eq!(json["history"]["keys"]["k0"].as_array().unwrap().len(), 2);
        let svg = std::fs::read_to_string(&paths[1]).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(
            svg.contains("#d62728"),
            "the stuck operation is marked: {svg}"
        );
    }
}
