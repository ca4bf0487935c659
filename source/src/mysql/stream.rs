//! The binlog connection: registers as a replica, asks for the binlog from a position (a MariaDB GTID state when
//! there is one, else a file and offset) and feeds every event to the decoder.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferry_core::{BinlogPosition, Error, Event, GtidState, PipelineStats};
use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::BinlogStreamRequest;
use tokio::sync::{mpsc, watch};
use tracing::info;

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
        mysql_async::Error::Server(s)
            if matches!(
                s.code,
                ER_MASTER_FATAL_ERROR_READING_BINLOG
                    | ER_GTID_POSITION_NOT_FOUND_IN_BINLOG
                    | ER_GTID_POSITION_NOT_FOUND_IN_BINLOG2
            ) =>
        {
            Error::fatal(format!(
                "the server cannot send the binlog from {start} ({}): {RESNAPSHOT}",
                s.message
            ))
        }
        _ => Error::transient("reading the binlog", e),
    }
}

/// Streams from `start` until shutdown. Events go out as the decoder produces them; the source never waits for
/// acknowledgements because the server keeps the binlog regardless of its replicas.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    url: &str,
    flavor: Flavor,
    server_id: u32,
    start: &BinlogPosition,
    mut decoder: Decoder,
    events: mpsc::Sender<Event>,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<PipelineStats>,
    timeout: std::time::Duration,
) -> Result<(), Error> {
    let mut conn = super::connect(url).await?;
    let setup_err = |e| Error::transient("preparing the binlog connection", e);
    // Without capability 4 MariaDB replaces its GTID events with dummies. The heartbeat (in nanoseconds; a third
    // of the timeout, at most 5 s) keeps an idle connection observable: silence for `timeout` means it is dead.
    let heartbeat_ns = (timeout / 3)
        .min(std::time::Duration::from_secs(5))
        .as_nanos();
    conn.query_drop(format!(
        "SET @mariadb_slave_capability = 4, @master_heartbeat_period = {heartbeat_ns}"
    ))
    .await
    .map_err(setup_err)?;
    let checksum: Option<String> = conn
        .query_first("SELECT @@global.binlog_checksum")
        .await
        .map_err(setup_err)?;
    decoder.set_stream_checksums(checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE")));
    // MySQL before 8.0.1 and MariaDB before 10.5 have no binlog_row_metadata: MINIMAL.
    let metadata: Option<String> = conn
        .query_first("SELECT @@global.binlog_row_metadata")
        .await
        .unwrap_or(None);
    decoder.set_full_metadata(metadata.is_some_and(|m| m.eq_ignore_ascii_case("FULL")));
    let use_gtid = match (&start.gtid, flavor) {
        (Some(GtidState::MariaDb(list)), Flavor::MariaDb) => {
            // MariaDB rejects the MySQL-style GTID dump command; it reads the start state from these variables and
            // then serves an ordinary dump request.
            conn.exec_drop(
                "SET @slave_connect_state = ?, @slave_gtid_strict_mode = 1",
                (list.to_string(),),
            )
            .await
            .map_err(setup_err)?;
            true
        }
        _ => false,
    };
    info!(from = %start, server_id, by_gtid = use_gtid, "reading the binlog");
    let file = start.pos.file.clone().into_bytes();
    let request = BinlogStreamRequest::new(server_id)
        .with_filename(&file)
        .with_pos(start.pos.offset);
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| stream_error(start, e))?;
    let mut out = Vec::new();
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(timeout, AssertUnwindSafe(stream.next()).catch_unwind()) => match next {
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
        let event = match next {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => return Err(stream_error(start, e)),
            Ok(None) => return Err(Error::transient("reading the binlog", "the server closed the binlog stream")),
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
