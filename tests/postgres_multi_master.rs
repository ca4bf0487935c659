//! End-to-end: two writable PostgreSQL databases replicating into each other (two pipelines A→B and B→A with
//! `origins = "local"`), under concurrent conflicting load from pgbench on both sides. Each test checks that
//! both sides end identical row by row (versions included), that neither pipeline applied the other's changes
//! back (no ping-pong), and what the conflict log says.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// One side's pipeline config: `from` → `to` on the same server, node `node`.
fn side(pg: &PgServer, name: &str, node: &str, from: &str, to: &str, extra: &str) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\nnode = \"{node}\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
         [source]\ntype = \"postgres\"\nurl = \"{}\"\norigins = \"local\"\n{extra}\n\
         [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
        pg.url(from),
        pg.url(to)
    )
}

/// Starts A→B (which copies A's rows into B), then B→A from B's current position.
fn start_pair(
    pg: &PgServer,
    dir: &Path,
    source_extra: &str,
    sink_extra: &str,
) -> (Ferry, Ferry, PathBuf, PathBuf) {
    let a_to_b = write_config(
        dir,
        "a_to_b",
        &(side(pg, "a_to_b", "a", "a", "b", source_extra) + sink_extra),
    );
    let b_to_a = write_config(
        dir,
        "b_to_a",
        &(side(
            pg,
            "b_to_a",
            "b",
            "b",
            "a",
            &format!("snapshot = \"never\"\n{source_extra}"),
        ) + sink_extra),
    );
    let (log_ab, log_ba) = (dir.join("a_to_b.log"), dir.join("b_to_a.log"));
    let ab = Ferry::start(&a_to_b, &log_ab);
    ab.wait_streaming();
    let ba = Ferry::start(&b_to_a, &log_ba);
    ba.wait_streaming();
    (ab, ba, a_to_b, b_to_a)
}

/// Runs a pgbench script against `db`: the number of transactions it committed.
fn pgbench(pg: &PgServer, db: &str, script: &str, args: &[&str]) -> u64 {
    let dir = scratch();
    let file = dir.path().join("script.sql");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(pg_bin("pgbench"))
        .args(["-n", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(pg.port.to_string())
        .args(args)
        .arg("-f")
        .arg(&file)
        .arg(db)
        .output()
        .expect("run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("number of transactions actually processed: ")
                .map(|n| n.split('/').next().unwrap().trim().parse().unwrap())
        })
        .expect("pgbench's transaction count")
}

/// Waits until `sql` answers the same on both databases and returns it.
fn wait_converged(pg: &PgServer, sql: &str, ab: &Ferry, ba: &Ferry) -> String {
    let ok = wait_until(WAIT, || {
        pg.try_psql("a", sql).ok() == pg.try_psql("b", sql).ok()
    });
    assert!(
        ok,
        "the two databases did not converge on {sql}\n--- a\n{}\n--- b\n{}\n--- a_to_b log\n{}\n--- b_to_a log\n{}",
        pg.psql("a", sql),
        pg.psql("b", sql),
        ab.log(),
        ba.log()
    );
    pg.psql("a", sql)
}

fn two_databases() -> PgServer {
    let pg = PgServer::start();
    pg.create_db("a");
    pg.create_db("b");
    pg
}

/// Both databases' conflict logs: `table|key|kind|winner|local_ts|local_node|remote_ts|remote_node|resolver`.
fn conflicts(pg: &PgServer, db: &str) -> Vec<String> {
    pg.psql(
        db,
        "SELECT table_name, key, kind, winner, local_ts, local_node, remote_ts, remote_node, resolver \
         FROM ferry_conflicts ORDER BY id",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn two_primaries_converge_with_last_write_wins_and_log_every_conflict() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(
            db,
            "CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL, writer text NOT NULL);
             ALTER TABLE kv REPLICA IDENTITY FULL;",
        );
    }
    pg.psql(
        "a",
        "INSERT INTO kv SELECT g, 0, 'seed' FROM generate_series(1, 200) g",
    );
    let dir = scratch();
    let (ab, ba, _, _) = start_pair(&pg, dir.path(), "", "conflict = \"last_write_wins\"\n");
    wait_converged(&pg, "SELECT count(*) FROM kv", &ab, &ba);
    // Overlapping keys from both sides at once, with deletes and re-inserts, 400 transactions/s on each (both
    // databases and both pipelines share this machine's cores).
    let script = |node: &str| {
        format!(
            "\\set k random(1, 200)\n\\set v random(1, 1000000)\n\\set d random(1, 20)\n\
             \\if :d = 1\nDELETE FROM kv WHERE id = :k;\n\\else\n\
             INSERT INTO kv VALUES (:k, :v, '{node}') ON CONFLICT (id) DO UPDATE SET v = excluded.v, writer = excluded.writer;\n\
             \\endif\n"
        )
    };
    let (script_a, script_b) = (script("a"), script("b"));
    let pg_ref = &pg;
    let (writes_a, writes_b) = std::thread::scope(|s| {
        let a = s.spawn(move || {
            pgbench(
                pg_ref,
                "a",
                &script_a,
                &["-c", "2", "-T", "60", "-R", "400"],
            )
        });
        let b = s.spawn(move || {
            pgbench(
                pg_ref,
                "b",
                &script_b,
                &["-c", "2", "-T", "60", "-R", "400"],
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    println!("writes: a {writes_a}, b {writes_b}");
    let rows = wait_converged(
        &pg,
        "SELECT id, v, writer, _ferry_ts, _ferry_node FROM kv ORDER BY id",
        &ab,
        &ba,
    );
    assert!(rows.lines().count() > 10, "rows: {rows}");
    // No ping-pong: each pipeline applied at most what its source's clients wrote (and the 40 copied rows).
    let applied_ab = metric(&ab, "ferry_sink_rows_total");
    let applied_ba = metric(&ba, "ferry_sink_rows_total");
    assert!(
        applied_ab <= (writes_a + 200) as f64 && applied_ba <= writes_b as f64,
        "applied {applied_ab} / {applied_ba} rows for {writes_a} / {writes_b} writes"
    );
    // Before PostgreSQL 16 the source itself leaves out the peer's transactions (16+ has the walsender do it).
    if pg
        .psql("a", "SHOW server_version_num")
        .parse::<u32>()
        .unwrap()
        < 160_000
    {
        assert!(metric(&ab, "ferry_source_origin_skipped_total") > 0.0);
    }
    // Conflicts were met on both sides, and each was decided by the later version (ties by node).
    for db in ["a", "b"] {
        let log = conflicts(&pg, db);
        assert!(!log.is_empty(), "no conflict logged in {db}");
        let mut seen = std::collections::HashSet::new();
        for line in &log {
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f[0], "public.kv");
            assert_eq!(f[8], "last_write_wins");
            assert!(
                seen.insert((f[1], f[6], f[7])),
                "conflict logged twice: {line}"
            );
            if f[2] == "update_origin_differs" || f[2] == "insert_exists" {
                let local = (f[4].parse::<i64>().unwrap(), f[5]);
                let remote = (f[6].parse::<i64>().unwrap(), f[7]);
                assert_eq!(f[3] == "remote", remote > local, "{line}");
            }
        }
        let counted = metric(if db == "a" { &ba } else { &ab }, "ferry_conflicts_total");
        assert_eq!(counted as usize, log.len(), "metric and log differ in {db}");
    }
}

#[test]
fn sum_delta_counts_every_increment_from_both_primaries() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(
            db,
            "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);
             ALTER TABLE counters REPLICA IDENTITY FULL;
             CREATE TABLE incs (k int NOT NULL);",
        );
    }
    pg.psql(
        "a",
        "INSERT INTO counters SELECT g, 0 FROM generate_series(1, 20) g",
    );
    let dir = scratch();
    let (ab, ba, _, _) = start_pair(
        &pg,
        dir.path(),
        "tables = [\"public.counters\"]\n",
        "conflict = \"last_write_wins\"\n[[sink.conflict_rules]]\ntables = [\"public.counters\"]\ncolumns = { n = \"sum_delta\" }\n",
    );
    wait_converged(&pg, "SELECT count(*) FROM counters", &ab, &ba);
    let script = "\\set k random(1, 20)\nBEGIN;\nUPDATE counters SET n = n + 1 WHERE id = :k;\n\
                  INSERT INTO incs VALUES (:k);\nCOMMIT;\n";
    let pg_ref = &pg;
    std::thread::scope(|s| {
        let a = s.spawn(move || pgbench(pg_ref, "a", script, &["-c", "2", "-t", "2500"]));
        let b = s.spawn(move || pgbench(pg_ref, "b", script, &["-c", "2", "-t", "2500"]));
        assert_eq!(a.join().unwrap(), 5000);
        assert_eq!(b.join().unwrap(), 5000);
    });
    let rows = wait_converged(&pg, "SELECT id, n FROM counters ORDER BY id", &ab, &ba);
    // Every row holds the increments it received on either side.
    let received = |db: &str| -> std::collections::HashMap<i32, i64> {
        pg.psql(db, "SELECT k, count(*) FROM incs GROUP BY k")
            .lines()
            .map(|l| {
                let (k, n) = l.split_once('|').unwrap();
                (k.parse().unwrap(), n.parse().unwrap())
            })
            .collect()
    };
    let (in_a, in_b) = (received("a"), received("b"));
    let mut total = 0;
    for line in rows.lines() {
        let (id, n) = line.split_once('|').unwrap();
        let id: i32 = id.parse().unwrap();
        let n: i64 = n.parse().unwrap();
        let expected = in_a.get(&id).unwrap_or(&0) + in_b.get(&id).unwrap_or(&0);
        assert_eq!(n, expected, "row {id}: {n}, expected {expected}");
        total += n;
    }
    assert_eq!(total, 10_000);
}

/// A one-way pipeline `shop` → `replica` whose target is written locally too: each table has its own resolver or
/// merge rule, and each meets the same conflicts.

#[test]
fn each_resolver_and_merge_rule_gives_its_rows() {
    let pg = server_with_dbs();
    let rules = resolver_tables(&pg, "shop");
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "resolve",
        &format!(
            "[pipeline]\nname = \"resolve\"\nnode = \"shop\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n{rules}",
            pg.url("shop"),
            pg.url("replica")
        ),
    );
    let log = dir.path().join("ferry.log");
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    wait_same(&pg, "SELECT id, a, b FROM t_pnn ORDER BY id", &ferry);
    let each = |db: &str, sql: &str| {
        for (t, _) in RESOLVER_CASES {
            pg.psql(db, &sql.replace("{t}", t));
        }
    };
    // Row 1: the target writes first, the source later (the source's write is the later one).
    each(
        "replica",
        "UPDATE {t} SET a = 100, b = NULL, tags = '[\"a\", \"local\"]' WHERE id = 1",
    );
    each(
        "shop",
        "UPDATE {t} SET a = 50, b = 'src', tags = '[\"remote\", \"a\", \"remote\"]' WHERE id = 1",
    );
    // Row 3: deleted on the target, then updated at the source (an update that crossed a delete). A delete's
    // version is the one it removed plus one: it is the first write, the update the last.
    each("replica", "DELETE FROM {t} WHERE id = 3");
    each("shop", "UPDATE {t} SET a = 33 WHERE id = 3");
    let flushed = |n: usize| {
        wait_until(WAIT, || {
            pg.try_psql("replica", "SELECT count(*) FROM ferry_conflicts")
                .is_ok_and(|c| c.trim().parse::<usize>().unwrap_or(0) >= n)
        })
    };
    assert!(flushed(20), "conflicts not logged:\n{}", ferry.log());
    // Row 2: the source writes first while Ferry is stopped, the target later (the target's is the later one).
    ferry.terminate();
    each("shop", "UPDATE {t} SET a = 60, b = 'src2' WHERE id = 2");
    std::thread::sleep(Duration::from_millis(5));
    each(
        "replica",
        "UPDATE {t} SET a = 200, b = 'local2' WHERE id = 2",
    );
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    assert!(flushed(30), "conflicts not logged:\n{}", ferry.log());
    let rows = |t: &str| pg.psql("replica", &format!("SELECT id, a, b FROM {t} ORDER BY id"));
    // (row 1, row 2, row 3) as each rule leaves them: the same as in MariaDB and SQLite targets.
    let expected = resolver_rows();
    for (t, want) in expected {
        assert_eq!(rows(t), want.join("\n"), "table {t}\n{}", ferry.log());
    }
    // Each table logged its three conflicts, with the winner its rule chose.
    let log = pg.psql(
        "replica",
        "SELECT table_name, key, kind, winner FROM ferry_conflicts ORDER BY table_name, key",
    );
    for (t, _) in RESOLVER_CASES {
        let got: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("public.{t}|")))
            .collect();
        assert_eq!(got, resolver_log(t), "conflict log of {t}");
    }
    assert_eq!(
        pg.psql("replica", "SELECT tags FROM t_union WHERE id = 1"),
        "[\"a\", \"local\", \"remote\"]"
    );
    // `ferry conflicts` lists them.
    let out = std::process::Command::new(ferry_bin())
        .args(["conflicts", "--json", "--table", "t_lww", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    assert_eq!(listed[0]["remote_node"], "shop");
    assert!(metric(&ferry, "ferry_conflicts_total") >= 0.0);
}

#[test]
fn the_error_resolver_stops_naming_table_key_and_both_rows() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text); INSERT INTO accounts VALUES (7, 'ann');",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "strict",
        &format!(
            "[pipeline]\nname = \"strict\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\nconflict = \"error\"\n",
            pg.url("shop"),
            pg.url("replica")
        ),
    );
    let mut ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    wait_same(&pg, "SELECT id, owner FROM accounts", &ferry);
    pg.psql("replica", "UPDATE accounts SET owner = 'bob' WHERE id = 7");
    pg.psql("shop", "UPDATE accounts SET owner = 'cy' WHERE id = 7");
    assert!(
        ferry.wait_exit(WAIT).is_some_and(|s| !s.success()),
        "ferry kept running:\n{}",
        ferry.log()
    );
    let log = ferry.log();
    for part in [
        "public.accounts",
        "update_origin_differs",
        "(id) = (7)",
        "\"owner\":\"bob\"",
        "\"owner\":\"cy\"",
    ] {
        assert!(log.contains(part), "the error does not say {part}:\n{log}");
    }
    assert_eq!(pg.psql("replica", "SELECT owner FROM accounts"), "bob");
}

#[test]
fn a_bidirectional_pair_keeps_exactly_once_under_sigkill() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(
            db,
            "CREATE TABLE events (node text, seq int, PRIMARY KEY (node, seq));
             CREATE TABLE totals (id int PRIMARY KEY, n bigint NOT NULL);
             ALTER TABLE totals REPLICA IDENTITY FULL;
             CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL, writer text NOT NULL);
             ALTER TABLE kv REPLICA IDENTITY FULL;",
        );
    }
    pg.psql(
        "a",
        "INSERT INTO totals SELECT g, 0 FROM generate_series(0, 4) g",
    );
    let dir = scratch();
    let sink =
        "conflict = \"last_write_wins\"\n[[sink.conflict_rules]]\ntables = [\"public.totals\"]\n\
                columns = { n = \"sum_delta\" }\n";
    let (ab, ba, a_to_b, b_to_a) = start_pair(&pg, dir.path(), "", sink);
    wait_converged(&pg, "SELECT count(*) FROM totals", &ab, &ba);
    drop((ab, ba));
    let port = pg.port;
    // Each transaction appends an event, counts it in a total (sum_delta: a lost or repeated apply shows) and
    // overwrites a shared key (last-write-wins).
    let writers = Writers::start(2, move |w, seq| {
        let (db, node) = if w == 0 { ("a", "a") } else { ("b", "b") };
        psql_ok(
            port,
            db,
            &format!(
                "BEGIN; INSERT INTO events VALUES ('{node}', {seq});
                 UPDATE totals SET n = n + 1 WHERE id = {};
                 INSERT INTO kv VALUES ({}, {seq}, '{node}') ON CONFLICT (id) DO UPDATE SET v = excluded.v, writer = excluded.writer;
                 COMMIT;",
                seq % 5,
                seq % 20
            ),
        )
    });
    let (log_ab, log_ba) = (dir.path().join("a_to_b.log"), dir.path().join("b_to_a.log"));
    std::thread::scope(|s| {
        s.spawn(|| kill_randomly(&a_to_b, &log_ab, 5));
        kill_randomly(&b_to_a, &log_ba, 5);
    });
    let writes = writers.stop();
    let total: i32 = writes.iter().sum();
    let ab = Ferry::start(&a_to_b, &log_ab);
    let ba = Ferry::start(&b_to_a, &log_ba);
    // Equal counts on both sides can be a passing moment (each side missing some of the other's); the
    // listing is equal only when both have every event.
    wait_converged(
        &pg,
        "SELECT node, seq FROM events ORDER BY node, seq",
        &ab,
        &ba,
    );
    assert_eq!(
        pg.psql("a", "SELECT count(*) FROM events")
            .parse::<i32>()
            .unwrap(),
        total,
        "events lost or duplicated"
    );
    let sums = || {
        ["a", "b"].map(|db| {
            pg.psql(db, "SELECT sum(n) FROM totals")
                .parse::<i32>()
                .unwrap()
        })
    };
    wait_until(WAIT, || sums() == [total, total]);
    assert_eq!(
        sums(),
        [total, total],
        "an increment was lost or applied twice"
    );
    wait_converged(
        &pg,
        "SELECT id, n, _ferry_ts, _ferry_node FROM totals ORDER BY id",
        &ab,
        &ba,
    );
    wait_converged(
        &pg,
        "SELECT id, v, writer, _ferry_ts, _ferry_node FROM kv ORDER BY id",
        &ab,
        &ba,
    );
}

#[test]
fn two_pipelines_that_would_loop_are_refused_and_check_names_the_fix() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(db, "CREATE TABLE c (id int PRIMARY KEY, n int NOT NULL);");
    }
    let dir = scratch();
    let sink =
        "[[sink.conflict_rules]]\ntables = [\"public.c\"]\ncolumns = { n = \"sum_delta\" }\n";
    let a_to_b = write_config(
        dir.path(),
        "a_to_b",
        &(side(&pg, "a_to_b", "a", "a", "b", "") + sink),
    );
    // The mirror without origins = "local": it would send A→B's changes back to A.
    let looping = side(&pg, "b_to_a", "b", "b", "a", "snapshot = \"never\"")
        .replace("origins = \"local\"\n", "");
    let b_to_a = write_config(dir.path(), "b_to_a", &looping);
    let ab = Ferry::start(&a_to_b, &dir.path().join("a_to_b.log"));
    ab.wait_streaming();
    pg.psql("a", "INSERT INTO c VALUES (1, 1)");
    assert!(wait_until(WAIT, || pg.psql("b", "SELECT count(*) FROM c") == "1"));
    let mut ba = Ferry::start(&b_to_a, &dir.path().join("b_to_a.log"));
    assert!(
        ba.wait_exit(WAIT).is_some_and(|s| !s.success()),
        "the looping pipeline ran:\n{}",
        ba.log()
    );
    let log = ba.log();
    for part in [
        "pipeline a_to_b",
        "slot ferry_a_to_b",
        "origins = \"local\"",
    ] {
        assert!(log.contains(part), "the error does not say {part}:\n{log}");
    }
    // `ferry check` says the same, and that sum_delta needs REPLICA IDENTITY FULL on A.
    let out = Command::new(ferry_bin())
        .args(["check", "--config"])
        .arg(&b_to_a)
        .arg(&a_to_b)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAIL loop"), "{text}");
    // A multi-master source logs whole old rows on its tables, which sum_delta needs.
    assert!(text.contains("ok   sum_delta old values"), "{text}");
    assert_eq!(
        pg.psql("a", "SELECT relreplident FROM pg_class WHERE relname = 'c'"),
        "f"
    );
    assert!(
        text.contains("origin: may apply under a replication origin"),
        "{text}"
    );
}

#[test]
fn version_vectors_tell_a_causal_chain_from_concurrent_writes() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(
            db,
            "CREATE TABLE vv_t (id int PRIMARY KEY, v text NOT NULL);
             ALTER TABLE vv_t REPLICA IDENTITY FULL;",
        );
    }
    pg.psql(
        "a",
        "INSERT INTO vv_t SELECT g, 'seed' FROM generate_series(1, 3) g",
    );
    let dir = scratch();
    let sink =
        "conflict = \"last_write_wins\"\n[[sink.conflict_rules]]\ntables = [\"public.vv_t\"]\n\
                version_vectors = true\n";
    let (ab, ba, a_to_b, b_to_a) = start_pair(&pg, dir.path(), "", sink);
    wait_converged(&pg, "SELECT count(*) FROM vv_t", &ab, &ba);
    let on = |db: &str, sql: &str, then_db: &str, want: &str| {
        pg.psql(db, sql);
        let seen = wait_until(WAIT, || {
            pg.psql(then_db, "SELECT v FROM vv_t WHERE id = 1") == want
        });
        assert!(
            seen,
            "{want} did not reach {then_db}:\n{}\n{}",
            ab.log(),
            ba.log()
        );
    };
    // A causal chain: each write follows the other side's, so none is a conflict.
    on("a", "UPDATE vv_t SET v = 'a1' WHERE id = 1", "b", "a1");
    on("b", "UPDATE vv_t SET v = 'b1' WHERE id = 1", "a", "b1");
    on("a", "UPDATE vv_t SET v = 'a2' WHERE id = 1", "b", "a2");
    let rows = "SELECT id, v, _ferry_vv::text, _ferry_ts, _ferry_node FROM vv_t ORDER BY id";
    wait_converged(&pg, rows, &ab, &ba);
    for db in ["a", "b"] {
        assert_eq!(
            conflicts(&pg, db),
            Vec::<String>::new(),
            "conflicts in {db}"
        );
    }
    assert_eq!(
        pg.psql("a", "SELECT _ferry_vv::text FROM vv_t WHERE id = 1"),
        "{\"a\": 2, \"b\": 1}"
    );
    // Concurrent writes to row 2 while neither pipeline runs: one conflict on each side, the later write wins.
    ab.terminate();
    ba.terminate();
    pg.psql("a", "UPDATE vv_t SET v = 'a-conc' WHERE id = 2");
    std::thread::sleep(Duration::from_millis(5));
    pg.psql("b", "UPDATE vv_t SET v = 'b-conc' WHERE id = 2");
    // An update and a delete of row 3 that cross.
    pg.psql("a", "DELETE FROM vv_t WHERE id = 3");
    pg.psql("b", "UPDATE vv_t SET v = 'b3' WHERE id = 3");
    let ab = Ferry::start(&a_to_b, &dir.path().join("a_to_b.log"));
    let ba = Ferry::start(&b_to_a, &dir.path().join("b_to_a.log"));
    let converged = wait_converged(&pg, rows, &ab, &ba);
    assert!(converged.contains("2|b-conc|"), "{converged}");
    let row2 = |db: &str| -> Vec<String> {
        conflicts(&pg, db)
            .into_iter()
            .filter(|l| l.contains("(id) = (2)"))
            .collect()
    };
    for (db, winner) in [("a", "remote"), ("b", "local")] {
        let log = row2(db);
        assert_eq!(log.len(), 1, "conflicts on row 2 in {db}: {log:?}");
        let f: Vec<&str> = log[0].split('|').collect();
        assert_eq!(
            (f[2], f[3]),
            ("update_origin_differs", winner),
            "{db}: {log:?}"
        );
    }
}

#[test]
fn union_merges_json_arrays_from_both_sides() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE tagged (id int PRIMARY KEY, tags jsonb, note text);
         INSERT INTO tagged VALUES (1, '[\"a\"]', 'x'), (2, NULL, 'y');",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "tags",
        &format!(
            "[pipeline]\nname = \"tags\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n[[sink.conflict_rules]]\ntables = [\"public.tagged\"]\n\
             conflict = \"keep_local\"\ncolumns = {{ tags = \"union\" }}\n",
            pg.url("shop"),
            pg.url("replica")
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    wait_same(&pg, "SELECT id, tags, note FROM tagged ORDER BY id", &ferry);
    pg.psql(
        "replica",
        "UPDATE tagged SET tags = '[\"a\", \"local\"]', note = 'mine' WHERE id = 1;
         UPDATE tagged SET tags = '\"solo\"' WHERE id = 2;",
    );
    pg.psql(
        "shop",
        "UPDATE tagged SET tags = '[\"remote\", \"a\", \"remote\"]', note = 'theirs' WHERE id = 1;
         UPDATE tagged SET tags = '[1, {\"k\": 2}]' WHERE id = 2;",
    );
    let want = "1|[\"a\", \"local\", \"remote\"]|mine\n2|[\"solo\", 1, {\"k\": 2}]|y";
    let ok = wait_until(WAIT, || {
        pg.psql("replica", "SELECT id, tags, note FROM tagged ORDER BY id") == want
    });
    assert!(
        ok,
        "{}\n{}",
        pg.psql("replica", "SELECT id, tags, note FROM tagged ORDER BY id"),
        ferry.log()
    );
}

/// A union rule on a bidirectional pair: each side sees the other's write as the remote one, and both must end
/// with the same array, in the same order (the earlier write's elements first).
#[test]
fn union_gives_both_sides_of_a_pair_the_same_array() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(
            db,
            "CREATE TABLE tagged (id int PRIMARY KEY, tags jsonb, note text);
             ALTER TABLE tagged REPLICA IDENTITY FULL;",
        );
    }
    pg.psql(
        "a",
        "INSERT INTO tagged VALUES (1, '[\"a\"]', 'x'), (2, NULL, 'y')",
    );
    let dir = scratch();
    let sink =
        "conflict = \"last_write_wins\"\n[[sink.conflict_rules]]\ntables = [\"public.tagged\"]\n\
                columns = { tags = \"union\" }\n";
    let (ab, ba, a_to_b, b_to_a) = start_pair(&pg, dir.path(), "", sink);
    let rows = "SELECT id, tags, note, _ferry_ts, _ferry_node FROM tagged ORDER BY id";
    wait_converged(&pg, rows, &ab, &ba);
    ab.terminate();
    ba.terminate();
    pg.psql(
        "a",
        "UPDATE tagged SET tags = '[\"a\", \"from-a\", 1]', note = 'a' WHERE id = 1;
         UPDATE tagged SET tags = '[{\"k\": 1}]' WHERE id = 2;",
    );
    std::thread::sleep(Duration::from_millis(5));
    pg.psql(
        "b",
        "UPDATE tagged SET tags = '[1, \"from-b\", \"a\"]', note = 'b' WHERE id = 1;
         UPDATE tagged SET tags = '\"solo\"' WHERE id = 2;",
    );
    let ab = Ferry::start(&a_to_b, &dir.path().join("a_to_b.log"));
    let ba = Ferry::start(&b_to_a, &dir.path().join("b_to_a.log"));
    let converged = wait_converged(&pg, rows, &ab, &ba);
    // A wrote first: its elements lead on both sides; the note is the later write's.
    let lines: Vec<&str> = converged.lines().collect();
    assert!(
        lines[0].starts_with("1|[\"a\", \"from-a\", 1, \"from-b\"]|b|"),
        "{converged}"
    );
    assert!(
        lines[1].starts_with("2|[{\"k\": 1}, \"solo\"]|y|"),
        "{converged}"
    );
}

#[test]
fn a_merge_expression_combines_concurrent_writes_on_both_sides() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(
            db,
            "CREATE TABLE stock (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL, other text);
             ALTER TABLE stock REPLICA IDENTITY FULL;",
        );
    }
    pg.psql(
        "a",
        "INSERT INTO stock VALUES (1, 5, 'n', 'o'), (2, 5, 'n', 'o')",
    );
    let dir = scratch();
    // Symmetric in local and remote, so both sides compute the same row.
    let sink = "conflict = \"last_write_wins\"\n[[sink.conflict_rules]]\ntables = [\"public.stock\"]\n\
                merge = '''{\"qty\": int(local.qty) > int(remote.qty) ? local.qty : remote.qty, \
                \"note\": local.note < remote.note ? local.note + \"+\" + remote.note : remote.note + \"+\" + local.note}'''\n";
    let (ab, ba, a_to_b, b_to_a) = start_pair(&pg, dir.path(), "", sink);
    let rows = "SELECT id, qty, note, other, _ferry_ts, _ferry_node FROM stock ORDER BY id";
    wait_converged(&pg, rows, &ab, &ba);
    ab.terminate();
    ba.terminate();
    pg.psql("a", "UPDATE stock SET qty = 10, note = 'x' WHERE id = 1");
    pg.psql(
        "b",
        "UPDATE stock SET qty = 7, note = 'y', other = 'b' WHERE id = 1",
    );
    let ab = Ferry::start(&a_to_b, &dir.path().join("a_to_b.log"));
    let ba = Ferry::start(&b_to_a, &dir.path().join("b_to_a.log"));
    let converged = wait_converged(&pg, rows, &ab, &ba);
    // qty: the larger; note: both; other (not in the expression): the later write's, B's.
    let row1 = converged.lines().next().unwrap();
    assert!(row1.starts_with("1|10|x+y|b|"), "{converged}");
    for db in ["a", "b"] {
        let log = conflicts(&pg, db);
        assert_eq!(log.len(), 1, "{db}: {log:?}");
        let f: Vec<&str> = log[0].split('|').collect();
        assert_eq!((f[3], f[8]), ("merged", "merge"), "{db}: {log:?}");
    }
}

/// The races an attack on the first version found, each a kind: a delete crossing an update on a table created
/// with the default replica identity, edits in turn under first_write_wins, a timestamptz key deleted from a
/// session in another time zone, and a key change crossing an edit. Both sides must end identical.
#[test]
fn crossing_deletes_edits_in_turn_zoned_keys_and_key_changes_converge() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(
            db,
            "CREATE TABLE d1 (id int PRIMARY KEY, v text);
             CREATE TABLE fww (id int PRIMARY KEY, v text);
             CREATE TABLE zoned (k timestamptz PRIMARY KEY, v text);
             CREATE TABLE moved (id int PRIMARY KEY, v text);",
        );
    }
    pg.psql(
        "a",
        "INSERT INTO d1 VALUES (1, 'seed'); INSERT INTO zoned VALUES ('2026-01-01 12:00+00', 'seed');
         INSERT INTO moved VALUES (30, 'seed');",
    );
    let dir = scratch();
    let sink = "conflict = \"last_write_wins\"\n[[sink.conflict_rules]]\ntables = [\"public.fww\", \"public.zoned\"]\n\
                conflict = \"first_write_wins\"\n";
    let (ab, ba, a_to_b, b_to_a) = start_pair(&pg, dir.path(), "", sink);
    let all = "SELECT 'd1', id::text, v, _ferry_ts, _ferry_node FROM d1 \
               UNION ALL SELECT 'fww', id::text, v, _ferry_ts, _ferry_node FROM fww \
               UNION ALL SELECT 'zoned', k::text, v, _ferry_ts, _ferry_node FROM zoned \
               UNION ALL SELECT 'moved', id::text, v, _ferry_ts, _ferry_node FROM moved ORDER BY 1, 2";
    wait_converged(&pg, all, &ab, &ba);
    // Edits in turn under first_write_wins: each follows the other, so each applies (no conflict).
    pg.psql("a", "INSERT INTO fww VALUES (1, 'a-first')");
    assert!(wait_until(WAIT, || pg
        .psql("b", "SELECT count(*) FROM fww")
        == "1"));
    pg.psql("b", "UPDATE fww SET v = 'b-later-edit' WHERE id = 1");
    assert!(wait_until(WAIT, || pg.psql("a", "SELECT v FROM fww") == "b-later-edit"));
    // Crossing changes while neither pipeline runs.
    ab.terminate();
    ba.terminate();
    pg.psql("b", "UPDATE d1 SET v = 'q-update' WHERE id = 1");
    pg.psql("a", "DELETE FROM d1 WHERE id = 1");
    pg.psql("b", "UPDATE zoned SET v = 'b-edit'");
    pg.psql(
        "a",
        "SET TimeZone = 'Asia/Kolkata'; DELETE FROM zoned WHERE k = '2026-01-01 12:00+00'",
    );
    pg.psql("b", "UPDATE moved SET v = 'b-edit' WHERE id = 30");
    pg.psql("a", "UPDATE moved SET id = 31 WHERE id = 30");
    let ab = Ferry::start(&a_to_b, &dir.path().join("a_to_b.log"));
    let ba = Ferry::start(&b_to_a, &dir.path().join("b_to_a.log"));
    let rows = wait_converged(&pg, all, &ab, &ba);
    let values: Vec<String> = rows
        .lines()
        .map(|l| l.split('|').take(3).collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(
        values,
        [
            // The update crossed the delete: the later write wins, on both sides.
            "d1|1|q-update",
            "fww|1|b-later-edit",
            // The edit of the old key survives beside the moved row.
            "moved|30|b-edit",
            "moved|31|seed",
            // first_write_wins: the delete came first, on both sides (its tombstone was found whatever the
            // deleting session's time zone).
        ],
        "{rows}"
    );
    for db in ["a", "b"] {
        assert!(
            !conflicts(&pg, db).iter().any(|l| l.contains("public.fww")),
            "edits in turn logged as conflicts in {db}"
        );
    }
}

/// A delete that commits on B while A's older change of the same row waits there for the row's lock: the change
/// must meet the delete's tombstone, not the snapshot its statement began with (which still held the row), or B
/// keeps a row that A deletes when B's delete arrives.
#[test]
fn a_delete_committed_while_an_older_change_waits_for_the_row_is_not_undone() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(db, "CREATE TABLE kv (id int PRIMARY KEY, v text)");
    }
    pg.psql("a", "INSERT INTO kv VALUES (1, 'seed'), (2, 'seed')");
    let dir = scratch();
    let (ab, ba, _, b_to_a) = start_pair(&pg, dir.path(), "", "conflict = \"last_write_wins\"\n");
    let all = "SELECT id, v, _ferry_ts, _ferry_node FROM kv ORDER BY id";
    wait_converged(&pg, all, &ab, &ba);
    // B writes row 1 (A does not hear of it yet), so A's next change of it meets a row of another writer in B.
    ba.terminate();
    pg.psql("b", "UPDATE kv SET v = 'b-first' WHERE id = 1");
    let mut b = SqlSession::open(pg.port, "b");
    b.send("BEGIN; SELECT id FROM kv WHERE id = 1 FOR UPDATE;");
    pg.psql("a", "UPDATE kv SET v = 'a-older' WHERE id = 1");
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'b' AND wait_event_type = 'Lock'";
    assert!(
        wait_until(WAIT, || pg.psql("b", waiting) == "1"),
        "A's change never waited for B's lock\n{}",
        ab.log()
    );
    // B's last write and its delete come after A's change: the delete wins everywhere.
    assert!(
        b.finish("UPDATE kv SET v = 'b-later' WHERE id = 1; DELETE FROM kv WHERE id = 1; COMMIT;")
    );
    let ba = Ferry::start(&b_to_a, &dir.path().join("b_to_a.log"));
    assert!(
        wait_until(WAIT, || pg
            .psql("a", "SELECT count(*) FROM kv WHERE id = 1")
            == "0"),
        "B's delete never reached A\n{}",
        ba.log()
    );
    let rows = wait_converged(&pg, all, &ab, &ba);
    let values: Vec<&str> = rows.lines().map(|l| l.split('|').nth(1).unwrap()).collect();
    assert_eq!(values, ["seed"], "{rows}");
}

#[test]
fn unique_collisions_and_truncates_stop_the_pipeline_naming_them() {
    let pg = two_databases();
    for db in ["a", "b"] {
        pg.psql(
            db,
            "CREATE TABLE uq (id int PRIMARY KEY, email text UNIQUE);
             CREATE TABLE tt (id int PRIMARY KEY, v text);",
        );
    }
    pg.psql("a", "INSERT INTO tt VALUES (1, 'x')");
    let dir = scratch();
    let (ab, ba, ab_config, ba_config) =
        start_pair(&pg, dir.path(), "", "conflict = \"last_write_wins\"\n");
    assert!(wait_until(WAIT, || pg.psql("b", "SELECT count(*) FROM tt") == "1"));
    // Two keys with one unique value, one per side, written while both pipelines are stopped (else one side's
    // row may reach the other before the test writes there): each target refuses the other's, naming the index.
    assert!(ab.terminate().success() && ba.terminate().success());
    pg.psql("a", "INSERT INTO uq VALUES (1, 'x@y')");
    pg.psql("b", "INSERT INTO uq VALUES (2, 'x@y')");
    let mut ab = Ferry::start(&ab_config, &dir.path().join("ab2.log"));
    let mut ba = Ferry::start(&ba_config, &dir.path().join("ba2.log"));
    let stopped = |f: &mut Ferry| f.wait_exit(Duration::from_secs(20)).is_some();
    let (ab_stopped, ba_stopped) = (stopped(&mut ab), stopped(&mut ba));
    assert!(ab_stopped && ba_stopped, "{}\n{}", ab.log(), ba.log());
    for log in [ab.log(), ba.log()] {
        assert!(log.contains("uq_email_key"), "{log}");
    }
    // A TRUNCATE of a table both sides write stops the pipeline instead of erasing the other side's rows.
    pg.psql("a", "DELETE FROM uq; TRUNCATE tt");
    pg.psql("b", "DELETE FROM uq");
    let dir2 = scratch();
    let a_to_b = write_config(
        dir2.path(),
        "a_to_b",
        &(side(&pg, "a_to_b", "a", "a", "b", "") + "conflict = \"last_write_wins\"\n"),
    );
    let mut ab = Ferry::start(&a_to_b, &dir.path().join("a_to_b.log"));
    assert!(
        ab.wait_exit(WAIT).is_some_and(|s| !s.success()),
        "{}",
        ab.log()
    );
    let log = ab.log();
    assert!(
        log.contains("a TRUNCATE of table public.tt, which is under a conflict rule"),
        "{log}"
    );
    assert_eq!(pg.psql("b", "SELECT count(*) FROM tt"), "1");
}

/// Three primaries, a pipeline for each ordered pair (six, each with `origins = "local"`): pgbench writes
/// overlapping keys on all three at once, with deletes; afterwards all three are identical row by row, versions
/// included, and no pipeline applied more than its source's clients wrote (nothing is forwarded or bounced).
#[test]
fn three_primaries_converge_with_last_write_wins() {
    let pg = PgServer::start();
    let nodes = ["a", "b", "c"];
    for db in nodes {
        pg.create_db(db);
        pg.psql(
            db,
            "CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL, writer text NOT NULL);
             ALTER TABLE kv REPLICA IDENTITY FULL;",
        );
    }
    pg.psql(
        "a",
        "INSERT INTO kv SELECT g, 0, 'seed' FROM generate_series(1, 100) g",
    );
    let dir = scratch();
    let sink = "conflict = \"last_write_wins\"\n";
    let mut pipelines = Vec::new();
    // A copies its rows to B and C first; the other four start from their source's current position.
    for (from, to) in [
        ("a", "b"),
        ("a", "c"),
        ("b", "a"),
        ("b", "c"),
        ("c", "a"),
        ("c", "b"),
    ] {
        let name = format!("{from}_to_{to}");
        let extra = if from == "a" {
            ""
        } else {
            "snapshot = \"never\"\n"
        };
        let config = write_config(
            dir.path(),
            &name,
            &(side(&pg, &name, from, from, to, extra) + sink),
        );
        let ferry = Ferry::start(&config, &dir.path().join(format!("{name}.log")));
        ferry.wait_streaming();
        if from == "a" {
            assert!(wait_until(WAIT, || pg.psql(to, "SELECT count(*) FROM kv") == "100"));
        }
        pipelines.push((from, ferry));
    }
    let script = |node: &str| {
        format!(
            "\\set k random(1, 100)\n\\set v random(1, 1000000)\n\\set d random(1, 15)\n\
             \\if :d = 1\nDELETE FROM kv WHERE id = :k;\n\\else\n\
             INSERT INTO kv VALUES (:k, :v, '{node}') ON CONFLICT (id) DO UPDATE SET v = excluded.v, writer = excluded.writer;\n\
             \\endif\n"
        )
    };
    let pg_ref = &pg;
    let writes: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|&node| {
                let script = script(node);
                s.spawn(move || {
                    pgbench(pg_ref, node, &script, &["-c", "1", "-T", "20", "-R", "150"])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!("writes: {writes:?}");
    let rows = "SELECT id, v, writer, _ferry_ts, _ferry_node FROM kv ORDER BY id";
    let same = || {
        let [a, b, c] = nodes.map(|db| pg.try_psql(db, rows).ok());
        a.is_some() && a == b && b == c
    };
    let converged = wait_until(WAIT, same);
    let logs: String = pipelines
        .iter()
        .map(|(from, f)| format!("--- from {from}\n{}", f.log()))
        .collect();
    assert!(
        converged,
        "the three databases differ\n--- a\n{}\n--- b\n{}\n--- c\n{}\n{logs}",
        pg.psql("a", rows),
        pg.psql("b", rows),
        pg.psql("c", rows)
    );
    assert!(pg.psql("a", rows).lines().count() > 10);
    // Each pipeline applied at most what its source's clients wrote (and A's 100 copied rows).
    for (i, node) in nodes.iter().enumerate() {
        let applied: f64 = pipelines
            .iter()
            .filter(|(from, _)| from == node)
            .map(|(_, f)| metric(f, "ferry_sink_rows_total"))
            .sum();
        let copied = if *node == "a" { 200.0 } else { 0.0 };
        assert!(
            applied <= 2.0 * writes[i] as f64 + copied,
            "{node}'s pipelines applied {applied} rows for {} writes",
            writes[i]
        );
    }
}

/// The source's tombstone trigger names the key's columns as they are when a row is deleted: renaming a key
/// column of a prepared table must not make the application's deletes fail (found by an attack: `column "id" not
/// found in data type`), and the tombstone still carries the key.
#[test]
fn deletes_keep_working_after_a_key_column_is_renamed() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE c1 (id int PRIMARY KEY, v text); INSERT INTO c1 VALUES (1, 'a'), (2, 'b');",
    );
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "rk",
        &format!(
            "[pipeline]\nname = \"rk\"\nnode = \"a\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\nconflict = \"last_write_wins\"\n",
            pg.url("shop"),
            pg.url("replica")
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "ALTER TABLE c1 RENAME COLUMN id TO kid; DELETE FROM c1 WHERE kid = 1; UPDATE c1 SET kid = 3 WHERE kid = 2;",
    );
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT table_name, key FROM ferry_tombstones ORDER BY key"
        ),
        "public.c1|{1}\npublic.c1|{2}"
    );
    wait_same(&pg, "SELECT kid, v FROM c1 ORDER BY kid", &ferry);
}
