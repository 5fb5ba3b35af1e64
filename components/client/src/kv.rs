//! The raw KV RPCs as one generic shape: set the context, call the generated client, look at
//! the region error and the error string.

use std::future::Future;
use std::time::Duration;

use proto::errorpb;
use proto::kvrpcpb::{self, Context};
use proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

use crate::net;

/// A raw KV request to one region.
pub(crate) trait KvRequest: Send + 'static {
    type Response: KvResponse;
    /// The gRPC method, for errors and logs.
    const METHOD: &'static str;

    fn set_context(&mut self, context: Context);

    /// Sends the request with the generated client.
    fn call(
        self,
        client: TikvClient<Channel>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Response, tonic::Status>> + Send;
}

/// The parts of a raw KV response the retry logic looks at.
pub(crate) trait KvResponse: Send + 'static {
    fn take_region_error(&mut self) -> Option<errorpb::Error>;
    /// The response's error string; empty when it has none (or no such field).
    fn error(&self) -> &str;
}

macro_rules! kv_request {
    ($req:ident => $resp:ident, $method:literal, $call:ident) => {
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

            fn call(
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

kv_request!(RawGetRequest => RawGetResponse, "RawGet", raw_get);
kv_request!(RawBatchGetRequest => RawBatchGetResponse, "RawBatchGet", raw_batch_get);
kv_request!(RawPutRequest => RawPutResponse, "RawPut", raw_put);
kv_request!(RawBatchPutRequest => RawBatchPutResponse, "RawBatchPut", raw_batch_put);
kv_request!(RawDeleteRequest => RawDeleteResponse, "RawDelete", raw_delete);
kv_request!(RawBatchDeleteRequest => RawBatchDeleteResponse, "RawBatchDelete", raw_batch_delete);
kv_request!(RawScanRequest => RawScanResponse, "RawScan", raw_scan);
kv_request!(RawDeleteRangeRequest => RawDeleteRangeResponse, "RawDeleteRange", raw_delete_range);
kv_request!(RawCasRequest => RawCasResponse, "RawCompareAndSwap", raw_compare_and_swap);
kv_request!(RawGetKeyTtlRequest => RawGetKeyTtlResponse, "RawGetKeyTTL", raw_get_key_ttl);

kv_request!(GetRequest => GetResponse, "KvGet", kv_get);
kv_request!(BatchGetRequest => BatchGetResponse, "KvBatchGet", kv_batch_get);
kv_request!(ScanRequest => ScanResponse, "KvScan", kv_scan);
kv_request!(PrewriteRequest => PrewriteResponse, "KvPrewrite", kv_prewrite);
kv_request!(CommitRequest => CommitResponse, "KvCommit", kv_commit);
kv_request!(BatchRollbackRequest => BatchRollbackResponse, "KvBatchRollback", kv_batch_rollback);
kv_request!(CheckTxnStatusRequest => CheckTxnStatusResponse, "KvCheckTxnStatus", kv_check_txn_status);
kv_request!(
    CheckSecondaryLocksRequest => CheckSecondaryLocksResponse,
    "KvCheckSecondaryLocks",
    kv_check_secondary_locks
);
kv_request!(ResolveLockRequest => ResolveLockResponse, "KvResolveLock", kv_resolve_lock);
kv_request!(
    PessimisticLockRequest => PessimisticLockResponse,
    "KvPessimisticLock",
    kv_pessimistic_lock
);
kv_request!(
    PessimisticRollbackRequest => PessimisticRollbackResponse,
    "KVPessimisticRollback",
    kv_pessimistic_rollback
);
kv_request!(ScanLockRequest => ScanLockResponse, "KvScanLock", kv_scan_lock);
kv_request!(TxnHeartBeatRequest => TxnHeartBeatResponse, "KvTxnHeartBeat", kv_txn_heart_beat);

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
