//! The generic pipeline runner: transforms and batcher, sink tasks and the ack tracker.
//!
//! ```text
//! source task ──mpsc<Event>──► run_batcher (transforms, batch cutting) ──mpsc<Arc<Batch>> (1 in flight)──► run_sink ×N
//!      ▲                                                                                                   │
//!      └──────────────── watch<Option<Position>>: minimum over sinks of the durable checkpoint ◄── AckTracker ┘
//! ```
//!
//! Progress tracking: a sink reports a position to the [`AckTracker`] only after [`Sink::apply`] committed it
//! together with the rows, and the tracker publishes the minimum over all sinks. The source acknowledges exactly
//! that position upstream, so the source keeps every change some sink has not yet made durable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::batch::{Batch, BatchLimits};
use crate::dead_letter::RowErrors;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::isolate::Isolation;
use crate::position::Position;
use crate::sink::{Sink, Transform};
use crate::stats::PipelineStats;

/// Applies transforms, cuts batches and hands each batch to every sink. Returns when `input` closes, after
/// handing on the last batch; dropping the outputs then tells the sinks to finish.
pub async fn run_batcher(
    input: mpsc::Receiver<Event>,
    transform: Option<Box<dyn Transform>>,
    limits: BatchLimits,
    outputs: Vec<mpsc::Sender<Arc<Batch>>>,
    stats: Arc<PipelineStats>,
) -> Result<()> {
    match cut_batches(input, transform, limits, outputs, stats).await {
        // Only the symptom of a failed sink: stop quietly so that the sink's own error, which may be transient
        // (a target restart), decides what the runtime does.
        Err(e) if e.source.as_deref().is_some_and(|s| s.is::<SinkGone>()) => {
            debug!("a sink stopped; the batcher stops too");
            Ok(())
        }
        other => other,
    }
}

async fn cut_batches(
    mut input: mpsc::Receiver<Event>,
    mut transform: Option<Box<dyn Transform>>,
    limits: BatchLimits,
    outputs: Vec<mpsc::Sender<Arc<Batch>>>,
    stats: Arc<PipelineStats>,
) -> Result<()> {
    let mut batch = Batch::default();
    let mut transformed = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut ready_in_a_row = 0u32;
    loop {
        // Take what is already queued without a `select!` (and its timer) per event; look at the clock every
        // 256 events so a steady stream still respects `max_wait`.
        let ready = match input.try_recv() {
            Ok(event) => {
                ready_in_a_row += 1;
                if ready_in_a_row.is_multiple_of(256)
                    && deadline.is_some_and(|at| Instant::now() >= at)
                {
                    send(&outputs, std::mem::take(&mut batch)).await?;
                    deadline = None;
                }
                Some(Some(event))
            }
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::error::TryRecvError::Empty) => None,
        };
        let next = match (ready, deadline) {
            (Some(next), _) => next,
            // Nothing more queued and the batch ends a transaction: waiting would only add latency. While the
            // sinks apply it, what arrives makes the next batch.
            (None, Some(_)) if batch.ends_transaction() => {
                send(&outputs, std::mem::take(&mut batch)).await?;
                deadline = None;
                continue;
            }
            (None, Some(at)) => tokio::select! {
                biased;
                event = input.recv() => event,
                _ = tokio::time::sleep_until(at) => {
                    send(&outputs, std::mem::take(&mut batch)).await?;
                    deadline = None;
                    continue;
                }
            },
            (None, None) => input.recv().await,
        };
        let Some(event) = next else { break };
        stats.source_event(&event);
        match transform.as_mut() {
            None => transformed.push(event),
            Some(t) => t.apply(event, &mut transformed)?,
        }
        if transformed.is_empty() {
            continue;
        }
        if batch.is_empty() {
            deadline = Some(Instant::now() + limits.max_wait);
        }
        for event in transformed.drain(..) {
            let apart = Batch::starts_apart(&event);
            if apart && !batch.is_empty() {
                send(&outputs, std::mem::take(&mut batch)).await?;
                deadline = Some(Instant::now() + limits.max_wait);
            }
            // An abandon and a claim each make a batch of their own.
            let alone = matches!(event, Event::Abandon | Event::Claim(_));
            batch.push(event);
            if alone {
                send(&outputs, std::mem::take(&mut batch)).await?;
                deadline = None;
            }
        }
        if batch.is_empty() {
            continue;
        }
        if batch.is_full(&limits) {
            send(&outputs, std::mem::take(&mut batch)).await?;
            deadline = None;
        }
    }
    if !batch.is_empty() {
        send(&outputs, batch).await?;
    }
    Ok(())
}

/// A sink's input closed: that sink failed, and its own task reports why.
#[derive(Debug, thiserror::Error)]
#[error("its input closed")]
struct SinkGone;

async fn send(outputs: &[mpsc::Sender<Arc<Batch>>], batch: Batch) -> Result<()> {
    let batch = Arc::new(batch);
    for out in outputs {
        out.send(batch.clone()).await.map_err(|_| {
            Error::fatal_from("a sink stopped while the pipeline was running", SinkGone)
        })?;
    }
    Ok(())
}

/// Publishes the minimum durable position over all sinks of a pipeline.
#[derive(Clone)]
pub struct AckTracker {
    inner: Arc<AckInner>,
}

struct AckInner {
    positions: Mutex<Vec<Option<Position>>>,
    acked: watch::Sender<Option<Position>>,
}

impl AckTracker {
    /// A tracker for `sinks` sinks, each starting at its stored checkpoint; also returns the receiver the source
    /// reads the acknowledged position from. The receiver sees the channel close when every tracker handle is
    /// dropped, which tells the source all sinks have finished.
    pub fn new(
        checkpoints: Vec<Option<Position>>,
    ) -> (AckTracker, watch::Receiver<Option<Position>>) {
        let min = minimum(&checkpoints);
        let (acked, rx) = watch::channel(min);
        (
            AckTracker {
                inner: Arc::new(AckInner {
                    positions: Mutex::new(checkpoints),
                    acked,
                }),
            },
            rx,
        )
    }

    /// Records that sink `index` has made everything up to `position` durable.
    pub fn report(&self, index: usize, position: Position) {
        let mut positions = self
            .inner
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        positions[index] = Some(position);
        let min = minimum(&positions);
        self.inner.acked.send_if_modified(|current| {
            let changed = *current != min;
            *current = min;
            changed
        });
    }
}

/// The smallest position, or `None` while any sink has none. Positions of different kinds never meet in one
/// pipeline (one source), so an incomparable pair is treated as "not yet".
fn minimum(positions: &[Option<Position>]) -> Option<Position> {
    let mut min: Option<Position> = None;
    for p in positions {
        let p = p.as_ref()?;
        min = Some(match min {
            None => p.clone(),
            Some(m) => p.lower(&m).ok()?,
        });
    }
    min
}

/// How a sink's runner works: batch limits, and what it does with rows the target refuses.
#[derive(Debug, Clone, Default)]
pub struct SinkSettings {
    pub limits: BatchLimits,
    pub row_errors: Arc<RowErrors>,
    /// The dead letters the sink held at start ([`Sink::dead_letters`]): later changes of their keys follow them.
    pub dead_letters: Vec<crate::dead_letter::StoredDeadLetter>,
}

/// Feeds batches to one sink. Skips transactions the sink's checkpoint already includes, splits each batch at its
/// last durable point so the sink commits as much as it can, and reports each commit to the tracker. While the
/// next batch is already waiting, the sink keeps its transaction open and commits with that batch instead (group
/// commit, bounded by `limits.max_transaction_events` and [`MAX_GROUP_TIME`]): per-commit costs (an fsync, a Kafka
/// transaction marker) are paid once per group while the sink catches up.
pub async fn run_sink<S: Sink>(
    mut sink: S,
    index: usize,
    checkpoint: Option<Position>,
    mut batches: mpsc::Receiver<Arc<Batch>>,
    tracker: AckTracker,
    stats: Arc<PipelineStats>,
    settings: SinkSettings,
) -> Result<()> {
    let SinkSettings {
        limits,
        row_errors,
        dead_letters,
    } = settings;
    let sink_stats = &stats.sinks[index];
    sink_stats.set_checkpoint(checkpoint.clone());
    let mut isolation = Isolation::new(row_errors, dead_letters);
    sink_stats
        .dead_letters
        .store(isolation.dead_count(), std::sync::atomic::Ordering::Relaxed);
    let mut skip = SkipCovered {
        checkpoint,
        skipping: false,
        schema_kept: false,
    };
    let mut waiting: Option<Arc<Batch>> = None;
    // Events applied since the last commit, and when that commit was.
    let (mut open_events, mut last_commit) = (0, Instant::now());
    // The isolation state when the transaction applied live began, to go back to if it is abandoned.
    let mut live: Option<(crate::isolate::Mark, u64)> = None;
    loop {
        let batch = match waiting.take() {
            Some(batch) => batch,
            None => match batches.recv().await {
                Some(batch) => batch,
                None => break,
            },
        };
        match batch.events.first() {
            Some(Event::Abandon) => {
                sink.rollback().await?;
                let rows_before = live.take().map(|(mark, rows)| {
                    isolation.restore(mark);
                    rows
                });
                open_events = 0;
                sink_stats.abandoned(
                    rows_before.unwrap_or_else(|| {
                        sink_stats.rows.load(std::sync::atomic::Ordering::Relaxed)
                    }),
                );
                debug!(sink = sink.name(), "undid a transaction applied live");
                continue;
            }
            Some(Event::Claim(claim)) => {
                commit_open(
                    &mut sink,
                    &mut isolation,
                    sink_stats,
                    &skip,
                    &mut open_events,
                )
                .await?;
                last_commit = Instant::now();
                let claimed = sink.claim(&claim.partitions, claim.token).await;
                let answer = claimed
                    .as_ref()
                    .map(Clone::clone)
                    .map_err(ToString::to_string);
                // The source waits for every sink's answer; one that has stopped waiting has failed itself.
                let _ = claim.answers.send((index, answer));
                let claimed = claimed?;
                let held = match &skip.checkpoint {
                    Some(Position::Kafka(cp)) => cp.with_claimed(&claim.partitions, &claimed),
                    _ => claimed,
                };
                let held = Position::Kafka(held);
                info!(sink = sink.name(), partitions = claim.partitions.len(), held = %held, "claimed Kafka partitions");
                skip.checkpoint = Some(held.clone());
                tracker.report(index, held);
                continue;
            }
            Some(begin) if begin.opens_live() => {
                // Only the live transaction may be open when it is abandoned: commit what precedes it (events
                // between transactions, such as a schema change) at the checkpoint already stored.
                if open_events > 0 {
                    last_commit = Instant::now();
                }
                commit_open(
                    &mut sink,
                    &mut isolation,
                    sink_stats,
                    &skip,
                    &mut open_events,
                )
                .await?;
                live = Some((
                    isolation.mark(),
                    sink_stats.rows.load(std::sync::atomic::Ordering::Relaxed),
                ));
            }
            _ => {}
        }
        let owned;
        let events: &[Event] = if skip.needs_filter(&batch.events)? {
            owned = skip.filter(&batch.events)?;
            &owned
        } else {
            &batch.events
        };
        let split = last_durable_point(events);
        if split.is_some()
            && open_events + events.len() < limits.max_transaction_events
            && last_commit.elapsed() < MAX_GROUP_TIME
        {
            if let Ok(next) = batches.try_recv() {
                // A schema change may need DDL, which a MySQL target cannot hold inside a transaction: commit
                // before it as usual.
                // A transaction applied live starts a target transaction of its own (see `Abandon`).
                let joins = !next.events.iter().any(|e| matches!(e, Event::Schema(_)))
                    && !next.events.first().is_some_and(Batch::starts_apart);
                waiting = Some(next);
                if joins {
                    isolation.apply(&mut sink, sink_stats, events, None).await?;
                    sink_stats.applied(events, None);
                    open_events += events.len();
                    continue;
                }
            }
        }
        match split {
            Some((i, position)) => {
                // A part of a snapshot resumed at a checkpoint below this sink's (sinks at different positions
                // when it was cut short) leaves the checkpoint where it is: a checkpoint never moves back, or
                // the sink would apply again what it holds.
                // (Kafka offsets: per partition.)
                let position = &match &skip.checkpoint {
                    Some(cp) => position.not_below(cp),
                    None => position.clone(),
                };
                let started = Instant::now();
                isolation
                    .apply(&mut sink, sink_stats, &events[..=i], Some(position))
                    .await?;
                sink_stats
                    .apply_seconds
                    .observe(started.elapsed().as_secs_f64());
                sink_stats.applied(&events[..=i], Some(position));
                sink_stats.conflicts_committed(sink.take_conflicts());
                live = None;
                debug!(sink = sink.name(), position = %position, events = open_events + i + 1, "committed batch");
                skip.checkpoint = Some(position.clone());
                tracker.report(index, position.clone());
                (open_events, last_commit) = (0, Instant::now());
                if i + 1 < events.len() {
                    isolation
                        .apply(&mut sink, sink_stats, &events[i + 1..], None)
                        .await?;
                    sink_stats.applied(&events[i + 1..], None);
                    open_events = events.len() - (i + 1);
                }
            }
            None if !events.is_empty() => {
                isolation.apply(&mut sink, sink_stats, events, None).await?;
                sink_stats.applied(events, None);
                open_events += events.len();
            }
            None => {}
        }
    }
    info!(sink = sink.name(), "sink finished");
    Ok(())
}

/// Commits the events applied since the last commit at the checkpoint already stored (events between
/// transactions, such as a schema change), before a step that needs the target transaction to itself.
async fn commit_open<S: Sink>(
    sink: &mut S,
    isolation: &mut Isolation,
    sink_stats: &crate::stats::SinkStats,
    skip: &SkipCovered,
    open_events: &mut usize,
) -> Result<()> {
    if *open_events == 0 {
        return Ok(());
    }
    let Some(position) = skip.checkpoint.clone() else {
        return Err(Error::fatal(
            "events were left uncommitted before the sink had a checkpoint",
        ));
    };
    isolation
        .apply(sink, sink_stats, &[], Some(&position))
        .await?;
    *open_events = 0;
    Ok(())
}

/// The longest one [`Sink::apply`] may take before the target is taken for dead (a half-open connection that
/// never answers): the pipeline then restarts from the checkpoints.
pub const SINK_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) async fn apply_within<S: Sink>(
    sink: &mut S,
    events: &[Event],
    commit: Option<&Position>,
) -> Result<()> {
    match tokio::time::timeout(SINK_TIMEOUT, sink.apply(events, commit)).await {
        Ok(applied) => applied,
        Err(_) => Err(Error::transient(
            format!(
                "sink {} did not answer within {} s; its connection is taken for dead",
                sink.name(),
                SINK_TIMEOUT.as_secs()
            ),
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        )),
    }
}

/// The longest a sink that is behind keeps joining batches before it commits.
pub const MAX_GROUP_TIME: Duration = Duration::from_secs(1);

fn last_durable_point(events: &[Event]) -> Option<(usize, &Position)> {
    events.iter().enumerate().rev().find_map(|(i, e)| match e {
        Event::Commit { position, .. } | Event::Heartbeat { position } => Some((i, position)),
        _ => None,
    })
}

/// Drops the transactions and heartbeats a sink's checkpoint already includes (replay from the minimum over sinks
/// after a restart).
struct SkipCovered {
    checkpoint: Option<Position>,
    /// Inside a covered transaction carried over from the previous batch.
    skipping: bool,
    /// A schema event of the covered transaction under way was kept.
    schema_kept: bool,
}

impl SkipCovered {
    fn covered(&self, event: &Event) -> Result<bool> {
        let Some(cp) = &self.checkpoint else {
            return Ok(false);
        };
        let covered = match event {
            // A transaction applied live begins past every checkpoint (the source makes sure).
            Event::Begin(tx) if tx.continues_snapshot || tx.in_progress => Ok(false),
            Event::Begin(tx) => cp.includes(&tx.commit_at),
            Event::Heartbeat { position } => position.try_cmp(cp).map(|o| o.is_le()),
            _ => return Ok(false),
        };
        covered.map_err(|e| {
            Error::fatal_from("the stored checkpoint does not belong to this source", e)
        })
    }

    fn needs_filter(&self, events: &[Event]) -> Result<bool> {
        if self.skipping {
            return Ok(true);
        }
        for e in events {
            if self.covered(e)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn filter(&mut self, events: &[Event]) -> Result<Vec<Event>> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            if self.skipping {
                // Schema events inside a skipped transaction still describe the stream from here on.
                if matches!(e, Event::Schema(_)) {
                    out.push(e.clone());
                    self.schema_kept = true;
                }
                if let Event::Commit { commit_time, .. } = e {
                    self.skipping = false;
                    // What the schemas changed in the target (DDL) is committed at the checkpoint the sink holds,
                    // not left open (holding the target table's locks) until a transaction of its own comes.
                    if std::mem::take(&mut self.schema_kept) {
                        if let Some(cp) = &self.checkpoint {
                            out.push(Event::Commit {
                                position: cp.clone(),
                                commit_time: *commit_time,
                            });
                        }
                    }
                }
                continue;
            }
            if self.covered(e)? {
                self.skipping = matches!(e, Event::Begin(_));
                continue;
            }
            out.push(e.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TxContext;
    use crate::position::Lsn;
    use crate::temporal::Timestamp;
    use std::sync::atomic::Ordering;

    fn pg(n: u64) -> Position {
        Position::pg(Lsn(n))
    }

    fn txn(commit_start: u64, end: u64) -> Vec<Event> {
        vec![
            Event::begin_at(pg(commit_start)),
            Event::Change(crate::event::Change::Truncate {
                tables: vec![],
                snapshot: false,
            }),
            Event::Commit {
                position: pg(end),
                commit_time: Timestamp::UNIX_EPOCH,
            },
        ]
    }

    #[test]
    fn skips_transactions_the_checkpoint_includes() {
        let mut skip = SkipCovered {
            checkpoint: Some(pg(20)),
            skipping: false,
            schema_kept: false,
        };
        let mut events = txn(10, 20);
        events.extend(txn(20, 30));
        assert!(skip.needs_filter(&events).unwrap());
        let kept = skip.filter(&events).unwrap();
        assert_eq!(kept, txn(20, 30));
    }

    #[test]
    fn skips_a_covered_transaction_split_across_batches() {
        let mut skip = SkipCovered {
            checkpoint: Some(pg(20)),
            skipping: false,
            schema_kept: false,
        };
        let t = txn(10, 20);
        assert!(skip.filter(&t[..2]).unwrap().is_empty());
        assert!(skip.needs_filter(&t[2..]).unwrap());
        assert!(skip.filter(&t[2..]).unwrap().is_empty());
        assert!(!skip.needs_filter(&txn(25, 30)).unwrap());
    }

    /// A schema kept from a covered transaction (its DDL opens a target transaction) is committed at the
    /// checkpoint the sink holds, so the target's locks are not held until the next transaction comes.
    #[test]
    fn a_schema_kept_from_a_covered_transaction_is_committed_at_the_checkpoint() {
        let mut skip = SkipCovered {
            checkpoint: Some(pg(20)),
            skipping: false,
            schema_kept: false,
        };
        let schema = Event::Schema(std::sync::Arc::new(crate::TableSchema::named(
            crate::TableId::new("public", "t"),
            crate::Dialect::Postgres,
        )));
        let mut t = txn(10, 15);
        t.insert(1, schema.clone());
        let kept = skip.filter(&t).unwrap();
        assert_eq!(
            kept,
            vec![
                schema,
                Event::Commit {
                    position: pg(20),
                    commit_time: Timestamp::UNIX_EPOCH
                }
            ]
        );
        // A covered transaction without one is left out whole.
        assert!(skip.filter(&txn(11, 16)).unwrap().is_empty());
    }

    #[test]
    fn tracker_publishes_the_minimum_over_sinks() {
        let (tracker, rx) = AckTracker::new(vec![None, Some(pg(5))]);
        assert_eq!(*rx.borrow(), None);
        tracker.report(0, pg(9));
        assert_eq!(*rx.borrow(), Some(pg(5)));
        tracker.report(1, pg(12));
        assert_eq!(*rx.borrow(), Some(pg(9)));
    }

    #[tokio::test]
    async fn batcher_stops_quietly_when_a_sink_is_gone() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel(1);
        drop(out_rx);
        let limits = BatchLimits {
            max_events: 1,
            ..BatchLimits::default()
        };
        let stats = Arc::new(PipelineStats::new("p", &[]));
        let task = tokio::spawn(run_batcher(rx, None, limits, vec![out_tx], stats));
        tx.send(Event::Heartbeat { position: pg(3) }).await.unwrap();
        // The failed sink's own error is the cause the runtime acts on; the batcher adds none.
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn batcher_cuts_on_size_on_time_and_at_a_transaction_end() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let limits = BatchLimits {
            max_events: 3,
            max_bytes: usize::MAX,
            max_wait: std::time::Duration::from_secs(1),
            ..BatchLimits::default()
        };
        let stats = Arc::new(PipelineStats::new("p", &[]));
        let task = tokio::spawn(run_batcher(rx, None, limits, vec![out_tx], stats.clone()));
        for e in txn(1, 2) {
            tx.send(e).await.unwrap();
        }
        assert_eq!(out_rx.recv().await.unwrap().events.len(), 3);
        // A transaction's first events wait up to max_wait for the rest of it.
        let mut open = txn(3, 4);
        let commit = open.pop().unwrap();
        for e in open {
            tx.send(e).await.unwrap();
        }
        let started = Instant::now();
        assert_eq!(out_rx.recv().await.unwrap().events.len(), 2);
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
        // A batch that ends a transaction goes as soon as nothing more is queued.
        tx.send(commit).await.unwrap();
        tx.send(Event::Heartbeat { position: pg(5) }).await.unwrap();
        let started = Instant::now();
        assert_eq!(out_rx.recv().await.unwrap().events.len(), 2);
        assert!(started.elapsed() < std::time::Duration::from_millis(10));
        drop(tx);
        task.await.unwrap().unwrap();
        assert!(out_rx.recv().await.is_none());
        assert_eq!(stats.source_events.load(Ordering::Relaxed), 7);
        assert_eq!(stats.source_transactions.load(Ordering::Relaxed), 2);
    }

    /// Per `apply` call: the number of events and the commit position.
    type Calls = Vec<(usize, Option<Position>)>;

    /// Records what `run_sink` asks of a sink.
    struct Recorder(Arc<Mutex<Calls>>);

    impl Sink for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }

        async fn checkpoint(&mut self) -> Result<Option<Position>> {
            Ok(None)
        }

        async fn apply(&mut self, events: &[Event], commit: Option<&Position>) -> Result<()> {
            self.0.lock().unwrap().push((events.len(), commit.cloned()));
            Ok(())
        }

        /// Recorded as `usize::MAX` events.
        async fn rollback(&mut self) -> Result<()> {
            self.0.lock().unwrap().push((usize::MAX, None));
            Ok(())
        }

        /// Recorded as `usize::MAX - 1` events; holds offset 10 of every partition.
        async fn claim(
            &mut self,
            partitions: &[crate::TopicPartition],
            token: u64,
        ) -> Result<crate::KafkaOffsets> {
            self.0.lock().unwrap().push((usize::MAX - 1, None));
            let mark = crate::PartitionMark {
                next: Some(10),
                claim: token,
            };
            Ok(crate::KafkaOffsets::from_map(
                partitions.iter().map(|tp| (tp.clone(), mark)).collect(),
            ))
        }
    }

    /// A claim is made between commits, answered to the source, and sets where the sink skips: a record its
    /// target holds is skipped, the next is applied, and the offset stored never moves back.
    #[tokio::test]
    async fn a_claim_is_answered_and_the_sink_skips_what_it_holds() {
        use crate::{KafkaOffsets, PartitionMark, TopicPartition};
        let tp = TopicPartition::new("t", 0);
        let record = |offset: i64, next: Option<i64>| {
            let mut commit = KafkaOffsets::default();
            commit.set(tp.clone(), PartitionMark { next, claim: 7 });
            vec![
                Event::begin_at(Position::Kafka(KafkaOffsets::record(tp.clone(), offset))),
                Event::Change(crate::event::Change::Truncate {
                    tables: vec![],
                    snapshot: false,
                }),
                Event::Commit {
                    position: Position::Kafka(commit),
                    commit_time: Timestamp::UNIX_EPOCH,
                },
            ]
        };
        let (answers, mut answered) = mpsc::unbounded_channel();
        let claim = Event::Claim(Arc::new(crate::Claim {
            partitions: vec![tp.clone()],
            token: 7,
            answers,
        }));
        // The source started the partition at 5 (another sink held less); this one holds 10.
        let (calls, acked) = sink_calls(
            vec![vec![claim], record(9, Some(10)), record(10, Some(11))],
            BatchLimits::default(),
        )
        .await;
        let (sink, held) = answered.recv().await.unwrap();
        assert_eq!(sink, 0);
        assert_eq!(held.unwrap().get(&tp).unwrap().next, Some(10));
        let stored = |next| {
            let mut o = KafkaOffsets::default();
            o.set(
                tp.clone(),
                PartitionMark {
                    next: Some(next),
                    claim: 7,
                },
            );
            Some(Position::Kafka(o))
        };
        // The claim, record 9 skipped (the target holds it), record 10 applied and stored.
        assert_eq!(calls, vec![(usize::MAX - 1, None), (3, stored(11))]);
        assert_eq!(acked, stored(11));
    }

    /// A transaction applied live: its `Begin`, and a row.
    fn live(first_change: u64) -> Vec<Event> {
        let mut tx = TxContext::at(pg(first_change));
        tx.in_progress = true;
        let mut events = txn(0, 0);
        events[0] = Event::Begin(Arc::new(tx));
        events.pop();
        events
    }

    #[tokio::test]
    async fn a_live_transaction_starts_its_own_target_transaction_and_an_abandon_undoes_only_it() {
        // Queued together, so the sink is behind and would join them all into one target transaction.
        let mut schema_after = txn(1, 2);
        schema_after.push(Event::Heartbeat { position: pg(2) });
        let batches = vec![
            schema_after,
            live(3),
            vec![Event::Abandon],
            txn(4, 5),
            live(6),
            vec![Event::Commit {
                position: pg(7),
                commit_time: Timestamp::UNIX_EPOCH,
            }],
        ];
        let (calls, acked) = sink_calls(batches, BatchLimits::default()).await;
        assert_eq!(
            calls,
            vec![
                (4, Some(pg(2))),
                (2, None),
                (usize::MAX, None),
                // Not joined with the live transaction after it.
                (3, Some(pg(5))),
                (2, None),
                (1, Some(pg(7))),
            ]
        );
        assert_eq!(acked, Some(pg(7)));
    }

    #[tokio::test]
    async fn a_snapshot_part_committed_below_the_checkpoint_leaves_it_where_it_is() {
        let (tx, rx) = mpsc::channel(16);
        let mut part = TxContext::at(pg(5));
        part.continues_snapshot = true;
        let mut events = txn(0, 5);
        events[0] = Event::Begin(Arc::new(part));
        tx.send(Arc::new(Batch { events, bytes: 0 })).await.unwrap();
        drop(tx);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (tracker, acked) = AckTracker::new(vec![Some(pg(10))]);
        let stats = Arc::new(PipelineStats::new("p", &["recorder"]));
        run_sink(
            Recorder(calls.clone()),
            0,
            Some(pg(10)),
            rx,
            tracker,
            stats,
            SinkSettings::default(),
        )
        .await
        .unwrap();
        assert_eq!(*calls.lock().unwrap(), vec![(3, Some(pg(10)))]);
        assert_eq!(*acked.borrow(), Some(pg(10)));
    }

    #[tokio::test]
    async fn the_batcher_sets_live_transactions_and_abandons_apart() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let stats = Arc::new(PipelineStats::new("p", &[]));
        let task = tokio::spawn(run_batcher(
            rx,
            None,
            BatchLimits::default(),
            vec![out_tx],
            stats,
        ));
        let mut events = txn(1, 2);
        events.extend(live(3));
        events.push(Event::Abandon);
        events.extend(txn(4, 5));
        for e in events {
            tx.send(e).await.unwrap();
        }
        drop(tx);
        let mut sizes = Vec::new();
        while let Some(batch) = out_rx.recv().await {
            sizes.push(batch.events.len());
        }
        task.await.unwrap().unwrap();
        assert_eq!(sizes, vec![3, 2, 1, 3]);
    }

    /// Runs `run_sink` over `batches`, all queued before it starts; returns its calls and the acknowledged position.
    async fn sink_calls(
        batches: Vec<Vec<Event>>,
        limits: BatchLimits,
    ) -> (Calls, Option<Position>) {
        let (tx, rx) = mpsc::channel(16);
        for events in batches {
            tx.send(Arc::new(Batch { events, bytes: 0 })).await.unwrap();
        }
        drop(tx);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (tracker, acked) = AckTracker::new(vec![None]);
        let stats = Arc::new(PipelineStats::new("p", &["recorder"]));
        run_sink(
            Recorder(calls.clone()),
            0,
            None,
            rx,
            tracker,
            stats,
            SinkSettings {
                limits,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let calls = calls.lock().unwrap().clone();
        let acked = acked.borrow().clone();
        (calls, acked)
    }

    #[tokio::test]
    async fn a_sink_behind_commits_waiting_batches_together() {
        let batches = vec![txn(1, 2), txn(3, 4), txn(5, 6)];
        let (calls, acked) = sink_calls(batches, BatchLimits::default()).await;
        assert_eq!(calls, vec![(3, None), (3, None), (3, Some(pg(6)))]);
        assert_eq!(acked, Some(pg(6)));
    }

    #[tokio::test]
    async fn group_commit_stops_at_its_limit_and_before_schema_changes() {
        let limits = BatchLimits {
            max_transaction_events: 5,
            ..BatchLimits::default()
        };
        let batches = vec![txn(1, 2), txn(3, 4), txn(5, 6)];
        let (calls, _) = sink_calls(batches, limits).await;
        assert_eq!(calls, vec![(3, None), (3, Some(pg(4))), (3, Some(pg(6)))]);

        let table = Arc::new(crate::schema::TableSchema {
            version: 1,
            ..crate::schema::TableSchema::named(
                crate::schema::TableId::new("public", "t"),
                Default::default(),
            )
        });
        let mut with_schema = vec![Event::Schema(table)];
        with_schema.extend(txn(3, 4));
        let (calls, _) = sink_calls(vec![txn(1, 2), with_schema], BatchLimits::default()).await;
        assert_eq!(calls, vec![(3, Some(pg(2))), (4, Some(pg(4)))]);
    }
}
