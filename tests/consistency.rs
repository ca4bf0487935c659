//! Consistency for applications (issue 14): synchronous replication into Ferry (with `synchronous_standby_names`
//! naming the pipeline's walsender, `ferry_<pipeline>`, a source COMMIT returns only once every sink holds the
//! transaction; with `semi_sync = true` a MariaDB primary running semi-synchronous replication does the same) and
//! read-your-writes (`GET /wait` for the position of a write, then read the replica).

mod support;

use std::time::{Duration, Instant};

use support::*;

/// A client of `url` whose connection runs on the current runtime.
async fn connect(url: String) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// One commit on the source.
type Commit<C> =
    for<'a> fn(&'a mut C, i32) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// Commits rows 1..=1000 one at a time on `source`, and right after each COMMIT returns looks for the row in the
/// target with `probe` (`$1`: the id): how many were missing, and each commit's latency.
async fn commit_then_probe<C>(
    source: &mut C,
    commit: Commit<C>,
    target: &tokio_postgres::Client,
    probe: &str,
) -> (usize, Vec<Duration>) {
    let probe = target.prepare(probe).await.unwrap();
    let (mut misses, mut latencies) = (0, Vec::new());
    for id in 1..=1000i32 {
        let started = Instant::now();
        commit(source, id).await;
        latencies.push(started.elapsed());
        let found: i64 = target.query_one(&probe, &[&id]).await.unwrap().get(0);
        if found != 1 {
            misses += 1;
        }
    }
    (misses, latencies)
}

fn report_latencies(what: &str, latencies: &mut [Duration]) {
    latencies.sort();
    println!(
        "{what}: p50 {:?}, p99 {:?} over {} commits",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies.len()
    );
}

#[test]
fn with_synchronous_standby_names_a_committed_row_is_in_the_target_when_commit_returns() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE s (id int PRIMARY KEY, at timestamptz DEFAULT now())",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "sync",
        &pg_to_pg_config(&pg, "sync", "[pipeline.batch]\nmax_wait = \"0ms\"\n"),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'ferry_sync'",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    assert!(
        wait_until(Duration::from_secs(30), || {
            pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'ferry_sync' AND sync_state = 'sync'"
        ) == "1"
        }),
        "{}",
        ferry.log()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (misses, mut latencies) = runtime.block_on(async {
        let source = connect(pg.url("shop")).await;
        // The harness's servers default to synchronous_commit = off, which waits for no standby.
        source
            .batch_execute("SET synchronous_commit = on")
            .await
            .unwrap();
        let target = connect(pg.url("replica")).await;
        let insert = source
            .prepare("INSERT INTO s (id) VALUES ($1)")
            .await
            .unwrap();
        let mut source = (source, insert);
        commit_then_probe(
            &mut source,
            |(client, insert), id| {
                Box::pin(async move {
                    client.execute(&*insert, &[&id]).await.unwrap();
                })
            },
            &target,
            "SELECT count(*) FROM s WHERE id = $1",
        )
        .await
    });
    report_latencies("synchronous commit through Ferry", &mut latencies);
    assert_eq!(
        misses, 0,
        "rows missing from the target when COMMIT returned"
    );
    pg.psql("postgres", "ALTER SYSTEM RESET synchronous_standby_names");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    assert!(ferry.terminate().success());
}

/// MariaDB with `rpl_semi_sync_master_enabled` and `semi_sync = true`: Ferry registers as a semi-synchronous
/// replica (over its own dump connection, logging in with a password) and acknowledges each transaction once the
/// sink has committed it, so every COMMIT returns with the row already in the target, and none fell back to
/// asynchronous (`Rpl_semi_sync_master_no_tx` stays 0).
#[test]
fn with_semi_sync_a_mariadb_commit_returns_once_the_row_is_in_the_target() {
    semi_sync_commits_find_their_rows("CRC32", "IDENTIFIED BY 'semi-secret'");
}

/// The same without binlog checksums (MariaDB still puts one on the stream's first, artificial ROTATE, which must
/// not end up in the file name Ferry acknowledges) and with an account on MariaDB's ed25519 plugin.
#[test]
fn with_semi_sync_and_no_binlog_checksums_an_ed25519_account_waits_as_well() {
    semi_sync_commits_find_their_rows(
        "NONE",
        "IDENTIFIED VIA ed25519 USING PASSWORD('semi-secret')",
    );
}

fn semi_sync_commits_find_their_rows(checksum: &str, identified: &str) {
    let my = MariaDbServer::start_with(&[
        "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
        "--rpl-semi-sync-master-timeout=10000",
        &format!("--binlog-checksum={checksum}"),
    ]);
    if identified.contains("ed25519") {
        my.sql("INSTALL SONAME 'auth_ed25519'");
    }
    my.sql(&format!(
        "CREATE DATABASE shop; CREATE TABLE shop.s (id int PRIMARY KEY, at datetime(6) DEFAULT now(6));
         CREATE USER ferry@'%' {identified};
         GRANT ALL ON *.* TO ferry@'%';"
    ));
    let pg = server_with_dbs();
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "semi",
        &format!(
            "[pipeline]\nname = \"semi\"\n[pipeline.batch]\nmax_wait = \"0ms\"\n\
             [source]\ntype = \"mysql\"\nurl = \"mysql://ferry:semi-secret@127.0.0.1:{}/shop\"\nsemi_sync = true\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            my.port,
            pg.url("replica")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    let status = |name: &str| {
        my.sql(&format!(
            "SELECT variable_value FROM information_schema.global_status WHERE variable_name = '{name}'"
        ))
    };
    // Turned on once Ferry streams, as an operator would: with no semi-synchronous replica, the setup's commits
    // would each wait out the timeout.
    my.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON");
    assert!(
        wait_until(Duration::from_secs(30), || status(
            "RPL_SEMI_SYNC_MASTER_CLIENTS"
        ) == "1"
            && status("RPL_SEMI_SYNC_MASTER_STATUS") == "ON"),
        "Ferry did not register as a semi-synchronous replica\n{}",
        ferry.log()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let my_url = my.url("shop");
    let (misses, mut latencies) = runtime.block_on(async {
        use mysql_async::prelude::Queryable;
        let mut source = mysql_async::Conn::from_url(my_url).await.expect("connect");
        let target = connect(pg.url("replica")).await;
        // The target's table appears with the first row.
        source
            .query_drop("INSERT INTO s (id) VALUES (0)")
            .await
            .unwrap();
        commit_then_probe(
            &mut source,
            |conn, id| {
                Box::pin(async move {
                    conn.exec_drop("INSERT INTO s (id) VALUES (?)", (id,))
                        .await
                        .unwrap();
                })
            },
            &target,
            "SELECT count(*) FROM shop.s WHERE id = $1",
        )
        .await
    });
    report_latencies("semi-synchronous commit through Ferry", &mut latencies);
    assert_eq!(
        misses,
        0,
        "rows missing from the target when COMMIT returned; semi-sync status {}, commits not waited for {}\n{}",
        status("RPL_SEMI_SYNC_MASTER_STATUS"),
        status("RPL_SEMI_SYNC_MASTER_NO_TX"),
        ferry.log()
    );
    assert_eq!(
        status("RPL_SEMI_SYNC_MASTER_NO_TX"),
        "0",
        "commits that did not wait for Ferry"
    );
    let waited: u64 = status("RPL_SEMI_SYNC_MASTER_YES_TX").parse().unwrap();
    assert!(waited >= 1001, "{waited} commits waited for Ferry");
    assert!(!ferry.log().contains("semi-secret"), "{}", ferry.log());
    // The checkpoint names the server's binlog file as it is, nothing appended.
    let checkpoint = pg.psql("replica", "SELECT position FROM ferry_checkpoints");
    let file = my
        .sql("SHOW MASTER STATUS")
        .split('\t')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        checkpoint.starts_with(&format!("mysql:{file}:")),
        "{checkpoint} is not in {file}"
    );
    assert!(ferry.terminate().success());
}

#[test]
fn waiting_for_the_position_of_a_write_never_reads_a_stale_replica() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL); INSERT INTO kv VALUES (1, 0)",
    );
    let dir = scratch();
    // The default heartbeat (10 s): a wait must not depend on it.
    let cfg = write_config(
        dir.path(),
        "ryw",
        &pg_to_pg_config(&pg, "ryw", "[pipeline.batch]\nmax_wait = \"5ms\"\n"),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    assert!(wait_until(Duration::from_secs(30), || pg
        .try_psql("replica", "SELECT v FROM kv")
        .unwrap_or_default()
        == "0"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stale, mut waits) = runtime.block_on(async {
        let source = connect(pg.url("shop")).await;
        // As in production: the harness's servers commit asynchronously, and a walsender sends only WAL that is
        // flushed (up to wal_writer_delay, 200 ms, later).
        source
            .batch_execute("SET synchronous_commit = on")
            .await
            .unwrap();
        let target = connect(pg.url("replica")).await;
        let (mut stale, mut waits) = (0, Vec::new());
        for i in 1..=1000i32 {
            source
                .execute("UPDATE kv SET v = $1 WHERE k = 1", &[&i])
                .await
                .unwrap();
            let lsn: String = source
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .unwrap()
                .get(0);
            let started = Instant::now();
            let (status, body) = ferry
                .get(&format!("/wait?pipeline=ryw&position={lsn}&timeout=5s"))
                .expect("an answer");
            waits.push(started.elapsed());
            assert_eq!(status, 200, "{body}\n{}", ferry.log());
            let v: i32 = target
                .query_one("SELECT v FROM kv WHERE k = 1", &[])
                .await
                .unwrap()
                .get(0);
            if v != i {
                stale += 1;
            }
        }
        (stale, waits)
    });
    waits.sort();
    println!(
        "read-your-writes wait: p50 {:?}, p99 {:?} over {} writes",
        waits[waits.len() / 2],
        waits[waits.len() * 99 / 100],
        waits.len()
    );
    assert_eq!(stale, 0, "reads after a successful wait saw an older value");
    // A position not reached in time, one that is not a position, a pipeline that is not here.
    let (status, _) = ferry
        .get("/wait?pipeline=ryw&position=FF/0&timeout=200ms")
        .unwrap();
    assert_eq!(status, 408);
    let (status, body) = ferry.get("/wait?pipeline=ryw&position=soon").unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, _) = ferry.get("/wait?pipeline=other&position=0/1").unwrap();
    assert_eq!(status, 404);
    assert!(ferry.terminate().success());
}
