//! The PostgreSQL sink: batched set-based writes, the checkpoint in the same transaction.
//!
//! Consecutive changes of one table and one kind become one statement over `unnest` of text arrays
//! (`INSERT … SELECT … FROM unnest($1::text[], …) ON CONFLICT (pk) DO UPDATE`), so a batch of thousands of rows is
//! a handful of round trips. Values travel as text and are cast to the column type in SQL.
//!
//! Inserts go through `COPY … FROM STDIN`, PostgreSQL's fastest load path (about 3× an `INSERT … ON CONFLICT`
//! over `unnest` for the same rows). Snapshot rows into a table truncated earlier in the same target transaction
//! cannot conflict (the snapshot holds each key once), so they are copied directly. Source inserts are copied
//! optimistically inside a savepoint: if a key already exists in the target (rows written there by someone
//! else), the savepoint is rolled back and the same rows are upserted instead.

mod conflict;
mod ddl;
pub mod dead_letters;
mod text;

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use ferry_core::dead_letter::StoredDeadLetter;
use ferry_core::{
    recopy_shadow, Change, DeadLetter, Error, Event, Position, RecopyStep, Row, RowOp, Savepoint,
    SchemaRef, Sink, TableId, TableSchema, TxContext,
};
use ferry_pgconn::PgUrl;
use tokio_postgres::{Client, Statement};
use tracing::{debug, error, info};

use crate::checkpoint;
use crate::conflict::{ConflictTally, MultiMasterOptions, Policies, TablePolicy};
use crate::evolve::{self, Applied};
use crate::recopy::{self, Finishing, Shadows};
use crate::rows::{classify, is_complete, sent_columns, RowAction};
use text::pg_text;

pub use conflict::list as list_conflicts;
pub use ddl::qualified_name;

fn write_error(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| {
        let Some(code) = e
            .code()
            .map(|c| c.code().to_owned())
            .filter(|_| !e.is_closed())
        else {
            // No server answer: the connection is gone.
            return Error::transient(what.to_owned(), e);
        };
        match code.as_str() {
            // Connection-level failures, lock and serialization conflicts, a restarting server: worth a retry.
            c if c.starts_with("08") || c.starts_with("57") || c.starts_with("53") => {
                Error::transient(what.to_owned(), e)
            }
            "40001" | "40P01" | "55P03" => Error::transient(what.to_owned(), e),
            // A target table dropped outside Ferry: the restart finds it missing, creates it again and quarantines
            // it (evolve::dropped_outside).
            "42P01" => Error::transient(what.to_owned(), e),
            // The row's own fault: a constraint (23…), a value the column cannot hold (22…), a row too big (54000).
            c if c.starts_with("23") || c.starts_with("22") || c == "54000" => {
                Error::row(what.to_owned(), code, e)
            }
            "42501" => Error::fatal_from(
                format!(
                    "{what}: the target role lacks a privilege; GRANT it what the error names (Ferry needs to \
                     create and write its tables, and its own ferry_* tables)"
                ),
                e,
            ),
            _ => Error::fatal_from(what.to_owned(), e),
        }
    }
}

/// Connects an ordinary client to a target database.
pub async fn connect(url: &str) -> Result<Client, Error> {
    PgUrl::parse(url)?.connect("the target database").await
}

/// The kind of a set-based statement; a group holds consecutive rows of one table and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum GroupKind {
    Upsert,
    UpdateSent,
    Delete,
    Insert,
    /// Rows that cannot conflict: snapshot rows into a table truncated in this transaction, tables without keys.
    Copy,
    /// Source inserts: COPY inside a savepoint, upsert if a key exists already.
    CopyOrUpsert,
}

struct Group<'a> {
    table: SchemaRef,
    kind: GroupKind,
    /// The columns the statement sets (or, for deletes, the key columns).
    columns: Vec<usize>,
    rows: Vec<&'a Row>,
}

/// A PostgreSQL target.
pub struct PostgresSink {
    name: String,
    pipeline: String,
    client: Client,
    in_transaction: bool,
    /// The checkpoint upsert, prepared once.
    checkpoint_statement: Option<Statement>,
    /// A Kafka source's offsets as this sink last wrote them.
    kafka_rows: checkpoint::KafkaRows,
    statements: HashMap<(TableId, u64, GroupKind, Vec<usize>), Statement>,
    known_tables: HashMap<TableId, SchemaRef>,
    /// What this sink last applied to each target table (`ferry_schemas`).
    applied: HashMap<TableId, Applied>,
    /// Tables truncated in the open target transaction (where snapshot rows may be copied in).
    truncated: HashSet<TableId>,
    /// Tables being re-copied into shadow tables.
    shadows: Shadows,
    multi: Box<MultiMaster>,
    /// The conflicts of the open transaction when the row isolation's savepoint was set.
    savepoint_tally: usize,
    /// `ferry_dead_letters` was created by this sink (letters are written outside row savepoints, so a savepoint
    /// never undoes it; a failed transaction ends the sink).
    dead_letters_ready: bool,
}

/// The sink's conflict-handling state.
#[derive(Default)]
struct MultiMaster {
    options: MultiMasterOptions,
    /// The node id changes without version columns are stamped with: `node`, or the pipeline's name.
    node: String,
    /// Whether transactions are applied under a replication origin.
    origin: bool,
    policies: Policies,
    /// Tables (and schema versions) given version columns and triggers.
    prepared: HashSet<(TableId, u64)>,
    /// The schema `prepared` last answered for.
    last_prepared: Option<SchemaRef>,
    /// The columns a complete row of the last table under a policy writes.
    all_columns: Option<(SchemaRef, Arc<[usize]>)>,
    /// The prepared common-case statements of conflict-aware groups, by their text.
    prepared_changes: HashMap<String, Statement>,
    /// The target's column types of each prepared table (see `conflict::target_types`).
    types: HashMap<(TableId, u64), Arc<Vec<String>>>,
    tally: ConflictTally,
    /// The open source transaction.
    tx: Option<Arc<TxContext>>,
    /// Its commit position, as the conflict log writes it (formatted once per transaction).
    position: Arc<str>,
    /// The last source commit of the open target transaction (PostgreSQL sources): LSN and µs.
    last_commit: Option<(ferry_core::Lsn, Option<i64>)>,
}

/// A group of conflict-aware changes: consecutive rows of one table and kind, each key at most once.
struct Managed<'a> {
    table: SchemaRef,
    policy: Arc<TablePolicy>,
    /// `None`: deletes.
    columns: Option<Arc<[usize]>>,
    complete: bool,
    changes: Vec<conflict::Change<'a>>,
    deletes: Vec<conflict::Delete<'a>>,
    /// Each key's place in `changes` / `deletes`.
    keys: HashMap<Vec<Option<String>>, usize>,
}

impl PostgresSink {
    /// Connects and makes sure the checkpoint table exists.
    pub async fn connect(
        name: &str,
        pipeline: &str,
        url: &str,
        options: MultiMasterOptions,
    ) -> Result<Self, Error> {
        let client = connect(url).await?;
        if !options.shared {
            if let Some(holder) =
                ferry_pgconn::lease::try_lease(&client, &format!("sink {pipeline}/{name}")).await?
            {
                return Err(crate::lease_busy(pipeline, name, &holder));
            }
        }
        client
            .batch_execute(&ferry_pgconn::setup_locked(&format!(
                "{}; {}",
                checkpoint::CREATE_CHECKPOINT_TABLE,
                evolve::CREATE_SCHEMAS_TABLE
            )))
            .await
            .map_err(write_error("creating ferry_checkpoints and ferry_schemas"))?;
        let records = client
            .query(
                "SELECT source_table, applied FROM ferry_schemas WHERE pipeline = $1 AND sink = $2",
                &[&pipeline, &name],
            )
            .await
            .map_err(write_error("reading ferry_schemas"))?;
        let applied =
            evolve::parse_records(records.iter().map(|r| (r.get(0), r.get(1))).collect())?;
        let multi = Box::new(MultiMaster::open(&client, pipeline, options).await?);
        Ok(PostgresSink {
            multi,
            savepoint_tally: 0,
            dead_letters_ready: false,
            name: name.to_owned(),
            pipeline: pipeline.to_owned(),
            client,
            in_transaction: false,
            checkpoint_statement: None,
            kafka_rows: checkpoint::KafkaRows::default(),
            statements: HashMap::new(),
            known_tables: HashMap::new(),
            shadows: Shadows::from_records(&applied),
            applied,
            truncated: HashSet::new(),
        })
    }

    /// Opens the target transaction if none is open. BEGIN is pipelined: sent now, ahead of the statements that
    /// follow on this connection, without waiting for its answer (a round trip per batch). It cannot fail on its
    /// own; a broken connection shows in the next statement.
    /// Commits with a Kafka source's offsets: each changed partition's row moves only under this process's claim
    /// ([`checkpoint::KafkaRows`]); one that moved away rolls the whole transaction back.
    async fn commit_offsets(&mut self, offsets: &ferry_core::KafkaOffsets) -> Result<(), Error> {
        let now = checkpoint::now_text();
        let writes = self.kafka_rows.changed(&self.name, offsets);
        type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
        let params: Vec<[Param<'_>; 5]> = writes
            .iter()
            .map(|w| [&w.text as Param<'_>, &now, &self.pipeline, &w.key, &w.claim])
            .collect();
        // Pipelined: one round trip for every partition.
        let moved = futures_util::future::try_join_all(
            params
                .iter()
                .map(|p| self.client.execute(checkpoint::SET_PARTITION_CHECKPOINT, p)),
        )
        .await;
        let fenced = match &moved {
            Ok(counts) => writes
                .iter()
                .zip(counts)
                .find(|(_, n)| **n != 1)
                .map(|(w, _)| w),
            Err(_) => None,
        };
        if moved.is_err() || fenced.is_some() {
            self.in_transaction = false;
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        moved.map_err(write_error("writing the Kafka offsets"))?;
        if let Some(w) = fenced {
            return Err(checkpoint::fenced(&self.name, &w.partition));
        }
        let commit_sql = format!("{}COMMIT", self.multi.origin_commit_sql());
        self.in_transaction = false;
        self.client
            .batch_execute(&commit_sql)
            .await
            .map_err(write_error("committing"))?;
        self.kafka_rows.committed(offsets);
        self.multi.tally.committed();
        self.multi.last_commit = None;
        debug!(sink = %self.name, %offsets, "committed");
        Ok(())
    }

    async fn begin(&mut self) -> Result<(), Error> {
        if !self.in_transaction {
            // The first poll of the request sends it; the connection task reads and drops the answer. Read
            // committed whatever the target's default: each statement (the conflict statements above all) decides
            // on what is committed when it starts, and re-checks the rows it waited for.
            let _ = futures_util::FutureExt::now_or_never(
                self.client
                    .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            );
            self.in_transaction = true;
        }
        Ok(())
    }

    async fn flush(&mut self, group: Option<Group<'_>>) -> Result<(), Error> {
        let Some(mut group) = group else {
            return Ok(());
        };
        match group.kind {
            GroupKind::Copy => return Ok(self.copy_in(&group).await?),
            // A few rows: one prepared upsert is one round trip, where a savepoint, COPY and release are four (what
            // a load spread over many tables, a small group each, pays per group). The outcome is the same: COPY
            // falls back to this upsert when a key exists.
            GroupKind::CopyOrUpsert if group.rows.len() < SMALL_GROUP_ROWS => {
                group.kind = GroupKind::Upsert;
            }
            GroupKind::CopyOrUpsert => {
                self.savepoint_sql("SAVEPOINT ferry_copy").await?;
                match self.copy_in(&group).await {
                    Ok(()) => return self.savepoint_sql("RELEASE SAVEPOINT ferry_copy").await,
                    Err(e) if e.is_unique_violation() => {
                        info!(table = %group.table.id, rows = group.rows.len(), "an inserted key already exists in the target; upserting these rows instead");
                        self.savepoint_sql("ROLLBACK TO SAVEPOINT ferry_copy")
                            .await?;
                        self.savepoint_sql("RELEASE SAVEPOINT ferry_copy").await?;
                        group.kind = GroupKind::Upsert;
                    }
                    Err(e) => return Err(e.into_error()),
                }
            }
            _ => {}
        }
        if matches!(group.kind, GroupKind::Upsert | GroupKind::UpdateSent) {
            dedupe_by_key(&mut group);
        }
        let key = (
            group.table.id.clone(),
            group.table.version,
            group.kind,
            group.columns.clone(),
        );
        let statement = match self.statements.get(&key) {
            Some(s) => s.clone(),
            None => {
                let sql = ddl::group_statement(&group.table, group.kind_sql(), &group.columns);
                let s = self
                    .client
                    .prepare(&sql)
                    .await
                    .map_err(write_error("preparing a write"))?;
                self.statements.insert(key, s.clone());
                s
            }
        };
        let params: Vec<Vec<Option<String>>> = group
            .columns
            .iter()
            .map(|&c| group.rows.iter().map(|r| pg_text(&r[c])).collect())
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        self.client
            .execute(&statement, &refs)
            .await
            .map_err(write_error(&format!("writing to {}", group.table.id)))?;
        Ok(())
    }

    async fn savepoint_sql(&self, sql: &str) -> Result<(), Error> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(write_error("managing the copy savepoint"))
    }

    /// Loads snapshot rows the source server wrote in COPY text format ([`Change::CopyRows`]) as they are. Only
    /// into a table the snapshot emptied in a copy still under way, whose every column Ferry writes: anything
    /// else stops loudly (the source sends raw lines only when that holds).
    async fn copy_raw(&mut self, table: &SchemaRef, data: bytes::Bytes) -> Result<(), Error> {
        use futures_util::SinkExt;
        let writable = self.truncated.contains(&table.id)
            && !evolve::is_quarantined(&self.applied, &table.id)
            && written(table, 0..table.columns.len()).len() == table.columns.len();
        if !writable {
            return Err(Error::fatal(format!(
                "table {}: snapshot rows arrived as raw COPY lines for a table the snapshot is not copying into \
                 afresh (a bug: please report it)",
                table.id
            )));
        }
        let sql = copy_statement(table, 0..table.columns.len());
        let what = format!("copying into {}", table.id);
        let sink = self
            .client
            .copy_in::<_, bytes::Bytes>(&sql)
            .await
            .map_err(write_error(&what))?;
        futures_util::pin_mut!(sink);
        sink.send(data).await.map_err(write_error(&what))?;
        sink.finish().await.map_err(write_error(&what))?;
        Ok(())
    }

    /// Loads the group's rows with `COPY … FROM STDIN` (text format).
    async fn copy_in(&mut self, group: &Group<'_>) -> Result<(), CopyError> {
        use futures_util::SinkExt;
        let sql = copy_statement(&group.table, group.columns.iter().copied());
        let what = format!("copying into {}", group.table.id);
        let sink = self
            .client
            .copy_in::<_, bytes::Bytes>(&sql)
            .await
            .map_err(|e| CopyError::new(&what, e))?;
        futures_util::pin_mut!(sink);
        let mut buf = String::with_capacity(1 << 20);
        for row in &group.rows {
            text::write_copy_line(&mut buf, row, &group.columns);
            if buf.len() >= 1 << 20 {
                let chunk = bytes::Bytes::from(std::mem::take(&mut buf));
                sink.send(chunk)
                    .await
                    .map_err(|e| CopyError::new(&what, e))?;
            }
        }
        if !buf.is_empty() {
            sink.send(bytes::Bytes::from(buf))
                .await
                .map_err(|e| CopyError::new(&what, e))?;
        }
        sink.finish().await.map_err(|e| CopyError::new(&what, e))?;
        Ok(())
    }

    async fn replace_without_key(
        &mut self,
        table: &SchemaRef,
        old: &Row,
        new: Option<&Row>,
    ) -> Result<(), Error> {
        let matched = written(table, sent_columns(old));
        let sql = ddl::delete_one_matching(table, &matched);
        let params: Vec<Option<String>> = matched.iter().map(|&c| pg_text(&old[c])).collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        let deleted = self
            .client
            .execute(sql.as_str(), &refs)
            .await
            .map_err(write_error(&format!("deleting from {}", table.id)))?;
        if deleted == 0 {
            return Err(crate::rows::missing_old_row(table));
        }
        if let Some(new) = new {
            let columns = written(table, 0..table.columns.len());
            let group = Group {
                table: table.clone(),
                kind: GroupKind::Insert,
                columns,
                rows: vec![new],
            };
            self.flush(Some(group)).await?;
        }
        Ok(())
    }

    /// Applies a [`RowAction::Move`]: one statement per row, since moves within one set-based statement could
    /// depend on each other (1 → 100, 2 → 1, 100 → 2).
    async fn move_row(&mut self, table: &SchemaRef, old: &Row, new: &Row) -> Result<(), Error> {
        let sets = written(table, sent_columns(new));
        let keys = table.match_key();
        let sql = ddl::move_statement(table, &sets, keys);
        let params: Vec<Option<String>> = sets
            .iter()
            .map(|&c| pg_text(&new[c]))
            .chain(keys.iter().map(|&k| pg_text(&old[k])))
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        let moved = self
            .client
            .execute(sql.as_str(), &refs)
            .await
            .map_err(write_error(&format!(
                "updating {} where {}",
                table.id,
                crate::rows::describe_key(table, old)
            )))?;
        if moved > 0 {
            return Ok(());
        }
        if !is_complete(new) {
            return crate::rows::missing_row(
                table,
                old,
                recopy::fills_in_place(&self.applied, &table.id),
            );
        }
        let group = Group {
            table: table.clone(),
            kind: GroupKind::Upsert,
            columns: written(table, 0..table.columns.len()),
            rows: vec![new],
        };
        self.flush(Some(group)).await
    }

    /// Ends a re-copy: the table's rows become its shadow's, and the shadow goes.
    async fn finish_recopy(&mut self, schema: &SchemaRef) -> Result<(), Error> {
        let shadow = recopy_shadow(&schema.id);
        let columns: Vec<String> = written(schema, 0..schema.columns.len())
            .into_iter()
            .map(|c| ddl::quote_ident(&schema.columns[c].name))
            .collect();
        let live = qualified_name(&schema.id);
        for sql in recopy::finish_statements(&live, &qualified_name(&shadow), &columns) {
            self.client
                .batch_execute(&sql)
                .await
                .map_err(write_error(&format!(
                    "replacing the rows of {live} with its re-copy"
                )))?;
        }
        self.forget_shadow(&shadow).await
    }

    /// Drops a shadow table and its record.
    async fn forget_shadow(&mut self, shadow: &TableId) -> Result<(), Error> {
        self.client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", qualified_name(shadow)))
            .await
            .map_err(write_error("dropping a re-copy's shadow table"))?;
        ddl::delete_record(&self.client, (&self.pipeline, &self.name), shadow).await?;
        self.applied.remove(shadow);
        self.known_tables.remove(shadow);
        self.statements.retain(|k, _| k.0 != *shadow);
        Ok(())
    }

    /// Gives a table under a conflict policy its version columns and triggers, and reads its column types, once
    /// per schema version.
    async fn prepare_managed(&mut self, table: &SchemaRef, vectors: bool) -> Result<(), Error> {
        // Consecutive changes of one table: no key to build per row.
        if self
            .multi
            .last_prepared
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, table))
        {
            return Ok(());
        }
        if self
            .multi
            .prepared
            .insert((table.id.clone(), table.version))
        {
            conflict::ensure_table(&self.client, table, vectors).await?;
            let types = conflict::target_types(&self.client, table).await?;
            self.multi
                .types
                .insert((table.id.clone(), table.version), Arc::new(types));
        }
        self.multi.last_prepared = Some(table.clone());
        Ok(())
    }

    /// The columns a complete row of `table` writes under a policy (the version columns are the statement's own).
    fn all_managed_columns(&mut self, table: &SchemaRef) -> Arc<[usize]> {
        match &self.multi.all_columns {
            Some((t, columns)) if Arc::ptr_eq(t, table) => columns.clone(),
            _ => {
                let columns: Arc<[usize]> = managed_columns(table, 0..table.columns.len()).into();
                self.multi.all_columns = Some((table.clone(), columns.clone()));
                columns
            }
        }
    }

    /// Adds a change of a table under a conflict policy to the conflict-aware group, flushing the group first
    /// when the change cannot join it (another table or kind, or a key already in it).
    async fn managed_row<'a>(
        &mut self,
        managed: &mut Option<Managed<'a>>,
        table: &SchemaRef,
        policy: Arc<TablePolicy>,
        op: &'a RowOp,
    ) -> Result<(), Error> {
        self.prepare_managed(table, policy.vectors).await?;
        let tx = self.multi.tx.clone();
        let position = self.multi.position.clone();
        let node = self.multi.node.clone();
        let (columns, complete, row) = match classify(table, op) {
            RowAction::Upsert(r) => (Some(self.all_managed_columns(table)), true, r),
            RowAction::UpdateSent(r) => (
                Some(managed_columns(table, sent_columns(r)).into()),
                false,
                r,
            ),
            RowAction::Delete(r) => (None, false, r),
            // A key change is the delete of the old key and the insert of the new one, each weighed like any
            // other: an edit of the old row made concurrently on the target survives beside the moved row.
            RowAction::Move { old, new } => {
                self.flush_managed(managed.take()).await?;
                if !is_complete(new) {
                    return Err(crate::conflict::augment::incomplete_key_change(table));
                }
                let (version, seen) = policy.delete_version(old, tx.as_deref(), &node);
                let delete = Managed {
                    table: table.clone(),
                    policy: policy.clone(),
                    columns: None,
                    complete: false,
                    changes: Vec::new(),
                    deletes: vec![conflict::Delete {
                        row: old,
                        version,
                        seen,
                        position: position.clone(),
                    }],
                    keys: HashMap::new(),
                };
                self.flush_managed(Some(delete)).await?;
                let insert = Managed {
                    table: table.clone(),
                    policy: policy.clone(),
                    columns: Some(self.all_managed_columns(table)),
                    complete: true,
                    changes: vec![conflict::Change {
                        kind: conflict::ChangeKind::Insert,
                        row: new,
                        old: None,
                        version: policy.version_of(new, tx.as_deref(), &node),
                        vector: policy.vector_of(new),
                        seen: None,
                        position,
                    }],
                    deletes: Vec::new(),
                    keys: HashMap::new(),
                };
                return self.flush_managed(Some(insert)).await;
            }
            RowAction::InsertNoKey(_) | RowAction::ReplaceNoKey { .. } => {
                return Err(Error::fatal(format!(
                    "table {} has no primary key and cannot be under a conflict policy",
                    table.id
                )))
            }
        };
        let key: Vec<Option<String>> = table
            .primary_key
            .iter()
            .map(|&k| pg_text(&row[k]))
            .collect();
        // A later change of a key already in the group replaces it (the same source wrote both, in this order),
        // unless merge rules need every change; a delete of such a key ends the group.
        let replaces = columns.is_some() && policy.merges.is_empty();
        let joins = managed.as_ref().is_some_and(|m| {
            Arc::ptr_eq(&m.table, table)
                && m.columns == columns
                && (replaces || !m.keys.contains_key(&key))
        });
        if !joins {
            self.flush_managed(managed.take()).await?;
            *managed = Some(Managed {
                table: table.clone(),
                policy: policy.clone(),
                columns: columns.clone(),
                complete,
                changes: Vec::new(),
                deletes: Vec::new(),
                keys: HashMap::new(),
            });
        }
        let Some(m) = managed.as_mut() else {
            return Ok(());
        };
        let replaced = m.keys.get(&key).copied();
        m.keys.insert(
            key,
            replaced.unwrap_or(if columns.is_some() {
                m.changes.len()
            } else {
                m.deletes.len()
            }),
        );
        match op {
            RowOp::Delete { before } => {
                let (version, seen) = policy.delete_version(before, tx.as_deref(), &node);
                m.deletes.push(conflict::Delete {
                    row: before,
                    version,
                    seen,
                    position,
                });
            }
            RowOp::Insert { after } | RowOp::Read { after } | RowOp::Update { after, .. } => {
                let kind = match op {
                    RowOp::Insert { .. } => conflict::ChangeKind::Insert,
                    RowOp::Read { .. } => conflict::ChangeKind::Read,
                    _ => conflict::ChangeKind::Update,
                };
                let old = match op {
                    RowOp::Update { before, .. } => before.as_ref(),
                    _ => None,
                };
                let change = conflict::Change {
                    kind,
                    row: after,
                    old,
                    version: policy.version_of(after, tx.as_deref(), &node),
                    vector: policy.vector_of(after),
                    seen: old.and_then(|o| policy.seen_version(o)),
                    position,
                };
                match replaced {
                    Some(i) => {
                        // The row the source inserted and then changed is still an insert for the target, and
                        // the folded changes saw what the first one saw.
                        let (first, seen) = (m.changes[i].kind, m.changes[i].seen);
                        m.changes[i] = conflict::Change {
                            kind: if first == conflict::ChangeKind::Update {
                                change.kind
                            } else {
                                first
                            },
                            seen,
                            ..change
                        };
                    }
                    None => m.changes.push(change),
                }
            }
        }
        Ok(())
    }

    /// Applies a conflict-aware group and logs the conflicts it met.
    async fn flush_managed(&mut self, managed: Option<Managed<'_>>) -> Result<(), Error> {
        let Some(m) = managed else {
            return Ok(());
        };
        let types = self
            .multi
            .types
            .get(&(m.table.id.clone(), m.table.version))
            .cloned()
            .unwrap_or_default();
        let records = match &m.columns {
            Some(columns) => {
                conflict::apply_changes(
                    &self.client,
                    &mut self.multi.prepared_changes,
                    conflict::Writes {
                        table: &m.table,
                        types: &types,
                        policy: &m.policy,
                        columns,
                        complete: m.complete,
                    },
                    &m.changes,
                )
                .await?
            }
            None => {
                conflict::apply_deletes(&self.client, &m.table, &types, &m.policy, &m.deletes)
                    .await?
            }
        };
        if records.is_empty() {
            return Ok(());
        }
        if m.policy.resolver == ferry_config::Resolver::Error {
            if let Some(r) = records.into_iter().next() {
                return Err(r.into_error());
            }
            return Ok(());
        }
        for r in &records {
            self.multi.tally.detected(r);
            debug!(sink = %self.name, table = %r.table, key = %r.key, kind = r.kind.name(), winner = r.winner, "conflict");
        }
        debug!(sink = %self.name, table = %m.table.id, conflicts = records.len(), resolver = m.policy.resolver.name(), "conflicts resolved");
        conflict::log(
            &self.client,
            &conflict::Context {
                pipeline: &self.pipeline,
                sink: &self.name,
            },
            &records,
        )
        .await
    }

    async fn apply_events(&mut self, events: &[Event]) -> Result<(), Error> {
        let mut group: Option<Group> = None;
        let mut managed: Option<Managed> = None;
        for event in events {
            match event {
                Event::Begin(tx) => {
                    self.multi.tx = Some(tx.clone());
                    self.multi.position = tx.commit_at.to_string().into();
                    continue;
                }
                Event::Commit {
                    position,
                    commit_time,
                } => {
                    if let Some(lsn) = position.as_lsn() {
                        self.multi.last_commit = Some((lsn, commit_time.unix_micros()));
                    }
                    continue;
                }
                Event::Heartbeat { .. } => continue,
                Event::Change(Change::Row { table, op })
                    if table.has_primary_key()
                        && !evolve::is_quarantined(&self.applied, &table.id)
                        && !(matches!(op, RowOp::Read { .. })
                            && self.truncated.contains(&table.id)) =>
                {
                    if let Some(policy) = self
                        .multi
                        .policies
                        .get(&self.multi.options.conflicts, table)?
                    {
                        self.flush(group.take()).await?;
                        self.managed_row(&mut managed, table, policy, op).await?;
                        continue;
                    }
                }
                _ => {}
            }
            self.flush_managed(managed.take()).await?;
            match event {
                Event::Change(Change::Recopy { table, step }) => {
                    self.flush(group.take()).await?;
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
                            self.finish_recopy(schema).await?
                        }
                        (RecopyStep::Cancel, _) | (_, Finishing::Discard) => {
                            self.forget_shadow(&recopy_shadow(table)).await?
                        }
                        _ => {}
                    }
                    if let Some(record) = record {
                        ddl::save_record(
                            &self.client,
                            (&self.pipeline, &self.name),
                            table,
                            &record,
                        )
                        .await?;
                    }
                }
                Event::Change(Change::Row { table, .. })
                    if evolve::is_quarantined(&self.applied, &table.id) => {}
                Event::Change(Change::Refused(_)) => {
                    return Err(ferry_core::dead_letter::refused_row_reached(&self.name))
                }
                Event::Change(Change::CopyRows { table, data, .. }) => {
                    self.flush(group.take()).await?;
                    self.copy_raw(table, data.clone()).await?;
                }
                Event::Change(Change::Copied { tables }) => {
                    self.flush(group.take()).await?;
                    for t in tables {
                        self.truncated.remove(t);
                        if let Some(record) = evolve::copied(&mut self.applied, t) {
                            ddl::save_record(
                                &self.client,
                                (&self.pipeline, &self.name),
                                t,
                                &record,
                            )
                            .await?;
                        }
                    }
                }
                Event::Change(Change::Quarantine { table, reason }) => {
                    self.flush(group.take()).await?;
                    let record = Applied::quarantined(self.applied.get(table), reason);
                    ddl::save_record(&self.client, (&self.pipeline, &self.name), table, &record)
                        .await?;
                    self.applied.insert(table.clone(), record);
                    error!(sink = %self.name, %table, reason, "table quarantined: its changes are no longer applied");
                }
                Event::Change(Change::Row { table, op }) => {
                    let action = classify(table, op);
                    let steps: Vec<(GroupKind, &Row)> = match action {
                        RowAction::Upsert(r)
                            if matches!(op, RowOp::Read { .. })
                                && self.truncated.contains(&table.id) =>
                        {
                            vec![(GroupKind::Copy, r)]
                        }
                        RowAction::Upsert(r) if matches!(op, RowOp::Insert { .. }) => {
                            vec![(GroupKind::CopyOrUpsert, r)]
                        }
                        RowAction::Upsert(r) => vec![(GroupKind::Upsert, r)],
                        RowAction::UpdateSent(r) => vec![(GroupKind::UpdateSent, r)],
                        RowAction::Delete(r) => vec![(GroupKind::Delete, r)],
                        RowAction::Move { old, new } => {
                            self.flush(group.take()).await?;
                            self.move_row(table, old, new).await?;
                            continue;
                        }
                        RowAction::InsertNoKey(r) => vec![(GroupKind::Copy, r)],
                        RowAction::ReplaceNoKey { old, new } => {
                            self.flush(group.take()).await?;
                            self.replace_without_key(table, old, new).await?;
                            continue;
                        }
                    };
                    for (kind, row) in steps {
                        let columns = match kind {
                            GroupKind::Delete => table.match_key().to_vec(),
                            GroupKind::UpdateSent => written(table, sent_columns(row)),
                            GroupKind::Upsert
                            | GroupKind::Insert
                            | GroupKind::Copy
                            | GroupKind::CopyOrUpsert => written(table, 0..table.columns.len()),
                        };
                        let same = group.as_ref().is_some_and(|g| {
                            g.kind == kind
                                && std::sync::Arc::ptr_eq(&g.table, table)
                                && g.columns == columns
                        });
                        if !same {
                            self.flush(group.take()).await?;
                            group = Some(Group {
                                table: table.clone(),
                                kind,
                                columns,
                                rows: Vec::new(),
                            });
                        }
                        if let Some(g) = group.as_mut() {
                            g.rows.push(row);
                        }
                    }
                }
                Event::Change(Change::Truncate { tables, snapshot }) => {
                    self.flush(group.take()).await?;
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
                                &self.client,
                                (&self.pipeline, &self.name),
                                t,
                                &record,
                            )
                            .await?;
                        }
                    }
                    let known: Vec<String> = tables
                        .iter()
                        .filter(|t| self.known_tables.contains_key(*t))
                        .filter(|t| !evolve::is_quarantined(&self.applied, t))
                        .map(qualified_name)
                        .collect();
                    if !known.is_empty() {
                        let sql = format!("TRUNCATE {}", known.join(", "));
                        self.client
                            .batch_execute(&sql)
                            .await
                            .map_err(write_error("truncating"))?;
                    }
                    // Only a snapshot's rows follow their own truncate alone; after any other truncate (a
                    // re-copy's shadow, emptied at its start) the stream may write the same keys first.
                    if *snapshot {
                        self.truncated.extend(
                            tables
                                .iter()
                                .filter(|t| self.known_tables.contains_key(*t))
                                .cloned(),
                        );
                    }
                }
                Event::Schema(schema) => {
                    self.flush(group.take()).await?;
                    ddl::ensure_table(
                        &self.client,
                        schema,
                        &mut self.applied,
                        &self.pipeline,
                        &self.name,
                    )
                    .await?;
                    self.known_tables.insert(schema.id.clone(), schema.clone());
                    // Local writes are stamped from now on, before any change of the table arrives.
                    let policy = self
                        .multi
                        .policies
                        .get(&self.multi.options.conflicts, schema)?;
                    if let Some(policy) = policy.filter(|_| schema.has_primary_key()) {
                        self.prepare_managed(schema, policy.vectors).await?;
                    }
                }
                Event::Begin(_)
                | Event::Commit { .. }
                | Event::Heartbeat { .. }
                | Event::Abandon
                | Event::Claim(_) => {}
            }
        }
        self.flush_managed(managed).await?;
        self.flush(group).await
    }
}

/// The columns of `columns` that statements write: all but the generated columns the target computes itself
/// (those of a PostgreSQL source, created with the same expression; see `ddl::ensure_table`).
/// `COPY … FROM STDIN` (text format) into `columns` of `table`.
fn copy_statement(table: &TableSchema, columns: impl IntoIterator<Item = usize>) -> String {
    let columns: Vec<String> = columns
        .into_iter()
        .map(|c| ddl::quote_ident(&table.columns[c].name))
        .collect();
    format!(
        "COPY {} ({}) FROM STDIN",
        qualified_name(&table.id),
        columns.join(", ")
    )
}

/// Inserted rows of one table in a group smaller than this are upserted by one statement rather than copied.
const SMALL_GROUP_ROWS: usize = 256;

fn written(table: &TableSchema, columns: impl IntoIterator<Item = usize>) -> Vec<usize> {
    columns
        .into_iter()
        .filter(|&c| !ddl::computed_by_target(table, c))
        .collect()
}

impl MultiMaster {
    /// Sets the session up: Ferry's writes are never stamped as local writes by the version triggers; with
    /// conflict rules, the log and tombstone tables and the trigger functions exist; with a node, the session
    /// applies under the replication origin `ferry_<pipeline>`, which a peer pipeline reading this database skips.
    async fn open(
        client: &Client,
        pipeline: &str,
        options: MultiMasterOptions,
    ) -> Result<MultiMaster, Error> {
        client
            .batch_execute("SET ferry.applying = 'on'")
            .await
            .map_err(write_error("setting up the session"))?;
        if options.resolves() {
            // Tombstone keys are compared as text: the same settings as the tombstone trigger.
            client
                .batch_execute(
                    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
                     SET extra_float_digits = 1",
                )
                .await
                .map_err(write_error("setting up the session"))?;
            ferry_pgconn::versions::ensure_support(client, &conflict::conflicts_table_sql())
                .await
                .map_err(write_error(
                    "creating ferry_conflicts, ferry_tombstones and the version trigger functions",
                ))?;
        }
        let origin = options.node.is_some();
        if origin {
            let name = origin_name(pipeline);
            let setup = async {
                client
                    .execute(
                        "SELECT pg_catalog.pg_replication_origin_create($1) WHERE NOT EXISTS \
                         (SELECT 1 FROM pg_catalog.pg_replication_origin WHERE roname = $1)",
                        &[&name],
                    )
                    .await?;
                client
                    .execute(
                        "SELECT pg_catalog.pg_replication_origin_session_setup($1)",
                        &[&name],
                    )
                    .await
            };
            setup.await.map_err(|e| {
                Error::fatal_from(
                    format!(
                        "cannot apply under the replication origin {name} ([pipeline] node is set, so the peer \
                         pipeline can skip what this one writes): Ferry's target role needs superuser, or \
                         GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), \
                         pg_replication_origin_session_setup(text), \
                         pg_replication_origin_xact_setup(pg_lsn, timestamptz) TO <role>"
                    ),
                    e,
                )
            })?;
        }
        Ok(MultiMaster {
            node: options.node.clone().unwrap_or_else(|| pipeline.to_owned()),
            options,
            origin,
            ..MultiMaster::default()
        })
    }

    /// The statement that stamps the target transaction with the last source commit (origin progress and the
    /// commit timestamp PostgreSQL records), before COMMIT.
    fn origin_commit_sql(&self) -> String {
        match (self.origin, self.last_commit) {
            (true, Some((lsn, micros))) => format!(
                "SELECT pg_catalog.pg_replication_origin_xact_setup('{lsn}', timestamptz 'epoch' + interval '{} microseconds'); ",
                micros.unwrap_or(0)
            ),
            _ => String::new(),
        }
    }
}

/// The replication origin a pipeline's PostgreSQL sinks apply under (the name its slot also has).
pub fn origin_name(pipeline: &str) -> String {
    format!("ferry_{}", pipeline.to_lowercase())
}

/// The columns conflict-aware statements write from a change: [`written`] without the version columns, which
/// they set from the change's version.
fn managed_columns(table: &TableSchema, columns: impl IntoIterator<Item = usize>) -> Vec<usize> {
    written(table, columns)
        .into_iter()
        .filter(|&c| !crate::conflict::is_version_column(&table.columns[c].name))
        .collect()
}

/// A failed COPY, keeping whether it was a duplicate key (which the caller can recover from).
struct CopyError {
    what: String,
    source: tokio_postgres::Error,
}

impl CopyError {
    fn new(what: &str, source: tokio_postgres::Error) -> CopyError {
        CopyError {
            what: what.to_owned(),
            source,
        }
    }

    fn is_unique_violation(&self) -> bool {
        self.source.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    }

    fn into_error(self) -> Error {
        write_error(&self.what)(self.source)
    }
}

impl From<CopyError> for Error {
    fn from(e: CopyError) -> Error {
        e.into_error()
    }
}

/// Keeps the last row per key, in first-seen order (one statement may not touch a row twice). Keys compare by
/// their PostgreSQL text, which is what the statement compares too.
fn dedupe_by_key(group: &mut Group<'_>) {
    if group.rows.len() < 2 {
        return;
    }
    let key_of = |r: &Row| -> Vec<Option<String>> {
        group
            .table
            .primary_key
            .iter()
            .map(|&k| pg_text(&r[k]))
            .collect()
    };
    let mut last: HashMap<Vec<Option<String>>, usize> = HashMap::with_capacity(group.rows.len());
    for (i, r) in group.rows.iter().enumerate() {
        last.insert(key_of(r), i);
    }
    if last.len() == group.rows.len() {
        return;
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    group.rows = keep.into_iter().map(|i| group.rows[i]).collect();
}

impl Group<'_> {
    fn kind_sql(&self) -> ddl::StatementKind {
        match self.kind {
            GroupKind::Upsert => ddl::StatementKind::Upsert,
            GroupKind::UpdateSent => ddl::StatementKind::Update,
            GroupKind::Delete => ddl::StatementKind::Delete,
            GroupKind::Insert | GroupKind::Copy => ddl::StatementKind::Insert,
            GroupKind::CopyOrUpsert => ddl::StatementKind::Upsert,
        }
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, Error> {
        let rows = self
            .client
            .query(checkpoint::SELECT_PIPELINE_CHECKPOINTS, &[&self.pipeline])
            .await
            .map_err(write_error("reading the checkpoint"))?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|e| {
                Error::fatal_from(
                    "ferry_checkpoints.position in the target is not text (was the table altered?); restore \
                     it with ALTER TABLE ferry_checkpoints ALTER COLUMN position TYPE text, or run `ferry reset`",
                    e,
                )
            })?;
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
        let claim = async {
            self.client.batch_execute("BEGIN").await?;
            let mut held = std::collections::BTreeMap::new();
            for tp in partitions {
                let row = checkpoint::fresh_claim(&self.name, tp, token);
                self.client
                    .execute(
                        checkpoint::INSERT_PARTITION_CHECKPOINT,
                        &[&self.pipeline, &row.key, &row.text, &now],
                    )
                    .await?;
                let stored: String = self
                    .client
                    .query_one(
                        "SELECT position FROM ferry_checkpoints WHERE pipeline = $1 AND sink = $2 FOR UPDATE",
                        &[&self.pipeline, &row.key],
                    )
                    .await?
                    .try_get(0)?;
                let (mark, row) = checkpoint::claimed(&self.name, tp, Some(&stored), token);
                self.client
                    .execute(
                        checkpoint::CLAIM_PARTITION_CHECKPOINT,
                        &[&row.text, &now, &self.pipeline, &row.key],
                    )
                    .await?;
                held.insert(tp.clone(), mark);
            }
            self.client.batch_execute("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>(ferry_core::KafkaOffsets::from_map(held))
        };
        match claim.await {
            Ok(held) => {
                self.kafka_rows.committed(&held);
                Ok(held)
            }
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(write_error("claiming Kafka partitions")(e))
            }
        }
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
            self.client
                .batch_execute("ROLLBACK")
                .await
                .map_err(write_error("undoing a transaction applied live"))?;
        }
        self.multi.tally.rollback(0);
        self.multi.last_commit = None;
        Ok(())
    }

    async fn savepoint(&mut self, step: Savepoint) -> Result<(), Error> {
        self.begin().await?;
        let sql = crate::dead_letters::savepoint_sql(
            step,
            &mut self.multi.tally,
            &mut self.savepoint_tally,
        );
        self.client
            .batch_execute(sql)
            .await
            .map_err(write_error("setting a row aside (savepoint)"))
    }

    async fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), Error> {
        let create = !self.dead_letters_ready;
        dead_letters::write(&self.client, (&self.pipeline, &self.name), letter, create).await?;
        self.dead_letters_ready = true;
        Ok(())
    }

    async fn dead_letters(&mut self) -> Result<Vec<StoredDeadLetter>, Error> {
        dead_letters::read(&self.client, (&self.pipeline, &self.name), None, None).await
    }

    async fn forget_dead_letter(&mut self, id: i64) -> Result<(), Error> {
        dead_letters::forget(&self.client, (&self.pipeline, &self.name), id).await
    }

    async fn forget_dead_letters_of(&mut self, table: &TableId) -> Result<u64, Error> {
        self.client
            .execute(
                &crate::dead_letters::Dialect::Postgres.delete_table(),
                &[&self.pipeline, &self.name, &table.schema, &table.name],
            )
            .await
            .map_err(write_error("deleting dead letters a TRUNCATE supersedes"))
    }

    async fn apply(&mut self, events: &[Event], commit: Option<&Position>) -> Result<(), Error> {
        self.begin().await?;
        let events = self.shadows.expand(events);
        self.apply_events(&events).await?;
        if let Some(Position::Kafka(offsets)) = commit {
            return self.commit_offsets(offsets).await;
        }
        if let Some(position) = commit {
            let position = position.to_string();
            let upsert = match &self.checkpoint_statement {
                Some(statement) => statement.clone(),
                None => {
                    let statement = self
                        .client
                        .prepare(checkpoint::UPSERT_CHECKPOINT)
                        .await
                        .map_err(write_error("preparing the checkpoint upsert"))?;
                    self.checkpoint_statement = Some(statement.clone());
                    statement
                }
            };
            // The checkpoint and COMMIT in one round trip. try_join polls the upsert first: one that fails before
            // it is sent (its parameters do not fit a ferry_checkpoints someone altered) returns at once, and COMMIT
            // is never sent. One the server refuses leaves the transaction aborted, and the COMMIT queued behind
            // it rolls back; either way the upsert's error is what this returns.
            let commit_sql = format!("{}COMMIT", self.multi.origin_commit_sql());
            let now = checkpoint::now_text();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&self.pipeline, &self.name, &position, &now];
            let done = futures_util::future::try_join(
                self.client.execute(&upsert, &params),
                self.client.batch_execute(&commit_sql),
            )
            .await;
            self.in_transaction = false;
            done.map_err(write_error("writing the checkpoint and committing"))?;
            // A snapshot committed in parts goes on copying into the tables it emptied.
            let applied = &self.applied;
            self.truncated
                .retain(|t| applied.get(t).is_some_and(|a| a.copying));
            self.multi.tally.committed();
            self.multi.last_commit = None;
            debug!(sink = %self.name, position, "committed");
        }
        Ok(())
    }
}

/// Whether this role may apply under a replication origin on the target at `url` (`ferry check`).
pub async fn probe_origin_grants(url: &str) -> Result<String, Error> {
    let client = connect(url).await?;
    let row = client
        .query_one(
            "SELECT rolsuper, has_function_privilege('pg_catalog.pg_replication_origin_create(text)', 'EXECUTE') \
             AND has_function_privilege('pg_catalog.pg_replication_origin_session_setup(text)', 'EXECUTE') \
             AND has_function_privilege('pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)', 'EXECUTE') \
             FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(write_error("reading the role's privileges"))?;
    let (superuser, granted): (bool, bool) = (row.get(0), row.get(1));
    if superuser || granted {
        return Ok("may apply under a replication origin".to_owned());
    }
    Err(Error::fatal(
        "this role cannot apply under a replication origin ([pipeline] node is set); run as a superuser: \
         GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_session_setup(text), \
         pg_replication_origin_xact_setup(pg_lsn, timestamptz) TO <role>",
    ))
}

/// Reads and deletes checkpoints of a pipeline in a PostgreSQL target (`ferry status`, `ferry reset`).
pub async fn list_checkpoints(
    url: &str,
    pipeline: &str,
) -> Result<Vec<(String, String, String)>, Error> {
    let client = connect(url).await?;
    // Read-only: a target Ferry never wrote has no checkpoint table, and `ferry status` does not create one.
    let exists: bool = client
        .query_one("SELECT to_regclass('ferry_checkpoints') IS NOT NULL", &[])
        .await
        .map_err(write_error("looking for ferry_checkpoints"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(checkpoint::LIST_CHECKPOINTS, &[&pipeline])
        .await
        .map_err(write_error("reading checkpoints"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Deletes a pipeline's checkpoints from a PostgreSQL target.
pub async fn delete_checkpoints(url: &str, pipeline: &str) -> Result<u64, Error> {
    let client = connect(url).await?;
    client
        .batch_execute(&ferry_pgconn::setup_locked(
            checkpoint::CREATE_CHECKPOINT_TABLE,
        ))
        .await
        .map_err(write_error("creating ferry_checkpoints"))?;
    client
        .execute(checkpoint::DELETE_CHECKPOINTS, &[&pipeline])
        .await
        .map_err(write_error("deleting checkpoints"))
}
