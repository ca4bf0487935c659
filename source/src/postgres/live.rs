//! Applying a streamed transaction while it is still in progress at the source ("live"), so that a transaction
//! of millions of rows reaches the targets as it is written instead of after its commit.
//!
//! ```text
//! wire:    S(x1,first) R I I E   S(x1) I U E   c(x1)
//! events:              Begin(in_progress) I I  I U   Commit            (sinks: one open target transaction)
//! spool:               x1: R I I             I U    (dropped at the commit)
//! ```
//!
//! Every block is still spooled (`spool.rs`): when the transaction cannot go on live, the source ends what it
//! sent with [`ferry_core::Event::Abandon`] (the runner rolls the sinks back) and the spool replays the whole
//! transaction at its commit, as without live apply. What ends live apply: the transaction (or a subtransaction
//! of it) aborts; another transaction commits first (the sinks hold one transaction at a time and commits stay
//! in order); a schema change, a TRUNCATE, a logical decoding message or a replication origin in it; a table it
//! touches is being re-copied, or first seen after its first row.
//!
//! Only a transaction whose first change lies past every sink's checkpoint goes live: after a restart, one
//! that a sink already holds is replayed from the spool and skipped by that sink as usual.

use ferry_core::Lsn;

/// Where live apply stands.
pub struct Live {
    /// Why the pipeline cannot apply live (`PipelineConfig::live_apply_blocked`); `None`: it can.
    pub blocked: Option<String>,
    /// The largest sink checkpoint at start: transactions whose first change lies at or before it stay spooled.
    after: Lsn,
    /// The sinks hold a checkpoint: a durable position was emitted in this session, or they resumed from one.
    /// Without one the runner could not commit what precedes a live transaction on its own.
    pub has_floor: bool,
    /// The transaction being applied live, and whether its `Begin` has gone out (it goes with its first row).
    current: Option<(u32, bool)>,
}

impl Live {
    pub fn new(blocked: Option<String>, after: Lsn, has_floor: bool) -> Live {
        Live {
            blocked,
            after,
            has_floor,
            current: None,
        }
    }

    /// Stream Start of a transaction's first block, whose first change is at `first_change`: whether it goes live
    /// (`other_work`: something else holds the sinks' stream, such as a re-copy).
    pub fn offer(&mut self, xid: u32, first_change: Lsn, other_work: bool) -> bool {
        let can = self.blocked.is_none()
            && self.has_floor
            && self.current.is_none()
            && !other_work
            && first_change > self.after;
        if can {
            self.current = Some((xid, false));
        }
        can
    }

    /// Whether `xid` is the transaction applied live.
    pub fn is(&self, xid: u32) -> bool {
        self.current.is_some_and(|(x, _)| x == xid)
    }

    /// Whether a transaction is applied live and its `Begin` went out.
    pub fn begun(&self) -> bool {
        self.current.is_some_and(|(_, begun)| begun)
    }

    pub fn active(&self) -> bool {
        self.current.is_some()
    }

    /// Its `Begin` goes out now.
    pub fn begin(&mut self) {
        if let Some((_, begun)) = self.current.as_mut() {
            *begun = true;
        }
    }

    /// It ends (committed, or no longer live): whether its `Begin` had gone out.
    pub fn end(&mut self) -> bool {
        self.current.take().is_some_and(|(_, begun)| begun)
    }
}

/// What a Relation message says, to tell whether one inside a live transaction changes the table: the name,
/// the replica identity and each column's flags, name, type and modifier.
pub fn relation_shape(
    namespace: &str,
    name: &str,
    replica_identity: u8,
    columns: &[super::pgoutput::RelationColumn<'_>],
) -> String {
    use std::fmt::Write;
    let mut shape = format!("{namespace}\0{name}\0{replica_identity}");
    for c in columns {
        let _ = write!(
            shape,
            "\0{}\0{}\0{}\0{}",
            c.is_key, c.name, c.type_oid, c.type_modifier
        );
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_transaction_begun_past_every_checkpoint_goes_live_and_one_at_a_time() {
        let mut live = Live::new(None, Lsn(100), true);
        assert!(!live.offer(1, Lsn(100), false), "at a checkpoint");
        assert!(live.offer(2, Lsn(101), false));
        assert!(!live.offer(3, Lsn(200), false), "another is live");
        assert!(live.is(2) && !live.begun());
        live.begin();
        assert!(live.begun());
        assert!(live.end());
        assert!(!live.active());
        assert!(!live.offer(4, Lsn(300), true), "a re-copy under way");
        assert!(!Live::new(Some("kafka".into()), Lsn(0), true).offer(5, Lsn(1), false));
        assert!(!Live::new(None, Lsn(0), false).offer(5, Lsn(1), false));
    }
}
