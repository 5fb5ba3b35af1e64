//! The randomized election timeout, drawn from a seedable generator instead of raft-rs's
//! thread-local one: with a seed, a simulation replays the same elections exactly.

use std::hash::{BuildHasher, Hasher};

use raft::{Raft, StateRole, Storage};

/// A seed no two stores (or starts) share: the process's random hash keys.
pub fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Draws a peer's election timeouts in `[election_tick, 2 × election_tick)`, raft-rs's
/// range. raft-rs redraws on every term or role change; after each call into raft-rs this
/// notices that (or any value it did not set) and overrides it with its own draw.
pub struct ElectionRng {
    state: u64,
    election_tick: usize,
    set: usize,
    seen: (u64, StateRole, u64),
}

impl ElectionRng {
    pub fn new(seed: u64, election_tick: usize) -> ElectionRng {
        ElectionRng {
            state: seed,
            election_tick: election_tick.max(1),
            set: 0,
            seen: (0, StateRole::Follower, 0),
        }
    }

    pub fn reseed(&mut self, seed: u64) {
        self.state = seed;
    }

    /// splitmix64: small, fast, and good enough to spread timeouts.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn redraw<T: Storage>(&mut self, raft: &mut Raft<T>) {
        let timeout = self.election_tick + (self.next() % self.election_tick as u64) as usize;
        raft.set_randomized_election_timeout(timeout);
        self.set = timeout;
        self.seen = (raft.term, raft.state, raft.leader_id);
    }

    pub fn after_raft_call<T: Storage>(&mut self, raft: &mut Raft<T>) {
        if raft.randomized_election_timeout() != self.set
            || (raft.term, raft.state, raft.leader_id) != self.seen
        {
            self.redraw(raft);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_timeouts_and_they_stay_in_raft_s_range() {
        let draws = |seed| {
            let mut rng = ElectionRng::new(seed, 10);
            (0..200)
                .map(|_| 10 + (rng.next() % 10) as usize)
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let all = draws(7);
        assert!(all.iter().all(|t| (10..20).contains(t)));
        assert!(
            all.iter().collect::<std::collections::BTreeSet<_>>().len() > 5,
            "spread"
        );
    }
}
