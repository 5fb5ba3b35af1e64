//! Seeds that once found a bug, with what it was: the tests run them first. A seed names a
//! schedule only for the simulator version that found it (any change to what the random
//! stream is drawn for changes every schedule), so each fix also gets a test of its own that
//! does not depend on the simulator; the entry names it. Add a seed when `regionstore sim`
//! finds something, with the fix.

/// (seed, virtual duration in ms, what it found). Each runs with [`crate::SimConfig::default`]
/// and that duration.
pub const TEST_SEEDS: &[(u64, u64, &str)] = &[
    (
        5022,
        5_000,
        "a peer destroyed on a member's word (before it applied its removal) was re-created, \
     empty and with the same id, by a heartbeat sent before the removal; the heartbeat's \
     commit index then panicked raft-rs (fixed in maybe_create_peer: destroyed peer ids \
     never come back; test-cluster membership \
     a_destroyed_peer_is_not_re_created_by_a_stale_heartbeat)",
    ),
    (
        1_796_525_387_940_726,
        5_000,
        "a write proposed by a leader that then lost leadership and caught up by snapshot was \
         answered StaleCommand (\"no longer in the log\") though the snapshot held it, \
         committed: a refused write was read (fixed: a proposal a snapshot covered is \
         Undetermined; raftstore fsm::apply unit test \
         a_proposal_a_snapshot_covered_is_undetermined_and_one_overwritten_is_stale)",
    ),
    (
        1_796_526_871_864_617,
        4_000,
        "a peer that missed a split caught up by a snapshot of the narrower region; the data \
         of the range it lost stayed on its store for ever, owned by no peer there (fixed: \
         snapshot apply step 1 clears it; raftstore peer_storage unit test \
         a_snapshot_that_narrows_the_region_leaves_behind_what_it_lost)",
    ),
    (
        1_796_532_322_354_081,
        4_000,
        "a power cut lost a split's (unsynced) KV write, but the split peer's raft log and vote \
         (synced) survived; the parent had been moved off the store meanwhile, so nothing \
         redid the split, and the peer could never be opened again (its log with no region \
         state): the replica stayed stuck (fixed: the apply round of a split that creates a \
         region is synced; raftstore operation::admin unit test \
         a_split_that_creates_a_region_is_synced)",
    ),
    (
        1_796_539_601_553_225,
        30_000,
        "the simulator's own bug: a store power-cut while its raft log's fsync was failing was \
         restarted on the same failing disk and (rightly) refused to start, ending the run \
         (fixed: a power cut repairs the store's disk, `Faults::repair_disk`)",
    ),
    (
        5_287,
        30_000,
        "a store applied the membership change that removed its peer (the region state without \
         it written), then its KV disk's fsync failed at the destroy's tombstone write; it \
         stopped as it must, but then refused to restart ('region has no peer on store 4') \
         (fixed: at start, such a state finishes the destroy; raftstore test \
         a_peer_removed_before_its_destroy_is_destroyed_at_start)",
    ),
    (
        1_796_667_420_903_550,
        30_000,
        "a restarted scheduler's routing table (region writes are not synced) still listed a \
         removed peer; an administrator's leader transfer planned on it before the sleeping \
         leader's next report was refused at every heartbeat, and it held the region's \
         operator slot, so the learner the replica checker had added was never promoted \
         (fixed: a transfer to a peer that is not a voter is cancelled; scheduler test \
         a_transfer_to_a_peer_no_longer_a_voter_is_cancelled)",
    ),
];
