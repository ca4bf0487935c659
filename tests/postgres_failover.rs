//! Failover of the source: a primary with a physical standby dies under load and the standby is promoted. Ferry's
//! source URL names both hosts; it finds the promoted one and continues from its checkpoint when the standby has
//! its slot (PostgreSQL 17+, failover slots synchronised by `sync_replication_slots`), and stops loudly when it
//! cannot continue without a difference: no slot on the standby (before 17), or a standby whose WAL ended before
//! what the targets already hold.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(90);
const ROWS: &str = "SELECT id, writer, n, note FROM items ORDER BY id";
const SLOT: &str = "ferry_failover";
const STANDBY_SLOT: &str = "standby1";

fn version(pg: &PgServer) -> u32 {
    pg.psql("postgres", "SHOW server_version_num")
        .parse()
        .unwrap()
}

/// A primary with the `shop` database and a streaming standby; on PostgreSQL 17+ the standby synchronises
/// failover slots, and with `wait_for_standby` the primary holds logical changes back until the standby has them
/// (`synchronized_standby_slots`).
fn cluster(wait_for_standby: bool) -> (PgServer, PgServer, u32) {
    let primary = PgServer::start();
    primary.create_db("shop");
    primary.psql(
        "shop",
        "CREATE TABLE items (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL, note text)",
    );
    let version = version(&primary);
    let conninfo = format!(
        "primary_conninfo=host=127.0.0.1 port={} user=postgres dbname=postgres",
        primary.port
    );
    let mut settings = vec!["hot_standby_feedback=on", conninfo.as_str()];
    if version >= 170_000 {
        settings.push("sync_replication_slots=on");
    }
    let standby = PgServer::standby_of(&primary, STANDBY_SLOT, &settings);
    if version >= 170_000 && wait_for_standby {
        primary.psql(
            "postgres",
            &format!("ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'"),
        );
        primary.psql("postgres", "SELECT pg_reload_conf()");
    }
    (primary, standby, version)
}

/// Two writers inserting and updating rows on the server on `port`.
fn load(port: u16) -> RetryingWriters {
    RetryingWriters::start(2, port, |port, w, n| {
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN; INSERT INTO items (writer, n, note) VALUES ({w}, {n}, md5('{w}-{n}')); \
                 UPDATE items SET n = n + 1, note = 'updated' WHERE id = (SELECT max(id) - 3 FROM items); COMMIT;"
            ),
        )
    })
}

fn count(pg: &PgServer, db: &str) -> u64 {
    pg.try_psql(db, "SELECT count(*) FROM items")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Waits until the standby has Ferry's slot as a persistent synchronised copy (only such a copy survives its
/// promotion).
fn wait_slot_synced(standby: &PgServer, ferry: &Ferry) {
    let synced = wait_until(WAIT, || {
        standby
            .try_psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{SLOT}' AND synced AND NOT temporary"
                ),
            )
            .is_ok_and(|c| c == "1")
    });
    assert!(
        synced,
        "the standby did not synchronise Ferry's slot:\n{}\n--- ferry\n{}",
        standby.log(),
        ferry.log()
    );
}

/// Waits until the standby has replayed everything the primary has written so far.
fn wait_standby_caught_up(primary: &PgServer, standby: &PgServer) {
    let lsn = primary.psql("postgres", "SELECT pg_current_wal_lsn()");
    let caught_up = wait_until(WAIT, || {
        standby
            .try_psql(
                "postgres",
                &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
            )
            .is_ok_and(|r| r == "t")
    });
    assert!(
        caught_up,
        "the standby did not catch up:\n{}",
        standby.log()
    );
}

#[test]
fn a_promoted_standby_takes_over_under_load_and_the_target_ends_identical() {
    let (mut primary, standby, version) = cluster(true);
    let target = replica_server();
    let dir = scratch();
    let config = failover_config(
        dir.path(),
        "postgres",
        &[primary.port, standby.port],
        &target,
    );
    let (ok, out) = ferry_command(&["check"], &config);
    assert!(ok && out.contains("failover"), "{out}");
    let mut ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    let load = load(primary.port);
    assert!(
        wait_until(WAIT, || count(&target, "replica") >= 200),
        "rows did not reach the target:\n{}",
        ferry.log()
    );
    if version >= 170_000 {
        wait_slot_synced(&standby, &ferry);
    }
    // More rows in flight while the primary dies.
    std::thread::sleep(Duration::from_millis(500));
    primary.crash();
    standby.promote();
    load.switch(standby.port);
    load.wait_for(200);
    let committed = load.stop();
    println!("transactions committed: {committed}");

    if version < 170_000 {
        // No failover slots: the promoted server has no slot, so what happened after the checkpoint is out of
        // Ferry's reach, and it says so.
        let status = ferry.wait_exit(WAIT);
        assert!(
            status.is_some_and(|s| !s.success()),
            "ferry should stop:\n{}",
            ferry.log()
        );
        let log = ferry.log();
        assert!(
            log.contains("does not exist") && log.contains("sync_replication_slots"),
            "{log}"
        );
        return;
    }
    let want = standby.psql("shop", ROWS);
    assert!(
        wait_until(WAIT, || target.try_psql("replica", ROWS).ok().as_deref()
            == Some(&want)),
        "the target differs from the promoted primary ({} rows there, {} in the target):\n{}",
        count(&standby, "shop"),
        count(&target, "replica"),
        ferry.log()
    );
    assert!(
        ferry.try_exit().is_none(),
        "ferry stopped:\n{}",
        ferry.log()
    );
    let log = ferry.log();
    assert!(log.contains("the source was promoted"), "{log}");
    assert!(
        !log.contains("synchronized_standby_slots is empty"),
        "the primary waits for its standby, yet Ferry warned:\n{log}"
    );
    // The slot on the new primary follows the target: a restart resumes there.
    assert_eq!(ferry.terminate().code(), Some(0));
    standby.psql(
        "shop",
        "INSERT INTO items (writer, n, note) VALUES (9, 1, 'after restart')",
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry2.log"));
    let want = standby.psql("shop", ROWS);
    assert!(
        wait_until(WAIT, || target.try_psql("replica", ROWS).ok().as_deref()
            == Some(&want)),
        "the restarted pipeline did not catch up:\n{}",
        ferry.log()
    );
    assert_eq!(ferry.terminate().code(), Some(0));

    // Split brain: the old primary starts again on its own timeline and takes writes, until its WAL is past the
    // checkpoint. It comes first in the URL and accepts writes, so Ferry reaches it; the sinks' checkpoint says
    // they hold timeline 2, so Ferry refuses instead of streaming the old primary's own history into them.
    primary.start_again();
    primary.psql(
        "shop",
        "INSERT INTO items (writer, n, note) SELECT 8, g, repeat('x', 200) FROM generate_series(1, 20000) g",
    );
    let mut ferry = Ferry::start(&config, &dir.path().join("ferry3.log"));
    let status = ferry.wait_exit(WAIT);
    let log = ferry.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "ferry should stop:\n{log}"
    );
    assert!(
        log.contains("read on timeline 2") && log.contains("this server is on timeline 1"),
        "{log}"
    );
    assert_eq!(
        target.psql("replica", ROWS),
        want,
        "the target changed:\n{log}"
    );
}

#[test]
fn a_standby_behind_what_the_targets_hold_is_refused_loudly() {
    // The primary does not wait for its standby, so Ferry may be sent changes the standby never receives.
    let (mut primary, mut standby, version) = cluster(false);
    let target = replica_server();
    let dir = scratch();
    let config = failover_config(
        dir.path(),
        "postgres",
        &[primary.port, standby.port],
        &target,
    );
    // `ferry check` names the missing setting up front.
    let (ok, out) = ferry_command(&["check"], &config);
    if version >= 170_000 {
        assert!(!ok, "{out}");
        assert!(
            out.contains("synchronized_standby_slots is empty")
                && out.contains(&format!("synchronized_standby_slots = '{STANDBY_SLOT}'")),
            "{out}"
        );
    } else {
        assert!(ok, "{out}");
    }
    let mut ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    primary.psql(
        "shop",
        "INSERT INTO items (writer, n) SELECT 0, g FROM generate_series(1, 100) g",
    );
    assert!(wait_until(WAIT, || count(&target, "replica") == 100));
    if version >= 170_000 {
        wait_slot_synced(&standby, &ferry);
    }
    wait_standby_caught_up(&primary, &standby);
    // The standby falls behind: rows reach the target that it never sees.
    standby.stop();
    primary.psql(
        "shop",
        "INSERT INTO items (writer, n) SELECT 1, g FROM generate_series(1, 50) g",
    );
    assert!(wait_until(WAIT, || count(&target, "replica") == 150));
    primary.crash();
    standby.start_again();
    standby.promote();
    standby.psql(
        "shop",
        "INSERT INTO items (writer, n) SELECT 2, g FROM generate_series(1, 500) g",
    );

    let status = ferry.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| !s.success()),
        "ferry should stop, not continue past the fork:\n{}",
        ferry.log()
    );
    let log = ferry.log();
    if version >= 170_000 {
        assert!(log.contains("synchronized_standby_slots is empty"), "{log}");
        assert!(
            log.contains("promoted from a standby whose WAL ended at"),
            "{log}"
        );
    } else {
        assert!(log.contains("does not exist"), "{log}");
    }
    // Nothing of the new timeline was applied on top of the rows the new primary lacks.
    assert_eq!(count(&target, "replica"), 150);
}
