//! Collects the `///` docs of the config structs' fields, so `--print-default-config` shows
//! each key with its documentation, default and bounds, straight from the code.

use std::path::Path;

/// (key naming the struct, source file, struct name)
const STRUCTS: &[(&str, &str, &str)] = &[
    ("store", "src/config.rs", "StoreConfig"),
    ("scheduler", "src/config.rs", "SchedulerConfig"),
    ("log", "src/config.rs", "LogConfig"),
    ("schedule", "src/config.rs", "ScheduleConfig"),
    ("server", "components/server/src/config.rs", "Config"),
    ("raftstore", "components/raftstore/src/config.rs", "Config"),
    ("rocksdb", "components/engine/src/rocks.rs", "RocksConfig"),
    ("gc", "components/storage/src/gc.rs", "GcConfig"),
    (
        "raft-log",
        "components/raft-log/src/config.rs",
        "RaftLogConfig",
    ),
];

fn field_docs(source: &str, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let start = format!("pub struct {name} {{");
    let Some(at) = source.find(&start) else {
        return out;
    };
    let mut doc: Vec<String> = Vec::new();
    for line in source[at + start.len()..].lines() {
        let line = line.trim();
        if line.starts_with('}') {
            break;
        }
        if let Some(d) = line.strip_prefix("///") {
            doc.push(d.trim().to_string());
        } else if let Some(field) = line.strip_prefix("pub ") {
            let Some((field, _)) = field.split_once(':') else {
                continue;
            };
            // Every field needs its own doc (the test of the printed config checks), and a
            // skipped field's doc must not leak onto the next one.
            out.push((field.trim().replace('_', "-"), doc.join(" ")));
            doc.clear();
        }
    }
    out
}

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let mut table = String::from("pub static FIELD_DOCS: &[(&str, &str, &str)] = &[\n");
    for (key, file, name) in STRUCTS {
        let path = Path::new(&root).join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let source = std::fs::read_to_string(&path).expect("config source readable");
        for (field, doc) in field_docs(&source, name) {
            table.push_str(&format!("    ({key:?}, {field:?}, {doc:?}),\n"));
        }
    }
    table.push_str("];\n");
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("field_docs.rs");
    std::fs::write(out, table).expect("write field docs");
}
