//! What sources emit: transactions of row changes, schema changes and heartbeats.

use std::sync::Arc;

use crate::position::Position;
use crate::schema::{SchemaRef, TableId};
use crate::temporal::Timestamp;
use crate::value::Value;

/// A row's values, in the order of its schema's columns.
pub type Row = Vec<Value>;

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

impl RowOp {
    /// The row the change leaves (insert, snapshot read, update: the new row) or removes (delete: the old row,
    /// at least its key).
    pub fn row(&self) -> &Row {
        match self {
            RowOp::Insert { after } | RowOp::Read { after } | RowOp::Update { after, .. } => after,
            RowOp::Delete { before } => before,
        }
    }
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
    /// A step of re-copying one table while the stream flows (`ferry snapshot --table`, or
    /// `on_schema_change = "resnapshot"`). See [`RecopyStep`].
    Recopy {
        table: TableId,
        step: RecopyStep,
    },
    /// Snapshot rows of `table`, `rows` whole lines of PostgreSQL's `COPY` text format as the source server wrote
    /// them (the columns of `table`, in order), sent instead of [`RowOp::Read`] rows when the pipeline writes the
    /// table unchanged into PostgreSQL targets only: the sink loads them with `COPY … FROM STDIN` into columns of
    /// the same types, and no value is parsed and written again on the way.
    CopyRows {
        table: SchemaRef,
        rows: u64,
        data: bytes::Bytes,
    },
    /// The initial snapshot has copied every row of `tables`. A snapshot's truncate marks its tables as being
    /// copied; SQL sinks record both in `ferry_schemas`, so that after a crash in a snapshot committed in parts
    /// (see [`TxContext::continues_snapshot`]) a table whose copy was cut short is quarantined and copied anew
    /// online, while the tables already copied stay as they are.
    Copied {
        tables: Vec<TableId>,
    },
    /// A row a transform stage failed on under `on_error = "dead_letter"`, or a later change of a key that has
    /// such a letter (it follows it, in order). Never applied: the sink's runner writes it to the sink's dead
    /// letters in the batch's transaction, and `ferry dead-letters replay` runs it through the transforms again.
    Refused(Box<RefusedRow>),
}

/// See [`Change::Refused`]. `table` and `op` are the row as the source read it (before any stage).
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedRow {
    pub table: SchemaRef,
    pub op: RowOp,
    /// Why, naming the stage (`[[transform]] #2 (mask)`) and its error.
    pub error: String,
    /// Whether it follows an earlier letter of its key rather than having failed itself.
    pub follows: bool,
    /// The table its changes reach the sinks as (after `route`): the letter is filed under it, so a TRUNCATE of
    /// that table deletes it.
    pub target: TableId,
}

/// How an online re-copy of a table unfolds in the stream (the DBLog watermark method: chunks of rows read between
/// a low and a high watermark, without the keys changed in that window, land at the high watermark).
///
/// SQL sinks copy into a shadow table ([`recopy_shadow`]): from `Start` on, each change of the table is applied
/// to the table and to its shadow, and the chunks' `Read` rows to the shadow only; at `Finish` the table's rows
/// are replaced by the shadow's in one transaction. Event-stream sinks (Kafka) publish the chunks' rows as reads.
#[derive(Debug, Clone, PartialEq)]
pub enum RecopyStep {
    /// The re-copy begins with `schema` (the table's schema at this point of the stream).
    Start { schema: SchemaRef },
    /// A chunk's rows precede this in the same transaction; `cursor` is the source's opaque record of where the
    /// copy stands, stored with the checkpoint so a restart resumes at the next chunk. `rows`: rows copied so far.
    ///
    /// `in_place`: the copy fills the table itself, not a shadow. An initial snapshot copying a big table in
    /// chunks sends this after each chunk (with no `Start`), so that after a crash the copy resumes online at the
    /// chunks left: the target table keeps the chunks copied and takes the table's changes from the snapshot's
    /// position on, while rows the copy has not reached yet may be missing from it (a change of such a row that
    /// cannot be written is left to the copy, which reads the row later). `Finish` then only ends the copy.
    Chunk {
        cursor: String,
        rows: u64,
        in_place: bool,
    },
    /// Every row was copied: the shadow replaces the rows of the table, whose schema is `schema` (a copy in place
    /// just ends).
    Finish { schema: SchemaRef },
    /// The re-copy stops unfinished (a new snapshot copies the table whole): the shadow is dropped.
    Cancel,
}

/// The re-copy cursor a SQL sink reports ([`crate::Sink::recopies`]) for a table whose initial copy a crash cut
/// short ([`Change::Copied`]) and whose online re-copy has not started: the source starts one.
pub const INTERRUPTED_COPY: &str = "interrupted-initial-copy";

/// The tables Ferry keeps in databases it writes to (checkpoints, applied schemas, leases, the conflict log,
/// tombstones, dead letters). Sources never capture them: in two databases replicating into each other they belong to the
/// pipeline writing there, not to the data.
pub const INTERNAL_TABLES: [&str; 8] = [
    "ferry_checkpoints",
    "ferry_schemas",
    "ferry_leases",
    "ferry_conflicts",
    "ferry_tombstones",
    "ferry_node",
    "ferry_origin",
    "ferry_dead_letters",
];

/// The column holding a row's version under conflict detection: a hybrid logical clock, µs since 1970-01-01 UTC
/// (docs/multi-master.md).
pub const VERSION_TS: &str = "_ferry_ts";
/// The column holding the node that wrote a row's version.
pub const VERSION_NODE: &str = "_ferry_node";
/// The column holding a row's version vector (opt-in per table): each node's count of the row's writes, as a JSON
/// object `{"a": 3, "b": 1}`.
pub const VERSION_VECTOR: &str = "_ferry_vv";
/// Where deleted rows' versions are kept under conflict detection.
pub const TOMBSTONES_TABLE: &str = "ferry_tombstones";

/// Whether `table` is one of Ferry's own tables ([`INTERNAL_TABLES`]).
pub fn is_internal_table(table: &TableId) -> bool {
    INTERNAL_TABLES.contains(&table.name.as_str())
}

/// Whether `table` is a re-copy's shadow table ([`recopy_shadow`]).
pub fn is_recopy_shadow(table: &TableId) -> bool {
    table.name.starts_with("ferry_recopy_")
}

/// The target table a SQL sink re-copies `table` into: same schema, a name of at most 26 bytes that no source
/// table is likely to have (`ferry_recopy_` and a hash of the table's name), so no target truncates it.
pub fn recopy_shadow(table: &TableId) -> TableId {
    // FNV-1a: stable across builds and platforms (the name is stored in targets).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in table.schema.bytes().chain([0]).chain(table.name.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    TableId::new(
        table.schema.clone(),
        format!("ferry_recopy_{:012x}", h >> 16),
    )
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
            Change::Recopy { .. } => 64,
            Change::Copied { tables } => 64 * tables.len(),
            Change::CopyRows { data, .. } => 64 + data.len(),
            Change::Refused(r) => 64 + r.op.row().iter().map(Value::size_hint).sum::<usize>(),
        }
    }
}

/// The stream a source emits, in commit order. Changes only appear between a `Begin` and its `Commit`; a
/// transaction's changes are contiguous (sources that interleave transactions reassemble them first).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A transaction starts, with what is known of it before its rows ([`TxContext`]): its commit position,
    /// commit time and origin. A sink whose checkpoint [`Position::includes`] `commit_at` has applied the
    /// transaction already and skips it.
    Begin(Arc<TxContext>),
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
    /// The transaction in progress ([`TxContext::in_progress`]) ends without committing: the source aborted
    /// it, or it stops being applied live (another transaction commits first, a subtransaction aborts, a schema
    /// change) and comes again whole at its commit. The runner undoes everything the sinks applied of it
    /// ([`crate::Sink::rollback`]); sinks never receive this event in [`crate::Sink::apply`].
    Abandon,
    /// A Kafka source was given partitions ([`crate::kafka_offsets::Claim`]): the runner commits what came
    /// before, has its sink claim them and answers the source. Sinks never receive it in
    /// [`crate::Sink::apply`].
    Claim(Arc<crate::kafka_offsets::Claim>),
}

/// What a transaction's rows share, known at its `Begin`: transform stages read it per row (`filter` on the origin,
/// `compute` with the commit time), conflict resolution compares commit times and origins, and the Kafka sink
/// writes it into each record's `source` block.
#[derive(Debug, Clone, PartialEq)]
pub struct TxContext {
    /// Identifies the transaction's commit: PostgreSQL, the commit record's LSN (pgoutput Begin's `final_lsn`);
    /// binlog sources, where the transaction's first event starts; snapshots, the snapshot's consistent point.
    pub commit_at: Position,
    /// When the source committed it. PostgreSQL: the Begin message's commit timestamp (µs); for a transaction
    /// applied under a replication origin, logical decoding reports the origin's timestamp instead (the commit
    /// time upstream, set with `pg_replication_origin_xact_setup`), `None` when it set none. MySQL 8: the GTID
    /// event's `immediate_commit_timestamp` (µs). MariaDB and MySQL 5.7: the GTID (or first) event header's
    /// timestamp, whole seconds (the time the transaction started writing to the binlog). `None` for
    /// snapshot reads, which belong to no source transaction.
    pub commit_time: Option<Timestamp>,
    /// PostgreSQL's transaction id (Debezium's `txId`); `None` for binlog sources and snapshots.
    pub xid: Option<u32>,
    pub origin: Origin,
    /// A later part of a snapshot committed in parts, all at the snapshot's consistent point: the checkpoint an
    /// earlier part left does not cover it.
    pub continues_snapshot: bool,
    /// The source has not committed this transaction yet (a PostgreSQL transaction streamed while in progress,
    /// applied live): `commit_at` is where its first change was decoded, past every sink's checkpoint and before
    /// its commit; `commit_time` is `None`. It ends with `Commit` (the real position) or [`Event::Abandon`].
    pub in_progress: bool,
}

impl TxContext {
    /// A context with only a position (snapshots, tests).
    pub fn at(commit_at: Position) -> TxContext {
        TxContext {
            commit_at,
            commit_time: None,
            xid: None,
            origin: Origin::default(),
            continues_snapshot: false,
            in_progress: false,
        }
    }
}

/// Where a transaction was first written, as the source records it. Every field is `None` when the source
/// does not say (a local write on PostgreSQL, a GTID-less binlog).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// PostgreSQL: the replication origin the transaction was applied under (pgoutput's Origin message, sent when
    /// a replication client such as a subscription or a Ferry sink set `pg_replication_origin_session_setup`).
    pub name: Option<String>,
    /// MySQL / MariaDB: the `server_id` of the server that first wrote the transaction (the binlog event header's,
    /// which a replica keeps when it logs replicated changes).
    pub server_id: Option<u32>,
    /// MySQL / MariaDB: the transaction's GTID, as each server spells it: MariaDB `domain-server-sequence`
    /// (`0-1-42`), MySQL `source_uuid[:tag]:gno`.
    pub gtid: Option<String>,
}

impl Event {
    /// A `Begin` with only a position (snapshots, tests).
    pub fn begin_at(commit_at: Position) -> Event {
        Event::Begin(Arc::new(TxContext::at(commit_at)))
    }

    /// Whether this `Begin` opens a transaction the source has not committed yet ([`TxContext::in_progress`]).
    pub fn opens_live(&self) -> bool {
        matches!(self, Event::Begin(tx) if tx.in_progress)
    }

    pub fn size_hint(&self) -> usize {
        match self {
            Event::Change(c) => c.size_hint(),
            _ => 64,
        }
    }
}
