//! raft-log over a real raft-engine in a temp dir: group commit across regions, reads, restart,
//! compaction and cleaning, and start-up with damaged files.

use std::fs;
use std::path::{Path, PathBuf};

use bytes_helper::entry;
use proto::eraftpb::HardState;
use proto::raft_serverpb::RaftLocalState;
use raft_log::{Error, RaftLogConfig, RaftLogEngine, RecoveryMode};

mod bytes_helper {
    use raft::eraftpb::Entry;

    pub fn entry(index: u64, term: u64, size: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; size].into(),
            ..Default::default()
        }
    }
}

fn config(dir: &Path) -> RaftLogConfig {
    RaftLogConfig::new(dir.join("raft-engine"))
}

fn state(term: u64, commit: u64, last_index: u64) -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            term,
            vote: 1,
            commit,
        }),
        last_index,
    }
}

#[test]
fn one_batch_many_regions_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = RaftLogEngine::open(&config(dir.path())).unwrap();
        let mut batch = log.batch();
        for region in 1..=100u64 {
            let entries: Vec<_> = (1..=10).map(|i| entry(i, 2, 64)).collect();
            batch.append(region, &entries).unwrap();
            batch.put_raft_state(region, &state(2, 5, 10)).unwrap();
        }
        assert!(log.write(&mut batch, true).unwrap() > 0);
        assert!(batch.is_empty(), "a written batch is empty again");
    }
    let log = RaftLogEngine::open(&config(dir.path())).unwrap();
    let mut regions = log.regions();
    regions.sort_unstable();
    assert_eq!(regions, (1..=100).collect::<Vec<_>>());
    for region in [1, 50, 100] {
        assert_eq!(log.first_index(region), Some(1));
        assert_eq!(log.last_index(region), Some(10));
        assert_eq!(log.raft_state(region).unwrap(), Some(state(2, 5, 10)));
        let mut out = Vec::new();
        assert_eq!(log.fetch_entries(region, 3, 8, None, &mut out).unwrap(), 5);
        assert_eq!(
            out.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 7]
        );
        assert_eq!(out[0].data.as_ref(), &[3u8; 64][..]);
    }
}

/// Runs `check` against raft-engine in a temp dir and against the in-memory log: they follow
/// the same rules.
fn on_both(check: fn(&RaftLogEngine)) {
    let dir = tempfile::tempdir().unwrap();
    check(&RaftLogEngine::open(&config(dir.path())).unwrap());
    check(&RaftLogEngine::memory("test"));
}

#[test]
fn fetch_errors_and_size_limit() {
    on_both(fetch_errors_and_size_limit_on);
}

fn fetch_errors_and_size_limit_on(log: &RaftLogEngine) {
    let mut batch = log.batch();
    batch
        .append(7, &(5..=9).map(|i| entry(i, 1, 100)).collect::<Vec<_>>())
        .unwrap();
    log.write(&mut batch, true).unwrap();
    let mut out = Vec::new();
    assert!(matches!(
        log.fetch_entries(8, 1, 2, None, &mut out),
        Err(Error::Unavailable { region_id: 8, .. })
    ));
    assert!(matches!(
        log.fetch_entries(7, 4, 6, None, &mut out),
        Err(Error::Compacted {
            region_id: 7,
            index: 4
        })
    ));
    assert!(matches!(
        log.fetch_entries(7, 8, 11, None, &mut out),
        Err(Error::Unavailable {
            region_id: 7,
            low: 8,
            high: 11
        })
    ));
    assert_eq!(
        log.fetch_entries(7, 5, 10, Some(1), &mut out).unwrap(),
        1,
        "at least one entry"
    );
    out.clear();
    assert_eq!(log.fetch_entries(7, 5, 10, Some(250), &mut out).unwrap(), 2);
    assert_eq!(
        log.fetch_entries(7, 6, 6, None, &mut out).unwrap(),
        0,
        "empty range"
    );
    assert_eq!(log.raft_state(7).unwrap(), None);
}

#[test]
fn overwrite_compact_and_clean_on_both() {
    on_both(|log| {
        overwrite_compact_and_clean_on(log);
    });
}

/// Leaves region 1 with entries 6..=7 and region 2 cleaned.
fn overwrite_compact_and_clean_on(log: &RaftLogEngine) {
    let mut batch = log.batch();
    batch
        .append(1, &(1..=10).map(|i| entry(i, 1, 8)).collect::<Vec<_>>())
        .unwrap();
    batch
        .append(2, &(1..=3).map(|i| entry(i, 1, 8)).collect::<Vec<_>>())
        .unwrap();
    log.write(&mut batch, true).unwrap();

    // A new leader overwrites the tail from index 5 on.
    batch
        .append(1, &(5..=7).map(|i| entry(i, 2, 8)).collect::<Vec<_>>())
        .unwrap();
    log.write(&mut batch, true).unwrap();
    assert_eq!(log.last_index(1), Some(7));
    let mut out = Vec::new();
    log.fetch_entries(1, 4, 8, None, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|e| e.term).collect::<Vec<_>>(),
        vec![1, 2, 2, 2]
    );

    batch.compact_to(1, 6);
    batch.clean_region(2);
    log.write(&mut batch, true).unwrap();
    assert_eq!(log.first_index(1), Some(6));
    assert_eq!(log.first_index(2), None);
    assert_eq!(log.regions(), vec![1]);
}

#[test]
fn overwrite_compact_and_clean_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    overwrite_compact_and_clean_on(&RaftLogEngine::open(&config(dir.path())).unwrap());
    let log = RaftLogEngine::open(&config(dir.path())).unwrap();
    assert_eq!(log.first_index(1), Some(6), "compaction survives restart");
    assert_eq!(log.last_index(1), Some(7));
    assert_eq!(log.first_index(2), None, "cleaning survives restart");
}

#[test]
fn the_memory_log_loses_what_was_not_synced_in_a_power_cut() {
    let log = RaftLogEngine::memory("test");
    let mut batch = log.batch();
    batch
        .append(1, &(1..=5).map(|i| entry(i, 1, 8)).collect::<Vec<_>>())
        .unwrap();
    batch.put_raft_state(1, &state(1, 3, 5)).unwrap();
    log.write(&mut batch, true).unwrap();
    // Unsynced: a tail overwrite by a new leader, a new state and a second region.
    batch
        .append(1, &(4..=6).map(|i| entry(i, 2, 8)).collect::<Vec<_>>())
        .unwrap();
    batch.put_raft_state(1, &state(2, 3, 6)).unwrap();
    batch.append(2, &[entry(1, 1, 8)]).unwrap();
    log.write(&mut batch, false).unwrap();
    assert_eq!(log.last_index(1), Some(6));
    assert_eq!(log.power_cut(), 3);
    assert_eq!(log.last_index(1), Some(5));
    assert_eq!(log.entry(1, 4).unwrap().map(|e| e.term), Some(1));
    assert_eq!(log.raft_state(1).unwrap(), Some(state(1, 3, 5)));
    assert_eq!(log.regions(), vec![1]);
    // A synced write makes the unsynced ones before it durable too.
    batch.append(2, &[entry(1, 1, 8)]).unwrap();
    log.write(&mut batch, false).unwrap();
    batch.compact_to(1, 3);
    log.write(&mut batch, true).unwrap();
    assert_eq!(log.power_cut(), 0);
    assert_eq!(log.first_index(1), Some(3));
    assert_eq!(log.last_index(2), Some(1));
    // A gap is refused (raft-engine panics on one).
    batch.append(2, &[entry(5, 1, 8)]).unwrap();
    assert!(log.write(&mut batch, true).is_err());
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "raftlog"))
        .collect();
    files.sort();
    files
}

/// Where written data ends: raft-engine pre-allocates files, so the rest is zeros.
fn data_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1)
}

#[test]
fn torn_tail_is_tolerated_by_default_and_refused_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    {
        let log = RaftLogEngine::open(&cfg).unwrap();
        for i in 1..=20u64 {
            let mut batch = log.batch();
            batch.append(1, &[entry(i, 1, 512)]).unwrap();
            log.write(&mut batch, true).unwrap();
        }
    }
    // A crash in the middle of the last write: its bytes are only partly on disk.
    let last = log_files(&cfg.dir).pop().expect("a log file");
    let len = fs::metadata(&last).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 100)
        .unwrap();

    let strict = RaftLogConfig {
        recovery_mode: RecoveryMode::AbsoluteConsistency,
        ..cfg.clone()
    };
    let err = RaftLogEngine::open(&strict)
        .err()
        .expect("strict mode refuses a torn tail");
    let text = err.to_string();
    assert!(
        text.contains(&cfg.dir.display().to_string()),
        "names the directory: {text}"
    );

    let log = RaftLogEngine::open(&cfg).expect("default mode drops the torn batch");
    assert_eq!(
        log.last_index(1),
        Some(19),
        "only the torn (unacknowledged) batch is lost"
    );
}

#[test]
fn corruption_before_the_tail_fails_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RaftLogConfig {
        // Small files, so the damage lands in a file that is not the last.
        target_file_size: 4096,
        ..config(dir.path())
    };
    {
        let log = RaftLogEngine::open(&cfg).unwrap();
        for i in 1..=40u64 {
            let mut batch = log.batch();
            batch.append(1, &[entry(i, 1, 1024)]).unwrap();
            log.write(&mut batch, true).unwrap();
        }
    }
    let files = log_files(&cfg.dir);
    assert!(
        files.len() >= 3,
        "expected several log files, got {}",
        files.len()
    );
    let victim = &files[1];
    let mut bytes = fs::read(victim).unwrap();
    let mid = data_end(&bytes) / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    fs::write(victim, bytes).unwrap();
    let err = RaftLogEngine::open(&cfg)
        .err()
        .expect("damage before the tail is not tolerated");
    let text = err.to_string();
    assert!(matches!(err, Error::Open { .. }), "{text}");
    assert!(
        text.contains(&cfg.dir.display().to_string()),
        "names the directory: {text}"
    );
}

#[test]
fn the_memory_log_may_keep_a_prefix_of_unsynced_batches_and_can_fail_fsync() {
    let log = RaftLogEngine::memory("test");
    let mut batch = log.batch();
    for i in 1..=3 {
        batch.append(1, &[entry(i, 1, 8)]).unwrap();
        log.write(&mut batch, false).unwrap();
    }
    assert_eq!(log.unsynced_batches(), 3);
    assert_eq!(log.power_cut_keeping(2), 1, "the third batch is lost");
    assert_eq!(log.last_index(1), Some(2));
    assert_eq!(log.unsynced_batches(), 0);
    log.set_sync_fails(true);
    batch.append(1, &[entry(3, 1, 8)]).unwrap();
    let err = log.write(&mut batch, true).unwrap_err();
    assert!(err.to_string().contains("fsync"), "{err}");
    assert_eq!(log.power_cut(), 1, "a failed fsync made nothing durable");
    log.set_sync_fails(false);
    assert_eq!(log.last_index(1), Some(2));
}

/// Batches merged in order write as if each had been written in turn: a later batch's
/// overwrite and compaction of a region apply after the earlier batch's appends.
#[test]
fn merged_batches_apply_in_order_on_both() {
    on_both(merged_batches_apply_in_order_on);
}

fn merged_batches_apply_in_order_on(log: &RaftLogEngine) {
    let mut first = log.batch();
    first
        .append(7, &(1..=10).map(|i| entry(i, 1, 16)).collect::<Vec<_>>())
        .unwrap();
    first.put_raft_state(7, &state(1, 0, 10)).unwrap();
    let mut second = log.batch();
    // Overwrites the tail from 6 with a new term, then drops what is below 3.
    second
        .append(7, &(6..=8).map(|i| entry(i, 2, 16)).collect::<Vec<_>>())
        .unwrap();
    second.put_raft_state(7, &state(2, 5, 8)).unwrap();
    second.compact_to(7, 3);
    first.merge(&mut second).unwrap();
    assert!(second.is_empty(), "merged changes leave the other batch");
    log.write(&mut first, true).unwrap();
    assert_eq!(log.first_index(7), Some(3));
    assert_eq!(log.last_index(7), Some(8));
    assert_eq!(log.entry(7, 8).unwrap().unwrap().term, 2);
    assert_eq!(log.entry(7, 5).unwrap().unwrap().term, 1);
    assert_eq!(log.raft_state(7).unwrap(), Some(state(2, 5, 8)));
}
