//! The binlog connection: registers as a replica, asks for the binlog from a position (a MariaDB GTID state when
//! there is one, else a file and offset) and feeds every event to the decoder.
//!
//! With `semi_sync` the connection is Ferry's own ([`ferry_myconn::dump`]): it registers as a semi-synchronous
//! replica and acknowledges each transaction the primary waits for once every sink has committed it.

use std::collections::VecDeque;
use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{BinlogFilePos, BinlogPosition, Error, Event, GtidState, PipelineStats, Position};
use ferry_myconn::dump::{DumpAcker, DumpConn, DumpError, DumpReader};
use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{Event as BinlogEvent, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::decoder::Decoder;
use super::Flavor;

/// MySQL / MariaDB error: the binlog position asked for is not in the binlog any more (purged).
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
/// MariaDB: the GTID state asked for cannot be served (e.g. purged, or never existed in a strict domain).
const ER_GTID_POSITION_NOT_FOUND_IN_BINLOG: u16 = 1945;
const ER_GTID_POSITION_NOT_FOUND_IN_BINLOG2: u16 = 1955;

const RESNAPSHOT: &str = "the changes since the checkpoint are gone from the server's binlog, or, after a failover, the promoted server never had transactions the targets already hold (an asynchronous replica behind the old primary): run `ferry reset --config <file> --yes` to take a new snapshot; raise binlog retention (binlog_expire_logs_seconds / expire_logs_days) so it covers Ferry's downtime, and see docs/operations.md (failover)";

fn stream_error(start: &BinlogPosition, e: mysql_async::Error) -> Error {
    match &e {
        mysql_async::Error::Server(s) => lost_position(start, s.code, &s.message),
        _ => None,
    }
    .unwrap_or_else(|| Error::transient("reading the binlog", e))
}

fn dump_error(start: &BinlogPosition, e: DumpError) -> Error {
    match &e {
        DumpError::Server { code, message } => lost_position(start, *code, message),
        DumpError::Unsupported(why) => Some(Error::fatal(why.clone())),
        _ => None,
    }
    .unwrap_or_else(|| Error::transient("reading the binlog", e))
}

/// The fatal error for a server error that says the position cannot be served.
fn lost_position(start: &BinlogPosition, code: u16, message: &str) -> Option<Error> {
    matches!(
        code,
        ER_MASTER_FATAL_ERROR_READING_BINLOG
            | ER_GTID_POSITION_NOT_FOUND_IN_BINLOG
            | ER_GTID_POSITION_NOT_FOUND_IN_BINLOG2
    )
    .then(|| {
        Error::fatal(format!(
            "the server cannot send the binlog from {start} ({message}): {RESNAPSHOT}"
        ))
    })
}

/// How the binlog is read.
pub struct Binlog {
    pub flavor: Flavor,
    /// The replica id Ferry registers with.
    pub server_id: u32,
    /// `Some`: register as a semi-synchronous replica, acknowledging what every sink has made durable (`acked`).
    pub semi_sync: Option<watch::Receiver<Option<Position>>>,
    /// Silence (no event, no heartbeat) for this long means the connection is dead.
    pub timeout: Duration,
}

/// Where events come from: mysql_async's binlog stream, or Ferry's own semi-synchronous dump connection.
enum Feed {
    Plain(BinlogStream),
    SemiSync {
        reader: DumpReader,
        events: EventStreamReader,
        /// The inner events of a MySQL 8 compressed transaction still to hand out, each with the offset to
        /// acknowledge after it (the last one carries the flagged payload event's end).
        payload: VecDeque<(BinlogEvent, Option<u64>)>,
        /// Events the primary waits for, to the task that acknowledges them.
        acks: mpsc::UnboundedSender<PendingAck>,
        _acker: ferry_core::AbortOnDrop,
    },
}

/// An event the primary waits for: where it ends, and the transaction the sinks must commit first (its commit
/// position, with the GTID state that orders it across servers); `None`: nothing of it reaches them, so it is
/// acknowledged once everything before it is.
struct PendingAck {
    end: BinlogFilePos,
    commit: Option<BinlogPosition>,
}

impl Feed {
    /// The next event and, when the primary waits for an acknowledgement of it, the binlog offset to acknowledge;
    /// `Ok(None)` when the server ends the stream.
    async fn next(
        &mut self,
        start: &BinlogPosition,
    ) -> Result<Option<(BinlogEvent, Option<u64>)>, Error> {
        match self {
            Feed::Plain(stream) => match stream.next().await {
                Some(Ok(event)) => Ok(Some((event, None))),
                Some(Err(e)) => Err(stream_error(start, e)),
                None => Ok(None),
            },
            Feed::SemiSync {
                reader,
                events,
                payload,
                ..
            } => {
                if let Some(inner) = payload.pop_front() {
                    return Ok(Some(inner));
                }
                let malformed = |e: std::io::Error| {
                    Error::fatal(format!("a malformed binlog event from the server: {e}"))
                };
                let Some(dumped) = reader.next().await.map_err(|e| dump_error(start, e))? else {
                    return Ok(None);
                };
                let event = events
                    .read(&dumped.data[..])
                    .map_err(malformed)?
                    .ok_or_else(|| malformed(std::io::ErrorKind::UnexpectedEof.into()))?;
                let ack_at = dumped
                    .wants_ack
                    .then(|| u64::from(event.header().log_pos()));
                if event.header().event_type_raw() != TRANSACTION_PAYLOAD {
                    return Ok(Some((event, ack_at)));
                }
                // A compressed transaction: its commit is the last inner event, so the acknowledgement waits for
                // that one (the decoder gives inner events the payload's end as their position).
                let inner = event
                    .read_event::<TransactionPayloadEvent<'_>>()
                    .and_then(|p| {
                        let mut out = Vec::new();
                        std::io::Read::read_to_end(&mut p.decompressed()?, &mut out)?;
                        Ok(out)
                    })
                    .map_err(malformed)?;
                let mut cursor = Cursor::new(inner);
                while let Some(e) = events.read_decompressed(&mut cursor).map_err(malformed)? {
                    payload.push_back((e, None));
                }
                match payload.back_mut() {
                    Some(last) => last.1 = ack_at,
                    None => return Ok(Some((event, ack_at))),
                }
                Ok(Some((event, None)))
            }
        }
    }
}

const TRANSACTION_PAYLOAD: u8 = 40;

/// Acknowledges, in binlog order, each event the primary waits for once `acked` (what every sink has made
/// durable) covers it. An acknowledgement covers every earlier event too, so one goes out per change of `acked`.
async fn acknowledge(
    mut acker: DumpAcker,
    mut pending: mpsc::UnboundedReceiver<PendingAck>,
    mut acked: watch::Receiver<Option<Position>>,
) {
    let mut queue: VecDeque<PendingAck> = VecDeque::new();
    loop {
        let mut last = None;
        {
            let durable = acked.borrow_and_update();
            let durable = match &*durable {
                Some(Position::Binlog(b)) => Some(b),
                _ => None,
            };
            while let Some(first) = queue.front() {
                let covered = match &first.commit {
                    None => true,
                    Some(commit) => {
                        durable.is_some_and(|d| commit.try_cmp(d).is_some_and(|o| o.is_le()))
                    }
                };
                if !covered {
                    break;
                }
                last = queue.pop_front().map(|p| p.end);
            }
        }
        if let Some(end) = last {
            tracing::debug!(%end, "acknowledging to the semi-synchronous primary");
            if let Err(e) = acker.ack(&end.file, end.offset).await {
                warn!(error = %e, "could not acknowledge a semi-synchronous transaction; the primary waits out rpl_semi_sync_master_timeout");
                return;
            }
        }
        tokio::select! {
            next = pending.recv() => match next {
                Some(p) => {
                    tracing::debug!(end = %p.end, for_sinks = p.commit.is_some(), "the primary waits for an acknowledgement");
                    queue.push_back(p)
                }
                None => return,
            },
            changed = acked.changed() => if changed.is_err() { return },
        }
    }
}

/// Opens the semi-synchronous dump connection to the server `conn` reached, with the session settings `set` (each a
/// `SET` statement) and the user variable that makes the primary treat it as a semi-synchronous replica.
async fn semi_sync_feed(
    url: &str,
    conn: &mysql_async::Conn,
    server_id: u32,
    start: &BinlogPosition,
    set: &[String],
    acked: watch::Receiver<Option<Position>>,
) -> Result<Feed, Error> {
    let parsed = ferry_myconn::MyUrl::parse(url, "the MySQL source url")?;
    let (host, port) = (
        conn.opts().ip_or_hostname().to_owned(),
        conn.opts().tcp_port(),
    );
    let mut dump = DumpConn::connect(&parsed, &host, port, "the MySQL source").await?;
    let setup = |e| Error::transient("preparing the semi-synchronous binlog connection", e);
    for statement in set {
        dump.execute(statement).await.map_err(setup)?;
    }
    dump.execute("SET @rpl_semi_sync_slave = 1")
        .await
        .map_err(setup)?;
    let (reader, acker) = dump
        .start_dump(server_id, &start.pos.file, start.pos.offset, true)
        .await
        .map_err(|e| dump_error(start, e))?;
    let (acks, pending) = mpsc::unbounded_channel();
    Ok(Feed::SemiSync {
        reader,
        events: EventStreamReader::new(BinlogVersion::Version4),
        payload: VecDeque::new(),
        acks,
        _acker: ferry_core::AbortOnDrop(tokio::spawn(acknowledge(acker, pending, acked))),
    })
}

/// Streams from `start` until shutdown. Events go out as the decoder produces them; the source never waits for
/// acknowledgements because the server keeps the binlog regardless of its replicas (semi-sync acknowledgements go
/// out on their own task).
pub async fn run(
    url: &str,
    binlog: Binlog,
    start: &BinlogPosition,
    mut decoder: Decoder,
    events: mpsc::Sender<Event>,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<PipelineStats>,
) -> Result<(), Error> {
    let timeout = binlog.timeout;
    let mut conn = super::connect(url).await?;
    let setup_err = |e| Error::transient("preparing the binlog connection", e);
    // MySQL before 8.0.1 and MariaDB before 10.5 have no binlog_row_metadata: MINIMAL.
    let metadata: Option<String> = conn
        .query_first("SELECT @@global.binlog_row_metadata")
        .await
        .unwrap_or(None);
    decoder.set_full_metadata(metadata.is_some_and(|m| m.eq_ignore_ascii_case("FULL")));
    // Without capability 4 MariaDB replaces its GTID events with dummies. The heartbeat (in nanoseconds; a third
    // of the timeout, at most 5 s) keeps an idle connection observable: silence for `timeout` means it is dead.
    let heartbeat_ns = (timeout / 3).min(Duration::from_secs(5)).as_nanos();
    let mut session = vec![format!(
        "SET @mariadb_slave_capability = 4, @master_heartbeat_period = {heartbeat_ns}"
    )];
    let use_gtid = match (&start.gtid, binlog.flavor) {
        (Some(GtidState::MariaDb(list)), Flavor::MariaDb) => {
            // MariaDB rejects the MySQL-style GTID dump command; it reads the start state from these variables and
            // then serves an ordinary dump request. A GTID list is digits, dashes and commas only.
            let list = list.to_string();
            if !list
                .chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == ',')
            {
                return Err(Error::fatal(format!(
                    "the checkpoint's GTID state {list:?} is malformed"
                )));
            }
            session.push(format!(
                "SET @slave_connect_state = '{list}', @slave_gtid_strict_mode = 1"
            ));
            true
        }
        _ => false,
    };
    info!(from = %start, server_id = binlog.server_id, by_gtid = use_gtid, semi_sync = binlog.semi_sync.is_some(), "reading the binlog");
    let mut feed = match binlog.semi_sync {
        Some(acked) => {
            // MariaDB and MySQL's old plugin call it master, MySQL's plugin since 8.0.26 source.
            let mut enabled: Option<String> = None;
            for variable in [
                "rpl_semi_sync_master_enabled",
                "rpl_semi_sync_source_enabled",
            ] {
                if let Ok(Some(v)) = conn
                    .query_first(format!("SELECT @@global.{variable}"))
                    .await
                {
                    enabled = Some(v);
                    break;
                }
            }
            match enabled {
                None => {
                    return Err(Error::fatal(
                        "semi_sync is set, but the source has no semi-synchronous replication (no \
                         rpl_semi_sync_master_enabled or rpl_semi_sync_source_enabled): MySQL needs INSTALL PLUGIN \
                         rpl_semi_sync_source SONAME 'semisync_source.so'; MariaDB has it built in from 10.3; or \
                         remove semi_sync from [source]",
                    ))
                }
                Some(e) if !(e == "1" || e.eq_ignore_ascii_case("ON")) => {
                    warn!("semi_sync is set, but the source does not run semi-synchronous replication \
                           (rpl_semi_sync_master_enabled is off): its commits do not wait for Ferry until SET GLOBAL \
                           rpl_semi_sync_master_enabled = ON (docs/operations.md)");
                }
                Some(_) => {}
            }
            session.push("SET @master_binlog_checksum = 'ALL'".to_owned());
            let feed = semi_sync_feed(url, &conn, binlog.server_id, start, &session, acked).await?;
            drop(conn);
            feed
        }
        None => {
            for statement in &session {
                conn.query_drop(statement).await.map_err(setup_err)?;
            }
            let file = start.pos.file.clone().into_bytes();
            let request = BinlogStreamRequest::new(binlog.server_id)
                .with_filename(&file)
                .with_pos(start.pos.offset);
            Feed::Plain(
                conn.get_binlog_stream(request)
                    .await
                    .map_err(|e| stream_error(start, e))?,
            )
        }
    };
    let mut out = Vec::new();
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(timeout, AssertUnwindSafe(feed.next(start)).catch_unwind()) => match next {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(silent_s = timeout.as_secs(), "the source sent nothing, not even a heartbeat: reconnecting");
                    return Err(Error::transient(
                        format!(
                            "the source sent nothing (no event, no heartbeat) for {} s ([pipeline] source_timeout); \
                             its connection is taken for dead",
                            timeout.as_secs()
                        ),
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ));
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let (event, ack_at) = match next {
            Ok(Ok(Some(next))) => next,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => return Err(Error::transient("reading the binlog", "the server closed the binlog stream")),
            Err(_) => {
                return Err(Error::fatal(format!(
                    "a malformed binlog event in {} (the event parser panicked); the position before it is the last checkpoint",
                    decoder.file()
                )))
            }
        };
        let skipped = decoder.origin_skipped;
        decoder.decode(&event, &mut out)?;
        stats.add_origin_skipped(decoder.origin_skipped - skipped);
        if let (Some(offset), Feed::SemiSync { acks, .. }) = (ack_at, &feed) {
            let end = BinlogFilePos::new(decoder.file(), offset);
            // The sinks commit what ends here only if the decoder made a transaction of it.
            let commit = out.iter().find_map(|e| match e {
                Event::Commit {
                    position: Position::Binlog(b),
                    ..
                } if b.pos == end => Some(b.clone()),
                _ => None,
            });
            let _ = acks.send(PendingAck { end, commit });
        }
        let commits = out
            .iter()
            .filter(|e| matches!(e, Event::Commit { .. }))
            .count();
        stats
            .source_transactions
            .fetch_add(commits as u64, Ordering::Relaxed);
        stats
            .source_events
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        for e in out.drain(..) {
            // Without an await per event while the channel has room (a rows event holds ~100 rows).
            match events.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e)) => events
                    .send(e)
                    .await
                    .map_err(|_| Error::fatal("the pipeline stopped"))?,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(Error::fatal("the pipeline stopped"))
                }
            }
        }
    }
}
