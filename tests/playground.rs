//! `regionstore playground` as a newcomer runs it: it starts, `ctl` puts and gets, Ctrl-C
//! stops it cleanly, and a second run finds the data again.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_offset, BIN};
use test_cluster::wait_for;

fn start(dir: &std::path::Path, offset: u16) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["playground", "--dir"])
        .arg(dir)
        .args(["--port-offset", &offset.to_string()])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start the playground");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
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
            Ok(line) if line.contains("playground is running") => return (child, rx),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the playground did not say it is running within 180 s: {status:?}");
            }
        }
    }
}

fn ctl(pd: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["ctl", "--pd", pd])
        .args(args)
        .output()
        .expect("run ctl");
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stop(mut child: Child, rx: mpsc::Receiver<String>) {
    common::signal(&child, libc::SIGINT);
    let status = wait_for("the playground stops", Duration::from_secs(60), || {
        child.try_wait().expect("wait")
    });
    let said: Vec<String> = rx.try_iter().collect();
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
