//! Lag monitoring (issue 14): the alert thresholds fire and clear, turn /readyz to 503 while they fire, and the
//! Prometheus rules and Grafana dashboard in docs/monitoring/ use only metrics a running Ferry serves.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Every `ferry_…` name in `text` (PromQL expressions).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ferry_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        names.insert(text[start..end].to_owned());
        i = end;
    }
    names
}

/// Whether `/metrics` declares `name` (a histogram's `_bucket`, `_sum` and `_count` belong to it).
fn declared(metrics: &str, name: &str) -> bool {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|b| metrics.contains(&format!("# TYPE {b} histogram")))
        .unwrap_or(name);
    metrics.contains(&format!("# TYPE {base} "))
}

#[test]
fn lag_alerts_fire_and_clear_and_the_shipped_rules_and_dashboard_use_real_metrics() {
    let pg = server_with_dbs();
    pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "mon",
        &pg_to_pg_config(
            &pg,
            "mon",
            "heartbeat_interval = \"500ms\"\n\
             [pipeline.alerts]\nlag_seconds = 2\nretained_wal = \"1TB\"\nreadyz = true\n\
             [pipeline.batch]\nmax_wait = \"20ms\"\n",
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    pg.psql(
        "shop",
        "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g",
    );
    assert!(
        wait_until(WAIT, || pg
            .try_psql("replica", "SELECT count(*) FROM t")
            .unwrap_or_default()
            == "100"),
        "{}",
        ferry.log()
    );
    // Lag in bytes and the slot's retained WAL are measured every few idle seconds.
    let body = || ferry.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    assert!(
        wait_until(WAIT, || body().contains("ferry_source_retained_wal_bytes{")
            && body().contains("ferry_sink_lag_bytes{")),
        "{}",
        body()
    );
    let metrics = body();
    assert!(
        metrics.contains(
            "ferry_sink_commit_lag_seconds_bucket{pipeline=\"mon\",sink=\"postgres\",le=\"+Inf\"}"
        ),
        "{metrics}"
    );
    assert_eq!(ferry.get("/readyz").map(|(s, _)| s), Some(200));

    // The shipped rules and dashboard name only metrics Ferry serves.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring");
    let rules = std::fs::read_to_string(root.join("ferry-alerts.yml")).unwrap();
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    assert!(exprs.len() >= 5, "{rules}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("ferry-dashboard.json")).unwrap())
            .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            queries.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(queries.len() >= 10);
    let names: BTreeSet<String> = exprs
        .iter()
        .copied()
        .chain(queries.iter().map(String::as_str))
        .flat_map(metric_names)
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        assert!(
            declared(&metrics, name),
            "{name} is not in /metrics:\n{metrics}"
        );
    }

    // The target blocks its table for 6 s while the source writes: lag crosses 2 s, the alert fires, /readyz
    // says why; once the lock goes, it clears.
    let port = pg.port;
    let blocker = std::thread::spawn(move || {
        psql_ok(
            port,
            "replica",
            "BEGIN; LOCK TABLE t; SELECT pg_sleep(6); COMMIT;",
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    pg.psql("shop", "INSERT INTO t VALUES (101, 'late')");
    assert!(
        wait_until(WAIT, || metric(&ferry, "ferry_alert_firing") == 1.0),
        "{}",
        ferry.log()
    );
    let (status, why) = ferry.get("/readyz").expect("readyz");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("alert lag_seconds"), "{why}");
    let (_, live) = ferry.get("/status").expect("status");
    assert!(live.contains("lag_seconds: postgres"), "{live}");
    assert!(blocker.join().unwrap());
    assert!(
        wait_until(WAIT, || ferry.get("/readyz").map(|(s, _)| s) == Some(200)
            && metric(&ferry, "ferry_alert_firing") == 0.0),
        "{}",
        ferry.log()
    );
    assert_eq!(pg.psql("replica", "SELECT v FROM t WHERE id = 101"), "late");
    let log = ferry.log();
    assert!(
        log.contains("alert firing") && log.contains("alert cleared"),
        "{log}"
    );
    assert!(ferry.terminate().success());
}

#[test]
fn a_mariadb_source_measures_each_sinks_binlog_distance() {
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY, v text)");
    let pg = PgServer::start();
    pg.create_db("replica");
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "binlog",
        &format!(
            "[pipeline]\nname = \"binlog\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
             [source]\ntype = \"mysql\"\nurl = \"{}\"\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            my.url("shop"),
            pg.url("replica")
        ),
    );
    let ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
    ferry.wait_streaming();
    my.sql("USE shop; INSERT INTO t SELECT seq, repeat('v', 100) FROM seq_1_to_1000");
    let body = || ferry.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let distance = || {
        body()
            .lines()
            .find_map(|l| {
                l.strip_prefix("ferry_sink_lag_bytes{pipeline=\"binlog\",sink=\"postgres\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok())
    };
    // Caught up with an idle server, the checkpoint is the end of its current binlog file.
    assert!(
        wait_until(WAIT, || pg
            .try_psql("replica", "SELECT count(*) FROM shop.t")
            .is_ok_and(|c| c == "1000")
            && distance() == Some(0.0)),
        "distance {:?}\n{}",
        distance(),
        ferry.log()
    );
}
