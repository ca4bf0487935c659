//! `convert`: casts columns to another type, trims them, changes their case.

use std::sync::Arc;

use ferry_config::{Case, ColumnRef};
use ferry_core::{ColumnType, RowOp, SchemaRef, TableSchema, Value};

use crate::stage::{RowContext, RowStage, StageError, Step, Unchanged};
use crate::types::{cast, column_type, retype};

pub struct Convert {
    columns: Vec<ColumnRef>,
    to: Option<ColumnType>,
    zone: Option<chrono_tz::Tz>,
    trim: bool,
    case: Option<Case>,
}

impl Convert {
    pub fn new(
        columns: &[ColumnRef],
        to: Option<&str>,
        zone: Option<&str>,
        trim: bool,
        case: Option<Case>,
    ) -> Result<Convert, String> {
        Ok(Convert {
            columns: columns.to_vec(),
            to: to
                .map(|t| column_type(t).ok_or_else(|| format!("unknown type {t:?}")))
                .transpose()?,
            zone: zone
                .map(|z| z.parse().map_err(|_| format!("unknown time zone {z:?}")))
                .transpose()?,
            trim,
            case,
        })
    }
}

impl RowStage for Convert {
    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        let targets = super::targets(&self.columns, input)?;
        if targets.is_empty() {
            return Ok(Box::new(Unchanged(input.clone())));
        }
        let mut schema = TableSchema::clone(input);
        for &i in &targets {
            let col = &input.columns[i];
            // A key must stay one-to-one: trimming, case folding or parsing text ("01" and "1") could merge two
            // rows in the target. Its text form is one-to-one.
            let lossless = !self.trim
                && self.case.is_none()
                && self
                    .to
                    .as_ref()
                    .is_none_or(|t| *t == ColumnType::Text || *t == col.ty);
            if super::key_columns(input).contains(&i) && !lossless {
                return Err(format!(
                    "columns: {}.{} is a key column, which targets find rows by: a key may only be converted to \
                     text (trim, case and other casts could make two keys one)",
                    input.id, col.name
                ));
            }
            if (self.trim || self.case.is_some())
                && self.to.as_ref().unwrap_or(&col.ty) != &ColumnType::Text
            {
                return Err(format!(
                    "columns: trim and case apply to text, and {}.{} is {} (convert it with to = \"text\" first)",
                    input.id, col.name, col.source_type
                ));
            }
            if let Some(ty) = &self.to {
                schema.columns[i] = retype(col, ty.clone(), input.dialect);
            }
        }
        Ok(Box::new(Planned {
            input: input.clone(),
            output: Arc::new(schema),
            targets,
            stage: Convert {
                columns: Vec::new(),
                to: self.to.clone(),
                zone: self.zone,
                trim: self.trim,
                case: self.case,
            },
        }))
    }
}

struct Planned {
    input: SchemaRef,
    output: SchemaRef,
    targets: Vec<usize>,
    stage: Convert,
}

impl Planned {
    /// Converts `v`, the value of input column `i`.
    fn convert(&self, v: Value, i: usize) -> Result<Value, String> {
        let mut v = match &self.stage.to {
            Some(ty) => cast(v, &self.input.columns[i].ty, ty, self.stage.zone)?,
            None => v,
        };
        if let Value::Text(s) = &mut v {
            if self.stage.trim {
                *s = s.trim().to_owned();
            }
            match self.stage.case {
                Some(Case::Lower) => *s = s.to_lowercase(),
                Some(Case::Upper) => *s = s.to_uppercase(),
                None => {}
            }
        }
        Ok(v)
    }
}

impl Step for Planned {
    fn output(&self) -> &SchemaRef {
        &self.output
    }

    fn apply(&self, _: &RowContext<'_>, op: RowOp, out: &mut Vec<RowOp>) -> Result<(), StageError> {
        // Converted first, written back only when every value converts: a failed row is handed back whole.
        let convert = |row: &ferry_core::Row| -> Result<Vec<Value>, StageError> {
            self.targets
                .iter()
                .map(|&i| {
                    let v = row.get(i).cloned().unwrap_or(Value::Null);
                    self.convert(v, i).map_err(|e| {
                        StageError::new(format!("column {}: {e}", self.output.columns[i].name))
                    })
                })
                .collect()
        };
        let put = |row: &mut ferry_core::Row, values: Vec<Value>| {
            for (&i, v) in self.targets.iter().zip(values) {
                if let Some(slot) = row.get_mut(i) {
                    *slot = v;
                }
            }
        };
        let converted = match &op {
            RowOp::Insert { after } | RowOp::Read { after } => (None, Some(convert(after))),
            RowOp::Update { before, after } => (before.as_ref().map(convert), Some(convert(after))),
            RowOp::Delete { before } => (Some(convert(before)), None),
        };
        let (before_values, after_values) = match converted {
            (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(e.with_row(op)),
            (b, a) => (b.and_then(Result::ok), a.and_then(Result::ok)),
        };
        out.push(match op {
            RowOp::Insert { mut after } => {
                put(&mut after, after_values.unwrap_or_default());
                RowOp::Insert { after }
            }
            RowOp::Read { mut after } => {
                put(&mut after, after_values.unwrap_or_default());
                RowOp::Read { after }
            }
            RowOp::Update { before, mut after } => {
                put(&mut after, after_values.unwrap_or_default());
                let before = before.map(|mut b| {
                    put(&mut b, before_values.unwrap_or_default());
                    b
                });
                RowOp::Update { before, after }
            }
            RowOp::Delete { mut before } => {
                put(&mut before, before_values.unwrap_or_default());
                RowOp::Delete { before }
            }
        });
        Ok(())
    }
}
