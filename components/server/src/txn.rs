//! The transactional methods of TiKV's `tikvpb.Tikv`: each turns its request into a
//! [`storage::Storage`] call (the same one an embedding database makes) and the result into
//! kvproto's response shape. Region errors go in `region_error`; per-key outcomes (locked,
//! write conflict, ...) in `error`/`errors` as a `KeyError`; a request that can never work
//! is a `KeyError` with `abort`, which a TiKV client reports at once rather than retrying.

use std::collections::HashMap;
use std::time::Instant;

use engine::KvEngine;
use proto::errorpb;
use proto::kvrpcpb::*;
use tonic::Status;
use txn::commands::*;

use crate::kv::KvService;
use crate::metrics::METRICS;

/// How one transactional request failed, in the terms of its response.
pub(crate) enum TxnFailure {
    Region(Box<errorpb::Error>),
    Key(Box<KeyError>),
    /// The store cannot answer now: the client tries again, possibly elsewhere.
    Status(Status),
}

impl TxnFailure {
    fn kind(&self) -> &'static str {
        match self {
            TxnFailure::Region(e) if e.not_leader.is_some() => "not_leader",
            TxnFailure::Region(e) if e.epoch_not_match.is_some() => "epoch_not_match",
            TxnFailure::Region(_) => "region_other",
            TxnFailure::Key(e) if e.locked.is_some() => "locked",
            TxnFailure::Key(e) if e.conflict.is_some() => "write_conflict",
            TxnFailure::Key(e) if !e.abort.is_empty() => "abort",
            TxnFailure::Key(_) => "key_other",
            TxnFailure::Status(_) => "unavailable",
        }
    }
}

fn abort(msg: String) -> KeyError {
    KeyError {
        abort: msg,
        ..Default::default()
    }
}

impl From<storage::Error> for TxnFailure {
    fn from(e: storage::Error) -> Self {
        match e {
            storage::Error::Raft(e) => {
                if let Some(region_error) = e.to_region_error() {
                    return TxnFailure::Region(Box::new(region_error));
                }
                match e {
                    raftstore::Error::StoreStopped { .. }
                    | raftstore::Error::ReadTimeout { .. }
                    | raftstore::Error::Undetermined { .. } => {
                        TxnFailure::Status(Status::unavailable(e.to_string()))
                    }
                    other => TxnFailure::Key(Box::new(abort(other.to_string()))),
                }
            }
            storage::Error::Txn(e) => TxnFailure::Key(Box::new(e.to_key_error())),
            storage::Error::Invalid(msg) => TxnFailure::Key(Box::new(abort(msg))),
        }
    }
}

type TxnResult<T> = std::result::Result<T, TxnFailure>;

/// A transactional response: where its region error and key error go.
pub(crate) trait TxnResponse: Default {
    fn set_region_error(&mut self, e: errorpb::Error);
    fn set_key_error(&mut self, e: KeyError);
}

macro_rules! txn_response {
    (single: $($t:ty),*) => {$(
        impl TxnResponse for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, e: KeyError) { self.error = Some(e); }
        }
    )*};
    (many: $($t:ty),*) => {$(
        impl TxnResponse for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, e: KeyError) { self.errors = vec![e]; }
        }
    )*};
    (string: $($t:ty),*) => {$(
        impl TxnResponse for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, e: KeyError) {
                self.error = if e.abort.is_empty() { format!("{e:?}") } else { e.abort };
            }
        }
    )*};
}

txn_response!(single: GetResponse, ScanResponse, BatchGetResponse, CommitResponse,
    CleanupResponse, BatchRollbackResponse, CheckTxnStatusResponse,
    CheckSecondaryLocksResponse, TxnHeartBeatResponse, ScanLockResponse, ResolveLockResponse);
txn_response!(many: PrewriteResponse, PessimisticLockResponse, PessimisticRollbackResponse);
txn_response!(string: DeleteRangeResponse, UnsafeDestroyRangeResponse);

fn ctx(c: &Option<Context>) -> TxnResult<Context> {
    c.clone()
        .ok_or_else(|| TxnFailure::Key(Box::new(abort("request without a context".into()))))
}

/// Scan and batch-get items as kvproto pairs: a locked key carries its `KeyError`.
fn pairs(items: Vec<read::ScanItem>) -> Vec<KvPair> {
    items
        .into_iter()
        .map(|(key, item)| match item {
            Ok(value) => KvPair {
                error: None,
                key,
                value,
            },
            Err(e) => KvPair {
                error: Some(e.to_key_error()),
                key,
                value: Vec::new(),
            },
        })
        .collect()
}

fn pessimistic_actions(req: &PrewriteRequest) -> TxnResult<Vec<PessimisticAction>> {
    req.pessimistic_actions
        .iter()
        .map(
            |a| match prewrite_request::PessimisticAction::try_from(*a) {
                Ok(prewrite_request::PessimisticAction::SkipPessimisticCheck) => {
                    Ok(PessimisticAction::SkipPessimisticCheck)
                }
                Ok(prewrite_request::PessimisticAction::DoPessimisticCheck) => {
                    Ok(PessimisticAction::DoPessimisticCheck)
                }
                Ok(prewrite_request::PessimisticAction::DoConstraintCheck) => {
                    Ok(PessimisticAction::DoConstraintCheck)
                }
                Err(_) => Err(TxnFailure::Key(Box::new(abort(format!(
                    "unknown pessimistic action {a}"
                ))))),
            },
        )
        .collect()
}

impl<EK: KvEngine> KvService<EK> {
    /// Every transactional handler's frame: runs `work`, records its metrics under `method`,
    /// and fills in the response (`ok` on success).
    pub(crate) async fn txn_handle<T, R: TxnResponse>(
        &self,
        method: &'static str,
        work: impl std::future::Future<Output = TxnResult<T>>,
        ok: impl FnOnce(&mut R, T),
    ) -> Result<R, Status> {
        let start = Instant::now();
        let result = work.await;
        METRICS.kv_requests.with_label_values(&[method]).inc();
        METRICS
            .kv_duration
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        let mut resp = R::default();
        match result {
            Ok(v) => ok(&mut resp, v),
            Err(e) => {
                METRICS
                    .kv_errors
                    .with_label_values(&[method, e.kind()])
                    .inc();
                match e {
                    TxnFailure::Region(e) => resp.set_region_error(*e),
                    TxnFailure::Key(e) => resp.set_key_error(*e),
                    TxnFailure::Status(s) => return Err(s),
                }
            }
        }
        Ok(resp)
    }

    pub(crate) async fn kv_get_impl(&self, req: GetRequest) -> Result<GetResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            Ok(self.storage().get(&c, &req.key, req.version).await?)
        };
        self.txn_handle("kv_get", work, |resp: &mut GetResponse, v| match v {
            Some(v) => resp.value = v,
            None => resp.not_found = true,
        })
        .await
    }

    pub(crate) async fn kv_batch_get_impl(
        &self,
        req: BatchGetRequest,
    ) -> Result<BatchGetResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            Ok(self.storage().batch_get(&c, &req.keys, req.version).await?)
        };
        self.txn_handle(
            "kv_batch_get",
            work,
            |resp: &mut BatchGetResponse, items| resp.pairs = pairs(items),
        )
        .await
    }

    pub(crate) async fn kv_scan_impl(&self, req: ScanRequest) -> Result<ScanResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            Ok(self
                .storage()
                .scan(
                    &c,
                    &req.start_key,
                    &req.end_key,
                    req.limit as usize,
                    req.version,
                    req.key_only,
                    req.reverse,
                )
                .await?)
        };
        self.txn_handle("kv_scan", work, |resp: &mut ScanResponse, items| {
            resp.pairs = pairs(items)
        })
        .await
    }

    pub(crate) async fn kv_prewrite_impl(
        &self,
        req: PrewriteRequest,
    ) -> Result<PrewriteResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = Prewrite {
                pessimistic_actions: pessimistic_actions(&req)?,
                mutations: req.mutations,
                primary: req.primary_lock,
                start_ts: req.start_version,
                lock_ttl: req.lock_ttl,
                txn_size: req.txn_size,
                for_update_ts: req.for_update_ts,
                min_commit_ts: req.min_commit_ts,
                max_commit_ts: req.max_commit_ts,
                secondaries: req.use_async_commit.then_some(req.secondaries),
                try_one_pc: req.try_one_pc,
                skip_constraint_check: req.skip_constraint_check,
            };
            Ok(self.storage().prewrite(&c, cmd).await?)
        };
        self.txn_handle("kv_prewrite", work, |resp: &mut PrewriteResponse, r| {
            resp.errors = r.locks.iter().map(txn::Error::to_key_error).collect();
            resp.min_commit_ts = r.min_commit_ts;
            resp.one_pc_commit_ts = r.one_pc_commit_ts;
        })
        .await
    }

    pub(crate) async fn kv_commit_impl(
        &self,
        req: CommitRequest,
    ) -> Result<CommitResponse, Status> {
        let commit_ts = req.commit_version;
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = Commit {
                keys: req.keys,
                start_ts: req.start_version,
                commit_ts,
            };
            Ok(self.storage().commit(&c, cmd).await?)
        };
        self.txn_handle("kv_commit", work, |resp: &mut CommitResponse, ()| {
            resp.commit_version = commit_ts
        })
        .await
    }

    pub(crate) async fn kv_cleanup_impl(
        &self,
        req: CleanupRequest,
    ) -> Result<CleanupResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = Cleanup {
                key: req.key,
                start_ts: req.start_version,
                current_ts: req.current_ts,
            };
            match self.storage().cleanup(&c, cmd).await {
                // TiKV's answer for a committed key: its commit ts, and the error.
                Err(storage::Error::Txn(e @ txn::Error::Committed { .. })) => Ok(Err(e)),
                other => Ok(Ok(other?)),
            }
        };
        self.txn_handle("kv_cleanup", work, |resp: &mut CleanupResponse, r| {
            if let Err(e) = r {
                if let txn::Error::Committed { commit_ts, .. } = &e {
                    resp.commit_version = *commit_ts;
                }
                resp.error = Some(e.to_key_error());
            }
        })
        .await
    }

    pub(crate) async fn kv_batch_rollback_impl(
        &self,
        req: BatchRollbackRequest,
    ) -> Result<BatchRollbackResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = BatchRollback {
                keys: req.keys,
                start_ts: req.start_version,
            };
            Ok(self.storage().batch_rollback(&c, cmd).await?)
        };
        self.txn_handle(
            "kv_batch_rollback",
            work,
            |_: &mut BatchRollbackResponse, ()| {},
        )
        .await
    }

    pub(crate) async fn kv_check_txn_status_impl(
        &self,
        req: CheckTxnStatusRequest,
    ) -> Result<CheckTxnStatusResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = CheckTxnStatus {
                primary: req.primary_key,
                lock_ts: req.lock_ts,
                caller_start_ts: req.caller_start_ts,
                current_ts: req.current_ts,
                rollback_if_not_exist: req.rollback_if_not_exist,
                force_sync_commit: req.force_sync_commit,
                resolving_pessimistic_lock: req.resolving_pessimistic_lock,
            };
            Ok(self.storage().check_txn_status(&c, cmd).await?)
        };
        self.txn_handle(
            "kv_check_txn_status",
            work,
            |resp: &mut CheckTxnStatusResponse, status| match status {
                TxnStatus::RolledBack { action } => resp.action = action as i32,
                TxnStatus::Committed { commit_ts } => resp.commit_version = commit_ts,
                TxnStatus::Locked { ttl, lock, action } => {
                    resp.lock_ttl = ttl;
                    resp.lock_info = Some(*lock);
                    resp.action = action as i32;
                }
            },
        )
        .await
    }

    pub(crate) async fn kv_check_secondary_locks_impl(
        &self,
        req: CheckSecondaryLocksRequest,
    ) -> Result<CheckSecondaryLocksResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = CheckSecondaryLocks {
                keys: req.keys,
                start_ts: req.start_version,
            };
            Ok(self.storage().check_secondary_locks(&c, cmd).await?)
        };
        self.txn_handle(
            "kv_check_secondary_locks",
            work,
            |resp: &mut CheckSecondaryLocksResponse, status| match status {
                SecondaryLocksStatus::Locked(locks) => resp.locks = locks,
                SecondaryLocksStatus::Committed(ts) => resp.commit_ts = ts,
                SecondaryLocksStatus::RolledBack => {}
            },
        )
        .await
    }

    pub(crate) async fn kv_txn_heart_beat_impl(
        &self,
        req: TxnHeartBeatRequest,
    ) -> Result<TxnHeartBeatResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = TxnHeartBeat {
                primary: req.primary_lock,
                start_ts: req.start_version,
                advise_lock_ttl: req.advise_lock_ttl,
            };
            Ok(self.storage().txn_heart_beat(&c, cmd).await?)
        };
        self.txn_handle(
            "kv_txn_heart_beat",
            work,
            |resp: &mut TxnHeartBeatResponse, ttl| resp.lock_ttl = ttl,
        )
        .await
    }

    pub(crate) async fn kv_scan_lock_impl(
        &self,
        req: ScanLockRequest,
    ) -> Result<ScanLockResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            Ok(self
                .storage()
                .scan_lock(
                    &c,
                    &req.start_key,
                    &req.end_key,
                    req.max_version,
                    req.limit as usize,
                )
                .await?)
        };
        self.txn_handle(
            "kv_scan_lock",
            work,
            |resp: &mut ScanLockResponse, locks| resp.locks = locks,
        )
        .await
    }

    pub(crate) async fn kv_resolve_lock_impl(
        &self,
        req: ResolveLockRequest,
    ) -> Result<ResolveLockResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            let txn_status: HashMap<u64, u64> = if req.txn_infos.is_empty() {
                HashMap::from([(req.start_version, req.commit_version)])
            } else {
                req.txn_infos.iter().map(|t| (t.txn, t.status)).collect()
            };
            Ok(self
                .storage()
                .resolve_lock(&c, txn_status, req.keys)
                .await?)
        };
        self.txn_handle(
            "kv_resolve_lock",
            work,
            |_: &mut ResolveLockResponse, ()| {},
        )
        .await
    }

    pub(crate) async fn kv_pessimistic_lock_impl(
        &self,
        req: PessimisticLockRequest,
    ) -> Result<PessimisticLockResponse, Status> {
        let return_values = req.return_values;
        let check_existence = req.check_existence;
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = PessimisticLock {
                mutations: req.mutations,
                primary: req.primary_lock,
                start_ts: req.start_version,
                lock_ttl: req.lock_ttl,
                for_update_ts: req.for_update_ts,
                min_commit_ts: req.min_commit_ts,
                return_values,
                check_existence,
                lock_only_if_exists: req.lock_only_if_exists,
            };
            Ok(self
                .storage()
                .pessimistic_lock(&c, cmd, req.wait_timeout)
                .await?)
        };
        self.txn_handle(
            "kv_pessimistic_lock",
            work,
            |resp: &mut PessimisticLockResponse, r| {
                for v in r.values {
                    resp.not_founds.push(v.is_none());
                    if return_values {
                        resp.values.push(v.unwrap_or_default());
                    }
                }
            },
        )
        .await
    }

    pub(crate) async fn kv_pessimistic_rollback_impl(
        &self,
        req: PessimisticRollbackRequest,
    ) -> Result<PessimisticRollbackResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            let cmd = PessimisticRollback {
                keys: req.keys,
                start_ts: req.start_version,
                for_update_ts: req.for_update_ts,
            };
            Ok(self.storage().pessimistic_rollback(&c, cmd).await?)
        };
        self.txn_handle(
            "kv_pessimistic_rollback",
            work,
            |_: &mut PessimisticRollbackResponse, ()| {},
        )
        .await
    }

    pub(crate) async fn kv_delete_range_impl(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Status> {
        let work = async {
            let c = ctx(&req.context)?;
            if req.notify_only {
                return Ok(());
            }
            Ok(self
                .storage()
                .delete_range(&c, &req.start_key, &req.end_key)
                .await?)
        };
        self.txn_handle(
            "kv_delete_range",
            work,
            |_: &mut DeleteRangeResponse, ()| {},
        )
        .await
    }

    pub(crate) async fn unsafe_destroy_range_impl(
        &self,
        req: UnsafeDestroyRangeRequest,
    ) -> Result<UnsafeDestroyRangeResponse, Status> {
        let work = async {
            Ok(self
                .storage()
                .unsafe_destroy_range(&req.start_key, &req.end_key)
                .await?)
        };
        self.txn_handle(
            "unsafe_destroy_range",
            work,
            |_: &mut UnsafeDestroyRangeResponse, ()| {},
        )
        .await
    }
}
