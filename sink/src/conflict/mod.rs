//! Conflict detection and resolution, shared by the SQL sinks (docs/multi-master.md).
//!
//! A table under a conflict policy (`[[sink]] conflict`, `[[sink.conflict_rules]]`) carries a row version in two
//! columns Ferry adds to the target table: [`VERSION_TS`], a hybrid logical clock in µs since the Unix epoch, and
//! [`VERSION_NODE`], the node that wrote that version. Local writes on the target are stamped by a trigger
//! (`greatest(now, previous version + 1 µs)`, so a write that follows another on the same row always has a larger
//! version even when the writer's clock is behind); Ferry's own writes carry the source change's version. When the
//! source table carries these columns too (two databases replicating into each other), a change's version is the
//! one its source row holds, so both sides compare the same versions and pick the same winner.
//!
//! The resolver is compiled into the apply statement: a change that conflicts is decided by the target database
//! while it writes, and only the rows of another writer are returned (to be logged in `ferry_conflicts`).

use std::collections::HashMap;

pub mod augment;

use ferry_config::{ConflictPolicy, MergeRule, Resolver};
use ferry_core::{ColumnType, ConflictCount, Error, Row, TableSchema, TxContext, Value};

pub use ferry_core::{TOMBSTONES_TABLE, VERSION_NODE, VERSION_TS};

/// The conflict log's table.
pub const CONFLICTS_TABLE: &str = "ferry_conflicts";

/// Whether `name` is one of the version columns.
pub fn is_version_column(name: &str) -> bool {
    name == VERSION_TS || name == VERSION_NODE || name == ferry_core::VERSION_VECTOR
}

/// What a SQL sink needs to know for conflict handling and loop prevention (`[pipeline] node`, `[[sink]]
/// conflict`).
#[derive(Debug, Clone, Default)]
pub struct MultiMasterOptions {
    pub conflicts: ferry_config::ConflictPolicy,
    /// `[pipeline] node`: when set, the sink marks the transactions it applies (a PostgreSQL replication origin,
    /// a MySQL `ferry_origin` row) so that a peer pipeline reading the target can skip them.
    pub node: Option<String>,
    /// Processes of a Kafka source's consumer group run this sink together, each applying its own partitions:
    /// no lease keeps them apart; each partition's claim fences them instead
    /// ([`ferry_core::kafka_offsets`]).
    pub shared: bool,
}

impl MultiMasterOptions {
    /// Whether any conflict rule is configured.
    pub fn resolves(&self) -> bool {
        self.conflicts.default.is_some() || !self.conflicts.rules.is_empty()
    }
}

/// What the resolver makes of a change that found `local` (its version, `None` when never stamped; the row's
/// node; `None` for no row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No conflict: the change applies.
    Apply,
    /// A conflict of this kind; the change wins or not.
    Conflict {
        kind: ConflictKind,
        remote_wins: bool,
    },
}

impl Decision {
    /// Whether the change is written: it applies without conflict, or wins the conflict.
    pub fn remote_wins(self) -> bool {
        match self {
            Decision::Apply => true,
            Decision::Conflict { remote_wins, .. } => remote_wins,
        }
    }
}

/// The error of a `sum_delta` column whose update arrived without the value it replaced.
pub fn sum_delta_needs_old(table: &TableSchema, column: &str) -> Error {
    Error::fatal(format!(
        "table {}, column {column}: sum_delta needs the value the update replaced, and the source did not send it; \
         set REPLICA IDENTITY FULL on the source table (MySQL / MariaDB: binlog_row_image = FULL)",
        table.id
    ))
}

/// Whether a change that meets no row may write one: all of it is there (`complete`), and it is an insert, or an
/// update under a resolver that lets a change bring back what is missing.
pub fn may_insert(resolver: Resolver, complete: bool, update: bool) -> bool {
    complete
        && (!update
            || matches!(
                resolver,
                Resolver::ApplyRemote | Resolver::LastWriteWins | Resolver::FirstWriteWins
            ))
}

/// The reference decision for an insert or update (`update`) meeting `local` (the PostgreSQL statements compile
/// the same rule; MySQL targets run it here). `tomb`: the tombstone of the key, when its row is missing;
/// `seen`: the version an update's old row had; `complete`: the change carries every column. `resolver`: the
/// table's [`TablePolicy::row_resolver`] when a row is there, its [`TablePolicy::missing_resolver`] when not.
pub fn decide_change(
    resolver: Resolver,
    local: Option<(Option<i64>, &str)>,
    tomb: Option<&Version>,
    remote: &Version,
    seen: Option<i64>,
    update: bool,
    complete: bool,
) -> Decision {
    let may_insert = may_insert(resolver, complete, update);
    match local {
        Some((None, _)) => Decision::Apply,
        // The change's writer saw the row as it is: it follows it.
        Some((Some(ts), _)) if seen == Some(ts) => Decision::Apply,
        Some((Some(_), node)) if node == remote.node => Decision::Apply,
        Some((Some(ts), node)) => Decision::Conflict {
            kind: if update {
                ConflictKind::UpdateOriginDiffers
            } else {
                ConflictKind::InsertExists
            },
            remote_wins: remote_wins(
                resolver,
                &Version {
                    ts,
                    node: node.to_owned(),
                },
                remote,
            ),
        },
        None => match tomb {
            None if !update => Decision::Apply,
            None => Decision::Conflict {
                kind: ConflictKind::UpdateMissing,
                remote_wins: may_insert,
            },
            // The change's own node deleted the key before: the insert follows it.
            Some(t) if t.node == remote.node && !update => Decision::Apply,
            Some(t) => Decision::Conflict {
                kind: if update {
                    ConflictKind::UpdateDeleted
                } else {
                    ConflictKind::InsertDeleted
                },
                remote_wins: may_insert
                    && (t.node == remote.node || remote_wins(resolver, t, remote)),
            },
        },
    }
}

/// The reference decision for a delete of version `remote` that saw version `seen` of the row (`None`: its old
/// image did not carry it), meeting `local`.
pub fn decide_delete(
    resolver: Resolver,
    local: Option<(Option<i64>, &str)>,
    remote: &Version,
    seen: Option<i64>,
) -> Decision {
    match local {
        None => Decision::Conflict {
            kind: ConflictKind::DeleteMissing,
            remote_wins: false,
        },
        Some((None, _)) => Decision::Apply,
        Some((Some(ts), _)) if seen == Some(ts) => Decision::Apply,
        Some((Some(_), node)) if seen.is_none() && node == remote.node => Decision::Apply,
        Some((Some(ts), node)) => Decision::Conflict {
            kind: ConflictKind::DeleteOriginDiffers,
            remote_wins: remote_wins(
                resolver,
                &Version {
                    ts,
                    node: node.to_owned(),
                },
                remote,
            ),
        },
    }
}

/// A source TRUNCATE or an online re-copy of a table under a conflict policy: neither is a row change that can be
/// weighed against the target's own writes, so applying it would silently erase them (or keep them on one side
/// only). The pipeline stops instead, naming the table and the way forward.
pub fn refuse_bulk_change(
    policy: &ferry_config::ConflictPolicy,
    tables: &[ferry_core::TableId],
    what: &str,
) -> Result<(), Error> {
    match tables.iter().find(|t| policy.for_table(t).is_some()) {
        None => Ok(()),
        Some(t) => Err(Error::fatal(format!(
            "{what} of table {t}, which is under a conflict rule: it would replace the rows of a table both \
             sides write, erasing the target's own writes without a conflict. Delete rows with DELETE instead; to \
             copy a table anew, stop both pipelines, copy it, and `ferry reset` both"
        ))),
    }
}

/// A table's conflict policy, resolved against one schema version of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TablePolicy {
    pub resolver: Resolver,
    /// Column index and merge rule.
    pub merges: Vec<(usize, MergeRule)>,
    /// The schema's own version columns, when the source table carries them.
    pub ts_column: Option<usize>,
    pub node_column: Option<usize>,
    /// The rows keep version vectors (`version_vectors = true`).
    pub vectors: bool,
    /// The application-level merge of conflicting rows (`merge = "<CEL>"`).
    pub merge: Option<MergeExpression>,
    /// The schema's version vector column, when the source table carries it.
    pub vector_column: Option<usize>,
}

impl TablePolicy {
    /// The policy of `table` under `policy`, `None` when nothing is configured for it. Errors name the rule's
    /// key path, the table and what is wrong (an unknown column, a merge rule the column's type cannot take, a
    /// table without a primary key).
    pub fn plan(
        policy: &ConflictPolicy,
        table: &TableSchema,
    ) -> Result<Option<TablePolicy>, Error> {
        let Some((resolver, columns)) = policy.for_table(&table.id) else {
            return Ok(None);
        };
        let rule = policy
            .rules
            .iter()
            .find(|r| r.tables.iter().any(|p| table.id.matches_glob(p)));
        let key = rule.map_or("conflict", |r| r.key.as_str());
        // A rule that names the table itself (no wildcard) is about it; one that only matches it by a pattern
        // covers it as the sink-wide default does.
        let named = rule.is_some_and(|r| {
            r.tables
                .iter()
                .any(|p| !p.contains(['*', '?', '[']) && table.id.matches_glob(p))
        });
        if !table.has_primary_key() && !named {
            tracing::warn!(table = %table.id, "table has no primary key: its changes are applied without conflict detection");
            return Ok(None);
        }
        if !table.has_primary_key() {
            return Err(Error::fatal(format!(
                "{key}: table {} has no primary key where the stream describes it, so Ferry cannot tell which target \
                 row a change conflicts with. Give it a primary key, or leave it out of the conflict rules; if it has \
                 one, its key columns were renamed or replaced after this point of the stream (PostgreSQL describes \
                 older changes with the catalog as it is now): copy the table anew (`ferry reset --config <file> \
                 --yes`)",
                table.id
            )));
        }
        let mut merges = Vec::new();
        for (name, rule) in columns {
            let Some(i) = table.column_index(name) else {
                return Err(Error::fatal(format!(
                    "{key}.columns.{name}: table {} has no column {name:?}",
                    table.id
                )));
            };
            if table.primary_key.contains(&i) {
                return Err(Error::fatal(format!(
                    "{key}.columns.{name}: {name} is part of the primary key of {}; a merge rule cannot change a key",
                    table.id
                )));
            }
            let numeric = matches!(
                table.columns[i].ty,
                ColumnType::Int2
                    | ColumnType::Int4
                    | ColumnType::Int8
                    | ColumnType::Float4
                    | ColumnType::Float8
                    | ColumnType::Numeric
            );
            // MariaDB's JSON is a text column: its documents are text to the change, JSON to the target.
            let json = matches!(
                table.columns[i].ty,
                ColumnType::Json | ColumnType::Jsonb | ColumnType::Text
            );
            if *rule == MergeRule::Union && !json {
                return Err(Error::fatal(format!(
                    "{key}.columns.{name}: union merges JSON arrays, and {}.{name} is {}",
                    table.id, table.columns[i].source_type
                )));
            }
            if *rule == MergeRule::SumDelta && !numeric {
                return Err(Error::fatal(format!(
                    "{key}.columns.{name}: sum_delta needs a number column, and {}.{name} is {}",
                    table.id, table.columns[i].source_type
                )));
            }
            merges.push((i, *rule));
        }
        Ok(Some(TablePolicy {
            resolver,
            merges,
            ts_column: table.column_index(VERSION_TS),
            node_column: table.column_index(VERSION_NODE),
            vectors: policy.vectors_for(&table.id),
            merge: policy
                .merge_for(&table.id)
                .map(|text| MergeExpression::compile(text, &format!("{key}.merge")))
                .transpose()?,
            vector_column: table.column_index(ferry_core::VERSION_VECTOR),
        }))
    }

    /// The resolver's name in the conflict log.
    pub fn resolver_name(&self) -> &'static str {
        if self.merge.is_some() {
            "merge"
        } else {
            self.resolver.name()
        }
    }

    /// The resolver of a change meeting a row of another writer: a merge expression keeps the row to merge it.
    pub fn row_resolver(&self) -> Resolver {
        if self.merge.is_some() {
            Resolver::KeepLocal
        } else {
            self.resolver
        }
    }

    /// The resolver of a change meeting no row or a delete: under a merge expression, the later write.
    pub fn missing_resolver(&self) -> Resolver {
        if self.merge.is_some() {
            Resolver::LastWriteWins
        } else {
            self.resolver
        }
    }

    /// The merge rule of column `i`, if any.
    pub fn merge_of(&self, i: usize) -> Option<MergeRule> {
        self.merges.iter().find(|(c, _)| *c == i).map(|(_, m)| *m)
    }

    /// The version a change carries. When the source table has the version columns (its database is a peer
    /// with stamping triggers), the source row's: a row never stamped (written before the triggers) is version
    /// 0, as the peer stores it, so both sides compare the same versions. Otherwise the transaction's commit
    /// time; snapshot rows, which belong to no transaction, are version 0. The node is the row's, else `node`
    /// (the pipeline's).
    pub fn version_of(&self, row: &Row, tx: Option<&TxContext>, node: &str) -> Version {
        let ts = self.ts_column.map(|i| match &row[i] {
            Value::Int(n) => *n,
            _ => 0,
        });
        let row_node = self.node_column.and_then(|i| match &row[i] {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        });
        match ts {
            Some(ts) => Version {
                ts,
                node: row_node.unwrap_or_else(|| node.to_owned()),
            },
            None => Version {
                ts: tx
                    .and_then(|t| t.commit_time)
                    .and_then(|t| t.unix_micros())
                    .unwrap_or(0),
                node: node.to_owned(),
            },
        }
    }

    /// The version vector a change's new row carries (JSON text), when the source table keeps one.
    pub fn vector_of(&self, row: &Row) -> Option<String> {
        match self.vector_column.map(|i| &row[i]) {
            Some(Value::Json(j)) => Some(j.clone()),
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        }
    }

    /// A delete's (or a key change's old key's) version, with the version its old row had: that version + 1 µs,
    /// as the deleting side's tombstone counts it; without it in the old row, the commit time. The node is
    /// `node`, the deleting side's.
    pub fn delete_version(
        &self,
        old: &Row,
        tx: Option<&TxContext>,
        node: &str,
    ) -> (Version, Option<i64>) {
        let seen = self.seen_version(old);
        let ts = match seen {
            Some(ts) => ts.saturating_add(1),
            None => tx
                .and_then(|t| t.commit_time)
                .and_then(|t| t.unix_micros())
                .unwrap_or(0),
        };
        (
            Version {
                ts,
                node: node.to_owned(),
            },
            seen,
        )
    }

    /// The version a change's old image says the source row had (REPLICA IDENTITY FULL, `binlog_row_image =
    /// FULL`), `None` when the old image does not carry it.
    pub fn seen_version(&self, old: &Row) -> Option<i64> {
        match self.ts_column.map(|i| &old[i]) {
            Some(Value::Int(n)) => Some(*n),
            // A row never stamped: version 0, as the tombstone trigger counts it on the deleting side.
            Some(Value::Null) => Some(0),
            _ => None,
        }
    }
}

/// A compiled `merge = "<CEL>"` expression. Its variables: `local` and `remote`, maps of column to the value's
/// text (as the conflict log shows them; NULL is `null`), `local_version` and `remote_version` (`{ts, node}`),
/// and `table`. It gives a map of column to value (text, number, bool or null) for the columns it decides; the
/// others take the later version's values, as under last-write-wins. Both sides of a pair run it with `local`
/// and `remote` swapped, so it must not depend on which is which (take the larger, add both, join the sets) for
/// them to converge.
#[derive(Clone)]
pub struct MergeExpression {
    key: String,
    text: String,
    program: std::sync::Arc<cel::Program>,
}

impl std::fmt::Debug for MergeExpression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MergeExpression({})", self.text)
    }
}

impl PartialEq for MergeExpression {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl MergeExpression {
    fn compile(text: &str, key: &str) -> Result<MergeExpression, Error> {
        let program = cel::Program::compile(text).map_err(|e| {
            Error::fatal(format!(
                "{key}: not a valid CEL expression: {}",
                e.to_string().trim()
            ))
        })?;
        Ok(MergeExpression {
            key: key.to_owned(),
            text: text.to_owned(),
            program: std::sync::Arc::new(program),
        })
    }

    /// The merged columns of `record`'s conflict (column, text or NULL), or an error naming the table, the key
    /// and what the expression did.
    pub fn merge(
        &self,
        table: &TableSchema,
        record: &ConflictRecord,
    ) -> Result<Vec<(usize, Option<String>)>, Error> {
        use cel::objects::{Key, Value as Cel};
        let fail = |why: String| {
            Error::fatal(format!(
                "{}: merging the conflict on table {} at {}: {why}",
                self.key, record.table, record.key
            ))
        };
        let map = |json: &str| -> std::collections::HashMap<String, Cel> {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => Cel::from(s),
                        _ => Cel::Null,
                    };
                    (k, v)
                })
                .collect()
        };
        let version = |v: Option<&Version>| -> Cel {
            match v {
                Some(v) => Cel::from(std::collections::HashMap::from([
                    ("ts".to_owned(), Cel::Int(v.ts)),
                    ("node".to_owned(), Cel::from(v.node.clone())),
                ])),
                None => Cel::Null,
            }
        };
        let mut cx = cel::Context::default();
        cx.add_variable_from_value("local", map(record.local_row.as_deref().unwrap_or("{}")));
        cx.add_variable_from_value("remote", map(&record.remote_row));
        cx.add_variable_from_value("local_version", version(record.local_version.as_ref()));
        cx.add_variable_from_value("remote_version", version(Some(&record.remote_version)));
        cx.add_variable_from_value("table", Cel::from(record.table.clone()));
        let out = self.program.execute(&cx).map_err(|e| fail(e.to_string()))?;
        let Cel::Map(m) = out else {
            return Err(fail(format!(
                "it gave {:?}, not a map of column to value",
                out.type_of()
            )));
        };
        let mut merged = Vec::new();
        for (k, v) in m.map.iter() {
            let Key::String(name) = k else {
                return Err(fail("its map has a key that is not a column name".into()));
            };
            let Some(i) = table.column_index(name) else {
                return Err(fail(format!("table {} has no column {name:?}", table.id)));
            };
            if table.primary_key.contains(&i) || is_version_column(name) {
                return Err(fail(format!(
                    "{name} is a key or version column and cannot be merged"
                )));
            }
            let text = match v {
                Cel::Null => None,
                Cel::String(s) => Some(s.to_string()),
                Cel::Int(n) => Some(n.to_string()),
                Cel::UInt(n) => Some(n.to_string()),
                Cel::Float(f) => Some(f.to_string()),
                Cel::Bool(b) => Some(b.to_string()),
                other => return Err(fail(format!("column {name} got a {:?}", other.type_of()))),
            };
            merged.push((i, text));
        }
        merged.sort_by_key(|(i, _)| *i);
        Ok(merged)
    }
}

/// A row version: hybrid logical clock (µs since the epoch) and writer node; versions order by `ts`, then `node`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub ts: i64,
    pub node: String,
}

/// What kind of conflict a change met (the names PostgreSQL 18 and Spock use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// An insert found a row with its key, last written by another node.
    InsertExists,
    /// An update found its row last written by another node.
    UpdateOriginDiffers,
    /// An update found no row, and no record that one was deleted.
    UpdateMissing,
    /// An update found no row because it was deleted.
    UpdateDeleted,
    /// An insert found a record that another node deleted its key.
    InsertDeleted,
    /// A delete found its row last written by another node (or changed since the version the delete saw).
    DeleteOriginDiffers,
    /// A delete found no row.
    DeleteMissing,
}

impl ConflictKind {
    pub fn name(self) -> &'static str {
        match self {
            ConflictKind::InsertExists => "insert_exists",
            ConflictKind::UpdateOriginDiffers => "update_origin_differs",
            ConflictKind::UpdateMissing => "update_missing",
            ConflictKind::UpdateDeleted => "update_deleted",
            ConflictKind::InsertDeleted => "insert_deleted",
            ConflictKind::DeleteOriginDiffers => "delete_origin_differs",
            ConflictKind::DeleteMissing => "delete_missing",
        }
    }
}

/// Whether the change (`remote`) wins over the target row's version (`local`) under `resolver`, as the apply
/// statements decide it (they compile the same rule into SQL; this is its reference, for logs and tests).
pub fn remote_wins(resolver: Resolver, local: &Version, remote: &Version) -> bool {
    match resolver {
        Resolver::ApplyRemote => true,
        Resolver::KeepLocal | Resolver::Skip | Resolver::Error => false,
        Resolver::LastWriteWins => remote > local,
        Resolver::FirstWriteWins => remote < local,
    }
}

/// One detected conflict, as written to `ferry_conflicts`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictRecord {
    pub table: String,
    /// The key as `(a, b) = (1, 'x')`.
    pub key: String,
    pub kind: ConflictKind,
    /// The resolver's name, or `merge` for a merge expression.
    pub resolver: &'static str,
    /// `remote` (the change was applied), `local` (the target row stayed) or `merged` (the target row stayed,
    /// its merge-rule columns took the change into account).
    pub winner: &'static str,
    /// The target row before the change, as JSON (`None`: there was none).
    pub local_row: Option<String>,
    /// The change's new row (its old row for a delete), as JSON.
    pub remote_row: String,
    pub local_version: Option<Version>,
    pub remote_version: Version,
    /// The source position of the change's transaction.
    pub position: String,
}

impl ConflictRecord {
    /// Its count in `ferry_conflicts_total`.
    pub fn count(&self) -> ConflictCount {
        ConflictCount {
            table: self.table.clone(),
            kind: self.kind.name(),
            resolution: if self.winner == "remote" {
                "apply_remote"
            } else {
                "keep_local"
            },
        }
    }

    /// The error of the `error` resolver: the table, the key and both rows.
    pub fn into_error(self) -> Error {
        Error::fatal(format!(
            "conflict on table {} (conflict = \"error\"): {} for {}; the target row is {}, the change is {}. The \
             pipeline stays stopped at this change: decide which row is right, then restart with another resolver \
             for the table (conflict = \"apply_remote\" takes the change, \"keep_local\" the target row)",
            self.table,
            self.kind.name(),
            self.key,
            self.local_row.as_deref().unwrap_or("absent"),
            self.remote_row
        ))
    }
}

/// A version vector's counters (`{"a": 3, "b": 1}`); `None` when the text is not such an object.
fn vector(text: &str) -> Option<std::collections::BTreeMap<String, i64>> {
    let map = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).ok()?;
    map.into_iter()
        .map(|(k, v)| v.as_i64().map(|n| (k, n)))
        .collect()
}

/// How version vector `a` relates to `b`: 0 equal, 1 `a` follows `b` (its writer had seen `b`), -1 `b` follows
/// `a`, 2 concurrent (neither saw the other). `None` when either is not a vector. PostgreSQL targets compute the
/// same in SQL (`ferry_vv_cmp`).
pub fn vector_cmp(a: &str, b: &str) -> Option<i32> {
    let (a, b) = (vector(a)?, vector(b)?);
    let (mut ahead, mut behind) = (false, false);
    for k in a.keys().chain(b.keys()) {
        let (x, y) = (
            a.get(k).copied().unwrap_or(0),
            b.get(k).copied().unwrap_or(0),
        );
        ahead |= x > y;
        behind |= x < y;
    }
    Some(match (ahead, behind) {
        (false, false) => 0,
        (true, false) => 1,
        (false, true) => -1,
        (true, true) => 2,
    })
}

/// Each node's larger counter of two vectors: the history of both (`ferry_vv_max` on PostgreSQL). `None` when
/// either is not a vector.
pub fn vector_max(a: &str, b: &str) -> Option<String> {
    let (mut a, b) = (vector(a)?, vector(b)?);
    for (k, y) in b {
        let x = a.entry(k).or_insert(y);
        *x = (*x).max(y);
    }
    Some(serde_json::to_string(&a).unwrap_or_default())
}

/// The `union` merge of two JSON documents (their text; `None` for SQL NULL): each element once, the local
/// document's in their order, then the remote's that it lacks. A value that is not an array counts as one
/// element, NULL as none; text that is not JSON counts as one string. The rule PostgreSQL targets compile into
/// their statement (`jsonb_array_elements … GROUP BY`), run here for MySQL targets.
pub fn union_json(local: Option<&str>, remote: Option<&str>) -> String {
    let elements = |text: Option<&str>| -> Vec<serde_json::Value> {
        match text.map(|t| {
            serde_json::from_str::<serde_json::Value>(t)
                .unwrap_or_else(|_| serde_json::Value::String(t.to_owned()))
        }) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items,
            Some(other) => vec![other],
        }
    };
    let mut out: Vec<serde_json::Value> = Vec::new();
    for e in elements(local).into_iter().chain(elements(remote)) {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    serde_json::Value::Array(out).to_string()
}

/// The `union` merge of column `column` of a target row (`local`: the row as the conflict log shows it, a JSON
/// object of column to text, and its version) and a change's value (`remote`, its version): the earlier write's
/// elements first, so that both sides of a pair, each of which sees the other's write as the remote one, compute
/// the same array in the same order. PostgreSQL targets compile the same rule into their statement.
pub fn union_by_version(
    local: Option<(&str, &Version)>,
    column: &str,
    remote: &Value,
    remote_version: &Version,
) -> String {
    let local_value = local.and_then(|(json, _)| {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
            .ok()?
            .remove(column)
        {
            Some(serde_json::Value::String(t)) => Some(t),
            _ => None,
        }
    });
    let remote = ferry_core::pg_text::pg_text(remote);
    let (local_value, remote) = (local_value.as_deref(), remote.as_deref());
    match local {
        Some((_, v)) if v > remote_version => union_json(remote, local_value),
        _ => union_json(local_value, remote),
    }
}

/// `row` as a JSON object of column name to PostgreSQL text (the conflict log's row format), version columns
/// left out.
pub fn row_json(table: &TableSchema, row: &Row) -> String {
    ferry_core::dead_letter::row_json(table, row, |c| !is_version_column(&c.name))
}

/// The conflicts a sink detected in its open transaction and made durable by its commits.
#[derive(Debug, Default)]
pub struct ConflictTally {
    open: Vec<ConflictCount>,
    committed: Vec<ConflictCount>,
}

impl ConflictTally {
    pub fn detected(&mut self, record: &ConflictRecord) {
        self.open.push(record.count());
    }

    pub fn committed(&mut self) {
        self.committed.append(&mut self.open);
    }

    /// Where the open transaction's conflicts stand, to go back to ([`ConflictTally::rollback`]).
    pub fn mark(&self) -> usize {
        self.open.len()
    }

    /// Forgets the conflicts detected since `mark` (their writes were undone: a savepoint rolled back).
    pub fn rollback(&mut self, mark: usize) {
        self.open.truncate(mark);
    }

    pub fn take(&mut self) -> Vec<ConflictCount> {
        std::mem::take(&mut self.committed)
    }
}

/// A row of `ferry_conflicts` as `ferry conflicts` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoggedConflict {
    pub id: i64,
    pub detected_at: String,
    pub pipeline: String,
    pub sink: String,
    pub table: String,
    pub key: String,
    pub kind: String,
    pub resolver: String,
    pub winner: String,
    /// The rows as JSON objects of column to text (`null`: no target row).
    pub local_row: serde_json::Value,
    pub remote_row: serde_json::Value,
    pub local_node: Option<String>,
    pub local_ts: Option<i64>,
    pub remote_node: String,
    pub remote_ts: i64,
    pub source_position: String,
}

/// A logged row's JSON text as a JSON value (the text itself if it is not JSON).
pub fn logged_row(text: Option<String>) -> serde_json::Value {
    match text {
        None => serde_json::Value::Null,
        Some(t) => serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)),
    }
}

/// Per table and schema version, the planned policy (a cache: planning resolves names once).
#[derive(Debug, Default)]
pub struct Policies {
    planned: HashMap<(ferry_core::TableId, u64), Option<std::sync::Arc<TablePolicy>>>,
    /// The last table asked for and its policy: consecutive changes are mostly of one table, and this answers
    /// them without building a key (two strings) per row.
    last: Option<(
        ferry_core::TableId,
        u64,
        Option<std::sync::Arc<TablePolicy>>,
    )>,
}

impl Policies {
    pub fn get(
        &mut self,
        policy: &ConflictPolicy,
        table: &TableSchema,
    ) -> Result<Option<std::sync::Arc<TablePolicy>>, Error> {
        if let Some((id, version, planned)) = &self.last {
            if *version == table.version && *id == table.id {
                return Ok(planned.clone());
            }
        }
        let key = (table.id.clone(), table.version);
        let planned = match self.planned.get(&key) {
            Some(p) => p.clone(),
            None => {
                let planned = TablePolicy::plan(policy, table)?.map(std::sync::Arc::new);
                self.planned.insert(key, planned.clone());
                planned
            }
        };
        self.last = Some((table.id.clone(), table.version, planned.clone()));
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: i64, node: &str) -> Version {
        Version {
            ts,
            node: node.to_owned(),
        }
    }

    #[test]
    fn both_sides_pick_the_same_winner() {
        // Node a's sink sees b's change against a's row, node b's sink the reverse: exactly one wins each time.
        for (x, y) in [
            (v(10, "a"), v(11, "b")),
            (v(11, "a"), v(10, "b")),
            (v(10, "a"), v(10, "b")),
        ] {
            for r in [Resolver::LastWriteWins, Resolver::FirstWriteWins] {
                let at_a = remote_wins(r, &x, &y);
                let at_b = remote_wins(r, &y, &x);
                assert_ne!(at_a, at_b, "{r:?} {x:?} {y:?}");
            }
        }
        assert!(remote_wins(Resolver::ApplyRemote, &v(9, "a"), &v(1, "b")));
        assert!(!remote_wins(Resolver::KeepLocal, &v(1, "a"), &v(9, "b")));
    }

    #[test]
    fn a_missing_row_is_decided_on_its_tombstone() {
        let remote = v(20, "b");
        let decide = |resolver, tomb: Option<&Version>, update| {
            decide_change(resolver, None, tomb, &remote, None, update, true)
        };
        let conflict = |kind, remote_wins| Decision::Conflict { kind, remote_wins };
        // No tombstone: an insert applies, an update that met no row comes back under the resolvers that let a
        // change bring a row back.
        assert_eq!(
            decide(Resolver::LastWriteWins, None, false),
            Decision::Apply
        );
        assert_eq!(
            decide(Resolver::FirstWriteWins, None, true),
            conflict(ConflictKind::UpdateMissing, true)
        );
        assert_eq!(
            decide(Resolver::KeepLocal, None, true),
            conflict(ConflictKind::UpdateMissing, false)
        );
        // A later delete keeps an update out under last-write-wins; an earlier one lets it back.
        assert_eq!(
            decide(Resolver::LastWriteWins, Some(&v(30, "a")), true),
            conflict(ConflictKind::UpdateDeleted, false)
        );
        assert_eq!(
            decide(Resolver::LastWriteWins, Some(&v(10, "a")), false),
            conflict(ConflictKind::InsertDeleted, true)
        );
        assert_eq!(
            decide(Resolver::FirstWriteWins, Some(&v(10, "a")), true),
            conflict(ConflictKind::UpdateDeleted, false)
        );
        // The change's own node deleted the key before: its insert follows, without a conflict.
        assert_eq!(
            decide(Resolver::LastWriteWins, Some(&v(30, "b")), false),
            Decision::Apply
        );
        // An incomplete change cannot bring a row back.
        assert_eq!(
            decide_change(
                Resolver::ApplyRemote,
                None,
                None,
                &remote,
                None,
                true,
                false
            ),
            conflict(ConflictKind::UpdateMissing, false)
        );
    }

    #[test]
    fn vectors_tell_causal_from_concurrent() {
        let cmp = |a, b| vector_cmp(a, b).unwrap();
        assert_eq!(cmp(r#"{"a":1}"#, r#"{"a":1}"#), 0);
        assert_eq!(cmp(r#"{"a":2,"b":1}"#, r#"{"a":1}"#), 1);
        assert_eq!(cmp(r#"{"a":1}"#, r#"{"a":1,"b":1}"#), -1);
        assert_eq!(cmp(r#"{"a":2}"#, r#"{"a":1,"b":1}"#), 2);
        assert_eq!(cmp("{}", r#"{"a":0}"#), 0);
        assert_eq!(vector_cmp("[1]", "{}"), None);
        assert_eq!(
            vector_max(r#"{"a":2,"c":1}"#, r#"{"a":1,"b":4}"#).as_deref(),
            Some(r#"{"a":2,"b":4,"c":1}"#)
        );
    }

    #[test]
    fn union_keeps_each_element_once_local_first() {
        for (local, remote, want) in [
            (Some("[1, 2]"), Some("[2, 3]"), "[1,2,3]"),
            (
                Some("[\"b\", \"a\", \"b\"]"),
                Some("[\"c\", \"a\"]"),
                "[\"b\",\"a\",\"c\"]",
            ),
            (None, Some("[1]"), "[1]"),
            (Some("[1]"), None, "[1]"),
            (Some("null"), Some("[{\"x\":1}]"), "[{\"x\":1}]"),
            (Some("7"), Some("[7, 8]"), "[7,8]"),
            (Some("{\"k\":1}"), Some("[{\"k\":1}]"), "[{\"k\":1}]"),
            (Some("not json"), Some("[]"), "[\"not json\"]"),
            (None, None, "[]"),
        ] {
            assert_eq!(union_json(local, remote), want, "{local:?} ∪ {remote:?}");
        }
        // Both sides of a pair, each seeing the other's write as the remote one, end with the same array.
        let (va, vb) = (v(10, "a"), v(11, "b"));
        let text = |t: &str| Value::Text(t.to_owned());
        let at_a = union_by_version(
            Some((r#"{"tags": "[1, 2]"}"#, &va)),
            "tags",
            &text("[3, 1]"),
            &vb,
        );
        let at_b = union_by_version(
            Some((r#"{"tags": "[3, 1]"}"#, &vb)),
            "tags",
            &text("[1, 2]"),
            &va,
        );
        assert_eq!(at_a, "[1,2,3]");
        assert_eq!(at_b, at_a);
        // Both sides of a pair end with the same set.
        let (a, b) = (
            union_json(Some("[1, 2]"), Some("[3]")),
            union_json(Some("[3]"), Some("[1, 2]")),
        );
        let sorted = |t: &str| {
            let mut v: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(t)
                .unwrap()
                .iter()
                .map(|e| e.to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&a), sorted(&b));
    }
}
