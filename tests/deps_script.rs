//! `scripts/deps.sh`, the first thing `make` runs on a fresh machine, asks the right question:
//! a libclang that clang-sys will load (never `libclang-cpp`), with the builtin headers bindgen
//! needs, and a C and a C++ compiler. Run against fake library directories in dry-run mode.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    // The runner's directory first: a binary reused from another checkout sharing the
    // target dir has that checkout's path compiled in.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("scripts/deps.sh")
}

/// Runs the script in dry-run mode with `envs`; returns what it printed.
fn dry_run(envs: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).env("DEPS_DRY_RUN", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scripts/deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "deps.sh failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn would_install(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("would install: "))
        .flat_map(|pkgs| pkgs.split_whitespace().map(str::to_owned))
        .collect()
}

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, b"").expect("write");
}

/// A directory laid out like Debian's /usr/lib/llvm-14/lib, holding `files`, with clang's
/// builtin headers beside them when `headers`.
fn lib_dir(files: &[&str], headers: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in files {
        touch(&dir.path().join(f));
    }
    if headers {
        touch(&dir.path().join("clang/14.0.6/include/stddef.h"));
    }
    dir
}

fn libclang_verdict(dir: &Path) -> Vec<String> {
    would_install(&dry_run(&[(
        "DEPS_LIBCLANG_DIRS",
        dir.to_str().expect("utf-8 path"),
    )]))
}

#[test]
fn only_libclang_cpp_leads_to_an_install() {
    // What the fresh machine that broke `make test` had: the C++ API library, which clang-sys
    // skips. The old check's glob took it for libclang.
    let dir = lib_dir(&["libclang-cpp.so.14"], true);
    assert_eq!(libclang_verdict(dir.path()), vec!["libclang-dev"]);
}

#[test]
fn a_libclang_with_its_headers_needs_nothing() {
    for name in [
        "libclang.so",
        "libclang.so.1",
        "libclang-14.so",
        "libclang-14.so.1",
    ] {
        let dir = lib_dir(&[name, "libclang-cpp.so.14"], true);
        assert!(libclang_verdict(dir.path()).is_empty(), "{name}");
    }
}

#[test]
fn a_libclang_without_its_builtin_headers_leads_to_an_install() {
    // The runtime package alone (libclang1-14) has no stddef.h for bindgen.
    let dir = lib_dir(&["libclang.so.1"], false);
    assert_eq!(libclang_verdict(dir.path()), vec!["libclang-dev"]);
}

#[test]
fn no_directory_at_all_leads_to_an_install() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent");
    assert_eq!(libclang_verdict(&missing), vec!["libclang-dev"]);
}

#[test]
fn the_highest_libclang_version_must_have_its_headers() {
    // clang-sys loads the highest version it finds: an older one with headers does not help.
    let old = lib_dir(&["libclang-14.so.1"], true);
    let new = lib_dir(&["libclang-16.so.1"], false);
    let dirs = format!("{}:{}", old.path().display(), new.path().display());
    let out = dry_run(&[("DEPS_LIBCLANG_DIRS", &dirs)]);
    assert_eq!(would_install(&out), vec!["libclang-dev"]);
    let new_with_headers = lib_dir(&["libclang-16.so.1"], true);
    let dirs = format!(
        "{}:{}",
        new.path().display(),
        new_with_headers.path().display()
    );
    let out = dry_run(&[("DEPS_LIBCLANG_DIRS", &dirs)]);
    assert!(would_install(&out).is_empty(), "{out}");
}

#[test]
fn a_set_libclang_path_is_the_only_place_searched() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = dry_run(&[("LIBCLANG_PATH", empty.path().to_str().expect("utf-8 path"))]);
    assert_eq!(would_install(&out), vec!["libclang-dev"]);
}

#[test]
fn missing_compilers_lead_to_an_install() {
    let dir = lib_dir(&["libclang.so.1"], true);
    let dirs = dir.path().to_str().expect("utf-8 path");
    let out = dry_run(&[
        ("DEPS_LIBCLANG_DIRS", dirs),
        ("CC", "/nonexistent/cc"),
        ("CXX", "/nonexistent/c++"),
    ]);
    assert_eq!(would_install(&out), vec!["gcc", "g++"]);
}

#[test]
fn this_machine_has_everything_after_make_deps() {
    // `make test` ran the real check (and any install) before this test: with the default
    // search, the same check now finds the libclang that the build itself used.
    let out = dry_run(&[]);
    assert!(would_install(&out).is_empty(), "{out}");
}
