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
        // Buffered: the decorator writes each piece of a line separately and flushes at its
        // end, which unbuffered was a dozen write(2)s a line (half of a core while 100,000
        // regions logged their start).
        Ok(build(
            slog_term::PlainDecorator::new(std::io::BufWriter::new(file)),
            level,
            process,
        ))
    }
}

/// Sends every panic to the log too, with its place: a panicked poller thread otherwise
/// leaves its store silent, with the message only on stderr, which a service manager may not
/// keep. Best effort (a full or closed log queue drops the line): the default hook still
/// prints it, with the thread's name.
pub fn log_panics(logger: &slog::Logger) {
    let logger = logger.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(not a string)".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // No thread name: `thread::current` itself panics in a thread-local's destructor,
        // and a panic in the hook aborts before the default hook prints anything.
        slog::crit!(logger, "thread panicked"; "message" => message, "location" => location);
        default_hook(info);
    }));
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
