//! Writes (put, delete, delete-range per CF), and proposing any command that enters the log:
//! the propose half (checks, tracking the proposal until its entry applies or times out) and
//! the apply half. A command is checked completely before anything goes into the batch, so a
//! rejected command writes nothing.
//!
//! Writes a region receives in one poller round share one raft entry ([`ProposalBatch`]):
//! each is checked before it joins, applied with its own checks and answered on its own, so
//! batching changes how many entries the log holds, not what any write sees.

use std::collections::VecDeque;
use std::time::Instant;

use engine::{keys, KvEngine, WriteBatch, CF_DEFAULT, DATA_CFS};
use prost::Message as _;
use proto::metapb::Region;
use proto::raft_cmdpb::{request::Cmd, AdminCmdType, RaftCmdRequest};

use crate::metrics::METRICS;
use crate::operation::admin;
use crate::raft::Peer;
use crate::router::{Proposal, WriteCallback};
use crate::{Error, Result};

/// The context of an entry whose data is several commands, each length-delimited, in slot
/// order; an entry with any other context holds one command (as every entry did before
/// batching, so old logs apply unchanged).
pub const BATCH_CONTEXT: &[u8] = b"batch";

/// The commands of a normal entry, in slot order: its one command, or a batch's. A command
/// that does not decode ends the list with its error (the slots after it are lost with it).
pub fn decode_commands(
    context: &[u8],
    mut data: &[u8],
) -> Vec<std::result::Result<RaftCmdRequest, prost::DecodeError>> {
    if context != BATCH_CONTEXT {
        return vec![RaftCmdRequest::decode(data)];
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let cmd = RaftCmdRequest::decode_length_delimited(&mut data);
        let failed = cmd.is_err();
        out.push(cmd);
        if failed {
            break;
        }
    }
    out
}

/// Whether `request` may share an entry with other writes: a plain write. Admin commands go
/// alone, after the writes received before them.
pub(crate) fn batchable(request: &RaftCmdRequest) -> bool {
    request.admin_request.is_none()
}

/// Checked writes to one region waiting to be proposed as one entry: the raft poller gathers
/// them while it handles the region's messages and proposes them at the end of the region's
/// turn, or earlier, before anything that proposes or changes the peer (so they keep their
/// order), or once the next write would pass a bound (`proposal-batch-max-commands`,
/// `proposal-batch-max-bytes`). One per poller: a batch never outlives a region's turn.
pub(crate) struct ProposalBatch {
    requests: Vec<RaftCmdRequest>,
    cbs: Vec<WriteCallback>,
    bytes: u64,
    /// The term the writes were checked in (a write made for one term must not be proposed
    /// in another).
    term: u64,
    max_commands: usize,
    max_bytes: u64,
}

impl ProposalBatch {
    pub(crate) fn new(max_commands: usize, max_bytes: u64) -> ProposalBatch {
        ProposalBatch {
            requests: Vec::new(),
            cbs: Vec::new(),
            bytes: 0,
            term: 0,
            max_commands: max_commands.max(1),
            max_bytes,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Bytes `request` adds to a batch entry (its length prefix included).
    fn size_of(request: &RaftCmdRequest) -> u64 {
        let len = request.encoded_len();
        (len + prost::length_delimiter_len(len)) as u64
    }

    /// Whether `request` may join without passing a bound (always, into an empty batch).
    fn fits(&self, request: &RaftCmdRequest) -> bool {
        self.is_empty()
            || (self.requests.len() < self.max_commands
                && self.bytes + Self::size_of(request) <= self.max_bytes)
    }

    fn push(&mut self, request: RaftCmdRequest, cb: WriteCallback, term: u64) {
        self.bytes += Self::size_of(&request);
        self.term = term;
        self.requests.push(request);
        self.cbs.push(cb);
    }

    /// The entry's context and data, the callbacks in slot order and the term they were
    /// checked in; empties the batch (keeping its request buffer for the next turn).
    fn take(&mut self) -> (Vec<u8>, Vec<u8>, Vec<WriteCallback>, u64) {
        let cbs = std::mem::take(&mut self.cbs);
        self.bytes = 0;
        let (context, data) = match self.requests.as_slice() {
            [one] => (Vec::new(), one.encode_to_vec()),
            many => {
                let mut data =
                    Vec::with_capacity(many.iter().map(Self::size_of).sum::<u64>() as usize);
                for r in many {
                    // Cannot fail: a Vec grows as needed.
                    let _ = r.encode_length_delimited(&mut data);
                }
                (BATCH_CONTEXT.to_vec(), data)
            }
        };
        self.requests.clear();
        (context, data, cbs, self.term)
    }

    /// Empties the batch without proposing it; returns its callbacks, for the caller to
    /// answer (nothing of them was written).
    pub(crate) fn discard(&mut self) -> Vec<WriteCallback> {
        self.requests.clear();
        self.bytes = 0;
        std::mem::take(&mut self.cbs)
    }
}

fn cf_name(cf: &str) -> Option<&'static str> {
    if cf.is_empty() {
        return Some(CF_DEFAULT);
    }
    DATA_CFS.iter().copied().find(|name| *name == cf)
}

/// Why raft dropped a proposal while this peer leads: too many bytes are uncommitted.
fn uncommitted_full(region_id: u64) -> Error {
    Error::ServerIsBusy {
        region_id,
        reason: "too many uncommitted entries (raft-max-uncommitted-size)".into(),
    }
}

fn check_key(region: &Region, key: &[u8]) -> Result<()> {
    if keys::region_contains(region, key) {
        Ok(())
    } else {
        Err(Error::KeyNotInRegion {
            key: key.to_vec(),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        })
    }
}

/// A write is stale once the region's key range changed (split or merge: `version`);
/// membership changes (`conf_ver`) do not move keys, so they do not make a write stale.
pub fn check_epoch(region: &Region, cmd: &RaftCmdRequest) -> Result<()> {
    let header = cmd.header.unwrap_or_default();
    let current = region.region_epoch.unwrap_or_default();
    let requested = header.region_epoch.unwrap_or_default();
    if header.region_id != region.id || requested.version != current.version {
        return Err(Error::EpochNotMatch {
            region_id: region.id,
            request_conf_ver: requested.conf_ver,
            request_version: requested.version,
            current_regions: vec![region.clone()],
        });
    }
    Ok(())
}

/// Checks `cmd` against the region as this peer knows it: same region, same version (a split
/// or merge since the proposal makes the command stale), keys inside the range, known CFs.
pub fn check_write(region: &Region, cmd: &RaftCmdRequest) -> Result<()> {
    check_epoch(region, cmd)?;
    for req in &cmd.requests {
        let (cf, start, end) = match &req.cmd {
            Some(Cmd::Put(p)) => (&p.cf, &p.key, None),
            Some(Cmd::Delete(d)) => (&d.cf, &d.key, None),
            Some(Cmd::DeleteRange(d)) => (&d.cf, &d.start_key, Some(&d.end_key)),
            None => {
                return Err(Error::InvalidCommand {
                    region_id: region.id,
                    detail: "request without a command".into(),
                })
            }
        };
        if cf_name(cf).is_none() {
            return Err(Error::InvalidCommand {
                region_id: region.id,
                detail: format!("unknown column family {cf:?}"),
            });
        }
        check_key(region, start)?;
        if let Some(end) = end {
            // An empty end means "to the region's end".
            let past_region = !end.is_empty()
                && !region.end_key.is_empty()
                && end.as_slice() > region.end_key.as_slice();
            if past_region || (!end.is_empty() && end < start) {
                return Err(Error::KeyNotInRegion {
                    key: end.clone(),
                    region_id: region.id,
                    start_key: region.start_key.clone(),
                    end_key: region.end_key.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Puts a checked command's writes into `wb`.
pub(crate) fn write_cmd<WB: WriteBatch>(
    region: &Region,
    cmd: &RaftCmdRequest,
    wb: &mut WB,
) -> Result<()> {
    let region_id = region.id;
    let engine_err = |source| Error::Engine { region_id, source };
    for req in &cmd.requests {
        match &req.cmd {
            Some(Cmd::Put(p)) => {
                let cf = cf_name(&p.cf).unwrap_or(CF_DEFAULT);
                wb.put_cf(cf, &keys::data_key(&p.key), &p.value)
                    .map_err(engine_err)?;
            }
            Some(Cmd::Delete(d)) => {
                let cf = cf_name(&d.cf).unwrap_or(CF_DEFAULT);
                wb.delete_cf(cf, &keys::data_key(&d.key))
                    .map_err(engine_err)?;
            }
            Some(Cmd::DeleteRange(d)) => {
                let cf = cf_name(&d.cf).unwrap_or(CF_DEFAULT);
                let end = if d.end_key.is_empty() {
                    keys::data_end_key(&region.end_key)
                } else {
                    keys::data_key(&d.end_key)
                };
                wb.delete_range_cf(cf, &keys::data_key(&d.start_key), &end)
                    .map_err(engine_err)?;
            }
            None => {}
        }
    }
    Ok(())
}

impl<EK: KvEngine> Peer<EK> {
    /// Proposes a write; `cb` is answered when its entry is applied, found superseded, or
    /// undetermined after `proposal-timeout-ms`. A request failing a check answers at once and
    /// proposes nothing.
    pub fn propose_write(&mut self, request: RaftCmdRequest, cb: WriteCallback, now: Instant) {
        let is_transfer = request
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::TransferLeader as i32);
        if is_transfer {
            let result = self.transfer_leader(&request);
            self.reply_write(cb, result);
            return;
        }
        let is_conf_change = request
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::ChangePeerV2 as i32);
        if is_conf_change {
            self.propose_conf_change(request, cb, now);
            return;
        }
        if let Err(e) = self.check_write(&request) {
            self.reply_write(cb, Err(e));
            return;
        }
        let is_split = request
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::BatchSplit as i32);
        let data = request.encode_to_vec();
        let before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(vec![], data).is_ok();
        let tracked = self.track_proposal(before, proposed, vec![cb], now, uncommitted_full);
        if tracked && is_split {
            self.last_split_index = self.raw.raft.raft_log.last_index();
        }
    }

    /// Checks `request`, a plain write, and adds it to `batch`, after proposing what the batch
    /// held if the write would pass one of its bounds. A write failing a check is answered at
    /// once and joins nothing.
    pub(crate) fn batch_write(
        &mut self,
        batch: &mut ProposalBatch,
        request: RaftCmdRequest,
        cb: WriteCallback,
        now: Instant,
    ) {
        if let Err(e) = self.check_write(&request) {
            self.reply_write(cb, Err(e));
            return;
        }
        // A batch holds the writes of one term only (one checked as a raft message stepped
        // this peer down and a later one re-elected it must not go with it).
        if !batch.fits(&request) || (!batch.is_empty() && batch.term != self.term()) {
            self.propose_batch(batch, now);
        }
        batch.push(request, cb, self.term());
    }

    /// Proposes the batched writes as one entry, each tracked under its slot (nothing if the
    /// batch is empty).
    pub(crate) fn propose_batch(&mut self, batch: &mut ProposalBatch, now: Instant) {
        if batch.is_empty() {
            return;
        }
        let (context, data, cbs, term) = batch.take();
        if term != self.term() || !self.is_leader() {
            // Checked as leader, which it no longer is (a raft message stepped it down in the
            // turn). Not proposed: raft-rs would forward a follower's proposal to the leader,
            // and NotLeader must mean that nothing was written.
            for cb in cbs {
                let err = if self.is_leader() {
                    Error::StaleCommand {
                        region_id: self.region_id(),
                        index: 0,
                        term: self.term(),
                        detail: format!("the write was checked in term {term}"),
                    }
                } else {
                    self.not_leader()
                };
                self.reply_write(cb, Err(err));
            }
            return;
        }
        METRICS.proposal_batch_commands.observe(cbs.len() as f64);
        let before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(context, data).is_ok();
        self.track_proposal(before, proposed, cbs, now, uncommitted_full);
    }

    /// Waits for the entry raft just appended (one callback per command in it, in slot
    /// order), or, if raft appended nothing, answers each with `refused` while this peer still
    /// leads (and no transfer is under way), NotLeader otherwise. Returns whether the proposal
    /// is in the log.
    pub(crate) fn track_proposal(
        &mut self,
        before: u64,
        proposed: bool,
        cbs: Vec<WriteCallback>,
        now: Instant,
        refused: impl Fn(u64) -> Error,
    ) -> bool {
        let index = self.raw.raft.raft_log.last_index();
        if !proposed || index == before {
            for cb in cbs {
                let err = if self.is_leader() && self.raw.raft.lead_transferee.is_none() {
                    refused(self.region_id())
                } else {
                    self.not_leader()
                };
                self.reply_write(cb, Err(err));
            }
            return false;
        }
        let term = self.term();
        for (slot, cb) in (0u32..).zip(cbs) {
            self.proposals.push_back(Proposal {
                index,
                term,
                slot,
                propose_time: now,
                cb,
            });
        }
        true
    }

    pub(crate) fn check_write(&self, request: &RaftCmdRequest) -> Result<()> {
        self.check_request(request)?;
        match &request.admin_request {
            Some(a) => admin::check_admin(self.region(), a)?,
            None => check_write(self.region(), request)?,
        }
        let size = request.encoded_len() as u64;
        if size > self.limits.entry_max_size {
            return Err(Error::RaftEntryTooLarge {
                region_id: self.region_id(),
                entry_size: size,
                limit: self.limits.entry_max_size,
            });
        }
        Ok(())
    }

    /// Fails proposals whose fate is still unknown after the proposal timeout. They are not
    /// StaleCommand: the entry may still commit under the next leader.
    pub(crate) fn expire_proposals(&mut self, now: Instant) {
        let Some(deadline) = now.checked_sub(self.limits.proposal_timeout) else {
            return;
        };
        let mut kept = VecDeque::with_capacity(self.proposals.len());
        for p in std::mem::take(&mut self.proposals) {
            if p.propose_time < deadline {
                slog::warn!(self.logger, "proposal undetermined after timeout";
                    "index" => p.index, "term" => p.term);
                let err = Error::Undetermined {
                    region_id: self.raw.store().region_id(),
                    index: p.index,
                    term: p.term,
                    waited_ms: now.saturating_duration_since(p.propose_time).as_millis() as u64,
                };
                self.reply_write(p.cb, Err(err));
            } else {
                kept.push_back(p);
            }
        }
        self.proposals = kept;
    }
}

#[cfg(test)]
mod tests {
    use engine::{KvEngine, MemEngine, Peekable, CF_RAFT, CF_WRITE};
    use prost::Message as _;
    use proto::metapb::RegionEpoch;
    use proto::raft_serverpb::RaftApplyState;
    use raft::eraftpb::Entry;

    use crate::operation::apply::apply_entries;
    use proto::raft_cmdpb::{DeleteRangeRequest, PutRequest, RaftRequestHeader, Request};

    use super::*;

    fn region() -> Region {
        Region {
            id: 3,
            start_key: b"b".to_vec(),
            end_key: b"m".to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 2,
            }),
            ..Default::default()
        }
    }

    fn cmd(version: u64, requests: Vec<Cmd>) -> RaftCmdRequest {
        RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: 3,
                region_epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version,
                }),
                ..Default::default()
            }),
            requests: requests
                .into_iter()
                .map(|c| Request { cmd: Some(c) })
                .collect(),
            admin_request: None,
        }
    }

    fn put(cf: &str, k: &[u8], v: &[u8]) -> Cmd {
        Cmd::Put(PutRequest {
            cf: cf.into(),
            key: k.to_vec(),
            value: v.to_vec(),
        })
    }

    fn entry(index: u64, c: &RaftCmdRequest) -> Entry {
        Entry {
            index,
            term: 6,
            data: c.encode_to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn applies_checked_commands_and_rejects_the_rest_whole() {
        let kv = MemEngine::new();
        let region = region();
        let mut state = RaftApplyState::default();
        let entries = vec![
            entry(
                6,
                &cmd(2, vec![put("", b"c", b"1"), put(CF_WRITE, b"d", b"2")]),
            ),
            // Half inside, half outside the region: nothing of it may be written.
            entry(7, &cmd(2, vec![put("", b"e", b"x"), put("", b"z", b"x")])),
            // Proposed before a split changed the version.
            entry(8, &cmd(1, vec![put("", b"f", b"x")])),
            entry(9, &cmd(2, vec![put("nope", b"g", b"x")])),
            entry(
                10,
                &cmd(
                    2,
                    vec![Cmd::DeleteRange(DeleteRangeRequest {
                        cf: String::new(),
                        start_key: b"c".to_vec(),
                        end_key: vec![],
                    })],
                ),
            ),
            entry(11, &cmd(2, vec![put("", b"h", b"3")])),
        ];
        let mut wb = kv.write_batch();
        let mut out = Vec::new();
        apply_entries::<MemEngine>(
            &kv,
            &mut region.clone(),
            &mut state,
            &entries,
            &mut wb,
            &mut out,
        )
        .unwrap();
        kv.write(&mut wb, true).unwrap();

        let results: Vec<_> = out.iter().map(|a| (a.index, a.result.is_ok())).collect();
        assert_eq!(
            results,
            vec![
                (6, true),
                (7, false),
                (8, false),
                (9, false),
                (10, true),
                (11, true)
            ]
        );
        assert!(matches!(out[1].result, Err(Error::KeyNotInRegion { .. })));
        assert!(matches!(
            out[2].result,
            Err(Error::EpochNotMatch {
                request_version: 1,
                ..
            })
        ));
        assert!(matches!(out[3].result, Err(Error::InvalidCommand { .. })));
        let get = |cf, k: &[u8]| kv.get_value_cf(cf, &keys::data_key(k)).unwrap();
        assert_eq!(
            get(CF_DEFAULT, b"c"),
            None,
            "deleted by the range delete to the region end"
        );
        assert_eq!(
            get(CF_WRITE, b"d"),
            Some(b"2".to_vec()),
            "other CFs untouched by the range delete"
        );
        assert_eq!(
            get(CF_DEFAULT, b"e"),
            None,
            "a rejected command writes nothing"
        );
        assert_eq!(get(CF_DEFAULT, b"h"), Some(b"3".to_vec()));
        let persisted: RaftApplyState = kv
            .get_msg_cf(CF_RAFT, &keys::apply_state_key(3))
            .unwrap()
            .unwrap();
        assert_eq!(persisted, state);
        assert_eq!(
            (state.applied_index, state.commit_index, state.commit_term),
            (11, 11, 6)
        );
    }

    /// The commands of a batch, proposed as one entry, each checked and applied on its own.
    #[test]
    fn a_batch_entry_applies_each_command_on_its_own() {
        let commands = [
            cmd(2, vec![put("", b"c", b"1")]),
            // Outside the region: refused alone.
            cmd(2, vec![put("", b"c", b"2"), put("", b"z", b"x")]),
            // Proposed in another version: refused alone.
            cmd(1, vec![put("", b"d", b"x")]),
            cmd(2, vec![put("", b"e", b"3")]),
        ];
        let mut batch = ProposalBatch::new(16, 1 << 20);
        for c in &commands {
            assert!(batch.fits(c));
            batch.push(c.clone(), crate::router::Callback::new(|_| {}), 6);
        }
        let (context, data, cbs, term) = batch.take();
        assert!(batch.is_empty());
        assert_eq!((context.as_slice(), cbs.len(), term), (BATCH_CONTEXT, 4, 6));
        let decoded: Vec<_> = decode_commands(&context, &data)
            .into_iter()
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(decoded, commands);
        let kv = MemEngine::new();
        let mut state = RaftApplyState::default();
        let batched = Entry {
            index: 6,
            term: 6,
            context: context.into(),
            data: data.into(),
            ..Default::default()
        };
        let entries = vec![batched, entry(7, &cmd(2, vec![put("", b"f", b"4")]))];
        let mut wb = kv.write_batch();
        let mut out = Vec::new();
        apply_entries::<MemEngine>(&kv, &mut region(), &mut state, &entries, &mut wb, &mut out)
            .unwrap();
        kv.write(&mut wb, true).unwrap();
        let results: Vec<_> = out
            .iter()
            .map(|a| (a.index, a.slot, a.result.is_ok()))
            .collect();
        assert_eq!(
            results,
            vec![
                (6, 0, true),
                (6, 1, false),
                (6, 2, false),
                (6, 3, true),
                (7, 0, true)
            ]
        );
        assert!(matches!(out[1].result, Err(Error::KeyNotInRegion { .. })));
        assert!(matches!(out[2].result, Err(Error::EpochNotMatch { .. })));
        let get = |k: &[u8]| kv.get_value_cf(CF_DEFAULT, &keys::data_key(k)).unwrap();
        assert_eq!(
            get(b"c"),
            Some(b"1".to_vec()),
            "the refused command wrote nothing"
        );
        assert_eq!(get(b"d"), None);
        assert_eq!(get(b"e"), Some(b"3".to_vec()));
        assert_eq!(get(b"f"), Some(b"4".to_vec()));

        // A batch of one is an ordinary entry; a damaged batch fails from the damage on.
        let mut one = ProposalBatch::new(16, 1 << 20);
        one.push(commands[0].clone(), crate::router::Callback::new(|_| {}), 6);
        let (context, data, ..) = one.take();
        assert!(context.is_empty());
        assert_eq!(data, commands[0].encode_to_vec());
        let mut damaged = Vec::new();
        commands[0].encode_length_delimited(&mut damaged).unwrap();
        damaged.extend_from_slice(&[0xff, 0xff, 0x01]);
        let decoded = decode_commands(BATCH_CONTEXT, &damaged);
        assert_eq!(decoded.len(), 2);
        assert!(decoded[0].is_ok() && decoded[1].is_err());
    }

    #[test]
    fn a_batch_is_bounded_by_commands_and_bytes() {
        let small = cmd(2, vec![put("", b"c", b"1")]);
        let size = ProposalBatch::size_of(&small);
        let mut batch = ProposalBatch::new(3, 2 * size + size / 2);
        let cb = || crate::router::Callback::new(|_| {});
        for _ in 0..2 {
            assert!(batch.fits(&small));
            batch.push(small.clone(), cb(), 1);
        }
        assert!(!batch.fits(&small), "a third would pass the byte bound");
        let mut batch = ProposalBatch::new(2, 1 << 20);
        batch.push(small.clone(), cb(), 1);
        batch.push(small.clone(), cb(), 1);
        assert!(!batch.fits(&small), "a third would pass the command bound");
        // A write larger than the byte bound still goes, alone.
        let big = cmd(2, vec![put("", b"c", &[0; 4096])]);
        let mut batch = ProposalBatch::new(8, 1024);
        assert!(batch.fits(&big));
        batch.push(big.clone(), cb(), 1);
        assert!(!batch.fits(&small));
    }
}
