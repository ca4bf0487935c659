//! The chain of stages the runner owns: scoping, planning per schema version, positions, errors.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ferry_config::{PipelineConfig, RowErrorPolicy};
use ferry_core::dead_letter::row_keys;
use ferry_core::{
    Change, Error, Event, PipelineStats, RecopyStep, RefusedRow, Result, RowOp, SchemaRef, TableId,
    Transform, TxContext, Value,
};
use tracing::warn;

use crate::stage::{RowContext, RowStage, StageError, Step};
use crate::stages::{self, matches};

/// One stage with its place in the file and its scope.
struct Scoped {
    /// `transform[2]`, or `filter` for the `[filter]` section.
    key: String,
    tables: Option<Vec<String>>,
    on_error: RowErrorPolicy,
    stage: Box<dyn RowStage>,
}

impl Scoped {
    fn applies_to(&self, table: &TableId) -> bool {
        self.tables
            .as_ref()
            .is_none_or(|t| t.iter().any(|p| matches(p, table)))
    }
}

/// What the chain does with one schema version of a table.
enum Plan {
    /// A stage drops the table.
    Dropped,
    Steps {
        /// Steps that change rows, each with the stage's index and the schema it takes.
        steps: Vec<(usize, SchemaRef, Box<dyn Step>)>,
        output: SchemaRef,
    },
}

/// The `[filter]` section and the `[[transform]]` stages, in order, as the runner's [`Transform`].
pub struct Chain {
    file: PathBuf,
    stages: Vec<Scoped>,
    tx: Option<Arc<TxContext>>,
    plans: HashMap<(TableId, u64), Arc<Plan>>,
    /// The last schema planned and its plan: consecutive rows of one table skip the lookup.
    last: Option<(SchemaRef, Arc<Plan>)>,
    /// Target table → the source table whose changes it receives (one source per target).
    routed: HashMap<TableId, TableId>,
    stats: Arc<PipelineStats>,
    ops: Vec<RowOp>,
    next: Vec<RowOp>,
    /// Whether some stage sets rows aside (`on_error = "dead_letter"`): each row is then kept as read until the
    /// chain is done with it.
    dead_letters: bool,
    /// Source keys with a transform's dead letter: their later changes follow it (see [`Chain::follow`]).
    dead_keys: HashMap<TableId, HashSet<String>>,
}

impl Chain {
    /// The chain `config` describes; `None` when it has no stage (the runner then passes events straight on).
    /// An error names the stage's key and what is wrong (an expression that does not compile).
    pub fn new(
        config: &PipelineConfig,
        stats: Arc<PipelineStats>,
    ) -> std::result::Result<Option<Chain>, String> {
        let mut stages: Vec<Scoped> = stages::from_filter(&config.filter)
            .into_iter()
            .map(|stage| Scoped {
                key: "filter".into(),
                tables: None,
                on_error: RowErrorPolicy::Halt,
                stage,
            })
            .collect();
        for t in &config.transforms {
            stages.push(Scoped {
                key: t.key.clone(),
                tables: t.tables.clone(),
                on_error: t.on_error,
                stage: stages::build(t).map_err(|e| format!("{}: {}", t.key, e))?,
            });
        }
        if stages.is_empty() {
            return Ok(None);
        }
        let dead_letters = stages
            .iter()
            .any(|s| s.on_error == RowErrorPolicy::DeadLetter);
        Ok(Some(Chain {
            dead_letters,
            dead_keys: HashMap::new(),
            file: config.file.clone(),
            stages,
            tx: None,
            plans: HashMap::new(),
            last: None,
            routed: HashMap::new(),
            stats,
            ops: Vec::new(),
            next: Vec::new(),
        }))
    }

    /// Keys of `table` (as the source reads it) that hold a transform's dead letter in a sink, from an earlier
    /// run: their later changes follow the letter instead of overtaking it.
    pub fn follow(&mut self, table: TableId, keys: impl IntoIterator<Item = String>) {
        self.dead_keys.entry(table).or_default().extend(keys);
    }

    /// Whether `op` touches a key with a transform's dead letter (either key of a key change).
    fn follows(&self, table: &SchemaRef, op: &RowOp) -> bool {
        let Some(keys) = self.dead_keys.get(&table.id) else {
            return false;
        };
        if table.match_key().is_empty() {
            return false;
        }
        let (key, moved) = row_keys(table, op);
        keys.contains(&key) || moved.is_some_and(|k| keys.contains(&k))
    }

    /// Whether the chain passes `schema`'s rows on unchanged (a route may rename the table): its snapshot rows may
    /// then travel as raw COPY lines ([`Change::CopyRows`]).
    pub fn leaves_rows_unchanged(&mut self, schema: &SchemaRef) -> bool {
        match self.plan(schema).as_deref() {
            Ok(Plan::Steps { steps, output }) => {
                steps.is_empty() && output.columns == schema.columns
            }
            _ => false,
        }
    }

    /// The table `table`'s changes continue as (a route renames it); `None` when a stage drops it.
    pub fn map_table(&self, table: &TableId) -> Option<TableId> {
        let mut id = table.clone();
        for s in &self.stages {
            if s.applies_to(&id) {
                id = s.stage.table(&id)?;
            }
        }
        Some(id)
    }

    fn plan(&mut self, schema: &SchemaRef) -> Result<Arc<Plan>> {
        if let Some((s, plan)) = &self.last {
            if Arc::ptr_eq(s, schema) {
                return Ok(plan.clone());
            }
        }
        let key = (schema.id.clone(), schema.version);
        // A table's schema versions grow with each change, so (table, version) names one schema.
        let plan = match self.plans.get(&key) {
            Some(plan) => plan.clone(),
            None => {
                let plan = Arc::new(self.make_plan(schema)?);
                self.plans.insert(key, plan.clone());
                plan
            }
        };
        self.last = Some((schema.clone(), plan.clone()));
        Ok(plan)
    }

    fn make_plan(&mut self, schema: &SchemaRef) -> Result<Plan> {
        let mut current = schema.clone();
        let mut steps = Vec::new();
        for (i, s) in self.stages.iter().enumerate() {
            if !s.applies_to(&current.id) {
                continue;
            }
            if s.stage.table(&current.id).is_none() {
                return Ok(Plan::Dropped);
            }
            let step = s.stage.plan(&current).map_err(|e| {
                Error::fatal(format!(
                    "{}: {}.{e} (the transform cannot be planned for {}; fix the config and restart)",
                    self.file.display(),
                    s.key,
                    schema.id
                ))
            })?;
            let output = step.output().clone();
            if !step.passes_rows() {
                steps.push((i, current, step));
            }
            current = output;
        }
        // Every target table, renamed or not: a table routed onto another's name would merge the two.
        {
            let source = self
                .routed
                .entry(current.id.clone())
                .or_insert_with(|| schema.id.clone());
            if *source != schema.id {
                return Err(Error::fatal(format!(
                    "{}: {} and {} are both routed to {}: a target table takes one source table",
                    self.file.display(),
                    source,
                    schema.id,
                    current.id
                )));
            }
        }
        Ok(Plan::Steps {
            steps,
            output: current,
        })
    }

    fn row(&mut self, table: &SchemaRef, op: RowOp, out: &mut Vec<Event>) -> Result<()> {
        let plan = self.plan(table)?;
        let Plan::Steps { steps, output } = &*plan else {
            return Ok(());
        };
        if !self.dead_keys.is_empty() && self.follows(table, &op) {
            // A key change that follows holds back its new key too.
            if let (_, Some(moved)) = row_keys(table, &op) {
                self.dead_keys
                    .entry(table.id.clone())
                    .or_default()
                    .insert(moved);
            }
            out.push(Event::Change(Change::Refused(Box::new(RefusedRow {
                table: table.clone(),
                op,
                error: "an earlier change of this key is a transform's dead letter: this one follows it, in order"
                    .into(),
                follows: true,
                target: output.id.clone(),
            }))));
            return Ok(());
        }
        let original = self.dead_letters.then(|| op.clone());
        self.ops.clear();
        self.ops.push(op);
        for (index, input, step) in steps {
            let cx = RowContext {
                tx: self.tx.as_deref(),
                table: input,
            };
            self.next.clear();
            let mut failed = false;
            let mut refused = None;
            for op in self.ops.drain(..) {
                if let Err(e) = step.apply(&cx, op, &mut self.next) {
                    failed = true;
                    let stage = &self.stages[*index];
                    let failure = RowFailure {
                        file: &self.file,
                        stage: &stage.key,
                        table: input,
                        error: &e,
                    };
                    match stage.on_error {
                        RowErrorPolicy::Halt => return Err(Error::fatal(failure.to_string())),
                        RowErrorPolicy::Skip => {
                            warn!(stage = %stage.key, table = %input.id, key = %failure.key(), error = %e.message, "a transform failed on a row; the row is left out (on_error = \"skip\")");
                            self.stats.row_skipped(&stage.key, &input.id.to_string());
                        }
                        RowErrorPolicy::DeadLetter => {
                            refused = Some(format!(
                                "{}: failed on the row ({}): {}",
                                stage.key,
                                failure.key(),
                                e.message
                            ));
                            break;
                        }
                    }
                }
            }
            if let Some(error) = refused {
                // The whole row, as read, is set aside: none of what the stages made of it goes on.
                self.next.clear();
                let Some(op) = original else {
                    return Err(Error::fatal(error));
                };
                if !table.match_key().is_empty() {
                    let (key, moved) = row_keys(table, &op);
                    let keys = self.dead_keys.entry(table.id.clone()).or_default();
                    keys.insert(key);
                    keys.extend(moved);
                }
                out.push(Event::Change(Change::Refused(Box::new(RefusedRow {
                    table: table.clone(),
                    op,
                    error,
                    follows: false,
                    target: output.id.clone(),
                }))));
                return Ok(());
            }
            std::mem::swap(&mut self.ops, &mut self.next);
            if self.ops.is_empty() {
                if !failed {
                    self.stats.rows_filtered.fetch_add(1, Relaxed);
                }
                return Ok(());
            }
        }
        for op in self.ops.drain(..) {
            out.push(Event::Change(Change::Row {
                table: output.clone(),
                op,
            }));
        }
        Ok(())
    }
}

/// A row a stage failed on, as the `halt` message and the `skip` log line describe it.
struct RowFailure<'a> {
    file: &'a std::path::Path,
    stage: &'a str,
    table: &'a SchemaRef,
    error: &'a StageError,
}

impl RowFailure<'_> {
    /// The row's key as `col=value, …` (its key columns at the failing stage), `?` without the row.
    fn key(&self) -> String {
        let Some(op) = &self.error.row else {
            return "?".into();
        };
        let row = op.row();
        let key = stages::key_columns(self.table);
        let cols: Vec<usize> = if key.is_empty() {
            (0..self.table.columns.len()).collect()
        } else {
            key.to_vec()
        };
        cols.iter()
            .map(|&i| {
                let v = row.get(i).map_or("?".into(), |v| match v {
                    Value::Null => "NULL".into(),
                    v => crate::types::text_of(v, Some(&self.table.columns[i].ty))
                        .unwrap_or_else(|| "?".into()),
                });
                format!("{}={v}", self.table.columns[i].name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for RowFailure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: failed on a row of {} ({}): {}. The pipeline stops (on_error = \"halt\"); fix the \
             transform or the row, or set on_error = \"skip\" on the stage to leave such rows out",
            self.file.display(),
            self.stage,
            self.table.id,
            self.key(),
            self.error.message
        )
    }
}

impl Transform for Chain {
    fn apply(&mut self, event: Event, out: &mut Vec<Event>) -> Result<()> {
        match event {
            Event::Begin(tx) => {
                self.tx = Some(tx.clone());
                out.push(Event::Begin(tx));
            }
            Event::Schema(schema) => {
                if let Plan::Steps { output, .. } = &*self.plan(&schema)? {
                    out.push(Event::Schema(output.clone()));
                }
            }
            Event::Change(Change::Row { table, op }) => self.row(&table, op, out)?,
            Event::Change(Change::Truncate { tables, snapshot }) => {
                // The sinks delete an emptied table's letters with it: nothing to follow any more.
                for t in &tables {
                    self.dead_keys.remove(t);
                }
                let mut mapped: Vec<TableId> = Vec::new();
                for t in tables.iter().filter_map(|t| self.map_table(t)) {
                    if !mapped.contains(&t) {
                        mapped.push(t);
                    }
                }
                if !mapped.is_empty() {
                    out.push(Event::Change(Change::Truncate {
                        tables: mapped,
                        snapshot,
                    }));
                }
            }
            // The source sends raw COPY lines only for tables no stage changes (see `ferry_source`'s raw copy):
            // they pass, under the table's name after any route, or stop loudly.
            Event::Change(Change::CopyRows { table, rows, data }) => match &*self.plan(&table)? {
                Plan::Dropped => {}
                Plan::Steps { steps, output } if steps.is_empty() && output.columns == table.columns => {
                    out.push(Event::Change(Change::CopyRows {
                        table: output.clone(),
                        rows,
                        data,
                    }));
                }
                Plan::Steps { .. } => {
                    return Err(Error::fatal(format!(
                        "table {}: snapshot rows arrived as raw COPY lines, but a transform stage changes the \
                         table's rows (a bug: please report it)",
                        table.id
                    )))
                }
            },
            Event::Change(Change::Copied { tables }) => {
                // One source table per target (route refuses more), so each maps alone.
                let tables: Vec<TableId> =
                    tables.iter().filter_map(|t| self.map_table(t)).collect();
                if !tables.is_empty() {
                    out.push(Event::Change(Change::Copied { tables }));
                }
            }
            Event::Change(Change::Quarantine { table, reason }) => {
                if let Some(table) = self.map_table(&table) {
                    out.push(Event::Change(Change::Quarantine { table, reason }));
                }
            }
            Event::Change(Change::Recopy { table, step }) => {
                let Some(mapped) = self.map_table(&table) else {
                    return Ok(());
                };
                // The shadow table gets the columns the rows get.
                let step = match step {
                    RecopyStep::Start { schema } => match &*self.plan(&schema)? {
                        Plan::Steps { output, .. } => RecopyStep::Start {
                            schema: output.clone(),
                        },
                        Plan::Dropped => return Ok(()),
                    },
                    RecopyStep::Finish { schema } => match &*self.plan(&schema)? {
                        Plan::Steps { output, .. } => RecopyStep::Finish {
                            schema: output.clone(),
                        },
                        Plan::Dropped => return Ok(()),
                    },
                    other => other,
                };
                out.push(Event::Change(Change::Recopy {
                    table: mapped,
                    step,
                }));
            }
            other @ (Event::Commit { .. }
            | Event::Heartbeat { .. }
            | Event::Abandon
            | Event::Claim(_)
            | Event::Change(Change::Refused(_))) => out.push(other),
        }
        Ok(())
    }
}
