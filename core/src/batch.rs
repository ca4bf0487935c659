//! Cutting the event stream into batches for sinks.

use std::time::Duration;

use crate::event::Event;

/// When the batcher cuts a batch: at the first limit reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    /// How long the first event of a batch may wait for the rest of its source transaction while the source is
    /// still sending it. A batch that ends a transaction goes as soon as nothing more is queued: while the sinks
    /// are busy, what arrives meanwhile makes the next batch (group commit), so a quiet stream is not delayed.
    pub max_wait: Duration,
    /// A sink that is behind joins the batches already waiting for it into one target transaction, up to this
    /// many events and one second: fewer, larger commits while catching up, no added latency when keeping up.
    /// At or below `max_events`, every batch commits on its own.
    pub max_transaction_events: usize,
}

impl Default for BatchLimits {
    /// Large enough that a busy stream writes few, big target transactions.
    fn default() -> Self {
        BatchLimits {
            max_events: 10_000,
            max_bytes: 16 << 20,
            max_wait: Duration::from_millis(100),
            max_transaction_events: 100_000,
        }
    }
}

/// A run of consecutive events handed to every sink. Several source transactions may share a batch, and a
/// transaction may continue into the next batch when it is larger than the limits.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub events: Vec<Event>,
    pub bytes: usize,
}

impl Batch {
    pub fn push(&mut self, event: Event) {
        self.bytes += event.size_hint();
        self.events.push(event);
    }

    pub fn is_full(&self, limits: &BatchLimits) -> bool {
        self.events.len() >= limits.max_events || self.bytes >= limits.max_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether `event` must start a batch of its own: a transaction applied live ([`Event::opens_live`]) and an
    /// [`Event::Abandon`] stand apart from what precedes them, so that the runner commits before the one and
    /// undoes nothing but the live transaction at the other.
    pub fn starts_apart(event: &Event) -> bool {
        event.opens_live() || matches!(event, Event::Abandon | Event::Claim(_))
    }

    /// Whether the batch ends at a transaction boundary (a commit, or a heartbeat between transactions).
    pub fn ends_transaction(&self) -> bool {
        matches!(
            self.events.last(),
            Some(Event::Commit { .. } | Event::Heartbeat { .. })
        )
    }
}
