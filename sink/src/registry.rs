//! The one place that maps a configured sink kind (`[[sink]] type = "…"`) to its implementation: opening it for a
//! pipeline, and reading, deleting or probing its stored checkpoint for `ferry status`, `reset` and `check`.
//! Adding a sink means a module of its own and an arm in each function here.

use ferry_config::{PipelineConfig, SinkConfig, SinkKind};
use ferry_core::dead_letter::StoredDeadLetter;
use ferry_core::{DeadLetter, Error, Event, Position, Savepoint, Sink, TableId};

use crate::{DiscardSink, MysqlSink, PostgresSink, SqliteSink};

/// A sink of any kind, so sinks of different kinds share one pipeline.
pub enum AnySink {
    Postgres(PostgresSink),
    Mysql(MysqlSink),
    #[cfg(feature = "kafka")]
    Kafka(Box<crate::kafka::KafkaSink>),
    Sqlite(SqliteSink),
    Discard(DiscardSink),
}

/// Calls `$body` with `$s` bound to the sink inside `$any`, whatever its kind.
macro_rules! each {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnySink::Postgres($s) => $body,
            AnySink::Mysql($s) => $body,
            #[cfg(feature = "kafka")]
            AnySink::Kafka($s) => $body,
            AnySink::Sqlite($s) => $body,
            AnySink::Discard($s) => $body,
        }
    };
}

impl Sink for AnySink {
    fn name(&self) -> &str {
        each!(self, s => s.name())
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, Error> {
        each!(self, s => s.checkpoint().await)
    }

    async fn recopies(&mut self) -> Result<Option<Vec<(TableId, String)>>, Error> {
        each!(self, s => s.recopies().await)
    }

    async fn apply(&mut self, events: &[Event], commit: Option<&Position>) -> Result<(), Error> {
        each!(self, s => s.apply(events, commit).await)
    }

    fn take_conflicts(&mut self) -> Vec<ferry_core::ConflictCount> {
        each!(self, s => s.take_conflicts())
    }

    async fn savepoint(&mut self, step: Savepoint) -> Result<(), Error> {
        each!(self, s => s.savepoint(step).await)
    }

    async fn rollback(&mut self) -> Result<(), Error> {
        each!(self, s => s.rollback().await)
    }

    async fn claim(
        &mut self,
        partitions: &[ferry_core::TopicPartition],
        token: u64,
    ) -> Result<ferry_core::KafkaOffsets, Error> {
        each!(self, s => s.claim(partitions, token).await)
    }

    async fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), Error> {
        each!(self, s => s.dead_letter(letter).await)
    }

    async fn dead_letters(&mut self) -> Result<Vec<StoredDeadLetter>, Error> {
        each!(self, s => s.dead_letters().await)
    }

    async fn forget_dead_letter(&mut self, id: i64) -> Result<(), Error> {
        each!(self, s => s.forget_dead_letter(id).await)
    }

    async fn forget_dead_letters_of(&mut self, table: &TableId) -> Result<u64, Error> {
        each!(self, s => s.forget_dead_letters_of(table).await)
    }
}

#[cfg(not(feature = "kafka"))]
fn no_kafka() -> Error {
    Error::fatal("this ferry was built without the Kafka sink (cargo feature \"kafka\")")
}

/// What sink `sink` of `config` needs for conflict handling and loop prevention.
fn multi_master(config: &PipelineConfig, sink: &SinkConfig) -> crate::conflict::MultiMasterOptions {
    crate::conflict::MultiMasterOptions {
        conflicts: sink.conflicts.clone(),
        node: config.node.clone(),
        shared: matches!(config.source, ferry_config::SourceConfig::Kafka(_)),
    }
}

/// Opens sink `index` of `config` (connects, takes its lease, creates its checkpoint table).
pub async fn open(config: &PipelineConfig, index: usize) -> Result<AnySink, Error> {
    let sink = &config.sinks[index];
    Ok(match &sink.kind {
        SinkKind::Postgres { url } => AnySink::Postgres(
            PostgresSink::connect(&sink.name, &config.name, url, multi_master(config, sink))
                .await?,
        ),
        SinkKind::Mysql { url } => AnySink::Mysql(
            MysqlSink::connect(&sink.name, &config.name, url, multi_master(config, sink)).await?,
        ),
        SinkKind::Sqlite { path } => AnySink::Sqlite(SqliteSink::open(
            &sink.name,
            &config.name,
            path,
            multi_master(config, sink),
        )?),
        SinkKind::Discard { checkpoint_file } => {
            AnySink::Discard(DiscardSink::new(&sink.name, &config.name, checkpoint_file)?)
        }
        #[cfg(feature = "kafka")]
        SinkKind::Kafka(kafka) => AnySink::Kafka(Box::new(
            crate::kafka::KafkaSink::connect(
                &sink.name,
                &config.name,
                kafka,
                source_info(config, kafka),
            )
            .await?,
        )),
        #[cfg(not(feature = "kafka"))]
        SinkKind::Kafka(_) => return Err(no_kafka()),
    })
}

/// What a Kafka sink's records say about their source (Debezium's `source` block).
#[cfg(feature = "kafka")]
fn source_info(
    config: &PipelineConfig,
    kafka: &ferry_config::KafkaSink,
) -> crate::kafka::SourceInfo {
    let (connector, url) = match &config.source {
        ferry_config::SourceConfig::Postgres(p) => ("postgresql", p.url.as_str()),
        ferry_config::SourceConfig::Mysql(m) => ("mysql", m.url.as_str()),
        // Refused by config validation: a Kafka source stores its offsets in SQL targets.
        ferry_config::SourceConfig::Kafka(_) => ("kafka", ""),
    };
    // The database is the URL's path: scheme://user@host:port/db?options.
    let db = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| path.split(['?', '/']).next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    crate::kafka::SourceInfo {
        connector,
        name: kafka.topic_prefix.clone(),
        db,
    }
}

/// A checkpoint as a sink stores it: the position's text and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub position: String,
    pub updated_at: String,
}

/// The checkpoint `sink` of `pipeline` stored, without opening it as a pipeline would (no lease).
pub async fn stored_checkpoint(
    pipeline: &str,
    sink: &SinkConfig,
) -> Result<Option<StoredCheckpoint>, Error> {
    // Its own row, or (a Kafka source's) one row per partition gathered into one position.
    let pick = |rows: Vec<(String, String, String)>| -> Result<Option<StoredCheckpoint>, Error> {
        let prefix = format!("{}@", sink.name);
        let mine: Vec<_> = rows
            .into_iter()
            .filter(|(name, _, _)| *name == sink.name || name.starts_with(&prefix))
            .collect();
        let updated_at = mine.iter().map(|(_, _, at)| at.clone()).max();
        let position = crate::checkpoint::gather(
            &sink.name,
            mine.into_iter().map(|(name, position, _)| (name, position)),
        )?;
        Ok(position
            .zip(updated_at)
            .map(|(p, updated_at)| StoredCheckpoint {
                position: p.to_string(),
                updated_at,
            }))
    };
    let one = |row: Option<(String, String)>| {
        row.map(|(position, updated_at)| StoredCheckpoint {
            position,
            updated_at,
        })
    };
    Ok(match &sink.kind {
        SinkKind::Postgres { url } => {
            pick(crate::postgres::list_checkpoints(url, pipeline).await?)?
        }
        SinkKind::Mysql { url } => pick(crate::mysql::list_checkpoints(url, pipeline).await?)?,
        SinkKind::Sqlite { path } => pick(crate::sqlite::list_checkpoints(path, pipeline)?)?,
        SinkKind::Discard { checkpoint_file } => {
            one(crate::discard::read_checkpoint(checkpoint_file)?)
        }
        #[cfg(feature = "kafka")]
        SinkKind::Kafka(k) => one(crate::kafka::stored_checkpoint(k, pipeline, &sink.name).await?),
        #[cfg(not(feature = "kafka"))]
        SinkKind::Kafka(_) => return Err(no_kafka()),
    })
}

/// The conflicts `sink` of `pipeline` logged in its target (`ferry conflicts`), only `table`'s when given.
/// Sinks that resolve no conflicts have none.
pub async fn list_conflicts(
    pipeline: &str,
    sink: &SinkConfig,
    table: Option<&str>,
) -> Result<Vec<crate::conflict::LoggedConflict>, Error> {
    match &sink.kind {
        SinkKind::Postgres { url } => {
            crate::postgres::list_conflicts(url, pipeline, &sink.name, table).await
        }
        SinkKind::Mysql { url } => {
            crate::mysql::list_conflicts(url, pipeline, &sink.name, table).await
        }
        SinkKind::Sqlite { path } => {
            crate::sqlite::list_conflicts(path, pipeline, &sink.name, table)
        }
        _ => Ok(Vec::new()),
    }
}

/// The dead letters `sink` of `pipeline` holds in its target (`ferry dead-letters list`), oldest first; `table`
/// and `id` narrow them. Read-only, so it works while the pipeline runs. Sinks that keep none have none.
pub async fn list_dead_letters(
    pipeline: &str,
    sink: &SinkConfig,
    table: Option<&TableId>,
    id: Option<i64>,
) -> Result<Vec<StoredDeadLetter>, Error> {
    match &sink.kind {
        SinkKind::Postgres { url } => {
            let client = crate::postgres::connect(url).await?;
            crate::postgres::dead_letters::read(&client, (pipeline, &sink.name), table, id).await
        }
        SinkKind::Mysql { url } => {
            crate::mysql::list_dead_letters(url, (pipeline, &sink.name), table, id).await
        }
        SinkKind::Sqlite { path } => {
            crate::sqlite::list_dead_letters(path, (pipeline, &sink.name), table, id)
        }
        #[cfg(feature = "kafka")]
        SinkKind::Kafka(k) => {
            let (k, pipeline, name) = (k.clone(), pipeline.to_owned(), sink.name.clone());
            let (letters, _) = tokio::task::spawn_blocking(move || {
                crate::kafka::dead_letters::read(&k, &pipeline, &name)
            })
            .await
            .map_err(|e| Error::fatal(format!("dead-letter reader failed: {e}")))??;
            Ok(letters
                .into_iter()
                .filter(|l| {
                    table.is_none_or(|t| *t == l.letter.table) && id.is_none_or(|i| i == l.id)
                })
                .collect())
        }
        _ => Ok(Vec::new()),
    }
}

/// Deletes every checkpoint of `pipeline` that `sink`'s target holds (`ferry reset`).
pub async fn delete_checkpoints(pipeline: &str, sink: &SinkConfig) -> Result<(), Error> {
    match &sink.kind {
        SinkKind::Postgres { url } => {
            crate::postgres::delete_checkpoints(url, pipeline).await?;
        }
        SinkKind::Mysql { url } => crate::mysql::delete_checkpoints(url, pipeline).await?,
        SinkKind::Sqlite { path } => {
            crate::sqlite::delete_checkpoints(path, pipeline)?;
        }
        SinkKind::Discard { checkpoint_file } => {
            crate::discard::delete_checkpoint(checkpoint_file)?;
        }
        #[cfg(feature = "kafka")]
        SinkKind::Kafka(k) => crate::kafka::delete_checkpoint(k, pipeline, &sink.name).await?,
        #[cfg(not(feature = "kafka"))]
        SinkKind::Kafka(_) => return Err(no_kafka()),
    }
    Ok(())
}

/// Whether `sink` may apply under a replication origin (`[pipeline] node` set, PostgreSQL targets), naming the
/// grants it lacks (`ferry check`); `None` for targets that mark their transactions otherwise.
pub async fn probe_origin_grants(sink: &SinkConfig) -> Result<Option<String>, Error> {
    match &sink.kind {
        SinkKind::Postgres { url } => crate::postgres::probe_origin_grants(url).await.map(Some),
        _ => Ok(None),
    }
}

/// Whether `sink`'s target can be reached and read (`ferry check`); the error says why not.
pub async fn probe(pipeline: &str, sink: &SinkConfig) -> Result<(), Error> {
    match &sink.kind {
        SinkKind::Postgres { url } => crate::postgres::connect(url).await.map(drop),
        SinkKind::Sqlite { path } => match path.parent() {
            Some(dir) if !path.exists() && !dir.as_os_str().is_empty() && !dir.is_dir() => Err(
                Error::fatal(format!("directory {} does not exist", dir.display())),
            ),
            _ => stored_checkpoint(pipeline, sink).await.map(drop),
        },
        SinkKind::Discard { .. } => Ok(()),
        _ => stored_checkpoint(pipeline, sink).await.map(drop),
    }
}
