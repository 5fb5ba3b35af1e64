//! Seeds that once found a bug, with what it was: the tests run them first, so a fixed bug
//! stays fixed. Add a seed when the simulator finds something (`regionstore sim` prints it),
//! with the fix.

/// (seed, virtual duration in ms, what it found). Each runs with [`crate::SimConfig::default`]
/// and that duration.
pub const TEST_SEEDS: &[(u64, u64, &str)] = &[
    (
        5022,
        5_000,
        "a peer destroyed on a member's word (before it applied its removal) was re-created, \
     empty and with the same id, by a heartbeat sent before the removal; the heartbeat's \
     commit index then panicked raft-rs (fixed in maybe_create_peer: destroyed peer ids \
     never come back)",
    ),
    (
        1_796_525_387_940_726,
        5_000,
        "a write proposed by a leader that then lost leadership and caught up by snapshot was \
         answered StaleCommand (\"no longer in the log\") though the snapshot held it, \
         committed: a refused write was read (fixed: a proposal a snapshot covered is \
         Undetermined)",
    ),
];
