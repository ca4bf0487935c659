//! The SQLite sink: the embedded default target.
//!
//! One connection, WAL journal with `synchronous = FULL` (a committed checkpoint must survive power loss, or the
//! source would release changes the target lost), per-row prepared statements inside one transaction per batch:
//! SQLite executes those faster than it parses multi-row statements.
//!
//! Table names: a source table `public.t` becomes `t`; any other schema `s.t` becomes `s_t` (SQLite has no
//! schemas). Types follow docs/type-mapping.md.

use std::collections::HashMap;
use std::path::Path;

use ferry_core::dead_letter::StoredDeadLetter;
use ferry_core::{
    recopy_shadow, Change, ColumnType, DeadLetter, Error, Event, Position, RecopyStep, Row,
    Savepoint, SchemaRef, Sink, TableId, TableSchema, Value,
};
use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use tracing::{debug, error, info};

mod conflict;

use crate::checkpoint;
use crate::conflict::MultiMasterOptions;
use crate::dead_letters::{self as layout, Dialect};
use crate::evolve::{self, Applied, Step};
use crate::recopy::{self, Finishing, Shadows};
use crate::rows::{classify, is_complete, missing_row, sent_columns, RowAction};

fn db_error(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
    let what = what.into();
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            Error::transient(what, e)
        }
        // The row's own fault: a constraint (CHECK, NOT NULL, UNIQUE, FOREIGN KEY), a value a STRICT column
        // refuses, a row too big.
        Some(
            rusqlite::ErrorCode::ConstraintViolation
            | rusqlite::ErrorCode::TypeMismatch
            | rusqlite::ErrorCode::TooBig,
        ) => {
            let extended = match &e {
                rusqlite::Error::SqliteFailure(f, _) => f.extended_code,
                _ => 0,
            };
            // SQLite's names of its extended result codes (sqlite.org/rescode.html).
            let code = match extended {
                275 => "SQLITE_CONSTRAINT_CHECK".to_owned(),
                787 => "SQLITE_CONSTRAINT_FOREIGNKEY".to_owned(),
                1299 => "SQLITE_CONSTRAINT_NOTNULL".to_owned(),
                1555 => "SQLITE_CONSTRAINT_PRIMARYKEY".to_owned(),
                2067 => "SQLITE_CONSTRAINT_UNIQUE".to_owned(),
                3091 => "SQLITE_CONSTRAINT_DATATYPE".to_owned(),
                18 => "SQLITE_TOOBIG".to_owned(),
                20 => "SQLITE_MISMATCH".to_owned(),
                n => format!("SQLITE_{n}"),
            };
            Error::row(what, code, e)
        }
        // A target table dropped outside Ferry: the restart finds it missing, creates it again and quarantines
        // it (evolve::dropped_outside).
        _ if e.to_string().contains("no such table") => Error::transient(what, e),
        _ => Error::fatal_from(what, e),
    }
}

/// The SQLite table name of a source table.
pub fn table_name(t: &TableId) -> String {
    if t.schema == "public" {
        t.name.clone()
    } else {
        format!("{}_{}", t.schema, t.name)
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The declared SQLite type of a column (its affinity).
pub fn sqlite_type(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool | ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => "INTEGER",
        ColumnType::Float4 | ColumnType::Float8 => "REAL",
        ColumnType::Bytes => "BLOB",
        _ => "TEXT",
    }
}

/// A value as SQLite stores it.
fn sqlite_value(v: &Value) -> SqlValue {
    match v {
        Value::Null | Value::Unchanged => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Int(i) => SqlValue::Integer(*i),
        // SQLite turns NaN into NULL; keep it as text so it is not lost.
        Value::Float(f) if f.is_nan() => SqlValue::Text("NaN".into()),
        Value::Float(f) => SqlValue::Real(*f),
        Value::Decimal(d) => SqlValue::Text(d.to_string()),
        Value::Text(s) | Value::Json(s) | Value::ZeroDate(s) => SqlValue::Text(s.clone()),
        Value::Bytes(b) => SqlValue::Blob(b.clone()),
        Value::Uuid(u) => SqlValue::Text(u.to_string()),
        Value::Date(d) => SqlValue::Text(d.to_string()),
        Value::Time(t) => SqlValue::Text(t.to_string()),
        Value::TimeTz(t) => SqlValue::Text(t.to_string()),
        Value::Timestamp(t) => SqlValue::Text(t.to_string()),
        Value::TimestampTz(t) => SqlValue::Text(t.display_utc().to_string()),
        Value::Interval(i) => SqlValue::Text(i.to_string()),
        Value::Array(_) => SqlValue::Text(json_array(v)),
    }
}

/// Arrays are stored as JSON arrays of their elements' SQLite forms (the MySQL sink writes them the same way).
pub(crate) fn json_array(v: &Value) -> String {
    fn write(out: &mut String, v: &Value) {
        match v {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, item);
                }
                out.push(']');
            }
            Value::Json(s) => out.push_str(s),
            other => match sqlite_value(other) {
                SqlValue::Null => out.push_str("null"),
                SqlValue::Integer(i) => out.push_str(&i.to_string()),
                SqlValue::Real(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
                SqlValue::Real(f) => out.push_str(&json_string(&f.to_string())),
                SqlValue::Text(s) => out.push_str(&json_string(&s)),
                SqlValue::Blob(b) => out.push_str(&json_string(
                    &b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
                )),
            },
        }
    }
    let mut out = String::new();
    write(&mut out, v);
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A SQLite file target.
pub struct SqliteSink {
    name: String,
    pipeline: String,
    conn: Connection,
    in_transaction: bool,
    /// A Kafka source's offsets as this sink last wrote them.
    kafka_rows: checkpoint::KafkaRows,
    known_tables: HashMap<TableId, SchemaRef>,
    /// What this sink last applied to each target table (`ferry_schemas`).
    applied: HashMap<TableId, Applied>,
    /// Tables being re-copied into shadow tables.
    shadows: Shadows,
    /// The locked lease file: held while this sink exists.
    _lease: Option<std::fs::File>,
    multi: Box<conflict::SqliteMulti>,
    /// The conflicts of the open transaction when the row isolation's savepoint was set.
    savepoint_tally: usize,
    /// `ferry_dead_letters` was created by this sink (see the PostgreSQL sink's same flag).
    dead_letters_ready: bool,
}

impl SqliteSink {
    /// Opens (creating if needed) the database file.
    pub fn open(
        name: &str,
        pipeline: &str,
        path: &Path,
        multi: MultiMasterOptions,
    ) -> Result<Self, Error> {
        let lease = if multi.shared {
            None
        } else {
            Some(crate::file_lease(path, pipeline, name)?)
        };
        let conn = open_db(path)?;
        if multi.resolves() {
            conn.execute_batch(&conflict::support_sql())
                .map_err(db_error("creating ferry_conflicts and ferry_tombstones"))?;
        }
        let records: Vec<(String, String)> = {
            let mut stmt = conn
                .prepare("SELECT source_table, applied FROM ferry_schemas WHERE pipeline = ?1 AND sink = ?2")
                .map_err(db_error("reading ferry_schemas"))?;
            let rows = stmt
                .query_map((pipeline, name), |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_error("reading ferry_schemas"))?;
            rows.collect::<Result<_, _>>()
                .map_err(db_error("reading ferry_schemas"))?
        };
        let applied = evolve::parse_records(records)?;
        evolve::report_quarantined(name, &applied);
        Ok(SqliteSink {
            name: name.to_owned(),
            pipeline: pipeline.to_owned(),
            conn,
            in_transaction: false,
            kafka_rows: checkpoint::KafkaRows::default(),
            known_tables: HashMap::new(),
            _lease: lease,
            shadows: Shadows::from_records(&applied),
            applied,
            multi: Box::new(conflict::SqliteMulti {
                node: multi.node.clone().unwrap_or_else(|| pipeline.to_owned()),
                options: multi,
                ..Default::default()
            }),
            savepoint_tally: 0,
            dead_letters_ready: false,
        })
    }

    /// Opens the target transaction if none is open.
    fn begin(&mut self) -> Result<(), Error> {
        if self.in_transaction {
            return Ok(());
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db_error("starting a transaction"))?;
        self.in_transaction = true;
        if self.multi.options.resolves() {
            // Keeps the stamping triggers off for Ferry's own writes (see conflict.rs).
            self.conn
                .execute(
                    &format!("INSERT INTO {} VALUES (?1)", conflict::APPLYING_TABLE),
                    [&self.pipeline],
                )
                .map_err(db_error("starting a transaction"))?;
        }
        Ok(())
    }

    fn apply_sync(&mut self, events: &[Event], commit: Option<&Position>) -> Result<(), Error> {
        self.begin()?;
        for event in events.iter() {
            match event {
                Event::Change(Change::Recopy { table, step }) => {
                    if matches!(step, RecopyStep::Start { .. }) {
                        crate::conflict::refuse_bulk_change(
                            &self.multi.options.conflicts,
                            std::slice::from_ref(table),
                            "an online re-copy",
                        )?;
                    }
                    let (finishing, record) =
                        recopy::record_step(&mut self.applied, &self.name, table, step);
                    match (step, finishing) {
                        (RecopyStep::Finish { schema }, Finishing::Swap) => {
                            let columns: Vec<String> =
                                schema.columns.iter().map(|c| quote(&c.name)).collect();
                            let (live, shadow) = (
                                quote(&table_name(table)),
                                quote(&table_name(&recopy_shadow(table))),
                            );
                            for sql in recopy::finish_statements(&live, &shadow, &columns) {
                                self.conn.execute_batch(&sql).map_err(db_error(&format!(
                                    "replacing the rows of {live} with its re-copy"
                                )))?;
                            }
                            self.forget_shadow(table)?;
                        }
                        (RecopyStep::Cancel, _) | (_, Finishing::Discard) => {
                            self.forget_shadow(table)?
                        }
                        _ => {}
                    }
                    if let Some(record) = record {
                        save_record(&self.conn, (&self.pipeline, &self.name), table, &record)?;
                    }
                }
                Event::Change(Change::Row { table, .. })
                    if evolve::is_quarantined(&self.applied, &table.id) => {}
                Event::Change(Change::Refused(_)) => {
                    return Err(ferry_core::dead_letter::refused_row_reached(&self.name))
                }
                Event::Change(Change::CopyRows { .. }) => {
                    return Err(crate::rows::raw_copy_reached(&self.name))
                }
                Event::Change(Change::Copied { tables }) => {
                    for t in tables {
                        if let Some(record) = evolve::copied(&mut self.applied, t) {
                            save_record(&self.conn, (&self.pipeline, &self.name), t, &record)?;
                        }
                    }
                }
                Event::Change(Change::Quarantine { table, reason }) => {
                    let record = Applied::quarantined(self.applied.get(table), reason);
                    save_record(&self.conn, (&self.pipeline, &self.name), table, &record)?;
                    self.applied.insert(table.clone(), record);
                    error!(sink = %self.name, %table, reason, "table quarantined: its changes are no longer applied");
                }
                Event::Change(Change::Row { table, op }) => {
                    match self.multi.augmenter.managed(table, op, &self.multi.node) {
                        Some(m) => self.apply_managed(table, op, m)?,
                        None => self.apply_row(table, classify(table, op))?,
                    }
                }
                Event::Change(Change::Truncate { tables, snapshot }) => {
                    if !*snapshot {
                        crate::conflict::refuse_bulk_change(
                            &self.multi.options.conflicts,
                            tables,
                            "a TRUNCATE",
                        )?;
                    }
                    for t in tables.iter().filter(|_| *snapshot) {
                        if let Some(record) = evolve::snapshot_starts(&mut self.applied, t) {
                            save_record(&self.conn, (&self.pipeline, &self.name), t, &record)?;
                        }
                    }
                    for t in tables.iter().filter(|t| {
                        self.known_tables.contains_key(*t)
                            && !evolve::is_quarantined(&self.applied, t)
                    }) {
                        self.conn
                            .execute(&format!("DELETE FROM {}", quote(&table_name(t))), [])
                            .map_err(db_error("truncating"))?;
                    }
                }
                Event::Schema(schema) => {
                    ensure_table(
                        &self.conn,
                        schema,
                        &mut self.applied,
                        &self.pipeline,
                        &self.name,
                    )?;
                    self.known_tables.insert(schema.id.clone(), schema.clone());
                    self.prepare_versions(schema)?;
                }
                Event::Begin(_)
                | Event::Commit { .. }
                | Event::Heartbeat { .. }
                | Event::Abandon
                | Event::Claim(_) => {}
            }
        }
        if let Some(Position::Kafka(offsets)) = commit {
            let now = checkpoint::now_text();
            for w in self.kafka_rows.changed(&self.name, offsets) {
                let moved = self
                    .conn
                    .execute(
                        checkpoint::SET_PARTITION_CHECKPOINT,
                        (&w.text, &now, &self.pipeline, &w.key, &w.claim),
                    )
                    .map_err(db_error("writing the Kafka offsets"))?;
                if moved != 1 {
                    self.in_transaction = false;
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(checkpoint::fenced(&self.name, &w.partition));
                }
            }
        } else if let Some(position) = commit {
            self.conn
                .execute(
                    checkpoint::UPSERT_CHECKPOINT,
                    (
                        &self.pipeline,
                        &self.name,
                        position.to_string(),
                        checkpoint::now_text(),
                    ),
                )
                .map_err(db_error("writing the checkpoint"))?;
        }
        if let Some(position) = commit {
            if self.multi.options.resolves() {
                self.conn
                    .execute_batch(&format!("DELETE FROM {}", conflict::APPLYING_TABLE))
                    .map_err(db_error("committing"))?;
            }
            self.conn
                .execute_batch("COMMIT")
                .map_err(db_error("committing"))?;
            self.in_transaction = false;
            if let Position::Kafka(offsets) = position {
                self.kafka_rows.committed(offsets);
            }
            self.multi.tally.committed();
            debug!(sink = %self.name, %position, "committed");
        }
        Ok(())
    }

    /// Gives a target table under a conflict policy its stamping and tombstone triggers, once per schema version
    /// (in the open transaction: SQLite's DDL is transactional).
    fn prepare_versions(&mut self, schema: &SchemaRef) -> Result<(), Error> {
        if schema.column_index(ferry_core::VERSION_TS).is_none() || !self.multi.options.resolves() {
            return Ok(());
        }
        let Some(policy) = self
            .multi
            .policies
            .get(&self.multi.options.conflicts, schema)?
        else {
            return Ok(());
        };
        if !self
            .multi
            .prepared
            .insert((schema.id.clone(), schema.version))
        {
            return Ok(());
        }
        let what = || format!("preparing {} for conflict detection", schema.id);
        // Triggers a renamed table took along (SQLite keeps them, under their old names) would stamp twice.
        let stale: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 \
                     AND name LIKE 'ferry!_%' ESCAPE '!'",
                )
                .map_err(db_error(what()))?;
            let rows = stmt
                .query_map([table_name(&schema.id)], |r| r.get(0))
                .map_err(db_error(what()))?;
            rows.collect::<Result<_, _>>().map_err(db_error(what()))?
        };
        let drops = stale
            .iter()
            .map(|t| format!("DROP TRIGGER IF EXISTS {}", quote(t)));
        for sql in drops.chain(conflict::prepare_sql(schema, policy.vectors)) {
            self.conn.execute_batch(&sql).map_err(db_error(what()))?;
        }
        Ok(())
    }

    /// Drops the shadow table of `table`'s re-copy and its record.
    fn forget_shadow(&mut self, table: &TableId) -> Result<(), Error> {
        let shadow = recopy_shadow(table);
        self.conn
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS {}",
                quote(&table_name(&shadow))
            ))
            .map_err(db_error("dropping a re-copy's shadow table"))?;
        delete_record(&self.conn, (&self.pipeline, &self.name), &shadow)?;
        self.applied.remove(&shadow);
        self.known_tables.remove(&shadow);
        Ok(())
    }

    fn apply_row(&mut self, table: &SchemaRef, action: RowAction<'_>) -> Result<(), Error> {
        let name = quote(&table_name(&table.id));
        let col = |c: usize| quote(&table.columns[c].name);
        let what = || format!("writing to {}", table.id);
        match action {
            RowAction::Upsert(row) => self.upsert(table, row)?,
            RowAction::InsertNoKey(row) => {
                let all: Vec<usize> = (0..row.len()).collect();
                let sql = format!(
                    "INSERT INTO {name} ({}) VALUES ({})",
                    all.iter().map(|&c| col(c)).collect::<Vec<_>>().join(", "),
                    vec!["?"; all.len()].join(", ")
                );
                self.exec(&sql, row.iter(), what)?;
            }
            RowAction::UpdateSent(row) => {
                let sets: Vec<usize> = sent_columns(row)
                    .into_iter()
                    .filter(|c| !table.primary_key.contains(c))
                    .collect();
                if sets.is_empty() {
                    return Ok(());
                }
                let sql = update_sql(table, &sets, &table.primary_key);
                let values = sets.iter().chain(&table.primary_key).map(|&c| &row[c]);
                self.exec(&sql, values, what)?;
            }
            RowAction::Delete(row) => self.delete_by_key(table, row)?,
            RowAction::Move { old, new } => {
                let sets = sent_columns(new);
                let keys = table.match_key();
                let sql = update_sql(table, &sets, keys);
                let values = sets
                    .iter()
                    .map(|&c| &new[c])
                    .chain(keys.iter().map(|&k| &old[k]));
                if self.exec(&sql, values, what)? == 0 {
                    if !is_complete(new) {
                        return missing_row(
                            table,
                            old,
                            recopy::fills_in_place(&self.applied, &table.id),
                        );
                    }
                    self.upsert(table, new)?;
                }
            }
            RowAction::ReplaceNoKey { old, new } => {
                let matched = sent_columns(old);
                let cond: Vec<String> = matched
                    .iter()
                    .map(|&c| format!("{} IS ?", col(c)))
                    .collect();
                let cond = if cond.is_empty() {
                    "1".to_owned()
                } else {
                    cond.join(" AND ")
                };
                let sql = format!("DELETE FROM {name} WHERE rowid = (SELECT rowid FROM {name} WHERE {cond} LIMIT 1)");
                if self.exec(&sql, matched.iter().map(|&c| &old[c]), what)? == 0 {
                    return Err(crate::rows::missing_old_row(table));
                }
                if let Some(new) = new {
                    self.apply_row(table, RowAction::InsertNoKey(new))?;
                }
            }
        }
        Ok(())
    }

    fn upsert(&mut self, table: &SchemaRef, row: &Row) -> Result<(), Error> {
        let col = |c: usize| quote(&table.columns[c].name);
        let all: Vec<usize> = (0..row.len()).collect();
        let updates: Vec<String> = all
            .iter()
            .filter(|c| !table.primary_key.contains(c))
            .map(|&c| format!("{0} = excluded.{0}", col(c)))
            .collect();
        let action = if updates.is_empty() {
            "NOTHING".to_owned()
        } else {
            format!("UPDATE SET {}", updates.join(", "))
        };
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
            quote(&table_name(&table.id)),
            all.iter().map(|&c| col(c)).collect::<Vec<_>>().join(", "),
            vec!["?"; all.len()].join(", "),
            table
                .primary_key
                .iter()
                .map(|&k| col(k))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.exec(&sql, row.iter(), || format!("writing to {}", table.id))?;
        Ok(())
    }

    fn delete_by_key(&mut self, table: &SchemaRef, row: &Row) -> Result<(), Error> {
        let cond: Vec<String> = table
            .match_key()
            .iter()
            .map(|&k| format!("{} = ?", quote(&table.columns[k].name)))
            .collect();
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            quote(&table_name(&table.id)),
            cond.join(" AND ")
        );
        self.exec(&sql, table.match_key().iter().map(|&k| &row[k]), || {
            format!("deleting from {}", table.id)
        })?;
        Ok(())
    }

    fn exec<'v>(
        &self,
        sql: &str,
        values: impl Iterator<Item = &'v Value>,
        what: impl FnOnce() -> String,
    ) -> Result<usize, Error> {
        let what = what();
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error(&what))?;
        stmt.execute(params_from_iter(
            values.map(|v| ToSqlOutput::Owned(sqlite_value(v))),
        ))
        .map_err(db_error(what))
    }
}

fn open_db(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path).map_err(db_error(format!("opening {}", path.display())))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; {}; {}",
        checkpoint::CREATE_CHECKPOINT_TABLE,
        evolve::CREATE_SCHEMAS_TABLE
    ))
    .map_err(db_error(format!("preparing {}", path.display())))?;
    Ok(conn)
}

/// `UPDATE t SET set1 = ?, … WHERE key1 = ? AND …`.
fn update_sql(table: &TableSchema, sets: &[usize], keys: &[usize]) -> String {
    let terms = |cols: &[usize], sep: &str| {
        cols.iter()
            .map(|&c| format!("{} = ?", quote(&table.columns[c].name)))
            .collect::<Vec<_>>()
            .join(sep)
    };
    format!(
        "UPDATE {} SET {} WHERE {}",
        quote(&table_name(&table.id)),
        terms(sets, ", "),
        terms(keys, " AND ")
    )
}

/// A value as an SQLite literal (for `ADD COLUMN … DEFAULT`).
fn sqlite_literal(v: &Value) -> String {
    match sqlite_value(v) {
        SqlValue::Null => "NULL".to_owned(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) if f.is_finite() => format!("{f:?}"),
        SqlValue::Real(f) => format!("'{f}'"),
        SqlValue::Text(t) => format!("'{}'", t.replace('\'', "''")),
        SqlValue::Blob(b) => format!(
            "X'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

fn column_definition(c: &ferry_core::Column) -> String {
    format!("{} {}", quote(&c.name), sqlite_type(&c.ty))
}

/// The SQL of one step (docs/schema-changes.md). SQLite cannot change a column's type or default in place; its
/// columns take any value of their affinity, so a type change needs nothing.
fn step_sql(schema: &TableSchema, step: &Step) -> Option<String> {
    let name = quote(&table_name(&schema.id));
    Some(match step {
        Step::DropTable => format!("DROP TABLE IF EXISTS {name}"),
        Step::RenameTable { from } => {
            format!("ALTER TABLE {} RENAME TO {name}", quote(&table_name(from)))
        }
        Step::CreateTable => {
            let mut defs: Vec<String> = schema.columns.iter().map(column_definition).collect();
            defs.extend(evolve::primary_key_clause(schema, quote));
            format!("CREATE TABLE {name} ({})", defs.join(", "))
        }
        Step::RenameColumn { from, to } => {
            format!(
                "ALTER TABLE {name} RENAME COLUMN {} TO {}",
                quote(from),
                quote(to)
            )
        }
        Step::AddColumn(i) => {
            let c = &schema.columns[*i];
            let fill = c
                .missing_value
                .as_ref()
                .map_or(String::new(), |v| format!(" DEFAULT {}", sqlite_literal(v)));
            format!(
                "ALTER TABLE {name} ADD COLUMN {}{fill}",
                column_definition(c)
            )
        }
        Step::DropColumn(c) => format!("ALTER TABLE {name} DROP COLUMN {}", quote(c)),
        Step::AlterColumn { .. } => return None,
    })
}

/// Brings the target table in step with `schema` (see [`crate::evolve`]) and records it in `ferry_schemas`, in
/// the open transaction.
fn ensure_table(
    conn: &Connection,
    schema: &SchemaRef,
    applied: &mut HashMap<TableId, Applied>,
    pipeline: &str,
    sink: &str,
) -> Result<(), Error> {
    if evolve::described_out_of_order(schema) {
        // Another process of the pipeline may have evolved the table (SQLite's write lock, held by the open
        // transaction, keeps them one at a time).
        let stored: Option<String> = conn
            .query_row(
                "SELECT applied FROM ferry_schemas WHERE pipeline = ?1 AND sink = ?2 AND source_table = ?3",
                (pipeline, sink, evolve::record_key(&schema.id)),
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error("reading ferry_schemas"))?;
        evolve::refresh_record(applied, &schema.id, stored)?;
    }
    let settled = evolve::settle(schema, applied.get(&schema.id))?;
    let schema: &TableSchema = &settled;
    let name = table_name(&schema.id);
    let what = || format!("creating or altering target table {name}");
    let existing: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(db_error(what()))?;
        let rows = stmt
            .query_map([&name], |r| r.get(0))
            .map_err(db_error(what()))?;
        rows.collect::<Result<_, _>>().map_err(db_error(what()))?
    };
    evolve::check_target_name(applied, schema, &table_name)?;
    let lost = evolve::dropped_outside(applied, schema, !existing.is_empty());
    let steps = evolve::plan(
        applied,
        schema,
        (!existing.is_empty()).then_some(&existing[..]),
    )?;
    for step in &steps {
        if let Some(sql) = step_sql(schema, step) {
            conn.execute_batch(&sql).map_err(db_error(what()))?;
            info!(table = %name, ?step, "target table changed");
        }
        if let Step::RenameTable { from } = step {
            applied.remove(from);
            delete_record(conn, (pipeline, sink), from)?;
        }
    }
    let required: Vec<String> = {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM pragma_table_info(?1) WHERE \"notnull\" = 1 AND dflt_value IS NULL AND pk = 0",
            )
            .map_err(db_error(what()))?;
        let rows = stmt
            .query_map([&name], |r| r.get(0))
            .map_err(db_error(what()))?;
        rows.collect::<Result<_, _>>().map_err(db_error(what()))?
    };
    evolve::check_required_target_columns(schema, &required)?;
    // SQLite keeps stored values as they arrived: a type change that changes values at the source (a smaller
    // scale rounds, text becomes a date) leaves them different here until the table is copied anew.
    let mut record = Applied::following(schema, applied.get(&schema.id));
    if lost.is_some() {
        record.quarantined = lost;
    }
    evolve::quarantine_unfollowed(
        &mut record,
        schema,
        &steps,
        |c, old| ferry_core::type_change::values_survive(old, &c.source_type),
        ("SQLite keeps the values it holds as they were", "SQLite"),
    );
    if applied.get(&schema.id) != Some(&record) {
        save_record(conn, (pipeline, sink), &schema.id, &record)?;
        applied.insert(schema.id.clone(), record);
    }
    Ok(())
}

/// Stores a table's [`Applied`] record in `ferry_schemas`, in the open transaction.
fn save_record(
    conn: &Connection,
    (pipeline, sink): (&str, &str),
    table: &TableId,
    record: &Applied,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO ferry_schemas (pipeline, sink, source_table, applied) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (pipeline, sink, source_table) DO UPDATE SET applied = excluded.applied",
        (pipeline, sink, evolve::record_key(table), record.to_json()),
    )
    .map_err(db_error(format!("recording the schema of {table}")))?;
    Ok(())
}

fn delete_record(
    conn: &Connection,
    (pipeline, sink): (&str, &str),
    table: &TableId,
) -> Result<(), Error> {
    conn.execute(
        "DELETE FROM ferry_schemas WHERE pipeline = ?1 AND sink = ?2 AND source_table = ?3",
        (pipeline, sink, evolve::record_key(table)),
    )
    .map_err(db_error(format!("deleting the schema record of {table}")))?;
    Ok(())
}

impl Sink for SqliteSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, Error> {
        let rows = self
            .conn
            .prepare(checkpoint::SELECT_PIPELINE_CHECKPOINTS)
            .and_then(|mut st| {
                st.query_map([&self.pipeline], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<(String, String)>, _>>()
            })
            .map_err(db_error("reading the checkpoint"))?;
        checkpoint::gather(&self.name, rows)
    }

    async fn claim(
        &mut self,
        partitions: &[ferry_core::TopicPartition],
        token: u64,
    ) -> Result<ferry_core::KafkaOffsets, Error> {
        if self.in_transaction {
            return Err(checkpoint::claim_inside_transaction());
        }
        let now = checkpoint::now_text();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_error("claiming Kafka partitions"))?;
        let mut held = std::collections::BTreeMap::new();
        for tp in partitions {
            let row = checkpoint::fresh_claim(&self.name, tp, token);
            tx.execute(
                checkpoint::INSERT_PARTITION_CHECKPOINT,
                (&self.pipeline, &row.key, &row.text, &now),
            )
            .map_err(db_error("claiming Kafka partitions"))?;
            let stored: String = tx
                .query_row(
                    "SELECT position FROM ferry_checkpoints WHERE pipeline = $1 AND sink = $2",
                    (&self.pipeline, &row.key),
                    |r| r.get(0),
                )
                .map_err(db_error("claiming Kafka partitions"))?;
            let (mark, row) = checkpoint::claimed(&self.name, tp, Some(&stored), token);
            tx.execute(
                checkpoint::CLAIM_PARTITION_CHECKPOINT,
                (&row.text, &now, &self.pipeline, &row.key),
            )
            .map_err(db_error("claiming Kafka partitions"))?;
            held.insert(tp.clone(), mark);
        }
        tx.commit().map_err(db_error("claiming Kafka partitions"))?;
        let held = ferry_core::KafkaOffsets::from_map(held);
        self.kafka_rows.committed(&held);
        Ok(held)
    }

    async fn recopies(&mut self) -> Result<Option<Vec<(TableId, String)>>, Error> {
        Ok(Some(recopy::recorded(&self.applied)))
    }

    fn take_conflicts(&mut self) -> Vec<ferry_core::ConflictCount> {
        self.multi.tally.take()
    }

    async fn rollback(&mut self) -> Result<(), Error> {
        if self.in_transaction {
            self.in_transaction = false;
            tokio::task::block_in_place(|| self.conn.execute_batch("ROLLBACK"))
                .map_err(db_error("undoing a transaction applied live"))?;
        }
        self.multi.tally.rollback(0);
        Ok(())
    }

    async fn savepoint(&mut self, step: Savepoint) -> Result<(), Error> {
        self.begin()?;
        let sql = crate::dead_letters::savepoint_sql(
            step,
            &mut self.multi.tally,
            &mut self.savepoint_tally,
        );
        self.conn
            .execute_batch(sql)
            .map_err(db_error("setting a row aside (savepoint)"))
    }

    async fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), Error> {
        self.begin()?;
        if !self.dead_letters_ready {
            self.conn
                .execute_batch(&Dialect::Sqlite.create_table())
                .map_err(db_error("creating ferry_dead_letters"))?;
            self.dead_letters_ready = true;
        }
        let (text, commit_time, attempts, moved) =
            layout::values((&self.pipeline, &self.name), letter);
        let mut params: Vec<SqlValue> = text
            .iter()
            .map(|t| SqlValue::Text((*t).to_owned()))
            .collect();
        params.push(commit_time.map_or(SqlValue::Null, SqlValue::Integer));
        params.push(SqlValue::Integer(attempts));
        params.push(moved.map_or(SqlValue::Null, |m| SqlValue::Text(m.to_owned())));
        self.conn
            .execute(&Dialect::Sqlite.insert(), params_from_iter(params))
            .map_err(db_error("writing a dead letter"))?;
        Ok(())
    }

    async fn dead_letters(&mut self) -> Result<Vec<StoredDeadLetter>, Error> {
        read_dead_letters(&self.conn, (&self.pipeline, &self.name), None, None)
    }

    async fn forget_dead_letters_of(&mut self, table: &TableId) -> Result<u64, Error> {
        self.begin()?;
        self.conn
            .execute(
                &Dialect::Sqlite.delete_table(),
                (&self.pipeline, &self.name, &table.schema, &table.name),
            )
            .map(|n| n as u64)
            .map_err(db_error("deleting dead letters a TRUNCATE supersedes"))
    }

    async fn forget_dead_letter(&mut self, id: i64) -> Result<(), Error> {
        self.begin()?;
        self.conn
            .execute(&Dialect::Sqlite.delete(), (&self.pipeline, &self.name, id))
            .map_err(db_error("deleting a dead letter"))?;
        Ok(())
    }

    async fn apply(&mut self, events: &[Event], commit: Option<&Position>) -> Result<(), Error> {
        let events = self.shadows.expand(events);
        let versioned;
        let events: &[Event] = if self.multi.options.resolves() {
            let m = &mut *self.multi;
            versioned =
                m.augmenter
                    .augment(&mut m.policies, &m.options.conflicts, &m.node, &events)?;
            &versioned
        } else {
            &events
        };
        tokio::task::block_in_place(|| self.apply_sync(events, commit))
    }
}

/// The dead letters of a pipeline's sink in `conn` (none without the table), oldest first.
fn read_dead_letters(
    conn: &Connection,
    (pipeline, sink): (&str, &str),
    table: Option<&TableId>,
    id: Option<i64>,
) -> Result<Vec<StoredDeadLetter>, Error> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'ferry_dead_letters'",
            [],
            |r| r.get(0),
        )
        .map_err(db_error("looking for ferry_dead_letters"))?;
    if !exists {
        return Ok(Vec::new());
    }
    let f = layout::Filter::new(table, id);
    let mut stmt = conn
        .prepare(&Dialect::Sqlite.select())
        .map_err(db_error("reading ferry_dead_letters"))?;
    let rows = stmt
        .query_map((pipeline, sink, &f.schema, &f.name, f.id), |r| {
            let mut text: [String; 12] = Default::default();
            for (i, t) in text.iter_mut().enumerate() {
                *t = r.get(i + 1)?;
            }
            Ok(layout::stored(
                r.get(0)?,
                text,
                r.get(13)?,
                r.get(14)?,
                r.get(15)?,
            ))
        })
        .map_err(db_error("reading ferry_dead_letters"))?;
    rows.collect::<Result<_, _>>()
        .map_err(db_error("reading ferry_dead_letters"))
}

/// The dead letters of a pipeline's sink in the SQLite file at `path` (`ferry dead-letters list`), read-only.
pub fn list_dead_letters(
    path: &Path,
    names: (&str, &str),
    table: Option<&TableId>,
    id: Option<i64>,
) -> Result<Vec<StoredDeadLetter>, Error> {
    match open_read_only(path, "ferry_dead_letters")? {
        Some(conn) => read_dead_letters(&conn, names, table, id),
        None => Ok(Vec::new()),
    }
}

/// The file at `path`, opened read-only, when it exists and holds table `table`.
fn open_read_only(path: &Path, table: &str) -> Result<Option<Connection>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(db_error(format!("opening {}", path.display())))?;
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .map_err(db_error(format!("looking for {table}")))?;
    Ok(exists.then_some(conn))
}

/// A pipeline's checkpoints in a SQLite file (`ferry status`).
pub fn list_checkpoints(
    path: &Path,
    pipeline: &str,
) -> Result<Vec<(String, String, String)>, Error> {
    // Read-only: neither the file nor the checkpoint table is created by `ferry status`.
    let Some(conn) = open_read_only(path, "ferry_checkpoints")? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn
        .prepare(checkpoint::LIST_CHECKPOINTS)
        .map_err(db_error("reading checkpoints"))?;
    let rows = stmt
        .query_map([pipeline], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(db_error("reading checkpoints"))?;
    rows.collect::<Result<_, _>>()
        .map_err(db_error("reading checkpoints"))
}

/// The conflicts sink `sink` of `pipeline` logged in a SQLite file (`ferry conflicts`), only `table`'s when given.
pub fn list_conflicts(
    path: &Path,
    pipeline: &str,
    sink: &str,
    table: Option<&str>,
) -> Result<Vec<crate::conflict::LoggedConflict>, Error> {
    let Some(conn) = open_read_only(path, "ferry_conflicts")? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn
        .prepare(conflict::LIST_CONFLICTS_SQL)
        .map_err(db_error("reading ferry_conflicts"))?;
    let rows = stmt
        .query_map((pipeline, sink, table), |r| {
            Ok(crate::conflict::LoggedConflict {
                id: r.get(0)?,
                detected_at: r.get(1)?,
                pipeline: r.get(2)?,
                sink: r.get(3)?,
                table: r.get(4)?,
                key: r.get(5)?,
                kind: r.get(6)?,
                resolver: r.get(7)?,
                winner: r.get(8)?,
                local_row: crate::conflict::logged_row(r.get(9)?),
                remote_row: crate::conflict::logged_row(r.get(10)?),
                local_node: r.get(11)?,
                local_ts: r.get(12)?,
                remote_node: r.get(13)?,
                remote_ts: r.get(14)?,
                source_position: r.get(15)?,
            })
        })
        .map_err(db_error("reading ferry_conflicts"))?;
    rows.collect::<Result<_, _>>()
        .map_err(db_error("reading ferry_conflicts"))
}

/// Deletes a pipeline's checkpoints from a SQLite file (`ferry reset`).
pub fn delete_checkpoints(path: &Path, pipeline: &str) -> Result<usize, Error> {
    let conn = open_db(path)?;
    conn.execute(checkpoint::DELETE_CHECKPOINTS, [pipeline])
        .map_err(db_error("deleting checkpoints"))
}
