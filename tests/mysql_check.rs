//! `ferry check` against real MariaDB servers: one configured as the MySQL source needs, one that is not.

mod support;

use std::process::Command;

use support::*;

fn check(url: &str, dir: &std::path::Path, tables: &str) -> (bool, String) {
    let config = write_config(
        dir,
        "my",
        &format!(
            "[pipeline]\nname = \"my\"\n\n[source]\ntype = \"mysql\"\nurl = \"{url}\"\ntables = {tables}\n\n[sink]\ntype = \"sqlite\"\npath = \"t.db\"\n"
        ),
    );
    let out = Command::new(ferry_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run ferry check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_passes_on_a_server_with_a_full_row_binlog() {
    let db = MariaDbServer::start();
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id int PRIMARY KEY, item text)");
    let dir = scratch();
    let (ok, text) = check(&db.url("shop"), dir.path(), "[\"shop.orders\"]");
    assert!(ok, "{text}");
    for line in [
        "ok   log_bin: ON",
        "ok   binlog_format: ROW",
        "ok   binlog_row_image: FULL",
        "ok   binlog_row_metadata: FULL",
        "ok   privilege REPLICATION SLAVE",
        "ok   table shop.orders: exists, has a primary key",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn check_names_the_fix_for_each_missing_prerequisite() {
    let db = MariaDbServer::start_with(&[
        "--binlog-format=STATEMENT",
        "--binlog-row-image=MINIMAL",
        "--binlog-row-metadata=MINIMAL",
    ]);
    db.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.log (at datetime, line text);
         CREATE USER 'ferry'@'%'; GRANT SELECT ON shop.* TO 'ferry'@'%';",
    );
    let dir = scratch();
    let url = format!("mysql://ferry@127.0.0.1:{}/shop", db.port);
    let (ok, text) = check(&url, dir.path(), "[\"shop.log\", \"shop.missing\"]");
    assert!(!ok, "{text}");
    for fix in [
        "fix: SET GLOBAL binlog_format = 'ROW'",
        "fix: SET GLOBAL binlog_row_image = 'FULL'",
        "recommended: SET GLOBAL binlog_row_metadata = 'FULL'",
        "fix: GRANT REPLICATION SLAVE ON *.* TO 'ferry'@'%';",
        "fix: GRANT REPLICATION CLIENT ON *.* TO 'ferry'@'%';",
        "fix: ALTER TABLE `shop`.`log` ADD PRIMARY KEY",
        "FAIL table shop.missing: does not exist",
    ] {
        assert!(text.contains(fix), "missing {fix:?} in:\n{text}");
    }
    // Streaming refuses a statement binlog up front, with the fix.
    let out = Command::new(ferry_bin())
        .args(["run", "--http", "off", "--config"])
        .arg(dir.path().join("my.toml"))
        .output()
        .expect("run ferry");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("binlog_format is STATEMENT on the source; Ferry needs ROW"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
