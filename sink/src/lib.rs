//! Ferry's sinks. Each applies batches inside one target transaction and writes its checkpoint row
//! (`ferry_checkpoints(pipeline, sink, position, updated_at)`) in that same transaction, so the rows and the
//! position they reach become durable together or not at all.

pub mod checkpoint;
pub mod discard;
pub mod evolve;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod mysql;
pub mod postgres;
pub mod recopy;
mod rows;
pub mod sqlite;

pub use discard::DiscardSink;
pub use mysql::MysqlSink;
pub use postgres::PostgresSink;
pub use sqlite::SqliteSink;

/// The error of a sink whose lease another process holds: this process becomes a standby.
pub fn lease_busy(pipeline: &str, sink: &str, holder: &str) -> ferry_core::Error {
    ferry_core::Error::standby(format!(
        "pipeline {pipeline} (sink {sink}) is already run by another process: {holder}; this one waits as a \
         standby and takes over when that process stops"
    ))
}
