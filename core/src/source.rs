//! The contract every source implements.

use std::future::Future;

use tokio::sync::{mpsc, watch};

use crate::error::Result;
use crate::event::Event;
use crate::position::Position;

/// How a source ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceExit {
    /// Shutdown was requested; the source told its server how far the sinks got.
    Shutdown,
    /// `snapshot = "only"` finished its copy.
    SnapshotDone,
}

/// Where a source resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The position every sink has made durable (the minimum of their checkpoints): the source starts with the
    /// first transaction it does not include.
    pub from: Position,
    /// Each sink's checkpoint, so that a source can check its server still continues the history every target
    /// holds (a PostgreSQL server on another timeline than the one a sink's checkpoint was read from).
    pub checkpoints: Vec<Position>,
}

/// Where committed changes come from: a PostgreSQL slot, a MySQL / MariaDB binlog.
pub trait Source: Send {
    /// Streams committed transactions into `events`, in commit order, until `shutdown` turns true or an error.
    ///
    /// `resume`: where to start ([`Resume`]). `None`: no usable checkpoint, so the source copies its
    /// tables first (the initial snapshot) and streams from the snapshot's consistent point. `acked`: the
    /// position every sink has made durable since, which the source may tell its server it can release (a
    /// PostgreSQL slot's confirmed position); sources whose server keeps its log regardless may ignore it.
    fn run(
        self,
        resume: Option<Resume>,
        events: mpsc::Sender<Event>,
        acked: watch::Receiver<Option<Position>>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<SourceExit>> + Send;
}
