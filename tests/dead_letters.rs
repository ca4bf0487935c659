//! Rows a PostgreSQL target refuses (issue 14): found inside set-based batches, set aside by `on_error` (a dead
//! letter in `ferry_dead_letters`, written with the batch and the checkpoint; skipped; or a halt naming the row),
//! later changes of a dead key following it into the queue, and `ferry dead-letters replay` applying them once the
//! cause is fixed, with nothing lost or duplicated under SIGKILLs.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Every row of `items` in a comparable form.
const ITEMS: &str = "SELECT count(*), coalesce(sum(qty), 0), md5(coalesce(string_agg(id || ':' || qty || ':' || note, ',' ORDER BY id), '')) FROM items";

#[test]
fn refused_rows_become_dead_letters_and_replay_applies_them_exactly_once_under_sigkills() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL);
         CREATE TABLE audit (id int PRIMARY KEY, what text NOT NULL);",
    );
    // The replica refuses negative quantities and long audit texts; the source allows both.
    pg.psql(
        "replica",
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL CHECK (qty >= 0), note text NOT NULL);
         CREATE TABLE audit (id int PRIMARY KEY, what varchar(8) NOT NULL);",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "dl",
        &pg_to_pg_config(
            &pg,
            "dl",
            "on_error = \"dead_letter\"\n\
             [pipeline.retry]\ninitial = \"10ms\"\nmax = \"40ms\"\nattempts = 2\n\
             [[pipeline.on_error_rules]]\ntables = [\"public.audit\"]\non_error = \"skip\"\n\
             [pipeline.batch]\nmax_wait = \"20ms\"\n",
        ),
    );
    let log = dir.path().join("f.log");
    let ferry = Ferry::start(&cfg, &log);
    ferry.wait_streaming();
    // 10,000 rows in 100-row transactions; rows 777, 5000 and 9999 carry a negative quantity. Then later changes:
    // 5000 is updated (it follows its dead letter), 778 and 4999 (neighbours, fine) too, and 9999 is deleted.
    // The audit table gets one text too long for the replica (skipped) and one that fits.
    pg.psql(
        "shop",
        "DO $$ BEGIN FOR b IN 0..99 LOOP
           INSERT INTO items SELECT g, CASE WHEN g IN (777, 5000, 9999) THEN -1 ELSE g % 50 END, 'n' || g
             FROM generate_series(b * 100 + 1, b * 100 + 100) g;
           COMMIT;
         END LOOP; END $$",
    );
    pg.psql(
        "shop",
        "UPDATE items SET note = 'later' WHERE id IN (778, 4999, 5000);
         DELETE FROM items WHERE id = 9999;
         INSERT INTO audit VALUES (1, 'much too long for eight'), (2, 'short');",
    );
    // SIGKILLs while it works through them.
    let ferry_pid_log = log.clone();
    ferry.kill9();
    kill_randomly(&cfg, &ferry_pid_log, 4);
    let ferry = Ferry::start(&cfg, &log);
    let letters = || {
        pg.try_psql(
            "replica",
            "SELECT string_agg(row_key || ' ' || op || ' ' || code, ', ' ORDER BY id) FROM ferry_dead_letters",
        )
        .unwrap_or_default()
    };
    let expected_letters =
        "[\"777\"] insert 23514, [\"5000\"] insert 23514, [\"9999\"] insert 23514, \
                            [\"5000\"] update follows, [\"9999\"] delete follows";
    assert!(
        wait_until(WAIT, || letters() == expected_letters
            && pg
                .try_psql("replica", "SELECT count(*) FROM audit")
                .unwrap_or_default()
                == "1"),
        "letters {:?}\n{}",
        letters(),
        ferry.log()
    );
    // Everything else landed, once: 9,997 rows, the neighbours' updates included; the skipped audit row is absent.
    assert_eq!(
        pg.psql(
            "replica",
            "SELECT count(*), sum(CASE WHEN note = 'later' THEN 1 ELSE 0 END) FROM items"
        ),
        "9997|2"
    );
    assert_eq!(pg.psql("replica", "SELECT id, what FROM audit"), "2|short");
    // `list` works while the pipeline runs; replay does not.
    let (ok, listed) = ferry_command(&["dead-letters", "list", "--json"], &cfg);
    assert!(ok, "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(5), "{listed}");
    assert_eq!(listed[0]["table"]["name"], "items");
    assert!(
        listed[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("items_qty_check"),
        "{listed}"
    );
    let (ok, out) = ferry_command(&["dead-letters", "replay"], &cfg);
    assert!(!ok && out.contains("Stop it first"), "{out}");
    assert!(ferry.terminate().success());

    // Replaying before the fix: the first letter of each key fails again, the letters following it stay.
    let (ok, out) = ferry_command(&["dead-letters", "replay"], &cfg);
    assert!(!ok, "{out}");
    assert!(out.contains("0 replayed, 3 failed"), "{out}");
    assert_eq!(letters(), expected_letters);

    // Fixed: every letter applies, in order per key, once.
    pg.psql(
        "replica",
        "ALTER TABLE items DROP CONSTRAINT items_qty_check",
    );
    let (ok, out) = ferry_command(&["dead-letters", "replay", "--table", "items"], &cfg);
    assert!(ok, "{out}");
    assert!(out.contains("5 replayed, 0 failed"), "{out}");
    assert_eq!(letters(), "");
    assert_eq!(pg.psql("replica", ITEMS), pg.psql("shop", ITEMS));

    // The pipeline goes on from its checkpoint, nothing applied twice.
    let ferry = Ferry::start(&cfg, &log);
    pg.psql(
        "shop",
        "UPDATE items SET qty = qty + 1 WHERE id % 1000 = 0; INSERT INTO audit VALUES (3, 'again too long')",
    );
    assert!(
        wait_until(WAIT, || pg.psql("replica", ITEMS) == pg.psql("shop", ITEMS)
            && metric(&ferry, "ferry_sink_rows_set_aside_total") == 1.0),
        "{}",
        ferry.log()
    );
    assert_eq!(pg.psql("replica", "SELECT id FROM audit"), "2");
    assert!(ferry.terminate().success());
}

#[test]
fn a_refused_row_under_halt_stops_the_pipeline_naming_table_key_and_constraint() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);",
    );
    pg.psql(
        "replica",
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL CONSTRAINT v_small CHECK (v < 1000));",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "halt",
        &pg_to_pg_config(
            &pg,
            "halt",
            "[pipeline.retry]\ninitial = \"10ms\"\nmax = \"20ms\"\n\
             [pipeline.batch]\nmax_wait = \"20ms\"\n",
        ),
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO t SELECT g, CASE WHEN g = 321 THEN 5000 ELSE g END FROM generate_series(1, 500) g",
    );
    let status = ferry.wait_exit(WAIT);
    let log = ferry.log();
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("public.t key [\"321\"]")
            && log.contains("v_small")
            && log.contains("on_error = \"halt\""),
        "{log}"
    );
    // Nothing of the refused transaction landed: it is one source transaction.
    assert_eq!(pg.psql("replica", "SELECT count(*) FROM t"), "0");
}

#[test]
fn mariadb_and_sqlite_targets_set_refused_rows_aside_and_replay_them() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql(
        "CREATE DATABASE replica; CREATE TABLE replica.items (id int PRIMARY KEY, qty int NOT NULL, \
         note text NOT NULL, CONSTRAINT qty_ok CHECK (qty >= 0))",
    );
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0), note TEXT NOT NULL)",
        )
        .unwrap();
    let cfg = write_config(
        dir.path(),
        "dl2",
        &format!(
            "[pipeline]\nname = \"dl2\"\non_error = \"dead_letter\"\n\
             [pipeline.retry]\ninitial = \"10ms\"\nmax = \"20ms\"\nattempts = 2\n\
             [pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\nname = \"maria\"\ntype = \"mysql\"\nurl = \"{}\"\n\
             [[sink]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\n",
            pg.url("shop"),
            my.url("replica"),
            db.display()
        ),
    );
    let log = dir.path().join("f.log");
    let ferry = Ferry::start(&cfg, &log);
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "DO $$ BEGIN FOR b IN 0..19 LOOP
           INSERT INTO items SELECT g, CASE WHEN g IN (17, 1000, 1999) THEN -5 ELSE g % 7 END, 'n' || g
             FROM generate_series(b * 100 + 1, b * 100 + 100) g;
           COMMIT;
         END LOOP; END $$",
    );
    pg.psql(
        "shop",
        "UPDATE items SET note = 'later' WHERE id IN (999, 1000, 1001)",
    );
    let maria_letters = || {
        my.try_sql(
            "SELECT GROUP_CONCAT(CONCAT(row_key, ' ', op, ' ', code) ORDER BY id SEPARATOR ', ') \
             FROM replica.ferry_dead_letters",
        )
        .unwrap_or_default()
        .trim()
        .to_owned()
    };
    let lite_letters = || {
        sqlite_rows(
            &db,
            "SELECT group_concat(row_key || ' ' || op || ' ' || code, ', ') FROM \
             (SELECT * FROM ferry_dead_letters ORDER BY id)",
        )
        .join("")
    };
    let keys = "[\"17\"] insert, [\"1000\"] insert, [\"1999\"] insert, [\"1000\"] update";
    assert!(
        wait_until(WAIT, || {
            let (m, l) = (maria_letters(), lite_letters());
            m.starts_with("[\"17\"] insert 4025")
                && m.ends_with("[\"1000\"] update follows")
                && l.ends_with("[\"1000\"] update follows")
                && m.split(", ").count() == 4
                && l.split(", ").count() == 4
        }),
        "maria {:?} lite {:?}\n{}",
        maria_letters(),
        lite_letters(),
        ferry.log()
    );
    let strip = |s: String| {
        s.split(", ")
            .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k).to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert_eq!(strip(maria_letters()), keys);
    assert_eq!(strip(lite_letters()), keys);
    let want = "1997|2";
    let sql = "SELECT count(*), sum(CASE WHEN note = 'later' THEN 1 ELSE 0 END) FROM items";
    assert!(
        wait_until(WAIT, || my
            .try_sql(&format!("USE replica; {sql}"))
            .unwrap_or_default()
            .trim()
            .replace('\t', "|")
            == want
            && sqlite_rows(&db, sql).join("") == want),
        "{}",
        ferry.log()
    );
    let (ok, listed) = ferry_command(&["dead-letters", "list", "--json"], &cfg);
    assert!(ok, "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(8), "{listed}");
    assert!(ferry.terminate().success());

    // Fixed on both targets, then replayed: each target equals the source.
    my.sql("ALTER TABLE replica.items DROP CONSTRAINT qty_ok");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE items_fixed (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, note TEXT NOT NULL);
             INSERT INTO items_fixed SELECT * FROM items; DROP TABLE items;
             ALTER TABLE items_fixed RENAME TO items;",
        )
        .unwrap();
    let (ok, out) = ferry_command(&["dead-letters", "replay"], &cfg);
    assert!(ok, "{out}");
    assert!(out.matches("4 replayed, 0 failed").count() == 2, "{out}");
    let rows =
        "SELECT id, qty, note FROM items WHERE id IN (17, 999, 1000, 1001, 1999) ORDER BY id";
    let source = pg.psql("shop", rows);
    assert_eq!(
        my.sql(&format!("USE replica; {rows}"))
            .trim()
            .replace('\t', "|"),
        source
    );
    assert_eq!(sqlite_rows(&db, rows).join("\n"), source);
    let all = "SELECT count(*), sum(qty) FROM items";
    assert_eq!(
        my.sql(&format!("USE replica; {all}"))
            .trim()
            .replace('\t', "|"),
        pg.psql("shop", all)
    );
    assert_eq!(sqlite_rows(&db, all).join(""), pg.psql("shop", all));
    assert_eq!(maria_letters(), "NULL");
    assert_eq!(lite_letters(), "");
}

/// What an attack found: a key change's letter holds back its new key across restarts, a TRUNCATE supersedes its
/// table's letters, and a keyless table's update of a row that was set aside follows the policy instead of
/// stopping the pipeline. After the fix and a replay, every table equals the source.
#[test]
fn key_changes_truncates_and_keyless_rows_keep_the_replica_exact() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE kc (id int PRIMARY KEY, v int NOT NULL);
         CREATE TABLE tr (id int PRIMARY KEY, v int NOT NULL);
         CREATE TABLE logs (msg text, n int); ALTER TABLE logs REPLICA IDENTITY FULL;",
    );
    pg.psql(
        "replica",
        "CREATE TABLE kc (id int PRIMARY KEY, v int NOT NULL CONSTRAINT kc_ok CHECK (v >= 0));
         CREATE TABLE tr (id int PRIMARY KEY, v int NOT NULL CONSTRAINT tr_ok CHECK (v >= 0));
         CREATE TABLE logs (msg text CONSTRAINT logs_ok CHECK (msg <> 'bad'), n int);",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "kc",
        &pg_to_pg_config(
            &pg,
            "kc",
            "on_error = \"dead_letter\"\n\
             [pipeline.retry]\ninitial = \"10ms\"\nmax = \"20ms\"\nattempts = 1\n\
             [pipeline.batch]\nmax_wait = \"20ms\"\n",
        ),
    );
    let log = dir.path().join("f.log");
    let letters = || {
        pg.try_psql(
            "replica",
            "SELECT string_agg(table_name || ' ' || row_key || ' ' || op || coalesce(' -> ' || new_row_key, ''), ', ' ORDER BY id) FROM ferry_dead_letters",
        )
        .unwrap_or_default()
    };
    let ferry = Ferry::start(&cfg, &log);
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO kc VALUES (1, -1), (2, 1); UPDATE kc SET id = 101 WHERE id = 1;
         INSERT INTO tr VALUES (1, -1), (2, 2); UPDATE tr SET v = -3 WHERE id = 2;
         INSERT INTO logs VALUES ('bad', 2), ('good', 1);",
    );
    assert!(
        wait_until(WAIT, || letters().matches(", ").count() == 4),
        "{}\n{}",
        letters(),
        ferry.log()
    );
    assert!(ferry.terminate().success());
    // After a restart, later changes of the moved key still follow its letters; a TRUNCATE drops tr's letters;
    // the keyless update of the refused row is a letter too, and the pipeline goes on.
    let ferry = Ferry::start(&cfg, &log);
    pg.psql(
        "shop",
        "UPDATE kc SET v = 5 WHERE id = 101; UPDATE kc SET v = 7 WHERE id = 101;
         TRUNCATE tr; INSERT INTO tr VALUES (3, 3);
         UPDATE logs SET n = 22 WHERE msg = 'bad'; INSERT INTO logs VALUES ('later', 3);",
    );
    let want =
        "kc [\"1\"] insert, kc [\"1\"] update -> [\"101\"], logs [] insert, kc [\"101\"] update, \
                kc [\"101\"] update, logs [] update";
    assert!(
        wait_until(WAIT, || letters() == want
            && pg
                .try_psql("replica", "SELECT count(*) FROM logs")
                .unwrap_or_default()
                == "2"),
        "{}\n{}",
        letters(),
        ferry.log()
    );
    assert_eq!(
        pg.psql("replica", "SELECT id, v FROM kc ORDER BY id"),
        "2|1"
    );
    assert_eq!(
        pg.psql("replica", "SELECT id, v FROM tr ORDER BY id"),
        "3|3"
    );
    assert!(ferry.terminate().success());

    pg.psql(
        "replica",
        "ALTER TABLE kc DROP CONSTRAINT kc_ok; ALTER TABLE tr DROP CONSTRAINT tr_ok; ALTER TABLE logs DROP CONSTRAINT logs_ok",
    );
    let (ok, out) = ferry_command(&["dead-letters", "replay"], &cfg);
    assert!(ok, "{out}");
    assert_eq!(letters(), "");
    for table in ["kc", "tr", "logs"] {
        let sql = format!("SELECT string_agg(t::text, ',' ORDER BY t::text) FROM {table} t");
        assert_eq!(
            pg.psql("replica", &sql),
            pg.psql("shop", &sql),
            "{table}\n{out}"
        );
    }
}

/// A transform that fails on some rows under `on_error = "dead_letter"`: each such row goes, as the source read
/// it, into every sink's dead letters with the batch; a later change of its key follows it there; once the stage
/// is fixed, replay runs the letters through the transforms and applies them, in order.
#[test]
fn rows_a_transform_fails_on_become_dead_letters_and_replay_runs_them_through_the_fixed_transform()
{
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, total int NOT NULL, qty int NOT NULL)",
    );
    let dir = scratch();
    let sqlite = dir.path().join("replica.db");
    let config = |expression: &str| {
        write_config(
            dir.path(),
            "tdl",
            &format!(
                "[pipeline]\nname = \"tdl\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
                 [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
                 [[transform]]\ntype = \"compute\"\ncolumn = \"unit\"\ncolumn_type = \"bigint\"\n\
                 expression = \"{expression}\"\non_error = \"dead_letter\"\n\
                 [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n[[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n",
                pg.url("shop"),
                pg.url("replica"),
                sqlite.display()
            ),
        )
    };
    // Integer division by zero is an error in CEL: rows with qty = 0 fail.
    let cfg = config("after.total / after.qty");
    let log = dir.path().join("f.log");
    let ferry = Ferry::start(&cfg, &log);
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO orders SELECT g, g * 10, CASE WHEN g IN (7, 42) THEN 0 ELSE 2 END FROM generate_series(1, 100) g;
         UPDATE orders SET total = total + 1 WHERE id IN (7, 8);",
    );
    let rows = "SELECT id, total, qty, unit FROM orders ORDER BY id";
    let want_without = pg.psql(
        "shop",
        "SELECT id, total, qty, total / qty FROM orders WHERE id NOT IN (7, 42) ORDER BY id",
    );
    let sqlite_text = |sql: &str| sqlite_rows(&sqlite, sql).join("\n");
    assert!(
        wait_until(WAIT, || pg.try_psql("replica", rows).ok().as_deref()
            == Some(&want_without)
            && sqlite_text(rows) == want_without),
        "{}",
        ferry.log()
    );
    // Three letters in each sink: 7's insert and 42's (failed), and 7's update (follows).
    let letters =
        "SELECT table_schema || '.' || table_name, row_key, op, code FROM ferry_dead_letters ORDER BY id";
    let want_letters = "public.orders|[\"7\"]|insert|transform\n\
                        public.orders|[\"42\"]|insert|transform\n\
                        public.orders|[\"7\"]|update|transform_follows";
    assert!(
        wait_until(WAIT, || pg.try_psql("replica", letters).ok().as_deref()
            == Some(want_letters)),
        "{}\n{}",
        pg.try_psql("replica", letters).unwrap_or_else(|e| e),
        ferry.log()
    );
    assert_eq!(sqlite_text(letters), want_letters);
    let (ok, out) = ferry_command(&["dead-letters", "list"], &cfg);
    assert!(
        ok && out.contains("transform[0]") && out.contains("follows"),
        "{out}"
    );
    // Replay with the stage unchanged: the letters stay.
    assert_eq!(ferry.terminate().code(), Some(0));
    let (ok, out) = ferry_command(&["dead-letters", "replay"], &cfg);
    assert!(!ok && out.contains("the transforms still fail"), "{out}");
    assert_eq!(
        pg.psql("replica", "SELECT count(*) FROM ferry_dead_letters"),
        "3"
    );

    // Fixed: replay runs the letters through the new expression, in order (7's update after its insert).
    let cfg = config("after.qty == 0 ? 0 : after.total / after.qty");
    let (ok, out) = ferry_command(&["dead-letters", "replay"], &cfg);
    assert!(ok, "{out}");
    let want = pg.psql(
        "shop",
        "SELECT id, total, qty, CASE WHEN qty = 0 THEN 0 ELSE total / qty END FROM orders ORDER BY id",
    );
    assert_eq!(pg.psql("replica", rows), want);
    assert_eq!(sqlite_text(rows), want);
    assert_eq!(
        pg.psql("replica", "SELECT count(*) FROM ferry_dead_letters"),
        "0"
    );
    // The pipeline goes on from its checkpoint with the fixed stage; 7 is no longer held back.
    let ferry = Ferry::start(&cfg, &log);
    ferry.wait_streaming();
    pg.psql("shop", "UPDATE orders SET qty = 0 WHERE id IN (7, 9)");
    let want = pg.psql(
        "shop",
        "SELECT id, total, qty, CASE WHEN qty = 0 THEN 0 ELSE total / qty END FROM orders ORDER BY id",
    );
    assert!(
        wait_until(WAIT, || pg.try_psql("replica", rows).ok().as_deref()
            == Some(&want)
            && sqlite_text(rows) == want),
        "{}",
        ferry.log()
    );
}

/// Transform letters of a routed table are filed under the name the sinks see, so a TRUNCATE of the source table
/// drops them (a replay would otherwise bring truncated rows back); a keyless table's letter holds back no other
/// row (it has no key to follow); a transaction that alone sets aside more than `max_dead_letters` stops the
/// pipeline with the fix, rather than pausing forever with nothing to replay.
#[test]
fn transform_letters_follow_routes_and_keys_and_an_oversized_transaction_stops_loudly() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, total int NOT NULL, qty int NOT NULL);
         CREATE TABLE logs (msg text, total int, qty int); ALTER TABLE logs REPLICA IDENTITY FULL;",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "trl",
        &format!(
            "[pipeline]\nname = \"trl\"\nmax_dead_letters = 5\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[transform]]\ntype = \"compute\"\ntables = [\"public.orders\", \"public.logs\"]\ncolumn = \"unit\"\n\
             column_type = \"bigint\"\nexpression = \"after.total / after.qty\"\non_error = \"dead_letter\"\n\
             [[transform]]\ntype = \"route\"\ntables = [\"public.orders\"]\nto = \"public.orders_v2\"\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            pg.url("shop"),
            pg.url("replica")
        ),
    );
    let log = dir.path().join("f.log");
    let mut ferry = Ferry::start(&cfg, &log);
    ferry.wait_streaming();
    let letters = || {
        pg.try_psql(
            "replica",
            "SELECT string_agg(table_name || ' ' || row_key || ' ' || op || ' ' || code, ', ' ORDER BY id) FROM ferry_dead_letters",
        )
        .unwrap_or_default()
    };
    // Integer division by zero fails in CEL: order 3 and the log line 'a' become letters.
    pg.psql(
        "shop",
        "INSERT INTO orders SELECT g, g * 10, CASE WHEN g = 3 THEN 0 ELSE 2 END FROM generate_series(1, 10) g;
         INSERT INTO logs VALUES ('a', 10, 0), ('b', 10, 1);",
    );
    // The keyless table's later changes do not follow 'a' into the queue.
    pg.psql(
        "shop",
        "UPDATE logs SET qty = 2 WHERE msg = 'b'; INSERT INTO logs VALUES ('c', 10, 5);",
    );
    let logs = "SELECT msg, total, qty, unit FROM logs ORDER BY msg";
    assert!(
        wait_until(WAIT, || pg.try_psql("replica", logs).ok().as_deref()
            == Some("b|10|2|5\nc|10|5|2")),
        "{}\n{}",
        pg.try_psql("replica", logs).unwrap_or_else(|e| e),
        ferry.log()
    );
    assert_eq!(
        letters(),
        "orders_v2 [\"3\"] insert transform, logs [] insert transform"
    );
    // TRUNCATE of the routed table drops its letters with its rows.
    pg.psql(
        "shop",
        "TRUNCATE orders; INSERT INTO orders VALUES (20, 40, 2);",
    );
    assert!(
        wait_until(WAIT, || pg
            .try_psql("replica", "SELECT id, unit FROM orders_v2 ORDER BY id")
            .ok()
            .as_deref()
            == Some("20|20")),
        "{}",
        ferry.log()
    );
    assert_eq!(letters(), "logs [] insert transform");

    // One transaction with more refused rows than the cap allows: a fatal error naming the setting.
    pg.psql(
        "shop",
        "INSERT INTO orders SELECT g, g, 0 FROM generate_series(100, 109) g",
    );
    let status = ferry.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}\n{}",
        ferry.log()
    );
    assert!(
        ferry.log().contains(
            "one source transaction alone sets aside 10 changes, more than max_dead_letters (5)"
        ),
        "{}",
        ferry.log()
    );
    assert_eq!(letters(), "logs [] insert transform");
    assert_eq!(pg.psql("replica", "SELECT count(*) FROM orders_v2"), "1");
}
