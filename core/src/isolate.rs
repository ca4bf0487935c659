//! Finding the row change a target refuses without giving up batching, and setting it aside by the pipeline's
//! `on_error` policy ([`RowErrors`]).
//!
//! Sinks apply many rows per statement, so a refused row fails its whole batch. The runner then goes back to its
//! checkpoint (the target transaction is gone) and applies the same stream again in *isolation*: each run of row
//! changes under a savepoint ([`Sink::savepoint`]); a run that fails is undone and tried in halves, down to the one
//! change the target refuses. That change is tried again `retry.attempts` times with back-off, then halts the
//! pipeline, is skipped, or becomes a dead letter, written in the same target transaction as the rest of its batch
//! and the checkpoint. Isolation ends once the sink's checkpoint includes the transaction that failed.
//!
//! A key with a dead letter keeps its order: its later changes follow it into the queue (code [`FOLLOWS`])
//! instead of being applied over it, until the letters are replayed or discarded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::{info, warn};

use crate::dead_letter::{
    row_keys, DeadLetter, OnError, RowErrors, StoredDeadLetter, FOLLOWS, TRANSFORM,
    TRANSFORM_FOLLOWS,
};
use crate::error::{Error, ErrorClass, Result};
use crate::event::{Change, Event, RowOp, TxContext};
use crate::pipeline::apply_within;
use crate::position::Position;
use crate::schema::{SchemaRef, TableId};
use crate::sink::{Savepoint, Sink};
use crate::stats::SinkStats;

/// [`Isolation`]'s state at a point of the open target transaction ([`Isolation::mark`]).
pub struct Mark {
    dead: HashMap<TableId, HashSet<String>>,
    dead_count: u64,
    pending: usize,
    tx_letters: u64,
}

/// A sink's state of row isolation, kept for one run of the sink.
pub struct Isolation {
    rules: Arc<RowErrors>,
    /// The keys with dead letters, per table.
    dead: HashMap<TableId, HashSet<String>>,
    /// Dead letters the sink holds (its open transaction's included).
    dead_count: u64,
    /// Rows set aside in the open target transaction: (table, outcome, code), counted once it commits.
    pending: Vec<(String, &'static str, String)>,
    /// The source transaction the last `Begin` opened.
    tx: Option<Arc<TxContext>>,
    /// Letters of the batch under way that the cap left unwritten: the batch is finished (and rolled back) only to
    /// count them, so that a batch the cap can never admit stops the pipeline instead of pausing it forever.
    over_cap: u64,
    /// Letters of the source transaction under way (written or counted), and the most any one source transaction
    /// of the batch needed: a transaction needing more than the cap can never be admitted.
    tx_letters: u64,
    most_in_one_tx: u64,
}

impl Isolation {
    /// `letters`: the dead letters the sink holds ([`Sink::dead_letters`]).
    pub fn new(rules: Arc<RowErrors>, letters: Vec<StoredDeadLetter>) -> Isolation {
        let dead_count = letters.len() as u64;
        let mut dead: HashMap<TableId, HashSet<String>> = HashMap::new();
        for stored in letters {
            let keys = dead.entry(stored.letter.table.clone()).or_default();
            keys.extend(stored.letter.keys().cloned());
        }
        Isolation {
            rules,
            dead,
            dead_count,
            pending: Vec::new(),
            tx: None,
            over_cap: 0,
            tx_letters: 0,
            most_in_one_tx: 0,
        }
    }

    /// Applies `events` as [`apply_within`] does, isolating refused rows when isolation is under way or a change
    /// meets a key with a dead letter. A row refused outside isolation starts it: the error returned sends the
    /// pipeline back to its checkpoints.
    pub async fn apply<S: Sink>(
        &mut self,
        sink: &mut S,
        stats: &SinkStats,
        events: &[Event],
        commit: Option<&Position>,
    ) -> Result<()> {
        let isolating = stats.isolate_through().is_some();
        let refused = events
            .iter()
            .any(|e| matches!(e, Event::Change(Change::Refused(_))));
        let result = if isolating || refused || self.meets_dead_key(events) {
            self.isolated(sink, stats, events, commit).await
        } else {
            self.note_begins(events);
            match apply_within(sink, events, commit).await {
                Err(e) if e.class == ErrorClass::Row => {
                    let Some(tx) = &self.tx else {
                        return Err(Error {
                            class: ErrorClass::Fatal,
                            ..e
                        });
                    };
                    stats.set_isolate_through(Some(tx.commit_at.clone()));
                    info!(sink = sink.name(), error = %e, "the target refused a row: going back to the checkpoint to find it");
                    return Err(Error::transient(
                        format!(
                            "sink {}: the target refused a row; going back to the checkpoint to find it and apply \
                             the pipeline's on_error policy",
                            sink.name()
                        ),
                        e,
                    ));
                }
                other => other,
            }
        };
        result?;
        self.admit(sink.name())?;
        if let Some(position) = commit {
            self.most_in_one_tx = 0;
            stats.set_aside_committed(std::mem::take(&mut self.pending));
            stats
                .dead_letters
                .store(self.dead_count, std::sync::atomic::Ordering::Relaxed);
            if let Some(through) = stats.isolate_through() {
                if position.includes(&through).unwrap_or(true) {
                    stats.set_isolate_through(None);
                    info!(sink = sink.name(), %position, "row isolation done: batches applied whole again");
                }
            }
        }
        Ok(())
    }

    /// When the batch under way needed letters the cap left unwritten: a pause until some are replayed or
    /// discarded, or, when one source transaction's letters alone pass the cap (replaying cannot make room for
    /// them), a fatal error.
    /// Called before the target transaction commits (or a MySQL target's DDL commits it), which must not happen
    /// while letters went unwritten.
    fn admit(&mut self, sink: &str) -> Result<()> {
        if self.over_cap == 0 {
            return Ok(());
        }
        let written = self
            .pending
            .iter()
            .filter(|(_, kind, _)| *kind == "dead_letter")
            .count() as u64;
        let own = written + std::mem::take(&mut self.over_cap);
        let held = self.dead_count.saturating_sub(written);
        let (max, most) = (self.rules.max_dead_letters, self.most_in_one_tx);
        if most > max {
            return Err(Error::fatal(format!(
                "sink {sink}: one source transaction alone sets aside {most} changes, more than max_dead_letters \
                 ({max}); raise [pipeline] max_dead_letters and start the pipeline again"
            )));
        }
        if held == 0 {
            // Nothing to replay or discard: a pause could never end.
            return Err(Error::fatal(format!(
                "sink {sink}: the batch under way sets aside {own} changes, more than max_dead_letters ({max}), and \
                 none are held to replay or discard; raise [pipeline] max_dead_letters and start the pipeline again"
            )));
        }
        Err(Error::paused(format!(
            "sink {sink}: the batch under way sets aside {own} changes and {held} are held, more than \
             max_dead_letters ({max}); the pipeline is paused until some are replayed or discarded: `ferry \
             dead-letters list --config <file>`, then `replay` or `discard` (they run while it is paused), or \
             raise [pipeline] max_dead_letters and start it again"
        )))
    }

    /// Dead letters the sink holds.
    pub fn dead_count(&self) -> u64 {
        self.dead_count
    }

    /// What the open target transaction may still change, to go back to ([`Isolation::restore`]) when the sink
    /// undoes it ([`Sink::rollback`]).
    pub fn mark(&self) -> Mark {
        Mark {
            dead: self.dead.clone(),
            dead_count: self.dead_count,
            pending: self.pending.len(),
            tx_letters: self.tx_letters,
        }
    }

    /// Forgets what was set aside since `mark`: its letters were rolled back with the target transaction.
    pub fn restore(&mut self, mark: Mark) {
        self.dead = mark.dead;
        self.dead_count = mark.dead_count;
        self.pending.truncate(mark.pending);
        self.tx_letters = mark.tx_letters;
    }

    fn note_begins(&mut self, events: &[Event]) {
        if let Some(tx) = events.iter().rev().find_map(|e| match e {
            Event::Begin(tx) => Some(tx),
            _ => None,
        }) {
            self.tx = Some(tx.clone());
        }
    }

    fn meets_dead_key(&self, events: &[Event]) -> bool {
        !self.dead.is_empty()
            && events.iter().any(|e| match e {
                Event::Change(Change::Row { table, op }) => self.follows(table, op),
                Event::Change(Change::Truncate { tables, .. }) => {
                    tables.iter().any(|t| self.dead.contains_key(t))
                }
                _ => false,
            })
    }

    /// Whether a change touches a key with a dead letter (either key of a key change).
    fn follows(&self, table: &SchemaRef, op: &RowOp) -> bool {
        // Rows of a table without a key have no order to keep.
        let Some(keys) = self
            .dead
            .get(&table.id)
            .filter(|_| !table.match_key().is_empty())
        else {
            return false;
        };
        let (key, moved) = row_keys(table, op);
        keys.contains(&key) || moved.is_some_and(|k| keys.contains(&k))
    }

    /// `events` with each run of row changes under savepoints, every other event alone, the durable point last
    /// with `commit`.
    async fn isolated<S: Sink>(
        &mut self,
        sink: &mut S,
        stats: &SinkStats,
        events: &[Event],
        commit: Option<&Position>,
    ) -> Result<()> {
        let mut run_start = None;
        for (i, event) in events.iter().enumerate() {
            if matches!(event, Event::Change(Change::Row { .. })) {
                run_start.get_or_insert(i);
                continue;
            }
            if let Some(start) = run_start.take() {
                self.rows(sink, stats, &events[start..i]).await?;
            }
            let durable = (i + 1 == events.len()).then_some(commit).flatten();
            if let Event::Change(Change::Refused(row)) = event {
                let code = if row.follows {
                    TRANSFORM_FOLLOWS
                } else {
                    TRANSFORM
                };
                let error = Error::fatal(row.error.clone());
                self.dead_letter(
                    sink,
                    &row.table,
                    &row.op,
                    &error,
                    (code, 1),
                    Some(&row.target),
                )
                .await?;
                if let Some(position) = durable {
                    self.admit(sink.name())?;
                    apply_within(sink, &[], Some(position))
                        .await
                        .map_err(refused_outside_rows)?;
                }
                continue;
            }
            if let Event::Begin(tx) = event {
                self.tx = Some(tx.clone());
                self.tx_letters = 0;
            }
            // A MySQL target commits before DDL on its own: nothing more may be applied once letters went
            // unwritten.
            if matches!(event, Event::Schema(_)) {
                self.admit(sink.name())?;
            }
            if let Event::Change(Change::Truncate { tables, .. }) = event {
                // Emptied tables: their letters would bring back rows the source removed.
                for table in tables {
                    if self.dead.remove(table).is_some() {
                        let n = sink.forget_dead_letters_of(table).await?;
                        self.dead_count = self.dead_count.saturating_sub(n);
                        info!(sink = sink.name(), %table, letters = n, "a TRUNCATE supersedes the table's dead letters: they are deleted with it");
                    }
                }
            }
            if durable.is_some() {
                self.admit(sink.name())?;
            }
            apply_within(sink, std::slice::from_ref(event), durable)
                .await
                .map_err(refused_outside_rows)?;
        }
        if let Some(start) = run_start {
            self.rows(sink, stats, &events[start..]).await?;
            if let Some(position) = commit {
                self.admit(sink.name())?;
                apply_within(sink, &[], Some(position))
                    .await
                    .map_err(refused_outside_rows)?;
            }
        }
        Ok(())
    }

    /// Applies a run of row changes, in halves under savepoints where the target refuses some.
    async fn rows<S: Sink>(
        &mut self,
        sink: &mut S,
        stats: &SinkStats,
        rows: &[Event],
    ) -> Result<()> {
        let mut done = vec![false; rows.len()];
        // Ranges still to apply, the next on top.
        let mut ranges = vec![(0, rows.len())];
        while let Some((lo, hi)) = ranges.pop() {
            for i in lo..hi {
                if let Event::Change(Change::Row { table, op }) = &rows[i] {
                    if !done[i] && self.follows(table, op) {
                        done[i] = true;
                        let error = Error::fatal(
                            "an earlier change of this key is a dead letter: this one follows it, in order",
                        );
                        self.dead_letter(sink, table, op, &error, (FOLLOWS, 0), None)
                            .await?;
                    }
                }
            }
            let live: Vec<Event> = (lo..hi)
                .filter(|&i| !done[i])
                .map(|i| rows[i].clone())
                .collect();
            if live.is_empty() {
                continue;
            }
            sink.savepoint(Savepoint::Set).await?;
            match apply_within(sink, &live, None).await {
                Ok(()) => {
                    sink.savepoint(Savepoint::Release).await?;
                    done[lo..hi].iter_mut().for_each(|d| *d = true);
                }
                Err(e) if e.class == ErrorClass::Row => {
                    sink.savepoint(Savepoint::Rollback).await?;
                    if live.len() == 1 {
                        let i = (lo..hi).find(|&i| !done[i]).unwrap_or(lo);
                        done[i] = true;
                        self.refused(sink, stats, &rows[i], e).await?;
                    } else {
                        let mid = lo + (hi - lo) / 2;
                        ranges.push((mid, hi));
                        ranges.push((lo, mid));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A change the target refused: tried again with back-off, then set aside by its table's policy.
    async fn refused<S: Sink>(
        &mut self,
        sink: &mut S,
        stats: &SinkStats,
        event: &Event,
        mut error: Error,
    ) -> Result<()> {
        let Event::Change(Change::Row { table, op }) = event else {
            return Err(error);
        };
        let retry = self.rules.retry;
        let mut attempts = 1;
        // Past the cap a dead letter is only counted, never written: trying the row again would only hold locks.
        let counted_only =
            self.over_cap > 0 && matches!(self.rules.for_table(&table.id), OnError::DeadLetter);
        while attempts < retry.attempts && !counted_only {
            tokio::time::sleep(retry.delay(attempts)).await;
            attempts += 1;
            stats
                .row_retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sink.savepoint(Savepoint::Set).await?;
            match apply_within(sink, std::slice::from_ref(event), None).await {
                Ok(()) => return sink.savepoint(Savepoint::Release).await,
                Err(e) if e.class == ErrorClass::Row => {
                    sink.savepoint(Savepoint::Rollback).await?;
                    error = e;
                }
                Err(e) => return Err(e),
            }
        }
        let code = error.code.clone().unwrap_or_default();
        let (key, _) = row_keys(table, op);
        let position = self
            .tx
            .as_ref()
            .map_or_else(|| "-".to_owned(), |t| t.commit_at.to_string());
        match self.rules.for_table(&table.id) {
            OnError::Halt => Err(Error {
                class: ErrorClass::Fatal,
                message: format!(
                    "sink {}: the target refused a change of {} key {key} (source transaction at {position}) {} \
                     time(s): {error}. The pipeline stops (on_error = \"halt\"): fix the target or the row, or \
                     set [pipeline] on_error = \"dead_letter\" or \"skip\" (or an [[pipeline.on_error_rules]] \
                     entry for the table)",
                    sink.name(),
                    table.id,
                    attempts
                ),
                code: error.code.clone(),
                source: None,
            }),
            OnError::Skip => {
                warn!(sink = sink.name(), table = %table.id, key, position, code, error = %error, "the target refused a change: it is left out (on_error = \"skip\")");
                self.pending.push((table.id.to_string(), "skip", code));
                Ok(())
            }
            OnError::DeadLetter => {
                self.dead_letter(sink, table, op, &error, (&code, attempts), None)
                    .await
            }
        }
    }

    async fn dead_letter<S: Sink>(
        &mut self,
        sink: &mut S,
        table: &SchemaRef,
        op: &RowOp,
        error: &Error,
        (code, attempts): (&str, u32),
        filed_under: Option<&TableId>,
    ) -> Result<()> {
        self.tx_letters += 1;
        self.most_in_one_tx = self.most_in_one_tx.max(self.tx_letters);
        if self.dead_count >= self.rules.max_dead_letters {
            self.over_cap += 1;
            return Ok(());
        }
        let mut letter = DeadLetter::new(table, op, self.tx.as_deref(), error, attempts);
        letter.code = code.to_owned();
        if let Some(target) = filed_under {
            letter.table = target.clone();
        }
        sink.dead_letter(&letter).await?;
        warn!(sink = sink.name(), table = %table.id, key = letter.key, position = letter.position, code, error = letter.error, "a change is set aside as a dead letter");
        if !table.match_key().is_empty() {
            // The keys the letter holds back, as it stores them.
            let keys = self.dead.entry(letter.table.clone()).or_default();
            keys.extend(letter.keys().cloned());
        }
        self.dead_count += 1;
        self.pending
            .push((table.id.to_string(), "dead_letter", code.to_owned()));
        Ok(())
    }
}

/// A refusal outside a run of row changes (a schema change, a truncate) cannot be set aside: it stops the
/// pipeline.
fn refused_outside_rows(e: Error) -> Error {
    if e.class == ErrorClass::Row {
        Error {
            class: ErrorClass::Fatal,
            message: format!(
                "{}: the target refused the transaction at its commit or outside its rows (a constraint it checks \
                 at commit: DEFERRABLE INITIALLY DEFERRED), so no single change can be set aside; make the target's \
                 constraint immediate (or drop it), then start the pipeline again",
                e.message
            ),
            ..e
        }
    } else {
        e
    }
}
