//! awkward keys (composite text with special characters, typed keys needing casts, quoted names).

use crate::common::*;
use crate::support::*;

/// Damages the PG replica and SQLite tables (by SQL run on both), so a finished re-copy must repair them. Waits
/// first until SQLite holds the table (the PostgreSQL target may be ahead of it).
fn damage(pg: &PgServer, s: &Setup, pg_sql: &str, lite_sql: &str) {
    let table = lite_sql
        .split_whitespace()
        .nth(2)
        .expect("DELETE FROM <table> …");
    let count = format!("SELECT count(*) FROM {table}");
    let expected = pg.psql("shop", &count);
    assert!(
        wait_until(std::time::Duration::from_secs(60), || sqlite_rows(
            &s.db, &count
        ) == [
            expected.clone()
        ]),
        "sqlite did not catch up before the damage"
    );
    pg.psql("replica", pg_sql);
    rusqlite::Connection::open(&s.db)
        .unwrap()
        .execute_batch(lite_sql)
        .unwrap();
}

#[test]
fn composite_text_key_with_special_characters_under_writes() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        r#"CREATE TABLE kt (a text COLLATE "C", b text, n int, v text, PRIMARY KEY (a, b, n));
           INSERT INTO kt SELECT
             (ARRAY[E'x\ty', E'back\\slash', E'new\nline', 'quote''s', 'Ünïcødé', 'UPPER', 'lower', E'trail\\',
                    'ends with space ', '', 'a"b', E'cr\r', E'\\N', E'\\.', 'NULL', '😀'])[g % 16 + 1],
             chr(65 + g % 50) || (g % 7)::text || CASE WHEN g % 3 = 0 THEN E'\t' ELSE 'é' END,
             g / 97, 'v' || g
           FROM generate_series(1, 9000) g;"#,
    );
    let s = setup(&pg, "k1", "[pipeline.batch]\nmax_wait = \"20ms\"", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    let count = "SELECT count(*) FROM kt";
    wait_same(&pg, count, &ferry);
    damage(
        &pg,
        &s,
        "DELETE FROM kt WHERE n % 5 = 1; UPDATE kt SET v = 'WRONG' WHERE n % 5 = 2; INSERT INTO kt VALUES ('zz', 'zz', 1, 'extra');",
        "DELETE FROM kt WHERE n % 5 = 1; UPDATE kt SET v = 'WRONG' WHERE n % 5 = 2; INSERT INTO kt VALUES ('zz', 'zz', 1, 'extra');",
    );
    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        let n = (seq * 13 + w as i32 * 31) % 92;
        let sql = match seq % 4 {
            0 => format!("UPDATE kt SET v = 'u{seq}' WHERE n = {n}"),
            1 => format!("UPDATE kt SET b = b || 'm' WHERE n = {n} AND a = E'back\\\\slash'"),
            2 => format!("DELETE FROM kt WHERE n = {n} AND a = E'new\\nline'"),
            _ => format!(
                "INSERT INTO kt VALUES (E'ins\\t{w}', E'\\\\{seq}', {n}, 'i') ON CONFLICT DO NOTHING"
            ),
        };
        psql_ok(port, "shop", &sql)
    });
    let (ok, out) = request(&s.cfg, "kt");
    assert!(ok, "{out}");
    let r = wait_finished(&pg, &mut ferry, 2);
    writers.stop();
    r.unwrap();
    let rows = "SELECT a || '|' || b || '|' || n || '|' || v FROM kt ORDER BY a, b, n";
    compare(&pg, &s, &ferry, rows, None).unwrap();
    let lite = "SELECT count(*), sum(n), sum(length(a)), sum(length(b)), sum(length(v)) FROM kt";
    let src = pg.psql("shop", "SELECT count(*) || '|' || sum(n) || '|' || sum(length(a)) || '|' || sum(length(b)) || '|' || sum(length(v)) FROM kt");
    let ok = wait_until(WAIT, || sqlite_rows(&s.db, lite).join("") == src);
    assert!(
        ok,
        "sqlite: {:?} vs {src}\n{}",
        sqlite_rows(&s.db, lite),
        log_excerpt(&ferry.log())
    );
}

#[test]
fn typed_composite_key_needing_casts() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        r#"CREATE SCHEMA "Other Schema";
           CREATE TYPE "Other Schema"."Mood" AS ENUM ('sad', 'ok', 'happy');
           CREATE DOMAIN posint AS int CHECK (VALUE > 0);
           CREATE TABLE ty (m "Other Schema"."Mood", d posint, vc varchar(20), u uuid, ts timestamptz(3),
                            nu numeric(12,3), dt date, f float8, iv interval, by bytea, bo bool, payload text,
                            PRIMARY KEY (m, d, vc, u, ts, nu, dt, f, iv, by, bo));
           INSERT INTO ty SELECT
             (ARRAY['sad','ok','happy']::"Other Schema"."Mood"[])[g % 3 + 1], g % 4 + 1, 'v' || (g % 11),
             md5((g % 13)::text)::uuid, timestamptz '2024-03-31 01:30:00.123+00' + (g % 17) * interval '1 hour 1 ms',
             (g % 19) / 7.0, date '1999-12-31' + g % 23, (g % 29) / 3.0, (g % 31) * interval '1 day 3 sec',
             decode(lpad(to_hex(g % 37), 2, '0'), 'hex'), g % 2 = 0, 'p' || g
           FROM generate_series(1, 6000) g;"#,
    );
    let s = setup(&pg, "k2", "[pipeline.batch]\nmax_wait = \"20ms\"", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM ty", &ferry);
    pg.psql("replica", "DELETE FROM ty WHERE d = 2");
    let port = pg.port;
    let writers = Writers::start(1, move |_, seq| {
        let sql = match seq % 3 {
            0 => format!(
                "UPDATE ty SET payload = 'u{seq}' WHERE payload = 'p{}'",
                seq * 37 % 6000
            ),
            1 => format!(
                "UPDATE ty SET ts = ts + interval '1 us' WHERE payload = 'p{}'",
                seq * 41 % 6000
            ),
            _ => format!("DELETE FROM ty WHERE payload = 'p{}'", seq * 43 % 6000),
        };
        psql_ok(port, "shop", &sql)
    });
    let (ok, out) = request(&s.cfg, "public.ty");
    assert!(ok, "{out}");
    let r = wait_finished(&pg, &mut ferry, 2);
    writers.stop();
    r.unwrap();
    let rows = "SELECT ty::text FROM ty ORDER BY payload";
    compare(&pg, &s, &ferry, rows, None).unwrap();
    let src = pg.psql("shop", "SELECT count(*) FROM ty");
    assert!(wait_until(WAIT, || sqlite_rows(
        &s.db,
        "SELECT count(*) FROM ty"
    )
    .join("")
        == src));
}

#[test]
fn quoted_schema_table_and_column_names() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        r#"CREATE SCHEMA "Sales Dept";
           CREATE TABLE "Sales Dept"."Order Items" ("Item ID" int, "Line ""No""" text, "Value" int,
                                                   PRIMARY KEY ("Item ID", "Line ""No"""));
           INSERT INTO "Sales Dept"."Order Items" SELECT g / 3, 'L' || g % 3, g FROM generate_series(1, 5000) g;"#,
    );
    let s = setup(&pg, "k3", "[pipeline.batch]\nmax_wait = \"20ms\"", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    let q = r#"SELECT count(*), sum("Value") FROM "Sales Dept"."Order Items""#;
    wait_same(&pg, q, &ferry);
    pg.psql(
        "replica",
        r#"UPDATE "Sales Dept"."Order Items" SET "Value" = -1 WHERE "Item ID" % 2 = 0"#,
    );
    // The quoted spelling works as in SQL; the plain one too.
    let (ok, out) = request(&s.cfg, r#""Sales Dept"."Order Items""#);
    assert!(ok, "{out}");
    let (ok, out) = request(&s.cfg, "Sales Dept.Order Items");
    assert!(ok, "{out}");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        r#"SELECT "Item ID" || '|' || "Line ""No""" || '|' || "Value" FROM "Sales Dept"."Order Items" ORDER BY 1"#,
        None,
    )
    .unwrap();
}

#[test]
fn empty_table_with_extra_target_rows() {
    let pg = server_with_dbs();
    pg.psql("shop", "CREATE TABLE e (id int PRIMARY KEY, v text);");
    let s = setup(&pg, "k4", "", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    pg.psql("shop", "INSERT INTO e VALUES (1, 'a'); DELETE FROM e;");
    assert!(wait_until(WAIT, || pg
        .try_psql("replica", "SELECT count(*) FROM e")
        .ok()
        .as_deref()
        == Some("0")));
    damage(
        &pg,
        &s,
        "INSERT INTO e VALUES (7, 'extra')",
        "INSERT INTO e VALUES (7, 'extra')",
    );
    let (ok, out) = request(&s.cfg, "e");
    assert!(ok, "{out}");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT count(*) FROM e",
        Some("SELECT count(*) FROM e"),
    )
    .unwrap();
}
