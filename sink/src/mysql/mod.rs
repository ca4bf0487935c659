//! The MySQL / MariaDB sink: batched `INSERT … ON DUPLICATE KEY UPDATE`, deletes by key, and the checkpoint row
//! in the same transaction.
//!
//! Tables go into the URL's database under the source table's name (without a database in the URL, into a
//! database named after the source schema). MySQL commits implicitly before any DDL, so creating or altering a
//! target table happens before the batch's transaction opens: when a batch needs DDL while a transaction is still
//! open from an earlier batch, that transaction is committed first without a checkpoint. Its changes are then
//! replayed after a crash; for tables with a primary key the replay converges to the same rows (every write sets
//! whole rows by key), for keyless tables it can duplicate rows written in that window.

mod conflict;
mod ddl;
mod literal;

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use ferry_core::dead_letter::StoredDeadLetter;
use ferry_core::{
    recopy_shadow, Change, ColumnType, DeadLetter, Error, ErrorClass, Event, Position, RecopyStep,
    Row, Savepoint, SchemaRef, Sink, TableId, TableSchema, Value,
};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tracing::warn;

use crate::checkpoint::now_text;
use crate::conflict::augment::{
    conflict_record, decide_managed, key_change_parts, winner, Augmenter, Managed,
};
use crate::conflict::{ConflictRecord, ConflictTally, Decision, MultiMasterOptions, Policies};
use crate::dead_letters::{self as layout, Dialect};
use crate::evolve::{self, Applied};
use crate::recopy::{self, Finishing, Shadows};
use crate::rows::{classify, describe_key, is_complete, missing_row, unwritable, RowAction};
use ddl::{ensure_table, TargetKind, TargetTable};
use ferry_myconn::MyUrl;
use literal::{literal, load_field, quote_ident};

/// Row groups are flushed once their values reach this size (well under max_allowed_packet's 16 MiB default).
const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// Bytes of LOAD DATA rows sent to the server at a time.
const LOAD_DATA_CHUNK: usize = 64 * 1024;

/// Fewer rows than this go in one INSERT; more through LOAD DATA.
const LOAD_DATA_MIN_ROWS: usize = 16;

const CREATE_CHECKPOINT_TABLE: &str = "CREATE TABLE IF NOT EXISTS ferry_checkpoints (\
    pipeline VARCHAR(255) NOT NULL, sink VARCHAR(255) NOT NULL, position TEXT NOT NULL, updated_at VARCHAR(64) NOT NULL, \
    PRIMARY KEY (pipeline, sink))";

/// The session every sink connection uses: exact values in, no surprises from server defaults.
const SESSION_SQL: [&str; 3] = [
    "SET NAMES utf8mb4",
    "SET SESSION time_zone = '+00:00', SESSION foreign_key_checks = 0",
    // Quotes are doubled, never backslash-escaped; an explicit 0 in an AUTO_INCREMENT column stays 0.
    "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES,NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
];

/// ENUM error values. Under a non-strict sql_mode a MySQL source stores '' (index 0) for an invalid ENUM value, and
/// the copy must hold the same. Strict mode refuses to write '' (or 0) into an ENUM without that label ("Data
/// truncated", 1265), and nothing else asks for index 0. So only a statement that writes such a value runs without
/// STRICT_ALL_TABLES: one row at a time, never through LOAD DATA, and afterwards every warning it raised must be
/// 1265 on a column it set to the ENUM error value. Any other warning (a string cut short, a number out of range)
/// fails the batch, as strict mode would have. Every other statement keeps the strict session above.
const RELAXED_SQL_MODE: &str =
    "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'";
const STRICT_SQL_MODE: &str = SESSION_SQL[2];

fn write_error(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> Error {
    let what = what.into();
    move |e| match &e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => Error::transient(what, e),
        // Lost connections and server shutdown surface as these server errors.
        mysql_async::Error::Server(s) if matches!(s.code, 1053 | 1205 | 1213 | 2006 | 2013) => {
            Error::transient(what, e)
        }
        // A target table dropped outside Ferry: the restart finds it missing, creates it again and quarantines
        // it (evolve::dropped_outside).
        mysql_async::Error::Server(s) if s.code == 1146 => Error::transient(what, e),
        // The row's own fault: NULL in a NOT NULL column (1048), a key the target already holds under an index of
        // its own (1062), a foreign key (1216, 1451, 1452), a value out of range, cut short or not convertible
        // (1264, 1265, 1292, 1366, 1406, 1690), a CHECK constraint (MySQL 3819, MariaDB 4025).
        mysql_async::Error::Server(s)
            if matches!(
                s.code,
                1048 | 1062
                    | 1216
                    | 1451
                    | 1452
                    | 1264
                    | 1265
                    | 1292
                    | 1366
                    | 1406
                    | 1690
                    | 3819
                    | 4025
            ) =>
        {
            let code = s.code.to_string();
            Error::row(what, code, e)
        }
        _ => Error::fatal_from(what, e),
    }
}

/// A value the target changed on the way in (a LOAD DATA or relaxed-mode warning): the row's own fault.
fn refused_value(message: String, code: u32) -> Error {
    Error::row(
        message.clone(),
        code.to_string(),
        std::io::Error::other(message),
    )
}

async fn connect(url: &str) -> Result<Conn, Error> {
    // Found rather than changed rows: a moved row whose values did not change still counts as found.
    let mut conn = MyUrl::parse(url, "the MySQL sink url")?
        .connect("the MySQL target", |b| b.client_found_rows(true))
        .await?;
    for sql in SESSION_SQL {
        conn.query_drop(sql)
            .await
            .map_err(write_error("setting up the MySQL target session"))?;
    }
    Ok(conn)
}

/// Writes into MySQL or MariaDB.
pub struct MysqlSink {
    name: String,
    pipeline: String,
    /// The target's URL (a second connection creates tables while a transaction is open).
    url: String,
    conn: Conn,
    /// The database tables go into; `None`: the source schema's name.
    database: Option<String>,
    /// Target tables as last created or altered, by source table.
    tables: HashMap<TableId, TargetTable>,
    /// What this sink last applied to each target table (`ferry_schemas`).
    applied: HashMap<TableId, Applied>,
    /// The collation of text key columns (`ddl::key_collation`).
    key_collation: String,
    in_transaction: bool,
    /// A Kafka source's offsets as this sink last wrote them.
    kafka_rows: crate::checkpoint::KafkaRows,
    /// Writes made in the open transaction.
    dirty: bool,
    /// The tables the open transaction has written (DDL on them must wait for it).
    touched: HashSet<TableId>,
    /// The target accepts LOAD DATA LOCAL INFILE (until it refuses once).
    load_data: bool,
    /// Tables being re-copied into shadow tables.
    shadows: Shadows,
    /// Shadow tables of finished re-copies, dropped once the transaction commits (DROP commits implicitly).
    finished_shadows: Vec<TableId>,
    multi: Box<MysqlMulti>,
    /// `ferry_dead_letters` exists (created on first use).
    dead_letters_ready: bool,
    /// The conflicts of the open transaction when the row isolation's savepoint was set.
    savepoint_tally: usize,
}

/// The sink's conflict-handling and loop-prevention state.
#[derive(Default)]
struct MysqlMulti {
    options: MultiMasterOptions,
    /// The node changes without version columns are stamped with: `[pipeline] node`, or the pipeline's name.
    node: String,
    policies: Policies,
    augmenter: Augmenter,
    tally: ConflictTally,
    /// Target tables given their stamping triggers.
    prepared: HashSet<(TableId, u64)>,
    /// The temporary key tables of this session, by target table and schema version.
    key_tables: HashMap<(TableId, u64), Arc<conflict::KeyTable>>,
}

/// DDL a table needs before its rows can be written.
#[derive(Debug)]
enum PendingDdl {
    /// A database, table or triggers to create, on a table the open transaction has not touched: it can run on
    /// another connection without committing that transaction.
    Create,
    /// A change to an existing table (and the table a rename takes it from).
    Change(TableId, Option<TableId>),
}

/// One change of a conflict-aware group.
struct ManagedRow<'a> {
    op: &'a ferry_core::RowOp,
    action: RowAction<'a>,
    managed: Managed,
}

impl MysqlSink {
    pub async fn connect(
        name: &str,
        pipeline: &str,
        url: &str,
        multi: MultiMasterOptions,
    ) -> Result<Self, Error> {
        let database = MyUrl::parse(url, "the MySQL sink url")?
            .database()
            .map(str::to_owned);
        let mut conn = connect(url).await?;
        // Ferry's own writes are never stamped as local writes by the version triggers.
        conn.query_drop("SET @ferry_applying = 1")
            .await
            .map_err(write_error("setting up the session"))?;
        if multi.resolves() {
            conn.query_drop(conflict::conflicts_table_sql())
                .await
                .map_err(write_error("creating ferry_conflicts"))?;
        }
        if multi.node.is_some() {
            if let Some(db) = &database {
                for sql in ferry_core::versions::mysql_support_sql(db) {
                    conn.query_drop(sql)
                        .await
                        .map_err(write_error("creating ferry_node and ferry_origin"))?;
                }
            }
        }
        conn.query_drop(CREATE_CHECKPOINT_TABLE)
            .await
            .map_err(write_error("creating ferry_checkpoints"))?;
        if !multi.shared {
            take_lease(&mut conn, pipeline, name).await?;
        }
        conn.query_drop(evolve::CREATE_SCHEMAS_TABLE)
            .await
            .map_err(write_error("creating ferry_schemas"))?;
        let records: Vec<(String, String)> = conn
            .exec(
                "SELECT source_table, applied FROM ferry_schemas WHERE pipeline = ? AND sink = ?",
                (pipeline, name),
            )
            .await
            .map_err(write_error("reading ferry_schemas"))?;
        let applied = evolve::parse_records(records)?;
        evolve::report_quarantined(name, &applied);
        let key_collation = ddl::key_collation(&mut conn).await?;
        Ok(MysqlSink {
            name: name.to_owned(),
            pipeline: pipeline.to_owned(),
            url: url.to_owned(),
            conn,
            database,
            tables: HashMap::new(),
            shadows: Shadows::from_records(&applied),
            finished_shadows: Vec::new(),
            applied,
            key_collation,
            in_transaction: false,
            kafka_rows: crate::checkpoint::KafkaRows::default(),
            dirty: false,
            touched: HashSet::new(),
            load_data: true,
            multi: Box::new(MysqlMulti {
                node: multi.node.clone().unwrap_or_else(|| pipeline.to_owned()),
                options: multi,
                ..MysqlMulti::default()
            }),
            dead_letters_ready: false,
            savepoint_tally: 0,
        })
    }

    fn target_name(&self, id: &TableId) -> String {
        match &self.database {
            Some(db) => format!("{}.{}", quote_ident(db), quote_ident(&id.name)),
            None => format!("{}.{}", quote_ident(&id.schema), quote_ident(&id.name)),
        }
    }

    /// Creates or alters the tables this batch needs, before its transaction opens (DDL commits implicitly).
    async fn prepare_tables(&mut self, events: &[Event]) -> Result<(), Error> {
        let mut wanted: Vec<SchemaRef> = Vec::new();
        for e in events {
            let schema = match e {
                Event::Schema(s) => s,
                Event::Change(Change::Row { table, .. }) => table,
                _ => continue,
            };
            let known = self.tables.get(&schema.id).map(|t| t.version);
            let queued = wanted
                .iter()
                .rev()
                .find(|w| w.id == schema.id)
                .map(|w| w.version);
            if queued.or(known) != Some(schema.version) {
                wanted.push(schema.clone());
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        if self.in_transaction {
            // MySQL commits DDL implicitly, so DDL here would make the rows written so far durable without the
            // checkpoint, and a crash before the commit would apply them again. Tables met for the first time in
            // the middle of a source transaction (the first one after a restart, a new table) usually need none.
            let mut ddl = Vec::new();
            for schema in &wanted {
                ddl.extend(self.pending_ddl(schema).await?);
            }
            // DDL on a table the open transaction has written would wait for that transaction's own locks.
            let untouched = ddl.iter().all(|d| match d {
                PendingDdl::Create => true,
                PendingDdl::Change(table, from) => {
                    !self.touched.contains(table)
                        && from.as_ref().is_none_or(|f| !self.touched.contains(f))
                }
            });
            if ddl.is_empty() {
                // They join the open transaction.
            } else if !self.dirty {
                self.end_transaction("COMMIT", "committing before DDL")
                    .await?;
            } else if untouched {
                // DDL on tables this transaction has not touched (creating them, or changing them before their
                // first row in it): on a second connection, so that the open transaction stays open.
                let mut side = connect(&self.url).await?;
                // Were the transaction holding a lock the DDL waits for, fail rather than wait for ever.
                side.query_drop("SET SESSION lock_wait_timeout = 30")
                    .await
                    .map_err(write_error("setting up a connection for DDL"))?;
                let main = std::mem::replace(&mut self.conn, side);
                let prepared = self.run_preparation(wanted).await;
                let side = std::mem::replace(&mut self.conn, main);
                let _ = side.disconnect().await;
                return prepared;
            } else {
                let changes: Vec<String> = ddl
                    .iter()
                    .filter_map(|d| match d {
                        PendingDdl::Change(table, _) => Some(table.to_string()),
                        PendingDdl::Create => None,
                    })
                    .collect();
                warn!(sink = %self.name, ?changes, "a schema change in the middle of a source transaction: MySQL commits DDL implicitly, so the rows before it are committed without the checkpoint (a crash before the transaction's end would apply them again)");
                self.end_transaction("COMMIT", "committing before DDL")
                    .await?;
            }
        }
        self.run_preparation(wanted).await
    }

    /// The DDL `schema` would need on the target (read only): its table's evolution steps, a database or the
    /// version triggers to create.
    async fn pending_ddl(&mut self, schema: &SchemaRef) -> Result<Vec<PendingDdl>, Error> {
        let mut out = Vec::new();
        if self.database.is_none() && !self.database_exists(&schema.id.schema).await? {
            out.push(PendingDdl::Create);
        }
        let name = self.target_name(&schema.id);
        for step in ddl::planned_steps(&mut self.conn, &name, schema, &self.applied).await? {
            out.push(match step {
                evolve::Step::CreateTable => PendingDdl::Create,
                evolve::Step::RenameTable { from } => {
                    PendingDdl::Change(schema.id.clone(), Some(from))
                }
                _ => PendingDdl::Change(schema.id.clone(), None),
            });
        }
        if let Some(vectors) = self.unprepared_policy(schema)? {
            if !self.versions_prepared(schema, vectors).await? {
                out.push(PendingDdl::Create);
            }
        }
        Ok(out)
    }

    /// Ends the open transaction with `sql` (`COMMIT` or `ROLLBACK`), and forgets what this sink kept about it.
    /// Opens the target transaction if none is open.
    async fn begin(&mut self) -> Result<(), Error> {
        if self.in_transaction {
            return Ok(());
        }
        self.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(write_error("starting a transaction"))?;
        self.in_transaction = true;
        if self.multi.options.node.is_some() {
            // First in the transaction: a MySQL source reading this database skips what follows.
            self.exec(
                ferry_core::versions::mysql_origin_marker_sql(&self.pipeline),
                "marking the transaction as Ferry's",
            )
            .await?;
        }
        Ok(())
    }

    async fn end_transaction(&mut self, sql: &str, what: &str) -> Result<(), Error> {
        let ended = self.conn.query_drop(sql).await.map_err(write_error(what));
        self.in_transaction = false;
        self.dirty = false;
        self.touched.clear();
        ended
    }

    /// Whether database `db` exists (creating one is DDL, which MySQL commits implicitly).
    async fn database_exists(&mut self, db: &str) -> Result<bool, Error> {
        let found: Option<String> = self
            .conn
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (db,),
            )
            .await
            .map_err(write_error("reading the target's databases"))?;
        Ok(found.is_some())
    }

    /// Whether `schema` is under a conflict policy whose triggers this sink has not checked yet: its vectors
    /// setting.
    fn unprepared_policy(&mut self, schema: &SchemaRef) -> Result<Option<bool>, Error> {
        if schema.column_index(ferry_core::VERSION_TS).is_none() || !self.multi.options.resolves() {
            return Ok(None);
        }
        let key = (schema.id.clone(), schema.version);
        if self.multi.prepared.contains(&key) {
            return Ok(None);
        }
        Ok(self
            .multi
            .policies
            .get(&self.multi.options.conflicts, schema)?
            .map(|p| p.vectors))
    }

    /// Creates or alters the tables of `wanted` (see [`Self::prepare_tables`]).
    async fn run_preparation(&mut self, wanted: Vec<SchemaRef>) -> Result<(), Error> {
        for schema in wanted {
            let name = self.target_name(&schema.id);
            if let Some(db) = self.database.is_none().then(|| schema.id.schema.clone()) {
                if !self.database_exists(&db).await? {
                    self.conn
                        .query_drop(format!(
                            "CREATE DATABASE IF NOT EXISTS {}",
                            quote_ident(&db)
                        ))
                        .await
                        .map_err(write_error(format!("creating database {db}")))?;
                }
            }
            let database = self.database.clone();
            let target_name = move |id: &TableId| match &database {
                Some(db) => format!("{}.{}", quote_ident(db), quote_ident(&id.name)),
                None => format!("{}.{}", quote_ident(&id.schema), quote_ident(&id.name)),
            };
            let target = ensure_table(
                &mut self.conn,
                &name,
                &schema,
                &mut self.applied,
                (&self.pipeline, &self.name),
                &target_name,
                &self.key_collation,
            )
            .await;
            if evolve::described_out_of_order(&schema) {
                // The lock ensure_table took on the table's schema, now that the change is recorded (or failed).
                self.conn
                    .query_drop("DO RELEASE_ALL_LOCKS()")
                    .await
                    .map_err(write_error("releasing the lock on the table's schema"))?;
            }
            let target = target?;
            self.tables.insert(schema.id.clone(), target);
            if let Some(vectors) = self.unprepared_policy(&schema)? {
                self.multi
                    .prepared
                    .insert((schema.id.clone(), schema.version));
                self.prepare_versions(&schema, vectors).await?;
            }
        }
        Ok(())
    }

    /// Whether a target table has the version columns and the triggers of a policy with or without `vectors`.
    async fn versions_prepared(
        &mut self,
        schema: &TableSchema,
        vectors: bool,
    ) -> Result<bool, Error> {
        let db = self
            .database
            .clone()
            .unwrap_or_else(|| schema.id.schema.clone());
        let count: Option<i64> = self
            .conn
            .exec_first(
                ferry_core::versions::MYSQL_PREPARED_SQL,
                (
                    &db,
                    &schema.id.name,
                    &db,
                    &schema.id.name,
                    &db,
                    &schema.id.name,
                ),
            )
            .await
            .map_err(write_error("reading the version triggers"))?;
        Ok(count.is_some_and(|c| ferry_core::versions::mysql_is_prepared(c, vectors)))
    }

    /// Gives a target table under a conflict policy the triggers that stamp local writes (DDL, before the
    /// transaction opens), and its database the `ferry_node` table they read.
    async fn prepare_versions(&mut self, schema: &TableSchema, vectors: bool) -> Result<(), Error> {
        if self.versions_prepared(schema, vectors).await? {
            return Ok(());
        }
        let db = self
            .database
            .clone()
            .unwrap_or_else(|| schema.id.schema.clone());
        let fix =
            "creating triggers needs the TRIGGER privilege, and with binary logging on, SUPER or \
                   log_bin_trust_function_creators = 1";
        let mut statements = ferry_core::versions::mysql_support_sql(&db);
        statements.extend(ferry_core::versions::mysql_prepare_sql(
            &db,
            &schema.id.name,
            &key_names(schema),
            vectors,
            false,
        ));
        for sql in statements {
            self.conn.query_drop(sql).await.map_err(|e| {
                Error::fatal_from(
                    format!("preparing {} for conflict detection: {fix}", schema.id),
                    e,
                )
            })?;
        }
        tracing::info!(table = %schema.id, "target table prepared for conflict detection: version triggers");
        Ok(())
    }

    async fn exec(&mut self, sql: String, what: &str) -> Result<(), Error> {
        self.dirty = true;
        self.conn
            .query_drop(sql)
            .await
            .map_err(write_error(what.to_owned()))
    }

    /// Like [`MysqlSink::exec`], returning the number of rows the statement found.
    async fn exec_counted(&mut self, sql: String, what: &str) -> Result<u64, Error> {
        self.exec(sql, what).await?;
        Ok(self.conn.affected_rows())
    }

    /// Runs a one-row statement that writes the ENUM error value '' into `enum_errors` (target ENUM columns),
    /// without strict mode (see [`RELAXED_SQL_MODE`]); any warning but those values' own "Data truncated" fails.
    /// With no such column, the statement runs as usual. Returns the number of rows it found.
    async fn exec_row(
        &mut self,
        sql: String,
        what: &str,
        enum_errors: &[String],
    ) -> Result<u64, Error> {
        if enum_errors.is_empty() {
            return self.exec_counted(sql, what).await;
        }
        self.conn
            .query_drop(RELAXED_SQL_MODE)
            .await
            .map_err(write_error("leaving strict mode for an ENUM error value"))?;
        let written = self.exec_counted(sql, what).await;
        let warnings: Result<Vec<(String, u32, String)>, _> = match &written {
            Ok(_) => self.conn.query("SHOW WARNINGS").await,
            Err(_) => Ok(Vec::new()),
        };
        let restored = self.conn.query_drop(STRICT_SQL_MODE).await;
        let found = written?;
        let warnings =
            warnings.map_err(write_error("reading the warnings of an ENUM error value"))?;
        restored.map_err(write_error("restoring strict mode"))?;
        let expected = |code: u32, message: &str| {
            code == 1265
                && enum_errors
                    .iter()
                    .any(|c| message.contains(&format!("column '{c}'")))
        };
        if let Some((_, code, message)) = warnings
            .iter()
            .find(|(level, code, message)| level != "Note" && !expected(*code, message))
        {
            return Err(refused_value(format!(
                "{what}: the row holds the ENUM error value '' in {}, which Ferry writes without strict mode, and the target warned of another conversion ({code}: {message}); strict mode would have refused it",
                enum_errors.join(", ")
            ), *code));
        }
        Ok(found)
    }

    /// The target ENUM columns (without a '' label) that `row` sets to '', MySQL's ENUM error value.
    fn enum_errors(&self, table: &SchemaRef, row: &Row) -> Vec<String> {
        let target = &self.tables[&table.id];
        table
            .columns
            .iter()
            .zip(row)
            .filter(|(c, v)| {
                target.kind(&c.name) == TargetKind::Enum
                    && matches!(v, Value::Text(t) if t.is_empty())
            })
            .map(|(c, _)| c.name.clone())
            .collect()
    }

    /// Applies events that need no DDL between them: the tables they use are created or altered first.
    async fn apply_segment(&mut self, events: &[Event]) -> Result<(), Error> {
        self.prepare_tables(events).await?;
        for e in events {
            match e {
                Event::Change(Change::Row { table, .. }) if !self.touched.contains(&table.id) => {
                    self.touched.insert(table.id.clone());
                }
                Event::Change(Change::Truncate { tables, .. }) => {
                    self.touched.extend(tables.iter().cloned())
                }
                Event::Change(Change::Recopy { table, .. }) => {
                    self.touched.insert(table.clone());
                    self.touched.insert(recopy_shadow(table));
                }
                _ => {}
            }
        }
        self.begin().await?;
        let mut upserts = Upserts::default();
        // A key change under a conflict policy is the delete of the old key and the insert of the new one, each
        // weighed like any other (as on PostgreSQL targets): these are their rows, in the order they come.
        let mut moves: Vec<[ferry_core::RowOp; 2]> = Vec::new();
        for e in events {
            if let Event::Change(Change::Row { table, op }) = e {
                if !evolve::is_quarantined(&self.applied, &table.id)
                    && self
                        .multi
                        .augmenter
                        .managed(table, op, &self.multi.node)
                        .is_some()
                {
                    moves.extend(key_change_parts(table, op)?);
                }
            }
        }
        let mut moves = moves.iter();
        let mut managed: Vec<ManagedRow> = Vec::new();
        for e in events {
            let Event::Change(change) = e else { continue };
            if let Change::Row { table, op } = change {
                if !evolve::is_quarantined(&self.applied, &table.id) {
                    if let Some(m) = self.multi.augmenter.managed(table, op, &self.multi.node) {
                        self.flush(&mut upserts).await?;
                        if let RowAction::Move { .. } = classify(table, op) {
                            let Some(parts) = moves.next() else {
                                continue;
                            };
                            self.flush_managed(std::mem::take(&mut managed)).await?;
                            for part in parts {
                                let Some(m) =
                                    self.multi.augmenter.managed(table, part, &self.multi.node)
                                else {
                                    continue;
                                };
                                let row = ManagedRow {
                                    op: part,
                                    action: classify(table, part),
                                    managed: m,
                                };
                                self.flush_managed(vec![row]).await?;
                            }
                            continue;
                        }
                        let action = classify(table, op);
                        let key = key_of(table, op);
                        let joins = managed.last().is_some_and(|last| {
                            Arc::ptr_eq(&last.managed.table, table)
                                && std::mem::discriminant(&last.action)
                                    == std::mem::discriminant(&action)
                                && !managed.iter().any(|r| key_of(table, r.op) == key)
                        });
                        if !joins {
                            self.flush_managed(std::mem::take(&mut managed)).await?;
                        }
                        managed.push(ManagedRow {
                            op,
                            action,
                            managed: m,
                        });
                        continue;
                    }
                }
            }
            self.flush_managed(std::mem::take(&mut managed)).await?;
            match change {
                Change::Recopy { table, step } => {
                    self.flush(&mut upserts).await?;
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
                            let shadow = recopy_shadow(table);
                            let columns: Vec<String> = schema
                                .columns
                                .iter()
                                .map(|c| quote_ident(&c.name))
                                .collect();
                            let (live, shadow_name) =
                                (self.target_name(table), self.target_name(&shadow));
                            let [delete, copy] =
                                recopy::finish_statements(&live, &shadow_name, &columns);
                            let what = format!("replacing the rows of {live} with its re-copy");
                            self.exec(delete, &what).await?;
                            self.exec(copy, &what).await?;
                            self.forget_shadow(shadow).await?;
                        }
                        (RecopyStep::Cancel, _) | (_, Finishing::Discard) => {
                            self.forget_shadow(recopy_shadow(table)).await?
                        }
                        _ => {}
                    }
                    if let Some(record) = record {
                        ddl::save_record(
                            &mut self.conn,
                            (&self.pipeline, &self.name),
                            table,
                            &record,
                        )
                        .await?;
                    }
                }
                Change::Row { table, .. } if evolve::is_quarantined(&self.applied, &table.id) => {}
                Change::Refused(_) => {
                    return Err(ferry_core::dead_letter::refused_row_reached(&self.name))
                }
                Change::CopyRows { .. } => return Err(crate::rows::raw_copy_reached(&self.name)),
                Change::Copied { tables } => {
                    self.flush(&mut upserts).await?;
                    for t in tables {
                        if let Some(record) = evolve::copied(&mut self.applied, t) {
                            ddl::save_record(
                                &mut self.conn,
                                (&self.pipeline, &self.name),
                                t,
                                &record,
                            )
                            .await?;
                        }
                    }
                }
                Change::Quarantine { table, reason } => {
                    self.flush(&mut upserts).await?;
                    let record = Applied::quarantined(self.applied.get(table), reason);
                    ddl::save_record(&mut self.conn, (&self.pipeline, &self.name), table, &record)
                        .await?;
                    self.applied.insert(table.clone(), record);
                    tracing::error!(sink = %self.name, %table, reason, "table quarantined: its changes are no longer applied");
                }
                Change::Truncate { tables, snapshot } => {
                    self.flush(&mut upserts).await?;
                    if !*snapshot {
                        crate::conflict::refuse_bulk_change(
                            &self.multi.options.conflicts,
                            tables,
                            "a TRUNCATE",
                        )?;
                    }
                    for t in tables.iter().filter(|_| *snapshot) {
                        if let Some(record) = evolve::snapshot_starts(&mut self.applied, t) {
                            ddl::save_record(
                                &mut self.conn,
                                (&self.pipeline, &self.name),
                                t,
                                &record,
                            )
                            .await?;
                        }
                    }
                    for t in tables {
                        if self.tables.contains_key(t) && !evolve::is_quarantined(&self.applied, t)
                        {
                            // TRUNCATE is DDL in MySQL (an implicit commit); DELETE stays in the transaction.
                            let sql = format!("DELETE FROM {}", self.target_name(t));
                            self.exec(sql, "truncating a table").await?;
                        }
                    }
                }
                Change::Row { table, op } => match classify(table, op) {
                    RowAction::Upsert(row) | RowAction::InsertNoKey(row) => {
                        if upserts
                            .table
                            .as_ref()
                            .is_some_and(|t| !Arc::ptr_eq(t, table))
                            || upserts.bytes > MAX_STATEMENT_BYTES
                        {
                            self.flush(&mut upserts).await?;
                        }
                        upserts.push(table, row);
                    }
                    action => {
                        self.flush(&mut upserts).await?;
                        self.apply_single(table, action).await?;
                    }
                },
            }
        }
        self.flush_managed(managed).await?;
        self.flush(&mut upserts).await?;
        Ok(())
    }

    /// Applies a group of changes of one table under a conflict policy: one locking probe of the rows they meet,
    /// a decision per change, the winners written through the usual paths, the conflicts logged.
    async fn flush_managed(&mut self, group: Vec<ManagedRow<'_>>) -> Result<(), Error> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        let table = first.managed.table.clone();
        let policy = first.managed.policy.clone();
        let name = self.target_name(&table.id);
        let db = self
            .database
            .clone()
            .unwrap_or_else(|| table.id.schema.clone());
        let target = &self.tables[&table.id];
        let keys = &table.primary_key;
        let mut derived = Vec::new();
        for (ord, r) in group.iter().enumerate() {
            let row = r.op.row();
            let mut cols = vec![format!("{ord} AS ord")];
            for (i, &k) in keys.iter().enumerate() {
                let lit = literal(&row[k], target.kind(&table.columns[k].name), table.dialect)
                    .map_err(|why| unwritable("MySQL", &table, row, k, &why))?;
                cols.push(format!("{lit} AS k{i}"));
            }
            derived.push(format!("SELECT {}", cols.join(", ")));
        }
        let on: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| format!("t.{} = o.k{i}", quote_ident(&table.columns[k].name)))
            .collect();
        let local: Vec<String> = table
            .columns
            .iter()
            .filter(|c| !crate::conflict::is_version_column(&c.name) && target.has(&c.name))
            .map(|c| {
                format!(
                    "{}, CAST(t.{} AS CHAR)",
                    literal::text(&c.name),
                    quote_ident(&c.name)
                )
            })
            .collect();
        let vectors = policy.vectors && table.column_index(ferry_core::VERSION_VECTOR).is_some();
        let probe = format!(
            "SELECT o.ord, t.{ts}, COALESCE(t.{node}, (SELECT node FROM {db}.{node_table} WHERE id = 1), ''), \
             JSON_OBJECT({local}), {vector} FROM ({derived}) o JOIN {name} t ON {on} FOR UPDATE",
            vector = if vectors {
                format!("CAST(t.{} AS CHAR)", quote_ident(ferry_core::VERSION_VECTOR))
            } else {
                "NULL".to_owned()
            },
            ts = quote_ident(ferry_core::VERSION_TS),
            node = quote_ident(ferry_core::VERSION_NODE),
            db = quote_ident(&db),
            node_table = ferry_core::versions::NODE_TABLE,
            local = local.join(", "),
            derived = derived.join(" UNION ALL "),
            on = on.join(" AND "),
        );
        self.dirty = true;
        type Probed = (i64, Option<i64>, String, String, Option<String>);
        let found: Vec<Probed> = self.conn.query(probe).await.map_err(write_error(format!(
            "reading the rows of {} the changes meet",
            table.id
        )))?;
        let mut local_vectors: HashMap<usize, String> = HashMap::new();
        let found: HashMap<usize, (Option<i64>, String, String)> = found
            .into_iter()
            .map(|(ord, ts, node, json, vector)| {
                let json = serde_json::from_str::<serde_json::Value>(&json)
                    .map_or(json, |v| v.to_string());
                if let Some(v) = vector {
                    local_vectors.insert(ord as usize, v);
                }
                (ord as usize, (ts, node, json))
            })
            .collect();
        // Rows whose vector must become the larger of both (a concurrent change, won or lost).
        let mut joined_vectors: Vec<(usize, String)> = Vec::new();
        // Keys that met no row may meet a tombstone, and deletes leave one: the group's keys go to the key table.
        let missing: Vec<usize> = (0..group.len())
            .filter(|o| !found.contains_key(o))
            .collect();
        let deletes = group
            .iter()
            .any(|r| matches!(r.op, ferry_core::RowOp::Delete { .. }));
        let keys = if missing.is_empty() && !deletes {
            None
        } else {
            Some(self.load_keys(&table, &db, &name, &group).await?)
        };
        let mut tombs: HashMap<usize, crate::conflict::Version> = HashMap::new();
        if let (Some(keys), false) = (&keys, missing.is_empty()) {
            let rows: Vec<(i64, i64, String)> = self
                .conn
                .query(keys.lookup_sql(&missing))
                .await
                .map_err(write_error(format!(
                    "reading the tombstones of {}",
                    table.id
                )))?;
            tombs = rows
                .into_iter()
                .map(|(ord, ts, node)| (ord as usize, crate::conflict::Version { ts, node }))
                .collect();
        }
        let mut tombstoned = Vec::new();
        let mut records = Vec::new();
        let mut upserts = Upserts::default();
        for (ord, r) in group.iter().enumerate() {
            let local = found.get(&ord);
            let tomb = tombs.get(&ord);
            let local_version = local.map(|(ts, node, _)| (*ts, node.as_str()));
            let m = &r.managed;
            let complete = matches!(r.action, RowAction::Upsert(_));
            let Some((decision, joined)) = decide_managed(
                m,
                r.op,
                complete,
                local_version,
                local_vectors.get(&ord).map(String::as_str),
                tomb,
            ) else {
                continue;
            };
            joined_vectors.extend(joined.map(|j| (ord, j)));
            let row = r.op.row();
            let wins = decision.remote_wins();
            let merges = !policy.merges.is_empty() && local.is_some();
            let is_delete = matches!(r.op, ferry_core::RowOp::Delete { .. });
            // A merge expression decides the rows a change met and lost to (its resolver keeps them to merge).
            let expression = policy
                .merge
                .as_ref()
                .filter(|_| !wins && !is_delete && local.is_some());
            let mut merged = None;
            if let Decision::Conflict { kind, .. } = decision {
                let record = conflict_record(
                    &table,
                    row,
                    m,
                    (
                        kind,
                        winner(wins, merges || expression.is_some(), is_delete),
                    ),
                    local.map(|(ts, node, json)| (*ts, node.as_str(), json.as_str())),
                    tomb,
                );
                if policy.resolver == ferry_config::Resolver::Error {
                    return Err(record.into_error());
                }
                if let Some(merge) = expression {
                    merged = Some(self.expression_statement(&table, merge, &record, row)?);
                }
                records.push(record);
            }
            if is_delete {
                if wins && local.is_some() {
                    self.flush(&mut upserts).await?;
                    self.apply_single(&table, RowAction::Delete(row)).await?;
                }
                // A delete applied, or that met no row, leaves its tombstone (one that lost leaves the row).
                if wins || local.is_none() {
                    tombstoned.push(ord);
                }
                continue;
            }
            if merges || merged.is_some() {
                self.flush(&mut upserts).await?;
                let local_row = local.map(|(ts, node, json)| {
                    (
                        json.as_str(),
                        crate::conflict::Version {
                            ts: ts.unwrap_or(0),
                            node: node.clone(),
                        },
                    )
                });
                let rules = if merges {
                    self.merge_statement(&table, &policy, r.op, wins, local_row, &m.version)?
                } else {
                    None
                };
                for sql in rules.into_iter().chain(merged) {
                    self.exec(sql, "merging a conflicting row").await?;
                }
                continue;
            }
            if !wins {
                continue;
            }
            match &r.action {
                RowAction::Upsert(full) => {
                    upserts.push(&table, full);
                }
                action => {
                    if local.is_some() {
                        self.flush(&mut upserts).await?;
                        let action = match action {
                            RowAction::UpdateSent(r) => RowAction::UpdateSent(r),
                            RowAction::Move { old, new } => RowAction::Move { old, new },
                            _ => continue,
                        };
                        self.apply_single(&table, action).await?;
                    }
                }
            }
        }
        self.flush(&mut upserts).await?;
        for (ord, joined) in joined_vectors {
            let r = &group[ord];
            let row = r.op.row();
            let sql = format!(
                "UPDATE {name} SET {} = {} WHERE {}",
                quote_ident(ferry_core::VERSION_VECTOR),
                literal::text(&joined),
                self.key_condition(&table, row)?
            );
            self.exec(sql, "joining version vectors").await?;
        }
        if let (Some(keys), false) = (&keys, tombstoned.is_empty()) {
            for sql in keys.write_sql(&tombstoned) {
                self.exec(sql, "writing tombstones").await?;
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        for r in &records {
            self.multi.tally.detected(r);
        }
        let values: Vec<String> = records
            .iter()
            .map(|r| {
                let opt =
                    |v: &Option<String>| v.as_deref().map_or("NULL".to_owned(), literal::text);
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                    literal::text(&self.pipeline),
                    literal::text(&self.name),
                    literal::text(&r.table),
                    literal::text(&r.key),
                    literal::text(r.kind.name()),
                    literal::text(r.resolver),
                    literal::text(r.winner),
                    opt(&r.local_row),
                    literal::text(&r.remote_row),
                    opt(&r.local_version.as_ref().map(|v| v.node.clone())),
                    r.local_version
                        .as_ref()
                        .map_or("NULL".to_owned(), |v| v.ts.to_string()),
                    literal::text(&r.remote_version.node),
                    r.remote_version.ts,
                    literal::text(&r.position),
                )
            })
            .collect();
        self.exec(
            format!(
                "INSERT INTO {} (pipeline, sink, table_name, `key`, kind, resolver, winner, local_row, remote_row, \
                 local_node, local_ts, remote_node, remote_ts, source_position) VALUES {}",
                crate::conflict::CONFLICTS_TABLE,
                values.join(", ")
            ),
            "writing to ferry_conflicts",
        )
        .await
    }

    /// Puts the keys and versions of `group` (changes of `table`, in database `db`, target `target` quoted) in
    /// the table's temporary key table, creating it on first use in this session.
    async fn load_keys(
        &mut self,
        table: &SchemaRef,
        db: &str,
        target: &str,
        group: &[ManagedRow<'_>],
    ) -> Result<Arc<conflict::KeyTable>, Error> {
        let id = (table.id.clone(), table.version);
        let keys = match self.multi.key_tables.get(&id) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(conflict::KeyTable::new(
                    db,
                    &table.id.name,
                    key_names(table),
                ));
                for sql in k.create_sql(target) {
                    self.exec(sql, "creating the temporary key table").await?;
                }
                self.multi.key_tables.insert(id, k.clone());
                k
            }
        };
        let columns = &self.tables[&table.id];
        let mut rows = Vec::with_capacity(group.len());
        for (ord, r) in group.iter().enumerate() {
            let row = r.op.row();
            let mut key = Vec::with_capacity(table.primary_key.len());
            for &k in &table.primary_key {
                key.push(
                    literal(&row[k], columns.kind(&table.columns[k].name), table.dialect)
                        .map_err(|why| unwritable("MySQL", table, row, k, &why))?,
                );
            }
            rows.push((ord, key, &r.managed.version));
        }
        for sql in keys.load_sql(&rows) {
            self.exec(sql, "loading the keys of a group").await?;
        }
        Ok(keys)
    }

    /// The UPDATE that writes a merge expression's outcome for a conflict: the columns it decides, the others
    /// from the later version (as under last-write-wins), and the later of both versions, so that both sides of
    /// a pair compute the same row.
    fn expression_statement(
        &self,
        table: &SchemaRef,
        merge: &crate::conflict::MergeExpression,
        record: &ConflictRecord,
        row: &Row,
    ) -> Result<String, Error> {
        let target = &self.tables[&table.id];
        let merged = merge.merge(table, record)?;
        let remote_newer = record
            .local_version
            .as_ref()
            .is_none_or(|l| record.remote_version > *l);
        let mut sets = Vec::new();
        for (i, c) in table.columns.iter().enumerate() {
            if table.primary_key.contains(&i)
                || crate::conflict::is_version_column(&c.name)
                || !target.has(&c.name)
            {
                continue;
            }
            let value = match merged.iter().find(|(m, _)| *m == i) {
                Some((_, None)) => "NULL".to_owned(),
                Some((_, Some(text))) => match (&c.ty, text.as_str()) {
                    (ColumnType::Bool, "true") => "TRUE".to_owned(),
                    (ColumnType::Bool, "false") => "FALSE".to_owned(),
                    _ => literal::text(text),
                },
                None if remote_newer && row[i] != Value::Unchanged => {
                    literal(&row[i], target.kind(&c.name), table.dialect)
                        .map_err(|why| unwritable("MySQL", table, row, i, &why))?
                }
                None => continue,
            };
            sets.push(format!("{} = {value}", quote_ident(&c.name)));
        }
        let version = record
            .local_version
            .clone()
            .map_or(record.remote_version.clone(), |l| {
                l.max(record.remote_version.clone())
            });
        sets.push(format!(
            "{} = {}",
            quote_ident(ferry_core::VERSION_TS),
            version.ts
        ));
        sets.push(format!(
            "{} = {}",
            quote_ident(ferry_core::VERSION_NODE),
            literal::text(&version.node)
        ));
        Ok(format!(
            "UPDATE {} SET {} WHERE {}",
            self.target_name(&table.id),
            sets.join(", "),
            self.key_condition(table, row)?
        ))
    }

    /// The UPDATE that applies a change to a row under merge rules: merge-rule columns computed from the target's
    /// value (`local`: the row as the probe read it, a JSON object of column to text, and its version) and the
    /// change's (`op`, of version `remote`), the other columns and the version only when the change wins.
    fn merge_statement(
        &self,
        table: &SchemaRef,
        policy: &crate::conflict::TablePolicy,
        op: &ferry_core::RowOp,
        wins: bool,
        local: Option<(&str, crate::conflict::Version)>,
        remote: &crate::conflict::Version,
    ) -> Result<Option<String>, Error> {
        use ferry_config::MergeRule;
        let row = op.row();
        let old = match op {
            ferry_core::RowOp::Update { before, .. } => before.as_ref(),
            _ => None,
        };
        let target = &self.tables[&table.id];
        let mut sets = Vec::new();
        for (i, c) in table.columns.iter().enumerate() {
            if table.primary_key.contains(&i) || row[i] == Value::Unchanged || !target.has(&c.name)
            {
                continue;
            }
            let lit = |v: &Value| {
                literal(v, target.kind(&c.name), table.dialect)
                    .map_err(|why| unwritable("MySQL", table, row, i, &why))
            };
            let col = quote_ident(&c.name);
            let new = lit(&row[i])?;
            let version = crate::conflict::is_version_column(&c.name);
            let set = match policy.merge_of(i) {
                _ if version => wins.then(|| new.clone()),
                None => wins.then(|| new.clone()),
                Some(MergeRule::Max) => {
                    Some(format!("COALESCE(GREATEST({col}, {new}), {col}, {new})"))
                }
                Some(MergeRule::Min) => {
                    Some(format!("COALESCE(LEAST({col}, {new}), {col}, {new})"))
                }
                Some(MergeRule::PreferNonNull) if wins => Some(format!("COALESCE({new}, {col})")),
                Some(MergeRule::PreferNonNull) => Some(format!("COALESCE({col}, {new})")),
                Some(MergeRule::SumDelta) => {
                    let before = match op {
                        ferry_core::RowOp::Read { .. } => new.clone(),
                        ferry_core::RowOp::Insert { .. } => "NULL".to_owned(),
                        _ => match old.map(|o| &o[i]) {
                            Some(v) if *v != Value::Unchanged => lit(v)?,
                            _ => return Err(crate::conflict::sum_delta_needs_old(table, &c.name)),
                        },
                    };
                    Some(format!(
                        "COALESCE({col}, 0) + (COALESCE({new}, 0) - COALESCE({before}, 0))"
                    ))
                }
                // The probe locked the row: the union is computed here from the value it read.
                Some(MergeRule::Union) => Some(literal::text(&crate::conflict::union_by_version(
                    local.as_ref().map(|(json, v)| (*json, v)),
                    &c.name,
                    &row[i],
                    remote,
                ))),
            };
            if let Some(set) = set {
                sets.push(format!("{col} = {set}"));
            }
        }
        if sets.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "UPDATE {} SET {} WHERE {}",
            self.target_name(&table.id),
            sets.join(", "),
            self.key_condition(table, row)?
        )))
    }

    async fn apply_events(
        &mut self,
        events: &[Event],
        commit: Option<&Position>,
    ) -> Result<(), Error> {
        // A schema change mid-batch (a table renamed or dropped and created again) is applied where it stands in
        // the stream: the rows before it are written first, to the tables as they were.
        let mut start = 0;
        while start < events.len() {
            let end = (start + 1..events.len())
                .find(|&i| match &events[i] {
                    Event::Schema(s) => {
                        self.tables.get(&s.id).map(|t| t.version) != Some(s.version)
                    }
                    _ => false,
                })
                .unwrap_or(events.len());
            self.apply_segment(&events[start..end]).await?;
            start = end;
        }
        if let Some(Position::Kafka(offsets)) = commit {
            let now = now_text();
            for w in self.kafka_rows.changed(&self.name, offsets) {
                let sql = format!(
                    "UPDATE ferry_checkpoints SET position = {}, updated_at = {} WHERE pipeline = {} AND sink = {} \
                     AND position LIKE {}",
                    literal::text(&w.text),
                    literal::text(&now),
                    literal::text(&self.pipeline),
                    literal::text(&w.key),
                    literal::text(&w.claim)
                );
                if self.exec_counted(sql, "writing the Kafka offsets").await? != 1 {
                    self.end_transaction("ROLLBACK", "rolling back").await?;
                    return Err(crate::checkpoint::fenced(&self.name, &w.partition));
                }
            }
            self.end_transaction("COMMIT", "committing").await?;
            self.kafka_rows.committed(offsets);
            self.multi.tally.committed();
        } else if let Some(position) = commit {
            let sql = format!(
                "INSERT INTO ferry_checkpoints (pipeline, sink, position, updated_at) VALUES ({}, {}, {}, {}) \
                 ON DUPLICATE KEY UPDATE position = VALUES(position), updated_at = VALUES(updated_at)",
                literal::text(&self.pipeline),
                literal::text(&self.name),
                literal::text(&position.to_string()),
                literal::text(&now_text())
            );
            self.exec(sql, "writing the checkpoint").await?;
            self.end_transaction("COMMIT", "committing").await?;
            self.multi.tally.committed();
            for shadow in std::mem::take(&mut self.finished_shadows) {
                let sql = format!("DROP TABLE IF EXISTS {}", self.target_name(&shadow));
                self.exec(sql, "dropping a re-copy's shadow table").await?;
            }
        }
        Ok(())
    }

    /// Writes the collected rows: `LOAD DATA LOCAL INFILE … REPLACE` for more than a few rows (about twice as fast
    /// as INSERT on the server), a multi-row `INSERT … ON DUPLICATE KEY UPDATE` otherwise or where the server
    /// refuses local infile.
    async fn flush(&mut self, upserts: &mut Upserts<'_>) -> Result<(), Error> {
        let Some(table) = upserts.table.take() else {
            return Ok(());
        };
        let rows = std::mem::take(&mut upserts.rows);
        upserts.bytes = 0;
        // A row holding an ENUM error value is written on its own, in its place among the others.
        let mut start = 0;
        for (i, row) in rows.iter().enumerate() {
            let enum_errors = self.enum_errors(&table, row);
            if !enum_errors.is_empty() {
                self.write_rows(&table, &rows[start..i], &[]).await?;
                self.write_rows(&table, &rows[i..=i], &enum_errors).await?;
                start = i + 1;
            }
        }
        self.write_rows(&table, &rows[start..], &[]).await
    }

    /// Writes `rows` of `table`; `enum_errors` (for a single row) as [`MysqlSink::exec_row`] says.
    async fn write_rows(
        &mut self,
        table: &SchemaRef,
        rows: &[&Row],
        enum_errors: &[String],
    ) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let name = self.target_name(&table.id);
        let target = &self.tables[&table.id];
        if !target.extra_unique.is_empty() {
            return self.write_rows_by_key(table, rows, enum_errors).await;
        }
        let columns: Vec<usize> = (0..table.columns.len())
            .filter(|&i| target.has(&table.columns[i].name))
            .collect();
        let list = columns
            .iter()
            .map(|&i| quote_ident(&table.columns[i].name))
            .collect::<Vec<_>>()
            .join(", ");
        if self.load_data
            && target.load_data_ok()
            && rows.len() >= LOAD_DATA_MIN_ROWS
            && enum_errors.is_empty()
        {
            let replace = if table.has_primary_key() {
                "REPLACE "
            } else {
                ""
            };
            let sql = format!(
                "LOAD DATA LOCAL INFILE 'ferry' {replace}INTO TABLE {name} CHARACTER SET binary \
                 FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' ({list})"
            );
            // The rows are written out while the server loads those already sent: chunks pass through a small
            // channel to the file the server asks for, so encoding and the server's parsing overlap.
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
            self.conn.set_infile_handler(async move {
                Ok(futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|chunk| (chunk, rx))
                })
                .boxed())
            });
            // Moves the sender in: the file ends when it is dropped.
            let columns_ref = &columns;
            let encode = async move {
                let columns = columns_ref;
                let mut data = Vec::with_capacity(LOAD_DATA_CHUNK + 4096);
                for row in rows {
                    for (n, &i) in columns.iter().enumerate() {
                        if n > 0 {
                            data.push(b'\t');
                        }
                        load_field(
                            &mut data,
                            &row[i],
                            target.kind(&table.columns[i].name),
                            table.dialect,
                        )
                        .map_err(|why| unwritable("MySQL", table, row, i, &why))?;
                    }
                    data.push(b'\n');
                    if data.len() >= LOAD_DATA_CHUNK {
                        let chunk = std::mem::replace(
                            &mut data,
                            Vec::with_capacity(LOAD_DATA_CHUNK + 4096),
                        );
                        if tx.send(Ok(chunk.into())).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                if !data.is_empty() {
                    let _ = tx.send(Ok(data.into())).await;
                }
                Ok::<(), Error>(())
            };
            self.dirty = true;
            let (loaded, encoded) = {
                let load = self.conn.query_drop(sql);
                tokio::pin!(load, encode);
                let mut encoded = None;
                let loaded = loop {
                    tokio::select! {
                        loaded = &mut load => break loaded,
                        e = &mut encode, if encoded.is_none() => encoded = Some(e),
                    }
                };
                (loaded, encoded)
            };
            // A value MySQL cannot hold ends the file early (its rows are loaded in a transaction that is never
            // committed); an encoder still waiting means the server refused before asking for the file.
            if let Some(Err(e)) = encoded {
                return Err(e);
            }
            match loaded {
                // LOCAL makes the server turn conversion errors into warnings whatever the sql_mode: any warning
                // is a value the target did not take as sent.
                Ok(()) if self.conn.get_warnings() == 0 => return Ok(()),
                Ok(()) => {
                    let warnings: Vec<(String, u32, String)> = self
                        .conn
                        .query("SHOW WARNINGS")
                        .await
                        .map_err(write_error("reading the warnings of LOAD DATA"))?;
                    match warnings.iter().find(|(level, ..)| level != "Note") {
                        Some((_, code, message)) => {
                            return Err(refused_value(
                                format!(
                                    "loading rows into {name}: the target did not take a value as sent ({code}: {message})"
                                ),
                                *code,
                            ))
                        }
                        None => return Ok(()),
                    }
                }
                // Local infile off on the server (MySQL 8's default) or refused: INSERT from now on.
                Err(mysql_async::Error::Server(e))
                    if matches!(e.code, 1148 | 3948 | 1227 | 2068) =>
                {
                    warn!(sink = %self.name, error = %e.message, "the target refuses LOAD DATA LOCAL INFILE; writing rows with INSERT (slower)");
                    self.load_data = false;
                }
                Err(e) => return Err(write_error("loading rows")(e)),
            }
        }
        let target = &self.tables[&table.id];
        let mut sql = format!("INSERT INTO {name} ({list}) VALUES ");
        for (r, row) in rows.iter().enumerate() {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (n, &i) in columns.iter().enumerate() {
                if n > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(
                    &literal(&row[i], target.kind(&table.columns[i].name), table.dialect)
                        .map_err(|why| unwritable("MySQL", table, row, i, &why))?,
                );
            }
            sql.push(')');
        }
        if table.has_primary_key() {
            let updates: Vec<String> = columns
                .iter()
                .filter(|i| !table.primary_key.contains(i))
                .map(|&i| {
                    let c = quote_ident(&table.columns[i].name);
                    format!("{c} = VALUES({c})")
                })
                .collect();
            let key = quote_ident(&table.columns[table.primary_key[0]].name);
            sql.push_str(" ON DUPLICATE KEY UPDATE ");
            if updates.is_empty() {
                sql.push_str(&format!("{key} = {key}"));
            } else {
                sql.push_str(&updates.join(", "));
            }
        }
        self.exec_row(sql, "writing rows", enum_errors).await?;
        Ok(())
    }

    /// Forgets a re-copy's shadow table: its record now, the table once the transaction commits (a DROP would
    /// commit it implicitly).
    async fn forget_shadow(&mut self, shadow: TableId) -> Result<(), Error> {
        ddl::delete_record(&mut self.conn, (&self.pipeline, &self.name), &shadow).await?;
        self.applied.remove(&shadow);
        self.tables.remove(&shadow);
        self.finished_shadows.push(shadow);
        Ok(())
    }

    /// Writes rows into a table with unique indexes of its own (see [`ddl::TargetTable::extra_unique`]), touching
    /// only the row with each change's key: an UPDATE by key, else a plain INSERT. A row that collides on another
    /// unique index is an error naming the table, the row's key and the index, never a lost or merged row.
    async fn write_rows_by_key(
        &mut self,
        table: &SchemaRef,
        rows: &[&Row],
        enum_errors: &[String],
    ) -> Result<(), Error> {
        let name = self.target_name(&table.id);
        for row in rows {
            let target = &self.tables[&table.id];
            let columns: Vec<usize> = (0..table.columns.len())
                .filter(|&i| target.has(&table.columns[i].name))
                .collect();
            let indexes = target.extra_unique.join(", ");
            let collision = |e: Error| {
                if e.to_string().contains("Duplicate entry") {
                    refused_value(
                        format!(
                            "table {}, row {}: the target's own unique index ({}) refuses it: {e}. Ferry writes \
                             only the row with the change's key, so it stopped rather than overwrite or delete \
                             another row; drop or widen that index on the target",
                            table.id,
                            describe_key(table, row),
                            indexes
                        ),
                        1062,
                    )
                } else {
                    e
                }
            };
            if table.has_primary_key() {
                let sets: Vec<usize> = columns
                    .iter()
                    .copied()
                    .filter(|i| !table.primary_key.contains(i))
                    .collect();
                if !sets.is_empty() {
                    let sql = format!(
                        "UPDATE {name} SET {} WHERE {}",
                        self.column_terms(table, row, sets.into_iter(), " = ", ", ")?,
                        self.terms(
                            table,
                            row,
                            table.primary_key.iter().copied(),
                            " = ",
                            " AND ",
                            true
                        )?
                    );
                    let found = self
                        .exec_row(sql, "writing a row by key", enum_errors)
                        .await
                        .map_err(collision)?;
                    if found > 0 {
                        continue;
                    }
                } else {
                    let sql = format!(
                        "SELECT 1 FROM {name} WHERE {}",
                        self.terms(
                            table,
                            row,
                            table.primary_key.iter().copied(),
                            " = ",
                            " AND ",
                            true
                        )?
                    );
                    let exists: Option<i64> = self
                        .conn
                        .query_first(sql)
                        .await
                        .map_err(write_error("looking up a row by key"))?;
                    if exists.is_some() {
                        continue;
                    }
                }
            }
            let target = &self.tables[&table.id];
            let values = columns
                .iter()
                .map(|&i| {
                    literal(&row[i], target.kind(&table.columns[i].name), table.dialect)
                        .map_err(|why| unwritable("MySQL", table, row, i, &why))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let list: Vec<String> = columns
                .iter()
                .map(|&i| quote_ident(&table.columns[i].name))
                .collect();
            let sql = format!(
                "INSERT INTO {name} ({}) VALUES ({})",
                list.join(", "),
                values.join(", ")
            );
            self.exec_row(sql, "writing a row", enum_errors)
                .await
                .map_err(collision)?;
        }
        Ok(())
    }

    /// Writes for the columns the target has, of the row's own schema.
    /// `column <op> value` for `columns` of `row` that were sent and that the target has, joined by `sep`.
    fn column_terms(
        &self,
        table: &SchemaRef,
        row: &Row,
        columns: impl Iterator<Item = usize>,
        op: &str,
        sep: &str,
    ) -> Result<String, Error> {
        self.terms(table, row, columns, op, sep, false)
    }

    /// `column <op> value` terms; with `binary`, text columns compare byte for byte, whatever the target
    /// column's collation (a case-insensitive one would match 'A' for 'a', and 'a ' for 'a').
    fn terms(
        &self,
        table: &SchemaRef,
        row: &Row,
        columns: impl Iterator<Item = usize>,
        op: &str,
        sep: &str,
        binary: bool,
    ) -> Result<String, Error> {
        let target = &self.tables[&table.id];
        let mut parts = Vec::new();
        for i in columns {
            let c = &table.columns[i];
            if row[i] == Value::Unchanged || !target.has(&c.name) {
                continue;
            }
            let value = literal(&row[i], target.kind(&c.name), table.dialect)
                .map_err(|why| unwritable("MySQL", table, row, i, &why))?;
            let textual = matches!(c.ty, ColumnType::Text | ColumnType::Other);
            parts.push(if binary && textual {
                format!("BINARY {} {op} BINARY {value}", quote_ident(&c.name))
            } else {
                format!("{} {op} {value}", quote_ident(&c.name))
            });
        }
        Ok(parts.join(sep))
    }

    fn assignments(&self, table: &SchemaRef, row: &Row) -> Result<String, Error> {
        self.column_terms(table, row, 0..table.columns.len(), "=", ", ")
    }

    fn key_condition(&self, table: &SchemaRef, row: &Row) -> Result<String, Error> {
        // Key columns have a binary collation; an identity index's columns may not.
        let binary = table.matches_by_identity_index();
        self.terms(
            table,
            row,
            table.match_key().iter().copied(),
            "=",
            " AND ",
            binary,
        )
    }

    /// Matches every column the source sent, NULL-safely (keyless tables).
    fn row_condition(&self, table: &SchemaRef, row: &Row) -> Result<String, Error> {
        let terms = self.terms(table, row, 0..table.columns.len(), "<=>", " AND ", true)?;
        Ok(if terms.is_empty() {
            "TRUE".into()
        } else {
            terms
        })
    }

    async fn apply_single(
        &mut self,
        table: &SchemaRef,
        action: RowAction<'_>,
    ) -> Result<(), Error> {
        let name = self.target_name(&table.id);
        match action {
            RowAction::Upsert(row) | RowAction::InsertNoKey(row) => {
                let mut one = Upserts::default();
                one.push(table, row);
                self.flush(&mut one).await
            }
            RowAction::UpdateSent(row) => {
                let sql = format!(
                    "UPDATE {name} SET {} WHERE {}",
                    self.assignments(table, row)?,
                    self.key_condition(table, row)?
                );
                let enum_errors = self.enum_errors(table, row);
                self.exec_row(sql, "updating a row", &enum_errors).await?;
                Ok(())
            }
            RowAction::Delete(row) => {
                let sql = format!(
                    "DELETE FROM {name} WHERE {}",
                    self.key_condition(table, row)?
                );
                self.exec(sql, "deleting a row").await
            }
            RowAction::Move { old, new } => {
                let sql = format!(
                    "UPDATE {name} SET {} WHERE {}",
                    self.assignments(table, new)?,
                    self.key_condition(table, old)?
                );
                let what = format!("updating {} where {}", table.id, describe_key(table, old));
                let enum_errors = self.enum_errors(table, new);
                if self.exec_row(sql, &what, &enum_errors).await? > 0 {
                    return Ok(());
                }
                if !is_complete(new) {
                    return missing_row(
                        table,
                        old,
                        recopy::fills_in_place(&self.applied, &table.id),
                    );
                }
                let mut one = Upserts::default();
                one.push(table, new);
                self.flush(&mut one).await
            }
            RowAction::ReplaceNoKey { old, new } => {
                let sql = format!(
                    "DELETE FROM {name} WHERE {} LIMIT 1",
                    self.row_condition(table, old)?
                );
                if self.exec_counted(sql, "deleting a keyless row").await? == 0 {
                    return Err(crate::rows::missing_old_row(table));
                }
                if let Some(new) = new {
                    let mut one = Upserts::default();
                    one.push(table, new);
                    self.flush(&mut one).await?;
                }
                Ok(())
            }
        }
    }
}

/// The key of the row a change touches (its new row, a delete's old row), as text.
/// The names of a table's primary key columns.
fn key_names(table: &TableSchema) -> Vec<String> {
    table
        .primary_key
        .iter()
        .map(|&k| table.columns[k].name.clone())
        .collect()
}

fn key_of(table: &TableSchema, op: &ferry_core::RowOp) -> Vec<Option<String>> {
    let row = op.row();
    table
        .primary_key
        .iter()
        .map(|&k| ferry_core::pg_text::pg_text(&row[k]))
        .collect()
}

/// Consecutive inserts / upserts of one table and schema version, written together by [`MysqlSink::flush`].
#[derive(Default)]
struct Upserts<'a> {
    table: Option<SchemaRef>,
    rows: Vec<&'a Row>,
    /// Approximate size of the rows, to bound one statement.
    bytes: usize,
}

impl<'a> Upserts<'a> {
    fn push(&mut self, table: &SchemaRef, row: &'a Row) {
        if self.table.is_none() {
            self.table = Some(table.clone());
        }
        self.bytes += row.iter().map(Value::size_hint).sum::<usize>();
        self.rows.push(row);
    }
}

impl Sink for MysqlSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, Error> {
        let rows: Vec<(String, String)> = self
            .conn
            .exec(
                "SELECT sink, position FROM ferry_checkpoints WHERE pipeline = ?",
                (self.pipeline.clone(),),
            )
            .await
            .map_err(write_error("reading the checkpoint"))?;
        crate::checkpoint::gather(&self.name, rows)
    }

    async fn claim(
        &mut self,
        partitions: &[ferry_core::TopicPartition],
        token: u64,
    ) -> Result<ferry_core::KafkaOffsets, Error> {
        if self.in_transaction {
            return Err(crate::checkpoint::claim_inside_transaction());
        }
        let now = now_text();
        let what = "claiming Kafka partitions";
        self.begin().await?;
        let mut held = std::collections::BTreeMap::new();
        for tp in partitions {
            let row = crate::checkpoint::fresh_claim(&self.name, tp, token);
            let (pipeline, key) = (literal::text(&self.pipeline), literal::text(&row.key));
            let sql = format!(
                "INSERT IGNORE INTO ferry_checkpoints (pipeline, sink, position, updated_at) VALUES ({pipeline}, {key}, {}, {})",
                literal::text(&row.text),
                literal::text(&now)
            );
            self.exec(sql, what).await?;
            let stored: Option<String> = self
                .conn
                .query_first(format!(
                    "SELECT position FROM ferry_checkpoints WHERE pipeline = {pipeline} AND sink = {key} FOR UPDATE"
                ))
                .await
                .map_err(write_error(what))?;
            let (mark, row) = crate::checkpoint::claimed(&self.name, tp, stored.as_deref(), token);
            let sql = format!(
                "UPDATE ferry_checkpoints SET position = {}, updated_at = {} WHERE pipeline = {pipeline} AND sink = {key}",
                literal::text(&row.text),
                literal::text(&now)
            );
            self.exec(sql, what).await?;
            held.insert(tp.clone(), mark);
        }
        self.end_transaction("COMMIT", what).await?;
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
            self.end_transaction("ROLLBACK", "undoing a transaction applied live")
                .await?;
        }
        self.multi.tally.rollback(0);
        Ok(())
    }

    async fn savepoint(&mut self, step: Savepoint) -> Result<(), Error> {
        self.begin().await?;
        let sql = crate::dead_letters::savepoint_sql(
            step,
            &mut self.multi.tally,
            &mut self.savepoint_tally,
        );
        self.conn
            .query_drop(sql)
            .await
            .map_err(write_error("setting a row aside (savepoint)"))
    }

    async fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), Error> {
        if !self.dead_letters_ready {
            // CREATE commits implicitly: on a second connection, so the open transaction stays open.
            let mut side = connect(&self.url).await?;
            let created = side
                .query_drop(Dialect::Mysql.create_table())
                .await
                .map_err(write_error("creating ferry_dead_letters"));
            let _ = side.disconnect().await;
            created?;
            self.dead_letters_ready = true;
        }
        self.begin().await?;
        let (text, commit_time, attempts, moved) =
            layout::values((&self.pipeline, &self.name), letter);
        let mut params: Vec<mysql_async::Value> = text.iter().map(|t| (*t).into()).collect();
        params.push(commit_time.into());
        params.push(attempts.into());
        params.push(moved.into());
        self.dirty = true;
        self.conn
            .exec_drop(Dialect::Mysql.insert(), params)
            .await
            .map_err(write_error("writing a dead letter"))
    }

    async fn dead_letters(&mut self) -> Result<Vec<StoredDeadLetter>, Error> {
        read_dead_letters(&mut self.conn, (&self.pipeline, &self.name), None, None).await
    }

    async fn forget_dead_letters_of(&mut self, table: &TableId) -> Result<u64, Error> {
        self.begin().await?;
        self.dirty = true;
        self.conn
            .exec_drop(
                Dialect::Mysql.delete_table(),
                (&self.pipeline, &self.name, &table.schema, &table.name),
            )
            .await
            .map_err(write_error("deleting dead letters a TRUNCATE supersedes"))?;
        Ok(self.conn.affected_rows())
    }

    async fn forget_dead_letter(&mut self, id: i64) -> Result<(), Error> {
        self.begin().await?;
        self.dirty = true;
        self.conn
            .exec_drop(Dialect::Mysql.delete(), (&self.pipeline, &self.name, id))
            .await
            .map_err(write_error("deleting a dead letter"))
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
        let result = self.apply_events(events, commit).await;
        // A refused row keeps the transaction: the runner goes back to its savepoint (ferry_core::isolate).
        if result.as_ref().is_err_and(|e| e.class != ErrorClass::Row) && self.in_transaction {
            // The connection may be gone; the next attempt starts from the checkpoint on a new sink.
            let _ = self.end_transaction("ROLLBACK", "rolling back").await;
        }
        result
    }
}

/// Takes the lease of `pipeline`'s sink `name`: a `GET_LOCK` held by this connection for as long as it lives (a
/// process that dies releases it), and the holder's name in `ferry_leases` for the process that finds it taken.
async fn take_lease(conn: &mut Conn, pipeline: &str, name: &str) -> Result<(), Error> {
    let lease = format!(
        "ferry_{:016x}",
        ferry_core::fnv1a(format!("ferry lease sink {pipeline}/{name}").into_bytes())
    );
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS ferry_leases (lease VARCHAR(64) NOT NULL PRIMARY KEY, \
         pipeline VARCHAR(255) NOT NULL, sink VARCHAR(255) NOT NULL, owner VARCHAR(255) NOT NULL, \
         since VARCHAR(64) NOT NULL)",
    )
    .await
    .map_err(write_error("creating ferry_leases"))?;
    let taken: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, 0)", (&lease,))
        .await
        .map_err(write_error("taking the pipeline's lease"))?;
    if taken.flatten() == Some(1) {
        conn.exec_drop(
            "REPLACE INTO ferry_leases (lease, pipeline, sink, owner, since) VALUES (?, ?, ?, ?, ?)",
            (&lease, pipeline, name, ferry_core::process_owner(), now_text()),
        )
        .await
        .map_err(write_error("recording the pipeline's lease"))?;
        return Ok(());
    }
    let holder: Option<(String, String)> = conn
        .exec_first(
            "SELECT owner, since FROM ferry_leases WHERE lease = ?",
            (&lease,),
        )
        .await
        .map_err(write_error("reading the pipeline's lease"))?;
    let holder = holder.map_or_else(
        || "another process".to_owned(),
        |(owner, since)| format!("ferry {owner} (since {since})"),
    );
    Err(crate::lease_busy(pipeline, name, &holder))
}

/// Lists a pipeline's checkpoints in a MySQL target (`ferry status`).
pub async fn list_checkpoints(
    url: &str,
    pipeline: &str,
) -> Result<Vec<(String, String, String)>, Error> {
    let mut conn = connect(url).await?;
    // Read-only: a target Ferry never wrote has no checkpoint table, and `ferry status` does not create one.
    let exists: Option<i64> = conn
        .query_first(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name = 'ferry_checkpoints'",
        )
        .await
        .map_err(write_error("looking for ferry_checkpoints"))?;
    if exists.unwrap_or(0) == 0 {
        return Ok(Vec::new());
    }
    conn.exec(
        "SELECT sink, position, updated_at FROM ferry_checkpoints WHERE pipeline = ? ORDER BY sink",
        (pipeline,),
    )
    .await
    .map_err(write_error("reading checkpoints"))
}

/// The conflicts `pipeline`'s sink `sink` logged in the MySQL target at `url`, oldest first, only `table`'s when
/// given (`ferry conflicts`).
/// The dead letters of a pipeline's sink on `conn`'s database (none without the table), oldest first.
async fn read_dead_letters(
    conn: &mut Conn,
    (pipeline, sink): (&str, &str),
    table: Option<&TableId>,
    id: Option<i64>,
) -> Result<Vec<StoredDeadLetter>, Error> {
    let exists: Option<i64> = conn
        .query_first(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name = 'ferry_dead_letters'",
        )
        .await
        .map_err(write_error("looking for ferry_dead_letters"))?;
    if exists.unwrap_or(0) == 0 {
        return Ok(Vec::new());
    }
    let f = layout::Filter::new(table, id);
    let params: Vec<mysql_async::Value> = vec![
        pipeline.into(),
        sink.into(),
        f.schema.clone().into(),
        f.schema.into(),
        f.name.clone().into(),
        f.name.into(),
        f.id.into(),
        f.id.into(),
    ];
    let rows: Vec<mysql_async::Row> = conn
        .exec(Dialect::Mysql.select(), params)
        .await
        .map_err(write_error("reading ferry_dead_letters"))?;
    rows.into_iter()
        .map(|mut r| {
            let mut text: [String; 12] = Default::default();
            for (i, t) in text.iter_mut().enumerate() {
                *t = r.take(i + 1).unwrap_or_default();
            }
            let id: Option<i64> = r.take(0);
            let commit_time: Option<Option<i64>> = r.take(13);
            let attempts: Option<i64> = r.take(14);
            let moved: Option<Option<String>> = r.take(15);
            id.map(|id| {
                layout::stored(
                    id,
                    text,
                    commit_time.flatten(),
                    attempts.unwrap_or(0),
                    moved.flatten(),
                )
            })
            .ok_or_else(|| Error::fatal("ferry_dead_letters: a row without an id"))
        })
        .collect()
}

/// The dead letters of a pipeline's sink in the MySQL target at `url` (`ferry dead-letters list`), read-only.
pub async fn list_dead_letters(
    url: &str,
    names: (&str, &str),
    table: Option<&TableId>,
    id: Option<i64>,
) -> Result<Vec<StoredDeadLetter>, Error> {
    let mut conn = connect(url).await?;
    read_dead_letters(&mut conn, names, table, id).await
}

pub async fn list_conflicts(
    url: &str,
    pipeline: &str,
    sink: &str,
    table: Option<&str>,
) -> Result<Vec<crate::conflict::LoggedConflict>, Error> {
    let mut conn = connect(url).await?;
    let exists: Option<i64> = conn
        .query_first(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name = 'ferry_conflicts'",
        )
        .await
        .map_err(write_error("looking for ferry_conflicts"))?;
    if exists.unwrap_or(0) == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            "SELECT id, CAST(detected_at AS CHAR), pipeline, sink, table_name, `key`, kind, resolver, winner, \
             local_row, remote_row, local_node, local_ts, remote_node, remote_ts, source_position \
             FROM ferry_conflicts WHERE pipeline = ? AND sink = ? AND (? IS NULL OR table_name = ?) ORDER BY id",
            (pipeline, sink, table, table),
        )
        .await
        .map_err(write_error("reading ferry_conflicts"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let text = |i: usize| r.get::<Option<String>, _>(i).flatten().unwrap_or_default();
            crate::conflict::LoggedConflict {
                id: r.get::<Option<i64>, _>(0).flatten().unwrap_or_default(),
                detected_at: text(1),
                pipeline: text(2),
                sink: text(3),
                table: text(4),
                key: text(5),
                kind: text(6),
                resolver: text(7),
                winner: text(8),
                local_row: crate::conflict::logged_row(r.get::<Option<String>, _>(9).flatten()),
                remote_row: crate::conflict::logged_row(Some(text(10))),
                local_node: r.get::<Option<String>, _>(11).flatten(),
                local_ts: r.get::<Option<i64>, _>(12).flatten(),
                remote_node: text(13),
                remote_ts: r.get::<Option<i64>, _>(14).flatten().unwrap_or_default(),
                source_position: text(15),
            }
        })
        .collect())
}

/// Deletes a pipeline's checkpoints from a MySQL target (`ferry reset`).
pub async fn delete_checkpoints(url: &str, pipeline: &str) -> Result<(), Error> {
    let mut conn = connect(url).await?;
    conn.query_drop(CREATE_CHECKPOINT_TABLE)
        .await
        .map_err(write_error("creating ferry_checkpoints"))?;
    conn.exec_drop(
        "DELETE FROM ferry_checkpoints WHERE pipeline = ?",
        (pipeline,),
    )
    .await
    .map_err(write_error("deleting checkpoints"))
}
