//! The row-stage contract.

use ferry_core::{RowOp, SchemaRef, TableId, TableSchema, TxContext};

/// What a stage sees of the row's surroundings.
pub struct RowContext<'a> {
    /// The source transaction (its commit time, origin); `None` only before a source's first `Begin`.
    pub tx: Option<&'a TxContext>,
    /// The table as it enters this stage.
    pub table: &'a TableSchema,
}

/// A stage cannot transform one row (a value that does not convert, an expression that fails on it). The chain
/// adds the stage, the table and the row's key, and hands the row to the `on_error` policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    pub message: String,
    /// The row as it entered the stage, when the stage could give it back (a dead-letter queue stores it).
    pub row: Option<RowOp>,
}

impl StageError {
    /// An error without the row.
    pub fn new(message: impl Into<String>) -> StageError {
        StageError {
            message: message.into(),
            row: None,
        }
    }

    /// The same error, carrying `row`.
    pub fn with_row(self, row: RowOp) -> StageError {
        StageError {
            row: Some(row),
            ..self
        }
    }
}

/// One kind of transform stage, built from its config.
pub trait RowStage: Send + Sync {
    /// The table `table`'s changes continue as (`route` renames it), or `None` when the stage drops the table
    /// whole. Applied to truncates, quarantines and re-copies too, so they follow their rows.
    fn table(&self, table: &TableId) -> Option<TableId> {
        Some(table.clone())
    }

    /// Plans the stage for one schema version of a table. An error is a configuration error (a column the
    /// stage names that the table does not have, an expression of the wrong type): the message says what.
    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String>;
}

/// A stage planned for one schema version.
pub trait Step: Send + Sync {
    /// The schema of the rows this step emits.
    fn output(&self) -> &SchemaRef;

    /// Whether rows pass this step unchanged (only the schema may differ): the chain skips it per row.
    fn passes_rows(&self) -> bool {
        false
    }

    /// Appends what `op` becomes to `out`: nothing (filtered), one row, or several.
    fn apply(&self, cx: &RowContext<'_>, op: RowOp, out: &mut Vec<RowOp>)
        -> Result<(), StageError>;
}

/// A step that passes rows unchanged (a stage with nothing to do for this table).
pub struct Unchanged(pub SchemaRef);

impl Step for Unchanged {
    fn output(&self) -> &SchemaRef {
        &self.0
    }

    fn passes_rows(&self) -> bool {
        true
    }

    fn apply(&self, _: &RowContext<'_>, op: RowOp, out: &mut Vec<RowOp>) -> Result<(), StageError> {
        out.push(op);
        Ok(())
    }
}

/// Applies `f` to every row image of `op` (before and after).
pub fn map_images(
    op: RowOp,
    mut f: impl FnMut(Vec<ferry_core::Value>) -> Result<Vec<ferry_core::Value>, StageError>,
) -> Result<RowOp, StageError> {
    Ok(match op {
        RowOp::Insert { after } => RowOp::Insert { after: f(after)? },
        RowOp::Read { after } => RowOp::Read { after: f(after)? },
        RowOp::Update { before, after } => RowOp::Update {
            before: before.map(&mut f).transpose()?,
            after: f(after)?,
        },
        RowOp::Delete { before } => RowOp::Delete { before: f(before)? },
    })
}

/// A new schema version of `input` with `columns` and key indexes remapped by `keep` (output column i is input
/// column `keep[i]`, or a new column when `None`).
pub fn reshape(
    input: &TableSchema,
    columns: Vec<ferry_core::Column>,
    keep: &[Option<usize>],
) -> TableSchema {
    let remap = |idx: &[usize]| -> Vec<usize> {
        idx.iter()
            .filter_map(|k| keep.iter().position(|i| *i == Some(*k)))
            .collect()
    };
    TableSchema {
        id: input.id.clone(),
        primary_key: remap(&input.primary_key),
        identity: remap(&input.identity),
        columns,
        version: input.version,
        relation_id: input.relation_id,
        lineage: input.lineage.clone(),
        dialect: input.dialect,
        keeps_absent_columns: input.keeps_absent_columns,
    }
}
