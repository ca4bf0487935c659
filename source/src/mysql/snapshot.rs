//! The initial snapshot: every followed table read inside one consistent-snapshot transaction, with the binlog
//! position that transaction corresponds to.
//!
//! MariaDB reports that position from inside the transaction (`binlog_snapshot_file` / `binlog_snapshot_position`),
//! so no lock is taken. MySQL has no such status: a `FLUSH TABLES WITH READ LOCK` is held only while the
//! transaction starts and the position is read.
//!
//! Tables are copied in parallel over several connections whose snapshots are the same: on MariaDB, each opens
//! its consistent snapshot and they are used together only if all report the same binlog position (retried a few
//! times while writes race; otherwise one connection copies every table); on MySQL, all open theirs under the
//! one brief read lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ferry_core::{
    BinlogFilePos, BinlogPosition, Change, Decimal, Error, Event, GtidState, Interval,
    PipelineStats, Position, RowOp, SchemaRef, TableId, Value,
};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::mpsc;
use tracing::info;

use super::catalog::{shared_schema, CatalogTable};
use super::charset::Charset;
use super::{quote_ident, Flavor};
use crate::snapshot::TableParts;

fn sql_error(what: &'static str) -> impl Fn(mysql_async::Error) -> Error {
    move |e| Error::transient(what, e)
}

/// Opens the snapshot transaction on `conn` and returns the binlog position it sees.
async fn begin(conn: &mut Conn, flavor: Flavor) -> Result<BinlogPosition, Error> {
    session(conn).await?;
    let pos = match flavor {
        Flavor::MariaDb => {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(sql_error("starting the snapshot transaction"))?;
            let rows: Vec<(String, String)> = conn
                .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(sql_error("reading the snapshot's binlog position"))?;
            let get = |name: &str| {
                rows.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let file = get("binlog_snapshot_file").unwrap_or_default();
            let offset = get("binlog_snapshot_position").and_then(|p| p.parse().ok());
            let (false, Some(offset)) = (file.is_empty(), offset) else {
                return Err(Error::fatal("the server reports no binlog_snapshot_file / binlog_snapshot_position: is log_bin on?"));
            };
            let gtid: Option<String> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), offset))
                .await
                .map_err(sql_error("reading the snapshot's GTID position"))?
                .flatten();
            BinlogPosition {
                pos: BinlogFilePos::new(file, offset),
                gtid: gtid
                    .and_then(|g| g.parse().ok())
                    .map(GtidState::MariaDb)
                    .filter(|g| !g.is_empty()),
            }
        }
        Flavor::MySql => {
            conn.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(sql_error(
                    "taking the brief read lock for the snapshot position",
                ))?;
            let position = begin_locked(conn).await;
            conn.query_drop("UNLOCK TABLES")
                .await
                .map_err(sql_error("releasing the read lock"))?;
            position?
        }
    };
    Ok(pos)
}

/// Opens up to `parallelism` connections holding the same snapshot, and its binlog position.
pub async fn open(
    url: &str,
    flavor: Flavor,
    parallelism: usize,
) -> Result<(Vec<Conn>, BinlogPosition), Error> {
    let mut first = super::connect(url).await?;
    if parallelism <= 1 {
        let position = begin(&mut first, flavor).await?;
        return Ok((vec![first], position));
    }
    match flavor {
        Flavor::MySql => {
            // begin() on the first connection holds FTWRL only around its own start; to share the lock with the
            // others, take it here for all of them.
            first
                .query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(sql_error(
                    "taking the brief read lock for the snapshot position",
                ))?;
            let mut conns = Vec::new();
            let mut result = Ok(());
            for _ in 1..parallelism {
                let mut conn = super::connect(url).await?;
                if let Err(e) = start(&mut conn).await {
                    result = Err(e);
                    break;
                }
                conns.push(conn);
            }
            let position = match result {
                Ok(()) => begin_locked(&mut first).await,
                Err(e) => Err(e),
            };
            first
                .query_drop("UNLOCK TABLES")
                .await
                .map_err(sql_error("releasing the read lock"))?;
            conns.insert(0, first);
            Ok((conns, position?))
        }
        Flavor::MariaDb => {
            let mut conns = vec![first];
            for _ in 1..parallelism {
                conns.push(super::connect(url).await?);
            }
            // Snapshots opened back to back on already-open connections: usually no commit lands between them.
            for attempt in 0..10 {
                let mut positions = Vec::with_capacity(conns.len());
                for conn in &mut conns {
                    if attempt > 0 {
                        conn.query_drop("ROLLBACK")
                            .await
                            .map_err(sql_error("restarting the snapshot"))?;
                    }
                    positions.push(begin(conn, flavor).await?);
                }
                if positions.iter().all(|p| p.pos == positions[0].pos) {
                    return Ok((conns, positions.swap_remove(0)));
                }
                info!(
                    attempt,
                    "writes moved the binlog while the snapshot transactions opened; retrying"
                );
            }
            info!("the binlog kept moving: copying tables over one connection");
            conns.truncate(1);
            conns[0]
                .query_drop("ROLLBACK")
                .await
                .map_err(sql_error("restarting the snapshot"))?;
            let position = begin(&mut conns[0], flavor).await?;
            Ok((conns, position))
        }
    }
}

async fn start(conn: &mut Conn) -> Result<(), Error> {
    session(conn).await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(sql_error("starting the snapshot transaction"))
}

async fn session(conn: &mut Conn) -> Result<(), Error> {
    for sql in [
        "SET SESSION time_zone = '+00:00'",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        // Values arrive as stored, in each column's own character set, and are decoded once by the same table
        // as the binlog's (charset.rs): the server converts nothing to the connection's character set.
        "SET SESSION character_set_results = binary",
    ] {
        conn.query_drop(sql)
            .await
            .map_err(sql_error("setting up the snapshot session"))?;
    }
    Ok(())
}

/// MySQL, with FLUSH TABLES WITH READ LOCK held by the caller: start the snapshot and read the position.
async fn begin_locked(conn: &mut Conn) -> Result<BinlogPosition, Error> {
    start(conn).await?;
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(sql_error("reading the binlog position"))?;
    mysql_position(row)
}

fn mysql_position(row: Option<mysql_async::Row>) -> Result<BinlogPosition, Error> {
    let row = row.ok_or_else(|| Error::fatal("SHOW MASTER STATUS is empty: is log_bin on?"))?;
    let file: String = row.get(0).unwrap_or_default();
    let offset: u64 = row.get(1).unwrap_or_default();
    let gtid: Option<String> = row.get(4);
    Ok(BinlogPosition {
        pos: BinlogFilePos::new(file, offset),
        gtid: gtid
            .map(|g| g.replace(['\n', ' '], ""))
            .and_then(|g| g.parse().ok())
            .map(GtidState::MySql)
            .filter(|g| !g.is_empty()),
    })
}

/// A snapshot cut short, resumed ([`run`]): what the sinks' checkpoint is, and what is left of each table it had
/// not finished.
pub struct Resumed {
    /// The first snapshot's position, every sink's checkpoint: the copy left commits there, and the stream
    /// starts there again.
    pub from: BinlogPosition,
    /// Per table: the key ranges left (`Some`), or `None` to empty and copy it whole.
    pub left: std::collections::HashMap<TableId, Option<Vec<KeyRange>>>,
}

/// Reads `tables` in the open snapshot transactions at `position` and emits them.
///
/// `resumable` (every sink records a copy's parts): the snapshot commits after each table and each key range it
/// finishes (a [`ferry_core::RecopyStep::Chunk`] with the ranges left), so that a crash leaves the sinks with the
/// tables and ranges copied; otherwise it is one transaction. `resumed`: this copy finishes one cut short
/// ([`Resumed`]): only the tables and ranges left, committed at the first snapshot's position.
pub async fn run(
    conns: Vec<Conn>,
    position: &BinlogPosition,
    tables: &[(TableId, CatalogTable)],
    events: &mpsc::Sender<Event>,
    stats: Arc<PipelineStats>,
    resumable: bool,
    resumed: Option<&Resumed>,
) -> Result<(), Error> {
    // A resumed copy reads rows at `position`, after the sinks' checkpoint, and commits at the checkpoint.
    let until = resumed.map(|_| position.clone());
    let position = Position::Binlog(resumed.map_or(position, |r| &r.from).clone());
    let schemas: Vec<SchemaRef> = tables
        .iter()
        .map(|(id, t)| shared_schema(id, t, 0))
        .collect();
    // Each column's character set, checked before any row is read.
    let mut work = Vec::with_capacity(tables.len());
    for ((id, table), schema) in tables.iter().zip(&schemas) {
        let charsets = table
            .columns
            .iter()
            .map(|c| {
                c.charset().map_err(|e| {
                    Error::fatal(format!(
                        "table {id}, column {}: {e}. Convert the column (ALTER TABLE … CONVERT TO CHARACTER SET utf8mb4) or leave the table out of the pipeline",
                        c.name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        work.push((schema.clone(), charsets));
    }
    let mut conns = conns;
    let mut estimated = 0u64;
    let parallelism = conns.len();
    let mut pieces = Vec::new();
    for ((id, _), (schema, charsets)) in tables.iter().zip(work) {
        let rows: Option<Option<u64>> = conns[0]
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (id.schema.clone(), id.name.clone()),
            )
            .await
            .map_err(sql_error("estimating table sizes"))?;
        let rows = rows.flatten().unwrap_or(0);
        estimated += rows;
        let ranges = match resumed.and_then(|r| r.left.get(id)) {
            Some(Some(left)) => Some(left.clone()),
            _ => key_ranges(&mut conns[0], &schema, rows, parallelism, resumable).await?,
        };
        match ranges {
            Some(ranges) => {
                info!(table = %id, chunks = ranges.len(), "copying the table in primary-key ranges");
                let progress = TableParts::new(ranges.iter().copied().map(Some).collect());
                for range in ranges {
                    pieces.push((
                        schema.clone(),
                        charsets.clone(),
                        Some(range),
                        progress.clone(),
                    ));
                }
            }
            None => pieces.push((schema, charsets, None, TableParts::new(vec![None]))),
        }
    }
    // Popped from the end: the first table's pieces first.
    pieces.reverse();
    match resumed {
        None => crate::snapshot::begin(events, &position, &schemas).await?,
        Some(r) => {
            // The tables copied whole are emptied; those with ranges left keep the ranges already copied.
            let emptied: Vec<TableId> = r
                .left
                .iter()
                .filter(|(_, left)| left.is_none())
                .map(|(t, _)| t.clone())
                .collect();
            crate::snapshot::begin_resumed(events, &position, &schemas, emptied).await?;
        }
    }
    let output = crate::snapshot::Output::new(events.clone(), position.clone(), resumable);
    stats.snapshot.start(tables.len() as u64, estimated);
    info!(
        tables = tables.len(),
        estimated_rows = estimated,
        "snapshot started"
    );
    let started = Instant::now();
    let reporter = crate::snapshot::report_progress(stats.clone());
    let queue = Arc::new(std::sync::Mutex::new(pieces));
    let mut workers = tokio::task::JoinSet::new();
    for mut conn in conns.drain(..) {
        let (queue, output, stats) = (queue.clone(), output.clone(), stats.clone());
        let until = until.clone();
        workers.spawn(async move {
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| Error::fatal("snapshot queue poisoned"))?
                    .pop();
                let Some((schema, charsets, range, progress)) = next else {
                    break;
                };
                let mut sent = output.rows();
                let rows =
                    copy_table(&mut conn, &schema, &charsets, range, &mut sent, &stats).await?;
                sent.flush().await?;
                output
                    .part_copied(&schema.id, || {
                        let (rows, left) = progress.finish(&range, rows);
                        let left: Vec<KeyRange> = left.into_iter().flatten().collect();
                        if left.is_empty() {
                            info!(table = %schema.id, rows, "table copied");
                            stats.snapshot.tables_done.fetch_add(1, Ordering::Relaxed);
                        }
                        match (left.is_empty(), &until) {
                            (true, None) => crate::snapshot::Left::Nothing,
                            // Copied, but the stream's changes before `until` still reach rows read after them.
                            _ => crate::snapshot::Left::Chunks {
                                cursor: RangesLeft::new(&left, rows, until.clone()).to_json(),
                                rows,
                            },
                        }
                    })
                    .await?;
            }
            conn.query_drop("COMMIT")
                .await
                .map_err(sql_error("ending the snapshot transaction"))
        });
    }
    let result = crate::snapshot::join_workers(workers).await;
    reporter.abort();
    result?;
    crate::snapshot::commit(events, position, &stats, started).await
}

/// Tables estimated at fewer rows than this are copied whole; a bigger one whose primary key is one integer column
/// is split into key ranges of about this many rows or more: one per worker, or, when the snapshot commits its
/// parts (resumable), as many as it takes, so that a crash loses at most one range per worker.
const CHUNK_ROWS: u64 = 200_000;

/// A range of a one-column integer primary key: from `from` (inclusive; `None`: the lowest) up to `to`
/// (exclusive; `None`: the highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    from: Option<i128>,
    to: Option<i128>,
}

/// The sinks' record of a table copied in key ranges (the [`ferry_core::RecopyStep::Chunk`] cursor): the ranges
/// not copied yet, the rows copied so far, and for a table copied by a resumed snapshot, the position that copy
/// was read at (`until`): until the stream passes it, the stream applies again changes the rows hold already
/// (see `Copy::resume`). JSON, the bounds as decimal strings (an `i128` is no JSON number).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangesLeft {
    mysql_key_ranges: Vec<(Option<String>, Option<String>)>,
    rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<BinlogPosition>,
}

impl RangesLeft {
    fn new(left: &[KeyRange], rows: u64, until: Option<BinlogPosition>) -> RangesLeft {
        let text = |v: Option<i128>| v.map(|v| v.to_string());
        RangesLeft {
            mysql_key_ranges: left.iter().map(|r| (text(r.from), text(r.to))).collect(),
            rows,
            until,
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// One record covering what several sinks recorded of a table, at different paces: every range one of them
    /// has left (copying a range again into a sink that holds it is harmless: the rows are written by key, and
    /// the stream from the checkpoint deletes what went since), and the latest position rows were read at.
    /// `None` when one of `cursors` is no such record.
    pub fn merge(cursors: &[&str]) -> Option<String> {
        let mut merged: Option<RangesLeft> = None;
        for cursor in cursors {
            let record: RangesLeft = serde_json::from_str(cursor).ok()?;
            Self::parse(cursor)?;
            merged = Some(match merged {
                None => record,
                Some(mut m) => {
                    for range in record.mysql_key_ranges {
                        if !m.mysql_key_ranges.contains(&range) {
                            m.mysql_key_ranges.push(range);
                        }
                    }
                    m.rows = m.rows.min(record.rows);
                    m.until = match (m.until, record.until) {
                        (Some(a), Some(b)) if a.try_cmp(&b)?.is_lt() => Some(b),
                        (Some(a), _) => Some(a),
                        (None, b) => b,
                    };
                    m
                }
            });
        }
        merged.map(|m| m.to_json())
    }

    /// The ranges a sink recorded and the position its rows were read at, if a resumed copy read them; `None`
    /// when `cursor` is no such record (another source's, or cut short before its first range: the table is
    /// copied whole).
    pub fn parse(cursor: &str) -> Option<(Vec<KeyRange>, Option<BinlogPosition>)> {
        let left: RangesLeft = serde_json::from_str(cursor).ok()?;
        let bound = |v: &Option<String>| -> Option<Option<i128>> {
            match v {
                None => Some(None),
                Some(t) => t.parse().ok().map(Some),
            }
        };
        let ranges = left
            .mysql_key_ranges
            .iter()
            .map(|(from, to)| {
                Some(KeyRange {
                    from: bound(from)?,
                    to: bound(to)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some((ranges, left.until))
    }
}

/// Events read per `SHOW BINLOG EVENTS`.
const EVENTS_PER_PAGE: usize = 10_000;

/// Why the binlog from `from` up to `to` may hold a change that rows copied later cannot take again, `None` when
/// it holds only row events and what frames transactions. Read with `SHOW BINLOG EVENTS`, a page at a time,
/// following the server's list of binlogs. Anything else counts: a statement other than BEGIN, COMMIT, XA,
/// SAVEPOINT or ANALYZE (a schema change, a TRUNCATE, a statement-format write; compressed ones too), an event
/// of a kind not known to be harmless, and a `from` no longer on the server (nothing can be told of it).
pub async fn change_between(
    conn: &mut Conn,
    from: &BinlogFilePos,
    to: &BinlogFilePos,
) -> Result<Option<String>, Error> {
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(sql_error("listing the binary logs"))?;
    let logs: Vec<String> = logs.into_iter().filter_map(|r| r.get(0)).collect();
    if !logs.contains(&from.file) {
        return Ok(Some(format!(
            "binlog {} is no longer on the server, so what happened since cannot be told",
            from.file
        )));
    }
    let before_end = |file: &str, at: u64| {
        BinlogFilePos::new(file, at).try_cmp(to) == Some(std::cmp::Ordering::Less)
    };
    let (mut file, mut at) = (from.file.clone(), from.offset);
    while before_end(&file, at) {
        let page: Vec<mysql_async::Row> = conn
            .query(format!(
                "SHOW BINLOG EVENTS IN '{}' FROM {at} LIMIT {EVENTS_PER_PAGE}",
                file.replace('\\', "\\\\").replace('\'', "''")
            ))
            .await
            .map_err(sql_error("reading the binlog's events"))?;
        for event in &page {
            let start: u64 = event.get("Pos").unwrap_or(at);
            if !before_end(&file, start) {
                return Ok(None);
            }
            let kind: String = event.get("Event_type").unwrap_or_default();
            let info: String = event.get("Info").unwrap_or_default();
            if let Some(why) = unsafe_event(&kind, &info) {
                return Ok(Some(format!(
                    "the binlog since holds {why} at {file}:{start}"
                )));
            }
            at = event.get("End_log_pos").unwrap_or(at);
        }
        if page.len() < EVENTS_PER_PAGE {
            // This file is read to its end: the next one.
            match logs
                .iter()
                .position(|l| *l == file)
                .and_then(|i| logs.get(i + 1))
            {
                Some(next) => (file, at) = (next.clone(), 4),
                None => return Ok(None),
            }
        }
    }
    Ok(None)
}

/// Why a binlog event (its `SHOW BINLOG EVENTS` type and info) may change rows or a schema otherwise than by row
/// events; `None` for row events, what frames a transaction, and bookkeeping.
fn unsafe_event(kind: &str, info: &str) -> Option<String> {
    const HARMLESS: &[&str] = &[
        "Format_desc",
        "Rotate",
        "Stop",
        "Heartbeat",
        "Gtid",
        "Gtid_list",
        "Binlog_checkpoint",
        "Previous_gtids",
        "Anonymous_Gtid",
        "Xid",
        "XA_prepare",
        "Table_map",
        "Annotate_rows",
        "Rows_query",
        "Start_encryption",
        "Transaction_payload",
        "Partial_update_rows",
    ];
    let rows = ["Write_rows", "Update_rows", "Delete_rows"]
        .iter()
        .any(|r| kind.starts_with(r));
    if rows || HARMLESS.contains(&kind) {
        return None;
    }
    if kind.starts_with("Query") {
        return (!transaction_control(info)).then(|| format!("a statement, `{info}`,"));
    }
    Some(format!("a {kind} event"))
}

/// Whether a logged statement only frames a transaction, or changes nothing (ANALYZE).
fn transaction_control(info: &str) -> bool {
    let word = statement_of(info)
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        word.as_str(),
        "BEGIN" | "COMMIT" | "ROLLBACK" | "XA" | "SAVEPOINT" | "RELEASE" | "ANALYZE"
    )
}

/// A logged statement without the `` use `db`; `` MariaDB and MySQL put before it (a backtick in the name is
/// doubled); the whole text when it has none or it does not parse.
fn statement_of(info: &str) -> &str {
    let Some(rest) = info.strip_prefix("use `") else {
        return info;
    };
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().is_some_and(|(_, n)| *n == '`') {
                chars.next();
                continue;
            }
            return rest[i + 1..].strip_prefix("; ").unwrap_or(info);
        }
    }
    info
}

/// `[min, max]` split into at most `parts` ranges that cover every integer; `None` when one range would do.
fn split_keys(min: i128, max: i128, parts: u64) -> Option<Vec<KeyRange>> {
    let parts = i128::from(parts).min(max - min + 1);
    if parts < 2 {
        return None;
    }
    let step = (max - min + 1) / parts;
    Some(
        (0..parts)
            .map(|i| KeyRange {
                from: (i > 0).then_some(min + i * step),
                to: (i + 1 < parts).then_some(min + (i + 1) * step),
            })
            .collect(),
    )
}

/// The key ranges `schema`'s rows are copied in (read in the snapshot transaction on `conn`), or `None` to copy
/// it whole: a table of fewer than 2 × [`CHUNK_ROWS`] estimated rows, one worker in a snapshot that is not
/// resumable, or a key that is not one integer column.
async fn key_ranges(
    conn: &mut Conn,
    schema: &SchemaRef,
    estimated_rows: u64,
    parallelism: usize,
    resumable: bool,
) -> Result<Option<Vec<KeyRange>>, Error> {
    let parts = if resumable {
        estimated_rows / CHUNK_ROWS
    } else {
        (estimated_rows / CHUNK_ROWS).min(parallelism as u64)
    };
    let [key] = schema.primary_key[..] else {
        return Ok(None);
    };
    let integer = matches!(
        schema.columns[key].ty,
        ferry_core::ColumnType::Int2 | ferry_core::ColumnType::Int4 | ferry_core::ColumnType::Int8
    );
    if parts < 2 || !integer {
        return Ok(None);
    }
    let column = quote_ident(&schema.columns[key].name);
    let bounds: Option<(Option<String>, Option<String>)> = conn
        .query_first(format!(
            "SELECT CAST(MIN({column}) AS CHAR), CAST(MAX({column}) AS CHAR) FROM {}.{}",
            quote_ident(&schema.id.schema),
            quote_ident(&schema.id.name)
        ))
        .await
        .map_err(sql_error("reading a table's key range"))?;
    let parse = |v: Option<String>| v.and_then(|v| v.parse::<i128>().ok());
    Ok(match bounds {
        Some((min, max)) => match (parse(min), parse(max)) {
            (Some(min), Some(max)) => split_keys(min, max, parts),
            _ => None,
        },
        None => None,
    })
}

async fn copy_table(
    conn: &mut Conn,
    schema: &SchemaRef,
    charsets: &[Charset],
    range: Option<KeyRange>,
    sent: &mut crate::snapshot::Rows,
    stats: &PipelineStats,
) -> Result<u64, Error> {
    let columns = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!(
        "SELECT {columns} FROM {}.{}",
        quote_ident(&schema.id.schema),
        quote_ident(&schema.id.name)
    );
    if let (Some(range), [key]) = (range, &schema.primary_key[..]) {
        let key = quote_ident(&schema.columns[*key].name);
        let mut bounds = Vec::new();
        if let Some(from) = range.from {
            bounds.push(format!("{key} >= {from}"));
        }
        if let Some(to) = range.to {
            bounds.push(format!("{key} < {to}"));
        }
        if !bounds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&bounds.join(" AND "));
        }
    }
    let err = |e: mysql_async::Error| Error::transient(format!("reading table {}", schema.id), e);
    // The binary protocol gives typed values (integers, dates) rather than text.
    let mut result = match conn.exec_iter(sql, ()).await {
        Ok(result) => result,
        // ER_TABLE_DEF_CHANGED: the table was created, or rebuilt (OPTIMIZE, ALTER … FORCE: no row events), after
        // the snapshot point. Its rows are not all in the binlog after the point: the snapshot is taken again, at
        // a point after that (a resumable one resumes).
        Err(mysql_async::Error::Server(e)) if e.code == 1412 => {
            return Err(Error::transient(
                format!(
                    "table {} was created or rebuilt after the snapshot point: taking the snapshot again",
                    schema.id
                ),
                mysql_async::Error::Server(e),
            ));
        }
        Err(e) => return Err(err(e)),
    };
    let mut stream = result
        .stream::<mysql_async::Row>()
        .await
        .map_err(err)?
        .ok_or_else(|| Error::fatal(format!("reading table {}: no result set", schema.id)))?;
    let mut count = 0u64;
    use futures_util::StreamExt;
    while let Some(row) = stream.next().await {
        let row = row.map_err(err)?;
        let values = row
            .unwrap()
            .into_iter()
            .zip(schema.columns.iter().zip(charsets))
            .map(|(v, (c, charset))| {
                snapshot_value(v, &c.ty, *charset).map_err(|e| {
                    Error::fatal(format!(
                        "reading table {}, column {}: {e}",
                        schema.id, c.name
                    ))
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        sent.push(Event::Change(Change::Row {
            table: schema.clone(),
            op: RowOp::Read { after: values },
        }))
        .await?;
        stats.snapshot.rows_copied.fetch_add(1, Ordering::Relaxed);
        count += 1;
    }
    Ok(count)
}

/// One value of the binary protocol as the typed value the binlog decoder gives for the same column: strings
/// (CHAR, TEXT, ENUM, SET) decoded from the column's character set.
fn snapshot_value(
    v: mysql_async::Value,
    ty: &ferry_core::ColumnType,
    charset: Charset,
) -> Result<Value, String> {
    use ferry_core::ColumnType as T;
    use mysql_async::Value as M;
    Ok(match (v, ty) {
        (M::NULL, _) => Value::Null,
        (M::Int(i), T::Numeric) => Value::Decimal(Decimal::Finite(i.to_string())),
        (M::Int(i), _) => Value::Int(i),
        (M::UInt(u), T::Numeric) => Value::Decimal(Decimal::Finite(u.to_string())),
        (M::UInt(u), _) => Value::Int(i64::try_from(u).map_err(|_| format!("{u} out of range"))?),
        (M::Float(f), _) => Value::Float(f.to_string().parse().unwrap_or(f64::from(f))),
        (M::Double(f), _) => Value::Float(f),
        (M::Bytes(b), T::Numeric) => {
            let s = String::from_utf8(b).map_err(|e| e.to_string())?;
            Value::Decimal(Decimal::parse(&s).map_err(|e| e.to_string())?)
        }
        (M::Bytes(b), T::Int2 | T::Int4 | T::Int8) => {
            let s = String::from_utf8(b).map_err(|e| e.to_string())?;
            Value::Int(s.parse().map_err(|_| format!("integer {s:?}"))?)
        }
        (M::Bytes(b), T::Bytes) => Value::Bytes(b),
        (M::Bytes(b), T::Json) => Value::Json(String::from_utf8(b).map_err(|e| e.to_string())?),
        (M::Bytes(b), _) => Value::Text(charset.text(&b)?),
        (M::Date(y, m, d, _, _, _, _), T::Date) => {
            super::rows::date_value(i32::from(y), u32::from(m), u32::from(d))
        }
        (M::Date(y, m, d, h, mi, s, us), t) => {
            let (y, m, d) = (i32::from(y), u32::from(m), u32::from(d));
            let (h, mi, s) = (i64::from(h), i64::from(mi), i64::from(s));
            match super::rows::datetime_value(y, m, d, h, mi, s, i64::from(us)) {
                // TIMESTAMP columns are read in the session time zone, set to UTC in begin().
                Value::Timestamp(ts) if *t == T::TimestampTz => Value::TimestampTz(ts),
                other => other,
            }
        }
        (M::Time(negative, days, h, m, s, us), _) => {
            let micros =
                ((i64::from(days) * 24 + i64::from(h)) * 3600 + i64::from(m) * 60 + i64::from(s))
                    * 1_000_000
                    + i64::from(us);
            Value::Interval(Interval {
                months: 0,
                days: 0,
                micros: if negative { -micros } else { micros },
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_cover_every_key_once() {
        let r = split_keys(1, 1_000_000, 2).unwrap();
        assert_eq!(
            r,
            vec![
                KeyRange {
                    from: None,
                    to: Some(500_001)
                },
                KeyRange {
                    from: Some(500_001),
                    to: None
                },
            ]
        );
        assert_eq!(split_keys(5, 5, 4), None);
        assert_eq!(split_keys(-10, 10, 1), None);
        // Contiguous, open at both ends.
        let r = split_keys(i128::from(i64::MIN), i128::from(u64::MAX), 4).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!((r[0].from, r[3].to), (None, None));
        assert!(r.windows(2).all(|w| w[0].to == w[1].from));
    }

    #[test]
    fn ranges_left_round_trip_and_refuse_other_records() {
        let left = split_keys(i128::from(i64::MIN), i128::from(u64::MAX), 3).unwrap();
        let cursor = RangesLeft::new(&left, 42, None).to_json();
        assert_eq!(RangesLeft::parse(&cursor), Some((left.clone(), None)));
        let at = BinlogPosition {
            pos: BinlogFilePos::new("binlog.000002", 1234),
            gtid: None,
        };
        let cursor = RangesLeft::new(&[], 7, Some(at.clone())).to_json();
        assert_eq!(RangesLeft::parse(&cursor), Some((Vec::new(), Some(at))));
        assert_eq!(RangesLeft::parse(ferry_core::INTERRUPTED_COPY), None);
        assert_eq!(RangesLeft::parse(r#"{"pages":[]}"#), None);
        assert_eq!(
            RangesLeft::parse(r#"{"mysql_key_ranges":[["x",null]],"rows":1}"#),
            None
        );
    }

    #[test]
    fn records_at_different_paces_merge_into_every_range_left_and_the_latest_read() {
        let ranges = split_keys(1, 900, 3).unwrap();
        let at = |offset| BinlogPosition {
            pos: BinlogFilePos::new("binlog.000003", offset),
            gtid: None,
        };
        let ahead = RangesLeft::new(&ranges[2..], 600, Some(at(50))).to_json();
        let behind = RangesLeft::new(&ranges[1..], 300, Some(at(90))).to_json();
        let merged = RangesLeft::merge(&[&ahead, &behind]).unwrap();
        assert_eq!(
            RangesLeft::parse(&merged),
            Some((vec![ranges[2], ranges[1]], Some(at(90))))
        );
        assert_eq!(
            RangesLeft::merge(&[&ahead, ferry_core::INTERRUPTED_COPY]),
            None
        );
    }

    #[test]
    fn only_row_events_and_what_frames_a_transaction_are_harmless() {
        for (kind, info) in [
            ("Query", "BEGIN"),
            ("Query", "COMMIT"),
            ("Query", "use `shop`; COMMIT"),
            ("Query", "use `a``b`; SAVEPOINT a"),
            ("Query", "XA END 'x'"),
            ("Query", "use `shop`; ANALYZE TABLE big"),
            ("Gtid", "BEGIN GTID 0-1-5"),
            ("Write_rows_v1", "table_id: 30 flags: STMT_END_F"),
            ("Update_rows_compressed_v1", ""),
            ("Table_map", "table_id: 30 (shop.big)"),
            ("Xid", "COMMIT /* xid=12 */"),
        ] {
            assert_eq!(unsafe_event(kind, info), None, "{kind} {info}");
        }
        for (kind, info) in [
            ("Query", "use `shop`; ALTER TABLE t ADD c int"),
            (
                "Query_compressed",
                "use `shop`; ALTER TABLE big CHANGE n m bigint",
            ),
            ("Query", "TRUNCATE shop.t"),
            ("Query", "use `shop`; CREATE TABLE `begin` (id int)"),
            ("Query", "use `shop`; INSERT INTO t VALUES (1)"),
            // The database's name is no statement.
            ("Query", "use `x; COMMIT`; ALTER TABLE shop.small ADD c int"),
            ("Execute_load_query", "LOAD DATA INFILE 'x' INTO TABLE t"),
        ] {
            assert!(unsafe_event(kind, info).is_some(), "{kind} {info}");
        }
    }
}
