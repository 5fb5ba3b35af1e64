use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[raftstore]` section of a store's TOML config. Keys are kebab-case
/// (`raft-max-inflight-msgs`); a missing key takes its default. [`Config::validate`] names the
/// first field out of bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Threads polling region peers (raft, group commit). Default 2; 1..=64.
    pub store_pool_size: usize,
    /// Threads applying committed entries to the KV engine. Default 2; 1..=64.
    pub apply_pool_size: usize,
    /// Most FSMs one poller handles in a round (and so shares one fsync / one KV write between).
    /// Default 256; 1..=65536.
    pub max_batch_size: usize,
    /// Most messages one FSM handles in a round before others get a turn. Default 256; >= 1.
    pub messages_per_tick: usize,
    /// How long a raft poller that took fewer than `max-batch-size` peers keeps gathering
    /// peers that become ready before it runs the round: more regions share each fsync, at
    /// the cost of up to this much latency. Default 0 (run at once); <= 10 ms.
    pub store_batch_wait_us: u64,
    /// Store-writer threads: 1 hands each raft round's raft-log write and fsync to a writer
    /// thread, which merges the rounds queued while it wrote into one write and one fsync, so
    /// raft rounds never wait on the disk; 0 (default) has each raft poller write and fsync
    /// its own round. 0..=1 (one writer keeps a region's writes in order without affinity).
    /// The writer saved about 40% of the fsyncs but costs a thread hand-off per round: on a disk whose
    /// fsync is a fraction of a millisecond it lost throughput (docs/benchmarks.md); turn it
    /// on where fsyncs are slow or scarce.
    pub store_io_pool_size: usize,
    /// Rounds waiting for the store writer (metric `regionstore_store_writer_queue`); a raft
    /// poller that finds it full waits for room. Default 64; 1..=65536.
    pub store_io_queue_capacity: usize,
    /// The store writer merges queued rounds into one raft-log write up to this many bytes;
    /// a round that would pass it starts the next write (metric
    /// `regionstore_store_writer_rounds_per_write`). Default 1 MiB; 4 KiB..=1 GiB.
    pub store_io_write_size_limit: usize,
    /// Capacity of each region's mailbox (metric `regionstore_batch_mailbox_full_total` counts
    /// rejections). Default 4096; >= 16.
    pub peer_mailbox_capacity: usize,
    /// How long a request waits for room in a full mailbox before it fails with ServerIsBusy.
    /// Default 500 ms; <= 10 s.
    pub mailbox_full_wait_ms: u64,
    /// Memory the entry caches of all regions may use for entries already durable in the raft
    /// log (metric `regionstore_entry_cache_bytes`). Entries not yet durable are always kept;
    /// entries applied and held by every active follower leave at once, so this bounds what
    /// lagging followers and a slow apply keep in memory.
    /// Default 256 MiB; 0 keeps only what is not yet durable.
    pub entry_cache_limit: usize,
    /// One raft logical clock tick. Default 100 ms; 10 ms..=10 s.
    pub raft_base_tick_interval_ms: u64,
    /// Ticks without a leader's heartbeat before a follower campaigns. Default 10; >
    /// `raft-heartbeat-ticks`.
    pub raft_election_timeout_ticks: usize,
    /// Ticks between a leader's heartbeats. Default 2; >= 1.
    pub raft_heartbeat_ticks: usize,
    /// Append messages a leader may have in flight to one follower. Default 256; 1..=65536.
    pub raft_max_inflight_msgs: usize,
    /// Most bytes of entries in one append message. Default 1 MiB; >= 1 KiB.
    pub raft_max_size_per_msg: u64,
    /// Bytes of proposed but uncommitted entries a leader accepts per region; beyond it a
    /// proposal fails with ServerIsBusy. Default 128 MiB; >= `raft-max-size-per-msg`.
    pub raft_max_uncommitted_size: u64,
    /// Largest encoded command a proposal may carry (RaftEntryTooLarge above it). Default 8 MiB;
    /// 1 KiB..=64 MiB.
    pub raft_entry_max_size: u64,
    /// Most writes to one region that share a raft entry: the writes a region receives in one
    /// poller round are proposed as one entry, each still checked, applied and answered on
    /// its own (metric `regionstore_proposal_batch_commands`). 1 turns batching off.
    /// Default 256; 1..=65536.
    pub proposal_batch_max_commands: usize,
    /// Most bytes of encoded writes in one such entry; a write that would pass it starts the
    /// next entry. `raft-entry-max-size` applies if it is smaller. Default 1 MiB; >= 1 KiB.
    ///
    /// A store of a build before batching cannot apply a batched entry and skips its writes:
    /// upgrade every store before leaving batching on (`proposal-batch-max-commands = 1`
    /// during a rolling upgrade from such a build).
    pub proposal_batch_max_bytes: u64,
    /// How long a leader may serve reads locally after a quorum acknowledged its messages.
    /// Must stay below (election ticks - 1) × tick interval, the earliest another leader can
    /// be elected, so none is while the lease holds. Default 800 ms (below 900 ms).
    pub max_leader_lease_ms: u64,
    /// How often a leader checks whether its region's raft log can be compacted. Default 3 s;
    /// >= 1 tick.
    pub raft_log_gc_tick_interval_ms: u64,
    /// Applied entries a region's log must hold beyond its first index before the leader
    /// proposes a compaction. The log is not compacted past the slowest follower's matched
    /// index unless that follower is `raft-log-gc-count-limit` behind. Default 50; >= 1.
    pub raft_log_gc_threshold: u64,
    /// How often the store asks raft-engine to delete log files no region needs any more.
    /// Default 10 s; >= 1 tick.
    pub raft_engine_purge_interval_ms: u64,
    /// Threads writing snapshot files (one generation at a time each). Default 2; 1..=16.
    pub snap_generator_pool_size: usize,
    /// Snapshots this store sends at once; a leader whose snapshot finds no slot reports it
    /// failed to raft-rs, which tries again later. Default 8; 1..=256.
    pub snap_max_concurrent_sends: usize,
    /// Snapshots this store receives at once; more are refused (ServerIsBusy) and the sender
    /// tries again later. Default 8; 1..=256.
    pub snap_max_concurrent_recvs: usize,
    /// How often a leader checks whether its region should split. Default 10 s; >= 1 tick.
    pub split_region_check_tick_interval_ms: u64,
    /// A region larger than this is split. Default 144 MiB; > `region-split-size`.
    pub region_max_size: u64,
    /// Size of the parts a region is split into (a split key every this many bytes).
    /// Default 96 MiB; >= 1 KiB.
    pub region_split_size: u64,
    /// A region with more keys than this is split. Default 1,440,000; > `region-split-keys`.
    pub region_max_keys: u64,
    /// Keys per part when splitting by key count. Default 960,000; >= 1.
    pub region_split_keys: u64,
    /// Split keys one check may produce (a region far over the limit splits in one batch).
    /// Default 8; 1..=64.
    pub max_splits_per_check: usize,
    /// How often a leader reports its region to the scheduler (also at once after an
    /// election, a membership change or a split). Default 60 s; >= 1 tick.
    pub region_heartbeat_tick_interval_ms: u64,
    /// How often the store reports itself to the scheduler. Default 10 s; >= 1 tick.
    pub store_heartbeat_interval_ms: u64,
    /// Tasks the split checker queues; more are dropped (periodic checks, asked again next
    /// tick) or refused with ServerIsBusy (explicit splits). Default 1024; 1..=1,048,576.
    pub split_check_queue_capacity: usize,
    /// Heartbeats the scheduler worker queues; more are dropped, and the regions whose report
    /// was dropped are asked again once the queue has room (a failover gives a store
    /// thousands of new leaders at once). Default 4096; 1..=1,048,576.
    pub heartbeat_queue_capacity: usize,
    /// Region heartbeats the scheduler worker sends at once (what its queue holds, up to
    /// this many). After a store fails, its regions' new leaders all report together, and
    /// clients find them only through the scheduler. Default 64; 1..=1024.
    pub heartbeat_concurrency: usize,
    /// A received snapshot of a region with no peer here is deleted once older than this (a
    /// younger one may belong to a transfer about to create its peer). Default 10 min;
    /// >= 1 min.
    pub snap_received_gc_grace_ms: u64,
    /// A leader compacts past a follower that is more than this many entries behind (it will
    /// catch up by snapshot instead of from the log). Default 10,000; >= `raft-log-gc-threshold`.
    pub raft_log_gc_count_limit: u64,
    /// A proposal whose entry is neither applied nor known to be lost after this long fails
    /// with an "undetermined" timeout: it may still commit. Default 10 s; >= 1 tick.
    pub proposal_timeout_ms: u64,
    /// A ReadIndex read not served after this long fails with a timeout (reads have no side
    /// effects, so the caller may retry). Default 5 s; >= 1 tick.
    pub read_index_timeout_ms: u64,
    /// Idle regions hibernate: once a leader and every live member agree nothing is moving,
    /// the region stops ticking and heartbeating until a write, a read, a raft message or an
    /// operator wakes it (metrics `regionstore_hibernated_regions`,
    /// `regionstore_hibernate_wakeups_total`). Default true.
    pub hibernate_regions: bool,
    /// Ticks a leader must see nothing to do (and every live member caught up) before it asks
    /// its members to hibernate. Must exceed `raft-election-timeout-ticks`, so the leader's
    /// lease has run out before the region sleeps. Default 20 (2 s).
    pub hibernate_idle_ticks: usize,
    /// How often a hibernating leader still reports its region to the scheduler. The
    /// scheduler tolerates the silence in between; an operator for an idle region starts at
    /// the next report. Default 5 min; >= 1 tick.
    pub hibernate_heartbeat_interval_ms: u64,
    /// Once another store has been silent for an election timeout, the hibernating regions it
    /// led are woken (to elect new leaders) at most this many per tick, so elections do not
    /// arrive as one storm (metric `regionstore_hibernate_wakeups_total{cause="store_down"}`).
    /// Default 4096; 1..=1,048,576.
    pub hibernate_wake_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store_pool_size: 2,
            apply_pool_size: 2,
            max_batch_size: 256,
            messages_per_tick: 256,
            store_batch_wait_us: 0,
            store_io_pool_size: 0,
            store_io_queue_capacity: 64,
            store_io_write_size_limit: 1 << 20,
            peer_mailbox_capacity: 4096,
            mailbox_full_wait_ms: 500,
            entry_cache_limit: 256 << 20,
            raft_base_tick_interval_ms: 100,
            raft_election_timeout_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_max_inflight_msgs: 256,
            raft_max_size_per_msg: 1 << 20,
            raft_entry_max_size: 8 << 20,
            raft_max_uncommitted_size: 128 << 20,
            proposal_batch_max_commands: 256,
            proposal_batch_max_bytes: 1 << 20,
            max_leader_lease_ms: 800,
            raft_log_gc_tick_interval_ms: 3_000,
            raft_log_gc_threshold: 50,
            raft_engine_purge_interval_ms: 10_000,
            snap_generator_pool_size: 2,
            snap_max_concurrent_sends: 8,
            snap_max_concurrent_recvs: 8,
            split_region_check_tick_interval_ms: 10_000,
            region_max_size: 144 << 20,
            region_split_size: 96 << 20,
            region_max_keys: 1_440_000,
            region_split_keys: 960_000,
            max_splits_per_check: 8,
            region_heartbeat_tick_interval_ms: 60_000,
            store_heartbeat_interval_ms: 10_000,
            split_check_queue_capacity: 1024,
            heartbeat_queue_capacity: 4096,
            heartbeat_concurrency: 64,
            snap_received_gc_grace_ms: 600_000,
            raft_log_gc_count_limit: 10_000,
            proposal_timeout_ms: 10_000,
            read_index_timeout_ms: 5_000,
            hibernate_regions: true,
            hibernate_idle_ticks: 20,
            hibernate_heartbeat_interval_ms: 300_000,
            hibernate_wake_batch: 4096,
        }
    }
}

/// A config field out of its bounds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("raftstore.{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn bound<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError {
            field,
            reason: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(())
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        bound("store-pool-size", self.store_pool_size, 1, 64)?;
        bound("apply-pool-size", self.apply_pool_size, 1, 64)?;
        bound("max-batch-size", self.max_batch_size, 1, 65536)?;
        bound("store-io-pool-size", self.store_io_pool_size, 0, 1)?;
        bound(
            "store-io-queue-capacity",
            self.store_io_queue_capacity,
            1,
            65536,
        )?;
        bound(
            "store-io-write-size-limit",
            self.store_io_write_size_limit,
            4 << 10,
            1 << 30,
        )?;
        bound("messages-per-tick", self.messages_per_tick, 1, usize::MAX)?;
        bound(
            "peer-mailbox-capacity",
            self.peer_mailbox_capacity,
            16,
            1 << 24,
        )?;
        bound("mailbox-full-wait-ms", self.mailbox_full_wait_ms, 0, 10_000)?;
        bound(
            "raft-base-tick-interval-ms",
            self.raft_base_tick_interval_ms,
            10,
            10_000,
        )?;
        bound("raft-heartbeat-ticks", self.raft_heartbeat_ticks, 1, 1000)?;
        if self.raft_election_timeout_ticks <= self.raft_heartbeat_ticks {
            return Err(ConfigError {
                field: "raft-election-timeout-ticks",
                reason: format!(
                    "{} must be greater than raft-heartbeat-ticks ({})",
                    self.raft_election_timeout_ticks, self.raft_heartbeat_ticks
                ),
            });
        }
        bound(
            "raft-max-inflight-msgs",
            self.raft_max_inflight_msgs,
            1,
            65536,
        )?;
        bound(
            "raft-max-size-per-msg",
            self.raft_max_size_per_msg,
            1024,
            u64::MAX,
        )?;
        bound(
            "raft-entry-max-size",
            self.raft_entry_max_size,
            1024,
            64 << 20,
        )?;
        bound(
            "proposal-batch-max-commands",
            self.proposal_batch_max_commands,
            1,
            65536,
        )?;
        bound(
            "proposal-batch-max-bytes",
            self.proposal_batch_max_bytes,
            1024,
            u64::MAX,
        )?;
        bound(
            "raft-max-uncommitted-size",
            self.raft_max_uncommitted_size,
            self.raft_max_size_per_msg,
            u64::MAX,
        )?;
        // A follower may tick right after hearing from the leader, so another leader can be
        // elected (election ticks - 1) tick intervals after the leader's last message.
        let safe_ms =
            self.raft_base_tick_interval_ms * (self.raft_election_timeout_ticks as u64 - 1);
        if self.max_leader_lease_ms == 0 || self.max_leader_lease_ms >= safe_ms {
            return Err(ConfigError {
                field: "max-leader-lease-ms",
                reason: format!(
                    "{} must be above 0 and below (election ticks - 1) x tick interval \
                     ({safe_ms} ms)",
                    self.max_leader_lease_ms
                ),
            });
        }
        let tick = self.raft_base_tick_interval_ms;
        bound(
            "raft-log-gc-tick-interval-ms",
            self.raft_log_gc_tick_interval_ms,
            tick,
            u64::MAX,
        )?;
        bound(
            "raft-log-gc-threshold",
            self.raft_log_gc_threshold,
            1,
            u64::MAX,
        )?;
        bound(
            "raft-engine-purge-interval-ms",
            self.raft_engine_purge_interval_ms,
            tick,
            u64::MAX,
        )?;
        bound(
            "proposal-timeout-ms",
            self.proposal_timeout_ms,
            tick,
            u64::MAX,
        )?;
        bound(
            "read-index-timeout-ms",
            self.read_index_timeout_ms,
            tick,
            u64::MAX,
        )?;
        bound(
            "snap-generator-pool-size",
            self.snap_generator_pool_size,
            1,
            16,
        )?;
        bound(
            "snap-max-concurrent-sends",
            self.snap_max_concurrent_sends,
            1,
            256,
        )?;
        bound(
            "snap-max-concurrent-recvs",
            self.snap_max_concurrent_recvs,
            1,
            256,
        )?;
        bound(
            "split-region-check-tick-interval-ms",
            self.split_region_check_tick_interval_ms,
            tick,
            u64::MAX,
        )?;
        bound("region-split-size", self.region_split_size, 1024, u64::MAX)?;
        bound(
            "region-max-size",
            self.region_max_size,
            self.region_split_size + 1,
            u64::MAX,
        )?;
        bound("region-split-keys", self.region_split_keys, 1, u64::MAX)?;
        bound(
            "region-max-keys",
            self.region_max_keys,
            self.region_split_keys + 1,
            u64::MAX,
        )?;
        bound("max-splits-per-check", self.max_splits_per_check, 1, 64)?;
        bound(
            "region-heartbeat-tick-interval-ms",
            self.region_heartbeat_tick_interval_ms,
            tick,
            u64::MAX,
        )?;
        bound(
            "store-heartbeat-interval-ms",
            self.store_heartbeat_interval_ms,
            tick,
            u64::MAX,
        )?;
        bound(
            "split-check-queue-capacity",
            self.split_check_queue_capacity,
            1,
            1 << 20,
        )?;
        bound(
            "heartbeat-queue-capacity",
            self.heartbeat_queue_capacity,
            1,
            1 << 20,
        )?;
        bound("heartbeat-concurrency", self.heartbeat_concurrency, 1, 1024)?;
        bound(
            "snap-received-gc-grace-ms",
            self.snap_received_gc_grace_ms,
            60_000,
            u64::MAX,
        )?;
        if self.hibernate_regions && self.hibernate_idle_ticks <= self.raft_election_timeout_ticks {
            return Err(ConfigError {
                field: "hibernate-idle-ticks",
                reason: format!(
                    "{} must be greater than raft-election-timeout-ticks ({})",
                    self.hibernate_idle_ticks, self.raft_election_timeout_ticks
                ),
            });
        }
        bound(
            "hibernate-heartbeat-interval-ms",
            self.hibernate_heartbeat_interval_ms,
            tick,
            u64::MAX,
        )?;
        bound(
            "hibernate-wake-batch",
            self.hibernate_wake_batch,
            1,
            1 << 20,
        )?;
        Ok(())
    }

    pub fn base_tick(&self) -> Duration {
        Duration::from_millis(self.raft_base_tick_interval_ms)
    }

    pub fn election_timeout(&self) -> Duration {
        self.base_tick() * self.raft_election_timeout_ticks as u32
    }

    pub fn max_leader_lease(&self) -> Duration {
        Duration::from_millis(self.max_leader_lease_ms)
    }

    pub fn proposal_timeout(&self) -> Duration {
        Duration::from_millis(self.proposal_timeout_ms)
    }

    pub fn read_index_timeout(&self) -> Duration {
        Duration::from_millis(self.read_index_timeout_ms)
    }

    /// `interval_ms` in base ticks, at least 1.
    pub fn ticks_of(&self, interval_ms: u64) -> u64 {
        (interval_ms / self.raft_base_tick_interval_ms).max(1)
    }

    pub fn mailbox_full_wait(&self) -> Duration {
        Duration::from_millis(self.mailbox_full_wait_ms)
    }

    /// The batch-system settings of the raft or apply pool.
    pub fn batch_system(&self, pool_size: usize, batch_wait: Duration) -> batch_system::Config {
        batch_system::Config {
            pool_size,
            batch_wait,
            max_batch_size: self.max_batch_size,
            messages_per_tick: self.messages_per_tick,
            mailbox_capacity: self.peer_mailbox_capacity,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_kebab_case_toml() {
        let config = Config::default();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("raft-max-inflight-msgs = 256"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
        let partial: Config = toml::from_str("store-pool-size = 4").unwrap();
        assert_eq!(partial.store_pool_size, 4);
        assert_eq!(partial.apply_pool_size, 2);
        assert!(toml::from_str::<Config>("no-such-field = 1").is_err());
    }

    #[test]
    fn out_of_bounds_fields_are_named() {
        let bad = Config {
            max_leader_lease_ms: 1000,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "max-leader-lease-ms");
        let bad = Config {
            raft_election_timeout_ticks: 2,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().field,
            "raft-election-timeout-ticks"
        );
        let bad = Config {
            store_pool_size: 0,
            ..Default::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "raftstore.store-pool-size: 0 is outside 1..=64"
        );
    }
}
