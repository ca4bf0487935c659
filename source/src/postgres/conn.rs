//! The replication-protocol connection: startup, authentication, simple queries and the CopyBoth stream.
//!
//! `tokio-postgres` cannot open a `replication=database` connection or speak CopyBoth, so this small layer does,
//! on `postgres-protocol`'s message codecs. Reads go through an owned buffer so that [`ReplicationConn::next_copy_data`]
//! is cancel-safe inside `select!`: a cancelled read loses no bytes.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use ferry_pgconn::{MaybeTlsStream, PgUrl};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;

use ferry_core::Error;

/// GUCs for the walsender session: they fix the text form of every value pgoutput sends, so decoding is exact.
const SESSION_OPTIONS: &str =
    "-c datestyle=ISO,YMD -c timezone=UTC -c intervalstyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex \
     -c standard_conforming_strings=on";

/// A connection in replication mode.
pub struct ReplicationConn {
    stream: MaybeTlsStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

/// One backend frame, split out of the read buffer.
enum Frame {
    CopyData(Bytes),
    CopyBoth,
    Other(backend::Message),
}

/// The port of the `i`th host: one port for all hosts, one per host, or PostgreSQL's default.
fn port_of(config: &tokio_postgres::Config, i: usize) -> u16 {
    let ports = config.get_ports();
    match ports.len() {
        0 => 5432,
        1 => ports[0],
        _ => ports.get(i).copied().unwrap_or(5432),
    }
}

/// A server error, with the fields operators need.
#[derive(Debug, thiserror::Error)]
#[error("{severity} {code}: {message}")]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// The rows of a simple query, as text.
pub type TextRows = Vec<Vec<Option<String>>>;

fn protocol_error(what: impl Into<String>) -> Error {
    Error::transient(
        "replication connection",
        io::Error::new(io::ErrorKind::InvalidData, what.into()),
    )
}

fn io_error(e: io::Error) -> Error {
    Error::transient("replication connection lost", e)
}

impl ReplicationConn {
    /// Connects with `replication=database` to the database of `url`, over TLS as its `sslmode` says. A URL with
    /// several hosts (`postgres://h1,h2/db`) tries them in order, as libpq does; with
    /// `target_session_attrs=read-write` (the default for several hosts, see [`PgUrl::parse`]) a host in recovery
    /// (a standby) is passed over, so after a failover Ferry finds the promoted server.
    pub async fn connect(url: &PgUrl, application_name: &str) -> Result<Self, Error> {
        let config = &url.config;
        let hosts = config.get_hosts();
        if hosts.is_empty() {
            return Self::connect_host(url, "localhost", port_of(config, 0), application_name)
                .await;
        }
        let read_write = config.get_target_session_attrs()
            == tokio_postgres::config::TargetSessionAttrs::ReadWrite;
        let mut failures = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let host = match host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(_) => {
                    return Err(Error::fatal(
                        "Unix-socket hosts are not supported; give a TCP host in the URL",
                    ))
                }
            };
            let port = port_of(config, i);
            let mut conn = match Self::connect_host(url, &host, port, application_name).await {
                Ok(conn) => conn,
                // Wrong credentials or a certificate that does not verify fail on every host alike.
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => {
                    failures.push(format!("{host}:{port}: {e}"));
                    continue;
                }
            };
            if !read_write {
                return Ok(conn);
            }
            let read_only = conn.simple_query("SHOW transaction_read_only").await?;
            if read_only
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.as_deref())
                == Some("off")
            {
                return Ok(conn);
            }
            conn.terminate().await;
            failures.push(format!("{host}:{port}: read-only (a standby in recovery)"));
        }
        Err(Error::transient(
            "connecting to the source's primary",
            io::Error::other(format!(
                "no host of the URL accepts writes ({}); a standby being promoted becomes one",
                failures.join("; ")
            )),
        ))
    }

    async fn connect_host(
        url: &PgUrl,
        host: &str,
        port: u16,
        application_name: &str,
    ) -> Result<Self, Error> {
        let config = &url.config;
        let stream = TcpStream::connect((host, port)).await.map_err(|e| {
            Error::transient(format!("cannot connect to PostgreSQL at {host}:{port}"), e)
        })?;
        stream.set_nodelay(true).map_err(io_error)?;
        ferry_pgconn::set_keepalive(&stream).map_err(io_error)?;
        let stream = url.negotiate(stream, host).await?;
        let mut conn = ReplicationConn {
            stream,
            read_buf: BytesMut::with_capacity(1 << 16),
            write_buf: BytesMut::new(),
        };
        let user = config.get_user().unwrap_or("postgres");
        let dbname = config.get_dbname().unwrap_or(user);
        let params = [
            ("user", user),
            ("database", dbname),
            ("replication", "database"),
            ("application_name", application_name),
            // pgoutput converts every text it sends (values, names) to the client encoding: without this, a
            // database in another encoding (LATIN1) would send bytes Ferry reads as UTF-8.
            ("client_encoding", "UTF8"),
            ("options", SESSION_OPTIONS),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.write_buf).map_err(io_error)?;
        conn.flush().await?;
        conn.authenticate(user, config.get_password()).await?;
        conn.wait_ready().await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), Error> {
        let need_password = || {
            Error::fatal("the server asks for a password: put it in the source URL (postgres://user:password@…)")
        };
        loop {
            match self.next_message().await? {
                backend::Message::AuthenticationOk => return Ok(()),
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(
                        password.ok_or_else(need_password)?,
                        &mut self.write_buf,
                    )
                    .map_err(io_error)?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password.ok_or_else(need_password)?,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(io_error)?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(m) = mechanisms.next().map_err(io_error)? {
                        scram_offered |= m == SCRAM_SHA_256;
                    }
                    if !scram_offered {
                        return Err(Error::fatal(
                            "the server offers no SASL mechanism Ferry supports (SCRAM-SHA-256)",
                        ));
                    }
                    let mut scram = ScramSha256::new(
                        password.ok_or_else(need_password)?,
                        ChannelBinding::unsupported(),
                    );
                    frontend::sasl_initial_response(
                        SCRAM_SHA_256,
                        scram.message(),
                        &mut self.write_buf,
                    )
                    .map_err(io_error)?;
                    self.flush().await?;
                    match self.next_message().await? {
                        backend::Message::AuthenticationSaslContinue(body) => {
                            scram.update(body.data()).map_err(io_error)?
                        }
                        _ => return Err(protocol_error("expected SASL continue")),
                    }
                    frontend::sasl_response(scram.message(), &mut self.write_buf)
                        .map_err(io_error)?;
                    self.flush().await?;
                    match self.next_message().await? {
                        backend::Message::AuthenticationSaslFinal(body) => {
                            scram.finish(body.data()).map_err(io_error)?
                        }
                        _ => return Err(protocol_error("expected SASL final")),
                    }
                    continue;
                }
                _ => {
                    return Err(Error::fatal(
                        "the server asks for an authentication method Ferry does not support",
                    ))
                }
            }
            self.flush().await?;
        }
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        loop {
            if let backend::Message::ReadyForQuery(_) = self.next_message().await? {
                return Ok(());
            }
        }
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.stream
            .write_all(&self.write_buf)
            .await
            .map_err(io_error)?;
        self.write_buf.clear();
        Ok(())
    }

    /// The length field of the frame at the start of the read buffer, once its header is there.
    fn buffered_frame_len(&self) -> Option<usize> {
        let header = self.read_buf.get(..5)?;
        Some(u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize)
    }

    /// Reads one frame. Cancel-safe: bytes read so far stay in `read_buf`.
    async fn next_frame(&mut self) -> Result<Frame, Error> {
        loop {
            if let Some(len) = self.buffered_frame_len() {
                if len < 4 {
                    return Err(protocol_error(format!("invalid message length {len}")));
                }
                if self.read_buf.len() > len {
                    let tag = self.read_buf[0];
                    let mut frame = self.read_buf.split_to(len + 1);
                    return match tag {
                        b'd' => {
                            frame.advance(5);
                            Ok(Frame::CopyData(frame.freeze()))
                        }
                        b'W' => Ok(Frame::CopyBoth),
                        _ => match backend::Message::parse(&mut frame).map_err(io_error)? {
                            Some(backend::Message::ErrorResponse(body)) => {
                                Err(server_error(body.fields()))
                            }
                            Some(m) => Ok(Frame::Other(m)),
                            None => Err(protocol_error("truncated message")),
                        },
                    };
                }
                self.read_buf.reserve(len + 1 - self.read_buf.len());
            }
            if self.read_buf.capacity() - self.read_buf.len() < 8192 {
                self.read_buf.reserve(1 << 16);
            }
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(io_error)?;
            if n == 0 {
                return Err(Error::transient(
                    "replication connection",
                    io::Error::from(io::ErrorKind::UnexpectedEof),
                ));
            }
        }
    }

    async fn next_message(&mut self) -> Result<backend::Message, Error> {
        loop {
            match self.next_frame().await? {
                Frame::Other(backend::Message::NoticeResponse(_))
                | Frame::Other(backend::Message::ParameterStatus(_)) => {}
                Frame::Other(m) => return Ok(m),
                Frame::CopyData(_) | Frame::CopyBoth => {
                    return Err(protocol_error("unexpected copy data"))
                }
            }
        }
    }

    /// Runs a replication command or plain SQL with the simple query protocol; returns the rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<TextRows, Error> {
        frontend::query(sql, &mut self.write_buf).map_err(io_error)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            match self.next_frame().await {
                Ok(Frame::Other(backend::Message::DataRow(row))) => {
                    let buf = row.buffer();
                    let mut values = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(range) = ranges.next().map_err(io_error)? {
                        values.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(values);
                }
                Ok(Frame::Other(backend::Message::ReadyForQuery(_))) => break,
                Ok(_) => {}
                // An error response is followed by ReadyForQuery; read on so the connection stays usable.
                Err(e) if e.source.as_ref().is_some_and(|s| s.is::<ServerError>()) => {
                    failure = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Sends `START_REPLICATION …` and waits for the server to enter CopyBoth mode.
    pub async fn start_replication(&mut self, command: &str) -> Result<(), Error> {
        frontend::query(command, &mut self.write_buf).map_err(io_error)?;
        self.flush().await?;
        loop {
            match self.next_frame().await? {
                Frame::CopyBoth => return Ok(()),
                Frame::Other(backend::Message::NoticeResponse(_)) => {}
                _ => {
                    return Err(protocol_error(
                        "expected CopyBothResponse after START_REPLICATION",
                    ))
                }
            }
        }
    }

    /// The next CopyData payload of the replication stream; `None` when the server ends the stream.
    pub async fn next_copy_data(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            match self.next_frame().await? {
                Frame::CopyData(data) => return Ok(Some(data)),
                Frame::Other(backend::Message::CopyDone)
                | Frame::Other(backend::Message::CommandComplete(_)) => return Ok(None),
                Frame::Other(_) | Frame::CopyBoth => {}
            }
        }
    }

    /// A CopyData payload already complete in the read buffer, without waiting: the streaming loop drains these
    /// without the cost of a `select!` per message.
    pub fn buffered_copy_data(&mut self) -> Option<Bytes> {
        let len = self.buffered_frame_len()?;
        if self.read_buf[0] != b'd' || len < 4 || self.read_buf.len() <= len {
            return None;
        }
        let mut frame = self.read_buf.split_to(len + 1);
        frame.advance(5);
        Some(frame.freeze())
    }

    /// Sends one CopyData message (a standby status update).
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.write_buf.extend_from_slice(b"d");
        self.write_buf
            .extend_from_slice(&(payload.len() as u32 + 4).to_be_bytes());
        self.write_buf.extend_from_slice(payload);
        self.flush().await
    }

    /// Ends the session politely.
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
    }
}

fn server_error(mut fields: backend::ErrorFields<'_>) -> Error {
    let mut err = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
    };
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'S' => err.severity = value,
            b'C' => err.code = value,
            b'M' => err.message = value,
            _ => {}
        }
    }
    // 55000 object_not_in_prerequisite_state, 42704 undefined_object, 42501 insufficient_privilege: retrying cannot help.
    let fatal = matches!(
        err.code.as_str(),
        "55000" | "42704" | "42501" | "28000" | "28P01" | "3D000" | "42P01" | "53400"
    );
    if fatal {
        Error::fatal_from("PostgreSQL refused", err)
    } else {
        Error::transient("PostgreSQL replied with an error", err)
    }
}
