//! The contract every sink implements.

use std::future::Future;

use crate::dead_letter::{DeadLetter, StoredDeadLetter};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::position::Position;
use crate::schema::TableId;

/// A destination that applies events and stores its checkpoint atomically with them.
pub trait Sink: Send + 'static {
    /// A short name for logs, metrics and the checkpoint row (`sink` column).
    fn name(&self) -> &str;

    /// Reads the checkpoint stored by the last durable [`Sink::apply`] with a commit, `None` if this sink has
    /// never committed for this pipeline. Called once, before any `apply`.
    fn checkpoint(&mut self) -> impl Future<Output = Result<Option<Position>>> + Send;

    /// Applies `events` in order inside the sink's open target transaction, opening one if none is open.
    ///
    /// With `commit = Some(p)`, the sink stores `p` as its checkpoint in that same transaction and commits it
    /// before returning: on `Ok`, every event applied since the previous commit and the checkpoint are durable
    /// together; on `Err` or a crash, none of them are. With `commit = None` the transaction stays open for the
    /// next call (a source transaction larger than one batch). The runner never passes a transaction the
    /// checkpoint already includes, so the sink need not deduplicate.
    /// The online re-copies this sink has under way ([`crate::RecopyStep`]), each with the cursor of its last
    /// durable chunk; `None` when the sink keeps no such record (event-stream sinks), so it has no say in where a
    /// re-copy resumes. Called once, after [`Sink::checkpoint`].
    fn recopies(&mut self) -> impl Future<Output = Result<Option<Vec<(TableId, String)>>>> + Send {
        async { Ok(None) }
    }

    fn apply(
        &mut self,
        events: &[Event],
        commit: Option<&Position>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Undoes the open target transaction: everything [`Sink::apply`] did since the last commit, in the target and
    /// in the sink's own state, as if it had not happened. The runner calls it when a transaction applied live
    /// ends in [`Event::Abandon`], having committed whatever came before that transaction. Sinks that cannot
    /// answer with an error that says so (the source applies transactions live only into sinks that can:
    /// `ferry_config::SinkKind::rolls_back`).
    fn rollback(&mut self) -> impl Future<Output = Result<()>> + Send {
        let error = Error::fatal(format!(
            "sink {} cannot undo a transaction applied while in progress",
            self.name()
        ));
        async { Err(error) }
    }

    /// A Kafka source's partitions come to this process ([`crate::Event::Claim`]). In a target transaction of
    /// its own, with nothing else open, the sink stamps each partition's checkpoint with `token` (creating the
    /// row of a partition it never applied) and returns the offsets it holds for them, with `token` as their
    /// claim. From then on a commit of offsets under another token finds the token changed and fails whole:
    /// a process that lost the partitions cannot write them. Sinks that keep no such rows answer with an error
    /// that says so.
    fn claim(
        &mut self,
        partitions: &[crate::TopicPartition],
        token: u64,
    ) -> impl Future<Output = Result<crate::KafkaOffsets>> + Send {
        let _ = (partitions, token);
        let error = Error::fatal(format!(
            "sink {} cannot store a Kafka source's offsets; a Kafka source applies to PostgreSQL, MySQL / MariaDB \
             or SQLite targets",
            self.name()
        ));
        async { Err(error) }
    }

    /// The conflicts made durable by the commits since the last call (each is also a row of the target's
    /// `ferry_conflicts`). Sinks that resolve no conflicts have none.
    fn take_conflicts(&mut self) -> Vec<crate::stats::ConflictCount> {
        Vec::new()
    }

    /// Row isolation, for `on_error`: sets, goes back to, or releases a point in the open target transaction
    /// (SQL `SAVEPOINT`), opening a transaction if none is. Going back undoes what [`Sink::apply`] did since the
    /// point, in the target and in the sink's own state, leaving the transaction usable. The runner sets points
    /// only around runs of row changes. Sinks that cannot answer with an error that says so.
    fn savepoint(&mut self, step: Savepoint) -> impl Future<Output = Result<()>> + Send {
        let _ = step;
        let error = cannot_isolate(self.name());
        async { Err(error) }
    }

    /// Writes `letter` into the target's dead letters, in the open transaction (see [`Sink::savepoint`]).
    fn dead_letter(&mut self, letter: &DeadLetter) -> impl Future<Output = Result<()>> + Send {
        let _ = letter;
        let error = cannot_isolate(self.name());
        async { Err(error) }
    }

    /// The dead letters this sink holds, oldest first (none for sinks that hold none). The runner reads them once,
    /// after [`Sink::checkpoint`]: later changes of their keys follow them into the queue.
    fn dead_letters(&mut self) -> impl Future<Output = Result<Vec<StoredDeadLetter>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Deletes every dead letter of `table` in the open transaction, returning how many: a TRUNCATE of the table
    /// supersedes them (replayed after it, their rows would come back).
    fn forget_dead_letters_of(
        &mut self,
        table: &TableId,
    ) -> impl Future<Output = Result<u64>> + Send {
        let _ = table;
        async { Ok(0) }
    }

    /// Deletes dead letter `id` in the open transaction (replayed or discarded).
    fn forget_dead_letter(&mut self, id: i64) -> impl Future<Output = Result<()>> + Send {
        let _ = id;
        let error = cannot_isolate(self.name());
        async { Err(error) }
    }
}

/// A step of [`Sink::savepoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Savepoint {
    Set,
    Rollback,
    Release,
}

fn cannot_isolate(sink: &str) -> Error {
    Error::fatal(format!(
        "sink {sink} cannot set a failing row aside: on_error = \"skip\" or \"dead_letter\" needs a PostgreSQL, \
         MySQL / MariaDB or SQLite target; use on_error = \"halt\" for this sink's tables"
    ))
}

/// The transform stage between source and sinks, as the runner sees it: the chain of `[[transform]]` stages
/// (`ferry_transform::Chain`). Synchronous and pure.
pub trait Transform: Send {
    /// Appends to `out` what `event` becomes: row changes and schemas may be changed, dropped or multiplied;
    /// positions (`Begin`, `Commit`, `Heartbeat`) always pass, so a transaction whose rows are all dropped still
    /// advances every sink's checkpoint. An `Err` stops the pipeline (a row a stage failed on under
    /// `on_error = "halt"`).
    fn apply(&mut self, event: Event, out: &mut Vec<Event>) -> Result<()>;
}
