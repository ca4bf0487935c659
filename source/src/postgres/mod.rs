//! The PostgreSQL logical-replication source.
//!
//! ```text
//! start ─► publication ─► checkpoint? ──no──► create slot (exported snapshot) ─► snapshot ─► stream
//!                                  └─yes──► check slot still covers the checkpoint ────────────► stream
//! ```
//!
//! Progress tracking: the slot's confirmed position only moves when the sinks acknowledge (see `stream.rs`), so
//! after any crash the slot still holds every change after the minimum checkpoint.

mod binary;
mod catalog;
mod check;
mod conn;
mod decode;
mod failover;
mod live;
pub mod multimaster;
pub mod pgoutput;
pub mod recopy;
mod rewrite;
mod slot;
mod snapshot;
mod spool;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use ferry_config::{PostgresSource, SnapshotMode};
use ferry_core::{Error, Event, Lsn, PipelineState, PipelineStats, Position, TableId};
use ferry_pgconn::PgUrl;
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tracing::{info, warn};

pub use crate::check::CheckOutcome;
pub use check::check_prerequisites;
pub use decode::{decode_text, ValueError};
pub use slot::{quote_ident, slot_info, SlotInfo};

use catalog::Catalog;
use conn::ReplicationConn;

/// The session settings that fix each type's text form (the replication connection sets the same in its startup
/// options).
const SESSION_SQL: &str =
    "SET datestyle = 'ISO, YMD'; SET timezone = 'UTC'; SET intervalstyle = 'iso_8601'; SET extra_float_digits = 3; SET bytea_output = 'hex'; SET standard_conforming_strings = on;";

/// With `synchronous_standby_names` naming this pipeline, Ferry's own writes on the source (the publication,
/// heartbeats, watermarks, the rewrite trigger) must not wait for Ferry itself. Only where the server would wait:
/// a session that commits asynchronously already does not.
const OWN_COMMITS_SQL: &str = "SELECT set_config('synchronous_commit', 'local', false)      WHERE current_setting('synchronous_commit') NOT IN ('off', 'local')";

/// Opens an ordinary connection (catalog queries, snapshot copies, heartbeats).
pub async fn connect_client(url: &str) -> Result<Client, Error> {
    let client = PgUrl::parse(url)?.connect("the source database").await?;
    client
        .batch_execute(&format!("{SESSION_SQL} {OWN_COMMITS_SQL}"))
        .await
        .map_err(|e| Error::transient("setting up the source session", e))?;
    Ok(client)
}

pub use ferry_core::SourceExit;

/// Everything the source needs besides its channels.
#[derive(Debug, Clone)]
pub struct PgSourceSettings {
    pub pipeline: String,
    pub config: PostgresSource,
    pub heartbeat_interval: Option<Duration>,
    pub snapshot_parallelism: usize,
    /// Every sink resumes a snapshot cut short (SQL sinks): the snapshot commits after each table it copies.
    pub resumable_snapshot: bool,
    /// Why streamed transactions cannot be applied before they commit (`PipelineConfig::live_apply_blocked`);
    /// `None`: they are, when `[source] streaming` is on.
    pub live_blocked: Option<String>,
    /// Which tables the snapshot may send as raw COPY lines.
    pub raw_copy: crate::snapshot::RawCopy,
    /// How long the server may send nothing before its connection is taken for dead.
    pub source_timeout: Duration,
    /// Online re-copies under way in the sinks, with the cursor they agree on (`None`: they disagree, and the
    /// re-copy starts again).
    pub recopies: Vec<(TableId, Option<String>)>,
    /// The names the sinks know source tables by (a route renames them): `recopies` are recorded under those.
    pub sink_names: Option<crate::registry::SinkNames>,
    /// `[pipeline] node`: registered in the source database as `public.ferry_local_node()`, the name the version
    /// triggers of conflict detection stamp local writes with (docs/multi-master.md).
    pub node: Option<String>,
    /// The tables (globs) the pipeline's sinks keep version vectors for (`version_vectors = true`): their source
    /// tables count local writes per node too.
    pub vector_tables: Vec<String>,
}

/// A multi-master source (`[pipeline] node`) names its database's node and gives its published tables the
/// version columns and the triggers that stamp local writes (docs/multi-master.md), before it reads anything:
/// every local write from then on carries a version its peer can compare.
async fn prepare_versions(
    client: &tokio_postgres::Client,
    node: &str,
    publication: &str,
    vector_tables: &[String],
) -> Result<(), Error> {
    let fix = "Ferry's source role must own the published tables and may create functions in schema public \
               (or run it once as their owner)";
    ferry_pgconn::versions::register_node(client, node)
        .await
        .map_err(|e| {
            Error::fatal_from(
                format!("cannot name this database's node {node:?} ([pipeline] node): {fix}"),
                e,
            )
        })?;
    for (table, _, _) in slot::published_tables(client, publication).await? {
        let vectors = vector_tables.iter().any(|p| table.matches_glob(p));
        let prepared =
            ferry_pgconn::versions::prepare_table(client, &slot::qualified(&table), vectors)
                .await
                .map_err(|e| {
                    Error::fatal_from(
                        format!("cannot add the version columns and triggers to {table}: {fix}"),
                        e,
                    )
                })?;
        if !prepared {
            warn!(%table, "table has no primary key: its rows carry no version, and its changes are applied \
                   without conflict detection");
            continue;
        }
        ferry_pgconn::versions::ensure_full_identity(client, &slot::qualified(&table))
            .await
            .map_err(|e| {
                Error::fatal_from(
                    format!("cannot set REPLICA IDENTITY FULL on {table}: {fix}"),
                    e,
                )
            })?;
    }
    Ok(())
}

/// Runs the source: snapshot if `resume` is `None`, then streams from the slot until `shutdown` turns true.
pub async fn run(
    settings: &PgSourceSettings,
    resume: Option<ferry_core::Resume>,
    events: mpsc::Sender<Event>,
    acked: watch::Receiver<Option<Position>>,
    shutdown: watch::Receiver<bool>,
    stats: Arc<PipelineStats>,
) -> Result<SourceExit, Error> {
    let cfg = &settings.config;
    let client = connect_client(&cfg.url).await?;
    // Slot creation, drop and the snapshot happen only under the slot's lease: a second process with the same
    // slot waits as a standby instead of dropping the slot under the first one's feet.
    if let Some(holder) =
        ferry_pgconn::lease::try_lease(&client, &format!("slot {}", cfg.slot)).await?
    {
        return Err(Error::standby(format!(
            "pipeline {} (slot {}) is already run by another process: {holder}; this one waits as a standby \
             and takes over when that process stops",
            settings.pipeline, cfg.slot
        )));
    }
    slot::release_stale(&client, &cfg.slot).await?;
    check::require_logical_wal(&client).await?;
    let mut catalog = Catalog::new(client);
    let version = catalog.server_version().await?;
    let lost = slot::ensure_publication(
        catalog.client(),
        &cfg.publication,
        cfg.tables.as_deref(),
        version,
    )
    .await?;
    if let Some(node) = &settings.node {
        prepare_versions(
            catalog.client(),
            node,
            &cfg.publication,
            &settings.vector_tables,
        )
        .await?;
    }
    if !rewrite::install(catalog.client()).await? {
        warn!("the ferry_table_rewrite event trigger is missing and this role cannot create it (it needs a \
               superuser): a rewrite that changes rows without row events (ALTER COLUMN … TYPE … USING, ADD COLUMN \
               with a volatile default) would go unnoticed; `ferry check` prints the statement that creates it");
    }
    let url_config = PgUrl::parse(&cfg.url)?;
    let application_name = format!("ferry_{}", settings.pipeline);

    let checkpoints = resume
        .as_ref()
        .map(|r| r.checkpoints.clone())
        .unwrap_or_default();
    let recopies = recopies_by_source(catalog.client(), settings).await?;
    // A snapshot cut short is resumed by re-copying online each table it had not finished, which takes a key.
    let resume = match resume {
        Some(r) => {
            let keyless =
                keyless_interrupted(catalog.client(), &recopies, &cfg.publication).await?;
            if keyless.is_empty() {
                Some(r)
            } else {
                warn!(tables = %keyless.join(", "), "the snapshot was cut short before these tables without a \
                      primary key were copied whole, and only a table with one can be re-copied online: the \
                      snapshot starts over");
                None
            }
        }
        None => None,
    };
    let start = match &resume {
        Some(resume) => slot::check_resumable(catalog.client(), &cfg.slot, &resume.from).await?,
        None => {
            if slot::drop_slot(catalog.client(), &cfg.slot).await? {
                warn!(slot = %cfg.slot, "no sink holds a checkpoint: dropped the old slot to start over");
            }
            let mut creator = ReplicationConn::connect(&url_config, &application_name).await?;
            let (timeline, _) = failover::current_timeline(&mut creator).await?;
            let export = cfg.snapshot != SnapshotMode::Never;
            let created = slot::create_slot(&mut creator, &cfg.slot, export, version).await?;
            info!(slot = %cfg.slot, consistent_point = %created.consistent_point, "created replication slot");
            if let (true, Some(name)) = (export, created.snapshot_name.as_deref()) {
                let tables = slot::published_tables(catalog.client(), &cfg.publication)
                    .await?
                    .into_iter()
                    .map(|(id, oid, estimated_rows)| snapshot::SnapshotTable {
                        id,
                        oid,
                        estimated_rows,
                    })
                    .collect();
                stats.set_state(PipelineState::Snapshotting);
                let copy = snapshot::run(
                    &cfg.url,
                    name,
                    Position::Pg(created.consistent_point, timeline),
                    tables,
                    &mut catalog,
                    &events,
                    settings.snapshot_parallelism,
                    settings.resumable_snapshot,
                    &settings.raw_copy,
                    stats.clone(),
                );
                let mut shutdown = shutdown.clone();
                tokio::select! {
                    r = copy => r?,
                    // No checkpoint is written for a partial snapshot: the next run starts it again.
                    _ = shutdown.wait_for(|stop| *stop) => {
                        info!("shutdown during the snapshot; it restarts from the beginning on the next run");
                        return Ok(SourceExit::Shutdown);
                    }
                }
            } else {
                crate::snapshot::send_marker(
                    &events,
                    Position::Pg(created.consistent_point, timeline),
                )
                .await?;
            }
            creator.terminate().await;
            if cfg.snapshot == SnapshotMode::Only {
                return Ok(SourceExit::SnapshotDone);
            }
            created.consistent_point
        }
    };
    let mut conn = ReplicationConn::connect(&url_config, &application_name).await?;
    let timeline = failover::prepare(
        &mut conn,
        catalog.client(),
        &cfg.slot,
        &cfg.publication,
        version,
        &checkpoints,
    )
    .await?;
    let generated_published = catalog.publishes_generated_columns().await?;
    let mut streamer = stream::Streamer {
        conn,
        catalog,
        events,
        acked,
        shutdown,
        heartbeat_interval: settings.heartbeat_interval,
        decoder: Default::default(),
        relations: Default::default(),
        tuple_layouts: Default::default(),
        unannounced: Default::default(),
        publication: cfg.publication.clone(),
        on_schema_change: cfg.on_schema_change,
        schema_versions: 0,
        in_transaction: false,
        stats,
        received: 0,
        messages: 0,
        source_timeout: settings.source_timeout,
        slot: cfg.slot.clone(),
        followed: cfg.tables.clone(),
        recopies: recopy::Recopies::new(&cfg.url, generated_published),
        recopy_schemas: Default::default(),
        xid: None,
        pending_begin: None,
        origins: cfg.origins.clone(),
        skipping: false,
        internal: Default::default(),
        skipped_position_at: std::time::Instant::now(),
        timeline,
        streaming: cfg.streaming,
        binary: cfg.binary,
        binary_on: false,
        spool: spool::Spool::new(
            cfg.spool_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .join(format!("ferry-spool-{}", cfg.slot)),
        )?,
        replay: None,
        replay_decoder: pgoutput::Decoder::streamed(),
        live: live::Live::new(
            if cfg.streaming {
                settings.live_blocked.clone()
            } else {
                Some("streaming is off".to_owned())
            },
            checkpoints
                .iter()
                .filter_map(Position::as_lsn)
                .max()
                .unwrap_or(Lsn(0)),
            resume.is_some(),
        ),
        relation_shapes: Default::default(),
        relation_columns: Default::default(),
    };
    if resume.is_some() {
        streamer.resume_recopies(recopies).await?;
        // Followed tables dropped and created again while Ferry was away were out of the publication, so their
        // rows since then never reached the slot: copy them anew.
        for table in lost {
            warn!(%table, "a followed table had left the publication (dropped and created again at the source): \
                   it is back in it and copied anew");
            recopy::request(streamer.catalog.client(), &cfg.slot, &table).await?;
        }
    }
    streamer.run(&cfg.slot, &cfg.publication, start).await?;
    Ok(SourceExit::Shutdown)
}

/// The re-copies the sinks recorded, under the source tables' names: the sinks file a routed table's records under
/// its routed name. A route takes one source table per target, so each name maps back to one table; a name no
/// published table is routed to stays as it is (and its re-copy is dropped, as for any table no longer published).
async fn recopies_by_source(
    client: &Client,
    settings: &PgSourceSettings,
) -> Result<Vec<(TableId, Option<String>)>, Error> {
    let Some(names) = settings.sink_names.as_ref() else {
        return Ok(settings.recopies.clone());
    };
    if settings.recopies.is_empty() {
        return Ok(Vec::new());
    }
    let published: Vec<TableId> = slot::published_tables(client, &settings.config.publication)
        .await?
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    let mut out = Vec::new();
    for (recorded, cursor) in &settings.recopies {
        match names.sources_of(recorded, &published).as_slice() {
            [] => out.push((recorded.clone(), cursor.clone())),
            [source] => out.push(((*source).clone(), cursor.clone())),
            // Not one source per target after all: a cursor cannot say whose it is, so each copy starts again.
            many => out.extend(many.iter().map(|s| ((*s).clone(), None))),
        }
    }
    Ok(out)
}

/// The tables whose initial copy was cut short (or might have been: the sinks disagree on how far their re-copy
/// got) and that have no primary key nor replica identity index, so cannot be re-copied online.
async fn keyless_interrupted(
    client: &Client,
    recopies: &[(TableId, Option<String>)],
    publication: &str,
) -> Result<Vec<String>, Error> {
    let mut keyless = Vec::new();
    for (table, cursor) in recopies {
        if cursor
            .as_deref()
            .is_some_and(|c| c != ferry_core::INTERRUPTED_COPY)
        {
            continue;
        }
        // A table no longer published is dropped from the re-copies when streaming starts.
        if published_key(client, table, publication).await? == Some(false) {
            keyless.push(table.to_string());
        }
    }
    Ok(keyless)
}

/// Whether `table`, if `publication` includes it, has a primary key or replica identity index (what an online
/// re-copy reads it by); `None` when the publication does not include it.
async fn published_key(
    client: &Client,
    table: &TableId,
    publication: &str,
) -> Result<Option<bool>, Error> {
    let row = client
        .query_opt(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident)) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND EXISTS (SELECT 1 FROM pg_publication_tables p \
             WHERE p.pubname = $3 AND p.schemaname = n.nspname AND p.tablename = c.relname)",
            &[&table.schema, &table.name, &publication],
        )
        .await
        .map_err(|e| Error::transient("looking up the table", e))?;
    Ok(row.map(|r| r.get::<_, bool>(0)))
}

/// Asks the pipeline reading `config` to re-copy `table` while it streams (`ferry snapshot --table`): checks the
/// table can be (published, with a primary key or identity index) and the slot exists, then writes the request
/// into the WAL, where the pipeline finds it in order, now or when it next runs.
pub async fn request_recopy(config: &PostgresSource, table: &TableId) -> Result<(), Error> {
    let client = connect_client(&config.url).await?;
    if slot_info(&client, &config.slot).await?.is_none() {
        return Err(Error::fatal(format!(
            "slot {} does not exist: the pipeline has not started yet, and its first snapshot copies every table",
            config.slot
        )));
    }
    match published_key(&client, table, &config.publication).await? {
        None => {
            return Err(Error::fatal(format!(
                "publication {} does not include the table (names match exactly, case included; check [source] \
                 tables)",
                config.publication
            )))
        }
        Some(false) => {
            return Err(Error::fatal(
                "the table has no primary key (nor replica identity index): Ferry re-copies tables in key order; add a primary key, or copy every table anew with `ferry reset --yes`",
            ))
        }
        Some(true) => {}
    }
    recopy::request(&client, &config.slot, table).await
}

/// Drops the slot and the publication (for `ferry reset`).
pub async fn reset(config: &PostgresSource) -> Result<bool, Error> {
    let client = connect_client(&config.url).await?;
    let dropped = slot::drop_slot(&client, &config.slot).await?;
    slot::drop_publication(&client, &config.publication).await?;
    Ok(dropped)
}

/// The source's current WAL position (for lag in `ferry status`).
pub async fn current_wal_lsn(client: &Client) -> Result<Lsn, Error> {
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| Error::transient("reading the current WAL position", e))?;
    row.get::<_, String>(0)
        .parse()
        .map_err(|e| Error::fatal_from("pg_current_wal_lsn", e))
}
