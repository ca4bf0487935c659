//! `[filter]`'s table lists and excluded columns, as chain stages.

use ferry_core::{SchemaRef, TableId};

use super::columns::project;
use crate::stage::{RowStage, Step};

/// Drops every change of tables not included, or excluded.
pub struct Tables {
    pub include: Option<Vec<TableId>>,
    pub exclude: Vec<TableId>,
}

impl RowStage for Tables {
    fn table(&self, table: &TableId) -> Option<TableId> {
        (self.include.as_ref().is_none_or(|i| i.contains(table)) && !self.exclude.contains(table))
            .then(|| table.clone())
    }

    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(crate::stage::Unchanged(input.clone())))
    }
}

/// `[filter] exclude_columns`: removes the listed columns of the listed tables.
pub struct ExcludeColumns(pub Vec<(TableId, String)>);

impl RowStage for ExcludeColumns {
    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        let kept = (0..input.columns.len())
            .filter(|&i| {
                !self
                    .0
                    .iter()
                    .any(|(t, c)| *t == input.id && *c == input.columns[i].name)
            })
            .collect();
        project(input, kept)
    }
}
