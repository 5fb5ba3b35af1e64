//! The timestamp oracle: hybrid timestamps `physical_ms << 18 | logical`, strictly increasing,
//! also across restarts. An upper bound `window` ahead of the physical part is persisted
//! (synced) before any timestamp at or past the old bound is handed out; a restart starts
//! above the persisted bound, so it never repeats or goes back even if the clock did.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use util::{Clock, ClockRef};

use crate::id::decode_u64;
use crate::{Error, MetaStore, Result};

pub const LOGICAL_BITS: u32 = 18;
const MAX_LOGICAL: u64 = 1 << LOGICAL_BITS;
const TSO_BOUND_KEY: &[u8] = b"meta/tso_bound_ms";

pub struct Tso {
    store: Arc<dyn MetaStore>,
    window_ms: u64,
    clock: ClockRef,
    state: Mutex<State>,
}

struct State {
    physical: u64,
    logical: u64,
    /// Persisted: no timestamp with this physical part or more is handed out before a new
    /// bound is written.
    bound: u64,
}

fn now_ms(clock: &dyn Clock) -> u64 {
    clock
        .wall()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Tso {
    pub fn open(store: Arc<dyn MetaStore>, window: Duration, clock: ClockRef) -> Result<Tso> {
        let persisted = match store.get(TSO_BOUND_KEY)? {
            Some(v) => decode_u64(TSO_BOUND_KEY, &v)?,
            None => 0,
        };
        let window_ms = (window.as_millis() as u64).max(1);
        let physical = now_ms(clock.as_ref()).max(persisted + 1);
        let tso = Tso {
            store,
            window_ms,
            clock,
            state: Mutex::new(State {
                physical,
                logical: 0,
                bound: 0,
            }),
        };
        {
            let mut state = util::lock(&tso.state);
            tso.persist_bound(&mut state)?;
        }
        Ok(tso)
    }

    fn persist_bound(&self, state: &mut State) -> Result<()> {
        let bound = state.physical + self.window_ms;
        self.store.put_batch(
            &[(TSO_BOUND_KEY.to_vec(), bound.to_be_bytes().to_vec())],
            true,
        )?;
        state.bound = bound;
        Ok(())
    }

    /// Reserves `count` timestamps and returns the last of them (the ones before it are
    /// `ts - count + 1 ..= ts`, all with the same physical part).
    pub fn get(&self, count: u32) -> Result<u64> {
        let count = count as u64;
        if count == 0 || count >= MAX_LOGICAL {
            return Err(Error::Tso {
                detail: format!("count {count} must be 1 to {}", MAX_LOGICAL - 1),
            });
        }
        let mut state = util::lock(&self.state);
        let now = now_ms(self.clock.as_ref());
        if now > state.physical {
            state.physical = now;
            state.logical = 0;
        }
        if state.logical + count >= MAX_LOGICAL {
            state.physical += 1;
            state.logical = 0;
        }
        if state.physical >= state.bound {
            self.persist_bound(&mut state)?;
        }
        state.logical += count;
        Ok(state.physical << LOGICAL_BITS | state.logical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::MemEngine;

    #[test]
    fn timestamps_increase_across_batches_and_restarts() {
        let store: Arc<dyn MetaStore> = Arc::new(MemEngine::new());
        let tso = Tso::open(
            store.clone(),
            Duration::from_secs(3),
            util::SystemClock::shared(),
        )
        .unwrap();
        let mut last = 0;
        for count in [1, 5, 100_000, 200_000, 1, 1] {
            let ts = tso.get(count).unwrap();
            assert!(ts - count as u64 + 1 > last, "{ts} after {last}");
            last = ts;
        }
        assert!(tso.get(0).is_err());
        assert!(tso.get(1 << 18).is_err());
        drop(tso);
        let tso = Tso::open(store, Duration::from_secs(3), util::SystemClock::shared()).unwrap();
        let ts = tso.get(1).unwrap();
        // Past the whole window the old oracle could have used.
        assert!(
            ts >> LOGICAL_BITS > last >> LOGICAL_BITS,
            "{ts} after {last}"
        );
    }
}
