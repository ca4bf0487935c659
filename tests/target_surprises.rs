//! Surprises on the target are errors, never losses: a MariaDB target table with a unique index of its own that a
//! source row collides with stops the pipeline naming the table, the row and the index, and no other row is
//! deleted or changed (REPLACE and ON DUPLICATE KEY UPDATE would have done either, silently).

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_target_only_unique_index_is_an_error_naming_table_row_and_index_never_a_lost_row() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE u (id int PRIMARY KEY, c text, n int);
         INSERT INTO u SELECT g, 'c' || g, g FROM generate_series(1, 100) g;",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "ux",
        &format!(
            "[pipeline]\nname = \"ux\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n[source]\ntype = \"postgres\"\n\
             url = \"{}\"\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            pg.url("shop"),
            my.url("replica")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    let count = || {
        my.try_sql("SELECT count(*) FROM replica.u")
            .unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || count().trim() == "100"),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
    // The operator's own unique index on the replica.
    my.sql("CREATE UNIQUE INDEX u_c ON replica.u (c(20))");
    let ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    ferry.wait_streaming();
    // Ordinary changes still flow, by key.
    pg.psql(
        "shop",
        "UPDATE u SET n = -1 WHERE id <= 50; INSERT INTO u SELECT g, 'c' || g, g FROM generate_series(101, 160) g;",
    );
    assert!(
        wait_until(WAIT, || count().trim() == "160"
            && my.sql("SELECT count(*) FROM replica.u WHERE n = -1").trim()
                == "50"),
        "{}",
        ferry.log()
    );
    // A batch of new rows, one of which collides with row 7 on the target's index (not on the source).
    pg.psql(
        "shop",
        "INSERT INTO u SELECT g, CASE WHEN g = 230 THEN 'c7' ELSE 'c' || g END, g FROM generate_series(200, 260) g;",
    );
    let mut ferry = ferry;
    let stopped = ferry.wait_exit(WAIT);
    let log = ferry.log();
    assert!(stopped.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("table public.u, row (id) = (230)") && log.contains("u_c"),
        "{log}"
    );
    // Row 7 is untouched, nothing was deleted.
    assert_eq!(
        my.sql("SELECT id, c, n FROM replica.u WHERE c = 'c7'")
            .trim(),
        "7\tc7\t-1"
    );
    assert!(
        my.sql("SELECT count(*) FROM replica.u")
            .trim()
            .parse::<u32>()
            .unwrap()
            >= 160
    );
}

#[test]
fn a_target_table_dropped_by_hand_is_quarantined_then_copied_anew() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE d (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY);
         INSERT INTO d SELECT g, 'v' || g FROM generate_series(1, 50) g;",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "dd",
        &format!(
            "{}\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            fan_out_config(&pg, "dd", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
            my.url("replica")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    let counts = |sql: &str| {
        (
            pg.try_psql("replica", sql).unwrap_or_default(),
            sqlite_rows(&db, sql).join(""),
            my.try_sql(&format!("USE replica; {sql}"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
        )
    };
    let all = |n: &str| (n.to_owned(), n.to_owned(), n.to_owned());
    assert!(
        wait_until(WAIT, || counts("SELECT count(*) FROM d") == all("50")),
        "{}",
        ferry.log()
    );
    // Dropped by hand on every target while streaming; the source goes on.
    pg.psql("replica", "DROP TABLE d");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE d")
        .unwrap();
    my.sql("DROP TABLE replica.d");
    pg.psql(
        "shop",
        "INSERT INTO d VALUES (51, 'v51'); UPDATE d SET v = 'changed' WHERE id = 1; INSERT INTO other VALUES (1);",
    );
    // Not recreated with only the later changes: quarantined, loudly, and the other tables go on.
    assert!(
        wait_until(WAIT, || counts("SELECT count(*) FROM other") == all("1")),
        "{}",
        ferry.log()
    );
    assert!(
        wait_until(WAIT, || ferry
            .log()
            .matches("dropped outside Ferry")
            .count()
            >= 3),
        "{}",
        ferry.log()
    );
    assert_eq!(counts("SELECT count(*) FROM d"), all("0"));
    // A re-copy restores it and ends the quarantine.
    let out = std::process::Command::new(ferry_bin())
        .args(["snapshot", "--table", "d", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sql = "SELECT count(*), sum(id), max(CASE WHEN id = 1 THEN v END) FROM d";
    let expected = pg.psql("shop", sql);
    assert!(
        wait_until(WAIT, || {
            let (a, b, c) = counts(sql);
            a == expected && b == expected && c.replace('\t', "|") == expected
        }),
        "{:?} vs {expected}\n{}",
        counts(sql),
        ferry.log()
    );
    pg.psql("shop", "INSERT INTO d VALUES (52, 'after')");
    assert!(
        wait_until(WAIT, || counts("SELECT count(*) FROM d") == all("52")),
        "{}",
        ferry.log()
    );
}

#[test]
fn a_listed_source_table_dropped_and_created_again_is_followed_and_copied_anew() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE d (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY);
         INSERT INTO d SELECT g, 'old' || g FROM generate_series(1, 20) g;",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "dl",
        &fan_out_config(&pg, "dl", "[pipeline.batch]\nmax_wait = \"20ms\"", &db).replace(
            "[source]\ntype = \"postgres\"\n",
            "[source]\ntype = \"postgres\"\ntables = [\"d\", \"other\"]\n",
        ),
    );
    let rows = "SELECT id, v FROM d ORDER BY id";
    let same = |ferry: &Ferry| {
        let expected = pg.psql("shop", rows);
        let ok = wait_until(WAIT, || {
            pg.try_psql("replica", rows).ok().as_deref() == Some(expected.as_str())
                && sqlite_rows(&db, rows).join("\n") == expected
        });
        assert!(
            ok,
            "expected\n{expected}\n--- target\n{}\n--- log\n{}",
            pg.try_psql("replica", rows).unwrap_or_default(),
            ferry.log()
        );
    };
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    same(&ferry);
    // While streaming: the new table's first rows are written before anyone could add it to the publication.
    pg.psql(
        "shop",
        "DROP TABLE d; CREATE TABLE d (id int PRIMARY KEY, v text);
         INSERT INTO d SELECT g, 'new' || g FROM generate_series(5, 12) g;",
    );
    same(&ferry);
    pg.psql("shop", "UPDATE d SET v = 'streamed' WHERE id = 5");
    same(&ferry);
    assert!(
        ferry.log().contains("left the publication"),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());

    // While Ferry is stopped.
    pg.psql(
        "shop",
        "DROP TABLE d; CREATE TABLE d (id int PRIMARY KEY, v text);
         INSERT INTO d SELECT g, 'offline' || g FROM generate_series(100, 104) g;",
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    ferry.wait_streaming();
    same(&ferry);
}

#[test]
fn a_target_only_not_null_column_without_default_is_reported_at_start() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1);",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(
        dir.path(),
        "nn",
        &format!(
            "{}\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            fan_out_config(&pg, "nn", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
            my.url("replica")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    assert!(
        wait_until(WAIT, || my
            .try_sql("SELECT count(*) FROM replica.a")
            .is_ok_and(|c| c.trim() == "1")),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
    // An operator's audit column with a default is fine; one without a default cannot be written.
    pg.psql(
        "replica",
        "ALTER TABLE a ADD COLUMN noted text NOT NULL DEFAULT 'ok'",
    );
    my.sql("ALTER TABLE replica.a ADD COLUMN audit_by varchar(20) NOT NULL");
    pg.psql("shop", "INSERT INTO a VALUES (2)");
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    let stopped = ferry.wait_exit(WAIT);
    let log = ferry.log();
    assert!(stopped.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("has column(s) audit_by that the source table does not have, NOT NULL and without a default"),
        "{log}"
    );
    assert!(!log.contains("column(s) noted"), "{log}");
}

/// A MariaDB target table made by hand with a case-insensitive key (MariaDB's default collation) would fold two
/// PostgreSQL rows whose keys differ only in case into one target row: Ferry refuses it at the start, naming the
/// table, the column, the collation and the fix, and writes nothing into it.
#[test]
fn a_case_insensitive_target_key_is_refused_before_rows_merge() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE tags (name text PRIMARY KEY, n int);
         INSERT INTO tags VALUES ('Rust', 1), ('rust', 2), ('RÜST', 3);",
    );
    my.sql(
        "CREATE TABLE replica.tags (name varchar(100) COLLATE utf8mb4_general_ci PRIMARY KEY, n int) \
         CHARACTER SET utf8mb4",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "ci",
        &format!(
            "[pipeline]\nname = \"ci\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            pg.url("shop"),
            my.url("replica")
        ),
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    let stopped = ferry.wait_exit(WAIT);
    let log = ferry.log();
    assert!(stopped.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("key column name has collation utf8mb4_general_ci")
            && log.contains("COLLATE utf8mb4_nopad_bin"),
        "{log}"
    );
    assert_eq!(my.sql("SELECT count(*) FROM replica.tags").trim(), "0");
    // Case- and accent-sensitive is not enough: Unicode collations make NFC and NFD forms one key.
    my.sql(
        "ALTER TABLE replica.tags MODIFY name varchar(100) COLLATE utf8mb4_uca1400_as_cs NOT NULL",
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f1.log"));
    let stopped = ferry.wait_exit(WAIT);
    assert!(stopped.is_some_and(|s| !s.success()), "{}", ferry.log());
    assert!(
        ferry.log().contains("utf8mb4_uca1400_as_cs"),
        "{}",
        ferry.log()
    );
    // With a binary key the three rows stay three.
    my.sql("ALTER TABLE replica.tags MODIFY name varchar(100) COLLATE utf8mb4_nopad_bin NOT NULL");
    let ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    assert!(
        wait_until(WAIT, || my
            .try_sql("SELECT count(*) FROM replica.tags")
            .is_ok_and(|c| c.trim() == "3")),
        "{}",
        ferry.log()
    );
}

/// The first source transaction after a restart meets each of its tables anew (PostgreSQL sends their relations
/// again). A MariaDB sink used to commit what it had written before preparing each next table, so a transaction
/// that then failed was partly durable without its checkpoint, and applying it again duplicated its rows. Here the
/// transaction's last row fails on a target-side CHECK; once the CHECK is gone the transaction lands once.
#[test]
fn a_transaction_that_fails_midway_in_mariadb_is_applied_once_when_resumed() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE notes (msg text);
         CREATE TABLE b (id int PRIMARY KEY, v int);
         CREATE TABLE c (id int PRIMARY KEY, v text);",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "mid",
        &format!(
            "[pipeline]\nname = \"mid\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n[source]\ntype = \"postgres\"\n\
             url = \"{}\"\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            pg.url("shop"),
            my.url("replica")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    pg.psql("shop", "INSERT INTO notes VALUES ('first')");
    assert!(
        wait_until(WAIT, || my
            .try_sql("SELECT count(*) FROM replica.notes")
            .is_ok_and(|c| c.trim() == "1")),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
    my.sql("ALTER TABLE replica.c ADD CONSTRAINT no_bad CHECK (v <> 'bad')");
    pg.psql(
        "shop",
        "BEGIN; INSERT INTO notes VALUES ('once'); INSERT INTO b VALUES (1, 1); INSERT INTO c VALUES (1, 'bad'); COMMIT;",
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    let stopped = ferry.wait_exit(WAIT);
    assert!(stopped.is_some_and(|s| !s.success()), "{}", ferry.log());
    assert!(ferry.log().contains("no_bad"), "{}", ferry.log());
    // Nothing of the failed transaction is in the target.
    assert_eq!(
        my.sql("SELECT (SELECT count(*) FROM replica.notes), (SELECT count(*) FROM replica.b)")
            .trim(),
        "1\t0"
    );
    my.sql("ALTER TABLE replica.c DROP CONSTRAINT no_bad");
    let ferry = Ferry::start(&cfg, &dir.path().join("f3.log"));
    assert!(
        wait_until(WAIT, || my
            .try_sql("SELECT count(*) FROM replica.c")
            .is_ok_and(|c| c.trim() == "1")),
        "{}",
        ferry.log()
    );
    assert_eq!(
        my.sql("SELECT msg FROM replica.notes ORDER BY msg").trim(),
        "first\nonce"
    );
    // A table created in the middle of a transaction that wrote rows before it: MySQL's CREATE TABLE commits
    // implicitly, so the sink creates it on a second connection and the transaction stays whole.
    pg.psql(
        "shop",
        "BEGIN; INSERT INTO notes VALUES ('twice?'); CREATE TABLE d (id int PRIMARY KEY, v text); \
         INSERT INTO d VALUES (1, 'new'); INSERT INTO notes VALUES ('after'); COMMIT;",
    );
    assert!(
        wait_until(WAIT, || my
            .try_sql("SELECT count(*) FROM replica.notes")
            .is_ok_and(|c| c.trim() == "4")),
        "{}",
        ferry.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        my.sql("SELECT msg FROM replica.notes ORDER BY msg").trim(),
        "after\nfirst\nonce\ntwice?"
    );
    assert_eq!(my.sql("SELECT id, v FROM replica.d").trim(), "1\tnew");
    assert!(
        ferry.log().contains("step=CreateTable") && !ferry.log().contains("without the checkpoint"),
        "{}",
        ferry.log()
    );
    // An ALTER of a table the transaction has not written yet, in its middle, then a failure: nothing of it
    // may be durable, and once resumed it lands once, the column added.
    my.sql("ALTER TABLE replica.c ADD CONSTRAINT no_worse CHECK (v <> 'worse')");
    pg.psql(
        "shop",
        "BEGIN; INSERT INTO notes VALUES ('altered'); ALTER TABLE b ADD COLUMN w int DEFAULT 7; \
         INSERT INTO b VALUES (2, 2, 8); INSERT INTO c VALUES (2, 'worse'); COMMIT;",
    );
    let mut ferry = ferry;
    let stopped = ferry.wait_exit(WAIT);
    assert!(stopped.is_some_and(|s| !s.success()), "{}", ferry.log());
    assert_eq!(
        my.sql("SELECT count(*) FROM replica.notes WHERE msg = 'altered'")
            .trim(),
        "0"
    );
    my.sql("ALTER TABLE replica.c DROP CONSTRAINT no_worse");
    let ferry = Ferry::start(&cfg, &dir.path().join("f4.log"));
    assert!(
        wait_until(WAIT, || my
            .try_sql("SELECT count(*) FROM replica.c")
            .is_ok_and(|c| c.trim() == "2")),
        "{}",
        ferry.log()
    );
    assert_eq!(
        my.sql("SELECT count(*) FROM replica.notes WHERE msg = 'altered'")
            .trim(),
        "1"
    );
    assert_eq!(
        my.sql("SELECT id, v, w FROM replica.b ORDER BY id").trim(),
        "1\t1\t7\n2\t2\t8"
    );
}

/// The target's `ferry_checkpoints` altered by hand so that the position is no longer text: the restart is a fatal
/// error naming the table and the fix, never a panic, and nothing more is applied.
#[test]
fn an_altered_checkpoint_table_is_an_error_naming_it_never_a_panic() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1);",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "ckpt",
        &pg_to_pg_config(&pg, "ckpt", "[pipeline.batch]\nmax_wait = \"20ms\"\n"),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    assert!(
        wait_until(WAIT, || pg
            .try_psql("replica", "SELECT count(*) FROM a")
            .ok()
            .as_deref()
            == Some("1")),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
    pg.psql(
        "replica",
        "ALTER TABLE ferry_checkpoints ALTER COLUMN position TYPE int USING 0",
    );
    pg.psql("shop", "INSERT INTO a VALUES (2)");
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    let stopped = ferry.wait_exit(WAIT);
    let log = ferry.log();
    assert!(stopped.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("ferry_checkpoints.position in the target is not text")
            && !log.contains("panicked"),
        "{log}"
    );
    assert_eq!(pg.psql("replica", "SELECT count(*) FROM a"), "1");
}
