//! Timestamps from the scheduler's TSO: milliseconds since the Unix epoch in the high bits,
//! an 18-bit logical counter in the low bits.

const LOGICAL_BITS: u32 = 18;

/// The physical part (milliseconds) of a TSO timestamp.
pub fn physical(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The timestamp of physical time `ms` with logical part 0.
pub fn from_physical(ms: u64) -> u64 {
    ms << LOGICAL_BITS
}

/// Whether a lock of `ttl` ms taken at `start_ts` has expired by `current_ts`
/// (`u64::MAX`: everything has).
pub fn lock_expired(start_ts: u64, ttl: u64, current_ts: u64) -> bool {
    current_ts == u64::MAX || physical(start_ts).saturating_add(ttl) <= physical(current_ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_counts_physical_milliseconds() {
        let start = from_physical(1000) + 5;
        assert!(!lock_expired(start, 100, from_physical(1099) + 7));
        assert!(lock_expired(start, 100, from_physical(1100)));
        assert!(lock_expired(start, u64::MAX, u64::MAX));
        assert!(!lock_expired(
            start,
            u64::MAX,
            from_physical(u64::MAX >> 18)
        ));
    }
}
