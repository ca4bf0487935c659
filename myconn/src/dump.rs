//! A binlog dump connection Ferry drives itself, for semi-synchronous replication.
//!
//! A semi-synchronous primary prefixes every event it sends a semi-sync replica with two bytes, `0xEF` and a flag
//! (`0x01`: the primary waits for an acknowledgement of this event), and reads acknowledgements back on the same
//! socket: `0xEF`, the binlog position as 8 bytes little-endian, the file name (MariaDB's `semisync_slave.cc`,
//! MySQL's "Semi-synchronous replication" protocol notes). mysql_async's binlog stream reads neither, so with
//! `semi_sync` Ferry opens the dump connection itself: the handshake, TLS as the URL's `ssl-mode` says (with the
//! PostgreSQL connections' rustls verifiers), authentication (`mysql_native_password`, `caching_sha2_password`,
//! MariaDB's `client_ed25519`),
//! and then raw packets, parsed with mysql_common's packet types.

use std::borrow::Cow;
use std::time::Duration;

use bytes::BytesMut;
use ferry_core::Error;
use ferry_pgconn::MaybeTlsStream;
use mysql_common::constants::{CapabilityFlags, UTF8MB4_GENERAL_CI};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, ComBinlogDump, ComRegisterSlave, ErrPacket, HandshakePacket,
    HandshakeResponse, SemiSyncAckPacket, SslRequest,
};
use mysql_common::proto::codec::PacketCodec;
use mysql_common::proto::MySerialize;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::{MyUrl, SslMode};

/// What went wrong on a dump connection. `Server` carries the server's error code (1236: the position is not in
/// the binlog any more) so that callers can tell a lost position from a lost connection.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("the server answered error {code}: {message}")]
    Server { code: u16, message: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
    /// The stream is not what a semi-synchronous replica can follow (no semi-sync header, an acknowledgement
    /// format Ferry does not speak): reconnecting would not help.
    #[error("{0}")]
    Unsupported(String),
}

impl DumpError {
    fn protocol(what: impl Into<String>) -> DumpError {
        DumpError::Protocol(what.into())
    }
}

/// One event of a semi-synchronous dump: the event's bytes (header, body, checksum) and whether the primary waits
/// for an acknowledgement of it.
#[derive(Debug)]
pub struct DumpEvent {
    pub data: Vec<u8>,
    pub wants_ack: bool,
}

const MAX_PACKET: usize = 1 << 30;
const COM_QUERY: u8 = 0x03;
const SEMI_SYNC_MAGIC: u8 = 0xEF;
const SEMI_SYNC_ACK_REQ: u8 = 0x01;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A dump connection during setup: statements (`SET …`) and then the dump request.
pub struct DumpConn {
    io: MaybeTlsStream,
    codec: PacketCodec,
    buf: BytesMut,
    capabilities: CapabilityFlags,
}

impl DumpConn {
    /// Connects to `host:port` with the URL's user, password and `ssl-mode`; `what` names the server in errors.
    /// Refused credentials and TLS the mode cannot have are fatal, with the fix named; the rest is transient.
    pub async fn connect(
        url: &MyUrl,
        host: &str,
        port: u16,
        what: &str,
    ) -> Result<DumpConn, Error> {
        let transient =
            |e: DumpError| Error::transient(format!("connecting to {what} for the binlog"), e);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| transient(DumpError::Io(std::io::ErrorKind::TimedOut.into())))?
            .map_err(|e| transient(e.into()))?;
        tcp.set_nodelay(true).map_err(|e| transient(e.into()))?;
        ferry_pgconn::set_keepalive(&tcp).map_err(|e| transient(e.into()))?;
        let mut codec = PacketCodec::default();
        codec.max_allowed_packet = MAX_PACKET;
        let mut conn = DumpConn {
            io: MaybeTlsStream::Plain(tcp),
            codec,
            buf: BytesMut::new(),
            capabilities: CapabilityFlags::empty(),
        };
        let handshake = async {
            let greeting = conn.greet(url, what).await?;
            if greeting.tls {
                conn.io = match conn.io {
                    MaybeTlsStream::Plain(tcp) => start_tls(tcp, url, host, what).await?,
                    tls => tls,
                };
            }
            conn.respond(url, greeting).await?;
            Ok(conn)
        };
        let handshake = async {
            tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                .await
                .map_err(|_| {
                    HandshakeError::Dump(DumpError::Io(std::io::ErrorKind::TimedOut.into()))
                })?
        };
        match handshake.await {
            Ok(conn) => Ok(conn),
            Err(HandshakeError::Fatal(e)) => Err(e),
            Err(HandshakeError::Dump(DumpError::Server { code: 1045, message })) => Err(Error::fatal(format!(
                "{what} refused the binlog connection: {message}; check the user and password in its URL"
            ))),
            Err(HandshakeError::Dump(e)) => Err(transient(e)),
        }
    }

    /// Reads the server's greeting and settles the capabilities; under TLS, sends the SSL request.
    async fn greet(&mut self, url: &MyUrl, what: &str) -> Result<Greeting, HandshakeError> {
        let packet = self.read_packet().await?;
        if packet.first() == Some(&0xFF) {
            // Too many connections, a blocked host: the server says why before any handshake.
            return Err(server_error(&packet).into());
        }
        let handshake: HandshakePacket<'_> = ParseBuf(&packet)
            .parse(())
            .map_err(|e| DumpError::protocol(format!("a malformed handshake: {e}")))?;
        let version = handshake
            .maria_db_server_version_parsed()
            .or_else(|| handshake.server_version_parsed())
            .unwrap_or((0, 0, 0));
        // The scramble is 20 bytes (and a terminating zero some servers count in).
        let mut nonce = handshake.nonce();
        nonce.resize(20, 0);
        let plugin = match handshake.auth_plugin() {
            Some(AuthPlugin::CachingSha2Password) => AuthPlugin::CachingSha2Password,
            _ => AuthPlugin::MysqlNativePassword,
        };
        let database = url.database().map(str::to_owned);
        let mut wanted = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        if database.is_some() {
            wanted |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        }
        let server_tls = handshake
            .capabilities()
            .contains(CapabilityFlags::CLIENT_SSL);
        let tls = match url.ssl_mode {
            SslMode::Disabled => false,
            SslMode::Preferred => server_tls,
            _ if server_tls => true,
            _ => {
                return Err(HandshakeError::Fatal(Error::fatal(format!(
                    "{what} offers no TLS, and ssl-mode={} requires it: enable TLS on the server (ssl_cert, \
                     ssl_key), or lower ssl-mode",
                    url.mode_name()
                ))))
            }
        };
        if tls {
            wanted |= CapabilityFlags::CLIENT_SSL;
        }
        self.capabilities = handshake.capabilities() & wanted;
        if tls {
            let request = SslRequest::new(
                self.capabilities,
                MAX_PACKET as u32,
                UTF8MB4_GENERAL_CI as u8,
            );
            self.write_struct(&request).await?;
        }
        Ok(Greeting {
            version,
            nonce,
            plugin,
            database,
            tls,
        })
    }

    /// Sends the handshake response and authenticates.
    async fn respond(&mut self, url: &MyUrl, greeting: Greeting) -> Result<(), HandshakeError> {
        let pass = url.opts.pass().map(str::to_owned);
        let auth_data = greeting.plugin.gen_data(pass.as_deref(), &greeting.nonce);
        let response = HandshakeResponse::new(
            auth_data.as_deref(),
            greeting.version,
            url.opts.user().map(str::as_bytes),
            greeting.database.as_deref().map(str::as_bytes),
            Some(greeting.plugin.borrow()),
            self.capabilities,
            None,
            MAX_PACKET as u32,
        );
        self.write_struct(&response).await?;
        self.authenticate(greeting.plugin, pass.as_deref(), greeting.tls)
            .await
    }

    /// Answers the server's authentication requests until it accepts (OK) or refuses (an error).
    async fn authenticate(
        &mut self,
        mut plugin: AuthPlugin<'static>,
        pass: Option<&str>,
        tls: bool,
    ) -> Result<(), HandshakeError> {
        let mut switched = false;
        loop {
            let packet = self.read_packet().await?;
            match (packet.first().copied(), &plugin) {
                (Some(0x00), _) => return Ok(()),
                (Some(0xFF), _) => return Err(server_error(&packet).into()),
                (Some(0xFE), _) if !switched => {
                    switched = true;
                    let switch: AuthSwitchRequest<'_> = ParseBuf(&packet)
                        .parse(())
                        .map_err(|e| DumpError::protocol(format!("a malformed auth switch: {e}")))?;
                    plugin = match switch.auth_plugin() {
                        AuthPlugin::MysqlNativePassword => AuthPlugin::MysqlNativePassword,
                        AuthPlugin::CachingSha2Password => AuthPlugin::CachingSha2Password,
                        AuthPlugin::Ed25519 => AuthPlugin::Ed25519,
                        AuthPlugin::MysqlClearPassword if tls => AuthPlugin::MysqlClearPassword,
                        other => {
                            return Err(HandshakeError::Fatal(Error::fatal(format!(
                                "the server asks for the authentication plugin {} on the binlog connection; with \
                                 semi_sync Ferry speaks mysql_native_password, caching_sha2_password, \
                                 client_ed25519 (and mysql_clear_password over TLS): give Ferry's user one of those",
                                String::from_utf8_lossy(other.as_bytes())
                            ))))
                        }
                    };
                    let mut nonce = switch.plugin_data().to_vec();
                    if nonce.last() == Some(&0) {
                        nonce.pop();
                    }
                    let data = plugin.gen_data(pass, &nonce);
                    let mut out = Vec::new();
                    if let Some(data) = data {
                        data.serialize(&mut out);
                    }
                    self.write_packet(&out).await?;
                }
                // caching_sha2_password: 0x01 0x03 the cached fast path succeeded (an OK follows), 0x01 0x04 the
                // server wants the password itself, which Ferry sends only over TLS.
                (Some(0x01), AuthPlugin::CachingSha2Password) => match packet.get(1) {
                    Some(0x03) => {}
                    Some(0x04) if tls => {
                        let mut clear = pass.unwrap_or_default().as_bytes().to_vec();
                        clear.push(0);
                        self.write_packet(&clear).await?;
                    }
                    _ => {
                        return Err(HandshakeError::Fatal(Error::fatal(
                            "the server wants the full caching_sha2_password exchange, which the semi-synchronous \
                             binlog connection does only over TLS: set ssl-mode=REQUIRED or stronger in the URL, \
                             or log in once with another client so the server caches the password",
                        )))
                    }
                },
                _ => {
                    return Err(DumpError::protocol(format!(
                        "an unexpected packet during authentication (first byte {:?})",
                        packet.first()
                    ))
                    .into())
                }
            }
        }
    }

    /// Runs a statement that returns no rows (`SET @rpl_semi_sync_slave = 1`).
    pub async fn execute(&mut self, sql: &str) -> Result<(), DumpError> {
        self.codec.reset_seq_id();
        let mut out = Vec::with_capacity(sql.len() + 1);
        out.push(COM_QUERY);
        out.extend_from_slice(sql.as_bytes());
        self.write_packet(&out).await?;
        let packet = self.read_packet().await?;
        match packet.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(server_error(&packet)),
            _ => Err(DumpError::protocol(format!("`{sql}` returned rows"))),
        }
    }

    /// Registers as replica `server_id` and asks for the binlog from `file` at `offset` (MariaDB reads a GTID start
    /// from `@slave_connect_state` instead, set before). `semi_sync`: whether `@rpl_semi_sync_slave = 1` was set,
    /// so that every event arrives with the semi-sync header.
    pub async fn start_dump(
        mut self,
        server_id: u32,
        file: &str,
        offset: u64,
        semi_sync: bool,
    ) -> Result<(DumpReader, DumpAcker), DumpError> {
        self.codec.reset_seq_id();
        self.write_struct(&ComRegisterSlave::new(server_id)).await?;
        let packet = self.read_packet().await?;
        if packet.first() == Some(&0xFF) {
            return Err(server_error(&packet));
        }
        let offset = u32::try_from(offset)
            .map_err(|_| DumpError::protocol(format!("binlog offset {offset} is past 4 GiB")))?;
        self.codec.reset_seq_id();
        let dump = ComBinlogDump::new(server_id)
            .with_pos(offset)
            .with_filename(file.as_bytes());
        self.write_struct(&dump).await?;
        let (read, write) = tokio::io::split(self.io);
        Ok((
            DumpReader {
                io: read,
                buf: self.buf,
                semi_sync,
            },
            DumpAcker {
                io: write,
                codec: PacketCodec::default(),
            },
        ))
    }

    async fn read_packet(&mut self) -> Result<Vec<u8>, DumpError> {
        read_packet(&mut self.io, &mut self.codec, &mut self.buf).await
    }

    async fn write_packet(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        write_packet(&mut self.io, &mut self.codec, payload).await
    }

    async fn write_struct(&mut self, packet: &impl MySerialize) -> Result<(), DumpError> {
        let mut out = Vec::new();
        packet.serialize(&mut out);
        self.write_packet(&out).await
    }
}

/// Upgrades the socket to TLS after the SSL request (MySQL's protocol, unlike PostgreSQL's, asks inside the
/// handshake). `VERIFY_CA` and `VERIFY_IDENTITY` check the chain against `ssl-ca`.
async fn start_tls(
    tcp: TcpStream,
    url: &MyUrl,
    host: &str,
    what: &str,
) -> Result<MaybeTlsStream, HandshakeError> {
    let fatal = |message: String| HandshakeError::Fatal(Error::fatal(message));
    let verifier = match (url.ssl_mode, &url.ssl_ca) {
        (SslMode::VerifyCa | SslMode::VerifyIdentity, Some(ca)) => ferry_pgconn::verify::trusting(
            ca,
            url.ssl_mode == SslMode::VerifyIdentity,
            "ssl-ca names the CA certificate that signed the server's certificate",
        )
        .map_err(HandshakeError::Fatal)?,
        (SslMode::VerifyCa | SslMode::VerifyIdentity, None) => {
            return Err(fatal(format!(
            "{what}: with semi_sync, ssl-mode={} needs ssl-ca=<the CA's PEM file> in the URL (the \
                 semi-synchronous dump connection does not read the built-in web roots)",
            url.mode_name()
        )))
        }
        _ => ferry_pgconn::verify::encrypt_only(),
    };
    let config = ferry_pgconn::tls_client(verifier).map_err(HandshakeError::Fatal)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        fatal(format!(
            "{what}: {host} is not a valid TLS server name: {e}"
        ))
    })?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            // rustls's own verdicts (the certificate, the protocol) are fatal; a connection lost on the way is not.
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                fatal(format!(
                    "{what}: the TLS handshake failed under ssl-mode={}: {e}; check ssl-ca names the CA that signed \
                     the server's certificate, and under VERIFY_IDENTITY that the URL's host is the name in it",
                    url.mode_name()
                ))
            } else {
                HandshakeError::Dump(DumpError::Io(e))
            }
        })?;
    Ok(MaybeTlsStream::Tls(Box::new(stream)))
}

/// What the server's greeting settled.
struct Greeting {
    version: (u16, u16, u16),
    nonce: Vec<u8>,
    plugin: AuthPlugin<'static>,
    database: Option<String>,
    tls: bool,
}

enum HandshakeError {
    Fatal(Error),
    Dump(DumpError),
}

impl From<DumpError> for HandshakeError {
    fn from(e: DumpError) -> Self {
        HandshakeError::Dump(e)
    }
}

/// The receiving half of a dump: events as the primary sends them.
pub struct DumpReader {
    io: ReadHalf<MaybeTlsStream>,
    buf: BytesMut,
    semi_sync: bool,
}

impl DumpReader {
    /// The next event; `None` when the server ends the stream. Never panics on malformed bytes: a packet that is
    /// not an event, an error or the end is a protocol error.
    pub async fn next(&mut self) -> Result<Option<DumpEvent>, DumpError> {
        let mut packet = self.read_packet().await?;
        match packet.first() {
            Some(0x00) => {}
            Some(0xFF) => return Err(server_error(&packet)),
            Some(0xFE) if packet.len() < 8 => return Ok(None),
            other => {
                return Err(DumpError::protocol(format!(
                    "an unexpected packet in the binlog stream (first byte {other:?})"
                )))
            }
        }
        if !self.semi_sync {
            packet.remove(0);
            return Ok(Some(DumpEvent {
                data: packet,
                wants_ack: false,
            }));
        }
        match packet.get(1..3) {
            Some(&[SEMI_SYNC_MAGIC, flag]) if flag & !SEMI_SYNC_ACK_REQ == 0 => {
                packet.drain(..3);
                Ok(Some(DumpEvent {
                    data: packet,
                    wants_ack: flag == SEMI_SYNC_ACK_REQ,
                }))
            }
            Some(&[SEMI_SYNC_MAGIC, flag]) => Err(DumpError::Unsupported(format!(
                "the primary asks for a semi-synchronous acknowledgement Ferry does not speak (flags {flag:#04x}); \
                 remove semi_sync from [source]"
            ))),
            _ => Err(DumpError::Unsupported(
                "the server sends events without the semi-sync header although Ferry registered as a \
                 semi-synchronous replica (a binlog proxy in between?); remove semi_sync from [source]"
                    .to_owned(),
            )),
        }
    }
}

impl DumpReader {
    /// One packet, joined from its 16 MiB chunks. Unlike the handshake, the stream's sequence numbers are not
    /// checked: the primary restarts its numbering after reading each acknowledgement (the replica's reply resets
    /// the shared counter, as MariaDB's own replica expects), so they jump.
    async fn read_packet(&mut self) -> Result<Vec<u8>, DumpError> {
        const CHUNK: usize = 0xFF_FFFF;
        let mut packet = Vec::new();
        loop {
            while self.buf.len() < 4 {
                self.fill().await?;
            }
            let len = usize::from(self.buf[0])
                | usize::from(self.buf[1]) << 8
                | usize::from(self.buf[2]) << 16;
            if packet.len() + len > MAX_PACKET {
                return Err(DumpError::protocol(format!(
                    "a packet of more than {MAX_PACKET} bytes"
                )));
            }
            while self.buf.len() < 4 + len {
                self.fill().await?;
            }
            let chunk = self.buf.split_to(4 + len);
            packet.extend_from_slice(&chunk[4..]);
            if len < CHUNK {
                return Ok(packet);
            }
        }
    }

    async fn fill(&mut self) -> Result<(), DumpError> {
        if self.io.read_buf(&mut self.buf).await? == 0 {
            return Err(DumpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }
}

/// The sending half of a semi-synchronous dump: acknowledgements.
pub struct DumpAcker {
    io: WriteHalf<MaybeTlsStream>,
    codec: PacketCodec,
}

impl DumpAcker {
    /// Tells the primary that everything up to `file` at `offset` (the end of an event it flagged) is applied;
    /// an acknowledgement covers every earlier event too.
    pub async fn ack(&mut self, file: &str, offset: u64) -> Result<(), DumpError> {
        // Each acknowledgement is a packet of its own, numbered from 0.
        self.codec.reset_seq_id();
        let mut out = Vec::new();
        SemiSyncAckPacket::new(offset, Cow::Borrowed(file.as_bytes())).serialize(&mut out);
        write_packet(&mut self.io, &mut self.codec, &out).await
    }
}

fn server_error(packet: &[u8]) -> DumpError {
    match ParseBuf(packet).parse::<ErrPacket<'_>>(CapabilityFlags::CLIENT_PROTOCOL_41) {
        Ok(ErrPacket::Error(e)) => DumpError::Server {
            code: e.error_code(),
            message: e.message_str().into_owned(),
        },
        _ => DumpError::protocol("a malformed error packet"),
    }
}

async fn read_packet(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
    codec: &mut PacketCodec,
    buf: &mut BytesMut,
) -> Result<Vec<u8>, DumpError> {
    let mut packet = Vec::new();
    loop {
        if codec
            .decode(buf, &mut packet)
            .map_err(|e| DumpError::protocol(format!("a malformed packet: {e}")))?
        {
            return Ok(packet);
        }
        if io.read_buf(buf).await? == 0 {
            return Err(DumpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

async fn write_packet(
    io: &mut (impl tokio::io::AsyncWrite + Unpin),
    codec: &mut PacketCodec,
    payload: &[u8],
) -> Result<(), DumpError> {
    let mut out = BytesMut::new();
    codec
        .encode(&mut &payload[..], &mut out)
        .map_err(|e| DumpError::protocol(format!("encoding a packet: {e}")))?;
    io.write_all(&out).await?;
    io.flush().await?;
    Ok(())
}
