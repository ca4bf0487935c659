//! Latency rows of `scripts/bench pg`: end-to-end lag under a steady load, and what synchronous mode adds to a
//! source COMMIT.
//!
//! **Lag.** pgbench commits single-row transactions at a fixed rate (`FERRY_BENCH_LAG_TPS`, default 1,000/s) for
//! `FERRY_BENCH_LAG_SECONDS` (default 60), each row stamped with `clock_timestamp()` at insert, with
//! `synchronous_commit = on` (with `off` the walsender sees a commit only after `wal_writer_delay`, for every
//! contender alike). Ferry and a native subscription replicate the same load at the same time into two databases
//! of one target server; one poller per target reads the rows that became visible and takes, for each, the time it
//! was first seen minus its stamp. The first 5 s are warm-up. Same host, same clock.
//!
//! **Synchronous commit.** 2,000 sequential single-row commits (`synchronous_commit = on`), timed at the client, with
//! the source's `synchronous_standby_names` naming: nothing (the asynchronous baseline), a physical standby
//! (`pg_basebackup` copy, PostgreSQL's own synchronous replication), then Ferry's pipeline (its sink is a
//! PostgreSQL database). What each adds is its percentile minus the baseline's.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{env_number, median};
use crate::support::*;
use crate::Probe;

/// Latency percentiles of one contender in one run, in milliseconds.
#[derive(Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    assert!(!v.is_empty(), "no latency samples");
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: v[v.len() - 1],
        samples: v.len(),
    }
}

/// One latency row: Ferry's figures beside the anchor's, in one run.
#[derive(Clone)]
pub struct LatencyMeasure {
    pub workload: String,
    pub anchor: &'static str,
    pub ferry: Percentiles,
    pub anchor_figures: Percentiles,
}

const LAG_TABLE: &str =
    "CREATE TABLE lag_rows (id bigserial PRIMARY KEY, at timestamptz NOT NULL, note text NOT NULL)";

/// Starts pipeline `name` from `lag_rows` of the source's `shop` into the PostgreSQL database at `target`, and
/// waits until it streams.
fn start_pipeline(dir: &std::path::Path, name: &str, source: &PgServer, target: &str) -> Ferry {
    let config = write_config(
        dir,
        name,
        &format!(
            "[pipeline]\nname = \"{name}\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             tables = [\"public.lag_rows\"]\n\n[sink]\ntype = \"postgres\"\nurl = \"{target}\"\n",
            source.url("shop"),
        ),
    );
    let ferry = Ferry::start(&config, &dir.join(format!("{name}.log")));
    ferry.wait_streaming();
    ferry
}

/// Polls `lag_rows` in the target database at `url` until `until`, recording for every row the time it was first
/// seen minus its stamp (ms); rows stamped before `warm_up_end` are left out.
fn poll_lag(url: String, until: Instant, warm_up_end: f64) -> Vec<f64> {
    let probe = Probe::connect(&url);
    let mut seen = BTreeSet::new();
    // Every id up to `low` has been seen (ids are dense: nothing rolls back).
    let mut low = 0i64;
    let mut lags = Vec::new();
    while Instant::now() < until {
        let rows = probe.rows(&format!(
            "SELECT id, extract(epoch FROM at)::float8 FROM lag_rows WHERE id > {low}"
        ));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        for row in rows {
            let (Some(id), Some(at)) = (
                row.first().and_then(|v| v.parse::<i64>().ok()),
                row.get(1).and_then(|v| v.parse::<f64>().ok()),
            ) else {
                continue;
            };
            if seen.insert(id) && at >= warm_up_end {
                lags.push((now - at) * 1000.0);
            }
        }
        while seen.remove(&(low + 1)) {
            low += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    lags
}

/// End-to-end lag at a steady rate, Ferry and a native subscription side by side.
pub fn lag(dir: &std::path::Path) -> LatencyMeasure {
    let tps = env_number("FERRY_BENCH_LAG_TPS", 1000);
    let seconds = env_number("FERRY_BENCH_LAG_SECONDS", 60);
    let source = PgServer::start_with(&["wal_level=logical"]);
    let target = PgServer::start();
    source.create_db("shop");
    source.psql("shop", LAG_TABLE);
    source.psql("shop", "CREATE PUBLICATION lag_native FOR TABLE lag_rows");
    for db in ["lag_ferry", "lag_native"] {
        target.create_db(db);
    }
    target.psql("lag_native", LAG_TABLE);
    target.psql(
        "lag_native",
        &format!(
            "CREATE SUBSCRIPTION lag CONNECTION 'host=127.0.0.1 port={} dbname=shop user=postgres' \
             PUBLICATION lag_native WITH (copy_data = false)",
            source.port
        ),
    );
    let ferry = start_pipeline(dir, "lag", &source, &target.url("lag_ferry"));
    let native_ready = wait_until(Duration::from_secs(60), || {
        target.psql(
            "lag_native",
            "SELECT count(*) FROM pg_stat_subscription WHERE subname = 'lag' AND pid IS NOT NULL",
        ) == "1"
    });
    assert!(native_ready, "the native subscription did not start");

    eprintln!("bench:   lag: {tps} transactions/s for {seconds} s");
    let script = dir.join("lag.sql");
    std::fs::write(
        &script,
        "INSERT INTO lag_rows (at, note) VALUES (clock_timestamp(), md5(random()::text));\n",
    )
    .expect("write the pgbench script");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let warm_up_end = now + 5.0;
    let until = Instant::now() + Duration::from_secs(seconds + 5);
    let pollers: Vec<_> = ["lag_ferry", "lag_native"]
        .into_iter()
        .map(|db| {
            let url = target.url(db);
            std::thread::spawn(move || poll_lag(url, until, warm_up_end))
        })
        .collect();
    let load = std::process::Command::new(pg_bin("pgbench"))
        .args(["-n", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &source.port.to_string()])
        .args(["-c", "2", "-j", "2", "-R", &tps.to_string()])
        .args(["-T", &(seconds + 3).to_string()])
        .arg("-f")
        .arg(&script)
        .arg("shop")
        .env("PGOPTIONS", "-c synchronous_commit=on")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run pgbench");
    assert!(load.success(), "pgbench failed");
    let mut lags = pollers.into_iter().map(|p| p.join().expect("poller"));
    let (ferry_lags, native_lags) = (lags.next().unwrap(), lags.next().unwrap());
    let count = "SELECT count(*), max(id) FROM lag_rows";
    let want = source.psql("shop", count);
    for db in ["lag_ferry", "lag_native"] {
        assert!(
            wait_until(Duration::from_secs(60), || target.psql(db, count) == want),
            "{db} did not receive every row"
        );
    }
    // Where Ferry's share of the lag goes: its own histograms of source commit → sink commit and of each apply.
    if let Some((_, body)) = ferry.get("/metrics") {
        for family in ["ferry_sink_commit_lag_seconds", "ferry_sink_apply_seconds"] {
            let buckets: Vec<String> = body
                .lines()
                .filter(|l| l.starts_with(&format!("{family}_bucket")))
                .filter_map(|l| {
                    let le = l.split("le=\"").nth(1)?.split('"').next()?;
                    Some(format!("≤{le}s:{}", l.rsplit(' ').next()?))
                })
                .collect();
            eprintln!("bench:   lag: {family} (cumulative) {}", buckets.join(" "));
        }
    }
    assert!(ferry.terminate().success(), "ferry failed");
    LatencyMeasure {
        workload: format!("end-to-end lag at {tps} txn/s, ms"),
        anchor: "native subscription",
        ferry: percentiles(ferry_lags),
        anchor_figures: percentiles(native_lags),
    }
}

/// Times `n` sequential single-row commits with `synchronous_commit = on` (ms each).
fn commit_latencies(url: &str, n: usize) -> Vec<f64> {
    let probe = Probe::connect(url);
    probe.rows("SET synchronous_commit = on");
    (0..n)
        .map(|_| {
            let started = Instant::now();
            probe.rows("INSERT INTO lag_rows (at, note) VALUES (clock_timestamp(), 'sync')");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn set_standby_names(source: &PgServer, names: &str) {
    source.psql(
        "postgres",
        &format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'"),
    );
    source.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
}

/// What a synchronous COMMIT costs: waiting for Ferry's sinks vs for a physical standby, both minus the
/// asynchronous baseline.
pub fn sync_commit(dir: &std::path::Path) -> LatencyMeasure {
    const COMMITS: usize = 2000;
    let source = PgServer::start_with(&["wal_level=logical"]);
    let target = PgServer::start();
    source.create_db("shop");
    source.psql("shop", LAG_TABLE);
    target.create_db("sync_ferry");
    let conninfo = format!(
        "primary_conninfo=host=127.0.0.1 port={} user=postgres application_name=physical_sync",
        source.port
    );
    let standby = PgServer::standby_of(&source, "physical_sync", &[&conninfo]);
    assert!(
        wait_until(Duration::from_secs(60), || source.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'physical_sync'"
        ) == "1"),
        "the physical standby did not connect: {}",
        standby.log()
    );
    let ferry = start_pipeline(dir, "sync", &source, &target.url("sync_ferry"));
    let url = source.url("shop");
    set_standby_names(&source, "");
    let baseline = percentiles(commit_latencies(&url, COMMITS));
    set_standby_names(&source, "physical_sync");
    let physical = percentiles(commit_latencies(&url, COMMITS));
    set_standby_names(&source, "ferry_sync");
    let ferry_sync = percentiles(commit_latencies(&url, COMMITS));
    set_standby_names(&source, "");
    let sent = source.psql("shop", "SELECT count(*) FROM lag_rows");
    assert!(
        wait_until(Duration::from_secs(60), || target
            .try_psql("sync_ferry", "SELECT count(*) FROM lag_rows")
            .is_ok_and(|c| c == sent)),
        "the Ferry target did not receive every row"
    );
    assert!(ferry.terminate().success(), "ferry failed");
    let added = |p: Percentiles| Percentiles {
        p50: p.p50 - baseline.p50,
        p99: p.p99 - baseline.p99,
        max: p.max,
        samples: p.samples,
    };
    eprintln!(
        "bench:   synchronous commit, ms: asynchronous p50 {:.3} p99 {:.3}; physical standby p50 {:.3} p99 {:.3}; \
         ferry p50 {:.3} p99 {:.3}",
        baseline.p50, baseline.p99, physical.p50, physical.p99, ferry_sync.p50, ferry_sync.p99
    );
    LatencyMeasure {
        workload: "sync commit: latency added, ms".to_owned(),
        anchor: "physical synchronous standby",
        ferry: added(ferry_sync),
        anchor_figures: added(physical),
    }
}

/// Prints the medians over runs of each latency row: a table, or JSON lines with `--json`.
pub fn report(all: &[Vec<LatencyMeasure>], json: bool) {
    if !json {
        println!();
        println!(
            "{:<36} | {:>9} | {:>9} | {:>9} | {:<28} | {:>9} | {:>9} | {:>9}",
            "latency (ms)", "ferry p50", "p99", "max", "anchor", "p50", "p99", "max"
        );
        println!("{}", "-".repeat(141));
    }
    for i in 0..all[0].len() {
        let first = &all[0][i];
        let m = |f: fn(&LatencyMeasure) -> f64| median(all.iter().map(|r| f(&r[i])).collect());
        let (fp50, fp99, fmax) = (m(|r| r.ferry.p50), m(|r| r.ferry.p99), m(|r| r.ferry.max));
        let (ap50, ap99, amax) = (
            m(|r| r.anchor_figures.p50),
            m(|r| r.anchor_figures.p99),
            m(|r| r.anchor_figures.max),
        );
        if json {
            let round = |v: f64| (v * 1000.0).round() / 1000.0;
            println!(
                "{}",
                serde_json::json!({
                    "workload": first.workload,
                    "ferry_p50_ms": round(fp50),
                    "ferry_p99_ms": round(fp99),
                    "ferry_max_ms": round(fmax),
                    "anchor": first.anchor,
                    "anchor_p50_ms": round(ap50),
                    "anchor_p99_ms": round(ap99),
                    "anchor_max_ms": round(amax),
                    "samples": first.ferry.samples,
                })
            );
        } else {
            println!(
                "{:<36} | {:>9.2} | {:>9.2} | {:>9.2} | {:<28} | {:>9.2} | {:>9.2} | {:>9.2}",
                first.workload, fp50, fp99, fmax, first.anchor, ap50, ap99, amax
            );
        }
    }
}
