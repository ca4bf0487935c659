//! Conflict handling in a MySQL / MariaDB target (see [`crate::conflict`] and docs/multi-master.md).
//!
//! MySQL has neither writable CTEs nor `RETURNING` for updates, so a group of changes costs one locking probe: a
//! `SELECT … FOR UPDATE` of the target rows the group's keys meet, in one statement, returning each row's version
//! (and the row itself, for the log). [`crate::conflict::decide_change`] decides each change on it, the rule the
//! PostgreSQL statements compile into SQL, and the sink writes the winners through its usual paths.
//!
//! Versions travel in the rows themselves: [`Augmenter::augment`] gives a table under a policy the two version columns in
//! its schema (when its source has none) and fills them in each row, so creating, altering and writing the
//! target table need nothing new.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::{
    Change, Column, ColumnType, Event, Row, RowOp, SchemaRef, TableId, TableSchema, TxContext,
    Value, VERSION_NODE, VERSION_TS, VERSION_VECTOR,
};

use crate::conflict::{Policies, TablePolicy, Version, CONFLICTS_TABLE};

/// The conflict log table in a MySQL target.
pub fn conflicts_table_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CONFLICTS_TABLE} (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         pipeline VARCHAR(255) NOT NULL, sink VARCHAR(255) NOT NULL, table_name VARCHAR(255) NOT NULL, \
         `key` TEXT NOT NULL, kind VARCHAR(32) NOT NULL, resolver VARCHAR(32) NOT NULL, winner VARCHAR(16) NOT NULL, \
         local_row LONGTEXT NULL, remote_row LONGTEXT NOT NULL, local_node VARCHAR(64) NULL, local_ts BIGINT NULL, \
         remote_node VARCHAR(64) NOT NULL, remote_ts BIGINT NOT NULL, source_position TEXT NOT NULL, \
         detected_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) CHARACTER SET utf8mb4"
    )
}

/// A table's schema with the version columns (and with `vectors`, the version vector column) appended when it
/// lacks them.
fn versioned(schema: &TableSchema, vectors: bool) -> TableSchema {
    let mut s = schema.clone();
    if vectors && s.column_index(VERSION_VECTOR).is_none() {
        s.columns
            .push(Column::new(VERSION_VECTOR, ColumnType::Json, "json", true));
    }
    if s.column_index(VERSION_TS).is_none() {
        s.columns
            .push(Column::new(VERSION_TS, ColumnType::Int8, "bigint", true));
    }
    if s.column_index(VERSION_NODE).is_none() {
        s.columns.push(Column::new(
            VERSION_NODE,
            ColumnType::Text,
            "varchar(64)",
            true,
        ));
    }
    s
}

/// A table under a policy: its versioned schema and its policy.
type Versioned = Option<(SchemaRef, Arc<TablePolicy>)>;

/// The state [`Augmenter::augment`] keeps across batches.
#[derive(Default)]
pub struct Augmenter {
    /// Per source schema (table, version): the versioned schema, `None` when the table is under no policy.
    schemas: HashMap<(TableId, u64), Versioned>,
    /// The open source transaction.
    tx: Option<Arc<TxContext>>,
}

/// One change of a table under a policy, as the sink decides it.
pub struct Managed {
    pub table: SchemaRef,
    pub policy: Arc<TablePolicy>,
    pub version: Version,
    /// The version an update's or delete's old row had (REPLICA IDENTITY FULL, `binlog_row_image = FULL`).
    pub seen: Option<i64>,
    /// The change's version vector (JSON), when the table keeps them and the source row carries one.
    pub vector: Option<String>,
    pub position: String,
}

impl Augmenter {
    /// `events` with the tables under a policy versioned: their schemas carry the version columns, their new
    /// rows the change's version (its source row's, else its commit time and `node`). Tables without a primary
    /// key stay as they are.
    pub fn augment(
        &mut self,
        policies: &mut Policies,
        policy: &ferry_config::ConflictPolicy,
        node: &str,
        events: &[Event],
    ) -> Result<Vec<Event>, ferry_core::Error> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            match event {
                Event::Begin(tx) => {
                    self.tx = Some(tx.clone());
                    out.push(event.clone());
                }
                Event::Schema(schema) => match self.plan(policies, policy, schema)? {
                    Some((versioned, _)) => out.push(Event::Schema(versioned)),
                    None => out.push(event.clone()),
                },
                Event::Change(Change::Row { table, op }) => {
                    let Some((versioned, table_policy)) = self.plan(policies, policy, table)?
                    else {
                        out.push(event.clone());
                        continue;
                    };
                    let version =
                        |row: &Row| table_policy.version_of(row, self.tx.as_deref(), node);
                    let vv = versioned.column_index(VERSION_VECTOR);
                    let fill = |row: &Row, with: Option<&Version>| -> Row {
                        let mut r = row.clone();
                        r.resize(versioned.columns.len(), Value::Unchanged);
                        // A source row without a vector writes none (the rule falls back to versions).
                        if let Some(i) = vv {
                            if with.is_some() && r[i] == Value::Unchanged {
                                r[i] = Value::Null;
                            }
                        }
                        if let Some(v) = with {
                            let (ts, nd) = (
                                versioned.column_index(VERSION_TS).unwrap_or(0),
                                versioned.column_index(VERSION_NODE).unwrap_or(0),
                            );
                            if table_policy.ts_column.is_none() || r[ts] == Value::Null {
                                r[ts] = Value::Int(v.ts);
                            }
                            if table_policy.node_column.is_none() || r[nd] == Value::Null {
                                r[nd] = Value::Text(v.node.clone());
                            }
                        }
                        r
                    };
                    let op = match op {
                        RowOp::Insert { after } => RowOp::Insert {
                            after: fill(after, Some(&version(after))),
                        },
                        RowOp::Read { after } => RowOp::Read {
                            after: fill(after, Some(&version(after))),
                        },
                        RowOp::Update { before, after } => RowOp::Update {
                            before: before.as_ref().map(|b| fill(b, None)),
                            after: fill(after, Some(&version(after))),
                        },
                        RowOp::Delete { before } => RowOp::Delete {
                            before: fill(before, None),
                        },
                    };
                    out.push(Event::Change(Change::Row {
                        table: versioned,
                        op,
                    }));
                }
                other => out.push(other.clone()),
            }
        }
        Ok(out)
    }

    fn plan(
        &mut self,
        policies: &mut Policies,
        policy: &ferry_config::ConflictPolicy,
        schema: &SchemaRef,
    ) -> Result<Versioned, ferry_core::Error> {
        let key = (schema.id.clone(), schema.version);
        if let Some(planned) = self.schemas.get(&key) {
            return Ok(planned.clone());
        }
        let planned = match policies.get(policy, schema)? {
            Some(p) if schema.has_primary_key() => {
                Some((Arc::new(versioned(schema, p.vectors)), p))
            }
            _ => None,
        };
        self.schemas.insert(key, planned.clone());
        Ok(planned)
    }

    /// The policy and version of a change of `table` (a versioned schema), `None` when it is under no policy.
    /// A delete's version is `node`'s.
    pub fn managed(&self, table: &SchemaRef, op: &RowOp, node: &str) -> Option<Managed> {
        let (versioned, policy) = self
            .schemas
            .get(&(table.id.clone(), table.version))?
            .as_ref()?;
        if !Arc::ptr_eq(versioned, table) {
            return None;
        }
        let (ts, nd) = (
            table.column_index(VERSION_TS)?,
            table.column_index(VERSION_NODE)?,
        );
        let position = self
            .tx
            .as_ref()
            .map(|t| t.commit_at.to_string())
            .unwrap_or_default();
        let version_in = |row: &Row| Version {
            ts: match row[ts] {
                Value::Int(n) => n,
                _ => 0,
            },
            node: match &row[nd] {
                Value::Text(s) => s.clone(),
                _ => String::new(),
            },
        };
        let vector = match op {
            RowOp::Insert { after } | RowOp::Read { after } | RowOp::Update { after, .. } => {
                policy.vector_of(after)
            }
            RowOp::Delete { .. } => None,
        };
        let (version, seen) = match op {
            RowOp::Insert { after } | RowOp::Read { after } => (version_in(after), None),
            RowOp::Update { before, after } => (
                version_in(after),
                before.as_ref().and_then(|b| policy.seen_version(b)),
            ),
            RowOp::Delete { before } => policy.delete_version(before, self.tx.as_deref(), node),
        };
        Some(Managed {
            table: table.clone(),
            policy: policy.clone(),
            version,
            seen,
            vector,
            position,
        })
    }
}

/// The keys of a group of changes in a session-private temporary table typed like the target's key columns, so
/// the server computes their tombstone key ([`ferry_core::versions::mysql_key_json`]) from typed values exactly
/// as the delete trigger does from `OLD` (a `DATETIME(6)` or `DECIMAL(10,2)` key prints the same on both paths).
/// Besides each key it holds the change's place in the group and version.
pub struct KeyTable {
    /// Quoted name of the temporary table.
    name: String,
    /// Quoted tombstone table of the target's database.
    tombstones: String,
    /// `table_name` of the target's tombstones, as an SQL string literal.
    table_name: String,
    /// The key's `JSON_ARRAY` over the temporary table's rows (alias `k`).
    key_json: String,
    keys: Vec<String>,
}

impl KeyTable {
    /// The key table of `database`.`table` (primary key `keys`).
    pub fn new(database: &str, table: &str, keys: Vec<String>) -> KeyTable {
        let h = ferry_core::fnv1a(format!("{database}.{table}").into_bytes());
        KeyTable {
            name: format!("`ferry_keys_{h:016x}`"),
            tombstones: format!(
                "{}.{}",
                super::quote_ident(database),
                ferry_core::TOMBSTONES_TABLE
            ),
            table_name: super::literal::text(&ferry_core::versions::mysql_tombstone_name(
                database, table,
            )),
            key_json: ferry_core::versions::mysql_key_json("k", &keys),
            keys,
        }
    }

    /// (Re)creates the temporary table from the target `target` (quoted): its key columns' types, the place and
    /// the version.
    pub fn create_sql(&self, target: &str) -> [String; 2] {
        let keys: Vec<String> = self.keys.iter().map(|k| super::quote_ident(k)).collect();
        [
            format!("DROP TEMPORARY TABLE IF EXISTS {}", self.name),
            // The place and version columns are declared, the key columns copied from the target.
            format!(
                "CREATE TEMPORARY TABLE {} (ord INT NOT NULL, vts BIGINT NOT NULL, vnode VARCHAR(64) NOT NULL) \
                 CHARACTER SET utf8mb4 AS SELECT 0 AS ord, {}, 0 AS vts, '' AS vnode FROM {target} LIMIT 0",
                self.name,
                keys.join(", ")
            ),
        ]
    }

    /// Replaces the table's rows with `rows`: place, key literals (in key order) and version.
    pub fn load_sql(&self, rows: &[(usize, Vec<String>, &Version)]) -> [String; 2] {
        let values: Vec<String> = rows
            .iter()
            .map(|(ord, keys, v)| {
                format!(
                    "({ord}, {}, {}, {})",
                    keys.join(", "),
                    v.ts,
                    super::literal::text(&v.node)
                )
            })
            .collect();
        let keys: Vec<String> = self.keys.iter().map(|k| super::quote_ident(k)).collect();
        [
            format!("DELETE FROM {}", self.name),
            format!(
                "INSERT INTO {} (ord, {}, vts, vnode) VALUES {}",
                self.name,
                keys.join(", "),
                values.join(", ")
            ),
        ]
    }

    fn matching(&self) -> String {
        format!(
            "tb.table_name = {} AND tb.key_hash = UNHEX(SHA2({}, 256))",
            self.table_name, self.key_json
        )
    }

    fn places(ords: &[usize]) -> String {
        ords.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The tombstones of the keys at places `ords`: place, version µs, node.
    pub fn lookup_sql(&self, ords: &[usize]) -> String {
        format!(
            "SELECT k.ord, tb.{ts}, COALESCE(tb.{node}, '') FROM {} k JOIN {} tb ON {} WHERE k.ord IN ({})",
            self.name,
            self.tombstones,
            self.matching(),
            Self::places(ords),
            ts = ferry_core::VERSION_TS,
            node = ferry_core::VERSION_NODE,
        )
    }

    /// Leaves a tombstone of each key at places `ords` (deletes applied, or that met no row) with the delete's
    /// version, unless a later one is there. Two statements: in MySQL's `ON DUPLICATE KEY UPDATE`, each
    /// assignment sees the ones before it, so one conditional upsert cannot move both version columns together.
    pub fn write_sql(&self, ords: &[usize]) -> [String; 2] {
        let (ts, node) = (ferry_core::VERSION_TS, ferry_core::VERSION_NODE);
        [
            format!(
                "INSERT INTO {tb} (table_name, key_hash, `key`, {ts}, {node}) SELECT {name}, \
                 UNHEX(SHA2({key}, 256)), {key}, k.vts, k.vnode FROM {keys} k WHERE k.ord IN ({ords}) \
                 ON DUPLICATE KEY UPDATE table_name = table_name",
                tb = self.tombstones,
                name = self.table_name,
                key = self.key_json,
                keys = self.name,
                ords = Self::places(ords),
            ),
            format!(
                "UPDATE {tb} tb JOIN {keys} k ON {matching} SET tb.{ts} = k.vts, tb.{node} = k.vnode, \
                 tb.deleted_at = CURRENT_TIMESTAMP(6) WHERE k.ord IN ({ords}) \
                 AND (k.vts, k.vnode) > (tb.{ts}, COALESCE(tb.{node}, ''))",
                tb = self.tombstones,
                keys = self.name,
                matching = self.matching(),
                ords = Self::places(ords),
            ),
        ]
    }
}
