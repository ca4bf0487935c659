//! How a row change becomes target writes, shared by the SQL sinks.

use ferry_core::{Error, Row, RowOp, TableSchema, Value};

/// What a sink does for one row change.
#[derive(Debug, PartialEq)]
pub enum RowAction<'a> {
    /// Insert, or replace the row with the same key.
    Upsert(&'a Row),
    /// Update the row with this key, setting only the columns that are not [`Value::Unchanged`].
    UpdateSent(&'a Row),
    /// Delete the row with the key in these values.
    Delete(&'a Row),
    /// Update the row found by `old`'s [`TableSchema::match_key`] values in place, setting every column `new`
    /// carries (not `Unchanged`), the key included: the key changed, or the row is found by an identity index
    /// other than the key. The row moves rather than being deleted and re-inserted, so values the source did not
    /// send again (unchanged TOAST) stay. When no target row matches and `new` is complete, the sink upserts it;
    /// when it is not, that is an error naming the table and key, never a row with NULLs.
    Move { old: &'a Row, new: &'a Row },
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
        // The old image carries the identity index's columns, not the key: the key may have changed unseen.
        RowOp::Update { before, after } if table.matches_by_identity_index() => RowAction::Move {
            old: before.as_ref().unwrap_or(after),
            new: after,
        },
        RowOp::Update { before, after } => {
            let key_changed = before.as_ref().is_some_and(|old| {
                table
                    .primary_key
                    .iter()
                    .any(|&k| old[k] != after[k] && old[k] != Value::Unchanged)
            });
            match before {
                Some(old) if key_changed => RowAction::Move { old, new: after },
                _ if after.contains(&Value::Unchanged) => RowAction::UpdateSent(after),
                _ => RowAction::Upsert(after),
            }
        }
    }
}

/// Whether the row carries every column's value (nothing `Unchanged`), so it can be written on its own.
pub fn is_complete(row: &Row) -> bool {
    !row.contains(&Value::Unchanged)
}

/// `(a, b) = (1, 'x')` for the [`TableSchema::match_key`] columns of `row`, for error messages.
pub fn describe_key(table: &TableSchema, row: &Row) -> String {
    let key = table.match_key();
    let names: Vec<&str> = key
        .iter()
        .map(|&k| table.columns[k].name.as_str())
        .collect();
    // As PostgreSQL prints them, numbers bare and everything else quoted.
    let values: Vec<String> = key
        .iter()
        .map(
            |&k| match ferry_core::pg_text::pg_output_text(&row[k], &table.columns[k].ty) {
                None => "NULL".to_owned(),
                Some(t)
                    if matches!(row[k], Value::Int(_) | Value::Float(_) | Value::Decimal(_)) =>
                {
                    t
                }
                Some(t) => format!("'{}'", t.replace('\'', "''")),
            },
        )
        .collect();
    format!("({}) = ({})", names.join(", "), values.join(", "))
}

/// A [`RowAction::Move`] found no target row and cannot write the row anew: an error, except in a re-copy's
/// shadow table or a table an initial copy fills in place (`lacks_rows`, see [`crate::recopy::fills_in_place`]),
/// which lack the rows not copied yet (the source reads such a row again, see `ferry_source::postgres::recopy`).
pub fn missing_row(table: &TableSchema, old: &Row, lacks_rows: bool) -> Result<(), Error> {
    if lacks_rows || ferry_core::is_recopy_shadow(&table.id) {
        return Ok(());
    }
    Err(missing_row_error(table, old))
}

fn missing_row_error(table: &TableSchema, old: &Row) -> Error {
    Error::fatal(format!(
        "table {}: no target row has {}, and the update does not carry every column (unchanged TOAST or a \
         minimal row image), so it cannot be written anew: the target has diverged from the source; re-copy the \
         table (`ferry reset --config <file> --yes` takes a new snapshot)",
        table.id,
        describe_key(table, old)
    ))
}

/// Raw COPY lines ([`ferry_core::Change::CopyRows`]) reached a sink that is not PostgreSQL: the source sends them
/// only when every sink is, so this is a bug, stopped loudly rather than rows lost.
pub fn raw_copy_reached(sink: &str) -> Error {
    Error::fatal(format!(
        "sink {sink}: snapshot rows arrived as raw PostgreSQL COPY lines, which only a PostgreSQL sink loads (a \
         bug: please report it)"
    ))
}

/// The error for a source value that `target` cannot hold (a year past 9999 in a MySQL DATETIME, an instant
/// past an i64 of microseconds in a Kafka `MicroTimestamp`): it stops the pipeline naming the table, the row's
/// key, the column and the value (`why` quotes it), rather than writing a different value.
pub fn unwritable(target: &str, table: &TableSchema, row: &Row, column: usize, why: &str) -> Error {
    let key = if table.match_key().is_empty() {
        String::new()
    } else {
        format!(", row {}", describe_key(table, row))
    };
    Error::fatal(format!(
        "table {}{key}, column {}: {why}; {target} cannot hold it, and Ferry does not write a different value: \
         change the value at the source, or replicate the table without this sink",
        table.id, table.columns[column].name
    ))
}

/// The error for a keyless table's update or delete that found no target row equal to the old row.
///
/// A per-row error: under `on_error = "dead_letter"` or `"skip"` the change is set aside like a refused row (its
/// row may itself be a dead letter); under `"halt"` the pipeline stops with this message.
pub fn missing_old_row(table: &TableSchema) -> Error {
    let message = format!(
        "table {} (no primary key): no target row equals the old row of an update or delete: the target has \
         diverged from the source (or the row was set aside); re-copy the table (`ferry snapshot --table`, or \
         `ferry reset --config <file> --yes` for a new snapshot)",
        table.id
    );
    Error::row(
        message.clone(),
        "no_matching_row",
        std::io::Error::other(message),
    )
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
        let col = |n: &str| Column::new(n, ColumnType::Int8, "bigint", true);
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![col("id"), col("v")],
            primary_key: pk,
            identity: Vec::new(),
            version: 1,
            relation_id: None,
            lineage: Default::default(),
            dialect: Default::default(),
            keeps_absent_columns: false,
        }
    }

    #[test]
    fn key_change_moves_the_row() {
        let op = RowOp::Update {
            before: Some(vec![Value::Int(1), Value::Null]),
            after: vec![Value::Int(2), Value::Int(5)],
        };
        assert!(matches!(
            classify(&table(vec![0]), &op),
            RowAction::Move { .. }
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

    #[test]
    fn an_identity_index_other_than_the_key_moves_by_that_index() {
        let mut t = table(vec![0]);
        t.identity = vec![1];
        assert_eq!(t.match_key(), &[1]);
        // Only the key changed: no old image, the identity values are the new row's.
        let op = RowOp::Update {
            before: None,
            after: vec![Value::Int(40), Value::Int(7)],
        };
        assert!(
            matches!(classify(&t, &op), RowAction::Move { old, .. } if old[1] == Value::Int(7))
        );
        // FULL identity covers the key: rows are found by the key.
        t.identity = vec![0, 1];
        assert_eq!(t.match_key(), &[0]);
    }
}
