//! Operating Ferry: read-only commands stay read-only, refused credentials are said as such and stop the
//! pipeline, and HTTP endpoints beyond loopback are either guarded by a bearer token or warned about.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn status_and_check_write_nothing_to_the_targets() {
    let pg = server_with_dbs();
    let dir = scratch();
    let db = dir.path().join("never.db");
    let cfg = write_config(dir.path(), "ro", &fan_out_config(&pg, "ro", "", &db));
    let (_, out) = ferry_command(&["status", "--http", "off"], &cfg);
    println!("{out}");
    let _ = ferry_command(&["check"], &cfg);
    assert_eq!(
        pg.psql(
            "replica",
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ferry_%'"
        ),
        "0",
        "ferry status or check created tables in the target"
    );
    assert!(
        !db.exists(),
        "ferry status or check created the SQLite file"
    );
}

#[test]
fn refused_credentials_are_said_and_stop_the_pipeline() {
    let pg = server_with_dbs();
    let my = MariaDbServer::start();
    for (name, source) in [
        (
            "pgauth",
            format!(
                "type = \"postgres\"\nurl = \"postgres://no_such_user@127.0.0.1:{}/shop\"",
                pg.port
            ),
        ),
        (
            "myauth",
            format!(
                "type = \"mysql\"\nurl = \"mysql://no_such_user:pw@127.0.0.1:{}/shop\"",
                my.port
            ),
        ),
    ] {
        let dir = scratch();
        let cfg = write_config(
            dir.path(),
            name,
            &format!(
                "[pipeline]\nname = \"{name}\"\n[source]\n{source}\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
                pg.url("replica")
            ),
        );
        let mut ferry = Ferry::start(&cfg, &dir.path().join("f.log"));
        let status = ferry.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| !s.success()),
            "{name}: refused credentials did not stop the pipeline:\n{}",
            ferry.log()
        );
        let log = ferry.log();
        assert!(
            log.contains("refused the connection: check the user, password and database"),
            "{name}: {log}"
        );
        assert!(!log.contains("transient failure"), "{name}: retried: {log}");
        let (ok, out) = ferry_command(&["check"], &cfg);
        assert!(!ok, "{name}: ferry check passed: {out}");
        assert!(out.contains("refused the connection"), "{name}: {out}");
    }
}

#[test]
fn endpoints_beyond_loopback_need_a_token_or_warn() {
    let pg = server_with_dbs();
    pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "tok",
        &fan_out_config(&pg, "tok", "", &dir.path().join("r.db")),
    );
    let get = |port: u16, path: &str, token: Option<&str>| -> Option<u16> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(s, "GET {path} HTTP/1.0\r\nHost: t\r\n{auth}\r\n").ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        r.split(' ').nth(1)?.parse().ok()
    };
    for token in [Some("s3cret-token"), None] {
        let port = free_port();
        let log = dir.path().join(format!("{}.log", token.is_some()));
        let mut cmd = Command::new(ferry_bin());
        cmd.args(["run", "--http", &format!("0.0.0.0:{port}"), "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(t) = token {
            cmd.env("FERRY_HTTP_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("start ferry");
        assert!(wait_until(Duration::from_secs(20), || get(
            port, "/healthz", None
        ) == Some(200)));
        let text = std::fs::read_to_string(&log).unwrap();
        match token {
            Some(t) => {
                assert_eq!(get(port, "/status", None), Some(401));
                assert_eq!(get(port, "/metrics", Some("wrong")), Some(401));
                assert_eq!(get(port, "/status", Some(t)), Some(200));
                assert_eq!(get(port, "/metrics", Some(t)), Some(200));
                assert!(!text.contains("without authentication"), "{text}");
                assert!(!text.contains(t), "the token is in the log: {text}");
            }
            None => {
                assert_eq!(get(port, "/status", None), Some(200));
                assert!(text.contains("without authentication"), "{text}");
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
