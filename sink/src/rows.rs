//! How a row change becomes target writes, shared by the SQL sinks.

use ferry_core::{Row, RowOp, TableSchema, Value};

/// What a sink does for one row change.
#[derive(Debug, PartialEq)]
pub enum RowAction<'a> {
    /// Insert, or replace the row with the same key.
    Upsert(&'a Row),
    /// Update the row with this key, setting only the columns that are not [`Value::Unchanged`].
    UpdateSent(&'a Row),
    /// Delete the row with the key in these values.
    Delete(&'a Row),
    /// The key changed: delete the old row, then upsert the new one.
    Rekey { old: &'a Row, new: &'a Row },
    /// Tables without a primary key: insert a row.
    InsertNoKey(&'a Row),
    /// Tables without a primary key: remove one row equal to `old` (all columns the source sent), then insert
    /// `new` if given.
    ReplaceNoKey { old: &'a Row, new: Option<&'a Row> },
}

/// Classifies a change for `table`.
pub fn classify<'a>(table: &TableSchema, op: &'a RowOp) -> RowAction<'a> {
    if !table.has_primary_key() {
        return match op {
            RowOp::Insert { after } | RowOp::Read { after } => RowAction::InsertNoKey(after),
            RowOp::Update {
                before: Some(old),
                after,
            } => RowAction::ReplaceNoKey {
                old,
                new: Some(after),
            },
            // Without an old row there is nothing to match: treat it as a new row (REPLICA IDENTITY NOTHING).
            RowOp::Update {
                before: None,
                after,
            } => RowAction::InsertNoKey(after),
            RowOp::Delete { before } => RowAction::ReplaceNoKey {
                old: before,
                new: None,
            },
        };
    }
    match op {
        RowOp::Insert { after } | RowOp::Read { after } => RowAction::Upsert(after),
        RowOp::Delete { before } => RowAction::Delete(before),
        RowOp::Update { before, after } => {
            let key_changed = before.as_ref().is_some_and(|old| {
                table
                    .primary_key
                    .iter()
                    .any(|&k| old[k] != after[k] && old[k] != Value::Unchanged)
            });
            match before {
                Some(old) if key_changed => RowAction::Rekey { old, new: after },
                _ if after.contains(&Value::Unchanged) => RowAction::UpdateSent(after),
                _ => RowAction::Upsert(after),
            }
        }
    }
}

/// Indexes of the columns a row carries values for (not `Unchanged`).
pub fn sent_columns(row: &Row) -> Vec<usize> {
    row.iter()
        .enumerate()
        .filter(|(_, v)| **v != Value::Unchanged)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{Column, ColumnType, TableId};

    fn table(pk: Vec<usize>) -> TableSchema {
        let col = |n: &str| Column {
            name: n.into(),
            ty: ColumnType::Int8,
            source_type: "bigint".into(),
            nullable: true,
        };
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![col("id"), col("v")],
            primary_key: pk,
            version: 1,
            dialect: Default::default(),
        }
    }

    #[test]
    fn key_change_becomes_delete_then_upsert() {
        let op = RowOp::Update {
            before: Some(vec![Value::Int(1), Value::Null]),
            after: vec![Value::Int(2), Value::Int(5)],
        };
        assert!(matches!(
            classify(&table(vec![0]), &op),
            RowAction::Rekey { .. }
        ));
        let same = RowOp::Update {
            before: None,
            after: vec![Value::Int(2), Value::Unchanged],
        };
        assert!(matches!(
            classify(&table(vec![0]), &same),
            RowAction::UpdateSent(_)
        ));
        assert!(matches!(
            classify(&table(vec![]), &same),
            RowAction::InsertNoKey(_)
        ));
    }
}
