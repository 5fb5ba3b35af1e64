//! What the real `tikv-client` crate puts on the wire decodes into our `kvrpcpb` types with every
//! field where the client meant it. The requests are built by tikv-client's own constructors and
//! encoded by its prost; we decode with ours.

use prost_tikv_client::Message as _;
use proto::kvrpcpb;
use tikv_client::{raw_lowering as lower, BoundRange, ColumnFamily, Key, KvPair};

fn decode<M: prost::Message + Default>(bytes: Vec<u8>) -> M {
    M::decode(bytes.as_slice()).expect("our types decode what tikv-client encodes")
}

fn key(k: &str) -> Key {
    k.to_owned().into()
}

#[test]
fn raw_get_put_delete() {
    let mut req = lower::new_raw_get_request(key("k1"), Some(ColumnFamily::Write));
    req.context = Some(Default::default());
    if let Some(ctx) = req.context.as_mut() {
        ctx.region_id = 7;
        ctx.region_epoch = Some(Default::default());
        if let Some(epoch) = ctx.region_epoch.as_mut() {
            epoch.conf_ver = 3;
            epoch.version = 9;
        }
        ctx.api_version = 0;
    }
    let ours: kvrpcpb::RawGetRequest = decode(req.encode_to_vec());
    assert_eq!(ours.key, b"k1");
    assert_eq!(ours.cf, "write");
    let ctx = ours.context.expect("context");
    assert_eq!(ctx.region_id, 7);
    let epoch = ctx.region_epoch.expect("epoch");
    assert_eq!((epoch.conf_ver, epoch.version), (3, 9));
    assert_eq!(ctx.api_version(), kvrpcpb::ApiVersion::V1);

    let req = lower::new_raw_put_request(key("k"), b"v".to_vec(), None, 0, true);
    let ours: kvrpcpb::RawPutRequest = decode(req.encode_to_vec());
    assert_eq!(
        (
            ours.key.as_slice(),
            ours.value.as_slice(),
            ours.ttl,
            ours.for_cas
        ),
        (&b"k"[..], &b"v"[..], 0, true)
    );

    let req = lower::new_raw_delete_request(key("gone"), Some(ColumnFamily::Lock), false);
    let ours: kvrpcpb::RawDeleteRequest = decode(req.encode_to_vec());
    assert_eq!(
        (ours.key.as_slice(), ours.cf.as_str()),
        (&b"gone"[..], "lock")
    );
}

#[test]
fn raw_batches() {
    let pairs = vec![
        KvPair::new(key("a"), b"1".to_vec()),
        KvPair::new(key("b"), b"2".to_vec()),
    ];
    let req =
        lower::new_raw_batch_put_request(pairs.into_iter(), [0u64, 0].into_iter(), None, false);
    let ours: kvrpcpb::RawBatchPutRequest = decode(req.encode_to_vec());
    let got: Vec<(Vec<u8>, Vec<u8>)> = ours.pairs.into_iter().map(|p| (p.key, p.value)).collect();
    assert_eq!(
        got,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );

    let req = lower::new_raw_batch_get_request([key("a"), key("c")].into_iter(), None);
    let ours: kvrpcpb::RawBatchGetRequest = decode(req.encode_to_vec());
    assert_eq!(ours.keys, vec![b"a".to_vec(), b"c".to_vec()]);

    let req =
        lower::new_raw_batch_delete_request([key("x")].into_iter(), Some(ColumnFamily::Default));
    let ours: kvrpcpb::RawBatchDeleteRequest = decode(req.encode_to_vec());
    assert_eq!(
        (ours.keys, ours.cf),
        (vec![b"x".to_vec()], "default".to_owned())
    );
}

#[test]
fn raw_scans_and_ranges() {
    let range: BoundRange = (key("a")..key("m")).into();
    let req = lower::new_raw_scan_request(range.clone(), 100, true, false, None);
    let ours: kvrpcpb::RawScanRequest = decode(req.encode_to_vec());
    assert_eq!(
        (ours.start_key.as_slice(), ours.end_key.as_slice()),
        (&b"a"[..], &b"m"[..])
    );
    assert_eq!(
        (ours.limit, ours.key_only, ours.reverse),
        (100, true, false)
    );

    // A reverse scan of [a, m) arrives with the bounds swapped: start_key is the exclusive upper
    // bound and end_key the inclusive lower one. The KV service must read it that way.
    let req = lower::new_raw_scan_request(range, 100, false, true, None);
    let ours: kvrpcpb::RawScanRequest = decode(req.encode_to_vec());
    assert_eq!(
        (ours.start_key.as_slice(), ours.end_key.as_slice()),
        (&b"m"[..], &b"a"[..])
    );
    assert!(ours.reverse);

    let ranges: Vec<BoundRange> = vec![(key("a")..key("b")).into(), (key("c")..).into()];
    let req = lower::new_raw_batch_scan_request(ranges.into_iter(), 5, false, None);
    let ours: kvrpcpb::RawBatchScanRequest = decode(req.encode_to_vec());
    assert_eq!(ours.ranges.len(), 2);
    assert_eq!(ours.ranges[1].start_key, b"c");
    assert!(
        ours.ranges[1].end_key.is_empty(),
        "an open range has an empty end key"
    );
    assert_eq!(ours.each_limit, 5);

    let req = lower::new_raw_delete_range_request((key("d")..key("f")).into(), None);
    let ours: kvrpcpb::RawDeleteRangeRequest = decode(req.encode_to_vec());
    assert_eq!(
        (ours.start_key.as_slice(), ours.end_key.as_slice()),
        (&b"d"[..], &b"f"[..])
    );
}

#[test]
fn raw_compare_and_swap_and_ttl() {
    let req = lower::new_cas_request(key("k"), b"new".to_vec(), Some(b"old".to_vec()), None);
    let ours: kvrpcpb::RawCasRequest = decode(req.encode_to_vec());
    assert_eq!(ours.key, b"k");
    assert_eq!(ours.value, b"new");
    assert_eq!(ours.previous_value, b"old");
    assert!(!ours.previous_not_exist);

    let req = lower::new_cas_request(key("k"), b"v".to_vec(), None, None);
    let ours: kvrpcpb::RawCasRequest = decode(req.encode_to_vec());
    assert!(
        ours.previous_not_exist,
        "no previous value means 'must not exist'"
    );

    let req = lower::new_raw_get_key_ttl_request(key("t"), None);
    let ours: kvrpcpb::RawGetKeyTtlRequest = decode(req.encode_to_vec());
    assert_eq!(ours.key, b"t");
}
