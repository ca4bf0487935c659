//! `filter`: keeps the rows for which a CEL predicate holds.

use cel::Value as Cel;
use ferry_core::{RowOp, SchemaRef, Value};

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
                    "deletes" => " (after is null for deletes: guard with op == 'd' || …, or use mode = \"rows\", where deletes always pass; before holds only the replica identity's columns unless REPLICA IDENTITY FULL)",
                    "inserts" => " (before is null for inserts and snapshot reads)",
                    "updates" => " (before is null for updates unless the table has REPLICA IDENTITY FULL: guard with before != null && …)",
                    "key changes" => " (before holds only the replica identity's columns when the key changes, unless REPLICA IDENTITY FULL)",
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

/// An update's unchanged values taken from its old image where that image holds them (REPLICA IDENTITY FULL):
/// the same values, so the row is whole.
fn fill_unchanged(table: &ferry_core::TableSchema, op: RowOp) -> RowOp {
    match op {
        RowOp::Update {
            before: Some(before),
            mut after,
        } => {
            for (i, v) in after.iter_mut().enumerate() {
                if *v == Value::Unchanged && table.old_value_known(i) {
                    if let Some(old) = before.get(i).filter(|o| **o != Value::Unchanged) {
                        *v = old.clone();
                    }
                }
            }
            RowOp::Update {
                before: Some(before),
                after,
            }
        }
        other => other,
    }
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
        let op = if self.rows {
            fill_unchanged(cx.table, op)
        } else {
            op
        };
        // Row mode, an update with values the source did not send (unchanged TOAST values) and no old image to
        // take them from: whether the row was in the selection before is unknown, so a row entering it would
        // reach the target incomplete, and a predicate reading those values cannot be evaluated.
        let unsent: Vec<&str> = match &op {
            RowOp::Update { after, .. } if self.rows => after
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == Value::Unchanged)
                .map(|(i, _)| cx.table.columns[i].name.as_str())
                .collect(),
            _ => Vec::new(),
        };
        let incomplete = |why: &str| {
            StageError::new(format!(
                "mode = \"rows\" {why}, and the source did not send {} (unchanged TOAST values): set REPLICA \
                 IDENTITY FULL on the table so that updates carry them, or use mode = \"changes\"",
                unsent.join(", ")
            ))
        };
        if unsent.iter().any(|c| self.predicate.reads_column(c)) {
            return Err(incomplete("cannot evaluate the predicate on this update").with_row(op));
        }
        match self.predicate.eval(cx, &op) {
            Ok(Cel::Bool(true)) if !unsent.is_empty() => {
                return Err(incomplete(
                    "cannot tell whether this updated row is entering the selection (the target would then need \
                     all of it)",
                )
                .with_row(op))
            }
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
