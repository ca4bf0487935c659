//! The discard sink: drops every change and remembers only the position it reached, in a small file.
//!
//! It measures a source on its own (`scripts/bench pg`'s decode-only row) and can advance a slot without any
//! target. The file is replaced atomically (write, then rename) but not fsynced: after a power loss the position
//! may step back, which only replays changes that are dropped anyway.

use std::path::{Path, PathBuf};

use ferry_core::{Error, Event, Position, Sink};

pub struct DiscardSink {
    name: String,
    file: PathBuf,
    /// The locked lease file: held while this sink exists.
    _lease: std::fs::File,
}

impl DiscardSink {
    /// Takes the pipeline's lease on the checkpoint file (see [`crate::file_lease`]).
    pub fn new(name: &str, pipeline: &str, file: &Path) -> Result<DiscardSink, Error> {
        Ok(DiscardSink {
            name: name.to_owned(),
            file: file.to_path_buf(),
            _lease: crate::file_lease(file, pipeline, name)?,
        })
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> Error {
        Error::fatal_from(format!("{what} {}", self.file.display()), e)
    }
}

impl Sink for DiscardSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, Error> {
        read_checkpoint(&self.file)?
            .map(|(text, _)| {
                text.parse().map_err(|e| {
                    Error::fatal_from(
                        format!(
                            "the checkpoint file {} is not a position",
                            self.file.display()
                        ),
                        e,
                    )
                })
            })
            .transpose()
    }

    /// Answers with the offsets its file holds; one process owns the file, so nothing is fenced.
    async fn claim(
        &mut self,
        partitions: &[ferry_core::TopicPartition],
        token: u64,
    ) -> Result<ferry_core::KafkaOffsets, Error> {
        let held = match self.checkpoint().await? {
            Some(Position::Kafka(offsets)) => offsets,
            _ => ferry_core::KafkaOffsets::default(),
        };
        let claimed = partitions
            .iter()
            .map(|tp| {
                let next = held.get(tp).and_then(|m| m.next);
                (tp.clone(), ferry_core::PartitionMark { next, claim: token })
            })
            .collect();
        Ok(ferry_core::KafkaOffsets::from_map(claimed))
    }

    /// Nothing was written before a commit.
    async fn rollback(&mut self) -> Result<(), Error> {
        Ok(())
    }

    async fn apply(&mut self, _events: &[Event], commit: Option<&Position>) -> Result<(), Error> {
        let Some(position) = commit else {
            return Ok(());
        };
        let mut temp = self.file.clone().into_os_string();
        temp.push(".tmp");
        std::fs::write(&temp, format!("{position}\n"))
            .map_err(|e| self.io_error("writing the checkpoint file", e))?;
        std::fs::rename(&temp, &self.file)
            .map_err(|e| self.io_error("replacing the checkpoint file", e))
    }
}

/// The stored position and the time it was written (`ferry status`).
pub fn read_checkpoint(file: &Path) -> Result<Option<(String, String)>, Error> {
    let read = || -> std::io::Result<(String, std::time::SystemTime)> {
        Ok((
            std::fs::read_to_string(file)?,
            std::fs::metadata(file)?.modified()?,
        ))
    };
    match read() {
        Ok((text, modified)) => {
            let micros = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let at = ferry_core::Timestamp::from_unix_micros(micros)
                .display_utc()
                .to_string();
            Ok(Some((text.trim().to_owned(), at)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::fatal_from(
            format!("reading the checkpoint file {}", file.display()),
            e,
        )),
    }
}

/// Deletes the checkpoint file (`ferry reset`); whether there was one.
pub fn delete_checkpoint(file: &Path) -> Result<bool, Error> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::fatal_from(
            format!("deleting the checkpoint file {}", file.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Lsn;

    #[tokio::test]
    async fn remembers_the_last_commit_position() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.pos");
        let mut sink = DiscardSink::new("d", "p", &file).unwrap();
        assert_eq!(sink.checkpoint().await.unwrap(), None);
        let position = Position::pg(Lsn(0x1_0000_0010));
        sink.apply(&[], Some(&position)).await.unwrap();
        sink.apply(&[], None).await.unwrap();
        assert_eq!(sink.checkpoint().await.unwrap(), Some(position));
        assert!(delete_checkpoint(&file).unwrap());
        assert_eq!(sink.checkpoint().await.unwrap(), None);
        std::fs::write(&file, "garbage").unwrap();
        let err = sink.checkpoint().await.unwrap_err().to_string();
        assert!(err.contains("is not a position"), "{err}");
    }
}
