//! Ferry's sinks. Each applies batches inside one target transaction and writes its checkpoint row
//! (`ferry_checkpoints(pipeline, sink, position, updated_at)`) in that same transaction, so the rows and the
//! position they reach become durable together or not at all.

pub mod checkpoint;
pub mod conflict;
mod dead_letters;
pub mod discard;
pub mod evolve;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod mysql;
pub mod postgres;
pub mod recopy;
pub mod registry;
mod rows;
pub mod sqlite;

pub use discard::DiscardSink;
pub use mysql::MysqlSink;
pub use postgres::PostgresSink;
pub use registry::AnySink;
pub use sqlite::SqliteSink;

use ferry_core::Error;

/// The error of a sink whose lease another process holds: this process becomes a standby.
pub fn lease_busy(pipeline: &str, sink: &str, holder: &str) -> Error {
    Error::standby(format!(
        "pipeline {pipeline} (sink {sink}) is already run by another process: {holder}; this one waits as a \
         standby and takes over when that process stops"
    ))
}

/// Takes the lease of `pipeline`'s sink `name` whose data lives at `path` (an SQLite database, a checkpoint file):
/// an exclusive lock (`flock`) on a file beside it, which the kernel releases when the process ends however it
/// ends. The file names its holder.
pub fn file_lease(
    path: &std::path::Path,
    pipeline: &str,
    name: &str,
) -> Result<std::fs::File, Error> {
    use std::io::{Read, Seek, Write};
    let key = ferry_core::fnv1a(format!("ferry lease sink {pipeline}/{name}").into_bytes());
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(format!(".ferry-{key:016x}.lock"));
    let lock_path = std::path::PathBuf::from(lock_path);
    let what = || format!("the lease file {}", lock_path.display());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| Error::fatal_from(format!("cannot open {}", what()), e))?;
    match file.try_lock() {
        Ok(()) => {
            let owner = format!(
                "ferry {} (since {})",
                ferry_core::process_owner(),
                crate::checkpoint::now_text()
            );
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(owner.as_bytes()))
                .map_err(|e| Error::fatal_from(format!("cannot write {}", what()), e))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = if holder.trim().is_empty() {
                "another process".to_owned()
            } else {
                holder.trim().to_owned()
            };
            Err(crate::lease_busy(pipeline, name, &holder))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::fatal_from(format!("cannot lock {}", what()), e))
        }
    }
}
