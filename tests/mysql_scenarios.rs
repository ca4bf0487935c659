//! MariaDB source scenarios against real servers: DDL mid-stream on a compressed binlog, resume by GTID and by
//! file:offset, a purged binlog, a source restart.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn config(my: &MariaDbServer, target: &MariaDbServer, sqlite: &std::path::Path) -> String {
    format!(
        "[pipeline]\nname = \"s\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"mysql\"\nurl = \"{}\"\n\n\
         [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n",
        my.url("shop"),
        target.url("copy"),
        sqlite.display()
    )
}

fn tsv(s: String) -> String {
    s.replace('\t', "|").replace("NULL", "")
}

#[test]
fn ddl_mid_stream_on_a_compressed_binlog() {
    let my = MariaDbServer::start_with(&["--log-bin-compress=ON", "--log-bin-compress-min-len=10"]);
    let target = MariaDbServer::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id int PRIMARY KEY, name varchar(50), qty int)");
    target.sql("CREATE DATABASE copy");
    let dir = scratch();
    let db = dir.path().join("t.db");
    let cfg = write_config(dir.path(), "s", &config(&my, &target, &db));
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    my.sql(
        "USE shop; INSERT INTO items SELECT seq, repeat('name ', 8), seq FROM seq_1_to_300;
         ALTER TABLE items ADD COLUMN price decimal(10,2);
         INSERT INTO items VALUES (1000, 'priced', 1, 12.50);
         UPDATE items SET price = qty / 4 WHERE id <= 20;
         ALTER TABLE items DROP COLUMN qty;
         DELETE FROM items WHERE id BETWEEN 100 AND 199;
         INSERT INTO items VALUES (2000, 'after drop', 3.25);",
    );
    // The binlog really is compressed: MariaDB logs the rows as compressed events.
    let events = my.sql("SHOW BINLOG EVENTS");
    assert!(events.contains("Write_rows_compressed_v1"), "{events}");
    let all = "SELECT id, name, price FROM {} ORDER BY id";
    let source = tsv(my.sql(&all.replace("{}", "shop.items")));
    assert!(
        wait_until(WAIT, || target
            .try_sql(&all.replace("{}", "copy.items"))
            .map(tsv)
            .ok()
            == Some(source.clone())),
        "MariaDB target differs:\n{}\n{}",
        target
            .try_sql(&all.replace("{}", "copy.items"))
            .unwrap_or_default(),
        ferry.log()
    );
    let columns = "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_NAME = 'items' ORDER BY ORDINAL_POSITION";
    assert_eq!(target.sql(columns), "id\nname\nprice");
    let sqlite = || sqlite_rows(&db, &all.replace("{}", "shop_items")).join("\n");
    assert!(
        wait_until(WAIT, || sqlite() == source),
        "sqlite:\n{}",
        sqlite()
    );

    my.sql("TRUNCATE TABLE shop.items; INSERT INTO shop.items VALUES (1, 'fresh', 1.00)");
    assert!(
        wait_until(WAIT, || target
            .try_sql("SELECT id, name FROM copy.items")
            .ok()
            .as_deref()
            == Some("1\tfresh")),
        "truncate did not arrive:\n{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

#[test]
fn resumes_by_gtid_and_by_file_offset() {
    let my = MariaDbServer::start();
    let target = MariaDbServer::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.n (id int PRIMARY KEY)");
    target.sql("CREATE DATABASE copy");
    let dir = scratch();
    let db = dir.path().join("t.db");
    let cfg = write_config(dir.path(), "s", &config(&my, &target, &db));
    let log = dir.path().join("ferry.log");
    let count = || {
        target
            .try_sql("SELECT count(*) FROM copy.n")
            .unwrap_or_default()
    };

    let ferry = Ferry::start(&cfg, &log);
    my.sql("INSERT INTO shop.n SELECT seq FROM shop.seq_1_to_100");
    assert!(wait_until(WAIT, || count() == "100"), "{}", ferry.log());
    assert!(ferry.terminate().success());

    // Written while Ferry is down, then picked up by GTID (MariaDB's checkpoints carry the GTID state).
    my.sql("INSERT INTO shop.n SELECT seq FROM shop.seq_101_to_200; FLUSH BINARY LOGS; INSERT INTO shop.n SELECT seq FROM shop.seq_201_to_300");
    let ferry = Ferry::start(&cfg, &log);
    assert!(wait_until(WAIT, || count() == "300"), "{}", ferry.log());
    assert!(ferry.log().contains("by_gtid=true"), "{}", ferry.log());
    assert!(ferry.terminate().success());

    // A checkpoint without a GTID (as from a MySQL server without GTIDs) resumes by file and offset.
    target
        .sql("UPDATE copy.ferry_checkpoints SET position = substring_index(position, ';gtid=', 1)");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE ferry_checkpoints SET position = substr(position, 1, instr(position, ';gtid=') - 1) WHERE instr(position, ';gtid=') > 0",
        [],
    )
    .unwrap();
    drop(conn);
    my.sql("INSERT INTO shop.n SELECT seq FROM shop.seq_301_to_400");
    let ferry = Ferry::start(&cfg, &log);
    assert!(wait_until(WAIT, || count() == "400"), "{}", ferry.log());
    assert!(ferry.log().contains("by_gtid=false"), "{}", ferry.log());
    let ids = target.sql("SELECT count(DISTINCT id), min(id), max(id) FROM copy.n");
    assert_eq!(ids, "400\t1\t400");
    assert!(ferry.terminate().success());
}

#[test]
fn a_purged_binlog_stops_the_pipeline_with_the_fix() {
    let my = MariaDbServer::start();
    let target = MariaDbServer::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.n (id int PRIMARY KEY)");
    target.sql("CREATE DATABASE copy");
    let dir = scratch();
    let db = dir.path().join("t.db");
    let cfg = write_config(dir.path(), "s", &config(&my, &target, &db));
    let log = dir.path().join("ferry.log");
    let ferry = Ferry::start(&cfg, &log);
    my.sql("INSERT INTO shop.n VALUES (1)");
    assert!(
        wait_until(WAIT, || target
            .try_sql("SELECT count(*) FROM copy.n")
            .ok()
            .as_deref()
            == Some("1")),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
    // Changes Ferry has not read, then the files holding them are purged.
    my.sql("INSERT INTO shop.n VALUES (2); FLUSH BINARY LOGS; FLUSH BINARY LOGS;");
    let current = my
        .sql("SHOW MASTER STATUS")
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    // The server keeps files a (not yet noticed as gone) dump thread still reads: retry until they are gone.
    assert!(
        wait_until(WAIT, || {
            my.sql(&format!("PURGE BINARY LOGS TO '{current}'"));
            my.sql("SHOW BINARY LOGS").lines().count() == 1
        }),
        "binlogs were not purged: {}",
        my.sql("SHOW BINARY LOGS")
    );
    let mut ferry = Ferry::start(&cfg, &log);
    let status = ferry
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("ferry should stop on a purged binlog:\n{}", ferry.log()));
    assert!(!status.success());
    let text = ferry.log();
    assert!(
        text.contains("no longer has") || text.contains("cannot send the binlog"),
        "{text}"
    );
    assert!(text.contains("ferry reset"), "{text}");
}

#[test]
fn source_restart_mid_stream_loses_nothing() {
    let mut my = MariaDbServer::start();
    let target = MariaDbServer::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.n (id int PRIMARY KEY, v int)");
    target.sql("CREATE DATABASE copy");
    let dir = scratch();
    let db = dir.path().join("t.db");
    let cfg = write_config(dir.path(), "s", &config(&my, &target, &db));
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    my.sql("INSERT INTO shop.n SELECT seq, seq FROM shop.seq_1_to_1000");
    assert!(
        wait_until(WAIT, || target
            .try_sql("SELECT count(*) FROM copy.n")
            .ok()
            .as_deref()
            == Some("1000")),
        "{}",
        ferry.log()
    );
    my.restart();
    my.sql(
        "UPDATE shop.n SET v = v * 2; INSERT INTO shop.n SELECT seq, 0 FROM shop.seq_1001_to_1500",
    );
    let sum = "SELECT count(*), sum(v) FROM {}";
    let source = my.sql(&sum.replace("{}", "shop.n"));
    assert!(
        wait_until(Duration::from_secs(60), || target
            .try_sql(&sum.replace("{}", "copy.n"))
            .ok()
            == Some(source.clone())),
        "target did not converge after the source restart:\n{}",
        ferry.log()
    );
    assert!(ferry.log().contains("transient failure"), "{}", ferry.log());
    assert!(ferry.terminate().success());
}

#[test]
fn without_full_metadata_ddl_is_interpreted_and_unknown_ddl_stops_with_the_statement() {
    let my = MariaDbServer::start_with(&["--binlog-row-metadata=MINIMAL"]);
    let target = MariaDbServer::start();
    my.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.items (id int PRIMARY KEY, name varchar(20), e enum('a','b'), n int unsigned)",
    );
    target.sql("CREATE DATABASE copy");
    let dir = scratch();
    let db = dir.path().join("t.db");
    let cfg = write_config(dir.path(), "s", &config(&my, &target, &db));
    let mut ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    my.sql(
        "USE shop; INSERT INTO items VALUES (1, 'one', 'b', 4000000000);
         ALTER TABLE items ADD COLUMN note varchar(30) AFTER id, MODIFY e enum('a','b','c') NOT NULL;
         INSERT INTO items VALUES (2, 'second', 'two', 'c', 7);
         UPDATE items SET e = 'c', note = 'edited' WHERE id = 1;
         ALTER TABLE items DROP COLUMN name, ADD INDEX (n);
         INSERT INTO items VALUES (3, 'third', 'a', 0);
         CREATE TABLE more (k varchar(10) PRIMARY KEY, v varbinary(10), s set('x','y'));
         INSERT INTO more VALUES ('k1', X'00FF', 'x,y');",
    );
    for (table, columns) in [("items", "id, note, e, n"), ("more", "k, hex(v), s")] {
        let sql = format!("SELECT {columns} FROM {{}}.{table} ORDER BY 1");
        let source = my.sql(&sql.replace("{}", "shop"));
        assert!(
            wait_until(WAIT, || target.try_sql(&sql.replace("{}", "copy")).ok()
                == Some(source.clone())),
            "{table} differs:\nsource:\n{source}\ntarget:\n{}\n{}",
            target
                .try_sql(&sql.replace("{}", "copy"))
                .unwrap_or_default(),
            ferry.log()
        );
    }
    // A statement whose columns are not in the statement: Ferry stops rather than guess.
    my.sql("CREATE TABLE shop.clone LIKE shop.items");
    let status = ferry.wait_exit(WAIT).unwrap_or_else(|| {
        panic!(
            "ferry should stop on DDL it cannot interpret:\n{}",
            ferry.log()
        )
    });
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("cannot interpret") && log.contains("CREATE TABLE shop.clone LIKE shop.items"),
        "{log}"
    );
}

#[test]
fn parallel_snapshot_under_writes_is_consistent() {
    let my = MariaDbServer::start();
    let target = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    for t in ["a", "b", "c", "d"] {
        my.sql(&format!(
            "CREATE TABLE shop.{t} (id int PRIMARY KEY, v int); INSERT INTO shop.{t} SELECT seq, seq FROM shop.seq_1_to_5000"
        ));
    }
    target.sql("CREATE DATABASE copy");
    let dir = scratch();
    let db = dir.path().join("t.db");
    // snapshot = "only": the target then holds exactly what the snapshot read.
    let cfg = write_config(
        dir.path(),
        "s",
        &config(&my, &target, &db).replace("[source]\n", "[source]\nsnapshot = \"only\"\n"),
    );
    // One transaction at a time moves a row between tables: any snapshot that is not one consistent cut
    // shows a total other than 4 × 5000.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, port) = (stop.clone(), my.port);
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let (from, to) = (
                    ["a", "b", "c", "d"][i % 4],
                    ["a", "b", "c", "d"][(i + 1) % 4],
                );
                let sql = format!(
                    "START TRANSACTION; UPDATE shop.{from} SET v = v - 1 WHERE id = {k}; UPDATE shop.{to} SET v = v + 1 WHERE id = {k}; COMMIT;",
                    k = i % 5000 + 1
                );
                let _ = mariadb_ok(port, "shop", &sql);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    let total = |server: &MariaDbServer, db: &str| {
        server
            .try_sql(&format!(
                "SELECT (SELECT sum(v) FROM {db}.a) + (SELECT sum(v) FROM {db}.b) + (SELECT sum(v) FROM {db}.c) + (SELECT sum(v) FROM {db}.d)"
            ))
            .unwrap_or_default()
    };
    let mut ferry = ferry;
    let status = ferry
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("snapshot did not finish:\n{}", ferry.log()));
    assert!(status.success(), "{}", ferry.log());
    let moves = my.sql("SELECT count(*) FROM shop.a WHERE v <> id");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let expected = (4 * (5000 * 5001 / 2)).to_string();
    assert_eq!(total(&my, "shop"), expected);
    // Rows moved between tables while the snapshot connections opened; the copy is still one cut.
    assert_ne!(moves, "0", "the writer did not run");
    assert_eq!(
        total(&target, "copy"),
        expected,
        "the snapshot is not consistent:\n{}",
        ferry.log()
    );
    assert!(ferry.log().contains("connections=2"), "{}", ferry.log());
}

/// A big table whose key is one integer column is copied in primary-key ranges, one per snapshot connection,
/// all in the same snapshot: under a writer that moves value between rows of different ranges, the copy still
/// has every row once and the source's total.
#[test]
fn a_big_table_is_copied_in_key_ranges_of_one_snapshot() {
    let my = MariaDbServer::start();
    let target = MariaDbServer::start();
    my.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.big (id bigint PRIMARY KEY, v int NOT NULL);
         INSERT INTO shop.big SELECT CAST(seq AS SIGNED) - 300000, 10 FROM shop.seq_1_to_600000;
         CREATE TABLE shop.small (code varchar(10) PRIMARY KEY, v int NOT NULL);
         INSERT INTO shop.small SELECT concat('c', seq), 1 FROM shop.seq_1_to_100;
         ANALYZE TABLE shop.big;",
    );
    target.sql("CREATE DATABASE copy");
    let dir = scratch();
    let db = dir.path().join("t.db");
    let cfg = write_config(
        dir.path(),
        "k",
        &config(&my, &target, &db).replace("[source]\n", "[source]\nsnapshot = \"only\"\n"),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, port) = (stop.clone(), my.port);
        std::thread::spawn(move || {
            let mut i: i64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let (a, b) = (i * 7919 % 600000 - 300000, -(i * 104729 % 300000));
                let sql = format!(
                    "START TRANSACTION; UPDATE shop.big SET v = v - 1 WHERE id = {a}; UPDATE shop.big SET v = v + 1 WHERE id = {b}; COMMIT;"
                );
                let _ = mariadb_ok(port, "shop", &sql);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    let status = ferry
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("snapshot did not finish:\n{}", ferry.log()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(status.success(), "{}", ferry.log());
    let log = ferry.log();
    assert!(
        log.contains("copying the table in primary-key ranges chunks=2 table=shop.big")
            || log.contains("copying the table in primary-key ranges table=shop.big chunks=2"),
        "{log}"
    );
    assert!(
        !log.contains("primary-key ranges table=shop.small"),
        "{log}"
    );
    assert_eq!(
        target.sql("SELECT count(*), count(DISTINCT id), sum(v), min(id), max(id) FROM copy.big"),
        "600000\t600000\t6000000\t-299999\t300000",
        "the copy is not the source's one cut:\n{log}"
    );
    assert_eq!(
        sqlite_rows(&db, "SELECT count(*), sum(v) FROM shop_big"),
        vec!["600000|6000000".to_owned()]
    );
    assert_eq!(target.sql("SELECT count(*) FROM copy.small"), "100");
}
