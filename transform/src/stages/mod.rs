//! The stage kinds, each built from its `[[transform]]` table.

mod columns;
mod compute;
mod convert;
mod filter;
mod mask;
mod route;
mod tables;

use ferry_config::{ColumnRef, FilterConfig, TransformConfig, TransformKind};
use ferry_core::{ColumnType, Row, RowOp, TableId, TableSchema, Value};

use crate::stage::RowStage;

pub use tables::{ExcludeColumns, Tables};

/// Builds the stage a `[[transform]]` table describes.
pub fn build(cfg: &TransformConfig) -> Result<Box<dyn RowStage>, String> {
    Ok(match &cfg.kind {
        TransformKind::Filter { predicate, rows } => {
            Box::new(filter::Filter::new(predicate, *rows)?)
        }
        TransformKind::Route { to } => Box::new(route::Route::new(to)?),
        TransformKind::RenameColumns { renames } => Box::new(columns::Rename {
            renames: renames.clone(),
        }),
        TransformKind::DropColumns { columns } => Box::new(columns::Select {
            columns: columns.clone(),
            keep: false,
        }),
        TransformKind::KeepColumns { columns } => Box::new(columns::Select {
            columns: columns.clone(),
            keep: true,
        }),
        TransformKind::Convert {
            columns,
            to,
            zone,
            trim,
            case,
        } => Box::new(convert::Convert::new(
            columns,
            to.as_deref(),
            zone.as_deref(),
            *trim,
            *case,
        )?),
        TransformKind::Mask { columns, with } => Box::new(mask::Mask {
            columns: columns.clone(),
            with: with.clone(),
        }),
        TransformKind::Compute {
            column,
            column_type,
            expression,
        } => Box::new(compute::Compute::new(column, column_type, expression)?),
    })
}

/// The stages today's `[filter]` section stands for (table include / exclude lists, excluded columns).
pub fn from_filter(cfg: &FilterConfig) -> Vec<Box<dyn RowStage>> {
    let mut out: Vec<Box<dyn RowStage>> = Vec::new();
    if cfg.include_tables.is_some() || !cfg.exclude_tables.is_empty() {
        out.push(Box::new(Tables {
            include: cfg.include_tables.clone(),
            exclude: cfg.exclude_tables.clone(),
        }));
    }
    if !cfg.exclude_columns.is_empty() {
        out.push(Box::new(ExcludeColumns(cfg.exclude_columns.clone())));
    }
    out
}

/// Whether a `schema.table` glob matches `table`.
pub fn matches(pattern: &str, table: &TableId) -> bool {
    table.matches_glob(pattern)
}

/// The columns of `refs` that apply to `table`.
pub fn columns_for<'a>(refs: &'a [ColumnRef], table: &TableId) -> Vec<&'a str> {
    refs.iter()
        .filter(|r| r.table.as_deref().is_none_or(|p| matches(p, table)))
        .map(|r| r.column.as_str())
        .collect()
}

/// The indexes in `table` of `names`, or the message naming those it does not have.
pub fn indexes(table: &TableSchema, names: &[&str]) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match table.column_index(n) {
            Some(i) => out.push(i),
            None => missing.push(*n),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(no_such_columns(table, &missing))
    }
}

/// The message for columns a stage names that `table` does not have.
pub fn no_such_columns(table: &TableSchema, missing: &[&str]) -> String {
    format!(
        "{} has no column {} (its columns: {})",
        table.id,
        missing.join(", "),
        table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The columns of `refs` that apply to `input`, as indexes; a named column it lacks is a `columns:` error.
pub fn targets(refs: &[ColumnRef], input: &TableSchema) -> Result<Vec<usize>, String> {
    indexes(input, &columns_for(refs, &input.id)).map_err(|e| format!("columns: {e}"))
}

/// The columns a target finds rows by: the primary key, else the replica identity's columns.
pub fn key_columns(table: &TableSchema) -> &[usize] {
    if table.primary_key.is_empty() {
        &table.identity
    } else {
        &table.primary_key
    }
}

/// A row of plausible non-NULL values for `table`, to try an expression on when it is planned.
pub fn sample_row(table: &TableSchema) -> Row {
    table.columns.iter().map(|c| sample(&c.ty)).collect()
}

fn sample(ty: &ColumnType) -> Value {
    use ColumnType as T;
    match ty {
        T::Bool => Value::Bool(true),
        T::Int2 | T::Int4 | T::Int8 => Value::Int(1),
        T::Float4 | T::Float8 => Value::Float(1.5),
        T::Numeric => Value::Decimal(ferry_core::Decimal::Finite("1".into())),
        T::Bytes => Value::Bytes(b"1".to_vec()),
        T::Json | T::Jsonb => Value::Json("{}".into()),
        T::Timestamp => Value::Timestamp(ferry_core::Timestamp::UNIX_EPOCH),
        T::TimestampTz => Value::TimestampTz(ferry_core::Timestamp::UNIX_EPOCH),
        T::Array(inner) => Value::Array(vec![sample(inner)]),
        _ => Value::Text("1".into()),
    }
}

/// A transaction context with every field set, to try an expression on.
pub fn sample_tx() -> ferry_core::TxContext {
    ferry_core::TxContext {
        commit_time: Some(ferry_core::Timestamp::UNIX_EPOCH),
        xid: Some(1),
        origin: ferry_core::Origin {
            name: Some("origin".into()),
            server_id: Some(1),
            gtid: Some("0-1-1".into()),
        },
        ..ferry_core::TxContext::at(ferry_core::Position::pg(ferry_core::Lsn(1)))
    }
}

/// Sample changes of every kind for `table`, with the old images its source sends: (what the change is called in
/// messages, the change).
pub fn sample_ops(table: &TableSchema) -> Vec<(&'static str, RowOp)> {
    let row = sample_row(table);
    // An old image holds what the source sends for it; the other columns arrive as NULL.
    let old: Row = row
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if table.old_value_known(i) {
                v.clone()
            } else {
                Value::Null
            }
        })
        .collect();
    let mut ops = vec![("inserts", RowOp::Insert { after: row.clone() })];
    if table.old_image_complete() {
        ops.push((
            "updates",
            RowOp::Update {
                before: Some(old.clone()),
                after: row,
            },
        ));
    } else {
        // PostgreSQL without REPLICA IDENTITY FULL: no old image, or the old key when the key changes.
        ops.push((
            "updates",
            RowOp::Update {
                before: None,
                after: row.clone(),
            },
        ));
        ops.push((
            "key changes",
            RowOp::Update {
                before: Some(old.clone()),
                after: row,
            },
        ));
    }
    ops.push(("deletes", RowOp::Delete { before: old }));
    ops
}
