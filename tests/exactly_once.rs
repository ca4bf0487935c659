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

/// The same SIGKILL test through a 4-stage chain (filter + mask + compute + route): the targets equal what the
/// chain makes of the source, computed independently by SQL — no row lost, duplicated or transformed twice.
#[test]
fn a_transform_chain_keeps_exactly_once_under_sigkill() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
         INSERT INTO accounts SELECT g, 0, 'n' || g FROM generate_series(1, 5000) g;
         CREATE TABLE ledger (writer int NOT NULL, seq int NOT NULL, amount bigint NOT NULL, PRIMARY KEY (writer, seq));",
    );
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config = write_config(
        dir.path(),
        "killchain",
        &format!(
            "{}\n{}",
            fan_out_config(
                &pg,
                "killchain",
                "[pipeline.batch]\nmax_events = 300\nmax_wait = \"20ms\"",
                &db,
            ),
            r#"
[[transform]]
type = "filter"
tables = ["public.ledger"]
mode = "rows"
where = "after.amount % 3 != 0"
[[transform]]
type = "mask"
columns = ["public.accounts.note"]
with = "sha256"
salt = "kill-salt"
[[transform]]
type = "compute"
tables = ["public.accounts"]
column = "doubled"
column_type = "bigint"
expression = "after.balance * 2"
[[transform]]
type = "route"
tables = ["public.accounts"]
to = "public.accounts_masked"
"#
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
                 UPDATE accounts SET balance = balance + {seq}, note = 'w{w} s{seq}'
                   WHERE id = ({seq} * 7919 + {w}) % 5000 + 1;
                 COMMIT;"
            ),
        )
    });
    kill_randomly(&config, &log, 8);
    writers.stop();

    let ferry = Ferry::start(&config, &log);
    let expected_accounts = pg.psql(
        "shop",
        "SELECT id, balance, encode(sha256(convert_to('kill-salt' || note, 'UTF8')), 'hex'), balance * 2
         FROM accounts ORDER BY id",
    );
    let expected_ledger = pg.psql(
        "shop",
        "SELECT writer, seq, amount FROM ledger WHERE amount % 3 <> 0 ORDER BY writer, seq",
    );
    let accounts = "SELECT id, balance, note, doubled FROM accounts_masked ORDER BY id";
    let ledger = "SELECT writer, seq, amount FROM ledger ORDER BY writer, seq";
    let pg_matches = || {
        pg.try_psql("replica", accounts).ok().as_deref() == Some(expected_accounts.as_str())
            && pg.try_psql("replica", ledger).ok().as_deref() == Some(expected_ledger.as_str())
    };
    let sqlite_matches = || {
        sqlite_rows(&db, accounts).join("\n") == expected_accounts
            && sqlite_rows(&db, ledger).join("\n") == expected_ledger
    };
    let converged = wait_until(Duration::from_secs(90), || pg_matches() && sqlite_matches());
    assert!(
        converged,
        "targets differ after 8 kills (ledger: source {} rows kept, postgres target {}, sqlite {}):\n{}",
        expected_ledger.lines().count(),
        pg.try_psql("replica", "SELECT count(*) FROM ledger").unwrap_or_default(),
        sqlite_rows(&db, "SELECT count(*) FROM ledger").join(""),
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

/// A SIGKILL during a 2,000,000-row initial copy: the tables the snapshot finished stay as they are, each table
/// it had not finished is re-copied online (a second SIGKILL lands during that re-copy), and both targets end
/// equal to the source, while writers change every table throughout — including updates that leave a TOASTed
/// column unchanged, which a target could not apply to a row it lacks.
#[test]
fn a_snapshot_cut_short_resumes_with_the_tables_it_had_not_copied() {
    let pg = server_with_dbs();
    // Rows whose id is a multiple of 1000 carry a TOASTed document.
    let doc = "CASE WHEN g % 1000 = 0 THEN repeat(md5(g::text), 200) ELSE 'd' || g END";
    let mut setup = format!(
        "CREATE TABLE big (id bigint PRIMARY KEY, n bigint NOT NULL, doc text);
         INSERT INTO big SELECT g, g, {doc} FROM generate_series(1, 1000000) g;"
    );
    for t in 1..=10 {
        setup.push_str(&format!(
            "CREATE TABLE small_{t} (id int PRIMARY KEY, n int NOT NULL, doc text);
             INSERT INTO small_{t} SELECT g, g, {doc} FROM generate_series(1, 100000) g;"
        ));
    }
    pg.psql("shop", &setup);
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config = write_config(
        dir.path(),
        "cutshort",
        &fan_out_config(&pg, "cutshort", "snapshot_parallelism = 2", &db),
    );
    let log = dir.path().join("ferry.log");
    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        let t = seq % 10 + 1;
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN;
                 UPDATE big SET n = n + 1 WHERE id = ({seq}::bigint * 7919 + {w}) % 1000 * 1000 + 1000;
                 UPDATE big SET n = n + {seq} WHERE id = ({seq}::bigint * 104729 + {w}) % 1000000 + 1;
                 DELETE FROM big WHERE id = ({seq}::bigint * 15485863 + {w}) % 1000000 + 1;
                 INSERT INTO big VALUES (2000000 + {w} * 100000 + {seq}, {seq}, 'new');
                 UPDATE small_{t} SET n = n + 1 WHERE id = ({seq} * 31 + {w}) % 100 * 1000 + 1000;
                 DELETE FROM small_{t} WHERE id = ({seq} * 7919 + {w}) % 100000 + 1;
                 INSERT INTO small_{t} VALUES (200000 + {w} * 100000 + {seq}, {seq}, 'new');
                 COMMIT;"
            ),
        )
    });

    // Whether either sink has yet to record `table` as copied.
    let copying = |table: &str| {
        let done = format!(
            "SELECT count(*) FROM ferry_schemas WHERE source_table = 'public.{table}' AND {} IS NULL",
            "(applied::jsonb ->> 'copying')"
        );
        pg.try_psql("replica", &done).ok().as_deref() == Some("0")
            || sqlite_rows(
                &db,
                &done.replace(
                    "(applied::jsonb ->> 'copying')",
                    "json_extract(applied, '$.copying')",
                ),
            ) != ["1"]
    };
    let small = |t: usize| format!("small_{t}");
    // Cut the copy short once `big` and most small tables are copied, but not all.
    let ferry = Ferry::start(&config, &log);
    let cut = wait_until(Duration::from_secs(120), || {
        if copying("big") {
            return false;
        }
        let left = (1..=10).filter(|&t| copying(&small(t))).count();
        (1..=3).contains(&left)
    });
    assert!(
        cut,
        "the snapshot was never part-way through its small tables:\n{}",
        ferry.log()
    );
    ferry.kill9();
    let finished: Vec<String> = std::iter::once("big".to_owned())
        .chain((1..=10).map(small))
        .filter(|t| !copying(t))
        .collect();
    assert!(
        finished.len() < 11,
        "every table was copied before the kill"
    );
    let stamp = |table: &str| {
        pg.psql(
            "replica",
            &format!("SELECT min(xmin::text::bigint) FROM public.{table} WHERE id <= 100000"),
        )
    };
    let stamps: Vec<String> = finished.iter().map(|t| stamp(t)).collect();

    // Resume; a second kill lands during the online re-copy.
    let ferry = Ferry::start(&config, &log);
    assert!(
        wait_until(Duration::from_secs(60), || ferry
            .log()
            .contains("re-copy started")),
        "no online re-copy started after the snapshot was cut short:\n{}",
        ferry.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    ferry.kill9();
    writers.stop();

    let ferry = Ferry::start(&config, &log);
    let mut tables = vec!["big".to_owned()];
    tables.extend((1..=10).map(small));
    let expected: Vec<String> = tables
        .iter()
        .map(|t| pg.psql("shop", &format!("SELECT id, n, doc FROM {t} ORDER BY id")))
        .collect();
    let matches = || {
        tables.iter().zip(&expected).all(|(t, e)| {
            let q = format!("SELECT id, n, doc FROM {t} ORDER BY id");
            pg.try_psql("replica", &q).ok().as_deref() == Some(e.as_str())
                && sqlite_rows(&db, &q).join("\n") == *e
        })
    };
    let converged = wait_until(Duration::from_secs(180), matches);
    assert!(
        converged,
        "targets differ from the source after the snapshot was cut short:\n{}",
        ferry.log()
    );
    // The tables copied before the kill were not copied again: their rows keep the transaction that wrote them.
    for (table, before) in finished.iter().zip(&stamps) {
        assert_eq!(&stamp(table), before, "{table} was copied again");
    }
    let log_text = ferry.log();
    for table in &tables {
        // A table one sink had finished and the other had not is re-copied into both.
        let recopied = log_text.lines().any(|l| {
            l.contains("re-copy started") && l.ends_with(&format!("table=public.{table}"))
        });
        assert_eq!(
            recopied,
            !finished.contains(table),
            "{table}: re-copied online {recopied}, though copied before the kill: {}",
            finished.contains(table)
        );
    }
    assert!(ferry.terminate().success());
}

/// `big`: `rows` rows keyed by `id`, every 5,000th with a document stored out of line (TOAST).
fn big_toasted_table(pg: &PgServer, rows: u64) {
    pg.psql(
        "shop",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, n bigint NOT NULL, doc text);
             ALTER TABLE big ALTER doc SET STORAGE EXTERNAL;
             INSERT INTO big SELECT g, g, CASE WHEN g % 5000 = 0 THEN repeat(md5(g::text), 100) ELSE 'd' || g END
             FROM generate_series(1, {rows}) g;"
        ),
    );
}

/// The log shows a copy resumed in place to its end, never a copy anew into a shadow table.
fn assert_resumed_in_place(log: &str) {
    assert!(
        !log.contains("re-copy started"),
        "a copy anew started instead of resuming in place:\n{log}"
    );
    assert!(
        log.contains("the initial copy resumed in place is complete"),
        "{log}"
    );
}

/// A 2,000,000-row table in a resumable snapshot is copied in chunks of pages, each recorded with the sinks'
/// checkpoint. Killed once some chunks landed, the copy resumes online at the chunks it had not copied, in the
/// target table itself, while writers change rows the copy has and has not reached (TOASTed values left
/// unchanged, keys changed, deletes, inserts); a second kill lands during the resumed copy. Both targets end equal
/// to the source, the resumed copy starts from the rows already copied, and no copy anew (shadow table) starts.
#[test]
fn a_big_table_cut_short_resumes_at_the_chunks_it_had_not_copied() {
    const ROWS: u64 = 2_000_000;
    let pg = server_with_dbs();
    big_toasted_table(&pg, ROWS);
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config = write_config(
        dir.path(),
        "chunks",
        &fan_out_config(&pg, "chunks", "snapshot_parallelism = 2", &db),
    );
    let log = dir.path().join("ferry.log");
    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN;
                 UPDATE big SET n = n + 1 WHERE id = ({seq}::bigint * 7919 + {w}) % 400 * 5000 + 5000;
                 UPDATE big SET n = n + {seq} WHERE id = ({seq}::bigint * 104729 + {w}) % {ROWS} + 1;
                 UPDATE big SET id = id + 10000000 WHERE id = ({seq}::bigint * 15485863 + {w}) % 400 * 5000 + 2500;
                 UPDATE big SET id = id + 10000000 WHERE id = ({seq}::bigint * 2750159 + {w}) % 400 * 5000 + 5000;
                 DELETE FROM big WHERE id = ({seq}::bigint * 7907 + {w}) % {ROWS} + 1;
                 INSERT INTO big VALUES (20000000 + {w} * 1000000 + {seq}, {seq}, 'new');
                 COMMIT;"
            ),
        )
    });
    // Whether both sinks hold a chunk of `big` and neither has it all.
    let part_way = || {
        let pg_has = pg
            .try_psql(
                "replica",
                "SELECT count(*) FROM ferry_schemas WHERE source_table = 'public.big' \
                 AND applied::jsonb ? 'recopy' AND applied::jsonb ? 'copying'",
            )
            .ok()
            .as_deref()
            == Some("1");
        pg_has
            && sqlite_rows(
                &db,
                "SELECT count(*) FROM ferry_schemas WHERE source_table = 'public.big' \
                 AND json_extract(applied, '$.recopy') IS NOT NULL \
                 AND json_extract(applied, '$.copying') IS NOT NULL",
            ) == ["1"]
    };
    let ferry = Ferry::start(&config, &log);
    assert!(
        wait_until(Duration::from_secs(300), part_way),
        "no chunk of big was recorded part-way through its copy:\n{}",
        ferry.log()
    );
    ferry.kill9();

    // Resume; a second kill lands during the resumed copy.
    let ferry = Ferry::start(&config, &log);
    let resumed = "resuming the table's initial copy at the pages it had not copied";
    assert!(
        wait_until(Duration::from_secs(60), || ferry.log().contains(resumed)),
        "the copy did not resume at its chunks:\n{}",
        ferry.log()
    );
    let text = ferry.log();
    let rows_so_far: u64 = text
        .lines()
        .find(|l| l.contains(resumed))
        .and_then(|l| l.split("rows_so_far=").nth(1))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rows_so_far in the resume line:\n{text}"));
    assert!(
        (200_000..ROWS).contains(&rows_so_far),
        "the resumed copy starts at {rows_so_far} rows"
    );
    std::thread::sleep(Duration::from_millis(2000));
    ferry.kill9();
    std::thread::sleep(Duration::from_millis(500));
    writers.stop();

    let ferry = Ferry::start(&config, &log);
    let totals = "SELECT count(*), sum(id), sum(n), sum(length(doc)) FROM big";
    let expected_totals = pg.psql("shop", totals);
    let cheap = wait_until(Duration::from_secs(300), || {
        pg.try_psql("replica", totals).ok().as_deref() == Some(expected_totals.as_str())
            && sqlite_rows(&db, totals).join("\n") == expected_totals
    });
    assert!(
        cheap,
        "the targets' totals differ from the source's ({expected_totals}): postgres {:?}, sqlite {:?}\n{}",
        pg.try_psql("replica", totals),
        sqlite_rows(&db, totals),
        ferry.log()
    );
    let rows = "SELECT id, n, doc FROM big ORDER BY id";
    let expected = pg.psql("shop", rows);
    assert!(
        wait_until(Duration::from_secs(60), || pg
            .try_psql("replica", rows)
            .ok()
            .as_deref()
            == Some(expected.as_str())
            && sqlite_rows(&db, rows).join("\n") == expected),
        "the targets differ from the source row by row"
    );
    let text = ferry.log();
    assert_resumed_in_place(&text);
    assert!(ferry.terminate().success());
}

/// Rows an initial copy had not reached, updated while Ferry is down (TOAST left unchanged, an indexed column so
/// not HOT), move into pages the copy already did: only a read by key brings them to the target, which cannot
/// write the updates whole. A second kill, after the sink committed past those updates and before the resumed
/// copy read the rows, must not lose them: the keys to read again are stored with the checkpoint of the
/// transaction whose changes the sink skipped. (Found by an attack: 300 rows were lost without a word.)
#[test]
fn rows_moved_into_copied_pages_survive_a_kill_before_they_are_read_again() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE big (id bigint PRIMARY KEY, k int NOT NULL, pad text, doc text) \
           WITH (autovacuum_enabled = false);
         ALTER TABLE big ALTER doc SET STORAGE EXTERNAL;
         CREATE INDEX big_k ON big (k);
         INSERT INTO big SELECT g, g, repeat('x', 150),
           CASE WHEN g % 1000 = 0 THEN repeat(md5(g::text), 100) ELSE 'd' || g END
           FROM generate_series(1, 600000) g;
         CREATE TABLE marker (id int PRIMARY KEY);",
    );
    // Free space only in the first chunk's pages.
    pg.psql(
        "shop",
        "DELETE FROM big WHERE ctid < '(2000,0)'::tid AND id % 2 = 0",
    );
    pg.psql("shop", "VACUUM big");
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "moved",
        &pg_to_pg_config(&pg, "moved", "snapshot_parallelism = 2"),
    );
    let log = dir.path().join("ferry.log");
    let ferry = Ferry::start(&config, &log);
    // Killed once the first chunk is recorded.
    let first_done = || {
        pg.try_psql(
            "replica",
            "SELECT applied::jsonb ->> 'recopy' FROM ferry_schemas WHERE source_table = 'public.big' \
             AND applied::jsonb ? 'copying'",
        )
        .is_ok_and(|c| c.contains("\"left\"") && !c.contains("\"from\":0,"))
    };
    assert!(
        wait_until(Duration::from_secs(300), first_done),
        "the first chunk was never recorded:\n{}",
        ferry.log()
    );
    ferry.kill9();
    pg.psql(
        "shop",
        "UPDATE big SET k = k + 1000000 WHERE id > 300000 AND id % 1000 = 0",
    );
    let moved = pg.psql(
        "shop",
        "SELECT count(*) FROM big WHERE id > 300000 AND id % 1000 = 0 AND (ctid::text::point)[0] < 2000",
    );
    assert_ne!(moved, "0", "no updated row moved into the copied pages");
    // A backlog, so that the resumed copy's first window lands late.
    let backlog = "SELECT count(*), coalesce(sum(k), 0) FROM big WHERE id <= 80000";
    let (count, base): (i64, i64) = {
        let r = pg.psql("shop", backlog);
        let (c, s) = r.split_once('|').unwrap();
        (c.parse().unwrap(), s.parse().unwrap())
    };
    for _ in 0..30 {
        pg.psql("shop", "UPDATE big SET k = k + 1 WHERE id <= 80000");
    }
    let ferry = Ferry::start(&config, &log);
    let some_applied = wait_until(Duration::from_secs(120), || {
        pg.try_psql("replica", "SELECT sum(k) FROM big WHERE id <= 80000")
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|s| s >= base + 3 * count)
    });
    assert!(
        some_applied,
        "the backlog never reached the target:\n{}",
        ferry.log()
    );
    ferry.kill9();

    pg.psql("shop", "INSERT INTO marker VALUES (1)");
    let ferry = Ferry::start(&config, &log);
    let compare =
        "SELECT count(*), sum(id), sum(k), md5(string_agg(id || ':' || k || ':' || pad || ':' || \
                   md5(coalesce(doc, '~')), ',' ORDER BY id)) FROM big";
    let expected = pg.psql("shop", compare);
    let converged = wait_until(Duration::from_secs(300), || {
        ferry
            .log()
            .contains("the initial copy resumed in place is complete")
            && pg
                .try_psql("replica", "SELECT count(*) FROM marker")
                .ok()
                .as_deref()
                == Some("1")
            && pg.try_psql("replica", compare).ok().as_deref() == Some(expected.as_str())
    });
    assert!(
        converged,
        "the target differs from the source ({expected}): {:?}\n{}",
        pg.try_psql("replica", compare),
        ferry.log()
    );
    assert!(ferry.terminate().success());
}

/// The table of an initial copy cut short is rewritten (VACUUM FULL) before Ferry starts again: its page ranges
/// no longer say where the rows not copied are, so the copy resumed in place reads every key instead. The
/// MariaDB target, whose sink leaves to the copy each change of a row it does not hold yet, ends equal to the
/// source, with writers running throughout.
#[test]
fn a_copy_cut_short_of_a_table_rewritten_since_reads_every_key_into_mariadb() {
    const ROWS: u64 = 700_000;
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE replica");
    big_toasted_table(&pg, ROWS);
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "rewritten",
        &format!(
            "[pipeline]\nname = \"rewritten\"\nsnapshot_parallelism = 1\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            pg.url("shop"),
            my.url("replica")
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
                 UPDATE big SET n = n + 1 WHERE id = ({seq}::bigint * 7919 + {w}) % 140 * 5000 + 5000;
                 UPDATE big SET n = n + {seq} WHERE id = ({seq}::bigint * 104729 + {w}) % {ROWS} + 1;
                 UPDATE big SET id = id + 10000000 WHERE id = ({seq}::bigint * 2750159 + {w}) % 140 * 5000 + 5000;
                 DELETE FROM big WHERE id = ({seq}::bigint * 7907 + {w}) % {ROWS} + 1;
                 INSERT INTO big VALUES (20000000 + {w} * 1000000 + {seq}, {seq}, 'new');
                 COMMIT;"
            ),
        )
    });
    let part_way = || {
        my.try_sql(
            "SELECT count(*) FROM replica.ferry_schemas WHERE source_table = 'public.big' \
             AND JSON_VALUE(applied, '$.recopy') IS NOT NULL AND JSON_VALUE(applied, '$.copying') IS NOT NULL",
        )
        .ok()
        .as_deref()
            == Some("1")
    };
    let ferry = Ferry::start(&config, &log);
    assert!(
        wait_until(Duration::from_secs(300), part_way),
        "no chunk of big was recorded part-way through its copy:\n{}",
        ferry.log()
    );
    ferry.kill9();
    pg.psql("shop", "VACUUM FULL big");

    let ferry = Ferry::start(&config, &log);
    std::thread::sleep(Duration::from_secs(3));
    writers.stop();
    let totals = "SELECT count(*), sum(id), sum(n), sum(length(doc)) FROM big";
    let expected_totals = pg.psql("shop", totals);
    let target_totals = || {
        my.try_sql(&totals.replace("FROM big", "FROM replica.big"))
            .map(|t| t.replace('\t', "|"))
    };
    assert!(
        wait_until(Duration::from_secs(300), || target_totals().ok().as_deref()
            == Some(expected_totals.as_str())),
        "the target's totals differ from the source's ({expected_totals}): {:?}\n{}",
        target_totals(),
        ferry.log()
    );
    let expected = pg.psql("shop", "SELECT id, n, doc FROM big ORDER BY id");
    assert!(
        wait_until(Duration::from_secs(60), || my
            .try_sql("SELECT id, n, doc FROM replica.big ORDER BY id")
            .map(|t| t.replace('\t', "|"))
            .ok()
            .as_deref()
            == Some(expected.as_str())),
        "the target differs from the source row by row"
    );
    let text = ferry.log();
    assert!(
        text.contains("the table was rewritten since its initial copy was cut short"),
        "{text}"
    );
    assert_resumed_in_place(&text);
    assert!(ferry.terminate().success());
}

/// The same cut-short snapshot through a route (every table into schema `mirror`) and a mask: the sinks record
/// each table under its routed name, the source maps those names back through the chain, and the tables the
/// snapshot had not finished are re-copied online into their routed names, masked, until the target equals what
/// the chain makes of the source.
#[test]
fn a_routed_snapshot_cut_short_resumes_under_the_routed_names() {
    let pg = server_with_dbs();
    let doc = "CASE WHEN g % 1000 = 0 THEN repeat(md5(g::text), 200) ELSE 'd' || g END";
    let mut setup = String::new();
    for t in 1..=8 {
        setup.push_str(&format!(
            "CREATE TABLE t{t} (id int PRIMARY KEY, n int NOT NULL, doc text NOT NULL);
             INSERT INTO t{t} SELECT g, g, {doc} FROM generate_series(1, 150000) g;"
        ));
    }
    pg.psql("shop", &setup);
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "routedcut",
        &format!(
            "{}\n{}",
            pg_to_pg_config(&pg, "routedcut", "snapshot_parallelism = 2"),
            r#"
[[transform]]
type = "mask"
columns = ["public.t1.doc"]
with = "sha256"
salt = "cut-salt"
[[transform]]
type = "route"
to = "mirror.{table}"
"#
        ),
    );
    let log = dir.path().join("ferry.log");
    let port = pg.port;
    let writers = Writers::start(2, move |w, seq| {
        let t = seq % 8 + 1;
        psql_ok(
            port,
            "shop",
            &format!(
                "BEGIN;
                 UPDATE t{t} SET n = n + 1 WHERE id = ({seq} * 31 + {w}) % 150 * 1000 + 1000;
                 DELETE FROM t{t} WHERE id = ({seq} * 7919 + {w}) % 150000 + 1;
                 INSERT INTO t{t} VALUES (200000 + {w} * 100000 + {seq}, {seq}, 'new');
                 COMMIT;"
            ),
        )
    });
    let copying = |t: usize| {
        pg.try_psql(
            "replica",
            &format!(
                "SELECT count(*) FROM ferry_schemas WHERE source_table = 'mirror.t{t}' \
                 AND (applied::jsonb ->> 'copying') IS NULL"
            ),
        )
        .ok()
        .as_deref()
            != Some("1")
    };
    let ferry = Ferry::start(&config, &log);
    let cut = wait_until(Duration::from_secs(120), || {
        let left = (1..=8).filter(|&t| copying(t)).count();
        (2..=5).contains(&left)
    });
    assert!(cut, "the snapshot was never part-way:\n{}", ferry.log());
    ferry.kill9();
    let unfinished: Vec<usize> = (1..=8).filter(|&t| copying(t)).collect();
    assert!(!unfinished.is_empty());
    std::thread::sleep(Duration::from_millis(500));
    writers.stop();

    let ferry = Ferry::start(&config, &log);
    let expected = |t: usize| {
        let doc = if t == 1 {
            "encode(sha256(convert_to('cut-salt' || doc, 'UTF8')), 'hex')"
        } else {
            "doc"
        };
        pg.psql(
            "shop",
            &format!("SELECT id, n, {doc} FROM t{t} ORDER BY id"),
        )
    };
    let expected: Vec<String> = (1..=8).map(expected).collect();
    let converged = wait_until(Duration::from_secs(120), || {
        (1..=8).all(|t| {
            pg.try_psql(
                "replica",
                &format!("SELECT id, n, doc FROM mirror.t{t} ORDER BY id"),
            )
            .ok()
            .as_deref()
                == Some(expected[t - 1].as_str())
        })
    });
    assert!(
        converged,
        "the routed target differs after the snapshot was cut short (unfinished {unfinished:?}):\n{}",
        ferry.log()
    );
    let text = ferry.log();
    for t in 1..=8 {
        let recopied = text
            .lines()
            .any(|l| l.contains("re-copy started") && l.ends_with(&format!("table=mirror.t{t}")));
        assert_eq!(
            recopied,
            unfinished.contains(&t),
            "t{t}: re-copied {recopied} (unfinished at the kill: {unfinished:?}):\n{text}"
        );
    }
    assert!(ferry.terminate().success());
}

/// A MariaDB source's tables and a MariaDB → PostgreSQL + SQLite pipeline copying them in key ranges (two
/// workers), with a writer changing every table meanwhile (key changes into the first range and the last):
/// `big` (600,000 rows, an integer key: ranges),
/// `words` (a text key: copied whole), `small`.
fn mariadb_cut_short_setup() -> (
    MariaDbServer,
    PgServer,
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Writers,
) {
    let my = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    my.sql(
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE big (id bigint PRIMARY KEY, n bigint NOT NULL, doc text);
         INSERT INTO big SELECT seq, seq, concat('d', seq) FROM seq_1_to_600000;
         CREATE TABLE words (w varchar(40) PRIMARY KEY, n int NOT NULL);
         INSERT INTO words SELECT concat('w', seq), seq FROM seq_1_to_50000;
         CREATE TABLE small (id int PRIMARY KEY, n int NOT NULL);
         INSERT INTO small SELECT seq, seq FROM seq_1_to_5000;
         ANALYZE TABLE big, words, small;",
    );
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config = write_config(
        dir.path(),
        "mcut",
        &format!(
            "[pipeline]\nname = \"mcut\"\nsnapshot_parallelism = 2\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n\
             [source]\ntype = \"mysql\"\nurl = \"{}\"\nserver_id = 4343\n\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n",
            my.url("shop"),
            pg.url("replica"),
            db.display()
        ),
    );
    let log = dir.path().join("ferry.log");
    let port = my.port;
    // One writer: two would deadlock now and then, which fails a writer.
    let writers = Writers::start(1, move |w, seq| {
        mariadb_ok(
            port,
            "shop",
            &format!(
                "BEGIN;
                 UPDATE big SET n = n + 1 WHERE id = ({seq} * 104729 + {w}) % 600000 + 1;
                 DELETE FROM big WHERE id = ({seq} * 15485863 + {w}) % 600000 + 1;
                 INSERT INTO big VALUES (2000000 + {w} * 100000 + {seq}, {seq}, 'new');
                 UPDATE big SET id = id + 3000000 WHERE id = ({seq} * 7919 + {w}) % 600000 + 1;
                 UPDATE big SET id = -id WHERE id = ({seq} * 6007 + {w}) % 600000 + 1;
                 UPDATE words SET n = n + 1 WHERE w = concat('w', ({seq} * 31 + {w}) % 50000 + 1);
                 INSERT INTO words VALUES (concat('new', {w}, '-', {seq}), {seq});
                 UPDATE small SET n = n - 1 WHERE id = ({seq} * 13 + {w}) % 5000 + 1;
                 COMMIT;"
            ),
        )
    });
    (my, pg, dir, config, log, writers)
}

/// Whether the targets equal the MariaDB source, table by table (keys, values), once the writers stopped.
fn assert_mariadb_copied(my: &MariaDbServer, pg: &PgServer, db: &std::path::Path, ferry: &Ferry) {
    assert_mariadb_tables_copied(my, pg, db, ferry, &["big", "words", "small"]);
}

/// [`assert_mariadb_copied`] for some of the tables.
fn assert_mariadb_tables_copied(
    my: &MariaDbServer,
    pg: &PgServer,
    db: &std::path::Path,
    ferry: &Ferry,
    tables: &[&str],
) {
    // Text keys in byte order everywhere.
    for (table, columns, my_key, pg_key) in [
        ("big", "id, n, doc", "id", "id"),
        ("words", "w, n", "w COLLATE utf8mb4_bin", "w COLLATE \"C\""),
        ("small", "id, n", "id", "id"),
    ]
    .into_iter()
    .filter(|(t, ..)| tables.contains(t))
    {
        let key = my_key.split(' ').next().unwrap_or(my_key);
        let sql = format!("SELECT {columns} FROM {table} ORDER BY {key}");
        let source = my
            .sql(&format!(
                "SELECT {columns} FROM shop.{table} ORDER BY {my_key}"
            ))
            .replace('\t', "|");
        let pg_sql = format!("SELECT {columns} FROM shop.{table} ORDER BY {pg_key}");
        let same = wait_until(Duration::from_secs(120), || {
            pg.try_psql("replica", &pg_sql).ok().as_deref() == Some(source.as_str())
                && sqlite_rows(db, &sql.replace(" FROM ", " FROM shop_")).join("\n") == source
        });
        assert!(
            same,
            "a target's {table} differs from the source ({} rows): PostgreSQL {} rows, SQLite {} rows\n{}",
            source.lines().count(),
            pg.try_psql("replica", &pg_sql).unwrap_or_default().lines().count(),
            sqlite_rows(db, &sql.replace(" FROM ", " FROM shop_")).len(),
            ferry.log()
        );
    }
}

/// Whether both sinks recorded key ranges left of `big` (a range committed, the copy not done): a sink without any
/// checkpoint would send every sink back to a new snapshot.
fn big_ranges_recorded(pg: &PgServer, db: &std::path::Path) -> bool {
    let sql = "SELECT count(*) FROM ferry_schemas WHERE source_table = 'shop.big' AND applied LIKE '%mysql_key_ranges%'";
    pg.try_psql("replica", sql).ok().as_deref() == Some("1") && sqlite_rows(db, sql) == ["1"]
}

/// Starts Ferry and SIGKILLs it once both sinks recorded a key range of `big`.
fn cut_short_after_a_key_range(
    config: &std::path::Path,
    log: &std::path::Path,
    pg: &PgServer,
    db: &std::path::Path,
) {
    let ferry = Ferry::start(config, log);
    assert!(
        wait_until(Duration::from_secs(180), || big_ranges_recorded(pg, db)),
        "no key range of big was recorded:\n{}",
        ferry.log()
    );
    ferry.kill9();
}

/// A MariaDB source's snapshot, SIGKILLed once a key range of its big table is recorded and again while the
/// resumed copy runs, resumes with the ranges and tables it had not copied (a new snapshot, the stream again from
/// the first one's position): the targets end equal to the source, and the copy did not start over.
#[test]
fn a_mariadb_snapshot_cut_short_resumes_at_the_key_ranges_it_had_not_copied() {
    let (my, pg, dir, config, log, writers) = mariadb_cut_short_setup();
    let db = dir.path().join("replica.db");
    cut_short_after_a_key_range(&config, &log, &pg, &db);
    let ferry = Ferry::start(&config, &log);
    assert!(
        wait_until(Duration::from_secs(60), || ferry
            .log()
            .contains("resuming the snapshot that was cut short")),
        "the copy did not resume:\n{}",
        ferry.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    ferry.kill9();
    let ferry = Ferry::start(&config, &log);
    std::thread::sleep(Duration::from_secs(3));
    writers.stop();
    assert_mariadb_copied(&my, &pg, &db, &ferry);
    let text = ferry.log();
    assert!(
        !text.contains("every table is copied anew"),
        "the copy started over:\n{text}"
    );
    // The first resume had fewer key ranges left than the table was cut into.
    let first_resume = text
        .lines()
        .find(|l| l.contains("resuming the snapshot that was cut short"))
        .expect("resume line");
    let left: usize = first_resume
        .split("key_ranges_left=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("key_ranges_left in the resume line");
    let chunks: usize = text
        .lines()
        .find(|l| l.contains("copying the table in primary-key ranges") && l.contains("shop.big"))
        .and_then(|l| l.split("chunks=").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("chunks of big");
    assert!(
        left < chunks,
        "{left} of {chunks} ranges left: nothing was kept"
    );
    assert!(ferry.terminate().success());
}

/// A schema change (logged compressed) while Ferry is down between a MariaDB snapshot cut short and its resume:
/// rows copied with the new shape cannot take the old shape's changes again, so every table is copied anew at the
/// new position, and the targets end equal to the source.
#[test]
fn a_mariadb_snapshot_cut_short_before_a_schema_change_is_copied_anew() {
    let (my, pg, dir, config, log, writers) = mariadb_cut_short_setup();
    let db = dir.path().join("replica.db");
    cut_short_after_a_key_range(&config, &log, &pg, &db);
    // Logged compressed (MariaDB's Query_compressed, a statement past 256 bytes): a schema change all the same.
    my.sql(&format!(
        "SET GLOBAL log_bin_compress = ON; ALTER TABLE shop.small ADD COLUMN note varchar(10) DEFAULT 'x' COMMENT '{}'",
        "c".repeat(300)
    ));
    let ferry = Ferry::start(&config, &log);
    std::thread::sleep(Duration::from_secs(3));
    writers.stop();
    assert_mariadb_copied(&my, &pg, &db, &ferry);
    assert!(
        ferry.log().contains("every table is copied anew"),
        "{}",
        ferry.log()
    );
    assert_eq!(
        pg.psql("replica", "SELECT count(note) FROM shop.small"),
        my.sql("SELECT count(note) FROM shop.small")
    );
    assert!(ferry.terminate().success());
}

/// A table whose copy was cut short and that the pipeline no longer follows when it starts again (left out of
/// `tables`): the copy resumes without it, once, and no later start copies anything anew because of it.
#[test]
fn a_mariadb_table_left_out_after_its_copy_was_cut_short_is_resumed_without() {
    let (my, pg, dir, config, log, writers) = mariadb_cut_short_setup();
    let db = dir.path().join("replica.db");
    cut_short_after_a_key_range(&config, &log, &pg, &db);
    // `words` comes after `big` and `small` in the copy's queue.
    let unfinished = "SELECT count(*) FROM ferry_schemas WHERE source_table = 'shop.words' AND applied LIKE '%\"copying\":true%'";
    assert_eq!(
        pg.psql("replica", unfinished),
        "1",
        "words was copied before the cut"
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "server_id = 4343\n",
        "server_id = 4343\ntables = [\"shop.big\", \"shop.small\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    let ferry = Ferry::start(&config, &log);
    let streaming = || {
        ferry
            .get("/status")
            .is_some_and(|(_, body)| body.contains("\"state\":\"streaming\""))
    };
    assert!(
        wait_until(Duration::from_secs(180), streaming),
        "the resumed copy did not end:\n{}",
        ferry.log()
    );
    assert!(ferry.terminate().success());
    let ferry = Ferry::start(&config, &log);
    ferry.wait_streaming();
    writers.stop();
    assert_mariadb_tables_copied(&my, &pg, &db, &ferry, &["big", "small"]);
    let text = ferry.log();
    assert!(!text.contains("every table is copied anew"), "{text}");
    assert_eq!(
        text.matches("resuming the snapshot that was cut short")
            .count(),
        1,
        "{text}"
    );
    assert!(ferry.terminate().success());
}
