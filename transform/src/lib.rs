//! Ferry's transform stage: the chain of `[[transform]]` stages between source and sinks.
//!
//! A stage ([`RowStage`]) is planned once per table schema version — it sees the input schema and returns the
//! output schema, so sinks create the right columns and Kafka registers the right Avro schema — and the plan
//! ([`Step`]) is applied per row with the transaction's context, emitting zero or more rows or a typed error.
//! The [`Chain`] owns everything else: which stages apply to which table (`tables = ["public.*"]`), positions
//! (`Begin`, `Commit`, `Heartbeat` always pass, so a transaction whose rows are all dropped still commits its
//! position), truncates, quarantines and re-copies (renamed with their table), and what a failed row does
//! (`on_error`).

mod chain;
mod expr;
mod stage;
mod stages;
mod types;

pub use chain::Chain;
pub use stage::{RowContext, RowStage, StageError, Step};
