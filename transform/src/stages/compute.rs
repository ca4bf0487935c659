//! `compute`: a new column from a CEL expression, of a declared type.

use std::sync::Arc;

use ferry_core::{Column, ColumnType, Row, RowOp, SchemaRef, Value};

use super::filter::check_expression;
use crate::expr::Expression;
use crate::stage::{reshape, RowContext, RowStage, StageError, Step};
use crate::types::{column_type, from_cel, spelling};

pub struct Compute {
    column: String,
    ty: ColumnType,
    expression: Arc<Expression>,
}

impl Compute {
    pub fn new(column: &str, ty: &str, expression: &str) -> Result<Compute, String> {
        Ok(Compute {
            column: column.to_owned(),
            ty: column_type(ty).ok_or_else(|| format!("unknown type {ty:?}"))?,
            expression: Arc::new(Expression::compile(expression)?),
        })
    }
}

impl RowStage for Compute {
    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        if input.columns.iter().any(|c| c.name == self.column) {
            return Err(format!(
                "column: {} already has a column {}",
                input.id, self.column
            ));
        }
        // Deletes compute the column from their old image, as an insert.
        check_expression(&self.expression, input, false, |v| {
            from_cel(v, &self.ty).map(drop)
        })
        .map_err(|e| format!("expression: {e}"))?;
        let mut columns = input.columns.clone();
        columns.push(Column::new(
            self.column.clone(),
            self.ty.clone(),
            spelling(&self.ty, input.dialect),
            true,
        ));
        let mut keep: Vec<Option<usize>> = (0..input.columns.len()).map(Some).collect();
        keep.push(None);
        Ok(Box::new(Planned {
            output: Arc::new(reshape(input, columns, &keep)),
            ty: self.ty.clone(),
            expression: self.expression.clone(),
        }))
    }
}

struct Planned {
    output: SchemaRef,
    ty: ColumnType,
    expression: Arc<Expression>,
}

impl Planned {
    fn value(&self, cx: &RowContext<'_>, op: &RowOp) -> Result<Value, StageError> {
        let v = self.expression.eval(cx, op)?;
        from_cel(&v, &self.ty).map_err(StageError::new)
    }

    /// The column's value in an old image: computed from that image alone (NULL if it cannot be).
    fn old(&self, cx: &RowContext<'_>, before: &Row) -> Value {
        self.value(
            cx,
            &RowOp::Insert {
                after: before.clone(),
            },
        )
        .unwrap_or(Value::Null)
    }
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
        let v = match &op {
            RowOp::Delete { before } => self.old(cx, before),
            // Every input unchanged (TOAST values not sent): so is the result, which the target keeps.
            RowOp::Update { before, after }
                if self
                    .expression
                    .reads_only_unchanged(cx.table, after, before.as_ref()) =>
            {
                Value::Unchanged
            }
            _ => match self.value(cx, &op) {
                Ok(v) => v,
                Err(e) => return Err(e.with_row(op)),
            },
        };
        out.push(match op {
            RowOp::Insert { mut after } => {
                after.push(v);
                RowOp::Insert { after }
            }
            RowOp::Read { mut after } => {
                after.push(v);
                RowOp::Read { after }
            }
            RowOp::Update { before, mut after } => {
                let before = before.map(|mut b| {
                    let old = self.old(cx, &b);
                    b.push(old);
                    b
                });
                after.push(v);
                RowOp::Update { before, after }
            }
            RowOp::Delete { mut before } => {
                before.push(v);
                RowOp::Delete { before }
            }
        });
        Ok(())
    }
}
