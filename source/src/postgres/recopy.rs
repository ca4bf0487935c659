//! Re-copying one table while the stream flows: the DBLog watermark method (Andreas Andreakis and Ioannis
//! Papapanagiotou, "DBLog: A Watermark Based Change-Data-Capture Framework", 2020; Debezium's incremental
//! snapshots follow it), with PostgreSQL's logical messages as watermarks.
//!
//! ```text
//! task:     low ──► BEGIN REPEATABLE READ; xip; SELECT chunk by key; COMMIT ──► high ──► wait for the streamer
//! stream:  … T1 … low … T2 … T3 … high …
//!                      └ window: keys T2, T3 change ┘ at high: the chunk's rows without those keys, as reads,
//!                                                    in high's transaction, with the cursor; changed keys are
//!                                                    read again in the next window
//! ```
//!
//! A chunk row whose key no transaction of the window touched equals the source row at `high`, so it lands there;
//! a row the window touched is re-read later, since the change itself may not carry every column (unchanged
//! TOAST). The low and high watermarks are transactional messages, so they sit in the stream at their commits,
//! in the commit order of every other transaction. One hole remains in commit order: PostgreSQL makes a
//! transaction visible shortly after writing its commit record, so a transaction can commit before `low` and still
//! be invisible to the chunk's snapshot; such a transaction is in the snapshot's `xip` list, and the streamer,
//! which saw it commit before `low`, discards that chunk and reads it again.
//!
//! The cursor (the last key copied, the keys to read again) travels with each chunk to the sinks, which store it
//! with their checkpoint; after a restart the re-copy resumes at the next chunk ([`Cursor`]).

use std::collections::{HashMap, HashSet, VecDeque};

use ferry_core::{Error, Row, SchemaRef, TableId, TableSchema, Value};
use futures_util::{pin_mut, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tracing::{debug, info};

use super::catalog::Catalog;
use super::slot::{qualified, quote_ident, quote_literal};
use super::snapshot::{parse_copy_line, select_list, unescape_copy, Pages};
use super::{connect_client, SESSION_SQL};

/// The logical message prefix of the watermarks.
pub const WATERMARK_PREFIX: &str = "ferry_recopy";
/// The logical message prefix of a request to re-copy a table (`ferry snapshot --table`).
pub const SIGNAL_PREFIX: &str = "ferry_signal";

/// Rows per chunk.
pub const CHUNK_ROWS: usize = 2048;
/// Pages per chunk when an initial copy resumes at the page ranges it had not copied (8 KiB each: 1 MiB).
const CHUNK_PAGES: u64 = 128;
/// Windows in a row that may find every remaining key changed before the re-copy gives up.
const MAX_STARVED_WINDOWS: u32 = 1000;
/// Committed transactions remembered, to find those that committed before a low watermark but were invisible to
/// the chunk's snapshot.
const RECENT_COMMITS: usize = 65_536;

/// Where a re-copy stands; stored by the sinks (as JSON) with their checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The key (each column's text form, in key order) of the last row copied in key order; `None` before the
    /// first chunk.
    pub after: Option<Vec<String>>,
    /// Keys read in a chunk that changed within its window: read again in the next one.
    pub retry: Vec<Vec<String>>,
    /// Every key was read in order; only `retry` remains.
    pub ranged_out: bool,
    /// Rows copied so far.
    pub rows: u64,
    /// The relation OID of the table being copied: a table dropped and created again under the same name is
    /// another table, whose copy starts over.
    #[serde(default)]
    pub relation: Option<u32>,
    /// The copy fills the table itself rather than a shadow: an initial copy resumed where a crash cut it short
    /// (the target table holds the chunks copied and takes the table's changes), see
    /// [`ferry_core::RecopyStep::Chunk`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
    /// The page ranges an initial copy in chunks had not copied; `None` once the copy reads in key order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<PagesLeft>,
}

/// The page ranges of a table an initial copy cut short had not copied ([`Cursor::pages`]).
///
/// Every row it had not copied is in these pages, unless a transaction changed it since (then the stream
/// carries it: written whole, or, without every column, read again by key) or the table was rewritten (a new
/// relfilenode: the re-copy reads every key instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PagesLeft {
    /// `pg_relation_filenode` of the table when the pages were read.
    pub filenode: u32,
    pub left: Vec<Pages>,
}

impl Cursor {
    pub fn parse(table: &TableId, text: &str) -> Result<Cursor, Error> {
        if text.is_empty() {
            return Ok(Cursor::default());
        }
        serde_json::from_str(text).map_err(|e| {
            Error::fatal_from(
                format!("the stored re-copy cursor of {table} is not readable"),
                e,
            )
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// One cursor that resumes an initial copy in place for sinks that recorded different ones (`cursors`, as
    /// stored; each sink commits its chunks at its own pace): the union of the page ranges they had left and of
    /// their keys to read again, which copies again, in place, what some sink already holds. `None` unless every
    /// cursor reads by pages the same relation's storage.
    pub fn merge(cursors: &[&str]) -> Option<Cursor> {
        let parsed: Vec<Cursor> = cursors
            .iter()
            .map(|c| serde_json::from_str::<Cursor>(c).ok())
            .collect::<Option<_>>()?;
        let first = parsed.first()?.clone();
        let filenode = first.pages.as_ref()?.filenode;
        let mut left = Vec::new();
        let mut retry: Vec<Vec<String>> = Vec::new();
        for c in &parsed {
            let pages = c.pages.as_ref()?;
            if !c.in_place || c.relation != first.relation || pages.filenode != filenode {
                return None;
            }
            left.extend(pages.left.iter().copied());
            for key in &c.retry {
                if !retry.contains(key) {
                    retry.push(key.clone());
                }
            }
        }
        Some(Cursor {
            after: None,
            retry,
            ranged_out: false,
            rows: parsed.iter().map(|c| c.rows).min().unwrap_or(0),
            relation: first.relation,
            in_place: true,
            pages: Some(PagesLeft {
                filenode,
                left: union(left),
            }),
        })
    }
}

/// The page ranges covering every page of `ranges`, ascending and disjoint.
fn union(mut ranges: Vec<Pages>) -> Vec<Pages> {
    ranges.sort_by_key(|p| p.from);
    let mut out: Vec<Pages> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.to.is_none_or(|to| r.from <= to) => {
                last.to = match (last.to, r.to) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => out.push(r),
        }
    }
    out
}

/// A request to re-copy a table, as `ferry snapshot` writes it into the WAL.
#[derive(Debug, Serialize, Deserialize)]
pub struct Signal {
    /// The slot of the pipeline asked (several pipelines may read one database).
    pub slot: String,
    pub table: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Watermark {
    tag: String,
    high: bool,
    /// The table is gone (dropped, or another table took its name): the re-copy ends here.
    #[serde(default)]
    gone: bool,
}

/// The message content of a watermark.
fn watermark(tag: &str, high: bool, gone: bool) -> String {
    serde_json::to_string(&Watermark {
        tag: tag.to_owned(),
        high,
        gone,
    })
    .unwrap_or_default()
}

/// What a table task tells the streamer.
enum TaskMessage {
    /// A window with this tag is about to open.
    Window { oid: u32, tag: String },
    /// The rows read in window `tag`, sent before its high watermark is written.
    Chunk(Chunk),
}

struct Chunk {
    tag: String,
    schema: SchemaRef,
    /// Rows read in key order after the cursor (then those read again), with their keys' text forms.
    rows: Vec<(Row, Vec<String>)>,
    /// How many of `rows` were read in key order (the rest are keys read again).
    ranged: usize,
    /// Whether the ordered read returned a full chunk (more keys may follow), or pages are left.
    full: bool,
    /// Read by pages ([`Cursor::pages`]): the ranges left after this chunk's. `None`: read in key order.
    pages_left: Option<Vec<Pages>>,
    /// Transactions in progress for the chunk's snapshot (32-bit xids, as pgoutput's Begin carries them).
    xip: HashSet<u32>,
    /// The table was rewritten (ALTER … TYPE, VACUUM FULL, TRUNCATE) after the chunk's snapshot was taken: a
    /// rewrite is not MVCC-safe, so the snapshot may have read the new, still invisible, rows as none.
    rewritten: bool,
    reply: oneshot::Sender<Option<Cursor>>,
}

/// What the streamer emits for a window's high watermark.
pub(crate) enum Landed {
    /// Rows (reads of `schema`) and the new cursor; `schema_new`: announce `schema` first.
    Chunk {
        schema: SchemaRef,
        schema_new: bool,
        rows: Vec<Row>,
        cursor: Cursor,
        finished: bool,
    },
    /// The table is gone (dropped, or replaced by another under its name): the re-copy ends unfinished.
    Gone { table: TableId },
    /// A column of relation `oid` changed type since the copy started: the rows copied so far hold values of the
    /// old type (which a target that keeps stored values as they were cannot convert), so the copy starts over,
    /// with `schema` (the chunk's; `schema_new`: the stream has not announced it).
    Restart {
        oid: u32,
        schema: SchemaRef,
        schema_new: bool,
    },
    /// The window is not one of this process's.
    None,
}

struct Window {
    tag: String,
    /// Commits streamed before the low watermark.
    commits_at_low: Option<u64>,
    /// Keys (see [`key_string`]) changed in the window.
    changed: HashSet<String>,
    /// The table was truncated in the window: every row of the chunk may be gone.
    truncated: bool,
}

struct Active {
    table: TableId,
    window: Option<Window>,
    cursor: Cursor,
    starved: u32,
    mismatches: u32,
    /// Keys (text forms) whose change the shadow table may not have been able to apply (an update without every
    /// column, to a row not copied yet): read again in the next window.
    reread: Vec<Vec<String>>,
    /// Each column's name and type as the copy started with them.
    types: Vec<(String, String)>,
    /// `reread` holds keys no cursor the sinks stored names yet.
    reread_unsaved: bool,
    task: tokio::task::AbortHandle,
}

/// The streamer's side: which tables are re-copied, the windows open, the chunks waiting for their high watermark.
pub(crate) struct Recopies {
    url: String,
    generated_published: bool,
    active: HashMap<u32, Active>,
    tasks: JoinSet<Result<(), Error>>,
    tx: mpsc::UnboundedSender<TaskMessage>,
    rx: mpsc::UnboundedReceiver<TaskMessage>,
    chunks: HashMap<String, Chunk>,
    /// (commit number, xid) of the last committed transactions.
    recent: VecDeque<(u64, u32)>,
    commits: u64,
    run: String,
}

impl Recopies {
    pub fn new(url: &str, generated_published: bool) -> Recopies {
        let (tx, rx) = mpsc::unbounded_channel();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Recopies {
            url: url.to_owned(),
            generated_published,
            active: HashMap::new(),
            tasks: JoinSet::new(),
            tx,
            rx,
            chunks: HashMap::new(),
            recent: VecDeque::new(),
            commits: 0,
            run: format!("{}-{now:x}", std::process::id()),
        }
    }

    /// Whether any table is being re-copied.
    pub fn any_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Whether `oid` is being re-copied.
    pub fn is_active(&self, oid: u32) -> bool {
        self.active.contains_key(&oid)
    }

    /// Starts (or resumes at `cursor`) re-copying `table`, relation `oid`, whose schema is `schema`.
    pub fn start(&mut self, oid: u32, schema: &TableSchema, cursor: Cursor) -> Result<(), Error> {
        if schema.primary_key.is_empty() {
            return Err(Error::fatal(format!(
                "table {} has no primary key: Ferry re-copies a table in key order, so it cannot re-copy this one \
                 online; add a primary key, or copy every table anew (`ferry reset --config <file> --yes`)",
                schema.id
            )));
        }
        match &cursor.pages {
            Some(pages) => {
                info!(table = %schema.id, rows_so_far = cursor.rows, page_ranges_left = pages.left.len(),
                                 "resuming the table's initial copy at the pages it had not copied, while streaming")
            }
            None => {
                info!(table = %schema.id, rows_so_far = cursor.rows, in_place = cursor.in_place,
                          "re-copying the table while streaming")
            }
        }
        let cursor = Cursor {
            relation: Some(oid),
            ..cursor
        };
        let task = TableTask {
            url: self.url.clone(),
            oid,
            table: schema.id.clone(),
            key: schema
                .primary_key
                .iter()
                .map(|&k| schema.columns[k].name.clone())
                .collect(),
            generated_published: self.generated_published,
            tx: self.tx.clone(),
            run: self.run.clone(),
        };
        let task = self.tasks.spawn(task.run(cursor.clone()));
        self.active.insert(
            oid,
            Active {
                table: schema.id.clone(),
                window: None,
                cursor,
                starved: 0,
                mismatches: 0,
                reread: Vec::new(),
                types: column_types(schema),
                reread_unsaved: false,
                task,
            },
        );
        Ok(())
    }

    /// Stops re-copying relation `oid` (to start it over: the rows copied so far are not worth keeping).
    pub fn stop(&mut self, oid: u32) {
        if let Some(a) = self.active.remove(&oid) {
            a.task.abort();
        }
    }

    /// A task's failure, if one failed (looked at on the streamer's status tick).
    pub fn failure(&mut self) -> Option<Error> {
        match self.tasks.try_join_next()? {
            Ok(Ok(())) => None,
            // Stopped on purpose (the copy starts over).
            Err(e) if e.is_cancelled() => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(Error::fatal(format!("a re-copy task failed: {e}"))),
        }
    }

    /// A transaction `xid` committed in the stream.
    pub fn committed(&mut self, xid: Option<u32>) {
        if let Some(xid) = xid {
            if self.recent.len() == RECENT_COMMITS {
                self.recent.pop_front();
            }
            self.recent.push_back((self.commits, xid));
        }
        self.commits += 1;
    }

    /// A row of relation `oid` changed (its old and new images, as far as the source sent them).
    pub fn touched(&mut self, oid: u32, table: &TableSchema, rows: [Option<&Row>; 2]) {
        let Some(window) = self
            .active
            .get_mut(&oid)
            .and_then(|a| a.window.as_mut())
            .filter(|w| w.commits_at_low.is_some())
        else {
            return;
        };
        for row in rows.into_iter().flatten() {
            for key in [&table.primary_key[..], table.match_key()] {
                if let Some(k) = key_string(row, key) {
                    window.changed.insert(k);
                }
            }
        }
    }

    /// An update of relation `oid` did not carry every column (unchanged TOAST values): the shadow table cannot
    /// write the row if it does not hold it yet, so the row with key `key` (text forms) is read again.
    pub fn reread(&mut self, oid: u32, key: Vec<String>) {
        if let Some(a) = self.active.get_mut(&oid) {
            if !a.reread.contains(&key) {
                a.reread.push(key);
                a.reread_unsaved = true;
            }
        }
    }

    /// For each re-copy with keys to read again that no stored cursor names yet: its cursor with those keys
    /// among the ones to retry, for the sinks to store in the transaction that skipped the changes (sent before
    /// its commit). Kept only in memory, such a key would be lost with a crash after the sinks committed past
    /// the change they could not write: the row, not yet copied, may have moved into pages already copied.
    pub fn unsaved_rereads(&mut self) -> Vec<(TableId, Cursor)> {
        let mut out = Vec::new();
        for a in self.active.values_mut().filter(|a| a.reread_unsaved) {
            a.reread_unsaved = false;
            let mut cursor = a.cursor.clone();
            for key in &a.reread {
                if !cursor.retry.contains(key) {
                    cursor.retry.push(key.clone());
                }
            }
            out.push((a.table.clone(), cursor));
        }
        out
    }

    /// Relation `oid` was truncated.
    pub fn truncated(&mut self, oid: u32) {
        if let Some(w) = self.active.get_mut(&oid).and_then(|a| a.window.as_mut()) {
            w.truncated |= w.commits_at_low.is_some();
        }
    }

    fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            match m {
                TaskMessage::Window { oid, tag } => {
                    if let Some(a) = self.active.get_mut(&oid) {
                        a.window = Some(Window {
                            tag,
                            commits_at_low: None,
                            changed: HashSet::new(),
                            truncated: false,
                        });
                    }
                }
                TaskMessage::Chunk(c) => {
                    self.chunks.insert(c.tag.clone(), c);
                }
            }
        }
    }

    /// A watermark message; at a high watermark, what to emit.
    pub fn watermark(
        &mut self,
        content: &[u8],
        stream_schema: impl Fn(u32) -> Option<SchemaRef>,
    ) -> Result<Landed, Error> {
        let Ok(mark) = serde_json::from_slice::<Watermark>(content) else {
            return Ok(Landed::None);
        };
        self.drain();
        let Some((&oid, active)) = self
            .active
            .iter_mut()
            .find(|(_, a)| a.window.as_ref().is_some_and(|w| w.tag == mark.tag))
        else {
            return Ok(Landed::None);
        };
        if mark.gone {
            let table = active.table.clone();
            info!(%table, "the table being re-copied was dropped or replaced: its re-copy ends");
            self.active.remove(&oid);
            return Ok(Landed::Gone { table });
        }
        if !mark.high {
            if let Some(w) = active.window.as_mut() {
                w.commits_at_low = Some(self.commits);
            }
            return Ok(Landed::None);
        }
        let window = active.window.take().expect("found by its window");
        let Some(chunk) = self.chunks.remove(&mark.tag) else {
            return Ok(Landed::None);
        };
        let Some(at_low) = window.commits_at_low else {
            // Its low watermark was not seen (the stream started between them): read the chunk again.
            let _ = chunk.reply.send(Some(active.cursor.clone()));
            return Ok(Landed::None);
        };
        // Committed before the low watermark, yet invisible to the chunk's snapshot: read it again.
        let hidden = self
            .recent
            .iter()
            .any(|(n, xid)| *n < at_low && chunk.xip.contains(xid));
        let stream = stream_schema(oid);
        let same = |s: &TableSchema| {
            s.primary_key == chunk.schema.primary_key
                && s.columns.len() == chunk.schema.columns.len()
                && s.columns.iter().zip(&chunk.schema.columns).all(|(a, b)| {
                    a.name == b.name && a.ty == b.ty && a.source_type == b.source_type
                })
        };
        let (schema, schema_new) = match &stream {
            Some(s) if same(s) => (s.clone(), false),
            // The stream's schema differs (DDL between the chunk's read and here): read the chunk again, unless
            // that keeps happening (no change of the table reached the stream since its DDL): then the chunk's.
            Some(_) if active.mismatches < 3 => {
                active.mismatches += 1;
                debug!(table = %active.table, "a re-copy chunk was read with another schema than the stream's; reading it again");
                let _ = chunk.reply.send(Some(active.cursor.clone()));
                return Ok(Landed::None);
            }
            _ => (chunk.schema.clone(), true),
        };
        active.mismatches = 0;
        let types = column_types(&schema);
        let retyped = active
            .types
            .iter()
            .any(|(name, ty)| types.iter().any(|(n, t)| n == name && t != ty));
        if retyped {
            let _ = chunk.reply.send(None);
            self.stop(oid);
            return Ok(Landed::Restart {
                oid,
                schema,
                schema_new,
            });
        }
        if hidden || window.truncated || chunk.rewritten {
            debug!(table = %active.table, hidden, truncated = window.truncated, rewritten = chunk.rewritten, "reading a re-copy chunk again");
            let _ = chunk.reply.send(Some(active.cursor.clone()));
            return Ok(Landed::None);
        }
        let mut cursor = active.cursor.clone();
        let mut rows = Vec::with_capacity(chunk.rows.len());
        let mut retry = Vec::new();
        match chunk.pages_left {
            Some(left) => {
                if let Some(pages) = cursor.pages.as_mut() {
                    pages.left = left;
                }
            }
            // Read in key order from the first key (the table was rewritten since its pages were listed).
            None => cursor.pages = None,
        }
        let by_key = cursor.pages.is_none();
        for (i, (row, key_text)) in chunk.rows.into_iter().enumerate() {
            if by_key && i + 1 == chunk.ranged {
                cursor.after = Some(key_text.clone());
            }
            let changed = [&schema.primary_key[..], schema.match_key()]
                .iter()
                .filter_map(|k| key_string(&row, k))
                .any(|k| window.changed.contains(&k));
            if changed {
                retry.push(key_text);
            } else {
                rows.push(row);
            }
        }
        cursor.ranged_out |= !chunk.full;
        active.starved = if rows.is_empty() && !retry.is_empty() {
            active.starved + 1
        } else {
            0
        };
        if active.starved > MAX_STARVED_WINDOWS {
            return Err(Error::fatal(format!(
                "re-copying table {}: {} rows changed in each of {MAX_STARVED_WINDOWS} windows in a row, so they \
                 cannot be copied consistently; re-run `ferry snapshot` when the table is quieter",
                active.table,
                retry.len()
            )));
        }
        for key in active.reread.drain(..) {
            if !retry.contains(&key) {
                retry.push(key);
            }
        }
        active.reread_unsaved = false;
        cursor.retry = retry;
        cursor.rows += rows.len() as u64;
        let finished = cursor.ranged_out && cursor.retry.is_empty();
        active.cursor = cursor.clone();
        let _ = chunk.reply.send((!finished).then(|| cursor.clone()));
        if finished {
            info!(table = %active.table, rows = cursor.rows, "re-copy read every row");
            self.active.remove(&oid);
        } else {
            debug!(table = %active.table, rows = cursor.rows, "re-copy chunk");
        }
        Ok(Landed::Chunk {
            schema,
            schema_new,
            rows,
            cursor,
            finished,
        })
    }
}

/// Each column's name and type (as the source spells it).
fn column_types(schema: &TableSchema) -> Vec<(String, String)> {
    schema
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.source_type.clone()))
        .collect()
}

/// A row's values at `columns`, as a comparable string (the stream and the chunks decode values alike); `None`
/// when the row does not carry them all.
fn key_string(row: &Row, columns: &[usize]) -> Option<String> {
    let mut out = String::new();
    for &c in columns {
        let v = row.get(c)?;
        if *v == Value::Unchanged {
            return None;
        }
        out.push_str(&format!("{v:?}\u{1}"));
    }
    Some(out)
}

/// Reads one table's chunks, one window at a time.
struct TableTask {
    url: String,
    oid: u32,
    table: TableId,
    /// The key columns' names.
    key: Vec<String>,
    generated_published: bool,
    tx: mpsc::UnboundedSender<TaskMessage>,
    run: String,
}

impl TableTask {
    async fn run(self, mut cursor: Cursor) -> Result<(), Error> {
        let client = connect_client(&self.url).await?;
        // A watermark reaches the stream once its commit is flushed: with `synchronous_commit = off` that waits
        // for the WAL writer (`wal_writer_delay`, 200 ms by default), twice per chunk.
        client
            .batch_execute("SET synchronous_commit = local")
            .await
            .map_err(|e| Error::transient("setting up a re-copy session", e))?;
        let mut catalog = Catalog::new(client);
        let gone = || Error::fatal("the source stopped during a re-copy");
        for window in 0u64.. {
            let tag = format!("{}:{}:{window}", self.run, self.oid);
            self.tx
                .send(TaskMessage::Window {
                    oid: self.oid,
                    tag: tag.clone(),
                })
                .map_err(|_| gone())?;
            emit(catalog.client(), &watermark(&tag, false, false)).await?;
            let (reply, answer) = oneshot::channel();
            let Some(chunk) = self
                .read_chunk(&mut catalog, &cursor, tag.clone(), reply)
                .await?
            else {
                emit(catalog.client(), &watermark(&tag, true, true)).await?;
                return Ok(());
            };
            self.tx
                .send(TaskMessage::Chunk(chunk))
                .map_err(|_| gone())?;
            emit(catalog.client(), &watermark(&tag, true, false)).await?;
            match answer.await {
                Ok(Some(next)) => cursor = next,
                Ok(None) => return Ok(()),
                // The streamer dropped the chunk (it stopped, or never saw the high watermark): it is over.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// Reads the next chunk in one snapshot: the rows after the cursor in key order, then the keys to read again.
    async fn read_chunk(
        &self,
        catalog: &mut Catalog,
        cursor: &Cursor,
        tag: String,
        reply: oneshot::Sender<Option<Cursor>>,
    ) -> Result<Option<Chunk>, Error> {
        let sql_err = |e: tokio_postgres::Error| {
            Error::transient(format!("re-copying table {}", self.table), e)
        };
        catalog
            .client()
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {SESSION_SQL}"
            ))
            .await
            .map_err(sql_err)?;
        let xip: HashSet<u32> = catalog
            .client()
            .query(
                "SELECT (x::text::numeric % 4294967296)::int8 FROM pg_snapshot_xip(pg_current_snapshot()) x",
                &[],
            )
            .await
            .map_err(sql_err)?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect();
        let current: Option<i64> = catalog
            .client()
            .query_one(
                "SELECT to_regclass($1)::oid::int8",
                &[&qualified(&self.table)],
            )
            .await
            .map_err(sql_err)?
            .get(0);
        if current != Some(i64::from(self.oid)) {
            catalog
                .client()
                .batch_execute("COMMIT")
                .await
                .map_err(sql_err)?;
            return Ok(None);
        }
        let columns = catalog.columns(self.oid).await?;
        let schema = catalog
            .table_schema(self.oid, self.table.clone(), &columns, None, 0, None)
            .await?;
        let client = catalog.client();
        // Literals are cast to each key column's own type (an enum, a domain), as the catalog spells it.
        let mut key_types = Vec::with_capacity(self.key.len());
        for name in &self.key {
            let ty: Option<String> = client
                .query_opt(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::int8::oid \
                     AND attname = $2 AND NOT attisdropped",
                    &[&i64::from(self.oid), name],
                )
                .await
                .map_err(sql_err)?
                .map(|r| r.get(0));
            key_types.push(ty.ok_or_else(|| {
                Error::fatal(format!(
                    "re-copying table {}: its key column {name} is gone; re-run `ferry snapshot`",
                    self.table
                ))
            })?);
        }
        let key_cols: Vec<String> = self.key.iter().map(|n| quote_ident(n)).collect();
        let key_list = format!("({})", key_cols.join(", "));
        let literal = |values: &[String]| {
            let v: Vec<String> = values
                .iter()
                .zip(&key_types)
                .map(|(v, ty)| format!("{}::{ty}", quote_literal(v)))
                .collect();
            format!("({})", v.join(", "))
        };
        let from = format!(
            "SELECT {} FROM {}",
            select_list(&schema, self.generated_published),
            qualified(&self.table)
        );
        let key_index: Vec<usize> = self
            .key
            .iter()
            .map(|n| schema.column_index(n))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::fatal(format!(
                    "re-copying table {}: its key columns changed; re-run `ferry snapshot`",
                    self.table
                ))
            })?;
        let mut rows = Vec::new();
        let mut pages_left = None;
        let mut after = cursor.after.as_ref();
        if let Some(pages) = cursor.pages.as_ref().filter(|_| !cursor.ranged_out) {
            let (filenode, size): (Option<i64>, i64) = client
                .query_one(
                    "SELECT pg_relation_filenode($1::int8::oid)::int8, \
                     pg_relation_size($1::int8::oid) / current_setting('block_size')::int8",
                    &[&i64::from(self.oid)],
                )
                .await
                .map(|r| (r.get(0), r.get(1)))
                .map_err(sql_err)?;
            if filenode == Some(i64::from(pages.filenode)) {
                let (next, left) = next_pages(&pages.left, size.max(0) as u64);
                if let Some(next) = next {
                    let sql = format!("COPY ({from}{}) TO STDOUT", next.condition());
                    read_copy(client, &sql, &schema, &key_index, &mut rows).await?;
                }
                pages_left = Some(left);
            } else {
                info!(table = %self.table, "the table was rewritten since its initial copy was cut short: its \
                      page ranges no longer say where its rows are, so the copy reads every key");
                after = None;
            }
        }
        if pages_left.is_none() && !cursor.ranged_out {
            let after = after
                .map(|a| format!(" WHERE {key_list} > {}", literal(a)))
                .unwrap_or_default();
            let sql = format!(
                "COPY ({from}{after} ORDER BY {} LIMIT {CHUNK_ROWS}) TO STDOUT",
                key_cols.join(", ")
            );
            read_copy(client, &sql, &schema, &key_index, &mut rows).await?;
        }
        let ranged = rows.len();
        if !cursor.retry.is_empty() {
            let keys: Vec<String> = cursor.retry.iter().map(|k| literal(k)).collect();
            let sql = format!(
                "COPY ({from} WHERE {key_list} IN ({})) TO STDOUT",
                keys.join(", ")
            );
            read_copy(client, &sql, &schema, &key_index, &mut rows).await?;
        }
        // The relation's storage as the snapshot saw it against as it is now: they differ when a rewrite
        // committed after the snapshot was taken.
        let rewritten: bool = client
            .query_one(
                "SELECT coalesce(bool_or(pg_relation_filenode(t.relid) IS DISTINCT FROM c.relfilenode), false) \
                 FROM (SELECT $1::int8::oid AS relid UNION SELECT relid FROM pg_partition_tree($1::int8::oid)) t \
                 JOIN pg_class c ON c.oid = t.relid WHERE c.relkind IN ('r', 'm')",
                &[&i64::from(self.oid)],
            )
            .await
            .map_err(sql_err)?
            .get(0);
        client.batch_execute("COMMIT").await.map_err(sql_err)?;
        Ok(Some(Chunk {
            tag,
            schema,
            full: match &pages_left {
                Some(left) => !left.is_empty(),
                None => ranged == CHUNK_ROWS,
            },
            pages_left,
            ranged,
            rows,
            xip,
            rewritten,
            reply,
        }))
    }
}

/// The next [`CHUNK_PAGES`] pages to read of the ranges `left`, in a table of `size` pages now, and the ranges
/// left after them. Pages past the end hold no row the copy missed: rows added since are in the stream.
fn next_pages(left: &[Pages], size: u64) -> (Option<Pages>, Vec<Pages>) {
    let end = |p: &Pages| p.to.map_or(size, |to| to.min(size));
    let mut left: Vec<Pages> = left.iter().copied().filter(|p| p.from < end(p)).collect();
    let Some(first) = left.first_mut() else {
        return (None, left);
    };
    let to = (first.from + CHUNK_PAGES).min(end(first));
    let next = Pages {
        from: first.from,
        to: Some(to),
    };
    if to < end(first) {
        first.from = to;
    } else {
        left.remove(0);
    }
    (Some(next), left)
}

/// Writes a watermark: a transactional logical message, committed on its own.
async fn emit(client: &Client, content: &str) -> Result<(), Error> {
    client
        .execute(
            "SELECT pg_logical_emit_message(true, $1, $2)",
            &[&WATERMARK_PREFIX, &content],
        )
        .await
        .map_err(|e| Error::transient("writing a re-copy watermark", e))?;
    Ok(())
}

/// Runs `COPY (…) TO STDOUT` and appends each row with its key's text forms.
async fn read_copy(
    client: &Client,
    sql: &str,
    schema: &SchemaRef,
    key: &[usize],
    out: &mut Vec<(Row, Vec<String>)>,
) -> Result<(), Error> {
    let sql_err =
        |e: tokio_postgres::Error| Error::transient(format!("re-copying table {}", schema.id), e);
    let stream = client.copy_out(sql).await.map_err(sql_err)?;
    pin_mut!(stream);
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.map_err(sql_err)?);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(end + 1);
            let line = &line[..end];
            let fields: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
            let key_text = key
                .iter()
                .map(|&k| {
                    let raw = fields.get(k).copied().unwrap_or_default();
                    String::from_utf8(unescape_copy(raw).into_owned()).map_err(|e| {
                        Error::fatal_from(format!("table {}: a key is not UTF-8", schema.id), e)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push((parse_copy_line(schema, line)?, key_text));
        }
    }
    Ok(())
}

/// Writes a request to re-copy `table` into the source's WAL, for the pipeline reading `slot` (`ferry snapshot`).
pub async fn request(client: &Client, slot: &str, table: &TableId) -> Result<(), Error> {
    let signal = serde_json::to_string(&Signal {
        slot: slot.to_owned(),
        table: table.to_string(),
    })
    .unwrap_or_default();
    client
        .execute(
            "SELECT pg_logical_emit_message(true, $1, $2)",
            &[&SIGNAL_PREFIX, &signal],
        )
        .await
        .map_err(|e| Error::transient("writing the re-copy request", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let t = TableId::new("public", "t");
        assert_eq!(Cursor::parse(&t, "").unwrap(), Cursor::default());
        let c = Cursor {
            after: Some(vec!["a\tb".into(), "7".into()]),
            retry: vec![vec!["x".into(), "1".into()]],
            ranged_out: false,
            rows: 4096,
            relation: Some(16384),
            in_place: true,
            pages: Some(PagesLeft {
                filenode: 16390,
                left: vec![
                    Pages {
                        from: 0,
                        to: Some(2048),
                    },
                    Pages {
                        from: 4096,
                        to: None,
                    },
                ],
            }),
        };
        assert_eq!(Cursor::parse(&t, &c.to_json()).unwrap(), c);
        assert!(Cursor::parse(&t, "{not json").is_err());
    }

    #[test]
    fn resumed_page_ranges_are_read_in_chunks_up_to_the_tables_end() {
        let p = |from, to| Pages { from, to };
        let left = vec![p(0, Some(200)), p(4096, None)];
        let (next, left) = next_pages(&left, 5000);
        assert_eq!(next, Some(p(0, Some(CHUNK_PAGES))));
        assert_eq!(left, vec![p(CHUNK_PAGES, Some(200)), p(4096, None)]);
        let (next, left) = next_pages(&left, 5000);
        assert_eq!(next, Some(p(CHUNK_PAGES, Some(200))));
        assert_eq!(left, vec![p(4096, None)]);
        // The open range ends at the table's size when read.
        let (next, left) = next_pages(&left, 4100);
        assert_eq!(next, Some(p(4096, Some(4100))));
        assert!(left.is_empty());
        // Ranges past the end (the table was truncated by VACUUM) are done.
        assert_eq!(next_pages(&[p(10, Some(20))], 5), (None, vec![]));
        assert_eq!(next_pages(&[], 5), (None, vec![]));
    }

    #[test]
    fn sinks_that_recorded_different_chunks_resume_at_the_union_of_what_they_had_left() {
        let p = |from, to| Pages { from, to };
        let cursor = |left: Vec<Pages>, retry: Vec<&str>| {
            Cursor {
                rows: 100 * left.len() as u64,
                relation: Some(7),
                in_place: true,
                retry: retry.into_iter().map(|k| vec![k.to_owned()]).collect(),
                pages: Some(PagesLeft { filenode: 9, left }),
                ..Cursor::default()
            }
            .to_json()
        };
        let a = cursor(vec![p(2048, Some(4096)), p(6144, None)], vec!["1"]);
        let b = cursor(
            vec![p(0, Some(2048)), p(3000, Some(4096)), p(6144, None)],
            vec!["2"],
        );
        let merged = Cursor::merge(&[&a, &b]).unwrap();
        assert_eq!(
            merged.pages.unwrap().left,
            vec![p(0, Some(4096)), p(6144, None)]
        );
        assert_eq!(merged.retry.len(), 2);
        assert_eq!(merged.rows, 200);
        // Not the same storage, or one reads by key: no cursor fits both.
        let c = cursor(vec![], vec![]).replace("\"filenode\":9", "\"filenode\":10");
        assert!(Cursor::merge(&[&a, &c]).is_none());
        let keyed = Cursor {
            relation: Some(7),
            in_place: true,
            ..Cursor::default()
        }
        .to_json();
        assert!(Cursor::merge(&[&a, &keyed]).is_none());
        assert!(Cursor::merge(&[&a, "{not json"]).is_none());
    }

    #[test]
    fn keys_compare_by_value() {
        let row = vec![Value::Int(1), Value::Text("a".into()), Value::Unchanged];
        assert_eq!(key_string(&row, &[0, 1]), key_string(&row.clone(), &[0, 1]));
        assert_ne!(key_string(&row, &[0]), key_string(&row, &[1]));
        assert_eq!(key_string(&row, &[2]), None);
    }
}
