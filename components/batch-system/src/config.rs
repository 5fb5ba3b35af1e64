use std::time::Duration;

use crate::error::Error;

/// Settings of one batch system (raftstore and apply each have their own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of poller threads. Default 2.
    pub pool_size: usize,
    /// Most FSMs one poller handles in one round; `end` sees at most this many. Default 256.
    pub max_batch_size: usize,
    /// Most messages one FSM handles in one round before it yields to others. Default 256.
    pub messages_per_tick: usize,
    /// Capacity of each normal FSM's mailbox; a full mailbox rejects sends with
    /// [`crate::SendError::Full`]. Default 4096.
    pub mailbox_capacity: usize,
    /// Capacity of the control FSM's mailbox. Default 40960.
    pub control_mailbox_capacity: usize,
    /// How long a poller with nothing to do blocks before it checks for shutdown. Default 100 ms.
    pub idle_wait: Duration,
    /// After taking a batch that is not full, how long a poller keeps gathering FSMs that
    /// become ready before it runs the round. Zero (default) runs at once; a few hundred
    /// microseconds trade that much latency for larger rounds (more work per fsync).
    pub batch_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pool_size: 2,
            max_batch_size: 256,
            messages_per_tick: 256,
            mailbox_capacity: 4096,
            control_mailbox_capacity: 40960,
            idle_wait: Duration::from_millis(100),
            batch_wait: Duration::ZERO,
        }
    }
}

impl Config {
    /// Checks that every bound is usable.
    pub fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("pool_size", self.pool_size),
            ("max_batch_size", self.max_batch_size),
            ("messages_per_tick", self.messages_per_tick),
            ("mailbox_capacity", self.mailbox_capacity),
            ("control_mailbox_capacity", self.control_mailbox_capacity),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::InvalidConfig { field });
            }
        }
        if self.idle_wait.is_zero() {
            return Err(Error::InvalidConfig { field: "idle_wait" });
        }
        Ok(())
    }
}
