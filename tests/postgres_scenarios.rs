//! Scenarios against real PostgreSQL: types, TOAST, DDL, truncate, failure messages.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn config(pg: &PgServer, name: &str, sqlite: &std::path::Path) -> String {
    fan_out_config(pg, name, "[pipeline.batch]\nmax_wait = \"20ms\"", sqlite)
}

const TYPES_TABLE: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE all_types (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, o oid, f4 float4, f8 float8, n numeric, n2 numeric(12,3),
  t text, vc varchar(10), bp char(5), nm name, by bytea, j json, jb jsonb, u uuid, d date, tm time, ttz timetz,
  ts timestamp, tstz timestamptz, iv interval, ip inet, cid cidr, mac macaddr, bt bit(4), vb varbit, m money,
  e mood, dm positive, ai int[], at text[], a2 int[][], rg int4range, pt point, tv tsvector);";

const TYPES_ROWS: &str = "INSERT INTO all_types VALUES
 (1, true, -32768, -2147483648, -9223372036854775808, 4294967295, 'NaN', 'Infinity', 'NaN', -123456789.123,
  'unicode ✓ \"quoted\" \\ back', 'short', 'ab', 'name', '\\x00ff10', '{\"a\": [1, 2.50]}', '{\"b\": null}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '0044-03-15 BC', '24:00:00', '04:05:06.789-08:00',
  '2024-02-29 23:59:59.999999', 'infinity', '1 year 2 mons -3 days 04:05:06.5', '192.168.0.1/24', '10.0.0.0/8',
  '08:00:2b:01:02:03', B'1010', B'10111', '$1,234.56', 'happy', 7, '{1,NULL,3}', '{\"a b\",\"c,d\",NULL,\"\\\\\"}',
  '{{1,2},{3,4}}', '[1,5)', '(1.5,2)', 'a fat cat'),
 (2, false, 32767, 2147483647, 9223372036854775807, 0, '-Infinity', 1.0000000000000002, '1e-20', 0.001,
  '', NULL, NULL, NULL, '\\x', '[]', '[]', NULL, '-infinity', '00:00:00', '00:00:00+00', '0001-01-01 00:00:00 BC',
  '2000-01-01 00:00:00.000001+05:30', '-178000000 years', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{}', '{}',
  NULL, 'empty', NULL, NULL),
 (3, NULL, NULL, NULL, NULL, NULL, 3.4028235e38, -1.7976931348623157e308, 'Infinity', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, 'infinity', NULL, NULL, 'infinity', '1970-01-01 00:00:00+00', '0 seconds', NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);";

#[test]
fn every_type_round_trips_through_snapshot_and_stream() {
    let pg = server_with_dbs();
    pg.psql("shop", TYPES_TABLE);
    pg.psql("shop", TYPES_ROWS);
    let dir = scratch();
    let db = dir.path().join("r.db");
    let ferry = Ferry::start(
        &write_config(dir.path(), "types", &config(&pg, "types", &db)),
        &dir.path().join("f.log"),
    );
    // Rows 1-3 arrive by snapshot; the same values again by streaming as rows 11-13.
    pg.psql("shop", "INSERT INTO all_types SELECT id + 10, b, i2, i4, i8, o, f4, f8, n, n2, t, vc, bp, nm, by, j, jb, u, d, tm, ttz, ts, tstz, iv, ip, cid, mac, bt, vb, m, e, dm, ai, at, a2, rg, pt, tv FROM all_types");
    // Enums and domains land as their text / base type; compare every column through its text form.
    let sql = "SELECT id, b, i2, i4, i8, o, f4, f8, n, n2, t, vc, bp, nm, by, j, jb, u, d, tm, ttz, ts, tstz, iv, ip, cid, mac, bt, vb, m, e::text, dm, ai, at, a2, rg, pt, tv FROM public.all_types ORDER BY id";
    wait_same(&pg, sql, &ferry);
    assert_eq!(
        pg.psql("replica", "SELECT count(*) FROM public.all_types"),
        "6"
    );
    // SQLite: the documented mapping.
    // The SQLite sink applies at its own pace: wait for it too.
    let sqlite = || {
        sqlite_rows(&db, "SELECT i8, f8, n2, by, d, tstz, ai, at, e, typeof(b), typeof(f4) FROM all_types WHERE id IN (1, 11) ORDER BY id")
    };
    let expected = "-9223372036854775808|inf|-123456789.123|00ff10|0044-03-15 BC|infinity|[1,null,3]|[\"a b\",\"c,d\",null,\"\\\\\"]|happy|integer|text";
    let want = vec![expected.to_owned(), expected.to_owned()];
    wait_until(WAIT, || sqlite() == want);
    assert_eq!(sqlite(), want);
    ferry.terminate();
}

/// Into PostgreSQL alone the snapshot passes the source's COPY lines through unparsed: every type, and text full of
/// COPY's own escapes (tabs, newlines, backslashes, a literal `\N`), arrives exactly; a table a transform
/// changes is still parsed and transformed; the stream goes on after.
#[test]
fn a_snapshot_into_postgres_alone_passes_copy_lines_through_exactly() {
    let pg = server_with_dbs();
    pg.psql("shop", TYPES_TABLE);
    pg.psql("shop", TYPES_ROWS);
    pg.psql(
        "shop",
        "CREATE TABLE notes (id int PRIMARY KEY, body text, raw bytea, tags text[]);
         INSERT INTO notes SELECT g, CASE g % 5 WHEN 0 THEN E'tab\\there\\nnew line \\\\ back' WHEN 1 THEN '\\N'
           WHEN 2 THEN '' WHEN 3 THEN NULL ELSE repeat('ü✓', g % 700) END,
           decode(md5(g::text), 'hex'), ARRAY['a\"b', NULL, E'c\\td']
           FROM generate_series(1, 50000) g;
         CREATE TABLE refs (id int PRIMARY KEY, rc regclass, rt regtype, rts regtype[]);
         INSERT INTO refs VALUES (1, 'notes', 'mood', '{mood,int4[]}'), (2, 'pg_class', 'int4[]', NULL);
         CREATE TABLE masked (id int PRIMARY KEY, secret text);
         INSERT INTO masked SELECT g, 's' || g FROM generate_series(1, 100) g;",
    );
    let dir = scratch();
    let log = dir.path().join("f.log");
    let config = format!(
        "{}\n[[transform]]\ntype = \"mask\"\ncolumns = [\"public.masked.secret\"]\nwith = \"null\"\n",
        pg_to_pg_config(&pg, "rawcopy", "[pipeline.batch]\nmax_wait = \"20ms\"")
    );
    let ferry = Ferry::start(&write_config(dir.path(), "rawcopy", &config), &log);
    let types = "SELECT id, b, i2, i4, i8, o, f4, f8, n, n2, t, vc, bp, nm, by, j, jb, u, d, tm, ttz, ts, tstz, iv, ip, cid, mac, bt, vb, m, e::text, dm, ai, at, a2, rg, pt, tv FROM public.all_types ORDER BY id";
    wait_same(&pg, types, &ferry);
    let notes = "SELECT id, body, body IS NULL, raw, tags FROM public.notes ORDER BY id";
    wait_same(&pg, notes, &ferry);
    assert_eq!(
        pg.psql(
            "replica",
            "SELECT count(*), count(secret) FROM public.masked"
        ),
        "100|0",
        "the masked table was not transformed"
    );
    let text = ferry.log();
    // Object references are the objects' names, as text: the target need not have the objects.
    assert_eq!(
        pg.psql(
            "replica",
            "SELECT id, rc, rt, rts, pg_typeof(rc) FROM public.refs ORDER BY id"
        ),
        "1|notes|mood|{mood,integer[]}|text\n2|pg_class|integer[]||text"
    );
    for (table, raw) in [("all_types", true), ("notes", true), ("masked", false)] {
        assert!(
            text.contains(&format!("table copied table=public.{table} raw={raw}")),
            "{table} should be copied with raw={raw}:\n{text}"
        );
    }
    pg.psql(
        "shop",
        "UPDATE notes SET body = body || '+' WHERE id % 1000 = 0",
    );
    wait_same(&pg, notes, &ferry);
    ferry.terminate();
}

#[test]
fn unchanged_toast_values_are_kept_and_ddl_and_truncate_follow_the_source() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         CREATE TABLE nokey (a int, b text);
         ALTER TABLE nokey REPLICA IDENTITY FULL;
         INSERT INTO nokey VALUES (1, 'x'), (1, 'x'), (2, 'y');",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let ferry = Ferry::start(
        &write_config(dir.path(), "toast", &config(&pg, "toast", &db)),
        &dir.path().join("f.log"),
    );
    pg.psql(
        "shop",
        "INSERT INTO docs SELECT g, repeat(md5(g::text), 400), 0 FROM generate_series(1, 5) g",
    );
    wait_same(
        &pg,
        "SELECT id, md5(body), n FROM public.docs ORDER BY id",
        &ferry,
    );
    // The update does not send `body` (unchanged TOAST): the target must keep it, not write NULL.
    pg.psql("shop", "UPDATE docs SET n = n + 1");
    wait_same(
        &pg,
        "SELECT id, md5(body), n FROM public.docs ORDER BY id",
        &ferry,
    );
    let sqlite_body = sqlite_rows(
        &db,
        "SELECT count(*) FROM docs WHERE length(body) = 12800 AND n = 1",
    );
    assert!(
        wait_until(WAIT, || sqlite_rows(
            &db,
            "SELECT count(*) FROM docs WHERE length(body) = 12800 AND n = 1"
        ) == ["5"]),
        "{sqlite_body:?}"
    );

    // A table without a primary key: one of two identical rows is updated, one deleted.
    pg.psql("shop", "UPDATE nokey SET b = 'z' WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 LIMIT 1); DELETE FROM nokey WHERE a = 2;");
    wait_same(&pg, "SELECT a, b FROM public.nokey ORDER BY a, b", &ferry);

    // ADD and DROP COLUMN mid-stream, then TRUNCATE.
    pg.psql("shop", "ALTER TABLE docs ADD COLUMN tag text; UPDATE docs SET tag = 'v2' WHERE id = 1; ALTER TABLE docs DROP COLUMN n; INSERT INTO docs VALUES (6, 'six', 'v2');");
    wait_same(
        &pg,
        "SELECT id, md5(body), tag FROM public.docs ORDER BY id",
        &ferry,
    );
    assert!(wait_until(WAIT, || sqlite_rows(
        &db,
        "SELECT id, tag FROM docs WHERE id IN (1, 6) ORDER BY id"
    ) == ["1|v2", "6|v2"]));
    assert!(
        sqlite_rows(&db, "SELECT name FROM pragma_table_info('docs')").join(",") == "id,body,tag"
    );
    pg.psql("shop", "TRUNCATE docs");
    wait_same(&pg, "SELECT count(*) FROM public.docs", &ferry);
    assert!(wait_until(WAIT, || sqlite_rows(
        &db,
        "SELECT count(*) FROM docs"
    ) == ["0"]));
    ferry.terminate();
}

#[test]
fn a_dropped_slot_stops_with_the_fix() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let cfg = write_config(dir.path(), "slot", &config(&pg, "slotcase", &db));
    let ferry = Ferry::start(&cfg, &dir.path().join("f1.log"));
    assert!(wait_until(WAIT, || pg
        .try_psql("replica", "SELECT count(*) FROM public.t")
        .is_ok_and(|n| n == "1")));
    assert!(ferry.terminate().success());
    pg.psql("shop", "SELECT pg_drop_replication_slot('ferry_slotcase')");
    let mut ferry = Ferry::start(&cfg, &dir.path().join("f2.log"));
    let status = ferry
        .wait_exit(WAIT)
        .expect("ferry should stop on a missing slot");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("replication slot ferry_slotcase does not exist")
            && log.contains("ferry reset --config"),
        "{log}"
    );
}

#[test]
fn bad_config_reports_file_key_and_expected_form() {
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "bad",
        "[pipeline]\nname = \"x\"\nbatchsize = 3\n[source]\ntype = \"postgres\"\nurl = \"${FERRY_TEST_UNSET_VAR}\"\nsnapshot = \"maybe\"\n[sink]\ntype = \"sqlite\"\n",
    );
    let out = Command::new(ferry_bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display().to_string();
    for expected in [
        format!("{file}: pipeline.batchsize: unknown key"),
        format!("{file}: source.url: environment variable FERRY_TEST_UNSET_VAR is not set"),
        format!(
            "{file}: source.snapshot: expected \"initial\", \"never\" or \"only\", found \"maybe\""
        ),
        format!("{file}: sink.path: missing; expected a file path"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn check_names_the_fix_for_wal_level_replica() {
    let pg = PgServer::start_with(&["wal_level=replica"]);
    pg.create_db("shop");
    pg.psql("shop", "CREATE TABLE keyless (a int)");
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "check",
        &format!("[pipeline]\nname = \"c\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"public.keyless\", \"public.missing\"]\n[sink]\ntype = \"sqlite\"\npath = \"c.db\"\n", pg.url("shop")),
    );
    let out = Command::new(ferry_bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "FAIL wal_level: wal_level is replica",
        "fix: ALTER SYSTEM SET wal_level = logical;",
        "FAIL table public.keyless",
        "fix: ALTER TABLE \"public\".\"keyless\" REPLICA IDENTITY FULL;",
        "FAIL table public.missing: does not exist",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn source_restart_mid_stream_reconnects_and_resumes() {
    let mut pg = server_with_dbs();
    pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g;");
    let dir = scratch();
    let db = dir.path().join("r.db");
    let ferry = Ferry::start(
        &write_config(dir.path(), "restart", &config(&pg, "restart", &db)),
        &dir.path().join("f.log"),
    );
    pg.psql("shop", "UPDATE t SET v = 1");
    wait_same(&pg, "SELECT id, v FROM public.t ORDER BY id", &ferry);
    pg.restart();
    pg.psql(
        "shop",
        "UPDATE t SET v = 2 WHERE id <= 50; INSERT INTO t VALUES (101, 3);",
    );
    wait_same(&pg, "SELECT id, v FROM public.t ORDER BY id", &ferry);
    assert!(wait_until(WAIT, || sqlite_rows(
        &db,
        "SELECT count(*), sum(v) FROM t"
    ) == ["101|153"]));
    assert!(
        ferry
            .log()
            .contains("transient failure; restarting from the checkpoints"),
        "{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

#[test]
fn an_insert_of_a_key_the_target_already_has_replaces_that_row() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)",
    );
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config_path = write_config(dir.path(), "p", &config(&pg, "items", &db));
    let ferry = Ferry::start(&config_path, &dir.path().join("ferry.log"));
    assert!(
        wait_until(WAIT, || pg
            .try_psql("replica", "SELECT count(*) FROM items")
            .is_ok()),
        "target table never created:\n{}",
        ferry.log()
    );
    // Someone wrote key 2 into the target directly: the optimistic COPY of the source's insert (enough rows to be
    // copied) conflicts, and the rows are upserted instead.
    pg.psql("replica", "INSERT INTO items VALUES (2, 'stale')");
    pg.psql(
        "shop",
        "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three\ttab');
         INSERT INTO items SELECT g, 'n' || g FROM generate_series(10, 400) g",
    );
    wait_same(&pg, "SELECT id, label FROM items ORDER BY id", &ferry);
    assert!(
        ferry
            .log()
            .contains("already exists in the target; upserting"),
        "the conflict path was not taken:\n{}",
        ferry.log()
    );
    // A few rows go by one upsert: a key the target has is replaced all the same.
    pg.psql("replica", "INSERT INTO items VALUES (1000, 'stale')");
    pg.psql(
        "shop",
        "INSERT INTO items VALUES (4, 'four'), (1000, 'thousand')",
    );
    wait_same(&pg, "SELECT id, label FROM items ORDER BY id", &ferry);
    assert!(ferry.terminate().success());
}

/// A source database in LATIN1: the walsender converts what it sends to the session's client encoding, which
/// Ferry sets to UTF8, so streamed text equals the source's (before, LATIN1 bytes were read as UTF-8: some changed
/// silently, the rest stopped the pipeline). With `int2vector` / `oidvector` columns, whose text is
/// space-separated, in binary and text sessions alike.
#[test]
fn a_latin1_source_and_vector_types_replicate_exactly() {
    let pg = server_with_dbs();
    pg.psql(
        "postgres",
        "CREATE DATABASE lat ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let rows = |from: i32| {
        format!(
            "SET client_encoding = 'UTF8'; INSERT INTO l VALUES ({}, 'cafÃ©', '{{naÃ¯ve,\"àéîõü ÿ\"}}', '1 2 -3', '0 4294967295'),
                                  ({}, '½ © ® ß', NULL, '', ''),
                                  ({}, 'plain', '{{}}', '32767', '7')",
            from,
            from + 1,
            from + 2
        )
    };
    pg.psql(
        "lat",
        &format!(
            "SET client_encoding = 'UTF8'; CREATE TABLE l (id int PRIMARY KEY, t text, a text[], i2v int2vector, ov oidvector); {}",
            rows(1)
        ),
    );
    let dir = scratch();
    let db = dir.path().join("r.db");
    let config = fan_out_config(&pg, "latin", "[pipeline.batch]\nmax_wait = \"20ms\"", &db)
        .replace(&pg.url("shop"), &pg.url("lat"));
    let ferry = Ferry::start(
        &write_config(dir.path(), "latin", &config),
        &dir.path().join("f.log"),
    );
    ferry.wait_streaming();
    pg.psql("lat", &rows(11));
    pg.psql("lat", "SET client_encoding = 'UTF8'; UPDATE l SET t = t || ' é', a = a || 'ü'::text WHERE id IN (2, 12)");
    // psql's client encoding follows each server's unless set: set it, so both sides print UTF-8.
    let sql = "SET client_encoding = 'UTF8'; SELECT id, t, a, i2v::text, ov::text FROM public.l ORDER BY id";
    wait_same_from(&pg, "lat", sql, &ferry);
    // SQLite: the snapshot's rows (text) and the stream's equal, character for character.
    let snap = sqlite_rows(&db, "SELECT t, a, i2v, ov FROM l WHERE id < 10 ORDER BY id");
    let streamed = || sqlite_rows(&db, "SELECT t, a, i2v, ov FROM l WHERE id > 10 ORDER BY id");
    // The SQLite sink applies at its own pace: wait for it too.
    wait_until(WAIT, || streamed() == snap);
    let streamed = streamed();
    assert_eq!(snap.len(), 3);
    assert_eq!(snap, streamed);
    let source_t = pg.psql(
        "lat",
        "SET client_encoding = 'UTF8'; SELECT t FROM l WHERE id = 1",
    );
    assert_eq!(
        snap[0].split('|').next(),
        source_t.lines().last(),
        "{snap:?}"
    );
    assert!(source_t.contains('Ã'), "{source_t}");
    ferry.terminate();
}
