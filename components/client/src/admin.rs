//! The administrator's operators: split, leader transfer, adding and removing peers, through
//! the scheduler's own service. Each call returns an [`Operator`] that
//! [`Client::wait_operator`] can follow to its end.

use std::fmt;
use std::time::Duration;

use proto::keyspacepb;
use proto::schedulerpb::{self, add_operator_request::Kind};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::net;

/// How often [`Client::wait_operator`] and [`Client::wait_region_idle`] ask the scheduler.
const OPERATOR_POLL: Duration = Duration::from_millis(100);

/// An operator the scheduler accepted: the region it runs on and the description it gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub region_id: u64,
    pub description: String,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "region {}: {}", self.region_id, self.description)
    }
}

impl Client {
    /// Asks the scheduler to split the region holding `key` at `key`. The split happens
    /// asynchronously: follow it with [`Client::wait_operator`].
    pub async fn split(&self, key: impl Into<Vec<u8>>) -> Result<Operator> {
        self.split_many(vec![key.into()]).await
    }

    /// Asks the scheduler to split the region holding `keys[0]` at every key of `keys`
    /// (ascending, all inside that region, at most 64): one operator, one batch split.
    pub async fn split_many(&self, keys: Vec<Vec<u8>>) -> Result<Operator> {
        let first = keys.first().ok_or_else(|| Error::InvalidArgument {
            op: "split",
            reason: "no split key".into(),
        })?;
        let region = self.region_of(first).await?;
        // The scheduler splits at stored keys: under a keyspace, the encoded prefixed key.
        let keys = match self.keyspace_id() {
            Some(_) => keys
                .into_iter()
                .map(|key| crate::keyspace::Keyspace::to_pd(&self.req_key(key)))
                .collect(),
            None => keys,
        };
        self.add_operator("split", region, Kind::Split(schedulerpb::SplitAt { keys }))
            .await
    }

    /// The id of the region holding `key`, as PD knows it now (not from the cache: an
    /// operator must name the region the scheduler knows). Right after a split PD may not know
    /// the new region yet; that gap is retried like any routing miss.
    pub async fn region_of(&self, key: &[u8]) -> Result<u64> {
        let key = &self.req_key(key);
        let inner = &self.inner;
        let mut state = inner.retry_state("region_of");
        while let Err(failure) = inner.load_region(key, &mut state).await {
            let pause = state.admit(failure, true)?;
            state.pause([pause]).await?;
        }
        Ok(inner.locate(key, &mut state).await?.region_id())
    }

    /// Asks the scheduler to move the region's leadership to its peer on `store_id`.
    pub async fn transfer_leader(&self, region_id: u64, store_id: u64) -> Result<Operator> {
        self.add_operator(
            "transfer_leader",
            region_id,
            Kind::TransferLeaderToStore(store_id),
        )
        .await
    }

    /// Asks the scheduler to add a voter of the region on `store_id`.
    pub async fn add_peer(&self, region_id: u64, store_id: u64) -> Result<Operator> {
        self.add_operator("add_peer", region_id, Kind::AddPeerOnStore(store_id))
            .await
    }

    /// Asks the scheduler to remove the region's peer on `store_id` (not the leader's).
    pub async fn remove_peer(&self, region_id: u64, store_id: u64) -> Result<Operator> {
        self.add_operator("remove_peer", region_id, Kind::RemovePeerOnStore(store_id))
            .await
    }

    /// Creates keyspace `name` (API V2 clusters); regions split at its boundaries with their
    /// next heartbeats.
    pub async fn create_keyspace(&self, name: &str) -> Result<keyspacepb::KeyspaceMeta> {
        let inner = &self.inner;
        let mut state = inner.retry_state("create_keyspace");
        let resp = inner
            .pd_call(
                &mut state,
                "CreateKeyspace",
                false,
                |leader, header, timeout| {
                    let mut scheduler = leader.scheduler.clone();
                    let req = schedulerpb::CreateKeyspaceRequest {
                        header,
                        name: name.to_string(),
                    };
                    async move { scheduler.create_keyspace(net::request(req, timeout)).await }
                },
            )
            .await?;
        resp.keyspace.ok_or_else(|| Error::NotFound {
            what: format!("keyspace {name:?} in the scheduler's answer"),
        })
    }

    /// Every keyspace (API V2 clusters), by id.
    pub async fn keyspaces(&self) -> Result<Vec<keyspacepb::KeyspaceMeta>> {
        let inner = &self.inner;
        let mut state = inner.retry_state("keyspaces");
        let resp = inner
            .pd_call(
                &mut state,
                "GetAllKeyspaces",
                true,
                |leader, header, timeout| {
                    let mut keyspace = leader.keyspace.clone();
                    let req = keyspacepb::GetAllKeyspacesRequest {
                        header,
                        start_id: 0,
                        limit: 0,
                    };
                    async move { keyspace.get_all_keyspaces(net::request(req, timeout)).await }
                },
            )
            .await?;
        Ok(resp.keyspaces)
    }

    /// Running operators, then the most recent ended ones.
    pub async fn operators(&self) -> Result<Vec<schedulerpb::OperatorInfo>> {
        let inner = &self.inner;
        let mut state = inner.retry_state("operators");
        let resp = inner
            .pd_call(
                &mut state,
                "ListOperators",
                true,
                |leader, header, timeout| {
                    let mut scheduler = leader.scheduler.clone();
                    let req = schedulerpb::ListOperatorsRequest { header };
                    async move { scheduler.list_operators(net::request(req, timeout)).await }
                },
            )
            .await?;
        Ok(resp.operators)
    }

    /// Waits until `op` has ended: `Ok` once it finished, [`Error::OperatorFailed`] if the
    /// scheduler gave it up (timed out or cancelled), [`Error::OperatorWait`] if it is still
    /// running after `timeout`.
    pub async fn wait_operator(&self, op: &Operator, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // Running operators come first, then the ended ones newest first: the first entry
            // for this region and description is this operator (one runs per region at a
            // time, and it was registered before AddOperator answered).
            let all = self.operators().await?;
            let ours = all
                .iter()
                .find(|o| o.region_id == op.region_id && o.description == op.description);
            match ours.map(|o| o.state.as_str()) {
                Some("finished") => return Ok(()),
                Some("running") => {}
                Some(state) => {
                    return Err(Error::OperatorFailed {
                        region_id: op.region_id,
                        description: op.description.clone(),
                        state: state.to_string(),
                    })
                }
                // Dropped from the scheduler's bounded history: it ended long ago, or the
                // scheduler restarted (operators are not persisted) and it will never run.
                None => {
                    return Err(Error::OperatorFailed {
                        region_id: op.region_id,
                        description: op.description.clone(),
                        state: "the scheduler no longer knows it (it restarted, or the operator \
                                ended long ago); `ctl regions` shows whether it took effect"
                            .into(),
                    })
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::OperatorWait {
                    region_id: op.region_id,
                    description: op.description.clone(),
                    timeout,
                });
            }
            tokio::time::sleep(OPERATOR_POLL).await;
        }
    }

    /// Waits until region `region_id` has no running operator (the scheduler runs one per
    /// region, and refuses a second one), for at most `timeout`.
    pub async fn wait_region_idle(&self, region_id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self
                .operators()
                .await?
                .into_iter()
                .find(|o| o.region_id == region_id && o.state == "running");
            let Some(running) = running else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(Error::OperatorWait {
                    region_id,
                    description: running.description,
                    timeout,
                });
            }
            tokio::time::sleep(OPERATOR_POLL).await;
        }
    }

    async fn add_operator(&self, op: &'static str, region_id: u64, kind: Kind) -> Result<Operator> {
        let inner = &self.inner;
        let mut state = inner.retry_state(op);
        // Not idempotent (a second operator may be refused, or run twice): retried only if
        // the request never left.
        let resp = inner
            .pd_call(
                &mut state,
                "AddOperator",
                false,
                |leader, header, timeout| {
                    let mut scheduler = leader.scheduler.clone();
                    let req = schedulerpb::AddOperatorRequest {
                        header,
                        region_id,
                        kind: Some(kind.clone()),
                    };
                    async move { scheduler.add_operator(net::request(req, timeout)).await }
                },
            )
            .await?;
        // The region is about to change: route its next request afresh.
        inner.cache_mut().invalidate(region_id);
        Ok(Operator {
            region_id,
            description: resp.description,
        })
    }
}
