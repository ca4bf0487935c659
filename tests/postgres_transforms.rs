//! End-to-end: the `[[transform]]` chain from PostgreSQL into PostgreSQL, MariaDB, SQLite and Kafka (Avro). The
//! expected target rows are computed by SQL on the source, so every comparison is against an independent result.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// The salt `mask` reads from the environment (`salt = "${MASK_SALT}"`); ferry inherits it.
fn set_salt() {
    std::env::set_var("MASK_SALT", "pepper");
}

/// What `with = "sha256"` gives for a text column, computed by PostgreSQL.
const SHA: &str = "encode(sha256(convert_to('pepper' || {c}, 'UTF8')), 'hex')";

fn sha(column: &str) -> String {
    SHA.replace("{c}", column)
}

#[test]
fn every_stage_kind_into_postgres() {
    set_salt();
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2), note text);
         CREATE TABLE customers (id int PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL,
                                 email text, card text, ssn text);
         CREATE TABLE events (id int PRIMARY KEY, at timestamp, code text, payload text, secret text);
         CREATE TABLE metrics (id int PRIMARY KEY, a int, b int, c int);
         CREATE TABLE measures (id int PRIMARY KEY, f float8, r real, iv interval, arr int[], tags text[]);
         INSERT INTO measures VALUES (1, 1e20, 3.4e38, '1 day 2 hours', '{{1,2},{3,4}}', '{\"a b\",\"\",plain}'),
           (2, 1.5e-7, 1234567, '1 mon -3 days', '{1,NULL}', '{null,\"x\\\"y\"}'),
           (3, 'Infinity', 123456, '-1 year -1.5 seconds', '{}', NULL);
         INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN 'draft' ELSE 'paid' END, g * 1.5, 'n' || g
           FROM generate_series(1, 30) g;
         INSERT INTO customers SELECT g, 'First' || g, 'Last' || g, 'c' || g || '@example.com',
           '4111 1111 1111 ' || lpad(g::text, 4, '0'), CASE WHEN g % 2 = 0 THEN '123-45-' || g END
           FROM generate_series(1, 20) g;
         INSERT INTO events SELECT g, timestamp '2024-03-31 00:30:00' + g * interval '1 hour',
           '  code-' || g || ' ', '{\"n\": ' || g || '}', 'secret' FROM generate_series(1, 10) g;
         INSERT INTO metrics SELECT g, g, g * 2, g * 3 FROM generate_series(1, 10) g;",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "kinds",
        &format!(
            "[pipeline]\nname = \"kinds\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [sink]\ntype = \"postgres\"\nurl = \"{}\"\n{}",
            pg.url("shop"),
            pg.url("replica"),
            r#"
[[transform]]
type = "filter"
tables = ["public.orders"]
mode = "rows"
where = "after.status != 'draft'"
[[transform]]
type = "route"
tables = ["public.orders"]
to = "archive.{table}_v2"
[[transform]]
type = "mask"
columns = ["public.customers.email"]
with = "sha256"
salt = "${MASK_SALT}"
[[transform]]
type = "mask"
columns = ["public.customers.card"]
with = "keep_last"
n = 4
[[transform]]
type = "mask"
columns = ["public.customers.ssn"]
with = "redact"
[[transform]]
type = "compute"
tables = ["public.customers"]
column = "full_name"
column_type = "text"
expression = "after.first_name + ' ' + after.last_name"
[[transform]]
type = "rename_columns"
tables = ["public.customers"]
columns = { card = "card_number" }
[[transform]]
type = "convert"
tables = ["public.events"]
columns = ["at"]
to = "timestamptz"
zone = "Europe/Paris"
[[transform]]
type = "convert"
tables = ["public.events"]
columns = ["code"]
trim = true
case = "upper"
[[transform]]
type = "convert"
tables = ["public.events"]
columns = ["payload"]
to = "jsonb"
[[transform]]
type = "drop_columns"
tables = ["public.events"]
columns = ["secret"]
[[transform]]
type = "keep_columns"
tables = ["public.metrics"]
columns = ["id", "a"]
[[transform]]
type = "convert"
columns = ["public.measures.f", "public.measures.r", "public.measures.iv", "public.measures.arr", "public.measures.tags"]
to = "text"
"#
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO orders VALUES (100, 'draft', 1, 'later paid'), (101, 'paid', 2, 'later draft');
         UPDATE orders SET status = 'paid' WHERE id IN (100, 3);
         UPDATE orders SET status = 'draft' WHERE id IN (101, 4);
         UPDATE orders SET amount = amount + 1 WHERE id BETWEEN 5 AND 9;
         DELETE FROM orders WHERE id IN (10, 12);
         INSERT INTO customers VALUES (21, 'Grace', 'Hopper', 'grace@example.com', '5500 0000 0000 0004', NULL);
         UPDATE customers SET last_name = 'Changed', email = 'new' || id || '@example.com' WHERE id <= 3;
         UPDATE customers SET ssn = 'x' WHERE id = 5;
         DELETE FROM customers WHERE id = 20;
         UPDATE customers SET id = 200 WHERE id = 19;
         INSERT INTO events VALUES (11, '2024-10-27 02:30:00', 'lower ', '[1, 2]', 's');
         UPDATE events SET code = ' again ' WHERE id = 2;
         DELETE FROM events WHERE id = 3;
         INSERT INTO metrics VALUES (11, 11, 22, 33);
         UPDATE metrics SET a = a + 100, b = 0 WHERE id <= 2;
         DELETE FROM metrics WHERE id = 10;",
    );
    // `mode = "rows"`: the target holds exactly the source rows that are not drafts, under the routed name.
    let same = |source: &str, target: &str| {
        let ok = wait_until(WAIT, || {
            pg.try_psql("replica", target).ok() == pg.try_psql("shop", source).ok()
        });
        assert!(
            ok,
            "target differs\n--- source {source}\n{}\n--- target {target}\n{}\n--- log\n{}",
            pg.psql("shop", source),
            pg.try_psql("replica", target).unwrap_or_else(|e| e),
            ferry.log()
        );
    };
    same(
        "SELECT id, status, amount, note FROM orders WHERE status <> 'draft' ORDER BY id",
        "SELECT id, status, amount, note FROM archive.orders_v2 ORDER BY id",
    );
    assert_eq!(
        pg.psql("replica", "SELECT to_regclass('public.orders') IS NULL"),
        "t"
    );
    same(
        &format!(
            "SELECT id, first_name, last_name, {}, repeat('*', length(card) - 4) || right(card, 4),
                    CASE WHEN ssn IS NOT NULL THEN 'REDACTED' END, first_name || ' ' || last_name
             FROM customers ORDER BY id",
            sha("email")
        ),
        "SELECT id, first_name, last_name, email, card_number, ssn, full_name FROM public.customers ORDER BY id",
    );
    // Europe/Paris wall times to instants by PostgreSQL's rules, including a time in the spring-forward gap
    // (2024-03-31 02:30) and one the fall-back repeats (2024-10-27 02:30); codes trimmed and upper case.
    same(
        "SELECT id, (at AT TIME ZONE 'Europe/Paris') AT TIME ZONE 'UTC', upper(btrim(code)), payload::jsonb
         FROM events ORDER BY id",
        "SELECT id, at AT TIME ZONE 'UTC', code, payload FROM public.events ORDER BY id",
    );
    same(
        "SELECT id, a FROM metrics ORDER BY id",
        "SELECT * FROM public.metrics ORDER BY id",
    );
    // Values converted to text read as PostgreSQL prints them (floats, intervals, arrays).
    pg.psql(
        "shop",
        "INSERT INTO measures VALUES (4, -0.0001, 1e-5, '-1 days +02:03:00', '{7}', '{\"{}\"}')",
    );
    same(
        "SELECT id, f::text, r::text, iv::text, arr::text, tags::text FROM measures ORDER BY id",
        "SELECT id, f, r, iv, arr, tags FROM public.measures ORDER BY id",
    );
    // The output schemas: a computed text column, a masked column as text, converted types, columns gone.
    let types = pg.psql(
        "replica",
        "SELECT table_name || '.' || column_name || ':' || data_type FROM information_schema.columns
         WHERE table_schema IN ('public', 'archive') AND table_name NOT LIKE 'ferry%'
         ORDER BY table_name, ordinal_position",
    );
    for expected in [
        "customers.full_name:text",
        "customers.card_number:text",
        "events.at:timestamp with time zone",
        "events.payload:jsonb",
        "orders_v2.amount:numeric",
    ] {
        assert!(
            types.lines().any(|l| l == expected),
            "{expected} missing:\n{types}"
        );
    }
    assert!(!types.contains("events.secret"), "{types}");
    assert!(!types.contains("metrics.b"), "{types}");
    assert!(ferry.terminate().success());
}

/// The transaction context reaches expressions: commit time as the source recorded it
/// (`track_commit_timestamp`), and the replication origin a transaction was applied under.
#[test]
fn commit_time_and_origin_reach_expressions() {
    let pg = PgServer::start_with(&["wal_level=logical", "track_commit_timestamp=on"]);
    pg.create_db("shop");
    pg.create_db("replica");
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text); SELECT pg_replication_origin_create('upstream_a');",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "ctx",
        &format!(
            "[pipeline]\nname = \"ctx\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [sink]\ntype = \"postgres\"\nurl = \"{}\"\n{}",
            pg.url("shop"),
            pg.url("replica"),
            r#"
[[transform]]
type = "compute"
column = "committed"
column_type = "timestamptz"
expression = "tx.commit_time"
[[transform]]
type = "compute"
column = "origin"
column_type = "text"
expression = "tx.origin"
"#
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    pg.psql("shop", "INSERT INTO t VALUES (1, 'local')");
    pg.psql(
        "shop",
        "BEGIN; INSERT INTO t VALUES (2, 'local'); UPDATE t SET v = 'again' WHERE id = 1; COMMIT;",
    );
    pg.psql(
        "shop",
        "SELECT pg_replication_origin_session_setup('upstream_a');
         BEGIN;
         SELECT pg_replication_origin_xact_setup('0/AB', '2024-01-02 03:04:05.678901+00');
         INSERT INTO t VALUES (3, 'replicated');
         COMMIT;",
    );
    let source = "SELECT id, v, pg_xact_commit_timestamp(xmin), \
                  CASE WHEN v = 'replicated' THEN 'upstream_a' END FROM t ORDER BY id";
    let target = "SELECT id, v, committed, origin FROM public.t ORDER BY id";
    let ok = wait_until(WAIT, || {
        pg.try_psql("replica", target).ok() == pg.try_psql("shop", source).ok()
    });
    assert!(
        ok,
        "--- source\n{}\n--- target\n{}\n--- log\n{}",
        pg.psql("shop", source),
        pg.try_psql("replica", target).unwrap_or_else(|e| e),
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

/// A filter that drops every row of many transactions: the slot's confirmed position still moves past them,
/// so the source can release its WAL, and the metrics count the rows left out.
#[test]
fn transactions_whose_rows_are_all_filtered_still_advance_the_slot() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE noise (id int PRIMARY KEY, v int); CREATE TABLE kept (id int PRIMARY KEY);",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "adv",
        &format!(
            "[pipeline]\nname = \"adv\"\nheartbeat_interval = \"24h\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [sink]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[transform]]\ntype = \"filter\"\ntables = [\"public.noise\"]\nwhere = \"false\"\n",
            pg.url("shop"),
            pg.url("replica"),
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    for i in 0..49 {
        pg.psql("shop", &format!("INSERT INTO noise VALUES ({i}, {i})"));
    }
    // A position inside the last transaction: its commit, and so the slot once it is confirmed, lies past it.
    let after_writes = pg.psql(
        "shop",
        "BEGIN; INSERT INTO noise VALUES (49, 49); SELECT pg_current_wal_insert_lsn(); COMMIT;",
    );
    let advanced = wait_until(WAIT, || {
        pg.try_psql(
            "shop",
            &format!(
                "SELECT confirmed_flush_lsn >= '{after_writes}' FROM pg_replication_slots WHERE slot_name = 'ferry_adv'"
            ),
        )
        .is_ok_and(|v| v == "t")
    });
    assert!(
        advanced,
        "the slot stayed behind {after_writes}: {}\n{}",
        pg.psql(
            "shop",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots"
        ),
        ferry.log()
    );
    assert_eq!(pg.psql("replica", "SELECT count(*) FROM public.noise"), "0");
    let filtered = "ferry_transform_rows_filtered_total{pipeline=\"adv\"} 50";
    assert!(
        wait_until(WAIT, || ferry
            .get("/metrics")
            .is_some_and(|(_, m)| m.contains(filtered))),
        "{:?}",
        ferry.get("/metrics")
    );
    assert!(ferry.terminate().success());
}

/// filter + mask + compute + route from PostgreSQL into MariaDB, SQLite and Kafka (Avro) at once.
#[test]
fn a_four_stage_chain_into_mariadb_sqlite_and_kafka_avro() {
    set_salt();
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    let broker = KafkaBroker::start();
    let registry = SchemaRegistry::start();
    pg.psql(
        "shop",
        "CREATE TABLE customers (id int PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL,
                                 email text NOT NULL, phone bigint, status text NOT NULL);
         INSERT INTO customers SELECT g, 'F' || g, 'L' || g, 'u' || g || '@example.com', 5550000 + g,
           CASE WHEN g % 4 = 0 THEN 'draft' ELSE 'active' END FROM generate_series(1, 12) g;",
    );
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config = write_config(
        dir.path(),
        "four",
        &format!(
            "[pipeline]\nname = \"four\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n\
             [[sink]]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"shop\"\nformat = \"avro\"\nschema_registry = \"{}\"\n{}",
            pg.url("shop"),
            my.url("replica"),
            db.display(),
            broker.brokers(),
            registry.url(),
            r#"
[[transform]]
type = "filter"
tables = ["public.customers"]
where = "op == 'd' || after.status != 'draft'"
[[transform]]
type = "mask"
columns = ["public.customers.email", "public.customers.phone"]
with = "sha256"
salt = "${MASK_SALT}"
[[transform]]
type = "compute"
tables = ["public.customers"]
column = "full_name"
column_type = "text"
expression = "after.first_name + ' ' + after.last_name"
[[transform]]
type = "route"
tables = ["public.customers"]
to = "crm.people"
"#
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO customers VALUES (13, 'Ada', 'Lovelace', 'ada@example.com', 5551234, 'active'),
                                      (14, 'Draft', 'Only', 'd@example.com', NULL, 'draft');
         UPDATE customers SET last_name = 'Byron' WHERE id = 13;
         DELETE FROM customers WHERE id = 1;",
    );
    // Inserted drafts never arrive; the rest carry masked e-mail and phone and the computed name.
    let expected = pg.psql(
        "shop",
        &format!(
            "SELECT id, {}, {}, first_name || ' ' || last_name FROM customers WHERE status <> 'draft' ORDER BY id",
            sha("email"),
            sha("phone::text")
        ),
    );
    let mariadb = || {
        my.try_sql("SELECT id, email, phone, full_name FROM replica.people ORDER BY id")
            .unwrap_or_default()
    };
    let sqlite = || {
        sqlite_rows(
            &db,
            "SELECT id, email, phone, full_name FROM crm_people ORDER BY id",
        )
        .join("\n")
    };
    assert!(
        wait_until(WAIT, || mariadb() == expected.replace('|', "\t")
            && sqlite() == expected),
        "--- expected\n{expected}\n--- mariadb\n{}\n--- sqlite\n{}\n--- log\n{}",
        mariadb(),
        sqlite(),
        ferry.log()
    );
    // Avro: the topic has the routed name; the computed column is in the registered schema and the masked
    // bigint is a string.
    let topic = "shop.crm.people";
    let records = || broker.consume_avro(&registry, &[topic]);
    assert!(
        wait_until(WAIT, || records().len() >= 13),
        "{:?}\n{}",
        records(),
        ferry.log()
    );
    let all = records();
    let ada = all
        .iter()
        .rev()
        .find(|r| r["value"]["after"]["id"] == 13)
        .expect("Ada's update");
    assert_eq!(ada["value"]["after"]["full_name"], "Ada Byron");
    assert!(ada["value"]["after"]["phone"]
        .as_str()
        .is_some_and(|p| p.len() == 64));
    assert!(all.iter().all(|r| r["value"]["after"]["id"] != 14));
    assert_eq!(ada["value"]["source"]["table"], "people");
    assert!(ferry.terminate().success());
}
