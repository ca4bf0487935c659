//! `scripts/bench mysql`: Ferry against MariaDB's own replication and `mariadb-binlog` on identical backlogs.
//!
//! Each run starts a fresh source and target MariaDB (the test harness's throwaway servers). The target is also a
//! native replica of the source, stopped while the workload is written. Ferry's pipelines are primed (their first
//! checkpoint written) before the workload too. Then each contender drains the same backlog alone, timed until the
//! target holds the workload's marker row; counts and sums are compared with the source afterwards. Figures are
//! medians over the runs (`FERRY_BENCH_RUNS`, default 3).
//!
//! Rows:
//! - apply: 1,000,000 rows inserted in 1,000 transactions of 1,000, Ferry's MySQL sink vs the native replica;
//! - the same for 1,000,000 updates;
//! - decode only: Ferry with the discard sink over the whole backlog vs `mariadb-binlog -v` reading the same
//!   binlog from the server.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support::*;

const TABLES: &str = "CREATE TABLE shop.bench_rows (id bigint PRIMARY KEY, qty int NOT NULL, note varchar(100) NOT NULL, at datetime(6) NOT NULL);
     CREATE TABLE shop.bench_marker (id bigint PRIMARY KEY);";

struct Bench {
    source: MariaDbServer,
    target: MariaDbServer,
    dir: tempfile::TempDir,
    markers: i64,
}

struct Pipeline {
    config: PathBuf,
    log: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let source = MariaDbServer::start();
        // Ferry's writes are a client's, so the target writes them to its binlog; the native replica writes what it
        // applies there too only with log_slave_updates (MariaDB's default is off). Both do the same work unless
        // FERRY_BENCH_REPLICA_BINLOG=off, which leaves the replica's binlog out (and so the native one's writes).
        let replica_binlog =
            std::env::var("FERRY_BENCH_REPLICA_BINLOG").map_or(true, |v| v != "off");
        let target = MariaDbServer::start_with(&[
            "--server-id=2",
            if replica_binlog {
                "--log-slave-updates=ON"
            } else {
                "--log-slave-updates=OFF"
            },
        ]);
        source.sql(&format!("CREATE DATABASE shop; {TABLES}"));
        // The native replica copies the database and tables from the source's binlog, then waits, stopped.
        target.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'root', MASTER_USE_GTID = no, \
             MASTER_LOG_FILE = 'binlog.000001', MASTER_LOG_POS = 4; START SLAVE;",
            source.port
        ));
        assert!(
            wait_until(Duration::from_secs(60), || target
                .try_sql("SELECT count(*) FROM shop.bench_marker")
                .is_ok()),
            "the native replica did not start"
        );
        target.sql("STOP SLAVE; CREATE DATABASE ferry_copy");
        Bench {
            source,
            target,
            dir: scratch(),
            markers: 0,
        }
    }

    fn pipeline(&self, name: &str, sink: &str) -> Pipeline {
        let text = format!(
            "[pipeline]\nname = \"{name}\"\n\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"shop.bench_rows\", \"shop.bench_marker\"]\n\n[sink]\n{sink}\n",
            self.source.url("shop")
        );
        Pipeline {
            config: write_config(self.dir.path(), name, &text),
            log: self.dir.path().join(format!("{name}.log")),
        }
    }

    /// Runs a pipeline until its first checkpoint (the empty snapshot), so it resumes before the workload.
    fn prime(&self, p: &Pipeline, checkpointed: impl Fn() -> bool) {
        let ferry = Ferry::start(&p.config, &p.log);
        assert!(
            wait_until(Duration::from_secs(60), checkpointed),
            "pipeline did not start: {}",
            ferry.log()
        );
        assert!(
            ferry.terminate().success(),
            "ferry failed: {}",
            p.log.display()
        );
    }

    /// Feeds `statements` to one mariadb client session, then commits a marker row.
    fn workload(&mut self, what: &str, statements: impl Iterator<Item = String>) {
        eprintln!("bench:   writing {what}");
        let script: String = statements.map(|s| s + ";\n").collect();
        let file = self.dir.path().join("workload.sql");
        std::fs::write(&file, script).expect("write the workload");
        let status = Command::new("/usr/bin/mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1", "-u", "root", "-P"])
            .arg(self.source.port.to_string())
            .arg("shop")
            .stdin(std::fs::File::open(&file).expect("workload file"))
            .stdout(Stdio::null())
            .status()
            .expect("mariadb");
        assert!(status.success(), "the workload failed");
        self.markers += 1;
        self.source.sql(&format!(
            "INSERT INTO shop.bench_marker VALUES ({})",
            self.markers
        ));
    }

    fn marker_in(&self, db: &str) -> bool {
        self.target
            .try_sql(&format!(
                "SELECT count(*) FROM {db}.bench_marker WHERE id = {}",
                self.markers
            ))
            .is_ok_and(|n| n == "1")
    }

    fn check(&self, db: &str) {
        let sql = "SELECT count(*), sum(qty) FROM {}.bench_rows";
        let source = self.source.sql(&sql.replace("{}", "shop"));
        let target = self.target.sql(&sql.replace("{}", db));
        assert_eq!(source, target, "{db} differs from the source");
    }

    fn ferry_apply(&self, p: &Pipeline) -> (Duration, f64, f64) {
        let started = Instant::now();
        let ferry = Ferry::start(&p.config, &p.log);
        let took = time_until(started, "ferry apply", || self.marker_in("ferry_copy"));
        let (rss, cores) = finish(ferry, took, &p.log);
        self.check("ferry_copy");
        (took, rss, cores)
    }

    fn native_apply(&self) -> Duration {
        let started = Instant::now();
        self.target.sql("START SLAVE");
        let took = time_until(started, "native replica", || self.marker_in("shop"));
        self.target.sql("STOP SLAVE");
        self.check("shop");
        took
    }
}

fn run_once(n: u64) -> Vec<Measure> {
    let mut b = Bench::new();
    let apply = b.pipeline(
        "apply",
        &format!("type = \"mysql\"\nurl = \"{}\"", b.target.url("ferry_copy")),
    );
    let discard_file = b.dir.path().join("discard.pos");
    let decode = b.pipeline(
        "decode",
        &format!("type = \"discard\"\npath = \"{}\"", discard_file.display()),
    );
    let target = &b.target;
    b.prime(&apply, || {
        target
            .try_sql("SELECT count(*) FROM ferry_copy.ferry_checkpoints")
            .is_ok_and(|n| n == "1")
    });
    b.prime(&decode, || discard_file.exists());
    let per_txn = 1000;
    let txns = n / per_txn;
    let mut out = Vec::new();

    b.workload(
        &format!("{n} inserts in {txns} transactions"),
        (0..txns).map(|t| {
            format!(
                "INSERT INTO bench_rows SELECT seq, seq % 100, concat('note ', seq), now(6) FROM seq_{}_to_{}",
                t * per_txn + 1,
                (t + 1) * per_txn
            )
        }),
    );
    let (ferry, rss, cores) = b.ferry_apply(&apply);
    let native = b.native_apply();
    out.push(Measure {
        workload: format!("MariaDB→MariaDB inserts, {per_txn}-row txns"),
        anchor: "native MariaDB replica",
        rows: n,
        ferry,
        anchor_time: Some(native),
        ferry_peak_rss_mb: rss,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });

    b.workload(
        &format!("{n} updates in {txns} transactions"),
        (0..txns).map(|t| {
            format!(
                "UPDATE bench_rows SET qty = qty + 1, at = now(6) WHERE id BETWEEN {} AND {}",
                t * per_txn + 1,
                (t + 1) * per_txn
            )
        }),
    );
    let (ferry, rss, cores) = b.ferry_apply(&apply);
    let native = b.native_apply();
    out.push(Measure {
        workload: "MariaDB→MariaDB updates".into(),
        anchor: "native MariaDB replica",
        rows: n,
        ferry,
        anchor_time: Some(native),
        ferry_peak_rss_mb: rss,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });

    // Decode only, over the whole backlog (inserts and updates).
    let end = b.source.sql("SHOW MASTER STATUS");
    let mut fields = end.split('\t');
    let end_file = fields.next().unwrap_or_default().to_owned();
    let end_offset: u64 = fields.next().and_then(|o| o.parse().ok()).unwrap_or(0);
    let reached = || {
        ferry_sink::discard::read_checkpoint(&discard_file)
            .ok()
            .flatten()
            .and_then(|(position, _)| position.parse::<ferry_core::Position>().ok())
            .is_some_and(|p| match p {
                ferry_core::Position::Binlog(b) => b
                    .pos
                    .try_cmp(&ferry_core::BinlogFilePos::new(
                        end_file.clone(),
                        end_offset,
                    ))
                    .is_some_and(|o| o.is_ge()),
                _ => false,
            })
    };
    let started = Instant::now();
    let ferry = Ferry::start(&decode.config, &decode.log);
    let took = time_until(started, "ferry decode", reached);
    let (rss, cores) = finish(ferry, took, &decode.log);
    let started = Instant::now();
    let status = Command::new("/usr/bin/mariadb-binlog")
        .args([
            "--no-defaults",
            "--read-from-remote-server",
            "--to-last-log",
            "-v",
        ])
        .args(["--host", "127.0.0.1", "--user", "root", "--port"])
        .arg(b.source.port.to_string())
        .arg("binlog.000001")
        .stdout(Stdio::null())
        .status()
        .expect("mariadb-binlog");
    let native = started.elapsed();
    assert!(status.success(), "mariadb-binlog failed");
    out.push(Measure {
        workload: "decode only (inserts + updates)".into(),
        anchor: "mariadb-binlog -v",
        rows: 2 * n,
        ferry: took,
        anchor_time: Some(native),
        ferry_peak_rss_mb: rss,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("mysql benchmark: run it with scripts/bench mysql [--json]");
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let runs = env_number("FERRY_BENCH_RUNS", 3).max(1);
    let n = env_number("FERRY_BENCH_ROWS", 1_000_000).max(1000) / 1000 * 1000;
    let mut all: Vec<Vec<Measure>> = Vec::new();
    for run in 1..=runs {
        eprintln!("bench: run {run} of {runs} ({n} rows per workload)");
        let measures = run_once(n);
        for m in &measures {
            eprintln!(
                "bench:   {:<36} ferry {:>8.0} rows/s ({:.2} cores)  {} {:>8.0} rows/s",
                m.workload,
                per_second(m.rows, m.ferry),
                m.ferry_cpu_cores,
                m.anchor,
                m.anchor_time.map_or(0.0, |t| per_second(m.rows, t)),
            );
        }
        all.push(measures);
    }
    report(&all, json);
}
