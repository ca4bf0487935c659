//! Dead connections are noticed: a source connection that stays open but carries nothing (frozen by a TCP proxy
//! in front of the server) is taken for dead after `source_timeout`, Ferry reconnects and the targets converge;
//! SIGTERM while a connection is frozen ends the process within 30 s.

mod support;

use std::time::{Duration, Instant};

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// The pipeline reads `source_url` (through the proxy) into the PostgreSQL `replica` database and SQLite.
fn config(
    dir: &std::path::Path,
    name: &str,
    source: &str,
    target: &PgServer,
) -> std::path::PathBuf {
    write_config(
        dir,
        name,
        &format!(
            "[pipeline]\nname = \"{name}\"\nsource_timeout = \"3s\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n\
             [source]\n{source}\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n",
            target.url("replica"),
            dir.join("r.db").display()
        ),
    )
}

/// Freezes the source's connections while rows keep coming: Ferry reconnects and everything arrives; then
/// SIGTERM during a second freeze ends the process within 30 s.
fn freeze_and_recover(
    proxy: &FreezingProxy,
    ferry: Ferry,
    write: &dyn Fn(&str),
    target_count: &dyn Fn() -> String,
) {
    ferry.wait_streaming();
    write("INSERT INTO t VALUES (1, 'before')");
    assert!(
        wait_until(WAIT, || target_count() == "1"),
        "{}",
        ferry.log()
    );
    proxy.freeze_open();
    let frozen_at = Instant::now();
    write("INSERT INTO t VALUES (2, 'during the freeze')");
    write("INSERT INTO t VALUES (3, 'during the freeze')");
    assert!(
        wait_until(WAIT, || target_count() == "3"),
        "the rows written during the freeze did not arrive:\n{}",
        ferry.log()
    );
    let took = frozen_at.elapsed();
    println!("recovered {took:?} after the freeze");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let log = ferry.log();
    assert!(
        log.contains("the source sent nothing") || log.contains("did not answer a query"),
        "{log}"
    );

    proxy.freeze_open();
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &ferry.pid().to_string()])
        .status();
    let mut ferry = ferry;
    let exited = ferry.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some(),
        "SIGTERM during a freeze did not end the process within 30 s:\n{}",
        ferry.log()
    );
    println!(
        "SIGTERM during a freeze: exited after {:?}",
        asked.elapsed()
    );
}

#[test]
fn a_frozen_postgres_source_connection_is_noticed_and_replaced() {
    let pg = server_with_dbs();
    pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY, note text)");
    let proxy = FreezingProxy::start(pg.port);
    let dir = scratch();
    let source = format!(
        "type = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:{}/shop\"",
        proxy.port
    );
    let cfg = config(dir.path(), "dc", &source, &pg);
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    freeze_and_recover(
        &proxy,
        ferry,
        &|sql| {
            pg.psql("shop", sql);
        },
        &|| {
            pg.try_psql("replica", "SELECT count(*) FROM t")
                .unwrap_or_default()
        },
    );
}

#[test]
fn a_frozen_mariadb_source_connection_is_noticed_and_replaced() {
    let my = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY, note text)");
    let proxy = FreezingProxy::start(my.port);
    let dir = scratch();
    let source = format!(
        "type = \"mysql\"\nurl = \"mysql://root@127.0.0.1:{}/shop?prefer_socket=false\"\nserver_id = 7001",
        proxy.port
    );
    let cfg = config(dir.path(), "dm", &source, &pg);
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    freeze_and_recover(
        &proxy,
        ferry,
        &|sql| {
            my.sql(&format!("USE shop; {sql}"));
        },
        &|| {
            pg.try_psql("replica", "SELECT count(*) FROM shop.t")
                .unwrap_or_default()
        },
    );
}
