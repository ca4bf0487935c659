//! The subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ferry_config::SourceConfig;
use ferry_core::{Lsn, PipelineStats, Position};
use ferry_source::postgres as pg;
use serde::Serialize;
use tokio::sync::watch;
use tracing::info;

use crate::http::LiveStatus;
use crate::runtime::{load_configs, run_pipeline};

/// How long SIGTERM waits for the pipelines to write their last checkpoint.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// `ferry run`: every pipeline until SIGTERM / SIGINT, then a graceful stop.
pub async fn run(files: &[PathBuf], http: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let pipelines = load_configs(files)?;
    let stats: Vec<Arc<PipelineStats>> = pipelines
        .iter()
        .map(|p| {
            let sinks: Vec<&str> = p.sinks.iter().map(|s| s.name.as_str()).collect();
            Arc::new(PipelineStats::new(&p.name, &sinks))
        })
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = match http {
        Some(addr) => Some(crate::http::serve(addr, stats.clone(), stop_rx.clone()).await?),
        None => None,
    };
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("stopping: finishing the batch in flight and writing the checkpoint");
        let _ = stop_tx.send(true);
        // A connection that never answers must not hold the process: exactly-once does not need the last flush
        // (the next start resumes from the checkpoints), so after the grace period the process just exits.
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::error!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "a pipeline did not stop within the grace period (a connection that does not answer); exiting \
             without its last checkpoint: the next start resumes from the one before"
        );
        std::process::exit(2);
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (p, stats) in pipelines.into_iter().zip(stats) {
        tasks.spawn(run_pipeline(p, stats, stop_rx.clone()));
    }
    let mut failed = false;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("ferry: {e:#}");
                failed = true;
            }
            Err(e) => {
                eprintln!("ferry: pipeline task failed: {e}");
                failed = true;
            }
        }
    }
    if let Some(server) = server {
        server.abort();
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `ferry check`: connects and reports every prerequisite with its fix.
pub async fn check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let pipelines = load_configs(files)?;
    let mut all_ok = true;
    for p in &pipelines {
        println!("pipeline {} ({})", p.name, p.file.display());
        let outcomes = match &p.source {
            SourceConfig::Postgres(source) => match pg::connect_client(&source.url).await {
                Ok(client) => match pg::check_prerequisites(&client, source).await {
                    Ok(mut outcomes) => {
                        outcomes.push(pg::multimaster::loop_check(&client, p).await?);
                        outcomes.extend(pg::multimaster::sum_delta_check(&client, p).await?);
                        Ok(outcomes)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            SourceConfig::Mysql(source) => ferry_source::mysql::check_prerequisites(source).await,
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(source) => ferry_source::kafka::check_prerequisites(source).await,
            #[cfg(not(feature = "kafka"))]
            SourceConfig::Kafka(_) => Err(ferry_core::Error::fatal(
                "this ferry was built without the kafka feature, which the Kafka source needs",
            )),
        };
        // A source that cannot be reached still lets the sinks be checked: every failure at once.
        let outcomes = match outcomes {
            Ok(outcomes) => outcomes,
            Err(e) => {
                println!("  FAIL source: {e}");
                if matches!(p.source, SourceConfig::Kafka(_)) {
                    println!("       fix: check [source] brokers and the TLS / SASL properties in [source.kafka], and that the brokers let this client in from here");
                } else {
                    println!("       fix: check the host, port, user, password and TLS settings in [source] url, and that the server lets this user in from here");
                }
                all_ok = false;
                Vec::new()
            }
        };
        for o in outcomes {
            if o.ok {
                println!("  ok   {}: {}", o.name, o.detail);
            } else {
                all_ok = false;
                println!("  FAIL {}: {}", o.name, o.detail);
                if let Some(fix) = o.fix {
                    println!("       fix: {fix}");
                }
            }
        }
        for sink in &p.sinks {
            let reachable = ferry_sink::registry::probe(&p.name, sink).await;
            match reachable {
                Ok(()) => println!("  ok   sink {}: reachable", sink.name),
                Err(e) => {
                    all_ok = false;
                    println!("  FAIL sink {}: {e}", sink.name);
                }
            }
            if p.node.is_some() {
                match ferry_sink::registry::probe_origin_grants(sink).await {
                    Ok(Some(detail)) => println!("  ok   sink {} origin: {detail}", sink.name),
                    Ok(None) => {}
                    Err(e) => {
                        all_ok = false;
                        println!("  FAIL sink {} origin: {e}", sink.name);
                    }
                }
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Serialize)]
struct SinkStatus {
    name: String,
    checkpoint: Option<String>,
    updated_at: Option<String>,
    lag_bytes: Option<u64>,
    /// From the running process; 0 when the sink holds everything; unknown otherwise.
    lag_seconds: Option<f64>,
    /// Row changes its target refused and keeps in ferry_dead_letters.
    dead_letters: usize,
    /// A Kafka source: where the sink stands in each partition.
    partitions: Vec<PartitionStatus>,
}

/// One Kafka partition as a sink holds it.
#[derive(Serialize)]
struct PartitionStatus {
    partition: String,
    /// The next offset the sink applies (`None`: claimed, nothing applied yet).
    next: Option<i64>,
    /// The partition's end (high watermark), when the brokers answered.
    end: Option<i64>,
    /// Records (and transaction markers) between the two.
    behind: Option<i64>,
}

#[derive(Serialize)]
struct PipelineStatus {
    pipeline: String,
    /// PostgreSQL sources only.
    slot: Option<String>,
    slot_exists: bool,
    slot_active: bool,
    confirmed_flush_lsn: Option<String>,
    /// The source's current position: WAL LSN, or binlog file:offset.
    current_wal_lsn: String,
    slot_lag_bytes: Option<u64>,
    sinks: Vec<SinkStatus>,
    /// The running process's view (state, snapshot progress), when its /status answered.
    process: Option<LiveStatus>,
    /// A Kafka source: its consumer group's members and assignment.
    #[cfg(feature = "kafka")]
    group: Option<ferry_source::kafka::GroupStatus>,
}

/// `ferry status`.
pub async fn status(
    files: &[PathBuf],
    json: bool,
    http: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let pipelines = load_configs(files)?;
    let live = match http {
        Some(addr) => match crate::http::fetch_status(addr).await {
            Ok(live) => live,
            Err(e) => {
                if !json {
                    println!("ferry run is not answering at http://{addr}/status ({e:#}); showing stored state only");
                }
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    for p in &pipelines {
        let process = live.iter().find(|l| l.pipeline == p.name);
        // PostgreSQL: the slot and the WAL position; MySQL: the server's current binlog position.
        let (slot_name, slot, current, source_position) = match &p.source {
            SourceConfig::Postgres(source) => {
                let client = pg::connect_client(&source.url)
                    .await
                    .context("connecting to the source")?;
                let slot = pg::slot_info(&client, &source.slot).await?;
                let current = pg::current_wal_lsn(&client).await?;
                (
                    Some(source.slot.clone()),
                    slot,
                    Some(current),
                    current.to_string(),
                )
            }
            SourceConfig::Mysql(source) => {
                let position = ferry_source::mysql::current_position(&source.url)
                    .await
                    .context("reading the source's binlog position")?;
                (None, None, None, position)
            }
            // Per partition, in each sink's lines below.
            SourceConfig::Kafka(source) => {
                (None, None, None, format!("Kafka group {}", source.group_id))
            }
        };
        let lag = |lsn: Lsn| current.map_or(0, |c| c.0.saturating_sub(lsn.0));
        let mut sinks = Vec::new();
        for sink in &p.sinks {
            let stored = ferry_sink::registry::stored_checkpoint(&p.name, sink).await?;
            let position: Option<Position> = stored.as_ref().and_then(|c| c.position.parse().ok());
            let lag_bytes = position.as_ref().and_then(Position::as_lsn).map(lag);
            let live_lag = process
                .and_then(|l| l.sinks.iter().find(|s| s.name == sink.name))
                .and_then(|s| s.lag_seconds);
            let dead_letters = ferry_sink::registry::list_dead_letters(&p.name, sink, None, None)
                .await?
                .len();
            sinks.push(SinkStatus {
                name: sink.name.clone(),
                checkpoint: position.as_ref().map(ToString::to_string),
                updated_at: stored.map(|c| c.updated_at),
                lag_bytes,
                lag_seconds: live_lag.or((lag_bytes == Some(0)).then_some(0.0)),
                dead_letters,
                partitions: Vec::new(),
            });
        }
        // A Kafka source: each sink's offset per partition beside the partition's end, and the group.
        #[cfg(feature = "kafka")]
        let group = match &p.source {
            SourceConfig::Kafka(source) => {
                let offsets =
                    |s: &SinkStatus| match s.checkpoint.as_deref().map(str::parse::<Position>) {
                        Some(Ok(Position::Kafka(o))) => o,
                        _ => ferry_core::KafkaOffsets::default(),
                    };
                let mut all: Vec<ferry_core::TopicPartition> = sinks
                    .iter()
                    .flat_map(|s| {
                        offsets(s)
                            .iter()
                            .map(|(tp, _)| tp.clone())
                            .collect::<Vec<_>>()
                    })
                    .collect();
                all.sort();
                all.dedup();
                let (group, ends) = ferry_source::kafka::group_status(source, all.clone()).await?;
                for s in &mut sinks {
                    let held = offsets(s);
                    s.partitions = held
                        .iter()
                        .map(|(tp, mark)| {
                            let end = all.iter().position(|t| t == tp).and_then(|i| ends[i]);
                            PartitionStatus {
                                partition: tp.to_string(),
                                next: mark.next,
                                end,
                                behind: end.map(|e| (e - mark.next.unwrap_or(0)).max(0)),
                            }
                        })
                        .collect();
                }
                Some(group)
            }
            _ => None,
        };
        let status = PipelineStatus {
            pipeline: p.name.clone(),
            slot: slot_name.clone(),
            slot_exists: slot.is_some(),
            slot_active: slot.as_ref().is_some_and(|s| s.active),
            confirmed_flush_lsn: slot
                .as_ref()
                .and_then(|s| s.confirmed_flush)
                .map(|l| l.to_string()),
            current_wal_lsn: source_position,
            slot_lag_bytes: slot.as_ref().and_then(|s| s.confirmed_flush).map(lag),
            sinks,
            process: process.cloned(),
            #[cfg(feature = "kafka")]
            group,
        };
        if json {
            println!("{}", serde_json::to_string(&status)?);
        } else {
            println!("pipeline {}", status.pipeline);
            if let Some(l) = &status.process {
                println!(
                    "  process: {}{}, {} restarts, {} source transactions read",
                    l.state,
                    l.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                    l.restarts,
                    l.source_transactions
                );
                for q in &l.quarantined {
                    println!("  QUARANTINED {q}");
                }
                for r in &l.recopies {
                    let state = if r.finished { "done" } else { "copying" };
                    println!("  re-copy of {}: {state}, {} rows", r.table, r.rows_copied);
                }
                if let Some(s) = &l.snapshot {
                    println!(
                        "  snapshot: {}{:.1}% — {} of ~{} rows, {} rows/s, {} of {} tables{}",
                        if s.finished { "done, " } else { "" },
                        s.percent,
                        s.rows_copied,
                        s.rows_estimated,
                        s.rows_per_s,
                        s.tables_done,
                        s.tables_total,
                        s.eta_s.map(|e| format!(", ETA {e} s")).unwrap_or_default()
                    );
                }
            }
            match (&status.slot, &status.confirmed_flush_lsn) {
                // A Kafka source's group is shown on its own line.
                (None, _) if matches!(p.source, SourceConfig::Kafka(_)) => {}
                (None, _) => println!("  source binlog at {}", status.current_wal_lsn),
                (Some(slot), Some(lsn)) => println!(
                    "  slot {slot}: confirmed {lsn}, {} ({} bytes behind {})",
                    if status.slot_active {
                        "active"
                    } else {
                        "inactive"
                    },
                    status.slot_lag_bytes.unwrap_or(0),
                    status.current_wal_lsn
                ),
                (Some(slot), None) => {
                    println!("  slot {slot}: missing (the next run takes a new snapshot)")
                }
            }
            if let Some(live) = &status.process {
                for alert in &live.alerts {
                    println!("  alert {alert}");
                }
            }
            #[cfg(feature = "kafka")]
            if let Some(g) = &status.group {
                println!(
                    "  Kafka group {}: {}, {} members",
                    g.group,
                    g.state,
                    g.members.len()
                );
                for m in &g.members {
                    println!(
                        "    {} ({}): {}",
                        m.client_id,
                        m.host,
                        m.partitions.join(", ")
                    );
                }
            }
            for s in &status.sinks {
                if !s.partitions.is_empty() {
                    println!(
                        "  sink {}: offsets at {}",
                        s.name,
                        s.updated_at.as_deref().unwrap_or("?")
                    );
                    for p in &s.partitions {
                        let next = p.next.map_or_else(
                            || "nothing applied".to_owned(),
                            |n| format!("next offset {n}"),
                        );
                        match (p.end, p.behind) {
                            (Some(end), Some(behind)) => {
                                println!("    {}: {next} of {end} ({behind} behind)", p.partition)
                            }
                            _ => println!("    {}: {next}", p.partition),
                        }
                    }
                    continue;
                }
                match (&s.checkpoint, s.lag_bytes) {
                    (Some(cp), lag) => println!(
                        "  sink {}: checkpoint {cp} at {}{}{}{}",
                        s.name,
                        s.updated_at.as_deref().unwrap_or("?"),
                        lag.map(|l| format!(", {l} bytes behind"))
                            .unwrap_or_default(),
                        s.lag_seconds
                            .map(|l| format!(", lag {l:.1} s"))
                            .unwrap_or_default(),
                        match s.dead_letters {
                            0 => String::new(),
                            n => format!(", {n} dead letters (ferry dead-letters list)"),
                        }
                    ),
                    (None, _) => println!("  sink {}: no checkpoint (snapshot pending)", s.name),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry reset --yes`.
/// `ferry snapshot --table`: asks each pipeline that replicates the tables to copy them anew while streaming.
pub async fn snapshot(files: &[PathBuf], tables: &[String]) -> anyhow::Result<ExitCode> {
    let pipelines = load_configs(files)?;
    let mut wanted = Vec::new();
    for t in tables {
        match table_arg(t) {
            Some(id) => wanted.push(id),
            None => anyhow::bail!(
                "--table {t:?}: expected schema.table (a bare name is in public; double-quote a name holding a dot: \
                 'public.\"dot.ted\"')"
            ),
        }
    }
    let mut failed = false;
    for p in &pipelines {
        let SourceConfig::Postgres(source) = &p.source else {
            eprintln!(
                "pipeline {}: re-copying a table online is built for PostgreSQL sources only; with a MySQL or                  MariaDB source, `ferry reset --yes` copies every table anew",
                p.name
            );
            failed = true;
            continue;
        };
        for table in &wanted {
            match pg::request_recopy(source, table).await {
                Ok(()) => println!(
                    "pipeline {}: asked to re-copy {table}; `ferry status` shows its progress",
                    p.name
                ),
                Err(e) => {
                    eprintln!("pipeline {}: {table}: {e}", p.name);
                    failed = true;
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A table named on the command line: `schema.table` or `table` (in `public`), each part as is or double-quoted
/// as in SQL (`"Sales Dept"."Order Items"`, `public."dot.ted"`; `""` is a quote inside). Names match exactly.
pub(crate) fn table_arg(text: &str) -> Option<ferry_core::TableId> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(_) => return None,
        }
    }
    match parts.as_slice() {
        [name] => Some(ferry_core::TableId::new("public", name.clone())),
        [schema, name] => Some(ferry_core::TableId::new(schema.clone(), name.clone())),
        _ => None,
    }
}

/// `ferry conflicts`: the conflicts each sink logged, as text or JSON.
pub async fn conflicts(
    files: &[PathBuf],
    table: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pipelines = load_configs(files)?;
    let table = table.map(|t| {
        ferry_core::TableId::parse(t, "public").map_or_else(|| t.to_owned(), |id| id.to_string())
    });
    let mut all = Vec::new();
    for p in &pipelines {
        for sink in &p.sinks {
            let found = ferry_sink::registry::list_conflicts(&p.name, sink, table.as_deref())
                .await
                .with_context(|| {
                    format!(
                        "reading the conflicts of pipeline {} sink {}",
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
        println!("no conflicts logged");
    }
    for c in &all {
        println!(
            "{} {}/{} {} {} {}: {} ({}) — local {} @ {}, remote {} @ {}",
            c.detected_at,
            c.pipeline,
            c.sink,
            c.table,
            c.key,
            c.kind,
            c.winner,
            c.resolver,
            c.local_node.as_deref().unwrap_or("-"),
            c.local_ts.map_or("-".to_owned(), |t| t.to_string()),
            c.remote_node,
            c.remote_ts
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn reset(files: &[PathBuf], yes: bool) -> anyhow::Result<ExitCode> {
    let pipelines = load_configs(files)?;
    if !yes {
        eprintln!("ferry reset drops the replication slot, the publication and every sink's checkpoint; the next run copies all tables again. Add --yes to confirm.");
        return Ok(ExitCode::FAILURE);
    }
    for p in &pipelines {
        // A MySQL source keeps nothing on the server for Ferry: only the checkpoints go.
        if let SourceConfig::Postgres(source) = &p.source {
            let dropped = pg::reset(source).await?;
            println!(
                "pipeline {}: slot {} {}",
                p.name,
                source.slot,
                if dropped { "dropped" } else { "was absent" }
            );
            println!(
                "pipeline {}: publication {} dropped",
                p.name, source.publication
            );
        }
        for sink in &p.sinks {
            ferry_sink::registry::delete_checkpoints(&p.name, sink).await?;
            println!("pipeline {}: sink {} checkpoint removed", p.name, sink.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::table_arg;

    #[test]
    fn table_arguments_take_quoted_parts() {
        let t = |s: &str| table_arg(s).map(|t| (t.schema, t.name));
        let pair = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
        assert_eq!(t("orders"), pair("public", "orders"));
        assert_eq!(t("shop.orders"), pair("shop", "orders"));
        assert_eq!(t("public.\"dot.ted\""), pair("public", "dot.ted"));
        assert_eq!(t("\"dot.ted\""), pair("public", "dot.ted"));
        assert_eq!(
            t("\"Sales Dept\".\"Order \"\"Items\"\"\""),
            pair("Sales Dept", "Order \"Items\"")
        );
        assert_eq!(
            t("Sales Dept.Order Items"),
            pair("Sales Dept", "Order Items")
        );
        for bad in ["a.b.c", "", ".x", "x.", "\"open", "\"a\"b"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
