//! End-to-end: the transform chain on a MariaDB source — the binlog's transaction context (GTID, server id,
//! commit time) reaches expressions, and masks, filters and routes apply as on PostgreSQL.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn binlog_transaction_context_and_stages_on_a_mariadb_source() {
    let my = MariaDbServer::start();
    my.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.people (id int PRIMARY KEY, email varchar(100) NOT NULL, status varchar(10) NOT NULL);",
    );
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config = write_config(
        dir.path(),
        "mt",
        &format!(
            "[pipeline]\nname = \"mt\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"mysql\"\nurl = \"{}\"\nserver_id = 7401\n\
             [sink]\ntype = \"sqlite\"\npath = \"{}\"\n{}",
            my.url("shop"),
            db.display(),
            r#"
[[transform]]
type = "filter"
tables = ["shop.*"]
where = "op == 'd' || after.status != 'hidden'"
[[transform]]
type = "mask"
columns = ["shop.people.email"]
with = "keep_first"
n = 2
[[transform]]
type = "compute"
tables = ["shop.people"]
column = "gtid"
column_type = "text"
expression = "tx.gtid"
[[transform]]
type = "compute"
tables = ["shop.people"]
column = "server"
column_type = "bigint"
expression = "tx.server_id"
[[transform]]
type = "compute"
tables = ["shop.people"]
column = "committed"
column_type = "bigint"
expression = "int(tx.commit_time)"
[[transform]]
type = "route"
tables = ["shop.people"]
to = "crm.{table}"
"#
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    ferry.wait_streaming();
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let started = now();
    // Each transaction's GTID, as the server reports it right after the commit.
    let mut expected = Vec::new();
    for (id, email, status) in [
        (1, "ada@example.com", "active"),
        (2, "hidden@example.com", "hidden"),
        (3, "grace@example.com", "active"),
    ] {
        let gtid = my.sql(&format!(
            "INSERT INTO shop.people VALUES ({id}, '{email}', '{status}'); SELECT @@gtid_binlog_pos"
        ));
        if status != "hidden" {
            let masked = format!("{}{}", &email[..2], "*".repeat(email.len() - 2));
            expected.push(format!("{id}|{masked}|{status}|{gtid}|1"));
        }
    }
    let rows = || {
        sqlite_rows(
            &db,
            "SELECT id, email, status, gtid, server FROM crm_people ORDER BY id",
        )
    };
    assert!(
        wait_until(WAIT, || rows() == expected),
        "--- expected\n{expected:?}\n--- target\n{:?}\n--- log\n{}",
        rows(),
        ferry.log()
    );
    // The header's seconds: the time of the commit, within the test's own clock reading.
    for committed in sqlite_rows(&db, "SELECT committed FROM crm_people") {
        let t: i64 = committed.parse().unwrap();
        assert!(
            (started - 1..=now() + 1).contains(&t),
            "{t} not within [{started}, {}]",
            now()
        );
    }
    assert!(ferry.terminate().success());
}
