//! pgoutput's binary format (`[source] binary = true`): values read from their types' send format must be
//! exactly the values their text form gives, and a type Ferry cannot read in binary moves the slot to text.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// Every type Ferry reads in binary, and the edges of each: extremes, infinities, NaN, BC dates, zones with
/// seconds, 24:00, numerics of every weight and scale, float4 values that are not exact in binary, arrays of
/// several dimensions, with NULLs and lower bounds other than 1, enums and domains.
const TABLE: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s \"fine\"');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE DOMAIN money2 AS numeric(12,2);
CREATE TABLE bin (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, o oid, f4 float4, f8 float8, n numeric, n2 numeric(12,3),
  n3 money2, t text, vc varchar(10), bp char(5), nm name, by bytea, j json, jb jsonb, u uuid, d date, tm time,
  ttz timetz, ts timestamp, tstz timestamptz, iv interval, e mood, dm positive, ai int[], at text[], a2 int[][],
  an numeric[], ats timestamptz[], ae mood[], ab bool[], auu uuid[], aby bytea[]);";

const ROWS: &str = "INSERT INTO bin VALUES
 (1, true, -32768, -2147483648, -9223372036854775808, 4294967295, 1.1, 0.1, 'NaN', -123456789.123, 1234567890.12,
  'unicode ✓ \"quoted\" \\ back', 'short', 'ab', 'name', '\\x00ff10', '{\"a\": [1, 2.50]}', '{\"b\": null, \"a\": 1}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '0044-03-15 BC', '24:00:00', '04:05:06.789-08:00',
  '2024-02-29 23:59:59.999999', 'infinity', '1 year 2 mons -3 days 04:05:06.5', 'it''s \"fine\"', 7,
  '{1,NULL,3}', '{\"a b\",\"c,d\",NULL,\"\\\\\",\"NULL\",\"\"}', '{{1,2},{3,4}}', '{0.5,NaN,-0.00100,100000000}',
  '{\"2000-01-01 00:00:00+00\",infinity,NULL}', '{happy,sad}', '{t,f,NULL}',
  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{\"\\\\x00\",NULL}'),
 (2, false, 32767, 2147483647, 9223372036854775807, 0, 'NaN', 1.0000000000000002, '1e-20', 0.001, -0.01,
  '', '', '', '', '\\x', '[]', '[]', '00000000-0000-0000-0000-000000000000', '-infinity', '00:00:00',
  '00:00:00+00', '4713-01-01 00:00:00 BC', '2000-01-01 00:00:00.000001+05:30', '-178000000 years', 'sad', 1,
  '{}', '{}', '[0:1][5:6]={{1,2},{3,4}}', '{}', '{}', '{}', '{}', '{}', '{}'),
 (3, NULL, 0, 0, 0, NULL, 3.4028235e38, -1.7976931348623157e308, 'Infinity', 0, 0, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, 'infinity', '23:59:59.999999', '12:00:00+05:30:15', 'infinity', '1970-01-01 00:00:00+00',
  '0 seconds', NULL, NULL, '[-2:0]={7,8,9}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, '-Infinity', 'NaN', '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, '5874897-12-31', NULL, '00:00:00-15:59', '294276-12-31 23:59:59.999999', '-infinity',
  '-1 mons 2 days -00:00:00.000001', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, NULL, NULL, NULL, NULL, NULL, 1e-45, 5e-324, 99999999999999999999.99999999999999999999, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  '{0.00000001,-99990000.0001,12345678901234567890}', NULL, NULL, NULL, NULL, NULL);";

const COLUMNS: &str = "b, i2, i4, i8, o, f4, f8, n, n2, n3, t, vc, bp, nm, by, j, jb, u, d, tm, ttz, ts, tstz, iv, e, dm, \
                       ai, at, a2, an, ats, ae, ab, auu, aby";

#[test]
fn binary_values_are_the_values_their_text_gives() {
    let pg = server_with_dbs();
    pg.psql("shop", TABLE);
    pg.psql("shop", ROWS);
    let dir = scratch();
    let db = dir.path().join("r.db");
    let config = fan_out_config(&pg, "binary", "[pipeline.batch]\nmax_wait = \"20ms\"", &db)
        .replace("[source]\n", "[source]\nbinary = true\n");
    let ferry = Ferry::start(
        &write_config(dir.path(), "binary", &config),
        &dir.path().join("f.log"),
    );
    ferry.wait_streaming();
    // Rows 1-5 arrive by the snapshot's COPY, in text; the same values again by the stream, in binary.
    pg.psql(
        "shop",
        &format!("INSERT INTO bin SELECT id + 10, {COLUMNS} FROM bin"),
    );
    // Array lower bounds other than 1 are not kept, from text and binary alike (docs/type-mapping.md).
    let sql = format!(
        "SELECT id, {COLUMNS}, e::text, ae::text, regexp_replace(ai::text, '^\\[[^=]*\\]=', ''), \
         regexp_replace(a2::text, '^\\[[^=]*\\]=', '') FROM public.bin ORDER BY id"
    )
    .replace(" ai, ", " ")
    .replace(" a2, ", " ");
    wait_same(&pg, &sql, &ferry);
    assert!(
        ferry.log().contains("format=\"binary\"") || ferry.log().contains("format=binary"),
        "the stream did not ask for binary values:\n{}",
        ferry.log()
    );
    // SQLite holds what the sink was given: each row read from binary equals the one read from text.
    let columns = format!("{COLUMNS}, typeof(f4), typeof(n), typeof(tstz), typeof(an)");
    let text = sqlite_rows(
        &db,
        &format!("SELECT {columns} FROM bin WHERE id < 10 ORDER BY id"),
    );
    let binary = || {
        sqlite_rows(
            &db,
            &format!("SELECT {columns} FROM bin WHERE id > 10 ORDER BY id"),
        )
    };
    // The SQLite sink applies at its own pace: wait for it too.
    wait_until(WAIT, || binary() == text);
    let binary = binary();
    assert_eq!(text.len(), 5, "SQLite target: {text:?}");
    assert_eq!(text, binary);
    // Updates and deletes read their keys and old images from binary too.
    pg.psql(
        "shop",
        "UPDATE bin SET f4 = -f4, an = an || 1.5::numeric, id = id + 100 WHERE id > 10; DELETE FROM bin WHERE id = 113",
    );
    wait_same(&pg, &sql, &ferry);
    let moved = || sqlite_rows(&db, "SELECT count(*) FROM bin WHERE id > 100");
    wait_until(WAIT, || moved() == ["4"]);
    assert_eq!(moved(), vec!["4".to_owned()]);
    ferry.terminate();
}

/// A column added while streaming whose type has no binary decoding (here `inet`) makes Ferry read the slot again
/// in text, from where it left off, and stay so; a publication with such a type from the start streams in text.
#[test]
fn a_type_without_binary_decoding_moves_the_slot_to_text() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE hosts (id int PRIMARY KEY, name text, seen timestamptz);
         INSERT INTO hosts SELECT g, 'h' || g, '2024-01-01'::timestamptz + g * interval '1 hour' FROM generate_series(1, 100) g",
    );
    let dir = scratch();
    let config = pg_to_pg_config(&pg, "totext", "[pipeline.batch]\nmax_wait = \"20ms\"")
        .replace("[source]\n", "[source]\nbinary = true\n");
    let config = write_config(dir.path(), "totext", &config);
    let log = dir.path().join("f.log");
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO hosts SELECT g, 'h' || g, now() FROM generate_series(101, 200) g;
         ALTER TABLE hosts ADD COLUMN addr inet;
         INSERT INTO hosts SELECT g, 'h' || g, now(), ('10.0.' || g / 256 || '.' || g % 256)::inet FROM generate_series(201, 300) g;
         UPDATE hosts SET addr = '::1/128' WHERE id % 7 = 0;",
    );
    let sql = "SELECT id, name, seen, addr FROM public.hosts ORDER BY id";
    wait_same(&pg, sql, &ferry);
    let text = ferry.log();
    assert!(
        text.contains("reading the slot again in text format"),
        "no switch to text:\n{text}"
    );
    assert!(text.contains("format=\"binary\"") || text.contains("format=binary"));
    assert!(text.contains("format=\"text\"") || text.contains("format=text"));
    ferry.terminate();
    // Started again with `inet` published: text from the start, without the detour.
    let ferry = Ferry::start(&config, &dir.path().join("g.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO hosts VALUES (301, 'h301', now(), '192.168.1.1/24')",
    );
    wait_same(&pg, sql, &ferry);
    let text = ferry.log();
    assert!(
        text.contains("has no binary decoding in Ferry")
            && !text.contains("reading the slot again"),
        "{text}"
    );
    assert!(wait_until(WAIT, || pg
        .psql("replica", "SELECT count(*) FROM public.hosts")
        == "301"));
    ferry.terminate();
}
