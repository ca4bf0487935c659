//! Ferry's MySQL / MariaDB connection settings: one parser for every `mysql://` (or `mariadb://`) URL a source or
//! sink takes, with the TLS options MySQL's own clients use, and one way to connect.
//!
//! TLS options, as query parameters (MySQL client option names, `-` or `_`):
//!
//! | `ssl-mode` | encrypts | verifies the certificate | verifies the host name |
//! |---|---|---|---|
//! | `DISABLED` | no | – | – |
//! | `PREFERRED` (default, as for MySQL clients) | if the server offers TLS | no | no |
//! | `REQUIRED` | yes, or the connection fails | no | no |
//! | `VERIFY_CA` | yes | against `ssl-ca` (else the built-in web roots) | no |
//! | `VERIFY_IDENTITY` | yes | yes | yes |
//!
//! `ssl-ca = /path/ca.pem` names the certificate authority. Other parameters go to mysql_async as they are.
//! Errors never repeat the URL (it may hold the password).

pub mod dump;

use std::path::PathBuf;

use ferry_core::Error;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

/// How a connection uses TLS (`ssl-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disabled,
    #[default]
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl SslMode {
    const NAMES: [(&'static str, SslMode); 5] = [
        ("DISABLED", SslMode::Disabled),
        ("PREFERRED", SslMode::Preferred),
        ("REQUIRED", SslMode::Required),
        ("VERIFY_CA", SslMode::VerifyCa),
        ("VERIFY_IDENTITY", SslMode::VerifyIdentity),
    ];
}

/// A parsed `mysql://` URL.
#[derive(Debug, Clone)]
pub struct MyUrl {
    opts: Opts,
    pub ssl_mode: SslMode,
    pub ssl_ca: Option<PathBuf>,
    /// With several hosts (`mysql://u@h1:3306,h2:3307/db`, a primary and its replicas): each host and port, tried
    /// in order for the one that takes writes. Empty for one host.
    pub hosts: Vec<(String, u16)>,
}

/// Splits the hosts out of `url` (`scheme://[user[:password]@]h1[:p1],h2[:p2]/…`): the URL with the first host
/// only, for mysql_async, and every host with its port (3306 when none) when there are several.
fn split_hosts(url: &str) -> (String, Vec<(String, u16)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), Vec::new());
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if !hosts.contains(',') {
        return (url.to_owned(), Vec::new());
    }
    let list: Vec<(String, u16)> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            // `[::1]:3307`, `host:3307` or `host`.
            let (host, port) = match h.rfind(':') {
                Some(i) if !h[i..].contains(']') => (&h[..i], h[i + 1..].parse().unwrap_or(0)),
                _ => (h, 3306),
            };
            (
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
            )
        })
        .collect();
    let first = hosts.split(',').next().unwrap_or_default();
    (format!("{scheme}://{userinfo}{first}{tail}"), list)
}

impl MyUrl {
    /// Parses `url`; `what` names it in errors ("the MySQL target url").
    pub fn parse(url: &str, what: &str) -> Result<MyUrl, Error> {
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_owned(),
        };
        let (url, hosts) = split_hosts(&url);
        if hosts.iter().any(|(h, p)| h.is_empty() || *p == 0) {
            return Err(Error::fatal(format!(
                "{what}: a host list is written host:port,host:port (port 1–65535), as in \
                 mysql://user@10.0.0.1:3306,10.0.0.2:3306/db"
            )));
        }
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let mut kept = Vec::new();
        let (mut ssl_mode, mut ssl_ca) = (SslMode::default(), None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key.replace('_', "-").to_ascii_lowercase().as_str() {
                "ssl-mode" | "sslmode" => {
                    let upper = value.to_ascii_uppercase().replace('-', "_");
                    ssl_mode = SslMode::NAMES
                        .iter()
                        .find(|(n, _)| *n == upper)
                        .map(|(_, m)| *m)
                        .ok_or_else(|| {
                            Error::fatal(format!(
                                "{what}: ssl-mode={value} is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, \
                                 VERIFY_IDENTITY"
                            ))
                        })?;
                }
                "ssl-ca" => ssl_ca = Some(PathBuf::from(percent_decode(value))),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // mysql_async's own error quotes no URL, but say which setting was wrong.
        let opts = Opts::from_url(&rest).map_err(|e| {
            Error::fatal(format!(
                "{what}: {e} (expected mysql://user:password@host:port/database)"
            ))
        })?;
        if let Some(ca) = &ssl_ca {
            if !ca.is_file() {
                return Err(Error::fatal(format!(
                    "{what}: ssl-ca={} is not a readable file",
                    ca.display()
                )));
            }
        }
        Ok(MyUrl {
            opts,
            ssl_mode,
            ssl_ca,
            hosts,
        })
    }

    /// The database the URL names.
    pub fn database(&self) -> Option<&str> {
        self.opts.db_name()
    }

    /// The options for a connection: the URL's, keepalive (a peer that vanished without closing is noticed in
    /// about 30 s, see `ferry_pgconn::KEEPALIVE`), and TLS as `ssl-mode` says (`tls`: whether to offer it).
    fn builder(&self, tls: bool) -> OptsBuilder {
        let builder = OptsBuilder::from_opts(self.opts.clone())
            .tcp_keepalive(Some(ferry_pgconn::KEEPALIVE.time))
            // A Unix socket would bypass TLS: stay on the TCP connection the URL names.
            .prefer_socket(false);
        if !tls || self.ssl_mode == SslMode::Disabled {
            return builder.ssl_opts(None::<SslOpts>);
        }
        let mut ssl = SslOpts::default();
        if let Some(ca) = &self.ssl_ca {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        ssl = match self.ssl_mode {
            SslMode::VerifyIdentity => ssl,
            SslMode::VerifyCa => ssl.with_danger_skip_domain_validation(true),
            _ => ssl
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        };
        builder.ssl_opts(ssl)
    }

    /// Connects; `what` names the server in errors ("the MySQL target"), `tweak` adds options. Under `PREFERRED`
    /// a server without TLS is connected to in the clear, as MySQL clients do. Refused credentials or database,
    /// and TLS failures, are fatal with the fix named; anything else is transient.
    ///
    /// A URL with several hosts connects to the first that takes writes (`@@global.read_only = 0`; replicas run
    /// with `read_only = ON`), so that after a failover Ferry finds the promoted server, as `target_session_attrs =
    /// read-write` does for PostgreSQL.
    pub async fn connect(
        &self,
        what: &str,
        tweak: impl Fn(OptsBuilder) -> OptsBuilder,
    ) -> Result<Conn, Error> {
        if self.hosts.is_empty() {
            return self.connect_one(what, &tweak).await;
        }
        let mut failures = Vec::new();
        for (host, port) in &self.hosts {
            let at = |b: OptsBuilder| tweak(b).ip_or_hostname(host.clone()).tcp_port(*port);
            let mut conn = match self.connect_one(what, &at).await {
                Ok(conn) => conn,
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => {
                    failures.push(format!("{host}:{port}: {e}"));
                    continue;
                }
            };
            use mysql_async::prelude::Queryable;
            match conn.query_first::<u8, _>("SELECT @@global.read_only").await {
                Ok(Some(0)) => return Ok(conn),
                Ok(_) => failures.push(format!("{host}:{port}: read_only (a replica)")),
                Err(e) => failures.push(format!("{host}:{port}: {e}")),
            }
            let _ = conn.disconnect().await;
        }
        Err(Error::transient(
            format!("connecting to {what}"),
            std::io::Error::other(format!(
                "no host of the URL takes writes ({}); a replica being promoted becomes one once read_only is off",
                failures.join("; ")
            )),
        ))
    }

    async fn connect_one(
        &self,
        what: &str,
        tweak: &impl Fn(OptsBuilder) -> OptsBuilder,
    ) -> Result<Conn, Error> {
        let first = Conn::new(tweak(self.builder(true))).await;
        let result = match first {
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.ssl_mode == SslMode::Preferred => {
                tracing::debug!(
                    server = what,
                    "the server offers no TLS: connecting in the clear (ssl-mode=PREFERRED)"
                );
                Conn::new(tweak(self.builder(false))).await
            }
            other => other,
        };
        result.map_err(|e| self.connect_error(what, e))
    }

    fn connect_error(&self, what: &str, e: mysql_async::Error) -> Error {
        let text = e.to_string();
        match &e {
            // An account that REQUIRE SSL refuses a connection in the clear with 1045, as for a wrong password.
            mysql_async::Error::Server(s) if s.code == 1045 && self.ssl_mode == SslMode::Disabled => {
                Error::fatal_from(
                    format!(
                        "{what} refused the connection: check the user and password in its URL; with ssl-mode=DISABLED \
                         an account that requires TLS (REQUIRE SSL) is refused this way too: set ssl-mode=VERIFY_IDENTITY \
                         and ssl-ca"
                    ),
                    e,
                )
            }
            mysql_async::Error::Server(s) if ferry_core::mysql_refuses(s.code) => {
                Error::connect_failed(what, true, e)
            }
            mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
                Error::fatal(format!(
                    "{what} offers no TLS, and ssl-mode={} requires it: enable TLS on the server (ssl_cert, \
                     ssl_key), or lower ssl-mode",
                    self.mode_name()
                ))
            }
            // Secure transport required by the server (MySQL 3159, MariaDB 1045 with the same text in 10.x).
            mysql_async::Error::Server(s) if s.code == 3159 || text.contains("secure transport") => {
                Error::fatal(format!(
                    "{what} accepts only encrypted connections and ssl-mode={}: set ssl-mode=VERIFY_IDENTITY (with \
                     ssl-ca=<the server's CA>) in the URL",
                    self.mode_name()
                ))
            }
            _ if text.contains("certificate") || text.contains("TLS") || text.contains("tls") => {
                Error::fatal_from(
                    format!(
                        "{what}: the TLS handshake failed under ssl-mode={}: check ssl-ca names the CA that signed \
                         the server's certificate, and that the certificate covers the host in the URL",
                        self.mode_name()
                    ),
                    e,
                )
            }
            _ => Error::connect_failed(what, false, e),
        }
    }

    fn mode_name(&self) -> &'static str {
        SslMode::NAMES
            .iter()
            .find(|(_, m)| *m == self.ssl_mode)
            .map_or("PREFERRED", |(n, _)| n)
    }
}

/// `%2F` and friends in a path given as a query value.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_hosts_are_listed_with_their_ports() {
        let u = MyUrl::parse(
            "mysql://u:p@w@10.0.0.1:3307,db2,[::1]:3309/shop?ssl-mode=disabled",
            "the url",
        )
        .unwrap();
        assert_eq!(
            u.hosts,
            vec![
                ("10.0.0.1".to_owned(), 3307),
                ("db2".to_owned(), 3306),
                ("::1".to_owned(), 3309)
            ]
        );
        assert_eq!(u.database(), Some("shop"));
        assert!(MyUrl::parse("mysql://u@h:3306/shop", "u")
            .unwrap()
            .hosts
            .is_empty());
        let e = MyUrl::parse("mysql://u:secret@h1:x,h2/shop", "the url").unwrap_err();
        assert!(e.to_string().contains("host:port,host:port"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn ssl_options_are_read_and_the_rest_passes_on() {
        let u = MyUrl::parse(
            "mariadb://u:secret@127.0.0.1:3307/shop?ssl-mode=verify_identity&stmt_cache_size=10",
            "the url",
        )
        .unwrap();
        assert_eq!(u.ssl_mode, SslMode::VerifyIdentity);
        assert_eq!(u.database(), Some("shop"));
        assert_eq!(
            MyUrl::parse("mysql://h/d", "u").unwrap().ssl_mode,
            SslMode::Preferred
        );
        let e = MyUrl::parse("mysql://u:secret@h/d?ssl-mode=sometimes", "the url").unwrap_err();
        assert!(e.to_string().contains("ssl-mode=sometimes"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e =
            MyUrl::parse("mysql://u:secret@h/d?ssl-ca=%2Fno%2Fsuch.pem", "the url").unwrap_err();
        assert!(e.to_string().contains("/no/such.pem"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
