//! `regionstore store`: one store process. Opens the engines, joins the scheduler's cluster
//! (bootstrapping it if this is the first store), starts the raftstore and serves gRPC and
//! the status port until SIGINT/SIGTERM or a fatal store error.

use std::sync::Arc;
use std::time::Duration;

use engine::RocksEngine;
use futures::future::BoxFuture;
use proto::raft_serverpb::raft_transport_server::RaftTransportServer;
use proto::tikvpb::tikv_server::TikvServer;
use raft_log::{RaftLogConfig, RaftLogEngine};
use raftstore::StoreSystem;
use scheduler_client::GrpcSchedulerClient;
use server::kv::KvService;
use server::service::RaftService;
use server::transport::{GrpcTransport, StoreResolver};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;

use crate::config::StoreConfig;

/// How long a starting store waits for its scheduler to answer.
const SCHEDULER_WAIT: Duration = Duration::from_secs(60);

/// Resolves store addresses through the scheduler.
struct SchedulerResolver(Arc<GrpcSchedulerClient>);

impl StoreResolver for SchedulerResolver {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, server::Result<String>> {
        let client = self.0.clone();
        Box::pin(async move {
            client
                .get_store(store_id)
                .await
                .map(|store| store.address)
                .map_err(|e| server::Error::Resolve {
                    store_id,
                    detail: e.to_string(),
                })
        })
    }
}

/// Completes once `stop` turns true.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn signalled() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Under a TTL version, compaction drops raw values that have expired. Reads already skip
/// them (by the reader's clock), so no answer depends on when, or on which replica, a value
/// is dropped. Under V2 only raw keys ('r', the first byte of their encoding too) carry an
/// expiry; a value that does not decode is kept, for a read to report. Nothing is dropped
/// until `checked` is set: the directory and the cluster agree on `version`.
fn expired_value_filter(
    version: api_version::ApiVersion,
    clock: util::ClockRef,
    checked: Arc<std::sync::atomic::AtomicBool>,
) -> Option<engine::DropFilter> {
    use api_version::{keyspace::KeyMode, ttl, ApiVersion};
    if !version.has_ttl() {
        return None;
    }
    Some(Arc::new(move |key: &[u8], value: &[u8]| {
        if !checked.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        if version == ApiVersion::V2 && key.first() != Some(&KeyMode::Raw.byte()) {
            return false;
        }
        ttl::decode(value).is_ok_and(|v| v.is_expired(clock.unix_secs()))
    }))
}

pub fn run(cfg: StoreConfig) -> Result<(), String> {
    cfg.validate()?;
    let (logger, _log_guard) = crate::logging::init(&cfg.log, "store")?;
    crate::logging::log_panics(&logger);
    let result = run_with_logger(cfg, &logger);
    if let Err(e) = &result {
        slog::crit!(logger, "store failed"; "error" => e);
    }
    result
}

fn run_with_logger(cfg: StoreConfig, logger: &slog::Logger) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.server.grpc_threads)
        .thread_name("grpc")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", cfg.data_dir.display()))?;
    // Off until the data directory and the cluster are known to run this version: a
    // compaction before that must not read another version's values as expiring ones.
    let ttl_checked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // What a restart spends its time on, logged once serving.
    let started = std::time::Instant::now();
    let kv = RocksEngine::open_with_filter(
        &cfg.data_dir.join("kv"),
        &cfg.rocksdb,
        expired_value_filter(
            cfg.api_version,
            util::SystemClock::shared(),
            ttl_checked.clone(),
        ),
    )
    .map_err(|e| format!("cannot open the KV engine: {e}"))?;
    let kv_open = started.elapsed();
    let raft = RaftLogEngine::open(&RaftLogConfig {
        dir: cfg.data_dir.join("raft"),
        ..cfg.raft_log.clone()
    })
    .map_err(|e| format!("cannot open the raft log: {e}"))?;
    let raft_open = started.elapsed() - kv_open;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&cfg.server.addr))
        .map_err(|e| format!("cannot listen on {} (server.addr): {e}", cfg.server.addr))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    let advertised = if cfg.server.advertise_addr.is_empty() {
        local.to_string()
    } else {
        cfg.server.advertise_addr.clone()
    };

    // A store started before its scheduler (a machine reboot, a service manager without
    // ordering) waits a while for it rather than exiting at once.
    let connect_deadline = std::time::Instant::now() + SCHEDULER_WAIT;
    let scheduler = loop {
        match GrpcSchedulerClient::connect(
            cfg.scheduler_endpoints.clone(),
            runtime.handle().clone(),
            logger,
        ) {
            Ok(client) => break Arc::new(client),
            Err(e) if std::time::Instant::now() < connect_deadline => {
                slog::warn!(logger, "scheduler not reachable yet, retrying"; "error" => %e);
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(format!(
                    "cannot reach the scheduler within {} s: {e}",
                    SCHEDULER_WAIT.as_secs()
                ))
            }
        }
    };
    let cluster_id = scheduler.cluster_id();
    let store_id = scheduler_client::bootstrap_store(
        scheduler.as_ref(),
        &kv,
        cluster_id,
        None,
        &advertised,
        cfg.api_version,
    )
    .map_err(|e| format!("cannot join cluster {cluster_id}: {e}"))?;
    ttl_checked.store(true, std::sync::atomic::Ordering::Release);
    slog::info!(logger, "joined the cluster";
        "store_id" => store_id, "cluster_id" => cluster_id, "address" => &advertised,
        "api_version" => %cfg.api_version);

    let transport = GrpcTransport::new(
        store_id,
        cfg.server.clone(),
        Arc::new(SchedulerResolver(scheduler.clone())),
        runtime.handle().clone(),
        logger,
    );
    let mut system = StoreSystem::builder(store_id, kv, raft, &cfg.data_dir.join("snap"))
        .config(cfg.raftstore.clone())
        .logger(logger)
        .start(transport, scheduler.clone())
        .map_err(|e| format!("cannot start the store: {e}"))?;

    let api = system.api();
    let max_msg = cfg.server.grpc_max_message_size;
    // gzip-compressed requests are accepted, and answers are compressed for a client that
    // asks (TiKV's own CI runs its clients with gzip).
    let kv = KvService::new(api.clone(), cfg.server.clone(), cfg.api_version);
    let gc_worker = {
        let _entered = runtime.enter();
        storage::gc::spawn(
            kv.storage().clone(),
            cfg.gc.clone(),
            logger.new(slog::o!("component" => "gc")),
        )
    };
    let kv_service = TikvServer::new(kv)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let raft_service = RaftTransportServer::new(RaftService::new(
        store_id,
        system.router().clone(),
        system.snap_manager().clone(),
        logger,
    ))
    .max_decoding_message_size(max_msg)
    .max_encoding_message_size(max_msg);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Small raft messages and KV answers must not wait for Nagle.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|c| {
            let _ = c.set_nodelay(true);
        })
    });
    let grpc = runtime.spawn(
        tonic::transport::Server::builder()
            // A peer that vanished mid-stream (power loss) is noticed, and its streams end.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(kv_service)
            .add_service(raft_service)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
    );
    let status_addr = if cfg.server.status_addr.is_empty() {
        None
    } else {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&cfg.server.status_addr))
            .map_err(|e| {
                format!(
                    "cannot listen on {} (server.status-addr): {e}",
                    cfg.server.status_addr
                )
            })?;
        let addr = listener.local_addr().ok();
        let status_api = api.clone();
        let address = advertised.clone();
        let status: server::status::StatusFn = Arc::new(move || {
            let (regions, leaders) = status_api.region_status();
            serde_json::json!({
                "store_id": status_api.store_id(),
                "cluster_id": cluster_id,
                "address": address,
                "regions": regions.len(),
                "region_ids": regions,
                "leaders": leaders,
                "stopped": status_api.stopped_reason(),
                "version": env!("CARGO_PKG_VERSION"),
            })
        });
        runtime.spawn(server::status::serve(
            listener,
            status,
            stopped(stop_rx.clone()),
        ));
        addr
    };
    slog::info!(logger, "store serving";
        "grpc" => %local, "status" => ?status_addr, "data_dir" => %cfg.data_dir.display(),
        "start_ms" => started.elapsed().as_millis(), "kv_open_ms" => kv_open.as_millis(),
        "raft_log_open_ms" => raft_open.as_millis());
    // The line the playground and tests wait for.
    println!("store {store_id} ready on {advertised}");

    let reason = runtime.block_on(async {
        let mut check = tokio::time::interval(Duration::from_millis(500));
        tokio::select! {
            signal = signalled() => signal.to_string(),
            reason = async {
                loop {
                    check.tick().await;
                    if let Some(reason) = api.stopped_reason() {
                        return format!("fatal store error: {reason}");
                    }
                    // A store that cannot be reached must not look alive.
                    if grpc.is_finished() {
                        return "fatal: the gRPC server stopped".to_string();
                    }
                }
            } => reason,
        }
    });
    slog::info!(logger, "shutting down"; "reason" => &reason);
    let _ = stop_tx.send(true);
    if let Some(gc) = gc_worker {
        gc.abort();
    }
    // Other stores' raft streams never end by themselves: a short grace for requests in
    // flight, then the server is dropped.
    let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(1), grpc).await });
    system.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(1));
    slog::info!(logger, "store process exiting"; "store_id" => store_id);
    if reason.starts_with("fatal") {
        return Err(reason);
    }
    Ok(())
}
