//! Synchronous replication into Ferry (issue 14): with `synchronous_standby_names` naming the pipeline's walsender
//! (`ferry_<pipeline>`), a source COMMIT returns only once every sink holds the transaction, so a row committed on
//! the source is already in the target when COMMIT returns.

mod support;

use std::time::{Duration, Instant};

use support::*;

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
        &format!(
            "[pipeline]\nname = \"sync\"\n[pipeline.batch]\nmax_wait = \"0ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            pg.url("shop"),
            pg.url("replica")
        ),
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
        let connect = |url: String| async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client
        };
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
        let probe = target
            .prepare("SELECT count(*) FROM s WHERE id = $1")
            .await
            .unwrap();
        let (mut misses, mut latencies) = (0, Vec::new());
        for id in 1..=1000i32 {
            let started = Instant::now();
            source.execute(&insert, &[&id]).await.unwrap();
            latencies.push(started.elapsed());
            let found: i64 = target.query_one(&probe, &[&id]).await.unwrap().get(0);
            if found != 1 {
                misses += 1;
            }
        }
        (misses, latencies)
    });
    latencies.sort();
    println!(
        "synchronous commit through Ferry: p50 {:?}, p99 {:?} over {} commits",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies.len()
    );
    assert_eq!(
        misses, 0,
        "rows missing from the target when COMMIT returned"
    );
    pg.psql("postgres", "ALTER SYSTEM RESET synchronous_standby_names");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    assert!(ferry.terminate().success());
}
