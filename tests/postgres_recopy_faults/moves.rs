//! changes of rows the shadow does not hold yet (key moves with unchanged TOAST, identity-index tables),
//! and rows changed between the re-copy's start and its first low watermark.

use crate::common::*;
use crate::support::*;

const ROWS: &str =
    "SELECT id || '|' || coalesce(note, '~') || '|' || coalesce(md5(body), '~') FROM t ORDER BY id";
const LITE: &str = "SELECT id || '|' || coalesce(note, '~') || '|' || coalesce(length(body), '~') FROM t ORDER BY id";
const PG_LITE: &str = "SELECT id || '|' || coalesce(note, '~') || '|' || coalesce(length(body)::text, '~') FROM t ORDER BY id";

fn toast_table(pg: &PgServer, extra: &str) {
    pg.psql(
        "shop",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, note text, body text {extra});
             ALTER TABLE t ALTER body SET STORAGE EXTERNAL;
             INSERT INTO t SELECT g, 'n' || g, CASE WHEN g % 500 = 0 THEN repeat(md5(g::text), 100) END
             FROM generate_series(1, 6000) g;"
        ),
    );
}

fn run(
    name: &str,
    ddl_extra: &str,
    after_start_sql: &str,
    pipeline_extra: &str,
) -> Result<(), String> {
    let pg = server_with_dbs();
    toast_table(&pg, ddl_extra);
    let s = setup(&pg, name, pipeline_extra, "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM t", &ferry);
    pg.psql(
        "shop",
        &format!(
            "BEGIN; {} {after_start_sql} COMMIT;",
            signal_sql(name, "public.t")
        ),
    );
    wait_finished(&pg, &mut ferry, 2)?;
    compare(&pg, &s, &ferry, ROWS, None)?;
    let src = pg.psql("shop", PG_LITE);
    let lite = sqlite_rows(&s.db, LITE).join("\n");
    if src != lite {
        return Err(format!("sqlite differs: {}", diff(&src, &lite)));
    }
    Ok(())
}

/// A key move of a row with an unchanged TOASTed value, in the transaction that starts the re-copy (its row is
/// not in the shadow yet).
#[test]
fn toast_key_move_before_its_chunk() {
    run("mv1", "", "UPDATE t SET id = -id WHERE id = 5500;", "").unwrap();
}

/// Same, the move inside the not-yet-copied range (5500 -> 5999.5 not possible: 5500 -> 7000).
#[test]
fn toast_key_move_up_before_its_chunk() {
    run("mv2", "", "UPDATE t SET id = 7000 WHERE id = 5500;", "").unwrap();
}

/// A table with a primary key and a different replica identity index: every update is a move by the identity;
/// a plain update leaving a TOASTed value unchanged, before the row's chunk.
#[test]
fn identity_index_update_before_its_chunk() {
    run(
        "mv3",
        ", code int GENERATED ALWAYS AS IDENTITY UNIQUE); ALTER TABLE t REPLICA IDENTITY USING INDEX t_code_key; SELECT (1",
        "UPDATE t SET note = 'changed' WHERE id = 5500;",
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A row of the first chunk changed between the request and the first low watermark, in one target transaction
/// (large max_wait): the shadow gets the row from the stream, then the chunk's read of the same key.
#[test]
fn update_in_first_chunk_range_in_start_txn() {
    run(
        "mv4",
        "",
        "UPDATE t SET note = 'early' WHERE id = 2; INSERT INTO t VALUES (0, 'zero', NULL);",
        "[pipeline.batch]\nmax_wait = \"3s\"",
    )
    .unwrap();
}

/// A key moved below every key (into the already-copied range), complete row: should pass.
#[test]
fn complete_key_move_before_its_chunk() {
    run("mv5", "", "UPDATE t SET id = -id WHERE id = 5501;", "").unwrap();
}

/// Realistic: `ferry snapshot --table t`, then (separately) a key move of a TOASTed row; then a restart: does the
/// pipeline recover?
#[test]
fn realistic_toast_move_then_restart() {
    let pg = server_with_dbs();
    toast_table(&pg, "");
    let s = setup(&pg, "mv6", "", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM t", &ferry);
    let (ok, out) = request(&s.cfg, "t");
    assert!(ok, "{out}");
    pg.psql("shop", "UPDATE t SET id = -id WHERE id = 6000;");
    let first = wait_finished(&pg, &mut ferry, 2);
    println!("first run: {first:?}");
    if first.is_err() {
        let mut again = Ferry::start(&s.cfg, &s.log);
        std::thread::sleep(std::time::Duration::from_secs(8));
        let exited = again.try_exit();
        println!(
            "after restart: exited={exited:?}\n{}",
            log_excerpt(&again.log())
        );
        wait_finished(&pg, &mut again, 2).unwrap();
        compare(&pg, &s, &again, ROWS, None).unwrap();
    } else {
        compare(&pg, &s, &ferry, ROWS, None).unwrap();
    }
}

/// Realistic: `ferry snapshot --table t`, then an update of a first-chunk row, default batching; then restart.
#[test]
fn realistic_update_after_request_then_restart() {
    let pg = server_with_dbs();
    toast_table(&pg, "");
    let s = setup(&pg, "mv7", "", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM t", &ferry);
    let port = pg.port;
    let writers = Writers::start(1, move |_, seq| {
        psql_ok(
            port,
            "shop",
            &format!("UPDATE t SET note = 'w{seq}' WHERE id = {}", seq % 50 + 1),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (ok, out) = request(&s.cfg, "t");
    assert!(ok, "{out}");
    let first = wait_finished(&pg, &mut ferry, 2);
    writers.stop();
    println!("first run: {first:?}");
    if first.is_err() {
        let mut again = Ferry::start(&s.cfg, &s.log);
        let r = wait_finished(&pg, &mut again, 2);
        println!("after restart: {r:?}");
        r.unwrap();
        compare(&pg, &s, &again, ROWS, None).unwrap();
    } else {
        compare(&pg, &s, &ferry, ROWS, None).unwrap();
    }
}

/// The COPY duplicate (PG sink) while SQLite finished; then a restart: does it converge?
#[test]
fn dup_copy_then_restart() {
    let pg = server_with_dbs();
    toast_table(&pg, "");
    let s = setup(&pg, "mv8", "[pipeline.batch]\nmax_wait = \"3s\"", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM t", &ferry);
    pg.psql("replica", "DELETE FROM t WHERE id % 3 = 0");
    pg.psql(
        "shop",
        &format!(
            "BEGIN; {} UPDATE t SET note = 'early' WHERE id = 2; COMMIT;",
            signal_sql("mv8", "public.t")
        ),
    );
    let first = wait_finished(&pg, &mut ferry, 2);
    println!("first: {first:?}");
    let mut again = Ferry::start(&s.cfg, &s.log);
    let r = wait_finished(&pg, &mut again, 3);
    println!("after restart: {r:?}\n{}", log_excerpt(&again.log()));
    compare(&pg, &s, &again, ROWS, None).unwrap();
    let src = pg.psql("shop", PG_LITE);
    let lite = sqlite_rows(&s.db, LITE).join("\n");
    assert!(src == lite, "sqlite differs: {}", diff(&src, &lite));
}
