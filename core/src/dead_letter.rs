//! Rows a target refuses: the policy (`[pipeline] on_error`, `[[pipeline.on_error_rules]]`, `[pipeline.retry]`,
//! `max_dead_letters`) and the dead letters SQL sinks keep in `ferry_dead_letters` (docs/operations.md).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{RowOp, TxContext};
use crate::pg_text::pg_output_text;
use crate::schema::{TableId, TableSchema};
use crate::value::Value;

/// The table SQL sinks keep dead letters in.
pub const DEAD_LETTERS_TABLE: &str = "ferry_dead_letters";

/// What happens to a row change the target refuses for the row's own sake (a constraint, a value out of range or
/// too long), once its retries are spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the pipeline, naming the table, the key and the error (the default).
    #[default]
    Halt,
    /// Leave the change out: logged and counted, not kept.
    Skip,
    /// Keep the change in the target's `ferry_dead_letters`, in the transaction of the rest of its batch, for
    /// `ferry dead-letters replay` once the cause is fixed.
    DeadLetter,
}

impl OnError {
    pub const ALL: [OnError; 3] = [OnError::Halt, OnError::Skip, OnError::DeadLetter];

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            OnError::Halt => "halt",
            OnError::Skip => "skip",
            OnError::DeadLetter => "dead_letter",
        }
    }
}

/// `[pipeline.retry]`: capped exponential back-off with jitter, for transient failures (a lost connection, a
/// deadlock: the pipeline goes back to its checkpoint and tries again, for ever) and for a refused row (tried
/// `attempts` times in all before its `on_error` policy applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    pub attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            attempts: 3,
        }
    }
}

impl Retry {
    /// The wait before retry `n` (1 = the first retry): `initial · 2^(n-1)`, at most `max`, then a random
    /// point of its upper half ("equal jitter"), so processes that failed together do not retry together.
    pub fn delay(&self, n: u32) -> Duration {
        let full = self
            .initial
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max);
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        full / 2 + full.mul_f64((random % 1_000_000) as f64 / 2_000_000.0)
    }
}

/// `[[pipeline.on_error_rules]]`: the policy of the tables matching `tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnErrorRule {
    /// Its key path in the file (`pipeline.on_error_rules[0]`), for messages.
    pub key: String,
    /// `schema.table` globs (`*`, `?`).
    pub tables: Vec<String>,
    pub on_error: OnError,
}

/// A pipeline's handling of refused rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowErrors {
    /// `[pipeline] on_error`: tables no rule names.
    pub on_error: OnError,
    /// The first rule whose glob matches a table decides for it.
    pub rules: Vec<OnErrorRule>,
    pub retry: Retry,
    /// `[pipeline] max_dead_letters`: with this many dead letters in a sink's target, the pipeline pauses
    /// instead of adding more, until some are replayed or discarded.
    pub max_dead_letters: u64,
}

impl Default for RowErrors {
    fn default() -> Self {
        RowErrors {
            on_error: OnError::Halt,
            rules: Vec::new(),
            retry: Retry::default(),
            max_dead_letters: 10_000,
        }
    }
}

impl RowErrors {
    pub fn for_table(&self, table: &TableId) -> OnError {
        self.rules
            .iter()
            .find(|r| r.tables.iter().any(|g| table.matches_glob(g)))
            .map_or(self.on_error, |r| r.on_error)
    }
}

/// A row change kept aside because its target refused it (or because an earlier change of its key was): what
/// `ferry_dead_letters` holds, and what `ferry dead-letters replay` applies again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The source table.
    pub table: TableId,
    /// The row's key as a JSON array of PostgreSQL text values (`["42"]`); the old key of a key change.
    pub key: String,
    /// A key change's new key: later changes of either key follow the letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_key: Option<String>,
    /// `insert`, `update`, `delete` or `read` (a snapshot row).
    pub op: String,
    /// The row the change leaves (a delete: the old row), as a JSON object of column to PostgreSQL text.
    pub row: String,
    /// The change itself (the table's schema and the row operation, every value typed), for replay.
    pub change: String,
    /// Why: the target's error, or that an earlier change of the same key is a dead letter.
    pub error: String,
    /// The target's error code (SQLSTATE `23514`, MariaDB `4025`, SQLite `SQLITE_CONSTRAINT_CHECK`), or `follows`.
    pub code: String,
    /// The source position of the change's transaction (its commit LSN, binlog position or GTID).
    pub position: String,
    /// The source transaction's commit time, µs since 1970-01-01 UTC, for conflict resolution on replay.
    pub commit_time: Option<i64>,
    /// How many times the target refused the change.
    pub attempts: u32,
}

/// The code of a dead letter that follows an earlier one of the same key, without having been tried.
pub const FOLLOWS: &str = "follows";

/// The code of a row a transform stage failed on (`on_error = "dead_letter"` on the stage).
pub const TRANSFORM: &str = "transform";

/// The code of a row that follows a transform's dead letter of the same key.
pub const TRANSFORM_FOLLOWS: &str = "transform_follows";

/// The error of a sink handed a [`crate::Change::Refused`] row to apply: the runner's isolation writes those to
/// the sink's dead letters, so one reaching `apply` is a bug or a sink that keeps none (a config check refuses
/// that combination).
pub fn refused_row_reached(sink: &str) -> Error {
    Error::fatal(format!(
        "sink {sink} was handed a row a transform set aside (on_error = \"dead_letter\") to apply; it keeps no \
         dead letters"
    ))
}

/// Whether a letter with `code` holds the row as the source read it, to be run through the transforms on replay
/// (the others hold it as the sink received it).
pub fn before_transforms(code: &str) -> bool {
    code == TRANSFORM || code == TRANSFORM_FOLLOWS
}

/// What [`DeadLetter::change`] holds.
#[derive(Serialize, Deserialize)]
struct StoredChange {
    schema: TableSchema,
    op: RowOp,
}

impl DeadLetter {
    pub fn new(
        table: &TableSchema,
        op: &RowOp,
        tx: Option<&TxContext>,
        error: &Error,
        attempts: u32,
    ) -> DeadLetter {
        let change = serde_json::to_string(&StoredChange {
            schema: table.clone(),
            op: op.clone(),
        })
        .unwrap_or_default();
        let (key, moved_key) = row_keys(table, op);
        DeadLetter {
            table: table.id.clone(),
            key,
            moved_key,
            op: match op {
                RowOp::Insert { .. } => "insert",
                RowOp::Update { .. } => "update",
                RowOp::Delete { .. } => "delete",
                RowOp::Read { .. } => "read",
            }
            .to_owned(),
            row: row_json(table, op.row(), |_| true),
            change,
            error: error.to_string(),
            code: error.code.clone().unwrap_or_default(),
            position: tx.map_or_else(String::new, |t| t.commit_at.to_string()),
            commit_time: tx.and_then(|t| t.commit_time).and_then(|t| t.unix_micros()),
            attempts,
        }
    }

    /// Every key the letter holds back: its key, and a key change's new key.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.key).chain(self.moved_key.as_ref())
    }

    /// The change as it was refused: its table's schema then and the row operation.
    pub fn change(&self) -> Result<(TableSchema, RowOp)> {
        if self.change.is_empty() {
            return Err(Error::fatal(format!(
                "the dead letter of {} key {} holds no row (it was larger than its dead-letter topic accepts): \
                 discard it and bring the row back by re-copying the table (ferry snapshot --table {})",
                self.table, self.key, self.table
            )));
        }
        serde_json::from_str::<StoredChange>(&self.change)
            .map(|c| (c.schema, c.op))
            .map_err(|e| {
                Error::fatal_from(
                    format!(
                        "the dead letter of {} key {} is not readable (written by another Ferry version?)",
                        self.table, self.key
                    ),
                    e,
                )
            })
    }
}

/// A dead letter as a target holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDeadLetter {
    /// Its number in `ferry_dead_letters` (`--id`).
    pub id: i64,
    pub pipeline: String,
    pub sink: String,
    /// When it was written, as the target's clock said (ISO 8601, UTC).
    pub created_at: String,
    #[serde(flatten)]
    pub letter: DeadLetter,
}

/// A row change's key (a JSON array of its key columns' PostgreSQL text) and, for a change of key, the new key.
/// Tables without a key give `[]`: their rows have no order to keep.
pub fn row_keys(table: &TableSchema, op: &RowOp) -> (String, Option<String>) {
    let key = |row: &[Value]| -> String {
        let texts: Vec<serde_json::Value> = table
            .match_key()
            .iter()
            .map(|&c| {
                row.get(c)
                    .and_then(|v| pg_output_text(v, &table.columns[c].ty))
                    .map_or(serde_json::Value::Null, serde_json::Value::String)
            })
            .collect();
        serde_json::Value::Array(texts).to_string()
    };
    match op {
        RowOp::Update {
            before: Some(before),
            after,
        } => {
            let (old, new) = (key(before), key(after));
            let moved = (old != new).then_some(new);
            (old, moved)
        }
        op => (key(op.row()), None),
    }
}

/// `row` as a JSON object of column name to PostgreSQL text, the columns `keep` accepts; columns the source did
/// not send are left out.
pub fn row_json(
    table: &TableSchema,
    row: &[Value],
    keep: impl Fn(&crate::schema::Column) -> bool,
) -> String {
    let mut map = serde_json::Map::new();
    for (c, v) in table.columns.iter().zip(row) {
        if !keep(c) || *v == Value::Unchanged {
            continue;
        }
        let text = pg_output_text(v, &c.ty);
        map.insert(
            c.name.clone(),
            text.map_or(serde_json::Value::Null, serde_json::Value::String),
        );
    }
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap_with_jitter() {
        let r = Retry {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            attempts: 5,
        };
        for (n, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let d = r.delay(n).as_millis() as u64;
            assert!(
                (full / 2..=full).contains(&d),
                "retry {n}: {d} ms, expected {} to {full}",
                full / 2
            );
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = RowErrors {
            on_error: OnError::DeadLetter,
            rules: vec![OnErrorRule {
                key: "pipeline.on_error_rules[0]".into(),
                tables: vec!["public.audit*".into()],
                on_error: OnError::Skip,
            }],
            ..RowErrors::default()
        };
        assert_eq!(
            rules.for_table(&TableId::new("public", "audit_log")),
            OnError::Skip
        );
        assert_eq!(
            rules.for_table(&TableId::new("public", "orders")),
            OnError::DeadLetter
        );
    }
}
