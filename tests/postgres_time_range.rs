//! PostgreSQL's whole date/time range, end to end: the first and last value of every date/time type, ±infinity,
//! microseconds, BC years, 24:00:00, zones with seconds and interval extremes travel by snapshot and by stream
//! into a PostgreSQL target unchanged and into SQLite as PostgreSQL's own text; a MariaDB target takes what its
//! DATE / DATETIME hold exactly and stops at a value outside them, naming it.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

const TABLE: &str = "CREATE TABLE times (
  id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz, t time, ttz timetz, iv interval, ts3 timestamp(3),
  tsa timestamp[], da date[]);";

/// Rows at the ends of every type's range (and NULLs), entered in forms other than PostgreSQL's output where
/// that tests more: offsets and zones on timestamptz input, unit words on intervals.
const ROWS: &str = "INSERT INTO times VALUES
 (1, '5874897-12-31', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', '24:00:00',
  '24:00:00-15:59', '178000000 years', '294276-12-31 23:59:59.999',
  '{\"294276-12-31 23:59:59.999999\",\"4714-11-24 00:00:00 BC\",infinity,NULL}', '{5874897-12-31,\"4714-11-24 BC\"}'),
 (2, '4714-11-24 BC', '4714-11-24 00:00:00 BC', '4714-11-23 19:03:58 BC America/New_York', '00:00:00',
  '00:00:00+15:59:59', '-178000000 years', '4714-11-24 00:00:00 BC', '{}', '{-infinity}'),
 (3, 'infinity', 'infinity', 'infinity', '23:59:59.999999', '12:00:00+05:30:15',
  interval '-178956970 years -8 months -2147483647 days -9223372036854775808 microseconds', 'infinity', NULL, NULL),
 (4, '-infinity', '-infinity', '-infinity', '12:34:56.000001', '12:00:00-00:00:15',
  interval '178956970 years 7 months 2147483647 days 9223372036854775806 microseconds', '-infinity', NULL, NULL),
 (5, '0001-01-01 BC', '0001-12-31 23:59:59.999999 BC', '0001-01-01 00:00:00.000001+00', '00:00:00.000001',
  '23:59:59.999999+00', '1 mon 1 day 0.000001 sec', '0001-12-31 23:59:59.999 BC', NULL, NULL),
 (6, '0001-01-01', '9999-12-31 23:59:59.999999', '1800-01-01 00:00:00+05:53:28', '12:00:00',
  '00:00:00.000001-00:00:01', '-0.000001 sec', '1970-01-01 00:00:00', NULL, NULL),
 (7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);";

/// PostgreSQL 17 and later: infinite intervals.
const INFINITE_INTERVALS: &str =
    "INSERT INTO times (id, iv) VALUES (8, 'infinity'), (9, '-infinity');";

/// SQLite's text of `d, ts, tstz, t, ttz, iv, ts3, tsa, da` for rows 1 to 7 (and again for 11 to 17): PostgreSQL's
/// own output under `datestyle = ISO`, `timezone = UTC`, `intervalstyle = iso_8601`.
const SQLITE_ROWS: [&str; 7] = [
    "5874897-12-31|294276-12-31 23:59:59.999999|294276-12-31 23:59:59.999999+00|24:00:00|24:00:00-15:59|\
     P178000000Y|294276-12-31 23:59:59.999|\
     [\"294276-12-31 23:59:59.999999\",\"4714-11-24 00:00:00 BC\",\"infinity\",null]|\
     [\"5874897-12-31\",\"4714-11-24 BC\"]",
    "4714-11-24 BC|4714-11-24 00:00:00 BC|4714-11-24 00:00:00+00 BC|00:00:00|00:00:00+15:59:59|P-178000000Y|\
     4714-11-24 00:00:00 BC|[]|[\"-infinity\"]",
    "infinity|infinity|infinity|23:59:59.999999|12:00:00+05:30:15|\
     P-178956970Y-8M-2147483647DT-2562047788H-54.775808S|infinity||",
    "-infinity|-infinity|-infinity|12:34:56.000001|12:00:00-00:00:15|\
     P178956970Y7M2147483647DT2562047788H54.775806S|-infinity||",
    "0001-01-01 BC|0001-12-31 23:59:59.999999 BC|0001-01-01 00:00:00.000001+00|00:00:00.000001|\
     23:59:59.999999+00|P1M1DT0.000001S|0001-12-31 23:59:59.999 BC||",
    "0001-01-01|9999-12-31 23:59:59.999999|1799-12-31 18:06:32+00|12:00:00|00:00:00.000001-00:00:01|\
     PT-0.000001S|1970-01-01 00:00:00||",
    "||||||||",
];

/// Every column as text, under Ferry's own session settings and under PostgreSQL's defaults.
const AS_TEXT: &str = "SELECT id, d::text, ts::text, tstz::text, t::text, ttz::text, iv::text, ts3::text, tsa::text, \
                       da::text FROM public.times ORDER BY id";

fn texts(pg: &PgServer, db: &str) -> Result<String, String> {
    let iso = pg.try_psql(
        db,
        &format!(
            "SET datestyle = 'ISO, YMD'; SET timezone = 'UTC'; SET intervalstyle = 'iso_8601'; {AS_TEXT}"
        ),
    )?;
    let postgres = pg.try_psql(
        db,
        &format!(
            "SET datestyle = 'Postgres, DMY'; SET timezone = 'Asia/Kolkata'; SET intervalstyle = 'postgres'; \
             {AS_TEXT}"
        ),
    )?;
    Ok(format!("{iso}\n--- postgres style\n{postgres}"))
}

fn server_version(pg: &PgServer) -> u32 {
    pg.psql("shop", "SHOW server_version_num").parse().unwrap()
}

#[test]
fn every_date_time_extreme_round_trips_through_snapshot_and_stream() {
    let pg = server_with_dbs();
    // Sessions that do not set their own styles get these; Ferry's sessions set ISO / UTC / iso_8601.
    pg.psql(
        "shop",
        "ALTER DATABASE shop SET datestyle = 'SQL, DMY'; ALTER DATABASE shop SET timezone = 'America/New_York';
         ALTER DATABASE shop SET intervalstyle = 'postgres_verbose';
         ALTER DATABASE replica SET datestyle = 'German, DMY'; ALTER DATABASE replica SET timezone = 'Asia/Kolkata';
         ALTER DATABASE replica SET intervalstyle = 'sql_standard';",
    );
    pg.psql("shop", TABLE);
    pg.psql("shop", ROWS);
    let infinite_intervals = server_version(&pg) >= 170_000;
    if infinite_intervals {
        pg.psql("shop", INFINITE_INTERVALS);
    }
    let dir = scratch();
    let db = dir.path().join("r.db");
    let ferry = Ferry::start(
        &write_config(
            dir.path(),
            "times",
            &fan_out_config(&pg, "times", "[pipeline.batch]\nmax_wait = \"20ms\"", &db),
        ),
        &dir.path().join("f.log"),
    );
    let snapshot_rows = if infinite_intervals { "9" } else { "7" };
    assert!(
        wait_until(WAIT, || pg
            .try_psql("replica", "SELECT count(*) FROM public.times")
            .is_ok_and(|n| n == snapshot_rows)),
        "snapshot did not arrive:\n{}",
        ferry.log()
    );
    // The same values again, by streaming, as rows 11 to 19; then updates that move values to the other ends.
    pg.psql(
        "shop",
        "INSERT INTO times SELECT id + 10, d, ts, tstz, t, ttz, iv, ts3, tsa, da FROM times",
    );
    pg.psql(
        "shop",
        "UPDATE times SET d = '4714-11-24 BC', ts = '4714-11-24 00:00:00 BC', tstz = '294276-12-31 23:59:59.999999+00',
           t = '24:00:00', ttz = '24:00:00+15:59', iv = '-178000000 years' WHERE id = 17;
         UPDATE times SET ts = '294276-12-31 23:59:59.999999', iv = 'P-2147483648D' WHERE id = 12;",
    );
    let same = || matches!((texts(&pg, "replica"), texts(&pg, "shop")), (Ok(t), Ok(s)) if t == s);
    assert!(
        wait_until(WAIT, same),
        "the target differs\n--- source\n{}\n--- target\n{}\n--- log\n{}",
        texts(&pg, "shop").unwrap(),
        texts(&pg, "replica").unwrap_or_else(|e| e),
        ferry.log()
    );
    assert_eq!(
        pg.psql(
            "replica",
            "SELECT count(*) FROM public.times WHERE ts = '294276-12-31 23:59:59.999999'"
        ),
        "3",
        "rows 1, 11 and 12 hold PostgreSQL's last timestamp, compared as a value"
    );

    // SQLite: PostgreSQL's own text, snapshot and stream alike.
    let sql = "SELECT d, ts, tstz, t, ttz, iv, ts3, tsa, da FROM times WHERE id % 10 BETWEEN 1 AND 6 ORDER BY id % 10, id";
    let mut expected = Vec::new();
    for row in &SQLITE_ROWS[..6] {
        expected.push(row.to_string());
        expected.push(row.to_string());
    }
    // Row 12's update.
    expected[3] = expected[3]
        .replace(
            "4714-11-24 00:00:00 BC|4714-11-24 00:00:00+00",
            "294276-12-31 23:59:59.999999|4714-11-24 00:00:00+00",
        )
        .replace("|P-178000000Y|", "|P-2147483648D|");
    assert!(
        wait_until(WAIT, || sqlite_rows(&db, sql) == expected),
        "SQLite:\n{:#?}\nexpected:\n{expected:#?}",
        sqlite_rows(&db, sql)
    );
    assert_eq!(
        sqlite_rows(&db, "SELECT d, ts, tstz, t, ttz, iv, ts3, tsa, da FROM times WHERE id IN (7, 17) ORDER BY id"),
        [
            SQLITE_ROWS[6],
            "4714-11-24 BC|4714-11-24 00:00:00 BC|294276-12-31 23:59:59.999999+00|24:00:00|24:00:00+15:59|\
             P-178000000Y|||"
        ]
    );
    if infinite_intervals {
        assert_eq!(
            sqlite_rows(
                &db,
                "SELECT iv FROM times WHERE id IN (8, 9, 18, 19) ORDER BY id"
            ),
            ["infinity", "-infinity", "infinity", "-infinity"]
        );
    }
    assert!(ferry.terminate().success());
}

#[test]
fn mariadb_target_holds_its_range_exactly_and_stops_at_a_value_outside_it_naming_it() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE copy");
    pg.psql(
        "shop",
        "CREATE TABLE edge (id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz, t time, ttz timetz, iv interval);
         INSERT INTO edge VALUES
           (1, '0001-01-01', '0001-01-01 00:00:00', '0001-01-01 00:00:00+00', '24:00:00', '12:00:00+05:30:15', '178000000 years'),
           (2, '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00', '00:00:00.000001',
            '24:00:00-15:59', '-0.000001 sec'),
           (3, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "edge",
        &format!(
            "[pipeline]\nname = \"edge\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"{}\"\n\n[[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n",
            pg.url("shop"),
            my.url("copy")
        ),
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    let rows = "SELECT id, d, ts, tstz, t, ttz, iv FROM copy.edge ORDER BY id";
    let expected = "1\t0001-01-01\t0001-01-01 00:00:00.000000\t0001-01-01 00:00:00.000000\t24:00:00.000000\t\
                    12:00:00+05:30:15\tP178000000Y\n\
                    2\t9999-12-31\t9999-12-31 23:59:59.999999\t9999-12-31 23:59:59.999999\t00:00:00.000001\t\
                    24:00:00-15:59\tPT-0.000001S\n\
                    3\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL";
    assert!(
        wait_until(WAIT, || my.try_sql(rows).ok().as_deref() == Some(expected)),
        "MariaDB target:\n{}\n{}",
        my.try_sql(rows).unwrap_or_else(|e| e),
        ferry.log()
    );
    // Year 10000 has no DATETIME, and MySQL's year 0 is no leap year, so not 1 BC. The pipeline stops at the
    // first such value naming table, row, column and value, and writes nothing of its transaction.
    pg.psql(
        "shop",
        "BEGIN; INSERT INTO edge (id, ts) VALUES (4, '10000-01-01 00:00:00');
         UPDATE edge SET d = '0001-12-31 BC' WHERE id = 3; COMMIT;",
    );
    let status = ferry
        .wait_exit(WAIT)
        .expect("ferry should stop at a value MariaDB cannot hold");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains(
            "table public.edge, row (id) = (4), column ts: timestamp 10000-01-01 00:00:00 is outside MySQL's \
             0001-01-01 .. 9999-12-31 (MySQL's year 0000 is not 1 BC: it has no leap day); MySQL cannot hold it"
        ),
        "{log}"
    );
    assert_eq!(my.sql("SELECT count(*), count(d) FROM copy.edge"), "3\t2");
}
