//! What the benchmarks share: measurements, timing, process figures and the report table.

use std::time::{Duration, Instant};

use crate::support::{peak_rss_kb, Ferry};

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One measured row of the table.
#[derive(Clone)]
pub struct Measure {
    pub workload: String,
    pub anchor: &'static str,
    pub rows: u64,
    pub ferry: Duration,
    pub anchor_time: Option<Duration>,
    pub ferry_peak_rss_mb: f64,
    /// CPU seconds ferry used per wall second.
    pub ferry_cpu_cores: f64,
    /// CPU microseconds per row of the source process serving ferry (the walsender), where measured.
    pub source_cpu_us_per_row: Option<f64>,
    /// The same for the anchor.
    pub anchor_source_cpu_us_per_row: Option<f64>,
}

/// Polls every 20 ms until `done`, for at most 30 minutes; returns the elapsed time since `started`.
pub fn time_until(started: Instant, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let deadline = started + Duration::from_secs(1800);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: no result after 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of those.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak memory and CPU of a finished contender, then a graceful stop.
pub fn finish(ferry: Ferry, took: Duration, log: &std::path::Path) -> (f64, f64) {
    let rss = peak_rss_mb(ferry.pid());
    let cores = cpu_seconds(ferry.pid()) / took.as_secs_f64();
    assert!(
        ferry.terminate().success(),
        "ferry failed: {}",
        log.display()
    );
    (rss, cores)
}

/// Peak resident set of a process in MB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    peak_rss_kb(pid) as f64 / 1024.0
}

pub fn per_second(rows: u64, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints the medians over `all` runs: a table, or JSON lines with `--json`.
pub fn report(all: &[Vec<Measure>], json: bool) {
    if !json {
        println!(
            "{:<36} | {:>14} | {:<28} | {:>14} | {:>6} | {:>14} | {:>10}",
            "workload",
            "ferry rows/s",
            "anchor",
            "anchor rows/s",
            "ratio",
            "ferry peak RSS",
            "ferry CPU"
        );
        println!("{}", "-".repeat(141));
    }
    for i in 0..all[0].len() {
        let first = &all[0][i];
        let ferry = median(
            all.iter()
                .map(|r| per_second(r[i].rows, r[i].ferry))
                .collect(),
        );
        let anchor = median(
            all.iter()
                .map(|r| {
                    r[i].anchor_time
                        .map_or(f64::NAN, |t| per_second(r[i].rows, t))
                })
                .collect(),
        );
        let rss = median(all.iter().map(|r| r[i].ferry_peak_rss_mb).collect());
        let cores = median(all.iter().map(|r| r[i].ferry_cpu_cores).collect());
        let ratio = ferry / anchor;
        let source_cpu = median(
            all.iter()
                .map(|r| r[i].source_cpu_us_per_row.unwrap_or(f64::NAN))
                .collect(),
        );
        let anchor_source_cpu = median(
            all.iter()
                .map(|r| r[i].anchor_source_cpu_us_per_row.unwrap_or(f64::NAN))
                .collect(),
        );
        // Ferry's own CPU per row: cores × wall time, over the rows.
        let ferry_cpu = median(
            all.iter()
                .map(|r| r[i].ferry_cpu_cores * r[i].ferry.as_secs_f64() / r[i].rows as f64 * 1e6)
                .collect(),
        );
        if json {
            let mut row = serde_json::json!({
                "workload": first.workload,
                "ferry_rows_per_s": ferry.round(),
                "anchor": first.anchor,
                "anchor_rows_per_s": anchor.round(),
                "ratio": (ratio * 100.0).round() / 100.0,
                "ferry_peak_rss_mb": rss.round(),
                "ferry_cpu_cores": (cores * 100.0).round() / 100.0,
            });
            if first.source_cpu_us_per_row.is_some() {
                let round2 = |v: f64| (v * 100.0).round() / 100.0;
                row["ferry_cpu_us_per_row"] = round2(ferry_cpu).into();
                row["walsender_cpu_us_per_row"] = round2(source_cpu).into();
                row["anchor_walsender_cpu_us_per_row"] = round2(anchor_source_cpu).into();
            }
            println!("{row}");
        } else {
            // No peak RSS of its own for a contender measured inside the bench process.
            let rss = if rss.is_nan() {
                "–".to_owned()
            } else {
                format!("{rss:.0} MB")
            };
            println!(
                "{:<36} | {:>14.0} | {:<28} | {:>14.0} | {:>5.2}× | {:>14} | {:>4.2} cores",
                first.workload, ferry, first.anchor, anchor, ratio, rss, cores
            );
            if first.source_cpu_us_per_row.is_some() {
                println!(
                    "{:<36}   CPU per row: ferry {ferry_cpu:.2} µs, its walsender {source_cpu:.2} µs; \
                     the anchor's walsender {anchor_source_cpu:.2} µs",
                    ""
                );
            }
        }
    }
}
