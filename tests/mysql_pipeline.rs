//! End-to-end: MariaDB → PostgreSQL and SQLite through the `ferry` binary, against real servers.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// A pipeline from MariaDB's `shop` into PostgreSQL's `replica` and an SQLite file.
fn config(my: &MariaDbServer, pg: &PgServer, sqlite: &std::path::Path, extra_source: &str) -> String {
    format!(
        "[pipeline]\nname = \"m\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"mysql\"\nurl = \"{}\"\nserver_id = 4242\n{extra_source}\n\n\
         [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n",
        my.url("shop"),
        pg.url("replica"),
        sqlite.display()
    )
}

/// Rows as `a|b|c` lines, the way psql -A prints them.
fn mariadb_rows(my: &MariaDbServer, sql: &str) -> String {
    my.sql(sql).replace('\t', "|")
}

#[test]
fn snapshot_then_stream_reaches_postgres_and_sqlite() {
    let my = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id int PRIMARY KEY, item varchar(40) NOT NULL, qty int, price decimal(10,2));
         USE shop; INSERT INTO shop.orders SELECT seq, concat('item ', seq), seq % 7, seq * 1.25 FROM seq_1_to_500;",
    );
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let cfg = write_config(dir.path(), "m", &config(&my, &pg, &db, ""));
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    let source = || mariadb_rows(&my, "SELECT id, item, qty, price FROM shop.orders ORDER BY id");
    let pg_target = || {
        pg.try_psql("replica", "SELECT id, item, qty, price FROM shop.orders ORDER BY id")
            .unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || pg_target().lines().count() == 500),
        "snapshot did not arrive:\n{}",
        ferry.log()
    );
    assert_eq!(pg_target(), source());
    my.sql(
        "BEGIN; INSERT INTO shop.orders VALUES (1001, 'new', 1, 9.99); UPDATE shop.orders SET qty = qty + 100 WHERE id <= 10;
         DELETE FROM shop.orders WHERE id BETWEEN 20 AND 29; COMMIT;
         UPDATE shop.orders SET id = 5000 WHERE id = 100;",
    );
    assert!(
        wait_until(WAIT, || pg_target() == source()),
        "stream did not converge:\n{}\n{}",
        pg_target(),
        ferry.log()
    );
    let sqlite = || sqlite_rows(&db, "SELECT id, item, qty, price FROM shop_orders ORDER BY id").join("\n");
    assert!(
        wait_until(WAIT, || sqlite().lines().count() == source().lines().count()),
        "sqlite: {}",
        ferry.log()
    );
    let status = ferry.terminate();
    assert!(status.success(), "{status:?}");
}
