//! Moving a region between store processes: a peer added on a fourth store gets megabytes of
//! data through a snapshot stream, serves it as leader, and a removed peer's store lets go.

mod common;

use std::time::Duration;

use common::{wait_until, ProcCluster};

/// How long each step of the move may take.
const STEP: Duration = Duration::from_secs(60);

async fn voters(admin: &client::Client) -> Vec<u64> {
    let regions = admin.regions().await.unwrap_or_default();
    let mut stores: Vec<u64> = regions
        .first()
        .map(|r| {
            r.region
                .peers
                .iter()
                .filter(|p| p.role() == proto::metapb::PeerRole::Voter)
                .map(|p| p.store_id)
                .collect()
        })
        .unwrap_or_default();
    stores.sort_unstable();
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_added_on_a_new_store_gets_the_data_by_snapshot_and_serves_it() {
    // The replica checker is off: every membership change here is the administrator's.
    let cluster = ProcCluster::start_with(4, |s| s.schedule.replica_schedule_limit = 0);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 1).await;
    let value = vec![b'v'; 1024];
    for chunk in 0..8 {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..500)
            .map(|i| {
                (
                    format!("key-{:05}", chunk * 500 + i).into_bytes(),
                    value.clone(),
                )
            })
            .collect();
        admin.batch_put(pairs).await.expect("load 4 MiB");
    }
    let region = admin.regions().await.expect("regions").remove(0).region;
    let first = region.peers[0].store_id;
    let mut stores: Vec<u64> = admin
        .stores()
        .await
        .expect("stores")
        .iter()
        .map(|s| s.id)
        .collect();
    stores.sort_unstable();
    // Each new peer starts empty and gets the 4 MiB as a snapshot over gRPC.
    for (added, store) in stores.iter().filter(|s| **s != first).enumerate() {
        admin.add_peer(region.id, *store).await.expect("add peer");
        wait_until("the new voter", STEP, || async {
            voters(&admin).await.len() == added + 2
        })
        .await;
    }
    let new_store = *stores
        .iter()
        .rev()
        .find(|s| **s != first)
        .expect("another store");
    admin
        .transfer_leader(region.id, new_store)
        .await
        .expect("transfer leader");
    wait_until("the new peer to lead", STEP, || async {
        admin
            .regions()
            .await
            .ok()
            .and_then(|r| r[0].leader)
            .map(|l| l.store_id)
            == Some(new_store)
    })
    .await;
    let new_index = stores
        .iter()
        .position(|s| *s == new_store)
        .expect("store index");
    assert!(
        cluster.metric(
            new_index,
            "regionstore_snapshots_received_total{result=\"ok\"}"
        ) >= 1.0,
        "the new store received no snapshot stream"
    );
    // Served by the new store's peer: everything arrived.
    let all = admin
        .scan("key-", "key.", 10_000, false)
        .await
        .expect("scan");
    assert_eq!(all.len(), 4000);
    assert!(all.iter().all(|(_, v)| v == &value));

    // Removing the first peer (a follower now): its store lets go of the region.
    admin
        .remove_peer(region.id, first)
        .await
        .expect("remove peer");
    wait_until("the removal", STEP, || async {
        voters(&admin).await.len() == 3
    })
    .await;
    let index = stores
        .iter()
        .position(|s| *s == first)
        .expect("store index");
    wait_until("the removed peer to go", STEP, || async {
        cluster.status(index)["regions"].as_u64() == Some(0)
    })
    .await;
    assert_eq!(admin.get("key-00042").await.expect("get"), Some(value));
}
