//! One suite, run against both engines: what `KvEngine` promises, both must do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use engine::{
    Error, KvEngine, MemEngine, Peekable, RocksConfig, RocksEngine, Snapshot, WriteBatch, ALL_CFS,
    CF_DEFAULT, CF_LOCK, CF_RAFT, CF_WRITE,
};

fn collect<P: Peekable>(
    p: &P,
    cf: &str,
    start: &[u8],
    end: &[u8],
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    p.scan_cf(cf, start, end, reverse, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })
    .expect("scan");
    out
}

fn put_all<E: KvEngine>(engine: &E, cf: &str, kvs: &[(&[u8], &[u8])]) {
    let mut wb = engine.write_batch();
    for (k, v) in kvs {
        wb.put_cf(cf, k, v).expect("put");
    }
    engine.write(&mut wb, false).expect("write");
    assert!(wb.is_empty(), "a written batch is empty again");
}

fn put_get_delete_per_cf<E: KvEngine>(engine: E) {
    for (i, cf) in ALL_CFS.iter().enumerate() {
        put_all(&engine, cf, &[(b"k", &[i as u8])]);
    }
    for (i, cf) in ALL_CFS.iter().enumerate() {
        assert_eq!(
            engine.get_value_cf(cf, b"k").unwrap(),
            Some(vec![i as u8]),
            "cf {cf}"
        );
    }
    let mut wb = engine.write_batch();
    wb.delete_cf(CF_LOCK, b"k").unwrap();
    assert_eq!(wb.count(), 1);
    engine.write(&mut wb, true).unwrap();
    assert_eq!(engine.get_value_cf(CF_LOCK, b"k").unwrap(), None);
    assert_eq!(engine.get_value_cf(CF_WRITE, b"k").unwrap(), Some(vec![2]));
    assert!(matches!(
        engine.get_value_cf("nope", b"k"),
        Err(Error::UnknownCf { .. })
    ));
    let mut wb = engine.write_batch();
    assert!(matches!(
        wb.put_cf("nope", b"k", b"v"),
        Err(Error::UnknownCf { .. })
    ));
}

fn delete_range_excludes_end<E: KvEngine>(engine: E) {
    put_all(
        &engine,
        CF_DEFAULT,
        &[(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")],
    );
    let mut wb = engine.write_batch();
    wb.delete_range_cf(CF_DEFAULT, b"b", b"d").unwrap();
    engine.write(&mut wb, false).unwrap();
    let left: Vec<_> = collect(&engine, CF_DEFAULT, b"", b"", false)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, vec![b"a".to_vec(), b"d".to_vec()]);
    let mut wb = engine.write_batch();
    assert!(matches!(
        wb.delete_range_cf(CF_DEFAULT, b"z", b"a"),
        Err(Error::InvalidRange { .. })
    ));
}

fn scan_bounds_order_and_stop<E: KvEngine>(engine: E) {
    let keys: Vec<Vec<u8>> = (0u8..10).map(|i| vec![b'k', i]).collect();
    let kvs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_slice(), k.as_slice())).collect();
    put_all(&engine, CF_WRITE, &kvs);
    let fwd = collect(&engine, CF_WRITE, &[b'k', 2], &[b'k', 5], false);
    assert_eq!(
        fwd.iter().map(|(k, _)| k[1]).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    let rev = collect(&engine, CF_WRITE, &[b'k', 2], &[b'k', 5], true);
    assert_eq!(
        rev.iter().map(|(k, _)| k[1]).collect::<Vec<_>>(),
        vec![4, 3, 2]
    );
    let all_rev = collect(&engine, CF_WRITE, b"", b"", true);
    assert_eq!(all_rev.len(), 10);
    assert_eq!(all_rev[0].0, vec![b'k', 9]);
    let mut seen = 0;
    engine
        .scan_cf(CF_WRITE, b"", b"", false, &mut |_, _| {
            seen += 1;
            Ok(seen < 3)
        })
        .unwrap();
    assert_eq!(seen, 3, "scan stops when the callback says so");
    assert!(collect(&engine, CF_WRITE, &[b'k', 5], &[b'k', 5], false).is_empty());
    let err = engine.scan_cf(CF_WRITE, b"b", b"a", false, &mut |_, _| Ok(true));
    assert!(matches!(err, Err(Error::InvalidRange { .. })));
    // Errors from the callback stop the scan and come back out.
    let err = engine.scan_cf(CF_WRITE, b"", b"", false, &mut |_, _| {
        Err(Error::Corruption {
            what: "test".into(),
            detail: "stop".into(),
        })
    });
    assert!(matches!(err, Err(Error::Corruption { .. })));
}

fn snapshot_is_point_in_time_and_sendable<E: KvEngine>(engine: E) {
    put_all(&engine, CF_DEFAULT, &[(b"a", b"old")]);
    let snap = engine.snapshot();
    put_all(&engine, CF_DEFAULT, &[(b"a", b"new"), (b"b", b"new")]);
    let handle = thread::spawn(move || {
        let a = snap.get_value_cf(CF_DEFAULT, b"a").unwrap();
        let all = collect(&snap, CF_DEFAULT, b"", b"", false);
        (a, all.len())
    });
    let (a, n) = handle.join().unwrap();
    assert_eq!(a, Some(b"old".to_vec()));
    assert_eq!(n, 1);
    assert_eq!(
        engine.get_value_cf(CF_DEFAULT, b"a").unwrap(),
        Some(b"new".to_vec())
    );
}

fn batches_are_atomic_to_readers<E: KvEngine>(engine: E) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (engine, stop) = (engine.clone(), stop.clone());
        thread::spawn(move || {
            let mut checks = 0;
            while !stop.load(Ordering::SeqCst) || checks == 0 {
                let snap = engine.snapshot();
                let a = snap.get_value_cf(CF_DEFAULT, b"a").unwrap();
                let b = snap.get_value_cf(CF_RAFT, b"b").unwrap();
                assert_eq!(a, b, "a snapshot saw half a batch");
                checks += 1;
            }
            checks
        })
    };
    for i in 0u32..2000 {
        let mut wb = engine.write_batch();
        wb.put_cf(CF_DEFAULT, b"a", &i.to_be_bytes()).unwrap();
        wb.put_cf(CF_RAFT, b"b", &i.to_be_bytes()).unwrap();
        engine.write(&mut wb, false).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(reader.join().expect("reader saw consistent snapshots") > 0);
}

fn range_stats_count_what_was_written<E: KvEngine>(engine: E, exact: bool) {
    let keys: Vec<Vec<u8>> = (0u32..2000)
        .map(|i| format!("zkey{i:06}").into_bytes())
        .collect();
    let value = vec![7u8; 100];
    let kvs: Vec<(&[u8], &[u8])> = keys
        .iter()
        .map(|k| (k.as_slice(), value.as_slice()))
        .collect();
    put_all(&engine, CF_DEFAULT, &kvs);
    let stats = engine
        .approximate_range_stats(CF_DEFAULT, b"zkey", b"zkez")
        .unwrap();
    let bytes = keys.iter().map(|k| k.len() + value.len()).sum::<usize>() as u64;
    if exact {
        assert_eq!(stats.keys, 2000);
        assert_eq!(stats.size, bytes);
    } else {
        assert!(
            (1000..=4000).contains(&stats.keys),
            "approximate keys {stats:?}"
        );
        assert!(
            stats.size >= bytes / 2 && stats.size <= bytes * 4,
            "approximate size {stats:?} vs {bytes}"
        );
    }
    let half = engine
        .approximate_range_stats(CF_DEFAULT, b"zkey", b"zkey001000")
        .unwrap();
    assert!(
        half.keys < stats.keys && half.size < stats.size,
        "a sub-range is smaller: {half:?} vs {stats:?}"
    );
    let none = engine
        .approximate_range_stats(CF_DEFAULT, b"a", b"b")
        .unwrap();
    assert_eq!(none.keys, 0, "no keys outside what was written: {none:?}");
}

fn write_batch_accounting<E: KvEngine>(engine: E) {
    let mut wb = engine.write_batch();
    assert!(wb.is_empty());
    wb.put_cf(CF_DEFAULT, b"key", b"value").unwrap();
    wb.delete_cf(CF_DEFAULT, b"other").unwrap();
    assert_eq!(wb.count(), 2);
    assert!(wb.data_size() >= 8);
    wb.clear();
    assert!(wb.is_empty());
    engine.write(&mut wb, true).unwrap();
    assert_eq!(engine.get_value_cf(CF_DEFAULT, b"key").unwrap(), None);
    engine.sync().unwrap();
}

macro_rules! conformance {
    ($engine:ident, $make:expr, $exact:expr) => {
        mod $engine {
            use super::*;

            #[test]
            fn put_get_delete_per_cf() {
                let (e, _dir) = $make;
                super::put_get_delete_per_cf(e);
            }
            #[test]
            fn delete_range_excludes_end() {
                let (e, _dir) = $make;
                super::delete_range_excludes_end(e);
            }
            #[test]
            fn scan_bounds_order_and_stop() {
                let (e, _dir) = $make;
                super::scan_bounds_order_and_stop(e);
            }
            #[test]
            fn snapshot_is_point_in_time_and_sendable() {
                let (e, _dir) = $make;
                super::snapshot_is_point_in_time_and_sendable(e);
            }
            #[test]
            fn batches_are_atomic_to_readers() {
                let (e, _dir) = $make;
                super::batches_are_atomic_to_readers(e);
            }
            #[test]
            fn range_stats_count_what_was_written() {
                let (e, _dir) = $make;
                super::range_stats_count_what_was_written(e, $exact);
            }
            #[test]
            fn write_batch_accounting() {
                let (e, _dir) = $make;
                super::write_batch_accounting(e);
            }
        }
    };
}

fn rocks() -> (RocksEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RocksConfig {
        block_cache_size: 8 << 20,
        ..RocksConfig::default()
    };
    (
        RocksEngine::open(&dir.path().join("db"), &config).expect("open"),
        dir,
    )
}

conformance!(mem, (MemEngine::new(), ()), true);
conformance!(rocksdb, rocks(), false);

/// Snapshots must be usable as trait objects' owners across threads.
#[allow(dead_code)]
fn assert_snapshot_bounds<S: Snapshot>() {
    fn is_send_static<T: Send + Sync + 'static>() {}
    is_send_static::<S>();
}
