//! End-to-end: MariaDB → PostgreSQL and SQLite through the `ferry` binary, against real servers.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// A pipeline from MariaDB's `shop` into PostgreSQL's `replica` and an SQLite file.
fn config(
    my: &MariaDbServer,
    pg: &PgServer,
    sqlite: &std::path::Path,
    extra_source: &str,
) -> String {
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
    let source = || {
        mariadb_rows(
            &my,
            "SELECT id, item, qty, price FROM shop.orders ORDER BY id",
        )
    };
    let pg_target = || {
        pg.try_psql(
            "replica",
            "SELECT id, item, qty, price FROM shop.orders ORDER BY id",
        )
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
    let sqlite = || {
        sqlite_rows(
            &db,
            "SELECT id, item, qty, price FROM shop_orders ORDER BY id",
        )
        .join("\n")
    };
    assert!(
        wait_until(WAIT, || sqlite().lines().count()
            == source().lines().count()),
        "sqlite: {}",
        ferry.log()
    );
    let status = ferry.terminate();
    assert!(status.success(), "{status:?}");
}

const TYPES_TABLE: &str = "CREATE TABLE shop.t (
    id int PRIMARY KEY,
    ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned, mi mediumint, miu mediumint unsigned,
    i int, iu int unsigned, bi bigint, biu bigint unsigned,
    d65 decimal(65,30), f float, dbl double, b64 bit(64), y year, dt date, tm time(6), dtm datetime(6),
    ts timestamp(6) NULL DEFAULT NULL,
    c char(10), vc varchar(100), tx text CHARACTER SET utf8mb4, bn binary(4), vb varbinary(10), bl blob,
    e enum('a','b','c'), st set('x','y','z'), j json)";

/// Extremes of every type, NULLs, and MySQL's zero dates (allowed by the server's default sql_mode); `base`
/// offsets the ids.
fn type_rows(base: i32) -> String {
    format!(
        "INSERT INTO shop.t VALUES
         ({}, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
          -12345678901234567890123456789012345.123456789012345678901234567890, 1.5, -2.2250738585072014e-308, b'1000000000000000000000000000000000000000000000000000000000000001',
          2155, '1000-01-01', '-838:59:59.000000', '1000-01-01 00:00:00.000001', '2038-01-19 03:14:07.999999',
          'ab', 'héllo 🦀', 'tab\\there', X'00FF7F80', X'', X'DEADBEEF', 'c', 'x,z', '{{\"k\": [1, 2.5, \"s\"]}}'),
         ({}, 127, 0, 32767, 0, -1, 0, 2147483647, 0, 9223372036854775807, 0,
          0.000000000000000000000000000001, -3.4e38, 1.7976931348623157e308, b'0', 1901, '9999-12-31', '838:59:59.999999', '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01.000000',
          '', '', '', X'00000000', X'01', NULL, 'a', '', 'null'),
         ({}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
         ({}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '0000-00-00', NULL,
          '2024-00-10 10:00:00.500000', '0000-00-00 00:00:00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        base + 1,
        base + 2,
        base + 3,
        base + 4
    )
}

#[test]
fn every_type_round_trips_mariadb_to_mariadb_and_maps_to_postgres() {
    let my = MariaDbServer::start();
    let replica = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql(&format!(
        "CREATE DATABASE shop; {TYPES_TABLE}; {}",
        type_rows(0)
    ));
    replica.sql("CREATE DATABASE copy");
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "t",
        &format!(
            "[pipeline]\nname = \"t\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"mysql\"\nurl = \"{}\"\n\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            my.url("shop"),
            replica.url("copy"),
            pg.url("replica")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    // Snapshot rows, then the same values again through the binlog.
    assert!(
        wait_until(WAIT, || replica
            .try_sql("SELECT count(*) FROM copy.t")
            .is_ok_and(|n| n == "4")),
        "snapshot did not arrive:\n{}",
        ferry.log()
    );
    my.sql(&type_rows(10));
    my.sql("UPDATE shop.t SET mi = mi - 1, vc = concat(vc, '!') WHERE id IN (2, 12)");
    // 60 rows in one statement: the MySQL sink writes them with LOAD DATA rather than INSERT.
    my.sql(
        "USE shop; CREATE TEMPORARY TABLE tmp AS SELECT t.*, s.seq AS k FROM shop.t t JOIN seq_1_to_10 s;
         UPDATE tmp SET id = id + 100 * k; ALTER TABLE tmp DROP COLUMN k; INSERT INTO shop.t SELECT * FROM tmp;",
    );
    let all = "SELECT * FROM {} ORDER BY id";
    let source = my.sql(&all.replace("{}", "shop.t"));
    assert!(
        wait_until(WAIT, || replica
            .try_sql(&all.replace("{}", "copy.t"))
            .is_ok_and(|t| t == source)),
        "MariaDB target differs:\nsource:\n{source}\ntarget:\n{}\n{}",
        replica
            .try_sql(&all.replace("{}", "copy.t"))
            .unwrap_or_default(),
        ferry.log()
    );
    let loads = replica.sql("SHOW GLOBAL STATUS LIKE 'Com_load'");
    assert_ne!(
        loads, "Com_load\t0",
        "the bulk insert did not go through LOAD DATA"
    );
    // The target table was created with the source's own column types.
    let ddl = "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_NAME = 't' ORDER BY ORDINAL_POSITION";
    assert_eq!(replica.sql(ddl), my.sql(ddl));

    // PostgreSQL: per docs/type-mapping.md.
    let pg_rows = || {
        pg.try_psql(
            "replica",
            "SELECT id, mi, miu, iu, biu, d65, f, y, dt, tm, dtm, ts, vc, encode(bn, 'hex'), e, st, j::text FROM shop.t WHERE id IN (1, 12) ORDER BY id",
        )
        .unwrap_or_default()
    };
    let expected = "1|-8388608|16777215|4294967295|18446744073709551615|-12345678901234567890123456789012345.123456789012345678901234567890|1.5|2155|1000-01-01|-838:59:59|1000-01-01 00:00:00.000001|2038-01-19 03:14:07.999999+00|héllo 🦀|00ff7f80|c|x,z|{\"k\": [1, 2.5, \"s\"]}\n\
                    12|-2|0|0|0|0.000000000000000000000000000001|-3.4e+38|1901|9999-12-31|838:59:59.999999|9999-12-31 23:59:59.999999|1970-01-01 00:00:01+00|!|00000000|a||null";
    assert!(
        wait_until(WAIT, || pg_rows() == expected),
        "PostgreSQL target:\n{}\n{}",
        pg_rows(),
        ferry.log()
    );
    // Zero dates have no PostgreSQL value: NULL there, exact in MariaDB (compared above).
    let zero = pg.psql(
        "replica",
        "SELECT count(*) FROM shop.t WHERE id IN (4, 14) AND dt IS NULL AND dtm IS NULL AND ts IS NULL",
    );
    assert_eq!(zero, "2");
    assert_eq!(
        replica.sql("SELECT dt, dtm, ts FROM copy.t WHERE id = 14"),
        "0000-00-00\t2024-00-10 10:00:00.500000\t0000-00-00 00:00:00.000000"
    );
    assert!(ferry.terminate().success());
}

#[test]
fn postgres_to_mariadb_per_the_type_mapping() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE copy");
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, b bool, s int2, big int8, n numeric(12,2), nu numeric, r real, d double precision,
           tx text, vc varchar(20), by bytea, j json, jb jsonb, u uuid, dt date, tm time, ts timestamp, tz timestamptz,
           iv interval, arr int[]);
         INSERT INTO t VALUES (1, true, -32768, -9223372036854775808, 1234567890.12, 3.14159265358979323846264338327950288419,
           1.5, -2.5e-300, 'héllo 🦀', 'short', '\\x00ff', '{\"a\": [1, 2]}', '{\"b\": true}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '23:59:59.999999', '2024-02-29 12:00:00.5',
           '2024-02-29 12:00:00.5+02', '1 day 02:03:04', '{1,NULL,3}');
         INSERT INTO t (id) VALUES (2);",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "pm",
        &format!(
            "[pipeline]\nname = \"pm\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            pg.url("shop"),
            my.url("copy")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    assert!(
        wait_until(WAIT, || my
            .try_sql("SELECT count(*) FROM copy.t")
            .is_ok_and(|n| n == "2")),
        "snapshot did not arrive:\n{}",
        ferry.log()
    );
    pg.psql(
        "shop",
        "UPDATE t SET vc = 'streamed', n = -0.01 WHERE id = 1; DELETE FROM t WHERE id = 2",
    );
    let row = "SELECT id, b, s, big, n, nu, r, d, tx, vc, hex(`by`), j, jb, u, dt, tm, ts, tz, iv, arr FROM copy.t";
    let expected = "1\t1\t-32768\t-9223372036854775808\t-0.01\t3.141592653589793238462643383280\t1.5\t-2.5e-300\théllo 🦀\tstreamed\t00FF\t{\"a\": [1, 2]}\t{\"b\": true}\ta0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\t2024-02-29\t23:59:59.999999\t2024-02-29 12:00:00.500000\t2024-02-29 10:00:00.500000\tP1DT2H3M4S\t[1,null,3]";
    assert!(
        wait_until(WAIT, || my.try_sql(row).ok().as_deref() == Some(expected)),
        "MariaDB target:\n{}\n{}",
        my.try_sql(row).unwrap_or_default(),
        ferry.log()
    );
    let types = my.sql(
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'copy' AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION",
    );
    assert_eq!(
        types.replace('\t', " ").replace('\n', ", "),
        "id int(11), b tinyint(1), s smallint(6), big bigint(20), n decimal(12,2), nu decimal(65,30), r float, d double, tx longtext, vc varchar(20), by longblob, j longtext, jb longtext, u char(36), dt date, tm time(6), ts datetime(6), tz datetime(6), iv varchar(64), arr longtext"
    );
    assert!(ferry.terminate().success());
}

#[test]
fn postgres_text_keys_stay_distinct_in_mariadb() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE copy");
    // Four keys in PostgreSQL; a case- and accent-insensitive PAD SPACE collation would make them one.
    pg.psql(
        "shop",
        "CREATE TABLE k (key text PRIMARY KEY, v int);
         INSERT INTO k VALUES ('a', 1), ('A', 2), ('a ', 3), ('ä', 4);
         CREATE TABLE k2 (a text, b text, n int, PRIMARY KEY (a, b));
         INSERT INTO k2 VALUES ('x', 'Y', 1), ('x', 'y', 2);",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "keys",
        &format!(
            "[pipeline]\nname = \"keys\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            pg.url("shop"),
            my.url("copy")
        ),
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    // Streamed: an update of one of them, and a 700-character key (more than varchar(255)).
    pg.psql(
        "shop",
        "UPDATE k SET v = 20 WHERE key = 'A'; INSERT INTO k VALUES (repeat('é', 700), 5);",
    );
    let rows = "SELECT concat('[', `key`, ']'), v FROM copy.k WHERE length(`key`) < 10 ORDER BY v";
    let expected = "[a]\t1\n[a ]\t3\n[ä]\t4\n[A]\t20";
    assert!(
        wait_until(WAIT, || my.try_sql(rows).ok().as_deref() == Some(expected)
            && my
                .try_sql("SELECT char_length(`key`), v FROM copy.k WHERE v = 5")
                .ok()
                .as_deref()
                == Some("700\t5")),
        "MariaDB target:\n{}\n{}",
        my.try_sql(rows).unwrap_or_default(),
        ferry.log()
    );
    assert_eq!(my.sql("SELECT count(*) FROM copy.k2"), "2");
    assert_eq!(
        my.sql("SELECT COLUMN_TYPE, COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'copy' AND TABLE_NAME = 'k' AND COLUMN_NAME = 'key'"),
        "varchar(768)\tutf8mb4_nopad_bin"
    );
    // Beyond what the target's index holds: a clear error naming the column, not a silent cut.
    pg.psql("shop", "INSERT INTO k VALUES (repeat('z', 800), 6)");
    let status = ferry
        .wait_exit(WAIT)
        .expect("ferry should stop on a key the target cannot hold");
    assert!(!status.success());
    let log = ferry.log();
    assert!(log.contains("Data too long for column 'key'"), "{log}");
}
