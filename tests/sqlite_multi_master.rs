//! End-to-end: conflict resolution into a SQLite target that is also written locally (another connection to the
//! file: an edge application, a cache that takes local edits). The same cases, and the same outcomes, as the
//! PostgreSQL and MariaDB targets' tests; and exactly once under SIGKILL with a policy on.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Runs `sql` on the SQLite file as a local writer would (its own connection, outside Ferry).
fn local(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).expect("open sqlite");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn count(db: &Path, sql: &str) -> usize {
    sqlite_rows(db, sql)
        .first()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Every resolver and merge rule into a SQLite file written locally: the rows each leaves and the conflicts each
/// logs.
#[test]
fn each_resolver_and_merge_rule_gives_its_rows_in_sqlite() {
    let pg = PgServer::start();
    pg.create_db("shop");
    let rules = resolver_tables(&pg, "shop");
    let dir = scratch();
    let db = dir.path().join("edge.db");
    let config = write_config(
        dir.path(),
        "resolve",
        &format!(
            "[pipeline]\nname = \"resolve\"\nnode = \"pg\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n{rules}",
            pg.url("shop"),
            db.display()
        ),
    );
    let log = dir.path().join("ferry.log");
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    let copied = wait_until(WAIT, || count(&db, "SELECT count(*) FROM t_union") == 3);
    assert!(
        copied,
        "the snapshot did not reach SQLite:\n{}",
        ferry.log()
    );
    let each = |sql: &str, on_target: bool| {
        for (t, _) in RESOLVER_CASES {
            let sql = sql.replace("{t}", t);
            if on_target {
                local(&db, &sql);
            } else {
                pg.psql("shop", &sql);
            }
        }
    };
    let logged = |n: usize| {
        wait_until(WAIT, || {
            count(&db, "SELECT count(*) FROM ferry_conflicts") >= n
        })
    };
    let conflict_log = || {
        sqlite_rows(
            &db,
            "SELECT table_name, key, kind, winner FROM ferry_conflicts ORDER BY id",
        )
        .join("\n")
    };
    // Row 1: the target writes first, the source later.
    each(
        "UPDATE {t} SET a = 100, b = NULL, tags = '[\"a\", \"local\"]' WHERE id = 1",
        true,
    );
    // The local write was stamped by the trigger: this database's node ('' until one is named), a version now.
    let stamped = sqlite_rows(
        &db,
        "SELECT _ferry_node, _ferry_ts > 1000000000000000 FROM t_lww WHERE id = 1",
    );
    assert_eq!(stamped, vec!["|1"], "local write not stamped");
    each(
        "UPDATE {t} SET a = 50, b = 'src', tags = '[\"remote\", \"a\", \"remote\"]' WHERE id = 1",
        false,
    );
    // Row 3: deleted on the target (a tombstone), then updated at the source.
    each("DELETE FROM {t} WHERE id = 3", true);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM ferry_tombstones WHERE table_name = 't_lww' AND key = '3'"
        ),
        1,
        "local delete left no tombstone"
    );
    each("UPDATE {t} SET a = 33 WHERE id = 3", false);
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
    let rows =
        |t: &str| sqlite_rows(&db, &format!("SELECT id, a, b FROM {t} ORDER BY id")).join("\n");
    let expected = resolver_rows();
    for (t, want) in expected {
        assert_eq!(
            rows(t),
            want.join("\n"),
            "table {t}\n{}\n{}",
            conflict_log(),
            ferry.log()
        );
    }
    assert_eq!(
        sqlite_rows(&db, "SELECT tags FROM t_union WHERE id = 1"),
        vec!["[\"a\",\"local\",\"remote\"]"]
    );
    // Ferry's own writes are not stamped as local ones: the rows it wrote carry the source's node.
    assert_eq!(
        sqlite_rows(&db, "SELECT _ferry_node FROM t_apply ORDER BY id"),
        vec!["pg", "pg", "pg"]
    );
    let logged_rows = sqlite_rows(
        &db,
        "SELECT table_name, key, kind, winner FROM ferry_conflicts ORDER BY table_name, key",
    );
    for (t, _) in RESOLVER_CASES {
        let got: Vec<&String> = logged_rows
            .iter()
            .filter(|l| l.starts_with(&format!("public.{t}|")))
            .collect();
        assert_eq!(
            got,
            resolver_log(t).iter().collect::<Vec<_>>(),
            "conflict log of {t}"
        );
    }
    // `ferry conflicts` reads the SQLite log.
    let out = std::process::Command::new(ferry_bin())
        .args(["conflicts", "--json", "--table", "public.t_lww", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    assert_eq!(listed[0]["local_row"]["a"], "100", "{listed}");
}

/// Exactly once with a policy on: last-write-wins into SQLite under write load at the source (inserts, updates,
/// deletes, a key change) and local writes on rows the source never touches, while Ferry is SIGKILLed five
/// times. Afterwards the source's rows are in the file exactly once and the local rows are as written.
#[test]
fn last_write_wins_into_sqlite_is_exactly_once_under_sigkill() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO kv SELECT g, 0, 'seed' FROM generate_series(1, 500) g;
         CREATE TABLE ledger (writer int, seq int, amount int, PRIMARY KEY (writer, seq));",
    );
    let dir = scratch();
    let db = dir.path().join("edge.db");
    let config = write_config(
        dir.path(),
        "kill",
        &format!(
            "[pipeline]\nname = \"kill\"\nnode = \"pg\"\n[pipeline.batch]\nmax_events = 300\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\nconflict = \"last_write_wins\"\n",
            pg.url("shop"),
            db.display()
        ),
    );
    let log = dir.path().join("ferry.log");
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    assert!(
        wait_until(WAIT, || count(&db, "SELECT count(*) FROM kv") == 500),
        "{}",
        ferry.log()
    );
    ferry.kill9();
    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN;
                 INSERT INTO ledger VALUES ({w}, {seq}, {seq});
                 UPDATE kv SET v = v + {seq}, note = 'w{w} s{seq}' WHERE id = ({seq} * 7919 + {w}) % 400 + 1;
                 DELETE FROM kv WHERE id = 1000 + {w} * 100000 + {seq} - 1;
                 INSERT INTO kv VALUES (1000 + {w} * 100000 + {seq}, {seq}, 'new');
                 UPDATE kv SET id = 2000000 + {w} * 100000 + {seq} WHERE id = 1000 + {w} * 100000 + {seq};
                 COMMIT;"
            ),
        )
    });
    // Local writes on rows 401..500, which the source leaves alone.
    let local_db = db.clone();
    let local_writer = std::thread::spawn(move || {
        for i in 0..200 {
            local(
                &local_db,
                &format!(
                    "UPDATE kv SET v = v + 1, note = 'local' WHERE id = {}",
                    401 + i % 100
                ),
            );
            std::thread::sleep(Duration::from_millis(15));
        }
    });
    kill_randomly(&config, &log, 5);
    writers.stop();
    local_writer.join().unwrap();
    let ferry = Ferry::start(&config, &log);
    let source_kv = pg
        .psql(
            "shop",
            "SELECT id, v, note FROM kv WHERE id <= 400 OR id > 500 ORDER BY id",
        )
        .replace('\t', "|");
    let source_ledger = pg
        .psql(
            "shop",
            "SELECT writer, seq, amount FROM ledger ORDER BY writer, seq",
        )
        .replace('\t', "|");
    let same = wait_until(Duration::from_secs(90), || {
        sqlite_rows(
            &db,
            "SELECT id, v, note FROM kv WHERE id <= 400 OR id > 500 ORDER BY id",
        )
        .join("\n")
            == source_kv
            && sqlite_rows(
                &db,
                "SELECT writer, seq, amount FROM ledger ORDER BY writer, seq",
            )
            .join("\n")
                == source_ledger
    });
    assert!(
        same,
        "SQLite differs from the source after 5 kills (kv rows source {}, target {}):\n{}",
        source_kv.lines().count(),
        count(&db, "SELECT count(*) FROM kv WHERE id <= 400 OR id > 500"),
        ferry.log()
    );
    // Each local write counted once, none lost to Ferry's writes.
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT sum(v), min(note), max(note) FROM kv WHERE id BETWEEN 401 AND 500"
        ),
        vec!["200|local|local"]
    );
    assert_eq!(count(&db, "SELECT count(*) FROM ferry_applying"), 0);
}

/// A local delete's tombstone is found again whatever the key's type: the trigger computes the key from the
/// stored value and Ferry from the value it binds, and both must print the same (found by an attack: float8
/// keys that need 17 digits came back after a local delete).
#[test]
fn typed_keys_find_the_tombstones_of_local_deletes() {
    let keys: [(&str, &str, &str); 6] = [
        ("k_float", "float8", "0.1::float8 + 0.2::float8"),
        ("k_big", "float8", "123456789.123456789"),
        ("k_num", "numeric(12,4)", "12.5"),
        ("k_ts", "timestamptz", "'2024-02-29 12:34:56.789+02'"),
        ("k_text", "text", "'it''s é'"),
        ("k_bytes", "bytea", "'\\x00ff'::bytea"),
    ];
    let pg = PgServer::start();
    pg.create_db("shop");
    for (t, ty, value) in keys {
        pg.psql(
            "shop",
            &format!("CREATE TABLE {t} (k {ty} PRIMARY KEY, v text); INSERT INTO {t} VALUES ({value}, 'v');"),
        );
    }
    let dir = scratch();
    let db = dir.path().join("edge.db");
    let config = write_config(
        dir.path(),
        "typed",
        &format!(
            "[pipeline]\nname = \"typed\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\nconflict = \"last_write_wins\"\n",
            pg.url("shop"),
            db.display()
        ),
    );
    let log = dir.path().join("ferry.log");
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    assert!(
        wait_until(WAIT, || keys
            .iter()
            .all(
                |(t, _, _)| count(&db, &format!("SELECT count(*) FROM {t}")) == 1
            )),
        "{}",
        ferry.log()
    );
    ferry.terminate();
    // The source's update first, a local update and delete later: the delete is the later write and stays.
    for (t, _, _) in keys {
        pg.psql("shop", &format!("UPDATE {t} SET v = 'src'"));
    }
    std::thread::sleep(Duration::from_millis(5));
    for (t, _, _) in keys {
        local(&db, &format!("UPDATE {t} SET v = 'local'; DELETE FROM {t}"));
    }
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    assert!(
        wait_until(WAIT, || count(&db, "SELECT count(*) FROM ferry_conflicts")
            >= keys.len()),
        "{:?}\n{}",
        sqlite_rows(
            &db,
            "SELECT table_name, key, kind, winner FROM ferry_conflicts"
        ),
        ferry.log()
    );
    for (t, _, _) in keys {
        assert_eq!(
            count(&db, &format!("SELECT count(*) FROM {t}")),
            0,
            "{t}: {:?}",
            sqlite_rows(
                &db,
                "SELECT table_name, key, kind, winner FROM ferry_conflicts"
            )
        );
    }
    assert_eq!(
        sqlite_rows(&db, "SELECT DISTINCT kind, winner FROM ferry_conflicts"),
        vec!["update_deleted|local"]
    );
}

/// A table renamed at the source is renamed in the SQLite file, and SQLite takes its triggers along under their
/// old names: the sink replaces them, so a local write still counts once in the row's version vector.
#[test]
fn a_renamed_table_keeps_one_set_of_triggers() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE r (id int PRIMARY KEY, v text); INSERT INTO r VALUES (1, 'a');",
    );
    let dir = scratch();
    let db = dir.path().join("edge.db");
    let config = write_config(
        dir.path(),
        "ren",
        &format!(
            "[pipeline]\nname = \"ren\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\nconflict = \"last_write_wins\"\n\
             [[sink.conflict_rules]]\ntables = [\"public.*\"]\nversion_vectors = true\n",
            pg.url("shop"),
            db.display()
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    assert!(
        wait_until(WAIT, || count(&db, "SELECT count(*) FROM r") == 1),
        "{}",
        ferry.log()
    );
    pg.psql(
        "shop",
        "ALTER TABLE r RENAME TO r2; INSERT INTO r2 VALUES (2, 'b');",
    );
    assert!(
        wait_until(WAIT, || count(&db, "SELECT count(*) FROM r2") == 2),
        "{}",
        ferry.log()
    );
    local(
        &db,
        "INSERT INTO ferry_node VALUES (1, 'edge'); INSERT INTO r2 (id, v) VALUES (3, 'local'); \
         UPDATE r2 SET v = 'local' WHERE id = 1;",
    );
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT id, _ferry_vv FROM r2 WHERE id IN (1, 3) ORDER BY id"
        ),
        vec!["1|{\"edge\":1}", "3|{\"edge\":1}"]
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'r2'"
        ),
        4
    );
}
