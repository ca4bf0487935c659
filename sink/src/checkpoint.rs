//! The checkpoint table every SQL sink keeps in its target, written in the same transaction as the rows.

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
