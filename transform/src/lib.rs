//! Ferry's transform stages. They are synchronous and pure: they drop or reshape row changes and schemas, and
//! never drop positions (`Begin`, `Commit`, `Heartbeat`), so a transaction whose rows are all filtered still
//! advances every sink's checkpoint.

mod filter;

pub use filter::TableFilter;
