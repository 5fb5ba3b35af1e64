//! Field-by-field conversion between raft-rs's `eraftpb` types (rust-protobuf 2) and our prost
//! mirror in [`crate::eraftpb`], which is what travels on the wire.
//!
//! raft-rs → wire is infallible (`From`); wire → raft-rs is `TryFrom`, because the wire may carry
//! enum values raft-rs does not know.

use protobuf::{ProtobufEnum, RepeatedField, SingularPtrField};
use raft::eraftpb as rs;

use crate::eraftpb as wire;

/// A wire message that has no raft-rs equivalent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("unknown {enum_name} value {value} in field {field}")]
    UnknownEnumValue {
        enum_name: &'static str,
        field: &'static str,
        value: i32,
    },
}

fn enum_from_wire<E: ProtobufEnum>(
    value: i32,
    enum_name: &'static str,
    field: &'static str,
) -> Result<E, ConvertError> {
    E::from_i32(value).ok_or(ConvertError::UnknownEnumValue {
        enum_name,
        field,
        value,
    })
}

impl From<rs::Entry> for wire::Entry {
    fn from(e: rs::Entry) -> Self {
        wire::Entry {
            entry_type: e.entry_type.value(),
            term: e.term,
            index: e.index,
            data: e.data,
            context: e.context,
            sync_log: e.sync_log,
        }
    }
}

impl TryFrom<wire::Entry> for rs::Entry {
    type Error = ConvertError;
    fn try_from(e: wire::Entry) -> Result<Self, ConvertError> {
        Ok(rs::Entry {
            entry_type: enum_from_wire(e.entry_type, "EntryType", "Entry.entry_type")?,
            term: e.term,
            index: e.index,
            data: e.data,
            context: e.context,
            sync_log: e.sync_log,
            ..Default::default()
        })
    }
}

impl From<rs::HardState> for wire::HardState {
    fn from(h: rs::HardState) -> Self {
        wire::HardState {
            term: h.term,
            vote: h.vote,
            commit: h.commit,
        }
    }
}

impl From<wire::HardState> for rs::HardState {
    fn from(h: wire::HardState) -> Self {
        rs::HardState {
            term: h.term,
            vote: h.vote,
            commit: h.commit,
            ..Default::default()
        }
    }
}

impl From<rs::ConfState> for wire::ConfState {
    fn from(c: rs::ConfState) -> Self {
        wire::ConfState {
            voters: c.voters,
            learners: c.learners,
            voters_outgoing: c.voters_outgoing,
            learners_next: c.learners_next,
            auto_leave: c.auto_leave,
        }
    }
}

impl From<wire::ConfState> for rs::ConfState {
    fn from(c: wire::ConfState) -> Self {
        rs::ConfState {
            voters: c.voters,
            learners: c.learners,
            voters_outgoing: c.voters_outgoing,
            learners_next: c.learners_next,
            auto_leave: c.auto_leave,
            ..Default::default()
        }
    }
}

impl From<rs::SnapshotMetadata> for wire::SnapshotMetadata {
    fn from(m: rs::SnapshotMetadata) -> Self {
        wire::SnapshotMetadata {
            conf_state: m.conf_state.into_option().map(Into::into),
            index: m.index,
            term: m.term,
        }
    }
}

impl From<wire::SnapshotMetadata> for rs::SnapshotMetadata {
    fn from(m: wire::SnapshotMetadata) -> Self {
        rs::SnapshotMetadata {
            conf_state: SingularPtrField::from_option(m.conf_state.map(Into::into)),
            index: m.index,
            term: m.term,
            ..Default::default()
        }
    }
}

impl From<rs::Snapshot> for wire::Snapshot {
    fn from(s: rs::Snapshot) -> Self {
        wire::Snapshot {
            data: s.data,
            metadata: s.metadata.into_option().map(Into::into),
        }
    }
}

impl From<wire::Snapshot> for rs::Snapshot {
    fn from(s: wire::Snapshot) -> Self {
        rs::Snapshot {
            data: s.data,
            metadata: SingularPtrField::from_option(s.metadata.map(Into::into)),
            ..Default::default()
        }
    }
}

impl From<rs::Message> for wire::Message {
    fn from(m: rs::Message) -> Self {
        wire::Message {
            msg_type: m.msg_type.value(),
            to: m.to,
            from: m.from,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            entries: m.entries.into_iter().map(Into::into).collect(),
            commit: m.commit,
            commit_term: m.commit_term,
            snapshot: m.snapshot.into_option().map(Into::into),
            request_snapshot: m.request_snapshot,
            reject: m.reject,
            reject_hint: m.reject_hint,
            context: m.context,
            deprecated_priority: m.deprecated_priority,
            priority: m.priority,
        }
    }
}

impl TryFrom<wire::Message> for rs::Message {
    type Error = ConvertError;
    fn try_from(m: wire::Message) -> Result<Self, ConvertError> {
        let entries = m
            .entries
            .into_iter()
            .map(rs::Entry::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rs::Message {
            msg_type: enum_from_wire(m.msg_type, "MessageType", "Message.msg_type")?,
            to: m.to,
            from: m.from,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            entries: RepeatedField::from_vec(entries),
            commit: m.commit,
            commit_term: m.commit_term,
            snapshot: SingularPtrField::from_option(m.snapshot.map(Into::into)),
            request_snapshot: m.request_snapshot,
            reject: m.reject,
            reject_hint: m.reject_hint,
            context: m.context,
            deprecated_priority: m.deprecated_priority,
            priority: m.priority,
            ..Default::default()
        })
    }
}

impl From<rs::ConfChange> for wire::ConfChange {
    fn from(c: rs::ConfChange) -> Self {
        wire::ConfChange {
            id: c.id,
            change_type: c.change_type.value(),
            node_id: c.node_id,
            context: c.context,
        }
    }
}

impl TryFrom<wire::ConfChange> for rs::ConfChange {
    type Error = ConvertError;
    fn try_from(c: wire::ConfChange) -> Result<Self, ConvertError> {
        Ok(rs::ConfChange {
            id: c.id,
            change_type: enum_from_wire(c.change_type, "ConfChangeType", "ConfChange.change_type")?,
            node_id: c.node_id,
            context: c.context,
            ..Default::default()
        })
    }
}

impl From<rs::ConfChangeSingle> for wire::ConfChangeSingle {
    fn from(c: rs::ConfChangeSingle) -> Self {
        wire::ConfChangeSingle {
            change_type: c.change_type.value(),
            node_id: c.node_id,
        }
    }
}

impl TryFrom<wire::ConfChangeSingle> for rs::ConfChangeSingle {
    type Error = ConvertError;
    fn try_from(c: wire::ConfChangeSingle) -> Result<Self, ConvertError> {
        Ok(rs::ConfChangeSingle {
            change_type: enum_from_wire(
                c.change_type,
                "ConfChangeType",
                "ConfChangeSingle.change_type",
            )?,
            node_id: c.node_id,
            ..Default::default()
        })
    }
}

impl From<rs::ConfChangeV2> for wire::ConfChangeV2 {
    fn from(c: rs::ConfChangeV2) -> Self {
        wire::ConfChangeV2 {
            transition: c.transition.value(),
            changes: c.changes.into_iter().map(Into::into).collect(),
            context: c.context,
        }
    }
}

impl TryFrom<wire::ConfChangeV2> for rs::ConfChangeV2 {
    type Error = ConvertError;
    fn try_from(c: wire::ConfChangeV2) -> Result<Self, ConvertError> {
        let changes = c
            .changes
            .into_iter()
            .map(rs::ConfChangeSingle::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rs::ConfChangeV2 {
            transition: enum_from_wire(
                c.transition,
                "ConfChangeTransition",
                "ConfChangeV2.transition",
            )?,
            changes: RepeatedField::from_vec(changes),
            context: c.context,
            ..Default::default()
        })
    }
}
