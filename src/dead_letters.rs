//! `ferry dead-letters list|replay|discard`: the row changes targets refused under `on_error = "dead_letter"`.
//!
//! `list` only reads, so it works while the pipeline runs. `replay` and `discard` write the target under the
//! sink's lease, so they run while the pipeline is stopped: replay applies each chosen letter through the sink's
//! normal apply path (its conflict rules included) under a savepoint, and deletes it in the same transaction;
//! a letter whose replay fails stays, and so do the later letters of its key, so a key's changes never land out
//! of order. The sink's checkpoint is stored again unchanged with them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use ferry_config::PipelineConfig;
use ferry_core::dead_letter::{before_transforms, StoredDeadLetter};
use ferry_core::{
    Change, Error, ErrorClass, Event, PipelineStats, Position, RowOp, Savepoint, SchemaRef, Sink,
    TableId, TableSchema, Timestamp, Transform, TxContext,
};
use ferry_transform::Chain;

use crate::runtime::load_configs;

/// What `ferry dead-letters` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Show the dead letters, oldest first.
    List,
    /// Apply them again (after fixing what refused them) and remove those that apply.
    Replay,
    /// Remove them without applying them.
    Discard,
}

/// Which letters a command acts on.
pub struct Selection {
    pub table: Option<TableId>,
    pub id: Option<i64>,
}

impl Selection {
    fn takes(&self, letter: &StoredDeadLetter) -> bool {
        self.table
            .as_ref()
            .is_none_or(|t| *t == letter.letter.table)
            && self.id.is_none_or(|i| i == letter.id)
    }
}

pub async fn run(
    action: Action,
    files: &[PathBuf],
    selection: Selection,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pipelines = load_configs(files)?;
    match action {
        Action::List => list(&pipelines, &selection, json).await,
        Action::Replay | Action::Discard => {
            let mut ok = true;
            for p in &pipelines {
                for index in 0..p.sinks.len() {
                    ok &= rework(p, index, &selection, action).await?;
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn list(
    pipelines: &[PipelineConfig],
    selection: &Selection,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    for p in pipelines {
        for sink in &p.sinks {
            let found = ferry_sink::registry::list_dead_letters(
                &p.name,
                sink,
                selection.table.as_ref(),
                selection.id,
            )
            .await
            .with_context(|| {
                format!(
                    "reading the dead letters of pipeline {} sink {}",
                    p.name, sink.name
                )
            })?;
            all.extend(found);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no dead letters");
    }
    for d in &all {
        let l = &d.letter;
        println!(
            "#{} {} {}/{} {} {} {} at {} ({} tries): {} [{}]\n    row {}",
            d.id,
            d.created_at,
            d.pipeline,
            d.sink,
            l.table,
            l.op,
            l.key,
            l.position,
            l.attempts,
            l.error,
            l.code,
            l.row
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Replays or discards the chosen letters of one sink. `false` when some could not be replayed.
async fn rework(
    config: &PipelineConfig,
    index: usize,
    selection: &Selection,
    action: Action,
) -> anyhow::Result<bool> {
    let sink_name = &config.sinks[index].name;
    let what = format!("pipeline {} sink {sink_name}", config.name);
    let mut sink = match ferry_sink::registry::open(config, index).await {
        Ok(s) => s,
        Err(e) if e.class == ErrorClass::Standby => bail!(
            "{what} is running (another process holds its lease). Stop it first: `dead-letters {}` writes the \
             target under the pipeline's lease",
            if action == Action::Replay {
                "replay"
            } else {
                "discard"
            }
        ),
        Err(e) => return Err(e).with_context(|| format!("opening {what}")),
    };
    let letters = sink.dead_letters().await?;
    if !letters.iter().any(|l| selection.takes(l)) {
        println!("{what}: no dead letters match");
        return Ok(true);
    }
    let Some(checkpoint) = sink.checkpoint().await? else {
        bail!("{what} has dead letters but no checkpoint; run the pipeline once first");
    };
    let mut chain = Chain::new(config, Arc::new(PipelineStats::new(&config.name, &[])))
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.file.display()))?;
    // Keys whose earlier letter stays: their later letters wait behind it.
    let mut blocked: HashSet<(TableId, String)> = HashSet::new();
    let mut schemas: Vec<SchemaRef> = Vec::new();
    let (mut done, mut failed, mut waiting) = (0, 0, 0);
    for stored in &letters {
        let letter = &stored.letter;
        // A key change holds back both its keys.
        let keys: Vec<(TableId, String)> = letter
            .keys()
            .map(|k| (letter.table.clone(), k.clone()))
            .collect();
        if keys.iter().any(|k| blocked.contains(k)) {
            if selection.takes(stored) {
                println!(
                    "{what}: #{} stays: an earlier letter of {} key {} stays before it",
                    stored.id, letter.table, letter.key
                );
                waiting += 1;
            }
            blocked.extend(keys);
            continue;
        }
        if !selection.takes(stored) {
            blocked.extend(keys);
            continue;
        }
        if action == Action::Discard {
            sink.forget_dead_letter(stored.id).await?;
            println!(
                "{what}: #{} discarded ({} {} key {})",
                stored.id, letter.table, letter.op, letter.key
            );
            done += 1;
            continue;
        }
        let (schema, op) = match letter.change() {
            Ok(change) => change,
            Err(e) => {
                println!("{what}: #{} stays: {e}", stored.id);
                blocked.extend(keys);
                failed += 1;
                continue;
            }
        };
        let table = shared_schema(&mut schemas, schema);
        let commit_at: Position = letter.position.parse().unwrap_or(checkpoint.clone());
        let tx = TxContext {
            commit_time: letter.commit_time.map(Timestamp::from_unix_micros),
            ..TxContext::at(commit_at)
        };
        let events = vec![
            Event::Begin(Arc::new(tx)),
            Event::Change(Change::Row { table, op }),
        ];
        let events = match chain.as_mut() {
            Some(chain) if before_transforms(&letter.code) => through(chain, events),
            _ => Ok(events),
        };
        sink.savepoint(Savepoint::Set).await?;
        let applied = match events {
            Ok(events) => match sink.apply(&as_upserts(events), None).await {
                Ok(()) => sink.forget_dead_letter(stored.id).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match applied {
            Ok(()) => {
                sink.savepoint(Savepoint::Release).await?;
                println!(
                    "{what}: #{} replayed ({} {} key {})",
                    stored.id, letter.table, letter.op, letter.key
                );
                done += 1;
            }
            Err(e) => {
                sink.savepoint(Savepoint::Rollback).await?;
                println!("{what}: #{} stays: its replay failed: {e}", stored.id);
                blocked.extend(keys);
                failed += 1;
            }
        }
    }
    // The checkpoint, unchanged, commits them.
    sink.apply(&[], Some(&checkpoint)).await?;
    let verb = if action == Action::Replay {
        "replayed"
    } else {
        "discarded"
    };
    println!("{what}: {done} {verb}, {failed} failed, {waiting} behind an earlier letter");
    Ok(failed == 0 && waiting == 0)
}

/// `events` as the pipeline's transforms make them; a row a stage still fails on is an error.
fn through(chain: &mut Chain, events: Vec<Event>) -> Result<Vec<Event>, Error> {
    let mut out = Vec::new();
    for event in events {
        chain.apply(event, &mut out)?;
    }
    if let Some(refused) = out.iter().find_map(|e| match e {
        Event::Change(Change::Refused(r)) => Some(r),
        _ => None,
    }) {
        return Err(Error::fatal(format!(
            "the transforms still fail on it: {}",
            refused.error
        )));
    }
    Ok(out)
}

/// Inserts as upserts (snapshot rows): the key may exist by now, and a statement that names a column the target
/// no longer has fails like any other, leaving the session usable (a COPY does not).
fn as_upserts(events: Vec<Event>) -> Vec<Event> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Change(Change::Row {
                table,
                op: RowOp::Insert { after },
            }) => Event::Change(Change::Row {
                table,
                op: RowOp::Read { after },
            }),
            e => e,
        })
        .collect()
}

/// One shared schema per distinct table schema among the letters, numbered apart: a sink caches statements by
/// table and schema version, and letters written by different runs may carry the same version number for
/// different columns.
fn shared_schema(schemas: &mut Vec<SchemaRef>, mut schema: TableSchema) -> SchemaRef {
    let same = |a: &TableSchema, b: &TableSchema| {
        a.id == b.id
            && a.columns == b.columns
            && a.primary_key == b.primary_key
            && a.identity == b.identity
    };
    if let Some(s) = schemas.iter().find(|s| same(s, &schema)) {
        return s.clone();
    }
    schema.version = u64::MAX - schemas.len() as u64;
    let shared = Arc::new(schema);
    schemas.push(shared.clone());
    shared
}
