//! The store and the scheduler read time only through `util::Clock`, so a test (or a
//! simulator) that hands them a manual clock decides every time they act on. This scans their
//! sources, test modules excepted, for direct reads of the system's clocks and for waits that
//! would decide behaviour in real time.

use std::path::{Path, PathBuf};

/// The sources held to the rule.
const SCANNED: &[&str] = &["raftstore/src", "scheduler/src"];

/// What reads time, or waits in real time, around the clock.
const FORBIDDEN: &[&str] = &[
    "Instant::now(",
    "SystemTime::now(",
    ".elapsed(",
    "recv_timeout(",
    "tokio::time::sleep",
    "tokio::time::timeout",
    "thread::sleep(",
];

/// (file, pattern, why it may stay).
const ALLOWED: &[(&str, &str, &str)] = &[(
    "raftstore/src/system.rs",
    "recv_timeout(",
    "the tick thread paces real time; what a tick does is decided by the peers, with the \
     clock they are given (a simulator sends ticks itself)",
)];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every forbidden use under `root/<dir>` for each of `dirs`, as "file:line: pattern in `..`".
fn violations(root: &Path, dirs: &[&str]) -> (usize, Vec<String>) {
    let mut found = Vec::new();
    let mut scanned = 0;
    for dir in dirs {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for file in files {
            scanned += 1;
            let rel = file
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&file).expect("read source");
            // Unit tests sit at the end of a file, after `#[cfg(test)]`: they may use real time.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                for pattern in FORBIDDEN {
                    let allowed = ALLOWED.iter().any(|(f, p, _)| *f == rel && p == pattern);
                    if line.contains(pattern) && !allowed {
                        found.push(format!("{rel}:{}: {pattern} in `{line}`", n + 1));
                    }
                }
            }
        }
    }
    (scanned, found)
}

/// The crate's directory as the test runner gives it, else as it was at build time. The
/// runtime one first: checkouts sharing a target dir can reuse a test binary built from
/// another checkout, whose compiled-in path may be gone or hold other sources.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn time_is_read_only_through_the_clock() {
    let crate_dir = manifest_dir();
    let components = crate_dir.parent().expect("components dir");
    let (scanned, found) = violations(components, SCANNED);
    assert!(
        scanned > 20,
        "scanned only {scanned} files: wrong directory?"
    );
    assert!(
        found.is_empty(),
        "read time through util::Clock (the component's ClockRef) instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_finds_a_direct_read_but_not_in_tests_or_comments() {
    let root = std::env::temp_dir().join(format!("clock-scan-{}", std::process::id()));
    let src = root.join("store/src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(
        src.join("lib.rs"),
        "// Instant::now() in a comment\nfn f() {\n    let t = std::time::Instant::now();\n}\n\
         #[cfg(test)]\nmod tests { fn g() { std::thread::sleep(D); } }\n",
    )
    .expect("write");
    let (scanned, found) = violations(&root, &["store/src"]);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(scanned, 1);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("store/src/lib.rs:3: Instant::now("),
        "{found:?}"
    );
}
