//! `scripts/bench pg`: Ferry against PostgreSQL's own tools on identical backlogs.
//!
//! Each run starts a fresh source and target server (the test harness's throwaway servers), creates every slot
//! and subscription before the workload, writes the workload, and then lets each contender drain the same
//! backlog alone, timed until the target holds the workload's final marker row (every contender applies
//! transactions in commit order, so the marker arrives last). Row counts and sums are then compared with the
//! source, so a fast wrong answer cannot win. Figures are medians over the runs (`FERRY_BENCH_RUNS`, default 3).
//!
//! Run through `cargo bench --bench pg -- --bench [--json]` (what `scripts/bench pg` does); without `--bench`
//! (as under `cargo test --all-targets`) it only prints how to run it.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common.rs"]
mod common;

#[path = "pg_latency.rs"]
mod latency;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use support::*;

/// Rows per backlog workload; `FERRY_BENCH_ROWS` shrinks it for a quick look.
fn rows() -> u64 {
    env_number("FERRY_BENCH_ROWS", 1_000_000)
}

/// Server settings for both sides: room for the backlog's WAL, no walsender timeout while a contender waits.
const SERVER_SETTINGS: &[&str] = &[
    "wal_level=logical",
    "max_wal_size=8GB",
    "wal_sender_timeout=0",
];

const TABLES: &str = "CREATE TABLE bench_rows (id int8 PRIMARY KEY, qty int4 NOT NULL, note text NOT NULL, at timestamptz NOT NULL);
     CREATE TABLE bench_single (id bigserial PRIMARY KEY, qty int4 NOT NULL, note text NOT NULL, at timestamptz NOT NULL);
     CREATE TABLE bench_big (id int8 PRIMARY KEY, qty int4 NOT NULL, note text NOT NULL, at timestamptz NOT NULL);
     CREATE TABLE bench_marker (id int8 PRIMARY KEY);";

const TABLE_LIST: &str =
    "[\"public.bench_rows\", \"public.bench_single\", \"public.bench_big\", \"public.bench_marker\"]";

/// A short-lived SQL client for polling without spawning psql each time.
struct Probe {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Probe {
    fn connect(url: &str) -> Probe {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = runtime.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect probe");
            tokio::spawn(conn);
            client
        });
        Probe { runtime, client }
    }

    /// Every row as text (`NULL` as ''), none on an error.
    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.runtime.block_on(async {
            match self.client.simple_query(sql).await {
                Ok(messages) => messages
                    .into_iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                            (0..r.len())
                                .map(|i| r.get(i).unwrap_or("").to_owned())
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect(),
                Err(_) => Vec::new(),
            }
        })
    }

    /// The first column of the first row as text ('' for NULL or an error such as a missing table).
    fn scalar(&self, sql: &str) -> String {
        self.runtime.block_on(async {
            match self.client.simple_query(sql).await {
                Ok(messages) => messages
                    .into_iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            Some(r.get(0).unwrap_or("").to_owned())
                        }
                        _ => None,
                    })
                    .unwrap_or_default(),
                Err(_) => String::new(),
            }
        })
    }
}

struct Bench {
    source: PgServer,
    target: PgServer,
    dir: tempfile::TempDir,
    markers: i64,
}

/// A ferry pipeline of the benchmark.
struct Pipeline {
    config: PathBuf,
    log: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let source = PgServer::start_with(SERVER_SETTINGS);
        // Autovacuum off on the target: each contender starts from a vacuumed, checkpointed target
        // ([`Bench::settle`]) instead of paying for a cleanup of what the previous contender left.
        let target = PgServer::start_with(&[SERVER_SETTINGS, &["autovacuum=off"]].concat());
        source.create_db("shop");
        source.psql("shop", TABLES);
        source.psql(
            "shop",
            "CREATE PUBLICATION native_pub FOR TABLE bench_rows, bench_single, bench_big, bench_marker",
        );
        for db in [
            "ferry_pg",
            "native",
            "ferry_chain",
            "ferry_lww",
            "ferry_lww10",
        ] {
            target.create_db(db);
        }
        target.psql("native", TABLES);
        let connection = format!(
            "host=127.0.0.1 port={} dbname=shop user=postgres",
            source.port
        );
        target.psql(
            "native",
            &format!("CREATE SUBSCRIPTION native CONNECTION '{connection}' PUBLICATION native_pub WITH (copy_data = false, enabled = false)"),
        );
        source.psql(
            "shop",
            "SELECT pg_create_logical_replication_slot('recv', 'pgoutput')",
        );
        Bench {
            source,
            target,
            dir: scratch(),
            markers: 0,
        }
    }

    /// Writes a pipeline config; `sink` is its `[sink]` body.
    fn pipeline(&self, name: &str, tables: &str, snapshot: &str, sink: &str) -> Pipeline {
        let text = format!(
            "[pipeline]\nname = \"{name}\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = {tables}\nsnapshot = \"{snapshot}\"\n\n[sink]\n{sink}\n",
            self.source.url("shop")
        );
        Pipeline {
            config: write_config(self.dir.path(), name, &text),
            log: self.dir.path().join(format!("{name}.log")),
        }
    }

    /// Starts a pipeline once so it creates its slot and first checkpoint, then stops it: its slot now holds
    /// everything written afterwards.
    fn prime(&self, pipeline: &Pipeline, checkpointed: impl Fn() -> bool) {
        let ferry = Ferry::start(&pipeline.config, &pipeline.log);
        assert!(
            wait_until(Duration::from_secs(60), checkpointed),
            "pipeline did not start: {}",
            ferry.log()
        );
        assert!(
            ferry.terminate().success(),
            "ferry failed: {}",
            pipeline.log.display()
        );
    }

    /// Runs `sql` (which may COMMIT inside a DO block), then commits one marker row (see [`Bench::mark`]).
    fn workload(&mut self, what: &str, sql: &str) -> ferry_core::Lsn {
        eprintln!("bench:   writing {what}");
        self.source.psql("shop", sql);
        self.mark()
    }

    /// Runs `script` with pgbench from `clients` concurrent clients, `per_client` transactions each, then commits
    /// one marker row.
    fn pgbench_workload(&mut self, what: &str, script: &str, clients: u64, per_client: u64) {
        eprintln!("bench:   writing {what} from {clients} pgbench clients");
        let file = self.dir.path().join("workload.sql");
        std::fs::write(&file, script).expect("write the pgbench script");
        let status = Command::new(pg_bin("pgbench"))
            .args(["-n", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.source.port.to_string()])
            .args([
                "-c",
                &clients.to_string(),
                "-j",
                "2",
                "-t",
                &per_client.to_string(),
            ])
            .arg("-f")
            .arg(&file)
            .arg("shop")
            .stdout(Stdio::null())
            .status()
            .expect("run pgbench");
        assert!(status.success(), "pgbench failed");
        self.mark();
    }

    /// Commits the next marker row. Returns a WAL position inside the marker transaction: any commit position
    /// past it includes the whole workload.
    fn mark(&mut self) -> ferry_core::Lsn {
        self.markers += 1;
        self.source
            .psql(
                "shop",
                &format!(
                    "BEGIN; INSERT INTO bench_marker VALUES ({}); SELECT pg_current_wal_insert_lsn(); COMMIT;",
                    self.markers
                ),
            )
            .parse()
            .expect("an LSN")
    }

    fn marker_reached(&self, probe: &Probe) -> bool {
        probe
            .scalar("SELECT count(*) FROM bench_marker")
            .parse::<i64>()
            .is_ok_and(|n| n >= self.markers)
    }

    /// Native logical replication drains the backlog: enable, wait for the marker, disable again.
    fn native_apply(&self) -> Duration {
        self.settle();
        let probe = Probe::connect(&self.target.url("native"));
        self.target
            .psql("native", "ALTER SUBSCRIPTION native ENABLE");
        // The clock starts when the launcher has started the apply worker: its start-up delay after a re-enable
        // (seconds) is an artefact of this benchmark's disable / enable cycles, not apply speed.
        time_until(Instant::now(), "native apply worker start", || {
            probe.scalar("SELECT count(*) FROM pg_stat_subscription WHERE subname = 'native' AND pid IS NOT NULL") == "1"
        });
        let started = Instant::now();
        let took = time_until(started, "native apply", || self.marker_reached(&probe));
        self.target
            .psql("native", "ALTER SUBSCRIPTION native DISABLE");
        // The apply worker exits asynchronously; wait so it does not compete with the next contender.
        wait_until(Duration::from_secs(30), || {
            self.target.psql(
                "native",
                "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL",
            ) == "0"
        });
        took
    }

    /// Vacuums (and analyzes) every database of the target, then checkpoints it: the same starting state for
    /// every contender, whatever the one before it left behind (dead rows, dirty buffers).
    fn settle(&self) {
        let dbs = self.target.psql(
            "postgres",
            "SELECT string_agg(datname, ' ') FROM pg_database WHERE datallowconn AND datname NOT LIKE 'template%'",
        );
        for db in dbs.split_whitespace() {
            self.target.psql(db, "VACUUM (ANALYZE)");
        }
        self.target.psql("postgres", "CHECKPOINT");
    }

    /// Ferry drains the backlog into the PostgreSQL target; returns the time and its peak RSS.
    fn ferry_apply(&self, pipeline: &Pipeline, probe: &Probe) -> (Duration, f64, f64) {
        self.settle();
        let started = Instant::now();
        let ferry = Ferry::start(&pipeline.config, &pipeline.log);
        let took = time_until(started, "ferry apply", || self.marker_reached(probe));
        let (rss, cores) = finish(ferry, took, &pipeline.log);
        (took, rss, cores)
    }

    /// Native logical replication, then Ferry, drain the same backlog into the PostgreSQL target; both must then
    /// hold what the source holds for `table`.
    fn apply_race(
        &self,
        pipeline: &Pipeline,
        probe: &Probe,
        table: &str,
        workload: impl Into<String>,
        rows: u64,
    ) -> Measure {
        let native = self.native_apply();
        let (ferry, rss, cores) = self.ferry_apply(pipeline, probe);
        self.assert_same(table);
        Measure {
            workload: workload.into(),
            anchor: "native subscription",
            rows,
            ferry,
            anchor_time: Some(native),
            ferry_peak_rss_mb: rss,
            ferry_cpu_cores: cores,
            source_cpu_us_per_row: None,
            anchor_source_cpu_us_per_row: None,
        }
    }

    /// Asserts both targets hold what the source holds for `table`.
    fn assert_same(&self, table: &str) {
        let sql = format!(
            "SELECT count(*), coalesce(sum(qty), 0), coalesce(sum(length(note)), 0) FROM {table}"
        );
        let want = self.source.psql("shop", &sql);
        for db in ["ferry_pg", "native"] {
            let got = self.target.psql(db, &sql);
            assert_eq!(got, want, "{db}.{table} differs from the source");
        }
    }
}

/// The 4-stage chain of the benchmark: filter + mask + compute + route.
const CHAIN: &str = r#"
[[transform]]
type = "filter"
tables = ["public.bench_rows"]
where = "op == 'd' || after.qty >= 0"
[[transform]]
type = "mask"
columns = ["public.bench_rows.note"]
with = "sha256"
salt = "bench"
[[transform]]
type = "compute"
tables = ["public.bench_rows"]
column = "qty2"
column_type = "bigint"
expression = "after.qty * 2"
[[transform]]
type = "route"
tables = ["public.bench_rows"]
to = "chain.bench_rows"
"#;

/// The chain alone, in this process, over `n` insert events of `bench_rows` in 1,000-row transactions: its CPU
/// time per row without decoding or writing.
fn chain_in_process(n: u64) -> Measure {
    use ferry_core::{
        Change, Column, ColumnType, Event, Lsn, PipelineStats, Position, RowOp, TableId,
        TableSchema, Timestamp, Transform, Value,
    };
    use std::sync::Arc;
    let text = format!(
        "[pipeline]\nname = \"c\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://u@h/db\"\n\
         [sink]\ntype = \"discard\"\npath = \"/dev/null\"\n{CHAIN}"
    );
    let config = ferry_config::load_str(std::path::Path::new("bench.toml"), &text, &|_| None)
        .expect("the bench chain's config");
    let stats = Arc::new(PipelineStats::new("c", &["s"]));
    let mut chain = ferry_transform::Chain::new(&config, stats)
        .expect("the bench chain")
        .expect("stages");
    let col = |name: &str, ty: ColumnType, st: &str| Column::new(name, ty, st, false);
    let table = Arc::new(TableSchema {
        id: TableId::new("public", "bench_rows"),
        columns: vec![
            col("id", ColumnType::Int8, "bigint"),
            col("qty", ColumnType::Int4, "integer"),
            col("note", ColumnType::Text, "text"),
            col("at", ColumnType::TimestampTz, "timestamp with time zone"),
        ],
        primary_key: vec![0],
        identity: Vec::new(),
        version: 1,
        relation_id: Some(1),
        lineage: Default::default(),
        dialect: Default::default(),
        keeps_absent_columns: false,
    });
    let mut out = Vec::with_capacity(1100);
    let mut busy = Duration::ZERO;
    let mut kept = 0u64;
    for t in 0..n / 1000 {
        let mut events = Vec::with_capacity(1002);
        events.push(Event::begin_at(Position::pg(Lsn(t * 2 + 1))));
        for id in t * 1000 + 1..=t * 1000 + 1000 {
            events.push(Event::Change(Change::Row {
                table: table.clone(),
                op: RowOp::Insert {
                    after: vec![
                        Value::Int(id as i64),
                        Value::Int((id % 100) as i64),
                        Value::Text(format!("{:032x}", id.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
                        Value::TimestampTz(Timestamp::now()),
                    ],
                },
            }));
        }
        events.push(Event::Commit {
            position: Position::pg(Lsn(t * 2 + 2)),
            commit_time: Timestamp::now(),
        });
        let started = Instant::now();
        for e in events {
            chain.apply(e, &mut out).expect("the chain");
        }
        busy += started.elapsed();
        kept += out.len() as u64 - 2;
        out.clear();
    }
    assert_eq!(kept, n, "the chain dropped rows");
    eprintln!(
        "bench:   the chain alone: {:.0} ns per row",
        busy.as_secs_f64() / n as f64 * 1e9
    );
    Measure {
        workload: "4-stage chain alone, in process".to_owned(),
        anchor: "–",
        rows: n,
        ferry: busy,
        anchor_time: None,
        ferry_peak_rss_mb: f64::NAN,
        ferry_cpu_cores: 1.0,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    }
}

/// The walsender process serving `slot` on `pg`, while one does.
fn walsender_pid(pg: &PgServer, slot: &str) -> Option<u32> {
    pg.psql(
        "shop",
        &format!("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
    .parse()
    .ok()
}

/// Decode only: pg_recvlogical (protocol 1, text values) reads the backlog up to `marker` into /dev/null, then each
/// of `pipelines` (a discard sink, its position file, the value format it asks for) reads the same backlog. Ferry's
/// CPU and its walsender's are reported per row, beside pg_recvlogical's walsender.
fn decode_only(
    b: &Bench,
    pipelines: &[(&Pipeline, &PathBuf, &str)],
    marker: ferry_core::Lsn,
    n: u64,
) -> Vec<Measure> {
    let end = b.source.psql("shop", "SELECT pg_current_wal_lsn()");
    let started = Instant::now();
    let mut recv = Command::new(pg_bin("pg_recvlogical"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "shop"])
        .args(["--slot", "recv", "-p", &b.source.port.to_string()])
        .args(["--start", "--no-loop", "-f", "/dev/null", "--endpos", &end])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=native_pub",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("run pg_recvlogical");
    // The walsender's CPU, sampled until pg_recvlogical ends (the walsender ends with it).
    let mut recv_walsender = None;
    let mut recv_walsender_cpu = 0.0;
    let status = loop {
        if let Some(status) = recv.try_wait().expect("pg_recvlogical") {
            break status;
        }
        recv_walsender = recv_walsender.or_else(|| walsender_pid(&b.source, "recv"));
        if let Some(pid) = recv_walsender {
            recv_walsender_cpu = f64::max(recv_walsender_cpu, cpu_seconds(pid));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "pg_recvlogical failed");
    let recv = started.elapsed();
    let per_row = |seconds: f64| seconds / n as f64 * 1e6;
    eprintln!(
        "bench:   decode only: pg_recvlogical's walsender {:.2} µs CPU per row",
        per_row(recv_walsender_cpu)
    );
    b.source
        .psql("shop", "SELECT pg_drop_replication_slot('recv')");
    let mut out = Vec::new();
    for (pipeline, pos, format) in pipelines {
        let started = Instant::now();
        let ferry = Ferry::start(&pipeline.config, &pipeline.log);
        let took = time_until(started, "ferry decode", || {
            std::fs::read_to_string(pos)
                .ok()
                .and_then(|t| t.trim().parse::<ferry_core::Position>().ok())
                .and_then(|p| p.as_lsn())
                .is_some_and(|lsn| lsn > marker)
        });
        let slot = format!(
            "ferry_{}",
            pipeline.config.file_stem().unwrap().to_string_lossy()
        );
        let walsender = walsender_pid(&b.source, &slot).map_or(f64::NAN, cpu_seconds);
        let ferry_cpu = cpu_seconds(ferry.pid());
        let (rss, cores) = finish(ferry, took, &pipeline.log);
        eprintln!(
            "bench:   decode only, {format} values: ferry {:.2} µs CPU per row, its walsender {:.2} µs",
            per_row(ferry_cpu),
            per_row(walsender)
        );
        b.source.psql(
            "shop",
            &format!("SELECT pg_drop_replication_slot('{slot}')"),
        );
        out.push(Measure {
            workload: format!("decode only, {format} (discard sink)"),
            anchor: "pg_recvlogical",
            rows: n,
            ferry: took,
            anchor_time: Some(recv),
            ferry_peak_rss_mb: rss,
            ferry_cpu_cores: cores,
            source_cpu_us_per_row: Some(per_row(walsender)),
            anchor_source_cpu_us_per_row: Some(per_row(recv_walsender_cpu)),
        });
    }
    out
}

/// One full run: every workload once.
fn run_once(n: u64) -> Vec<Measure> {
    let mut b = Bench::new();
    let sqlite_db = b.dir.path().join("replica.db");
    let decode_pos = b.dir.path().join("decode.pos");
    let pg = b.pipeline(
        "bench_pg",
        TABLE_LIST,
        "initial",
        &format!(
            "type = \"postgres\"\nurl = \"{}\"",
            b.target.url("ferry_pg")
        ),
    );
    let sqlite = b.pipeline(
        "bench_sqlite",
        "[\"public.bench_rows\", \"public.bench_marker\"]",
        "initial",
        &format!("type = \"sqlite\"\npath = \"{}\"", sqlite_db.display()),
    );
    let decode = b.pipeline(
        "bench_decode",
        "[\"public.bench_rows\", \"public.bench_marker\"]\nbinary = true",
        "never",
        &format!("type = \"discard\"\npath = \"{}\"", decode_pos.display()),
    );
    let decode_text_pos = b.dir.path().join("decode_text.pos");
    let decode_text = b.pipeline(
        "bench_decode_text",
        "[\"public.bench_rows\", \"public.bench_marker\"]",
        "never",
        &format!(
            "type = \"discard\"\npath = \"{}\"",
            decode_text_pos.display()
        ),
    );
    // The same inserts through a 4-stage chain.
    let chain = b.pipeline(
        "bench_chain",
        "[\"public.bench_rows\", \"public.bench_marker\"]",
        "initial",
        &format!(
            "type = \"postgres\"\nurl = \"{}\"\n{CHAIN}",
            b.target.url("ferry_chain")
        ),
    );
    // The same updates under last-write-wins conflict detection: without conflicts, and with a tenth of the rows
    // written on the target first (so those updates lose and are logged).
    let lww_pipeline = |b: &Bench, name: &str, db: &str| {
        let text = format!(
            "[pipeline]\nname = \"{name}\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             tables = [\"public.bench_rows\", \"public.bench_marker\"]\n\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n\
             conflict = \"last_write_wins\"\n",
            b.source.url("shop"),
            b.target.url(db)
        );
        Pipeline {
            config: write_config(b.dir.path(), name, &text),
            log: b.dir.path().join(format!("{name}.log")),
        }
    };
    let lww = lww_pipeline(&b, "bench_lww", "ferry_lww");
    let lww10 = lww_pipeline(&b, "bench_lww10", "ferry_lww10");
    let ferry_lww = Probe::connect(&b.target.url("ferry_lww"));
    let ferry_lww10 = Probe::connect(&b.target.url("ferry_lww10"));
    b.prime(&lww, || {
        ferry_lww.scalar("SELECT count(*) FROM ferry_checkpoints") == "1"
    });
    b.prime(&lww10, || {
        ferry_lww10.scalar("SELECT count(*) FROM ferry_checkpoints") == "1"
    });
    let ferry_pg = Probe::connect(&b.target.url("ferry_pg"));
    b.prime(&pg, || {
        ferry_pg.scalar("SELECT count(*) FROM ferry_checkpoints") == "1"
    });
    let ferry_chain = Probe::connect(&b.target.url("ferry_chain"));
    b.prime(&chain, || {
        ferry_chain.scalar("SELECT count(*) FROM ferry_checkpoints") == "1"
    });
    b.prime(&sqlite, || {
        !sqlite_rows(&sqlite_db, "SELECT 1 FROM ferry_checkpoints").is_empty()
    });
    b.prime(&decode, || decode_pos.exists());
    b.prime(&decode_text, || decode_text_pos.exists());
    let mut out = Vec::new();
    let batches = n / 1000;

    // 1. Inserts in 1,000-row transactions.
    let marker = b.workload(
        "inserts",
        &format!(
            "DO $$ BEGIN FOR b IN 0..{} LOOP
               INSERT INTO bench_rows SELECT g, g % 100, md5(g::text), now() FROM generate_series(b * 1000 + 1, b * 1000 + 1000) g;
               COMMIT;
             END LOOP; END $$",
            batches - 1
        ),
    );
    // Decode only: pg_recvlogical and ferry's discard sink read the same backlog, ferry with values in binary
    // (`binary = true`) and in text (its default).
    out.extend(decode_only(
        &b,
        &[
            (&decode, &decode_pos, "binary"),
            (&decode_text, &decode_text_pos, "text"),
        ],
        marker,
        n,
    ));

    let inserts = b.apply_race(
        &pg,
        &ferry_pg,
        "bench_rows",
        "PG→PG inserts, 1,000-row txns",
        n,
    );
    let native = inserts.anchor_time;
    let (plain, plain_cores) = (inserts.ferry, inserts.ferry_cpu_cores);
    out.push(inserts);
    let (took, rss, cores) = b.ferry_apply(&chain, &ferry_chain);
    assert_eq!(
        b.target.psql(
            "ferry_chain",
            "SELECT count(*), sum(qty2), count(DISTINCT length(note)) FROM chain.bench_rows"
        ),
        b.source
            .psql("shop", "SELECT count(*), sum(qty) * 2, 1 FROM bench_rows"),
        "the chain's target differs from what the chain makes of the source"
    );
    b.source.psql(
        "shop",
        "SELECT pg_drop_replication_slot('ferry_bench_chain')",
    );
    eprintln!(
        "bench:   chain CPU per row (process CPU with the chain minus without): {:.0} ns",
        (cores * took.as_secs_f64() - plain_cores * plain.as_secs_f64()) / n as f64 * 1e9
    );
    out.push(Measure {
        workload: "PG→PG inserts, 4-stage chain".to_owned(),
        anchor: "ferry without transforms",
        rows: n,
        ferry: took,
        anchor_time: Some(plain),
        ferry_peak_rss_mb: rss,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });
    out.push(chain_in_process(n));
    // The inserts into both last-write-wins targets (not measured).
    b.ferry_apply(&lww, &ferry_lww);
    b.ferry_apply(&lww10, &ferry_lww10);
    let started = Instant::now();
    let ferry = Ferry::start(&sqlite.config, &sqlite.log);
    let took = time_until(started, "ferry sqlite", || {
        sqlite_rows(&sqlite_db, "SELECT count(*) FROM bench_marker") == ["1"]
    });
    let (rss, cores) = finish(ferry, took, &sqlite.log);
    assert_eq!(
        sqlite_rows(&sqlite_db, "SELECT count(*) FROM bench_rows"),
        [n.to_string()]
    );
    b.source.psql(
        "shop",
        "SELECT pg_drop_replication_slot('ferry_bench_sqlite')",
    );
    out.push(Measure {
        workload: "PG→SQLite inserts, 1,000-row txns".to_owned(),
        anchor: "native subscription (PG→PG)",
        rows: n,
        ferry: took,
        anchor_time: native,
        ferry_peak_rss_mb: rss,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });

    // 2. Updates of every row in 1,000-row transactions.
    b.workload(
        "updates",
        &format!(
            "DO $$ BEGIN FOR b IN 0..{} LOOP
               UPDATE bench_rows SET qty = qty + 1, at = now() WHERE id BETWEEN b * 1000 + 1 AND b * 1000 + 1000;
               COMMIT;
             END LOOP; END $$",
            batches - 1
        ),
    );
    let updates = b.apply_race(
        &pg,
        &ferry_pg,
        "bench_rows",
        "PG→PG updates, 1,000-row txns",
        n,
    );
    let plain = updates.ferry;
    out.push(updates);
    let (took, rss, cores) = b.ferry_apply(&lww, &ferry_lww);
    let sql = "SELECT count(*), sum(qty), sum(length(note)) FROM bench_rows";
    assert_eq!(
        b.target.psql("ferry_lww", sql),
        b.source.psql("shop", sql),
        "the last-write-wins target differs from the source"
    );
    out.push(Measure {
        workload: "PG→PG updates, last_write_wins".to_owned(),
        anchor: "ferry without conflict rules",
        rows: n,
        ferry: took,
        anchor_time: Some(plain),
        ferry_peak_rss_mb: rss,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });
    // A tenth of the rows written on the target after the source's updates: those updates lose.
    b.target.psql(
        "ferry_lww10",
        "UPDATE bench_rows SET note = 'local' WHERE id % 10 = 0",
    );
    let (took, _, _) = b.ferry_apply(&lww10, &ferry_lww10);
    let conflicts: f64 = b
        .target
        .psql("ferry_lww10", "SELECT count(*) FROM ferry_conflicts")
        .parse()
        .expect("a count");
    assert_eq!(
        conflicts as u64,
        n / 10,
        "every tenth update should have met a local write"
    );
    eprintln!(
        "bench:   last_write_wins with 10 % conflicting updates: {conflicts} conflicts in {:.2} s ({:.0} conflicts/s, {:.0} rows/s)",
        took.as_secs_f64(),
        conflicts / took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    // 3. Single-row transactions.
    let singles = n / 10;
    b.pgbench_workload(
        "single-row transactions",
        "INSERT INTO bench_single (qty, note, at) VALUES (:client_id, md5(random()::text), now());\n",
        4,
        singles / 4,
    );
    out.push(b.apply_race(
        &pg,
        &ferry_pg,
        "bench_single",
        "PG→PG single-row txns, 4 clients",
        singles,
    ));

    // 4. One transaction of n rows: memory must stay bounded.
    b.workload(
        "one large transaction",
        &format!("INSERT INTO bench_big SELECT g, g % 100, md5(g::text), now() FROM generate_series(1, {n}) g"),
    );
    out.push(b.apply_race(
        &pg,
        &ferry_pg,
        "bench_big",
        format!("PG→PG one {}-row txn", thousands(n)),
        n,
    ));

    // 5. Initial snapshot of bench_rows (n rows) vs a subscription's initial copy.
    for db in ["snap_ferry", "snap_native"] {
        b.target.create_db(db);
    }
    b.target.psql("snap_native", TABLES);
    b.source
        .psql("shop", "CREATE PUBLICATION snap_pub FOR TABLE bench_rows");
    let snap = b.pipeline(
        "bench_snap",
        "[\"public.bench_rows\"]",
        "initial",
        &format!(
            "type = \"postgres\"\nurl = \"{}\"",
            b.target.url("snap_ferry")
        ),
    );
    let probe = Probe::connect(&b.target.url("snap_native"));
    let connection = format!(
        "host=127.0.0.1 port={} dbname=shop user=postgres",
        b.source.port
    );
    b.target.psql(
        "snap_native",
        &format!("CREATE SUBSCRIPTION snap CONNECTION '{connection}' PUBLICATION snap_pub WITH (copy_data = true)"),
    );
    // As for apply: the clock starts when the table-copy worker runs.
    time_until(Instant::now(), "native copy worker start", || {
        probe.scalar("SELECT count(*) FROM pg_stat_subscription WHERE subname = 'snap' AND relid IS NOT NULL AND pid IS NOT NULL") == "1"
            || probe.scalar("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate IN ('f', 's', 'r')") == "1"
    });
    let started = Instant::now();
    // 'f' (copy finished) is committed with the copied rows.
    let native = time_until(started, "native copy", || {
        probe.scalar("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate IN ('f', 's', 'r')")
            == "1"
    });
    b.target
        .psql("snap_native", "ALTER SUBSCRIPTION snap DISABLE");
    let probe = Probe::connect(&b.target.url("snap_ferry"));
    let started = Instant::now();
    let ferry = Ferry::start(&snap.config, &snap.log);
    // A big table commits (with a checkpoint) after each chunk: the copy is done when no table is still copying.
    let took = time_until(started, "ferry snapshot", || {
        probe.scalar("SELECT count(*) FROM ferry_checkpoints") == "1"
            && probe.scalar(
                "SELECT count(*) FROM ferry_schemas WHERE applied::jsonb ? 'copying' OR applied::jsonb ? 'recopy'",
            ) == "0"
    });
    let (rss, cores) = finish(ferry, took, &snap.log);
    let sql = "SELECT count(*), sum(qty) FROM bench_rows";
    let want = b.source.psql("shop", sql);
    assert_eq!(b.target.psql("snap_ferry", sql), want);
    assert_eq!(b.target.psql("snap_native", sql), want);
    out.push(Measure {
        workload: format!("initial snapshot, {} rows", thousands(n)),
        anchor: "subscription copy_data",
        rows: n,
        ferry: took,
        anchor_time: Some(native),
        ferry_peak_rss_mb: rss,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });

    // 6. The same snapshot into the discard sink: Ferry's copy with every value parsed, and no target. The
    // anchor is supabase/etl's copy into a null destination, 1.28M rows/s, measured once on this machine (issue 15)
    // and not run here: its ratio is against that figure, not a run beside this one.
    let null_pos = b.dir.path().join("snap_null.pos");
    let null = b.pipeline(
        "bench_snap_null",
        "[\"public.bench_rows\"]",
        "initial",
        &format!("type = \"discard\"\npath = \"{}\"", null_pos.display()),
    );
    let started = Instant::now();
    let ferry = Ferry::start(&null.config, &null.log);
    let took = time_until(started, "ferry snapshot into discard", || {
        std::fs::read_to_string(&null_pos).is_ok_and(|t| !t.trim().is_empty())
    });
    let (rss, cores) = finish(ferry, took, &null.log);
    out.push(Measure {
        workload: format!("initial snapshot into discard, {} rows", thousands(n)),
        anchor: "supabase/etl null destination (1.28M rows/s, issue 15)",
        rows: n,
        ferry: took,
        anchor_time: Some(Duration::from_secs_f64(n as f64 / 1_280_000.0)),
        ferry_peak_rss_mb: rss,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });
    out
}

/// 1000000 → "1,000,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("pg benchmark: run it with scripts/bench pg [--json]");
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let runs = env_number("FERRY_BENCH_RUNS", 3).max(1);
    let n = rows().max(1000) / 1000 * 1000;
    // FERRY_BENCH_PART=throughput, latency, bigtxn, tables or pipelines runs one part alone (the last three only
    // that way).
    let part = std::env::var("FERRY_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "throughput" {
        throughput(runs, n, json);
    }
    if part.is_empty() || part == "latency" {
        latencies(runs, json);
    }
    // Not in the default run: ten times the rows, a few minutes per run.
    if part == "bigtxn" {
        big_transactions(runs, n * 10, json);
    }
    if part == "tables" {
        many_tables(runs, 2000, n / 10, json);
    }
    if part == "pipelines" {
        ten_pipelines(runs, 10, n, json);
    }
}

/// `pipelines` pipelines in one process (`ferry run --config a.toml … j.toml`), each over its own table, slot and
/// publication into one target, against one pipeline alone in a process: memory and CPU per pipeline, idle and
/// draining a backlog of `rows` rows in all (1,000-row transactions, spread evenly; the lone pipeline drains its
/// share alone).
fn ten_pipelines(runs: u64, pipelines: u64, rows: u64, json: bool) {
    let per = rows / pipelines / 1000 * 1000;
    let mut all = Vec::new();
    for run in 1..=runs {
        eprintln!("bench: {pipelines} pipelines run {run} of {runs} ({per} rows each)");
        let source = PgServer::start_with(SERVER_SETTINGS);
        let target = PgServer::start_with(SERVER_SETTINGS);
        let dir = scratch();
        source.create_db("shop");
        target.create_db("replica");
        let mut configs = Vec::new();
        // Pipeline 0 runs alone; 1..=pipelines together.
        for i in 0..=pipelines {
            source.psql(
                "shop",
                &format!(
                    "CREATE TABLE p{i} (id int8 PRIMARY KEY, qty int4 NOT NULL, note text NOT NULL, at timestamptz NOT NULL);
                     CREATE TABLE m{i} (id int8 PRIMARY KEY);"
                ),
            );
            let text = format!(
                "[pipeline]\nname = \"bench_p{i}\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
                 tables = [\"public.p{i}\", \"public.m{i}\"]\nsnapshot = \"never\"\n\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n",
                source.url("shop"),
                target.url("replica")
            );
            configs.push(write_config(dir.path(), &format!("p{i}"), &text));
        }
        let probe = Probe::connect(&target.url("replica"));
        let checkpoints = || {
            probe
                .scalar("SELECT count(*) FROM ferry_checkpoints")
                .parse::<u64>()
                .unwrap_or(0)
        };
        // Primed: every slot made and checkpointed. The idle memory of the ten is read here.
        let together: Vec<&std::path::Path> = configs[1..].iter().map(|c| c.as_path()).collect();
        let log = dir.path().join("ten.log");
        let solo_log = dir.path().join("one.log");
        let ferry = Ferry::start_many(&together, &log);
        time_until(Instant::now(), "ten pipelines start", || {
            checkpoints() >= pipelines
        });
        std::thread::sleep(Duration::from_secs(2));
        let idle_ten = peak_rss_mb(ferry.pid());
        assert!(
            ferry.terminate().success(),
            "ferry failed: {}",
            log.display()
        );
        let ferry = Ferry::start(&configs[0], &solo_log);
        time_until(Instant::now(), "one pipeline start", || {
            checkpoints() > pipelines
        });
        std::thread::sleep(Duration::from_secs(2));
        let idle_one = peak_rss_mb(ferry.pid());
        assert!(
            ferry.terminate().success(),
            "ferry failed: {}",
            solo_log.display()
        );
        for i in 0..=pipelines {
            source.psql(
                "shop",
                &format!(
                    "DO $$ BEGIN FOR b IN 0..{} LOOP
                       INSERT INTO p{i} SELECT g, g % 100, md5(g::text), now() FROM generate_series(b * 1000 + 1, b * 1000 + 1000) g;
                       COMMIT;
                     END LOOP; END $$",
                    per / 1000 - 1
                ),
            );
            source.psql("shop", &format!("INSERT INTO m{i} VALUES (1)"));
        }
        let marked = |range: std::ops::RangeInclusive<u64>| {
            range.into_iter().all(|i| {
                probe.scalar(&format!(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = 'm{i}'"
                )) == "1"
                    && probe.scalar(&format!("SELECT count(*) FROM public.m{i}")) == "1"
            })
        };
        let started = Instant::now();
        let ferry = Ferry::start_many(&together, &log);
        let ten = time_until(started, "ten pipelines drain", || marked(1..=pipelines));
        let (ten_rss, ten_cores) = finish(ferry, ten, &log);
        let started = Instant::now();
        let ferry = Ferry::start(&configs[0], &solo_log);
        let one = time_until(started, "one pipeline drain", || marked(0..=0));
        let (one_rss, one_cores) = finish(ferry, one, &solo_log);
        for i in 0..=pipelines {
            let q = format!("SELECT count(*), sum(qty) FROM p{i}");
            assert_eq!(
                target.psql("replica", &q),
                source.psql("shop", &q),
                "pipeline p{i}: the target differs"
            );
        }
        let us_per_row =
            |cores: f64, took: Duration, n: u64| cores * took.as_secs_f64() / n as f64 * 1e6;
        eprintln!(
            "bench:   {pipelines} pipelines in one process: idle {idle_ten:.0} MB ({:.1} MB per pipeline), draining \
             {ten_rss:.0} MB ({:.1} MB per pipeline), {:.2} µs CPU per row; one pipeline alone: idle {idle_one:.0} MB, \
             draining {one_rss:.0} MB, {:.2} µs CPU per row",
            idle_ten / pipelines as f64,
            ten_rss / pipelines as f64,
            us_per_row(ten_cores, ten, per * pipelines),
            us_per_row(one_cores, one, per)
        );
        all.push(vec![Measure {
            workload: format!("{pipelines} pipelines in one process"),
            anchor: "one pipeline alone",
            rows: per * pipelines,
            ferry: ten,
            // The lone pipeline's rate, counted over the same number of rows.
            anchor_time: Some(one.mul_f64(pipelines as f64)),
            ferry_peak_rss_mb: ten_rss,
            ferry_cpu_cores: ten_cores,
            source_cpu_us_per_row: None,
            anchor_source_cpu_us_per_row: None,
        }]);
    }
    report(&all, json);
}

/// A pipeline over `tables` tables against the same rows in one table: start-up with the snapshot of a few rows
/// per table (until the pipeline streams), then the steady apply of a backlog of `rows` rows in transactions of
/// 100 rows, each transaction into one table, spread over all of them (after a warm-up that meets every table).
fn many_tables(runs: u64, tables: u64, rows: u64, json: bool) {
    let mut all = Vec::new();
    for run in 1..=runs {
        eprintln!("bench: {tables} tables run {run} of {runs}");
        let source = PgServer::start_with(SERVER_SETTINGS);
        let target = PgServer::start_with(SERVER_SETTINGS);
        let dir = scratch();
        source.create_db("shop");
        let per_table = 50;
        source.psql(
            "shop",
            &format!(
                "CREATE SCHEMA many; CREATE SCHEMA one;
                 CREATE TABLE one.t (id int8 PRIMARY KEY, qty int4 NOT NULL, note text NOT NULL);
                 CREATE TABLE one.marker (id int8 PRIMARY KEY); CREATE TABLE many.marker (id int8 PRIMARY KEY);
                 DO $$ BEGIN FOR i IN 1..{tables} LOOP
                   EXECUTE format('CREATE TABLE many.t%s (id int8 PRIMARY KEY, qty int4 NOT NULL, note text NOT NULL)', i);
                   EXECUTE format('INSERT INTO many.t%s SELECT g, g, md5(g::text) FROM generate_series(1, {per_table}) g', i);
                 END LOOP; END $$;
                 INSERT INTO one.t SELECT g, g, md5(g::text) FROM generate_series(1, {}) g;",
                tables * per_table
            ),
        );
        let mut measures = Vec::new();
        let mut startup = Vec::new();
        let mut apply = Vec::new();
        for schema in ["many", "one"] {
            target.create_db(schema);
            let list: Vec<String> = if schema == "many" {
                (1..=tables).map(|i| format!("\"many.t{i}\"")).collect()
            } else {
                vec!["\"one.t\"".into()]
            };
            let text = format!(
                "[pipeline]\nname = \"bench_{schema}\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n                 tables = [{}, \"{schema}.marker\"]\n\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n",
                source.url("shop"),
                list.join(", "),
                target.url(schema)
            );
            let config = write_config(dir.path(), schema, &text);
            let log = dir.path().join(format!("{schema}.log"));
            let started = Instant::now();
            let ferry = Ferry::start(&config, &log);
            let took = time_until(started, "start-up and snapshot", || {
                ferry
                    .get("/status")
                    .is_some_and(|(_, body)| body.contains("\"state\":\"streaming\""))
            });
            let (rss, _) = finish(ferry, took, &log);
            startup.push((took, rss));
            // The backlog: a warm-up of one single-row transaction per table (a restarted pipeline meets each table
            // anew: its catalog lookup on the source, its check on the target), a marker, then `rows` rows, 100 per
            // transaction, round robin over the tables, and a second marker. Measured: from the first marker to
            // the second, the steady apply.
            let target_of = |b: &str| {
                if schema == "many" {
                    format!("'many.t' || ({b} % {tables} + 1)")
                } else {
                    "'one.t'".to_owned()
                }
            };
            source.psql(
                "shop",
                &format!(
                    "DO $$ BEGIN FOR b IN 0..{} LOOP
                       EXECUTE format('INSERT INTO %s VALUES (%s, 0, %L)', {}, 500000 + b, 'warm');
                       COMMIT;
                     END LOOP; END $$",
                    tables - 1,
                    target_of("b")
                ),
            );
            source.psql("shop", &format!("INSERT INTO {schema}.marker VALUES (1)"));
            source.psql(
                "shop",
                &format!(
                    "DO $$ BEGIN FOR b IN 0..{} LOOP
                       EXECUTE format('INSERT INTO %s SELECT g, g, md5(g::text) FROM generate_series(%s, %s) g',
                                      {}, 1000000 + b * 100, 1000000 + b * 100 + 99);
                       COMMIT;
                     END LOOP; END $$",
                    rows / 100 - 1,
                    target_of("b")
                ),
            );
            source.psql("shop", &format!("INSERT INTO {schema}.marker VALUES (2)"));
            let probe = Probe::connect(&target.url(schema));
            let markers = || {
                probe
                    .scalar(&format!("SELECT count(*) FROM {schema}.marker"))
                    .parse::<u32>()
                    .unwrap_or(0)
            };
            let started = Instant::now();
            let ferry = Ferry::start(&config, &log);
            let warm = time_until(started, "warm-up apply", || markers() >= 1);
            let took = time_until(started, "backlog apply", || markers() == 2) - warm;
            let (rss, cores) = finish(ferry, warm + took, &log);
            eprintln!(
                "bench:   {schema}: warm-up ({tables} single-row transactions) {:.2} s",
                warm.as_secs_f64()
            );
            apply.push((took, rss, cores));
        }
        eprintln!(
            "bench:   start-up with snapshot: {tables} tables {:.1} s ({:.0} MB), one table {:.1} s ({:.0} MB)",
            startup[0].0.as_secs_f64(),
            startup[0].1,
            startup[1].0.as_secs_f64(),
            startup[1].1
        );
        measures.push(Measure {
            workload: format!("start-up + snapshot, {tables} tables"),
            anchor: "the same rows in one table",
            rows: tables * per_table,
            ferry: startup[0].0,
            anchor_time: Some(startup[1].0),
            ferry_peak_rss_mb: startup[0].1,
            ferry_cpu_cores: 0.0,
            source_cpu_us_per_row: None,
            anchor_source_cpu_us_per_row: None,
        });
        measures.push(Measure {
            workload: format!("apply over {tables} tables"),
            anchor: "the same rows in one table",
            rows,
            ferry: apply[0].0,
            anchor_time: Some(apply[1].0),
            ferry_peak_rss_mb: apply[0].1,
            ferry_cpu_cores: apply[0].2,
            source_cpu_us_per_row: None,
            anchor_source_cpu_us_per_row: None,
        });
        all.push(measures);
    }
    report(&all, json);
}

/// One transaction of `n` rows written while each contender replicates live (PostgreSQL 14+ streams it to both
/// before it commits: Ferry spools it, the native subscription runs with `streaming = on`). Measures how long
/// after the source's COMMIT returns the target holds every row, and Ferry's peak RSS. Each contender gets its own
/// transaction, alone on the machine.
/// Watches table `bench_big` of the database at `url` from now on, in a thread of its own: the instant its file
/// first grows, that is rows written there, committed or not (`None` if none until `stop`).
fn first_write(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let probe = Probe::connect(&url);
        let size = || {
            probe
                .scalar("SELECT pg_relation_size('bench_big')")
                .parse::<i64>()
                .unwrap_or(0)
        };
        let before = size();
        while !stop.load(Ordering::Relaxed) {
            if size() > before {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    })
}

/// Seconds from `start` to `at`, NaN for none.
fn secs_since(start: Instant, at: Option<Instant>) -> f64 {
    at.map_or(f64::NAN, |t| {
        t.saturating_duration_since(start).as_secs_f64()
    })
}

fn big_transactions(runs: u64, n: u64, json: bool) {
    let mut all = Vec::new();
    // Per run: seconds from the transaction's start to its commit, to the first row at Ferry's target, and at the
    // native subscription's.
    let mut firsts: Vec<[f64; 3]> = Vec::new();
    for run in 1..=runs {
        eprintln!("bench: big transaction run {run} of {runs} ({n} rows)");
        let b = Bench::new();
        let insert = |from: u64| {
            format!(
                "INSERT INTO bench_big SELECT g, g % 100, md5(g::text), now() FROM generate_series({from}, {}) g",
                from + n - 1
            )
        };
        let count = |probe: &Probe| {
            probe
                .scalar("SELECT count(*) FROM bench_big")
                .parse::<u64>()
                .unwrap_or(0)
        };
        // Native: the subscription applies while the transaction is written (`parallel` where the server has it,
        // PostgreSQL 16+; before that `on` spools the transaction and applies it at its commit).
        let version: u32 = b
            .target
            .psql("native", "SHOW server_version_num")
            .parse()
            .unwrap_or(0);
        let mode = if version >= 160_000 { "parallel" } else { "on" };
        b.target.psql(
            "native",
            &format!("ALTER SUBSCRIPTION native SET (streaming = {mode})"),
        );
        b.target.psql("native", "ALTER SUBSCRIPTION native ENABLE");
        let probe = Probe::connect(&b.target.url("native"));
        time_until(Instant::now(), "native apply worker start", || {
            probe.scalar("SELECT count(*) FROM pg_stat_subscription WHERE subname = 'native' AND pid IS NOT NULL") == "1"
        });
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = first_write(b.target.url("native"), stop.clone());
        let started = Instant::now();
        b.source.psql("shop", &insert(1));
        let committed = Instant::now();
        let native = time_until(committed, "native big transaction", || count(&probe) == n);
        stop.store(true, Ordering::Relaxed);
        let native_first = secs_since(started, watcher.join().expect("watcher"));
        b.target.psql("native", "ALTER SUBSCRIPTION native DISABLE");
        // Ferry (`[source] streaming = true`): streaming from the start, its transaction written after the native
        // one was applied.
        let pipeline = b.pipeline(
            "bench_bigtxn",
            "[\"public.bench_big\"]\nstreaming = true",
            "never",
            &format!(
                "type = \"postgres\"\nurl = \"{}\"",
                b.target.url("ferry_pg")
            ),
        );
        b.target.psql("ferry_pg", TABLES);
        let probe = Probe::connect(&b.target.url("ferry_pg"));
        let ferry = Ferry::start(&pipeline.config, &pipeline.log);
        ferry.wait_streaming();
        // A steady stream has described the table before a big transaction comes (a transaction applies live only
        // on tables described in this session): one change, applied.
        b.source.psql(
            "shop",
            "BEGIN; INSERT INTO bench_big VALUES (0, 0, '', now()); DELETE FROM bench_big WHERE id = 0; COMMIT",
        );
        time_until(Instant::now(), "ferry warm-up change", || {
            probe.scalar("SELECT pg_relation_size('bench_big')") != "0"
        });
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = first_write(b.target.url("ferry_pg"), stop.clone());
        let started = Instant::now();
        b.source.psql("shop", &insert(n + 1));
        let written = started.elapsed();
        let committed = Instant::now();
        let took = time_until(committed, "ferry big transaction", || count(&probe) == n);
        stop.store(true, Ordering::Relaxed);
        let ferry_first = secs_since(started, watcher.join().expect("watcher"));
        eprintln!(
            "bench:   the source committed {:.1} s after it began; first row at the target: ferry {ferry_first:.1} s,              native {native_first:.1} s",
            written.as_secs_f64()
        );
        firsts.push([written.as_secs_f64(), ferry_first, native_first]);
        let (rss, cores) = finish(ferry, written + took, &pipeline.log);
        eprintln!(
            "bench:   after COMMIT: ferry {:.1} s, native {:.1} s; ferry peak RSS {rss:.0} MB",
            took.as_secs_f64(),
            native.as_secs_f64()
        );
        all.push(vec![Measure {
            workload: format!("one {}-row txn, live: after COMMIT", thousands(n)),
            anchor: if mode == "parallel" {
                "native subscription, streaming = parallel"
            } else {
                "native subscription, streaming = on"
            },
            rows: n,
            ferry: took,
            anchor_time: Some(native),
            ferry_peak_rss_mb: rss,
            ferry_cpu_cores: cores,
            source_cpu_us_per_row: None,
            anchor_source_cpu_us_per_row: None,
        }]);
    }
    report(&all, json);
    let at = |i: usize| median(firsts.iter().map(|f| f[i]).collect());
    let (commit, ferry, native) = (at(0), at(1), at(2));
    let workload = format!(
        "one {}-row txn, live: first row at the target",
        thousands(n)
    );
    if json {
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        println!(
            "{}",
            serde_json::json!({
                "workload": workload,
                "source_commit_s": round1(commit),
                "ferry_first_row_s": round1(ferry),
                "anchor": "native subscription",
                "anchor_first_row_s": round1(native),
                "ferry_first_row_before_commit": ferry < commit,
            })
        );
    } else {
        println!(
            "{workload:<36}   the source committed at {commit:.1} s; first row at the target: ferry {ferry:.1} s{},              native {native:.1} s (medians)",
            if ferry < commit { " (before the commit)" } else { "" }
        );
    }
}

/// The throughput rows: each run on fresh servers, medians reported.
fn throughput(runs: u64, n: u64, json: bool) {
    let mut all: Vec<Vec<Measure>> = Vec::new();
    for run in 1..=runs {
        eprintln!("bench: run {run} of {runs} ({n} rows per workload)");
        let measures = run_once(n);
        for m in &measures {
            eprintln!(
                "bench:   {:<36} ferry {:>8.0} rows/s ({:.2} cores)  {} {:>8.0} rows/s  peak RSS {:.0} MB",
                m.workload,
                per_second(m.rows, m.ferry),
                m.ferry_cpu_cores,
                m.anchor,
                m.anchor_time.map_or(0.0, |t| per_second(m.rows, t)),
                m.ferry_peak_rss_mb
            );
        }
        all.push(measures);
    }
    report(&all, json);
}

/// The latency rows (lag under a steady load, synchronous commit), on their own servers.
fn latencies(runs: u64, json: bool) {
    let mut latencies = Vec::new();
    for run in 1..=runs {
        eprintln!("bench: latency run {run} of {runs}");
        let dir = scratch();
        let measures = vec![latency::lag(dir.path()), latency::sync_commit(dir.path())];
        for m in &measures {
            eprintln!(
                "bench:   {:<36} ferry p50 {:.2} p99 {:.2} max {:.2}  {} p50 {:.2} p99 {:.2} max {:.2}",
                m.workload,
                m.ferry.p50,
                m.ferry.p99,
                m.ferry.max,
                m.anchor,
                m.anchor_figures.p50,
                m.anchor_figures.p99,
                m.anchor_figures.max
            );
        }
        latencies.push(measures);
    }
    latency::report(&latencies, json);
}
