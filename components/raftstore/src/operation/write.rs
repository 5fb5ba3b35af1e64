//! Writes (put, delete, delete-range per CF), and proposing any command that enters the log:
//! the propose half (checks, tracking the proposal until its entry applies or times out) and
//! the apply half. A command is checked completely before anything goes into the batch, so a
//! rejected command writes nothing.

use std::collections::VecDeque;
use std::time::Instant;

use engine::{keys, KvEngine, WriteBatch, CF_DEFAULT, DATA_CFS};
use prost::Message as _;
use proto::metapb::Region;
use proto::raft_cmdpb::{request::Cmd, AdminCmdType, RaftCmdRequest};

use crate::operation::admin;
use crate::raft::Peer;
use crate::router::{Proposal, WriteCallback};
use crate::{Error, Result};

fn cf_name(cf: &str) -> Option<&'static str> {
    if cf.is_empty() {
        return Some(CF_DEFAULT);
    }
    DATA_CFS.iter().copied().find(|name| *name == cf)
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
        // Dropped by raft while leading: too many bytes are uncommitted.
        let tracked =
            self.track_proposal(before, proposed, cb, now, |region_id| Error::ServerIsBusy {
                region_id,
                reason: "too many uncommitted entries (raft-max-uncommitted-size)".into(),
            });
        if tracked && is_split {
            self.last_split_index = self.raw.raft.raft_log.last_index();
        }
    }

    /// Waits for the entry raft just appended, or, if raft appended nothing, answers `cb` with
    /// `refused` while this peer still leads (and no transfer is under way), NotLeader
    /// otherwise. Returns whether the proposal is in the log.
    pub(crate) fn track_proposal(
        &mut self,
        before: u64,
        proposed: bool,
        cb: WriteCallback,
        now: Instant,
        refused: impl FnOnce(u64) -> Error,
    ) -> bool {
        let index = self.raw.raft.raft_log.last_index();
        if !proposed || index == before {
            let err = if self.is_leader() && self.raw.raft.lead_transferee.is_none() {
                refused(self.region_id())
            } else {
                self.not_leader()
            };
            self.reply_write(cb, Err(err));
            return false;
        }
        self.proposals.push_back(Proposal {
            index,
            term: self.term(),
            propose_time: now,
            cb,
        });
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
}
