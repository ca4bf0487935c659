//! DDL, TRUNCATE, mass DELETE and rewrites during a re-copy.

use std::time::Duration;

use crate::common::*;
use crate::support::*;

const FAST: &str = "[pipeline.batch]\nmax_wait = \"20ms\"";

fn big_table(pg: &PgServer, rows: u32) {
    pg.psql(
        "shop",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, c int, label text);
             INSERT INTO t SELECT g, g, 'l' || g FROM generate_series(1, {rows}) g;
             CREATE TABLE other (id int PRIMARY KEY, v int);"
        ),
    );
}

/// Rows copied so far per /status, or None.
fn recopy_rows(ferry: &Ferry) -> Option<u64> {
    let (_, body) = ferry.get("/status")?;
    let i = body.find("\"recopies\"")?;
    let rest = &body[i..];
    let j = rest.find("\"rows_copied\":")?;
    rest[j + 14..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

fn start(pg: &PgServer, name: &str, source_extra: &str) -> (Setup, Ferry) {
    let s = setup(pg, name, FAST, source_extra);
    let ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(pg, "SELECT count(*) FROM t", &ferry);
    (s, ferry)
}

/// Requests a re-copy of t and waits until some rows were copied, but not all.
fn request_and_wait_midway(pg: &PgServer, s: &Setup, ferry: &Ferry) -> u64 {
    let (ok, out) = request(&s.cfg, "t");
    assert!(ok, "{out}");
    let mut seen = 0;
    wait_until(Duration::from_secs(20), || {
        seen = recopy_rows(ferry).unwrap_or(0);
        seen > 0
    });
    let _ = pg;
    println!("copied so far when acting: {seen}");
    seen
}

const ROWS: &str = "SELECT t::text FROM t ORDER BY id";

/// A rewrite the targets cannot reproduce (USING an expression) while a manual re-copy is half done, with
/// on_schema_change = "resnapshot": the re-copy under way is kept, but its copied chunks predate the rewrite.
#[test]
fn rewrite_during_recopy_resnapshot_policy() {
    let pg = server_with_dbs();
    big_table(&pg, 120_000);
    let (s, mut ferry) = start(&pg, "d1", "on_schema_change = \"resnapshot\"");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql("shop", "ALTER TABLE t ALTER c TYPE bigint USING c * 2 + 1");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    // Two re-copies may be needed: wait a little more for a second one.
    std::thread::sleep(Duration::from_secs(3));
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT count(*), sum(c), min(c), max(c) FROM t",
        None,
    )
    .unwrap();
    compare(&pg, &s, &ferry, ROWS, None).unwrap();
}

/// Two rewrites in a row under the resnapshot policy: the second lands while the first one's re-copy runs.
#[test]
fn two_rewrites_in_a_row_resnapshot_policy() {
    let pg = server_with_dbs();
    big_table(&pg, 120_000);
    let (s, mut ferry) = start(&pg, "d2", "on_schema_change = \"resnapshot\"");
    pg.psql("shop", "ALTER TABLE t ALTER c TYPE bigint USING c * 2");
    wait_until(Duration::from_secs(20), || {
        recopy_rows(&ferry).unwrap_or(0) > 0
    });
    pg.psql("shop", "ALTER TABLE t ALTER c TYPE numeric USING c + 0.5");
    std::thread::sleep(Duration::from_secs(3));
    wait_finished(&pg, &mut ferry, 2).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT count(*), sum(c), min(c), max(c) FROM t",
        None,
    )
    .unwrap();
}

/// ADD COLUMN with a constant default in the middle of the re-copy, and no later change of t.
#[test]
fn add_column_midway_no_later_changes() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d3", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql(
        "shop",
        "ALTER TABLE t ADD COLUMN x int DEFAULT 5; INSERT INTO other VALUES (1, 1);",
    );
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        ROWS,
        Some("SELECT count(*), sum(x) FROM t"),
    )
    .unwrap();
}

/// ADD COLUMN midway, then updates of t.
#[test]
fn add_column_midway_then_updates() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d4", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql("shop", "ALTER TABLE t ADD COLUMN x int DEFAULT 5;");
    pg.psql(
        "shop",
        "UPDATE t SET x = 6 WHERE id % 1000 = 0; UPDATE t SET c = -c WHERE id % 1000 = 1;",
    );
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        ROWS,
        Some("SELECT count(*), sum(x), sum(c) FROM t"),
    )
    .unwrap();
}

/// RENAME COLUMN midway, with no later change of t.
#[test]
fn rename_column_midway() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d5", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql("shop", "ALTER TABLE t RENAME COLUMN label TO title;");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    pg.psql("shop", "UPDATE t SET title = 'after' WHERE id = 3;");
    compare(
        &pg,
        &s,
        &ferry,
        ROWS,
        Some("SELECT count(*), sum(length(title)) FROM t"),
    )
    .unwrap();
}

/// DROP COLUMN midway, then an update.
#[test]
fn drop_column_midway() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d6", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql(
        "shop",
        "ALTER TABLE t DROP COLUMN label; UPDATE t SET c = 0 WHERE id = 59999;",
    );
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        ROWS,
        Some("SELECT count(*), sum(c) FROM t"),
    )
    .unwrap();
}

/// TRUNCATE then a few inserts midway.
#[test]
fn truncate_midway_then_inserts() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d7", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql(
        "shop",
        "TRUNCATE t; INSERT INTO t SELECT g, g, 'again' FROM generate_series(1, 3000, 7) g;",
    );
    pg.psql("shop", "INSERT INTO t VALUES (50000, 1, 'late');");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        ROWS,
        Some("SELECT count(*), sum(c) FROM t"),
    )
    .unwrap();
}

/// TRUNCATE and an insert of a first-chunk key in the transaction that starts the re-copy (one target
/// transaction: long max_wait).
#[test]
fn truncate_and_insert_in_start_txn() {
    let pg = server_with_dbs();
    big_table(&pg, 5_000);
    let s = setup(&pg, "d8", "[pipeline.batch]\nmax_wait = \"3s\"", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM t", &ferry);
    pg.psql(
        "shop",
        &format!(
            "BEGIN; {} TRUNCATE t; INSERT INTO t VALUES (1, 1, 'x'), (2, 2, 'y'); COMMIT;",
            signal_sql("d8", "public.t")
        ),
    );
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        ROWS,
        Some("SELECT count(*), sum(c) FROM t"),
    )
    .unwrap();
}

/// DELETE of every row midway.
#[test]
fn delete_all_midway() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d9", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql("shop", "DELETE FROM t;");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT count(*) FROM t",
        Some("SELECT count(*) FROM t"),
    )
    .unwrap();
}

/// Key type change (plain cast, reproducible rewrite) midway.
#[test]
fn key_type_change_midway() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d10", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql(
        "shop",
        "ALTER TABLE t ALTER id TYPE bigint; INSERT INTO t VALUES (5000000000, 1, 'big');",
    );
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        ROWS,
        Some("SELECT count(*), sum(id) FROM t"),
    )
    .unwrap();
}

/// The table dropped midway (and recreated with the same name).
#[test]
fn drop_and_recreate_midway() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d11", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql("shop", "DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, c int, label text); INSERT INTO t VALUES (1, 1, 'new');");
    std::thread::sleep(Duration::from_secs(5));
    let alive = ferry.try_exit().is_none();
    println!("alive after drop: {alive}\n{}", log_excerpt(&ferry.log()));
    compare(&pg, &s, &ferry, ROWS, Some("SELECT count(*) FROM t")).unwrap();
}

/// Plain type changes (rewrites the targets reproduce; no policy involved) while the re-copy runs.
#[test]
fn plain_type_changes_midway_default_policy() {
    let pg = server_with_dbs();
    big_table(&pg, 120_000);
    let (s, mut ferry) = start(&pg, "d12", "");
    request_and_wait_midway(&pg, &s, &ferry);
    for i in 0..6 {
        let ty = if i % 2 == 0 { "bigint" } else { "int" };
        pg.psql("shop", &format!("ALTER TABLE t ALTER c TYPE {ty}"));
        std::thread::sleep(Duration::from_millis(150));
    }
    pg.psql("shop", "UPDATE t SET label = 'touched' WHERE id = 1");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT count(*), sum(c) FROM t",
        Some("SELECT count(*) || '|' || sum(c) FROM t"),
    )
    .unwrap();
}

/// DROP + CREATE midway, then a restart: does the pipeline come back?
#[test]
fn drop_and_recreate_midway_then_restart() {
    let pg = server_with_dbs();
    big_table(&pg, 60_000);
    let (s, mut ferry) = start(&pg, "d13", "");
    request_and_wait_midway(&pg, &s, &ferry);
    pg.psql("shop", "DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, c int, label text); INSERT INTO t VALUES (1, 1, 'new');");
    let exited = ferry.wait_exit(Duration::from_secs(10));
    println!("first run exited: {exited:?}");
    let mut again = Ferry::start(&s.cfg, &s.log);
    std::thread::sleep(Duration::from_secs(8));
    println!(
        "after restart exited: {:?}\n{}",
        again.try_exit(),
        log_excerpt(&again.log())
    );
    pg.psql("shop", "INSERT INTO t VALUES (2, 2, 'two');");
    compare(&pg, &s, &again, ROWS, Some("SELECT count(*) FROM t")).unwrap();
}
