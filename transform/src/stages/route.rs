//! `route`: renames tables (a `schema.table` template, or a CEL expression over `table` and `source`).

use std::sync::Arc;

use cel::Value as Cel;
use ferry_config::RouteTo;
use ferry_core::{RowOp, SchemaRef, TableId, TableSchema};

use crate::expr::Expression;
use crate::stage::{RowContext, RowStage, Step, Unchanged};

pub enum Route {
    Template(String),
    Expression(Expression),
}

impl Route {
    pub fn new(to: &RouteTo) -> Result<Route, String> {
        Ok(match to {
            RouteTo::Template(t) => Route::Template(t.clone()),
            RouteTo::Expression(e) => Route::Expression(Expression::compile(e)?),
        })
    }

    fn target(&self, table: &TableId) -> Result<TableId, String> {
        let name = match self {
            Route::Template(t) => t
                .replace("{schema}", &table.schema)
                .replace("{table}", &table.name),
            Route::Expression(e) => {
                let schema = TableSchema::named(table.clone(), Default::default());
                let cx = RowContext {
                    tx: None,
                    table: &schema,
                };
                match e.eval(&cx, &RowOp::Insert { after: Vec::new() }) {
                    Ok(Cel::String(s)) => s.to_string(),
                    Ok(other) => {
                        return Err(format!(
                            "{:?} gave {} for {table}, not a \"schema.table\" string",
                            e.text,
                            crate::types::cel_type(&other)
                        ))
                    }
                    Err(err) => return Err(format!("{:?} fails for {table}: {err}", e.text)),
                }
            }
        };
        TableId::parse(&name, &table.schema)
            .ok_or_else(|| format!("routes {table} to {name:?}, not a \"schema.table\" name"))
    }
}

impl RowStage for Route {
    fn table(&self, table: &TableId) -> Option<TableId> {
        // An expression that fails is reported by `plan`; here the table keeps its name.
        Some(self.target(table).unwrap_or_else(|_| table.clone()))
    }

    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        let key = match self {
            Route::Template(_) => "to",
            Route::Expression(_) => "to_expression",
        };
        let id = self.target(&input.id).map_err(|e| format!("{key}: {e}"))?;
        let mut schema = TableSchema::clone(input);
        schema.id = id;
        Ok(Box::new(Unchanged(Arc::new(schema))))
    }
}
