//! `scripts/prune-target.sh`, run by `make test` before building, keeps the newest test or
//! bench binary of each name (debug and release apart) and the recent incremental caches, and
//! removes the rest: run on a fake target dir.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    // The runner's directory first: a binary reused from another checkout sharing the
    // target dir has that checkout's path compiled in.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("scripts/prune-target.sh")
}

fn file(path: &Path, executable: bool, age: &str) {
    std::fs::write(path, b"x").unwrap();
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let touched = Command::new("touch")
        .args(["-d", age])
        .arg(path)
        .status()
        .unwrap();
    assert!(touched.success());
}

#[test]
fn keeps_the_newest_binary_of_each_name_and_recent_caches() {
    let dir = tempfile::tempdir().unwrap();
    let deps = dir.path().join("debug/deps");
    let incremental = dir.path().join("debug/incremental");
    std::fs::create_dir_all(&deps).unwrap();
    std::fs::create_dir_all(incremental.join("old-abc")).unwrap();
    std::fs::create_dir_all(incremental.join("new-def")).unwrap();
    file(&deps.join("process_kv-aaa"), true, "2 hours ago");
    file(&deps.join("process_kv-aaa.d"), false, "2 hours ago");
    file(&deps.join("process_kv-bbb"), true, "1 hour ago");
    file(&deps.join("split-ccc"), true, "3 days ago");
    file(&deps.join("libengine-ddd.rlib"), false, "3 days ago");
    file(&deps.join("libengine-eee.rlib"), false, "1 hour ago");
    let release = dir.path().join("release/deps");
    std::fs::create_dir_all(&release).unwrap();
    file(&release.join("append-aaa"), true, "2 hours ago");
    file(&release.join("append-bbb"), true, "1 hour ago");
    // A debug binary of the same name is counted apart.
    file(&deps.join("append-ccc"), true, "3 hours ago");
    let old = incremental.join("old-abc");
    let touched = Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());

    let out = Command::new("bash")
        .arg(script())
        .env("CARGO_TARGET_DIR", dir.path())
        .output()
        .expect("run the script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = |name: &str| deps.join(name).exists();
    assert!(!left("process_kv-aaa") && !left("process_kv-aaa.d"));
    assert!(left("process_kv-bbb"), "the newest of its name stays");
    assert!(
        left("split-ccc"),
        "the only one of its name stays, however old"
    );
    assert!(left("libengine-ddd.rlib") && left("libengine-eee.rlib"));
    assert!(!release.join("append-aaa").exists() && release.join("append-bbb").exists());
    assert!(left("append-ccc"), "debug and release are pruned apart");
    assert!(!old.exists() && incremental.join("new-def").exists());
    // Again: nothing more to do, and an absent target dir is fine too.
    let again = Command::new("bash")
        .arg(script())
        .env("CARGO_TARGET_DIR", dir.path().join("none"))
        .status()
        .unwrap();
    assert!(again.success());
}
