//! Row images the target must reproduce exactly (PostgreSQL source; PostgreSQL, SQLite and MariaDB targets): an
//! unchanged TOAST value when the key changes, REPLICA IDENTITY FULL with an unchanged TOAST value, and
//! REPLICA IDENTITY USING INDEX on a unique index other than the primary key.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn config(pg: &PgServer, my: &MariaDbServer, name: &str, sqlite: &std::path::Path) -> String {
    format!(
        "{}\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
        fan_out_config(pg, name, "[pipeline.batch]\nmax_wait = \"20ms\"", sqlite),
        my.url("replica")
    )
}

/// Waits until `pg_sql` gives `expected` on the source and the PostgreSQL target, `sqlite_sql` on SQLite and
/// `my_sql` on MariaDB (rows joined by newlines, columns by `|`).
fn wait_all(
    pg: &PgServer,
    my: &MariaDbServer,
    db: &std::path::Path,
    ferry: &Ferry,
    (pg_sql, sqlite_sql, my_sql): (&str, &str, &str),
    expected: &str,
) {
    assert_eq!(pg.psql("shop", pg_sql), expected, "source: {pg_sql}");
    let mariadb = || {
        my.try_sql(&format!("USE replica; {my_sql}"))
            .map(|s| s.replace('\t', "|"))
    };
    let ok = wait_until(WAIT, || {
        pg.try_psql("replica", pg_sql).ok().as_deref() == Some(expected)
            && sqlite_rows(db, sqlite_sql).join("\n") == expected
            && mariadb().ok().as_deref() == Some(expected)
    });
    assert!(
        ok,
        "expected\n{expected}\n--- postgres target\n{}\n--- sqlite\n{}\n--- mariadb\n{:?}\n--- log\n{}",
        pg.try_psql("replica", pg_sql).unwrap_or_else(|e| e),
        sqlite_rows(db, sqlite_sql).join("\n"),
        mariadb(),
        ferry.log()
    );
}

#[test]
fn key_changes_toast_and_identity_indexes_reach_every_sql_target_exactly() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
         ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
         CREATE TABLE notes (tag text, body text);
         ALTER TABLE notes REPLICA IDENTITY FULL;
         ALTER TABLE notes ALTER body SET STORAGE EXTERNAL;
         CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL UNIQUE, label text);
         ALTER TABLE items REPLICA IDENTITY USING INDEX items_code_key;
         INSERT INTO docs VALUES (1, repeat('s', 9000), 0);
         INSERT INTO items SELECT g, 'c' || g, 'l' || g FROM generate_series(1, 6) g;",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let ferry = Ferry::start(
        &write_config(dir.path(), "images", &config(&pg, &my, "images", &db)),
        &dir.path().join("f.log"),
    );
    ferry.wait_streaming();

    // The key changes and `body` is not sent again (unchanged TOAST): the row moves with its value.
    pg.psql(
        "shop",
        "INSERT INTO docs VALUES (2, repeat('x', 9600), 0), (3, repeat('y', 9700), 0), (4, repeat('z', 9800), 0);",
    );
    pg.psql("shop", "UPDATE docs SET id = 20 WHERE id = 2");
    // A snapshot row moves too; the key and another column change together.
    pg.psql("shop", "UPDATE docs SET id = 10, n = 5 WHERE id = 1");
    // Keys that depend on each other within one transaction: 3 → 100, 4 → 3, 100 → 4 (a swap).
    pg.psql(
        "shop",
        "BEGIN; UPDATE docs SET id = 100 WHERE id = 3; UPDATE docs SET id = 3 WHERE id = 4;
         UPDATE docs SET id = 4 WHERE id = 100; COMMIT;",
    );
    let docs = "SELECT id, length(body), left(body, 1), n FROM docs ORDER BY id";
    let docs_sqlite = "SELECT id, length(body), substr(body, 1, 1), n FROM docs ORDER BY id";
    wait_all(
        &pg,
        &my,
        &db,
        &ferry,
        (docs, docs_sqlite, docs),
        "3|9800|z|0\n4|9700|y|0\n10|9000|s|5\n20|9600|x|0",
    );

    // REPLICA IDENTITY FULL, no key, unchanged TOAST `body`: the old image carries it.
    pg.psql(
        "shop",
        "INSERT INTO notes VALUES ('a', repeat('b', 9600)), ('a', repeat('b', 9600)), ('c', repeat('d', 9601));",
    );
    pg.psql("shop", "UPDATE notes SET tag = 'a2' WHERE tag = 'a'");
    pg.psql("shop", "UPDATE notes SET tag = 'c2' WHERE tag = 'c'");
    let notes = "SELECT tag, length(body), left(body, 1) FROM notes ORDER BY tag";
    let notes_sqlite = "SELECT tag, length(body), substr(body, 1, 1) FROM notes ORDER BY tag";
    wait_all(
        &pg,
        &my,
        &db,
        &ferry,
        (notes, notes_sqlite, notes),
        "a2|9600|b\na2|9600|b\nc2|9601|d",
    );

    // REPLICA IDENTITY USING INDEX on `code`: old images carry `code` only, and the key may change unseen.
    pg.psql("shop", "DELETE FROM items WHERE id = 3");
    pg.psql("shop", "UPDATE items SET id = 40 WHERE id = 4");
    pg.psql(
        "shop",
        "UPDATE items SET code = 'c5b', id = 50 WHERE id = 5",
    );
    pg.psql("shop", "UPDATE items SET label = 'L1' WHERE id = 1");
    pg.psql("shop", "DELETE FROM items WHERE code = 'c6'");
    let items = "SELECT id, code, label FROM items ORDER BY id";
    wait_all(
        &pg,
        &my,
        &db,
        &ferry,
        (items, items, items),
        "1|c1|L1\n2|c2|l2\n40|c4|l4\n50|c5b|l5",
    );
    assert!(ferry.terminate().success());
}

#[test]
fn a_moved_row_missing_from_the_target_stops_naming_table_and_key() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE docs (id int PRIMARY KEY, body text);
         ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
         INSERT INTO docs VALUES (7, repeat('x', 9600));",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let mut ferry = Ferry::start(
        &write_config(
            dir.path(),
            "gone",
            &fan_out_config(&pg, "gone", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
        ),
        &dir.path().join("f.log"),
    );
    ferry.wait_streaming();
    assert!(wait_until(WAIT, || pg
        .try_psql("replica", "SELECT count(*) FROM docs")
        .is_ok_and(|n| n == "1")));
    // Someone deletes the row from the target; the source then moves it without sending `body`.
    pg.psql("replica", "DELETE FROM docs");
    pg.psql("shop", "UPDATE docs SET id = 70 WHERE id = 7");
    let status = ferry.wait_exit(WAIT).expect("ferry should stop");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("table public.docs: no target row has (id) = (7)"),
        "{log}"
    );
}

#[test]
fn rows_are_matched_byte_for_byte_in_mariadb_whatever_the_column_collation() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    pg.psql(
        "shop",
        "CREATE TABLE codes (id int PRIMARY KEY, code text NOT NULL UNIQUE);
         ALTER TABLE codes REPLICA IDENTITY USING INDEX codes_code_key;
         INSERT INTO codes VALUES (1, 'x'), (2, 'X'), (3, 'x '), (4, 'ä'), (5, 'a');
         CREATE TABLE tags (tag text);
         ALTER TABLE tags REPLICA IDENTITY FULL;
         INSERT INTO tags VALUES ('a'), ('ä'), ('A'), ('a ');",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let ferry = Ferry::start(
        &write_config(dir.path(), "bytes", &config(&pg, &my, "bytes", &db)),
        &dir.path().join("f.log"),
    );
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "DELETE FROM codes WHERE code = 'x '; UPDATE codes SET id = 50 WHERE code = 'a';
         DELETE FROM tags WHERE tag = 'ä'; UPDATE tags SET tag = 'b' WHERE tag = 'a ';",
    );
    let codes = "SELECT id, concat('[', code, ']') FROM codes ORDER BY id";
    let codes_lite = "SELECT id, '[' || code || ']' FROM codes ORDER BY id";
    wait_all(
        &pg,
        &my,
        &db,
        &ferry,
        (codes, codes_lite, codes),
        "1|[x]\n2|[X]\n4|[ä]\n50|[a]",
    );
    let tags = "SELECT concat('[', tag, ']') FROM tags ORDER BY tag COLLATE \"C\"";
    let tags_lite = "SELECT '[' || tag || ']' FROM tags ORDER BY tag";
    let tags_my = "SELECT concat('[', tag, ']') FROM tags ORDER BY BINARY tag";
    wait_all(
        &pg,
        &my,
        &db,
        &ferry,
        (tags, tags_lite, tags_my),
        "[A]\n[a]\n[b]",
    );
    assert!(ferry.terminate().success());
}

#[test]
fn two_source_tables_for_one_target_table_stop_naming_both() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE s_t (id int PRIMARY KEY, v text); CREATE SCHEMA s; CREATE TABLE s.t (id int PRIMARY KEY, v text);
         INSERT INTO s_t VALUES (1, 'public.s_t'); INSERT INTO s.t VALUES (1, 's.t');",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let mut ferry = Ferry::start(
        &write_config(
            dir.path(),
            "clash",
            &fan_out_config(&pg, "clash", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
        ),
        &dir.path().join("f.log"),
    );
    let status = ferry.wait_exit(WAIT).expect("ferry should stop");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("would both be written to target table s_t"),
        "{log}"
    );
}
