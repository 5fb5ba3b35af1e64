//! The GC worker: removes MVCC versions no reader at or above the cluster's GC safe point can
//! see, in the regions this store leads. Each batch is one raft write, so every replica
//! drops the same versions; the rate is bounded by `max-versions-per-sec`.

use std::collections::HashMap;
use std::time::Duration;

use engine::KvEngine;
use proto::kvrpcpb::Context;
use serde::{Deserialize, Serialize};

use crate::metrics::METRICS;
use crate::{Error, Result, Storage};

/// The `[gc]` section of a store's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GcConfig {
    /// Whether the worker runs. Default true.
    pub enabled: bool,
    /// How often the worker asks for the safe point and collects below it. Default 60 s;
    /// 100 ms..=1 day.
    pub interval_ms: u64,
    /// Versions looked at per raft write. Default 1024; 16..=65536.
    pub batch_versions: usize,
    /// Versions looked at per second, at most, across the store. Default 50,000;
    /// 100..=10,000,000.
    pub max_versions_per_sec: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            interval_ms: 60_000,
            batch_versions: 1024,
            max_versions_per_sec: 50_000,
        }
    }
}

impl GcConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        let check = |field: &str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                return Err(format!(
                    "config field `gc.{field}`: {v} is outside {min}..={max}"
                ));
            }
            Ok(())
        };
        check("interval-ms", self.interval_ms, 100, 86_400_000)?;
        check("batch-versions", self.batch_versions as u64, 16, 65_536)?;
        check(
            "max-versions-per-sec",
            self.max_versions_per_sec,
            100,
            10_000_000,
        )
    }
}

/// Runs the worker until the runtime shuts down.
pub fn spawn<EK: KvEngine>(
    storage: Storage<EK>,
    cfg: GcConfig,
    logger: slog::Logger,
) -> Option<tokio::task::JoinHandle<()>> {
    if !cfg.enabled {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut done: HashMap<u64, u64> = HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_millis(cfg.interval_ms)).await;
            let api = storage.api().clone();
            let safe_point = match crate::off_runtime(move || api.gc_safe_point()).await {
                Ok(sp) => sp,
                Err(e) => {
                    slog::warn!(logger, "cannot read the GC safe point"; "error" => %e);
                    continue;
                }
            };
            if safe_point == 0 {
                continue;
            }
            METRICS.gc_safe_point.set(safe_point as i64);
            for ctx in storage.api().region_contexts() {
                if done.get(&ctx.region_id) == Some(&safe_point) {
                    continue;
                }
                match gc_region(&storage, &ctx, safe_point, &cfg).await {
                    Ok(deleted) => {
                        METRICS.gc_region_passes.with_label_values(&["done"]).inc();
                        done.insert(ctx.region_id, safe_point);
                        if deleted > 0 {
                            slog::info!(logger, "GC pass done"; "region_id" => ctx.region_id,
                                "safe_point" => safe_point, "versions_deleted" => deleted);
                        }
                    }
                    Err(Error::Raft(e)) if e.to_region_error().is_some() => {
                        // Not the leader, or the region changed: its leader (or the next
                        // pass, with the new epoch) collects it.
                        METRICS
                            .gc_region_passes
                            .with_label_values(&["not_leader"])
                            .inc();
                    }
                    Err(e) => {
                        METRICS
                            .gc_region_passes
                            .with_label_values(&["failed"])
                            .inc();
                        slog::warn!(logger, "GC pass failed"; "region_id" => ctx.region_id,
                            "error" => %e);
                    }
                }
            }
            // Regions that left this store.
            let here: std::collections::HashSet<u64> = storage
                .api()
                .region_contexts()
                .iter()
                .map(|c| c.region_id)
                .collect();
            done.retain(|id, _| here.contains(id));
        }
    }))
}

/// Collects one region below `safe_point`, a batch per raft write; the versions deleted.
pub async fn gc_region<EK: KvEngine>(
    storage: &Storage<EK>,
    ctx: &Context,
    safe_point: u64,
    cfg: &GcConfig,
) -> Result<usize> {
    let mut start: Vec<u8> = Vec::new();
    let mut deleted = 0;
    loop {
        let (progress, written) = storage
            .gc_batch(ctx, &start, safe_point, cfg.batch_versions)
            .await?;
        deleted += written;
        METRICS
            .gc_versions_scanned
            .inc_by(progress.versions_scanned as u64);
        METRICS.gc_versions_deleted.inc_by(written as u64);
        // The rate bound: this batch's share of a second.
        let pause = Duration::from_secs_f64(
            progress.versions_scanned as f64 / cfg.max_versions_per_sec as f64,
        );
        tokio::time::sleep(pause).await;
        match progress.next {
            Some(next) => start = next,
            None => return Ok(deleted),
        }
    }
}
