//! What a benchmark talks to: a regionstore cluster through the `client` crate, or etcd
//! through its v3 KV gRPC API (Range and Put, our own wire-compatible subset).

use std::time::Duration;

use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::Channel;

#[derive(Clone)]
pub enum Driver {
    Regionstore(client::Client),
    /// One channel per etcd member; worker `i` uses member `i % n`, as etcd's own client
    /// spreads connections.
    Etcd(Vec<KvClient<Channel>>),
}

impl Driver {
    /// A regionstore client configured with `config`.
    pub async fn regionstore(pd: &str, config: client::ClientConfig) -> Result<Driver, String> {
        let client = client::Client::connect(&[pd.to_string()], config)
            .await
            .map_err(|e| format!("cannot connect to the cluster at {pd}: {e}"))?;
        Ok(Driver::Regionstore(client))
    }

    pub async fn etcd(endpoints: &[String]) -> Result<Driver, String> {
        let mut clients = Vec::new();
        for endpoint in endpoints {
            let url = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                format!("http://{endpoint}")
            };
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| format!("etcd endpoint {url}: {e}"))?
                .connect_timeout(Duration::from_secs(5))
                // A stalled member must not hold a worker (and the run) forever.
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
                // Connected on first use: a member just started may not listen yet.
                .connect_lazy();
            clients.push(KvClient::new(channel));
        }
        if clients.is_empty() {
            return Err("no etcd endpoint given (--etcd)".into());
        }
        let driver = Driver::Etcd(clients);
        // A cluster just started may still be electing its leader; and every member must
        // answer, or the workers sent to a dead one would only measure errors.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for (member, endpoint) in endpoints.iter().enumerate() {
            loop {
                match driver
                    .put(member, b"bench-ready".to_vec(), b"1".to_vec())
                    .await
                {
                    Ok(()) => break,
                    Err(e) if std::time::Instant::now() > deadline => {
                        return Err(format!(
                            "etcd member {endpoint} does not take writes after 30 s: {e}"
                        ))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(driver)
    }

    pub async fn put(&self, worker: usize, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        match self {
            Driver::Regionstore(c) => c.put(key, value).await.map_err(|e| e.to_string()),
            Driver::Etcd(clients) => {
                let mut kv = clients[worker % clients.len()].clone();
                kv.put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
            }
        }
    }

    /// Many keys at once where the target has a batch write (loading data before a run).
    pub async fn load(&self, worker: usize, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        match self {
            Driver::Regionstore(c) => c.batch_put(pairs).await.map_err(|e| e.to_string()),
            Driver::Etcd(_) => {
                for (key, value) in pairs {
                    self.put(worker, key, value).await?;
                }
                Ok(())
            }
        }
    }

    /// A linearizable read on both targets (etcd: `serializable = false`, its default).
    pub async fn get(&self, worker: usize, key: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        match self {
            Driver::Regionstore(c) => c.get(key).await.map_err(|e| e.to_string()),
            Driver::Etcd(clients) => {
                let mut kv = clients[worker % clients.len()].clone();
                kv.range(RangeRequest {
                    key,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().kvs.into_iter().next().map(|kv| kv.value))
                .map_err(|s| s.to_string())
            }
        }
    }

    /// Requests the client retried (regionstore: NotLeader, EpochNotMatch, ...).
    pub fn retries(&self) -> u64 {
        match self {
            Driver::Regionstore(c) => c.retries(),
            Driver::Etcd(_) => 0,
        }
    }

    pub fn target(&self) -> &'static str {
        match self {
            Driver::Regionstore(_) => "regionstore",
            Driver::Etcd(_) => "etcd",
        }
    }
}
