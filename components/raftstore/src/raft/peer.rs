use std::collections::VecDeque;

use engine::KvEngine;
use raft::eraftpb::{Entry, Message};
use raft::{RawNode, StateRole};
use raft_log::RaftLogBatch;

use crate::storage::PeerStorage;
use crate::{Config, Error, Result};

/// A ready whose entries and hard state are in the round's batch but not yet durable.
struct Unpersisted {
    number: u64,
    /// The last entry it appended, to tell the entry cache what became durable.
    last_entry: Option<(u64, u64)>,
    /// Messages that may only leave once the ready is durable (votes, append responses...).
    messages: Vec<Message>,
}

/// What one round wrote, for the group-commit metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    pub regions: usize,
    pub entries: usize,
}

/// One peer of one region on this store.
pub struct Peer<EK: KvEngine> {
    peer_id: u64,
    raw: RawNode<PeerStorage<EK>>,
    unpersisted: VecDeque<Unpersisted>,
}

impl<EK: KvEngine> Peer<EK> {
    pub fn new(
        config: &Config,
        peer_id: u64,
        storage: PeerStorage<EK>,
        logger: &slog::Logger,
    ) -> Result<Peer<EK>> {
        let region_id = storage.region_id();
        let raft_config = raft::Config {
            id: peer_id,
            election_tick: config.raft_election_timeout_ticks,
            heartbeat_tick: config.raft_heartbeat_ticks,
            max_inflight_msgs: config.raft_max_inflight_msgs,
            max_size_per_msg: config.raft_max_size_per_msg,
            applied: storage.applied_index(),
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        let logger = logger.new(slog::o!("region_id" => region_id, "peer_id" => peer_id));
        let raw = RawNode::new(&raft_config, storage, &logger).map_err(|e| Error::Raft {
            region_id,
            detail: e.to_string(),
        })?;
        Ok(Peer {
            peer_id,
            raw,
            unpersisted: VecDeque::new(),
        })
    }

    pub fn region_id(&self) -> u64 {
        self.raw.store().region_id()
    }

    pub fn peer_id(&self) -> u64 {
        self.peer_id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn storage(&self) -> &PeerStorage<EK> {
        self.raw.store()
    }

    pub fn storage_mut(&mut self) -> &mut PeerStorage<EK> {
        self.raw.mut_store()
    }

    /// The commit index and the term of the entry there: what applied entries are recorded
    /// as committed under.
    pub fn commit_index_term(&self) -> (u64, u64) {
        let committed = self.raw.raft.raft_log.committed;
        let term = self.raw.raft.raft_log.term(committed).unwrap_or(0);
        (committed, term)
    }

    pub fn raw(&self) -> &RawNode<PeerStorage<EK>> {
        &self.raw
    }

    /// Advances the logical clock; true if raft has something to do.
    pub fn tick(&mut self) -> bool {
        self.raw.tick()
    }

    pub fn campaign(&mut self) -> Result<()> {
        let region_id = self.region_id();
        self.raw.campaign().map_err(|e| Error::Raft {
            region_id,
            detail: e.to_string(),
        })
    }

    pub fn step(&mut self, msg: Message) -> Result<()> {
        let region_id = self.region_id();
        self.raw.step(msg).map_err(|e| Error::Raft {
            region_id,
            detail: e.to_string(),
        })
    }

    pub fn propose(&mut self, data: Vec<u8>) -> Result<()> {
        let region_id = self.region_id();
        self.raw.propose(vec![], data).map_err(|e| Error::Raft {
            region_id,
            detail: e.to_string(),
        })
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Takes this peer's part of a poll round: its new entries and hard state go into `batch`
    /// (shared by every region of the round), messages that may leave before persistence (a
    /// leader's appends) into `out`, committed entries into `committed`. The rest waits for
    /// [`Self::on_round_persisted`]. Returns how many entries it added to the batch.
    pub fn handle_ready(
        &mut self,
        batch: &mut RaftLogBatch,
        out: &mut Vec<Message>,
        committed: &mut Vec<Entry>,
    ) -> Result<usize> {
        if !self.raw.has_ready() {
            return Ok(0);
        }
        let region_id = self.region_id();
        let mut ready = self.raw.ready();
        if !ready.snapshot().is_empty() {
            return Err(Error::Raft {
                region_id,
                detail: "received a snapshot, which this build cannot apply yet".into(),
            });
        }
        out.extend(ready.take_messages());
        committed.extend(ready.take_committed_entries());
        let entries = ready.take_entries();
        let store = self.raw.mut_store();
        store.append(&entries, batch)?;
        if let Some(hs) = ready.hs() {
            store.set_hard_state(hs);
        }
        if !entries.is_empty() || ready.hs().is_some() {
            store.write_raft_state(batch)?;
        }
        self.unpersisted.push_back(Unpersisted {
            number: ready.number(),
            last_entry: entries.last().map(|e| (e.index, e.term)),
            messages: ready.take_persisted_messages(),
        });
        self.raw.advance_append_async(ready);
        Ok(entries.len())
    }

    /// The round's batch is durable: release the messages that waited for it and tell raft.
    pub fn on_round_persisted(&mut self, out: &mut Vec<Message>) {
        let Some(number) = self.unpersisted.back().map(|u| u.number) else {
            return;
        };
        for done in self.unpersisted.drain(..) {
            if let Some((index, term)) = done.last_entry {
                self.raw.mut_store().on_persisted(index, term);
            }
            out.extend(done.messages);
        }
        self.raw.on_persist_ready(number);
    }

    /// Committed entries up to `index` have been applied.
    pub fn on_applied(&mut self, index: u64) {
        self.raw.advance_apply_to(index);
    }
}
