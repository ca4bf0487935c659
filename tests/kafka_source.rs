//! The Kafka source: PostgreSQL → Kafka (Ferry's sink, exactly once) → a consumer group of Ferry processes →
//! PostgreSQL and MariaDB, against a real Kafka-protocol broker started by the harness.
//!
//! The SIGKILL test runs on tansu: noida-db never expires a member that died without leaving (a group with a
//! SIGKILLed consumer waits for it forever; checked with Confluent's Python client). The others run on noida-db,
//! whose coordinator handles a member that leaves and joins again during a rebalance (tansu's can stall the group
//! then, as a fenced consumer does when it restarts). tansu does not hide aborted transactions, so the capture
//! pipeline writes `delivery = "at_least_once"` and is never killed (the Kafka sink's own exactly-once under
//! SIGKILL is kafka_pipeline.rs's, on noida-db). Neither broker completes the second round of a cooperative
//! rebalance (a member joining waits forever, also checked with the Python client), so the groups on them use
//! `assignment = "roundrobin"`; the default, cooperative-sticky, is tested on librdkafka's own mock cluster,
//! which the test process hosts (it listens on 127.0.0.1 and completes incremental rebalances, but cannot create
//! topics through the admin API, which Ferry's Kafka sink needs: the test writes Debezium's records itself).

mod support;

use std::time::Duration;

use support::*;

const TOPICS: &str = "[\"shop.public.accounts\", \"shop.public.ledger\"]";

/// The tables at the source, and at the PostgreSQL target with a trigger that counts how often each ledger row
/// was applied (an insert, or an upsert that met the row): exactly once is a count of 1 for every row.
const TABLES: &str = "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text, price numeric(12,2), at timestamptz);
     CREATE TABLE ledger (writer int NOT NULL, seq int NOT NULL, amount bigint NOT NULL, PRIMARY KEY (writer, seq));";

const COUNTING: &str = "CREATE TABLE ledger_applied (writer int, seq int, n int NOT NULL, PRIMARY KEY (writer, seq));
     CREATE FUNCTION count_ledger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
       INSERT INTO ledger_applied VALUES (NEW.writer, NEW.seq, 1)
         ON CONFLICT (writer, seq) DO UPDATE SET n = ledger_applied.n + 1;
       RETURN NEW; END $$;
     CREATE TRIGGER count_ledger AFTER INSERT OR UPDATE ON ledger FOR EACH ROW EXECUTE FUNCTION count_ledger();";

fn capture_config(pg: &PgServer, broker: &KafkaBroker) -> String {
    capture_into(pg, broker, 6, "delivery = \"at_least_once\"\n")
}

/// PostgreSQL `shop` → Ferry's Kafka sink, topics `shop.<schema>.<table>` of `partitions` partitions; `extra`:
/// more `[sink]` keys.
fn capture_into(pg: &PgServer, broker: &KafkaBroker, partitions: u32, extra: &str) -> String {
    format!(
        "[pipeline]\nname = \"capture\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n\
         [source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
         [sink]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"shop\"\npartitions = {partitions}\n{extra}",
        pg.url("shop"),
        broker.brokers()
    )
}

/// The consumers' pipeline; `batch` adds keys to its `[pipeline.batch]`.
fn apply_config(pg: &PgServer, my: &MariaDbServer, broker: &KafkaBroker, batch: &str) -> String {
    format!(
        "[pipeline]\nname = \"apply\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n{batch}\n\
         [source]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopics = {TOPICS}\ngroup_id = \"replica\"\n\
         format = \"json\"\nassignment = \"roundrobin\"\n\n\
         [[sink]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{}\"\n\n\
         [[sink]]\nname = \"maria\"\ntype = \"mysql\"\nurl = \"{}\"\n",
        broker.brokers(),
        pg.url("replica"),
        my.url("shop")
    )
}

/// Two writers: a ledger row and a balance change per transaction; every fifth transaction also moves an
/// account to a new key (its id changes sign), which Kafka carries as a delete and a create in two partitions.
fn start_writers(port: u16) -> Writers {
    Writers::start(2, move |w, seq| {
        let account = (seq * 7 + w as i32) % 50 + 1;
        let flip = if seq % 5 == 0 {
            format!("UPDATE accounts SET id = -id WHERE abs(id) = {account};")
        } else {
            String::new()
        };
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN; INSERT INTO ledger VALUES ({w}, {seq}, {seq});
                 UPDATE accounts SET balance = balance + {seq}, at = now(), note = repeat('n', {seq} % 40)
                   WHERE abs(id) = {account}; {flip} COMMIT;"
            ),
        )
    })
}

fn same_everywhere(pg: &PgServer, my: &MariaDbServer) -> bool {
    let source = |sql: &str| pg.psql("shop", sql);
    let replica = |sql: &str| pg.psql("replica", sql);
    let maria = |sql: &str| my.try_sql(sql).unwrap_or_default().replace('\t', "|");
    let accounts = "SELECT id, balance, note, price, at FROM accounts ORDER BY id";
    let ledger = "SELECT writer, seq, amount FROM ledger ORDER BY writer, seq";
    source(accounts) == replica(accounts)
        && source(ledger) == replica(ledger)
        && source(ledger) == maria(&format!("USE shop; {ledger}"))
        && source("SELECT id, balance FROM accounts ORDER BY id")
            == maria("USE shop; SELECT id, balance FROM accounts ORDER BY id")
}

/// Rows the PostgreSQL target applied more than once, and how many it never applied.
fn applied_counts(pg: &PgServer) -> (String, String) {
    (
        pg.psql("replica", "SELECT writer, seq, n FROM ledger_applied WHERE n <> 1 ORDER BY 1, 2"),
        pg.psql(
            "replica",
            "SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT FROM ledger_applied a WHERE a.writer = l.writer AND a.seq = l.seq)",
        ),
    )
}

struct Setup {
    pg: PgServer,
    my: MariaDbServer,
    broker: KafkaBroker,
    dir: tempfile::TempDir,
    capture: Ferry,
}

/// `tansu`: a broker that expires consumers killed without leaving (SIGKILL tests); otherwise noida-db, whose
/// group coordinator handles members that leave and join again while a rebalance is under way (tansu's can stall
/// the group then).
fn setup(tansu: bool) -> Setup {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let broker = if tansu {
        KafkaBroker::start_tansu()
    } else {
        KafkaBroker::start()
    };
    pg.psql("shop", TABLES);
    pg.psql(
        "shop",
        "INSERT INTO accounts SELECT g, 0, 'start', g * 1.25, '2024-01-02 03:04:05.5+00' FROM generate_series(1, 50) g",
    );
    // A ledger row too, so that the snapshot creates both topics before any consumer subscribes.
    pg.psql("shop", "INSERT INTO ledger VALUES (9, 0, 0)");
    pg.psql("replica", TABLES);
    pg.psql("replica", COUNTING);
    let dir = scratch();
    let capture = write_config(dir.path(), "capture", &capture_config(&pg, &broker));
    let capture = Ferry::start(&capture, &dir.path().join("capture.log"));
    assert!(
        wait_until(Duration::from_secs(60), || metric(
            &capture,
            "ferry_sink_rows_total"
        ) >= 51.0),
        "the capture pipeline did not publish its snapshot\n{}",
        capture.log()
    );
    assert_eq!(broker.describe("shop.public.ledger")["partitions"], 6);
    Setup {
        pg,
        my,
        broker,
        dir,
        capture,
    }
}

#[test]
fn three_consumers_apply_six_partitions_exactly_once_through_sigkills() {
    let s = setup(true);
    let config = write_config(
        s.dir.path(),
        "apply",
        &apply_config(&s.pg, &s.my, &s.broker, ""),
    );
    let log = |i: usize| s.dir.path().join(format!("apply-{i}.log"));
    let mut consumers: Vec<Option<Ferry>> = (0..3)
        .map(|i| Some(Ferry::start(&config, &log(i))))
        .collect();
    let writers = start_writers(s.pg.port);
    let mut rng = Rng::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1500 + rng.below(2500)));
        let victim = rng.below(3) as usize;
        consumers[victim].take().expect("running").kill9();
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        consumers[victim] = Some(Ferry::start(&config, &log(victim)));
    }
    writers.stop();
    let logs = || {
        (0..3)
            .map(|i| std::fs::read_to_string(log(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        wait_until(Duration::from_secs(120), || same_everywhere(&s.pg, &s.my)),
        "the targets did not converge on the source\ncapture:\n{}\napply:\n{}",
        s.capture.log(),
        logs()
    );
    let (twice, missed) = applied_counts(&s.pg);
    assert_eq!(twice, "", "ledger rows applied more than once");
    assert_eq!(missed, "0", "ledger rows never applied");
    // The group really shared the partitions: more than one process claimed some.
    let claimed = (0..3)
        .filter(|&i| {
            std::fs::read_to_string(log(i))
                .unwrap_or_default()
                .contains("assigned Kafka partitions")
        })
        .count();
    assert!(
        claimed >= 2,
        "only {claimed} consumer process(es) were assigned partitions\n{}",
        logs()
    );
    // Each sink keeps one checkpoint row per partition.
    let rows = s.pg.psql(
        "replica",
        "SELECT count(*) FROM ferry_checkpoints WHERE pipeline = 'apply' AND sink LIKE 'pg@%'",
    );
    assert_eq!(
        rows, "12",
        "partition checkpoint rows of the PostgreSQL target"
    );
    drop(consumers);
}

/// A ledger change as Debezium's PostgreSQL connector writes it (JSON with the schema block): key and value.
fn ledger_record(writer: usize, seq: i32, lsn: u64) -> (String, String) {
    let columns = serde_json::json!([
        {"type": "int32", "optional": false, "field": "writer"},
        {"type": "int32", "optional": false, "field": "seq"},
        {"type": "int64", "optional": false, "field": "amount"}]);
    let key = serde_json::json!({
        "schema": {"type": "struct", "optional": false, "name": "shop.public.ledger.Key",
            "fields": [columns[0], columns[1]]},
        "payload": {"writer": writer, "seq": seq}});
    let value = serde_json::json!({
        "schema": {"type": "struct", "name": "shop.public.ledger.Envelope", "fields": [
            {"type": "struct", "optional": true, "field": "before", "fields": columns},
            {"type": "struct", "optional": true, "field": "after", "fields": columns},
            {"type": "struct", "optional": false, "field": "source", "fields": []},
            {"type": "string", "optional": false, "field": "op"}]},
        "payload": {"before": null, "after": {"writer": writer, "seq": seq, "amount": i64::from(seq) * 10},
            "source": {"connector": "postgresql", "schema": "public", "table": "ledger", "lsn": lsn,
                "ts_ms": 1_700_000_000_000_u64},
            "op": "c"}});
    (key.to_string(), value.to_string())
}

/// The default assignment, cooperative-sticky, on librdkafka's own mock cluster (its group coordinator completes
/// incremental rebalances, which the harness's other brokers do not): records produced throughout, two
/// processes share six partitions, a third joins and takes some of them while the others keep theirs, one is
/// SIGKILLed and its partitions move to the others once its session times out. Every ledger row is applied
/// exactly once (the target's trigger counts), and the processes' logs show incremental hand-overs.
#[test]
fn cooperative_sticky_groups_share_move_and_rebalance_partitions_exactly_once() {
    let pg = server_with_dbs();
    pg.psql("replica", TABLES);
    pg.psql("replica", COUNTING);
    let mock = rdkafka::mocking::MockCluster::new(1).expect("librdkafka mock cluster");
    mock.create_topic("shop.public.ledger", 6, 1)
        .expect("create topic");
    let brokers = mock.bootstrap_servers();
    let producer: rdkafka::producer::ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    let producer = std::sync::Arc::new(producer);
    let lsn = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1000));
    let writers = {
        let (producer, lsn) = (producer.clone(), lsn.clone());
        Writers::start(2, move |w, seq| {
            let at = lsn.fetch_add(8, std::sync::atomic::Ordering::Relaxed);
            let (key, value) = ledger_record(w, seq, at);
            let record = rdkafka::producer::BaseRecord::to("shop.public.ledger")
                .key(&key)
                .payload(&value);
            std::thread::sleep(Duration::from_millis(3));
            producer.send(record).is_ok()
        })
    };
    let dir = scratch();
    let lite = dir.path().join("replica.db");
    // No `assignment`: cooperative-sticky. A short session, so a killed member's partitions move soon.
    let config = write_config(
        dir.path(),
        "apply",
        &format!(
            "[pipeline]\nname = \"apply\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n\
             [source]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"shop.public.ledger\"]\n\
             group_id = \"replica\"\nformat = \"json\"\n\
             [source.kafka]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\n\
             [[sink]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[sink]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\n",
            pg.url("replica"),
            lite.display()
        ),
    );
    let log = |i: usize| dir.path().join(format!("apply-{i}.log"));
    let text = |i: usize| std::fs::read_to_string(log(i)).unwrap_or_default();
    let logs = || (0..3).map(text).collect::<Vec<_>>().join("\n---\n");
    let assigned = |i: usize| text(i).matches("assigned Kafka partitions").count();
    let mut consumers = vec![
        Some(Ferry::start(&config, &log(0))),
        Some(Ferry::start(&config, &log(1))),
    ];
    assert!(
        wait_until(Duration::from_secs(60), || assigned(0) > 0
            && assigned(1) > 0),
        "the two first processes did not share the partitions\n{}",
        logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    // A third joins: an incremental rebalance moves some partitions to it; the others keep the rest.
    let before = (assigned(0), assigned(1));
    consumers.push(Some(Ferry::start(&config, &log(2))));
    assert!(
        wait_until(Duration::from_secs(60), || assigned(2) > 0),
        "the third process got no partitions\n{}",
        logs()
    );
    assert!(
        wait_until(Duration::from_secs(20), || text(0)
            .contains("revoked Kafka partitions")
            || text(1).contains("revoked Kafka partitions")),
        "no partition moved to the third process\n{}",
        logs()
    );
    // Cooperative: the members that gave partitions up were not assigned everything anew.
    assert_eq!(
        (assigned(0), assigned(1)),
        before,
        "a member was assigned its partitions anew (an eager rebalance)\n{}",
        logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    // One dies without leaving: its partitions move once its session times out.
    let held = (assigned(0), assigned(2));
    consumers[1].take().expect("running").kill9();
    assert!(
        wait_until(Duration::from_secs(60), || (assigned(0), assigned(2))
            != held),
        "the killed process's partitions did not move\n{}",
        logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    let written: i32 = writers.stop().iter().sum();
    rdkafka::producer::Producer::flush(&*producer, Duration::from_secs(30)).expect("flush");
    let count = || {
        pg.try_psql("replica", "SELECT count(*) FROM ledger")
            .ok()
            .and_then(|c| c.parse::<i32>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(90), || count() == Some(written)),
        "{:?} of {written} ledger rows applied\n{}",
        count(),
        logs()
    );
    let (twice, missed) = applied_counts(&pg);
    assert_eq!(twice, "", "ledger rows applied more than once");
    assert_eq!(missed, "0", "ledger rows never applied");
    assert_eq!(
        pg.psql(
            "replica",
            "SELECT count(*) FROM ledger WHERE amount <> seq * 10"
        ),
        "0"
    );
    // The SQLite target too (several processes share its file).
    let lite_count = || sqlite_rows(&lite, "SELECT count(*) FROM ledger").join("");
    assert!(
        wait_until(Duration::from_secs(60), || lite_count()
            == written.to_string()),
        "{} of {written} ledger rows in the SQLite target\n{}",
        lite_count(),
        logs()
    );
    assert_eq!(
        sqlite_rows(
            &lite,
            "SELECT count(*) FROM ledger WHERE amount <> seq * 10"
        ),
        ["0"]
    );
    drop(consumers);
}

/// A rebalance while a batch is in flight: A's batch into the PostgreSQL target waits on a lock someone holds
/// there when B joins. A hands its partitions over once its revocation has waited long enough, and B claims them
/// and goes on from what that target holds. When the lock goes, A's commit of the batch meets B's claim and
/// rolls back whole: nothing is applied twice.
///
/// Each target transaction holds one record here. B starts over what A has in flight, so with several rows each
/// the two can deadlock on them once the lock goes, and PostgreSQL may then abort A's transaction before its commit
/// meets the claim: correct, but not the fencing this test is for.
#[test]
fn a_batch_in_flight_when_its_partitions_move_cannot_commit() {
    let s = setup(false);
    let config = write_config(
        s.dir.path(),
        "apply",
        &apply_config(
            &s.pg,
            &s.my,
            &s.broker,
            "max_events = 3\nmax_transaction_events = 3",
        ),
    );
    let (log_a, log_b) = (s.dir.path().join("a.log"), s.dir.path().join("b.log"));
    let a = Ferry::start(&config, &log_a);
    let writers = start_writers(s.pg.port);
    assert!(
        wait_until(Duration::from_secs(60), || a
            .log()
            .contains("assigned Kafka partitions")),
        "the first consumer got no partitions\n{}",
        a.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut lock = SqlSession::open(s.pg.port, "replica");
    lock.send("BEGIN; LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE;");
    std::thread::sleep(Duration::from_secs(2));
    let b = Ferry::start(&config, &log_b);
    assert!(
        wait_until(Duration::from_secs(90), || b
            .log()
            .contains("assigned Kafka partitions")),
        "the second consumer never got partitions\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(lock.finish("COMMIT;"), "releasing the lock");
    assert!(
        wait_until(Duration::from_secs(60), || a
            .log()
            .contains("another process claimed Kafka partition")),
        "the batch in flight was not fenced\n{}",
        a.log()
    );
    writers.stop();
    assert!(
        wait_until(Duration::from_secs(120), || same_everywhere(&s.pg, &s.my)),
        "the targets did not converge on the source\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    let (twice, missed) = applied_counts(&s.pg);
    assert_eq!(
        twice,
        "",
        "ledger rows applied more than once\nA:\n{}",
        a.log()
    );
    assert_eq!(missed, "0", "ledger rows never applied");
}

/// Every value and column type of a PostgreSQL table arrives exactly through Ferry's JSON topics and through its
/// Avro topics (a schema registry), into a PostgreSQL target each: inserts, updates, a key change, deletes.
#[test]
fn values_and_types_arrive_exactly_through_json_and_avro_topics() {
    let pg = server_with_dbs();
    pg.create_db("replica2");
    let broker = KafkaBroker::start();
    let registry = SchemaRegistry::start();
    let table = "CREATE TABLE types (id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric(12,2), nv numeric,
         f4 real, f8 double precision, b boolean, t text, vc varchar(40), ch char(5), by bytea, j json, jb jsonb,
         u uuid, d date, tm time, ts timestamp(3), tz timestamptz, ia int[], ta text[], big text, iv interval,
         iva interval[])";
    pg.psql("shop", table);
    let rows = "INSERT INTO types VALUES
         (1, -32768, 9223372036854775807, -12.30, 1.000000000000000000001, 1.5, 2.718281828459045, true,
          'ünïcødé ✓ ''quoted''', 'var', 'ab', '\\x0001ff', '{\"b\":  1, \"a\": [1,2]}', '{\"b\": 1, \"a\": [1, 2]}',
          'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:14:15.123456', '1999-12-31 23:59:59.999',
          '2024-02-29 10:11:12.123456+02', '{1,NULL,3}', '{a,\"b c\",NULL}', repeat('x', 5000)),
         (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
          'infinity', '-infinity', '{}', '{}', NULL),
         (3, 0, -1, 0.00, -7, -0.0, 1e300, false, '', '', '', '\\x', '[]', '{}', '00000000-0000-0000-0000-000000000000',
          '0001-01-01', '00:00', '1970-01-01 00:00', '1970-01-01 00:00+00', '{1,2}', '{\"\"}', 'y')";
    pg.psql("shop", rows);
    // Values Debezium's forms lose (intervals with months or days, decimal NaN and infinities), which Ferry's
    // sink also carries exactly in a header; float NaN and infinities, which JSON carries as Jackson's strings.
    pg.psql(
        "shop",
        "INSERT INTO types (id, n, nv, f4, f8, iv, iva) VALUES
           (5, 'NaN', 'Infinity', 'NaN', '-Infinity', '1 year 2 mons 3 days 04:05:06.789', '{\"1 day\",\"-2 mons\"}'),
           (6, NULL, '-Infinity', 'Infinity', 'NaN', '-1 mons -2 days +03:00', '{NULL,\"00:00:01\"}'),
           (7, 1.5, 'NaN', 0, 0, '00:00:01.5', '{}')",
    );
    let dir = scratch();
    let capture = |name: &str, prefix: &str, extra: &str| {
        write_config(
            dir.path(),
            name,
            &format!(
                "[pipeline]\nname = \"{name}\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n\
                 [source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
                 [sink]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 3\n{extra}\n",
                pg.url("shop"),
                broker.brokers()
            ),
        )
    };
    let avro = format!(
        "format = \"avro\"\nschema_registry = \"{}\"",
        registry.url()
    );
    let (capj, capa) = (capture("capj", "j", ""), capture("capa", "a", &avro));
    let apply = |name: &str, topic: &str, db: &str, extra: &str| {
        write_config(
            dir.path(),
            name,
            &format!(
                "[pipeline]\nname = \"{name}\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n\
                 [source]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{name}\"\n\
                 assignment = \"roundrobin\"\n{extra}\n\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n",
                broker.brokers(),
                pg.url(db)
            ),
        )
    };
    let (applyj, applya) = (
        apply("applyj", "j.public.types", "replica", ""),
        apply("applya", "a.public.types", "replica2", &avro),
    );
    let ferry = Ferry::start_many(
        &[&capj, &capa, &applyj, &applya],
        &dir.path().join("ferry.log"),
    );
    let all = "SELECT * FROM types ORDER BY id";
    let types = "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
         WHERE attrelid = 'public.types'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum";
    let same = || {
        let source = (pg.psql("shop", all), pg.psql("shop", types));
        ["replica", "replica2"].iter().all(|db| {
            pg.try_psql(db, all).ok().as_ref() == Some(&source.0)
                && pg.try_psql(db, types).ok().as_ref() == Some(&source.1)
        })
    };
    assert!(
        wait_until(Duration::from_secs(90), same),
        "the snapshot did not arrive exactly\nsource:\n{}\njson:\n{:?}\navro:\n{:?}\ntypes:\n{}\njson:\n{:?}\navro:\n{:?}\n{}",
        pg.psql("shop", all),
        pg.try_psql("replica", all),
        pg.try_psql("replica2", all),
        pg.psql("shop", types),
        pg.try_psql("replica", types),
        pg.try_psql("replica2", types),
        ferry.log()
    );
    pg.psql(
        "shop",
        "UPDATE types SET t = 'changed', n = 99.99, ia = '{7}' WHERE id = 1;
         UPDATE types SET id = 10, big = big || 'z' WHERE id = 3;
         UPDATE types SET b = true, tz = '2000-01-01 00:00+05:30' WHERE id = 2;
         UPDATE types SET iv = '2 years', nv = 'NaN', n = 'NaN' WHERE id = 1;
         UPDATE types SET iv = '1 day', nv = 1, f8 = 'Infinity' WHERE id = 5;
         DELETE FROM types WHERE id = 2;
         INSERT INTO types (id, t) VALUES (4, 'four');",
    );
    assert!(
        wait_until(Duration::from_secs(60), same),
        "the changes did not arrive exactly\nsource:\n{}\njson:\n{:?}\navro:\n{:?}\n{}",
        pg.psql("shop", all),
        pg.try_psql("replica", all),
        pg.try_psql("replica2", all),
        ferry.log()
    );
}

/// A backlog read from several partitions mixes records written before and after schema changes: the target
/// still ends as the source, column for column. Also values the source did not send (unchanged TOAST of every
/// kind) stay as they are, and a stored generated column stays generated.
#[test]
fn a_backlog_across_schema_changes_unchanged_toast_and_generated_columns_arrive_exactly() {
    let pg = server_with_dbs();
    let broker = KafkaBroker::start();
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, v text, code varchar(10), price numeric(12,2), g int GENERATED ALWAYS AS (id * 2) STORED);
         CREATE TABLE blobs (id int PRIMARY KEY, other int, big text, ia int[], ta text[], nb numeric(1000,0),
           nfree numeric, jb jsonb, by bytea, tsa timestamptz[], f8a float8[]);
         ALTER TABLE blobs ALTER COLUMN big SET STORAGE EXTERNAL, ALTER COLUMN ia SET STORAGE EXTERNAL,
           ALTER COLUMN ta SET STORAGE EXTERNAL, ALTER COLUMN nb SET STORAGE EXTERNAL,
           ALTER COLUMN nfree SET STORAGE EXTERNAL, ALTER COLUMN jb SET STORAGE EXTERNAL,
           ALTER COLUMN by SET STORAGE EXTERNAL, ALTER COLUMN tsa SET STORAGE EXTERNAL,
           ALTER COLUMN f8a SET STORAGE EXTERNAL;
         ALTER TABLE blobs SET (toast_tuple_target = 128);
         INSERT INTO items (id, v, code, price) SELECT g, 'first', 'c' || g, g * 1.25 FROM generate_series(1, 10) g;
         INSERT INTO blobs SELECT g, 0, repeat('b', 3000), array_fill(g, ARRAY[900]), array_fill('t'::text, ARRAY[600]),
           repeat('9', 900)::numeric, ('1.' || repeat('3', 900))::numeric, jsonb_build_object('k', repeat('j', 3000)),
           decode(repeat('ab', 3000), 'hex'), array_fill('2024-01-01 00:00+00'::timestamptz, ARRAY[300]),
           array_fill(1.5::float8, ARRAY[600]) FROM generate_series(1, 3) g;",
    );
    let dir = scratch();
    let capture = write_config(dir.path(), "capture", &capture_into(&pg, &broker, 4, ""));
    let apply = write_config(
        dir.path(),
        "apply",
        &format!(
            "[pipeline]\nname = \"apply\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n\
             [source]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"shop.public.items\", \"shop.public.blobs\"]\n\
             group_id = \"apply\"\nassignment = \"roundrobin\"\n\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n",
            broker.brokers(),
            pg.url("replica")
        ),
    );
    let capture = Ferry::start(&capture, &dir.path().join("capture.log"));
    let log = dir.path().join("apply.log");
    let items = "SELECT * FROM items ORDER BY id";
    let blobs =
        "SELECT id, other, md5(big), md5(ia::text), md5(ta::text), md5(nb::text), md5(nfree::text),
         md5(jb::text), md5(by), md5(tsa::text), md5(f8a::text) FROM blobs ORDER BY id";
    let columns = "SELECT attname, format_type(atttypid, atttypmod), attgenerated FROM pg_attribute
         WHERE attrelid = 'public.items'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum";
    let same = |sqls: &[&str]| {
        sqls.iter()
            .all(|sql| pg.try_psql("replica", sql).ok() == Some(pg.psql("shop", sql)))
    };
    let ferry = Ferry::start(&apply, &log);
    assert!(
        wait_until(Duration::from_secs(60), || same(&[items, blobs, columns])),
        "the first rows did not arrive\n{}\n{}",
        capture.log(),
        ferry.log()
    );
    assert!(ferry.terminate().success());
    // While the apply side is down: a backlog whose records straddle schema changes, over four partitions.
    pg.psql(
        "shop",
        "INSERT INTO items (id, v, code, price) SELECT g, 'pre', 'c' || g, g * 1.25 FROM generate_series(11, 400) g;
         ALTER TABLE items ADD COLUMN extra int;
         ALTER TABLE items ALTER COLUMN code TYPE varchar(40);
         INSERT INTO items (id, v, code, price, extra) SELECT g, 'post', 'longer than ten ' || g, g + 0.33, -g FROM generate_series(401, 800) g;
         UPDATE items SET extra = id WHERE id <= 400 AND id % 3 = 0;
         UPDATE blobs SET other = other + 1;",
    );
    let ferry = Ferry::start(&apply, &log);
    assert!(
        wait_until(Duration::from_secs(90), || same(&[items, blobs, columns])),
        "the backlog did not arrive exactly\nrows that differ:\n{}\ncolumns:\n{}\n{:?}\nblobs:\n{}\n{:?}\ncapture:\n{}\napply:\n{}",
        differing(&pg.psql("shop", items), &pg.try_psql("replica", items).unwrap_or_default()),
        pg.psql("shop", columns),
        pg.try_psql("replica", columns),
        pg.psql("shop", blobs),
        pg.try_psql("replica", blobs),
        capture.log(),
        ferry.log()
    );
}

/// A target added to a running apply pipeline makes every partition be read again from its start, so the first
/// records the decoder meets describe the table as it was before the source widened it (a longer varchar, a
/// higher numeric scale). The targets that hold the later form must keep it: taking a column back to the earlier
/// form would round the values written since (numeric) or fail on them (varchar), silently in the first case.
/// The same happens after any restart, or in a second process of the group, whose decoder has not met the later
/// records yet: each sink keeps the source point of each column's form in its record of the table. The history
/// also adds a column in one change and widens it in two more (records read before it existed leave it alone).
/// A column narrowed at the source at last (which rewrites its rows without row changes, an order the topic does
/// not keep across partitions) stops the pipeline, naming it.
#[test]
fn records_read_again_from_the_start_never_take_a_target_column_back_to_an_earlier_form() {
    let pg = server_with_dbs();
    pg.create_db("late");
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let broker = KafkaBroker::start();
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, code varchar(10), price numeric(10,2));
         INSERT INTO items SELECT g, 'c' || g, g * 1.25 FROM generate_series(1, 40) g;",
    );
    let dir = scratch();
    let capture = write_config(dir.path(), "capture", &capture_into(&pg, &broker, 4, ""));
    let capture = Ferry::start(&capture, &dir.path().join("capture.log"));
    assert!(
        wait_until(Duration::from_secs(60), || metric(
            &capture,
            "ferry_sink_rows_total"
        ) >= 40.0),
        "the capture pipeline did not publish its snapshot\n{}",
        capture.log()
    );
    // Widened while the topic holds the earlier records; new rows and updates use the wider forms.
    for step in [
        "ALTER TABLE items ALTER COLUMN code TYPE varchar(40), ALTER COLUMN price TYPE numeric(12,4);
         INSERT INTO items SELECT g, 'a code longer than ten ' || g, g + 0.1234 FROM generate_series(41, 80) g;
         UPDATE items SET price = price + 0.0001 WHERE id % 2 = 0;",
        "ALTER TABLE items ADD COLUMN c numeric(8,2); UPDATE items SET c = id + 0.25 WHERE id <= 20;",
        "ALTER TABLE items ALTER c TYPE numeric(10,2); UPDATE items SET c = id + 1.5 WHERE id BETWEEN 21 AND 30;",
        "ALTER TABLE items ALTER c TYPE numeric(12,4); UPDATE items SET c = id + 0.1234;",
    ] {
        pg.psql("shop", step);
    }
    let sinks = |late: bool| {
        let mut s = format!(
            "[[sink]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[sink]]\nname = \"maria\"\ntype = \"mysql\"\nurl = \"{}\"\n",
            pg.url("replica"),
            my.url("shop")
        );
        if late {
            s += &format!(
                "\n[[sink]]\nname = \"late\"\ntype = \"postgres\"\nurl = \"{}\"\n",
                pg.url("late")
            );
        }
        s
    };
    let apply = |late: bool| {
        write_config(
            dir.path(),
            "apply",
            &format!(
                "[pipeline]\nname = \"apply\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n\
                 [source]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"shop.public.items\"]\n\
                 group_id = \"apply\"\nassignment = \"roundrobin\"\n\n{}",
                broker.brokers(),
                sinks(late)
            ),
        )
    };
    let rows = "SELECT id, code, price, c FROM items ORDER BY id";
    let columns = "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = 'public.items'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum";
    let maria_columns = "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'items' ORDER BY ORDINAL_POSITION";
    let maria = |sql: &str| my.try_sql(sql).unwrap_or_default().replace('\t', "|");
    let same = |dbs: &[&str]| {
        let source = pg.psql("shop", rows);
        dbs.iter().all(|db| {
            pg.try_psql(db, rows).ok().as_ref() == Some(&source)
                && pg.try_psql(db, columns).ok() == Some(pg.psql("shop", columns))
        }) && maria(&format!("USE shop; {rows}")) == source
    };
    let log = dir.path().join("apply.log");
    let ferry = Ferry::start(&apply(false), &log);
    assert!(
        wait_until(Duration::from_secs(60), || same(&["replica"])),
        "the records did not arrive exactly\n{}\n{}",
        differing(
            &pg.psql("shop", rows),
            &pg.try_psql("replica", rows).unwrap_or_default()
        ),
        ferry.log()
    );
    assert_eq!(
        maria(maria_columns),
        "id|int(11)\ncode|varchar(40)\nprice|decimal(12,4)\nc|decimal(12,4)"
    );
    assert!(ferry.terminate().success());

    let mut ferry = Ferry::start(&apply(true), &log);
    assert!(
        wait_until(Duration::from_secs(90), || same(&["replica", "late"])),
        "after reading the topic again, the targets differ from the source\nreplica:\n{}\nlate:\n{}\ncolumns:\n{:?}\n{}\nmaria:\n{}\n{}",
        differing(&pg.psql("shop", rows), &pg.try_psql("replica", rows).unwrap_or_default()),
        differing(&pg.psql("shop", rows), &pg.try_psql("late", rows).unwrap_or_default()),
        pg.try_psql("replica", columns),
        maria(maria_columns),
        differing(&pg.psql("shop", rows), &maria(&format!("USE shop; {rows}"))),
        ferry.log()
    );
    // Never narrowed on the way (a narrowing and a widening again would leave the same types but rounded rows,
    // which the comparison above catches; a varchar narrowed fails its ALTER, which the log would show).
    assert!(!ferry.log().contains("ERROR"), "{}", ferry.log());
    assert_eq!(
        maria(maria_columns),
        "id|int(11)\ncode|varchar(40)\nprice|decimal(12,4)\nc|decimal(12,4)"
    );
    pg.psql(
        "shop",
        "ALTER TABLE items ALTER price TYPE numeric(10,2); UPDATE items SET code = 'narrowed' WHERE id = 1;",
    );
    let status = ferry.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the pipeline did not stop at the narrowing\n{}",
        ferry.log()
    );
    assert!(
        ferry.log().contains(
            "column price was narrowed at the source from numeric(12,4) to numeric(10,2)"
        ),
        "{}",
        ferry.log()
    );
    assert_eq!(
        pg.psql("replica", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'price'"),
        "numeric(12,4)",
        "the target column was left as it was"
    );
}

/// The lines of `a` not in `b` and of `b` not in `a`, for failure messages.
fn differing(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let only = |x: &[&str], y: &[&str]| {
        x.iter()
            .filter(|l| !y.contains(l))
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "source only:\n{}\ntarget only:\n{}",
        only(&a, &b),
        only(&b, &a)
    )
}
