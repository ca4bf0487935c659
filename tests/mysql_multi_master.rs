//! End-to-end: PostgreSQL and MariaDB replicating into each other (PG→MariaDB and MariaDB→PG, both with
//! `origins = "local"` and last-write-wins), under concurrent writes to overlapping keys on both. Both sides must end
//! identical row by row, versions included, without either pipeline applying the other's changes back.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn postgres_and_mariadb_converge_with_last_write_wins() {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL, writer varchar(10) NOT NULL);
         ALTER TABLE kv REPLICA IDENTITY FULL;
         INSERT INTO kv SELECT g, 0, 'seed' FROM generate_series(1, 30) g;",
    );
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop");
    let dir = scratch();
    let p2m = write_config(
        dir.path(),
        "p2m",
        &format!(
            "[pipeline]\nname = \"p2m\"\nnode = \"pg\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{}\"\norigins = \"local\"\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\nconflict = \"last_write_wins\"\n",
            pg.url("shop"),
            my.url("shop")
        ),
    );
    let m2p = write_config(
        dir.path(),
        "m2p",
        &format!(
            "[pipeline]\nname = \"m2p\"\nnode = \"maria\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"mysql\"\nurl = \"{}\"\nserver_id = 7501\norigins = \"local\"\nsnapshot = \"never\"\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\nconflict = \"last_write_wins\"\n\
             [[transform]]\ntype = \"route\"\ntables = [\"shop.*\"]\nto = \"public.{{table}}\"\n",
            my.url("shop"),
            pg.url("shop")
        ),
    );
    let (log_p2m, log_m2p) = (dir.path().join("p2m.log"), dir.path().join("m2p.log"));
    let a = Ferry::start(&p2m, &log_p2m);
    a.wait_streaming();
    let copied = wait_until(WAIT, || {
        my.try_sql("SELECT count(*) FROM shop.kv").ok().as_deref() == Some("30")
    });
    assert!(copied, "the snapshot did not reach MariaDB:\n{}", a.log());
    let b = Ferry::start(&m2p, &log_m2p);
    b.wait_streaming();
    let (pg_port, my_port) = (pg.port, my.port);
    // Overlapping keys from both sides, with deletes and re-inserts.
    let writers = Writers::start(2, move |w, seq| {
        let k = (seq * 7 + w as i32 * 3) % 30 + 1;
        if w == 0 {
            let sql = if seq % 13 == 0 {
                format!("DELETE FROM kv WHERE id = {k}")
            } else {
                format!("INSERT INTO kv VALUES ({k}, {seq}, 'pg') ON CONFLICT (id) DO UPDATE SET v = excluded.v, writer = excluded.writer")
            };
            psql_ok(pg_port, "shop", &sql)
        } else {
            let sql = if seq % 11 == 0 {
                format!("DELETE FROM kv WHERE id = {k}")
            } else {
                format!("INSERT INTO kv (id, v, writer) VALUES ({k}, {seq}, 'maria') ON DUPLICATE KEY UPDATE v = VALUES(v), writer = VALUES(writer)")
            };
            mariadb_ok(my_port, "shop", &sql)
        }
    });
    std::thread::sleep(Duration::from_secs(15));
    let writes = writers.stop();
    let pg_rows = || {
        pg.try_psql(
            "shop",
            "SELECT id, v, writer, _ferry_ts, coalesce(_ferry_node, '-') FROM kv ORDER BY id",
        )
        .unwrap_or_default()
    };
    let my_rows = || {
        my.try_sql(
            "SELECT id, v, writer, _ferry_ts, coalesce(_ferry_node, '-') FROM shop.kv ORDER BY id",
        )
        .unwrap_or_default()
        .replace('\t', "|")
    };
    let converged = wait_until(WAIT, || pg_rows() == my_rows());
    assert!(
        converged,
        "PostgreSQL and MariaDB differ\n--- pg\n{}\n--- mariadb\n{}\n--- p2m\n{}\n--- m2p\n{}",
        pg_rows(),
        my_rows(),
        a.log(),
        b.log()
    );
    assert!(pg_rows().lines().count() > 10, "rows: {}", pg_rows());
    // No ping-pong: each pipeline applied at most what its source's clients wrote (and the 30 copied rows).
    let (applied_p2m, applied_m2p) = (
        metric(&a, "ferry_sink_rows_total"),
        metric(&b, "ferry_sink_rows_total"),
    );
    assert!(
        applied_p2m <= (writes[0] + 30) as f64 && applied_m2p <= writes[1] as f64,
        "applied {applied_p2m} / {applied_m2p} rows for {writes:?} writes"
    );
    assert!(metric(&b, "ferry_source_origin_skipped_total") > 0.0);
    assert!(metric(&a, "ferry_source_origin_skipped_total") > 0.0);
    // Both conflict logs agree with last-write-wins.
    let check = |log: String| {
        for line in log.lines() {
            let f: Vec<&str> = line.split(['|', '\t']).collect();
            if f[2] == "update_origin_differs" || f[2] == "insert_exists" {
                let local = (f[4].parse::<i64>().unwrap(), f[5]);
                let remote = (f[6].parse::<i64>().unwrap(), f[7]);
                assert_eq!(f[3] == "remote", remote > local, "{line}");
            }
        }
        log.lines().count()
    };
    let sql = "SELECT table_name, `key`, kind, winner, local_ts, local_node, remote_ts, remote_node FROM ferry_conflicts";
    let in_pg = check(pg.psql("shop", &sql.replace('`', "\"")));
    let in_my = check(my.sql(&sql.replace("ferry_conflicts", "shop.ferry_conflicts")));
    println!("conflicts: {in_pg} in PostgreSQL, {in_my} in MariaDB");
    assert!(in_pg + in_my > 0, "no conflict was met");
    // `ferry conflicts` reads the MariaDB target's log too.
    let out = std::process::Command::new(ferry_bin())
        .args(["conflicts", "--json", "--config"])
        .arg(&p2m)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(in_my), "{listed}");
}
