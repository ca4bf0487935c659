//! Versions in the rows themselves, for the sinks that decide conflicts in Ferry (MySQL / MariaDB, SQLite):
//! [`Augmenter::augment`] gives a table under a policy the version columns in its schema (when its source has
//! none) and fills them in each row, so creating, altering and writing the target table need nothing new; then
//! [`Augmenter::managed`] names each change's policy and version, and [`decide_managed`] weighs it against the
//! target row the sink read.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::{
    Change, Column, ColumnType, Event, Row, RowOp, SchemaRef, TableId, TableSchema, TxContext,
    Value, VERSION_NODE, VERSION_TS, VERSION_VECTOR,
};

use crate::rows::{classify, is_complete, RowAction};

use super::{
    decide_change, decide_delete, remote_wins, row_json, vector_cmp, vector_max, ConflictKind,
    ConflictRecord, Decision, Policies, TablePolicy, Version,
};

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
    /// The source schema planned last and its plan: consecutive changes are mostly of one table, and this
    /// answers them without building a key (two strings) per row.
    last: Option<(SchemaRef, Versioned)>,
    /// The open source transaction.
    tx: Option<Arc<TxContext>>,
    /// Its commit position, as the conflict log writes it (formatted once per transaction).
    position: Arc<str>,
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
    pub position: Arc<str>,
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
                    self.position = tx.commit_at.to_string().into();
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
                            // A source row's own version columns are copied as they are: one never stamped
                            // (written before the triggers) stays unstamped here too, so both sides hold the
                            // same row; its version is 0 all the same ([`TablePolicy::version_of`]).
                            if table_policy.ts_column.is_none() {
                                r[ts] = Value::Int(v.ts);
                            }
                            if table_policy.node_column.is_none() {
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
        if let Some((last, planned)) = &self.last {
            if Arc::ptr_eq(last, schema) {
                return Ok(planned.clone());
            }
        }
        let key = (schema.id.clone(), schema.version);
        let planned = match self.schemas.get(&key) {
            Some(planned) => planned.clone(),
            None => {
                let planned = match policies.get(policy, schema)? {
                    Some(p) if schema.has_primary_key() => {
                        Some((Arc::new(versioned(schema, p.vectors)), p))
                    }
                    _ => None,
                };
                self.schemas.insert(key, planned.clone());
                planned
            }
        };
        self.last = Some((schema.clone(), planned.clone()));
        Ok(planned)
    }

    /// The policy and version of a change of `table` (a versioned schema), `None` when it is under no policy.
    /// A delete's version is `node`'s.
    pub fn managed(&self, table: &SchemaRef, op: &RowOp, node: &str) -> Option<Managed> {
        // The common case, a table under no policy: its changes carry the source schema planned last.
        if let Some((source, None)) = &self.last {
            if Arc::ptr_eq(source, table) {
                return None;
            }
        }
        let last = self
            .last
            .as_ref()
            .and_then(|(_, planned)| planned.as_ref())
            .filter(|(versioned, _)| Arc::ptr_eq(versioned, table));
        let (versioned, policy) = match last {
            Some(planned) => planned,
            None => self
                .schemas
                .get(&(table.id.clone(), table.version))?
                .as_ref()?,
        };
        if !Arc::ptr_eq(versioned, table) {
            return None;
        }
        let (ts, nd) = (
            table.column_index(VERSION_TS)?,
            table.column_index(VERSION_NODE)?,
        );
        let position = self.position.clone();
        let version_in = |row: &Row| Version {
            ts: match row[ts] {
                Value::Int(n) => n,
                _ => 0,
            },
            node: match &row[nd] {
                Value::Text(s) => s.clone(),
                _ => node.to_owned(),
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

/// How change `op` (its [`Managed`] policy and version; `complete`: it carries every column) fares against the
/// target: `local`, the row's version and node (`None`: no row); `local_vector`, the row's version vector;
/// `tomb`, the key's tombstone when there is no row. `None`: the change is stale (its vector is already in the
/// row's) and is dropped. Else the decision, and for a concurrent change under version vectors, the joined
/// vector the row must keep whichever side wins. The PostgreSQL statements compile the same rule into SQL.
pub fn decide_managed(
    m: &Managed,
    op: &RowOp,
    complete: bool,
    local: Option<(Option<i64>, &str)>,
    local_vector: Option<&str>,
    tomb: Option<&Version>,
) -> Option<(Decision, Option<String>)> {
    let policy = &m.policy;
    let update = matches!(op, RowOp::Update { .. });
    if let RowOp::Delete { .. } = op {
        return Some((
            decide_delete(policy.missing_resolver(), local, &m.version, m.seen),
            None,
        ));
    }
    // With version vectors: a change whose writer had seen the row applies, a stale one is already in it, and
    // only concurrent ones go to the resolver.
    let compared = m
        .vector
        .as_deref()
        .zip(local_vector)
        .and_then(|(remote, local)| Some((vector_cmp(remote, local)?, remote, local)));
    if let Some((order, remote, local_vector)) = compared {
        return match order {
            0 | 1 => Some((Decision::Apply, None)),
            -1 => None,
            _ => {
                let (ts, node) = local.unwrap_or((None, ""));
                let decision = Decision::Conflict {
                    kind: if update {
                        ConflictKind::UpdateOriginDiffers
                    } else {
                        ConflictKind::InsertExists
                    },
                    remote_wins: remote_wins(
                        policy.row_resolver(),
                        &Version {
                            ts: ts.unwrap_or(0),
                            node: node.to_owned(),
                        },
                        &m.version,
                    ),
                };
                Some((decision, vector_max(remote, local_vector)))
            }
        };
    }
    let resolver = if local.is_some() {
        policy.row_resolver()
    } else {
        policy.missing_resolver()
    };
    Some((
        decide_change(resolver, local, tomb, &m.version, m.seen, update, complete),
        None,
    ))
}

/// A key change under a policy is the delete of the old key and the insert of the new one, each weighed like any
/// other change (as on PostgreSQL targets): these two, or `None` when `op` changes no key. Such a change must
/// carry every column to be weighed as a new row.
pub fn key_change_parts(
    table: &TableSchema,
    op: &RowOp,
) -> Result<Option<[RowOp; 2]>, ferry_core::Error> {
    let RowAction::Move { old, new } = classify(table, op) else {
        return Ok(None);
    };
    if !is_complete(new) {
        return Err(incomplete_key_change(table));
    }
    Ok(Some([
        RowOp::Delete {
            before: old.clone(),
        },
        RowOp::Insert { after: new.clone() },
    ]))
}

/// The error of a key change under a policy that arrived without every column.
pub fn incomplete_key_change(table: &TableSchema) -> ferry_core::Error {
    ferry_core::Error::fatal(format!(
        "table {}: a key change arrived without every column (unchanged TOAST values), so it cannot be weighed as \
         a new row; set REPLICA IDENTITY FULL on the source table",
        table.id
    ))
}

/// The conflict log's record of change `row` ([`Managed`] `m`) decided as `kind`: `winner` is `remote`, `local`
/// or `merged`. `local` is the target row it met (version, node, the row as logged), `tomb` the key's tombstone
/// when it met none.
pub fn conflict_record(
    table: &TableSchema,
    row: &Row,
    m: &Managed,
    (kind, winner): (ConflictKind, &'static str),
    local: Option<(Option<i64>, &str, &str)>,
    tomb: Option<&Version>,
) -> ConflictRecord {
    ConflictRecord {
        table: table.id.to_string(),
        key: crate::rows::describe_key(table, row),
        kind,
        resolver: m.policy.resolver_name(),
        winner,
        local_row: local.map(|(_, _, json)| json.to_owned()),
        remote_row: row_json(table, row),
        local_version: local
            .and_then(|(ts, node, _)| {
                ts.map(|ts| Version {
                    ts,
                    node: node.to_owned(),
                })
            })
            .or_else(|| tomb.cloned()),
        remote_version: m.version.clone(),
        position: m.position.to_string(),
    }
}

/// Who a conflict's row came from: the change (`wins`), a merge of both (a merge rule or expression kept the
/// row and took the change into account; never for a delete), or the target.
pub fn winner(wins: bool, merges: bool, delete: bool) -> &'static str {
    if wins {
        "remote"
    } else if merges && !delete {
        "merged"
    } else {
        "local"
    }
}
