//! literal quoting of cursor keys when the source database has standard_conforming_strings = off;
//! table names the request cannot spell; the no-key message.

use crate::common::*;
use crate::support::*;

#[test]
fn backslash_keys_with_standard_conforming_strings_off() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        r#"CREATE TABLE bs (k text PRIMARY KEY, n int);
           INSERT INTO bs SELECT 'k' || lpad(g::text, 5, '0') || CASE WHEN g % 2048 = 0 THEN E'\\' ELSE '' END, g
           FROM generate_series(1, 6000) g;
           ALTER DATABASE shop SET standard_conforming_strings = off;"#,
    );
    let s = setup(&pg, "q1", "[pipeline.batch]\nmax_wait = \"20ms\"", "");
    let mut ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT count(*) FROM bs", &ferry);
    pg.psql("replica", "UPDATE bs SET n = -1");
    let (ok, out) = request(&s.cfg, "bs");
    assert!(ok, "{out}");
    wait_finished(&pg, &mut ferry, 2).unwrap();
    compare(
        &pg,
        &s,
        &ferry,
        "SELECT k || '|' || n FROM bs ORDER BY k",
        None,
    )
    .unwrap();
}

#[test]
fn names_the_request_cannot_spell_and_messages() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        r#"CREATE TABLE "dot.ted" (id int PRIMARY KEY); CREATE TABLE nokey (v int);"#,
    );
    let s = setup(&pg, "q2", "", "");
    let ferry = Ferry::start(&s.cfg, &s.log);
    ferry.wait_streaming();
    for t in ["\"dot.ted\"", "public.\"dot.ted\""] {
        let (ok, out) = request(&s.cfg, t);
        assert!(ok, "request {t:?}: {out}");
    }
    let (ok, out) = request(&s.cfg, "public.dot.ted");
    assert!(
        !ok && out.contains("double-quote a name holding a dot"),
        "{out}"
    );
    let (ok, out) = request(&s.cfg, "nokey");
    assert!(
        !ok && out.contains("no primary key") && !out.contains("  "),
        "{out}"
    );
    let (ok, out) = request(&s.cfg, "PUBLIC.NOKEY");
    assert!(!ok && out.contains("case included"), "{out}");
    drop(ferry);
}
