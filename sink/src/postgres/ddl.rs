//! SQL text for the PostgreSQL sink: statement shapes and target-table creation and evolution.

use std::collections::HashSet;

use ferry_core::{ColumnType, Dialect, Error, TableId, TableSchema};
use tokio_postgres::Client;
use tracing::info;

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

/// Creates the target table when missing; otherwise adds columns the source has and drops those it no longer has.
pub async fn ensure_table(client: &Client, schema: &TableSchema) -> Result<(), Error> {
    let name = qualified_name(&schema.id);
    let existing: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&name],
        )
        .await
        .map_err(ddl_error(&schema.id))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if existing.is_empty() {
        let mut defs: Vec<String> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{}{}",
                    column_definition(schema, i),
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        if schema.has_primary_key() {
            let pk: Vec<String> = schema
                .primary_key
                .iter()
                .map(|&k| quote_ident(&schema.columns[k].name))
                .collect();
            defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
        }
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {name} ({})",
            quote_ident(&schema.id.schema),
            defs.join(", ")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(ddl_error(&schema.id))?;
        info!(table = %schema.id, "created target table");
        return Ok(());
    }
    let existing_set: HashSet<&str> = existing.iter().map(String::as_str).collect();
    let wanted: HashSet<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    let mut alters = Vec::new();
    for (i, c) in schema.columns.iter().enumerate() {
        if !existing_set.contains(c.name.as_str()) {
            alters.push(format!("ADD COLUMN {}", column_definition(schema, i)));
        }
    }
    for c in &existing {
        if !wanted.contains(c.as_str()) {
            alters.push(format!("DROP COLUMN {}", quote_ident(c)));
        }
    }
    if !alters.is_empty() {
        client
            .batch_execute(&format!("ALTER TABLE {name} {}", alters.join(", ")))
            .await
            .map_err(ddl_error(&schema.id))?;
        info!(table = %schema.id, changes = %alters.join(", "), "altered target table");
    }
    Ok(())
}
