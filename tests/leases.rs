//! One owner per pipeline: a second `ferry run` with the same config waits as a standby (and says which process
//! runs the pipeline) instead of running too, and takes over when the owner dies. For a PostgreSQL and a MariaDB
//! source, a second process started during the first's snapshot, and two started at the same instant, under a
//! write load: the targets equal the source every time.
//!
//! `FERRY_LEASE_ROUNDS` sets the rounds of each case (default 2; the acceptance ran 20).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(90);

fn rounds() -> u32 {
    std::env::var("FERRY_LEASE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2)
}

/// The source under test, with its write load.
enum Source {
    Pg(PgServer),
    Maria(MariaDbServer, PgServer),
}

impl Source {
    fn target(&self) -> &PgServer {
        match self {
            Source::Pg(pg) => pg,
            Source::Maria(_, pg) => pg,
        }
    }

    /// Fresh source tables (orders with a key, log without one) and an empty target.
    fn prepare(&self, rows: u32) {
        let pg = self.target();
        let _ = pg.try_psql("postgres", "DROP DATABASE IF EXISTS replica WITH (FORCE)");
        pg.create_db("replica");
        match self {
            Source::Pg(pg) => {
                let _ = pg.try_psql("postgres", "DROP DATABASE IF EXISTS shop WITH (FORCE)");
                pg.create_db("shop");
                pg.psql(
                    "shop",
                    &format!(
                        "CREATE TABLE orders (id int PRIMARY KEY, v int, note text);
                         CREATE TABLE log (k int, v int);
                         INSERT INTO orders SELECT g, g, repeat('x', 200) FROM generate_series(1, {rows}) g;
                         INSERT INTO log SELECT g % 50, g FROM generate_series(1, 2000) g;"
                    ),
                );
            }
            Source::Maria(my, _) => {
                my.sql(&format!(
                    "DROP DATABASE IF EXISTS shop; CREATE DATABASE shop; USE shop;
                     CREATE TABLE orders (id int PRIMARY KEY, v int, note text);
                     CREATE TABLE log (k int, v int);
                     INSERT INTO orders SELECT seq, seq, repeat('x', 200) FROM seq_1_to_{rows};
                     INSERT INTO log SELECT seq % 50, seq FROM seq_1_to_2000;"
                ));
            }
        }
    }

    fn config(&self, dir: &Path, name: &str) -> PathBuf {
        let pg = self.target();
        let source = match self {
            Source::Pg(pg) => format!(
                "type = \"postgres\"\nurl = \"{}\"\nslot = \"{name}\"\npublication = \"{name}\"",
                pg.url("shop")
            ),
            Source::Maria(my, _) => format!(
                "type = \"mysql\"\nurl = \"{}\"\nserver_id = 5151",
                my.url("shop")
            ),
        };
        write_config(
            dir,
            name,
            &format!(
                "[pipeline]\nname = \"{name}\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n[source]\n{source}\n\n\
                 [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n",
                pg.url("replica"),
                dir.join("r.db").display()
            ),
        )
    }

    fn writers(&self) -> Writers {
        let (port, maria) = match self {
            Source::Pg(pg) => (pg.port, false),
            Source::Maria(my, _) => (my.port, true),
        };
        Writers::start(2, move |w, seq| {
            let id = (seq * 37 + w as i32 * 1009) % 20_000 + 1;
            let sql = match seq % 4 {
                0 => format!("UPDATE orders SET v = v + 1 WHERE id = {id}"),
                1 => format!("DELETE FROM orders WHERE id = {}", id + 1),
                2 => format!(
                    "INSERT INTO orders VALUES ({}, {seq}, 'new')",
                    100_000 + w as i32 * 100_000 + seq
                ),
                _ => format!("INSERT INTO log VALUES ({w}, {seq})"),
            };
            if maria {
                mariadb_ok(port, "shop", &sql)
            } else {
                psql_ok(port, "shop", &sql)
            }
        })
    }

    /// The rows of `table` at the source, as psql prints them.
    fn source_rows(&self, sql: &str) -> String {
        match self {
            Source::Pg(pg) => pg.psql("shop", sql),
            Source::Maria(my, _) => my.sql(&format!("USE shop; {sql}")).replace('\t', "|"),
        }
    }

    /// The target table name: MariaDB tables land in the `shop` schema of the target.
    fn target_table(&self, table: &str) -> String {
        match self {
            Source::Pg(_) => table.to_owned(),
            Source::Maria(..) => format!("shop.{table}"),
        }
    }
}

fn state(ferry: &Ferry) -> String {
    ferry
        .get("/status")
        .and_then(|(_, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            Some(format!(
                "{} {}",
                v[0]["state"].as_str()?,
                v[0]["error"].as_str().unwrap_or_default()
            ))
        })
        .unwrap_or_default()
}

/// Checks the targets equal the source once the load stopped: orders row by row, and the keyless log as counts
/// per row (a duplicate or a lost row shows).
fn assert_converged(source: &Source, owner: &Ferry, dir: &Path, round: &str) {
    let pg = source.target();
    let db = dir.join("r.db");
    for (table, sql) in [
        ("orders", "SELECT id, v, note FROM {} ORDER BY id"),
        (
            "log",
            "SELECT k, v, count(*) FROM {} GROUP BY k, v ORDER BY k, v",
        ),
    ] {
        let expected = source.source_rows(&sql.replace("{}", table));
        let target_sql = sql.replace("{}", &source.target_table(table));
        let lite_sql = sql.replace("{}", &source.target_table(table).replace('.', "_"));
        let ok = wait_until(WAIT, || {
            pg.try_psql("replica", &target_sql).ok().as_deref() == Some(expected.as_str())
                && sqlite_rows(&db, &lite_sql).join("\n") == expected
        });
        assert!(
            ok,
            "{round}: {table} differs\n--- source rows: {}\n--- postgres rows: {}\n--- sqlite rows: {}\n--- log\n{}",
            expected.lines().count(),
            pg.try_psql("replica", &target_sql).unwrap_or_default().lines().count(),
            sqlite_rows(&db, &lite_sql).len(),
            owner.log()
        );
    }
}

/// A second process starts while the first copies its snapshot: it waits; the first dies; it takes over.
fn standby_takes_over(source: &Source, name: &str) {
    for round in 0..rounds() {
        let round = format!("{name} round {round}");
        source.prepare(20_000);
        let dir = scratch();
        let cfg = source.config(dir.path(), name);
        let first = Ferry::start(&cfg, &dir.path().join("first.log"));
        let writers = source.writers();
        assert!(
            wait_until(WAIT, || {
                let s = state(&first);
                s.starts_with("snapshotting") || s.starts_with("streaming")
            }),
            "{round}: {}",
            first.log()
        );
        let second = Ferry::start(&cfg, &dir.path().join("second.log"));
        assert!(
            wait_until(WAIT, || state(&second).starts_with("standby")),
            "{round}: the second process is not a standby: {}\n{}",
            state(&second),
            second.log()
        );
        let said = state(&second);
        assert!(
            said.contains(&format!("pipeline {name}"))
                && said.contains("already run by another process")
                && said.contains(&format!("pid {}", first.pid())),
            "{round}: {said}"
        );
        let (code, body) = second.get("/readyz").expect("readyz");
        assert_eq!(code, 503, "{round}: a standby is not ready: {body}");
        std::thread::sleep(Duration::from_millis(500));
        first.kill9();
        assert!(
            wait_until(WAIT, || state(&second).starts_with("streaming")),
            "{round}: the standby did not take over: {}\n{}",
            state(&second),
            second.log()
        );
        std::thread::sleep(Duration::from_millis(500));
        writers.stop();
        assert_converged(source, &second, dir.path(), &round);
    }
}

/// Two processes start at the same instant under load: one runs, the other waits; the targets converge.
fn simultaneous_start(source: &Source, name: &str) {
    for round in 0..rounds() {
        let round = format!("{name} round {round}");
        source.prepare(20_000);
        let dir = scratch();
        let cfg = source.config(dir.path(), name);
        let writers = source.writers();
        let a = Ferry::start(&cfg, &dir.path().join("a.log"));
        let b = Ferry::start(&cfg, &dir.path().join("b.log"));
        let settled = wait_until(WAIT, || {
            let (sa, sb) = (state(&a), state(&b));
            (sa.starts_with("streaming") && sb.starts_with("standby"))
                || (sb.starts_with("streaming") && sa.starts_with("standby"))
        });
        assert!(
            settled,
            "{round}: a: {}\nb: {}\n{}\n{}",
            state(&a),
            state(&b),
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(2000));
        writers.stop();
        let owner = if state(&a).starts_with("streaming") {
            &a
        } else {
            &b
        };
        assert_converged(source, owner, dir.path(), &round);
    }
}

#[test]
fn postgres_source_second_process_is_a_standby_that_takes_over() {
    let pg = PgServer::start();
    standby_takes_over(&Source::Pg(pg), "lp");
}

#[test]
fn postgres_source_two_processes_started_at_once_converge() {
    let pg = PgServer::start();
    simultaneous_start(&Source::Pg(pg), "lq");
}

#[test]
fn mariadb_source_second_process_is_a_standby_that_takes_over() {
    let source = Source::Maria(MariaDbServer::start(), PgServer::start());
    standby_takes_over(&source, "lm");
}

#[test]
fn mariadb_source_two_processes_started_at_once_converge() {
    let source = Source::Maria(MariaDbServer::start(), PgServer::start());
    simultaneous_start(&source, "ln");
}

#[test]
fn a_mariadb_pipeline_without_sql_sinks_still_has_one_owner() {
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY)");
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "ld",
        &format!(
            "[pipeline]\nname = \"ld\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\nserver_id = 5252\n\
             [[sink]]\ntype = \"discard\"\npath = \"{}\"\n",
            my.url("shop"),
            dir.path().join("pos.txt").display()
        ),
    );
    let first = Ferry::start(&cfg, &dir.path().join("first.log"));
    first.wait_streaming();
    let second = Ferry::start(&cfg, &dir.path().join("second.log"));
    assert!(
        wait_until(WAIT, || state(&second).starts_with("standby")),
        "{}\n{}",
        state(&second),
        second.log()
    );
    first.kill9();
    assert!(
        wait_until(WAIT, || state(&second).starts_with("streaming")),
        "{}",
        second.log()
    );
}

#[test]
fn a_mariadb_source_is_read_by_one_process_whatever_its_sinks() {
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY)");
    let dir = scratch();
    // Two processes of one pipeline whose sinks share nothing (each its own discard file, as two Kafka-only
    // deployments would): the source's lease still makes the second a standby.
    let config = |file: &str| {
        write_config(
            dir.path(),
            file,
            &format!(
                "[pipeline]\nname = \"ls\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\nserver_id = 5353\n\
                 [[sink]]\ntype = \"discard\"\npath = \"{}\"\n",
                my.url("shop"),
                dir.path().join(format!("{file}.txt")).display()
            ),
        )
    };
    let first = Ferry::start(&config("a"), &dir.path().join("a.log"));
    first.wait_streaming();
    let second = Ferry::start(&config("b"), &dir.path().join("b.log"));
    assert!(
        wait_until(WAIT, || state(&second).starts_with("standby")),
        "{}\n{}",
        state(&second),
        second.log()
    );
    assert!(
        state(&second).contains("pipeline ls is already run by another process"),
        "{}",
        state(&second)
    );
    first.kill9();
    assert!(
        wait_until(WAIT, || state(&second).starts_with("streaming")),
        "{}",
        second.log()
    );
}
