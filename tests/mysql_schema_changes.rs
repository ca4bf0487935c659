//! Schema changes while streaming from MariaDB (into PostgreSQL, SQLite and MariaDB): the ALTER statements in
//! the binlog say what the row layout alone cannot, a rename or a new column's default.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn mariadb_add_column_default_rename_and_type_change_keep_every_value() {
    let my = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql(
        "CREATE DATABASE shop; CREATE DATABASE copy;
         CREATE TABLE shop.t (id int PRIMARY KEY, v varchar(20), amount decimal(6,2));
         INSERT INTO shop.t VALUES (1, 'one', 1.50), (2, 'two', 2.25);",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "my",
        &format!(
            "[pipeline]\nname = \"my\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"{}\"\ntables = [\"shop.t\"]\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            my.url("shop"),
            pg.url("replica"),
            db.display(),
            my.url("copy")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    my.sql("INSERT INTO shop.t VALUES (3, 'three', 3.00)");
    let wait_all = |pg_sql: &str, lite_sql: &str, my_sql: &str, expected: &str| {
        let mine = || {
            my.try_sql(my_sql)
                .map(|s| s.replace('\t', "|"))
                .unwrap_or_default()
        };
        let ok = wait_until(WAIT, || {
            pg.try_psql("replica", pg_sql).ok().as_deref() == Some(expected)
                && sqlite_rows(&db, lite_sql).join("\n") == expected
                && mine() == expected
        });
        assert!(
            ok,
            "expected\n{expected}\n--- postgres\n{}\n--- sqlite\n{}\n--- mariadb copy\n{}\n--- log\n{}",
            pg.try_psql("replica", pg_sql).unwrap_or_else(|e| e),
            sqlite_rows(&db, lite_sql).join("\n"),
            mine(),
            ferry.log()
        );
    };

    // ADD COLUMN … DEFAULT: the rows already there read the default, in every target too.
    my.sql(
        "ALTER TABLE shop.t ADD COLUMN b varchar(10) DEFAULT 'dflt', ADD COLUMN p decimal(6,2) DEFAULT 9.99,
           ADD COLUMN f int NOT NULL DEFAULT -3;
         INSERT INTO shop.t (id, v, amount) VALUES (4, 'four', 4.00);",
    );
    wait_all(
        "SELECT id, v, b, p, f FROM shop.t ORDER BY id",
        "SELECT id, v, b, p, f FROM shop_t ORDER BY id",
        "SELECT id, v, b, p, f FROM copy.t ORDER BY id",
        "1|one|dflt|9.99|-3\n2|two|dflt|9.99|-3\n3|three|dflt|9.99|-3\n4|four|dflt|9.99|-3",
    );

    // RENAME COLUMN, then CHANGE to another name: the values stay under the new names.
    my.sql("ALTER TABLE shop.t RENAME COLUMN v TO label; UPDATE shop.t SET label = 'ONE' WHERE id = 1;");
    my.sql("ALTER TABLE shop.t CHANGE label title varchar(30); UPDATE shop.t SET amount = 9 WHERE id = 2;");
    wait_all(
        "SELECT id, title, b FROM shop.t ORDER BY id",
        "SELECT id, title, b FROM shop_t ORDER BY id",
        "SELECT id, title, b FROM copy.t ORDER BY id",
        "1|ONE|dflt\n2|two|dflt\n3|three|dflt\n4|four|dflt",
    );

    // MODIFY to a wider decimal: the target column follows, nothing is rounded.
    my.sql("ALTER TABLE shop.t MODIFY amount decimal(10,5); INSERT INTO shop.t (id, title, amount) VALUES (5, 'five', 2.71828);");
    wait_all(
        "SELECT id, amount FROM shop.t WHERE id = 5",
        "SELECT id, amount FROM shop_t WHERE id = 5",
        "SELECT id, amount FROM copy.t WHERE id = 5",
        "5|2.71828",
    );
    assert_eq!(
        pg.psql("replica", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'shop.t'::regclass AND attname = 'amount'"),
        "numeric(10,5)"
    );
    assert!(ferry.terminate().success());
}

/// A datetime and a time cut to fewer fractional digits in MariaDB, which rewrites its rows without a row event
/// for any of them: the MariaDB copy cuts its own the same way; PostgreSQL and SQLite, which cannot know the
/// source's rule (MariaDB truncates, MySQL rounds), quarantine the table, saying why, and apply none of its later
/// rows.
#[test]
fn mariadb_fractional_seconds_cut_are_followed_or_quarantined() {
    let my = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql(
        "CREATE DATABASE shop; CREATE DATABASE copy;
         CREATE TABLE shop.t (id int PRIMARY KEY, d datetime(6), tm time(6));
         INSERT INTO shop.t VALUES (1, '2024-05-06 07:08:09.123456', '07:08:09.999999'),
           (2, '1999-12-31 23:59:59.999500', '00:00:00.000500'), (3, NULL, NULL);",
    );
    let dir = scratch();
    let cfg = fan_out(&my, &pg, dir.path(), "frac", "tables = [\"shop.t\"]");
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    // A row after the snapshot, so that the stream has described the table.
    my.sql("INSERT INTO shop.t VALUES (5, '2020-02-02 02:02:02.222222', '02:02:02.222222')");
    wait_targets(
        &my,
        &pg,
        dir.path(),
        &ferry,
        ("SELECT count(*) FROM {t}", "t"),
        "4",
    );
    // The cut, and no row after it: the targets follow at the ALTER.
    my.sql("ALTER TABLE shop.t MODIFY d datetime(3), MODIFY tm time(3)");
    let all = "SELECT id, CAST(d AS CHAR), CAST(tm AS CHAR) FROM {t} ORDER BY id";
    let source = my.sql(&all.replace("{t}", "shop.t")).replace('\t', "|");
    let copied = wait_until(WAIT, || {
        my.try_sql(&all.replace("{t}", "copy.t"))
            .map(|s| s.replace('\t', "|"))
            .ok()
            == Some(source.clone())
    });
    assert!(
        copied,
        "the MariaDB copy differs from\n{source}\n{}",
        ferry.log()
    );
    for target in ["PostgreSQL", "SQLite"] {
        assert!(
            wait_until(WAIT, || ferry
                .log()
                .contains(&format!("table quarantined in the {target} target"))),
            "{target} did not quarantine the table\n{}",
            ferry.log()
        );
    }
    assert!(ferry
        .log()
        .contains("column d changed type from datetime(6) to datetime(3)"));
    // Later rows reach the MariaDB copy only.
    my.sql("INSERT INTO shop.t VALUES (4, '2024-01-01 00:00:00.5', '01:02:03.5')");
    let source = my.sql(&all.replace("{t}", "shop.t")).replace('\t', "|");
    assert!(
        wait_until(WAIT, || my
            .try_sql(&all.replace("{t}", "copy.t"))
            .map(|s| s.replace('\t', "|"))
            .ok()
            == Some(source.clone())),
        "the MariaDB copy differs from\n{source}\n{}",
        ferry.log()
    );
    assert_eq!(
        pg.psql("replica", "SELECT count(*) FROM shop.t WHERE id = 4"),
        "0"
    );
    assert_eq!(
        sqlite_rows(
            &dir.path().join("r.db"),
            "SELECT count(*) FROM shop_t WHERE id = 4"
        )
        .join(""),
        "0"
    );
    assert!(ferry.terminate().success());
}

/// A pipeline from MariaDB's `shop` (`tables` as given) into PostgreSQL, SQLite and another MariaDB database.
fn fan_out(
    my: &MariaDbServer,
    pg: &PgServer,
    dir: &std::path::Path,
    name: &str,
    tables: &str,
) -> std::path::PathBuf {
    write_config(
        dir,
        name,
        &format!(
            "[pipeline]\nname = \"{name}\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"{}\"\n{tables}\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            my.url("shop"),
            pg.url("replica"),
            dir.join("r.db").display(),
            my.url("copy")
        ),
    )
}

/// Waits until PostgreSQL, SQLite and the MariaDB copy all answer `expected` for `sql` on table `t` of `shop`.
fn wait_targets(
    my: &MariaDbServer,
    pg: &PgServer,
    dir: &std::path::Path,
    ferry: &Ferry,
    (sql, table): (&str, &str),
    expected: &str,
) {
    let on = |name: &str| sql.replace("{t}", name);
    let mine = || {
        my.try_sql(&on(&format!("copy.{table}")))
            .map(|s| s.replace('\t', "|"))
            .unwrap_or_default()
    };
    let db = dir.join("r.db");
    let ok = wait_until(WAIT, || {
        pg.try_psql("replica", &on(&format!("shop.{table}")))
            .ok()
            .as_deref()
            == Some(expected)
            && sqlite_rows(&db, &on(&format!("shop_{table}"))).join("\n") == expected
            && mine() == expected
    });
    assert!(
        ok,
        "expected\n{expected}\n--- postgres\n{}\n--- sqlite\n{}\n--- mariadb copy\n{}\n--- log\n{}",
        pg.try_psql("replica", &on(&format!("shop.{table}")))
            .unwrap_or_else(|e| e),
        sqlite_rows(&db, &on(&format!("shop_{table}"))).join("\n"),
        mine(),
        ferry.log()
    );
}

#[test]
fn mariadb_table_swaps_and_drop_create_leave_exactly_the_source_rows() {
    let my = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql(
        "CREATE DATABASE shop; CREATE DATABASE copy; USE shop;
         CREATE TABLE shop.t (id int PRIMARY KEY, v varchar(10));
         INSERT INTO shop.t SELECT seq, concat('v', seq) FROM seq_1_to_50;
         CREATE TABLE shop.d (id int PRIMARY KEY, v varchar(10));
         INSERT INTO shop.d VALUES (1, 'old'), (2, 'old');",
    );
    let dir = scratch();
    let cfg = fan_out(&my, &pg, dir.path(), "sw", "");
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    my.sql("UPDATE shop.t SET v = 'seen' WHERE id = 2");
    wait_targets(
        &my,
        &pg,
        dir.path(),
        &ferry,
        ("SELECT count(*) FROM {t}", "t"),
        "50",
    );

    // How gh-ost finishes: a shadow table with a new column, filled, then swapped in by one RENAME.
    my.sql(
        "CREATE TABLE shop._t_gho LIKE shop.t; ALTER TABLE shop._t_gho ADD COLUMN extra int NOT NULL DEFAULT 7;
         INSERT INTO shop._t_gho (id, v) SELECT id, v FROM shop.t;
         UPDATE shop.t SET v = 'late' WHERE id = 1; UPDATE shop._t_gho SET v = 'late' WHERE id = 1;
         RENAME TABLE shop.t TO shop._t_del, shop._t_gho TO shop.t;
         INSERT INTO shop.t VALUES (51, 'new', 8);",
    );
    wait_targets(
        &my,
        &pg,
        dir.path(),
        &ferry,
        ("SELECT count(*), sum(extra), min(v), max(v) FROM {t}", "t"),
        "51|358|late|v9",
    );
    wait_targets(
        &my,
        &pg,
        dir.path(),
        &ferry,
        ("SELECT count(*) FROM {t}", "_t_del"),
        "50",
    );

    // DROP then CREATE under the same name: no stale row survives.
    my.sql(
        "DROP TABLE shop.d; CREATE TABLE shop.d (id int PRIMARY KEY, v varchar(10));
         INSERT INTO shop.d VALUES (2, 'new');",
    );
    wait_targets(
        &my,
        &pg,
        dir.path(),
        &ferry,
        ("SELECT id, v FROM {t} ORDER BY id", "d"),
        "2|new",
    );
}

#[test]
fn a_followed_table_swapped_for_one_ferry_does_not_follow_stops_the_pipeline() {
    let my = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql(
        "CREATE DATABASE shop; CREATE DATABASE copy;
         CREATE TABLE shop.t (id int PRIMARY KEY, v varchar(10)); INSERT INTO shop.t VALUES (1, 'a');",
    );
    let dir = scratch();
    let cfg = fan_out(&my, &pg, dir.path(), "sx", "tables = [\"shop.t\"]");
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    my.sql(
        "CREATE TABLE shop._t_gho LIKE shop.t; INSERT INTO shop._t_gho VALUES (1, 'a'), (2, 'b');
         RENAME TABLE shop.t TO shop._t_del, shop._t_gho TO shop.t; INSERT INTO shop.t VALUES (3, 'c');",
    );
    let stopped = ferry.wait_exit(WAIT);
    let log = ferry.log();
    assert!(stopped.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("table shop.t is now the table shop._t_gho, which Ferry does not follow"),
        "{log}"
    );
}
