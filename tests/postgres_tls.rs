//! TLS to PostgreSQL: a server that accepts only TLS connections, sslmode=verify-full against the test CA, and a
//! certificate from another CA refused with a clear message.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn replicates_over_tls_with_verify_full() {
    let tls = TlsFiles::new();
    let settings = tls.server_settings();
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let pg = PgServer::start_with(&settings);
    pg.create_db("shop");
    pg.create_db("replica");
    pg.psql(
        "shop",
        "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'before');",
    );
    let query = format!("?sslmode=verify-full&sslrootcert={}", tls.ca.display());
    let dir = scratch();
    let config = write_config(
        dir.path(),
        "tls",
        &format!(
            "[pipeline]\nname = \"tls\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}{query}\"\n\n[sink]\ntype = \"postgres\"\nurl = \"{}{query}\"\n",
            pg.url("shop"),
            pg.url("replica")
        ),
    );
    let ferry = Ferry::start(&config, &dir.path().join("ferry.log"));
    pg.psql("shop", "INSERT INTO notes VALUES (2, 'after')");
    let sql = "SELECT id, body FROM notes ORDER BY id";
    assert!(
        wait_until(WAIT, || pg.try_psql("replica", sql).ok().as_deref()
            == Some("1|before\n2|after")),
        "{}",
        ferry.log()
    );
    // The replication connection is encrypted (the server accepts nothing else over TCP anyway).
    let encrypted = pg.psql(
        "shop",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
         WHERE ssl AND backend_type = 'walsender' AND application_name = 'ferry_tls'",
    );
    assert_eq!(encrypted, "1");
    assert!(ferry.terminate().success());
}

#[test]
fn verify_full_refuses_a_certificate_from_another_ca() {
    let tls = TlsFiles::new();
    let other = TlsFiles::new();
    let settings = tls.server_settings();
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let pg = PgServer::start_with(&settings);
    pg.create_db("shop");
    let dir = scratch();
    let check = |query: &str| {
        let config = write_config(
            dir.path(),
            "tls",
            &format!(
                "[pipeline]\nname = \"tls\"\n\n[source]\ntype = \"postgres\"\nurl = \"{}{query}\"\n\n[sink]\ntype = \"sqlite\"\npath = \"t.db\"\n",
                pg.url("shop"),
            ),
        );
        let out = Command::new(ferry_bin())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run ferry check");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = check(&format!(
        "?sslmode=verify-full&sslrootcert={}",
        other.ca.display()
    ));
    assert!(!ok, "{text}");
    assert!(text.contains("certificate"), "{text}");
    let (ok, text) = check("?sslmode=disable");
    assert!(!ok, "{text}");
    assert!(text.contains("no encryption"), "{text}");
    let (ok, text) = check(&format!(
        "?sslmode=verify-full&sslrootcert={}",
        tls.ca.display()
    ));
    assert!(text.contains("wal_level"), "{text}");
    assert!(ok, "{text}");
}
