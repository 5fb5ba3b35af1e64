//! PD's HTTP API, the read-only subset operators and test tools use, served on the PD port
//! beside gRPC (tonic routes `/pd/...` here; plain HTTP/1.1 and HTTP/2 both reach it):
//!
//! - `GET /pd/api/v1/regions`: `{"count", "regions": [...]}`;
//! - `GET /pd/api/v1/region/id/{id}`, `GET /pd/api/v1/region/key/{key}` (the key
//!   percent-encoded, or hex with `?format=hex`);
//! - `GET /pd/api/v1/stores`: `{"count", "stores": [{"store", "status"}]}`.
//!
//! Field names are PD's; keys are upper-case hex, as PD prints them. A bad path or id gets
//! 400 or 404 with `{"error": "..."}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use proto::metapb::{Peer, PeerRole};
use serde_json::{json, Value};
use tonic::codegen::http;
use tonic::server::NamedService;

use crate::{RegionInfo, Scheduler};

const PREFIX: &str = "/pd/api/v1";

/// The HTTP API as a service tonic's router can hold (it serves `/pd/*`).
#[derive(Clone)]
pub struct PdHttp {
    scheduler: Arc<Scheduler>,
}

impl PdHttp {
    pub fn new(scheduler: Arc<Scheduler>) -> PdHttp {
        PdHttp { scheduler }
    }
}

impl NamedService for PdHttp {
    const NAME: &'static str = "pd";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for PdHttp {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let (code, body) = if req.method() == http::Method::GET {
            answer(&self.scheduler, req.uri().path(), req.uri().query())
        } else {
            error(405, "only GET is served")
        };
        let text = serde_json::to_string_pretty(&body).unwrap_or_default();
        let response = http::Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(tonic::body::Body::new(text))
            .unwrap_or_else(|_| http::Response::new(tonic::body::Body::empty()));
        std::future::ready(Ok(response))
    }
}

fn error(code: u16, message: impl Into<String>) -> (u16, Value) {
    (code, json!({ "error": message.into() }))
}

/// The status code and JSON body for `GET path?query`.
pub fn answer(s: &Scheduler, path: &str, query: Option<&str>) -> (u16, Value) {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return error(404, format!("no such path {path:?}: try {PREFIX}/regions"));
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "regions"] => {
            let regions: Vec<Value> = s.cluster.regions().iter().map(region_json).collect();
            (200, json!({ "count": regions.len(), "regions": regions }))
        }
        ["", "region", "id", id] => match id.parse::<u64>() {
            Ok(id) => match s.cluster.region_by_id(id) {
                Some(info) => (200, region_json(&info)),
                None => error(404, format!("region {id} not found")),
            },
            Err(_) => error(400, format!("region id {id:?} is not a number")),
        },
        ["", "region", "key", key] => {
            let hex = query.is_some_and(|q| q.split('&').any(|p| p == "format=hex"));
            let key = if hex { unhex(key) } else { unescape(key) };
            let Some(key) = key else {
                return error(400, format!("key {key:?} does not decode"));
            };
            match s.cluster.region_by_key(&key) {
                Some(info) => (200, region_json(&info)),
                None => error(404, format!("no region holds key {}", hex_upper(&key))),
            }
        }
        ["", "stores"] => {
            let now = s.clock_now();
            let stores: Vec<Value> = s
                .cluster
                .store_infos()
                .iter()
                .map(|info| {
                    let age = now.saturating_duration_since(info.last_heartbeat);
                    json!({
                        "store": {
                            "id": info.store.id,
                            "address": info.store.address,
                            "state_name": "Up",
                        },
                        "status": {
                            "capacity": byte_size(info.stats.capacity),
                            "available": byte_size(info.stats.available),
                            "used_size": byte_size(info.stats.used),
                            "region_count": info.stats.region_count,
                            "leader_count": info.stats.leader_count,
                            "last_heartbeat_age_ms": u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                        },
                    })
                })
                .collect();
            (200, json!({ "count": stores.len(), "stores": stores }))
        }
        _ => error(404, format!("no such path {path:?}")),
    }
}

fn peer_json(p: &Peer) -> Value {
    let role_name = match p.role() {
        PeerRole::Voter => "Voter",
        PeerRole::Learner => "Learner",
        PeerRole::IncomingVoter => "IncomingVoter",
        PeerRole::DemotingVoter => "DemotingVoter",
    };
    let mut v = json!({ "id": p.id, "store_id": p.store_id, "role_name": role_name });
    if p.role() != PeerRole::Voter {
        v["role"] = json!(p.role);
    }
    if p.role() == PeerRole::Learner {
        v["is_learner"] = json!(true);
    }
    v
}

fn region_json(info: &RegionInfo) -> Value {
    let r = &info.region;
    let epoch = r.region_epoch.unwrap_or_default();
    let mut v = json!({
        "id": r.id,
        "start_key": hex_upper(&r.start_key),
        "end_key": hex_upper(&r.end_key),
        "epoch": { "conf_ver": epoch.conf_ver, "version": epoch.version },
        "peers": r.peers.iter().map(peer_json).collect::<Vec<_>>(),
        "approximate_size": info.approximate_size >> 20,
        "approximate_keys": info.approximate_keys,
    });
    if let Some(leader) = &info.leader {
        v["leader"] = peer_json(leader);
    }
    if !info.down_peers.is_empty() {
        v["down_peers"] = info
            .down_peers
            .iter()
            .map(|p| json!({ "peer": peer_json(p) }))
            .collect();
    }
    if !info.pending_peers.is_empty() {
        v["pending_peers"] = info.pending_peers.iter().map(peer_json).collect();
    }
    v
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Percent-decoding of a path segment.
fn unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Sizes as PD prints them ("1.5GiB").
fn byte_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use engine::MemEngine;
    use proto::build::{peer, region};
    use proto::metapb::Store;

    use super::*;

    fn scheduler() -> Scheduler {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let s = Scheduler::open(
            Arc::new(MemEngine::new()),
            &crate::Config::without_checkers(),
            util::SystemClock::shared(),
            &logger,
        )
        .unwrap();
        let store = Store {
            id: 1,
            address: "127.0.0.1:20160".into(),
            ..Default::default()
        };
        let first = region(2).epoch(1, 1).peers([peer(3, 1)]).build();
        s.cluster.bootstrap(store, first).unwrap();
        s
    }

    #[test]
    fn regions_stores_and_lookups_answer_in_pd_s_shape() {
        let s = scheduler();
        let (code, all) = answer(&s, "/pd/api/v1/regions", None);
        assert_eq!(code, 200);
        assert_eq!(all["count"], 1);
        let r = &all["regions"][0];
        assert_eq!(
            (r["id"].as_u64(), r["start_key"].as_str()),
            (Some(2), Some(""))
        );
        assert_eq!(r["epoch"]["version"], 1);
        assert_eq!(r["peers"][0]["store_id"], 1);
        assert_eq!(r["peers"][0]["role_name"], "Voter");
        assert_eq!(answer(&s, "/pd/api/v1/region/id/2", None).1["id"], 2);
        assert_eq!(answer(&s, "/pd/api/v1/region/key/a%2Fb", None).1["id"], 2);
        assert_eq!(
            answer(&s, "/pd/api/v1/region/key/6B", Some("format=hex")).1["id"],
            2
        );
        let (code, stores) = answer(&s, "/pd/api/v1/stores", None);
        assert_eq!(code, 200);
        assert_eq!(stores["count"], 1);
        assert_eq!(stores["stores"][0]["store"]["address"], "127.0.0.1:20160");
    }

    #[test]
    fn bad_paths_and_ids_are_400_or_404_with_a_json_error() {
        let s = scheduler();
        for (path, query, code) in [
            ("/pd/api/v1/region/id/x", None, 400),
            ("/pd/api/v1/region/id/99", None, 404),
            ("/pd/api/v1/region/key/zz", Some("format=hex"), 400),
            ("/pd/api/v1/nope", None, 404),
            ("/elsewhere", None, 404),
        ] {
            let (got, body) = answer(&s, path, query);
            assert_eq!(got, code, "{path}");
            assert!(body["error"].is_string(), "{path}: {body}");
        }
    }

    #[test]
    fn keys_print_as_upper_hex_and_sizes_as_pd_does() {
        assert_eq!(hex_upper(b"\x01\xab"), "01AB");
        assert_eq!(unhex("01ab").unwrap(), b"\x01\xab");
        assert!(unhex("0").is_none());
        assert_eq!(byte_size(512), "512B");
        assert_eq!(byte_size(3 << 30), "3.000GiB");
    }
}
