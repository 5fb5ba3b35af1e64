//! The raw KV RPCs as one generic shape: set the context, call the generated client, look at
//! the region error and the error string.

use std::future::Future;
use std::time::Duration;

use proto::errorpb;
use proto::kvrpcpb::{self, Context};
use proto::tikvpb::batch_commands_request::request::Cmd as Command;
use proto::tikvpb::batch_commands_response::response::Cmd as Answer;
use proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

use crate::batch::BatchConn;
use crate::net;

/// A raw KV request to one region.
pub(crate) trait KvRequest: Send + 'static {
    type Response: KvResponse;
    /// The gRPC method, for errors and logs.
    const METHOD: &'static str;

    fn set_context(&mut self, context: Context);

    /// Sends the request as a unary call with the generated client.
    fn call_unary(
        self,
        client: TikvClient<Channel>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Response, tonic::Status>> + Send;

    /// The request as a BatchCommands command; itself back if the stream does not carry it.
    fn into_command(self) -> Result<Command, Self>
    where
        Self: Sized,
    {
        Err(self)
    }

    /// The response in a BatchCommands answer, if the answer is of this request's kind.
    fn from_answer(_answer: Answer) -> Option<Self::Response> {
        None
    }

    /// Sends the request: on the store's BatchCommands stream when there is one and it carries
    /// this command, otherwise as a unary call.
    fn call(
        self,
        conn: StoreConn,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Response, tonic::Status>> + Send
    where
        Self: Sized,
    {
        async move {
            let req = match conn.batch {
                Some(batch) => match self.into_command() {
                    Ok(command) => {
                        let answer = batch.call(command).await?;
                        return Self::from_answer(answer).ok_or_else(|| {
                            tonic::Status::internal(format!(
                                "a BatchCommands answer of another kind to {}",
                                Self::METHOD
                            ))
                        });
                    }
                    Err(req) => req,
                },
                None => self,
            };
            req.call_unary(conn.unary, timeout).await
        }
    }
}

/// How requests reach one store.
#[derive(Clone)]
pub(crate) struct StoreConn {
    pub(crate) unary: TikvClient<Channel>,
    /// The store's BatchCommands stream, when [`crate::ClientConfig::batch_commands`] is on.
    pub(crate) batch: Option<BatchConn>,
}

/// The parts of a raw KV response the retry logic looks at.
pub(crate) trait KvResponse: Send + 'static {
    fn take_region_error(&mut self) -> Option<errorpb::Error>;
    /// The response's error string; empty when it has none (or no such field).
    fn error(&self) -> &str;
}

macro_rules! kv_request {
    ($req:ident => $resp:ident, $method:literal, $call:ident, batch $variant:ident) => {
        kv_request!(@unary $req => $resp, $method, $call, {
            fn into_command(self) -> Result<Command, Self> {
                Ok(Command::$variant(self))
            }

            fn from_answer(answer: Answer) -> Option<kvrpcpb::$resp> {
                match answer {
                    Answer::$variant(resp) => Some(resp),
                    _ => None,
                }
            }
        });
    };
    ($req:ident => $resp:ident, $method:literal, $call:ident) => {
        kv_request!(@unary $req => $resp, $method, $call, {});
    };
    (@unary $req:ident => $resp:ident, $method:literal, $call:ident, { $($batch:tt)* }) => {
        impl KvRequest for kvrpcpb::$req {
            type Response = kvrpcpb::$resp;
            const METHOD: &'static str = $method;

            fn set_context(&mut self, mut context: Context) {
                // A transactional read names the locks it may read past: keep them.
                if let Some(old) = self.context.take() {
                    context.resolved_locks = old.resolved_locks;
                }
                self.context = Some(context);
            }

            fn call_unary(
                self,
                mut client: TikvClient<Channel>,
                timeout: Duration,
            ) -> impl Future<Output = Result<Self::Response, tonic::Status>> + Send {
                async move {
                    client
                        .$call(net::request(self, timeout))
                        .await
                        .map(tonic::Response::into_inner)
                }
            }

            $($batch)*
        }
    };
}

macro_rules! kv_response {
    ($resp:ident) => {
        impl KvResponse for kvrpcpb::$resp {
            fn take_region_error(&mut self) -> Option<errorpb::Error> {
                self.region_error.take()
            }
            fn error(&self) -> &str {
                ""
            }
        }
    };
    ($resp:ident, with_error) => {
        impl KvResponse for kvrpcpb::$resp {
            fn take_region_error(&mut self) -> Option<errorpb::Error> {
                self.region_error.take()
            }
            fn error(&self) -> &str {
                &self.error
            }
        }
    };
}

kv_request!(RawGetRequest => RawGetResponse, "RawGet", raw_get, batch RawGet);
kv_request!(RawBatchGetRequest => RawBatchGetResponse, "RawBatchGet", raw_batch_get, batch RawBatchGet);
kv_request!(RawPutRequest => RawPutResponse, "RawPut", raw_put, batch RawPut);
kv_request!(RawBatchPutRequest => RawBatchPutResponse, "RawBatchPut", raw_batch_put, batch RawBatchPut);
kv_request!(RawDeleteRequest => RawDeleteResponse, "RawDelete", raw_delete, batch RawDelete);
kv_request!(RawBatchDeleteRequest => RawBatchDeleteResponse, "RawBatchDelete", raw_batch_delete, batch RawBatchDelete);
kv_request!(RawScanRequest => RawScanResponse, "RawScan", raw_scan, batch RawScan);
kv_request!(RawDeleteRangeRequest => RawDeleteRangeResponse, "RawDeleteRange", raw_delete_range, batch RawDeleteRange);
kv_request!(RawCasRequest => RawCasResponse, "RawCompareAndSwap", raw_compare_and_swap);
kv_request!(RawGetKeyTtlRequest => RawGetKeyTtlResponse, "RawGetKeyTTL", raw_get_key_ttl);

kv_request!(GetRequest => GetResponse, "KvGet", kv_get, batch Get);
kv_request!(BatchGetRequest => BatchGetResponse, "KvBatchGet", kv_batch_get, batch BatchGet);
kv_request!(ScanRequest => ScanResponse, "KvScan", kv_scan, batch Scan);
kv_request!(PrewriteRequest => PrewriteResponse, "KvPrewrite", kv_prewrite, batch Prewrite);
kv_request!(CommitRequest => CommitResponse, "KvCommit", kv_commit, batch Commit);
kv_request!(BatchRollbackRequest => BatchRollbackResponse, "KvBatchRollback", kv_batch_rollback, batch BatchRollback);
kv_request!(CheckTxnStatusRequest => CheckTxnStatusResponse, "KvCheckTxnStatus", kv_check_txn_status, batch CheckTxnStatus);
kv_request!(
    CheckSecondaryLocksRequest => CheckSecondaryLocksResponse,
    "KvCheckSecondaryLocks",
    kv_check_secondary_locks, batch CheckSecondaryLocks
);
kv_request!(ResolveLockRequest => ResolveLockResponse, "KvResolveLock", kv_resolve_lock, batch ResolveLock);
kv_request!(
    PessimisticLockRequest => PessimisticLockResponse,
    "KvPessimisticLock",
    kv_pessimistic_lock, batch PessimisticLock
);
kv_request!(
    PessimisticRollbackRequest => PessimisticRollbackResponse,
    "KVPessimisticRollback",
    kv_pessimistic_rollback, batch PessimisticRollback
);
kv_request!(ScanLockRequest => ScanLockResponse, "KvScanLock", kv_scan_lock, batch ScanLock);
kv_request!(TxnHeartBeatRequest => TxnHeartBeatResponse, "KvTxnHeartBeat", kv_txn_heart_beat, batch TxnHeartBeat);

// Transactional responses carry a `KeyError`, which the transaction logic reads itself.
kv_response!(GetResponse);
kv_response!(BatchGetResponse);
kv_response!(ScanResponse);
kv_response!(PrewriteResponse);
kv_response!(CommitResponse);
kv_response!(BatchRollbackResponse);
kv_response!(CheckTxnStatusResponse);
kv_response!(CheckSecondaryLocksResponse);
kv_response!(ResolveLockResponse);
kv_response!(PessimisticLockResponse);
kv_response!(PessimisticRollbackResponse);
kv_response!(ScanLockResponse);
kv_response!(TxnHeartBeatResponse);

kv_response!(RawGetResponse, with_error);
kv_response!(RawBatchGetResponse);
kv_response!(RawPutResponse, with_error);
kv_response!(RawBatchPutResponse, with_error);
kv_response!(RawDeleteResponse, with_error);
kv_response!(RawBatchDeleteResponse, with_error);
kv_response!(RawScanResponse);
kv_response!(RawDeleteRangeResponse, with_error);
kv_response!(RawCasResponse, with_error);
kv_response!(RawGetKeyTtlResponse, with_error);

/// The first per-key error among returned pairs (raw requests only use the string forms).
pub(crate) fn key_error(pairs: &[kvrpcpb::KvPair]) -> Option<String> {
    pairs.iter().find_map(|p| {
        let e = p.error.as_ref()?;
        let message = [e.abort.as_str(), e.retryable.as_str()]
            .into_iter()
            .find(|m| !m.is_empty())
            .unwrap_or("unspecified key error");
        Some(format!(
            "key {}: {message}",
            crate::error::KeyDisplay(&p.key)
        ))
    })
}
