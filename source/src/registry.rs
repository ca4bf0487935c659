//! The one place that maps a configured source kind (`[source] type = "…"`) to its implementation. Adding a
//! source means a module of its own and an arm here.

use std::sync::Arc;

use ferry_config::{PipelineConfig, SourceConfig};
use ferry_core::{Error, Event, PipelineStats, Position, Resume, Source, SourceExit, TableId};
use tokio::sync::{mpsc, watch};

use crate::mysql::MysqlSourceSettings;
use crate::postgres::PgSourceSettings;

/// A source of any kind.
pub enum AnySource {
    Postgres(Box<PgSourceSettings>, Arc<PipelineStats>),
    Mysql(MysqlSourceSettings, Arc<PipelineStats>),
}

/// The source `config` describes. `recopies`: online re-copies under way in the sinks, with the cursor they
/// agree on (PostgreSQL sources resume them).
pub fn open(
    config: &PipelineConfig,
    recopies: Vec<(TableId, Option<String>)>,
    unchanged: Option<crate::snapshot::Unchanged>,
    stats: Arc<PipelineStats>,
) -> AnySource {
    match &config.source {
        SourceConfig::Postgres(source) => AnySource::Postgres(
            Box::new(PgSourceSettings {
                pipeline: config.name.clone(),
                config: source.clone(),
                heartbeat_interval: config.heartbeat_interval,
                snapshot_parallelism: config.snapshot_parallelism,
                // `snapshot = "only"` ends with its snapshot: one cut short is taken again, never resumed by streaming.
                // A route files a table's record under its target name, which the source cannot re-copy by:
                // a routed pipeline keeps the one-transaction snapshot.
                resumable_snapshot: source.snapshot != ferry_config::SnapshotMode::Only
                    && config.sinks.iter().all(|s| s.kind.resumes_snapshots())
                    && !config
                        .transforms
                        .iter()
                        .any(|t| matches!(t.kind, ferry_config::TransformKind::Route { .. })),
                raw_copy: crate::snapshot::RawCopy::of(config, unchanged),
                source_timeout: config.source_timeout,
                recopies,
                node: config.node.clone(),
                vector_tables: vector_tables(config),
            }),
            stats,
        ),
        SourceConfig::Mysql(source) => AnySource::Mysql(
            MysqlSourceSettings {
                pipeline: config.name.clone(),
                source_timeout: config.source_timeout,
                config: source.clone(),
                snapshot_parallelism: config.snapshot_parallelism,
                node: config.node.clone(),
                vector_tables: vector_tables(config),
            },
            stats,
        ),
    }
}

/// The tables (globs) the pipeline's sinks keep version vectors for.
fn vector_tables(config: &PipelineConfig) -> Vec<String> {
    config
        .sinks
        .iter()
        .flat_map(|s| &s.conflicts.rules)
        .filter(|r| r.version_vectors)
        .flat_map(|r| r.tables.iter().cloned())
        .collect()
}

impl Source for AnySource {
    async fn run(
        self,
        resume: Option<Resume>,
        events: mpsc::Sender<Event>,
        acked: watch::Receiver<Option<Position>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<SourceExit, Error> {
        match self {
            AnySource::Postgres(settings, stats) => {
                crate::postgres::run(&settings, resume, events, acked, shutdown, stats).await
            }
            // The server keeps its binlog regardless of replicas: acknowledgements only serve semi-sync.
            AnySource::Mysql(settings, stats) => {
                let resume = resume.map(|r| r.from);
                crate::mysql::run(&settings, resume, events, acked, shutdown, stats).await
            }
        }
    }
}
