//! `mask`: hides column values (a salted SHA-256, a constant, NULL, or all but the first / last characters).

use std::sync::Arc;

use ferry_config::{ColumnRef, MaskKind};
use ferry_core::{ColumnType, RowOp, SchemaRef, TableSchema, Value};
use sha2::{Digest, Sha256};

use crate::stage::{map_images, RowContext, RowStage, StageError, Step, Unchanged};
use crate::types::{retype, text_of};

pub struct Mask {
    pub columns: Vec<ColumnRef>,
    pub with: MaskKind,
}

impl RowStage for Mask {
    fn plan(&self, input: &SchemaRef) -> Result<Box<dyn Step>, String> {
        let targets = super::targets(&self.columns, input)?;
        if targets.is_empty() {
            return Ok(Box::new(Unchanged(input.clone())));
        }
        let mut schema = TableSchema::clone(input);
        for &i in &targets {
            let col = &input.columns[i];
            // Only a hash keeps distinct keys distinct: any other mask would merge rows in the target.
            if super::key_columns(input).contains(&i)
                && !matches!(self.with, MaskKind::Sha256 { .. })
            {
                return Err(format!(
                    "columns: {}.{} is a key column, which targets find rows by: only with = \"sha256\" keeps \
                     distinct keys distinct",
                    input.id, col.name
                ));
            }
            schema.columns[i] = match self.with {
                // NULL keeps the type; the column must take NULLs.
                MaskKind::Null => ferry_core::Column {
                    nullable: true,
                    default: None,
                    generated: None,
                    ..col.clone()
                },
                _ => retype(col, ColumnType::Text, input.dialect),
            };
        }
        Ok(Box::new(Planned {
            input: input.clone(),
            output: Arc::new(schema),
            targets,
            with: self.with.clone(),
        }))
    }
}

struct Planned {
    input: SchemaRef,
    output: SchemaRef,
    targets: Vec<usize>,
    with: MaskKind,
}

/// Lower-case hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// `text` with every character but the `n` first (`first`) or last replaced by `*`.
fn keep(text: &str, n: usize, first: bool) -> String {
    let len = text.chars().count();
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            let kept = if first { i < n } else { i + n >= len };
            if kept {
                c
            } else {
                '*'
            }
        })
        .collect()
}

impl Planned {
    /// Masks `v`, the value of input column `i`.
    fn mask(&self, v: Value, i: usize) -> Value {
        if matches!(v, Value::Null | Value::Unchanged) {
            return v;
        }
        let ty = &self.input.columns[i].ty;
        let text = || text_of(&v, Some(ty)).unwrap_or_default();
        match &self.with {
            MaskKind::Sha256 { salt } => {
                let mut h = Sha256::new();
                h.update(salt.as_bytes());
                match &v {
                    Value::Text(s) => h.update(s.as_bytes()),
                    other => h.update(text_of(other, Some(ty)).unwrap_or_default().as_bytes()),
                }
                Value::Text(hex(&h.finalize()))
            }
            MaskKind::Redact { value } => Value::Text(value.clone()),
            MaskKind::Null => Value::Null,
            MaskKind::KeepFirst(n) => Value::Text(keep(&text(), *n, true)),
            MaskKind::KeepLast(n) => Value::Text(keep(&text(), *n, false)),
        }
    }
}

impl Step for Planned {
    fn output(&self) -> &SchemaRef {
        &self.output
    }

    fn apply(&self, _: &RowContext<'_>, op: RowOp, out: &mut Vec<RowOp>) -> Result<(), StageError> {
        out.push(map_images(op, |mut row| {
            for &i in &self.targets {
                if let Some(v) = row.get_mut(i) {
                    *v = self.mask(std::mem::replace(v, Value::Null), i);
                }
            }
            Ok(row)
        })?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::keep;

    #[test]
    fn keep_first_and_last_count_characters_not_bytes() {
        assert_eq!(keep("4111111111111111", 4, false), "************1111");
        assert_eq!(keep("josé@example.com", 2, true), "jo**************");
        assert_eq!(keep("ab", 4, false), "ab");
    }
}
