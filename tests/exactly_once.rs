//! Exactly-once under SIGKILL: ferry is killed at random moments while two writers load the source, then
//! restarted; both targets must equal the source row by row — nothing lost, nothing duplicated.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn resumes_after_sigkill_without_loss_or_duplicates() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
         INSERT INTO accounts SELECT g, 0, repeat('x', g % 50) FROM generate_series(1, 20000) g;
         CREATE TABLE ledger (writer int NOT NULL, seq int NOT NULL, amount bigint NOT NULL);",
    );
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config = write_config(
        dir.path(),
        "kill",
        &fan_out_config(
            &pg,
            "kill",
            "[pipeline.batch]\nmax_events = 500\nmax_wait = \"20ms\"",
            &db,
        ),
    );
    let log = dir.path().join("ferry.log");

    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN;
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
    let accounts = "SELECT id, balance, note FROM accounts ORDER BY id";
    let ledger = "SELECT writer, seq, amount FROM ledger ORDER BY writer, seq";
    let source_accounts = pg.psql("shop", accounts);
    let source_ledger = pg.psql("shop", ledger);
    let pg_matches = || {
        pg.try_psql("replica", &accounts.replace("accounts", "public.accounts"))
            .ok()
            .as_deref()
            == Some(source_accounts.as_str())
            && pg
                .try_psql("replica", &ledger.replace("ledger", "public.ledger"))
                .ok()
                .as_deref()
                == Some(source_ledger.as_str())
    };
    let sqlite_matches = || {
        sqlite_rows(&db, accounts).join("\n") == source_accounts
            && sqlite_rows(&db, ledger).join("\n") == source_ledger
    };
    let converged = wait_until(Duration::from_secs(90), || pg_matches() && sqlite_matches());
    if !converged {
        let target = pg
            .try_psql(
                "replica",
                "SELECT count(*), count(DISTINCT (writer, seq)) FROM public.ledger",
            )
            .unwrap_or_default();
        let source = pg.psql("shop", "SELECT count(*) FROM ledger");
        panic!(
            "targets differ from the source after 10 kills (ledger rows source {source}, postgres target count/distinct {target}, sqlite {}):\n{}",
            sqlite_rows(&db, "SELECT count(*) FROM ledger").join(""),
            ferry.log()
        );
    }
    let status = ferry.terminate();
    assert!(status.success(), "ferry did not stop cleanly: {status:?}");
}
