//! `filter`: keeps the rows for which a CEL predicate holds.

use cel::Value as Cel;
use ferry_core::{RowOp, SchemaRef};

use crate::expr::Expression;
use crate::stage::{RowContext, RowStage, StageError, Step};
use crate::types::cel_type;

pub struct Filter {
    predicate: std::sync::Arc<Expression>,
    /// `mode = "rows"`: the predicate selects rows; updates leaving the selection become deletes.
    rows: bool,
}

impl Filter {
    pub fn new(predicate: &str, rows: bool) -> Result<Filter, String> {
        Ok(Filter {
            predicate: std::sync::Arc::new(Expression::compile(predicate)?),
            rows,
        })
    }
}

impl RowStage for Filter {
    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        check_expression(&self.predicate, input, !self.rows, |v| match v {
            Cel::Bool(_) => Ok(()),
            other => Err(format!("gives {}, not a bool", cel_type(other))),
        })
        .map_err(|e| format!("where: {e}"))?;
        Ok(Box::new(Planned {
            predicate: self.predicate.clone(),
            output: input.clone(),
            rows: self.rows,
        }))
    }
}

/// Checks `expr` against `table`: every column it names exists, and on sample rows of each kind of change it
/// runs without a type error and its result passes `result`.
pub fn check_expression(
    expr: &Expression,
    table: &SchemaRef,
    deletes: bool,
    result: impl Fn(&Cel) -> Result<(), String>,
) -> Result<(), String> {
    let unknown = expr.unknown_columns(table);
    if !unknown.is_empty() {
        let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
        return Err(super::no_such_columns(table, &unknown));
    }
    let tx = super::sample_tx();
    for (kind, op) in super::sample_ops(table) {
        if kind == "deletes" && !deletes {
            continue;
        }
        let cx = RowContext {
            tx: Some(&tx),
            table,
        };
        match expr.eval_checked(&cx, &op) {
            Ok(v) => result(&v)
                .map_err(|e| format!("{:?} {e} (for {kind} of {})", expr.text, table.id))?,
            Err(Some(e)) => {
                let hint = match kind {
                    "deletes" => " (after is null for deletes: guard with op == 'd' || …, or use mode = \"rows\", where deletes always pass)",
                    "inserts" => " (before is null for inserts and snapshot reads)",
                    _ => "",
                };
                return Err(format!(
                    "{:?} fails for {kind} of {}: {e}{hint}",
                    expr.text, table.id
                ));
            }
            Err(None) => {}
        }
    }
    Ok(())
}

struct Planned {
    predicate: std::sync::Arc<Expression>,
    output: SchemaRef,
    rows: bool,
}

impl Step for Planned {
    fn output(&self) -> &SchemaRef {
        &self.output
    }

    fn apply(
        &self,
        cx: &RowContext<'_>,
        op: RowOp,
        out: &mut Vec<RowOp>,
    ) -> Result<(), StageError> {
        // Row mode: a delete removes a row the target may hold, whatever it was.
        if self.rows && matches!(op, RowOp::Delete { .. }) {
            out.push(op);
            return Ok(());
        }
        match self.predicate.eval(cx, &op) {
            Ok(Cel::Bool(true)) => out.push(op),
            Ok(Cel::Bool(false)) => match op {
                // The row left the selection: the target must not keep it.
                RowOp::Update { before, after } if self.rows => out.push(RowOp::Delete {
                    before: before.unwrap_or(after),
                }),
                _ => {}
            },
            Ok(other) => {
                return Err(StageError::new(format!(
                    "the predicate gave {}, not a bool",
                    cel_type(&other)
                ))
                .with_row(op))
            }
            Err(e) => return Err(e.with_row(op)),
        }
        Ok(())
    }
}
