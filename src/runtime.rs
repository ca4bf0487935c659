//! Runs one pipeline: wires source, transforms, batcher and sinks, restarts on transient errors.
//!
//! ```text
//! source::run ──mpsc<Event>(1024)──► run_batcher ──mpsc<Arc<Batch>>(1)──► run_sink × N
//!      ▲ watch<Option<Position>> ◄────────── AckTracker ◄──────────────────────┘
//! ```
//!
//! Every attempt starts from the sinks' stored checkpoints, so a restart after any failure replays exactly what
//! is not yet durable everywhere.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use ferry_config::PipelineConfig;
use ferry_core::pipeline::{run_batcher, run_sink, AckTracker, SinkSettings};
use ferry_core::{
    Error, ErrorClass, PipelineState, PipelineStats, Position, Sink, Source, SourceExit, TableId,
    Transform,
};
use ferry_transform::Chain;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// How often a standby tries to take the lease of the pipeline another process runs.
const STANDBY_POLL: Duration = Duration::from_secs(2);

/// How often a paused pipeline (`max_dead_letters` reached) looks again.
const PAUSED_POLL: Duration = Duration::from_secs(5);

/// Events buffered between the source and the batcher.
const EVENT_CHANNEL: usize = 4096;

/// Runs the pipeline until `shutdown` turns true or a fatal error.
pub async fn run_pipeline(
    config: PipelineConfig,
    stats: Arc<PipelineStats>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    stats
        .alerts_gate_readiness
        .store(config.alerts.readyz, Ordering::Relaxed);
    // Alerts are judged while the pipeline retries too: that is when lag grows.
    let _monitor = config.alerts.any().then(|| {
        let (alerts, stats) = (config.alerts, stats.clone());
        ferry_core::AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                alerts.evaluate(&stats);
            }
        }))
    });
    let retry = config.row_errors.retry;
    // Restarts in a row without a minute of work between them.
    let mut failures = 0;
    loop {
        let started = tokio::time::Instant::now();
        if !matches!(stats.state(), PipelineState::Standby { .. }) {
            stats.set_state(PipelineState::Starting);
        }
        match run_once(&config, &stats, shutdown.clone()).await {
            Ok(exit) => {
                stats.set_state(PipelineState::Stopped);
                info!(pipeline = %config.name, ?exit, "pipeline stopped");
                return Ok(());
            }
            Err(e) if e.class == ErrorClass::Standby && !*shutdown.borrow() => {
                let owner = e.to_string();
                if !matches!(stats.state(), PipelineState::Standby { owner: o } if o == owner) {
                    warn!(pipeline = %config.name, "{owner}");
                }
                stats.set_state(PipelineState::Standby { owner });
                tokio::select! {
                    _ = tokio::time::sleep(STANDBY_POLL) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) if e.class == ErrorClass::Paused && !*shutdown.borrow() => {
                let reason = e.to_string();
                if !matches!(stats.state(), PipelineState::Paused { reason: r } if r == reason) {
                    warn!(pipeline = %config.name, "{reason}");
                }
                stats.set_state(PipelineState::Paused { reason });
                tokio::select! {
                    _ = tokio::time::sleep(PAUSED_POLL) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                stats.set_state(PipelineState::Retrying {
                    error: e.to_string(),
                });
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                failures = if started.elapsed() > Duration::from_secs(60) {
                    1
                } else {
                    failures + 1
                };
                let backoff = retry.delay(failures);
                stats
                    .backoff_ms
                    .store(backoff.as_millis() as u64, Ordering::Relaxed);
                warn!(pipeline = %config.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "transient failure; restarting from the checkpoints");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                stats.backoff_ms.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                stats.set_state(PipelineState::Failed {
                    error: e.to_string(),
                });
                error!(pipeline = %config.name, error = %e, "pipeline failed");
                return Err(anyhow!(
                    "pipeline {} ({}): {e}",
                    config.name,
                    config.file.display()
                ));
            }
        }
    }
}

async fn run_once(
    config: &PipelineConfig,
    stats: &Arc<PipelineStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<SourceExit, Error> {
    refuse_loops(config).await?;
    let mut sinks = Vec::with_capacity(config.sinks.len());
    let mut checkpoints = Vec::with_capacity(config.sinks.len());
    let mut recopies = Vec::new();
    let mut letters = Vec::with_capacity(config.sinks.len());
    for i in 0..config.sinks.len() {
        let mut sink = ferry_sink::registry::open(config, i).await?;
        let checkpoint = sink.checkpoint().await?;
        if let Some(r) = sink.recopies().await? {
            recopies.push(r);
        }
        letters.push(sink.dead_letters().await?);
        info!(pipeline = %config.name, sink = sink.name(), checkpoint = %checkpoint.as_ref().map_or("none".to_owned(), |p| p.to_string()), "sink ready");
        checkpoints.push(checkpoint);
        sinks.push(sink);
    }
    // Resume from the minimum; a sink without a checkpoint means a new snapshot for all (see source docs).
    let resume = if checkpoints.iter().any(Option::is_none) {
        None
    } else {
        let mut min: Option<Position> = None;
        for p in checkpoints.iter().flatten() {
            min = Some(match &min {
                None => p.clone(),
                Some(m) => p.lower(m).map_err(|e| {
                    Error::fatal_from("sinks hold checkpoints of different sources", e)
                })?,
            });
        }
        min.map(|from| ferry_core::Resume {
            from,
            checkpoints: checkpoints.iter().flatten().cloned().collect(),
        })
    };
    let (tracker, acked) = AckTracker::new(checkpoints.clone());
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL);
    let mut tasks = JoinSet::new();
    let mut outputs = Vec::new();
    // Keys with a transform's dead letter in any sink: the transforms make their later changes follow it.
    let mut chain = Chain::new(config, stats.clone())
        .map_err(|e| Error::fatal(format!("{}: {e}", config.file.display())))?;
    if let Some(chain) = chain.as_mut() {
        for stored in letters.iter().flatten() {
            let letter = &stored.letter;
            // Filed under the table the sinks see; the chain follows the source table's key.
            if ferry_core::dead_letter::before_transforms(&letter.code) {
                let source = letter
                    .change()
                    .map_or_else(|_| letter.table.clone(), |(s, _)| s.id);
                chain.follow(source, letter.keys().cloned());
            }
        }
    }
    let chain = chain.map(|c| Box::new(c) as Box<dyn Transform>);
    for (i, ((sink, checkpoint), dead_letters)) in
        sinks.into_iter().zip(checkpoints).zip(letters).enumerate()
    {
        let (tx, rx) = mpsc::channel(1);
        outputs.push(tx);
        // After a new snapshot every sink starts from scratch: its old checkpoint must not skip the snapshot.
        let checkpoint = if resume.is_none() { None } else { checkpoint };
        tasks.spawn(run_sink(
            sink,
            i,
            checkpoint,
            rx,
            tracker.clone(),
            stats.clone(),
            SinkSettings {
                limits: config.batch,
                row_errors: Arc::new(config.row_errors.clone()),
                dead_letters,
            },
        ));
    }
    drop(tracker);
    tasks.spawn(run_batcher(
        events_rx,
        chain,
        config.batch,
        outputs,
        stats.clone(),
    ));

    // The snapshot asks a chain of its own which tables it leaves unchanged (their rows may travel unparsed).
    let unchanged = Chain::new(config, Arc::new(PipelineStats::new(&config.name, &[])))
        .ok()
        .flatten()
        .map(|chain| {
            let chain = std::sync::Mutex::new(chain);
            Arc::new(move |schema: &ferry_core::SchemaRef| {
                chain
                    .lock()
                    .is_ok_and(|mut c| c.leaves_rows_unchanged(schema))
            }) as ferry_source::snapshot::Unchanged
        });
    // And the name the sinks know each source table by, which their re-copy records are filed under.
    let sink_names = Chain::new(config, Arc::new(PipelineStats::new(&config.name, &[])))
        .ok()
        .flatten()
        .map(|chain| {
            let chain = std::sync::Mutex::new(chain);
            ferry_source::registry::SinkNames(Arc::new(move |t: &TableId| {
                chain.lock().ok().and_then(|c| c.map_table(t))
            }))
        });
    let source = ferry_source::registry::open(
        config,
        agreed_recopies(&recopies),
        unchanged,
        sink_names,
        stats.clone(),
    )
    .run(resume, events_tx, acked, shutdown);
    tokio::pin!(source);

    let mut source_result = None;
    let mut task_error = None;
    loop {
        tokio::select! {
            r = &mut source, if source_result.is_none() => source_result = Some(r),
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => { task_error.get_or_insert(e); if source_result.is_none() { break; } }
                Some(Err(join)) => { task_error.get_or_insert(Error::fatal(format!("a pipeline task panicked: {join}"))); break; }
            },
        }
    }
    // A failed sink or batcher is the cause; the source's "pipeline stopped" is only its symptom.
    if let Some(e) = task_error {
        return Err(e);
    }
    match source_result {
        Some(r) => r,
        None => source.await,
    }
}

/// Stops before anything moves when this pipeline and another would replicate each other's changes back and
/// forth (docs/multi-master.md): the error names both and the setting that breaks the loop.
async fn refuse_loops(config: &PipelineConfig) -> Result<(), Error> {
    let ferry_config::SourceConfig::Postgres(source) = &config.source else {
        return Ok(());
    };
    let client = ferry_source::postgres::connect_client(&source.url).await?;
    let outcome = ferry_source::postgres::multimaster::loop_check(&client, config).await?;
    if outcome.ok {
        return Ok(());
    }
    Err(Error::fatal(format!(
        "{}; {}",
        outcome.detail,
        outcome.fix.unwrap_or_default()
    )))
}

/// The online re-copies to resume, from what each sink that keeps them recorded: a table's cursor when every such
/// sink holds the same one, or one that covers them all (an initial copy resumed in place, see
/// [`ferry_source::postgres::recopy::Cursor::merge`]; a MySQL/MariaDB copy's key ranges, see
/// [`ferry_source::mysql::merge_copy_records`]); `None` (start it again) when they differ otherwise or some sink
/// has none.
fn agreed_recopies(per_sink: &[Vec<(TableId, String)>]) -> Vec<(TableId, Option<String>)> {
    let mut tables: Vec<&TableId> = per_sink.iter().flatten().map(|(t, _)| t).collect();
    tables.sort();
    tables.dedup();
    tables
        .into_iter()
        .map(|t| {
            let cursors: Vec<Option<&String>> = per_sink
                .iter()
                .map(|s| s.iter().find(|(x, _)| x == t).map(|(_, c)| c))
                .collect();
            let agreed = if cursors.iter().all(|c| *c == cursors[0]) {
                cursors[0].cloned()
            } else {
                cursors
                    .iter()
                    .map(|c| c.map(String::as_str))
                    .collect::<Option<Vec<&str>>>()
                    .and_then(|all| {
                        ferry_source::postgres::recopy::Cursor::merge(&all)
                            .map(|c| c.to_json())
                            .or_else(|| ferry_source::mysql::merge_copy_records(&all))
                    })
            };
            (t.clone(), agreed)
        })
        .collect()
}

/// Validates every file; returns all pipelines or every error of every file.
pub fn load_configs(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<PipelineConfig>> {
    let mut pipelines = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match ferry_config::load_file(f) {
            Ok(p) => pipelines.push(p),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(anyhow!("invalid configuration:\n{}", errors.join("\n")));
    }
    let mut names: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(anyhow!(
            "pipeline name {:?} is used by two config files; names must be unique",
            w[0]
        ))
        .context("invalid configuration");
    }
    Ok(pipelines)
}
