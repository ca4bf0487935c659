//! What sources emit: transactions of row changes, schema changes and heartbeats.

use crate::position::Position;
use crate::schema::{SchemaRef, TableId};
use crate::temporal::Timestamp;
use crate::value::Value;

/// A row's values, in the order of its schema's columns.
pub type Row = Vec<Value>;

/// What happened to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    Insert {
        after: Row,
    },
    /// `before` is the old key (REPLICA IDENTITY DEFAULT, key changed) or the whole old row (FULL); `None` when
    /// the source sent no old values (the key did not change).
    Update {
        before: Option<Row>,
        after: Row,
    },
    /// `before` holds at least the key columns; the others may be `Null` when the source does not send them.
    Delete {
        before: Row,
    },
    /// A row copied by the initial snapshot.
    Read {
        after: Row,
    },
}

/// One change inside a source transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Row {
        table: SchemaRef,
        op: RowOp,
    },
    /// `snapshot`: the initial snapshot's emptying of its tables before copying them (SQL targets apply it;
    /// event-stream targets such as Kafka do not report it as a change).
    Truncate {
        tables: Vec<TableId>,
        snapshot: bool,
    },
    /// From here on, `table`'s changes are not applied: the source changed it in a way Ferry cannot reproduce on
    /// its targets (`on_schema_change = "quarantine"`; `reason` names the statement and position). SQL sinks
    /// record it in `ferry_schemas` and skip the table's changes from then on, across restarts, until the table
    /// is copied anew (`ferry reset`). Kafka sinks go on publishing the table's changes, which stay true events.
    Quarantine {
        table: TableId,
        reason: String,
    },
}

impl Change {
    /// Approximate size in bytes, for batch limits.
    pub fn size_hint(&self) -> usize {
        let row = |r: &Row| r.iter().map(Value::size_hint).sum::<usize>();
        match self {
            Change::Row { op, .. } => {
                64 + match op {
                    RowOp::Insert { after } | RowOp::Read { after } => row(after),
                    RowOp::Update { before, after } => before.as_ref().map_or(0, row) + row(after),
                    RowOp::Delete { before } => row(before),
                }
            }
            Change::Truncate { tables, .. } => 64 * tables.len(),
            Change::Quarantine { reason, .. } => 64 + reason.len(),
        }
    }
}

/// The stream a source emits, in commit order. Changes only appear between a `Begin` and its `Commit`; a
/// transaction's changes are contiguous (sources that interleave transactions reassemble them first).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A transaction starts. `commit_at` identifies its commit: a sink whose checkpoint
    /// [`Position::includes`] it has applied the transaction already and skips it.
    Begin {
        commit_at: Position,
        /// PostgreSQL's transaction id (Debezium's `txId`); `None` for binlog sources and snapshots.
        xid: Option<u32>,
    },
    Change(Change),
    /// The transaction ends; `position` is what a sink stores as its checkpoint once the transaction is durable.
    Commit {
        position: Position,
        commit_time: Timestamp,
    },
    /// A table's schema as of this point in the stream (new table, or columns added or dropped).
    Schema(SchemaRef),
    /// The source is idle up to `position`: nothing before it remains to be applied. Sinks may store it as
    /// their checkpoint so the source can release its log.
    Heartbeat {
        position: Position,
    },
}

impl Event {
    pub fn size_hint(&self) -> usize {
        match self {
            Event::Change(c) => c.size_hint(),
            _ => 64,
        }
    }
}
