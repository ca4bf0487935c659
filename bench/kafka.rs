//! `scripts/bench kafka`: PostgreSQL → Kafka against a plain rdkafka producer, on the noida-db broker
//! (`FERRY_BENCH_PART=sink`), then Kafka → PostgreSQL by consumer groups of 1, 2 and 4 processes against a direct
//! pipeline (`FERRY_BENCH_PART=scale`, see [`scale`]); both when the variable is unset.
//!
//! Each run starts a fresh PostgreSQL and broker. Three pipelines (exactly-once and at-least-once, JSON records,
//! and a discard sink) are primed, so their first checkpoints sit before the workload; then N rows are written in
//! 1,000-row transactions and a marker row. Each pipeline drains the backlog alone, timed until its checkpoint
//! reaches the marker's commit (the checkpoint is written with, or after, the records). The discard pipeline is
//! the ceiling the source sets: no PG→Kafka pipeline drains faster than PostgreSQL decodes. The Kafka sink is then
//! also timed alone, in this process, fed the same changes from memory in 10,000-event batches. The anchor is a
//! plain producer (no transactions) writing N records of the same key and value sizes as Ferry's to the same
//! broker, timed to its final flush.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use support::*;

fn kafka_settings(brokers: &str, exactly_once: bool) -> ferry_config::KafkaSink {
    ferry_config::KafkaSink {
        topic_prefix: "bench".into(),
        exactly_once,
        schemas: false,
        ..ferry_config::KafkaSink::new(brokers)
    }
}

struct Bench {
    pg: PgServer,
    broker: KafkaBroker,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Bench {
    fn config(&self, name: &str, delivery: &str) -> std::path::PathBuf {
        let sink = match delivery {
            "discard" => format!(
                "type = \"discard\"\npath = \"{}\"",
                self.dir.path().join("decode.pos").display()
            ),
            _ => format!(
                "type = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"bench_{name}\"\nschemas = false\ndelivery = \"{delivery}\"",
                self.broker.brokers()
            ),
        };
        write_config(
            self.dir.path(),
            name,
            &format!(
                "[pipeline]\nname = \"{name}\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"public.bench_rows\", \"public.bench_marker\"]\n\n[sink]\n{sink}\n",
                self.pg.url("shop"),
            ),
        )
    }

    /// The pipeline's stored checkpoint, as an LSN.
    fn checkpoint(&self, name: &str, delivery: &str) -> Option<ferry_core::Lsn> {
        let text = if delivery == "discard" {
            std::fs::read_to_string(self.dir.path().join("decode.pos")).ok()
        } else {
            let settings = kafka_settings(&self.broker.brokers(), delivery == "exactly_once");
            self.runtime
                .block_on(ferry_sink::kafka::stored_checkpoint(
                    &settings, name, "kafka",
                ))
                .ok()
                .flatten()
                .map(|(position, _)| position)
        };
        text.and_then(|p| p.trim().parse::<ferry_core::Position>().ok())
            .and_then(|p| p.as_lsn())
    }

    /// Runs a primed pipeline until its checkpoint reaches `target`: its time, peak RSS and CPU.
    fn drain(&self, name: &str, delivery: &str, target: ferry_core::Lsn) -> (Duration, f64, f64) {
        let config = self.config(name, delivery);
        let log = self.dir.path().join(format!("{name}.log"));
        let started = Instant::now();
        let ferry = Ferry::start(&config, &log);
        // The live checkpoint from /status: cheap to poll (reading the checkpoint topic would load the broker).
        let took = time_until(started, name, || {
            ferry
                .get("/status")
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|s| {
                    s[0]["sinks"][0]["checkpoint"]
                        .as_str()
                        .and_then(|c| c.parse::<ferry_core::Position>().ok())
                })
                .and_then(|p| p.as_lsn())
                .is_some_and(|c| c >= target)
        });
        let (rss, cores) = finish(ferry, took, &log);
        if std::env::var("FERRY_BENCH_TRACE").is_ok() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("kafka batch")).take(12) {
                eprintln!("{line}");
            }
        }
        (took, rss, cores)
    }

    /// The Kafka sink alone, exactly once: the workload's changes (same table, same kind of values) built in
    /// memory first, then fed in 10,000-event batches through the pipeline's sink runner (which joins waiting
    /// batches into one Kafka transaction, as it does for a sink that is behind its source).
    /// Returns the time and the CPU this process used meanwhile (the sink and librdkafka's threads), in cores.
    fn sink_alone(&self, n: u64) -> (Duration, f64) {
        use ferry_core::{
            Change, Column, ColumnType, Dialect, Event, Lsn, Position, RowOp, TableId, TableSchema,
            Timestamp, Value,
        };
        let column = |name: &str, ty: ColumnType, source_type: &str| {
            Column::new(name, ty, source_type, false)
        };
        let table = std::sync::Arc::new(TableSchema {
            id: TableId::new("public", "bench_rows"),
            columns: vec![
                column("id", ColumnType::Int8, "bigint"),
                column("qty", ColumnType::Int4, "integer"),
                column("note", ColumnType::Text, "text"),
                column("at", ColumnType::TimestampTz, "timestamp with time zone"),
            ],
            primary_key: vec![0],
            identity: Vec::new(),
            version: 1,
            relation_id: None,
            lineage: Default::default(),
            dialect: Dialect::Postgres,
            keeps_absent_columns: false,
        });
        let now = Timestamp::now();
        let mut events = Vec::with_capacity(n as usize + n as usize / 500);
        for t in 0..n / 1000 {
            events.push(Event::Begin(std::sync::Arc::new(ferry_core::TxContext {
                xid: Some(t as u32 + 1000),
                commit_time: Some(ferry_core::Timestamp::now()),
                ..ferry_core::TxContext::at(Position::pg(Lsn(2 * t + 1)))
            })));
            for id in t * 1000 + 1..=t * 1000 + 1000 {
                let after = vec![
                    Value::Int(id as i64),
                    Value::Int(id as i64 % 100),
                    Value::Text(format!("note {id}")),
                    Value::TimestampTz(now),
                ];
                events.push(Event::Change(Change::Row {
                    table: table.clone(),
                    op: RowOp::Insert { after },
                }));
            }
            events.push(Event::Commit {
                position: Position::pg(Lsn(2 * t + 2)),
                commit_time: now,
            });
        }
        let mut settings = kafka_settings(&self.broker.brokers(), true);
        settings.topic_prefix = "bench_mem".into();
        let info = ferry_sink::kafka::SourceInfo {
            connector: "postgresql",
            name: "bench_mem".into(),
            db: "shop".into(),
        };
        let (took, cores) = self.runtime.block_on(async {
            let sink = ferry_sink::kafka::KafkaSink::connect("kafka", "mem", &settings, info)
                .await
                .expect("connect the Kafka sink");
            // As the pipeline drives a sink that is behind: 10,000-event batches waiting in its channel.
            let batches: Vec<_> = events
                .chunks(10_000)
                .map(|chunk| {
                    std::sync::Arc::new(ferry_core::Batch {
                        events: chunk.to_vec(),
                        bytes: 0,
                    })
                })
                .collect();
            let (tx, rx) = tokio::sync::mpsc::channel(batches.len());
            for batch in batches {
                tx.send(batch).await.expect("queue a batch");
            }
            drop(tx);
            let (tracker, _acked) = ferry_core::pipeline::AckTracker::new(vec![None]);
            let stats =
                std::sync::Arc::new(ferry_core::stats::PipelineStats::new("mem", &["kafka"]));
            let cpu = cpu_seconds(std::process::id());
            let started = Instant::now();
            ferry_core::pipeline::run_sink(sink, 0, None, rx, tracker, stats, Default::default())
                .await
                .expect("the Kafka sink");
            let took = started.elapsed();
            (
                took,
                (cpu_seconds(std::process::id()) - cpu) / took.as_secs_f64(),
            )
        });
        let records = self.broker.consume(&["bench_mem.public.bench_rows"]).len() as u64;
        assert_eq!(records, n, "the sink alone wrote {records} records of {n}");
        (took, cores)
    }
}

/// The workload: `n` rows into `shop.bench_rows`, in 1,000-row transactions.
fn write_rows(pg: &PgServer, n: u64) {
    eprintln!("bench:   writing {n} rows in 1,000-row transactions");
    pg.psql(
        "shop",
        &format!(
            "DO $$ BEGIN FOR t IN 0..{} LOOP
               INSERT INTO bench_rows SELECT g, g % 100, 'note ' || g, now() FROM generate_series(t * 1000 + 1, t * 1000 + 1000) g;
               COMMIT; END LOOP; END $$;",
            n / 1000 - 1
        ),
    );
}

const CONTENDERS: [(&str, &str, &str); 3] = [
    ("eos", "exactly_once", "PG→Kafka exactly once (JSON)"),
    ("alo", "at_least_once", "PG→Kafka at least once (JSON)"),
    ("decode", "discard", "PG decode only (discard sink)"),
];

fn run_once(n: u64) -> Vec<Measure> {
    let pg = PgServer::start_with(&[
        "wal_level=logical",
        "max_wal_size=8GB",
        "wal_sender_timeout=0",
    ]);
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE bench_rows (id int8 PRIMARY KEY, qty int4 NOT NULL, note text NOT NULL, at timestamptz NOT NULL);
         CREATE TABLE bench_marker (id int8 PRIMARY KEY);",
    );
    let b = Bench {
        pg,
        broker: KafkaBroker::start(),
        dir: scratch(),
        runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime"),
    };
    // Prime every pipeline: slot, snapshot of the empty tables, first checkpoint.
    for (name, delivery, _) in CONTENDERS {
        let config = b.config(name, delivery);
        let log = b.dir.path().join(format!("{name}.log"));
        let ferry = Ferry::start(&config, &log);
        assert!(
            wait_until(Duration::from_secs(60), || b
                .checkpoint(name, delivery)
                .is_some()),
            "{name} did not start: {}",
            ferry.log()
        );
        assert!(ferry.terminate().success(), "{name} failed");
    }
    write_rows(&b.pg, n);
    let target: ferry_core::Lsn = b
        .pg
        .psql(
            "shop",
            "BEGIN; INSERT INTO bench_marker VALUES (1); SELECT pg_current_wal_insert_lsn(); COMMIT;",
        )
        .parse()
        .expect("an LSN");
    let mut out = Vec::new();
    let mut plain_record = (0usize, 0usize);
    for (name, delivery, label) in CONTENDERS {
        let (took, rss, cores) = b.drain(name, delivery, target);
        if delivery == "exactly_once" {
            // Every record is there, and a sample of them gives the anchor's record sizes.
            let topic = format!("bench_{name}.public.bench_rows");
            let records = b.broker.consume(&[&topic]);
            assert!(
                records.len() as u64 >= n,
                "records missing: {} of {n}",
                records.len()
            );
            let sizes: Vec<(usize, usize)> = records
                .iter()
                .take(1000)
                .map(|r| {
                    (
                        r["key"].as_str().map_or(0, str::len),
                        r["value"].as_str().map_or(0, str::len),
                    )
                })
                .collect();
            let count = sizes.len().max(1);
            plain_record = (
                sizes.iter().map(|s| s.0).sum::<usize>() / count,
                sizes.iter().map(|s| s.1).sum::<usize>() / count,
            );
        }
        out.push(Measure {
            workload: label.into(),
            anchor: "plain rdkafka producer",
            rows: n,
            ferry: took,
            anchor_time: None,
            ferry_peak_rss_mb: rss,
            ferry_cpu_cores: cores,
            source_cpu_us_per_row: None,
            anchor_source_cpu_us_per_row: None,
        });
    }
    let (took, cores) = b.sink_alone(n);
    out.push(Measure {
        workload: "Kafka sink alone, exactly once".into(),
        anchor: "plain rdkafka producer",
        rows: n,
        ferry: took,
        anchor_time: None,
        // In this process, next to the prepared events: not the sink's own figure.
        ferry_peak_rss_mb: f64::NAN,
        ferry_cpu_cores: cores,
        source_cpu_us_per_row: None,
        anchor_source_cpu_us_per_row: None,
    });
    anchor(&b, n, plain_record, out)
}

fn anchor(b: &Bench, n: u64, plain_record: (usize, usize), mut out: Vec<Measure>) -> Vec<Measure> {
    // The anchor: the same number of records of the same sizes, produced as fast as librdkafka goes.
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", b.broker.brokers())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let (key_len, value_len) = plain_record;
    let value = vec![b'x'; value_len];
    let started = Instant::now();
    for i in 0..n {
        let mut key = format!("{{\"id\":{i}}}").into_bytes();
        key.resize(key_len.max(key.len()), b' ');
        let mut record = BaseRecord::to("plain").key(&key[..]).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let plain = started.elapsed();
    for m in &mut out {
        m.anchor_time = Some(plain);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("kafka benchmark: run it with scripts/bench kafka [--json]");
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let runs = env_number("FERRY_BENCH_RUNS", 3).max(1);
    let n = env_number("FERRY_BENCH_ROWS", 200_000).max(1000) / 1000 * 1000;
    let part = std::env::var("FERRY_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "sink" {
        let mut all = Vec::new();
        for run in 1..=runs {
            eprintln!("bench: run {run} of {runs} ({n} rows)");
            all.push(run_once(n));
        }
        report(&all, json);
    }
    if part.is_empty() || part == "scale" {
        let mut all = Vec::new();
        for run in 1..=runs {
            eprintln!("bench: scale-out run {run} of {runs} ({n} rows, 8 partitions)");
            all.push(scale::run_once(n));
        }
        report(&all, json);
        for (k, ratio, cpu) in scale::scaling(&all) {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"workload": "kafka scale-out", "processes": k, "scaling": (ratio * 100.0).round() / 100.0, "ferry_cpu_us_per_row": (cpu * 100.0).round() / 100.0})
                );
            } else {
                println!("scale-out: {k} process(es) apply {ratio:.2}× the rows/s of one, {cpu:.2} µs of Ferry CPU per row");
            }
        }
    }
}

/// `FERRY_BENCH_PART=scale`: Kafka → PostgreSQL apply by a consumer group of 1, 2 and 4 `ferry` processes on an
/// 8-partition topic, beside a direct PostgreSQL → PostgreSQL pipeline draining the same rows from the slot.
///
/// The rows (1,000-row transactions) are written once; a capture pipeline publishes them (exactly once, JSON
/// with the schema block) before any apply group starts, and the direct pipeline is primed before the writes, so
/// every contender drains a backlog. Each is timed from its start until its target table holds every row; CPU
/// per row sums the group's processes. noida-db answers a fetch with the whole backlog whatever the consumer's
/// fetch limits, so the consumers accept responses up to 2 GB.
mod scale {
    use super::*;

    pub const GROUPS: [usize; 3] = [1, 2, 4];

    fn count(pg: &PgServer, db: &str) -> u64 {
        pg.try_psql(db, "SELECT count(*) FROM bench_rows")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    pub fn run_once(n: u64) -> Vec<Measure> {
        let pg = PgServer::start_with(&[
            "wal_level=logical",
            "max_wal_size=8GB",
            "wal_sender_timeout=0",
        ]);
        pg.create_db("shop");
        for db in ["direct", "g1", "g2", "g4"] {
            pg.create_db(db);
        }
        pg.psql(
            "shop",
            "CREATE TABLE bench_rows (id int8 PRIMARY KEY, qty int4 NOT NULL, note text NOT NULL, at timestamptz NOT NULL)",
        );
        let broker = KafkaBroker::start();
        let dir = scratch();
        let direct = write_config(
            dir.path(),
            "direct",
            &format!(
                "[pipeline]\nname = \"direct\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n",
                pg.url("shop"),
                pg.url("direct")
            ),
        );
        let capture = write_config(
            dir.path(),
            "capture",
            &format!(
                "[pipeline]\nname = \"capture\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
                 [sink]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"scale\"\npartitions = 8\n",
                pg.url("shop"),
                broker.brokers()
            ),
        );
        // Prime the direct pipeline (slot and empty snapshot), so it drains the backlog like the groups.
        {
            let log = dir.path().join("direct.log");
            let ferry = Ferry::start(&direct, &log);
            assert!(
                wait_until(Duration::from_secs(60), || pg
                    .try_psql("direct", "SELECT count(*) FROM ferry_checkpoints")
                    .is_ok_and(|c| c == "1")),
                "the direct pipeline did not start: {}",
                ferry.log()
            );
            assert!(ferry.terminate().success(), "direct failed");
        }
        write_rows(&pg, n);
        {
            let log = dir.path().join("capture.log");
            let ferry = Ferry::start(&capture, &log);
            let started = Instant::now();
            time_until(started, "capture", || {
                metric(&ferry, "ferry_sink_rows_total") >= n as f64
            });
            assert!(ferry.terminate().success(), "capture failed");
        }
        let mut out = Vec::new();
        let log = dir.path().join("direct.log");
        let started = Instant::now();
        let ferry = Ferry::start(&direct, &log);
        let direct_took = time_until(started, "direct", || count(&pg, "direct") >= n);
        let (_, direct_cores) = finish(ferry, direct_took, &log);
        eprintln!(
            "bench:   direct PG→PG: {:.0} rows/s, {:.2} µs CPU per row",
            per_second(n, direct_took),
            direct_cores * direct_took.as_secs_f64() / n as f64 * 1e6
        );
        for k in GROUPS {
            let db = format!("g{k}");
            let config = write_config(
                dir.path(),
                &format!("apply{k}"),
                &format!(
                    "[pipeline]\nname = \"apply{k}\"\n\n[source]\ntype = \"kafka\"\nbrokers = \"{}\"\n\
                     topics = [\"scale.public.bench_rows\"]\ngroup_id = \"bench-{k}\"\nassignment = \"roundrobin\"\n\
                     [source.kafka]\n\"receive.message.max.bytes\" = 2000000000\n\n\
                     [sink]\ntype = \"postgres\"\nurl = \"{}\"\n",
                    broker.brokers(),
                    pg.url(&db)
                ),
            );
            let started = Instant::now();
            let group: Vec<Ferry> = (0..k)
                .map(|i| Ferry::start(&config, &dir.path().join(format!("apply{k}-{i}.log"))))
                .collect();
            let took = time_until(started, &format!("{k} consumers"), || count(&pg, &db) >= n);
            let cpu: f64 = group.iter().map(|f| cpu_seconds(f.pid())).sum();
            let rss = group
                .iter()
                .map(|f| peak_rss_mb(f.pid()))
                .fold(0.0, f64::max);
            for f in group {
                assert!(
                    f.terminate().success(),
                    "a consumer of the {k}-process group failed"
                );
            }
            eprintln!(
                "bench:   {k} consumer process(es): {:.0} rows/s, {:.2} µs CPU per row",
                per_second(n, took),
                cpu / n as f64 * 1e6
            );
            out.push(Measure {
                workload: format!(
                    "Kafka→PG apply, {k} process{}",
                    if k == 1 { "" } else { "es" }
                ),
                anchor: "direct PG→PG (Ferry)",
                rows: n,
                ferry: took,
                anchor_time: Some(direct_took),
                ferry_peak_rss_mb: rss,
                ferry_cpu_cores: cpu / took.as_secs_f64(),
                source_cpu_us_per_row: None,
                anchor_source_cpu_us_per_row: None,
            });
        }
        out
    }

    /// The median rows/s of `k` processes over that of one, from the report's runs.
    pub fn scaling(all: &[Vec<Measure>]) -> Vec<(usize, f64, f64)> {
        let rate = |i: usize| {
            median(
                all.iter()
                    .map(|r| per_second(r[i].rows, r[i].ferry))
                    .collect(),
            )
        };
        let cpu = |i: usize| {
            median(
                all.iter()
                    .map(|r| {
                        r[i].ferry_cpu_cores * r[i].ferry.as_secs_f64() / r[i].rows as f64 * 1e6
                    })
                    .collect(),
            )
        };
        GROUPS
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, rate(i) / rate(0), cpu(i)))
            .collect()
    }
}
