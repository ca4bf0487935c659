//! `rename_columns`, `drop_columns`, `keep_columns`, and the projection they share with `[filter]`'s
//! `exclude_columns`.

use std::sync::Arc;

use ferry_config::ColumnRef;
use ferry_core::{RowOp, SchemaRef, TableSchema, Value};

use super::{columns_for, indexes, key_columns};
use crate::stage::{map_images, reshape, RowContext, RowStage, StageError, Step, Unchanged};

/// Renames columns; rows pass unchanged (values are by position).
pub struct Rename {
    pub renames: Vec<(String, String)>,
}

impl RowStage for Rename {
    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        let mut schema = TableSchema::clone(input);
        for (old, new) in &self.renames {
            // A rename names a column of some tables in scope, not necessarily of all.
            if let Some(c) = schema.columns.iter_mut().find(|c| &c.name == old) {
                c.name = new.clone();
                c.previous_name = None;
            }
        }
        let mut names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "columns: {} would have two columns named {}",
                input.id, w[0]
            ));
        }
        Ok(Box::new(Unchanged(Arc::new(schema))))
    }
}

/// `drop_columns` (`keep = false`) or `keep_columns` (`keep = true`).
pub struct Select {
    pub columns: Vec<ColumnRef>,
    pub keep: bool,
}

impl RowStage for Select {
    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        let named = columns_for(&self.columns, &input.id);
        let named = if self.keep {
            indexes(input, &named).map_err(|e| format!("columns: {e}"))?
        } else {
            // Dropping a column the table does not have is not an error: it may be gone already.
            named
                .iter()
                .filter_map(|n| input.columns.iter().position(|c| c.name == *n))
                .collect()
        };
        let kept: Vec<usize> = (0..input.columns.len())
            .filter(|i| named.contains(i) == self.keep)
            .collect();
        project(input, kept)
    }
}

/// A step keeping the input columns `kept`, in their order. Refuses to drop a key column: targets could no
/// longer find rows.
pub fn project(input: &SchemaRef, kept: Vec<usize>) -> Result<Box<dyn Step>, String> {
    if kept.len() == input.columns.len() {
        return Ok(Box::new(Unchanged(input.clone())));
    }
    if let Some(k) = key_columns(input).iter().find(|k| !kept.contains(k)) {
        return Err(format!(
            "columns: would remove {}, a key column of {}: targets find rows by it",
            input.columns[*k].name, input.id
        ));
    }
    if kept.is_empty() {
        return Err(format!(
            "columns: would remove every column of {}",
            input.id
        ));
    }
    let keep: Vec<Option<usize>> = kept.iter().copied().map(Some).collect();
    let columns = kept.iter().map(|&i| input.columns[i].clone()).collect();
    Ok(Box::new(Project {
        output: Arc::new(reshape(input, columns, &keep)),
        kept,
    }))
}

struct Project {
    output: SchemaRef,
    kept: Vec<usize>,
}

impl Step for Project {
    fn output(&self) -> &SchemaRef {
        &self.output
    }

    fn apply(&self, _: &RowContext<'_>, op: RowOp, out: &mut Vec<RowOp>) -> Result<(), StageError> {
        out.push(map_images(op, |row| {
            let mut row: Vec<Option<Value>> = row.into_iter().map(Some).collect();
            Ok(self
                .kept
                .iter()
                .filter_map(|&i| row.get_mut(i).and_then(Option::take))
                .collect())
        })?);
        Ok(())
    }
}
