//! Compiles `proto/*.proto` with protox (pure Rust), so no system `protoc` is needed. Do not set
//! `PROTOC`: raft-rs's own build relies on its bundled one.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "eraftpb",
    "metapb",
    "errorpb",
    "kvrpcpb",
    "tikvpb",
    "pdpb",
    "keyspacepb",
    "raft_serverpb",
    "raft_cmdpb",
    "schedulerpb",
    "etcdserverpb",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in one checkout may be reused by another that
    // shares the target directory (CI's fresh clone), and must look at its own files.
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = PROTOS
        .iter()
        .map(|name| dir.join(format!("{name}.proto")))
        .collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&dir])?;
    tonic_prost_build::configure()
        // Raft payloads are passed on without copying, as raft-rs does with its own types.
        .bytes(".eraftpb")
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
