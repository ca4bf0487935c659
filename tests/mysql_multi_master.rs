//! End-to-end: PostgreSQL and MariaDB replicating into each other (PG→MariaDB and MariaDB→PG, both with
//! `origins = "local"` and last-write-wins), under concurrent writes to overlapping keys on both. Both sides must end
//! identical row by row, versions included, without either pipeline applying the other's changes back.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// The PostgreSQL → MariaDB and MariaDB → PostgreSQL configs of a pair (database `shop` on both), with
/// last-write-wins and `sink_extra` on both sinks.
fn pair_configs(
    pg: &PgServer,
    my: &MariaDbServer,
    dir: &std::path::Path,
    sink_extra: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let p2m = write_config(
        dir,
        "p2m",
        &format!(
            "[pipeline]\nname = \"p2m\"\nnode = \"pg\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\norigins = \"local\"\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\nconflict = \"last_write_wins\"\n{sink_extra}",
            pg.url("shop"),
            my.url("shop")
        ),
    );
    let m2p = write_config(
        dir,
        "m2p",
        &format!(
            "[pipeline]\nname = \"m2p\"\nnode = \"maria\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"mysql\"\nurl = \"{}\"\nserver_id = 7501\norigins = \"local\"\nsnapshot = \"never\"\n\
             [[transform]]\ntype = \"route\"\ntables = [\"shop.*\"]\nto = \"public.{{table}}\"\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\nconflict = \"last_write_wins\"\n{sink_extra}",
            my.url("shop"),
            pg.url("shop")
        ),
    );
    (p2m, m2p)
}

#[test]
fn postgres_and_mariadb_converge_with_last_write_wins() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL, writer varchar(10) NOT NULL);
         ALTER TABLE kv REPLICA IDENTITY FULL;
         INSERT INTO kv SELECT g, 0, 'seed' FROM generate_series(1, 30) g;",
    );
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let dir = scratch();
    let (p2m, m2p) = pair_configs(&pg, &my, dir.path(), "");
    let (log_p2m, log_m2p) = (dir.path().join("p2m.log"), dir.path().join("m2p.log"));
    let a = Ferry::start(&p2m, &log_p2m);
    a.wait_streaming();
    let copied = wait_until(WAIT, || {
        my.try_sql("SELECT count(*) FROM shop.kv").ok().as_deref() == Some("30")
    });
    assert!(copied, "the snapshot did not reach MariaDB:\n{}", a.log());
    let b = Ferry::start(&m2p, &log_m2p);
    b.wait_streaming();
    let (pg_port, my_port) = (pg.port, my.port);
    // Overlapping keys from both sides, with deletes and re-inserts.
    let writers = Writers::start(2, move |w, seq| {
        let k = (seq * 7 + w as i32 * 3) % 30 + 1;
        if w == 0 {
            let sql = if seq % 13 == 0 {
                format!("DELETE FROM kv WHERE id = {k}")
            } else {
                format!("INSERT INTO kv VALUES ({k}, {seq}, 'pg') ON CONFLICT (id) DO UPDATE SET v = excluded.v, writer = excluded.writer")
            };
            psql_ok(pg_port, "shop", &sql)
        } else {
            let sql = if seq % 11 == 0 {
                format!("DELETE FROM kv WHERE id = {k}")
            } else {
                format!("INSERT INTO kv (id, v, writer) VALUES ({k}, {seq}, 'maria') ON DUPLICATE KEY UPDATE v = VALUES(v), writer = VALUES(writer)")
            };
            mariadb_ok(my_port, "shop", &sql)
        }
    });
    std::thread::sleep(Duration::from_secs(15));
    let writes = writers.stop();
    let pg_rows = || {
        pg.try_psql(
            "shop",
            "SELECT id, v, writer, _ferry_ts, coalesce(_ferry_node, '-') FROM kv ORDER BY id",
        )
        .unwrap_or_default()
    };
    let my_rows = || {
        my.try_sql(
            "SELECT id, v, writer, _ferry_ts, coalesce(_ferry_node, '-') FROM shop.kv ORDER BY id",
        )
        .unwrap_or_default()
        .replace('\t', "|")
    };
    let converged = wait_until(WAIT, || pg_rows() == my_rows());
    assert!(
        converged,
        "PostgreSQL and MariaDB differ\n--- pg\n{}\n--- mariadb\n{}\n--- p2m\n{}\n--- m2p\n{}",
        pg_rows(),
        my_rows(),
        a.log(),
        b.log()
    );
    assert!(pg_rows().lines().count() > 10, "rows: {}", pg_rows());
    // No ping-pong: each pipeline applied at most what its source's clients wrote (and the 30 copied rows).
    let (applied_p2m, applied_m2p) = (
        metric(&a, "ferry_sink_rows_total"),
        metric(&b, "ferry_sink_rows_total"),
    );
    assert!(
        applied_p2m <= (writes[0] + 30) as f64 && applied_m2p <= writes[1] as f64,
        "applied {applied_p2m} / {applied_m2p} rows for {writes:?} writes"
    );
    assert!(metric(&b, "ferry_source_origin_skipped_total") > 0.0);
    // A PostgreSQL delete Ferry applies leaves its tombstone in MariaDB, with PostgreSQL's node.
    let key = pg.psql("shop", "SELECT min(id) FROM kv");
    pg.psql("shop", &format!("DELETE FROM kv WHERE id = {key}"));
    let tombstone = || {
        my.try_sql(&format!(
            "SELECT _ferry_node FROM shop.ferry_tombstones WHERE `key` = '[{key}]'"
        ))
        .unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || tombstone() == "pg"),
        "tombstone of {key}: {:?}\n{}",
        tombstone(),
        a.log()
    );
    assert!(metric(&a, "ferry_source_origin_skipped_total") > 0.0);
    // Both conflict logs agree with last-write-wins.
    let check = |log: String| {
        for line in log.lines() {
            let f: Vec<&str> = line.split(['|', '\t']).collect();
            if f[2] == "update_origin_differs" || f[2] == "insert_exists" {
                let local = (f[4].parse::<i64>().unwrap(), f[5]);
                let remote = (f[6].parse::<i64>().unwrap(), f[7]);
                assert_eq!(f[3] == "remote", remote > local, "{line}");
            }
        }
        log.lines().count()
    };
    let sql = "SELECT table_name, `key`, kind, winner, local_ts, local_node, remote_ts, remote_node FROM ferry_conflicts";
    let in_pg = check(pg.psql("shop", &sql.replace('`', "\"")));
    let in_my = check(my.sql(&sql.replace("ferry_conflicts", "shop.ferry_conflicts")));
    println!("conflicts: {in_pg} in PostgreSQL, {in_my} in MariaDB");
    assert!(in_pg + in_my > 0, "no conflict was met");
    // `ferry conflicts` reads the MariaDB target's log too.
    let out = std::process::Command::new(ferry_bin())
        .args(["conflicts", "--json", "--config"])
        .arg(&p2m)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(in_my), "{listed}");
}

/// Every resolver and merge rule into a MariaDB target that is also written locally: the rows each leaves and the
/// conflicts each logs (the same cases, and the same outcomes, as the PostgreSQL target's test: the update that
/// crossed a local delete meets the delete's tombstone).
#[test]
fn each_resolver_and_merge_rule_gives_its_rows_in_mariadb() {
    let pg = PgServer::start();
    pg.create_db("shop");
    let rules = resolver_tables(&pg, "shop");
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "resolve",
        &format!(
            "[pipeline]\nname = \"resolve\"\nnode = \"pg\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n{rules}",
            pg.url("shop"),
            my.url("shop")
        ),
    );
    let log = dir.path().join("ferry.log");
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    let copied = wait_until(WAIT, || {
        my.try_sql("SELECT count(*) FROM shop.t_union")
            .ok()
            .as_deref()
            == Some("3")
    });
    assert!(
        copied,
        "the snapshot did not reach MariaDB:\n{}",
        ferry.log()
    );
    let each = |sql: &str, local: bool| {
        for (t, _) in RESOLVER_CASES {
            let sql = sql.replace("{t}", t);
            if local {
                my.sql(
                    &sql.replace("UPDATE ", "UPDATE shop.")
                        .replace("FROM ", "FROM shop."),
                );
            } else {
                pg.psql("shop", &sql);
            }
        }
    };
    let logged = |n: usize| {
        wait_until(WAIT, || {
            my.try_sql("SELECT count(*) FROM shop.ferry_conflicts")
                .is_ok_and(|c| c.trim().parse::<usize>().unwrap_or(0) >= n)
        })
    };
    // Row 1: the target writes first, the source later.
    each(
        "UPDATE {t} SET a = 100, b = NULL, tags = '[\"a\", \"local\"]' WHERE id = 1",
        true,
    );
    each(
        "UPDATE {t} SET a = 50, b = 'src', tags = '[\"remote\", \"a\", \"remote\"]' WHERE id = 1",
        false,
    );
    // Row 3: deleted on the target, then updated at the source.
    each("DELETE FROM {t} WHERE id = 3", true);
    each("UPDATE {t} SET a = 33 WHERE id = 3", false);
    let conflict_log = || {
        my.try_sql("SELECT table_name, `key`, kind, winner FROM shop.ferry_conflicts ORDER BY id")
            .unwrap_or_default()
    };
    assert!(
        logged(20),
        "conflicts not logged:\n{}\n{}",
        conflict_log(),
        ferry.log()
    );
    // Row 2: the source writes first while Ferry is stopped, the target later.
    ferry.terminate();
    each("UPDATE {t} SET a = 60, b = 'src2' WHERE id = 2", false);
    std::thread::sleep(Duration::from_millis(5));
    each("UPDATE {t} SET a = 200, b = 'local2' WHERE id = 2", true);
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    assert!(
        logged(30),
        "conflicts not logged:\n{}\n{}",
        conflict_log(),
        ferry.log()
    );
    let rows = |t: &str| {
        my.sql(&format!("SELECT id, a, b FROM shop.{t} ORDER BY id"))
            .replace('\t', "|")
            .replace("NULL", "")
    };
    let expected = resolver_rows();
    for (t, want) in expected {
        assert_eq!(rows(t), want.join("\n"), "table {t}\n{}", ferry.log());
    }
    assert_eq!(
        my.sql("SELECT tags FROM shop.t_union WHERE id = 1"),
        "[\"a\",\"local\",\"remote\"]"
    );
    let log = my.sql(
        "SELECT table_name, `key`, kind, winner FROM shop.ferry_conflicts ORDER BY table_name, `key`",
    );
    for (t, _) in RESOLVER_CASES {
        let got: Vec<String> = log
            .lines()
            .filter(|l| l.starts_with(&format!("public.{t}\t")))
            .map(|l| l.replace('\t', "|"))
            .collect();
        assert_eq!(got, resolver_log(t), "conflict log of {t}");
    }
}

/// Exactly once across engines: PostgreSQL ⇄ MariaDB under write load on both sides while either pipeline is
/// SIGKILLed at random, five times each. Afterwards every event is on both sides once, every counter increment
/// counted once (`sum_delta`), and both sides are identical row by row.
#[test]
fn postgres_and_mariadb_keep_exactly_once_under_sigkill() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE events (node varchar(10), seq int, PRIMARY KEY (node, seq));
         CREATE TABLE totals (id int PRIMARY KEY, n bigint NOT NULL);
         ALTER TABLE totals REPLICA IDENTITY FULL;
         CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL, writer varchar(10) NOT NULL);
         ALTER TABLE kv REPLICA IDENTITY FULL;
         INSERT INTO totals SELECT g, 0 FROM generate_series(0, 4) g;",
    );
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let dir = scratch();
    let (p2m, m2p) = pair_configs(
        &pg,
        &my,
        dir.path(),
        "[[sink.conflict_rules]]\ntables = [\"public.totals\"]\ncolumns = { n = \"sum_delta\" }\n",
    );
    let (log_p2m, log_m2p) = (dir.path().join("p2m.log"), dir.path().join("m2p.log"));
    {
        let a = Ferry::start(&p2m, &log_p2m);
        a.wait_streaming();
        let copied = wait_until(WAIT, || {
            my.try_sql("SELECT count(*) FROM shop.totals")
                .ok()
                .as_deref()
                == Some("5")
        });
        assert!(copied, "the snapshot did not reach MariaDB:\n{}", a.log());
        let b = Ferry::start(&m2p, &log_m2p);
        b.wait_streaming();
        // Both sinks hold a checkpoint before the first kill: a MySQL source without one starts from the
        // binlog's current end (snapshot = "never"), which would skip what was written while it was down.
        let checkpointed = wait_until(WAIT, || {
            pg.try_psql(
                "shop",
                "SELECT count(*) FROM ferry_checkpoints WHERE pipeline = 'm2p'",
            )
            .is_ok_and(|n| n == "1")
                && my
                    .try_sql("SELECT count(*) FROM shop.ferry_checkpoints WHERE pipeline = 'p2m'")
                    .is_ok_and(|n| n == "1")
        });
        assert!(checkpointed, "no checkpoint:\n{}\n{}", a.log(), b.log());
    }
    let (pg_port, my_port) = (pg.port, my.port);
    // Each transaction appends an event, counts it in a total and overwrites a shared key.
    let writers = Writers::start(2, move |w, seq| {
        let (total, key) = (seq % 5, seq % 20);
        if w == 0 {
            psql_ok(
                pg_port,
                "shop",
                &format!(
                    "BEGIN; INSERT INTO events VALUES ('pg', {seq});
                     UPDATE totals SET n = n + 1 WHERE id = {total};
                     INSERT INTO kv VALUES ({key}, {seq}, 'pg') ON CONFLICT (id) DO UPDATE SET v = excluded.v, writer = excluded.writer;
                     COMMIT;"
                ),
            )
        } else {
            mariadb_ok(
                my_port,
                "shop",
                &format!(
                    "START TRANSACTION; INSERT INTO events (node, seq) VALUES ('maria', {seq});
                     UPDATE totals SET n = n + 1 WHERE id = {total};
                     INSERT INTO kv (id, v, writer) VALUES ({key}, {seq}, 'maria') ON DUPLICATE KEY UPDATE v = VALUES(v), writer = VALUES(writer);
                     COMMIT;"
                ),
            )
        }
    });
    std::thread::scope(|s| {
        s.spawn(|| kill_randomly(&p2m, &log_p2m, 5));
        kill_randomly(&m2p, &log_m2p, 5);
    });
    let writes = writers.stop();
    let total: i64 = writes.iter().map(|&n| n as i64).sum();
    let a = Ferry::start(&p2m, &log_p2m);
    let b = Ferry::start(&m2p, &log_m2p);
    let both = |sql: &str| {
        (
            pg.try_psql("shop", sql).unwrap_or_default(),
            my.try_sql(&sql.replace(" FROM ", " FROM shop."))
                .unwrap_or_default()
                .replace('\t', "|"),
        )
    };
    let converged = |sql: &str| {
        let ok = wait_until(WAIT, || {
            let (p, m) = both(sql);
            !p.is_empty() && p == m
        });
        let (p, m) = both(sql);
        assert!(
            ok,
            "PostgreSQL and MariaDB differ on {sql}\n--- pg\n{p}\n--- mariadb\n{m}\n--- p2m\n{}\n--- m2p\n{}",
            a.log(),
            b.log()
        );
        p
    };
    // The listing is equal only when both sides hold every event.
    converged("SELECT node, seq FROM events ORDER BY node, seq");
    assert_eq!(
        both("SELECT count(*) FROM events")
            .0
            .parse::<i64>()
            .unwrap(),
        total,
        "events lost or duplicated"
    );
    let sums_ok = wait_until(WAIT, || {
        let (p, m) = both("SELECT sum(n) FROM totals");
        p == total.to_string() && m == total.to_string()
    });
    assert!(
        sums_ok,
        "an increment was lost or applied twice: {:?} for {total} writes\n--- totals\n{:?}\n--- p2m\n{}\n--- m2p\n{}",
        both("SELECT sum(n) FROM totals"),
        both("SELECT id, n, _ferry_ts, _ferry_node FROM totals ORDER BY id"),
        a.log(),
        b.log()
    );
    converged("SELECT id, n, _ferry_ts, _ferry_node FROM totals ORDER BY id");
    converged("SELECT id, v, writer, _ferry_ts, _ferry_node FROM kv ORDER BY id");
}

/// A key change on one side crossing an edit of the old key on the other, in both directions: the key change is
/// a delete of the old key and an insert of the new one, each weighed, so the later edit of the old key survives
/// beside the moved row on both sides.
#[test]
fn key_changes_crossing_edits_converge_between_postgres_and_mariadb() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE moved (id int PRIMARY KEY, v varchar(20));
         ALTER TABLE moved REPLICA IDENTITY FULL;
         INSERT INTO moved VALUES (30, 'seed'), (40, 'seed');",
    );
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let dir = scratch();
    let (p2m, m2p) = pair_configs(&pg, &my, dir.path(), "");
    let (log_p2m, log_m2p) = (dir.path().join("p2m.log"), dir.path().join("m2p.log"));
    let rows = |sql: &str| {
        (
            pg.try_psql("shop", sql).unwrap_or_default(),
            my.try_sql(&sql.replace(" FROM ", " FROM shop."))
                .unwrap_or_default()
                .replace('\t', "|"),
        )
    };
    let all = "SELECT id, v, _ferry_ts, _ferry_node FROM moved ORDER BY id";
    {
        let a = Ferry::start(&p2m, &log_p2m);
        a.wait_streaming();
        assert!(wait_until(WAIT, || my
            .try_sql("SELECT count(*) FROM shop.moved")
            .ok()
            .as_deref()
            == Some("2")));
        let b = Ferry::start(&m2p, &log_m2p);
        b.wait_streaming();
        a.terminate();
        b.terminate();
    }
    // The edits first, the key changes later, while neither pipeline runs.
    my.sql("UPDATE shop.moved SET v = 'maria-edit' WHERE id = 30");
    pg.psql("shop", "UPDATE moved SET v = 'pg-edit' WHERE id = 40");
    std::thread::sleep(Duration::from_millis(5));
    pg.psql("shop", "UPDATE moved SET id = 31 WHERE id = 30");
    my.sql("UPDATE shop.moved SET id = 41 WHERE id = 40");
    let a = Ferry::start(&p2m, &log_p2m);
    let b = Ferry::start(&m2p, &log_m2p);
    let converged = wait_until(WAIT, || {
        let (p, m) = rows(all);
        !p.is_empty() && p == m
    });
    let (p, m) = rows(all);
    assert!(
        converged,
        "PostgreSQL and MariaDB differ\n--- pg\n{p}\n--- mariadb\n{m}\n--- p2m\n{}\n--- m2p\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(
        rows("SELECT id, v FROM moved ORDER BY id").0,
        "30|maria-edit\n31|seed\n40|pg-edit\n41|seed"
    );
    // MariaDB's tombstones: the old key of its own key change (left by the trigger). PostgreSQL's delete of key
    // 30 lost to the later local edit, so it left none.
    assert_eq!(
        my.sql("SELECT `key`, _ferry_node FROM shop.ferry_tombstones ORDER BY `key`")
            .replace('\t', "|"),
        "[40]|maria"
    );
}

/// A delete that commits in MariaDB while PostgreSQL's older change of the same row waits there for the row's
/// lock: the change must meet the delete's tombstone as committed, not as the sink's transaction first saw the
/// tombstones, or MariaDB keeps a row PostgreSQL deletes when MariaDB's delete arrives.
#[test]
fn a_mariadb_delete_committed_while_an_older_change_waits_for_the_row_is_not_undone() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE kv (id int PRIMARY KEY, v varchar(20));
         ALTER TABLE kv REPLICA IDENTITY FULL;
         INSERT INTO kv VALUES (1, 'seed'), (2, 'seed'), (3, 'seed');",
    );
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let dir = scratch();
    let (p2m, m2p) = pair_configs(&pg, &my, dir.path(), "");
    let (log_p2m, log_m2p) = (dir.path().join("p2m.log"), dir.path().join("m2p.log"));
    let a = Ferry::start(&p2m, &log_p2m);
    a.wait_streaming();
    assert!(wait_until(WAIT, || my
        .try_sql("SELECT count(*) FROM shop.kv")
        .ok()
        .as_deref()
        == Some("3")));
    {
        let b = Ferry::start(&m2p, &log_m2p);
        b.wait_streaming();
        b.terminate();
    }
    // MariaDB writes row 1 (PostgreSQL does not hear of it yet), so PostgreSQL's next change of it meets a row of
    // another writer there.
    my.sql("UPDATE shop.kv SET v = 'maria-first' WHERE id = 1");
    let mut session = SqlSession::mariadb(my.port, "shop");
    session.send("BEGIN; SELECT id FROM kv WHERE id = 1 FOR UPDATE;");
    pg.psql("shop", "UPDATE kv SET v = 'pg-older' WHERE id = 1");
    let waiting =
        "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'";
    assert!(
        wait_until(WAIT, || my.try_sql(waiting).ok().as_deref() == Some("1")),
        "PostgreSQL's change never waited for MariaDB's lock\n{}",
        a.log()
    );
    // MariaDB's last write and its delete come after PostgreSQL's change: the delete wins on both sides.
    assert!(session.finish(
        "UPDATE kv SET v = 'maria-later' WHERE id = 1; DELETE FROM kv WHERE id = 1; COMMIT;"
    ));
    let b = Ferry::start(&m2p, &log_m2p);
    assert!(
        wait_until(WAIT, || pg
            .psql("shop", "SELECT count(*) FROM kv WHERE id = 1")
            == "0"),
        "MariaDB's delete never reached PostgreSQL\n{}",
        b.log()
    );
    // Rows never stamped show their versions' NULLs alike on both.
    let all =
        "SELECT id, v, coalesce(_ferry_ts, 0), coalesce(_ferry_node, '-') FROM kv ORDER BY id";
    let rows = || {
        (
            pg.try_psql("shop", all).unwrap_or_default(),
            my.try_sql(&all.replace(" FROM ", " FROM shop."))
                .unwrap_or_default()
                .replace('\t', "|"),
        )
    };
    let converged = wait_until(WAIT, || {
        let (p, m) = rows();
        !p.is_empty() && p == m
    });
    let (p, m) = rows();
    assert!(
        converged,
        "PostgreSQL and MariaDB differ\n--- pg\n{p}\n--- mariadb\n{m}\n--- p2m\n{}\n--- m2p\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(
        pg.psql("shop", "SELECT id, v FROM kv ORDER BY id"),
        "2|seed\n3|seed"
    );
}

/// Version vectors between PostgreSQL and MariaDB: a causal chain of writes on both sides is no conflict, and
/// concurrent writes to a row are exactly one conflict on each side, resolved by last-write-wins, after which
/// both rows hold the same joined vector.
#[test]
fn version_vectors_tell_a_causal_chain_from_concurrent_writes_in_mariadb() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE vv_t (id int PRIMARY KEY, v varchar(20) NOT NULL);
         ALTER TABLE vv_t REPLICA IDENTITY FULL;
         INSERT INTO vv_t SELECT g, 'seed' FROM generate_series(1, 2) g;",
    );
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let dir = scratch();
    let (p2m, m2p) = pair_configs(
        &pg,
        &my,
        dir.path(),
        "[[sink.conflict_rules]]\ntables = [\"public.vv_t\"]\nversion_vectors = true\n",
    );
    let (log_p2m, log_m2p) = (dir.path().join("p2m.log"), dir.path().join("m2p.log"));
    let a = Ferry::start(&p2m, &log_p2m);
    a.wait_streaming();
    assert!(wait_until(WAIT, || my
        .try_sql("SELECT count(*) FROM shop.vv_t")
        .ok()
        .as_deref()
        == Some("2")));
    let b = Ferry::start(&m2p, &log_m2p);
    b.wait_streaming();
    let value = |on_pg: bool, id: i32| {
        if on_pg {
            pg.try_psql("shop", &format!("SELECT v FROM vv_t WHERE id = {id}"))
        } else {
            my.try_sql(&format!("SELECT v FROM shop.vv_t WHERE id = {id}"))
        }
        .unwrap_or_default()
    };
    let write = |on_pg: bool, sql: &str, want: &str| {
        if on_pg {
            pg.psql("shop", sql);
        } else {
            my.sql(&sql.replace("UPDATE ", "UPDATE shop."));
        }
        let seen = wait_until(WAIT, || value(!on_pg, 1) == want);
        assert!(seen, "{want} did not cross:\n{}\n{}", a.log(), b.log());
    };
    // A causal chain: each write follows the other side's, so none is a conflict.
    write(true, "UPDATE vv_t SET v = 'p1' WHERE id = 1", "p1");
    write(false, "UPDATE vv_t SET v = 'm1' WHERE id = 1", "m1");
    write(true, "UPDATE vv_t SET v = 'p2' WHERE id = 1", "p2");
    let vector = |on_pg: bool, id: i32| -> serde_json::Value {
        let text = if on_pg {
            pg.psql(
                "shop",
                &format!("SELECT _ferry_vv FROM vv_t WHERE id = {id}"),
            )
        } else {
            my.sql(&format!("SELECT _ferry_vv FROM shop.vv_t WHERE id = {id}"))
        };
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    };
    assert!(wait_until(WAIT, || vector(false, 1) == vector(true, 1)));
    assert_eq!(vector(true, 1), serde_json::json!({"pg": 2, "maria": 1}));
    let logged = |on_pg: bool| -> Vec<String> {
        let sql = "SELECT `key`, kind, winner FROM ferry_conflicts ORDER BY id";
        if on_pg {
            pg.psql("shop", &sql.replace('`', "\""))
        } else {
            my.sql(&sql.replace("ferry_conflicts", "shop.ferry_conflicts"))
                .replace('\t', "|")
        }
        .lines()
        .map(str::to_owned)
        .collect()
    };
    assert_eq!(logged(true), Vec::<String>::new());
    assert_eq!(logged(false), Vec::<String>::new());
    // Concurrent writes to row 2 while neither pipeline runs: one conflict on each side, the later write wins.
    a.terminate();
    b.terminate();
    pg.psql("shop", "UPDATE vv_t SET v = 'p-conc' WHERE id = 2");
    std::thread::sleep(Duration::from_millis(5));
    my.sql("UPDATE shop.vv_t SET v = 'm-conc' WHERE id = 2");
    let a = Ferry::start(&p2m, &log_p2m);
    let b = Ferry::start(&m2p, &log_m2p);
    let converged = wait_until(WAIT, || {
        value(true, 2) == "m-conc"
            && value(false, 2) == "m-conc"
            && vector(true, 2) == vector(false, 2)
    });
    assert!(
        converged,
        "row 2: {} / {}, {} / {}\n{}\n{}",
        value(true, 2),
        value(false, 2),
        vector(true, 2),
        vector(false, 2),
        a.log(),
        b.log()
    );
    assert_eq!(vector(true, 2), serde_json::json!({"pg": 1, "maria": 1}));
    assert_eq!(logged(true), ["(id) = (2)|update_origin_differs|remote"]);
    assert_eq!(logged(false), ["(id) = (2)|update_origin_differs|local"]);
}

/// MariaDB's types meeting the PostgreSQL table they replicate into under a policy: a JSON (longtext) column
/// into `jsonb`, with `union`, and a `DATETIME(6)` key into `timestamptz`, whose tombstone must be found (a
/// stale MariaDB update must not bring back a row PostgreSQL deleted later).
#[test]
fn mariadb_json_columns_and_timestamp_keys_meet_their_postgres_types() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE t_js (id int PRIMARY KEY, j jsonb, tags jsonb);
         ALTER TABLE t_js REPLICA IDENTITY FULL;
         INSERT INTO t_js VALUES (1, '{\"a\": 1}', '[\"p\"]');
         CREATE TABLE t_tz (k timestamptz PRIMARY KEY, v text);
         ALTER TABLE t_tz REPLICA IDENTITY FULL;
         INSERT INTO t_tz VALUES ('2024-06-01 05:00:00+00', 'seed');",
    );
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let dir = scratch();
    let (p2m, m2p) = pair_configs(
        &pg,
        &my,
        dir.path(),
        "[[sink.conflict_rules]]\ntables = [\"public.t_js\"]\nconflict = \"last_write_wins\"\n\
         columns = { tags = \"union\" }\n",
    );
    let (log_p2m, log_m2p) = (dir.path().join("p2m.log"), dir.path().join("m2p.log"));
    let a = Ferry::start(&p2m, &log_p2m);
    a.wait_streaming();
    assert!(wait_until(WAIT, || my
        .try_sql("SELECT count(*) FROM shop.t_tz")
        .ok()
        .as_deref()
        == Some("1")));
    let mut b = Ferry::start(&m2p, &log_m2p);
    b.wait_streaming();
    // A JSON document written on MariaDB lands in PostgreSQL's jsonb, the union rule included.
    my.sql("UPDATE shop.t_js SET j = '{\"b\": 2}', tags = '[\"m\"]' WHERE id = 1");
    let js = || {
        pg.try_psql("shop", "SELECT j, tags FROM t_js")
            .unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || js() == "{\"b\": 2}|[\"m\"]"
            || js() == "{\"b\": 2}|[\"p\", \"m\"]"),
        "t_js in PostgreSQL: {}\n{}",
        js(),
        b.log()
    );
    assert!(
        b.wait_exit(Duration::from_millis(10)).is_none(),
        "{}",
        b.log()
    );
    // A stale MariaDB update of a timestamp key PostgreSQL updated and deleted later.
    b.terminate();
    my.sql("UPDATE shop.t_tz SET v = 'm-early' WHERE k = '2024-06-01 05:00:00'");
    std::thread::sleep(Duration::from_millis(50));
    pg.psql(
        "shop",
        "UPDATE t_tz SET v = 'p-late' WHERE k = '2024-06-01 05:00:00+00';
         DELETE FROM t_tz WHERE k = '2024-06-01 05:00:00+00';",
    );
    assert!(wait_until(WAIT, || my
        .try_sql("SELECT count(*) FROM shop.t_tz")
        .ok()
        .as_deref()
        == Some("0")));
    let b = Ferry::start(&m2p, &log_m2p);
    b.wait_streaming();
    let logged = || {
        pg.try_psql(
            "shop",
            "SELECT key, kind, winner FROM ferry_conflicts WHERE table_name = 'public.t_tz'",
        )
        .unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || !logged().is_empty()),
        "no conflict logged for the stale update:\n{}",
        b.log()
    );
    assert_eq!(
        logged(),
        "(k) = ('2024-06-01 05:00:00')|update_deleted|local"
    );
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM t_tz"), "0");
    assert_eq!(my.sql("SELECT count(*) FROM shop.t_tz"), "0");
}
