//! Exactly-once under SIGKILL for a MariaDB source: ferry is killed at random moments while two writers load the
//! source, then restarted; the MariaDB and PostgreSQL targets must equal the source row by row.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn mariadb_source_resumes_after_sigkill_without_loss_or_duplicates() {
    let my = MariaDbServer::start();
    let replica = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql(
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note varchar(100));
         INSERT INTO accounts SELECT seq, 0, repeat('x', seq % 50) FROM seq_1_to_20000;
         CREATE TABLE ledger (writer int NOT NULL, seq int NOT NULL, amount bigint NOT NULL);",
    );
    replica.sql("CREATE DATABASE shop");
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "kill",
        &format!(
            "[pipeline]\nname = \"kill\"\n[pipeline.batch]\nmax_events = 500\nmax_wait = \"20ms\"\n\n\
             [source]\ntype = \"mysql\"\nurl = \"{}\"\n\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            my.url("shop"),
            replica.url("shop"),
            pg.url("replica")
        ),
    );
    let log = dir.path().join("ferry.log");

    let port = my.port;
    let writers = Writers::start(2, move |w, seq| {
        mariadb_ok(
            port,
            "shop",
            &format!(
                "START TRANSACTION;
                 INSERT INTO ledger VALUES ({w}, {seq}, {seq});
                 UPDATE accounts SET balance = balance + {seq} WHERE id = ({seq} * 7919 + {w}) % 20000 + 1;
                 UPDATE accounts SET note = 'w{w} s{seq}' WHERE id = ({seq} * 104729) % 20000 + 1;
                 DELETE FROM accounts WHERE id = 20000 + {w} * 100000 + {seq} - 1;
                 INSERT INTO accounts VALUES (20000 + {w} * 100000 + {seq}, {seq}, 'new');
                 COMMIT;"
            ),
        )
    });

    kill_randomly(&config, &log, 10);
    writers.stop();

    let ferry = Ferry::start(&config, &log);
    let accounts = "SELECT id, balance, note FROM shop.accounts ORDER BY id";
    let ledger = "SELECT writer, seq, amount FROM shop.ledger ORDER BY writer, seq";
    let source_accounts = my.sql(accounts).replace('\t', "|");
    let source_ledger = my.sql(ledger).replace('\t', "|");
    let mariadb_matches = || {
        replica
            .try_sql(accounts)
            .map(|t| t.replace('\t', "|"))
            .ok()
            .as_deref()
            == Some(source_accounts.as_str())
            && replica
                .try_sql(ledger)
                .map(|t| t.replace('\t', "|"))
                .ok()
                .as_deref()
                == Some(source_ledger.as_str())
    };
    let pg_matches = || {
        pg.try_psql("replica", accounts).ok().as_deref() == Some(source_accounts.as_str())
            && pg.try_psql("replica", ledger).ok().as_deref() == Some(source_ledger.as_str())
    };
    let converged = wait_until(Duration::from_secs(90), || {
        mariadb_matches() && pg_matches()
    });
    if !converged {
        let count = "SELECT count(*), count(DISTINCT writer, seq) FROM shop.ledger";
        panic!(
            "targets differ from the source after 10 kills (ledger source {}, mariadb target {}, postgres target {}):\n{}",
            my.sql(count),
            replica.try_sql(count).unwrap_or_default(),
            pg.try_psql("replica", "SELECT count(*), count(DISTINCT (writer, seq)) FROM shop.ledger").unwrap_or_default(),
            ferry.log()
        );
    }
    let status = ferry.terminate();
    assert!(status.success(), "ferry did not stop cleanly: {status:?}");
}
