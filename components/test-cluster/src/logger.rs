//! Test logs: silent unless `RS_TEST_LOG` is set (to anything), then one line per record on
//! stderr, which the test runner captures per test.

use std::fmt::Write as _;

struct StderrDrain;

struct Line(String);

impl slog::Serializer for Line {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for StderrDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut line = Line(format!(
            "{:?} {} {}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
            record.level().as_short_str(),
            record.msg()
        ));
        let _ = slog::KV::serialize(&record.kv(), record, &mut line);
        let _ = slog::KV::serialize(values, record, &mut line);
        eprintln!("{}", line.0);
        Ok(())
    }
}

pub fn logger() -> slog::Logger {
    if std::env::var_os("RS_TEST_LOG").is_some() {
        slog::Logger::root(StderrDrain, slog::o!())
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    }
}
