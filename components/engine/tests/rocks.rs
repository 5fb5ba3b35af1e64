//! RocksDB-only behaviour: reopening, clear errors on damaged or foreign directories, SST files,
//! flush and range statistics after flush.

use std::fs;
use std::path::Path;

use engine::{
    keys, read_store_ident, write_store_ident, Error, KvEngine, Peekable, RocksConfig, RocksEngine,
    SstExt, SstWriter, WriteBatch, CF_DEFAULT, CF_RAFT, CF_WRITE,
};
use proto::raft_serverpb::StoreIdent;

fn config() -> RocksConfig {
    RocksConfig {
        block_cache_size: 8 << 20,
        ..RocksConfig::default()
    }
}

fn put(engine: &RocksEngine, cf: &str, key: &[u8], value: &[u8]) {
    let mut wb = engine.write_batch();
    wb.put_cf(cf, key, value).unwrap();
    engine.write(&mut wb, true).unwrap();
}

#[test]
fn reopen_after_engine_and_snapshot_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let engine = RocksEngine::open(&path, &config()).unwrap();
    put(&engine, CF_DEFAULT, b"k", b"v");
    let snap = engine.snapshot();
    drop(engine);
    // The snapshot keeps the DB open and readable after the engine handle is gone.
    assert_eq!(
        snap.get_value_cf(CF_DEFAULT, b"k").unwrap(),
        Some(b"v".to_vec())
    );
    let reopen_while_snapshot_lives = RocksEngine::open(&path, &config());
    assert!(
        matches!(reopen_while_snapshot_lives, Err(Error::Open { .. })),
        "DB is still locked"
    );
    drop(snap);
    let engine = RocksEngine::open(&path, &config()).expect("reopen once everything is dropped");
    assert_eq!(
        engine.get_value_cf(CF_DEFAULT, b"k").unwrap(),
        Some(b"v".to_vec())
    );
}

#[test]
fn missing_cf_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let _db = rocksdb::DB::open_cf(&opts, &path, ["default", "write"]).unwrap();
    }
    match RocksEngine::open(&path, &config()) {
        Err(Error::MissingCf { cf, path: p }) => {
            assert_eq!(cf, "lock");
            assert_eq!(p, path);
        }
        other => panic!("expected MissingCf, got {:?}", other.err()),
    }
}

fn corrupt(path: &Path) {
    let manifest = fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
        })
        .expect("a MANIFEST file");
    fs::write(
        &manifest,
        b"this is not a rocksdb manifest at all, not even close",
    )
    .unwrap();
}

#[test]
fn corrupted_manifest_is_a_clear_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let engine = RocksEngine::open(&path, &config()).unwrap();
        put(&engine, CF_DEFAULT, b"k", b"v");
    }
    corrupt(&path);
    let err = RocksEngine::open(&path, &config())
        .err()
        .expect("open must fail");
    let text = err.to_string();
    assert!(matches!(err, Error::Open { .. }), "{text}");
    assert!(
        text.contains(&path.display().to_string()),
        "names the path: {text}"
    );
    assert!(
        text.to_lowercase().contains("corrupt"),
        "says what is wrong: {text}"
    );
}

#[test]
fn the_store_ident_survives_a_reopen_and_a_damaged_one_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let engine = RocksEngine::open(&path, &config()).unwrap();
    assert_eq!(read_store_ident(&engine).unwrap(), None);
    let ident = StoreIdent {
        cluster_id: 7,
        store_id: 3,
        api_version: 2,
    };
    write_store_ident(&engine, &ident).unwrap();
    drop(engine);
    let engine = RocksEngine::open(&path, &config()).unwrap();
    assert_eq!(read_store_ident(&engine).unwrap(), Some(ident));
    // A value that is not a StoreIdent is reported as corruption, naming the key.
    put(
        &engine,
        engine::CF_RAFT,
        keys::STORE_IDENT_KEY,
        &[0xff, 0xff, 0xff],
    );
    let err = read_store_ident(&engine).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
}

#[test]
fn sst_write_ingest_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(&dir.path().join("db"), &config()).unwrap();
    let empty = dir.path().join("empty.sst");
    let writer = engine.sst_writer(CF_WRITE, &empty).unwrap();
    assert_eq!(writer.finish().unwrap(), None);
    assert!(!empty.exists(), "no file is left for an empty SST");

    let file = dir.path().join("data.sst");
    let mut writer = engine.sst_writer(CF_WRITE, &file).unwrap();
    for i in 0..100u32 {
        writer
            .put(&keys::data_key(&i.to_be_bytes()), b"value")
            .unwrap();
    }
    let info = writer.finish().unwrap().expect("non-empty SST");
    assert_eq!(info.keys, 100);
    assert!(info.size > 0);
    put(
        &engine,
        CF_WRITE,
        &keys::data_key(&5u32.to_be_bytes()),
        b"stale",
    );
    engine.ingest_sst(CF_WRITE, &[info.path]).unwrap();
    assert_eq!(
        engine
            .get_value_cf(CF_WRITE, &keys::data_key(&5u32.to_be_bytes()))
            .unwrap(),
        Some(b"value".to_vec()),
        "ingested data wins over older writes"
    );
    let mut n = 0;
    engine
        .scan_cf(
            CF_WRITE,
            keys::DATA_PREFIX_KEY,
            keys::DATA_MAX_KEY,
            false,
            &mut |_, _| {
                n += 1;
                Ok(true)
            },
        )
        .unwrap();
    assert_eq!(n, 100);
}

#[test]
fn range_stats_after_flush_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(&dir.path().join("db"), &config()).unwrap();
    let mut wb = engine.write_batch();
    for i in 0..5000u32 {
        wb.put_cf(
            CF_DEFAULT,
            &keys::data_key(format!("k{i:06}").as_bytes()),
            &[1u8; 200],
        )
        .unwrap();
    }
    engine.write(&mut wb, false).unwrap();
    let in_memtable = engine
        .approximate_range_stats(CF_DEFAULT, keys::DATA_PREFIX_KEY, keys::DATA_MAX_KEY)
        .unwrap();
    engine.flush_cf(CF_DEFAULT).unwrap();
    engine.compact_range_cf(CF_DEFAULT, b"", b"").unwrap();
    let in_files = engine
        .approximate_range_stats(CF_DEFAULT, keys::DATA_PREFIX_KEY, keys::DATA_MAX_KEY)
        .unwrap();
    for stats in [in_memtable, in_files] {
        assert!((2500..=10000).contains(&stats.keys), "{stats:?}");
        assert!(stats.size > 0, "{stats:?}");
    }
    let first_fifth = engine
        .approximate_range_stats(
            CF_DEFAULT,
            &keys::data_key(b"k"),
            &keys::data_key(b"k001000"),
        )
        .unwrap();
    assert!(
        first_fifth.keys < in_files.keys / 2,
        "{first_fifth:?} vs {in_files:?}"
    );
}

/// A drop filter removes, at compaction, the data pairs it names, in every data CF, and is
/// never offered local keys.
#[test]
fn a_drop_filter_removes_what_it_names_at_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let offered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = offered.clone();
    let filter: engine::DropFilter = std::sync::Arc::new(move |key: &[u8], value: &[u8]| {
        seen.lock().unwrap().push(key.to_vec());
        value == b"expired"
    });
    let engine =
        RocksEngine::open_with_filter(&dir.path().join("db"), &config(), Some(filter)).unwrap();
    let mut wb = engine.write_batch();
    for cf in [CF_DEFAULT, CF_WRITE] {
        wb.put_cf(cf, &keys::data_key(b"a"), b"expired").unwrap();
        wb.put_cf(cf, &keys::data_key(b"b"), b"live").unwrap();
    }
    wb.put_cf(CF_RAFT, &keys::region_state_key(1), b"expired")
        .unwrap();
    engine.write(&mut wb, true).unwrap();
    for cf in [CF_DEFAULT, CF_WRITE, CF_RAFT] {
        engine.flush_cf(cf).unwrap();
        engine.compact_range_cf(cf, b"", b"").unwrap();
    }
    for cf in [CF_DEFAULT, CF_WRITE] {
        assert_eq!(
            engine.get_value_cf(cf, &keys::data_key(b"a")).unwrap(),
            None
        );
        assert_eq!(
            engine.get_value_cf(cf, &keys::data_key(b"b")).unwrap(),
            Some(b"live".to_vec())
        );
    }
    assert!(engine
        .get_value_cf(CF_RAFT, &keys::region_state_key(1))
        .unwrap()
        .is_some());
    assert!(offered
        .lock()
        .unwrap()
        .iter()
        .all(|k| k == b"a" || k == b"b"));
}
