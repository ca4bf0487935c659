//! CEL expressions over a row: compiled once, bound to each row's values.
//!
//! Variables (docs/transforms.md lists them with their types):
//! - `op`: `"c"` insert, `"u"` update, `"d"` delete, `"r"` snapshot read;
//! - `before`, `after`: maps from column name to value, or `null` when the change has no such image;
//! - `table`: `"schema.table"`; `source`: `{schema, table, connector}`;
//! - `tx`: `{commit_time, xid, origin, server_id, gtid, position}` (each `null` when the source has none).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::common::value::CowVal;
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Program, Value as Cel};
use ferry_core::{Decimal, Dialect, Row, RowOp, TableSchema, Value};

use crate::stage::{RowContext, StageError};

/// CEL's standard library, built once for every expression.
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// A compiled expression and what it reads.
pub struct Expression {
    pub text: String,
    program: Program,
    /// The columns read through `before.x` / `after.x`; `None` when the expression uses a whole image.
    columns: Option<BTreeSet<String>>,
}

impl Expression {
    /// Compiles `text` (the config already checked its syntax; this repeats it for the message).
    pub fn compile(text: &str) -> Result<Expression, String> {
        let program = Program::compile(text).map_err(|e| e.to_string().trim().to_owned())?;
        let mut columns = Some(BTreeSet::new());
        walk(program.expression(), &mut columns);
        Ok(Expression {
            text: text.to_owned(),
            program,
            columns,
        })
    }

    /// The columns it names that `table` does not have.
    pub fn unknown_columns(&self, table: &TableSchema) -> Vec<String> {
        self.columns
            .iter()
            .flatten()
            .filter(|c| !table.columns.iter().any(|col| &col.name == *c))
            .cloned()
            .collect()
    }

    /// Whether the expression reads column `name` (of either image); an expression that uses a whole image
    /// reads every column.
    pub fn reads_column(&self, name: &str) -> bool {
        self.columns.as_ref().is_none_or(|c| c.contains(name))
    }

    /// Whether every column the expression reads is unchanged (not sent) in `row` and absent from `old`.
    pub fn reads_only_unchanged(&self, table: &TableSchema, row: &Row, old: Option<&Row>) -> bool {
        let Some(cols) = self.columns.as_ref().filter(|c| !c.is_empty()) else {
            return false;
        };
        table.columns.iter().enumerate().all(|(i, c)| {
            !cols.contains(&c.name)
                || (row.get(i) == Some(&Value::Unchanged) && sent(table, row, old, i).is_none())
        })
    }

    /// Evaluates the expression for `op` of `cx.table`.
    pub fn eval(&self, cx: &RowContext<'_>, op: &RowOp) -> Result<Cel, StageError> {
        self.run(cx, op).map_err(|e| StageError::new(describe(&e)))
    }

    /// Like [`Expression::eval`] on a sample row when the stage is planned: `Err(Some(why))` for an error that
    /// any row would meet (a type error, an unknown name), `Err(None)` for one that depends on the values.
    pub fn eval_checked(&self, cx: &RowContext<'_>, op: &RowOp) -> Result<Cel, Option<String>> {
        use ExecutionError as E;
        self.run(cx, op).map_err(|e| match e {
            E::FunctionError { .. }
            | E::DivisionByZero(_)
            | E::RemainderByZero(_)
            | E::Overflow(..)
            | E::IndexOutOfBounds(_)
            | E::DuplicateKey(_) => None,
            other => Some(describe(&other)),
        })
    }

    fn run(&self, cx: &RowContext<'_>, op: &RowOp) -> Result<Cel, ExecutionError> {
        let (before, after): (Option<&Row>, Option<&Row>) = match op {
            RowOp::Insert { after } | RowOp::Read { after } => (None, Some(after)),
            RowOp::Update { before, after } => (before.as_ref(), Some(after)),
            RowOp::Delete { before } => (Some(before), None),
        };
        let vars = RowVariables {
            expr: self,
            cx,
            op,
            before,
            after,
        };
        let mut ctx = Context::with_env(env());
        ctx.set_variable_resolver(&vars);
        self.program.execute(&ctx)
    }

    /// A row image as a CEL map (only the columns the expression reads), or `null` without one. An unchanged
    /// value (TOAST) reads as the old image's value when the change carries it, and is absent otherwise.
    fn image(&self, table: &TableSchema, image: Image<'_>) -> Cel {
        let (row, old, is_old) = match image {
            Image::New(row, old) => (row, old, false),
            Image::Old(row) => (row, None, true),
        };
        let Some(row) = row else { return Cel::Null };
        let mut map: HashMap<String, Cel> = HashMap::new();
        for (i, col) in table.columns.iter().enumerate() {
            if self
                .columns
                .as_ref()
                .is_some_and(|c| !c.contains(&col.name))
            {
                continue;
            }
            // An old image's columns beyond what the source sends for it are unknown, not NULL.
            if is_old && !table.old_value_known(i) {
                continue;
            }
            if let Some(v) = sent(table, row, old, i) {
                map.insert(col.name.clone(), to_cel(v));
            }
        }
        Cel::from(map)
    }
}

/// Which image of a change an expression reads.
enum Image<'r> {
    /// `after`, and the old image that fills its unchanged values.
    New(Option<&'r Row>, Option<&'r Row>),
    /// `before`.
    Old(Option<&'r Row>),
}

/// Column `i` of `row` as the change knows it: an unchanged value (TOAST, not sent) reads as the old image's
/// value when the change carries it; `None` when it does not.
fn sent<'r>(
    table: &TableSchema,
    row: &'r Row,
    old: Option<&'r Row>,
    i: usize,
) -> Option<&'r Value> {
    match row.get(i)? {
        Value::Unchanged => old
            .filter(|_| table.old_value_known(i))
            .and_then(|o| o.get(i))
            .filter(|v| **v != Value::Unchanged),
        v => Some(v),
    }
}

/// The variables of one evaluation, resolved when the expression reads them: `after.qty` is read straight from
/// the row (CEL asks for the qualified name first), so a row's map is built only for an expression that uses a
/// whole image (`has(after.x)`, `after["x"]`, `after` passed on).
struct RowVariables<'a> {
    expr: &'a Expression,
    cx: &'a RowContext<'a>,
    op: &'a RowOp,
    before: Option<&'a Row>,
    after: Option<&'a Row>,
}

impl RowVariables<'_> {
    /// The value `after.x` / `before.x` names, when the change holds it.
    fn column(&self, name: &str) -> Option<&Value> {
        let (image, column) = name.split_once('.')?;
        let table = self.cx.table;
        let i = table.column_index(column)?;
        match image {
            "after" => sent(table, self.after?, self.before, i),
            "before" if table.old_value_known(i) => sent(table, self.before?, None, i),
            _ => None,
        }
    }

    fn variable(&self, name: &str) -> Option<Cel> {
        let table = self.cx.table;
        Some(match name {
            "after" => self.expr.image(table, Image::New(self.after, self.before)),
            "before" => self.expr.image(table, Image::Old(self.before)),
            "table" => Cel::from(table.id.to_string()),
            "source" => {
                let connector = match table.dialect {
                    Dialect::Postgres => "postgresql",
                    Dialect::Mysql => "mysql",
                };
                let source: HashMap<&str, Cel> = HashMap::from([
                    ("schema", Cel::from(table.id.schema.clone())),
                    ("table", Cel::from(table.id.name.clone())),
                    ("connector", Cel::from(connector)),
                ]);
                Cel::from(source)
            }
            "tx" => {
                let opt = |s: Option<String>| s.map_or(Cel::Null, Cel::from);
                let tx = self.cx.tx;
                let map: HashMap<&str, Cel> = HashMap::from([
                    (
                        "commit_time",
                        tx.and_then(|t| t.commit_time).map_or(Cel::Null, timestamp),
                    ),
                    (
                        "xid",
                        tx.and_then(|t| t.xid)
                            .map_or(Cel::Null, |x| Cel::Int(x.into())),
                    ),
                    ("origin", opt(tx.and_then(|t| t.origin.name.clone()))),
                    (
                        "server_id",
                        tx.and_then(|t| t.origin.server_id)
                            .map_or(Cel::Null, |x| Cel::Int(x.into())),
                    ),
                    ("gtid", opt(tx.and_then(|t| t.origin.gtid.clone()))),
                    ("position", opt(tx.map(|t| t.commit_at.to_string()))),
                ]);
                Cel::from(map)
            }
            // `after.x` / `before.x`: the column's value, or nothing (CEL then reads the whole image and reports
            // the missing key or the null image).
            _ => to_cel(self.column(name)?),
        })
    }
}

impl RowVariables<'_> {
    /// A column read as `after.x` / `before.x` that CEL can borrow without converting (ints, texts, …); `None`
    /// for the other variables and values, which go through [`RowVariables::variable`].
    fn borrowed(&self, name: &str) -> Option<CowVal<'_, '_>> {
        use cel::common::types::{CelBool, CelDouble, CelInt, CelNull, CelString};
        Some(match self.column(name)? {
            Value::Int(v) => CowVal::owned(CelInt::from(*v)),
            Value::Text(v) => CowVal::owned(CelString::from(v.as_str())),
            Value::Bool(v) => CowVal::owned(CelBool::from(*v)),
            Value::Float(v) => CowVal::owned(CelDouble::from(*v)),
            Value::Null => CowVal::owned(CelNull),
            _ => return None,
        })
    }
}

impl VariableResolver for RowVariables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if variable == "op" {
            let code = match self.op {
                RowOp::Insert { .. } => "c",
                RowOp::Update { .. } => "u",
                RowOp::Delete { .. } => "d",
                RowOp::Read { .. } => "r",
            };
            return Some(CowVal::owned(cel::common::types::CelString::from(code)));
        }
        if let Some(v) = self.borrowed(variable) {
            return Some(v);
        }
        let value = self.variable(variable)?;
        let boxed: Box<dyn cel::common::value::Val> = value.try_into().ok()?;
        Some(CowVal::Owned(boxed))
    }
}

fn describe(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!(
            "no value for {k:?} (a column the row does not carry: the image is null for this op, or the value \
             is unchanged and not sent; test with has(after.{k}))"
        ),
        other => other.to_string(),
    }
}

/// A Ferry value as CEL sees it: numbers as int / double (exact decimals as double), text, bytes, timestamps,
/// lists; dates, times, intervals, UUIDs and JSON as their text.
pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null | Value::Unchanged => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Int(i) => Cel::Int(*i),
        Value::Float(f) => Cel::Float(*f),
        Value::Decimal(Decimal::Finite(s)) => s.parse::<f64>().map_or(Cel::Null, Cel::Float),
        Value::Decimal(Decimal::NaN) => Cel::Float(f64::NAN),
        Value::Decimal(Decimal::Infinity) => Cel::Float(f64::INFINITY),
        Value::Decimal(Decimal::NegInfinity) => Cel::Float(f64::NEG_INFINITY),
        Value::Text(s) | Value::Json(s) | Value::ZeroDate(s) => Cel::from(s.clone()),
        Value::Bytes(b) => Cel::Bytes(Arc::new(b.clone())),
        Value::Timestamp(t) | Value::TimestampTz(t) => timestamp(*t),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        other => Cel::from(crate::types::text_of(other, None).unwrap_or_default()),
    }
}

fn timestamp(t: ferry_core::Timestamp) -> Cel {
    t.unix_micros()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map_or(Cel::Null, |d| Cel::Timestamp(d.fixed_offset()))
}

/// Collects the columns read as `after.x`, `before.x`, `after["x"]`; a bare `after` / `before` (passed whole)
/// makes the set `None`.
fn walk(e: &cel::IdedExpr, cols: &mut Option<BTreeSet<String>>) {
    let image =
        |e: &cel::IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == "after" || n == "before");
    match &e.expr {
        Expr::Select(s) if image(&s.operand) => {
            if let Some(c) = cols {
                c.insert(s.field.clone());
            }
        }
        Expr::Select(s) => walk(&s.operand, cols),
        Expr::Call(c) => {
            if c.func_name == "_[_]" && c.args.len() == 2 && image(&c.args[0]) {
                if let Expr::Literal(LiteralValue::String(name)) = &c.args[1].expr {
                    if let Some(set) = cols {
                        set.insert(name.inner().to_owned());
                    }
                    return;
                }
            }
            c.target.iter().for_each(|t| walk(t, cols));
            c.args.iter().for_each(|a| walk(a, cols));
        }
        Expr::Ident(n) if n == "after" || n == "before" => *cols = None,
        Expr::List(l) => l.elements.iter().for_each(|x| walk(x, cols)),
        Expr::Map(m) => m.entries.iter().for_each(|x| match &x.expr {
            EntryExpr::MapEntry(me) => {
                walk(&me.key, cols);
                walk(&me.value, cols);
            }
            EntryExpr::StructField(f) => walk(&f.value, cols),
        }),
        Expr::Struct(s) => s.entries.iter().for_each(|x| {
            if let EntryExpr::StructField(f) = &x.expr {
                walk(&f.value, cols)
            }
        }),
        Expr::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(x, cols);
            }
        }
        _ => {}
    }
}
