//! The real scheduler, in-process, driving the stores through heartbeats: replica placement,
//! leader balance, replacing a down store's replicas, and a restart of the scheduler itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::metapb::PeerRole;
use test_cluster::{wait_until, Cluster, ClusterConfig, WAIT};

const LONG_WAIT: Duration = Duration::from_secs(60);

/// Waits until `pred` holds for the regions every listed store hosts.
fn wait_stores(
    cluster: &Cluster,
    stores: &[u64],
    what: &str,
    pred: impl Fn(u64, &[proto::metapb::Region]) -> bool,
) {
    let deadline = Instant::now() + LONG_WAIT;
    loop {
        let ok = stores.iter().all(|s| pred(*s, &cluster.store_regions(*s)));
        if ok {
            return;
        }
        if Instant::now() > deadline {
            let seen: Vec<_> = stores
                .iter()
                .map(|s| {
                    let regions: Vec<_> = cluster
                        .store_regions(*s)
                        .iter()
                        .map(|r| {
                            (
                                r.id,
                                r.peers
                                    .iter()
                                    .map(|p| (p.store_id, p.role()))
                                    .collect::<Vec<_>>(),
                            )
                        })
                        .collect();
                    (*s, regions)
                })
                .collect();
            panic!(
                "{what} never happened; stores see {seen:?}\noperators: {:?}",
                cluster.scheduler().operators()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the scheduler's routing table has `count` regions (split reports arrive just
/// after the split's own answer).
fn wait_routing(cluster: &Cluster, count: usize) {
    let what = format!("the routing table has {count} regions");
    wait_until(&what, WAIT, || {
        cluster.scheduler().cluster.regions().len() == count
    });
}

fn voters_on(region: &proto::metapb::Region) -> Vec<u64> {
    let mut stores: Vec<u64> = region
        .peers
        .iter()
        .filter(|p| p.role() == PeerRole::Voter)
        .map(|p| p.store_id)
        .collect();
    stores.sort();
    stores
}

#[test]
fn the_scheduler_brings_every_region_to_three_replicas() {
    // Store 1 bootstraps the cluster through the scheduler; stores 2 and 3 join empty.
    let mut cfg = ClusterConfig::new(3, 0).with_scheduling();
    cfg.raftstore.split_region_check_tick_interval_ms = 100;
    cfg.raftstore.region_split_keys = 10;
    cfg.raftstore.region_max_keys = 15;
    let cluster = Cluster::run(cfg);
    assert_eq!(cluster.store_regions(1).len(), 1);
    assert!(cluster.store_regions(2).is_empty());
    for i in 0..20u32 {
        cluster.must_put(format!("k{i:04}").as_bytes(), b"v");
    }
    wait_stores(
        &cluster,
        &[1, 2, 3],
        "three voters for every region",
        |_, regions| !regions.is_empty() && regions.iter().all(|r| voters_on(r) == vec![1, 2, 3]),
    );
    assert!(
        cluster.scheduler().cluster.regions().len() > 1,
        "the writes split the first region"
    );
    for store in 1..=3 {
        cluster.assert_covers_key_space(store);
    }
    for i in 0..20u32 {
        let k = format!("k{i:04}");
        for store in 2..=3 {
            cluster.wait_applied(store, k.as_bytes(), Some(b"v"));
        }
    }
}

fn leader_counts(cluster: &Cluster, regions: u64) -> HashMap<u64, u64> {
    let mut counts = HashMap::new();
    for r in 1..=regions {
        if let Some(s) = cluster.leader_of(r) {
            *counts.entry(s).or_default() += 1;
        }
    }
    counts
}

#[test]
fn leaders_are_balanced_across_three_stores() {
    let regions = 30;
    let mut cfg = ClusterConfig::new(3, regions).with_scheduling();
    cfg.scheduler.region_schedule_limit = 0;
    let cluster = Cluster::run(cfg);
    // Start lopsided: store 1 leads everything.
    for r in 1..=regions {
        cluster.wait_leader(r);
        cluster.campaign(1, r);
    }
    let deadline = Instant::now() + LONG_WAIT;
    let avg = regions as f64 / 3.0;
    loop {
        let counts = leader_counts(&cluster, regions);
        let balanced = (1..=3).all(|s| {
            let c = counts.get(&s).copied().unwrap_or(0) as f64;
            (c - avg).abs() <= avg * 0.2
        }) && counts.values().sum::<u64>() == regions;
        if balanced {
            eprintln!("leaders per store: {counts:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leaders never balanced: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_down_store_s_replicas_are_recreated_on_a_fourth_store() {
    let mut cfg = ClusterConfig::new(4, 4).with_scheduling();
    cfg.replicas = 3;
    cfg.scheduler.region_schedule_limit = 0;
    cfg.scheduler.leader_schedule_limit = 0;
    let mut cluster = Cluster::run(cfg);
    for i in 0..20u32 {
        cluster.must_put(format!("k{i:04}").as_bytes(), b"v");
    }
    cluster.shutdown_store(3);
    let started = Instant::now();
    wait_stores(
        &cluster,
        &[1, 2, 4],
        "replicas moved off store 3",
        |_, regions| {
            regions.len() == 4
                && regions
                    .iter()
                    .all(|r| voters_on(r) == vec![1, 2, 4] && r.peers.len() == 3)
        },
    );
    eprintln!(
        "store 3's replicas re-created on store 4 in {:?}",
        started.elapsed()
    );
    for i in 0..20u32 {
        cluster.wait_applied(4, format!("k{i:04}").as_bytes(), Some(b"v"));
    }
}

#[test]
fn after_a_scheduler_restart_ids_continue_and_time_does_not_go_back() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_put(b"a", b"1");
    cluster.split(b"m").expect("split before the restart");
    wait_routing(&cluster, 2);
    let before = cluster.scheduler();
    let ids: Vec<u64> = before.ids.alloc(10).unwrap();
    let ts = before.tso.get(100).unwrap();
    let routing = before.cluster.regions().len();
    drop(before);
    cluster.restart_scheduler();
    let after = cluster.scheduler();
    eprintln!(
        "after restart: {:?}",
        after
            .cluster
            .regions()
            .iter()
            .map(|r| (
                r.region.id,
                r.region.start_key.clone(),
                r.region.end_key.clone()
            ))
            .collect::<Vec<_>>()
    );
    let next = after.ids.alloc_one().unwrap();
    assert!(next > *ids.last().unwrap(), "id {next} after {ids:?}");
    let ts2 = after.tso.get(1).unwrap();
    assert!(ts2 > ts, "timestamp {ts2} after {ts}");
    assert_eq!(
        after.cluster.regions().len(),
        routing,
        "the routing table survives"
    );
    drop(after);
    // The stores go on using it: a split gets fresh ids.
    cluster.split(b"t").expect("split after the restart");
    wait_routing(&cluster, 3);
    let newest = cluster.region_for_key(b"t");
    assert!(newest.id > next, "region id {} after {next}", newest.id);
}

#[test]
fn a_split_asked_of_the_scheduler_reaches_the_region() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1).with_scheduling());
    cluster.must_put(b"a", b"1");
    cluster.must_put(b"z", b"2");
    // The first heartbeat registers the leader; then the operator is handed out.
    cluster
        .scheduler()
        .ask_split(1, vec![b"m".to_vec()])
        .expect("ask for a split");
    assert!(cluster
        .scheduler()
        .ask_split(1, vec![b"n".to_vec()])
        .is_err());
    wait_routing(&cluster, 2);
    assert_eq!(cluster.region_for_key(b"z").start_key, b"m".to_vec());
    assert_eq!(cluster.must_get(b"z").as_deref(), Some(&b"2"[..]));
    let ops = cluster.scheduler().operators();
    assert!(
        ops.iter().any(|o| o.description.starts_with("split")),
        "{ops:?}"
    );
}
