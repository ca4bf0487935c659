//! `scripts/bench kafka`: PostgreSQL → Kafka against a plain rdkafka producer, on the noida-db broker.
//!
//! Each run starts a fresh PostgreSQL and broker. Two pipelines (exactly-once and at-least-once, JSON records) are
//! primed, so their first checkpoints sit before the workload; then N rows are written in 1,000-row transactions
//! and a marker row. Each pipeline drains the backlog alone, timed until its checkpoint reaches the marker's commit
//! (the checkpoint is written with, or after, the records). The anchor is a plain producer (no transactions)
//! writing N records of the same key and value sizes as Ferry's to the same broker, timed to its final flush.

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
        brokers: brokers.to_owned(),
        topic_prefix: "bench".into(),
        topic: "{prefix}.{schema}.{table}".into(),
        format: ferry_config::KafkaFormat::Json,
        exactly_once,
        schemas: false,
        tombstones: true,
        transaction_topic: false,
        decimal_handling: ferry_config::DecimalHandling::Precise,
        partitions: 1,
        replication_factor: 1,
        cleanup_policy: "delete".into(),
        max_message_bytes: 16 << 20,
        properties: Vec::new(),
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
        write_config(
            self.dir.path(),
            name,
            &format!(
                "[pipeline]\nname = \"{name}\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"public.bench_rows\", \"public.bench_marker\"]\n\n\
                 [sink]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"bench_{name}\"\nschemas = false\ndelivery = \"{delivery}\"\n",
                self.pg.url("shop"),
                self.broker.brokers()
            ),
        )
    }

    /// The pipeline's stored checkpoint, as an LSN.
    fn checkpoint(&self, name: &str, exactly_once: bool) -> Option<ferry_core::Lsn> {
        let settings = kafka_settings(&self.broker.brokers(), exactly_once);
        self.runtime
            .block_on(ferry_sink::kafka::stored_checkpoint(
                &settings, name, "kafka",
            ))
            .ok()
            .flatten()
            .and_then(|p| p.parse::<ferry_core::Position>().ok())
            .and_then(|p| p.as_lsn())
    }

    fn drain(
        &self,
        name: &str,
        exactly_once: bool,
        target: ferry_core::Lsn,
    ) -> (Duration, f64, f64) {
        let config = self.config(
            name,
            if exactly_once {
                "exactly_once"
            } else {
                "at_least_once"
            },
        );
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
}

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
    // Prime both pipelines: slot, snapshot of the empty tables, first checkpoint.
    for (name, exactly_once) in [("eos", true), ("alo", false)] {
        let config = b.config(
            name,
            if exactly_once {
                "exactly_once"
            } else {
                "at_least_once"
            },
        );
        let log = b.dir.path().join(format!("{name}.log"));
        let ferry = Ferry::start(&config, &log);
        assert!(
            wait_until(Duration::from_secs(60), || b
                .checkpoint(name, exactly_once)
                .is_some()),
            "{name} did not start: {}",
            ferry.log()
        );
        assert!(ferry.terminate().success(), "{name} failed");
    }
    eprintln!("bench:   writing {n} rows in 1,000-row transactions");
    b.pg.psql(
        "shop",
        &format!(
            "DO $$ BEGIN FOR t IN 0..{} LOOP
               INSERT INTO bench_rows SELECT g, g % 100, 'note ' || g, now() FROM generate_series(t * 1000 + 1, t * 1000 + 1000) g;
               COMMIT; END LOOP; END $$;",
            n / 1000 - 1
        ),
    );
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
    for (name, exactly_once, label) in [
        ("eos", true, "PG→Kafka exactly once (JSON)"),
        ("alo", false, "PG→Kafka at least once (JSON)"),
    ] {
        let (took, rss, cores) = b.drain(name, exactly_once, target);
        if exactly_once {
            // A sample of Ferry's records, for the anchor's record sizes.
            let topic = format!("bench_{name}.public.bench_rows");
            let sample = b.broker.consume(&[&topic]);
            let sizes: Vec<(usize, usize)> = sample
                .iter()
                .take(1000)
                .map(|r| {
                    (
                        r["key"].as_str().map_or(0, str::len),
                        r["value"].as_str().map_or(0, str::len),
                    )
                })
                .collect();
            assert!(
                sample.len() as u64 >= n,
                "records missing: {} of {n}",
                sample.len()
            );
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
        });
    }
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
    let mut all = Vec::new();
    for run in 1..=runs {
        eprintln!("bench: run {run} of {runs} ({n} rows)");
        all.push(run_once(n));
    }
    report(&all, json);
}
