//! Writes (put, delete, delete-range per CF): the apply half. A command is checked completely
//! before anything goes into the batch, so a rejected command writes nothing.

use engine::{keys, WriteBatch, CF_DEFAULT, DATA_CFS};
use proto::metapb::Region;
use proto::raft_cmdpb::{request::Cmd, RaftCmdRequest};

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
