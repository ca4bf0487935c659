//! Transactions PostgreSQL streams before they commit (protocol 2, `streaming 'on'`, PostgreSQL 14+): Ferry
//! spools them to disk and applies each at its commit, in commit order, leaving out what aborted.

mod support;

use std::time::Duration;

use support::*;

/// Big transactions streamed in blocks interleaved with small ones: one commits after a savepoint rolled back
/// (nested), one aborts whole, one deletes and updates what others wrote; Ferry is killed while they stream and
/// while it applies them. The target equals the source, the server did stream, and no spool file is left behind.
#[test]
fn streamed_transactions_land_once_at_their_commit_without_what_aborted() {
    // 64 kB of decoded changes and the walsender streams the transaction.
    let pg = PgServer::start_with(&["wal_level=logical", "logical_decoding_work_mem=64kB"]);
    pg.create_db("shop");
    pg.create_db("replica");
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
