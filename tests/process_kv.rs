//! The KV API of a real 3-store cluster (separate processes on loopback), through the real
//! TiKV client and through raw gRPC for what a well-behaved client never sends.

mod common;

use std::time::Duration;

use common::{wait_ok, wait_until, ProcCluster};
use proto::kvrpcpb::{self, Context, KvPair};
use proto::tikvpb::tikv_client::TikvClient;

fn key(i: usize) -> String {
    format!("k{i:04}")
}

/// Asks a split at `at`, waiting out an operator of the scheduler's own on the region (a
/// leader balance, say): the scheduler runs one operator per region at a time.
async fn split_when_idle(client: &client::Client, at: impl Into<Vec<u8>>) -> client::Operator {
    let at = at.into();
    wait_ok("the split is accepted", Duration::from_secs(60), || async {
        match client.split(at.clone()).await {
            Ok(op) => Ok(op),
            Err(e) if e.to_string().contains("already has an operator") => Err(e.to_string()),
            Err(e) => panic!("split at {at:?}: {e}"),
        }
    })
    .await
}

/// tikv-client 0.4 in keyspace DEFAULT (API V2), unmodified.
async fn tikv_in_default(cluster: &ProcCluster) -> tikv_client::RawClient {
    tikv_client::RawClient::new_with_config(
        vec![cluster.pd.clone()],
        tikv_client::Config::default().with_default_keyspace(),
    )
    .await
    .expect("tikv-client with a keyspace connects")
}

/// Our own client in keyspace DEFAULT (API V2).
async fn ours_in_default(cluster: &ProcCluster) -> client::Client {
    client::Client::connect(
        std::slice::from_ref(&cluster.pd),
        client::ClientConfig {
            keyspace: Some("DEFAULT".into()),
            ..Default::default()
        },
    )
    .await
    .expect("our client with a keyspace connects")
}

/// Splits at `at` through the scheduler and waits for the routing table to show it.
async fn split(cluster: &ProcCluster, admin: &client::Client, at: &str, regions: usize) {
    split_when_idle(admin, at).await;
    let what = format!("split at {at} applied");
    wait_until(&what, Duration::from_secs(30), || async {
        admin.regions().await.map(|r| r.len()).unwrap_or(0) >= regions
    })
    .await;
    let _ = cluster;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_client_raw_api_across_region_splits() {
    let cluster = ProcCluster::start(3);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;

    let raw = tikv_client::RawClient::new(vec![cluster.pd.clone()])
        .await
        .expect("tikv-client connects");
    let cas = raw.with_atomic_for_cas();
    // Written before the splits: the client's cached region goes stale under it.
    let pairs: Vec<(String, String)> = (0..200).map(|i| (key(i), format!("v{i}"))).collect();
    raw.batch_put(pairs.clone()).await.expect("batch put");
    raw.put("k0001".to_owned(), "one".to_owned())
        .await
        .expect("put");

    split(&cluster, &admin, "k0050", 2).await;
    split(&cluster, &admin, "k0100", 3).await;
    split(&cluster, &admin, "k0150", 4).await;
    // tikv-client 0.4 scans into the last region (empty end key) loop back to the first key
    // until the limit is used up (its `end_key <= next_key` never holds for an empty next
    // key), with TiKV as with us: keep the keys out of the last region.
    split(&cluster, &admin, "z", 5).await;
    cluster.wait_replicated(&admin, 5, 3).await;

    // Single keys in each region, through stale routing.
    assert_eq!(raw.get(key(1)).await.unwrap(), Some(b"one".to_vec()));
    for i in [0, 49, 50, 99, 100, 149, 150, 199] {
        assert_eq!(
            raw.get(key(i)).await.unwrap(),
            Some(format!("v{i}").into_bytes()),
            "{}",
            key(i)
        );
    }
    assert_eq!(raw.get("nope".to_owned()).await.unwrap(), None);
    // Batches spanning every region.
    let got = raw
        .batch_get((0..200).step_by(7).map(key).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(got.len(), (0..200).step_by(7).count());
    raw.batch_put(
        (200..260)
            .map(|i| (key(i), format!("v{i}")))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    // Scans cross region boundaries, in order; the end key arrives unclipped.
    let all = raw.scan(key(0)..key(9999), 1000).await.unwrap();
    assert_eq!(all.len(), 260);
    let keys: Vec<Vec<u8>> = all.iter().map(|p| Vec::from(p.key().clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let some = raw.scan(key(45)..key(155), 20).await.unwrap();
    assert_eq!(some.len(), 20);
    assert_eq!(Vec::<u8>::from(some[0].key().clone()), key(45).into_bytes());
    let keys_only = raw.scan_keys(key(95)..key(105), 100).await.unwrap();
    assert_eq!(keys_only.len(), 10);
    // Reverse, inside one region (tikv-client 0.4 concatenates per-region reverse results
    // in ascending region order).
    let reverse = raw.scan_reverse(key(60)..key(80), 100).await.unwrap();
    assert_eq!(reverse.len(), 20);
    assert_eq!(
        Vec::<u8>::from(reverse[0].key().clone()),
        key(79).into_bytes()
    );
    assert_eq!(
        Vec::<u8>::from(reverse[19].key().clone()),
        key(60).into_bytes()
    );
    // Deletes.
    raw.delete(key(3)).await.unwrap();
    assert_eq!(raw.get(key(3)).await.unwrap(), None);
    raw.batch_delete(vec![key(4), key(120)]).await.unwrap();
    assert_eq!(raw.get(key(120)).await.unwrap(), None);
    raw.delete_range(key(20)..key(130)).await.unwrap();
    let left = raw.scan(key(0)..key(9999), 1000).await.unwrap();
    // 260 keys, minus 3 and 4, minus [20, 130) (which held 120).
    assert_eq!(left.len(), 260 - 2 - 110);
    assert_eq!(raw.get(key(19)).await.unwrap(), Some(b"v19".to_vec()));
    assert_eq!(raw.get(key(130)).await.unwrap(), Some(b"v130".to_vec()));
    // Compare-and-swap, in two regions.
    for k in ["cas-a", "k0175"] {
        let _ = cas.delete(k.to_owned()).await;
        let (prev, swapped) = cas
            .compare_and_swap(k.to_owned(), None, b"1".to_vec())
            .await
            .unwrap();
        assert_eq!((prev, swapped), (None, true));
        let (prev, swapped) = cas
            .compare_and_swap(k.to_owned(), None, b"2".to_vec())
            .await
            .unwrap();
        assert_eq!((prev, swapped), (Some(b"1".to_vec()), false));
        let (prev, swapped) = cas
            .compare_and_swap(k.to_owned(), Some(b"1".to_vec()), b"3".to_vec())
            .await
            .unwrap();
        assert_eq!((prev, swapped), (Some(b"1".to_vec()), true));
        assert_eq!(cas.get(k.to_owned()).await.unwrap(), Some(b"3".to_vec()));
    }
    // Several ranges in one request, per region.
    let ranges = vec![key(130)..key(135), key(140)..key(142)];
    let scanned = raw.batch_scan(ranges, 10).await.unwrap();
    assert_eq!(scanned.len(), 7);
    // Our own client agrees with what tikv-client wrote.
    assert_eq!(admin.get(key(19)).await.unwrap(), Some(b"v19".to_vec()));
    assert_eq!(
        admin
            .scan(key(0), key(9999), 1000, false)
            .await
            .unwrap()
            .len(),
        148
    );
    // Down from the top, across every region, in one descending run.
    let down = admin
        .scan_reverse(key(0), key(9999), 1000, true)
        .await
        .unwrap();
    assert_eq!(down.len(), 148);
    assert!(down.windows(2).all(|w| w[0].0 > w[1].0));
    assert_eq!(down[0].0, key(259).into_bytes());
}

/// Sends `body` as the request of `method` without encoding it: what a broken client would.
async fn raw_call(
    addr: &str,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Clone, Copy, Default)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(buf, &item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let out = bytes::Buf::chunk(buf).to_vec();
            bytes::Buf::advance(buf, out.len());
            Ok(Some(out))
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(body), path, Raw)
        .await
        .map(|r| r.into_inner())
}

struct Target {
    leader_addr: String,
    client: TikvClient<tonic::transport::Channel>,
    follower: TikvClient<tonic::transport::Channel>,
    follower_peer: proto::metapb::Peer,
    ctx: Context,
}

async fn target(cluster: &ProcCluster, admin: &client::Client) -> Target {
    let info = admin
        .region_by_key(b"x".to_vec())
        .await
        .unwrap()
        .expect("a region");
    let leader = info.leader.expect("a leader");
    let stores = admin.stores().await.unwrap();
    let addr_of = |store_id: u64| {
        stores
            .iter()
            .find(|s| s.id == store_id)
            .map(|s| format!("http://{}", s.address))
            .expect("store known")
    };
    let follower = info
        .region
        .peers
        .iter()
        .find(|p| p.id != leader.id)
        .expect("a follower");
    let connect = |addr: String| async move {
        TikvClient::connect(addr)
            .await
            .expect("connect")
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20)
    };
    let _ = cluster;
    Target {
        leader_addr: addr_of(leader.store_id),
        client: connect(addr_of(leader.store_id)).await,
        follower: connect(addr_of(follower.store_id)).await,
        follower_peer: *follower,
        ctx: Context {
            region_id: info.region.id,
            region_epoch: info.region.region_epoch,
            peer: Some(leader),
            ..Default::default()
        },
    }
}

fn put(ctx: &Context, key: &[u8], value: &[u8]) -> kvrpcpb::RawPutRequest {
    kvrpcpb::RawPutRequest {
        context: Some(ctx.clone()),
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_specific_errors_and_write_nothing() {
    let cluster = ProcCluster::start(3);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;
    let Target {
        mut client,
        mut follower,
        follower_peer,
        ctx,
        leader_addr,
    } = target(&cluster, &admin).await;

    // A good put works, so the refusals below are about the request.
    let ok = client
        .raw_put(put(&ctx, b"good", b"1"))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.region_error.is_none() && ok.error.is_empty(), "{ok:?}");
    // gzip both ways, as TiKV's CI runs its clients: accepted, and answered compressed.
    let mut gzip = client
        .clone()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let got = gzip
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(ctx.clone()),
            key: b"good".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        got.metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    assert_eq!(got.into_inner().value, b"1");

    let expect_error = |resp: kvrpcpb::RawPutResponse, what: &str| {
        assert!(resp.region_error.is_none(), "{what}: {resp:?}");
        assert!(
            resp.error.contains(what),
            "want {what:?} in {:?}",
            resp.error
        );
    };
    // API V2.
    let mut v2 = ctx.clone();
    v2.api_version = kvrpcpb::ApiVersion::V2 as i32;
    expect_error(
        client
            .raw_put(put(&v2, b"bad-v2", b"x"))
            .await
            .unwrap()
            .into_inner(),
        "API version",
    );
    // Oversized key and value.
    let long_key = vec![b'k'; 8 * 1024 + 1];
    expect_error(
        client
            .raw_put(put(&ctx, &long_key, b"x"))
            .await
            .unwrap()
            .into_inner(),
        "max-key-size",
    );
    let big_value = vec![0u8; 3 * 1024 * 1024 + 1];
    expect_error(
        client
            .raw_put(put(&ctx, b"bad-big", &big_value))
            .await
            .unwrap()
            .into_inner(),
        "max-value-size",
    );
    // A non-zero TTL, an unknown column family, an empty key, no context.
    let mut ttl = put(&ctx, b"bad-ttl", b"x");
    ttl.ttl = 60;
    expect_error(client.raw_put(ttl).await.unwrap().into_inner(), "TTL");
    let mut cf = put(&ctx, b"bad-cf", b"x");
    cf.cf = "nope".into();
    expect_error(
        client.raw_put(cf).await.unwrap().into_inner(),
        "column family",
    );
    expect_error(
        client
            .raw_put(put(&ctx, b"", b"x"))
            .await
            .unwrap()
            .into_inner(),
        "empty key",
    );
    let mut no_ctx = put(&ctx, b"bad-noctx", b"x");
    no_ctx.context = None;
    expect_error(
        client.raw_put(no_ctx).await.unwrap().into_inner(),
        "context",
    );
    // Too many keys in one batch.
    let batch = kvrpcpb::RawBatchPutRequest {
        context: Some(ctx.clone()),
        pairs: (0..4097)
            .map(|i| KvPair {
                error: None,
                key: format!("bad-batch-{i}").into_bytes(),
                value: b"x".to_vec(),
            })
            .collect(),
        ..Default::default()
    };
    let resp = client.raw_batch_put(batch).await.unwrap().into_inner();
    assert!(resp.error.contains("max-batch-keys"), "{resp:?}");
    // A message over the store's 16 MiB gRPC limit is refused by the transport.
    let huge = put(&ctx, b"bad-huge", &vec![0u8; 17 << 20]);
    let status = client.raw_put(huge).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

    // Bytes that are not a protobuf message at all.
    for garbage in [vec![0xff, 0xff, 0xff, 0xff], vec![0x0a, 0x80]] {
        let status = raw_call(&leader_addr, "/tikvpb.Tikv/RawPut", garbage)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    }

    // Routing errors come back as region errors a client acts on.
    let mut unknown = ctx.clone();
    unknown.region_id = 999_999;
    let resp = client
        .raw_put(put(&unknown, b"bad-region", b"x"))
        .await
        .unwrap()
        .into_inner();
    let err = resp.region_error.expect("region error");
    assert!(err.region_not_found.is_some(), "{err:?}");
    let mut stale = ctx.clone();
    stale.region_epoch = Some(proto::metapb::RegionEpoch {
        conf_ver: 1,
        version: 0,
    });
    let resp = client
        .raw_put(put(&stale, b"bad-epoch", b"x"))
        .await
        .unwrap()
        .into_inner();
    let err = resp.region_error.expect("region error");
    let epoch = err.epoch_not_match.expect("epoch not match");
    assert_eq!(epoch.current_regions.len(), 1);
    assert_eq!(epoch.current_regions[0].region_epoch, ctx.region_epoch);
    // A client whose cache names a follower as the leader.
    let mut at_follower = ctx.clone();
    at_follower.peer = Some(follower_peer);
    let resp = follower
        .raw_put(put(&at_follower, b"bad-follower", b"x"))
        .await
        .unwrap()
        .into_inner();
    let err = resp.region_error.expect("region error");
    let not_leader = err.not_leader.expect("not leader");
    assert_eq!(not_leader.leader.map(|p| p.id), ctx.peer.map(|p| p.id));
    // Bad reads too.
    let resp = client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(v2.clone()),
            key: b"good".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.error.contains("API version"), "{resp:?}");
    let status = client
        .raw_scan(kvrpcpb::RawScanRequest {
            context: Some(ctx.clone()),
            start_key: b"a".to_vec(),
            limit: 100_000, // over the 10240 pairs a scan may ask for
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A batch read carries its refusal as TiKV does: one pair whose error aborts.
    let resp = client
        .raw_batch_get(kvrpcpb::RawBatchGetRequest {
            context: Some(ctx.clone()),
            keys: vec![b"good".to_vec(), Vec::new()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let abort = resp.pairs[0].error.as_ref().map(|e| e.abort.as_str());
    assert_eq!(resp.pairs.len(), 1, "{resp:?}");
    assert!(abort.is_some_and(|a| a.contains("empty key")), "{resp:?}");

    // Nothing of the refused requests was written.
    let written = admin
        .scan(b"bad".to_vec(), b"bae".to_vec(), 10_000, true)
        .await
        .unwrap();
    assert!(written.is_empty(), "{written:?}");
    assert_eq!(
        admin.get(b"good".to_vec()).await.unwrap(),
        Some(b"1".to_vec())
    );
}

/// Under `api-version = "1ttl"`, tikv-client's TTL calls work unmodified: the TTL it reads
/// back is the one it wrote, less the time gone by, and an expired key is gone from every
/// read (get, batch get, scan, CAS) while keys without a TTL stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_client_raw_ttl_under_api_version_1ttl() {
    let cluster = ProcCluster::start_with_stores(1, |cfg| {
        cfg.api_version = api_version::ApiVersion::V1Ttl;
    });
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 1).await;
    // tikv-client 0.4's V1 scans must not reach the last region (see the test above).
    split(&cluster, &admin, "z", 2).await;
    let raw = tikv_client::RawClient::new(vec![cluster.pd.clone()])
        .await
        .expect("tikv-client connects");

    raw.put_with_ttl("t-short".to_owned(), "s".to_owned(), 2)
        .await
        .unwrap();
    raw.put_with_ttl("t-long".to_owned(), "l".to_owned(), 600)
        .await
        .unwrap();
    raw.put("t-forever".to_owned(), "f".to_owned())
        .await
        .unwrap();
    raw.batch_put_with_ttl(
        vec![
            ("t-batch-short".to_owned(), "bs".to_owned()),
            ("t-batch-long".to_owned(), "bl".to_owned()),
        ],
        vec![2, 600],
    )
    .await
    .unwrap();
    // Our own client speaks TTL too.
    admin.put_with_ttl("t-ours", "o", 300).await.unwrap();
    let ours = admin.ttl("t-ours").await.unwrap();
    assert!(matches!(ours, Some(299..=300)), "{ours:?}");
    admin.delete("t-ours").await.unwrap();
    assert_eq!(admin.ttl("t-ours").await.unwrap(), None);
    let long = raw.get_key_ttl_secs("t-long".to_owned()).await.unwrap();
    assert!(matches!(long, Some(599..=600)), "{long:?}");
    let batch_long = raw
        .get_key_ttl_secs("t-batch-long".to_owned())
        .await
        .unwrap();
    assert!(matches!(batch_long, Some(599..=600)), "{batch_long:?}");
    assert_eq!(
        raw.get_key_ttl_secs("t-forever".to_owned()).await.unwrap(),
        Some(0),
        "no TTL reads as 0, as TiKV answers"
    );
    assert_eq!(
        raw.get_key_ttl_secs("t-missing".to_owned()).await.unwrap(),
        None
    );
    assert_eq!(
        raw.get("t-short".to_owned()).await.unwrap(),
        Some(b"s".to_vec())
    );

    // Expiry: the short-lived keys vanish from every read. Expiry is kept in whole seconds
    // from each write's arrival, so the batch (written a moment later) may expire a second
    // after the single put (seen in CI): wait for both.
    wait_until("the 2 s keys expire", Duration::from_secs(10), || async {
        raw.get("t-short".to_owned()).await.unwrap().is_none()
            && raw.get("t-batch-short".to_owned()).await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        raw.get_key_ttl_secs("t-short".to_owned()).await.unwrap(),
        None
    );
    let scanned: Vec<Vec<u8>> = raw
        .scan("t-".to_owned().."t.".to_owned(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| Vec::from(p.key().clone()))
        .collect();
    assert_eq!(
        scanned,
        vec![
            b"t-batch-long".to_vec(),
            b"t-forever".to_vec(),
            b"t-long".to_vec()
        ]
    );
    // A scan's limit counts live keys only.
    assert_eq!(
        raw.scan("t-".to_owned().."t.".to_owned(), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let got = raw
        .batch_get(vec!["t-short".to_owned(), "t-long".to_owned()])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // CAS sees an expired key as absent.
    let cas = raw.with_atomic_for_cas();
    let (prev, swapped) = cas
        .compare_and_swap("t-short".to_owned(), None, b"new".to_vec())
        .await
        .unwrap();
    assert_eq!((prev, swapped), (None, true));
    assert_eq!(
        raw.get("t-short".to_owned()).await.unwrap(),
        Some(b"new".to_vec())
    );
}

/// Under `api-version = "2"`, tikv-client 0.4 with `with_default_keyspace()` works unmodified:
/// it loads keyspace DEFAULT from the scheduler, routes by encoded keys, and every raw call
/// (scans across regions included) sees only its keyspace. The scheduler cuts regions at the
/// keyspace's boundaries by itself, so no raw range ends in the last region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_client_raw_api_with_a_keyspace_under_api_version_2() {
    use api_version::keyspace::split_keys;
    use api_version::memcomparable::{decode_exact, encode};

    let cluster = ProcCluster::start_with_stores(3, |cfg| {
        cfg.api_version = api_version::ApiVersion::V2;
    });
    let admin = cluster.client().await;
    // The first region and its four splits at keyspace 0's boundaries.
    cluster.wait_replicated(&admin, 5, 3).await;
    let regions = admin.regions().await.unwrap();
    let mut boundaries: Vec<Vec<u8>> = regions
        .iter()
        .map(|r| r.region.start_key.clone())
        .filter(|k| !k.is_empty())
        .collect();
    boundaries.sort();
    assert_eq!(boundaries, split_keys(0));

    let raw = tikv_in_default(&cluster).await;
    let pairs: Vec<(String, String)> = (0..200).map(|i| (key(i), format!("v{i}"))).collect();
    raw.batch_put(pairs).await.expect("batch put");
    // Splits inside the keyspace, at encoded keys, as the split checker would make them.
    let ks_key = |k: &str| encode(&[b"r\0\0\0", k.as_bytes()].concat());
    split_when_idle(&admin, ks_key(&key(50))).await;
    wait_until(
        "split inside the keyspace",
        Duration::from_secs(30),
        || async { admin.regions().await.map(|r| r.len()).unwrap_or(0) >= 6 },
    )
    .await;
    split_when_idle(&admin, ks_key(&key(150))).await;
    cluster.wait_replicated(&admin, 7, 3).await;
    // PD's HTTP API on the PD port counts the same regions.
    let (status, body) = common::http_get_json(&cluster.pd, "/pd/api/v1/regions").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        body["count"].as_u64(),
        Some(admin.regions().await.unwrap().len() as u64)
    );
    // Every boundary the scheduler reports decodes.
    for r in admin.regions().await.unwrap() {
        for k in [&r.region.start_key, &r.region.end_key] {
            if !k.is_empty() {
                decode_exact("boundary", k).expect("every boundary decodes");
            }
        }
    }

    raw.put(key(1), "one".to_owned()).await.unwrap();
    assert_eq!(raw.get(key(1)).await.unwrap(), Some(b"one".to_vec()));
    for i in [0, 49, 50, 149, 150, 199] {
        assert_eq!(
            raw.get(key(i)).await.unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    let got = raw
        .batch_get((0..200).step_by(7).map(key).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(got.len(), (0..200).step_by(7).count());
    // A scan of the whole keyspace crosses its regions and ends at the keyspace's end.
    let all = raw.scan(.., 1000).await.unwrap();
    assert_eq!(all.len(), 200);
    assert_eq!(Vec::<u8>::from(all[0].key().clone()), key(0).into_bytes());
    let keys: Vec<Vec<u8>> = all.iter().map(|p| Vec::from(p.key().clone())).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let some = raw.scan(key(45)..key(155), 20).await.unwrap();
    assert_eq!(some.len(), 20);
    let reverse = raw.scan_reverse(key(60)..key(80), 100).await.unwrap();
    assert_eq!(reverse.len(), 20);
    assert_eq!(
        Vec::<u8>::from(reverse[0].key().clone()),
        key(79).into_bytes()
    );
    let scanned = raw
        .batch_scan(vec![key(130)..key(135), key(140)..key(142)], 10)
        .await
        .unwrap();
    assert_eq!(scanned.len(), 7);
    // TTL is always on under V2, and expiry hides a key from every read.
    raw.put_with_ttl("ttl".to_owned(), "t".to_owned(), 600)
        .await
        .unwrap();
    let ttl = raw.get_key_ttl_secs("ttl".to_owned()).await.unwrap();
    assert!(matches!(ttl, Some(599..=600)), "{ttl:?}");
    raw.batch_put_with_ttl(
        vec![
            ("brief-a".to_owned(), "a".to_owned()),
            ("brief-b".to_owned(), "b".to_owned()),
        ],
        vec![1, 1],
    )
    .await
    .unwrap();
    wait_until("the 1 s keys expire", Duration::from_secs(10), || async {
        raw.get("brief-a".to_owned()).await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        raw.get_key_ttl_secs("brief-b".to_owned()).await.unwrap(),
        None
    );
    assert!(raw
        .scan("brief".to_owned().."brieg".to_owned(), 10)
        .await
        .unwrap()
        .is_empty());
    // Compare-and-swap.
    let cas = raw.with_atomic_for_cas();
    let (prev, swapped) = cas
        .compare_and_swap("cas".to_owned(), None, b"1".to_vec())
        .await
        .unwrap();
    assert_eq!((prev, swapped), (None, true));
    let (prev, swapped) = cas
        .compare_and_swap("cas".to_owned(), Some(b"1".to_vec()), b"2".to_vec())
        .await
        .unwrap();
    assert_eq!((prev, swapped), (Some(b"1".to_vec()), true));
    // Our own client in the same keyspace sees and writes the same keys, and splits at a
    // key of the keyspace.
    let ours = ours_in_default(&cluster).await;
    assert_eq!(ours.keyspace_id(), Some(0));
    assert_eq!(ours.get(key(1)).await.unwrap(), Some(b"one".to_vec()));
    let everything = ours.scan("", "", 1000, false).await.unwrap();
    assert_eq!(everything.len(), 202, "200 keys, ttl and cas");
    assert_eq!(everything[0].0, b"cas");
    let top = ours.scan_reverse("", "", 1, true).await.unwrap();
    assert_eq!(top[0].0, b"ttl");
    ours.put("ours", "1").await.unwrap();
    assert_eq!(
        raw.get("ours".to_owned()).await.unwrap(),
        Some(b"1".to_vec())
    );
    let ttl = ours.ttl("ttl").await.unwrap();
    assert!(matches!(ttl, Some(590..=600)), "{ttl:?}");
    let op = split_when_idle(&ours, key(100)).await;
    ours.wait_operator(&op, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        ours.batch_get(vec![key(99), key(100)]).await.unwrap().len(),
        2
    );
    ours.delete("ours").await.unwrap();
    assert_eq!(raw.scan(.., 1000).await.unwrap().len(), 202);
    // And so does ctl.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(["ctl", "--pd", &cluster.pd, "--keyspace", "DEFAULT"])
            .args(args)
            .output()
            .expect("run ctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(ctl(&["get", &key(1)]), "one");
    assert_eq!(ctl(&["put", "--ttl", "60", "from-ctl", "x"]), "OK");
    assert_eq!(
        raw.get("from-ctl".to_owned()).await.unwrap(),
        Some(b"x".to_vec())
    );
    raw.delete("from-ctl".to_owned()).await.unwrap();

    // Deletes, then everything.
    raw.batch_delete(vec![key(3), key(4)]).await.unwrap();
    assert_eq!(raw.get(key(3)).await.unwrap(), None);
    raw.delete_range(key(20)..key(130)).await.unwrap();
    assert_eq!(raw.scan(.., 1000).await.unwrap().len(), 200 - 2 - 110 + 2);
    raw.delete_range(..).await.unwrap();
    assert!(raw.scan(.., 1000).await.unwrap().is_empty());

    // A second keyspace: created by name, its boundaries become region boundaries, and a
    // client of it neither sees nor is seen by DEFAULT's.
    let before = admin.regions().await.unwrap().len();
    let alpha = admin.create_keyspace("alpha").await.unwrap();
    assert_eq!(alpha.id, 1);
    let names: Vec<String> = admin
        .keyspaces()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["DEFAULT", "alpha"]);
    assert!(admin.create_keyspace("alpha").await.is_err());
    // r\0\0\x02 and x\0\0\x02 are new boundaries.
    cluster.wait_replicated(&admin, before + 2, 3).await;
    let in_alpha = tikv_client::RawClient::new_with_config(
        vec![cluster.pd.clone()],
        tikv_client::Config::default().with_keyspace("alpha"),
    )
    .await
    .unwrap();
    in_alpha
        .put("shared-name".to_owned(), "alpha".to_owned())
        .await
        .unwrap();
    raw.put("shared-name".to_owned(), "default".to_owned())
        .await
        .unwrap();
    assert_eq!(
        in_alpha.get("shared-name".to_owned()).await.unwrap(),
        Some(b"alpha".to_vec())
    );
    assert_eq!(in_alpha.scan(.., 100).await.unwrap().len(), 1);
    assert_eq!(raw.scan(.., 100).await.unwrap().len(), 1);

    // A client without a keyspace is told what the cluster needs.
    let v1 = tikv_client::RawClient::new(vec![cluster.pd.clone()])
        .await
        .unwrap();
    let err = v1.put("k".to_owned(), "v".to_owned()).await.unwrap_err();
    assert!(err.to_string().contains("API version 2"), "{err}");
}

/// Under API V2, regions split by size inside a keyspace at stored keys, which are encoded:
/// every boundary still decodes, and a client with a keyspace reads everything back across
/// the new regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_splits_inside_a_keyspace_keep_boundaries_encoded() {
    let cluster = ProcCluster::start_with_stores(1, |cfg| {
        cfg.api_version = api_version::ApiVersion::V2;
        cfg.raftstore.region_split_size = 16 << 10;
        cfg.raftstore.region_max_size = 24 << 10;
        cfg.raftstore.split_region_check_tick_interval_ms = 200;
    });
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 5, 1).await;
    let raw = tikv_in_default(&cluster).await;
    let value = "v".repeat(1024);
    for chunk in (0..300).collect::<Vec<_>>().chunks(50) {
        let pairs: Vec<(String, String)> = chunk.iter().map(|i| (key(*i), value.clone())).collect();
        raw.batch_put(pairs).await.unwrap();
    }
    wait_until(
        "size splits in the keyspace",
        Duration::from_secs(30),
        || async { admin.regions().await.map(|r| r.len()).unwrap_or(0) >= 8 },
    )
    .await;
    for r in admin.regions().await.unwrap() {
        for k in [&r.region.start_key, &r.region.end_key] {
            if !k.is_empty() {
                api_version::memcomparable::decode_exact("boundary", k)
                    .expect("every boundary decodes");
            }
        }
    }
    // A region split a moment ago may not have reported its leader yet: tikv-client's scan
    // fails with LeaderNotFound rather than waiting (seen in CI), so the scan is retried.
    let all = wait_ok(
        "a scan across the new regions",
        Duration::from_secs(30),
        || raw.scan(.., 1000),
    )
    .await;
    assert_eq!(all.len(), 300);
}

/// Under API V2, requests outside the raw keyspace rules are refused with a specific error
/// and write nothing: a transactional key, a key in no keyspace, a V1 request, an absurd TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_v2_requests_get_specific_errors_and_write_nothing() {
    use api_version::memcomparable::encode;

    let cluster = ProcCluster::start_with_stores(1, |cfg| {
        cfg.api_version = api_version::ApiVersion::V2;
    });
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 5, 1).await;
    // The region of keyspace 0's raw keys, as PD holds it (encoded).
    let info = admin
        .region_by_key(encode(b"r\0\0\0k"))
        .await
        .unwrap()
        .expect("a region");
    let leader = info.leader.expect("a leader");
    let store = admin.stores().await.unwrap()[0].address.clone();
    let mut client = TikvClient::connect(format!("http://{store}"))
        .await
        .unwrap();
    let v2 = Context {
        region_id: info.region.id,
        region_epoch: info.region.region_epoch,
        peer: Some(leader),
        api_version: kvrpcpb::ApiVersion::V2 as i32,
        ..Default::default()
    };
    let refused = |resp: kvrpcpb::RawPutResponse, what: &str| {
        assert!(resp.region_error.is_none(), "{what}: {resp:?}");
        assert!(
            resp.error.contains(what),
            "want {what:?} in {:?}",
            resp.error
        );
    };
    // A good put first, so the refusals are about the request.
    let ok = client
        .raw_put(put(&v2, b"r\0\0\0good", b"1"))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.region_error.is_none() && ok.error.is_empty(), "{ok:?}");
    let resp = client.raw_put(put(&v2, b"x\0\0\0k", b"1")).await.unwrap();
    refused(resp.into_inner(), "transactional");
    let resp = client.raw_put(put(&v2, b"k", b"1")).await.unwrap();
    refused(resp.into_inner(), "not in any keyspace");
    let mut v1 = v2.clone();
    v1.api_version = kvrpcpb::ApiVersion::V1 as i32;
    let resp = client.raw_put(put(&v1, b"r\0\0\0k", b"1")).await.unwrap();
    refused(resp.into_inner(), "API version 2");
    let mut ttl = put(&v2, b"r\0\0\0ttl", b"1");
    ttl.ttl = u64::MAX;
    refused(client.raw_put(ttl).await.unwrap().into_inner(), "TTL");

    // Nothing but the good put was written, in any form.
    let ours = ours_in_default(&cluster).await;
    let all = ours.scan("", "", 100, true).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].0, b"good");
}

/// TiKV's BatchCommands stream, spoken by hand: answers are matched by id and come back as
/// they are ready (not in request order); region errors, and errors a unary call would answer
/// with a status, travel in the answers without ending the stream; a command regionstore does
/// not serve is answered with no command; only a malformed batch ends the stream. Our own
/// client works over the stream and without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_commands_answer_by_id_as_they_finish() {
    use proto::tikvpb::batch_commands_request::{request::Cmd, Request as Command};
    use proto::tikvpb::batch_commands_response::response::Cmd as Answer;
    use proto::tikvpb::{BatchCommandsEmptyRequest, BatchCommandsRequest};
    use tokio::sync::mpsc;

    let cluster = ProcCluster::start(3);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;
    let Target {
        mut client, ctx, ..
    } = target(&cluster, &admin).await;

    let (tx, rx) = mpsc::unbounded_channel::<BatchCommandsRequest>();
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut answers = client
        .batch_commands(outbound)
        .await
        .expect("the stream opens")
        .into_inner();
    let command = |cmd| Command { cmd: Some(cmd) };
    let mut stale = ctx.clone();
    stale.region_id = 999_999;
    tx.send(BatchCommandsRequest {
        requests: vec![
            command(Cmd::Empty(BatchCommandsEmptyRequest {
                test_id: 7,
                delay_time: 500,
            })),
            command(Cmd::RawPut(put(&ctx, b"b1", b"one"))),
            command(Cmd::RawPut(put(&ctx, b"b2", b"two"))),
            command(Cmd::RawPut(put(&stale, b"b3", b"three"))),
        ],
        request_ids: vec![1, 2, 3, 4],
        ..Default::default()
    })
    .unwrap();
    let mut order = Vec::new();
    while order.len() < 4 {
        let msg = answers.message().await.expect("answers").expect("open");
        assert_eq!(msg.request_ids.len(), msg.responses.len());
        for (id, answer) in msg.request_ids.into_iter().zip(msg.responses) {
            match (id, answer.cmd) {
                (1, Some(Answer::Empty(e))) => assert_eq!(e.test_id, 7),
                (2 | 3, Some(Answer::RawPut(r))) => {
                    assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}")
                }
                (4, Some(Answer::RawPut(r))) => assert!(
                    r.region_error.is_some_and(|e| e.region_not_found.is_some()),
                    "a region this store does not have"
                ),
                other => panic!("unexpected answer {other:?}"),
            }
            order.push(id);
        }
    }
    assert_eq!(
        order.last(),
        Some(&1),
        "the delayed no-op answered last: {order:?}"
    );
    // Reads on the same stream see the writes. A scan over its limit (a status when unary)
    // and a command not served are answered alone; the stream goes on.
    tx.send(BatchCommandsRequest {
        requests: vec![
            command(Cmd::RawScan(kvrpcpb::RawScanRequest {
                context: Some(ctx.clone()),
                start_key: b"a".to_vec(),
                limit: 1 << 20,
                ..Default::default()
            })),
            Command { cmd: None },
            command(Cmd::RawGet(kvrpcpb::RawGetRequest {
                context: Some(ctx.clone()),
                key: b"b2".to_vec(),
                ..Default::default()
            })),
        ],
        request_ids: vec![5, 6, 7],
        ..Default::default()
    })
    .unwrap();
    let mut seen = 0;
    while seen < 3 {
        let msg = answers.message().await.expect("answers").expect("open");
        for (id, answer) in msg.request_ids.into_iter().zip(msg.responses) {
            match (id, answer.cmd) {
                (5, Some(Answer::RawScan(r))) => {
                    let message = r.region_error.map(|e| e.message).unwrap_or_default();
                    assert!(message.contains("InvalidArgument"), "{message}");
                }
                (6, None) => {}
                (7, Some(Answer::RawGet(r))) => assert_eq!(r.value, b"two"),
                other => panic!("unexpected answer {other:?}"),
            }
            seen += 1;
        }
    }
    // Ids and requests that do not pair up end the stream.
    tx.send(BatchCommandsRequest {
        requests: vec![command(Cmd::RawGet(Default::default()))],
        request_ids: vec![],
        ..Default::default()
    })
    .unwrap();
    let status = answers.message().await.expect_err("the stream ends");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Our client, over the stream (the default) and with unary calls.
    for batch_commands in [true, false] {
        let ours = client::Client::connect(
            std::slice::from_ref(&cluster.pd),
            client::ClientConfig {
                batch_commands,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let puts = (0..50).map(|i| {
            let ours = ours.clone();
            async move { ours.put(format!("c{i}"), format!("v{i}")).await }
        });
        for result in futures::future::join_all(puts).await {
            result.expect("put");
        }
        for i in [0, 49] {
            let got = ours.get(format!("c{i}")).await.unwrap();
            assert_eq!(
                got,
                Some(format!("v{i}").into_bytes()),
                "batch_commands {batch_commands}"
            );
        }
    }
}
