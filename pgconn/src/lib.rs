//! PostgreSQL connection settings shared by the source and the sink.
//!
//! ```text
//! postgres://user@host/db?sslmode=verify-full&sslrootcert=ca.pem
//!        └─► PgUrl { config: tokio_postgres::Config, ssl: SslMode, root_cert }
//!                 ├─► connect(): tokio-postgres client, TLS through tokio-postgres-rustls
//!                 └─► negotiate(): SSLRequest on a raw TcpStream, for the replication connection
//! ```
//!
//! `sslmode` takes libpq's values with libpq's meaning: `disable`, `prefer` (the default: TLS when the server offers
//! it, without verifying the certificate), `require` (TLS or fail, no verification), `verify-ca` (the chain must
//! lead to `sslrootcert`), `verify-full` (and the certificate must name the host). tokio-postgres parses only the
//! first three, so both TLS keys are taken out of the URL before it is handed on.

pub mod lease;
mod stream;
pub mod verify;
pub mod versions;

use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::Error;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::Client;

pub use stream::MaybeTlsStream;

/// The advisory lock (per database) under which Ferry creates its own objects in a PostgreSQL database: pipelines
/// starting together take turns, since `CREATE … IF NOT EXISTS` against a concurrent creator fails with a unique
/// violation on the catalog. Taken with `pg_advisory_xact_lock` at the head of a multi-statement batch, which runs
/// as one transaction.
pub const SETUP_LOCK: i64 = 0x6665_7272_7976;

/// [`SETUP_LOCK`] as the batch's first statement.
pub fn setup_locked(batch: &str) -> String {
    format!("SELECT pg_advisory_xact_lock({SETUP_LOCK}); {batch}")
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The values `sslmode` accepts, for error messages.
    pub const EXPECTED: &'static str = "disable, prefer, require, verify-ca or verify-full";

    pub fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// A parsed PostgreSQL URL.
#[derive(Debug, Clone)]
pub struct PgUrl {
    pub config: tokio_postgres::Config,
    pub ssl: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Decodes `%XX` escapes of a URL query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A failed connection: wrong credentials or a missing database are fatal, said as such.
fn refused(what: &str, e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    let refused = e.code().is_some_and(|c| {
        *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || *c == SqlState::INVALID_CATALOG_NAME
    });
    Error::connect_failed(what, refused, e)
}

/// TCP keepalive settings for every connection Ferry opens: first probe after 15 s idle, then every 5 s, given
/// up after 3 unanswered probes.
pub struct Keepalive {
    pub time: std::time::Duration,
    pub interval: std::time::Duration,
    pub retries: u32,
    /// How long sent data may stay unacknowledged (`TCP_USER_TIMEOUT`).
    pub user_timeout: std::time::Duration,
}

pub const KEEPALIVE: Keepalive = Keepalive {
    time: std::time::Duration::from_secs(15),
    interval: std::time::Duration::from_secs(5),
    retries: 3,
    user_timeout: std::time::Duration::from_secs(60),
};

/// Turns on [`KEEPALIVE`] for a socket Ferry opened itself (the replication connection).
pub fn set_keepalive(stream: &TcpStream) -> std::io::Result<()> {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE.time)
        .with_interval(KEEPALIVE.interval)
        .with_retries(KEEPALIVE.retries);
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(&ka)?;
    socket.set_tcp_user_timeout(Some(KEEPALIVE.user_timeout))
}

impl PgUrl {
    pub fn parse(url: &str) -> Result<PgUrl, Error> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl = SslMode::Prefer;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    ssl = SslMode::parse(&percent_decode(value)).ok_or_else(|| {
                        Error::fatal(format!(
                            "sslmode={value} in a PostgreSQL URL: expected {}",
                            SslMode::EXPECTED
                        ))
                    })?;
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value))),
                _ => rest.push(pair),
            }
        }
        let stripped = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = stripped
            .parse()
            .map_err(|e| Error::fatal_from("PostgreSQL URL", e))?;
        config.ssl_mode(match ssl {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        // A peer that vanished without closing (a firewall dropping the connection) is noticed in about 30 s, not
        // the kernel's 2 hours; the URL's own keepalives_* settings win.
        if !rest.iter().any(|p| p.starts_with("keepalives")) {
            config
                .keepalives(true)
                .keepalives_idle(KEEPALIVE.time)
                .keepalives_interval(KEEPALIVE.interval)
                .keepalives_retries(KEEPALIVE.retries);
        }
        // Of several hosts (a primary and its standbys), Ferry wants the one that takes writes, in every role: the
        // source writes its publication and heartbeats, a sink its rows. libpq's default (`any`) would settle on a
        // standby after a failover.
        if config.get_hosts().len() > 1
            && !rest.iter().any(|p| p.starts_with("target_session_attrs="))
        {
            config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
        // Data the peer never acknowledges (it vanished mid-write) fails the connection after a minute.
        config.tcp_user_timeout(KEEPALIVE.user_timeout);
        Ok(PgUrl {
            config,
            ssl,
            root_cert,
        })
    }

    /// The rustls configuration for this URL's `sslmode` (`None` for `disable`).
    pub fn tls_config(&self) -> Result<Option<Arc<ClientConfig>>, Error> {
        if self.ssl == SslMode::Disable {
            return Ok(None);
        }
        let verifier = if self.ssl.verifies() {
            let path = self.root_cert.clone().unwrap_or_else(default_root_cert);
            verify::trusting(
                &path,
                self.ssl == SslMode::VerifyFull,
                "sslmode=verify-ca and verify-full need the CA certificate that signed the server's certificate: give it as sslrootcert=<PEM file> in the URL",
            )?
        } else {
            verify::encrypt_only()
        };
        tls_client(verifier).map(Some)
    }

    /// Opens an ordinary connection and drives it on a background task.
    pub async fn connect(&self, what: &str) -> Result<Client, Error> {
        let cannot = |e: tokio_postgres::Error| refused(what, e);
        let client = match self.tls_config()? {
            None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(cannot)?;
                spawn_connection(connection);
                client
            }
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
                let (client, connection) = self.config.connect(tls).await.map_err(cannot)?;
                spawn_connection(connection);
                client
            }
        };
        Ok(client)
    }

    /// Asks the server for TLS on a fresh TCP connection (PostgreSQL's SSLRequest) as `sslmode` says: `host` is
    /// the name the certificate must carry under `verify-full`.
    pub async fn negotiate(&self, mut tcp: TcpStream, host: &str) -> Result<MaybeTlsStream, Error> {
        let Some(tls) = self.tls_config()? else {
            return Ok(MaybeTlsStream::Plain(tcp));
        };
        let io = |e| Error::transient("TLS negotiation with PostgreSQL", e);
        // SSLRequest: length 8, code 80877103.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .map_err(io)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(io)?;
        if answer[0] != b'S' {
            if self.ssl == SslMode::Prefer {
                return Ok(MaybeTlsStream::Plain(tcp));
            }
            return Err(Error::fatal(format!(
                "the server at {host} does not offer TLS, but the URL asks for sslmode={}; turn on ssl in postgresql.conf or lower sslmode",
                match self.ssl {
                    SslMode::Require => "require",
                    SslMode::VerifyCa => "verify-ca",
                    _ => "verify-full",
                }
            )));
        }
        handshake(tls, tcp, host).await
    }
}

/// The TLS handshake over `tcp`, with `host` as the server name.
async fn handshake(
    tls: Arc<ClientConfig>,
    tcp: TcpStream,
    host: &str,
) -> Result<MaybeTlsStream, Error> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| Error::fatal_from(format!("{host:?} as a TLS server name"), e))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            // A certificate that does not verify is not going to start verifying on a retry.
            if e.kind() == std::io::ErrorKind::InvalidData {
                Error::fatal_from(format!("TLS handshake with {host}"), e)
            } else {
                Error::transient(format!("TLS handshake with {host}"), e)
            }
        })?;
    Ok(MaybeTlsStream::Tls(Box::new(stream)))
}

/// TLS to an https server of Ferry's (the schema registry): the chain must lead to a certificate in `ca_file`, or
/// in the system's bundle (`SSL_CERT_FILE`, else Debian's /etc/ssl/certs/ca-certificates.crt), and name `host`.
/// `hint` says how to give another CA file, for errors.
pub async fn https_connect(
    tcp: TcpStream,
    host: &str,
    ca_file: Option<&std::path::Path>,
    hint: &str,
) -> Result<MaybeTlsStream, Error> {
    let ca = ca_file.map_or_else(
        || {
            std::env::var_os("SSL_CERT_FILE").map_or_else(
                || PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
                PathBuf::from,
            )
        },
        std::path::Path::to_path_buf,
    );
    let config = tls_client(verify::trusting(&ca, true, hint)?)?;
    handshake(config, tcp, host).await
}

/// rustls client settings that check the server's certificate with `verifier`.
pub fn tls_client(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, Error> {
    let config = ClientConfig::builder_with_provider(verify::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::fatal_from("TLS setup", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// libpq's default root certificate file.
fn default_root_cert() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".postgresql").join("root.crt")
}

fn spawn_connection<C>(connection: C)
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_are_taken_out_of_the_url() {
        let url = PgUrl::parse(
            "postgres://u@h:5433/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url.ssl, SslMode::VerifyFull);
        assert_eq!(url.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(url.config.get_dbname(), Some("db"));
        assert_eq!(url.config.get_application_name(), Some("x"));
        assert_eq!(
            PgUrl::parse("postgres://h/db").unwrap().ssl,
            SslMode::Prefer
        );
        let err = PgUrl::parse("postgres://h/db?sslmode=always").unwrap_err();
        assert!(err.to_string().contains("verify-full"), "{err}");
    }

    #[test]
    fn several_hosts_mean_the_one_that_takes_writes() {
        use tokio_postgres::config::TargetSessionAttrs;
        let url = PgUrl::parse("postgres://u@h1:5433,h2:5434/db").unwrap();
        assert_eq!(url.config.get_ports(), &[5433, 5434]);
        assert_eq!(
            url.config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let any = PgUrl::parse("postgres://u@h1,h2/db?target_session_attrs=any").unwrap();
        assert_eq!(
            any.config.get_target_session_attrs(),
            TargetSessionAttrs::Any
        );
        let one = PgUrl::parse("postgres://u@h1/db").unwrap();
        assert_eq!(
            one.config.get_target_session_attrs(),
            TargetSessionAttrs::Any
        );
    }

    #[test]
    fn verifying_modes_need_a_readable_root_certificate() {
        let url =
            PgUrl::parse("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent.pem").unwrap();
        let err = url.tls_config().unwrap_err().to_string();
        assert!(err.contains("/nonexistent.pem"), "{err}");
        assert!(PgUrl::parse("postgres://h/db?sslmode=require")
            .unwrap()
            .tls_config()
            .unwrap()
            .is_some());
    }
}
