//! The process logger: slog, asynchronous, to stderr or a file, filtered by `log.level`.

use std::fs::OpenOptions;

use slog::Drain;

use crate::config::LogConfig;

/// Builds the root logger; the returned guard flushes the async drain when dropped.
pub fn init(
    cfg: &LogConfig,
    process: &'static str,
) -> Result<(slog::Logger, slog_async::AsyncGuard), String> {
    let level = cfg.level()?;
    if cfg.file.is_empty() {
        Ok(build(
            slog_term::TermDecorator::new().stderr().build(),
            level,
            process,
        ))
    } else {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.file)
            .map_err(|e| format!("config field `log.file`: cannot open {:?}: {e}", cfg.file))?;
        Ok(build(slog_term::PlainDecorator::new(file), level, process))
    }
}

fn build<D: slog_term::Decorator + Send + 'static>(
    decorator: D,
    level: slog::Level,
    process: &'static str,
) -> (slog::Logger, slog_async::AsyncGuard) {
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = drain.filter_level(level).fuse();
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(16 << 10)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .build_with_guard();
    (
        slog::Logger::root(drain.fuse(), slog::o!("process" => process)),
        guard,
    )
}
