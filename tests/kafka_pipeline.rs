//! PostgreSQL → Kafka through the `ferry` binary, against a real Kafka-protocol broker (noida-db), read back by
//! Confluent's Python client as a `read_committed` consumer and checked against Debezium's documented format.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn kafka_config(pg: &PgServer, broker: &KafkaBroker, name: &str, extra: &str) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\n[pipeline.batch]\nmax_events = 500\nmax_wait = \"20ms\"\n\n\
         [source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
         [sink]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"shop\"\n{extra}\n",
        pg.url("shop"),
        broker.brokers()
    )
}

fn values(records: &[Json], topic: &str) -> Vec<Option<Json>> {
    records
        .iter()
        .filter(|r| r["topic"] == topic)
        .map(|r| {
            r["value"]
                .as_str()
                .map(|v| serde_json::from_str(v).expect("value is JSON"))
        })
        .collect()
}

#[test]
fn postgres_changes_reach_kafka_as_debezium_json() {
    let pg = server_with_dbs();
    let broker = KafkaBroker::start();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, price numeric(10,2), at timestamptz);
         INSERT INTO orders VALUES (1, 'one', 9.99, '2024-01-02 03:04:05.5+00'), (2, 'two', -1.25, NULL);",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "k",
        &kafka_config(&pg, &broker, "k", "transaction_topic = true"),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    let topic = "shop.public.orders";
    let records = || broker.consume(&[topic]);
    assert!(
        wait_until(WAIT, || records().len() >= 2),
        "the snapshot did not arrive\n{}",
        ferry.log()
    );
    pg.psql(
        "shop",
        "INSERT INTO orders VALUES (3, 'three', 100, now()); UPDATE orders SET item = 'ONE' WHERE id = 1;
         DELETE FROM orders WHERE id = 2;",
    );
    assert!(
        wait_until(WAIT, || records().len() >= 6),
        "records did not arrive: {:?}\n{}",
        records(),
        ferry.log()
    );
    let all = records();
    let vals = values(&all, topic);
    let payloads: Vec<&Json> = vals.iter().flatten().map(|v| &v["payload"]).collect();
    let ops: Vec<&str> = payloads.iter().map(|p| p["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "r", "c", "u", "d"], "{all:?}");
    // The tombstone after the delete: same key, null value.
    assert_eq!(vals.len(), 6);
    assert!(vals[5].is_none());
    assert_eq!(all[5]["key"], all[4]["key"]);

    // Snapshot read of row 1, field by field (Debezium's PostgreSQL connector format).
    let r = payloads[0];
    assert!(r["before"].is_null());
    assert_eq!(r["after"]["id"], 1);
    assert_eq!(r["after"]["item"], "one");
    // numeric(10,2) 9.99: decimal.handling.mode=precise → base64 of the unscaled 999 (0x03E7).
    assert_eq!(r["after"]["price"], "A+c=");
    assert_eq!(r["after"]["at"], "2024-01-02T03:04:05.5Z");
    let source = &r["source"];
    assert_eq!(source["connector"], "postgresql");
    assert_eq!(source["name"], "shop");
    assert_eq!(source["db"], "shop");
    assert_eq!(source["schema"], "public");
    assert_eq!(source["table"], "orders");
    assert_eq!(source["snapshot"], "true");
    assert!(source["ts_ms"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(source["lsn"].as_i64().unwrap() > 0);
    assert!(r["ts_ms"].as_i64().unwrap() >= source["ts_ms"].as_i64().unwrap() - 1000);
    // -1.25 → unscaled -125 → 0x83.
    assert_eq!(payloads[1]["after"]["price"], "gw==");
    assert!(payloads[1]["after"]["at"].is_null());

    // The update carries the old row (REPLICA IDENTITY DEFAULT: before only when the key changes) and the new.
    let u = payloads[3];
    assert_eq!(u["after"]["item"], "ONE");
    assert_eq!(u["source"]["snapshot"], "false");
    let d = payloads[4];
    assert_eq!(d["before"]["id"], 2);
    assert!(d["after"].is_null());

    // The schema block (JsonConverter with schemas.enable): Debezium's envelope and logical types.
    let schema = &vals[0].as_ref().unwrap()["schema"];
    assert_eq!(schema["name"], "shop.public.orders.Envelope");
    let after_fields = &schema["fields"][1]["fields"];
    let price = after_fields
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "price")
        .unwrap();
    assert_eq!(price["name"], "org.apache.kafka.connect.data.Decimal");
    assert_eq!(price["parameters"]["scale"], "2");
    let at = after_fields
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "at")
        .unwrap();
    assert_eq!(at["name"], "io.debezium.time.ZonedTimestamp");

    // The key: the primary key, with its schema.
    let key: Json = serde_json::from_str(all[0]["key"].as_str().unwrap()).unwrap();
    assert_eq!(key["payload"], serde_json::json!({ "id": 1 }));
    assert_eq!(key["schema"]["name"], "shop.public.orders.Key");

    // Transaction metadata: BEGIN and END around each source transaction, with per-table counts; the three
    // statements of the second psql call are one transaction.
    let markers: Vec<Json> = broker
        .consume(&["shop.transaction"])
        .iter()
        .map(|r| serde_json::from_str(r["value"].as_str().unwrap()).unwrap())
        .collect();
    let statuses: Vec<&str> = markers
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["BEGIN", "END", "BEGIN", "END"], "{markers:?}");
    assert_eq!(markers[3]["event_count"], 3);
    assert_eq!(
        markers[3]["data_collections"],
        serde_json::json!([{ "data_collection": "public.orders", "event_count": 3 }])
    );
    assert_eq!(u["transaction"]["id"], markers[2]["id"]);
    assert_eq!(u["transaction"]["total_order"], 2);
    // txId: the PostgreSQL transaction id, which PostgreSQL also stamps on the rows it wrote (xmin); the
    // transaction's id is Debezium's `txId:lsn`. Snapshot reads have none.
    let xmin: i64 = pg
        .psql("shop", "SELECT xmin::text FROM orders WHERE id = 3")
        .parse()
        .unwrap();
    assert_eq!(u["source"]["txId"], xmin);
    assert_eq!(payloads[2]["source"]["txId"], xmin);
    assert!(markers[2]["id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{xmin}:")));
    assert!(r["source"]["txId"].is_null());

    // The checkpoint record, committed with the records.
    let checkpoints = broker.consume(&["ferry_checkpoints"]);
    assert!(
        checkpoints
            .iter()
            .any(|c| c["key"] == "k/kafka"
                && c["value"].as_str().is_some_and(|v| v.starts_with("pg:"))),
        "{checkpoints:?}"
    );

    // TRUNCATE: Debezium's op "t", no key and no row images, with the table and transaction in `source`.
    pg.psql("shop", "TRUNCATE orders");
    let truncate = || {
        records().into_iter().find(|r| {
            r["value"]
                .as_str()
                .is_some_and(|v| v.contains("\"op\":\"t\""))
        })
    };
    assert!(wait_until(WAIT, || truncate().is_some()), "{}", ferry.log());
    let t = truncate().unwrap();
    assert!(t["key"].is_null(), "{t}");
    let t: Json = serde_json::from_str(t["value"].as_str().unwrap()).unwrap();
    let t = &t["payload"];
    assert!(t["before"].is_null() && t["after"].is_null(), "{t}");
    assert_eq!(t["source"]["table"], "orders");
    assert!(t["source"]["txId"].as_i64().is_some_and(|x| x > xmin));
    assert!(ferry.terminate().success());

    // `ferry status` reads the checkpoint back; `ferry reset` removes it with a tombstone.
    // Other pipelines' checkpoints after this one's, more than the reader's first stretch of the topic's end:
    // it reads further back and still finds this one.
    let producer: rdkafka::producer::ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .expect("producer");
    for i in 0..3000 {
        let position = format!("pg:0/{i:X}");
        let record = rdkafka::producer::BaseRecord::to("ferry_checkpoints")
            .partition(0)
            .key("other/kafka")
            .payload(&position);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
    let status = std::process::Command::new(ferry_bin())
        .args(["status", "--http", "off", "--config"])
        .arg(&cfg)
        .output()
        .expect("ferry status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("sink kafka: checkpoint pg:"), "{text}");
    // When it was written: the record's timestamp.
    assert!(text.contains("+00"), "{text}");
    let reset = std::process::Command::new(ferry_bin())
        .args(["reset", "--yes", "--config"])
        .arg(&cfg)
        .output()
        .expect("ferry reset");
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let last = broker
        .consume(&["ferry_checkpoints"])
        .into_iter()
        .rfind(|c| c["key"] == "k/kafka")
        .expect("checkpoint records");
    assert!(last["value"].is_null(), "{last}");
}

#[test]
fn kafka_sink_survives_sigkill_exactly_once() {
    let pg = server_with_dbs();
    let broker = KafkaBroker::start();
    pg.psql(
        "shop",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 200) g;
         CREATE TABLE ledger (writer int NOT NULL, seq int NOT NULL, amount bigint NOT NULL, PRIMARY KEY (writer, seq));",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "kk",
        &kafka_config(&pg, &broker, "kk", "schemas = false"),
    );
    let log = dir.path().join("ferry.log");
    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN; INSERT INTO ledger VALUES ({w}, {seq}, {seq});
                 UPDATE accounts SET balance = balance + {seq} WHERE id = ({seq} * 7 + {w}) % 200 + 1; COMMIT;"
            ),
        )
    });
    kill_randomly(&config, &log, 10);
    writers.stop();

    let ferry = Ferry::start(&config, &log);
    let expected_ledger: usize = pg
        .psql("shop", "SELECT count(*) FROM ledger")
        .parse()
        .unwrap();
    let ledger = || {
        values(
            &broker.consume(&["shop.public.ledger"]),
            "shop.public.ledger",
        )
    };
    assert!(
        wait_until(Duration::from_secs(90), || ledger().len()
            >= expected_ledger),
        "ledger records missing: {} of {expected_ledger}\n{}",
        ledger().len(),
        ferry.log()
    );
    // Exactly once: every source row once, none twice (read_committed hides the killed instances' aborted
    // transactions).
    let mut seen = BTreeMap::new();
    for v in ledger().into_iter().flatten() {
        let after = &v["after"];
        *seen
            .entry((
                after["writer"].as_i64().unwrap(),
                after["seq"].as_i64().unwrap(),
            ))
            .or_insert(0) += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    assert_eq!(seen.len(), expected_ledger, "lost ledger rows");

    // Per-key order: the last record of each account carries the account's final balance.
    let source: BTreeMap<i64, i64> = pg
        .psql("shop", "SELECT id, balance FROM accounts ORDER BY id")
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('|').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let accounts = || {
        let mut last = BTreeMap::new();
        for v in values(
            &broker.consume(&["shop.public.accounts"]),
            "shop.public.accounts",
        )
        .into_iter()
        .flatten()
        {
            let after = &v["after"];
            last.insert(
                after["id"].as_i64().unwrap(),
                after["balance"].as_i64().unwrap(),
            );
        }
        last
    };
    assert!(
        wait_until(Duration::from_secs(60), || accounts() == source),
        "account balances differ from the source\n{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

#[test]
fn topics_settings_big_rows_broker_restart_and_a_mariadb_source() {
    let my = MariaDbServer::start();
    let mut broker = KafkaBroker::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.docs (id int PRIMARY KEY, body longtext)");
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "m",
        &format!(
            "[pipeline]\nname = \"m\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n[source]\ntype = \"mysql\"\nurl = \"{}\"\n\n\
             [sink]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"my\"\nschemas = false\npartitions = 3\ncleanup_policy = \"compact\"\n\n\
             [sink.kafka]\n\"compression.type\" = \"lz4\"\n",
            my.url("shop"),
            broker.brokers()
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    // A 5 MB row. noida-db refuses record batches over about 1 MB whatever the topic's max.message.bytes, so this
    // one travels compressed (librdkafka's lz4, set through the [sink.kafka] pass-through properties).
    my.sql("INSERT INTO shop.docs VALUES (1, repeat('x', 5 * 1024 * 1024)), (2, 'small')");
    let topic = "my.shop.docs";
    let docs = |broker: &KafkaBroker| values(&broker.consume(&[topic]), topic);
    assert!(
        wait_until(WAIT, || docs(&broker).len() >= 2),
        "{}",
        ferry.log()
    );
    let rows = docs(&broker);
    let big = rows
        .iter()
        .flatten()
        .find(|v| v["payload"]["after"]["id"] == 1)
        .map(|v| v["payload"]["after"]["body"].as_str().unwrap().len());
    let plain = rows
        .iter()
        .flatten()
        .find(|v| v["after"]["id"] == 1)
        .map(|v| v["after"]["body"].as_str().unwrap().len());
    assert_eq!(big.or(plain), Some(5 * 1024 * 1024));
    let first = rows.iter().flatten().next().unwrap();
    // MySQL source block: file / pos / gtid.
    assert_eq!(first["source"]["connector"], "mysql");
    assert_eq!(first["source"]["db"], "shop");
    assert!(first["source"]["file"]
        .as_str()
        .unwrap()
        .starts_with("binlog."));
    assert!(first["source"]["gtid"]
        .as_str()
        .unwrap()
        .starts_with("0-1-"));
    // Topics as configured, the checkpoint topic compacted.
    let described = broker.describe(topic);
    assert_eq!(described["partitions"], 3);
    assert_eq!(described["cleanup.policy"], "compact");
    assert_eq!(described["max.message.bytes"], "16777216", "{described}");
    assert_eq!(
        broker.describe("ferry_checkpoints")["cleanup.policy"],
        "compact"
    );

    // The broker restarts: the sink retries and nothing is lost or doubled.
    broker.restart();
    my.sql("INSERT INTO shop.docs SELECT seq, 'after restart' FROM shop.seq_10_to_209");
    let ids = || {
        let mut ids: Vec<i64> = docs(&broker)
            .iter()
            .flatten()
            .map(|v| v["after"]["id"].as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    assert!(
        wait_until(Duration::from_secs(60), || ids().len() >= 202),
        "{}",
        ferry.log()
    );
    let got = ids();
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(got, unique, "duplicated records after the broker restart");
    assert_eq!(got.len(), 202);
    assert!(ferry.terminate().success());
}

#[test]
fn at_least_once_on_a_broker_without_transactions() {
    let pg = server_with_dbs();
    let broker = KafkaBroker::start_tansu();
    pg.psql(
        "shop",
        "CREATE TABLE ledger (id int PRIMARY KEY, amount bigint NOT NULL);
         INSERT INTO ledger SELECT g, g FROM generate_series(1, 100) g;",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "al",
        &kafka_config(
            &pg,
            &broker,
            "al",
            "schemas = false\ndelivery = \"at_least_once\"",
        ),
    );
    let log = dir.path().join("ferry.log");
    let port = pg.port;
    let writers = Writers::start(1, move |_, seq| {
        psql_ok(
            port,
            "shop",
            &format!("INSERT INTO ledger VALUES ({0}, {0})", 100 + seq),
        )
    });
    kill_randomly(&config, &log, 3);
    writers.stop();
    let ferry = Ferry::start(&config, &log);
    let expected: std::collections::BTreeSet<i64> = pg
        .psql("shop", "SELECT id FROM ledger")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let seen = || -> std::collections::BTreeSet<i64> {
        values(
            &broker.consume(&["shop.public.ledger"]),
            "shop.public.ledger",
        )
        .into_iter()
        .flatten()
        .map(|v| v["after"]["id"].as_i64().unwrap())
        .collect()
    };
    // Every row at least once (duplicates are allowed in this mode).
    assert!(
        wait_until(Duration::from_secs(60), || seen() == expected),
        "rows missing on tansu: {} of {}\n{}",
        seen().len(),
        expected.len(),
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

#[test]
fn avro_records_decode_with_confluents_deserializer_and_evolve_on_add_column() {
    let pg = server_with_dbs();
    let broker = KafkaBroker::start();
    let registry = SchemaRegistry::start();
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), seen timestamp, raw bytea);
         INSERT INTO items VALUES (1, 'one', 9.99, '2024-01-02 03:04:05.5', '\\x00ff');",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "av",
        &kafka_config(
            &pg,
            &broker,
            "av",
            &format!(
                "format = \"avro\"\nschema_registry = \"{}\"",
                registry.url()
            ),
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    let topic = "shop.public.items";
    let records = || broker.consume_avro(&registry, &[topic]);
    assert!(
        wait_until(WAIT, || !records().is_empty()),
        "{}",
        ferry.log()
    );
    pg.psql(
        "shop",
        "ALTER TABLE items ADD COLUMN note text; INSERT INTO items VALUES (2, 'two', -1.25, NULL, NULL, 'added');",
    );
    assert!(wait_until(WAIT, || records().len() >= 2), "{}", ferry.log());
    let all = records();
    let first = &all[0]["value"];
    assert_eq!(first["op"], "r");
    assert_eq!(first["after"]["id"], 1);
    assert_eq!(first["after"]["name"], "one");
    // Avro decimal (bytes, logicalType decimal, scale 2) → Python Decimal.
    assert_eq!(first["after"]["price"], "9.99");
    // MicroTimestamp: microseconds since the epoch.
    assert_eq!(first["after"]["seen"], 1_704_164_645_500_000i64);
    assert_eq!(first["source"]["connector"], "postgresql");
    assert_eq!(first["source"]["table"], "items");
    assert_eq!(all[0]["key"]["id"], 1);
    // Schema evolution: the added column is a nullable field of a new schema version, read by the same consumer.
    let second = &all[1]["value"];
    assert_eq!(second["op"], "c");
    assert_eq!(second["after"]["note"], "added");
    assert_eq!(second["after"]["price"], "-1.25");
    assert!(second["source"]["txId"].as_i64().is_some_and(|x| x > 0));
    assert!(first["source"]["txId"].is_null());
    // A TRUNCATE under the table's latest value schema, with no row images.
    pg.psql("shop", "TRUNCATE items");
    assert!(wait_until(WAIT, || records().len() >= 3), "{}", ferry.log());
    let truncate = &records()[2];
    assert!(truncate["key"].is_null(), "{truncate}");
    assert_eq!(truncate["value"]["op"], "t");
    assert!(truncate["value"]["before"].is_null() && truncate["value"]["after"].is_null());
    assert_eq!(truncate["value"]["source"]["table"], "items");
    assert!(first["after"].get("note").is_none());
    assert!(ferry.terminate().success());
}

#[test]
fn avro_through_an_https_registry_with_basic_auth() {
    let pg = server_with_dbs();
    let broker = KafkaBroker::start();
    let tls = TlsFiles::new();
    let registry = SchemaRegistry::start_https(&tls, "ferry-key:s3cret-Z9");
    pg.psql(
        "shop",
        "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'over https');",
    );
    let dir = scratch();
    let config = |name: &str, url: &str| {
        write_config(
            dir.path(),
            name,
            &kafka_config(
                &pg,
                &broker,
                name,
                &format!(
                    "format = \"avro\"\nschema_registry = \"{url}\"\nschema_registry_ca = \"{}\"",
                    tls.ca.display()
                ),
            ),
        )
    };
    // Wrong credentials: a fatal error that says what to fix, without the secret.
    let wrong = config("badauth", &registry.url_with("ferry-key:wrong-secret"));
    let mut ferry = Ferry::start(&wrong, &dir.path().join("badauth.log"));
    let status = ferry.wait_exit(WAIT);
    let log = ferry.log();
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains("refused the credentials (HTTP 401)"), "{log}");
    assert!(!log.contains("wrong-secret"), "{log}");

    let ferry = Ferry::start(
        &config("https", &registry.url()),
        &dir.path().join("https.log"),
    );
    let topic = "shop.public.notes";
    let records = || broker.consume_avro(&registry, &[topic]);
    assert!(
        wait_until(WAIT, || !records().is_empty()),
        "{}",
        ferry.log()
    );
    let all = records();
    assert_eq!(all[0]["key"]["id"], 1);
    assert_eq!(all[0]["value"]["after"]["body"], "over https");
    assert!(ferry.terminate().success());
}

#[test]
fn an_unchanged_toast_value_carries_debeziums_placeholder_never_null() {
    let pg = server_with_dbs();
    let broker = KafkaBroker::start();
    pg.psql(
        "shop",
        "CREATE TABLE docs (id int PRIMARY KEY, body text, tags text[], n int);
         ALTER TABLE docs ALTER body SET STORAGE EXTERNAL, ALTER tags SET STORAGE EXTERNAL;",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "toast",
        &kafka_config(&pg, &broker, "toast", "schemas = false"),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO docs SELECT 1, repeat('x', 9600), array_fill('t'::text, ARRAY[3000]), 0;
         UPDATE docs SET n = 1 WHERE id = 1;
         UPDATE docs SET body = NULL, n = 2 WHERE id = 1;",
    );
    let topic = "shop.public.docs";
    assert!(
        wait_until(WAIT, || broker.consume(&[topic]).len() >= 3),
        "records did not arrive\n{}",
        ferry.log()
    );
    let vals = values(&broker.consume(&[topic]), topic);
    let after: Vec<&Json> = vals.iter().flatten().map(|v| &v["after"]).collect();
    assert_eq!(after[0]["body"].as_str().map(str::len), Some(9600));
    // The update did not send the unchanged values: Debezium's placeholder, not null.
    assert_eq!(after[1]["body"], "__debezium_unavailable_value");
    assert_eq!(
        after[1]["tags"],
        serde_json::json!(["__debezium_unavailable_value"])
    );
    assert_eq!(after[1]["n"], 1);
    // A NULL the source wrote stays null.
    assert!(after[2]["body"].is_null());
    assert!(ferry.terminate().success());
}

/// `on_error = "dead_letter"` into Kafka: rows whose record is too large for the producer go, within the batch's
/// Kafka transaction, to the dead-letter topic (their key's later changes follow them); the rest is published.
/// Replay with a larger max_message_bytes publishes them, in order, and leaves tombstones in the topic.
#[test]
fn refused_records_go_to_the_dead_letter_topic_and_replay_publishes_them() {
    let pg = server_with_dbs();
    let broker = KafkaBroker::start();
    pg.psql("shop", "CREATE TABLE docs (id int PRIMARY KEY, body text)");
    let dir = scratch();
    let config = |max: usize| {
        write_config(
            dir.path(),
            "dlq",
            &kafka_config(
                &pg,
                &broker,
                "dlq",
                &format!("schemas = false\nmax_message_bytes = {max}\n"),
            )
            .replace(
                "[pipeline.batch]",
                "on_error = \"dead_letter\"\n[pipeline.retry]\ninitial = \"10ms\"\nattempts = 1\n[pipeline.batch]",
            ),
        )
    };
    // A first run with the default limit creates the topic with room for big records.
    let roomy = config(1 << 20);
    let ferry = Ferry::start(&roomy, &dir.path().join("f0.log"));
    ferry.wait_streaming();
    pg.psql("shop", "INSERT INTO docs VALUES (1, 'first')");
    let topic = "shop.public.docs";
    let docs = || values(&broker.consume(&[topic]), topic);
    assert!(wait_until(WAIT, || docs().len() == 1), "{}", ferry.log());
    assert!(ferry.terminate().success());

    // Now records over 4 kB are refused by the producer: rows 7 and 30 are too large, and 7's later update
    // follows its letter.
    let tight = config(4096);
    let ferry = Ferry::start(&tight, &dir.path().join("f1.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO docs SELECT g, CASE WHEN g IN (7, 30) THEN repeat('x', 10000) ELSE 'doc ' || g END \
           FROM generate_series(2, 50) g;
         UPDATE docs SET body = 'short now' WHERE id = 7;
         UPDATE docs SET body = 'edited' WHERE id = 8;",
    );
    let dlq = || broker.consume(&["ferry_dead_letters"]);
    let live = |records: &[Json]| {
        let mut by_key: BTreeMap<String, Option<Json>> = BTreeMap::new();
        for r in records {
            by_key.insert(
                r["key"].as_str().unwrap().to_owned(),
                r["value"]
                    .as_str()
                    .map(|v| serde_json::from_str(v).unwrap()),
            );
        }
        by_key.into_values().flatten().collect::<Vec<Json>>()
    };
    assert!(
        wait_until(WAIT, || docs().len() == 1 + 47 + 1
            && live(&dlq()).len() == 3),
        "{} records, letters {:?}\n{}",
        docs().len(),
        dlq(),
        ferry.log()
    );
    let letters = live(&dlq());
    let summary: Vec<(String, String, String)> = letters
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap().to_owned(),
                l["op"].as_str().unwrap().to_owned(),
                l["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // One source transaction (psql sends the three statements as one): isolation finds 7, then sends 7's update
    // after it before it narrows down to 30. Per key, the order is the source's.
    assert_eq!(
        summary,
        vec![
            ("[\"7\"]".into(), "insert".into(), "record_too_large".into()),
            ("[\"7\"]".into(), "update".into(), "follows".into()),
            (
                "[\"30\"]".into(),
                "insert".into(),
                "record_too_large".into()
            ),
        ]
    );
    // Nothing of 7 or 30 was published; 8's update was.
    let published: Vec<Json> = docs().into_iter().flatten().collect();
    assert!(!published
        .iter()
        .any(|v| [7, 30].contains(&v["after"]["id"].as_i64().unwrap_or(0))));
    assert!(published.iter().any(|v| v["after"]["body"] == "edited"));
    let (ok, out) = ferry_command(&["dead-letters", "list"], &tight);
    assert!(ok && out.matches("record_too_large").count() == 2, "{out}");
    assert!(ferry.terminate().success());

    // A letter too large for the topic is kept without its row: replay cannot publish it, and 7's update waits
    // behind it; discarded, the update replays.
    let first: Vec<i64> = letters
        .iter()
        .filter(|l| l["code"] == "record_too_large")
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert!(
        letters[0]["row"]
            .as_str()
            .unwrap()
            .contains("ferry snapshot --table"),
        "{}",
        letters[0]
    );
    let (ok, out) = ferry_command(&["dead-letters", "replay"], &roomy);
    assert!(!ok && out.contains("holds no row"), "{out}");
    assert_eq!(live(&dlq()).len(), 3);
    for id in first {
        let (ok, out) = ferry_command(
            &["dead-letters", "discard", "--id", &id.to_string()],
            &roomy,
        );
        assert!(ok, "{out}");
    }
    let (ok, out) = ferry_command(&["dead-letters", "replay"], &roomy);
    assert!(ok, "{out}");
    assert!(live(&dlq()).is_empty(), "{:?}", dlq());
    let seven: Vec<Json> = docs()
        .into_iter()
        .flatten()
        .filter(|v| v["after"]["id"] == 7)
        .map(|v| v["after"]["body"].clone())
        .collect();
    assert_eq!(seven, vec![Json::from("short now")]);
    // The pipeline goes on; 7 no longer waits behind anything.
    let ferry = Ferry::start(&roomy, &dir.path().join("f2.log"));
    ferry.wait_streaming();
    pg.psql("shop", "UPDATE docs SET body = 'later' WHERE id = 7");
    assert!(
        wait_until(WAIT, || docs()
            .into_iter()
            .flatten()
            .any(|v| v["after"]["body"] == "later")),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
}
