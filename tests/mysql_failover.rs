//! Failover of a MariaDB source: a primary and its GTID replica (`read_only`, `log_slave_updates`); the primary dies
//! under load and the replica is promoted. Ferry's source URL names both hosts; it finds the one that takes writes
//! and resumes there by GTID, and stops loudly when the promoted server lacks transactions the targets hold.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(90);
const ROWS: &str = "SELECT id, writer, n, note FROM shop.items ORDER BY id";

/// A primary with `shop.items` and a GTID replica of it.
fn pair() -> (MariaDbServer, MariaDbServer) {
    let settings = ["--gtid-strict-mode=ON", "--log-slave-updates=ON"];
    let primary = MariaDbServer::start_with(&settings);
    let replica = MariaDbServer::start_with(&[settings[0], settings[1], "--server-id=2"]);
    replica.replicate_from(&primary);
    primary.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.items (id int AUTO_INCREMENT PRIMARY KEY, writer int NOT NULL, \
         n int NOT NULL, note varchar(40))",
    );
    replica.wait_caught_up(&primary);
    (primary, replica)
}

fn load(port: u16) -> RetryingWriters {
    RetryingWriters::start(2, port, |port, w, n| {
        mariadb_ok(
            port,
            "shop",
            &format!(
                "START TRANSACTION; INSERT INTO items (writer, n, note) VALUES ({w}, {n}, md5('{w}-{n}')); \
                 UPDATE items SET n = n + 1, note = 'updated' \
                 WHERE id = CAST(LAST_INSERT_ID() AS SIGNED) - 2; COMMIT;"
            ),
        )
    })
}

fn count(target: &PgServer) -> u64 {
    target
        .try_psql("replica", "SELECT count(*) FROM shop.items")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_promoted_replica_takes_over_under_load_and_the_target_ends_identical() {
    let (mut primary, replica) = pair();
    let target = replica_server();
    let dir = scratch();
    let config = failover_config(dir.path(), "mysql", &[primary.port, replica.port], &target);
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    let load = load(primary.port);
    assert!(
        wait_until(WAIT, || count(&target) >= 200),
        "rows did not reach the target:\n{}",
        ferry.log()
    );
    // The replica is asynchronous: the primary dies once it has everything (else Ferry could hold transactions
    // the replica never got, which the other test covers).
    load.pause(true);
    replica.wait_caught_up(&primary);
    // The primary's binlog files run ahead of the replica's (FLUSH BINARY LOGS is not replicated): after the
    // failover the new primary's files and offsets are behind the checkpoint's, so only GTIDs can say which of
    // its transactions the targets hold.
    for _ in 0..5 {
        primary.sql("FLUSH BINARY LOGS");
    }
    primary.sql("INSERT INTO shop.items (writer, n, note) VALUES (7, 1, 'after the flushes')");
    replica.wait_caught_up(&primary);
    assert!(
        wait_until(WAIT, || target
            .try_psql(
                "replica",
                "SELECT count(*) FROM shop.items WHERE writer = 7"
            )
            .ok()
            .as_deref()
            == Some("1")),
        "{}",
        ferry.log()
    );
    primary.crash();
    load.switch(replica.port);
    load.pause(false);
    std::thread::sleep(Duration::from_secs(1));
    replica.promote();
    load.wait_for(200);
    let committed = load.stop();
    println!("transactions committed: {committed}");

    let want = replica.sql(ROWS).replace('\t', "|").replace("|NULL", "|");
    assert!(
        wait_until(WAIT, || target.try_psql("replica", ROWS).ok().as_deref()
            == Some(&want)),
        "the target differs from the promoted replica ({} rows in the target):\n{}",
        count(&target),
        ferry.log()
    );
    let log = ferry.log();
    assert!(log.contains("by_gtid=true"), "{log}");
    assert_eq!(ferry.terminate().code(), Some(0));
}

#[test]
fn a_replica_behind_what_the_targets_hold_is_refused_loudly() {
    let (mut primary, replica) = pair();
    let target = replica_server();
    let dir = scratch();
    let config = failover_config(dir.path(), "mysql", &[primary.port, replica.port], &target);
    let mut ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    primary.sql("USE shop; INSERT INTO items (writer, n) SELECT 0, seq FROM seq_1_to_100");
    assert!(wait_until(WAIT, || count(&target) == 100));
    replica.wait_caught_up(&primary);
    // The replica falls behind: transactions reach the target that it never gets.
    replica.sql("STOP SLAVE");
    for i in 0..5 {
        primary.sql(&format!(
            "INSERT INTO shop.items (writer, n) VALUES (1, {i})"
        ));
    }
    assert!(wait_until(WAIT, || count(&target) == 105));
    primary.crash();
    replica.promote();
    for i in 0..20 {
        replica.sql(&format!(
            "INSERT INTO shop.items (writer, n) VALUES (2, {i})"
        ));
    }
    let status = ferry.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| !s.success()),
        "ferry should stop, not continue without the transactions the replica lacks:\n{}",
        ferry.log()
    );
    let log = ferry.log();
    assert!(log.contains("after a failover"), "{log}");
    assert_eq!(count(&target), 105);
}
