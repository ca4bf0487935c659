//! several re-copies, restarts at awkward moments, partitions, generated columns, filters, MariaDB sink.

use std::time::Duration;

use crate::common::*;
use crate::support::*;

const FAST: &str = "[pipeline.batch]\nmax_wait = \"20ms\"";

fn tables(pg: &PgServer) {
    pg.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 20000) g;
         CREATE TABLE b (id int PRIMARY KEY, v text); INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 20000) g;",
    );
}

fn damage_ab(pg: &PgServer) {
    pg.psql(
        "replica",
        "DELETE FROM a WHERE id % 3 = 0; UPDATE b SET v = 'WRONG' WHERE id % 3 = 0;",
    );
}

fn check_ab(pg: &PgServer, s: &Setup, ferry: &Ferry) {
    for t in ["a", "b"] {
        compare(
            pg,
            s,
            ferry,
            &format!("SELECT id || v FROM {t} ORDER BY id"),
            Some(&format!(
                "SELECT count(*) || '|' || sum(length(v)) FROM {t}"
            )),
        )
        .unwrap();
    }
}

#[test]
fn two_tables_at_once_and_one_twice() {
    let pg = server_with_dbs();
    tables(&pg);
    let s = setup(&pg, "m1", FAST, "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM b", &ferry);
    damage_ab(&pg);
    for t in ["a", "b", "a"] {
        let (ok, out) = request(&s.cfg, t);
        assert!(ok, "{out}");
    }
    pg.psql(
        "shop",
        "UPDATE a SET v = 'x' WHERE id % 100 = 0; DELETE FROM b WHERE id % 100 = 1;",
    );
    wait_until(WAIT, || {
        ferry.log().matches("re-copy finished").count() >= 4
    });
    wait_finished(&pg, &mut ferry, 4).unwrap();
    check_ab(&pg, &s, &ferry);
}

#[test]
fn sigkill_right_after_request_then_near_end() {
    let pg = server_with_dbs();
    tables(&pg);
    let s = setup(&pg, "m2", FAST, "");
    let ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM b", &ferry);
    // Both sinks hold a checkpoint before the kill: a sink without one would make the restart take a new
    // snapshot (and drop the slot with the requests in it), which is not what this test is about.
    let checkpointed = wait_until(WAIT, || {
        pg.try_psql("replica", "SELECT count(*) FROM ferry_checkpoints")
            .ok()
            .as_deref()
            == Some("1")
            && sqlite_rows(&s.db, "SELECT count(*) FROM ferry_checkpoints") == ["1"]
    });
    assert!(checkpointed, "{}", ferry.log());
    damage_ab(&pg);
    let (ok, out) = request(&s.cfg, "a");
    assert!(ok, "{out}");
    ferry.kill9();
    // While stopped: more changes, and a second request.
    pg.psql(
        "shop",
        "UPDATE a SET v = 'y' WHERE id % 50 = 0; INSERT INTO a VALUES (0, 'zero');",
    );
    let (ok, out) = request(&s.cfg, "b");
    assert!(ok, "{out}");
    let ferry = Ferry::start(&s.cfg, &s.log);
    std::thread::sleep(Duration::from_millis(1200));
    ferry.kill9();
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    wait_until(WAIT, || {
        ferry.log().matches("re-copy finished").count() >= 4
    });
    wait_finished(&pg, &mut ferry, 4).unwrap();
    check_ab(&pg, &s, &ferry);
}

#[test]
fn sigterm_midway_restart() {
    let pg = server_with_dbs();
    tables(&pg);
    let s = setup(&pg, "m3", FAST, "");
    let ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM b", &ferry);
    damage_ab(&pg);
    let (ok, out) = request(&s.cfg, "b");
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(400));
    let st = ferry.terminate();
    println!("sigterm exit: {st}");
    pg.psql("shop", "UPDATE b SET id = -id WHERE id % 1000 = 0;");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    wait_finished(&pg, &mut ferry, 2).unwrap();
    println!(
        "{}",
        ferry
            .log()
            .lines()
            .filter(|l| l.contains("re-cop") || l.contains("shut") || l.contains("stop"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT id || v FROM b ORDER BY id",
        Some("SELECT count(*) || '|' || sum(length(v)) FROM b"),
    )
    .unwrap();
}

#[test]
fn partitioned_table_with_partition_truncate() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE p (id int, region text, v text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
         CREATE TABLE p_eu PARTITION OF p FOR VALUES IN ('eu');
         CREATE TABLE p_us PARTITION OF p FOR VALUES IN ('us');
         INSERT INTO p SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'v' || g FROM generate_series(1, 20000) g;",
    );
    let s = setup(&pg, "m4", FAST, "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM p", &ferry);
    pg.psql("replica", "DELETE FROM p WHERE id % 7 = 0");
    let (ok, out) = request(&s.cfg, "p");
    assert!(ok, "{out}");
    pg.psql(
        "shop",
        "UPDATE p SET region = 'eu' WHERE id % 101 = 1 AND region = 'us'; TRUNCATE p_us;",
    );
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT region || id || v FROM p ORDER BY 1",
        Some("SELECT count(*) FROM p"),
    )
    .unwrap();
}

#[test]
fn generated_column_and_excluded_column() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE g (id int PRIMARY KEY, v int, secret text, twice int GENERATED ALWAYS AS (v * 2) STORED);
         INSERT INTO g (id, v, secret) SELECT n, n, 's' || n FROM generate_series(1, 5000) n;",
    );
    let s = setup(
        &pg,
        "m5",
        &format!("{FAST}\n\n[filter]\nexclude_columns = [\"public.g.secret\"]"),
        "",
    );
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM g", &ferry);
    pg.psql("replica", "DELETE FROM g WHERE id % 3 = 0");
    let (ok, out) = request(&s.cfg, "g");
    assert!(ok, "{out}");
    pg.psql("shop", "UPDATE g SET v = -v WHERE id % 10 = 0;");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT id || '|' || v || '|' || coalesce(twice::text, '~') FROM g ORDER BY id",
        Some("SELECT count(*) || '|' || sum(v) FROM g"),
    )
    .unwrap();
    let cols = pg.psql("replica", "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'g'");
    println!("replica columns of g: {cols}");
    assert!(!cols.contains("secret"), "{cols}");
}

#[test]
fn mariadb_sink_recopy_with_special_keys() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE mk (a text, n int, v text, PRIMARY KEY (a, n));
         INSERT INTO mk SELECT (ARRAY['Abc', 'abc', 'ABC ', E'x\\\\y', 'é', 'e'])[g % 6 + 1], g, 'v' || g FROM generate_series(1, 5000) g;",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let text = format!(
        "{}\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
        fan_out_config(&pg, "m6", FAST, &db),
        my.url("replica")
    );
    let cfg = write_config(dir.path(), "m6", &text);
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    let cnt = "SELECT count(*) FROM mk";
    let ok = wait_until(WAIT, || {
        my.try_sql(&format!("USE replica; {cnt}"))
            .is_ok_and(|c| c.trim() == "5000")
    });
    println!(
        "mariadb initial count ok={ok}: {:?}\n{}",
        my.try_sql(&format!("USE replica; {cnt}")),
        log_excerpt(&ferry.log())
    );
    my.sql("USE replica; DELETE FROM mk WHERE n % 4 = 0");
    let (ok, out) = request(&cfg, "mk");
    assert!(ok, "{out}");
    pg.psql(
        "shop",
        "UPDATE mk SET v = 'u' WHERE n % 9 = 0; DELETE FROM mk WHERE n % 11 = 0;",
    );
    let fin = wait_until(WAIT, || {
        ferry.log().matches("re-copy finished").count() >= 3 || ferry.try_exit().is_some()
    });
    println!("finished={fin}\n{}", log_excerpt(&ferry.log()));
    let src = pg.psql(
        "shop",
        "SELECT count(*) || '|' || sum(n) || '|' || sum(length(v)) FROM mk",
    );
    let ok = wait_until(WAIT, || {
        my.try_sql(
            "USE replica; SELECT concat(count(*), '|', sum(n), '|', sum(char_length(v))) FROM mk",
        )
        .is_ok_and(|c| c.trim() == src)
    });
    assert!(
        ok,
        "mariadb {:?} vs source {src}",
        my.try_sql(
            "USE replica; SELECT concat(count(*), '|', sum(n), '|', sum(char_length(v))) FROM mk"
        )
    );
}
