//! The MySQL / MariaDB row-binlog source.
//!
//! ```text
//! start ─► catalog ─► checkpoint? ──no──► consistent snapshot (position read inside it) ─► stream from there
//!                              └─yes──► stream from the checkpoint (MariaDB GTID state, else file:offset)
//! ```
//!
//! The server keeps its binlog whatever replicas do, so there is nothing to acknowledge upstream: the sinks'
//! checkpoints alone say where to resume, and a checkpoint older than the oldest binlog is a fatal gap.

mod catalog;
pub mod charset;
mod check;
pub mod decoder;
pub mod file;
mod jsonb;
mod layout;
mod mariadb;
mod rows;
mod snapshot;
mod statement;
mod stream;

use std::collections::HashSet;
use std::sync::Arc;

use ferry_config::{MysqlSource, SnapshotMode};
use ferry_core::{BinlogPosition, Error, Event, GtidState, PipelineState, PipelineStats, Position};
use mysql_async::prelude::Queryable;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use check::check_prerequisites;
use ferry_myconn::MyUrl;

use crate::postgres::SourceExit;
use decoder::{CatchUp, Decoder, Selection, UnknownDdl};

/// Opens an ordinary connection (TLS as the URL's `ssl-mode` says, see `ferry_myconn`).
pub async fn connect(url: &str) -> Result<mysql_async::Conn, Error> {
    MyUrl::parse(url, "the MySQL source url")?
        .connect("the MySQL source", |b| b)
        .await
}

/// The connection ids this process took source leases on, by lock name.
static OWN_LEASES: std::sync::Mutex<std::collections::BTreeMap<String, u32>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Takes the source-side lease of `pipeline`: a `GET_LOCK` on a connection of its own, held while the returned
/// connection lives (a process that dies releases it). Busy: the standby error, naming the holding connection.
async fn take_lease(url: &str, pipeline: &str) -> Result<mysql_async::Conn, Error> {
    let mut conn = connect(url).await?;
    let lease = format!(
        "ferry_{:016x}",
        ferry_core::fnv1a(format!("ferry lease source {pipeline}").into_bytes())
    );
    let err = |e| Error::transient("taking the pipeline's lease on the source", e);
    let taken: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, 0)", (&lease,))
        .await
        .map_err(err)?;
    let mut taken = taken.flatten() == Some(1);
    // This very process holds it, on a connection of an earlier attempt that stopped answering (the server has
    // not noticed yet): end that connection and take the lease.
    let stale = OWN_LEASES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&lease)
        .copied();
    if let (false, Some(id)) = (taken, stale) {
        let holder: Option<Option<u32>> = conn
            .exec_first("SELECT IS_USED_LOCK(?)", (&lease,))
            .await
            .map_err(err)?;
        if holder.flatten() == Some(id) {
            tracing::warn!(lease, connection = id, "the lease was held by an earlier connection of this process that no longer answers: ending it");
            conn.query_drop(format!("KILL {id}")).await.map_err(err)?;
            let again: Option<Option<i64>> = conn
                .exec_first("SELECT GET_LOCK(?, 5)", (&lease,))
                .await
                .map_err(err)?;
            taken = again.flatten() == Some(1);
        }
    }
    if taken {
        OWN_LEASES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lease, conn.id());
        return Ok(conn);
    }
    let holder: Option<(i64, String)> = conn
        .exec_first(
            "SELECT p.ID, p.HOST FROM information_schema.PROCESSLIST p WHERE p.ID = IS_USED_LOCK(?)",
            (&lease,),
        )
        .await
        .map_err(err)?;
    let holder = holder.map_or_else(
        || "another process".to_owned(),
        |(id, host)| format!("the process on source connection {id} (from {host})"),
    );
    Err(Error::standby(format!(
        "pipeline {pipeline} is already run by another process: {holder}; this one waits as a standby and takes \
         over when that process stops"
    )))
}

/// Quotes an identifier with backquotes.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Which server family the source is; detected from the server's version string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

async fn flavor(conn: &mut mysql_async::Conn) -> Result<Flavor, Error> {
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| Error::transient("reading the server version", e))?;
    Ok(if version.unwrap_or_default().contains("MariaDB") {
        Flavor::MariaDb
    } else {
        Flavor::MySql
    })
}

/// Everything the source needs besides its channels.
#[derive(Debug, Clone)]
pub struct MysqlSourceSettings {
    pub pipeline: String,
    pub config: MysqlSource,
    /// Connections copying tables during the snapshot.
    pub snapshot_parallelism: usize,
    /// How long the server may send nothing (no event, no heartbeat) before its connection is taken for dead.
    pub source_timeout: std::time::Duration,
    /// `[pipeline] node`: this database's node name, and its followed tables versioned for conflict detection
    /// (docs/multi-master.md).
    pub node: Option<String>,
    /// The tables (globs) the pipeline's sinks keep version vectors for: their source tables count local writes
    /// per node too.
    pub vector_tables: Vec<String>,
    /// Every sink records the parts of a snapshot it holds (SQL sinks): the snapshot commits after each table and
    /// key range, and one cut short resumes with what is left.
    pub resumable_snapshot: bool,
    /// The tables whose initial copy the sinks had not finished, with the cursor they agree on (`None`: copy the
    /// table whole), under the names the sinks know them by.
    pub recopies: Vec<(ferry_core::TableId, Option<String>)>,
    /// Source tables' names as the sinks know them, when the pipeline has transforms.
    pub sink_names: Option<crate::registry::SinkNames>,
}

impl MysqlSourceSettings {
    /// The replica id Ferry registers with: configured, or derived from the pipeline name (stable across runs,
    /// and away from the small ids people give their servers).
    pub fn server_id(&self) -> u32 {
        self.config.server_id.unwrap_or_else(|| {
            let hash = self.pipeline.bytes().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            1_000_000 + hash % 1_000_000_000
        })
    }

    fn selection(&self) -> Result<Selection, Error> {
        match &self.config.tables {
            Some(tables) => Ok(Selection::Tables(
                tables.iter().cloned().collect::<HashSet<_>>(),
            )),
            None => {
                let db = MyUrl::parse(&self.config.url, "the MySQL source url")?
                    .database()
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Error::fatal("the MySQL source follows every table of the URL's database, but the URL names none: add /dbname to url or list tables")
                    })?;
                Ok(Selection::Databases(vec![db]))
            }
        }
    }
}

/// Runs the source: snapshot if `resume` is `None`, then streams from the binlog until `shutdown` turns true.
pub async fn run(
    settings: &MysqlSourceSettings,
    resume: Option<Position>,
    events: mpsc::Sender<Event>,
    acked: watch::Receiver<Option<Position>>,
    shutdown: watch::Receiver<bool>,
    stats: Arc<PipelineStats>,
) -> Result<SourceExit, Error> {
    let cfg = &settings.config;
    // Held until the source stops: whatever its sinks, one process at a time reads this pipeline's binlog.
    let _lease = take_lease(&cfg.url, &settings.pipeline).await?;
    let mut conn = connect(&cfg.url).await?;
    let flavor = flavor(&mut conn).await?;
    require_row_binlog(&mut conn).await?;
    let selection = settings.selection()?;
    let databases: Vec<String> = match &selection {
        Selection::Databases(dbs) => dbs.clone(),
        Selection::Tables(t) => {
            let mut dbs: Vec<String> = t.iter().map(|t| t.schema.clone()).collect();
            dbs.sort();
            dbs.dedup();
            dbs
        }
        Selection::All => Vec::new(),
    };
    let only: Option<Vec<_>> = cfg.tables.clone();
    let mut catalog = catalog::read_tables(&mut conn, &databases, only.as_deref()).await?;
    if let Some(node) = &settings.node {
        if prepare_versions(
            &mut conn,
            node,
            &databases,
            &catalog,
            &settings.vector_tables,
        )
        .await?
        {
            catalog = catalog::read_tables(&mut conn, &databases, only.as_deref()).await?;
        }
    }
    let database_charsets = catalog::database_charsets(&mut conn, &databases).await?;
    if let Some(tables) = &cfg.tables {
        for t in tables {
            if !catalog.contains_key(t) {
                warn!(table = %t, "a configured table does not exist (yet); its rows are followed once it is created");
            }
        }
    }

    let copy = Copy {
        settings,
        flavor,
        databases: &databases,
        events: &events,
        stats: &stats,
    };
    let mut catch_up = None;
    let start = match resume {
        Some(Position::Binlog(p)) => {
            // Resuming by GTID, the server finds the start itself (and refuses a state it cannot serve); the
            // checkpoint's file may be another server's (after a failover) and mean nothing here.
            let by_gtid = flavor == Flavor::MariaDb && matches!(p.gtid, Some(GtidState::MariaDb(_)));
            if !by_gtid {
                require_binlog_still_has(&mut conn, &p).await?;
            }
            if settings.recopies.is_empty() || cfg.snapshot == SnapshotMode::Never {
                p
            } else {
                match copy.resume(&mut conn, &mut catalog, p, shutdown.clone()).await? {
                    Some(resumed) => {
                        catch_up = resumed.catch_up;
                        resumed.from
                    }
                    None => return Ok(SourceExit::Shutdown),
                }
            }
        }
        Some(other) => {
            return Err(Error::fatal(format!(
                "the sinks hold checkpoint {other}, which is not a binlog position: they were filled from another source; point them at new targets or run `ferry reset --config <file> --yes`"
            )))
        }
        None => {
            let Some(position) = copy.anew(&mut conn, &mut catalog, shutdown.clone()).await? else {
                return Ok(SourceExit::Shutdown);
            };
            if cfg.snapshot == SnapshotMode::Only {
                return Ok(SourceExit::SnapshotDone);
            }
            position
        }
    };
    drop(conn);
    stats.set_state(PipelineState::Streaming);
    let on_unknown_ddl = if cfg.skip_unknown_ddl {
        UnknownDdl::Skip
    } else {
        UnknownDdl::Fail
    };
    let _measuring = ferry_core::AbortOnDrop(tokio::spawn(measure_binlogs(
        cfg.url.clone(),
        stats.clone(),
    )));
    let decoder = Decoder::new(selection, on_unknown_ddl, catalog, &start)
        .with_database_charsets(database_charsets)
        .with_origins(cfg.origins.clone())
        .with_catch_up(catch_up);
    stream::run(
        &cfg.url,
        stream::Binlog {
            flavor,
            server_id: settings.server_id(),
            semi_sync: cfg.semi_sync.then_some(acked),
            timeout: settings.source_timeout,
        },
        &start,
        decoder,
        events,
        shutdown,
        stats,
    )
    .await?;
    Ok(SourceExit::Shutdown)
}

/// One record of a table's copy covering what the sinks recorded at different paces
/// ([`snapshot::RangesLeft::merge`]); `None` when they are not all key-range records.
pub fn merge_copy_records(cursors: &[&str]) -> Option<String> {
    snapshot::RangesLeft::merge(cursors)
}

/// What the initial copy needs: the source's settings and where its events go.
struct Copy<'a> {
    settings: &'a MysqlSourceSettings,
    flavor: Flavor,
    databases: &'a [String],
    events: &'a mpsc::Sender<Event>,
    stats: &'a Arc<PipelineStats>,
}

type Catalog = std::collections::BTreeMap<ferry_core::TableId, catalog::CatalogTable>;

impl Copy<'_> {
    /// Opens the snapshot transactions and reads the table list again now that the position is fixed: a table
    /// created between the first read and the snapshot point is in neither the first list nor the binlog after
    /// the point. One created after the point is copied empty (or skipped) and its rows come from the binlog.
    async fn open(
        &self,
        conn: &mut mysql_async::Conn,
        catalog: &mut Catalog,
    ) -> Result<(Vec<mysql_async::Conn>, BinlogPosition), Error> {
        let cfg = &self.settings.config;
        let parallelism = if cfg.snapshot == SnapshotMode::Never {
            1
        } else {
            self.settings
                .snapshot_parallelism
                .clamp(1, catalog.len().max(1))
        };
        let (snap, position) = snapshot::open(&cfg.url, self.flavor, parallelism).await?;
        info!(position = %position, flavor = ?self.flavor, connections = snap.len(), "snapshot position");
        *catalog = catalog::read_tables(conn, self.databases, cfg.tables.as_deref()).await?;
        Ok((snap, position))
    }

    /// Copies every table (or, with `snapshot = "never"`, marks the position): the position to stream from, or
    /// `None` on shutdown.
    async fn anew(
        &self,
        conn: &mut mysql_async::Conn,
        catalog: &mut Catalog,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<BinlogPosition>, Error> {
        let (snap, position) = self.open(conn, catalog).await?;
        if self.settings.config.snapshot == SnapshotMode::Never {
            crate::snapshot::send_marker(self.events, Position::Binlog(position.clone())).await?;
            return Ok(Some(position));
        }
        let tables: Vec<_> = catalog
            .iter()
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        let copied = self.copy(snap, &position, &tables, None, shutdown).await?;
        Ok(copied.then_some(position))
    }

    /// Runs one copy until it ends or shutdown: whether it ended.
    async fn copy(
        &self,
        snap: Vec<mysql_async::Conn>,
        position: &BinlogPosition,
        tables: &[(ferry_core::TableId, catalog::CatalogTable)],
        resumed: Option<&snapshot::Resumed>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<bool, Error> {
        self.stats.set_state(PipelineState::Snapshotting);
        let resumable = self.settings.resumable_snapshot;
        let copy = snapshot::run(
            snap,
            position,
            tables,
            self.events,
            self.stats.clone(),
            resumable,
            resumed,
        );
        tokio::select! {
            r = copy => r.map(|()| true),
            _ = shutdown.wait_for(|stop| *stop) => {
                if resumable {
                    info!("shutdown during the snapshot; the next run copies what it had not");
                } else {
                    info!("shutdown during the snapshot; it restarts from the beginning on the next run");
                }
                Ok(false)
            }
        }
    }

    /// Finishes a snapshot cut short, whose position `from` every sink holds: the tables and key ranges the
    /// sinks had not copied are read in a new snapshot (at a later position), and the stream starts again at
    /// `from`. Between the two positions the stream applies again, over rows copied later, changes those rows
    /// already hold: each is written whole by its key (the binlog's full row images; inserts and updates are
    /// upserts, a change to a row the copy no longer found lands before its delete), so every row ends as the
    /// source has it once the stream passes the new position. What that cannot hold for starts the copy over, at
    /// the new position, for every table: a table without a primary key among those left (its changes are not
    /// idempotent), a statement in the binlog between the positions (a schema change would reach rows copied
    /// with the new shape through the old), a recorded table no longer found. Returns where to stream from
    /// (`None` on shutdown).
    async fn resume(
        &self,
        conn: &mut mysql_async::Conn,
        catalog: &mut Catalog,
        from: BinlogPosition,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<Resumed>, Error> {
        let mut left = std::collections::HashMap::new();
        let mut gone = Vec::new();
        let mut until: Option<BinlogPosition> = None;
        let mut anew: Option<String> = None;
        for (recorded, cursor) in &self.settings.recopies {
            let found: Vec<&ferry_core::TableId> = catalog
                .keys()
                .filter(|t| match &self.settings.sink_names {
                    Some(names) => (names.0)(t).as_ref() == Some(recorded),
                    None => *t == recorded,
                })
                .collect();
            let [table] = found[..] else {
                if found.is_empty() {
                    // Dropped, or left out of the pipeline since: nothing of it to copy.
                    gone.push(recorded.clone());
                } else {
                    anew.get_or_insert(format!(
                        "table {recorded} is the name of {} source tables",
                        found.len()
                    ));
                }
                continue;
            };
            if catalog[table].primary_key.is_empty() {
                anew.get_or_insert(format!(
                    "table {table} has no primary key, so its changes cannot be applied again over rows copied later"
                ));
                continue;
            }
            let record = cursor.as_deref().and_then(snapshot::RangesLeft::parse);
            if let Some((_, Some(at))) = &record {
                if until
                    .as_ref()
                    .is_none_or(|u| u.try_cmp(at).is_some_and(|o| o.is_lt()))
                {
                    until = Some(at.clone());
                }
            }
            left.insert(table.clone(), record.map(|(ranges, _)| ranges));
        }
        if !gone.is_empty() {
            info!(tables = ?gone, "tables whose copy was cut short are no longer followed: nothing of them is copied");
            crate::snapshot::forget_copies(self.events, &Position::Binlog(from.clone()), gone)
                .await?;
        }
        if left.is_empty() && anew.is_none() {
            return Ok(Some(Resumed {
                from,
                catch_up: None,
            }));
        }
        let to_copy = left
            .values()
            .any(|ranges| ranges.as_ref().is_none_or(|r| !r.is_empty()));
        if anew.is_none() && !to_copy {
            // Every table was copied by a resumed copy already: only the stream's catching up is left.
            if let Some(until) = until {
                info!(from = %from, until = %until, "the snapshot cut short was copied: streaming again from its position, applying changes the rows copied later hold already, until the copy's position");
                return Ok(Some(Resumed {
                    from,
                    catch_up: Some(CatchUp {
                        until,
                        tables: left.into_keys().collect(),
                    }),
                }));
            }
        }
        let (snap, position) = self.open(conn, catalog).await?;
        if anew.is_none() {
            anew = snapshot::change_between(conn, &from.pos, &position.pos).await?;
        }
        if let Some(why) = anew {
            warn!(from = %from, at = %position, reason = why, "the snapshot was cut short, and what it left cannot be \
                  copied on its own: every table is copied anew");
            let tables: Vec<_> = catalog
                .iter()
                .map(|(id, t)| (id.clone(), t.clone()))
                .collect();
            let copied = self.copy(snap, &position, &tables, None, shutdown).await?;
            return Ok(copied.then_some(Resumed {
                from: position,
                catch_up: None,
            }));
        }
        let tables: Vec<_> = catalog
            .iter()
            .filter(|(id, _)| {
                left.get(*id)
                    .is_some_and(|r| r.as_ref().is_none_or(|r| !r.is_empty()))
            })
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        let ranges: usize = left.values().flatten().map(Vec::len).sum();
        info!(from = %from, at = %position, tables = tables.len(), key_ranges_left = ranges,
              "resuming the snapshot that was cut short: copying what it had not, then streaming again from its position");
        let plan = snapshot::Resumed { from, left };
        let copied = self
            .copy(snap, &position, &tables, Some(&plan), shutdown)
            .await?;
        Ok(copied.then(|| Resumed {
            from: plan.from,
            catch_up: Some(CatchUp {
                until: position,
                tables: plan.left.into_keys().collect(),
            }),
        }))
    }
}

/// Where a resumed snapshot leaves the stream: it starts again at `from`, catching up with rows copied later
/// (`None`: the copy started over, and the stream starts where it was read).
struct Resumed {
    from: BinlogPosition,
    catch_up: Option<CatchUp>,
}

/// A multi-master source (`[pipeline] node`) names its databases' node and gives its followed tables the version
/// columns and the triggers that stamp local writes, before it reads anything. Whether it changed a table.
async fn prepare_versions(
    conn: &mut mysql_async::Conn,
    node: &str,
    databases: &[String],
    catalog: &std::collections::BTreeMap<ferry_core::TableId, catalog::CatalogTable>,
    vector_tables: &[String],
) -> Result<bool, Error> {
    let fix = "Ferry's source user needs ALTER, CREATE and TRIGGER on the followed tables, and with binary logging \
               on, SUPER or log_bin_trust_function_creators = 1";
    let run = |e: mysql_async::Error| {
        Error::fatal_from(
            format!("versioning the source tables for conflict detection: {fix}"),
            e,
        )
    };
    for db in databases {
        for sql in ferry_core::versions::mysql_support_sql(db) {
            conn.query_drop(sql).await.map_err(run)?;
        }
        conn.query_drop(ferry_core::versions::mysql_register_node_sql(db, node))
            .await
            .map_err(run)?;
    }
    let mut changed = false;
    for (table, t) in catalog {
        if t.primary_key.is_empty() {
            warn!(%table, "table has no primary key: its rows carry no version, and its changes are applied \
                   without conflict detection");
            continue;
        }
        let vectors = vector_tables.iter().any(|p| table.matches_glob(p));
        let count: Option<i64> = conn
            .exec_first(
                ferry_core::versions::MYSQL_PREPARED_SQL,
                (
                    &table.schema,
                    &table.name,
                    &table.schema,
                    &table.name,
                    &table.schema,
                    &table.name,
                ),
            )
            .await
            .map_err(run)?;
        if count.is_some_and(|c| ferry_core::versions::mysql_is_prepared(c, vectors)) {
            continue;
        }
        let keys: Vec<String> = t
            .primary_key
            .iter()
            .map(|&k| t.columns[k].name.clone())
            .collect();
        for sql in ferry_core::versions::mysql_prepare_sql(
            &table.schema,
            &table.name,
            &keys,
            vectors,
            true,
        ) {
            conn.query_drop(sql).await.map_err(run)?;
        }
        info!(%table, "table prepared for conflict detection: version columns and triggers");
        changed = true;
    }
    Ok(changed)
}

/// Streaming needs row events with full images; anything else loses data, so it stops the pipeline up front.
async fn require_row_binlog(conn: &mut mysql_async::Conn) -> Result<(), Error> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image')")
        .await
        .map_err(|e| Error::transient("reading the binlog settings", e))?;
    let get = |n: &str| {
        rows.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if !matches!(get("log_bin"), "ON" | "1") {
        return Err(Error::fatal(
            "the source server's binary log is off: start it with log_bin (see `ferry check`)",
        ));
    }
    if !get("binlog_format").eq_ignore_ascii_case("ROW") {
        return Err(Error::fatal(format!(
            "binlog_format is {} on the source; Ferry needs ROW: SET GLOBAL binlog_format = 'ROW' and binlog_format = ROW in my.cnf (see `ferry check`)",
            get("binlog_format")
        )));
    }
    if !get("binlog_row_image").eq_ignore_ascii_case("FULL") {
        return Err(Error::fatal(format!(
            "binlog_row_image is {} on the source; Ferry needs FULL: SET GLOBAL binlog_row_image = 'FULL' and binlog_row_image = FULL in my.cnf (see `ferry check`)",
            get("binlog_row_image")
        )));
    }
    Ok(())
}

/// The checkpoint's binlog file must still exist, or changes since then are lost.
async fn require_binlog_still_has(
    conn: &mut mysql_async::Conn,
    checkpoint: &BinlogPosition,
) -> Result<(), Error> {
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| Error::transient("listing the binary logs", e))?;
    let names: Vec<String> = logs.iter().filter_map(|r| r.get::<String, _>(0)).collect();
    if names.contains(&checkpoint.pos.file) {
        return Ok(());
    }
    Err(Error::fatal(format!(
        "the sinks' checkpoint is in binlog file {}, which the server no longer has (oldest: {}): the changes since then are gone. Run `ferry reset --config <file> --yes` to take a new snapshot, and raise binlog retention so it covers Ferry's downtime",
        checkpoint.pos.file,
        names.first().map_or("none", String::as_str)
    )))
}

/// How often the source lists the server's binary logs for the binlog distance.
const MEASURE_BINLOGS: std::time::Duration = std::time::Duration::from_secs(5);

/// Lists the server's binary logs with their sizes every [`MEASURE_BINLOGS`], for each sink's distance from the
/// server's position in bytes (`ferry_sink_lag_bytes`, the `lag_bytes` alert), until the task is dropped. A failed
/// listing (the user lacks BINLOG MONITOR / REPLICATION CLIENT) leaves the distance unmeasured, said once.
async fn measure_binlogs(url: String, stats: Arc<PipelineStats>) {
    let mut conn = None;
    let mut warned = false;
    loop {
        if conn.is_none() {
            conn = connect(&url).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            match c.query::<mysql_async::Row, _>("SHOW BINARY LOGS").await {
                Ok(rows) => {
                    let logs = rows
                        .iter()
                        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
                        .collect();
                    *stats
                        .source_binlogs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = logs;
                }
                Err(e) => {
                    if !warned {
                        warn!(error = %e, "cannot list the binary logs (SHOW BINARY LOGS needs BINLOG MONITOR or \
                               REPLICATION CLIENT): the sinks' distance from the server in bytes stays unmeasured");
                        warned = true;
                    }
                    conn = None;
                }
            }
        }
        tokio::time::sleep(MEASURE_BINLOGS).await;
    }
}

/// The server's current binlog position (for `ferry status`).
pub async fn current_position(url: &str) -> Result<String, Error> {
    let mut conn = connect(url).await?;
    // MySQL 8.4 renamed SHOW MASTER STATUS; MariaDB and older MySQL only know the old name.
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW BINARY LOG STATUS").await {
        Ok(row) => row,
        Err(_) => conn
            .query_first("SHOW MASTER STATUS")
            .await
            .map_err(|e| Error::transient("reading the binlog position", e))?,
    };
    Ok(match row {
        Some(r) => format!(
            "{}:{}",
            r.get::<String, _>(0).unwrap_or_default(),
            r.get::<u64, _>(1).unwrap_or_default()
        ),
        None => "unknown (binary log off)".into(),
    })
}
