//! What every source's snapshot shares: progress reports, the output the table workers send their rows through,
//! waiting for them, and the commit that ends the snapshot.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{
    Change, Error, Event, PipelineStats, Position, RecopyStep, SchemaRef, TableId, Timestamp,
    TxContext,
};
use tokio::sync::{mpsc, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tracing::info;

/// Logs progress every 5 seconds until aborted.
pub(crate) fn report_progress(stats: Arc<PipelineStats>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(r) = stats.snapshot.report() else {
                continue;
            };
            info!(
                rows = r.rows_copied,
                rows_per_s = r.rows_per_s as u64,
                percent = format!("{:.1}", r.percent),
                eta_s = r.eta_s,
                tables_done = r.tables_done,
                tables = r.tables_total,
                "snapshot progress"
            );
        }
    })
}

/// An empty transaction at `position`, so the sinks hold a checkpoint when no snapshot is taken.
pub(crate) async fn send_marker(
    events: &mpsc::Sender<Event>,
    position: Position,
) -> Result<(), Error> {
    let closed = |_| Error::fatal("the pipeline stopped");
    events
        .send(Event::begin_at(position.clone()))
        .await
        .map_err(closed)?;
    events
        .send(Event::Commit {
            position,
            commit_time: ferry_core::Timestamp::UNIX_EPOCH,
        })
        .await
        .map_err(closed)
}

/// Opens the snapshot transaction at `position`: Begin, each table's schema, and the truncate that empties SQL
/// targets before the copy.
pub(crate) async fn begin(
    events: &mpsc::Sender<Event>,
    position: &Position,
    schemas: &[SchemaRef],
) -> Result<(), Error> {
    let every = schemas.iter().map(|s| s.id.clone()).collect();
    open(events, TxContext::at(position.clone()), schemas, every).await
}

/// Opens the part of a snapshot that finishes one cut short (a `Begin` that continues it, at its `position`):
/// each table's schema, and the truncate of `emptied`, the tables copied anew whole (the others keep the parts
/// already copied).
pub(crate) async fn begin_resumed(
    events: &mpsc::Sender<Event>,
    position: &Position,
    schemas: &[SchemaRef],
    emptied: Vec<TableId>,
) -> Result<(), Error> {
    let mut tx = TxContext::at(position.clone());
    tx.continues_snapshot = true;
    open(events, tx, schemas, emptied).await
}

/// `tx`'s Begin, each table's schema, and the truncate of `emptied` (if any).
async fn open(
    events: &mpsc::Sender<Event>,
    tx: TxContext,
    schemas: &[SchemaRef],
    emptied: Vec<TableId>,
) -> Result<(), Error> {
    let closed = |_| Error::fatal("the pipeline stopped during the snapshot");
    events
        .send(Event::Begin(Arc::new(tx)))
        .await
        .map_err(closed)?;
    for s in schemas {
        events
            .send(Event::Schema(s.clone()))
            .await
            .map_err(closed)?;
    }
    if !emptied.is_empty() {
        events
            .send(Event::Change(Change::Truncate {
                tables: emptied,
                snapshot: true,
            }))
            .await
            .map_err(closed)?;
    }
    Ok(())
}

/// Ends the sinks' records of `tables`, whose copy was cut short but which are no longer followed (dropped, or
/// left out of the pipeline): one transaction continuing the snapshot at `position` (the sinks' checkpoint),
/// with their `Copied`. A filter that leaves a table out drops its `Copied` too; its record then stays, which
/// costs nothing while the table is not followed, and resumes its copy if it is again.
pub(crate) async fn forget_copies(
    events: &mpsc::Sender<Event>,
    position: &Position,
    tables: Vec<TableId>,
) -> Result<(), Error> {
    let closed = |_| Error::fatal("the pipeline stopped");
    let mut tx = TxContext::at(position.clone());
    tx.continues_snapshot = true;
    for event in [
        Event::Begin(Arc::new(tx)),
        Event::Change(Change::Copied { tables }),
        Event::Commit {
            position: position.clone(),
            commit_time: Timestamp::now(),
        },
    ] {
        events.send(event).await.map_err(closed)?;
    }
    Ok(())
}

/// Whether the transform chain passes a table's rows on unchanged (`ferry_transform::Chain::leaves_rows_unchanged`).
pub type Unchanged = Arc<dyn Fn(&ferry_core::SchemaRef) -> bool + Send + Sync>;

/// Which tables a snapshot may send as raw COPY lines ([`Change::CopyRows`]) rather than parsed rows.
#[derive(Clone, Default)]
pub struct RawCopy {
    /// Every sink is PostgreSQL and writes without conflict rules or a node: it loads the lines as they are.
    pub sinks_allow: bool,
    /// `None`: the pipeline has no transform stage.
    pub unchanged: Option<Unchanged>,
    /// A row a target refuses in a raw copy cannot be set aside alone: only tables whose rows halt the pipeline.
    pub row_errors: ferry_core::RowErrors,
}

impl std::fmt::Debug for RawCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCopy")
            .field("sinks_allow", &self.sinks_allow)
            .field("transforms", &self.unchanged.is_some())
            .finish()
    }
}

impl RawCopy {
    /// What `config` allows, with `unchanged` telling the tables its transform chain (if any) leaves alone.
    pub fn of(config: &ferry_config::PipelineConfig, unchanged: Option<Unchanged>) -> RawCopy {
        let sinks_allow = config.node.is_none()
            && config.sinks.iter().all(|s| {
                matches!(s.kind, ferry_config::SinkKind::Postgres { .. })
                    && s.conflicts == ferry_config::ConflictPolicy::default()
            });
        RawCopy {
            sinks_allow,
            unchanged,
            row_errors: config.row_errors.clone(),
        }
    }

    /// Whether `table`'s snapshot rows may go as raw COPY lines.
    pub fn allows(&self, table: &ferry_core::SchemaRef) -> bool {
        self.sinks_allow
            && self.unchanged.as_ref().is_none_or(|f| f(table))
            && self.row_errors.for_table(&table.id) == ferry_core::OnError::Halt
    }
}

/// Where the table workers of one snapshot send their rows, and say when a table is copied.
///
/// A resumable snapshot commits after each table it finishes (a `Commit` at the snapshot's position, then a
/// `Begin` that [continues the snapshot](TxContext::continues_snapshot)): after a crash the sinks keep the tables
/// copied, and the source re-copies online only those it had not finished (see [`Change::Copied`]). Otherwise the
/// whole snapshot is one transaction, and a crash starts it over.
pub(crate) struct Output {
    events: mpsc::Sender<Event>,
    position: Position,
    resumable: bool,
    /// Held while one worker sends: a table's `Copied`, `Commit` and `Begin` go out with no other worker's rows
    /// between them.
    gate: Mutex<()>,
}

/// Rows a worker sends at once, under the gate, unless they reach [`BYTES_PER_SEND`] first.
const ROWS_PER_SEND: usize = 256;
const BYTES_PER_SEND: usize = 1 << 20;

impl Output {
    pub(crate) fn new(
        events: mpsc::Sender<Event>,
        position: Position,
        resumable: bool,
    ) -> Arc<Output> {
        Arc::new(Output {
            events,
            position,
            resumable,
            gate: Mutex::new(()),
        })
    }

    /// A worker's buffer of rows in front of this output.
    pub(crate) fn rows(self: &Arc<Output>) -> Rows {
        Rows {
            output: self.clone(),
            buffer: Vec::with_capacity(ROWS_PER_SEND),
            bytes: 0,
        }
    }

    async fn send_all(&self, events: impl IntoIterator<Item = Event>) -> Result<(), Error> {
        let _gate = self.gate.lock().await;
        self.send_locked(events).await
    }

    /// Sends `events` in order; the caller holds the gate.
    async fn send_locked(&self, events: impl IntoIterator<Item = Event>) -> Result<(), Error> {
        for e in events {
            self.events
                .send(e)
                .await
                .map_err(|_| Error::fatal("the pipeline stopped during the snapshot"))?;
        }
        Ok(())
    }

    /// The `Copied` of `table`, and in a resumable snapshot the commit after it.
    fn copied_events(&self, table: TableId) -> Vec<Event> {
        let copied = Event::Change(Change::Copied {
            tables: vec![table],
        });
        let mut events = vec![copied];
        events.extend(self.commit_part());
        events
    }

    /// In a resumable snapshot: the commit of what was sent so far, and the `Begin` that continues the snapshot.
    fn commit_part(&self) -> Vec<Event> {
        if !self.resumable {
            return Vec::new();
        }
        let mut next = TxContext::at(self.position.clone());
        next.continues_snapshot = true;
        vec![
            Event::Commit {
                position: self.position.clone(),
                commit_time: Timestamp::now(),
            },
            Event::Begin(Arc::new(next)),
        ]
    }

    /// A worker sent every row of one part of `table` (after [`Rows::flush`]); `left` says, under the gate (so
    /// that records go out in the order they were made), what of the table is left. Returns whether the table
    /// is copied.
    pub(crate) async fn part_copied(
        &self,
        table: &TableId,
        left: impl FnOnce() -> Left,
    ) -> Result<bool, Error> {
        let _gate = self.gate.lock().await;
        match left() {
            Left::Nothing => {
                self.send_locked(self.copied_events(table.clone())).await?;
                Ok(true)
            }
            Left::Chunks { cursor, rows } if self.resumable => {
                let mut events = vec![Event::Change(Change::Recopy {
                    table: table.clone(),
                    step: RecopyStep::Chunk {
                        cursor,
                        rows,
                        in_place: true,
                    },
                })];
                events.extend(self.commit_part());
                self.send_locked(events).await?;
                Ok(false)
            }
            Left::Chunks { .. } | Left::Parts => Ok(false),
        }
    }
}

/// The parts of one table (`None`: the table whole) its workers have not copied yet, and the rows they copied.
pub(crate) struct TableParts<P> {
    left: std::sync::Mutex<Vec<Option<P>>>,
    rows: std::sync::atomic::AtomicU64,
}

impl<P: PartialEq + Clone> TableParts<P> {
    pub(crate) fn new(parts: Vec<Option<P>>) -> Arc<TableParts<P>> {
        Arc::new(TableParts {
            left: std::sync::Mutex::new(parts),
            rows: Default::default(),
        })
    }

    /// `part` (`rows` rows) was copied: the rows copied so far, and the parts left.
    pub(crate) fn finish(&self, part: &Option<P>, rows: u64) -> (u64, Vec<Option<P>>) {
        let rows = self.rows.fetch_add(rows, Ordering::AcqRel) + rows;
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = left.iter().position(|p| p == part) {
            left.remove(i);
        }
        (rows, left.clone())
    }
}

/// What is left of a table's copy once a worker finished one part of it ([`Output::part_copied`]).
pub(crate) enum Left {
    /// Nothing: the table is copied.
    Nothing,
    /// Other parts, which an online re-copy in place resumes at `cursor` (the source's record of the parts left)
    /// after a crash; `rows`: rows copied so far.
    Chunks { cursor: String, rows: u64 },
    /// Other parts, which only a copy anew replaces.
    Parts,
}

/// One worker's rows on their way to an [`Output`].
pub(crate) struct Rows {
    output: Arc<Output>,
    buffer: Vec<Event>,
    bytes: usize,
}

impl Rows {
    pub(crate) async fn push(&mut self, event: Event) -> Result<(), Error> {
        self.bytes += event.size_hint();
        self.buffer.push(event);
        if self.buffer.len() >= ROWS_PER_SEND || self.bytes >= BYTES_PER_SEND {
            self.flush().await?;
        }
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        let batch = std::mem::replace(&mut self.buffer, Vec::with_capacity(ROWS_PER_SEND));
        self.output.send_all(batch).await
    }
}

/// Waits for every table worker; the first failure stops the others.
pub(crate) async fn join_workers(mut workers: JoinSet<Result<(), Error>>) -> Result<(), Error> {
    while let Some(joined) = workers.join_next().await {
        let outcome = joined
            .map_err(|e| Error::fatal(format!("snapshot worker failed: {e}")))
            .and_then(|r| r);
        if let Err(e) = outcome {
            workers.abort_all();
            return Err(e);
        }
    }
    Ok(())
}

/// Ends the snapshot transaction at `position` and logs the totals.
pub(crate) async fn commit(
    events: &mpsc::Sender<Event>,
    position: Position,
    stats: &PipelineStats,
    started: Instant,
) -> Result<(), Error> {
    stats.snapshot.finish();
    events
        .send(Event::Commit {
            position,
            commit_time: Timestamp::now(),
        })
        .await
        .map_err(|_| Error::fatal("the pipeline stopped during the snapshot"))?;
    let rows = stats.snapshot.rows_copied.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    info!(
        rows,
        seconds = format!("{secs:.1}"),
        rows_per_s = (rows as f64 / secs.max(1e-9)) as u64,
        "snapshot copied"
    );
    Ok(())
}
