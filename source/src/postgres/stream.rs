//! The streaming loop: reads the slot, turns pgoutput into events, acknowledges durable positions.
//!
//! ```text
//! walsender ──CopyData──► Streamer ──pending──► events (bounded mpsc) ──► pipeline
//!     ▲                        │ ▲
//!     └── status update ◄──────┘ └── acked: watch (min over sinks)
//! ```
//!
//! Progress tracking: standby status updates carry the acknowledged position from the sinks — never what has only
//! been received — so the slot retains everything not yet durable in every sink. Updates go out every second,
//! whenever the server asks, and while the loop waits for room in the event channel (back-pressure never starves
//! the keepalive protocol).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_core::{
    Change, Error, Event, Lsn, Origin, PipelineState, PipelineStats, Position, RecopyStep, RowOp,
    SchemaRef, TableId, TableSchema, Timestamp, TxContext, Value,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::binary::decode_binary;
use super::catalog::{Catalog, RawColumn};
use super::conn::ReplicationConn;
use super::decode::decode_text;
use super::pgoutput::{standby_status_update, Decoder, PgOutput, ReplicationMessage, TupleValue};
use super::recopy::{self, Cursor, Landed, Recopies};
use super::rewrite::{self, Rewrite};
use super::slot::quote_literal;
use super::spool::{Spool, StreamCommit};
use ferry_config::SchemaChangePolicy;

/// Why streaming stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Shutdown,
}

/// The error for a query on the source that got no answer within `source_timeout`.
fn catalog_silent(timeout: Duration) -> Error {
    Error::transient(
        format!(
            "the source did not answer a query within {} s ([pipeline] source_timeout); its connection is taken \
             for dead",
            timeout.as_secs()
        ),
        std::io::Error::from(std::io::ErrorKind::TimedOut),
    )
}

fn pipeline_stopped() -> Error {
    Error::fatal("the pipeline stopped while the source was running")
}

/// Status ticks (seconds) between checks that every listed table is still in the publication.
const FOLLOW_CHECK_TICKS: u64 = 5;

/// Idle status ticks between two measures of the server's WAL position and the slot's retained WAL.
const WAL_CHECK_TICKS: u64 = 5;

/// How often the position of skipped transactions (another origin's) goes out as a heartbeat.
const SKIPPED_POSITION_EVERY: Duration = Duration::from_secs(5);

/// How many messages or events the loop handles back to back before it looks at shutdown and the status tick.
const FAST_PATH_LIMIT: u32 = 256;

enum Step {
    Shutdown,
    Tick,
    /// The sinks made a new position durable (`false`: they are gone).
    Acked(bool),
    /// A read-your-writes wait asks for the position to move (see `PipelineStats::source_wake`).
    Wake,
    Continue,
    Data(Option<bytes::Bytes>),
}

pub(crate) struct Streamer {
    pub conn: ReplicationConn,
    pub catalog: Catalog,
    pub events: mpsc::Sender<Event>,
    pub acked: watch::Receiver<Option<Position>>,
    pub shutdown: watch::Receiver<bool>,
    pub heartbeat_interval: Option<Duration>,
    pub decoder: Decoder,
    pub relations: HashMap<u32, SchemaRef>,
    /// Per relation with columns the stream does not carry (generated columns before PostgreSQL 18): the schema
    /// column of each tuple value. Absent: the tuple has every column in schema order.
    pub tuple_layouts: HashMap<u32, Vec<usize>>,
    /// Relations whose new schema no change has used yet.
    pub unannounced: HashSet<u32>,
    /// The publication streamed (rewrites of tables outside it are ignored).
    pub publication: String,
    pub on_schema_change: SchemaChangePolicy,
    pub schema_versions: u64,
    pub in_transaction: bool,
    pub stats: Arc<PipelineStats>,
    /// XLogData messages received; the status tick compares it to notice an idle source.
    pub received: u64,
    /// Messages of any kind received (keepalives too); the status tick compares it to notice a dead connection.
    pub messages: u64,
    /// How long the server may send nothing before the connection is taken for dead.
    pub source_timeout: Duration,
    /// The slot streamed (a re-copy request names it).
    pub slot: String,
    /// The tables the config lists (`None`: all tables), which must stay in the publication.
    pub followed: Option<Vec<TableId>>,
    /// Tables re-copied while streaming.
    pub recopies: Recopies,
    /// Schemas a re-copy chunk announced for relations the stream has not described yet.
    pub recopy_schemas: HashMap<u32, SchemaRef>,
    /// The xid of the transaction being streamed.
    pub xid: Option<u32>,
    /// A `Begin` held until the next message, which may be the transaction's Origin.
    pub pending_begin: Option<TxContext>,
    /// Which transactions to leave out by their replication origin (`[source] origins`, `skip_origins`).
    pub origins: ferry_config::OriginFilter,
    /// The open transaction was written under an origin `origins` skips: its changes are left out, its Begin
    /// and Commit still pass (the checkpoint moves past it).
    pub skipping: bool,
    /// When the last skipped transaction's position went out as a heartbeat.
    pub skipped_position_at: std::time::Instant,
    /// The server's timeline, recorded in every position (see [`Position::Pg`]).
    pub timeline: u32,
    /// Relations that are Ferry's own tables ([`ferry_core::is_internal_table`]): never captured.
    pub internal: HashSet<u32>,
    /// Whether to ask for streamed transactions (`[source] streaming`).
    pub streaming: bool,
    /// Whether to ask for values in binary (`[source] binary`) where every published column's type allows it.
    pub binary: bool,
    /// Whether this session's values arrive in binary.
    pub binary_on: bool,
    /// Transactions the server streams before they commit, on disk until then.
    pub spool: Spool,
    /// A committed streamed transaction being applied from its spool.
    pub replay: Option<super::spool::Replay>,
    /// The streamed transaction applied while in progress (`live.rs`).
    pub live: super::live::Live,
    /// Each relation's last Relation message as handled (`live::relation_shape`).
    pub relation_shapes: HashMap<u32, String>,
    /// Each relation's columns and replica identity as its last Relation message gave them: a rewrite notice
    /// describes the table anew from them with the types the rewrite left.
    pub relation_columns: HashMap<u32, (Vec<RawColumn>, u8)>,
    pub replay_decoder: Decoder,
}

/// Slots whose binary session met a column type Ferry cannot read in binary (added while streaming, or still in
/// the WAL to replay though gone from the catalog): they stream in text for the rest of the process's life.
static TEXT_ONLY_SLOTS: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

/// The (sub)transaction a streamed data message belongs to; 0 for one that names none (an Origin).
fn streamed_xid(msg: &PgOutput<'_>) -> u32 {
    match msg {
        PgOutput::Relation { xid, .. }
        | PgOutput::Type { xid, .. }
        | PgOutput::Insert { xid, .. }
        | PgOutput::Update { xid, .. }
        | PgOutput::Delete { xid, .. }
        | PgOutput::Truncate { xid, .. }
        | PgOutput::Message { xid, .. } => xid.unwrap_or(0),
        _ => 0,
    }
}

fn now_unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Streamer {
    fn acked_lsn(&self) -> Lsn {
        self.acked
            .borrow()
            .as_ref()
            .and_then(Position::as_lsn)
            .unwrap_or(Lsn::ZERO)
    }

    async fn send_status(&mut self, reply_requested: bool) -> Result<(), Error> {
        let lsn = self.acked_lsn();
        self.conn
            .send_copy_data(&standby_status_update(
                lsn,
                now_unix_micros(),
                reply_requested,
            ))
            .await?;
        debug!(lsn = %lsn, "sent status update");
        Ok(())
    }

    /// Streams until shutdown or error. `slot` and `publication` name what to read; `start` is where to resume.
    pub async fn run(
        mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
    ) -> Result<StreamEnd, Error> {
        // PostgreSQL 16+ leaves out transactions applied under any replication origin itself; before that the
        // stream drops them by their Origin message (see `handle`).
        let origin = if self.origins == ferry_config::OriginFilter::Local
            && self.catalog.server_version().await? >= 160_000
        {
            ", origin 'none'"
        } else {
            ""
        };
        // With `[source] streaming`, PostgreSQL 14+ streams a transaction bigger than logical_decoding_work_mem
        // before it commits: Ferry spools it (`spool.rs`) rather than the walsender holding it until then.
        let streaming = if self.streaming && self.catalog.server_version().await? >= 140_000 {
            "proto_version '2', streaming 'on'"
        } else {
            "proto_version '1'"
        };
        self.binary_on = self.binary_format(slot, publication).await?;
        let binary = if self.binary_on {
            ", binary 'true'"
        } else {
            ""
        };
        let command = format!(
            "START_REPLICATION SLOT \"{}\" LOGICAL {start} ({streaming}, publication_names {}, messages 'true'{origin}{binary})",
            slot.replace('"', "\"\""),
            quote_literal(&format!("\"{}\"", publication.replace('"', "\"\"")))
        );
        self.conn.start_replication(&command).await?;
        self.stats.set_state(PipelineState::Streaming);
        info!(slot, start = %start, format = if self.binary_on { "binary" } else { "text" },
            "streaming from replication slot");
        let mut pending: VecDeque<Event> = VecDeque::new();
        if !self.live.has_floor {
            // Nothing before the slot's start remains to be applied (a new slot, its snapshot, if any, copied):
            // sinks without a checkpoint take one there, so that a transaction applied live can begin apart.
            pending.push_back(Event::Heartbeat {
                position: Position::Pg(start, self.timeline),
            });
            self.live.has_floor = true;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When data last arrived, as seen at the status ticks (a clock read per message costs too much).
        let mut last_data = Instant::now();
        let mut received_at_tick = self.received;
        // When any message last arrived, as seen at the status ticks (a half-open connection sends nothing).
        let mut last_message = Instant::now();
        let mut messages_at_tick = self.messages;
        let mut ticks = 0u64;
        // Messages handled without a `select!`; after FAST_PATH_LIMIT in a row the loop takes the `select!` once,
        // so shutdown and the status tick are never starved by a flood.
        let mut fast = 0u32;
        loop {
            if fast < FAST_PATH_LIMIT {
                fast += 1;
                if let Some(event) = pending.pop_front() {
                    match self.events.try_reserve() {
                        Ok(permit) => {
                            permit.send(event);
                            continue;
                        }
                        Err(mpsc::error::TrySendError::Full(())) => pending.push_front(event),
                        Err(mpsc::error::TrySendError::Closed(())) => {
                            return Err(pipeline_stopped())
                        }
                    }
                } else if self.replay.is_some() {
                    // A committed streamed transaction is read back before anything after its commit.
                    let timeout = self.source_timeout;
                    tokio::time::timeout(timeout, self.replay_step(&mut pending))
                        .await
                        .map_err(|_| catalog_silent(timeout))??;
                    continue;
                } else if let Some(data) = self.conn.buffered_copy_data() {
                    self.on_copy_data(&data, &mut pending).await?;
                    continue;
                }
            }
            fast = 0;
            if let Some(event) = pending.pop_front() {
                let step = tokio::select! {
                    biased;
                    _ = self.shutdown.changed() => Step::Shutdown,
                    _ = tick.tick() => {
                        pending.push_front(event);
                        Step::Tick
                    }
                    changed = self.acked.changed() => {
                        pending.push_front(event);
                        Step::Acked(changed.is_ok())
                    }
                    permit = self.events.reserve() => match permit {
                        Ok(permit) => {
                            permit.send(event);
                            Step::Continue
                        }
                        Err(_) => return Err(pipeline_stopped()),
                    },
                };
                match step {
                    Step::Shutdown => return self.finish().await,
                    Step::Tick => {
                        // Not reading while the pipeline catches up: the server's silence means nothing.
                        last_message = Instant::now();
                        self.send_status(false).await?
                    }
                    Step::Acked(true) => self.send_status(false).await?,
                    Step::Acked(false) => return Err(pipeline_stopped()),
                    _ => {}
                }
                continue;
            }
            let step = tokio::select! {
                biased;
                _ = self.shutdown.changed() => Step::Shutdown,
                _ = tick.tick() => Step::Tick,
                changed = self.acked.changed() => Step::Acked(changed.is_ok()),
                _ = self.stats.source_wake.notified() => Step::Wake,
                _ = std::future::ready(()), if self.replay.is_some() => Step::Continue,
                data = self.conn.next_copy_data() => Step::Data(data?),
            };
            match step {
                Step::Shutdown => return self.finish().await,
                // Reported at once, so a synchronous standby setting naming this pipeline (its walsender's
                // application_name, `ferry_<pipeline>`) lets a source COMMIT return as soon as every sink holds it.
                Step::Acked(true) => self.send_status(false).await?,
                Step::Acked(false) => return Err(pipeline_stopped()),
                // A heartbeat message written now lies past the waiter's position; once the sinks hold it, they
                // hold everything before it. Inside a transaction its commit moves the position anyway.
                Step::Wake if !self.in_transaction => {
                    tokio::time::timeout(self.source_timeout, self.emit_heartbeat())
                        .await
                        .map_err(|_| catalog_silent(self.source_timeout))??;
                }
                Step::Wake => {}
                Step::Tick => {
                    if self.messages != messages_at_tick {
                        messages_at_tick = self.messages;
                        last_message = Instant::now();
                    }
                    let silent = last_message.elapsed();
                    if silent >= self.source_timeout {
                        warn!(
                            silent_s = silent.as_secs(),
                            "the source sent nothing, not even a keepalive: reconnecting"
                        );
                        return Err(Error::transient(
                            format!(
                                "the source sent nothing (no change, no keepalive) for {} s ([pipeline] \
                                 source_timeout); its connection is taken for dead",
                                silent.as_secs()
                            ),
                            std::io::Error::from(std::io::ErrorKind::TimedOut),
                        ));
                    }
                    // Past a third of the timeout, ask the server to answer (a keepalive) so silence means death.
                    self.send_status(silent >= self.source_timeout / 3).await?;
                    ticks += 1;
                    if ticks.is_multiple_of(WAL_CHECK_TICKS) {
                        let _ =
                            tokio::time::timeout(self.source_timeout, self.measure_wal(slot)).await;
                    }
                    if ticks.is_multiple_of(FOLLOW_CHECK_TICKS) {
                        tokio::time::timeout(self.source_timeout, self.keep_followed_tables())
                            .await
                            .map_err(|_| catalog_silent(self.source_timeout))??;
                    }
                    if let Some(e) = self.recopies.failure() {
                        return Err(e);
                    }
                    if self.received != received_at_tick {
                        received_at_tick = self.received;
                        last_data = Instant::now();
                    }
                    if let Some(interval) = self.heartbeat_interval {
                        if !self.in_transaction && last_data.elapsed() >= interval {
                            tokio::time::timeout(self.source_timeout, self.emit_heartbeat())
                                .await
                                .map_err(|_| catalog_silent(self.source_timeout))??;
                            last_data = Instant::now();
                        }
                    }
                }
                Step::Continue => {}
                Step::Data(None) => {
                    return Err(Error::transient(
                        "the server ended the replication stream",
                        std::io::Error::other("CopyDone"),
                    ));
                }
                Step::Data(Some(data)) => self.on_copy_data(&data, &mut pending).await?,
            }
        }
    }

    /// After shutdown: waits until every sink has finished (the ack channel closes), keeps reporting what they
    /// commit, and sends the final status update.
    async fn finish(mut self) -> Result<StreamEnd, Error> {
        drop(self.events);
        let (tx, _) = mpsc::channel(1);
        self.events = tx;
        loop {
            tokio::select! {
                changed = self.acked.changed() => {
                    if changed.is_err() { break; }
                    self.send_status(false).await?;
                }
                data = self.conn.next_copy_data() => {
                    if let Some(data) = data? {
                        if let Ok(ReplicationMessage::Keepalive { reply_requested: true, .. }) = ReplicationMessage::parse(&data) {
                            self.send_status(false).await?;
                        }
                    }
                }
            }
        }
        // Ask for a reply: the server answers only after it has processed this update, so closing the
        // connection then cannot drop it (the slot's confirmed position is what the checkpoints hold).
        self.send_status(true).await?;
        info!(lsn = %self.acked_lsn(), "sent final status update");
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(data)) = self.conn.next_copy_data().await {
                if matches!(
                    ReplicationMessage::parse(&data),
                    Ok(ReplicationMessage::Keepalive { .. })
                ) {
                    return;
                }
            }
        })
        .await;
        if answered.is_err() {
            warn!("the server did not answer the final status update within 5 s");
        }
        self.conn.terminate().await;
        Ok(StreamEnd::Shutdown)
    }

    /// Handles one CopyData message.
    async fn on_copy_data(
        &mut self,
        data: &[u8],
        pending: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        self.messages += 1;
        match ReplicationMessage::parse(data)
            .map_err(|e| Error::fatal_from("reading the replication stream", e))?
        {
            ReplicationMessage::XLogData {
                data, wal_start, ..
            } => {
                self.received += 1;
                // Handling may query the catalog: a catalog connection that stopped answering must not hold the
                // stream forever.
                let timeout = self.source_timeout;
                tokio::time::timeout(timeout, self.handle(data, wal_start, pending))
                    .await
                    .map_err(|_| catalog_silent(timeout))?
            }
            ReplicationMessage::Keepalive {
                reply_requested, ..
            } => {
                if reply_requested {
                    self.send_status(false).await?;
                }
                Ok(())
            }
        }
    }

    /// Reads the server's WAL position and what the slot retains, for lag in bytes and the retained-WAL alert. A
    /// failure only leaves the last figures (it is logged at debug level).
    async fn measure_wal(&mut self, slot: &str) {
        let row = self
            .catalog
            .client()
            .query_opt(
                "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
                 ELSE pg_catalog.pg_current_wal_lsn() END)::text, restart_lsn::text \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match row {
            Ok(Some(r)) => {
                let lsn = |i: usize| {
                    r.get::<_, Option<String>>(i)
                        .and_then(|t| t.parse::<Lsn>().ok())
                };
                if let Some(head) = lsn(0) {
                    self.stats.source_wal_lsn.store(head.0, Ordering::Relaxed);
                    if let Some(restart) = lsn(1) {
                        self.stats
                            .retained_wal_bytes
                            .store(head.0.saturating_sub(restart.0) as i64, Ordering::Relaxed);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, "could not measure the source's WAL"),
        }
    }

    async fn emit_heartbeat(&mut self) -> Result<(), Error> {
        self.catalog
            .client()
            .execute(
                "SELECT pg_logical_emit_message(false, 'ferry', 'heartbeat')",
                &[],
            )
            .await
            .map_err(|e| Error::transient("writing a heartbeat message", e))?;
        Ok(())
    }

    async fn handle(
        &mut self,
        data: &[u8],
        wal_start: Lsn,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let msg = self
            .decoder
            .decode(data)
            .map_err(|e| Error::fatal_from("decoding pgoutput", e))?;
        match msg {
            PgOutput::StreamStart { xid, first_segment } => {
                self.spool.start(xid)?;
                if first_segment
                    && self.live.offer(
                        xid,
                        wal_start,
                        self.recopies.any_active() || self.in_transaction,
                    )
                {
                    debug!(
                        xid,
                        "a streamed transaction may be applied while in progress"
                    );
                }
                return Ok(());
            }
            PgOutput::StreamStop => {
                self.spool.stop();
                return Ok(());
            }
            PgOutput::StreamAbort { xid, subxid } => {
                if self.live.is(xid) {
                    let why = if subxid == xid {
                        "it aborted"
                    } else {
                        "a subtransaction of it aborted"
                    };
                    self.leave_live(why, out);
                }
                return self.spool.abort(xid, subxid);
            }
            PgOutput::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time_micros,
            } if self.live.is(xid) && self.live.begun() => {
                self.live.end();
                self.spool.abort(xid, xid)?;
                self.in_transaction = false;
                self.recopies.committed(Some(xid));
                info!(xid, commit_lsn = %commit_lsn, "a transaction applied while in progress committed");
                self.live.has_floor = true;
                out.push_back(Event::Commit {
                    position: Position::Pg(end_lsn, self.timeline),
                    commit_time: Timestamp::from_pg_micros(commit_time_micros),
                });
                return Ok(());
            }
            PgOutput::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time_micros,
            } => {
                if self.live.is(xid) {
                    // Nothing of it went out yet: it is applied from its spool as usual.
                    self.live.end();
                } else if self.live.active() {
                    self.leave_live("another transaction committed first", out);
                }
                let commit = StreamCommit {
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_time_micros,
                };
                // The transaction takes its place here, as if the server had sent it whole at its commit.
                let begin = PgOutput::Begin {
                    final_lsn: commit_lsn,
                    xid,
                    commit_time_micros,
                };
                match self.spool.commit(commit)? {
                    Some(replay) => {
                        self.apply(begin, out).await?;
                        self.replay = Some(replay);
                    }
                    None => {
                        self.apply(begin, out).await?;
                        self.apply(commit.as_commit(), out).await?;
                    }
                }
                return Ok(());
            }
            _ if self.spool.in_block() => {
                self.spool.write(streamed_xid(&msg), data)?;
                if self.spool.current().is_some_and(|x| self.live.is(x)) {
                    return self.live_message(msg, wal_start, out).await;
                }
                return Ok(());
            }
            // A heartbeat's position lies inside the transaction applied live, which is not durable yet.
            PgOutput::Message {
                transactional: false,
                prefix: "ferry",
                ..
            } if self.live.active() => return Ok(()),
            PgOutput::Begin { .. } if self.live.active() => {
                self.leave_live("another transaction committed first", out);
            }
            _ => {}
        }
        self.apply(msg, out).await
    }

    /// A message of the transaction applied live (it is spooled too): its rows go out now; anything the sinks
    /// could not take back, or that would change what other transactions decode with, ends live apply.
    async fn live_message(
        &mut self,
        msg: PgOutput<'_>,
        wal_start: Lsn,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        match &msg {
            PgOutput::Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
                ..
            } => {
                let shape =
                    super::live::relation_shape(namespace, name, *replica_identity, columns);
                if self.relation_shapes.get(oid) != Some(&shape) {
                    // A table this session has not described yet, or described otherwise: the description may
                    // carry this transaction's own schema change, which must not reach the targets before it
                    // commits (nor at all if it aborts). It waits for its commit.
                    let why = if self.relation_shapes.contains_key(oid) {
                        format!("it changes the columns of table {namespace}.{name}")
                    } else {
                        format!("table {namespace}.{name} was not described in this session before")
                    };
                    self.leave_live(&why, out);
                }
                Ok(())
            }
            PgOutput::Type { .. } => Ok(()),
            PgOutput::Insert { oid, .. }
            | PgOutput::Update { oid, .. }
            | PgOutput::Delete { oid, .. } => {
                let oid = *oid;
                if self.internal.contains(&oid) {
                    return Ok(());
                }
                if self.recopies.is_active(oid) {
                    self.leave_live("a table it changes is being re-copied", out);
                    return Ok(());
                }
                if !self.live.begun() {
                    // Tables described so far are announced before the transaction, between transactions.
                    let unannounced: Vec<u32> = self.unannounced.iter().copied().collect();
                    for o in unannounced {
                        self.relation(o, out)?;
                    }
                    self.live.begin();
                    self.in_transaction = true;
                    let xid = self.spool.current();
                    info!(
                        xid,
                        "applying a streamed transaction while it is in progress"
                    );
                    out.push_back(Event::Begin(Arc::new(TxContext {
                        commit_at: Position::Pg(wal_start, self.timeline),
                        commit_time: None,
                        xid,
                        origin: Origin::default(),
                        continues_snapshot: false,
                        in_progress: true,
                    })));
                } else if self.unannounced.contains(&oid) {
                    let table = self.relations.get(&oid).map(|t| t.id.to_string());
                    self.leave_live(
                        &format!(
                            "table {} changed columns after its first row",
                            table.unwrap_or_default()
                        ),
                        out,
                    );
                    return Ok(());
                }
                self.apply(msg, out).await
            }
            PgOutput::Truncate { .. } => {
                self.leave_live("a TRUNCATE", out);
                Ok(())
            }
            PgOutput::Origin { .. } => {
                self.leave_live("a replication origin", out);
                Ok(())
            }
            _ => {
                self.leave_live("a logical decoding message", out);
                Ok(())
            }
        }
    }

    /// The transaction applied live stops being so: what went out of it is undone, and its spool replays it at
    /// its commit.
    fn leave_live(&mut self, why: &str, out: &mut VecDeque<Event>) {
        let xid = self.spool.current();
        if self.live.end() {
            self.in_transaction = false;
            out.push_back(Event::Abandon);
            info!(
                xid,
                reason = why,
                "a transaction applied while in progress is undone: it is applied at its commit"
            );
        } else {
            debug!(
                xid,
                reason = why,
                "a streamed transaction is applied at its commit"
            );
        }
    }

    /// Applies the next message of the streamed transaction being read back from its spool, or its commit.
    async fn replay_step(&mut self, out: &mut VecDeque<Event>) -> Result<(), Error> {
        let Some(replay) = self.replay.as_mut() else {
            return Ok(());
        };
        match replay.next_message()? {
            Some(bytes) => {
                let msg = self
                    .replay_decoder
                    .decode(&bytes)
                    .map_err(|e| Error::fatal_from("decoding a spooled pgoutput message", e))?;
                self.apply(msg, out).await
            }
            None => {
                let commit = replay.commit;
                debug!(
                    xid = commit.xid,
                    messages = replay.messages,
                    "streamed transaction applied"
                );
                self.replay = None;
                self.apply(commit.as_commit(), out).await
            }
        }
    }

    /// Handles one message of a transaction, in commit order.
    async fn apply(&mut self, msg: PgOutput<'_>, out: &mut VecDeque<Event>) -> Result<(), Error> {
        // pgoutput sends a transaction's Origin (if any) right after its Begin.
        if let Some(mut tx) = self.pending_begin.take() {
            if let PgOutput::Origin { name, .. } = msg {
                self.skipping = self.origins.skips(name);
                tx.origin.name = Some(name.to_owned());
                // A skipped transaction is not a transaction for the sinks: committing a checkpoint for each
                // one would write to the target, which the peer pipeline skips in turn, back and forth.
                if !self.skipping {
                    out.push_back(Event::Begin(Arc::new(tx)));
                }
                return Ok(());
            }
            out.push_back(Event::Begin(Arc::new(tx)));
        }
        match msg {
            PgOutput::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                self.in_transaction = true;
                self.skipping = false;
                self.xid = Some(xid);
                self.pending_begin = Some(TxContext {
                    commit_at: Position::Pg(final_lsn, self.timeline),
                    // 0: a transaction applied under a replication origin that set no origin timestamp.
                    commit_time: (commit_time_micros != 0)
                        .then(|| Timestamp::from_pg_micros(commit_time_micros)),
                    xid: Some(xid),
                    origin: Origin::default(),
                    continues_snapshot: false,
                    in_progress: false,
                });
            }
            PgOutput::Commit { end_lsn, .. } if self.skipping => {
                self.in_transaction = false;
                self.skipping = false;
                self.recopies.committed(self.xid.take());
                // The position still moves on, now and then, as a heartbeat.
                if self.skipped_position_at.elapsed() >= SKIPPED_POSITION_EVERY {
                    self.skipped_position_at = std::time::Instant::now();
                    out.push_back(Event::Heartbeat {
                        position: Position::Pg(end_lsn, self.timeline),
                    });
                }
            }
            PgOutput::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                self.in_transaction = false;
                self.live.has_floor = true;
                self.recopies.committed(self.xid.take());
                for (table, cursor) in self.recopies.unsaved_rereads() {
                    out.push_back(Event::Change(Change::Recopy {
                        table,
                        step: RecopyStep::Chunk {
                            rows: cursor.rows,
                            cursor: cursor.to_json(),
                            in_place: cursor.in_place,
                        },
                    }));
                }
                out.push_back(Event::Commit {
                    position: Position::Pg(end_lsn, self.timeline),
                    commit_time: Timestamp::from_pg_micros(commit_time_micros),
                });
            }
            PgOutput::Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
                ..
            } => {
                self.relation_shapes.insert(
                    oid,
                    super::live::relation_shape(namespace, name, replica_identity, &columns),
                );
                let raw: Vec<RawColumn> = columns
                    .iter()
                    .map(|c| RawColumn {
                        name: c.name.to_owned(),
                        type_oid: c.type_oid,
                        type_modifier: c.type_modifier,
                        is_key: c.is_key,
                    })
                    .collect();
                let id = TableId::new(namespace, name);
                if ferry_core::is_internal_table(&id) {
                    self.internal.insert(oid);
                    return Ok(());
                }
                if self.binary_on {
                    for c in &raw {
                        if !self.catalog.binary_decodable(c.type_oid).await? {
                            if let Ok(mut slots) = TEXT_ONLY_SLOTS.lock() {
                                slots.insert(self.slot.clone());
                            }
                            return Err(Error::transient(
                                format!("table {id}, column {}", c.name),
                                "its type has no binary decoding in Ferry: reading the slot again in text format",
                            ));
                        }
                    }
                }
                self.internal.remove(&oid);
                self.schema_versions += 1;
                let schema = self
                    .catalog
                    .table_schema(
                        oid,
                        id,
                        &raw,
                        Some(replica_identity),
                        self.schema_versions,
                        self.relations.get(&oid).map(|s| s.as_ref()),
                    )
                    .await?;
                self.relation_columns
                    .insert(oid, (raw.clone(), replica_identity));
                let changed = self.relations.get(&oid).is_none_or(|old| {
                    old.id != schema.id
                        || old.columns != schema.columns
                        || old.primary_key != schema.primary_key
                        || old.identity != schema.identity
                });
                if schema.columns.len() == raw.len() {
                    self.tuple_layouts.remove(&oid);
                } else {
                    let layout = raw
                        .iter()
                        .filter_map(|c| schema.column_index(&c.name))
                        .collect();
                    self.tuple_layouts.insert(oid, layout);
                }
                if changed {
                    // Announced before the relation's first change, not now: with publish_via_partition_root the
                    // server also describes each leaf partition, whose changes arrive under the root.
                    self.unannounced.insert(oid);
                    self.relations.insert(oid, schema);
                }
            }
            PgOutput::Insert { .. }
            | PgOutput::Update { .. }
            | PgOutput::Delete { .. }
            | PgOutput::Truncate { .. }
                if self.skipping =>
            {
                self.stats.add_origin_skipped(1);
            }
            PgOutput::Insert { oid, .. }
            | PgOutput::Update { oid, .. }
            | PgOutput::Delete { oid, .. }
                if self.internal.contains(&oid) => {}
            PgOutput::Insert { oid, new, .. } => {
                let table = self.relation(oid, out)?;
                let after = self.row(oid, &table, &new)?;
                if self.recopies.is_active(oid) {
                    self.recopies.touched(oid, &table, [None, Some(&after)]);
                }
                out.push_back(Event::Change(Change::Row {
                    table,
                    op: RowOp::Insert { after },
                }));
            }
            PgOutput::Update { oid, old, new, .. } => {
                let table = self.relation(oid, out)?;
                let before = old.map(|o| self.row(oid, &table, &o)).transpose()?;
                let mut after = self.row(oid, &table, &new)?;
                if let Some(before) = &before {
                    fill_unchanged_from_identity(&table, before, &mut after);
                }
                if self.recopies.is_active(oid) {
                    self.recopies
                        .touched(oid, &table, [before.as_ref(), Some(&after)]);
                    // Without every column the shadow table cannot write a row it does not hold yet.
                    if after.contains(&Value::Unchanged) {
                        if let Some(key) = self.key_text(oid, &table, &new) {
                            self.recopies.reread(oid, key);
                        }
                    }
                }
                out.push_back(Event::Change(Change::Row {
                    table,
                    op: RowOp::Update { before, after },
                }));
            }
            PgOutput::Delete { oid, old, .. } => {
                let table = self.relation(oid, out)?;
                let before = self.row(oid, &table, &old)?;
                if self.recopies.is_active(oid) {
                    self.recopies.touched(oid, &table, [Some(&before), None]);
                }
                out.push_back(Event::Change(Change::Row {
                    table,
                    op: RowOp::Delete { before },
                }));
            }
            PgOutput::Truncate { oids, .. } => {
                let oids: Vec<u32> = oids
                    .into_iter()
                    .filter(|o| !self.internal.contains(o))
                    .collect();
                if oids.is_empty() {
                    return Ok(());
                }
                for oid in &oids {
                    self.recopies.truncated(*oid);
                }
                let tables = oids
                    .iter()
                    .map(|o| self.relation(*o, out).map(|t| t.id.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push_back(Event::Change(Change::Truncate {
                    tables,
                    snapshot: false,
                }));
            }
            PgOutput::Message {
                transactional: false,
                prefix: "ferry",
                lsn,
                ..
            } => {
                self.live.has_floor = true;
                out.push_back(Event::Heartbeat {
                    position: Position::Pg(lsn, self.timeline),
                });
            }
            PgOutput::Message {
                transactional: true,
                prefix: rewrite::PREFIX,
                lsn,
                content,
                ..
            } => self.on_rewrite(content, lsn, out).await?,
            PgOutput::Message {
                transactional: true,
                prefix: recopy::WATERMARK_PREFIX,
                content,
                ..
            } => self.on_watermark(content, out).await?,
            PgOutput::Message {
                transactional: true,
                prefix: recopy::SIGNAL_PREFIX,
                content,
                ..
            } => {
                let Ok(signal) = serde_json::from_slice::<recopy::Signal>(content) else {
                    warn!("an unreadable re-copy request; ignored");
                    return Ok(());
                };
                if signal.slot == self.slot {
                    match TableId::parse(&signal.table, "public") {
                        Some(table) => self.start_recopy(table, out).await?,
                        None => warn!(
                            table = signal.table,
                            "a re-copy request names no table; ignored"
                        ),
                    }
                }
            }
            PgOutput::Message { .. } | PgOutput::Type { .. } | PgOutput::Origin { .. } => {}
            PgOutput::StreamStart { .. }
            | PgOutput::StreamStop
            | PgOutput::StreamCommit { .. }
            | PgOutput::StreamAbort { .. } => {
                warn!("unexpected streamed-transaction message: streaming is not requested");
                return Err(Error::fatal(
                    "the server sent a streamed transaction although streaming was not requested",
                ));
            }
        }
        Ok(())
    }

    /// A table was rewritten (see `rewrite.rs`): nothing to do when the targets can reproduce it, otherwise the
    /// `on_schema_change` policy.
    async fn on_rewrite(
        &mut self,
        content: &[u8],
        lsn: Lsn,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let Some(rewrite) = Rewrite::parse(content) else {
            warn!("an unreadable table rewrite notice; ignored");
            return Ok(());
        };
        let Err(why) = rewrite.reproducible() else {
            debug!(oid = rewrite.oid, statement = %rewrite.statement, "a table rewrite the targets reproduce");
            return self.describe_rewritten(&rewrite, out).await;
        };
        let Some((oid, table)) = self.published_root(rewrite.oid).await? else {
            return Ok(());
        };
        // Rows already copied into a re-copy's shadow hold the values from before the rewrite, which no row event
        // will correct: whatever the policy, that copy starts over.
        let recopying = self.recopies.is_active(oid);
        if recopying {
            self.recopies.stop(oid);
        }
        let reason = format!(
            "rewritten at {lsn} by `{}`: {why}",
            rewrite.statement.trim()
        );
        match self.on_schema_change {
            SchemaChangePolicy::Halt => Err(Error::fatal(format!(
                "table {table} was {reason}; Ferry cannot reproduce that on its targets, so it stopped rather than \
                 let them differ. Copy the table anew (`ferry reset --config <file> --yes` takes a new snapshot), or \
                 set [source] on_schema_change = \"quarantine\" to stop applying only this table"
            ))),
            SchemaChangePolicy::Quarantine => {
                tracing::error!(%table, %reason, "table quarantined: its changes are no longer applied");
                self.stats.quarantine(table.to_string(), reason.clone());
                out.push_back(Event::Change(Change::Quarantine {
                    table: table.clone(),
                    reason,
                }));
                if recopying {
                    warn!(%table, "the table's re-copy starts over: the rows it copied predate the rewrite");
                    self.start_recopy(table, out).await?;
                }
                Ok(())
            }
            SchemaChangePolicy::Resnapshot => {
                warn!(%table, %reason, "re-copying the table (on_schema_change = \"resnapshot\")");
                self.start_recopy(table, out).await
            }
        }
    }

    /// A type change the targets reproduce takes effect on them here, where the source rewrote its rows: the
    /// stream would describe the table only with its next change, so a quiet table's copies would keep the old
    /// values until then, and a narrowing undone before it (`numeric(12,4)` → `(12,2)` → `(12,4)`) would never reach
    /// them, though it rounded every source row. The new types are the notice's; the rest is as the table's last
    /// Relation message described it.
    async fn describe_rewritten(
        &mut self,
        rewrite: &Rewrite,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let Some(types) = rewrite.columns.as_ref().filter(|_| rewrite.changes_types()) else {
            return Ok(());
        };
        let Some((oid, table)) = self.published_root(rewrite.oid).await? else {
            return Ok(());
        };
        // The columns as the table's last Relation message gave them, with the notice's types; a table this
        // session has not described yet (copied by the snapshot, quiet since) takes the notice's columns, as the
        // snapshot took the catalog's.
        let notice = || {
            types
                .iter()
                .map(|(name, oid, modifier)| RawColumn {
                    name: name.clone(),
                    type_oid: *oid,
                    type_modifier: *modifier,
                    is_key: false,
                })
                .collect::<Vec<_>>()
        };
        let (raw, identity) = match self.relation_columns.get(&oid) {
            Some((raw, identity)) => (
                raw.iter()
                    .map(|c| {
                        let mut c = c.clone();
                        if let Some((_, oid, modifier)) =
                            types.iter().find(|(name, ..)| *name == c.name)
                        {
                            (c.type_oid, c.type_modifier) = (*oid, *modifier);
                        }
                        c
                    })
                    .collect(),
                Some(*identity),
            ),
            None => (notice(), None),
        };
        let previous = self.relations.get(&oid).cloned();
        self.schema_versions += 1;
        let schema = self
            .catalog
            .table_schema(
                oid,
                table,
                &raw,
                identity,
                self.schema_versions,
                previous.as_deref(),
            )
            .await?;
        if previous.is_some_and(|p| p.columns == schema.columns) {
            return Ok(());
        }
        info!(table = %schema.id, statement = %rewrite.statement.trim(), "a type change rewrote the table: the targets follow it here");
        if let Some(identity) = identity {
            self.relation_columns.insert(oid, (raw, identity));
        }
        self.relations.insert(oid, schema.clone());
        self.unannounced.remove(&oid);
        out.push_back(Event::Schema(schema));
        Ok(())
    }

    /// The published table (a partition's root) relation `oid` belongs to, if it is published.
    async fn published_root(&mut self, oid: u32) -> Result<Option<(u32, TableId)>, Error> {
        let row = self
            .catalog
            .client()
            .query_opt(
                "SELECT n.nspname::text, c.relname::text, c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = coalesce(pg_partition_root($1::int8::oid), $1::int8::oid) \
                 AND EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = $2 \
                             AND p.schemaname = n.nspname AND p.tablename = c.relname)",
                &[&i64::from(oid), &self.publication],
            )
            .await
            .map_err(|e| Error::transient("reading the rewritten table", e))?;
        Ok(row.map(|row| {
            (
                row.get::<_, i64>(2) as u32,
                TableId::new(row.get::<_, String>(0), row.get::<_, String>(1)),
            )
        }))
    }

    /// A listed table dropped and created again at the source is no longer in the publication, so its rows stop
    /// reaching the slot without any sign: add it back and copy it anew (the copy replaces the old table's rows
    /// on the targets, and brings the rows written before it was added back).
    async fn keep_followed_tables(&mut self) -> Result<(), Error> {
        let Some(followed) = &self.followed else {
            return Ok(());
        };
        let client = self.catalog.client();
        for table in
            super::slot::missing_from_publication(client, &self.publication, followed).await?
        {
            if super::slot::add_to_publication(client, &self.publication, &table).await? {
                warn!(%table, "a followed table left the publication (dropped and created again at the source): \
                       added it back, and it is copied anew");
                recopy::request(client, &self.slot, &table).await?;
            }
        }
        Ok(())
    }

    /// Starts re-copying `table` at this point of the stream (a request, or the `resnapshot` policy).
    async fn start_recopy(
        &mut self,
        table: TableId,
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let Some(oid) = self.published_oid(&table).await? else {
            warn!(%table, publication = %self.publication, "a re-copy was asked for a table that is not published; ignored");
            return Ok(());
        };
        if self.recopies.is_active(oid) {
            info!(%table, "the table is being re-copied already");
            return Ok(());
        }
        let schema = match self.relations.get(&oid) {
            Some(_) => self.relation(oid, out)?,
            None => self.catalog_schema(oid, &table, out).await?,
        };
        self.recopies.start(oid, &schema, Cursor::default())?;
        self.stats.recopy(table.to_string(), 0, false);
        out.push_back(Event::Change(Change::Recopy {
            table,
            step: RecopyStep::Start { schema },
        }));
        Ok(())
    }

    /// Resumes the re-copies the sinks hold cursors for; one without a cursor starts again from its first row.
    pub async fn resume_recopies(
        &mut self,
        recopies: Vec<(TableId, Option<String>)>,
    ) -> Result<(), Error> {
        for (table, cursor) in recopies {
            let Some(oid) = self.published_oid(&table).await? else {
                warn!(%table, "a re-copy under way is dropped: the table is no longer published");
                continue;
            };
            match cursor {
                Some(text) if text == ferry_core::INTERRUPTED_COPY => {
                    info!(%table, "the snapshot was cut short before this table was copied whole: it is re-copied \
                          online");
                    recopy::request(self.catalog.client(), &self.slot, &table).await?;
                }
                Some(text)
                    if Cursor::parse(&table, &text)?
                        .relation
                        .is_some_and(|r| r != oid) =>
                {
                    info!(%table, "the table being re-copied was dropped and created again: its copy starts over");
                    recopy::request(self.catalog.client(), &self.slot, &table).await?;
                }
                Some(text) => {
                    let cursor = Cursor::parse(&table, &text)?;
                    let columns = self.catalog.columns(oid).await?;
                    let schema = self
                        .catalog
                        .table_schema(oid, table.clone(), &columns, None, 0, None)
                        .await?;
                    self.stats.recopy(table.to_string(), cursor.rows, false);
                    self.recopies.start(oid, &schema, cursor)?;
                }
                None => {
                    info!(%table, "the sinks disagree on how far the table's re-copy got: it starts again");
                    recopy::request(self.catalog.client(), &self.slot, &table).await?;
                }
            }
        }
        Ok(())
    }

    /// The relation OID of `table` if the publication includes it.
    async fn published_oid(&self, table: &TableId) -> Result<Option<u32>, Error> {
        let row = self
            .catalog
            .client()
            .query_opt(
                "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND EXISTS (SELECT 1 FROM pg_publication_tables p \
                 WHERE p.pubname = $3 AND p.schemaname = n.nspname AND p.tablename = c.relname)",
                &[&table.schema, &table.name, &self.publication],
            )
            .await
            .map_err(|e| Error::transient("looking up a table to re-copy", e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u32))
    }

    /// The schema of a relation the stream has not described since it started, from the catalog, announced.
    async fn catalog_schema(
        &mut self,
        oid: u32,
        table: &TableId,
        out: &mut VecDeque<Event>,
    ) -> Result<SchemaRef, Error> {
        if let Some(s) = self.recopy_schemas.get(&oid) {
            return Ok(s.clone());
        }
        let columns = self.catalog.columns(oid).await?;
        self.schema_versions += 1;
        let schema = self
            .catalog
            .table_schema(
                oid,
                table.clone(),
                &columns,
                None,
                self.schema_versions,
                None,
            )
            .await?;
        self.recopy_schemas.insert(oid, schema.clone());
        out.push_back(Event::Schema(schema.clone()));
        Ok(schema)
    }

    /// The schema a re-copy chunk lands with: when it is `new` to the stream (read after a change the stream has
    /// not reached), a new version of it, announced.
    fn recopy_schema(
        &mut self,
        schema: SchemaRef,
        new: bool,
        out: &mut VecDeque<Event>,
    ) -> SchemaRef {
        if !new {
            return schema;
        }
        self.schema_versions += 1;
        let mut s = (*schema).clone();
        s.version = self.schema_versions;
        let s = std::sync::Arc::new(s);
        if let Some(oid) = s.relation_id {
            self.recopy_schemas.insert(oid, s.clone());
        }
        out.push_back(Event::Schema(s.clone()));
        s
    }

    /// A re-copy watermark: at a high watermark, the chunk's rows and cursor (or the end of the re-copy).
    async fn on_watermark(
        &mut self,
        content: &[u8],
        out: &mut VecDeque<Event>,
    ) -> Result<(), Error> {
        let relations = &self.relations;
        let recopy_schemas = &self.recopy_schemas;
        let landed = self.recopies.watermark(content, |oid| {
            relations
                .get(&oid)
                .or_else(|| recopy_schemas.get(&oid))
                .cloned()
        })?;
        let (schema, schema_new, rows, cursor, finished) = match landed {
            Landed::Chunk {
                schema,
                schema_new,
                rows,
                cursor,
                finished,
            } => (schema, schema_new, rows, cursor, finished),
            Landed::Gone { table } => {
                // Its shadow goes; the table under that name now, if any, is another one, which the stream (or a
                // new request) fills.
                self.stats.recopy(table.to_string(), 0, true);
                out.push_back(Event::Change(Change::Recopy {
                    table,
                    step: RecopyStep::Cancel,
                }));
                return Ok(());
            }
            Landed::Restart {
                oid,
                schema,
                schema_new,
            } => {
                let table = schema.id.clone();
                warn!(%table, "a column of the table being re-copied changed type: the rows copied so far hold \
                      values of the old type, so its re-copy starts over");
                // Started with the schema the chunk was read with: the stream may not have seen the change yet.
                let schema = self.recopy_schema(schema, schema_new, out);
                self.recopies.start(oid, &schema, Cursor::default())?;
                self.stats.recopy(table.to_string(), 0, false);
                out.push_back(Event::Change(Change::Recopy {
                    table,
                    step: RecopyStep::Start { schema },
                }));
                return Ok(());
            }
            Landed::None => return Ok(()),
        };
        let schema = self.recopy_schema(schema, schema_new, out);
        for after in rows {
            out.push_back(Event::Change(Change::Row {
                table: schema.clone(),
                op: RowOp::Read { after },
            }));
        }
        let table = schema.id.clone();
        self.stats.recopy(table.to_string(), cursor.rows, finished);
        if finished {
            // The copy replaces what the targets had: a quarantine of the table ends with it.
            self.stats.release_quarantine(&table.to_string());
        }
        let step = if finished {
            RecopyStep::Finish { schema }
        } else {
            RecopyStep::Chunk {
                rows: cursor.rows,
                cursor: cursor.to_json(),
                in_place: cursor.in_place,
            }
        };
        out.push_back(Event::Change(Change::Recopy { table, step }));
        Ok(())
    }

    /// Whether to ask for binary values: `[source] binary`, PostgreSQL 14+, and every published column of a type
    /// `binary.rs` reads (one session has one format, and a type's send format is its own).
    async fn binary_format(&mut self, slot: &str, publication: &str) -> Result<bool, Error> {
        if !self.binary || self.catalog.server_version().await? < 140_000 {
            return Ok(false);
        }
        if TEXT_ONLY_SLOTS.lock().is_ok_and(|s| s.contains(slot)) {
            return Ok(false);
        }
        if let Some(column) = self.catalog.text_only_column(publication).await? {
            info!(%column, "values arrive in text format: this published column's type has no binary decoding in Ferry");
            return Ok(false);
        }
        Ok(true)
    }

    /// The text forms of `table`'s primary key in a tuple of relation `oid`, as the server sent them.
    fn key_text(
        &self,
        oid: u32,
        table: &TableSchema,
        tuple: &[TupleValue<'_>],
    ) -> Option<Vec<String>> {
        table
            .primary_key
            .iter()
            .map(|&k| {
                let pos = match self.tuple_layouts.get(&oid) {
                    Some(layout) => layout.iter().position(|&i| i == k)?,
                    None => k,
                };
                match tuple.get(pos)? {
                    TupleValue::Text(b) => String::from_utf8(b.to_vec()).ok(),
                    TupleValue::Binary(b) => {
                        let col = table.columns.get(k)?;
                        ferry_core::pg_text::pg_text(&decode_binary(&col.ty, b).ok()?)
                    }
                    TupleValue::Null | TupleValue::Unchanged => None,
                }
            })
            .collect()
    }

    /// A tuple of relation `oid` as a row of `table`; columns the tuple does not carry are NULL.
    fn row(
        &self,
        oid: u32,
        table: &SchemaRef,
        values: &[TupleValue<'_>],
    ) -> Result<Vec<Value>, Error> {
        let Some(layout) = self.tuple_layouts.get(&oid) else {
            return row(table, values);
        };
        if values.len() != layout.len() {
            return Err(Error::fatal(format!(
                "table {}: a row has {} columns, its Relation message {}",
                table.id,
                values.len(),
                layout.len()
            )));
        }
        let mut out = vec![Value::Null; table.columns.len()];
        for (v, &i) in values.iter().zip(layout) {
            out[i] = decode_tuple_value(table, i, v)?;
        }
        Ok(out)
    }

    /// The schema of a relation a change is about, announced first (an [`Event::Schema`]) if it is new.
    fn relation(&mut self, oid: u32, out: &mut VecDeque<Event>) -> Result<SchemaRef, Error> {
        let schema = self.relations.get(&oid).cloned().ok_or_else(|| {
            Error::fatal(format!(
                "change for relation {oid} before its Relation message"
            ))
        })?;
        if self.unannounced.remove(&oid) {
            out.push_back(Event::Schema(schema.clone()));
        }
        Ok(schema)
    }
}

/// An unchanged TOAST value is not in the new tuple, but an old image carries every identity column in full
/// (`REPLICA IDENTITY FULL` detoasts the whole old row): take those values, so the new image is complete and no
/// sink has to guess (a keyless table's update is a delete and an insert of the whole row).
fn fill_unchanged_from_identity(table: &TableSchema, before: &[Value], after: &mut [Value]) {
    for &i in &table.identity {
        if after[i] == Value::Unchanged && before[i] != Value::Unchanged {
            after[i] = before[i].clone();
        }
    }
}

/// Converts a pgoutput tuple into a row of typed values.
pub(crate) fn row(table: &SchemaRef, values: &[TupleValue<'_>]) -> Result<Vec<Value>, Error> {
    if values.len() != table.columns.len() {
        return Err(Error::fatal(format!(
            "table {}: a row has {} columns, its schema {}",
            table.id,
            values.len(),
            table.columns.len()
        )));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| decode_tuple_value(table, i, v))
        .collect()
}

fn decode_tuple_value(table: &TableSchema, i: usize, v: &TupleValue<'_>) -> Result<Value, Error> {
    let col = &table.columns[i];
    match v {
        TupleValue::Null => return Ok(Value::Null),
        TupleValue::Unchanged => return Ok(Value::Unchanged),
        TupleValue::Text(bytes) => decode_text(&col.ty, bytes),
        TupleValue::Binary(bytes) => decode_binary(&col.ty, bytes),
    }
    .map_err(|e| Error::fatal_from(format!("table {}, column {}", table.id, col.name), e))
}
