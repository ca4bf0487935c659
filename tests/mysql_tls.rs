//! TLS to MySQL / MariaDB (issue 14): a MariaDB server with a certificate from the suite's CA and an account that
//! REQUIRE SSL. With `ssl-mode=VERIFY_IDENTITY` and `ssl-ca`, the binlog source (snapshot and stream) and the
//! MySQL sink both connect encrypted and replicate; a CA that did not sign the server's certificate is refused;
//! `ssl-mode=DISABLED` is refused by the server. The password never appears in what Ferry says.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "tls-pw-4711";

#[test]
fn verify_identity_replicates_over_tls_and_wrong_ca_or_disabled_are_refused() {
    let tls = TlsFiles::new();
    // mariadbd runs as mysql: its own copies of the key and certificates.
    let certs = scratch();
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::fs::copy(tls.dir.path().join(f), certs.path().join(f)).unwrap();
    }
    let _ = Command::new("chown")
        .args(["-R", "mysql:mysql"])
        .arg(certs.path())
        .status();
    let _ = Command::new("chmod").arg("755").arg(certs.path()).status();
    let arg = |k: &str, f: &str| format!("--{k}={}", certs.path().join(f).display());
    let (ca, cert, key) = (
        arg("ssl-ca", "ca.crt"),
        arg("ssl-cert", "server.crt"),
        arg("ssl-key", "server.key"),
    );
    let my = MariaDbServer::start_with(&[&ca, &cert, &key]);
    assert!(
        my.sql("SHOW VARIABLES LIKE 'have_ssl'").contains("YES"),
        "the server did not load its certificate: {}",
        my.log()
    );
    my.sql(&format!(
        "CREATE USER 'tls'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL; GRANT ALL ON *.* TO 'tls'@'%';
         CREATE DATABASE shop; CREATE DATABASE copy;
         CREATE TABLE shop.t (id int PRIMARY KEY, v varchar(20)); INSERT INTO shop.t VALUES (1, 'snapshot');"
    ));
    let url = |db: &str, query: &str| {
        format!("mysql://tls:{PASSWORD}@127.0.0.1:{}/{db}?{query}", my.port)
    };
    let verify = format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", tls.ca.display());
    let dir = scratch();
    let config_with = |name: &str, source: &str, sink: &str, extra: &str| {
        write_config(
            dir.path(),
            name,
            &format!(
                "[pipeline]\nname = \"{name}\"\n[pipeline.batch]\nmax_wait = \"20ms\"\n\
                 [source]\ntype = \"mysql\"\nurl = \"{source}\"\nserver_id = 4343\n{extra}\
                 [[sink]]\ntype = \"mysql\"\nurl = \"{sink}\"\n"
            ),
        )
    };
    let config = |name: &str, source: &str, sink: &str| config_with(name, source, sink, "");
    let cfg = config("tls", &url("shop", &verify), &url("copy", &verify));
    let log = dir.path().join("tls.log");
    let ferry = Ferry::start(&cfg, &log);
    let copied = || {
        my.try_sql("SELECT group_concat(v ORDER BY id) FROM copy.t")
            .unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || copied() == "snapshot"),
        "{}",
        ferry.log()
    );
    my.sql("INSERT INTO shop.t VALUES (2, 'streamed')");
    assert!(
        wait_until(WAIT, || copied() == "snapshot,streamed"),
        "{}",
        ferry.log()
    );
    // Every session of the tls account is encrypted (the server would refuse it otherwise); and it is Ferry's.
    let sessions = my.sql("SELECT count(*) FROM information_schema.processlist WHERE user = 'tls'");
    assert!(sessions.parse::<u32>().unwrap_or(0) >= 2, "{sessions}");
    assert!(ferry.terminate().success());
    assert!(!ferry_log_contains(&log, PASSWORD));

    // semi_sync: Ferry's own binlog connection, encrypted and verified the same way, resumes from the checkpoint.
    let cfg = config_with(
        "tls",
        &url("shop", &verify),
        &url("copy", &verify),
        "semi_sync = true\n",
    );
    let ferry = Ferry::start(&cfg, &log);
    ferry.wait_streaming();
    my.sql("INSERT INTO shop.t VALUES (3, 'semi-sync')");
    assert!(
        wait_until(WAIT, || copied() == "snapshot,streamed,semi-sync"),
        "{}",
        ferry.log()
    );
    assert!(ferry.log().contains("semi_sync=true"), "{}", ferry.log());
    assert!(ferry.terminate().success());
    assert!(!ferry_log_contains(&log, PASSWORD));

    // A CA that did not sign the server's certificate: refused, saying why, without the password.
    let other = TlsFiles::new();
    let wrong = format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", other.ca.display());
    let cfg = config("wrongca", &url("shop", &wrong), &url("copy", &verify));
    let mut ferry = Ferry::start(&cfg, &dir.path().join("wrongca.log"));
    let status = ferry.wait_exit(WAIT);
    let text = ferry.log();
    assert!(status.is_some_and(|s| !s.success()), "{text}");
    assert!(
        text.contains("TLS handshake failed") && text.contains("ssl-ca"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    // ssl-mode=DISABLED for an account that requires TLS: the server refuses it.
    let cfg = config(
        "plain",
        &url("shop", "ssl-mode=DISABLED"),
        &url("copy", &verify),
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("plain.log"));
    let status = ferry.wait_exit(WAIT);
    let text = ferry.log();
    assert!(status.is_some_and(|s| !s.success()), "{text}");
    assert!(text.contains("ssl-mode"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

fn ferry_log_contains(path: &std::path::Path, needle: &str) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(needle)
}
