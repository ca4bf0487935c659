//! Re-copying one table while streaming (`ferry snapshot --table`, `on_schema_change = "resnapshot"`): the
//! targets end equal to the source, rows the targets had wrong or extra included, under a concurrent write load
//! and SIGKILLs in the middle of the copy.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Runs `ferry snapshot --table <table>`; its exit status and output.
fn request(config: &std::path::Path, table: &str) -> (bool, String) {
    ferry_command(&["snapshot", "--table", table], config)
}

#[test]
fn a_recopy_under_load_and_sigkills_makes_the_targets_equal_the_source() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, note text, body text);
         ALTER TABLE orders ALTER body SET STORAGE EXTERNAL;
         INSERT INTO orders SELECT g, g % 997, 'n' || g, CASE WHEN g % 5000 = 0 THEN repeat(md5(g::text), 300) END
         FROM generate_series(1, 200000) g;
         CREATE TABLE other (id int PRIMARY KEY, v int);",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "rc",
        &fan_out_config(&pg, "rc", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
    );
    let log = dir.path().join("f.log");
    let ferry = Ferry::start(&cfg, &log);
    ferry.wait_streaming();
    let count = "SELECT count(*) FROM orders";
    assert!(
        wait_until(WAIT, || pg.try_psql("replica", count).ok().as_deref()
            == Some("200000")
            && sqlite_rows(&db, count) == ["200000"]),
        "{}",
        ferry.log()
    );
    // The targets go wrong behind Ferry's back: rows lost, changed, and rows the source never had.
    let damage = "DELETE FROM orders WHERE id % 1000 = 7; UPDATE orders SET note = 'WRONG', body = NULL \
                  WHERE id % 1000 = 8 OR id = 5000; INSERT INTO orders VALUES (900000001, 1, 'extra', NULL);";
    pg.psql("replica", damage);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(damage)
        .unwrap();

    // Updates (some moving keys, some leaving the TOASTed body unchanged), inserts and deletes all along.
    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        let id = (seq as i64 * 7919 + w as i64 * 104_729) % 200_000 + 1;
        let sql = match seq % 5 {
            0 => format!("UPDATE orders SET note = 'u{seq}' WHERE id = {id}"),
            1 => format!("DELETE FROM orders WHERE id = {}", id + 3),
            2 => format!(
                "INSERT INTO orders VALUES ({}, {w}, 'i{seq}', NULL) ON CONFLICT DO NOTHING",
                1_000_000 + w as i64 * 100_000 + seq as i64
            ),
            3 => format!(
                "UPDATE orders SET id = {} WHERE id = {id}",
                2_000_000 + w as i64 * 100_000 + seq as i64
            ),
            _ => format!(
                "UPDATE orders SET customer = customer + 1 WHERE id BETWEEN {id} AND {}; \
                 INSERT INTO other VALUES ({}, {seq}) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                id + 20,
                w * 100_000 + seq as usize
            ),
        };
        psql_ok(port, "shop", &sql)
    });
    let (ok, out) = request(&cfg, "public.orders");
    assert!(ok, "{out}");
    assert!(out.contains("asked to re-copy public.orders"), "{out}");
    // SIGKILLs while the copy runs; each restart resumes it at the next chunk.
    std::thread::sleep(Duration::from_millis(700));
    ferry.kill9();
    kill_randomly(&cfg, &log, 3);
    let ferry = Ferry::start(&cfg, &log);
    let finished = wait_until(Duration::from_secs(180), || {
        ferry.log().contains("re-copy finished")
            && pg
                .try_psql(
                    "replica",
                    "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ferry_recopy_%'",
                )
                .ok()
                .as_deref()
                == Some("0")
    });
    assert!(finished, "the re-copy did not finish:\n{}", ferry.log());
    writers.stop();

    let rows = "SELECT id || '|' || customer || '|' || coalesce(note, '~') || '|' || coalesce(md5(body), '~') \
                FROM orders ORDER BY id";
    wait_same(&pg, rows, &ferry);
    wait_same(&pg, "SELECT id, v FROM other ORDER BY id", &ferry);
    // SQLite has no md5: the rows without their bodies, then each body's length.
    for sql in [
        "SELECT id || '|' || customer || '|' || coalesce(note, '~') FROM orders ORDER BY id",
        "SELECT id || ':' || length(body) FROM orders WHERE body IS NOT NULL ORDER BY id",
    ] {
        let source = pg.psql("shop", sql);
        assert!(
            wait_until(WAIT, || sqlite_rows(&db, sql).join("\n") == source),
            "sqlite differs from the source: {sql}"
        );
    }
    assert!(
        pg.psql("shop", count).parse::<u32>().unwrap() > 190_000,
        "the load removed too much to prove anything"
    );
    let log = ferry.log();
    for line in log.lines().filter(|l| l.contains("re-copy")) {
        println!("{line}");
    }
    assert!(
        log.contains("re-copying the table while streaming"),
        "{log}"
    );
    let (_, status) = ferry.get("/status").expect("status");
    assert!(
        status.contains("\"table\":\"public.orders\"") && status.contains("\"finished\":true"),
        "{status}"
    );
}

#[test]
fn the_resnapshot_policy_recopies_a_rewritten_table_into_every_sql_target() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE prices (id int PRIMARY KEY, cents int, label text);
         INSERT INTO prices SELECT g, g * 10, 'p' || g FROM generate_series(1, 5000) g;
         CREATE TABLE kept (id int PRIMARY KEY);",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let text = format!(
        "{}\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
        fan_out_config(&pg, "rs", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
        my.url("replica")
    )
    .replace(
        "[source]\ntype = \"postgres\"\n",
        "[source]\ntype = \"postgres\"\non_schema_change = \"resnapshot\"\n",
    );
    let cfg = write_config(dir.path(), "rs", &text);
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    // Values only the source can compute: the targets cannot derive them from the old ones.
    pg.psql(
        "shop",
        "ALTER TABLE prices ALTER cents TYPE bigint USING cents * 3 + length(label);
         INSERT INTO prices VALUES (5001, 1, 'late'); INSERT INTO kept VALUES (1);",
    );
    let sql = "SELECT id, cents, label FROM prices ORDER BY id";
    let expected = pg.psql("shop", sql);
    let ok = wait_until(WAIT, || {
        pg.try_psql("replica", sql).ok().as_deref() == Some(expected.as_str())
            && sqlite_rows(&db, sql).join("\n") == expected
            && my
                .try_sql(&format!("USE replica; {sql}"))
                .is_ok_and(|s| s.replace('\t', "|") == expected)
    });
    assert!(
        ok,
        "the targets did not get the rewritten values:\n{}",
        ferry.log()
    );
    // The shadow tables are gone from every target.
    assert!(
        wait_until(WAIT, || {
            my
            .try_sql("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'ferry_recopy_%'")
            .is_ok_and(|c| c.trim() == "0")
        }),
        "{}",
        ferry.log()
    );
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'ferry_recopy_%'"
        ),
        ["0"]
    );
    assert_eq!(pg.psql("replica", "SELECT count(*) FROM kept"), "1");
    assert!(
        ferry
            .log()
            .contains("re-copying the table (on_schema_change"),
        "{}",
        ferry.log()
    );
}

#[test]
fn a_recopy_request_that_cannot_be_served_says_why() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (v int);",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "rq",
        &fan_out_config(&pg, "rq", "", &db).replace(
            "[source]\ntype = \"postgres\"\n",
            "[source]\ntype = \"postgres\"\ntables = [\"keyed\", \"loose\"]\n",
        ),
    );
    // Before the pipeline ever ran there is no slot: its first snapshot copies every table anyway.
    let (ok, out) = request(&cfg, "keyed");
    assert!(!ok && out.contains("has not started yet"), "{out}");
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    let (ok, out) = request(&cfg, "loose");
    assert!(!ok && out.contains("no primary key"), "{out}");
    let (ok, out) = request(&cfg, "public.missing");
    assert!(!ok && out.contains("does not include the table"), "{out}");
    let (ok, out) = request(&cfg, "a.b.c");
    assert!(!ok && out.contains("expected schema.table"), "{out}");
    let (ok, out) = request(&cfg, "keyed");
    assert!(ok, "{out}");
    assert!(
        wait_until(WAIT, || ferry.log().contains("re-copy finished")),
        "{}",
        ferry.log()
    );
}

#[test]
fn a_recopy_ends_a_quarantine() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v int);
         INSERT INTO a SELECT g, g FROM generate_series(1, 3000) g;",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let text = fan_out_config(&pg, "rq2", "[pipeline.batch]\nmax_wait = \"20ms\"", &db).replace(
        "[source]\ntype = \"postgres\"\n",
        "[source]\ntype = \"postgres\"\non_schema_change = \"quarantine\"\n",
    );
    let cfg = write_config(dir.path(), "rq2", &text);
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "ALTER TABLE a ADD COLUMN at timestamptz NOT NULL DEFAULT clock_timestamp();
         DELETE FROM a WHERE id % 10 = 0; INSERT INTO a (id, v) VALUES (5000, 5);",
    );
    assert!(
        wait_until(WAIT, || ferry
            .get("/status")
            .is_some_and(|(_, s)| s.contains("public.a: rewritten at"))),
        "{}",
        ferry.log()
    );
    let (ok, out) = request(&cfg, "a");
    assert!(ok, "{out}");
    let sql = "SELECT id, v, at FROM a ORDER BY id";
    wait_same(&pg, sql, &ferry);
    let lite = "SELECT count(*), sum(v) FROM a";
    let expected = pg.psql("shop", lite);
    assert!(
        wait_until(WAIT, || sqlite_rows(&db, lite).join("\n") == expected),
        "{}",
        ferry.log()
    );
    let (_, status) = ferry.get("/status").expect("status");
    assert!(!status.contains("rewritten at"), "{status}");
    // Its changes are applied again.
    pg.psql("shop", "UPDATE a SET v = -1 WHERE id = 1");
    wait_same(&pg, sql, &ferry);
}

#[test]
fn a_type_change_sqlite_cannot_apply_to_stored_values_quarantines_the_table_there_until_a_recopy() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE m (id int PRIMARY KEY, x numeric(10,3));
         INSERT INTO m SELECT g, g + 0.234 FROM generate_series(1, 100) g;",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "ty",
        &fan_out_config(&pg, "ty", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    let sum = "SELECT count(*), sum(x) FROM m";
    wait_same(&pg, sum, &ferry);
    // PostgreSQL rounds every stored value; a PostgreSQL target casts the same way, SQLite keeps 1.234.
    pg.psql(
        "shop",
        "ALTER TABLE m ALTER x TYPE numeric(8,1); INSERT INTO m VALUES (101, 5.5);",
    );
    wait_same(&pg, sum, &ferry);
    assert!(
        wait_until(WAIT, || ferry
            .log()
            .contains("SQLite keeps the values it holds as they were")),
        "{}",
        ferry.log()
    );
    let (ok, out) = request(&cfg, "m");
    assert!(ok, "{out}");
    let expected = pg.psql("shop", "SELECT id || ':' || x FROM m ORDER BY id");
    assert!(
        wait_until(WAIT, || sqlite_rows(
            &db,
            "SELECT id || ':' || x FROM m ORDER BY id"
        )
        .join("\n")
            == expected),
        "{:?}\n{}",
        sqlite_rows(&db, "SELECT id || ':' || x FROM m ORDER BY id")
            .iter()
            .take(3)
            .collect::<Vec<_>>(),
        ferry.log()
    );
}
