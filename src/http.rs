//! The HTTP endpoints of `ferry run`: `/healthz` (the process answers), `/readyz` (every pipeline is snapshotting
//! or streaming), `/metrics` (Prometheus text format) and `/status` (JSON, read by `ferry status`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_core::stats::SnapshotReport;
use ferry_core::{PipelineState, PipelineStats};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::info;

type Registry = Arc<Vec<Arc<PipelineStats>>>;

/// The environment variable holding the bearer token `/status` and `/metrics` require (none: no token).
pub const TOKEN_ENV: &str = "FERRY_HTTP_TOKEN";

fn bearer_token() -> Option<Arc<str>> {
    std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Arc::from)
}

async fn require_token(
    token: Option<Arc<str>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compared without an early exit, so the time taken says nothing about the token.
    let matches = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("a bearer token is required ({TOKEN_ENV})\n"),
        )
            .into_response()
    }
}

/// Binds `addr` now (so a taken port fails `ferry run` at once) and serves until `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    pipelines: Vec<Arc<PipelineStats>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the HTTP endpoints; choose another address with --http ADDR, or --http off"))?;
    info!(address = %listener.local_addr()?, "serving /healthz /readyz /metrics /status");
    let token = bearer_token();
    if token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(address = %addr, "the HTTP endpoints listen beyond this machine without authentication: \
            /status and /metrics tell anyone who reaches them about your pipelines; set {TOKEN_ENV} to require a \
            bearer token, or listen on 127.0.0.1");
    }
    // Probes stay open; what describes the pipelines needs the token when one is set.
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route_layer(axum::middleware::from_fn(move |req, next| {
            require_token(token.clone(), req, next)
        }));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/wait", get(wait))
        .merge(guarded)
        .with_state(Arc::new(pipelines));
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, "the HTTP server stopped");
        }
    }))
}

async fn readyz(State(pipelines): State<Registry>) -> Response {
    let alerting = pipelines.iter().filter_map(|p| {
        let alerts = p.alerts();
        (p.alerts_gate_readiness.load(Relaxed) && !alerts.is_empty()).then(|| {
            let what: Vec<String> = alerts.iter().map(|(n, m)| format!("{n} ({m})")).collect();
            format!("{}: alert {}", p.name, what.join(", "))
        })
    });
    let not_ready: Vec<String> = pipelines
        .iter()
        .filter_map(|p| match p.state() {
            PipelineState::Snapshotting | PipelineState::Streaming => None,
            PipelineState::Retrying { error: why }
            | PipelineState::Failed { error: why }
            | PipelineState::Standby { owner: why }
            | PipelineState::Paused { reason: why } => {
                Some(format!("{}: {} ({why})", p.name, state_name(&p.state())))
            }
            other => Some(format!("{}: {}", p.name, state_name(&other))),
        })
        .chain(alerting)
        .collect();
    if not_ready.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", not_ready.join("\n")),
        )
            .into_response()
    }
}

/// `GET /wait?pipeline=P&position=X&timeout=5s`: read your writes. Answers 200 once every sink of pipeline `P`
/// has durably applied position `X` (an LSN, a MariaDB GTID position or a MySQL GTID set, see
/// [`ferry_core::WaitPoint`]), 408 when `timeout` (default 5 s, at most 60 s) passes first, 400 for a request it
/// cannot answer, 404 for an unknown pipeline.
async fn wait(
    State(pipelines): State<Registry>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let bad = |why: String| (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
    let Some(name) = query.get("pipeline") else {
        return bad("missing pipeline=<name>".into());
    };
    let Some(p) = pipelines.iter().find(|p| &p.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no pipeline {name:?} here\n"),
        )
            .into_response();
    };
    let point: ferry_core::WaitPoint = match query.get("position").map(|t| t.parse()) {
        Some(Ok(point)) => point,
        Some(Err(e)) => return bad(format!("position: {e}")),
        None => return bad("missing position=<LSN or GTIDs>".into()),
    };
    let timeout = match query
        .get("timeout")
        .map(|t| ferry_config::parse_duration(t))
    {
        None => std::time::Duration::from_secs(5),
        Some(Some(d)) if d <= std::time::Duration::from_secs(60) => d,
        Some(_) => {
            return bad("timeout: expected a duration up to 60s, such as 500ms or 5s".into())
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut woken: Option<tokio::time::Instant> = None;
    loop {
        let mut reached = true;
        for s in &p.sinks {
            match s.checkpoint().map(|c| point.reached_by(&c)) {
                Some(Some(true)) => {}
                Some(None) => {
                    return bad(format!(
                        "position {} does not belong to the source of pipeline {name}",
                        query["position"]
                    ))
                }
                _ => reached = false,
            }
        }
        if reached {
            return (StatusCode::OK, "applied\n").into_response();
        }
        if woken.is_none_or(|at| at.elapsed() >= std::time::Duration::from_millis(250)) {
            // Past the last transaction the pipeline carried, the position moves only with the next heartbeat:
            // ask for one now (and again while waiting).
            p.source_wake.notify_one();
            woken = Some(tokio::time::Instant::now());
        }
        if tokio::time::Instant::now() >= deadline {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!("not applied by every sink of {name} within {timeout:?}\n"),
            )
                .into_response();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn state_name(state: &PipelineState) -> &'static str {
    match state {
        PipelineState::Starting => "starting",
        PipelineState::Snapshotting => "snapshotting",
        PipelineState::Streaming => "streaming",
        PipelineState::Retrying { .. } => "retrying",
        PipelineState::Standby { .. } => "standby",
        PipelineState::Paused { .. } => "paused",
        PipelineState::Failed { .. } => "failed",
        PipelineState::Stopped => "stopped",
    }
}

/// One pipeline as `/status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveStatus {
    pub pipeline: String,
    pub state: String,
    pub error: Option<String>,
    pub restarts: u64,
    pub source_events: u64,
    pub source_transactions: u64,
    pub snapshot: Option<SnapshotReport>,
    pub sinks: Vec<LiveSink>,
    /// Tables whose changes are no longer applied, with why (`on_schema_change = "quarantine"`).
    #[serde(default)]
    pub quarantined: Vec<String>,
    /// Online re-copies of this run (`ferry snapshot --table`, `on_schema_change = "resnapshot"`).
    #[serde(default)]
    pub recopies: Vec<RecopyReport>,
    /// Alerts firing (`[pipeline.alerts]`): `name: what crossed which threshold`.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// WAL the slot holds back on the source, bytes (PostgreSQL sources, once measured).
    #[serde(default)]
    pub retained_wal_bytes: Option<u64>,
}

/// How far an online re-copy got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecopyReport {
    pub table: String,
    pub rows_copied: u64,
    pub finished: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveSink {
    pub name: String,
    pub checkpoint: Option<String>,
    pub rows: u64,
    pub transactions: u64,
    pub batches: u64,
    pub lag_seconds: Option<f64>,
    /// Source WAL between the server's position and the checkpoint (PostgreSQL sources, once measured).
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// Dead letters its target holds.
    #[serde(default)]
    pub dead_letters: u64,
}

fn live_status(p: &PipelineStats) -> LiveStatus {
    let state = p.state();
    let error = match &state {
        PipelineState::Retrying { error }
        | PipelineState::Failed { error }
        | PipelineState::Standby { owner: error }
        | PipelineState::Paused { reason: error } => Some(error.clone()),
        _ => None,
    };
    LiveStatus {
        pipeline: p.name.clone(),
        state: state_name(&state).to_owned(),
        error,
        restarts: p.restarts.load(Relaxed),
        source_events: p.source_events.load(Relaxed),
        source_transactions: p.source_transactions.load(Relaxed),
        snapshot: p.snapshot.report(),
        quarantined: p
            .quarantined()
            .into_iter()
            .map(|(t, why)| format!("{t}: {why}"))
            .collect(),
        recopies: p
            .recopies()
            .into_iter()
            .map(|(table, rows_copied, finished)| RecopyReport {
                table,
                rows_copied,
                finished,
            })
            .collect(),
        sinks: p
            .sinks
            .iter()
            .map(|s| LiveSink {
                name: s.name.clone(),
                checkpoint: s.checkpoint().map(|c| c.to_string()),
                rows: s.rows.load(Relaxed),
                transactions: s.transactions.load(Relaxed),
                batches: s.batches.load(Relaxed),
                lag_seconds: s.lag_seconds(),
                lag_bytes: p.lag_bytes(s),
                dead_letters: s.dead_letters.load(Relaxed),
            })
            .collect(),
        alerts: p
            .alerts()
            .into_iter()
            .map(|(n, m)| format!("{n}: {m}"))
            .collect(),
        retained_wal_bytes: p.retained_wal(),
    }
}

async fn status(State(pipelines): State<Registry>) -> Json<Vec<LiveStatus>> {
    Json(pipelines.iter().map(|p| live_status(p)).collect())
}

/// Reads `/status` from a running `ferry run` (for `ferry status`). A plain HTTP/1.0 GET: the one request this
/// client makes does not justify an HTTP client dependency.
pub async fn fetch_status(addr: SocketAddr) -> anyhow::Result<Vec<LiveStatus>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let auth = bearer_token()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        stream
            .write_all(format!("GET /status HTTP/1.0\r\nHost: ferry\r\n{auth}\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(3), exchange)
        .await
        .context("no answer within 3 s")??;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("not an HTTP response")?;
    if !response.starts_with(b"HTTP/1.1 200") && !response.starts_with(b"HTTP/1.0 200") {
        anyhow::bail!(
            "unexpected answer: {}",
            String::from_utf8_lossy(&response[..split])
        );
    }
    serde_json::from_slice(&response[split + 4..]).context("not a ferry /status answer")
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(pipelines): State<Registry>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(&pipelines),
    )
        .into_response()
}

fn render_metrics(pipelines: &[Arc<PipelineStats>]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let per_pipeline = |f: &dyn Fn(&PipelineStats) -> Option<f64>| -> Vec<(String, f64)> {
        pipelines
            .iter()
            .filter_map(|p| f(p).map(|v| (format!("pipeline=\"{}\"", label(&p.name)), v)))
            .collect()
    };
    let per_sink = |f: &dyn Fn(&ferry_core::SinkStats) -> Option<f64>| -> Vec<(String, f64)> {
        pipelines
            .iter()
            .flat_map(|p| {
                p.sinks.iter().filter_map(move |s| {
                    f(s).map(|v| {
                        (
                            format!(
                                "pipeline=\"{}\",sink=\"{}\"",
                                label(&p.name),
                                label(&s.name)
                            ),
                            v,
                        )
                    })
                })
            })
            .collect()
    };
    family(
        "ferry_pipeline_up",
        "gauge",
        "1 while the pipeline is snapshotting or streaming.",
        per_pipeline(&|p| {
            Some(match p.state() {
                PipelineState::Snapshotting | PipelineState::Streaming => 1.0,
                _ => 0.0,
            })
        }),
    );
    family(
        "ferry_quarantined_tables",
        "gauge",
        "Tables whose changes are no longer applied (on_schema_change = \"quarantine\").",
        per_pipeline(&|p| Some(p.quarantined().len() as f64)),
    );
    family(
        "ferry_pipeline_restarts_total",
        "counter",
        "Restarts after transient failures.",
        per_pipeline(&|p| Some(p.restarts.load(Relaxed) as f64)),
    );
    family(
        "ferry_transform_rows_filtered_total",
        "counter",
        "Source rows the transform stage left out (filters).",
        per_pipeline(&|p| Some(p.rows_filtered.load(Relaxed) as f64)),
    );
    family(
        "ferry_source_origin_skipped_total",
        "counter",
        "Source row changes left out because their transaction was applied under a skipped replication origin (loop prevention).",
        per_pipeline(&|p| Some(p.origin_skipped.load(Relaxed) as f64)),
    );
    family(
        "ferry_conflicts_total",
        "counter",
        "Conflicts a sink detected and resolved, per table, type and resolution (each is a row of ferry_conflicts in the target).",
        pipelines
            .iter()
            .flat_map(|p| {
                p.sinks.iter().flat_map(move |s| {
                    s.conflicts().into_iter().map(move |(table, kind, resolution, n)| {
                        (
                            format!(
                                "pipeline=\"{}\",sink=\"{}\",table=\"{}\",type=\"{kind}\",resolution=\"{resolution}\"",
                                label(&p.name),
                                label(&s.name),
                                label(&table)
                            ),
                            n as f64,
                        )
                    })
                })
            })
            .collect(),
    );
    family(
        "ferry_sink_rows_set_aside_total",
        "counter",
        "Row changes a target refused that the pipeline's on_error policy set aside, per table, outcome (dead_letter: kept in ferry_dead_letters; skip: left out) and the target's error code (follows: after an earlier dead letter of its key).",
        pipelines
            .iter()
            .flat_map(|p| {
                p.sinks.iter().flat_map(move |s| {
                    s.set_aside().into_iter().map(move |(table, outcome, code, n)| {
                        (
                            format!(
                                "pipeline=\"{}\",sink=\"{}\",table=\"{}\",outcome=\"{outcome}\",code=\"{}\"",
                                label(&p.name),
                                label(&s.name),
                                label(&table),
                                label(&code)
                            ),
                            n as f64,
                        )
                    })
                })
            })
            .collect(),
    );
    family(
        "ferry_sink_dead_letters",
        "gauge",
        "Dead letters the sink's target holds in ferry_dead_letters (ferry dead-letters list).",
        per_sink(&|s| Some(s.dead_letters.load(Relaxed) as f64)),
    );
    family(
        "ferry_sink_row_retries_total",
        "counter",
        "Tries of a refused row change after its first (on_error, [pipeline.retry] attempts).",
        per_sink(&|s| Some(s.row_retries.load(Relaxed) as f64)),
    );
    family(
        "ferry_pipeline_backoff_seconds",
        "gauge",
        "The back-off the pipeline waits out before restarting after a transient failure (0: none).",
        per_pipeline(&|p| Some(p.backoff_ms.load(Relaxed) as f64 / 1000.0)),
    );
    family(
        "ferry_transform_rows_skipped_total",
        "counter",
        "Rows a transform failed on and left out (on_error = \"skip\"), per stage and table.",
        pipelines
            .iter()
            .flat_map(|p| {
                p.rows_skipped().into_iter().map(move |(stage, table, n)| {
                    (
                        format!(
                            "pipeline=\"{}\",stage=\"{}\",table=\"{}\"",
                            label(&p.name),
                            label(&stage),
                            label(&table)
                        ),
                        n as f64,
                    )
                })
            })
            .collect(),
    );
    family(
        "ferry_source_events_total",
        "counter",
        "Events read from the source, before filters.",
        per_pipeline(&|p| Some(p.source_events.load(Relaxed) as f64)),
    );
    family(
        "ferry_source_transactions_total",
        "counter",
        "Source transactions read.",
        per_pipeline(&|p| Some(p.source_transactions.load(Relaxed) as f64)),
    );
    family(
        "ferry_snapshot_rows_copied",
        "gauge",
        "Rows copied by the current or last initial snapshot.",
        per_pipeline(&|p| p.snapshot.report().map(|r| r.rows_copied as f64)),
    );
    family(
        "ferry_snapshot_rows_estimated",
        "gauge",
        "Rows the snapshot expects to copy (from pg_class.reltuples).",
        per_pipeline(&|p| p.snapshot.report().map(|r| r.rows_estimated as f64)),
    );
    family(
        "ferry_sink_rows_total",
        "counter",
        "Row changes applied by the sink.",
        per_sink(&|s| Some(s.rows.load(Relaxed) as f64)),
    );
    family(
        "ferry_sink_transactions_total",
        "counter",
        "Source transactions applied by the sink.",
        per_sink(&|s| Some(s.transactions.load(Relaxed) as f64)),
    );
    family(
        "ferry_sink_live_abandoned_total",
        "counter",
        "Transactions applied while still in progress at the source, then undone (aborted there, or applied again whole at their commit).",
        per_sink(&|s| Some(s.live_abandoned.load(Relaxed) as f64)),
    );
    family(
        "ferry_sink_batches_total",
        "counter",
        "Target transactions committed with a checkpoint.",
        per_sink(&|s| Some(s.batches.load(Relaxed) as f64)),
    );
    family(
        "ferry_sink_checkpoint_lsn",
        "gauge",
        "The sink's durable position as a number (PostgreSQL LSN).",
        per_sink(&|s| s.checkpoint().and_then(|c| c.as_lsn()).map(|l| l.0 as f64)),
    );
    family(
        "ferry_sink_lag_seconds",
        "gauge",
        "Seconds from the source commit of the last durable transaction (or the last durable heartbeat of an idle source) to now.",
        per_sink(&|s| s.lag_seconds()),
    );
    family(
        "ferry_sink_lag_bytes",
        "gauge",
        "Source log between the server's current position and the sink's checkpoint, bytes: WAL (PostgreSQL) or binlog (MySQL / MariaDB).",
        pipelines
            .iter()
            .flat_map(|p| {
                p.sinks.iter().filter_map(move |s| {
                    p.lag_bytes(s).map(|b| {
                        (
                            format!("pipeline=\"{}\",sink=\"{}\"", label(&p.name), label(&s.name)),
                            b as f64,
                        )
                    })
                })
            })
            .collect(),
    );
    family(
        "ferry_source_retained_wal_bytes",
        "gauge",
        "WAL the pipeline's replication slot holds back on the source, bytes (PostgreSQL sources).",
        per_pipeline(&|p| p.retained_wal().map(|b| b as f64)),
    );
    family(
        "ferry_alert_firing",
        "gauge",
        "Per [pipeline.alerts] threshold (lag_seconds, lag_bytes, retained_wal): 1 while crossed, 0 while clear.",
        pipelines
            .iter()
            .flat_map(|p| {
                p.alert_states().into_iter().map(move |(name, firing)| {
                    (
                        format!("pipeline=\"{}\",alert=\"{name}\"", label(&p.name)),
                        f64::from(u8::from(firing)),
                    )
                })
            })
            .collect(),
    );
    histogram(
        &mut out,
        "ferry_sink_commit_lag_seconds",
        "Seconds from each source transaction's commit to its commit in the sink (end-to-end lag).",
        pipelines,
        |s| &s.lag,
    );
    histogram(
        &mut out,
        "ferry_sink_apply_seconds",
        "Seconds each apply that commits takes in the sink (a batch, or a group of batches).",
        pipelines,
        |s| &s.apply_seconds,
    );
    out
}

/// A histogram family per sink (`_bucket{le}`, `_sum`, `_count`).
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    pipelines: &[Arc<PipelineStats>],
    of: impl Fn(&ferry_core::SinkStats) -> &ferry_core::stats::Histogram,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for p in pipelines {
        for s in &p.sinks {
            let labels = format!(
                "pipeline=\"{}\",sink=\"{}\"",
                label(&p.name),
                label(&s.name)
            );
            let (buckets, sum, count) = of(s).read();
            for (le, n) in buckets {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_escape_labels_and_declare_types() {
        let stats = Arc::new(PipelineStats::new("a\"b", &["s"]));
        stats.set_state(PipelineState::Streaming);
        stats.source_events.store(7, Relaxed);
        let text = render_metrics(&[stats]);
        assert!(
            text.contains("# TYPE ferry_source_events_total counter"),
            "{text}"
        );
        assert!(
            text.contains("ferry_source_events_total{pipeline=\"a\\\"b\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("ferry_pipeline_up{pipeline=\"a\\\"b\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_sink_rows_total{pipeline=\"a\\\"b\",sink=\"s\"} 0"),
            "{text}"
        );
    }
}
