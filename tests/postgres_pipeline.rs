//! End-to-end: PostgreSQL → PostgreSQL and SQLite through the `ferry` binary, against real servers.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn snapshot_then_stream_reaches_both_sinks() {
    let pg = server_with_dbs();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id bigint PRIMARY KEY, item text NOT NULL, qty int, price numeric(10,2));
         INSERT INTO orders SELECT g, 'item ' || g, g % 7, g * 1.25 FROM generate_series(1, 500) g;",
    );
    let dir = scratch();
    let db = dir.path().join("replica.db");
    let config = write_config(
        dir.path(),
        "p",
        &fan_out_config(
            &pg,
            "orders",
            "heartbeat_interval = \"1s\"\n[pipeline.batch]\nmax_wait = \"50ms\"",
            &db,
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));

    let source_rows = || {
        pg.psql(
            "shop",
            "SELECT id, item, qty, price FROM orders ORDER BY id",
        )
    };
    assert!(
        wait_until(WAIT, || pg
            .try_psql("replica", "SELECT count(*) FROM public.orders")
            .is_ok_and(|n| n == "500")),
        "snapshot did not arrive:\n{}",
        ferry.log()
    );
    pg.psql(
        "shop",
        "BEGIN; INSERT INTO orders VALUES (1001, 'new', 1, 9.99); UPDATE orders SET qty = qty + 100 WHERE id <= 10;
         DELETE FROM orders WHERE id BETWEEN 20 AND 29; COMMIT;
         UPDATE orders SET id = 5000 WHERE id = 100;",
    );
    let pg_target = || {
        pg.try_psql(
            "replica",
            "SELECT id, item, qty, price FROM public.orders ORDER BY id",
        )
        .unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || pg_target() == source_rows()),
        "PostgreSQL target differs:\n{}\n--- source\n{}\n--- target\n{}",
        ferry.log(),
        source_rows(),
        pg_target()
    );
    let sqlite_target =
        || sqlite_rows(&db, "SELECT id, item, qty, price FROM orders ORDER BY id").join("\n");
    assert!(
        wait_until(WAIT, || sqlite_target() == source_rows()),
        "SQLite target differs:\n{}",
        ferry.log()
    );
    assert_endpoints(&ferry, &config);
    let status = ferry.terminate();
    assert!(
        status.success(),
        "ferry did not exit cleanly after SIGTERM: {status:?}"
    );
}

/// The HTTP endpoints and `ferry status` while the pipeline streams.
fn assert_endpoints(ferry: &Ferry, config: &std::path::Path) {
    assert_eq!(ferry.get("/healthz").map(|(c, _)| c), Some(200));
    assert!(
        wait_until(WAIT, || ferry.get("/readyz").is_some_and(|(c, _)| c == 200)),
        "never ready: {:?}",
        ferry.get("/readyz")
    );
    let (code, metrics) = ferry.get("/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line_start} missing from:\n{metrics}"))
    };
    // 500 snapshot rows, 1 insert, 10 updates, 10 deletes, 1 key change (delete + insert or update).
    assert!(value("ferry_sink_rows_total{pipeline=\"orders\",sink=\"postgres\"}") >= 521.0);
    assert!(value("ferry_sink_rows_total{pipeline=\"orders\",sink=\"sqlite\"}") >= 521.0);
    assert_eq!(value("ferry_pipeline_up{pipeline=\"orders\"}"), 1.0);
    assert_eq!(
        value("ferry_snapshot_rows_copied{pipeline=\"orders\"}"),
        500.0
    );
    assert!(value("ferry_sink_lag_seconds{pipeline=\"orders\",sink=\"postgres\"}") >= 0.0);

    let out = std::process::Command::new(ferry_bin())
        .args(["status", "--http", &ferry.http, "--config"])
        .arg(config)
        .output()
        .expect("run ferry status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("process: streaming"), "{text}");
    assert!(
        text.contains("snapshot: done, 100.0% — 500 of ~500 rows"),
        "{text}"
    );
    assert!(text.contains("sink postgres: checkpoint pg:"), "{text}");
}

/// Ten pipelines in one process (`ferry run --config p1.toml … p10.toml`), each over its own table and slot from
/// one source database into one target database: they start together, so each creating Ferry's own tables and
/// the source's event trigger at once must not fail another (`CREATE … IF NOT EXISTS` races on the catalog), and
/// every one replicates its table.
#[test]
fn ten_pipelines_in_one_process_start_together_and_each_replicates() {
    let pg = server_with_dbs();
    let dir = scratch();
    let mut configs = Vec::new();
    for i in 1..=10 {
        pg.psql(
            "shop",
            &format!(
                "CREATE TABLE p{i} (id int PRIMARY KEY, v text NOT NULL);
                 INSERT INTO p{i} SELECT g, 'p{i} ' || g FROM generate_series(1, 100) g;"
            ),
        );
        let text = format!(
            "[pipeline]\nname = \"many_{i}\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"{}\"\ntables = [\"public.p{i}\"]\n\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n",
            pg.url("shop"),
            pg.url("replica")
        );
        configs.push(write_config(dir.path(), &format!("p{i}"), &text));
    }
    let paths: Vec<&std::path::Path> = configs.iter().map(|c| c.as_path()).collect();
    let ferry = Ferry::start_many(&paths, &dir.path().join("f.log"));
    for i in 1..=10 {
        pg.psql(
            "shop",
            &format!("INSERT INTO p{i} VALUES (1000, 'streamed {i}')"),
        );
    }
    for i in 1..=10 {
        wait_same(
            &pg,
            &format!("SELECT id, v FROM public.p{i} ORDER BY id"),
            &ferry,
        );
    }
    let log = ferry.log();
    assert!(!log.contains("pipeline failed"), "{log}");
    assert_eq!(
        pg.psql(
            "replica",
            "SELECT count(DISTINCT pipeline) FROM ferry_checkpoints"
        ),
        "10"
    );
    ferry.terminate();
}
