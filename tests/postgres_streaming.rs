//! Transactions PostgreSQL streams before they commit (protocol 2, `streaming 'on'`, PostgreSQL 14+): Ferry
//! spools them to disk and applies each at its commit, in commit order, leaving out what aborted.

mod support;

use std::time::Duration;

use support::*;

/// A server with databases `shop` and `replica` that streams every transaction past 64 kB of decoded changes.
fn streaming_server() -> PgServer {
    let pg = PgServer::start_with(&["wal_level=logical", "logical_decoding_work_mem=64kB"]);
    pg.create_db("shop");
    pg.create_db("replica");
    pg
}

/// Big transactions streamed in blocks interleaved with small ones: one commits after a savepoint rolled back
/// (nested), one aborts whole, one deletes and updates what others wrote; Ferry is killed while they stream and
/// while it applies them. The target equals the source, the server did stream, and no spool file is left behind.
#[test]
fn streamed_transactions_land_once_at_their_commit_without_what_aborted() {
    let pg = streaming_server();
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, doc text);
         INSERT INTO items SELECT g, g, 'seed' FROM generate_series(1, 1000) g;
         CREATE TABLE ledger (writer int, seq int, PRIMARY KEY (writer, seq));",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "streamed",
        &pg_to_pg_config(&pg, "streamed", "[pipeline.batch]\nmax_wait = \"20ms\"")
            .replace("[source]\n", "[source]\nstreaming = true\n"),
    );
    let log = dir.path().join("ferry.log");
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();

    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN; INSERT INTO ledger VALUES ({w}, {seq});
                 UPDATE items SET n = n + 1 WHERE id = {seq} % 1000 + 1; COMMIT;"
            ),
        )
    });
    let big = std::thread::spawn(move || {
        for round in 0..3 {
            let base = 1_000_000 * (round + 1);
            let committed = psql_ok(
                port,
                "shop",
                &format!(
                    "BEGIN;
                     INSERT INTO items SELECT g, g, repeat('x', 100) FROM generate_series({base}, {base} + 60000) g;
                     SAVEPOINT a;
                     INSERT INTO items SELECT g, -g, 'gone' FROM generate_series({base} + 100000, {base} + 120000) g;
                     SAVEPOINT b;
                     UPDATE items SET doc = 'gone too' WHERE id BETWEEN {base} AND {base} + 30000;
                     ROLLBACK TO SAVEPOINT a;
                     UPDATE items SET n = n * 2 WHERE id BETWEEN {base} + 20000 AND {base} + 40000;
                     DELETE FROM items WHERE id BETWEEN {base} + 50000 AND {base} + 55000;
                     SAVEPOINT c;
                     INSERT INTO items SELECT g, g, 'kept' FROM generate_series({base} + 200000, {base} + 210000) g;
                     RELEASE SAVEPOINT c;
                     COMMIT;"
                ),
            );
            assert!(committed, "the big transaction failed");
            // Streamed, then rolled back whole: none of it may reach the target.
            assert!(psql_ok(
                port,
                "shop",
                &format!(
                    "BEGIN;
                     INSERT INTO items SELECT g, g, 'aborted' FROM generate_series({base} + 300000, {base} + 360000) g;
                     UPDATE items SET n = 0 WHERE id <= 1000;
                     ROLLBACK;"
                ),
            ));
        }
    });
    // Kill Ferry while the big transactions stream and while it applies them.
    std::thread::sleep(Duration::from_millis(1500));
    ferry.kill9();
    kill_randomly(&config, &log, 3);
    big.join().expect("big transactions");
    writers.stop();

    let ferry = Ferry::start(&config, &log);
    wait_same(&pg, "SELECT id, n, doc FROM items ORDER BY id", &ferry);
    wait_same(
        &pg,
        "SELECT writer, seq FROM ledger ORDER BY writer, seq",
        &ferry,
    );
    let streamed: i64 = pg
        .psql(
            "shop",
            "SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = 'ferry_streamed'",
        )
        .parse()
        .expect("stream_txns");
    assert!(
        streamed > 0,
        "the server streamed no transaction: the test proves nothing"
    );
    assert!(
        ferry.log().contains("applying it from its spool"),
        "no streamed transaction was applied from the spool:\n{}",
        ferry.log()
    );
    let spool = std::env::temp_dir().join("ferry-spool-ferry_streamed");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
    assert!(ferry.terminate().success());
}

/// Transactions the server streams reach every target while still in progress (their rows are written into an
/// open target transaction), and land exactly once: committed; aborted (nothing lands); overtaken by another
/// transaction's commit or cut by a subtransaction's abort (undone, then applied whole at the commit); cut by a
/// SIGKILL of Ferry while in progress and just after the commit. PostgreSQL, SQLite and MariaDB targets.
#[test]
fn streamed_transactions_reach_the_targets_before_they_commit_and_land_once() {
    let pg = streaming_server();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, doc text);
         INSERT INTO items SELECT g, g, 'seed' FROM generate_series(1, 100) g;",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let config = write_config(
        dir.path(),
        "live",
        &format!(
            "{}\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            fan_out_config(&pg, "live", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
            my.url("replica")
        )
        .replace("[source]\n", "[source]\nstreaming = true\n"),
    );
    let log = dir.path().join("ferry.log");
    let mut ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    let sql = "SELECT id, n, doc FROM items ORDER BY id";
    let all_same = |ferry: &Ferry| {
        let want = pg.psql("shop", sql);
        let ok = wait_until(Duration::from_secs(60), || {
            pg.try_psql("replica", sql).ok().as_deref() == Some(want.as_str())
                && sqlite_rows(&db, sql).join("\n") == want
                && my
                    .try_sql(&format!("USE replica; {sql}"))
                    .is_ok_and(|s| s.replace('\t', "|").replace("NULL", "") == want)
        });
        assert!(ok, "a target differs from the source:\n{}", ferry.log());
    };
    all_same(&ferry);
    // A transaction applies live only on tables described in this session: a steady stream has described them.
    pg.psql("shop", "UPDATE items SET n = n WHERE id = 1");
    all_same(&ferry);
    let target_bytes = || -> i64 {
        pg.psql("replica", "SELECT pg_relation_size('items')")
            .parse()
            .unwrap()
    };
    let live_starts = |ferry: &Ferry| {
        ferry
            .log()
            .matches("applying a streamed transaction while it is in progress")
            .count()
    };
    // Waits until the target's table file grew while the source transaction is still open: rows reached it.
    let reaches_target_before_commit = |ferry: &Ferry, before: i64, starts: usize, from: u32| {
        assert!(
            wait_until(Duration::from_secs(60), || live_starts(ferry) > starts
                && target_bytes() > before),
            "the open transaction's rows did not reach the target (file {} bytes, was {before}):\n{}",
            target_bytes(),
            ferry.log()
        );
        assert_eq!(
            pg.psql(
                "replica",
                &format!("SELECT count(*) FROM items WHERE id >= {from}")
            ),
            "0",
            "rows of an open transaction are visible on the target"
        );
    };
    let insert = |from: u32, n: u32, doc: &str| {
        format!(
            "INSERT INTO items SELECT g, g, '{doc}' || repeat('x', 50) FROM generate_series({from}, {}) g;",
            from + n - 1
        )
    };

    // 1. Committed: reaches the target before its commit, lands once after.
    let mut s = SqlSession::open(pg.port, "shop");
    s.send(&format!("BEGIN; {}", insert(10_000, 40_000, "live")));
    reaches_target_before_commit(&ferry, target_bytes(), live_starts(&ferry), 10_000);
    assert!(s.finish(&format!(
        "{} UPDATE items SET n = -n WHERE id % 7 = 0; DELETE FROM items WHERE id % 11 = 0; COMMIT;",
        insert(60_000, 20_000, "more")
    )));
    all_same(&ferry);
    assert!(
        ferry
            .log()
            .contains("a transaction applied while in progress committed"),
        "{}",
        ferry.log()
    );

    // 2. Aborted: undone, nothing lands.
    let mut s = SqlSession::open(pg.port, "shop");
    s.send(&format!("BEGIN; {}", insert(100_000, 40_000, "aborted")));
    reaches_target_before_commit(&ferry, target_bytes(), live_starts(&ferry), 100_000);
    assert!(s.finish("ROLLBACK;"));
    all_same(&ferry);

    // 3. Overtaken by another transaction's commit: undone, applied whole at its commit.
    let mut s = SqlSession::open(pg.port, "shop");
    s.send(&format!("BEGIN; {}", insert(200_000, 40_000, "overtaken")));
    reaches_target_before_commit(&ferry, target_bytes(), live_starts(&ferry), 200_000);
    pg.psql("shop", "UPDATE items SET doc = 'small' WHERE id = 1");
    assert!(s.finish(&format!("{} COMMIT;", insert(250_000, 10_000, "after"))));
    all_same(&ferry);

    // 4. A subtransaction aborts: undone, applied at the commit without it.
    let mut s = SqlSession::open(pg.port, "shop");
    s.send(&format!("BEGIN; {}", insert(300_000, 40_000, "outer")));
    reaches_target_before_commit(&ferry, target_bytes(), live_starts(&ferry), 300_000);
    assert!(s.finish(&format!(
        "SAVEPOINT a; {} ROLLBACK TO SAVEPOINT a; {} COMMIT;",
        insert(350_000, 10_000, "gone"),
        insert(370_000, 10_000, "kept")
    )));
    all_same(&ferry);
    let abandoned = metric(&ferry, "ferry_sink_live_abandoned_total");
    assert!(
        abandoned >= 3.0 * 3.0,
        "undone live transactions, over three sinks: {abandoned}"
    );

    // 5. Ferry is SIGKILLed while one is in progress, and again right after a commit.
    let mut s = SqlSession::open(pg.port, "shop");
    s.send(&format!("BEGIN; {}", insert(400_000, 40_000, "killed")));
    reaches_target_before_commit(&ferry, target_bytes(), live_starts(&ferry), 400_000);
    ferry.kill9();
    ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    s.send(&insert(450_000, 20_000, "resumed"));
    assert!(s.finish("COMMIT;"));
    all_same(&ferry);
    let mut s = SqlSession::open(pg.port, "shop");
    s.send(&format!("BEGIN; {}", insert(500_000, 40_000, "committed")));
    reaches_target_before_commit(&ferry, target_bytes(), live_starts(&ferry), 500_000);
    assert!(s.finish("UPDATE items SET n = n + 1 WHERE id > 500000; COMMIT;"));
    ferry.kill9();
    ferry = Ferry::start(&config, &log);
    all_same(&ferry);
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir().join("ferry-spool-ferry_live"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
    assert!(ferry.try_exit().is_none());
    assert!(ferry.terminate().success());
}

/// Schema changes inside a streamed transaction reach no target before it commits, whether the table was
/// described in this session or not: a `DROP COLUMN` rolled back loses no value, a rename committed needs no
/// re-copy, and types created in the transaction are read as what they are.
#[test]
fn schema_changes_in_a_transaction_in_progress_wait_for_its_commit() {
    let pg = streaming_server();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL, note text);
         INSERT INTO orders SELECT g, g, 'note ' || g FROM generate_series(1, 20000) g;",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "ddl",
        &pg_to_pg_config(&pg, "ddl", "[pipeline.batch]\nmax_wait = \"20ms\"")
            .replace("[source]\n", "[source]\nstreaming = true\n"),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    let notes = "SELECT count(note) FROM orders";
    assert!(wait_until(Duration::from_secs(60), || pg
        .try_psql("replica", notes)
        .ok()
        .as_deref()
        == Some("20000")));

    // Not described in this session yet, then described: a DROP COLUMN in a transaction that rolls back.
    for round in 0..2 {
        let mut s = SqlSession::open(pg.port, "shop");
        s.send(
            "BEGIN; ALTER TABLE orders DROP COLUMN note; UPDATE orders SET amount = amount + 1;",
        );
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(
            pg.try_psql("replica", notes).as_deref(),
            Ok("20000"),
            "round {round}: the open transaction's DROP COLUMN reached the target:\n{}",
            ferry.log()
        );
        assert!(s.finish("ROLLBACK;"));
        pg.psql("shop", "UPDATE orders SET amount = amount + 1 WHERE id = 2");
        wait_same(
            &pg,
            "SELECT id, amount, note FROM orders ORDER BY id",
            &ferry,
        );
    }

    // A rename and new types, committed.
    assert!(psql_ok(
        pg.port,
        "shop",
        "BEGIN;
         ALTER TABLE orders RENAME COLUMN amount TO total;
         UPDATE orders SET total = total * 2;
         CREATE TYPE color AS ENUM ('red', 'green');
         CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE TABLE paint (id int PRIMARY KEY, c color, cs color[], n posint);
         INSERT INTO paint SELECT g, 'green', '{red,green}', g FROM generate_series(1, 20000) g;
         COMMIT;"
    ));
    wait_same(
        &pg,
        "SELECT id, total, note FROM orders ORDER BY id",
        &ferry,
    );
    wait_same(
        &pg,
        "SELECT id, c::text, cs::text, n FROM paint ORDER BY id",
        &ferry,
    );
    assert_eq!(
        pg.psql(
            "replica",
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'paint'::regclass AND attname = 'n'"
        ),
        "integer"
    );
    let log = ferry.log();
    assert!(!log.contains("unknown type"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert!(ferry.terminate().success());
}
