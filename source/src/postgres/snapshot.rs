//! The initial snapshot: copies the published tables as of the slot's creation, so that streaming from the slot's
//! consistent point continues exactly where the copy ends.
//!
//! The snapshot is a source "transaction" at the consistent point (`Begin`, a truncate of every target table,
//! `read` rows, `Commit`). When every sink can resume it (SQL sinks), it commits after each table it finishes
//! ([`crate::snapshot::Output`]): after a crash the tables copied stay, and each table whose copy was cut short is
//! re-copied online (the DBLog method of `recopy.rs`) while the stream goes on from the consistent point. Else it
//! commits as a unit, and a crash leaves no checkpoint: the next start takes the snapshot again from scratch.
//!
//! `snapshot_parallelism` workers copy tables side by side, and split a big table (PostgreSQL 14+, which scans a
//! range of pages by TID) into page ranges copied under the same exported snapshot: one table alone then keeps
//! every worker busy.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use ferry_core::{
    Change, Error, Event, PipelineStats, Position, RowOp, SchemaRef, SnapshotProgress, TableId,
    TableSchema, Value,
};
use futures_util::{pin_mut, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::info;

use super::catalog::Catalog;
use super::decode::decode_text;
use super::recopy::{Cursor, PagesLeft};
use super::slot::{qualified, quote_ident};
use super::{connect_client, SESSION_SQL};
use crate::snapshot::{Left, TableParts};

/// One table to copy.
pub struct SnapshotTable {
    pub id: TableId,
    pub oid: u32,
    pub estimated_rows: f64,
}

/// Copies `tables` under the exported snapshot `snapshot_name` and emits them as one transaction committing at
/// `position` (the slot's consistent point).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    url: &str,
    snapshot_name: &str,
    position: Position,
    tables: Vec<SnapshotTable>,
    catalog: &mut Catalog,
    events: &mpsc::Sender<Event>,
    parallelism: usize,
    resumable: bool,
    raw_copy: &crate::snapshot::RawCopy,
    stats: Arc<PipelineStats>,
) -> Result<(), Error> {
    let mut schemas = Vec::with_capacity(tables.len());
    for t in &tables {
        let columns = catalog.columns(t.oid).await?;
        schemas.push(
            catalog
                .table_schema(t.oid, t.id.clone(), &columns, None, 0, None)
                .await?,
        );
    }
    let generated_published = catalog.publishes_generated_columns().await?;
    crate::snapshot::begin(events, &position, &schemas).await?;
    let output = crate::snapshot::Output::new(events.clone(), position.clone(), resumable);

    let estimated: f64 = tables.iter().map(|t| t.estimated_rows).sum();
    stats.snapshot.start(tables.len() as u64, estimated as u64);
    info!(
        tables = tables.len(),
        estimated_rows = estimated as u64,
        parallelism,
        "snapshot started"
    );
    let started = Instant::now();
    let reporter = crate::snapshot::report_progress(stats.clone());

    let pieces = split_tables(catalog, &schemas, &tables, parallelism, resumable).await?;
    // Each worker holds one connection in the exported snapshot and copies piece after piece on it: a pipeline
    // over thousands of small tables does not pay a connection per table.
    let queue = Arc::new(std::sync::Mutex::new(
        pieces
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallelism.max(1) {
        let (url, snapshot, output, stats, queue, raw_copy) = (
            url.to_owned(),
            snapshot_name.to_owned(),
            output.clone(),
            stats.clone(),
            queue.clone(),
            raw_copy.clone(),
        );
        workers.spawn(async move {
            let mut client = None;
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| Error::fatal("snapshot queue poisoned"))?
                    .pop_front();
                let Some(Piece {
                    schema,
                    pages,
                    table,
                }) = next
                else {
                    break;
                };
                let client = match &mut client {
                    Some(c) => c,
                    None => client.insert(snapshot_session(&url, &snapshot).await?),
                };
                // Raw COPY lines need the columns the target writes: none the target computes itself.
                let raw = raw_copy.allows(&schema)
                    && schema.columns.iter().all(|c| c.generated.is_none());
                let mut sent = output.rows();
                let rows = copy_table(
                    client,
                    &schema,
                    Copy {
                        pages,
                        generated_published,
                        raw,
                    },
                    &mut sent,
                    &stats.snapshot,
                )
                .await?;
                sent.flush().await?;
                if let Some(pages) = pages {
                    info!(table = %schema.id, pages = %pages, rows, "table chunk copied");
                }
                if output
                    .part_copied(&schema.id, || table.finish(pages, rows))
                    .await?
                {
                    stats.snapshot.tables_done.fetch_add(1, Ordering::Relaxed);
                    info!(table = %schema.id, raw, "table copied");
                }
            }
            if let Some(client) = client {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| Error::transient("ending a snapshot transaction", e))?;
            }
            Ok::<_, Error>(())
        });
    }
    let result = crate::snapshot::join_workers(workers).await;
    reporter.abort();
    result?;
    crate::snapshot::commit(events, position, &stats, started).await
}

/// Tables of fewer pages than this (8 KiB each: 16 MiB) are copied whole; a bigger one is split into ranges of
/// at least this many pages, one per worker, or (in a resumable snapshot) into chunks of this many pages, each
/// recorded by the sinks as it lands.
const CHUNK_PAGES: u64 = 2048;

/// A range of a table's pages: `from` up to `to` (`None`: to the end, so rows in pages added since the size was
/// read are copied too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pages {
    pub from: u64,
    pub to: Option<u64>,
}

impl Pages {
    /// The `WHERE` clause selecting the rows stored in these pages (a TID range scan from PostgreSQL 14 on).
    pub(crate) fn condition(&self) -> String {
        match self.to {
            None => format!(" WHERE ctid >= '({},0)'::tid", self.from),
            Some(to) => format!(
                " WHERE ctid >= '({},0)'::tid AND ctid < '({to},0)'::tid",
                self.from
            ),
        }
    }
}

/// One piece of the copy: a table, or a range of its pages.
struct Piece {
    schema: SchemaRef,
    /// `None`: the whole table.
    pages: Option<Pages>,
    table: Arc<TableCopy>,
}

/// The pieces of one table not copied yet.
struct TableCopy {
    parts: Arc<TableParts<Pages>>,
    /// For a table copied in chunks an online re-copy can resume in place: its relation OID and the relfilenode
    /// whose pages the chunks are (a rewrite of the table makes the page ranges meaningless).
    resume: Option<(u32, u32)>,
}

impl TableCopy {
    fn new(parts: Vec<Option<Pages>>, resume: Option<(u32, u32)>) -> Arc<TableCopy> {
        Arc::new(TableCopy {
            parts: TableParts::new(parts),
            resume,
        })
    }

    /// `pages` (`rows` rows) were copied: what is left.
    fn finish(&self, pages: Option<Pages>, rows: u64) -> Left {
        let (rows, left) = self.parts.finish(&pages, rows);
        if left.is_empty() {
            return Left::Nothing;
        }
        let Some((oid, filenode)) = self.resume else {
            return Left::Parts;
        };
        let cursor = Cursor {
            rows,
            relation: Some(oid),
            in_place: true,
            pages: Some(PagesLeft {
                filenode,
                left: left.into_iter().flatten().collect(),
            }),
            ..Cursor::default()
        };
        Left::Chunks {
            cursor: cursor.to_json(),
            rows,
        }
    }
}

/// `pages` in chunks of [`CHUNK_PAGES`], the last one open; `None` when one chunk would do.
fn page_chunks(pages: u64) -> Option<Vec<Pages>> {
    let chunks = pages / CHUNK_PAGES;
    if chunks < 2 {
        return None;
    }
    Some(
        (0..chunks)
            .map(|i| Pages {
                from: i * CHUNK_PAGES,
                to: (i + 1 < chunks).then_some((i + 1) * CHUNK_PAGES),
            })
            .collect(),
    )
}

impl std::fmt::Display for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to {
            Some(to) => write!(f, "{}..{to}", self.from),
            None => write!(f, "{}..", self.from),
        }
    }
}

/// `pages` split into at most `parts` ranges of at least [`CHUNK_PAGES`] each; `None` when one range would do.
fn page_ranges(pages: u64, parts: usize) -> Option<Vec<Pages>> {
    let parts = (pages / CHUNK_PAGES).min(parts as u64);
    if parts < 2 {
        return None;
    }
    let step = pages / parts;
    Some(
        (0..parts)
            .map(|i| Pages {
                from: i * step,
                to: (i + 1 < parts).then_some((i + 1) * step),
            })
            .collect(),
    )
}

/// The work of the copy: each table whole, or its page ranges. In a `resumable` snapshot a big table with a key
/// is copied in chunks of [`CHUNK_PAGES`] (each recorded as it lands, so a crash resumes at the chunks left);
/// otherwise a big table is split into one range per worker.
async fn split_tables(
    catalog: &mut Catalog,
    schemas: &[SchemaRef],
    tables: &[SnapshotTable],
    parallelism: usize,
    resumable: bool,
) -> Result<Vec<Piece>, Error> {
    // Scanning a TID range reads only those pages from PostgreSQL 14 on; before, each range would scan it all.
    let sizes: std::collections::HashMap<u32, (u64, u32)> = if (parallelism > 1 || resumable)
        && catalog.server_version().await? >= 140_000
    {
        let oids: Vec<i64> = tables.iter().map(|t| i64::from(t.oid)).collect();
        catalog
            .client()
            .query(
                "SELECT c.oid::int8, pg_relation_size(c.oid) / current_setting('block_size')::int8, \
                 pg_relation_filenode(c.oid)::int8 FROM pg_class c WHERE c.oid::int8 = ANY($1) AND c.relkind = 'r'",
                &[&oids],
            )
            .await
            .map_err(|e| Error::transient("reading the tables' sizes", e))?
            .iter()
            .map(|r| {
                let (oid, pages, filenode): (i64, i64, Option<i64>) = (r.get(0), r.get(1), r.get(2));
                (oid as u32, (pages.max(0) as u64, filenode.unwrap_or(0) as u32))
            })
            .collect()
    } else {
        Default::default()
    };
    let mut pieces = Vec::new();
    for (schema, table) in schemas.iter().zip(tables) {
        let size = sizes.get(&table.oid);
        let chunks = size
            .filter(|_| resumable && !schema.primary_key.is_empty())
            .and_then(|&(pages, filenode)| Some((page_chunks(pages)?, filenode)));
        let (ranges, resume) = match chunks {
            Some((chunks, filenode)) => (Some(chunks), Some((table.oid, filenode))),
            None => (
                size.and_then(|&(pages, _)| page_ranges(pages, parallelism)),
                None,
            ),
        };
        match ranges {
            Some(ranges) => {
                info!(table = %schema.id, chunks = ranges.len(), resumable = resume.is_some(),
                      "copying the table in page ranges");
                let copy = TableCopy::new(ranges.iter().copied().map(Some).collect(), resume);
                for pages in ranges {
                    pieces.push(Piece {
                        schema: schema.clone(),
                        pages: Some(pages),
                        table: copy.clone(),
                    });
                }
            }
            None => pieces.push(Piece {
                schema: schema.clone(),
                pages: None,
                table: TableCopy::new(vec![None], None),
            }),
        }
    }
    Ok(pieces)
}

/// How one piece of a table is copied.
struct Copy {
    /// `None`: the whole table.
    pages: Option<Pages>,
    /// Whether the stream carries generated columns; if not, the copy gives NULL, so snapshot and stream agree.
    generated_published: bool,
    /// Sent as raw COPY lines ([`Change::CopyRows`]) rather than parsed rows.
    raw: bool,
}

/// Raw COPY lines go out in chunks of about this many bytes.
const RAW_CHUNK: usize = 1 << 20;

/// A connection in a read-only transaction under the exported snapshot `snapshot_name`.
async fn snapshot_session(url: &str, snapshot_name: &str) -> Result<tokio_postgres::Client, Error> {
    let client = connect_client(url).await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'; {SESSION_SQL}",
            snapshot_name.replace('\'', "''")
        ))
        .await
        .map_err(|e| Error::transient("opening a snapshot transaction", e))?;
    Ok(client)
}

/// Copies one table, or the rows in one range of its pages, on `client` (a [`snapshot_session`]).
async fn copy_table(
    client: &tokio_postgres::Client,
    schema: &SchemaRef,
    copy: Copy,
    sent: &mut crate::snapshot::Rows,
    progress: &SnapshotProgress,
) -> Result<u64, Error> {
    let Copy {
        pages,
        generated_published,
        raw,
    } = copy;
    let sql_err =
        |e: tokio_postgres::Error| Error::transient(format!("copying table {}", schema.id), e);
    let range = pages.map(|p| p.condition()).unwrap_or_default();
    let sql = format!(
        "COPY (SELECT {} FROM {}{range}) TO STDOUT",
        select_list(schema, generated_published),
        qualified(&schema.id)
    );
    let stream = client.copy_out(sql.as_str()).await.map_err(sql_err)?;
    pin_mut!(stream);
    let mut buf = BytesMut::new();
    let mut rows = 0u64;
    if raw {
        // Each CopyData message holds whole lines (one per row); a chunk ends at a line's end.
        let mut lines = 0u64;
        let mut send = |buf: &mut BytesMut, lines: &mut u64| {
            let event = Event::Change(Change::CopyRows {
                table: schema.clone(),
                rows: *lines,
                data: buf.split().freeze(),
            });
            progress.rows_copied.fetch_add(*lines, Ordering::Relaxed);
            rows += *lines;
            *lines = 0;
            event
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(sql_err)?;
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            buf.extend_from_slice(&chunk);
            if buf.len() >= RAW_CHUNK && buf.last() == Some(&b'\n') {
                sent.push(send(&mut buf, &mut lines)).await?;
            }
        }
        if !buf.is_empty() {
            if buf.last() != Some(&b'\n') {
                return Err(Error::fatal(format!(
                    "table {}: COPY output ended inside a line",
                    schema.id
                )));
            }
            sent.push(send(&mut buf, &mut lines)).await?;
        }
        return Ok(rows);
    }
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.map_err(sql_err)?);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(end);
            buf.advance(1);
            let after = parse_copy_line(schema, &line)?;
            sent.push(Event::Change(Change::Row {
                table: schema.clone(),
                op: RowOp::Read { after },
            }))
            .await?;
            rows += 1;
            progress.rows_copied.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(rows)
}

/// The columns a copy selects: every column of `schema`, in order; generated columns the stream cannot carry
/// (`generated_published` false) as NULL, so snapshot and stream agree.
pub(crate) fn select_list(schema: &TableSchema, generated_published: bool) -> String {
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| match &c.generated {
            Some(_) if !generated_published => "NULL".to_owned(),
            _ => quote_ident(&c.name),
        })
        .collect();
    columns.join(", ")
}

/// Parses one line of COPY's text format (tab-separated, `\N` for NULL, backslash escapes).
pub(crate) fn parse_copy_line(schema: &SchemaRef, line: &[u8]) -> Result<Vec<Value>, Error> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
    if fields.len() != schema.columns.len() {
        return Err(Error::fatal(format!(
            "table {}: COPY line has {} fields, expected {}",
            schema.id,
            fields.len(),
            schema.columns.len()
        )));
    }
    fields
        .iter()
        .zip(&schema.columns)
        .map(|(field, col)| {
            if *field == b"\\N" {
                return Ok(Value::Null);
            }
            let raw = unescape_copy(field);
            decode_text(&col.ty, &raw).map_err(|e| {
                Error::fatal_from(format!("table {}, column {}", schema.id, col.name), e)
            })
        })
        .collect()
}

pub(crate) fn unescape_copy(field: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !field.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(field);
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(next - b'0');
                let mut n = 1;
                while n < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    v = v * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    v = v * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_tables_split_into_page_ranges_that_cover_every_page() {
        assert_eq!(page_ranges(CHUNK_PAGES * 2 - 1, 4), None);
        assert_eq!(page_ranges(CHUNK_PAGES * 10, 1), None);
        let ranges = page_ranges(CHUNK_PAGES * 3 + 5, 2).unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].from, 0);
        assert_eq!(ranges[0].to, Some(ranges[1].from));
        // The last range is open: pages added after the size was read are copied too.
        assert_eq!(ranges[1].to, None);
        let ranges = page_ranges(CHUNK_PAGES * 100, 8).unwrap();
        assert_eq!(ranges.len(), 8);
        assert!(ranges.windows(2).all(|w| w[0].to == Some(w[1].from)));
    }

    #[test]
    fn unescapes_copy_text() {
        assert_eq!(&*unescape_copy(b"a\\tb\\\\c\\n"), b"a\tb\\c\n");
        assert_eq!(&*unescape_copy(b"\\101\\x42"), b"AB");
        assert_eq!(&*unescape_copy(b"trailing\\"), b"trailing\\");
    }
}
