//! Protocol definitions of regionstore, generated from `proto/*.proto` by prost and tonic.
//!
//! - Client-facing and wire-compatible with TiKV and PD (same packages, services, method names
//!   and field numbers): `metapb`, `errorpb`, `kvrpcpb`, `tikvpb` (raw KV methods of
//!   `tikvpb.Tikv`), `pdpb` (the routing, TSO, GC safe point and heartbeat subset of `pdpb.PD`),
//!   `keyspacepb` (LoadKeyspace, GetAllKeyspaces).
//! - `etcdserverpb`: the Range and Put subset of etcd's v3 KV API, for the benchmark's etcd
//!   driver only.
//! - Ours: `raft_serverpb` (store-to-store raft messages, snapshot chunks, persisted states),
//!   `schedulerpb` (the store's heartbeats and the administrator's operators, beside `pdpb`),
//!   `raft_cmdpb` (what a proposal carries: writes per CF, checked again at apply) and
//!   `eraftpb`, a prost mirror of raft-rs's `eraftpb` with identical field numbers.
//!
//! Beside the generated modules: [`codec`] (bounded decoding), [`convert`] (raft-rs ↔ wire)
//! and [`build`], short builders of `metapb` peers and regions for tests and benches.
//!
//! # Invariants
//! - Bytes from the network are decoded only by prost ([`codec::decode_bounded`], which also
//!   bounds the input size), then converted field by field into raft-rs types ([`convert`]).
//!   rust-protobuf 2, which raft-rs uses, is never run on untrusted input (RUSTSEC-2024-0437).
//! - Converting from the wire never panics: an unknown enum value is an error.
//!
//! # Must not depend on
//! Any other regionstore crate. Only generated code, conversions, bounded decoding and the
//! `metapb` builders live here.

pub mod build;
pub mod codec;
pub mod convert;

pub use codec::{decode_bounded, DecodeError};
pub use convert::ConvertError;

macro_rules! generated {
    ($($name:ident),* $(,)?) => {
        $(
            #[allow(clippy::all, missing_docs, rustdoc::all)]
            pub mod $name {
                include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
            }
        )*
    };
}

generated!(
    eraftpb,
    metapb,
    errorpb,
    kvrpcpb,
    tikvpb,
    pdpb,
    keyspacepb,
    raft_serverpb,
    raft_cmdpb,
    schedulerpb,
    etcdserverpb
);
