//! Target tables in MySQL: created from the source schema, then kept in step (ADD / DROP COLUMN).

use std::collections::HashMap;

use ferry_core::{ColumnType, Dialect, Error, TableId, TableSchema};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tracing::info;

use super::literal::{literal, quote_ident};
use super::write_error;
use crate::evolve::{self, Applied, Step};

/// How values are spelled for a target column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// MySQL TIME: durations are written as `[-]H:MM:SS.ffffff`.
    Time,
    /// An ENUM without a '' label: '' is its error value (index 0), which only a non-strict statement writes
    /// (see `SESSION_SQL` in mod.rs).
    Enum,
    Other,
}

/// A target table's columns as they are after the last DDL.
#[derive(Debug, Clone)]
pub struct TargetTable {
    /// The source schema version it was made for.
    pub version: u64,
    columns: HashMap<String, TargetKind>,
    /// Every text column holds UTF-8 (or bytes), so a LOAD DATA file in the binary character set carries it as is.
    utf8: bool,
    /// Unique indexes of the target table other than its primary key (an operator's): a REPLACE or an
    /// `ON DUPLICATE KEY UPDATE` would delete or change another row that collides on one of them, so rows of
    /// this table are written by key (UPDATE, else a plain INSERT that fails naming the index).
    pub extra_unique: Vec<String>,
}

impl TargetTable {
    pub fn has(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }

    pub fn load_data_ok(&self) -> bool {
        self.utf8
    }

    pub fn kind(&self, column: &str) -> TargetKind {
        self.columns
            .get(column)
            .copied()
            .unwrap_or(TargetKind::Other)
    }
}

/// InnoDB's largest index key (DYNAMIC rows): 3,072 bytes.
const MAX_KEY_BYTES: usize = 3072;

/// How many characters an unbounded text key column may hold in the target, so the whole primary key fits in
/// InnoDB's index: the key's text and binary columns share what its other columns leave (utf8mb4: 4 bytes per
/// character). A longer key fails its write with MySQL's "Data too long" error naming the column (strict mode).
fn key_text_chars(table: &TableSchema) -> usize {
    let unbounded = |i: &usize| {
        matches!(
            table.columns[*i].ty,
            ColumnType::Text | ColumnType::Other | ColumnType::Array(_) | ColumnType::Bytes
        )
    };
    let shared = table
        .primary_key
        .iter()
        .filter(|i| unbounded(i))
        .count()
        .max(1);
    let others =
        table.primary_key.len() - table.primary_key.iter().filter(|i| unbounded(i)).count();
    (MAX_KEY_BYTES.saturating_sub(16 * others) / 4 / shared).max(1)
}

/// Picks the collation text key columns get: binary and NO PAD, so keys that differ only in case, accents or
/// trailing spaces stay distinct rows ('a', 'A', 'a ' and 'ä' are four keys in PostgreSQL). MariaDB has
/// `utf8mb4_nopad_bin`, MySQL 8 `utf8mb4_0900_bin`; older servers only the PAD SPACE `utf8mb4_bin`.
pub async fn key_collation(conn: &mut Conn) -> Result<String, Error> {
    let available: Vec<String> = conn
        .query(
            "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
             WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin', 'utf8mb4_bin')",
        )
        .await
        .map_err(write_error("reading the target's collations"))?;
    let chosen = ["utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin"]
        .into_iter()
        .find(|c| available.iter().any(|a| a == c))
        .ok_or_else(|| {
            Error::fatal("the MySQL target has no utf8mb4 binary collation (utf8mb4_bin)")
        })?;
    if chosen == "utf8mb4_bin" {
        tracing::warn!("the MySQL target has no NO PAD binary collation: text keys that differ only in trailing spaces collide");
    }
    Ok(chosen.to_owned())
}

/// The MySQL type of column `i`: the source's own spelling for MySQL sources, otherwise mapped from the logical
/// type (docs/type-mapping.md). Key columns get bounded types, since MySQL cannot index a whole TEXT or BLOB, and
/// text key columns the binary NO PAD `key_collation`.
pub fn mysql_type(table: &TableSchema, i: usize, key_collation: &str) -> String {
    let column = &table.columns[i];
    let key = table.primary_key.contains(&i);
    let spelled = column.source_type.to_ascii_lowercase();
    let textual = [
        "char",
        "varchar",
        "tinytext",
        "text",
        "mediumtext",
        "longtext",
    ]
    .iter()
    .any(|t| spelled == *t || spelled.starts_with(&format!("{t}(")));
    if table.dialect == Dialect::Mysql {
        if key && textual {
            return format!(
                "{} CHARACTER SET utf8mb4 COLLATE {key_collation}",
                column.source_type
            );
        }
        return column.source_type.clone();
    }
    let keyed = |ty: String| {
        if key && (ty.starts_with("varchar(") || ty.starts_with("char(")) {
            format!("{ty} CHARACTER SET utf8mb4 COLLATE {key_collation}")
        } else {
            ty
        }
    };
    keyed(mapped_type(table, i))
}

fn mapped_type(table: &TableSchema, i: usize) -> String {
    let column = &table.columns[i];
    let spelled = column.source_type.to_ascii_lowercase();
    let args = spelled
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(args, _)| args.to_owned());
    let key = table.primary_key.contains(&i);
    match &column.ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int2 => "smallint".into(),
        ColumnType::Int4 => "int".into(),
        ColumnType::Int8 => "bigint".into(),
        ColumnType::Float4 => "float".into(),
        ColumnType::Float8 => "double".into(),
        ColumnType::Numeric => match args {
            Some(a) if spelled.starts_with("numeric(") => format!("decimal({a})"),
            // Unconstrained numeric: the widest MySQL decimal.
            _ => "decimal(65,30)".into(),
        },
        ColumnType::Text if spelled.starts_with("character varying(") => {
            format!("varchar({})", args.unwrap_or_default())
        }
        ColumnType::Text if spelled.starts_with("character(") => {
            format!("char({})", args.unwrap_or_default())
        }
        ColumnType::Text | ColumnType::Other | ColumnType::Array(_) if key => {
            format!("varchar({})", key_text_chars(table))
        }
        ColumnType::Text | ColumnType::Other => "longtext".into(),
        // Arrays become JSON arrays.
        ColumnType::Array(_) => "json".into(),
        ColumnType::Bytes if key => format!("varbinary({})", 4 * key_text_chars(table)),
        ColumnType::Bytes => "longblob".into(),
        ColumnType::Json | ColumnType::Jsonb => "json".into(),
        ColumnType::Uuid => "char(36)".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time(6)".into(),
        ColumnType::TimeTz => "varchar(32)".into(),
        ColumnType::Timestamp | ColumnType::TimestampTz => "datetime(6)".into(),
        ColumnType::Interval => "varchar(64)".into(),
    }
}

/// Whether `enum('a','b')` declares the label ''.
fn has_empty_label(column_type: &str) -> bool {
    ferry_core::enum_labels(column_type)
        .iter()
        .any(String::is_empty)
}

/// (name, DATA_TYPE, CHARACTER_SET_NAME, COLUMN_TYPE) of a target table's columns.
/// A target column as `information_schema.COLUMNS` describes it: name, data type, character set, column type,
/// collation.
type DescribedColumn = (String, String, Option<String>, String, Option<String>);

/// Refuses a text key column whose collation is not binary: it makes keys equal that PostgreSQL keeps apart
/// (`_ci`, `_ai`, and even `_as_cs` Unicode collations, for which NFC and NFD forms are equal), and two source
/// rows would become one target row. A PAD SPACE binary collation (keys that differ only in trailing
/// spaces collide) is warned about. MySQL / MariaDB sources are not checked: their key columns have collations of
/// their own, which Ferry does not read.
fn check_key_collations(
    schema: &TableSchema,
    name: &str,
    described: &[DescribedColumn],
) -> Result<(), Error> {
    if schema.dialect != Dialect::Postgres {
        return Ok(());
    }
    for &k in &schema.primary_key {
        let column = &schema.columns[k].name;
        let Some(collation) = described
            .iter()
            .find(|d| &d.0 == column)
            .and_then(|d| d.4.as_deref())
        else {
            continue;
        };
        let lower = collation.to_ascii_lowercase();
        // Only a binary collation compares keys byte by byte, as PostgreSQL's text equality does; `_cs` and
        // accent-sensitive ones still make canonically equal Unicode (NFC and NFD é) one key.
        if !(lower.ends_with("_bin") || lower == "binary") {
            return Err(Error::fatal(format!(
                "target table {name}: key column {column} has collation {collation}, which compares keys by \
                 language rules (case, accents or Unicode equivalence), so keys PostgreSQL keeps apart would \
                 become one target row. Give the column a binary collation (ALTER TABLE {name} MODIFY {} … COLLATE \
                 utf8mb4_nopad_bin on MariaDB, utf8mb4_0900_bin on MySQL 8), or drop the target table and let \
                 Ferry create it",
                super::quote_ident(column)
            )));
        }
        let no_pad = lower.contains("nopad") || lower.contains("0900") || lower == "binary";
        if !no_pad {
            tracing::warn!(table = %name, column = %column, collation = %collation, "the target's key column has a PAD SPACE collation: source keys that differ only in trailing spaces would become one target row");
        }
    }
    Ok(())
}

async fn columns(conn: &mut Conn, name: &str) -> Result<Vec<DescribedColumn>, Error> {
    let (db, table) = split_name(name);
    conn.exec(
        "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, COLUMN_TYPE, COLLATION_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    .await
    .map_err(write_error(format!("reading the columns of {name}")))
}

/// `column type NULL|NOT NULL`.
fn column_definition(schema: &TableSchema, i: usize, key_collation: &str) -> String {
    let c = &schema.columns[i];
    format!(
        "{} {}{}",
        quote_ident(&c.name),
        mysql_type(schema, i, key_collation),
        if c.nullable { " NULL" } else { " NOT NULL" }
    )
}

/// The SQL of one step (docs/schema-changes.md). `name` is the target table, `target_name` names others.
fn step_sql(
    schema: &TableSchema,
    name: &str,
    step: &Step,
    key_collation: &str,
    target_name: &(dyn Fn(&TableId) -> String + Sync),
) -> Result<Vec<String>, Error> {
    let col = |i: usize| quote_ident(&schema.columns[i].name);
    Ok(match step {
        Step::DropTable => vec![format!("DROP TABLE IF EXISTS {name}")],
        Step::RenameTable { from } => vec![format!("RENAME TABLE {} TO {name}", target_name(from))],
        Step::CreateTable => {
            let mut defs: Vec<String> = (0..schema.columns.len())
                .map(|i| column_definition(schema, i, key_collation))
                .collect();
            defs.extend(evolve::primary_key_clause(schema, quote_ident));
            vec![format!(
                "CREATE TABLE {name} ({}) DEFAULT CHARSET = utf8mb4",
                defs.join(", ")
            )]
        }
        Step::RenameColumn { from, to } => vec![format!(
            "ALTER TABLE {name} RENAME COLUMN {} TO {}",
            quote_ident(from),
            quote_ident(to)
        )],
        Step::AddColumn(i) => {
            let c = &schema.columns[*i];
            match &c.missing_value {
                // The default fills the rows already there; later rows always carry their own value.
                Some(v) => vec![
                    format!(
                        "ALTER TABLE {name} ADD COLUMN {} DEFAULT {}",
                        column_definition(schema, *i, key_collation),
                        literal(v, TargetKind::Other, schema.dialect).map_err(|why| {
                            let (table, column) = (&schema.id, &c.name);
                            Error::fatal(format!(
                                "table {table}, column {column}: the value of existing rows, {why}; MySQL \
                                 cannot hold it"
                            ))
                        })?
                    ),
                    format!("ALTER TABLE {name} ALTER COLUMN {} DROP DEFAULT", col(*i)),
                ],
                None => vec![format!(
                    "ALTER TABLE {name} ADD COLUMN {} {} NULL",
                    col(*i),
                    mysql_type(schema, *i, key_collation)
                )],
            }
        }
        Step::DropColumn(c) => vec![format!("ALTER TABLE {name} DROP COLUMN {}", quote_ident(c))],
        Step::AlterColumn {
            i, ty, nullable, ..
        } if ty.is_some() || *nullable => {
            let mut out = vec![format!(
                "ALTER TABLE {name} MODIFY COLUMN {}",
                column_definition(schema, *i, key_collation)
            )];
            out.extend(
                ty.as_deref()
                    .and_then(|old| fraction_rounding(schema, *i, old, name)),
            );
            out
        }
        Step::AlterColumn { .. } => Vec::new(),
    })
}

/// The statement that rounds the values of column `i` of a PostgreSQL source's table as the source did when a type
/// change from `old` cut the column's fractional digits of a second. The source rewrote its rows without a row
/// event for any of them, and this target keeps six digits whatever the source's (`datetime(6)`, `time(6)`), so
/// it must round its copies itself, by PostgreSQL's rule (`AdjustTimestampForTypmod`, `AdjustTimeForTypmod` in
/// its src/backend/utils/adt): to the nearest, and a tie away from PostgreSQL's epoch, 2000-01-01, for
/// timestamps (earlier before it, later after it; a `timestamptz` is stored here in UTC), up for times.
fn fraction_rounding(schema: &TableSchema, i: usize, old: &str, name: &str) -> Option<String> {
    use ferry_core::type_change::fraction_digits;
    let c = &schema.columns[i];
    let col = quote_ident(&c.name);
    let tie_up = match c.ty {
        ColumnType::Timestamp | ColumnType::TimestampTz => format!("{col} >= '2000-01-01'"),
        ColumnType::Time => "TRUE".to_owned(),
        _ => return None,
    };
    if schema.dialect != Dialect::Postgres {
        return None;
    }
    let ((_, from), (_, to)) = (fraction_digits(old)?, fraction_digits(&c.source_type)?);
    if to >= from.min(6) {
        return None;
    }
    let unit = 10u32.pow(6 - to);
    let rest = format!("MICROSECOND({col}) MOD {unit}");
    Some(format!(
        "UPDATE {name} SET {col} = DATE_ADD({col}, INTERVAL (CASE WHEN {rest} * 2 > {unit} \
         OR ({rest} * 2 = {unit} AND {tie_up}) THEN {unit} - {rest} ELSE -({rest}) END) MICROSECOND) \
         WHERE {rest} <> 0"
    ))
}

/// The steps [`ensure_table`] would take for `schema` (reads only).
pub async fn planned_steps(
    conn: &mut Conn,
    name: &str,
    schema: &TableSchema,
    applied: &HashMap<TableId, Applied>,
) -> Result<Vec<Step>, Error> {
    let schema = &*evolve::settle(schema, applied.get(&schema.id))?;
    let existing: Vec<String> = columns(conn, name)
        .await?
        .into_iter()
        .map(|(n, ..)| n)
        .collect();
    evolve::plan(
        applied,
        schema,
        (!existing.is_empty()).then_some(&existing[..]),
    )
}

/// Brings target table `name` in step with `schema` (see [`crate::evolve`]) and records it in `ferry_schemas`.
/// MySQL commits each DDL statement on its own, so this runs outside the batch's transaction, and the record
/// follows the DDL (a step found already done is skipped).
pub async fn ensure_table(
    conn: &mut Conn,
    name: &str,
    schema: &TableSchema,
    applied: &mut HashMap<TableId, Applied>,
    (pipeline, sink): (&str, &str),
    target_name: &(dyn Fn(&TableId) -> String + Sync),
    key_collation: &str,
) -> Result<TargetTable, Error> {
    if evolve::described_out_of_order(schema) {
        // Another process of the pipeline may have evolved the table since this one read its records. MySQL
        // commits DDL on its own, so no transaction can hold the record while the table changes: a named lock
        // keeps the processes' changes to the table one at a time (released with the connection, or by the
        // caller's `RELEASE_ALL_LOCKS` once the change is recorded).
        let lock: Option<i64> = conn
            .exec_first(
                "SELECT GET_LOCK(?, 60)",
                (lock_name((pipeline, sink), &schema.id),),
            )
            .await
            .map_err(write_error("waiting for the lock on the table's schema"))?;
        if lock != Some(1) {
            return Err(Error::transient(
                format!(
                    "another process kept the lock on the schema of {} for 60 s",
                    schema.id
                ),
                std::io::Error::other("GET_LOCK timed out"),
            ));
        }
        let stored: Option<String> = conn
            .exec_first(
                "SELECT applied FROM ferry_schemas WHERE pipeline = ? AND sink = ? AND source_table = ?",
                (pipeline, sink, evolve::record_key(&schema.id)),
            )
            .await
            .map_err(write_error("reading ferry_schemas"))?;
        evolve::refresh_record(applied, &schema.id, stored)?;
    }
    let schema = &*evolve::settle(schema, applied.get(&schema.id))?;
    let existing: Vec<String> = columns(conn, name)
        .await?
        .into_iter()
        .map(|(n, ..)| n)
        .collect();
    let ddl_err = || write_error(format!("creating or altering target table {name}"));
    evolve::check_target_name(applied, schema, target_name)?;
    let lost = evolve::dropped_outside(applied, schema, !existing.is_empty());
    let steps = evolve::plan(
        applied,
        schema,
        (!existing.is_empty()).then_some(&existing[..]),
    )?;
    for step in &steps {
        for sql in step_sql(schema, name, step, key_collation, target_name)? {
            conn.query_drop(sql).await.map_err(ddl_err())?;
        }
        info!(table = %name, ?step, "target table changed");
        if let Step::RenameTable { from } = step {
            applied.remove(from);
            delete_record(conn, (pipeline, sink), from).await?;
        }
    }
    let required = required_columns(conn, name).await?;
    evolve::check_required_target_columns(schema, &required)?;
    let mut record = Applied::following(schema, applied.get(&schema.id));
    if lost.is_some() {
        record.quarantined = lost;
    }
    // A PostgreSQL source's `time with time zone`, `interval` and arrays are text or JSON here, which `MODIFY` does
    // not convert: a type change that changed their values at the source (fewer fractional digits or fields, an
    // element type's narrowing) cannot be followed.
    evolve::quarantine_unfollowed(
        &mut record,
        schema,
        &steps,
        |c, old| {
            !(schema.dialect == Dialect::Postgres
                && matches!(
                    c.ty,
                    ColumnType::TimeTz | ColumnType::Interval | ColumnType::Array(_)
                )
                && !ferry_core::type_change::values_survive(old, &c.source_type))
        },
        (
            "the source changed the values, which this target holds as text or JSON and cannot change alike",
            "MySQL",
        ),
    );
    if applied.get(&schema.id) != Some(&record) {
        save_record(conn, (pipeline, sink), &schema.id, &record).await?;
        applied.insert(schema.id.clone(), record);
    }
    let described = columns(conn, name).await?;
    check_key_collations(schema, name, &described)?;
    let utf8 = described.iter().all(|(_, _, charset, ..)| {
        charset
            .as_deref()
            .is_none_or(|c| matches!(c, "utf8mb4" | "utf8mb3" | "utf8" | "ascii" | "binary"))
    });
    let columns = described
        .into_iter()
        .map(|(n, ty, _, column_type, _)| {
            let kind = if ty.eq_ignore_ascii_case("time") {
                TargetKind::Time
            } else if ty.eq_ignore_ascii_case("enum") && !has_empty_label(&column_type) {
                TargetKind::Enum
            } else {
                TargetKind::Other
            };
            (n, kind)
        })
        .collect();
    let extra_unique = extra_unique_indexes(conn, name).await?;
    if !extra_unique.is_empty() {
        tracing::warn!(table = %name, indexes = ?extra_unique, "the target table has unique indexes the source table does not: its rows are written by key, and a row that collides on one of them stops the pipeline");
    }
    Ok(TargetTable {
        version: schema.version,
        columns,
        utf8,
        extra_unique,
    })
}

/// The NOT NULL columns of target table `name` without a default (nor generated or auto-incremented).
async fn required_columns(conn: &mut Conn, name: &str) -> Result<Vec<String>, Error> {
    let (db, table) = split_name(name);
    conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
         AND IS_NULLABLE = 'NO' AND COLUMN_DEFAULT IS NULL AND EXTRA NOT LIKE '%auto_increment%' \
         AND EXTRA NOT LIKE '%GENERATED%' AND coalesce(GENERATION_EXPRESSION, '') = ''",
        (db, table),
    )
    .await
    .map_err(write_error(format!("reading the columns of {name}")))
}

/// `db`.`t` → ("db", "t"), as information_schema names them.
fn split_name(name: &str) -> (String, String) {
    let unquote = |s: &str| s.trim_matches('`').replace("``", "`");
    name.split_once("`.`")
        .map(|(a, b)| (unquote(a), unquote(b)))
        .unwrap_or_default()
}

/// The unique indexes of target table `name` other than its primary key.
async fn extra_unique_indexes(conn: &mut Conn, name: &str) -> Result<Vec<String>, Error> {
    let (db, table) = split_name(name);
    conn.exec(
        "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
         AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY' ORDER BY INDEX_NAME",
        (db, table),
    )
    .await
    .map_err(write_error(format!("reading the indexes of {name}")))
}

/// The name of the lock [`ensure_table`] takes on a table's schema (`GET_LOCK` names are at most 64 characters).
fn lock_name((pipeline, sink): (&str, &str), table: &TableId) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (pipeline, sink, evolve::record_key(table)).hash(&mut h);
    format!("ferry_schemas {:016x}", h.finish())
}

/// Stores a table's [`Applied`] record in `ferry_schemas`.
/// Deletes the `ferry_schemas` record of `table`.
pub async fn delete_record(
    conn: &mut Conn,
    (pipeline, sink): (&str, &str),
    table: &TableId,
) -> Result<(), Error> {
    conn.exec_drop(
        "DELETE FROM ferry_schemas WHERE pipeline = ? AND sink = ? AND source_table = ?",
        (pipeline, sink, evolve::record_key(table)),
    )
    .await
    .map_err(write_error(format!(
        "deleting the schema record of {table}"
    )))
}

pub async fn save_record(
    conn: &mut Conn,
    (pipeline, sink): (&str, &str),
    table: &TableId,
    record: &Applied,
) -> Result<(), Error> {
    conn.exec_drop(
        "INSERT INTO ferry_schemas (pipeline, sink, source_table, applied) VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE applied = VALUES(applied)",
        (pipeline, sink, evolve::record_key(table), record.to_json()),
    )
    .await
    .map_err(write_error(format!("recording the schema of {table}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_enum_label_is_found_among_quoted_ones() {
        assert!(!has_empty_label("enum('new','done')"));
        assert!(has_empty_label("enum('','a')"));
        assert!(has_empty_label("enum('a','')"));
        assert!(!has_empty_label("enum('''','a')"));
        assert!(!has_empty_label("enum('it''s')"));
    }
}
