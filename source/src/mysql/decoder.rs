//! Turns binlog events into Ferry's events: transactions of typed row changes with positions.
//!
//! ```text
//! GTID / BEGIN ─► TABLE_MAP ─► rows … ─► XID / COMMIT      one transaction
//! GTID (standalone) ─► QUERY (DDL, TRUNCATE)                one implicit transaction
//! ```
//!
//! `Begin` carries where the transaction's first event starts, `Commit` where its last event ends (plus the GTID
//! state after it): a checkpoint includes a transaction iff the transaction starts before it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{
    BinlogFilePos, BinlogPosition, Change, Error, Event as FerryEvent, GtidState, Lineage,
    MariaGtid, MysqlGtidSet, Origin, Position, RowOp, SchemaRef, TableId, TableSchema, Timestamp,
    TxContext, Value,
};
use mysql_common::binlog::events::{
    Event, GtidEvent, PreviousGtidsEvent, RotateEvent, TableMapEvent,
};
use tracing::warn;

use super::catalog::apply_ddl;
use super::catalog::CatalogTable;
use super::layout::{layout_from_table_map, TableLayout};
use super::mariadb;
use super::rows::{decode_rows, lenenc, Cursor, RowsKind};
use super::statement::{classify, parse_ddl, AlterSpec, Ddl, DefaultValue, Statement};

/// Binlog event type codes Ferry acts on (MySQL's `Log_event_type`).
mod code {
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V0: u8 = 20;
    pub const DELETE_ROWS_V0: u8 = 22;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const WRITE_ROWS: u8 = 30;
    pub const UPDATE_ROWS: u8 = 31;
    pub const DELETE_ROWS: u8 = 32;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const GTID_TAGGED: u8 = 42;
}

/// Which tables the pipeline follows.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every table of these databases.
    Databases(Vec<String>),
    Tables(HashSet<TableId>),
    /// Every table (offline decoding of whole files). Columns the binlog does not name are `col_1`, `col_2`, ….
    All,
}

impl Selection {
    /// Whether `table` is followed: selected, and not one of Ferry's own tables.
    pub fn includes(&self, table: &TableId) -> bool {
        if ferry_core::is_internal_table(table) {
            return false;
        }
        match self {
            Selection::Databases(dbs) => dbs.contains(&table.schema),
            Selection::Tables(tables) => tables.contains(table),
            Selection::All => true,
        }
    }

    fn includes_database(&self, db: &str) -> bool {
        match self {
            Selection::Databases(dbs) => dbs.iter().any(|d| d == db),
            Selection::Tables(tables) => tables.iter().any(|t| t.schema == db),
            Selection::All => true,
        }
    }
}

/// What to do with a DDL statement on a followed table that Ferry cannot interpret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownDdl {
    /// Stop the pipeline, quoting the statement and its position.
    #[default]
    Fail,
    /// Log it, count it, go on.
    Skip,
}

#[derive(Debug, Clone)]
enum PendingGtid {
    Maria(MariaGtid),
    Mysql(String, u64),
}

#[derive(Debug)]
struct Txn {
    start: BinlogFilePos,
    gtid: Option<PendingGtid>,
    /// `Begin` was emitted (the transaction touched a followed table).
    begun: bool,
    /// A single statement with an implicit commit (MariaDB GTID flag, MySQL DDL).
    standalone: bool,
    /// The `server_id` in the header of the event that opened the transaction.
    server_id: u32,
    /// MySQL 8's `immediate_commit_timestamp` (µs), or the opening event header's seconds.
    commit_time: Timestamp,
    /// The Ferry pipeline that applied this transaction (`ferry_<pipeline>`), from its origin marker row.
    origin: Option<String>,
    /// Its origin is one the source skips: its row changes are left out.
    skipping: bool,
}

/// The binlog decoder's state between events.
pub struct Decoder {
    selection: Selection,
    on_unknown_ddl: UnknownDdl,
    /// The current event header's timestamp (seconds) and server_id.
    header: (u32, u32),
    /// Definitions read at start; dropped for a table once DDL changes it.
    catalog: BTreeMap<TableId, CatalogTable>,
    /// Each database's default character set, which CREATE TABLE without one gives its string columns.
    database_charsets: BTreeMap<String, String>,
    file: String,
    gtid: Option<GtidState>,
    /// TABLE_MAP id → layout, for followed tables; ids of other tables are remembered as skipped.
    maps: HashMap<u64, Arc<TableLayout>>,
    skipped_ids: HashSet<u64>,
    /// The schema last announced per table, and tables whose new schema is still to announce.
    schemas: HashMap<TableId, SchemaRef>,
    unannounced: HashSet<TableId>,
    schema_versions: u64,
    txn: Option<Txn>,
    /// End of the enclosing TRANSACTION_PAYLOAD event: its inner events carry no positions of their own.
    payload_end: Option<u64>,
    last_heartbeat: Instant,
    seen_format_description: bool,
    /// The server checksums its events (binlog_checksum = CRC32).
    /// TABLE_MAP events carry column names, signedness and labels (binlog_row_metadata = FULL).
    full_metadata: bool,
    /// DDL statements skipped under `on_unknown_ddl = "skip"`.
    pub skipped_ddl: u64,
    /// What DDL said about each table's columns since its last schema version.
    column_hints: HashMap<TableId, Vec<ColumnHint>>,
    /// What DDL said about each table's identity since its last schema version (renamed from, dropped).
    table_hints: HashMap<TableId, Lineage>,
    /// Which transactions to leave out by the Ferry pipeline that applied them (`[source] origins`).
    origins: ferry_config::OriginFilter,
    /// TABLE_MAP ids of `ferry_origin` tables, whose rows mark transactions Ferry applied.
    origin_maps: HashMap<u64, Arc<TableLayout>>,
    /// Row changes left out by their origin.
    pub origin_skipped: u64,
    /// The stream catching up with rows a resumed snapshot copied after its start.
    catch_up: Option<CatchUp>,
}

/// The stream starts again at a snapshot's position after some tables' rows were copied later, at `until`
/// (`Copy::resume`): until it passes there, it brings those rows changes they hold already. Each change is
/// written whole by its key (binlog rows carry every column), so each row ends as the source has it; only a key
/// change could meet its new key already there, so it goes as a delete and an insert. Past `until`, the tables'
/// `Copied` tells the sinks their copy is complete.
#[derive(Debug, Clone)]
pub struct CatchUp {
    pub until: BinlogPosition,
    pub tables: Vec<TableId>,
}

/// What an ALTER TABLE says that the next row layout alone cannot: a column's old name, a new column's default.
#[derive(Debug, Clone)]
enum ColumnHint {
    Renamed { from: String, to: String },
    Default { column: String, value: String },
}

/// How often a run of transactions on other tables moves the checkpoint forward.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

impl Decoder {
    /// Each database's default character set (information_schema.SCHEMATA), for interpreting CREATE TABLE.
    pub fn with_database_charsets(mut self, charsets: BTreeMap<String, String>) -> Self {
        self.database_charsets = charsets;
        self
    }

    /// A decoder that starts reading at `start` (the file the first events belong to, and the GTID state there).
    pub fn new(
        selection: Selection,
        on_unknown_ddl: UnknownDdl,
        catalog: BTreeMap<TableId, CatalogTable>,
        start: &BinlogPosition,
    ) -> Self {
        Decoder {
            selection,
            on_unknown_ddl,
            catalog,
            database_charsets: BTreeMap::new(),
            file: start.pos.file.clone(),
            gtid: start.gtid.clone(),
            maps: HashMap::new(),
            skipped_ids: HashSet::new(),
            schemas: HashMap::new(),
            unannounced: HashSet::new(),
            schema_versions: 0,
            txn: None,
            header: (0, 0),
            payload_end: None,
            last_heartbeat: Instant::now(),
            seen_format_description: false,
            full_metadata: false,
            skipped_ddl: 0,
            column_hints: HashMap::new(),
            table_hints: HashMap::new(),
            origins: Default::default(),
            origin_maps: HashMap::new(),
            origin_skipped: 0,
            catch_up: None,
        }
    }

    /// Catches up with rows copied later ([`CatchUp`]).
    pub fn with_catch_up(mut self, catch_up: Option<CatchUp>) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Which transactions to leave out by the Ferry pipeline that applied them.
    pub fn with_origins(mut self, origins: ferry_config::OriginFilter) -> Self {
        self.origins = origins;
        self
    }

    /// Tells the decoder that the server writes FULL row metadata, so DDL needs no interpreting.
    pub fn set_full_metadata(&mut self, on: bool) {
        self.full_metadata = on;
    }

    /// The binlog file being read.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Whether the decoder is between transactions (a safe point to stop).
    pub fn between_transactions(&self) -> bool {
        self.txn.is_none()
    }

    fn fail(&self, end: u64, why: impl std::fmt::Display) -> Error {
        Error::fatal(format!("binlog event ending at {}:{end}: {why}", self.file))
    }

    /// Decodes one event, appending what it means to `out`.
    pub fn decode(&mut self, event: &Event, out: &mut Vec<FerryEvent>) -> Result<(), Error> {
        let header = event.header();
        let ty = header.event_type_raw();
        let size = u64::from(header.event_size());
        let end = match (u64::from(header.log_pos()), self.payload_end) {
            (0, Some(payload_end)) => payload_end,
            (end, _) => end,
        };
        let start = end.saturating_sub(size);
        let data = event.data();
        self.header = (header.timestamp(), header.server_id());
        match ty {
            code::FORMAT_DESCRIPTION => self.seen_format_description = true,
            code::ROTATE => {
                let rotate: RotateEvent<'_> =
                    event.read_event().map_err(|e| self.fail(end, e))?;
                let mut name = rotate.name_raw();
                // The stream's first (artificial) ROTATE comes before the FORMAT_DESCRIPTION that announces
                // checksums, so the parser may leave a CRC32 on the end of the name. Whether one is there depends
                // on the server and what the replica declared (MariaDB adds one even when its binlog has none), so
                // the event's own bytes decide.
                if !self.seen_format_description && ends_with_own_crc32(event) && name.len() > 4 {
                    name = &name[..name.len() - 4];
                }
                self.file = String::from_utf8_lossy(name).into_owned();
                // Table ids are only valid within one file's transactions.
                self.maps.clear();
                self.skipped_ids.clear();
            }
            code::TRANSACTION_PAYLOAD => self.payload_end = Some(end),
            code::GTID | code::GTID_TAGGED => {
                let g: GtidEvent = event.read_event().map_err(|e| self.fail(end, e))?;
                let sid = format_uuid(g.sid());
                let sid = match g.tag() {
                    Some(tag) => format!("{sid}:{tag}"),
                    None => sid,
                };
                self.begin_txn(start, Some(PendingGtid::Mysql(sid, g.gno())), false);
                self.commit_micros(&g);
                self.payload_end = None;
            }
            code::ANONYMOUS_GTID => {
                self.begin_txn(start, None, false);
                // Same layout as a GTID event, without a GTID.
                if let Ok(g) = event.read_event::<GtidEvent>() {
                    self.commit_micros(&g);
                }
                self.payload_end = None;
            }
            code::PREVIOUS_GTIDS => {
                if !previous_gtids_bounded(event.data()) {
                    return Err(self.fail(end, "a PREVIOUS_GTIDS event claims more entries than it holds"));
                }
                let prev: PreviousGtidsEvent<'_> =
                    event.read_event().map_err(|e| self.fail(end, e))?;
                if self.gtid.is_none() {
                    let mut set = MysqlGtidSet::default();
                    for sid in prev.sids() {
                        let mut name = format_uuid(sid.uuid());
                        if let Some(tag) = sid.tag() {
                            name = format!("{name}:{tag}");
                        }
                        for i in sid.intervals() {
                            if i.end() > i.start() {
                                set.add_interval(&name, i.start(), i.end() - 1);
                            }
                        }
                    }
                    self.gtid = Some(GtidState::MySql(set));
                }
            }
            mariadb::GTID => {
                let g = mariadb::parse_gtid(data, header.server_id())
                    .map_err(|e| self.fail(end, e))?;
                self.begin_txn(start, Some(PendingGtid::Maria(g.gtid)), g.standalone);
            }
            mariadb::GTID_LIST => {
                let list = mariadb::parse_gtid_list(data).map_err(|e| self.fail(end, e))?;
                if self.gtid.is_none() {
                    self.gtid = Some(GtidState::MariaDb(list));
                }
            }
            mariadb::START_ENCRYPTION => {
                return Err(self.fail(
                    end,
                    "the binlog is encrypted (encrypt_binlog = ON); Ferry cannot read encrypted binlogs",
                ))
            }
            code::QUERY | mariadb::QUERY_COMPRESSED => {
                let (db, sql) = parse_query(data, ty == mariadb::QUERY_COMPRESSED)
                    .map_err(|e| self.fail(end, e))?;
                self.query(&db, &sql, start, end, header.timestamp(), out)?;
            }
            code::XID => self.end_txn(end, header.timestamp(), out),
            code::TABLE_MAP => {
                let tme: TableMapEvent<'_> = event.read_event().map_err(|e| self.fail(end, e))?;
                self.table_map(&tme, end)?;
            }
            code::WRITE_ROWS_V1..=code::DELETE_ROWS_V1
            | code::WRITE_ROWS..=code::DELETE_ROWS
            | code::PARTIAL_UPDATE_ROWS
            | mariadb::WRITE_ROWS_COMPRESSED_V1..=mariadb::DELETE_ROWS_COMPRESSED => {
                self.rows(ty, data, start, end, out)?;
            }
            code::WRITE_ROWS_V0..=code::DELETE_ROWS_V0 => {
                return Err(self.fail(end, "pre-GA MySQL 5.1 rows events are not supported"))
            }
            _ => {}
        }
        Ok(())
    }

    /// MySQL 8's microsecond commit time from a GTID event; before 8.0.1 it is 0 and the header's seconds stay.
    fn commit_micros(&mut self, g: &GtidEvent) {
        let micros = g.immediate_commit_timestamp();
        if let (Some(txn), Ok(micros @ 1..)) = (self.txn.as_mut(), i64::try_from(micros)) {
            txn.commit_time = Timestamp::from_unix_micros(micros);
        }
    }

    fn begin_txn(&mut self, start: u64, gtid: Option<PendingGtid>, standalone: bool) {
        let (seconds, server_id) = self.header;
        self.txn = Some(Txn {
            start: BinlogFilePos::new(self.file.clone(), start),
            gtid,
            begun: false,
            standalone,
            server_id,
            commit_time: Timestamp::from_unix_micros(i64::from(seconds) * 1_000_000),
            origin: None,
            skipping: false,
        });
    }

    /// Emits `Begin` for the open transaction (opening one if the stream has none, as in GTID-less binlogs).
    fn ensure_begun(&mut self, start: u64, out: &mut Vec<FerryEvent>) {
        if self.txn.is_none() {
            self.begin_txn(start, None, false);
        }
        let txn = self.txn.as_mut().expect("opened above");
        if !txn.begun {
            txn.begun = true;
            let gtid = txn.gtid.as_ref().map(|g| match g {
                PendingGtid::Maria(g) => g.to_string(),
                PendingGtid::Mysql(sid, gno) => format!("{sid}:{gno}"),
            });
            // The transaction's own GTID: a checkpoint includes the transaction when its state includes that
            // GTID, which holds across a failover where files and offsets do not.
            let own = txn.gtid.as_ref().map(|g| match g {
                PendingGtid::Maria(g) => {
                    let mut list = ferry_core::MariaGtidList::default();
                    list.advance(*g);
                    GtidState::MariaDb(list)
                }
                PendingGtid::Mysql(sid, gno) => {
                    let mut set = MysqlGtidSet::default();
                    set.add(sid, *gno);
                    GtidState::MySql(set)
                }
            });
            let start = BinlogPosition {
                pos: txn.start.clone(),
                gtid: own,
            };
            // The first transaction past the copy's position: the rows copied then hold everything before it.
            let caught_up = self
                .catch_up
                .take_if(|c| c.until.includes(&start) != Some(true));
            out.push(FerryEvent::Begin(Arc::new(TxContext {
                commit_at: Position::Binlog(start),
                commit_time: Some(txn.commit_time),
                xid: None,
                origin: Origin {
                    name: txn.origin.clone(),
                    server_id: Some(txn.server_id),
                    gtid,
                },
                continues_snapshot: false,
                in_progress: false,
            })));
            if let Some(done) = caught_up {
                tracing::info!(until = %done.until, tables = done.tables.len(), "the stream caught up with the rows the resumed snapshot copied");
                out.push(FerryEvent::Change(Change::Copied {
                    tables: done.tables,
                }));
            }
        }
    }

    fn end_txn(&mut self, end: u64, timestamp: u32, out: &mut Vec<FerryEvent>) {
        let txn = self.txn.take();
        match txn.as_ref().and_then(|t| t.gtid.clone()) {
            Some(PendingGtid::Maria(g)) => match &mut self.gtid {
                Some(GtidState::MariaDb(list)) => list.advance(g),
                _ => {
                    let mut list = ferry_core::MariaGtidList::default();
                    list.advance(g);
                    self.gtid = Some(GtidState::MariaDb(list));
                }
            },
            Some(PendingGtid::Mysql(sid, gno)) => match &mut self.gtid {
                Some(GtidState::MySql(set)) => set.add(&sid, gno),
                _ => {
                    let mut set = MysqlGtidSet::default();
                    set.add(&sid, gno);
                    self.gtid = Some(GtidState::MySql(set));
                }
            },
            None => {}
        }
        self.payload_end = None;
        let position = Position::Binlog(BinlogPosition {
            pos: BinlogFilePos::new(self.file.clone(), end),
            gtid: self.gtid.clone().filter(|g| !g.is_empty()),
        });
        if txn.is_some_and(|t| t.begun) {
            out.push(FerryEvent::Commit {
                position,
                commit_time: Timestamp::from_unix_micros(i64::from(timestamp) * 1_000_000),
            });
            self.last_heartbeat = Instant::now();
        } else if self.last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
            out.push(FerryEvent::Heartbeat { position });
            self.last_heartbeat = Instant::now();
        }
    }

    fn query(
        &mut self,
        db: &str,
        sql: &str,
        start: u64,
        end: u64,
        timestamp: u32,
        out: &mut Vec<FerryEvent>,
    ) -> Result<(), Error> {
        match classify(sql, db) {
            Statement::Begin => {
                if self.txn.is_none() {
                    self.begin_txn(start, None, false);
                }
            }
            // A ROLLBACK is only logged when non-transactional tables already changed: their rows stay.
            Statement::Commit | Statement::Rollback => self.end_txn(end, timestamp, out),
            Statement::Truncate(table) => {
                if self.selection.includes(&table) {
                    self.ensure_begun(start, out);
                    out.push(FerryEvent::Change(Change::Truncate {
                        tables: vec![table],
                        snapshot: false,
                    }));
                }
                self.end_txn(end, timestamp, out);
            }
            Statement::SchemaChange(tables) => {
                if tables.iter().any(|t| self.selection.includes(t)) {
                    let renamed = self.schema_change(db, sql, &tables, end)?;
                    // Renames take effect on the targets here, in their place in the stream: a swap
                    // (t → t_old, t_new → t) must not wait for each table's next row.
                    if !renamed.is_empty() {
                        self.ensure_begun(start, out);
                        out.extend(renamed.into_iter().map(FerryEvent::Schema));
                    }
                }
                self.end_txn(end, timestamp, out);
            }
            Statement::DataChange => {
                if self.selection.includes_database(db) {
                    let quoted: String = sql.chars().take(300).collect();
                    match self.on_unknown_ddl {
                        UnknownDdl::Fail => return Err(self.fail(end, format!(
                            "a statement-logged change in database {db} ({quoted:?}): its rows are not in the binlog. Set binlog_format = ROW for every session (SET GLOBAL binlog_format = 'ROW' and reconnect the writers), then take a new snapshot with `ferry reset`"
                        ))),
                        UnknownDdl::Skip => {
                            self.skipped_ddl += 1;
                            warn!(statement = %quoted, position = %format!("{}:{end}", self.file), "skipped a statement-logged change (on_unknown_ddl = \"skip\")");
                        }
                    }
                }
                if self.txn.as_ref().is_none_or(|t| t.standalone) {
                    self.end_txn(end, timestamp, out);
                }
            }
            Statement::Other => {
                if self.txn.as_ref().is_some_and(|t| t.standalone) {
                    self.end_txn(end, timestamp, out);
                }
            }
        }
        Ok(())
    }

    /// A table renamed: the next schema under `to` says where it came from, so targets rename their table rather
    /// than create an empty one. A followed name taken by a table Ferry does not follow (how gh-ost and
    /// pt-online-schema-change finish, when only the original table is listed) stops the pipeline: the rows of
    /// that table never reached the targets.
    /// Returns the renamed table's schema when the old one's is known, to announce at once.
    fn renamed(
        &mut self,
        from: TableId,
        to: TableId,
        end: u64,
    ) -> Result<Option<SchemaRef>, Error> {
        if self.selection.includes(&to) && !self.selection.includes(&from) {
            return Err(self.fail(
                end,
                format!(
                    "table {to} is now the table {from}, which Ferry does not follow, so its rows never reached the \
                     targets. Follow {from} too (online schema-change tools build the new table under another \
                     name), then copy the table anew (`ferry reset --config <file> --yes`)"
                ),
            ));
        }
        let origin = match self.table_hints.remove(&from) {
            Some(Lineage::RenamedFrom(origin)) => origin,
            _ => from.clone(),
        };
        self.schemas.remove(&to);
        let Some(known) = self.schemas.remove(&from) else {
            // Not seen since Ferry started: said with the table's next schema.
            self.table_hints.insert(to, Lineage::RenamedFrom(origin));
            return Ok(None);
        };
        self.schema_versions += 1;
        let mut schema = (*known).clone();
        schema.id = to.clone();
        schema.version = self.schema_versions;
        schema.lineage = Lineage::RenamedFrom(origin);
        let schema = Arc::new(schema);
        self.schemas.insert(to, schema.clone());
        Ok(Some(schema))
    }

    /// Keeps the schema history in step with a DDL statement on followed tables. With FULL row metadata every
    /// TABLE_MAP carries its table's columns, so the start-time definitions are simply retired. Without it the
    /// statement is interpreted into the definitions; one Ferry cannot interpret stops the pipeline (or, with
    /// `on_unknown_ddl = "skip"`, is logged and counted, and rows whose column count no longer matches still stop
    /// it in layout_from_table_map).
    fn schema_change(
        &mut self,
        db: &str,
        sql: &str,
        tables: &[TableId],
        end: u64,
    ) -> Result<Vec<SchemaRef>, Error> {
        let mut renamed = Vec::new();
        match parse_ddl(sql, db) {
            Ok(Ddl::Rename(pairs)) => {
                for (from, to) in pairs {
                    renamed.extend(self.renamed(from, to, end)?);
                }
            }
            Ok(Ddl::Alter(table, specs)) => {
                for spec in specs {
                    if let AlterSpec::RenameTable(to) = spec {
                        renamed.extend(self.renamed(table.clone(), to, end)?);
                    }
                }
            }
            Ok(Ddl::Drop(dropped)) => {
                for t in dropped {
                    self.schemas.remove(&t);
                    self.table_hints.insert(t, Lineage::Recreated);
                }
            }
            _ => {}
        }
        if let Ok(Ddl::Alter(table, specs)) = parse_ddl(sql, db) {
            let mut hints = Vec::new();
            let mut unknown = None;
            for spec in specs.clone() {
                match spec {
                    AlterSpec::RenameColumn(from, to) => hints.push(ColumnHint::Renamed { from, to }),
                    AlterSpec::Change(from, def, _) if from != def.name => {
                        hints.push(ColumnHint::Renamed { from, to: def.name })
                    }
                    AlterSpec::Add(def, _) => match def.default {
                        DefaultValue::Known(value) => hints.push(ColumnHint::Default {
                            column: def.name,
                            value,
                        }),
                        // Rows already there read a value Ferry does not know: say so rather than leave NULL.
                        DefaultValue::Unknown(expr) => {
                            unknown = Some(format!(
                                "column {} was added with DEFAULT {expr}…, which Ferry does not evaluate",
                                def.name
                            ))
                        }
                        DefaultValue::None if !def.nullable => {
                            unknown = Some(format!(
                                "column {} was added NOT NULL without a DEFAULT, so rows already there read \
                                 MySQL's implicit default, which Ferry does not reproduce",
                                def.name
                            ))
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
            renamed.extend(self.retyped(&table, &specs));
            if let Some(why) = unknown {
                let quoted: String = sql.chars().take(500).collect();
                return Err(self.fail(
                    end,
                    format!(
                        "{why}: the targets cannot know the values of the rows already in the table ({quoted:?}). \
                         Copy the table anew (`ferry reset --config <file> --yes`)"
                    ),
                ));
            }
            self.column_hints.entry(table).or_default().extend(hints);
        }
        if self.full_metadata {
            for t in tables {
                self.catalog.remove(t);
            }
            return Ok(renamed);
        }
        let why = match parse_ddl(sql, db) {
            Ok(ddl) => match apply_ddl(&mut self.catalog, &ddl, &self.database_charsets) {
                Ok(()) => return Ok(renamed),
                Err(why) => why,
            },
            Err(why) => why,
        };
        let quoted: String = sql.chars().take(500).collect();
        match self.on_unknown_ddl {
            UnknownDdl::Fail => Err(self.fail(
                end,
                format!(
                    "Ferry cannot interpret this DDL on a followed table ({why}): {quoted:?}. Rows after it would be decoded with a wrong schema. Set binlog_row_metadata = FULL on the source (rows then carry their own schema), or set on_unknown_ddl = \"skip\" if the statement does not change the table's columns"
                ),
            )),
            UnknownDdl::Skip => {
                self.skipped_ddl += 1;
                warn!(statement = %quoted, reason = %why, position = %format!("{}:{end}", self.file), "skipped a DDL statement Ferry cannot interpret (on_unknown_ddl = \"skip\")");
                Ok(renamed)
            }
        }
    }

    /// A known table's schema after `MODIFY` / `CHANGE` (without a rename) cut a column's digits within its type
    /// (`datetime(6)` → `datetime(3)`, `decimal(12,4)` → `decimal(12,2)`): the server rewrote the rows, without row
    /// events, so the targets must follow here, not with the table's next row (a quiet table would keep its
    /// values). A table not seen since Ferry started is described with its next row.
    fn retyped(&mut self, table: &TableId, specs: &[AlterSpec]) -> Option<SchemaRef> {
        use ferry_core::type_change::{spelling, values_survive};
        let known = self.schemas.get(table)?;
        let mut schema = (**known).clone();
        let mut changed = false;
        for spec in specs {
            let AlterSpec::Change(from, def, _) = spec else {
                continue;
            };
            let Some(c) = schema
                .columns
                .iter_mut()
                .find(|c| c.name == *from && *from == def.name)
            else {
                continue;
            };
            let new = def.column_type.to_ascii_lowercase();
            if spelling(&c.source_type).0 == spelling(&new).0
                && !values_survive(&c.source_type, &new)
            {
                c.source_type = new;
                c.nullable = def.nullable;
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        self.schema_versions += 1;
        schema.version = self.schema_versions;
        let schema = Arc::new(schema);
        self.schemas.insert(table.clone(), schema.clone());
        self.unannounced.remove(table);
        Some(schema)
    }

    fn table_map(&mut self, tme: &TableMapEvent<'_>, end: u64) -> Result<(), Error> {
        let id = TableId::new(tme.database_name(), tme.table_name());
        let table_id = tme.table_id();
        if id.name == ferry_core::versions::ORIGIN_TABLE
            && self.selection.includes_database(&id.schema)
        {
            let layout =
                layout_from_table_map(tme, None, 0, true).map_err(|e| self.fail(end, e))?;
            self.origin_maps.insert(table_id, Arc::new(layout));
            self.skipped_ids.insert(table_id);
            return Ok(());
        }
        if !self.selection.includes(&id) {
            self.maps.remove(&table_id);
            self.skipped_ids.insert(table_id);
            return Ok(());
        }
        self.skipped_ids.remove(&table_id);
        let anonymous = matches!(self.selection, Selection::All);
        let mut layout = layout_from_table_map(tme, self.catalog.get(&id), 0, anonymous)
            .map_err(|e| self.fail(end, e))?;
        let same_columns = |a: &TableSchema, b: &TableSchema| {
            a.primary_key == b.primary_key
                && a.columns.len() == b.columns.len()
                && a.columns.iter().zip(&b.columns).all(|(x, y)| {
                    (&x.name, &x.ty, &x.source_type, x.nullable)
                        == (&y.name, &y.ty, &y.source_type, y.nullable)
                })
        };
        match self.schemas.get(&id) {
            Some(known) if same_columns(known, &layout.schema) => {
                layout.schema = known.clone();
            }
            _ => {
                self.schema_versions += 1;
                let mut schema = (*layout.schema).clone();
                schema.version = self.schema_versions;
                // What the DDL since the last version said about renamed columns and constant defaults (existing
                // rows read the default: targets fill them with it).
                for hint in self.column_hints.remove(&id).unwrap_or_default() {
                    match hint {
                        ColumnHint::Renamed { from, to } => {
                            if let Some(c) = schema.columns.iter_mut().find(|c| c.name == to) {
                                c.previous_name = Some(from);
                            }
                        }
                        ColumnHint::Default { column, value } => {
                            if let Some(c) = schema.columns.iter_mut().find(|c| c.name == column) {
                                c.missing_value = Some(Value::Text(value));
                            }
                        }
                    }
                }
                schema.lineage = self.table_hints.remove(&id).unwrap_or_default();
                layout.schema = Arc::new(schema);
                self.schemas.insert(id.clone(), layout.schema.clone());
                self.unannounced.insert(id);
            }
        }
        self.maps.insert(table_id, Arc::new(layout));
        Ok(())
    }

    fn rows(
        &mut self,
        ty: u8,
        data: &[u8],
        start: u64,
        end: u64,
        out: &mut Vec<FerryEvent>,
    ) -> Result<(), Error> {
        let (kind, v2, compressed) = match ty {
            code::WRITE_ROWS_V1 => (RowsKind::Write, false, false),
            code::UPDATE_ROWS_V1 => (RowsKind::Update, false, false),
            code::DELETE_ROWS_V1 => (RowsKind::Delete, false, false),
            code::WRITE_ROWS => (RowsKind::Write, true, false),
            code::UPDATE_ROWS => (RowsKind::Update, true, false),
            code::DELETE_ROWS => (RowsKind::Delete, true, false),
            code::PARTIAL_UPDATE_ROWS => (RowsKind::Update, true, false),
            mariadb::WRITE_ROWS_COMPRESSED_V1 => (RowsKind::Write, false, true),
            mariadb::UPDATE_ROWS_COMPRESSED_V1 => (RowsKind::Update, false, true),
            mariadb::DELETE_ROWS_COMPRESSED_V1 => (RowsKind::Delete, false, true),
            mariadb::WRITE_ROWS_COMPRESSED => (RowsKind::Write, true, true),
            mariadb::UPDATE_ROWS_COMPRESSED => (RowsKind::Update, true, true),
            _ => (RowsKind::Delete, true, true),
        };
        let body = RowsBody::parse(data, kind, v2).map_err(|e| self.fail(end, e))?;
        if let Some(layout) = self.origin_maps.get(&body.table_id).cloned() {
            return self.origin_marker(&layout, &body, kind, compressed, end);
        }
        if self.txn.as_ref().is_some_and(|t| t.skipping) && self.maps.contains_key(&body.table_id) {
            self.origin_skipped += 1;
            return Ok(());
        }
        let Some(layout) = self.maps.get(&body.table_id).cloned() else {
            if self.skipped_ids.contains(&body.table_id) {
                return Ok(());
            }
            return Err(self.fail(
                end,
                format!(
                    "rows event for table id {} without its TABLE_MAP event",
                    body.table_id
                ),
            ));
        };
        let table = layout.schema.id.clone();
        if body.columns != layout.columns.len() {
            return Err(self.fail(
                end,
                format!(
                    "rows event for {table} has {} columns, its TABLE_MAP {}",
                    body.columns,
                    layout.columns.len()
                ),
            ));
        }
        let inflated;
        let rows = if compressed {
            inflated = mariadb::uncompress(body.rows)
                .map_err(|e| self.fail(end, format!("compressed rows event for {table}: {e}")))?;
            &inflated[..]
        } else {
            body.rows
        };
        let partial = ty == code::PARTIAL_UPDATE_ROWS;
        let ops = decode_rows(
            rows,
            &layout.columns,
            kind,
            &body.before,
            &body.after,
            partial,
        )
        .map_err(|e| {
            self.fail(
                end,
                format!("rows of {table}: {}", e.describe(&layout.schema.columns)),
            )
        })?;
        self.ensure_begun(start, out);
        if self.unannounced.remove(&table) {
            out.push(FerryEvent::Schema(layout.schema.clone()));
        }
        let catching_up = self
            .catch_up
            .as_ref()
            .is_some_and(|c| c.tables.contains(&table));
        for op in ops {
            let row = |op| {
                FerryEvent::Change(Change::Row {
                    table: layout.schema.clone(),
                    op,
                })
            };
            match op {
                RowOp::Update {
                    before: Some(before),
                    after,
                } if catching_up
                    && layout
                        .schema
                        .primary_key
                        .iter()
                        .any(|&k| before[k] != after[k]) =>
                {
                    out.push(row(RowOp::Delete { before }));
                    out.push(row(RowOp::Insert { after }));
                }
                op => out.push(row(op)),
            }
        }
        Ok(())
    }
}

impl Decoder {
    /// A row of `ferry_origin`: the open transaction was applied by the Ferry pipeline it names
    /// (`ferry_core::versions::ORIGIN_TABLE`); it is left out when `[source] origins` skips that origin.
    fn origin_marker(
        &mut self,
        layout: &TableLayout,
        body: &RowsBody<'_>,
        kind: RowsKind,
        compressed: bool,
        end: u64,
    ) -> Result<(), Error> {
        let inflated;
        let rows = if compressed {
            inflated = mariadb::uncompress(body.rows).map_err(|e| {
                self.fail(end, format!("compressed rows event of ferry_origin: {e}"))
            })?;
            &inflated[..]
        } else {
            body.rows
        };
        let ops = decode_rows(
            rows,
            &layout.columns,
            kind,
            &body.before,
            &body.after,
            false,
        )
        .map_err(|e| {
            self.fail(
                end,
                format!(
                    "rows of ferry_origin: {}",
                    e.describe(&layout.schema.columns)
                ),
            )
        })?;
        let pipeline = ops.iter().find_map(|op| match op {
            RowOp::Insert { after } | RowOp::Update { after, .. } => match after.first() {
                Some(Value::Text(p)) => Some(p.clone()),
                Some(Value::Bytes(p)) => Some(String::from_utf8_lossy(p).into_owned()),
                _ => None,
            },
            _ => None,
        });
        if let (Some(pipeline), Some(txn)) = (pipeline, self.txn.as_mut()) {
            let name = format!("ferry_{}", pipeline.to_lowercase());
            txn.skipping = self.origins.skips(&name);
            txn.origin = Some(name);
        }
        Ok(())
    }
}

/// The fixed part of a rows event.
struct RowsBody<'a> {
    table_id: u64,
    columns: usize,
    before: Vec<bool>,
    after: Vec<bool>,
    rows: &'a [u8],
}

impl<'a> RowsBody<'a> {
    /// Post-header (table id, flags, and for v2 the extra-data block), column count, column bitmaps.
    fn parse(data: &'a [u8], kind: RowsKind, v2: bool) -> Result<Self, String> {
        let mut cur = Cursor::new(data);
        let err = |e: super::rows::RowError| e.0;
        let id = cur.take(6, "the rows event header").map_err(err)?;
        let table_id = id.iter().rev().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        cur.take(2, "the rows event flags").map_err(err)?;
        if v2 {
            let extra = cur.take(2, "the rows event extra data").map_err(err)?;
            let extra = usize::from(u16::from_le_bytes([extra[0], extra[1]]));
            cur.take(extra.saturating_sub(2), "the rows event extra data")
                .map_err(err)?;
        }
        let columns = lenenc(&mut cur).map_err(err)?;
        let columns = usize::try_from(columns)
            .ok()
            .filter(|&c| c <= 4096)
            .ok_or_else(|| format!("rows event claims {columns} columns"))?;
        let bitmap = |cur: &mut Cursor<'a>| -> Result<Vec<bool>, String> {
            let bytes = cur
                .take(columns.div_ceil(8), "a column bitmap")
                .map_err(err)?;
            Ok((0..columns)
                .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
                .collect())
        };
        let first = bitmap(&mut cur)?;
        let (before, after) = match kind {
            RowsKind::Update => {
                let second = bitmap(&mut cur)?;
                (first, second)
            }
            _ => (first.clone(), first),
        };
        Ok(RowsBody {
            table_id,
            columns,
            before,
            after,
            rows: cur.take(cur.remaining(), "rows").map_err(err)?,
        })
    }
}

/// A QUERY event's default database and statement. Post-header: thread id (4), exec time (4), database name
/// length (1), error code (2), status-variables length (2); then the status variables, the database name and a
/// NUL, then the statement (zlib-compressed in MariaDB's QUERY_COMPRESSED).
fn parse_query(data: &[u8], compressed: bool) -> Result<(String, String), String> {
    let mut cur = Cursor::new(data);
    let err = |e: super::rows::RowError| format!("QUERY event: {}", e.0);
    let post = cur.take(13, "the QUERY header").map_err(err)?;
    let db_len = usize::from(post[8]);
    let status_len = usize::from(u16::from_le_bytes([post[11], post[12]]));
    cur.take(status_len, "the QUERY status variables")
        .map_err(err)?;
    let db = cur.take(db_len, "the QUERY database").map_err(err)?;
    cur.take(1, "the QUERY database terminator").map_err(err)?;
    let rest = cur.take(cur.remaining(), "the statement").map_err(err)?;
    let sql = if compressed {
        mariadb::uncompress(rest).map_err(|e| format!("QUERY_COMPRESSED event: {e}"))?
    } else {
        rest.to_vec()
    };
    Ok((
        String::from_utf8_lossy(db).into_owned(),
        String::from_utf8_lossy(&sql).into_owned(),
    ))
}

fn format_uuid(b: [u8; 16]) -> String {
    ferry_core::Uuid(b).to_string()
}

/// Whether every count in a PREVIOUS_GTIDS event body (source ids, then each one's intervals) fits in the bytes
/// that follow it. mysql_common reserves memory for each count before reading: a malformed count would ask for
/// petabytes. Layout as mysql_common reads it (untagged, or MySQL 8.4's tagged format).
fn previous_gtids_bounded(data: &[u8]) -> bool {
    use mysql_common::io::ParseBuf;
    let take = |buf: &mut ParseBuf<'_>, n: usize| -> Option<()> {
        buf.0 = buf.0.get(n..)?;
        Some(())
    };
    let walk = || -> Option<()> {
        let mut buf = ParseBuf(data);
        let header = u64::from_le_bytes(buf.0.get(..8)?.try_into().ok()?);
        take(&mut buf, 8)?;
        let tagged = header >> 56 != 0;
        let n_sids = if tagged {
            (header >> 8) & ((1 << 48) - 1)
        } else {
            header & ((1 << 56) - 1)
        };
        if n_sids > buf.0.len() as u64 / 24 {
            return None;
        }
        for _ in 0..n_sids {
            take(&mut buf, 16)?;
            if tagged {
                let tag_len = mysql_common::misc::read_varlen_uint(&mut buf).ok()?;
                take(&mut buf, usize::try_from(tag_len).ok()?)?;
            }
            let n = u64::from_le_bytes(buf.0.get(..8)?.try_into().ok()?);
            take(&mut buf, 8)?;
            take(&mut buf, usize::try_from(n).ok()?.checked_mul(16)?)?;
        }
        Some(())
    };
    walk().is_some()
}

/// Whether an event's last four bytes are the CRC32 of the rest (header and body), as a checksummed event ends.
fn ends_with_own_crc32(event: &Event) -> bool {
    use mysql_common::proto::MySerialize;
    let data = event.data();
    let Some(split) = data.len().checked_sub(4) else {
        return false;
    };
    let (body, crc) = data.split_at(split);
    let mut header = Vec::with_capacity(19);
    event.header().serialize(&mut header);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(body);
    crc.try_into()
        .is_ok_and(|crc: [u8; 4]| hasher.finalize() == u32::from_le_bytes(crc))
}
