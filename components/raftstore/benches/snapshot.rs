//! Snapshot generate, then apply, for one region of `SNAP_BENCH_MB` MiB (default 1024), next
//! to a plain sequential write + fsync of the same number of bytes in the same run (before and
//! after, as these machines drift). The region is loaded by SST ingest, not through raft.
//!
//! `cargo bench -p raftstore --bench snapshot`; `SNAP_BENCH_MB=256` for a quicker run,
//! `SNAP_BENCH_DIR` for the directory (default: the system temp dir; it needs about three
//! times the size free), `SNAP_BENCH_COMPRESSION=none|lz4|zstd` for the snapshot SSTs'
//! compression. The values are incompressible: compression only costs here.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use engine::{keys, KvEngine, RocksConfig, RocksEngine, SstExt, SstWriter, CF_DEFAULT};
use proto::build::{peer, region};
use raftstore::snap::{SnapKey, SnapKind, SnapManager};

const VALUE_SIZE: usize = 1024;
/// Bytes per SST used to load the source engine.
const LOAD_FILE_BYTES: usize = 64 << 20;

/// Incompressible values, so the files are as big as the data.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn load(kv: &RocksEngine, dir: &Path, bytes: usize) -> u64 {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut value = vec![0u8; VALUE_SIZE];
    let keys_total = bytes / VALUE_SIZE;
    let per_file = LOAD_FILE_BYTES / VALUE_SIZE;
    let mut written = 0;
    let mut file_no = 0;
    while written < keys_total {
        let path = dir.join(format!("load-{file_no}.sst"));
        let mut writer = kv.sst_writer(CF_DEFAULT, &path).expect("sst writer");
        let end = (written + per_file).min(keys_total);
        for i in written..end {
            noise.fill(&mut value);
            let key = keys::data_key(format!("k{i:012}").as_bytes());
            writer.put(&key, &value).expect("sst put");
        }
        writer.finish().expect("finish sst");
        kv.ingest_sst(CF_DEFAULT, &[path]).expect("ingest");
        written = end;
        file_no += 1;
    }
    keys_total as u64
}

/// Sequential 1 MiB writes of `bytes`, then fsync: what the disk gives a plain file.
fn plain_write(path: &Path, bytes: usize) -> Duration {
    let mut buf = vec![0u8; 1 << 20];
    Noise(42).fill(&mut buf);
    let started = Instant::now();
    let mut file = File::create(path).expect("create baseline file");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        file.write_all(&buf[..n]).expect("write baseline");
        left -= n;
    }
    file.sync_all().expect("fsync baseline");
    let took = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(path);
    took
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a tiny size.
    let under_test = !std::env::args().any(|a| a == "--bench");
    let mb: usize = std::env::var("SNAP_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if under_test { 8 } else { 1024 });
    let base = std::env::var("SNAP_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::Builder::new()
        .prefix("regionstore-snap-bench")
        .tempdir_in(base)
        .expect("bench dir");
    let bytes = mb << 20;
    // SNAP_BENCH_COMPRESSION=none|lz4|zstd: the snapshot SSTs' compression (default: the
    // engine's default, LZ4).
    let mut cfg = RocksConfig::default();
    if let Ok(c) = std::env::var("SNAP_BENCH_COMPRESSION") {
        cfg.sst_writer_compression = match c.as_str() {
            "none" => engine::Compression::None,
            "zstd" => engine::Compression::Zstd,
            _ => engine::Compression::Lz4,
        };
    }
    let source = RocksEngine::open(&dir.path().join("source"), &cfg).expect("open source");
    let keys_total = load(&source, dir.path(), bytes);
    eprintln!("loaded {mb} MiB ({keys_total} keys of {VALUE_SIZE} B) into the source engine");

    let baseline_before = plain_write(&dir.path().join("baseline"), bytes);

    let mgr = SnapManager::new(dir.path().join("snap")).expect("snap dir");
    let key = SnapKey {
        region_id: 1,
        term: 6,
        index: 100,
    };
    let region = region(1)
        .range(b"k", b"l")
        .epoch(1, 1)
        .peers([peer(1, 1)])
        .build();
    let started = Instant::now();
    let meta = mgr
        .build(&source, &source.snapshot(), &region, key)
        .expect("generate");
    let generate = started.elapsed();
    let snap_bytes: u64 = meta.cf_files.iter().map(|f| f.size).sum();
    drop(source);

    let target = RocksEngine::open(&dir.path().join("target"), &cfg).expect("open target");
    let started = Instant::now();
    mgr.apply(&target, &region, SnapKind::Generated, key, &meta)
        .expect("apply");
    let apply = started.elapsed();
    let last = keys::data_key(format!("k{:012}", keys_total - 1).as_bytes());
    assert!(
        engine::Peekable::get_value_cf(&target, CF_DEFAULT, &last)
            .expect("read target")
            .is_some(),
        "the applied region lacks its last key"
    );
    drop(target);

    let baseline_after = plain_write(&dir.path().join("baseline"), bytes);
    let baseline = (baseline_before + baseline_after) / 2;
    let base_rate = mb_per_s(bytes as u64, baseline);
    println!("snapshot of one region, {mb} MiB of data, {snap_bytes} bytes of SST files");
    println!(
        "{:<34} {:>10} {:>10} {:>14}",
        "", "time", "MiB/s", "vs plain write"
    );
    for (name, took, data) in [
        (
            "plain write + fsync (before)",
            baseline_before,
            bytes as u64,
        ),
        ("plain write + fsync (after)", baseline_after, bytes as u64),
        ("generate (scan, SST, fsync, crc)", generate, bytes as u64),
        ("apply (verify, clear, ingest)", apply, bytes as u64),
        ("generate + apply", generate + apply, bytes as u64),
    ] {
        let rate = mb_per_s(data, took);
        println!(
            "{name:<34} {:>9.2}s {rate:>10.1} {:>14.2}",
            took.as_secs_f64(),
            rate / base_rate
        );
    }
    println!("goal: generate and apply each >= 0.5 of the plain write");
}
