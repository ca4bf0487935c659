//! Lifecycle under load: concurrent writers, a target server restart, SIGTERM then restart, and one
//! 200,000-row transaction. The load comes from pgbench (PostgreSQL's own load generator) running several
//! clients at once; every test ends with a row-by-row comparison of source and targets.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Keys collide across clients on purpose: inserts, updates and deletes of the same rows interleave.
const WRITE_SCRIPT: &str = "\\set id random(1, 2000)
BEGIN;
INSERT INTO accounts VALUES (:id, 1, 'new') ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1;
UPDATE accounts SET note = md5(random()::text) WHERE id = :id + 1;
DELETE FROM accounts WHERE id = :id + 7 AND balance % 3 = 0;
INSERT INTO events (account, amount) VALUES (:id, 1);
COMMIT;
";

const TABLES: &str =
    "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
     INSERT INTO accounts SELECT g, g, 'seed' FROM generate_series(1, 2000, 2) g;
     CREATE TABLE events (id bigserial PRIMARY KEY, account int NOT NULL, amount int NOT NULL);";

const ACCOUNTS: &str = "SELECT id, balance, note FROM accounts ORDER BY id";
const EVENTS: &str = "SELECT id, account, amount FROM events ORDER BY id";

/// Starts pgbench with `WRITE_SCRIPT`: `clients` connections, `run` as pgbench's `-t N` or `-T seconds`.
fn pgbench(pg: &PgServer, dir: &Path, clients: u32, run: &[&str]) -> Child {
    let script = dir.join("writes.sql");
    std::fs::write(&script, WRITE_SCRIPT).expect("write pgbench script");
    Command::new(pg_bin("pgbench"))
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &pg.port.to_string(),
        ])
        .args(["-c", &clients.to_string(), "-j", "2"])
        .args(run)
        .arg("-f")
        .arg(&script)
        .arg("shop")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgbench")
}

fn finish_load(load: Child) {
    let out = load.wait_with_output().expect("pgbench");
    assert!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the PostgreSQL target (server `target`, database `replica`) and the SQLite file equal the source.
fn assert_converges(source: &PgServer, target: &PgServer, sqlite: Option<&Path>, ferry: &Ferry) {
    for sql in [ACCOUNTS, EVENTS] {
        let want = source.psql("shop", sql);
        assert!(
            wait_until(WAIT, || target.try_psql("replica", sql).ok().as_deref()
                == Some(&want)),
            "PostgreSQL target differs for {sql}:\n{}",
            ferry.log()
        );
        if let Some(db) = sqlite {
            assert!(
                wait_until(WAIT, || sqlite_rows(db, sql).join("\n") == want),
                "SQLite target differs for {sql}:\n{}",
                ferry.log()
            );
        }
    }
}

fn start_pipeline(pg: &PgServer, dir: &Path, sqlite: &Path) -> (PathBuf, Ferry) {
    let config = write_config(
        dir,
        "p",
        &fan_out_config(pg, "life", "[pipeline.batch]\nmax_wait = \"20ms\"", sqlite),
    );
    let ferry = Ferry::start(&config, &dir.join("ferry.log"));
    (config, ferry)
}

#[test]
fn concurrent_writers_on_shared_keys_replicate_exactly() {
    let pg = server_with_dbs();
    pg.psql("shop", TABLES);
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let (_, ferry) = start_pipeline(&pg, dir.path(), &db);
    finish_load(pgbench(&pg, dir.path(), 4, &["-t", "400"]));
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM events"), "1600");
    assert_converges(&pg, &pg, Some(&db), &ferry);
    assert!(ferry.terminate().success());
}

#[test]
fn sigterm_under_load_acknowledges_what_is_durable_and_restart_resumes() {
    let pg = server_with_dbs();
    pg.psql("shop", TABLES);
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let (config, ferry) = start_pipeline(&pg, dir.path(), &db);
    let load = pgbench(&pg, dir.path(), 2, &["-T", "6"]);
    std::thread::sleep(Duration::from_secs(3));
    let status = ferry.terminate();
    assert!(status.success(), "SIGTERM did not exit 0: {status:?}");
    let log = std::fs::read_to_string(dir.path().join("ferry.log")).unwrap();
    assert!(log.contains("sent final status update"), "{log}");
    // The final status update carried exactly the position both sinks committed.
    let confirmed = pg.psql(
        "shop",
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'ferry_life'",
    );
    let checkpoints = pg.psql(
        "replica",
        "SELECT position FROM ferry_checkpoints WHERE pipeline = 'life'",
    );
    let sqlite_checkpoint = sqlite_rows(
        &db,
        "SELECT position FROM ferry_checkpoints WHERE pipeline = 'life'",
    );
    assert_eq!(checkpoints, format!("pg:{confirmed};timeline=1"), "{log}");
    assert_eq!(sqlite_checkpoint, [checkpoints]);

    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    finish_load(load);
    assert_converges(&pg, &pg, Some(&db), &ferry);
    assert!(ferry.terminate().success());
}

#[test]
fn a_target_server_restart_mid_stream_is_retried_and_nothing_is_lost() {
    let source = PgServer::start();
    source.create_db("shop");
    source.psql("shop", TABLES);
    let mut target = PgServer::start();
    target.create_db("replica");
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "p",
        &format!(
            "[pipeline]\nname = \"life\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n",
            source.url("shop"),
            target.url("replica")
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    let load = pgbench(&source, dir.path(), 2, &["-T", "6"]);
    std::thread::sleep(Duration::from_secs(2));
    target.restart();
    finish_load(load);
    assert_converges(&source, &target, None, &ferry);
    assert!(
        ferry
            .log()
            .contains("transient failure; restarting from the checkpoints"),
        "the target restart went unnoticed:\n{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

#[test]
fn a_200000_row_transaction_arrives_whole_in_bounded_memory() {
    let pg = server_with_dbs();
    pg.psql("shop", TABLES);
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let (_, ferry) = start_pipeline(&pg, dir.path(), &db);
    assert!(wait_until(WAIT, || pg
        .try_psql("replica", "SELECT count(*) FROM events")
        .is_ok()));
    pg.psql(
        "shop",
        "INSERT INTO events (account, amount) SELECT g % 2000, g FROM generate_series(1, 200000) g",
    );
    let sql = "SELECT count(*), sum(amount), sum(account) FROM events";
    let want = pg.psql("shop", sql);
    assert!(
        wait_until(WAIT, || pg.try_psql("replica", sql).ok().as_deref()
            == Some(&want)),
        "{}",
        ferry.log()
    );
    assert!(
        wait_until(WAIT, || sqlite_rows(&db, sql).join("\n") == want),
        "{}",
        ferry.log()
    );
    // Peak RSS of the whole run, a debug build included: the transaction is never held in memory.
    let peak_kb = peak_rss_kb(ferry.pid());
    assert!((1..150 * 1024).contains(&peak_kb), "peak RSS {peak_kb} kB");
    assert!(ferry.terminate().success());
}
