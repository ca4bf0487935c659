//! Faults of the online re-copy (`ferry snapshot --table`, `on_schema_change = "resnapshot"`) found by attacking
//! it: rows the shadow table does not hold yet changed without every column, key types needing casts, DDL and
//! rewrites in the middle of a copy, restarts at awkward moments, odd names. Each ends with the targets equal to
//! the source.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod ddl;
mod keys;
mod misc;
mod moves;
mod quoting;
mod types;
