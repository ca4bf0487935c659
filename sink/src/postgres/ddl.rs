//! SQL text for the PostgreSQL sink: statement shapes and target-table creation and evolution.

use std::collections::HashMap;

use ferry_core::{ColumnType, Dialect, Error, TableId, TableSchema};
use tokio_postgres::Client;
use tracing::info;

use crate::evolve::{self, Applied, Step};

/// Quotes an identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified_name(t: &TableId) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name))
}

/// The PostgreSQL type of column `i`: the source's own spelling for PostgreSQL sources, otherwise mapped from the
/// logical type (docs/type-mapping.md), keeping a MySQL `decimal(p,s)`'s precision and a `varchar(n)`'s length.
pub fn pg_type(table: &TableSchema, i: usize) -> String {
    let column = &table.columns[i];
    if table.dialect == Dialect::Postgres {
        return column.source_type.clone();
    }
    let spelled = column.source_type.to_ascii_lowercase();
    let args = || {
        spelled
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(args, _)| args.to_owned())
    };
    match &column.ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int2 => "smallint".into(),
        ColumnType::Int4 => "integer".into(),
        ColumnType::Int8 => "bigint".into(),
        ColumnType::Float4 => "real".into(),
        ColumnType::Float8 => "double precision".into(),
        ColumnType::Numeric
            if spelled.starts_with("decimal(") || spelled.starts_with("numeric(") =>
        {
            format!("numeric({})", args().unwrap_or_default())
        }
        // bigint unsigned: up to 20 digits.
        ColumnType::Numeric if spelled.starts_with("bigint") => "numeric(20,0)".into(),
        ColumnType::Numeric => "numeric".into(),
        ColumnType::Text if spelled.starts_with("varchar(") || spelled.starts_with("char(") => {
            let kind = if spelled.starts_with("char(") {
                "char"
            } else {
                "varchar"
            };
            format!("{kind}({})", args().unwrap_or_default())
        }
        ColumnType::Text | ColumnType::Other => "text".into(),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Json => "json".into(),
        ColumnType::Jsonb => "jsonb".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::TimeTz => "timetz".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Interval => "interval".into(),
        ColumnType::Array(_) => "text".into(),
    }
}

/// Whether the target computes column `i` itself: a stored generated column of a PostgreSQL source, which the
/// target table gets with the same expression.
pub fn computed_by_target(table: &TableSchema, i: usize) -> bool {
    table.dialect == Dialect::Postgres && table.columns[i].generated.is_some()
}

/// A column's definition: name, type, and the generated expression a target of the source's dialect computes.
fn column_definition(table: &TableSchema, i: usize) -> String {
    let c = &table.columns[i];
    let mut def = format!("{} {}", quote_ident(&c.name), pg_type(table, i));
    if let (true, Some(expr)) = (computed_by_target(table, i), &c.generated) {
        def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
    }
    def
}

pub enum StatementKind {
    Upsert,
    Update,
    Delete,
    Insert,
}

/// One set-based statement over `unnest` of one text array per column in `columns`.
pub fn group_statement(table: &TableSchema, kind: StatementKind, columns: &[usize]) -> String {
    let name = qualified_name(&table.id);
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let unnest = format!(
        "unnest({}) AS u({})",
        (1..=columns.len())
            .map(|i| format!("${i}::text[]"))
            .collect::<Vec<_>>()
            .join(", "),
        aliases.join(", ")
    );
    let cast = |i: usize, c: usize| format!("u.c{i}::{}", pg_type(table, c));
    let col = |c: usize| quote_ident(&table.columns[c].name);
    let col_list = columns
        .iter()
        .map(|&c| col(c))
        .collect::<Vec<_>>()
        .join(", ");
    let select = columns
        .iter()
        .enumerate()
        .map(|(i, &c)| cast(i, c))
        .collect::<Vec<_>>()
        .join(", ");
    let key_match = |target: &str| {
        table
            .match_key()
            .iter()
            .map(|&k| {
                let i = columns.iter().position(|&c| c == k).unwrap_or(0);
                format!("{target}.{} = {}", col(k), cast(i, k))
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    match kind {
        StatementKind::Insert => {
            format!("INSERT INTO {name} ({col_list}) SELECT {select} FROM {unnest}")
        }
        StatementKind::Upsert => {
            let pk = table
                .primary_key
                .iter()
                .map(|&k| col(k))
                .collect::<Vec<_>>()
                .join(", ");
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !table.primary_key.contains(c))
                .map(|&c| format!("{0} = EXCLUDED.{0}", col(c)))
                .collect();
            let action = if updates.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            format!("INSERT INTO {name} ({col_list}) SELECT {select} FROM {unnest} ON CONFLICT ({pk}) {action}")
        }
        StatementKind::Update => {
            let sets: Vec<String> = columns
                .iter()
                .enumerate()
                .filter(|(_, c)| !table.primary_key.contains(c))
                .map(|(i, &c)| format!("{} = {}", col(c), cast(i, c)))
                .collect();
            if sets.is_empty() {
                // Only the key was sent and it did not change: nothing to write.
                return format!("SELECT 1 FROM {unnest} WHERE false");
            }
            format!(
                "UPDATE {name} AS t SET {} FROM {unnest} WHERE {}",
                sets.join(", "),
                key_match("t")
            )
        }
        StatementKind::Delete => format!(
            "DELETE FROM {name} AS t USING {unnest} WHERE {}",
            key_match("t")
        ),
    }
}

/// Moves one row in place: `UPDATE … SET` each of `sets` (parameters `$1…`) `WHERE` each of `keys` equals the
/// parameters after them. Values travel as text and are cast to the column type, as in [`group_statement`].
pub fn move_statement(table: &TableSchema, sets: &[usize], keys: &[usize]) -> String {
    let term = |(i, &c): (usize, &usize)| {
        format!(
            "{} = ${}::text::{}",
            quote_ident(&table.columns[c].name),
            i + 1,
            pg_type(table, c)
        )
    };
    let assignments: Vec<String> = sets.iter().enumerate().map(term).collect();
    let conditions: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, c)| term((i + sets.len(), c)))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {}",
        qualified_name(&table.id),
        assignments.join(", "),
        conditions.join(" AND ")
    )
}

/// Deletes one row whose `matched` columns equal the parameters (tables without a primary key). Each column is
/// compared through its type's text output, so types without an equality operator (json, point) match too.
pub fn delete_one_matching(table: &TableSchema, matched: &[usize]) -> String {
    let name = qualified_name(&table.id);
    let conditions: Vec<String> = matched
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            format!(
                "{}::text IS NOT DISTINCT FROM (${}::text::{})::text",
                quote_ident(&table.columns[c].name),
                i + 1,
                pg_type(table, c)
            )
        })
        .collect();
    let condition = if conditions.is_empty() {
        "true".to_owned()
    } else {
        conditions.join(" AND ")
    };
    format!("DELETE FROM {name} WHERE ctid = (SELECT ctid FROM {name} WHERE {condition} LIMIT 1)")
}

fn ddl_error(table: &TableId) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::fatal_from(format!("creating or altering target table {table}"), e)
}

/// Whether a default expression is a constant (`'dflt'::character varying`, `42`, `true`), which a target can
/// hold as it is; other defaults (`nextval(…)`, `now()`, functions of the source's own) stay on the source.
fn is_constant_default(expr: &str) -> bool {
    let e = expr.trim();
    let literal = |s: &str| {
        s.parse::<f64>().is_ok() || matches!(s, "true" | "false" | "NULL") || {
            let quoted = s
                .strip_prefix('\'')
                .and_then(|r| r.rfind('\'').map(|end| &r[end + 1..]));
            quoted.is_some_and(|rest| {
                rest.is_empty() || rest.starts_with("::") && !rest.contains('(')
            })
        }
    };
    let unwrapped = e
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(e);
    literal(e) || literal(unwrapped)
}

/// The default column `i` gets in the target: the source's own when both are PostgreSQL and it is a constant.
fn target_default(table: &TableSchema, i: usize) -> Option<&str> {
    let c = &table.columns[i];
    // The constant's cast must name the target column's own type (an enum or domain the target lacks would not).
    let ty = pg_type(table, i);
    let base = ty.split('(').next().unwrap_or(&ty).trim();
    (table.dialect == Dialect::Postgres && !computed_by_target(table, i))
        .then_some(c.default.as_deref())
        .flatten()
        .filter(|d| is_constant_default(d))
        .filter(|d| {
            let d = d.trim_end_matches(')');
            d.rsplit_once("::")
                .is_none_or(|(_, cast)| cast.trim() == base)
        })
}

fn literal(table: &TableSchema, i: usize, v: &ferry_core::Value) -> String {
    match super::text::pg_text(v) {
        Some(text) => format!("'{}'::{}", text.replace('\'', "''"), pg_type(table, i)),
        None => "NULL".to_owned(),
    }
}

/// `CREATE TABLE` for `schema`.
fn create_table_sql(schema: &TableSchema) -> String {
    let mut defs: Vec<String> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut def = column_definition(schema, i);
            if let Some(d) = target_default(schema, i) {
                def.push_str(&format!(" DEFAULT {d}"));
            }
            if !c.nullable {
                def.push_str(" NOT NULL");
            }
            def
        })
        .collect();
    defs.extend(evolve::primary_key_clause(schema, quote_ident));
    format!(
        "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {} ({})",
        quote_ident(&schema.id.schema),
        qualified_name(&schema.id),
        defs.join(", ")
    )
}

/// The SQL of one step (docs/schema-changes.md).
fn step_sql(schema: &TableSchema, step: &Step) -> Vec<String> {
    let name = qualified_name(&schema.id);
    let col = |i: usize| quote_ident(&schema.columns[i].name);
    match step {
        Step::DropTable => vec![format!("DROP TABLE IF EXISTS {name}")],
        Step::RenameTable { from } => {
            let mut out = Vec::new();
            let mut current = from.clone();
            if from.schema != schema.id.schema {
                out.push(format!(
                    "CREATE SCHEMA IF NOT EXISTS {}; ALTER TABLE {} SET SCHEMA {}",
                    quote_ident(&schema.id.schema),
                    qualified_name(from),
                    quote_ident(&schema.id.schema)
                ));
                current = TableId::new(schema.id.schema.clone(), from.name.clone());
            }
            out.push(format!(
                "ALTER TABLE {} RENAME TO {}",
                qualified_name(&current),
                quote_ident(&schema.id.name)
            ));
            out
        }
        Step::CreateTable => vec![create_table_sql(schema)],
        Step::RenameColumn { from, to } => vec![format!(
            "ALTER TABLE {name} RENAME COLUMN {} TO {}",
            quote_ident(from),
            quote_ident(to)
        )],
        Step::AddColumn(i) => {
            let c = &schema.columns[*i];
            let mut add = format!(
                "ALTER TABLE {name} ADD COLUMN {}",
                column_definition(schema, *i)
            );
            let fill = c
                .missing_value
                .as_ref()
                .filter(|_| !computed_by_target(schema, *i));
            if let Some(v) = fill {
                add.push_str(&format!(" DEFAULT {}", literal(schema, *i, v)));
                if !c.nullable {
                    add.push_str(" NOT NULL");
                }
            }
            let mut out = vec![add];
            match (target_default(schema, *i), fill) {
                (Some(d), _) => out.push(format!(
                    "ALTER TABLE {name} ALTER COLUMN {} SET DEFAULT {d}",
                    col(*i)
                )),
                (None, Some(_)) => out.push(format!(
                    "ALTER TABLE {name} ALTER COLUMN {} DROP DEFAULT",
                    col(*i)
                )),
                (None, None) => {}
            }
            out
        }
        Step::DropColumn(c) => vec![format!(
            "ALTER TABLE {name} DROP COLUMN IF EXISTS {}",
            quote_ident(c)
        )],
        Step::AlterColumn {
            i,
            ty,
            nullable,
            default,
        } => {
            let mut out = Vec::new();
            let c = &schema.columns[*i];
            if ty.is_some() && !computed_by_target(schema, *i) {
                let t = pg_type(schema, *i);
                out.push(format!(
                    "ALTER TABLE {name} ALTER COLUMN {0} TYPE {t} USING {0}::{t}",
                    col(*i)
                ));
            }
            if *nullable {
                let change = if c.nullable {
                    "DROP NOT NULL"
                } else {
                    "SET NOT NULL"
                };
                out.push(format!(
                    "ALTER TABLE {name} ALTER COLUMN {} {change}",
                    col(*i)
                ));
            }
            if *default && !computed_by_target(schema, *i) {
                out.push(match target_default(schema, *i) {
                    Some(d) => format!(
                        "ALTER TABLE {name} ALTER COLUMN {} SET DEFAULT {d}",
                        col(*i)
                    ),
                    None => format!("ALTER TABLE {name} ALTER COLUMN {} DROP DEFAULT", col(*i)),
                });
            }
            out
        }
    }
}

/// Brings the target table in step with `schema` (see [`crate::evolve`]) and records what was applied in
/// `ferry_schemas`, inside the open target transaction.
pub async fn ensure_table(
    client: &Client,
    schema: &TableSchema,
    applied: &mut HashMap<TableId, Applied>,
    pipeline: &str,
    sink: &str,
) -> Result<(), Error> {
    if evolve::described_out_of_order(schema) {
        // Processes of one pipeline evolve the table one at a time, until the transaction ends: an advisory lock
        // on its name (the record row may not exist yet, when they start together on an empty target), and the
        // record's row.
        client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&format!(
                    "ferry_schemas {pipeline} {sink} {}",
                    evolve::record_key(&schema.id)
                )],
            )
            .await
            .map_err(ddl_error(&schema.id))?;
        let row = client
            .query_opt(
                "SELECT applied FROM ferry_schemas WHERE pipeline = $1 AND sink = $2 AND source_table = $3 \
                 FOR UPDATE",
                &[&pipeline, &sink, &evolve::record_key(&schema.id)],
            )
            .await
            .map_err(ddl_error(&schema.id))?;
        evolve::refresh_record(applied, &schema.id, row.map(|r| r.get(0)))?;
    }
    let schema = &*evolve::settle(schema, applied.get(&schema.id))?;
    let name = qualified_name(&schema.id);
    let existing = target_columns(client, &name, "")
        .await
        .map_err(ddl_error(&schema.id))?;
    let lost = evolve::dropped_outside(applied, schema, !existing.is_empty());
    let steps = evolve::plan(
        applied,
        schema,
        (!existing.is_empty()).then_some(&existing[..]),
    )?;
    for step in &steps {
        for sql in step_sql(schema, step) {
            client
                .batch_execute(&sql)
                .await
                .map_err(ddl_error(&schema.id))?;
        }
        info!(table = %schema.id, ?step, "target table changed");
        if let Step::RenameTable { from } = step {
            applied.remove(from);
            delete_record(client, (pipeline, sink), from).await?;
        }
    }
    let required = target_columns(
        client,
        &name,
        "AND attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = ''",
    )
    .await
    .map_err(ddl_error(&schema.id))?;
    evolve::check_required_target_columns(schema, &required)?;
    let mut record = Applied::following(schema, applied.get(&schema.id));
    if lost.is_some() {
        record.quarantined = lost;
    }
    // A MySQL / MariaDB source cut a time or datetime column's fractional digits: it rewrote its rows truncating
    // (MariaDB) or rounding half up (MySQL), as the ALTER's sql_mode said; PostgreSQL's cast rounds ties by its own
    // rule, and the sink does not know which the source did.
    evolve::quarantine_unfollowed(
        &mut record,
        schema,
        &steps,
        |c, old| {
            !(schema.dialect == Dialect::Mysql
                && ferry_core::type_change::fraction_digits(old).is_some()
                && ferry_core::type_change::narrows(old, &c.source_type))
        },
        (
            "the source cut the fractional seconds its rows held by a rule (MariaDB truncates, MySQL rounds, as the \
             statement's sql_mode says) this target cannot know",
            "PostgreSQL",
        ),
    );
    if applied.get(&schema.id) != Some(&record) {
        save_record(client, (pipeline, sink), &schema.id, &record).await?;
        applied.insert(schema.id.clone(), record);
    }
    Ok(())
}

/// Stores a table's [`Applied`] record in `ferry_schemas`, in the open transaction.
pub async fn save_record(
    client: &Client,
    (pipeline, sink): (&str, &str),
    table: &TableId,
    record: &Applied,
) -> Result<(), Error> {
    client
        .execute(
            "INSERT INTO ferry_schemas (pipeline, sink, source_table, applied) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pipeline, sink, source_table) DO UPDATE SET applied = excluded.applied",
            &[&pipeline, &sink, &evolve::record_key(table), &record.to_json()],
        )
        .await
        .map_err(ddl_error(table))?;
    Ok(())
}

/// The columns of target table `name` (quoted), in order, that meet `filter` (SQL on `pg_attribute`).
async fn target_columns(
    client: &Client,
    name: &str,
    filter: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 \
         AND NOT attisdropped {filter} ORDER BY attnum"
    );
    Ok(client
        .query(&sql, &[&name])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Deletes the `ferry_schemas` record of `table`.
pub async fn delete_record(
    client: &Client,
    (pipeline, sink): (&str, &str),
    table: &TableId,
) -> Result<(), Error> {
    client
        .execute(
            "DELETE FROM ferry_schemas WHERE pipeline = $1 AND sink = $2 AND source_table = $3",
            &[&pipeline, &sink, &evolve::record_key(table)],
        )
        .await
        .map_err(ddl_error(table))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_constant_default;

    #[test]
    fn only_constant_defaults_travel() {
        for constant in [
            "'dflt'::character varying",
            "42",
            "(-1)",
            "true",
            "'a''b'::text",
            "'{}'::integer[]",
        ] {
            assert!(is_constant_default(constant), "{constant}");
        }
        for other in [
            "nextval('t_id_seq'::regclass)",
            "now()",
            "'x'::text || f()",
            "(a + 1)",
        ] {
            assert!(!is_constant_default(other), "{other}");
        }
    }
}
