//! raft-engine logs through the `log` crate; regionstore logs with slog. This forwards one to
//! the other so raft-engine's messages land in the store's log with the store's context.

use std::sync::OnceLock;

static BRIDGE: OnceLock<SlogBridge> = OnceLock::new();

struct SlogBridge(slog::Logger);

impl log::Log for SlogBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let target = record.target();
        let msg = record.args();
        match record.level() {
            log::Level::Error => slog::error!(self.0, "{}", msg; "target" => target),
            log::Level::Warn => slog::warn!(self.0, "{}", msg; "target" => target),
            log::Level::Info => slog::info!(self.0, "{}", msg; "target" => target),
            log::Level::Debug => slog::debug!(self.0, "{}", msg; "target" => target),
            log::Level::Trace => slog::trace!(self.0, "{}", msg; "target" => target),
        }
    }

    fn flush(&self) {}
}

/// Sends `log` records (raft-engine's) to `logger`. Only the first call in a process takes
/// effect, as `log` allows one global logger; returns whether this call installed it.
pub fn bridge_log_to_slog(logger: slog::Logger) -> bool {
    let mut installed = false;
    let bridge = BRIDGE.get_or_init(|| {
        installed = true;
        SlogBridge(logger)
    });
    if installed && log::set_logger(bridge).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
        return true;
    }
    false
}
