//! `regionstore bench` end to end, small: a kv run against a cluster it starts writes a result
//! file and a plot with real numbers, and `bench compare` reads them back.

mod common;

use std::process::Command;

use common::{free_offset, BIN};

#[test]
fn bench_kv_runs_against_its_own_cluster_and_compare_reads_the_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    let offset = free_offset().to_string();
    let run = Command::new(BIN)
        .args([
            "bench",
            "kv",
            "--quiet",
            "--duration-secs",
            "2",
            "--keys",
            "200",
        ])
        .args([
            "--regions",
            "2",
            "--concurrency",
            "4",
            "--read-ratio",
            "0.5",
        ])
        .args(["--name", "smoke", "--port-offset", &offset])
        .arg("--cluster-dir")
        .arg(dir.path().join("cluster"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json = out.join("smoke.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("result file"))
            .expect("result is JSON");
    let summary = &report["summary"];
    assert!(summary["ops"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert_eq!(summary["errors"].as_u64(), Some(0), "{summary}");
    assert!(summary["p99_us"].as_u64().unwrap_or(0) > 0);
    assert_eq!(report["samples"].as_array().map(Vec::len), Some(2));
    let svg = std::fs::read_to_string(out.join("smoke.svg")).expect("plot");
    assert!(svg.starts_with("<svg") && svg.contains("throughput"));

    let compare = Command::new(BIN)
        .args(["bench", "compare"])
        .arg(&json)
        .arg(&json)
        .output()
        .expect("run compare");
    let table = String::from_utf8_lossy(&compare.stdout);
    assert!(compare.status.success());
    let ops_row = table
        .lines()
        .find(|l| l.starts_with("ops/s"))
        .expect("ops row");
    assert!(ops_row.trim_end().ends_with("1.00"), "{table}");
}

#[test]
fn bench_txn_runs_every_mode_and_checks_the_bank_total() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    let offset = free_offset().to_string();
    let run = Command::new(BIN)
        .args(["bench", "txn", "--quiet", "--duration-secs", "1"])
        .args(["--accounts", "200", "--regions", "2", "--concurrency", "4"])
        .args(["--name", "txn-smoke", "--port-offset", &offset])
        .arg("--cluster-dir")
        .arg(dir.path().join("cluster"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("bank total: 200000 (expected 200000) OK"),
        "{stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("txn-smoke.json")).expect("result file"),
    )
    .expect("result is JSON");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{report}");
    for r in results {
        assert!(r["txn_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    }
}
