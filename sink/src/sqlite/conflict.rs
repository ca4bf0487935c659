//! Conflict handling in a SQLite target (see [`crate::conflict`] and docs/multi-master.md).
//!
//! Rows carry their version in the version columns ([`crate::conflict::augment`]). Local writes (any other
//! connection to the file) are stamped by `AFTER` triggers; SQLite has no session variables, so Ferry's own
//! transactions are told apart by a row in `ferry_applying` that only they hold: Ferry inserts it first in each
//! transaction and deletes it before committing, and SQLite runs one write transaction at a time, so no other
//! writer ever sees it. Deletes and key changes made locally leave a tombstone (version: the removed one + 1, as
//! on PostgreSQL and MySQL targets).
//!
//! SQLite runs in Ferry's process, so the read of the target row a change meets is a B-tree lookup, not a round
//! trip: the sink reads it with a prepared statement and decides the change with
//! [`crate::conflict::augment::decide_managed`], the rule the PostgreSQL statements compile into SQL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_core::{
    Error, Row, RowOp, SchemaRef, TableId, TableSchema, Value, VERSION_NODE, VERSION_TS,
    VERSION_VECTOR,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, OptionalExtension};

use crate::conflict::augment::{
    conflict_record, decide_managed, key_change_parts, winner, Augmenter, Managed,
};
use crate::conflict::{
    ConflictRecord, ConflictTally, Decision, MultiMasterOptions, Policies, Version,
    CONFLICTS_TABLE, TOMBSTONES_TABLE,
};
use crate::rows::{classify, RowAction};

use super::{quote, table_name};

/// The table whose one row, present only inside Ferry's own transactions, keeps the stamping triggers off.
pub const APPLYING_TABLE: &str = "ferry_applying";

/// The table naming this database's node (`id = 1`); local writes carry `''` without it.
pub const NODE_TABLE: &str = ferry_core::versions::NODE_TABLE;

/// The sink's conflict-handling state.
#[derive(Default)]
pub struct SqliteMulti {
    pub options: MultiMasterOptions,
    /// The node changes without version columns are stamped with: `[pipeline] node`, or the pipeline's name.
    pub node: String,
    pub policies: Policies,
    pub augmenter: Augmenter,
    pub tally: ConflictTally,
    /// Target tables given their triggers, by table and schema version.
    pub prepared: HashSet<(TableId, u64)>,
    /// The statements of the tables under a policy, by table and schema version.
    pub sql: HashMap<(TableId, u64), Arc<TableSql>>,
}

/// The tables conflict handling needs in the database.
pub fn support_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CONFLICTS_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, \
         sink TEXT NOT NULL, table_name TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, resolver TEXT NOT NULL, \
         winner TEXT NOT NULL, local_row TEXT, remote_row TEXT NOT NULL, local_node TEXT, local_ts INTEGER, \
         remote_node TEXT NOT NULL, remote_ts INTEGER NOT NULL, source_position TEXT NOT NULL, \
         detected_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')));
         CREATE TABLE IF NOT EXISTS {TOMBSTONES_TABLE} (table_name TEXT NOT NULL, key TEXT NOT NULL, \
         {VERSION_TS} INTEGER NOT NULL, {VERSION_NODE} TEXT, deleted_at TEXT NOT NULL, PRIMARY KEY (table_name, key));
         CREATE TABLE IF NOT EXISTS {NODE_TABLE} (id INTEGER PRIMARY KEY, node TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS {APPLYING_TABLE} (pipeline TEXT NOT NULL)"
    )
}

/// This database's node, in SQL.
const LOCAL_NODE: &str = "coalesce((SELECT node FROM ferry_node WHERE id = 1), '')";

/// Microseconds since the Unix epoch, now (`julianday` works in every SQLite a local writer may link).
const NOW_MICROS: &str = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

/// A key as the tombstones store it, from SQL expressions of its values: each value's SQL literal (`quote`),
/// comma-separated. Computed by SQLite on both paths (the trigger from `OLD`, Ferry from the values it binds).
pub fn key_text(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("quote({v})"))
        .collect::<Vec<_>>()
        .join(" || ',' || ")
}

/// The statements that give `table` (its target name; primary key `keys`) its stamping triggers and the
/// triggers that leave a tombstone of a local delete or key change. The caller drops the table's earlier
/// `ferry_` triggers first, so turning version vectors on or off, or a renamed table, takes effect.
pub fn prepare_sql(table: &TableSchema, vectors: bool) -> Vec<String> {
    let name = table_name(&table.id);
    let t = quote(&name);
    let trigger = |kind: &str| quote(&format!("ferry_{kind}_{name}"));
    let keys: Vec<String> = table
        .primary_key
        .iter()
        .map(|&k| quote(&table.columns[k].name))
        .collect();
    let this_row: Vec<String> = keys.iter().map(|k| format!("{k} IS NEW.{k}")).collect();
    let not_ferry = format!("NOT EXISTS (SELECT 1 FROM {APPLYING_TABLE})");
    let path = format!("'$.\"' || replace({LOCAL_NODE}, '\"', '\\\"') || '\"'");
    let counted = |base: &str| {
        if vectors {
            format!(
                ", {VERSION_VECTOR} = json_set(coalesce({base}, '{{}}'), {path}, \
                 coalesce(json_extract({base}, {path}), 0) + 1)"
            )
        } else {
            String::new()
        }
    };
    let tombstone = format!(
        "INSERT INTO {TOMBSTONES_TABLE} (table_name, key, {VERSION_TS}, {VERSION_NODE}, deleted_at) VALUES ({}, {}, \
         coalesce(OLD.{VERSION_TS}, 0) + 1, {LOCAL_NODE}, strftime('%Y-%m-%d %H:%M:%f', 'now')) \
         ON CONFLICT (table_name, key) DO UPDATE SET {VERSION_TS} = excluded.{VERSION_TS}, \
         {VERSION_NODE} = excluded.{VERSION_NODE}, deleted_at = excluded.deleted_at",
        super::sqlite_literal(&ferry_core::Value::Text(name.clone())),
        key_text(
            &keys
                .iter()
                .map(|k| format!("OLD.{k}"))
                .collect::<Vec<_>>()
        ),
    );
    let moved: Vec<String> = keys.iter().map(|k| format!("OLD.{k} IS NEW.{k}")).collect();
    let mut out = Vec::new();
    out.push(format!(
        "CREATE TRIGGER {} AFTER INSERT ON {t} WHEN {not_ferry} BEGIN UPDATE {t} SET {VERSION_TS} = {NOW_MICROS}, \
         {VERSION_NODE} = {LOCAL_NODE}{} WHERE {}; END",
        trigger("si"),
        counted("NULL"),
        this_row.join(" AND ")
    ));
    // The trigger's own update changes the version, so it never stamps twice (even with recursive_triggers on).
    out.push(format!(
        "CREATE TRIGGER {} AFTER UPDATE ON {t} WHEN {not_ferry} AND NEW.{VERSION_TS} IS OLD.{VERSION_TS} BEGIN \
         UPDATE {t} SET {VERSION_TS} = max({NOW_MICROS}, coalesce(OLD.{VERSION_TS}, 0) + 1), \
         {VERSION_NODE} = {LOCAL_NODE}{} WHERE {}; END",
        trigger("su"),
        counted(&format!("OLD.{VERSION_VECTOR}")),
        this_row.join(" AND ")
    ));
    out.push(format!(
        "CREATE TRIGGER {} AFTER DELETE ON {t} WHEN {not_ferry} BEGIN {tombstone}; END",
        trigger("sd"),
    ));
    out.push(format!(
        "CREATE TRIGGER {} AFTER UPDATE ON {t} WHEN {not_ferry} AND NOT ({}) BEGIN {tombstone}; END",
        trigger("sk"),
        moved.join(" AND ")
    ));
    out
}

/// The probe of the target row a change meets (keys bound in order): its version, its node, the row as a JSON
/// object of column to text (the conflict log's form) and its version vector.
pub fn probe_sql(table: &TableSchema, vectors: bool) -> String {
    let local: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !crate::conflict::is_version_column(&c.name))
        .map(|c| {
            let col = quote(&c.name);
            format!(
                "{}, CASE WHEN typeof({col}) = 'blob' THEN '\\x' || lower(hex({col})) ELSE CAST({col} AS TEXT) END",
                super::sqlite_literal(&ferry_core::Value::Text(c.name.clone()))
            )
        })
        .collect();
    format!(
        "SELECT {VERSION_TS}, coalesce({VERSION_NODE}, {LOCAL_NODE}), json_object({}), {} FROM {} WHERE {}",
        local.join(", "),
        if vectors { VERSION_VECTOR } else { "NULL" },
        quote(&table_name(&table.id)),
        key_condition(table, 1)
    )
}

/// `k1 = ?n AND k2 = ?n+1 …` over the primary key, numbered from `first`.
pub fn key_condition(table: &TableSchema, first: usize) -> String {
    table
        .primary_key
        .iter()
        .enumerate()
        .map(|(i, &k)| format!("{} = ?{}", quote(&table.columns[k].name), first + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The tombstone of a key (table name ?1, key values from ?2): version and node.
pub fn tombstone_lookup_sql(table: &TableSchema) -> String {
    format!(
        "SELECT {VERSION_TS}, coalesce({VERSION_NODE}, '') FROM {TOMBSTONES_TABLE} WHERE table_name = ?1 AND key = {}",
        key_text(&key_params(table))
    )
}

/// Leaves the tombstone of a delete Ferry applied (or that met no row), unless a later one is there: table name
/// ?1, version ?2, node ?3, key values from ?4.
pub fn tombstone_write_sql(table: &TableSchema) -> String {
    let params: Vec<String> = (0..table.primary_key.len())
        .map(|i| format!("?{}", 4 + i))
        .collect();
    format!(
        "INSERT INTO {TOMBSTONES_TABLE} (table_name, key, {VERSION_TS}, {VERSION_NODE}, deleted_at) \
         VALUES (?1, {}, ?2, ?3, strftime('%Y-%m-%d %H:%M:%f', 'now')) ON CONFLICT (table_name, key) DO UPDATE SET \
         {VERSION_TS} = excluded.{VERSION_TS}, {VERSION_NODE} = excluded.{VERSION_NODE}, deleted_at = excluded.deleted_at \
         WHERE (excluded.{VERSION_TS}, excluded.{VERSION_NODE}) > ({VERSION_TS}, coalesce({VERSION_NODE}, ''))",
        key_text(&params)
    )
}

fn key_params(table: &TableSchema) -> Vec<String> {
    (0..table.primary_key.len())
        .map(|i| format!("?{}", 2 + i))
        .collect()
}

/// The conflict log's insert (14 values, in [`crate::conflict::ConflictRecord`] order).
pub const LOG_CONFLICT_SQL: &str =
    "INSERT INTO ferry_conflicts (pipeline, sink, table_name, key, kind, resolver, \
     winner, local_row, remote_row, local_node, local_ts, remote_node, remote_ts, source_position) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// The conflicts of a pipeline's sink (`ferry conflicts`): pipeline ?1, sink ?2, table ?3 (NULL: all).
pub const LIST_CONFLICTS_SQL: &str = "SELECT id, detected_at, pipeline, sink, table_name, key, kind, resolver, \
     winner, local_row, remote_row, local_node, local_ts, remote_node, remote_ts, source_position \
     FROM ferry_conflicts WHERE pipeline = ?1 AND sink = ?2 AND (?3 IS NULL OR table_name = ?3) ORDER BY id";

/// The statements of one table version under a policy.
pub struct TableSql {
    probe: String,
    tomb_lookup: String,
    tomb_write: String,
    /// The table's name in the tombstones.
    name: String,
}

impl TableSql {
    pub fn new(table: &TableSchema, vectors: bool) -> TableSql {
        TableSql {
            probe: probe_sql(table, vectors),
            tomb_lookup: tombstone_lookup_sql(table),
            tomb_write: tombstone_write_sql(table),
            name: table_name(&table.id),
        }
    }
}

/// The target row a change met: version, node, the row as the log shows it, version vector.
type Local = (Option<i64>, String, String, Option<String>);

impl super::SqliteSink {
    /// Applies a change of a table under a policy: reads the row it meets (and, when there is none, the key's
    /// tombstone), decides it, writes it (or its merge) when it wins, leaves a delete's tombstone and logs a
    /// conflict in `ferry_conflicts`.
    pub(super) fn apply_managed(
        &mut self,
        table: &SchemaRef,
        op: &RowOp,
        m: Managed,
    ) -> Result<(), Error> {
        if let Some(parts) = key_change_parts(table, op)? {
            for part in &parts {
                if let Some(m) = self.multi.augmenter.managed(table, part, &self.multi.node) {
                    self.apply_managed(table, part, m)?;
                }
            }
            return Ok(());
        }
        let policy = m.policy.clone();
        let vectors = policy.vectors && table.column_index(VERSION_VECTOR).is_some();
        let sql = self
            .multi
            .sql
            .entry((table.id.clone(), table.version))
            .or_insert_with(|| Arc::new(TableSql::new(table, vectors)))
            .clone();
        let row = op.row();
        let keys: Vec<SqlValue> = table
            .primary_key
            .iter()
            .map(|&k| super::sqlite_value(&row[k]))
            .collect();
        let what = || format!("reading the row of {} a change meets", table.id);
        let local: Option<Local> = {
            let mut stmt = self
                .conn
                .prepare_cached(&sql.probe)
                .map_err(super::db_error(what()))?;
            stmt.query_row(params_from_iter(keys.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(super::db_error(what()))?
        };
        let is_delete = matches!(op, RowOp::Delete { .. });
        let tomb = if local.is_none() && !is_delete {
            let what = || format!("reading the tombstones of {}", table.id);
            let mut stmt = self
                .conn
                .prepare_cached(&sql.tomb_lookup)
                .map_err(super::db_error(what()))?;
            let name = SqlValue::Text(sql.name.clone());
            stmt.query_row(params_from_iter(std::iter::once(&name).chain(&keys)), |r| {
                Ok(Version {
                    ts: r.get(0)?,
                    node: r.get(1)?,
                })
            })
            .optional()
            .map_err(super::db_error(what()))?
        } else {
            None
        };
        let action = classify(table, op);
        let complete = matches!(action, RowAction::Upsert(_));
        let local_version = local.as_ref().map(|(ts, node, _, _)| (*ts, node.as_str()));
        let Some((decision, joined)) = decide_managed(
            &m,
            op,
            complete,
            local_version,
            local.as_ref().and_then(|l| l.3.as_deref()),
            tomb.as_ref(),
        ) else {
            return Ok(());
        };
        let wins = decision.remote_wins();
        let merges = !policy.merges.is_empty() && local.is_some();
        // A merge expression decides the rows a change met and lost to (its resolver keeps them to merge).
        let expression = policy
            .merge
            .as_ref()
            .filter(|_| !wins && !is_delete && local.is_some());
        let mut merged = None;
        if let Decision::Conflict { kind, .. } = decision {
            let record = conflict_record(
                table,
                row,
                &m,
                (
                    kind,
                    winner(wins, merges || expression.is_some(), is_delete),
                ),
                local
                    .as_ref()
                    .map(|(ts, node, json, _)| (*ts, node.as_str(), json.as_str())),
                tomb.as_ref(),
            );
            if policy.resolver == ferry_config::Resolver::Error {
                return Err(record.into_error());
            }
            if let Some(merge) = expression {
                merged = Some(expression_update(table, merge, &record, row)?);
            }
            self.log_conflict(&record)?;
        }
        if is_delete {
            if wins && local.is_some() {
                self.apply_row(table, RowAction::Delete(row))?;
            }
            // A delete applied, or that met no row, leaves its tombstone (one that lost leaves the row).
            if wins || local.is_none() {
                let what = || format!("writing a tombstone of {}", table.id);
                let mut stmt = self
                    .conn
                    .prepare_cached(&sql.tomb_write)
                    .map_err(super::db_error(what()))?;
                let head = [
                    SqlValue::Text(sql.name.clone()),
                    SqlValue::Integer(m.version.ts),
                    SqlValue::Text(m.version.node.clone()),
                ];
                stmt.execute(params_from_iter(head.iter().chain(&keys)))
                    .map_err(super::db_error(what()))?;
            }
            return Ok(());
        }
        if merges || merged.is_some() {
            let local_row = local.as_ref().map(|(ts, node, json, _)| {
                (
                    json.as_str(),
                    Version {
                        ts: ts.unwrap_or(0),
                        node: node.clone(),
                    },
                )
            });
            let rules = if merges {
                merge_update(table, &policy, op, wins, local_row, &m.version)?
            } else {
                None
            };
            for (sql, values) in rules.into_iter().chain(merged) {
                self.exec_sql(&sql, values, || {
                    format!("merging a conflicting row of {}", table.id)
                })?;
            }
        } else if wins {
            match action {
                RowAction::Upsert(full) => self.apply_row(table, RowAction::Upsert(full))?,
                // A change without every column only updates the row it found.
                other if local.is_some() => self.apply_row(table, other)?,
                _ => {}
            }
        }
        if let Some(joined) = joined {
            let sql = format!(
                "UPDATE {} SET {VERSION_VECTOR} = ?1 WHERE {}",
                quote(&table_name(&table.id)),
                key_condition(table, 2)
            );
            let values = std::iter::once(SqlValue::Text(joined))
                .chain(keys)
                .collect();
            self.exec_sql(&sql, values, || {
                format!("joining version vectors in {}", table.id)
            })?;
        }
        Ok(())
    }

    fn log_conflict(&mut self, r: &ConflictRecord) -> Result<(), Error> {
        self.multi.tally.detected(r);
        let text = |s: &str| SqlValue::Text(s.to_owned());
        let values = vec![
            text(&self.pipeline),
            text(&self.name),
            text(&r.table),
            text(&r.key),
            text(r.kind.name()),
            text(r.resolver),
            text(r.winner),
            r.local_row.as_deref().map_or(SqlValue::Null, text),
            text(&r.remote_row),
            r.local_version
                .as_ref()
                .map_or(SqlValue::Null, |v| text(&v.node)),
            r.local_version
                .as_ref()
                .map_or(SqlValue::Null, |v| SqlValue::Integer(v.ts)),
            text(&r.remote_version.node),
            SqlValue::Integer(r.remote_version.ts),
            text(&r.position),
        ];
        self.exec_sql(LOG_CONFLICT_SQL, values, || {
            "writing to ferry_conflicts".to_owned()
        })?;
        Ok(())
    }

    /// Runs `sql` with `values` bound in order.
    pub(super) fn exec_sql(
        &self,
        sql: &str,
        values: Vec<SqlValue>,
        what: impl FnOnce() -> String,
    ) -> Result<usize, Error> {
        let what = what();
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(super::db_error(&what))?;
        stmt.execute(params_from_iter(values))
            .map_err(super::db_error(what))
    }
}

/// Collects bound values and names their `?n` placeholders.
#[derive(Default)]
struct Params(Vec<SqlValue>);

impl Params {
    fn bind(&mut self, v: SqlValue) -> String {
        self.0.push(v);
        format!("?{}", self.0.len())
    }
}

/// `UPDATE t SET … WHERE key`, with `sets` and the key's values bound after theirs.
fn keyed_update(
    table: &TableSchema,
    sets: Vec<String>,
    mut params: Params,
    row: &Row,
) -> (String, Vec<SqlValue>) {
    let first = params.0.len() + 1;
    params.0.extend(
        table
            .primary_key
            .iter()
            .map(|&k| super::sqlite_value(&row[k])),
    );
    (
        format!(
            "UPDATE {} SET {} WHERE {}",
            quote(&table_name(&table.id)),
            sets.join(", "),
            key_condition(table, first)
        ),
        params.0,
    )
}

/// The UPDATE that applies a change to a row under merge rules: merge-rule columns computed from the target's
/// value (`local`: the row as the probe read it, and its version) and the change's (`op`, of version `remote`),
/// the other columns and the version only when the change wins. The same rules as on MySQL and PostgreSQL
/// targets.
fn merge_update(
    table: &TableSchema,
    policy: &crate::conflict::TablePolicy,
    op: &RowOp,
    wins: bool,
    local: Option<(&str, Version)>,
    remote: &Version,
) -> Result<Option<(String, Vec<SqlValue>)>, Error> {
    use ferry_config::MergeRule;
    let row = op.row();
    let old = match op {
        RowOp::Update { before, .. } => before.as_ref(),
        _ => None,
    };
    let mut params = Params::default();
    let mut sets = Vec::new();
    for (i, c) in table.columns.iter().enumerate() {
        if table.primary_key.contains(&i) || row[i] == Value::Unchanged {
            continue;
        }
        let col = quote(&c.name);
        let version = crate::conflict::is_version_column(&c.name);
        let rule = if version { None } else { policy.merge_of(i) };
        let set = match rule {
            None => {
                if !wins {
                    continue;
                }
                params.bind(super::sqlite_value(&row[i]))
            }
            Some(MergeRule::Max) => {
                let new = params.bind(super::sqlite_value(&row[i]));
                format!("coalesce(max({col}, {new}), {col}, {new})")
            }
            Some(MergeRule::Min) => {
                let new = params.bind(super::sqlite_value(&row[i]));
                format!("coalesce(min({col}, {new}), {col}, {new})")
            }
            Some(MergeRule::PreferNonNull) => {
                let new = params.bind(super::sqlite_value(&row[i]));
                if wins {
                    format!("coalesce({new}, {col})")
                } else {
                    format!("coalesce({col}, {new})")
                }
            }
            Some(MergeRule::SumDelta) => {
                let before = match op {
                    RowOp::Read { .. } => super::sqlite_value(&row[i]),
                    RowOp::Insert { .. } => SqlValue::Null,
                    _ => match old.map(|o| &o[i]) {
                        Some(v) if *v != Value::Unchanged => super::sqlite_value(v),
                        _ => return Err(crate::conflict::sum_delta_needs_old(table, &c.name)),
                    },
                };
                let new = params.bind(super::sqlite_value(&row[i]));
                let before = params.bind(before);
                format!("coalesce({col}, 0) + (coalesce({new}, 0) - coalesce({before}, 0))")
            }
            // The row was read in this transaction, and SQLite has one writer: the union is computed here.
            Some(MergeRule::Union) => {
                params.bind(SqlValue::Text(crate::conflict::union_by_version(
                    local.as_ref().map(|(json, v)| (*json, v)),
                    &c.name,
                    &row[i],
                    remote,
                )))
            }
        };
        sets.push(format!("{col} = {set}"));
    }
    if sets.is_empty() {
        return Ok(None);
    }
    Ok(Some(keyed_update(table, sets, params, row)))
}

/// The UPDATE that writes a merge expression's outcome for a conflict: the columns it decides, the others from
/// the later version (as under last-write-wins), and the later of both versions, so that both sides of a pair
/// compute the same row.
fn expression_update(
    table: &TableSchema,
    merge: &crate::conflict::MergeExpression,
    record: &ConflictRecord,
    row: &Row,
) -> Result<(String, Vec<SqlValue>), Error> {
    let merged = merge.merge(table, record)?;
    let remote_newer = record
        .local_version
        .as_ref()
        .is_none_or(|l| record.remote_version > *l);
    let mut params = Params::default();
    let mut sets = Vec::new();
    for (i, c) in table.columns.iter().enumerate() {
        if table.primary_key.contains(&i) || crate::conflict::is_version_column(&c.name) {
            continue;
        }
        let value = match merged.iter().find(|(m, _)| *m == i) {
            Some((_, None)) => SqlValue::Null,
            Some((_, Some(text))) => match (&c.ty, text.as_str()) {
                (ferry_core::ColumnType::Bool, "true") => SqlValue::Integer(1),
                (ferry_core::ColumnType::Bool, "false") => SqlValue::Integer(0),
                _ => SqlValue::Text(text.clone()),
            },
            None if remote_newer && row[i] != Value::Unchanged => super::sqlite_value(&row[i]),
            None => continue,
        };
        let p = params.bind(value);
        sets.push(format!("{} = {p}", quote(&c.name)));
    }
    let version = record
        .local_version
        .clone()
        .map_or(record.remote_version.clone(), |l| {
            l.max(record.remote_version.clone())
        });
    let ts = params.bind(SqlValue::Integer(version.ts));
    sets.push(format!("{VERSION_TS} = {ts}"));
    let node = params.bind(SqlValue::Text(version.node));
    sets.push(format!("{VERSION_NODE} = {node}"));
    Ok(keyed_update(table, sets, params, row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{Column, ColumnType, Dialect};

    /// The triggers, run by SQLite itself on a table written as a local application would: stamps, vector
    /// counts, tombstones; and nothing while Ferry's `ferry_applying` row is there.
    #[test]
    fn local_writes_are_stamped_and_ferry_writes_are_not() {
        let mut t = TableSchema::named(TableId::new("public", "it\"ems"), Dialect::Postgres);
        t.columns = vec![
            Column::new("id", ColumnType::Int4, "integer", false),
            Column::new("v", ColumnType::Text, "text", true),
            Column::new(VERSION_VECTOR, ColumnType::Json, "json", true),
            Column::new(VERSION_TS, ColumnType::Int8, "bigint", true),
            Column::new(VERSION_NODE, ColumnType::Text, "text", true),
        ];
        t.primary_key = vec![0];
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(&support_sql()).unwrap();
        conn.execute_batch(
            "CREATE TABLE \"it\"\"ems\" (id INTEGER PRIMARY KEY, v TEXT, _ferry_vv TEXT, _ferry_ts INTEGER, \
             _ferry_node TEXT); INSERT INTO ferry_node VALUES (1, 'edge')",
        )
        .unwrap();
        for sql in prepare_sql(&t, true) {
            conn.execute_batch(&sql).unwrap();
        }
        let row = |id: i64| -> (Option<i64>, Option<String>, Option<String>) {
            conn.query_row(
                "SELECT _ferry_ts, _ferry_node, _ferry_vv FROM \"it\"\"ems\" WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        conn.execute_batch("INSERT INTO \"it\"\"ems\" (id, v) VALUES (1, 'a')")
            .unwrap();
        let (ts1, node, vv) = row(1);
        assert!(ts1.unwrap() > 1_600_000_000_000_000, "{ts1:?}");
        assert_eq!(node.as_deref(), Some("edge"));
        assert_eq!(vv.as_deref(), Some("{\"edge\":1}"));
        conn.execute_batch("UPDATE \"it\"\"ems\" SET v = 'b' WHERE id = 1")
            .unwrap();
        let (ts2, _, vv) = row(1);
        assert!(ts2 > ts1, "{ts2:?} after {ts1:?}");
        assert_eq!(vv.as_deref(), Some("{\"edge\":2}"));
        // A key change and a delete leave tombstones of the removed version + 1.
        conn.execute_batch("UPDATE \"it\"\"ems\" SET id = 2 WHERE id = 1")
            .unwrap();
        let (ts3, _, _) = row(2);
        conn.execute_batch("DELETE FROM \"it\"\"ems\" WHERE id = 2")
            .unwrap();
        let tombs: Vec<(String, i64, String)> = conn
            .prepare("SELECT key, _ferry_ts, _ferry_node FROM ferry_tombstones WHERE table_name = 'it\"ems' ORDER BY key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            tombs,
            vec![
                ("1".to_owned(), ts2.unwrap() + 1, "edge".to_owned()),
                ("2".to_owned(), ts3.unwrap() + 1, "edge".to_owned())
            ]
        );
        // Ferry's transaction: its writes keep the versions they carry.
        conn.execute_batch(
            "BEGIN; INSERT INTO ferry_applying VALUES ('p'); \
             INSERT INTO \"it\"\"ems\" VALUES (3, 'x', NULL, 42, 'src'); UPDATE \"it\"\"ems\" SET v = 'y' WHERE id = 3; \
             DELETE FROM ferry_applying; COMMIT",
        )
        .unwrap();
        assert_eq!(row(3), (Some(42), Some("src".to_owned()), None));
        // The tombstone lookup Ferry runs finds the trigger's, from the values Ferry binds.
        let found: i64 = conn
            .query_row(&tombstone_lookup_sql(&t), ("it\"ems", 2), |r| r.get(0))
            .unwrap();
        assert_eq!(found, ts3.unwrap() + 1);
    }
}
