//! The PD side: finding the PD leader, its clients, and the checks every PD answer gets.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use proto::keyspacepb::{self, keyspace_client::KeyspaceClient};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::{self, GetMembersRequest, RequestHeader, ResponseHeader};
use proto::schedulerpb::{self, scheduler_client::SchedulerClient};
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::net;

/// The PD member requests go to, with clients for both services it serves.
#[derive(Debug)]
pub(crate) struct PdLeader {
    pub url: String,
    pub pd: PdClient<Channel>,
    pub scheduler: SchedulerClient<Channel>,
    pub keyspace: KeyspaceClient<Channel>,
}

/// Connection to the PD cluster: its id, the current leader, and how to find a new one.
#[derive(Debug)]
pub(crate) struct Pd {
    cluster_id: u64,
    /// Given endpoints plus every member's client URLs seen since.
    endpoints: RwLock<Vec<String>>,
    leader: RwLock<Arc<PdLeader>>,
    /// One re-discovery at a time; the others wait for its result.
    reconnecting: tokio::sync::Mutex<()>,
    net: NetSettings,
}

/// How PD clients are built and called.
#[derive(Debug)]
struct NetSettings {
    request_timeout: Duration,
    max_message_size: usize,
    logger: slog::Logger,
}

/// What one discovery round found.
struct Discovery {
    cluster_id: u64,
    leader: PdLeader,
    member_urls: Vec<String>,
}

impl Pd {
    /// Asks the endpoints in turn for the members until one answers, then uses its leader.
    pub async fn connect(
        endpoints: &[String],
        request_timeout: Duration,
        max_message_size: usize,
        logger: slog::Logger,
    ) -> Result<Pd> {
        if endpoints.is_empty() {
            return Err(Error::InvalidConfig("no PD endpoint given".into()));
        }
        let urls = endpoints
            .iter()
            .map(|e| net::endpoint_url(e))
            .collect::<Result<Vec<_>>>()?;
        let net = NetSettings {
            request_timeout,
            max_message_size,
            logger,
        };
        let found = net.discover(&urls, None).await?;
        slog::info!(net.logger, "using PD leader";
            "url" => &found.leader.url, "cluster_id" => found.cluster_id);
        let mut all = urls;
        merge_urls(&mut all, found.member_urls);
        Ok(Pd {
            cluster_id: found.cluster_id,
            endpoints: RwLock::new(all),
            leader: RwLock::new(Arc::new(found.leader)),
            reconnecting: tokio::sync::Mutex::new(()),
            net,
        })
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The header of every PD request.
    pub fn header(&self) -> Option<RequestHeader> {
        Some(RequestHeader {
            cluster_id: self.cluster_id,
            sender_id: 0,
        })
    }

    pub fn leader(&self) -> Arc<PdLeader> {
        self.leader
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Called after a transport failure talking to `failed`: finds the leader again, unless
    /// another task already replaced `failed`. Failure is only logged: the caller retries
    /// with backoff, and the lazy channel reconnects by itself if PD comes back.
    pub async fn reconnect(&self, failed: &Arc<PdLeader>) {
        let _guard = self.reconnecting.lock().await;
        if !Arc::ptr_eq(&self.leader(), failed) {
            return;
        }
        let urls = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let found = match self.net.discover(&urls, Some(self.cluster_id)).await {
            Ok(found) => found,
            Err(e) => {
                slog::info!(self.net.logger, "PD leader not found again"; "error" => %e);
                return;
            }
        };
        slog::info!(self.net.logger, "using PD leader"; "url" => &found.leader.url);
        merge_urls(
            &mut self
                .endpoints
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            found.member_urls,
        );
        *self.leader.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(found.leader);
    }
}

fn merge_urls(into: &mut Vec<String>, urls: Vec<String>) {
    for url in urls {
        if !into.contains(&url) {
            into.push(url);
        }
    }
}

impl NetSettings {
    fn clients(&self, url: &str) -> Result<PdLeader> {
        let channel = net::lazy_channel(url, self.request_timeout)?;
        Ok(PdLeader {
            url: url.to_owned(),
            pd: PdClient::new(channel.clone())
                .max_decoding_message_size(self.max_message_size)
                .max_encoding_message_size(self.max_message_size),
            scheduler: SchedulerClient::new(channel.clone())
                .max_decoding_message_size(self.max_message_size)
                .max_encoding_message_size(self.max_message_size),
            keyspace: KeyspaceClient::new(channel)
                .max_decoding_message_size(self.max_message_size)
                .max_encoding_message_size(self.max_message_size),
        })
    }

    /// `GetMembers` on one member.
    async fn members(&self, client: &PdLeader) -> Result<pdpb::GetMembersResponse> {
        const METHOD: &str = "GetMembers";
        let req = net::request(
            // The cluster id is what this call finds out: 0 is accepted by PD.
            GetMembersRequest {
                header: Some(RequestHeader::default()),
            },
            self.request_timeout,
        );
        let mut pd = client.pd.clone();
        let resp = match tokio::time::timeout(self.request_timeout, pd.get_members(req)).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => {
                return Err(Error::Grpc {
                    method: METHOD,
                    target: client.url.clone(),
                    status: Box::new(status),
                })
            }
            Err(_) => {
                return Err(Error::Timeout {
                    method: METHOD,
                    target: client.url.clone(),
                    timeout: self.request_timeout,
                })
            }
        };
        check_header(METHOD, resp.header.as_ref())?;
        Ok(resp)
    }

    /// Finds the leader through the first member of `urls` that answers. The leader's own
    /// URL is checked before use: if it does not answer (an address this client cannot
    /// reach), requests go to the member that answered.
    async fn discover(&self, urls: &[String], expected_cluster: Option<u64>) -> Result<Discovery> {
        let mut last = String::from("no endpoint tried");
        for url in urls {
            let client = match self.clients(url) {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let resp = match self.members(&client).await {
                Ok(resp) => resp,
                Err(e) => {
                    slog::debug!(self.logger, "PD member did not answer"; "url" => url, "error" => %e);
                    last = e.to_string();
                    continue;
                }
            };
            let cluster_id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
            if let Some(expected) = expected_cluster {
                if cluster_id != expected {
                    last = format!("{url} belongs to cluster {cluster_id}, not {expected}");
                    continue;
                }
            }
            let member_urls: Vec<String> = resp
                .members
                .iter()
                .flat_map(|m| &m.client_urls)
                .filter_map(|u| net::endpoint_url(u).ok())
                .collect();
            let leader_url = resp
                .leader
                .as_ref()
                .and_then(|l| l.client_urls.first())
                .and_then(|u| net::endpoint_url(u).ok());
            let leader = match leader_url {
                Some(leader_url) if leader_url != *url => match self.clients(&leader_url) {
                    Ok(leader) if self.members(&leader).await.is_ok() => leader,
                    _ => {
                        slog::info!(self.logger, "PD leader unreachable, using the member that answered";
                                "leader" => &leader_url, "member" => url);
                        client
                    }
                },
                _ => client,
            };
            return Ok(Discovery {
                cluster_id,
                leader,
                member_urls,
            });
        }
        Err(Error::PdUnreachable {
            endpoints: urls.to_vec(),
            last,
        })
    }
}

/// Every PD response carries a header; an error in it fails the call with its message.
pub(crate) trait PdResponse {
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! pd_responses {
    ($($ty:ty),* $(,)?) => {
        $(impl PdResponse for $ty {
            fn header(&self) -> Option<&ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

pd_responses!(
    pdpb::TsoResponse,
    pdpb::GetGcSafePointResponse,
    pdpb::GetRegionResponse,
    pdpb::ScanRegionsResponse,
    pdpb::GetStoreResponse,
    pdpb::GetAllStoresResponse,
    schedulerpb::AddOperatorResponse,
    schedulerpb::ListOperatorsResponse,
    schedulerpb::CreateKeyspaceResponse,
    keyspacepb::GetAllKeyspacesResponse,
    keyspacepb::LoadKeyspaceResponse,
);

/// The error a response header carries, if any.
pub(crate) fn check_header(method: &'static str, header: Option<&ResponseHeader>) -> Result<()> {
    let Some(err) = header.and_then(|h| h.error.as_ref()) else {
        return Ok(());
    };
    if err.r#type == pdpb::ErrorType::Ok as i32 && err.message.is_empty() {
        return Ok(());
    }
    let kind = pdpb::ErrorType::try_from(err.r#type)
        .map(|t| t.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("error type {}", err.r#type));
    Err(Error::Pd {
        method,
        kind,
        message: err.message.clone(),
    })
}

/// Whether a PD error says the thing asked for does not exist (yet): worth retrying when
/// looking up a key's region, which always exists once the cluster is bootstrapped.
pub(crate) fn is_region_not_found(err: &Error) -> bool {
    matches!(err, Error::Pd { kind, .. } if kind == pdpb::ErrorType::RegionNotFound.as_str_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: pdpb::ErrorType, message: &str) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 7,
            error: Some(pdpb::Error {
                r#type: kind as i32,
                message: message.into(),
            }),
        }
    }

    #[test]
    fn header_errors_carry_kind_and_message() {
        assert!(check_header("GetRegion", None).is_ok());
        assert!(check_header("GetRegion", Some(&ResponseHeader::default())).is_ok());
        assert!(check_header("GetRegion", Some(&header(pdpb::ErrorType::Ok, ""))).is_ok());
        let err = check_header(
            "GetStore",
            Some(&header(
                pdpb::ErrorType::StoreTombstone,
                "store 4 is tombstone",
            )),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PD GetStore failed (STORE_TOMBSTONE): store 4 is tombstone"
        );
        let not_found = check_header(
            "GetRegion",
            Some(&header(pdpb::ErrorType::RegionNotFound, "none")),
        )
        .unwrap_err();
        assert!(is_region_not_found(&not_found));
        assert!(!is_region_not_found(&err));
    }
}
