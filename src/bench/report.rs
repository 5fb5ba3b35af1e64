//! Measuring a run (per-second samples and a whole-run latency histogram) and reporting it:
//! a summary table, a JSON result file and an SVG plot.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies in microseconds, 1 µs .. 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What the workers record; the sampler reads it once a second.
pub struct Recorder {
    ops: AtomicU64,
    errors: AtomicU64,
    interval: Mutex<Histogram<u64>>,
    total: Mutex<Histogram<u64>>,
    last_error: Mutex<Option<String>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            interval: Mutex::new(histogram()),
            total: Mutex::new(histogram()),
            last_error: Mutex::new(None),
        }
    }
}

impl Recorder {
    pub fn ok(&self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
        self.ops.fetch_add(1, Ordering::Relaxed);
        let _ = util::lock(&self.interval).record(us);
    }

    pub fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *util::lock(&self.last_error) = Some(e);
    }

    /// Forgets everything recorded so far (the warm-up).
    pub fn reset(&self) {
        self.ops.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        util::lock(&self.interval).reset();
        util::lock(&self.total).reset();
        *util::lock(&self.last_error) = None;
    }

    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        util::lock(&self.last_error).clone()
    }

    /// The latencies since the last call; they also go into the whole-run histogram.
    pub fn take_interval(&self) -> Histogram<u64> {
        let taken = std::mem::replace(&mut *util::lock(&self.interval), histogram());
        let _ = util::lock(&self.total).add(&taken);
        taken
    }

    pub fn total(&self) -> Histogram<u64> {
        util::lock(&self.total).clone()
    }
}

/// One second of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the measured part of the run began.
    pub t: f64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub errors: u64,
    pub retries: u64,
    /// Regions in the cluster (regionstore only).
    pub regions: Option<u64>,
}

impl Sample {
    pub fn new(t: f64, ops: u64, secs: f64, h: &Histogram<u64>) -> Sample {
        Sample {
            t,
            ops_per_sec: ops as f64 / secs.max(1e-9),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            errors: 0,
            retries: 0,
            regions: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub duration_secs: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub errors: u64,
    pub retries: u64,
    /// Split workload: regions at the start and the end.
    pub regions_start: Option<u64>,
    pub regions_end: Option<u64>,
    /// Split workload: ops/s of this run (regions splitting), of the same workload on a
    /// cluster whose regions never split (the baseline, run right after), and their ratio.
    pub splitting_ops_per_sec: Option<f64>,
    pub steady_ops_per_sec: Option<f64>,
    pub splitting_ratio: Option<f64>,
}

/// A whole run, as the JSON result file holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub name: String,
    pub workload: String,
    pub target: String,
    pub settings: serde_json::Value,
    pub machine: serde_json::Value,
    pub summary: Summary,
    pub samples: Vec<Sample>,
}

pub fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    serde_json::json!({
        "cpus": cpus,
        "cpu_model": model,
        "memory_gib": mem_kib / (1 << 20),
        "os": std::env::consts::OS,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

impl RunReport {
    pub fn print_summary(&self) {
        let s = &self.summary;
        println!();
        println!("{} ({} on {})", self.name, self.workload, self.target);
        println!(
            "  {:<24} {:>12}",
            "duration",
            format!("{:.1} s", s.duration_secs)
        );
        println!("  {:<24} {:>12}", "operations", s.ops);
        println!("  {:<24} {:>12.0}", "throughput (ops/s)", s.ops_per_sec);
        println!("  {:<24} {:>12}", "latency p50", ms(s.p50_us));
        println!("  {:<24} {:>12}", "latency p99", ms(s.p99_us));
        println!("  {:<24} {:>12}", "latency p999", ms(s.p999_us));
        println!("  {:<24} {:>12}", "latency max", ms(s.max_us));
        println!("  {:<24} {:>12}", "client-visible errors", s.errors);
        println!("  {:<24} {:>12}", "client retries", s.retries);
        if let (Some(a), Some(b)) = (s.regions_start, s.regions_end) {
            println!("  {:<24} {:>12}", "regions", format!("{a} -> {b}"));
        }
        if let (Some(split), Some(steady), Some(ratio)) = (
            s.splitting_ops_per_sec,
            s.steady_ops_per_sec,
            s.splitting_ratio,
        ) {
            println!("  {:<24} {:>12.0}", "ops/s while splitting", split);
            println!("  {:<24} {:>12.0}", "ops/s without splits", steady);
            println!("  {:<24} {:>12.2}", "splitting / baseline", ratio);
        }
    }

    pub fn write(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let json = dir.join(format!("{}.json", self.name));
        let text = serde_json::to_string_pretty(self).map_err(|e| format!("encode: {e}"))?;
        std::fs::write(&json, text).map_err(|e| format!("write {}: {e}", json.display()))?;
        let svg = dir.join(format!("{}.svg", self.name));
        self.plot(&svg)?;
        println!("  results: {}  plot: {}", json.display(), svg.display());
        Ok(())
    }

    fn plot(&self, path: &Path) -> Result<(), String> {
        use plotters::prelude::*;
        let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
        let with_regions = self.samples.iter().any(|s| s.regions.is_some());
        let panels = if with_regions { 3 } else { 2 };
        let root = SVGBackend::new(path, (900, 300 * panels as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let areas = root.split_evenly((panels, 1));
        let t_max = self.samples.last().map_or(1.0, |s| s.t).max(1.0);
        let title = |what: &str| format!("{} — {}", self.name, what);

        let ops_max = self
            .samples
            .iter()
            .map(|s| s.ops_per_sec)
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&areas[0])
            .caption(title("throughput"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..t_max, 0f64..ops_max * 1.1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("ops/s")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(
                self.samples.iter().map(|s| (s.t, s.ops_per_sec)),
                &BLUE,
            ))
            .map_err(|e| err(&e))?;

        let lat_max = self
            .samples
            .iter()
            .map(|s| s.p999_us as f64 / 1000.0)
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&areas[1])
            .caption(title("latency"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..t_max, 0f64..lat_max * 1.1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("ms")
            .draw()
            .map_err(|e| err(&e))?;
        for (label, color, pick) in [
            ("p50", GREEN, (|s: &Sample| s.p50_us) as fn(&Sample) -> u64),
            ("p99", RED, |s: &Sample| s.p99_us),
            ("p999", MAGENTA, |s: &Sample| s.p999_us),
        ] {
            chart
                .draw_series(LineSeries::new(
                    self.samples.iter().map(|s| (s.t, pick(s) as f64 / 1000.0)),
                    color,
                ))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;

        if with_regions {
            let reg_max = self
                .samples
                .iter()
                .filter_map(|s| s.regions)
                .max()
                .unwrap_or(1) as f64;
            let mut chart = ChartBuilder::on(&areas[2])
                .caption(title("regions"), ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..t_max, 0f64..reg_max * 1.1)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc("regions")
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(LineSeries::new(
                    self.samples
                        .iter()
                        .filter_map(|s| s.regions.map(|r| (s.t, r as f64))),
                    &BLACK,
                ))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))
    }
}

/// `candidate / baseline` for throughput, and for each latency figure.
pub fn compare(baseline: &RunReport, candidate: &RunReport) {
    let (b, c) = (&baseline.summary, &candidate.summary);
    println!();
    println!(
        "{:<16} {:>16} {:>16} {:>10}",
        "", baseline.name, candidate.name, "ratio"
    );
    let row = |what: &str, x: f64, y: f64, unit: &str| {
        let ratio = if x > 0.0 {
            format!("{:.2}", y / x)
        } else {
            "-".to_string()
        };
        println!(
            "{:<16} {:>16} {:>16} {:>10}",
            what,
            format!("{x:.1}{unit}"),
            format!("{y:.1}{unit}"),
            ratio
        );
    };
    row("ops/s", b.ops_per_sec, c.ops_per_sec, "");
    row(
        "p50 latency",
        b.p50_us as f64 / 1000.0,
        c.p50_us as f64 / 1000.0,
        " ms",
    );
    row(
        "p99 latency",
        b.p99_us as f64 / 1000.0,
        c.p99_us as f64 / 1000.0,
        " ms",
    );
    row(
        "p999 latency",
        b.p999_us as f64 / 1000.0,
        c.p999_us as f64 / 1000.0,
        " ms",
    );
    row("errors", b.errors as f64, c.errors as f64, "");
}
