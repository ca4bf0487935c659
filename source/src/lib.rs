//! Ferry's sources. Each source emits [`ferry_core::Event`]s in commit order and acknowledges upstream only the
//! position the sinks report as durable.

pub mod check;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod mysql;
pub mod postgres;
pub mod registry;
pub mod snapshot;

pub use check::CheckOutcome;
