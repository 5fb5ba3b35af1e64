//! `regionstore playground` as a newcomer runs it: it starts, `ctl` puts and gets, Ctrl-C
//! stops it cleanly, and a second run finds the data again.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ctl, free_offset, BIN};
use test_cluster::wait_for;

fn start(dir: &std::path::Path, offset: u16) -> (Child, mpsc::Receiver<String>) {
    start_with(dir, offset, &[])
}

/// The playground with `args` added, once it says it is running; its lines so far are the
/// first ones `rx` gives.
fn start_with(
    dir: &std::path::Path,
    offset: u16,
    args: &[&str],
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["playground", "--dir"])
        .arg(dir)
        .args(["--port-offset", &offset.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start the playground");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let (seen_tx, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Longer than the playground's own wait for replicas (120 s), so a slow machine shows as
    // its warning, not as this timeout.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("playground is running") => {
                let _ = seen_tx.send(line);
                // The rest of the usage text, then whatever comes later.
                std::thread::spawn(move || {
                    for line in rx {
                        if seen_tx.send(line).is_err() {
                            return;
                        }
                    }
                });
                return (child, seen);
            }
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the playground did not say it is running within 180 s: {status:?}");
            }
        }
    }
}

fn stop(mut child: Child, rx: mpsc::Receiver<String>) {
    common::signal(&child, libc::SIGINT);
    let status = wait_for("the playground stops", Duration::from_secs(60), || {
        child.try_wait().expect("wait")
    });
    // Its last lines, until its stdout closes (bounded: 10 s without a line).
    let said: Vec<String> =
        std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(10)).ok()).collect();
    assert!(status.success(), "exit {status}: {said:?}");
    assert!(
        said.iter().any(|l| l.contains("stopped; the data stays")),
        "{said:?}"
    );
    assert!(!said.iter().any(|l| l.contains("killing")), "{said:?}");
}

#[test]
fn playground_starts_serves_ctl_and_stops_cleanly_then_reuses_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let offset = free_offset();
    let pd = format!("127.0.0.1:{}", 2379 + offset);
    let (child, rx) = start(dir.path(), offset);
    // As a newcomer would, right after "running": operators are accepted at once, and each
    // `ctl split` returns only once its split has happened.
    for key in ["g", "m", "t"] {
        let said = ctl(&pd, &["split", key]);
        assert!(said.ends_with("finished"), "split {key}: {said}");
    }
    assert!(
        ctl(&pd, &["regions"]).ends_with("(4 regions)"),
        "{}",
        ctl(&pd, &["regions"])
    );
    assert_eq!(ctl(&pd, &["put", "hello", "world"]), "OK");
    assert_eq!(ctl(&pd, &["get", "hello"]), "world");
    assert_eq!(ctl(&pd, &["get", "nobody"]), "(not found)");
    assert!(ctl(&pd, &["stores"]).lines().count() == 3);
    stop(child, rx);

    let (child, rx) = start(dir.path(), offset);
    assert_eq!(ctl(&pd, &["get", "hello"]), "world");
    assert!(ctl(&pd, &["regions"]).ends_with("(4 regions)"));
    stop(child, rx);
}

/// `--store-config` lays settings over the playground's: here API version 1ttl, which
/// tikv-client's TTL calls then use; the usage text names the version and its example; a bad
/// file stops the playground before anything starts.
#[test]
fn a_store_config_overlay_chooses_the_api_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let overlay = dir.path().join("overlay.toml");
    std::fs::write(
        &overlay,
        "api-version = \"1ttl\"\n[raftstore]\nstore-pool-size = 1\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "api-version = \"3\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["playground", "--dir"])
        .arg(dir.path().join("never"))
        .args(["--store-config"])
        .arg(&bad)
        .output()
        .expect("run the playground");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("unknown API version"),
        "{err}"
    );
    assert!(!dir.path().join("never").exists(), "nothing started");

    let offset = free_offset();
    let pd = format!("127.0.0.1:{}", 2379 + offset);
    let data = dir.path().join("cluster");
    let overlay_arg = overlay.display().to_string();
    let (child, rx) = start_with(
        &data,
        offset,
        &["--stores", "1", "--store-config", &overlay_arg],
    );
    let usage: Vec<String> = (0..30)
        .map_while(|_| rx.recv_timeout(Duration::from_secs(5)).ok())
        .take_while(|l| !l.contains("Ctrl-C stops"))
        .collect();
    assert!(usage[0].contains("API version 1ttl"), "{usage:?}");
    assert!(
        usage.iter().any(|l| l.contains("put_with_ttl")),
        "{usage:?}"
    );
    let written = std::fs::read_to_string(data.join("store-1/store.toml")).unwrap();
    assert!(written.contains("api-version = \"1ttl\""), "{written}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let raw = tikv_client::RawClient::new(vec![pd.clone()]).await.unwrap();
        raw.put_with_ttl("k".to_owned(), "v".to_owned(), 100)
            .await
            .unwrap();
        let ttl = raw.get_key_ttl_secs("k".to_owned()).await.unwrap();
        assert!(matches!(ttl, Some(99..=100)), "{ttl:?}");
    });
    stop(child, rx);
}
