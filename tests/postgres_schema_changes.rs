//! Schema changes while streaming (PostgreSQL source; PostgreSQL, SQLite and MariaDB targets): each DDL kind
//! ends with the target holding the source's rows and values, and on PostgreSQL the same column types,
//! nullability and defaults.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

struct Targets {
    pg: PgServer,
    my: MariaDbServer,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn targets(name: &str) -> Targets {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    let dir = scratch();
    let db = dir.path().join("r.db");
    let text = format!(
        "{}\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
        fan_out_config(&pg, name, "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
        my.url("replica")
    );
    let config = write_config(dir.path(), name, &text);
    Targets {
        pg,
        my,
        db,
        _dir: dir,
        config,
    }
}

impl Targets {
    fn start(&self, log: &str) -> Ferry {
        Ferry::start(&self.config, &self.config.with_file_name(log))
    }

    /// Waits until the source, the PostgreSQL target, SQLite and MariaDB all give `expected` (rows by newline,
    /// columns by `|`; NULL as empty) for their spelling of the query.
    fn wait_all(
        &self,
        ferry: &Ferry,
        (pg_sql, lite_sql, my_sql): (&str, &str, &str),
        expected: &str,
    ) {
        self.wait_on(ferry, (pg_sql, Some(lite_sql), my_sql), expected);
    }

    /// [`Targets::wait_all`], leaving SQLite out when `lite_sql` is `None`.
    fn wait_on(
        &self,
        ferry: &Ferry,
        (pg_sql, lite_sql, my_sql): (&str, Option<&str>, &str),
        expected: &str,
    ) {
        assert_eq!(self.pg.psql("shop", pg_sql), expected, "source: {pg_sql}");
        let my = || {
            self.my
                .try_sql(&format!("USE replica; {my_sql}"))
                .map(|s| s.replace('\t', "|").replace("NULL", ""))
        };
        let lite = || lite_sql.map(|q| sqlite_rows(&self.db, q).join("\n"));
        let ok = wait_until(WAIT, || {
            self.pg.try_psql("replica", pg_sql).ok().as_deref() == Some(expected)
                && lite().is_none_or(|rows| rows == expected)
                && my().ok().as_deref() == Some(expected)
        });
        assert!(
            ok,
            "expected\n{expected}\n--- postgres target\n{}\n--- sqlite\n{:?}\n--- mariadb\n{:?}\n--- log\n{}",
            self.pg.try_psql("replica", pg_sql).unwrap_or_else(|e| e),
            lite(),
            my(),
            ferry.log()
        );
    }

    fn same_columns_on_postgres(&self, table: &str) {
        let sql = format!(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull, pg_get_expr(adbin, adrelid) \
             FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum \
             WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attname"
        );
        let same = wait_until(WAIT, || {
            self.pg.try_psql("replica", &sql).ok() == self.pg.try_psql("shop", &sql).ok()
        });
        assert!(
            same,
            "columns of {table}\n--- source\n{}\n--- target\n{}",
            self.pg.psql("shop", &sql),
            self.pg.psql("replica", &sql)
        );
    }
}

#[test]
fn add_column_with_default_rename_and_type_changes_keep_every_value() {
    let t = targets("ddl");
    t.pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text, amount numeric(6,2), code varchar(5));
         INSERT INTO t VALUES (1, 'one', 1.50, 'a'), (2, 'two', 2.25, 'b');",
    );
    let ferry = t.start("f.log");
    ferry.wait_streaming();
    t.pg.psql("shop", "INSERT INTO t VALUES (3, 'three', 3.00, 'c')");

    // ADD COLUMN … DEFAULT: rows from before the ALTER read the default, in the target too.
    t.pg.psql(
        "shop",
        "ALTER TABLE t ADD COLUMN b varchar(10) DEFAULT 'dflt';
         INSERT INTO t (id, v, amount, code) VALUES (4, 'four', 4.00, 'd');
         INSERT INTO t VALUES (5, 'five', 5.00, 'e', 'own');",
    );
    let q = "SELECT id, v, b FROM t ORDER BY id";
    t.wait_all(
        &ferry,
        (q, q, q),
        "1|one|dflt\n2|two|dflt\n3|three|dflt\n4|four|dflt\n5|five|own",
    );
    t.same_columns_on_postgres("t");
    assert_eq!(
        t.my.sql("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'replica' AND TABLE_NAME = 't' AND COLUMN_NAME = 'b'"),
        "varchar(10)"
    );

    // RENAME COLUMN: values survive under the new name, untouched rows included.
    t.pg.psql(
        "shop",
        "ALTER TABLE t RENAME COLUMN v TO label; UPDATE t SET label = 'ONE' WHERE id = 1;",
    );
    let q = "SELECT id, label, b FROM t ORDER BY id";
    t.wait_all(
        &ferry,
        (q, q, q),
        "1|ONE|dflt\n2|two|dflt\n3|three|dflt\n4|four|dflt\n5|five|own",
    );
    t.same_columns_on_postgres("t");

    // ALTER COLUMN TYPE: the target column follows, so values are neither rounded nor refused.
    t.pg.psql(
        "shop",
        "ALTER TABLE t ALTER COLUMN amount TYPE numeric(10,5), ALTER COLUMN code TYPE varchar(20);
         INSERT INTO t VALUES (6, 'six', 2.71828, 'sixteen-chars-xx', 'x');",
    );
    let q = "SELECT id, amount, code FROM t WHERE id IN (1, 6) ORDER BY id";
    // SQLite keeps each decimal's text as it arrived (docs/type-mapping.md): compare it at the new scale.
    let lite = "SELECT id, printf('%.5f', amount), code FROM t WHERE id IN (1, 6) ORDER BY id";
    t.wait_all(
        &ferry,
        (q, lite, q),
        "1|1.50000|a\n6|2.71828|sixteen-chars-xx",
    );
    t.same_columns_on_postgres("t");

    // An enum column added with a default: targets hold its text (they have no such type), every row filled.
    t.pg.psql(
        "shop",
        "CREATE TYPE mood AS ENUM ('meh', 'ok'); ALTER TABLE t ADD COLUMN e mood DEFAULT 'meh';
         INSERT INTO t (id, label, e) VALUES (7, 'seven', 'ok');",
    );
    let q = "SELECT id, e FROM t ORDER BY id";
    t.wait_all(
        &ferry,
        (q, q, q),
        "1|meh\n2|meh\n3|meh\n4|meh\n5|meh\n6|meh\n7|ok",
    );

    // A rename while Ferry is stopped, with no change to the table before the restart: the sinks' records
    // still know the column.
    assert!(ferry.terminate().success());
    t.pg.psql("shop", "ALTER TABLE t RENAME COLUMN label TO title");
    let ferry = t.start("f2.log");
    ferry.wait_streaming();
    t.pg.psql("shop", "UPDATE t SET amount = 9 WHERE id = 2");
    let q = "SELECT id, title FROM t ORDER BY id";
    t.wait_all(
        &ferry,
        (q, q, q),
        "1|ONE\n2|two\n3|three\n4|four\n5|five\n6|six\n7|seven",
    );
    assert!(ferry.terminate().success());
}

/// Times and timestamps cut to fewer fractional digits at the source: PostgreSQL rounds the rows it holds
/// without a row event for any of them. The PostgreSQL and MariaDB targets round theirs the same way (ties on
/// either side of PostgreSQL's 2000-01-01 epoch, a time rounding up to 24:00, a timestamptz judged in UTC);
/// SQLite, which keeps values as they arrived, quarantines the table, saying why.
#[test]
fn fractional_seconds_cut_at_the_source_are_rounded_alike_or_quarantined() {
    let t = targets("frac");
    t.pg.psql(
        "shop",
        "CREATE TABLE tp (id int PRIMARY KEY, ts timestamp(6), tz timestamptz(6), tm time(6));
         INSERT INTO tp VALUES
           (1, '2024-05-06 07:08:09.123456', '2024-05-06 07:08:09.123456+00', '07:08:09.123456'),
           (2, '2024-05-06 07:08:09.1235', '2000-01-01 00:00:00.0005+00', '23:59:59.9995'),
           (3, '1999-12-31 23:59:59.0005', '1999-12-31 23:59:59.9995+00', '00:00:00.0005'),
           (4, '1970-01-01 00:00:00.9996', '1969-07-20 20:17:40.0015+00', '12:00:00.4444'),
           (5, NULL, NULL, NULL);",
    );
    let ferry = t.start("f.log");
    ferry.wait_streaming();
    let pg_q = "SELECT id, to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US'), \
                to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), to_char(tm, 'HH24:MI:SS.US') \
                FROM tp ORDER BY id";
    let my_q =
        "SELECT id, CAST(ts AS CHAR), CAST(tz AS CHAR), CAST(tm AS CHAR) FROM tp ORDER BY id";
    t.wait_on(
        &ferry,
        (pg_q, None, my_q),
        "1|2024-05-06 07:08:09.123456|2024-05-06 07:08:09.123456|07:08:09.123456\n\
         2|2024-05-06 07:08:09.123500|2000-01-01 00:00:00.000500|23:59:59.999500\n\
         3|1999-12-31 23:59:59.000500|1999-12-31 23:59:59.999500|00:00:00.000500\n\
         4|1970-01-01 00:00:00.999600|1969-07-20 20:17:40.001500|12:00:00.444400\n\
         5|||",
    );
    t.pg.psql(
        "shop",
        "ALTER TABLE tp ALTER COLUMN ts TYPE timestamp(3), ALTER COLUMN tz TYPE timestamptz(3),
           ALTER COLUMN tm TYPE time(3);
         INSERT INTO tp VALUES (6, '2024-01-01 00:00:00.5', '2024-01-01 00:00:00.5+00', '01:02:03.5');",
    );
    t.wait_on(
        &ferry,
        (pg_q, None, my_q),
        "1|2024-05-06 07:08:09.123000|2024-05-06 07:08:09.123000|07:08:09.123000\n\
         2|2024-05-06 07:08:09.124000|2000-01-01 00:00:00.001000|24:00:00.000000\n\
         3|1999-12-31 23:59:59.000000|1999-12-31 23:59:59.999000|00:00:00.001000\n\
         4|1970-01-01 00:00:01.000000|1969-07-20 20:17:40.001000|12:00:00.444000\n\
         5|||\n\
         6|2024-01-01 00:00:00.500000|2024-01-01 00:00:00.500000|01:02:03.500000",
    );
    t.same_columns_on_postgres("tp");
    assert!(
        ferry
            .log()
            .contains("table quarantined in the SQLite target")
            && ferry.log().contains(
                "column ts changed type from timestamp(6) without time zone to timestamp(3)"
            ),
        "SQLite did not quarantine the table\n{}",
        ferry.log()
    );
    assert_eq!(
        sqlite_rows(&t.db, "SELECT count(*) FROM tp WHERE id = 6").join(""),
        "0",
        "SQLite applied rows of a quarantined table"
    );
    assert!(ferry.terminate().success());
}

/// Arrays and intervals whose values a type change rounds at the source: MariaDB holds them as JSON and text,
/// which its `MODIFY` does not touch, so it quarantines the table, as SQLite does; PostgreSQL follows.
#[test]
fn array_and_interval_values_cut_at_the_source_are_followed_or_quarantined() {
    let t = targets("cut");
    t.pg.psql(
        "shop",
        "CREATE TABLE h (id int PRIMARY KEY, ta timestamp(6)[], na numeric(12,4)[], iv interval);
         INSERT INTO h VALUES (1, '{\"1999-12-31 23:59:59.5\"}', '{1.2346,2.55}', '1.5 s'), (2, '{}', '{}', '-1 day 02:03:04.5');",
    );
    let ferry = t.start("f.log");
    ferry.wait_streaming();
    let q = "SELECT id, ta::text, na::text, iv::text FROM h ORDER BY id";
    let expected = t.pg.psql("shop", q);
    assert!(
        wait_until(WAIT, || t.pg.try_psql("replica", q).ok().as_deref()
            == Some(&expected)),
        "{}",
        ferry.log()
    );
    t.pg.psql(
        "shop",
        "ALTER TABLE h ALTER COLUMN ta TYPE timestamp(0)[], ALTER COLUMN na TYPE numeric(12,1)[],
           ALTER COLUMN iv TYPE interval(0)",
    );
    let expected = t.pg.psql("shop", q);
    assert_eq!(
        expected,
        "1|{\"1999-12-31 23:59:59\"}|{1.2,2.6}|00:00:02\n2|{}|{}|-1 days +02:03:05"
    );
    assert!(
        wait_until(WAIT, || t.pg.try_psql("replica", q).ok().as_deref()
            == Some(&expected)),
        "{}",
        ferry.log()
    );
    for target in ["MySQL", "SQLite"] {
        assert!(
            wait_until(WAIT, || ferry
                .log()
                .contains(&format!("table quarantined in the {target} target"))),
            "{target} did not quarantine the table\n{}",
            ferry.log()
        );
    }
    assert!(ferry.terminate().success());
}

/// A type change reaches the targets where the source rewrote its rows, not with the table's next change: a
/// narrowing of a quiet table rounds the targets' copies at once, and one undone before any change (which the
/// stream alone never shows) still leaves them rounded as the source's.
#[test]
fn a_type_change_takes_effect_where_the_source_rewrote_its_rows() {
    let t = targets("rewrite");
    t.pg.psql(
        "shop",
        "CREATE TABLE q (id int PRIMARY KEY, n numeric(12,4), ts timestamp(6));
         INSERT INTO q VALUES (1, 1.2345, '2024-05-06 07:08:09.5'), (2, 2.5050, '2024-05-06 07:08:09.4999'),
           (3, -2.5050, '1999-12-31 23:59:59.5'), (4, NULL, NULL);",
    );
    let ferry = t.start("f.log");
    ferry.wait_streaming();
    let pg_q = "SELECT id, n, to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US') FROM q ORDER BY id";
    let my_q = "SELECT id, n, CAST(ts AS CHAR) FROM q ORDER BY id";
    t.wait_on(
        &ferry,
        (pg_q, None, my_q),
        "1|1.2345|2024-05-06 07:08:09.500000\n2|2.5050|2024-05-06 07:08:09.499900\n\
         3|-2.5050|1999-12-31 23:59:59.500000\n4||",
    );
    // A narrowing, and no change to the table after it.
    t.pg.psql("shop", "ALTER TABLE q ALTER COLUMN n TYPE numeric(12,2)");
    t.wait_on(
        &ferry,
        (pg_q, None, my_q),
        "1|1.23|2024-05-06 07:08:09.500000\n2|2.51|2024-05-06 07:08:09.499900\n\
         3|-2.51|1999-12-31 23:59:59.500000\n4||",
    );
    t.same_columns_on_postgres("q");
    // Widened back; and another column narrowed and widened back before any change.
    t.pg.psql(
        "shop",
        "ALTER TABLE q ALTER COLUMN n TYPE numeric(12,4);
         ALTER TABLE q ALTER COLUMN ts TYPE timestamp(0);
         ALTER TABLE q ALTER COLUMN ts TYPE timestamp(6);",
    );
    t.wait_on(
        &ferry,
        (pg_q, None, my_q),
        "1|1.2300|2024-05-06 07:08:10.000000\n2|2.5100|2024-05-06 07:08:09.000000\n\
         3|-2.5100|1999-12-31 23:59:59.000000\n4||",
    );
    // SQLite keeps values as they arrived: the first narrowing quarantined the table there.
    assert!(
        ferry
            .log()
            .contains("column n changed type from numeric(12,4) to numeric(12,2)"),
        "{}",
        ferry.log()
    );
    // Changes go on after it.
    t.pg.psql(
        "shop",
        "INSERT INTO q VALUES (5, 5.55555, '2024-01-01 00:00:00.1234567')",
    );
    t.wait_on(
        &ferry,
        (
            "SELECT id, n, to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US') FROM q WHERE id = 5",
            None,
            "SELECT id, n, CAST(ts AS CHAR) FROM q WHERE id = 5",
        ),
        "5|5.5556|2024-01-01 00:00:00.123457",
    );
    // The widening of `ts` rewrote nothing (more digits fit the values as they are): the target column follows it
    // with the table's next change.
    t.same_columns_on_postgres("q");
    assert!(ferry.terminate().success());
}

#[test]
fn drop_and_create_and_rename_swaps_leave_exactly_the_source_table() {
    let t = targets("swap");
    t.pg.psql(
        "shop",
        "CREATE TABLE gone (id int PRIMARY KEY, v text);
         INSERT INTO gone VALUES (1, 'old'), (2, 'old');
         CREATE TABLE orders (id int PRIMARY KEY, qty int);
         INSERT INTO orders SELECT g, g FROM generate_series(1, 5) g;",
    );
    let ferry = t.start("f.log");
    ferry.wait_streaming();
    t.pg.psql("shop", "INSERT INTO gone VALUES (3, 'old')");

    // DROP TABLE, then CREATE TABLE with the same name and other columns: no stale rows, the new columns.
    t.pg.psql(
        "shop",
        "DROP TABLE gone;
         CREATE TABLE gone (id int PRIMARY KEY, w text DEFAULT 'w0', n int);
         INSERT INTO gone (id, n) VALUES (10, 1);",
    );
    let q = "SELECT id, w, n FROM gone ORDER BY id";
    t.wait_all(&ferry, (q, q, q), "10|w0|1");
    t.same_columns_on_postgres("gone");

    // How gh-ost and pt-online-schema-change finish: a shadow table with a new column and default is filled,
    // then swapped in by renames.
    t.pg.psql(
        "shop",
        "CREATE TABLE orders_new (id int PRIMARY KEY, qty int, status text NOT NULL DEFAULT 'new');
         INSERT INTO orders_new (id, qty) SELECT id, qty FROM orders;
         INSERT INTO orders VALUES (6, 6);
         INSERT INTO orders_new (id, qty) VALUES (6, 6);",
    );
    t.pg.psql(
        "shop",
        "BEGIN; ALTER TABLE orders RENAME TO orders_old; ALTER TABLE orders_new RENAME TO orders; COMMIT;",
    );
    t.pg.psql(
        "shop",
        "INSERT INTO orders VALUES (7, 7, 'paid'); UPDATE orders SET qty = 0 WHERE id = 1;",
    );
    let q = "SELECT id, qty, status FROM orders ORDER BY id";
    t.wait_all(
        &ferry,
        (q, q, q),
        "1|0|new\n2|2|new\n3|3|new\n4|4|new\n5|5|new\n6|6|new\n7|7|paid",
    );
    t.same_columns_on_postgres("orders");
    assert!(ferry.terminate().success());
}

#[test]
fn a_rewrite_targets_cannot_reproduce_halts_naming_statement_table_and_position() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, n int); INSERT INTO t VALUES (1, 10), (2, 20);",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "halt",
        &fan_out_config(&pg, "halt", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    pg.psql("shop", "INSERT INTO t VALUES (3, 30)");
    assert!(wait_until(WAIT, || pg
        .try_psql("replica", "SELECT count(*) FROM t")
        .is_ok_and(|n| n == "3")));
    // A plain type change rewrites the table too, and the targets reproduce it: nothing stops.
    pg.psql(
        "shop",
        "ALTER TABLE t ALTER COLUMN n TYPE bigint; INSERT INTO t VALUES (4, 40);",
    );
    assert!(wait_until(WAIT, || pg
        .try_psql("replica", "SELECT sum(n) FROM t")
        .is_ok_and(|n| n == "100")));
    // Every row's value changes with no row event: the targets would keep the old values.
    pg.psql(
        "shop",
        "ALTER TABLE t ALTER COLUMN n TYPE numeric USING n * 2; INSERT INTO t VALUES (5, 50);",
    );
    let status = ferry
        .wait_exit(WAIT)
        .expect("ferry should stop on a rewrite it cannot reproduce");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("table public.t was rewritten at ")
            && log.contains("ALTER TABLE t ALTER COLUMN n TYPE numeric USING n * 2")
            && log.contains("on_schema_change = \"quarantine\""),
        "{log}"
    );
    // Nothing of the rewritten table's transaction was applied.
    assert_eq!(pg.psql("replica", "SELECT sum(n) FROM t"), "100");
}

#[test]
fn a_quarantined_table_stops_alone_and_stays_quarantined_after_a_restart() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE b (id int PRIMARY KEY, v int);
         INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1);",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let text = fan_out_config(&pg, "q", "[pipeline.batch]\nmax_wait = \"20ms\"", &db).replace(
        "[source]\ntype = \"postgres\"\n",
        "[source]\ntype = \"postgres\"\non_schema_change = \"quarantine\"\n",
    );
    let cfg = write_config(dir.path(), "q", &text);
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    let b_rows = |n: &str| {
        wait_until(WAIT, || {
            pg.try_psql("replica", "SELECT count(*) FROM b")
                .is_ok_and(|c| c == n)
                && sqlite_rows(&db, "SELECT count(*) FROM b") == [n]
        })
    };
    pg.psql("shop", "INSERT INTO b VALUES (2, 2)");
    assert!(b_rows("2"), "{}", ferry.log());
    pg.psql(
        "shop",
        "ALTER TABLE a ADD COLUMN at timestamptz DEFAULT clock_timestamp();
         INSERT INTO a (id, v) VALUES (2, 2); INSERT INTO b VALUES (3, 3);",
    );
    assert!(b_rows("3"), "{}", ferry.log());
    assert_eq!(
        pg.psql("replica", "SELECT count(*) FROM a"),
        "1",
        "{}",
        ferry.log()
    );
    let (code, status) = ferry.get("/status").expect("status");
    assert_eq!(code, 200);
    assert!(
        status.contains("public.a: rewritten at") && status.contains("volatile default"),
        "{status}"
    );
    let out = std::process::Command::new(ferry_bin())
        .args(["status", "--http", &ferry.http, "--config"])
        .arg(&cfg)
        .output()
        .expect("run ferry status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("QUARANTINED public.a: rewritten at"),
        "{text}"
    );
    let (_, metrics) = ferry.get("/metrics").expect("metrics");
    assert!(
        metrics.contains("ferry_quarantined_tables{pipeline=\"q\"} 1"),
        "{metrics}"
    );
    assert!(ferry.terminate().success());

    // After a restart the sinks still skip the table: its checkpointed quarantine is in ferry_schemas.
    let ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO a (id, v) VALUES (3, 3); INSERT INTO b VALUES (4, 4);",
    );
    assert!(b_rows("4"), "{}", ferry.log());
    assert_eq!(pg.psql("replica", "SELECT count(*) FROM a"), "1");
    assert_eq!(sqlite_rows(&db, "SELECT count(*) FROM a"), ["1"]);
    assert!(
        ferry.log().contains("table is quarantined"),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());

    // A new snapshot copies the table anew and ends its quarantine.
    let out = std::process::Command::new(ferry_bin())
        .args(["reset", "--yes", "--config"])
        .arg(&cfg)
        .output()
        .expect("run ferry reset");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f3.log"));
    ferry.wait_streaming();
    pg.psql("shop", "INSERT INTO a (id, v) VALUES (4, 4)");
    let a = "SELECT id, v, at FROM a ORDER BY id";
    assert!(
        wait_until(WAIT, || pg.try_psql("replica", a).ok()
            == pg.try_psql("shop", a).ok()
            && sqlite_rows(&db, "SELECT count(*) FROM a") == ["4"]),
        "{}\n{}",
        pg.psql("replica", a),
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

#[test]
fn a_column_dropped_and_added_again_under_its_name_is_a_new_column() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "readd",
        &fan_out_config(&pg, "readd", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    let q = "SELECT id, v, c FROM t ORDER BY id";
    pg.psql(
        "shop",
        "ALTER TABLE t ADD c int DEFAULT 5; INSERT INTO t VALUES (2, 'b', 7);",
    );
    wait_same(&pg, q, &ferry);
    // Read while Ferry is caught up (docs/schema-changes.md says what happens when it is behind).
    pg.psql(
        "shop",
        "ALTER TABLE t DROP c; ALTER TABLE t ADD c int DEFAULT 6; INSERT INTO t (id, v) VALUES (3, 'c');",
    );
    wait_same(&pg, q, &ferry);
    assert_eq!(pg.psql("replica", q), "1|a|6\n2|b|6\n3|c|6");
    assert!(wait_until(WAIT, || sqlite_rows(&db, q).join("\n")
        == "1|a|6\n2|b|6\n3|c|6"));
    assert!(ferry.terminate().success());
}

#[test]
fn renames_ferry_cannot_tell_from_drops_stop_it_instead_of_losing_values() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text); INSERT INTO t VALUES (1, 'a1', 'b1');",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "behind",
        &fan_out_config(&pg, "behind", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    assert!(wait_until(WAIT, || pg
        .try_psql("replica", "SELECT count(*) FROM t")
        .is_ok_and(|n| n == "1")));
    assert!(ferry.terminate().success());
    // While Ferry is stopped, a swap in three renames, each followed by a change: when Ferry reads the first
    // change back, the catalog already describes the table after all three.
    pg.psql(
        "shop",
        "ALTER TABLE t RENAME a TO tmp; INSERT INTO t VALUES (2, 'x2', 'y2');",
    );
    pg.psql(
        "shop",
        "ALTER TABLE t RENAME b TO a; INSERT INTO t VALUES (3, 'x3', 'y3');",
    );
    pg.psql(
        "shop",
        "ALTER TABLE t RENAME tmp TO b; INSERT INTO t VALUES (4, 'x4', 'y4');",
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    let status = ferry.wait_exit(WAIT).expect("ferry should stop");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("table public.t: columns a disappeared and tmp appeared"),
        "{log}"
    );
    // Nothing was dropped: the values are still in the target.
    assert_eq!(pg.psql("replica", "SELECT id, a, b FROM t"), "1|a1|b1");
}

/// A table created while Ferry was stopped, on a multi-master source (`[pipeline] node`): at start Ferry adds its
/// version columns, so the catalog has more columns than the stream's first description of the table. Those
/// were added after the table's own columns, so the column numbers still describe them, and a later rename is a
/// rename, not a drop that loses values (found by an attack: RENAME COLUMN became DROP + ADD in SQLite).
#[test]
fn a_rename_after_ferry_added_its_version_columns_keeps_every_value() {
    let pg = server_with_dbs();
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "mm",
        &format!(
            "[pipeline]\nname = \"mm\"\nnode = \"pg\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n[[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            pg.url("shop"),
            db.display(),
            pg.url("replica")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    assert!(ferry.terminate().success());
    pg.psql(
        "shop",
        "CREATE TABLE a1 (id int PRIMARY KEY, a text); INSERT INTO a1 VALUES (1, 'x1'), (2, 'x2'), (3, 'x3');",
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    ferry.wait_streaming();
    assert!(
        wait_until(WAIT, || sqlite_rows(&db, "SELECT count(*) FROM a1")
            == ["3"]),
        "{}",
        ferry.log()
    );
    pg.psql(
        "shop",
        "ALTER TABLE a1 RENAME COLUMN a TO b; UPDATE a1 SET b = 'S' WHERE id = 1;",
    );
    let want = vec!["1|S", "2|x2", "3|x3"];
    assert!(
        wait_until(WAIT, || sqlite_rows(
            &db,
            "SELECT id, b FROM a1 ORDER BY id"
        ) == want),
        "{:?}\n{}",
        sqlite_rows(&db, "SELECT id, b FROM a1 ORDER BY id"),
        ferry.log()
    );
    assert!(
        wait_until(WAIT, || pg
            .try_psql("replica", "SELECT id, b FROM a1 ORDER BY id")
            .is_ok_and(|r| r == want.join("\n"))),
        "{}",
        ferry.log()
    );
    assert!(!ferry.log().contains("DropColumn"), "{}", ferry.log());
}
