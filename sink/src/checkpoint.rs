//! The checkpoint table every SQL sink keeps in its target, written in the same transaction as the rows.

use ferry_core::{KafkaOffsets, PartitionMark, Position, TopicPartition};

/// Creates the checkpoint table (portable across PostgreSQL and SQLite).
pub const CREATE_CHECKPOINT_TABLE: &str = "CREATE TABLE IF NOT EXISTS ferry_checkpoints (\
    pipeline TEXT NOT NULL, sink TEXT NOT NULL, position TEXT NOT NULL, updated_at TEXT NOT NULL, \
    PRIMARY KEY (pipeline, sink))";

/// Reads one sink's checkpoint; parameters: pipeline, sink.
pub const SELECT_CHECKPOINT: &str =
    "SELECT position FROM ferry_checkpoints WHERE pipeline = $1 AND sink = $2";

/// Upserts a checkpoint; parameters: pipeline, sink, position, updated_at.
pub const UPSERT_CHECKPOINT: &str = "INSERT INTO ferry_checkpoints (pipeline, sink, position, updated_at) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (pipeline, sink) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";

/// Deletes a pipeline's checkpoints (`ferry reset`); parameter: pipeline.
pub const DELETE_CHECKPOINTS: &str = "DELETE FROM ferry_checkpoints WHERE pipeline = $1";

/// Lists a pipeline's checkpoints (`ferry status`); parameter: pipeline.
pub const LIST_CHECKPOINTS: &str =
    "SELECT sink, position, updated_at FROM ferry_checkpoints WHERE pipeline = $1 ORDER BY sink";

/// The current time as ISO 8601 UTC, for `updated_at`.
pub fn now_text() -> String {
    ferry_core::Timestamp::now().display_utc().to_string()
}

/// Lists a pipeline's checkpoint rows, sink and position; parameter: pipeline. A sink fed by a Kafka source keeps
/// one row per partition (see [`KafkaRows`]).
pub const SELECT_PIPELINE_CHECKPOINTS: &str =
    "SELECT sink, position FROM ferry_checkpoints WHERE pipeline = $1";

/// Moves one Kafka partition's checkpoint if its claim is still the one given (compare-and-set); parameters:
/// position, updated_at, pipeline, row key, claim pattern ([`KafkaRows`]). Parameters are numbered in the order
/// they first appear: SQLite takes `$N` for a name, numbered by first appearance.
pub const SET_PARTITION_CHECKPOINT: &str =
    "UPDATE ferry_checkpoints SET position = $1, updated_at = $2 \
    WHERE pipeline = $3 AND sink = $4 AND position LIKE $5";

/// Creates a partition's checkpoint row when missing; parameters: pipeline, row key, position, updated_at.
pub const INSERT_PARTITION_CHECKPOINT: &str =
    "INSERT INTO ferry_checkpoints (pipeline, sink, position, updated_at) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (pipeline, sink) DO NOTHING";

/// A sink's checkpoint from its pipeline's rows (`rows`: sink column, position column): its own row, or, for a
/// Kafka source, the rows of its partitions gathered into one map. `None` when it has neither.
pub fn gather(
    sink: &str,
    rows: impl IntoIterator<Item = (String, String)>,
) -> ferry_core::Result<Option<Position>> {
    let parse = |text: &str| {
        text.parse::<Position>().map_err(|e| {
            ferry_core::Error::fatal_from(
                format!("the checkpoint of sink {sink} in ferry_checkpoints is not a position"),
                e,
            )
        })
    };
    let prefix = format!("{sink}@");
    let mut partitions = std::collections::BTreeMap::new();
    for (key, text) in rows {
        if key == sink {
            return parse(&text).map(Some);
        }
        if key.starts_with(&prefix) {
            match parse(&text)? {
                Position::Kafka(offsets) => {
                    partitions.extend(offsets.iter().map(|(tp, m)| (tp.clone(), *m)))
                }
                other => {
                    return Err(ferry_core::Error::fatal(format!(
                        "the checkpoint row {key} in ferry_checkpoints holds {other}, not a Kafka partition's offset"
                    )))
                }
            }
        }
    }
    Ok((!partitions.is_empty()).then(|| Position::Kafka(KafkaOffsets::from_map(partitions))))
}

/// How a SQL sink stores a Kafka source's offsets: one row per partition, keyed `<sink>@<topic>:<partition>`,
/// holding `kafka:<topic>:<partition>@<next offset>#<claim>`. Each commit moves the rows of the partitions whose
/// offset changed, each only if its claim is still this process's (`SET_PARTITION_CHECKPOINT`): a row whose
/// claim another process replaced means the partition moved away, and the commit must not happen.
#[derive(Debug, Default)]
pub struct KafkaRows {
    /// What this sink last made durable, per partition.
    written: KafkaOffsets,
}

/// One partition row to move at a commit.
#[derive(Debug, Clone)]
pub struct PartitionWrite {
    pub partition: TopicPartition,
    pub key: String,
    pub text: String,
    /// `LIKE` pattern matching the row's claim.
    pub claim: String,
}

impl KafkaRows {
    /// The rows `offsets` changes.
    pub fn changed(&self, sink: &str, offsets: &KafkaOffsets) -> Vec<PartitionWrite> {
        offsets
            .iter()
            .filter(|(tp, mark)| self.written.get(tp) != Some(mark))
            .map(|(tp, mark)| partition_write(sink, tp, *mark))
            .collect()
    }

    /// Records a commit of `offsets` (or a claim's marks).
    pub fn committed(&mut self, offsets: &KafkaOffsets) {
        for (tp, mark) in offsets.iter() {
            self.written.set(tp.clone(), *mark);
        }
    }
}

/// The row that stamps `tp` with claim `token` and keeps its offset (`held`: the sink's mark before the claim).
pub fn partition_write(sink: &str, tp: &TopicPartition, mark: PartitionMark) -> PartitionWrite {
    let one = KafkaOffsets::from_map([(tp.clone(), mark)].into());
    PartitionWrite {
        partition: tp.clone(),
        key: format!("{sink}@{tp}"),
        text: Position::Kafka(one).to_string(),
        claim: format!("%#{:x}", mark.claim),
    }
}

/// A claim of `tp` with `token` ([`ferry_core::Sink::claim`]), in two steps each SQL sink runs in one
/// transaction: the row to insert when the partition has none yet (nothing applied), then, from the row as
/// stored (locked), the mark the sink keeps (its offset, the new claim) and the row that writes it.
pub fn fresh_claim(sink: &str, tp: &TopicPartition, token: u64) -> PartitionWrite {
    partition_write(
        sink,
        tp,
        PartitionMark {
            next: None,
            claim: token,
        },
    )
}

/// See [`fresh_claim`].
pub fn claimed(
    sink: &str,
    tp: &TopicPartition,
    stored: Option<&str>,
    token: u64,
) -> (PartitionMark, PartitionWrite) {
    let next = stored.and_then(|s| stored_mark(s, tp)).and_then(|m| m.next);
    let mark = PartitionMark { next, claim: token };
    (mark, partition_write(sink, tp, mark))
}

/// Claims come between transactions (the runner commits first).
pub fn claim_inside_transaction() -> ferry_core::Error {
    ferry_core::Error::fatal("Kafka partitions were claimed inside an open transaction")
}

/// Moves a partition's row to its claim; parameters: position, updated_at, pipeline, row key (in order of first
/// appearance, as for [`SET_PARTITION_CHECKPOINT`]).
pub const CLAIM_PARTITION_CHECKPOINT: &str =
    "UPDATE ferry_checkpoints SET position = $1, updated_at = $2 WHERE pipeline = $3 AND sink = $4";

/// The stored mark of a partition row's text (`None` if it is not one).
pub fn stored_mark(text: &str, tp: &TopicPartition) -> Option<PartitionMark> {
    match text.parse::<Position>() {
        Ok(Position::Kafka(offsets)) => offsets.get(tp).copied(),
        _ => None,
    }
}

/// A commit that found a partition's claim replaced: another process of the consumer group took the partition.
pub fn fenced(sink: &str, tp: &TopicPartition) -> ferry_core::Error {
    ferry_core::Error::transient(
        format!(
            "sink {sink}: another process claimed Kafka partition {tp} (a consumer-group rebalance moved it away); \
             nothing of this transaction was committed, and this process rejoins the group"
        ),
        std::io::Error::other("partition claimed by another process"),
    )
}
