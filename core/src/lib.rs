//! Ferry's core: the event model every component shares, and the generic pipeline runner.
//!
//! ```text
//! Source ──Event──► transforms + batcher ──Batch──► Sink (one task each)
//!    ▲                                                 │ commits rows + checkpoint atomically
//!    └──── AckTracker: min over sinks of durable positions ◄┘
//! ```
//!
//! Values ([`Value`]), schemas ([`TableSchema`]) and positions ([`Position`]) are plain data. Sources emit
//! [`Event`]s in commit order; [`pipeline::run_sink`] gives each sink only what its checkpoint does not include and
//! acknowledges a position upstream only once every sink has made it durable.

pub mod alerts;
pub mod batch;
pub mod binlog_position;
pub mod dead_letter;
pub mod debezium;
pub mod error;
pub mod event;
pub mod isolate;
pub mod kafka_offsets;
pub mod pg_text;
pub mod pipeline;
pub mod position;
pub mod schema;
pub mod sink;
pub mod source;
pub mod stats;
pub mod task;
pub mod temporal;
pub mod type_change;
pub mod value;
pub mod versions;

pub use alerts::Alerts;
pub use batch::{Batch, BatchLimits};
pub use binlog_position::{
    BinlogFilePos, BinlogPosition, GtidState, MariaGtid, MariaGtidList, MysqlGtidSet,
};
pub use dead_letter::{DeadLetter, OnError, Retry, RowErrors};
pub use error::{mysql_refuses, Error, ErrorClass, Result};
pub use event::{
    is_internal_table, is_recopy_shadow, recopy_shadow, Change, Event, Origin, RecopyStep,
    RefusedRow, Row, RowOp, TxContext, INTERRUPTED_COPY, TOMBSTONES_TABLE, VERSION_NODE,
    VERSION_TS, VERSION_VECTOR,
};
pub use kafka_offsets::{Claim, KafkaOffsets, PartitionMark, TopicPartition};
pub use position::{Lsn, Position, WaitPoint};
pub use schema::{
    enum_labels, Column, ColumnType, Dialect, Lineage, LogPoint, SchemaRef, TableId, TableSchema,
};
pub use sink::{Savepoint, Sink, Transform};
pub use source::{Resume, Source, SourceExit};
pub use stats::{ConflictCount, PipelineState, PipelineStats, SinkStats, SnapshotProgress};
pub use task::AbortOnDrop;
pub use temporal::{Date, Interval, Time, TimeTz, Timestamp};
pub use value::{Decimal, Uuid, Value};

/// FNV-1a, 64 bits: a hash stable across builds and platforms, for names and lock keys stored outside Ferry.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// This process as other processes are told about it (a lease holder): `host pid N`.
pub fn process_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".to_owned());
    format!("{host} pid {}", std::process::id())
}
