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
    Mysql(Box<MysqlSourceSettings>, Arc<PipelineStats>),
    #[cfg(feature = "kafka")]
    Kafka(Box<crate::kafka::KafkaSourceSettings>, Arc<PipelineStats>),
    /// A source this build leaves out (a cargo feature), with why.
    Missing(&'static str),
}

/// The name the sinks know a source table by, after the transform chain's routes
/// (`ferry_transform::Chain::map_table`); `None` when the chain drops the table.
#[derive(Clone)]
pub struct SinkNames(pub Arc<MapTable>);

/// A table's name after the transform chain; `None` when the chain drops it.
pub type MapTable = dyn Fn(&TableId) -> Option<TableId> + Send + Sync;

impl std::fmt::Debug for SinkNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkNames")
    }
}

impl SinkNames {
    /// The tables among `published` the sinks know as `recorded`.
    pub fn sources_of<'a>(&self, recorded: &TableId, published: &'a [TableId]) -> Vec<&'a TableId> {
        published
            .iter()
            .filter(|t| (self.0)(t).as_ref() == Some(recorded))
            .collect()
    }
}

/// The source `config` describes. `recopies`: online re-copies under way in the sinks, with the cursor they
/// agree on, under the names the sinks know the tables by (PostgreSQL sources resume them); `sink_names` maps
/// source tables to those names when the pipeline has a transform chain.
pub fn open(
    config: &PipelineConfig,
    recopies: Vec<(TableId, Option<String>)>,
    unchanged: Option<crate::snapshot::Unchanged>,
    sink_names: Option<SinkNames>,
    stats: Arc<PipelineStats>,
) -> AnySource {
    match &config.source {
        SourceConfig::Postgres(source) => AnySource::Postgres(
            Box::new(PgSourceSettings {
                pipeline: config.name.clone(),
                config: source.clone(),
                heartbeat_interval: config.heartbeat_interval,
                snapshot_parallelism: config.snapshot_parallelism,
                resumable_snapshot: resumable_snapshot(config, source.snapshot),
                live_blocked: config.live_apply_blocked(),
                raw_copy: crate::snapshot::RawCopy::of(config, unchanged),
                source_timeout: config.source_timeout,
                recopies,
                sink_names,
                node: config.node.clone(),
                vector_tables: vector_tables(config),
            }),
            stats,
        ),
        SourceConfig::Mysql(source) => AnySource::Mysql(
            Box::new(MysqlSourceSettings {
                pipeline: config.name.clone(),
                source_timeout: config.source_timeout,
                config: source.clone(),
                snapshot_parallelism: config.snapshot_parallelism,
                node: config.node.clone(),
                vector_tables: vector_tables(config),
                resumable_snapshot: resumable_snapshot(config, source.snapshot),
                recopies,
                sink_names,
            }),
            stats,
        ),
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(source) => AnySource::Kafka(
            Box::new(crate::kafka::KafkaSourceSettings {
                pipeline: config.name.clone(),
                config: source.clone(),
                sinks: config.sinks.len(),
            }),
            stats,
        ),
        #[cfg(not(feature = "kafka"))]
        SourceConfig::Kafka(_) => AnySource::Missing(
            "this ferry was built without the kafka feature, which the Kafka source needs",
        ),
    }
}

/// Whether a snapshot cut short resumes with what it had not copied: every sink records what it holds (SQL
/// sinks), and the snapshot is not all (`snapshot = "only"` ends with it: one cut short is taken again, never
/// resumed by streaming).
fn resumable_snapshot(config: &PipelineConfig, mode: ferry_config::SnapshotMode) -> bool {
    mode != ferry_config::SnapshotMode::Only
        && config.sinks.iter().all(|s| s.kind.resumes_snapshots())
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
            // Each partition's start comes from the sinks' claims, not from `resume`.
            #[cfg(feature = "kafka")]
            AnySource::Kafka(settings, stats) => {
                crate::kafka::run(&settings, events, acked, shutdown, &stats).await
            }
            AnySource::Missing(why) => Err(Error::fatal(why)),
        }
    }
}
