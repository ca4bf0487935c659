//! one-column keys of many types, 3 chunks each (cursor literals cast back to the key's type).

use crate::common::*;
use crate::support::*;

fn run(name: &str, prelude: &str, ty: &str, expr: &str) {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        &format!(
            "{prelude}
             CREATE TABLE k (id {ty} PRIMARY KEY, n int);
             INSERT INTO k SELECT DISTINCT ON (v) v, g FROM (SELECT ({expr})::{ty} v, g FROM generate_series(1, 5000) g) s
             ON CONFLICT DO NOTHING;"
        ),
    );
    let s = setup(&pg, name, "[pipeline.batch]\nmax_wait = \"20ms\"", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM k", &ferry);
    pg.psql("replica", "UPDATE k SET n = -1");
    let (ok, out) = request(&s.cfg, "k");
    assert!(ok, "{out}");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT id::text || '|' || n FROM k ORDER BY id",
        None,
    )
    .unwrap();
    let src = pg.psql("shop", "SELECT count(*) || '|' || sum(n) FROM k");
    assert!(
        wait_until(WAIT, || sqlite_rows(
            &s.db,
            "SELECT count(*) || '|' || sum(n) FROM k"
        )
        .join("")
            == src),
        "sqlite {:?} vs {src}",
        sqlite_rows(&s.db, "SELECT count(*) || '|' || sum(n) FROM k")
    );
}

#[test]
fn enum_public() {
    run(
        "ty1",
        "CREATE TYPE mood AS ENUM ('a', 'b', 'c');",
        "mood",
        "(ARRAY['a','b','c'])[g % 3 + 1]",
    );
}
// Composite with enum so there are > 2048 rows.
#[test]
fn enum_composite() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TYPE mood AS ENUM ('a', 'b', 'c');
         CREATE TABLE k (m mood, n int, PRIMARY KEY (m, n));
         INSERT INTO k SELECT (ARRAY['a','b','c']::mood[])[g % 3 + 1], g FROM generate_series(1, 5000) g;",
    );
    let s = setup(&pg, "ty1b", "[pipeline.batch]\nmax_wait = \"20ms\"", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM k", &ferry);
    let (ok, out) = request(&s.cfg, "k");
    assert!(ok, "{out}");
    wait_finished(&pg, &mut ferry, 2).unwrap();
}
#[test]
fn domain_int() {
    run(
        "ty2",
        "CREATE DOMAIN posint AS int CHECK (VALUE > 0);",
        "posint",
        "g",
    );
}
#[test]
fn varchar_n() {
    run("ty3", "", "varchar(12)", "'K' || g");
}
#[test]
fn char_n() {
    run("ty4", "", "char(6)", "g::text");
}
#[test]
fn uuid_key() {
    run("ty5", "", "uuid", "md5(g::text)::uuid");
}
#[test]
fn timestamptz_key() {
    run(
        "ty6",
        "SET timezone = 'America/New_York';",
        "timestamptz(6)",
        "timestamptz '2024-03-10 01:00:00-05' + g * interval '37 min 0.000123 sec'",
    );
}
#[test]
fn numeric_key() {
    run(
        "ty7",
        "",
        "numeric",
        "(g / 7.0)::numeric(20, 10) * 10 ^ (g % 5)",
    );
}
#[test]
fn float_key() {
    run(
        "ty8",
        "",
        "float8",
        "CASE WHEN g = 1 THEN 'NaN'::float8 WHEN g = 2 THEN '-Infinity' ELSE g / 3.0 END",
    );
}
#[test]
fn interval_key() {
    run("ty9", "", "interval", "g * interval '1 mon 1 day 1.5 sec'");
}
#[test]
fn bytea_key() {
    run("ty10", "", "bytea", "decode(md5(g::text), 'hex')");
}
#[test]
fn inet_key() {
    run(
        "ty11",
        "",
        "inet",
        "('10.0.' || g / 256 || '.' || g % 256)::inet",
    );
}
#[test]
fn money_key() {
    run("ty12", "", "money", "g * 1.01");
}
#[test]
fn date_key() {
    run("ty13", "", "date", "date '4713-01-01 BC' + g * 311");
}
#[test]
fn array_key() {
    run("ty14", "", "int[]", "ARRAY[g % 10, g]");
}
#[test]
fn time_key() {
    run(
        "ty15",
        "",
        "time(3)",
        "time '00:00' + g * interval '17.001 sec'",
    );
}
#[test]
fn text_array_key() {
    run(
        "ty16",
        "",
        "text[]",
        "ARRAY['a' || g, E'b\\\\\"' || g % 3, NULL]",
    );
}
#[test]
fn jsonb_key() {
    run(
        "ty17",
        "",
        "jsonb",
        "jsonb_build_object('k', g, 's', E'q\"\\\\' || g)",
    );
}
#[test]
fn bit_key() {
    run("ty18", "", "bit varying(16)", "g::bit(16)");
}
