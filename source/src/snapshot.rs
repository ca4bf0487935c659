//! What every source's snapshot shares: progress reports, waiting for the table workers, and the commit that ends
//! the snapshot transaction.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{Change, Error, Event, PipelineStats, Position, SchemaRef, Timestamp};
use tokio::sync::mpsc;
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
    let closed = |_| Error::fatal("the pipeline stopped during the snapshot");
    events
        .send(Event::begin_at(position.clone()))
        .await
        .map_err(closed)?;
    for s in schemas {
        events
            .send(Event::Schema(s.clone()))
            .await
            .map_err(closed)?;
    }
    events
        .send(Event::Change(Change::Truncate {
            tables: schemas.iter().map(|s| s.id.clone()).collect(),
            snapshot: true,
        }))
        .await
        .map_err(closed)
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
