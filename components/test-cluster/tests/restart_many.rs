//! A store with 10,000 regions restarts and serves every one of them: the regions' states
//! load, their peers start, and each takes a write. One store with one replica per region,
//! so the test measures the store's own restart (a leader per region at once), not
//! elections across stores. Production tick settings: ten thousand regions at the tests'
//! 20 ms tick would keep the cores busy just ticking before they hibernate.

use std::time::{Duration, Instant};

use raftstore::Modify;
use test_cluster::{region_key, wait_until, Cluster, ClusterConfig};

#[test]
fn a_store_with_ten_thousand_regions_restarts_and_serves_every_one() {
    let regions = 10_000;
    let mut cfg = ClusterConfig::new(1, regions);
    let defaults = raftstore::Config::default();
    cfg.raftstore.raft_base_tick_interval_ms = defaults.raft_base_tick_interval_ms;
    cfg.raftstore.max_leader_lease_ms = defaults.max_leader_lease_ms;
    let mut cluster = Cluster::run(cfg);
    let write_all = |cluster: &Cluster, value: &[u8]| {
        for r in 1..=regions {
            let key = region_key(r);
            wait_until("the region takes a write", Duration::from_secs(60), || {
                cluster
                    .write_on(1, r, vec![Modify::put(key.clone(), value.to_vec())])
                    .is_ok()
            });
        }
    };
    write_all(&cluster, b"before");

    let restart = Instant::now();
    cluster.restart_store(1);
    let started = restart.elapsed();
    write_all(&cluster, b"after");
    let serving = restart.elapsed();
    eprintln!(
        "{regions} regions: the store started in {started:?} and every region took a write \
         {serving:?} after the restart began (debug build)"
    );
    for r in [1, regions / 2, regions] {
        assert_eq!(
            cluster.engine_get(1, &region_key(r)).as_deref(),
            Some(&b"after"[..])
        );
    }
}
