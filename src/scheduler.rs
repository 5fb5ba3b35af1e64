//! `regionstore scheduler`: the placement scheduler process. Serves pdpb.PD (what TiKV
//! clients use) and the scheduler's own RPCs (heartbeats, operators) over its metadata in a
//! RocksDB under `data-dir/meta`.

use std::sync::Arc;
use std::time::Duration;

use engine::RocksEngine;
use scheduler::Scheduler;
use tokio::sync::watch;

use crate::config::SchedulerConfig;
use crate::store::{signalled, stopped};

pub fn run(cfg: SchedulerConfig) -> Result<(), String> {
    cfg.validate()?;
    let (logger, _log_guard) = crate::logging::init(&cfg.log, "scheduler")?;
    crate::logging::log_panics(&logger);
    let result = run_with_logger(cfg, &logger);
    if let Err(e) = &result {
        slog::crit!(logger, "scheduler failed"; "error" => e);
    }
    result
}

fn run_with_logger(cfg: SchedulerConfig, logger: &slog::Logger) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("scheduler-grpc")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", cfg.data_dir.display()))?;
    let meta = RocksEngine::open(&cfg.data_dir.join("meta"), &cfg.rocksdb)
        .map_err(|e| format!("cannot open the metadata store: {e}"))?;
    let scheduler = Arc::new(
        Scheduler::open(
            Arc::new(meta),
            &cfg.schedule.to_scheduler(),
            util::SystemClock::shared(),
            logger,
        )
        .map_err(|e| format!("cannot open the scheduler: {e}"))?,
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&cfg.addr))
        .map_err(|e| format!("cannot listen on {} (addr): {e}", cfg.addr))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    let url = if cfg.advertise_url.is_empty() {
        format!("http://{local}")
    } else {
        cfg.advertise_url.clone()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc = runtime.spawn(scheduler::service::serve(
        scheduler.clone(),
        listener,
        url.clone(),
        cfg.grpc_max_message_size,
        stopped(stop_rx.clone()),
    ));
    if !cfg.status_addr.is_empty() {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&cfg.status_addr))
            .map_err(|e| format!("cannot listen on {} (status-addr): {e}", cfg.status_addr))?;
        let s = scheduler.clone();
        let status: server::status::StatusFn = Arc::new(move || {
            let stores: Vec<_> = s
                .cluster
                .store_infos()
                .into_iter()
                .map(|info| format!("{info:?}"))
                .collect();
            serde_json::json!({
                "cluster_id": s.cluster_id(),
                "bootstrapped": s.cluster.is_bootstrapped(),
                "regions": s.cluster.regions().len(),
                "stores": stores,
                "operators": s.operators().iter().map(|o| format!("{o:?}")).collect::<Vec<_>>(),
                "version": env!("CARGO_PKG_VERSION"),
            })
        });
        runtime.spawn(server::status::serve(
            listener,
            status,
            stopped(stop_rx.clone()),
        ));
    }
    slog::info!(logger, "scheduler serving";
        "url" => &url, "cluster_id" => scheduler.cluster_id(), "data_dir" => %cfg.data_dir.display());
    println!("scheduler ready on {url}");
    let reason = runtime.block_on(signalled());
    slog::info!(logger, "shutting down"; "reason" => reason);
    let _ = stop_tx.send(true);
    let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), grpc).await });
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
