//! Transactions the server streams while they are still in progress (pgoutput protocol 2, `streaming 'on'`,
//! PostgreSQL 14+), kept on disk until they commit.
//!
//! ```text
//! wire:  S(x1) I I I E   B … C   S(x2) I E   S(x1) I U E   c(x1)            A(x2, x2)
//!        └ spool x1 ┘    └ applied ┘ └ x2 ┘  └ spool x1 ┘  └ replay x1 as B … C   └ delete x2
//! ```
//!
//! Without streaming, the walsender holds a big transaction until its commit (spilling it to its own disk past
//! `logical_decoding_work_mem`) and only then sends it. With streaming it sends the changes as they are decoded,
//! in blocks between Stream Start and Stream Stop, interleaved with other transactions; each data message carries
//! the transaction id of its (sub)transaction. Ferry writes each block to a file per top-level transaction, with
//! bounded memory, and at Stream Commit replays the file in place of the transaction, between a Begin and a Commit
//! at the commit's position: the sinks see exactly what an unstreamed transaction gives, and exactly once is
//! unchanged (a crash loses only the spool; the slot sends the transaction again). A Stream Abort drops a
//! transaction's file, or marks the subtransaction it names (and the server names each nested one) so replay
//! leaves its changes out. Files from an earlier process are removed at start.
//!
//! Format of a spool file, per message: the (sub)transaction id (u32, little-endian), the message's length (u32,
//! little-endian), the pgoutput message as received (its transaction id included).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use ferry_core::{Error, Lsn};
use tracing::{debug, info};

/// A streamed transaction being written to its file.
struct Open {
    path: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
    /// Subtransactions the server aborted (a Stream Abort naming them): their messages are not replayed.
    aborted: HashSet<u32>,
}

/// A committed streamed transaction being read back.
pub struct Replay {
    path: PathBuf,
    file: BufReader<File>,
    aborted: HashSet<u32>,
    /// The commit, given to the caller once the file is read.
    pub commit: StreamCommit,
    pub messages: u64,
}

/// Stream Commit's fields.
#[derive(Debug, Clone, Copy)]
pub struct StreamCommit {
    pub xid: u32,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time_micros: i64,
}

impl StreamCommit {
    /// The Commit message an unstreamed transaction would have ended with.
    pub fn as_commit(&self) -> super::pgoutput::PgOutput<'static> {
        super::pgoutput::PgOutput::Commit {
            commit_lsn: self.commit_lsn,
            end_lsn: self.end_lsn,
            commit_time_micros: self.commit_time_micros,
        }
    }
}

/// The spool of one stream: a directory of files, one per streamed transaction in progress.
pub struct Spool {
    dir: PathBuf,
    open: HashMap<u32, Open>,
    /// The transaction of the block being received (between Stream Start and Stream Stop).
    current: Option<u32>,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::fatal_from(what, e)
}

impl Spool {
    /// A spool in `dir`, emptied first: a file left by an earlier process belongs to a transaction the slot
    /// sends again.
    pub fn new(dir: PathBuf) -> Result<Spool, Error> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_error(format!(
                "removing the old spool of streamed transactions {}",
                dir.display()
            )))?;
        }
        // Made now, so a directory Ferry cannot write stops it at start ([source] spool_dir), not at the first
        // big transaction.
        std::fs::create_dir_all(&dir).map_err(io_error(format!(
            "creating the spool directory {} for streamed transactions ([source] spool_dir)",
            dir.display()
        )))?;
        Ok(Spool {
            dir,
            open: HashMap::new(),
            current: None,
        })
    }

    /// Whether a streamed block is being received: its data messages go to [`Spool::write`].
    pub fn in_block(&self) -> bool {
        self.current.is_some()
    }

    /// Stream Start: the block's messages belong to top-level transaction `xid`.
    pub fn start(&mut self, xid: u32) -> Result<(), Error> {
        if !self.open.contains_key(&xid) {
            let path = self.dir.join(format!("{xid}.spool"));
            let file = File::create(&path).map_err(io_error(format!(
                "creating the spool file {} of streamed transaction {xid}",
                path.display()
            )))?;
            debug!(xid, "spooling a streamed transaction");
            self.open.insert(
                xid,
                Open {
                    path,
                    file: BufWriter::with_capacity(256 * 1024, file),
                    bytes: 0,
                    aborted: HashSet::new(),
                },
            );
        }
        self.current = Some(xid);
        Ok(())
    }

    /// The top-level transaction of the block being received.
    pub fn current(&self) -> Option<u32> {
        self.current
    }

    /// Stream Stop.
    pub fn stop(&mut self) {
        self.current = None;
    }

    /// One data message of the current block, of (sub)transaction `xid`.
    pub fn write(&mut self, xid: u32, message: &[u8]) -> Result<(), Error> {
        let top = self
            .current
            .ok_or_else(|| Error::fatal("a streamed message arrived outside a stream block"))?;
        let open = self
            .open
            .get_mut(&top)
            .ok_or_else(|| Error::fatal("a stream block has no spool"))?;
        let len = u32::try_from(message.len())
            .map_err(|_| Error::fatal("a streamed message longer than 4 GiB"))?;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&xid.to_le_bytes());
        head[4..].copy_from_slice(&len.to_le_bytes());
        let what = || format!("writing the spool file {}", open.path.display());
        open.file.write_all(&head).map_err(io_error(what()))?;
        open.file.write_all(message).map_err(io_error(what()))?;
        open.bytes += 8 + u64::from(len);
        Ok(())
    }

    /// Stream Abort: the whole transaction (`subxid == xid`) or one subtransaction of it.
    pub fn abort(&mut self, xid: u32, subxid: u32) -> Result<(), Error> {
        if xid != subxid {
            if let Some(open) = self.open.get_mut(&xid) {
                open.aborted.insert(subxid);
            }
            return Ok(());
        }
        if let Some(open) = self.open.remove(&xid) {
            drop(open.file);
            remove(&open.path)?;
            debug!(
                xid,
                bytes = open.bytes,
                "a streamed transaction aborted: its spool is dropped"
            );
        }
        Ok(())
    }

    /// Stream Commit: the transaction's file, to read back. `None` when nothing of it was spooled (every change
    /// of it filtered out by the server).
    pub fn commit(&mut self, commit: StreamCommit) -> Result<Option<Replay>, Error> {
        let Some(open) = self.open.remove(&commit.xid) else {
            return Ok(None);
        };
        let path = open.path;
        open.file.into_inner().map_err(|e| {
            Error::fatal_from(
                format!("writing the spool file {}", path.display()),
                e.into_error(),
            )
        })?;
        let file = File::open(&path).map_err(io_error(format!(
            "reading the spool file {}",
            path.display()
        )))?;
        info!(
            xid = commit.xid,
            bytes = open.bytes,
            "a streamed transaction committed: applying it from its spool"
        );
        Ok(Some(Replay {
            path,
            file: BufReader::with_capacity(256 * 1024, file),
            aborted: open.aborted,
            commit,
            messages: 0,
        }))
    }
}

impl Replay {
    /// The next message to apply, skipping those of aborted subtransactions; `None` at the end (the file is then
    /// removed).
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, Error> {
        loop {
            let mut head = [0u8; 8];
            let what = || format!("reading the spool file {}", self.path.display());
            match self.file.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    remove(&self.path)?;
                    return Ok(None);
                }
                Err(e) => return Err(io_error(what())(e)),
            }
            let xid = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let mut message = vec![0u8; len];
            self.file
                .read_exact(&mut message)
                .map_err(io_error(what()))?;
            if self.aborted.contains(&xid) {
                continue;
            }
            self.messages += 1;
            return Ok(Some(message));
        }
    }
}

fn remove(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(format!(
            "removing the spool file {}",
            path.display()
        ))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(xid: u32) -> StreamCommit {
        StreamCommit {
            xid,
            commit_lsn: Lsn(10),
            end_lsn: Lsn(11),
            commit_time_micros: 0,
        }
    }

    fn replayed(spool: &mut Spool, xid: u32) -> Vec<Vec<u8>> {
        let mut replay = spool.commit(commit(xid)).unwrap().unwrap();
        let mut out = Vec::new();
        while let Some(m) = replay.next_message().unwrap() {
            out.push(m);
        }
        assert!(!replay.path.exists(), "the spool file is removed once read");
        out
    }

    #[test]
    fn interleaved_blocks_replay_per_transaction_without_aborted_subtransactions() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path().join("s")).unwrap();
        spool.start(7).unwrap();
        spool.write(7, b"a").unwrap();
        spool.write(8, b"sub").unwrap();
        spool.stop();
        spool.start(9).unwrap();
        spool.write(9, b"other").unwrap();
        spool.stop();
        spool.start(7).unwrap();
        spool.write(7, b"b").unwrap();
        spool.stop();
        spool.abort(7, 8).unwrap();
        spool.abort(9, 9).unwrap();
        assert!(
            spool.commit(commit(9)).unwrap().is_none(),
            "an aborted transaction has no spool"
        );
        assert_eq!(replayed(&mut spool, 7), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(
            spool.write(7, b"x").is_err(),
            "a message outside a block is an error"
        );
    }

    #[test]
    fn a_new_spool_removes_files_left_by_an_earlier_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("5.spool"), b"stale").unwrap();
        let _spool = Spool::new(path.clone()).unwrap();
        assert!(!path.join("5.spool").exists());
    }
}
