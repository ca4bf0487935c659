//! The typed, validated pipeline configuration.

use std::path::PathBuf;
use std::time::Duration;

use ferry_core::{Alerts, BatchLimits, RowErrors, TableId};

/// One pipeline: a source, its filters, and one or more sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// The file this pipeline was read from, for messages.
    pub file: PathBuf,
    pub name: String,
    pub source: SourceConfig,
    pub filter: FilterConfig,
    /// The `[[transform]]` stages, in the order they apply (after `filter`).
    pub transforms: Vec<TransformConfig>,
    pub sinks: Vec<SinkConfig>,
    pub batch: BatchLimits,
    /// How long the source may be idle before Ferry writes a heartbeat so the source's log position advances.
    /// `None` turns heartbeats off.
    pub heartbeat_interval: Option<Duration>,
    /// Tables copied at once by the initial snapshot.
    pub snapshot_parallelism: usize,
    /// How long the source may send nothing (no change, no keepalive, no heartbeat) before Ferry takes its
    /// connection for dead and reconnects.
    pub source_timeout: Duration,
    /// `[pipeline] node`: this side's node id in a multi-master setup (tie-breaks, the conflict log). When set,
    /// PostgreSQL sinks apply under the replication origin `ferry_<pipeline>`, so a peer pipeline reading the
    /// target can skip what this one wrote.
    pub node: Option<String>,
    /// `[pipeline] on_error`, `max_dead_letters`, `[pipeline.retry]` and `[[pipeline.on_error_rules]]`: what
    /// sinks do with a row change their target refuses, and how failures are retried.
    pub row_errors: RowErrors,
    /// `[pipeline.alerts]`: lag and retained-WAL thresholds.
    pub alerts: Alerts,
}

impl PipelineConfig {
    /// Why transactions streamed while in progress cannot be applied live (before they commit) in this
    /// pipeline; `None` when they can. Live apply needs every sink to undo what it applied (a transaction that
    /// aborts or that is applied again whole), and nothing that reads a transaction's commit: conflict
    /// resolution and origins (commit times), a transform expression reading `tx`, transform dead letters (kept
    /// in the chain's memory), `[pipeline] node`.
    pub fn live_apply_blocked(&self) -> Option<String> {
        if let Some(s) = self.sinks.iter().find(|s| !s.kind.rolls_back()) {
            return Some(format!("sink {} cannot undo what it applied", s.name));
        }
        if let Some(s) = self
            .sinks
            .iter()
            .find(|s| s.conflicts.default.is_some() || !s.conflicts.rules.is_empty())
        {
            return Some(format!("sink {} resolves conflicts by commit", s.name));
        }
        if self.node.is_some() {
            return Some("[pipeline] node is set (multi-master)".to_owned());
        }
        for t in &self.transforms {
            if t.on_error == RowErrorPolicy::DeadLetter {
                return Some(format!("{} sets rows aside as dead letters", t.key));
            }
            if t.kind.expression().is_some_and(names_tx) {
                return Some(format!("{} reads the transaction (`tx`)", t.key));
            }
        }
        None
    }
}

/// Which source transactions a source passes on, by the replication origin (PostgreSQL) or the server id
/// (MySQL / MariaDB binlog) they were written under: `[source] origins` and `skip_origins`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OriginFilter {
    /// Every transaction (the default): a one-way pipeline, or a chain that forwards what it receives.
    #[default]
    Any,
    /// Only transactions written by the source's own clients: none applied by a replication origin (Ferry's peer
    /// pipeline, a native subscription). What breaks the loop of two pipelines A→B and B→A.
    Local,
    /// Every transaction except those of these origins (PostgreSQL origin names such as `ferry_b_to_a`).
    Skip(Vec<String>),
}

impl OriginFilter {
    /// Whether a transaction written under the origin `name` is left out.
    pub fn skips(&self, name: &str) -> bool {
        match self {
            OriginFilter::Any => false,
            OriginFilter::Local => true,
            OriginFilter::Skip(names) => names.iter().any(|n| n == name),
        }
    }
}

/// Where changes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    Postgres(PostgresSource),
    Mysql(MysqlSource),
    Kafka(KafkaSource),
}

/// Debezium-format topics read in a Kafka consumer group (docs/scale-out.md). Each sink stores the offsets of
/// the partitions it applied in its checkpoint table, in the transaction of the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSource {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topics: KafkaTopics,
    /// The consumer group: processes with the same group share the topics' partitions.
    pub group_id: String,
    /// How records are encoded: Debezium's JSON envelope (with or without the schema block), or Avro through a
    /// schema registry.
    pub format: KafkaFormat,
    /// librdkafka's `partition.assignment.strategy`.
    pub assignment: String,
    /// Where a partition no sink has applied starts: its earliest record (true) or the next one written.
    pub from_earliest: bool,
    /// Extra librdkafka properties (`[source.kafka]`: TLS, SASL, …).
    pub properties: Vec<(String, String)>,
}

/// Which topics a Kafka source reads.
#[derive(Debug, Clone, PartialEq)]
pub enum KafkaTopics {
    List(Vec<String>),
    /// A regular expression over topic names (librdkafka's `^…` subscription).
    Pattern(String),
}

/// A MySQL / MariaDB row-binlog source (so far `ferry check` only; streaming is the MySQL-source issue's work).
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlSource {
    /// `mysql://user:pw@host:3306/db`.
    pub url: String,
    /// Tables as `database.table`; `None`: every table of the URL's database.
    pub tables: Option<Vec<TableId>>,
    pub snapshot: SnapshotMode,
    /// The replica server id Ferry registers with; `None`: derived from the pipeline name.
    pub server_id: Option<u32>,
    /// `on_unknown_ddl = "skip"`: a statement Ferry cannot apply (a statement-logged data change) is logged and
    /// counted instead of stopping the pipeline.
    pub skip_unknown_ddl: bool,
    pub origins: OriginFilter,
    /// `semi_sync = true`: Ferry registers as a semi-synchronous replica and acknowledges each transaction only
    /// once every sink has committed it, so a primary with `rpl_semi_sync_master_enabled` returns COMMIT only
    /// then (docs/operations.md, synchronous replication).
    pub semi_sync: bool,
}

/// A PostgreSQL logical-replication source.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSource {
    /// A libpq-style URL (`postgres://user:pw@host:port/db?sslmode=…`).
    pub url: String,
    /// Tables to publish; `None` publishes all tables.
    pub tables: Option<Vec<TableId>>,
    pub snapshot: SnapshotMode,
    pub slot: String,
    pub publication: String,
    /// What to do when the source changes a table in a way Ferry cannot reproduce on its targets.
    pub on_schema_change: SchemaChangePolicy,
    pub origins: OriginFilter,
    /// `streaming`: ask the server (PostgreSQL 14+) to stream a transaction bigger than
    /// `logical_decoding_work_mem` before it commits, kept on Ferry's disk instead of the walsender's until then.
    /// Off by default: receiving and applying such a transaction then no longer overlap (0.6× on a 1,000,000-row
    /// transaction), so it pays only where the source's own spill hurts.
    pub streaming: bool,
    /// `binary`: ask the server (PostgreSQL 14+) for values in binary, its types' send format, where Ferry reads
    /// every published column's type so (built-in scalar types, enums, domains and arrays of them; a publication
    /// with another type, such as `inet` or a composite, streams in text). Off by default: in `scripts/bench pg`
    /// it decodes at the same CPU per row as text.
    pub binary: bool,
    /// `spool_dir`: where transactions the server streams before they commit are kept, in a subdirectory
    /// `ferry-spool-<slot>` (emptied at start); `None`: the system's temporary directory.
    pub spool_dir: Option<PathBuf>,
}

/// What to do with a schema change Ferry cannot reproduce on a target: a table rewritten without row events
/// (`ALTER COLUMN … TYPE … USING <expression>`, `ADD COLUMN` with a volatile default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChangePolicy {
    /// Stop the pipeline, naming the statement, the table and the position.
    Halt,
    /// Stop applying that table only (loud in logs, metrics and `ferry status`); the others go on.
    Quarantine,
    /// Copy that table anew while the stream goes on (an online re-copy in key order; tables without a primary
    /// key halt instead, since their rows cannot be copied in chunks).
    Resnapshot,
}

/// Whether and how the initial snapshot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Copy existing rows when there is no checkpoint, then stream.
    Initial,
    /// Never copy existing rows: stream changes from the slot's creation on.
    Never,
    /// Copy existing rows, then stop.
    Only,
}

/// Table and column filters applied in the transform stage.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilterConfig {
    /// When set, only these tables pass.
    pub include_tables: Option<Vec<TableId>>,
    pub exclude_tables: Vec<TableId>,
    /// Columns removed from every row and from the target schema.
    pub exclude_columns: Vec<(TableId, String)>,
}

/// One `[[transform]]` stage.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformConfig {
    /// Its key path in the file (`transform[2]`), for messages.
    pub key: String,
    /// The tables it applies to (`schema.table`, `*` and `?` as globs); `None`: every table.
    pub tables: Option<Vec<String>>,
    /// What a row this stage fails on does to the pipeline.
    pub on_error: RowErrorPolicy,
    pub kind: TransformKind,
}

/// What a row that a stage cannot transform (a cast that fails, an expression error) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowErrorPolicy {
    /// Stop the pipeline, naming the stage, the table and the row's key.
    #[default]
    Halt,
    /// Leave the row out, log it and count it in `/metrics`.
    Skip,
    /// Set the row, as the source read it, aside in each sink's dead letters (with the batch's transaction);
    /// later changes of its key follow it there. `ferry dead-letters replay` runs it through the transforms again.
    DeadLetter,
}

/// A column a stage names: `column` (in every table the stage applies to) or `schema.table.column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRef {
    /// `None`: any table in the stage's scope; otherwise a `schema.table` pattern.
    pub table: Option<String>,
    pub column: String,
}

/// The kinds of transform stage.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformKind {
    /// Keep the changes (or rows) for which a CEL predicate holds.
    Filter {
        predicate: String,
        /// `mode = "changes"` (false, the default, as Debezium's Filter SMT): each change is kept or dropped on
        /// its own, so `op != 'd'` keeps deleted rows in the target. `mode = "rows"` (true): the predicate is
        /// about the row (`after`), and the target holds exactly the source rows for which it holds: an update
        /// whose new row fails it becomes a delete, and deletes always pass.
        rows: bool,
    },
    /// Rename tables: `to` is `schema.table` with `{schema}` and `{table}` templates, or a CEL expression giving
    /// `schema.table` (`to_expression`).
    Route {
        to: RouteTo,
    },
    RenameColumns {
        renames: Vec<(String, String)>,
    },
    DropColumns {
        columns: Vec<ColumnRef>,
    },
    KeepColumns {
        columns: Vec<ColumnRef>,
    },
    Convert {
        columns: Vec<ColumnRef>,
        /// The type to cast to (as `column_type` spells types); `None`: the type stays.
        to: Option<String>,
        /// For `timestamp` → `timestamptz`: the IANA zone the source's wall times are in (default UTC).
        zone: Option<String>,
        trim: bool,
        case: Option<Case>,
    },
    Mask {
        columns: Vec<ColumnRef>,
        with: MaskKind,
    },
    Compute {
        column: String,
        column_type: String,
        expression: String,
    },
}

impl TransformKind {
    /// The stage's CEL expression, if it has one (`filter`, `compute`, `route` by expression).
    pub fn expression(&self) -> Option<&str> {
        match self {
            TransformKind::Filter { predicate, .. } => Some(predicate),
            TransformKind::Compute { expression, .. } => Some(expression),
            TransformKind::Route {
                to: RouteTo::Expression(e),
            } => Some(e),
            _ => None,
        }
    }
}

/// Whether a CEL expression names the variable `tx` (conservatively: the word anywhere but after a `.`, string
/// literals included).
fn names_tx(expression: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    expression.match_indices("tx").any(|(i, _)| {
        let before = expression[..i].chars().next_back();
        !word(before) && before != Some('.') && !word(expression[i + 2..].chars().next())
    })
}

/// Where `route` sends a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTo {
    Template(String),
    Expression(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Lower,
    Upper,
}

/// How `mask` hides a value. Every kind but `Null` turns the column into text.
#[derive(Clone, PartialEq, Eq)]
pub enum MaskKind {
    /// Hex SHA-256 of the salt and the value's text: the same value always masks the same (joins still work).
    Sha256 {
        salt: String,
    },
    /// A constant.
    Redact {
        value: String,
    },
    Null,
    /// Keep the first `n` characters, `*` for the rest.
    KeepFirst(usize),
    /// Keep the last `n` characters (card numbers), `*` for the rest.
    KeepLast(usize),
}

impl std::fmt::Debug for MaskKind {
    /// The salt is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaskKind::Sha256 { .. } => f.write_str("Sha256 { salt: <redacted> }"),
            MaskKind::Redact { value } => write!(f, "Redact {{ value: {value:?} }}"),
            MaskKind::Null => f.write_str("Null"),
            MaskKind::KeepFirst(n) => write!(f, "KeepFirst({n})"),
            MaskKind::KeepLast(n) => write!(f, "KeepLast({n})"),
        }
    }
}

/// Where changes go.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Unique within the pipeline; names the checkpoint row.
    pub name: String,
    pub kind: SinkKind,
    /// How the sink resolves a change that conflicts with the target row (SQL sinks only).
    pub conflicts: ConflictPolicy,
}

/// What wins when a source change meets a target row written by someone else: `[[sink]] conflict` and
/// `[[sink.conflict_rules]]`. Resolver names follow pglogical's (`apply_remote`, `keep_local`, …).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConflictPolicy {
    /// The resolver of every table no rule names; `None` (no `conflict` key): apply every change without
    /// looking for conflicts, as a one-way pipeline does.
    pub default: Option<Resolver>,
    /// Per-table rules, the first whose glob matches wins.
    pub rules: Vec<ConflictRule>,
}

/// `[[sink.conflict_rules]]`: a resolver and column merge rules for the tables matching `tables`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictRule {
    /// Its key path in the file (`sink[0].conflict_rules[1]`), for messages.
    pub key: String,
    /// `schema.table` globs (`*`, `?`).
    pub tables: Vec<String>,
    /// `None`: the sink's default resolver.
    pub resolver: Option<Resolver>,
    /// Per-column merge rules, applied whatever the row resolver decides.
    pub columns: Vec<(String, MergeRule)>,
    /// `version_vectors = true`: rows carry a vector of per-node write counts, so a change that follows the
    /// target row (its writer had seen it) is no conflict, and only concurrent ones go to the resolver.
    pub version_vectors: bool,
    /// `merge = "<CEL>"`: an application-level merge of a conflicting row, a map of column to value computed from
    /// `local` and `remote` (maps of column to text) and their versions.
    pub merge: Option<String>,
}

/// How a row conflict is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolver {
    /// The source change is applied (today's behaviour; no conflict detection cost).
    #[default]
    ApplyRemote,
    /// The target row stays.
    KeepLocal,
    /// The later write wins: the row versions' hybrid logical clock (µs), ties broken by node id.
    LastWriteWins,
    /// The earlier write wins.
    FirstWriteWins,
    /// The conflicting source change is dropped (and logged).
    Skip,
    /// The pipeline stops, naming the table, the key and both rows.
    Error,
}

impl Resolver {
    /// Its name in the config file and the conflict log.
    pub fn name(self) -> &'static str {
        match self {
            Resolver::ApplyRemote => "apply_remote",
            Resolver::KeepLocal => "keep_local",
            Resolver::LastWriteWins => "last_write_wins",
            Resolver::FirstWriteWins => "first_write_wins",
            Resolver::Skip => "skip",
            Resolver::Error => "error",
        }
    }

    pub const ALL: [Resolver; 6] = [
        Resolver::ApplyRemote,
        Resolver::KeepLocal,
        Resolver::LastWriteWins,
        Resolver::FirstWriteWins,
        Resolver::Skip,
        Resolver::Error,
    ];
}

/// A per-column merge rule: the column's new value is computed from the target's (`local`) and the change's
/// (`remote`) whichever row wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeRule {
    /// The larger value.
    Max,
    /// The smaller value.
    Min,
    /// The winner's value unless it is NULL, else the other's.
    PreferNonNull,
    /// A counter: `local + (new − old)`, so increments made on two primaries both count. Needs the old value
    /// (REPLICA IDENTITY FULL, `binlog_row_image = FULL`).
    SumDelta,
    /// A JSON array: the elements of both, each once (in the target's order, then the change's new ones).
    Union,
}

impl MergeRule {
    pub fn name(self) -> &'static str {
        match self {
            MergeRule::Max => "max",
            MergeRule::Min => "min",
            MergeRule::PreferNonNull => "prefer_non_null",
            MergeRule::SumDelta => "sum_delta",
            MergeRule::Union => "union",
        }
    }

    pub const ALL: [MergeRule; 5] = [
        MergeRule::Max,
        MergeRule::Min,
        MergeRule::PreferNonNull,
        MergeRule::SumDelta,
        MergeRule::Union,
    ];
}

impl ConflictPolicy {
    /// The merge expression of the rule that covers `table`, if any.
    pub fn merge_for(&self, table: &TableId) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.tables.iter().any(|p| table.matches_glob(p)))
            .and_then(|r| r.merge.as_deref())
    }

    /// Whether the rule that covers `table` keeps version vectors.
    pub fn vectors_for(&self, table: &TableId) -> bool {
        self.rules
            .iter()
            .find(|r| r.tables.iter().any(|p| table.matches_glob(p)))
            .is_some_and(|r| r.version_vectors)
    }

    /// The resolver and merge rules of `table`, `None` when nothing is configured for it (nothing to detect).
    pub fn for_table(&self, table: &TableId) -> Option<(Resolver, &[(String, MergeRule)])> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.tables.iter().any(|p| table.matches_glob(p)));
        let resolver = rule.and_then(|r| r.resolver).or(self.default);
        let columns = rule.map_or(&[][..], |r| &r.columns[..]);
        // A rule with only a merge expression or version vectors still puts its tables under a policy.
        let declared = rule.is_some_and(|r| r.merge.is_some() || r.version_vectors);
        (resolver.is_some() || !columns.is_empty() || declared)
            .then(|| (resolver.unwrap_or_default(), columns))
    }
}

/// The backend of a sink.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    Postgres {
        url: String,
    },
    /// MySQL or MariaDB (`mysql://user:pw@host:3306/db`).
    Mysql {
        url: String,
    },
    Sqlite {
        path: PathBuf,
    },
    /// Drops every change and keeps only its position in a small file: for measuring a source, or advancing a
    /// slot without a target.
    Discard {
        checkpoint_file: PathBuf,
    },
    /// Kafka topics, Debezium-compatible records.
    Kafka(KafkaSink),
}

impl SinkKind {
    /// Whether the sink can undo a transaction it applied while the source had not committed it yet
    /// (`ferry_core::Sink::rollback`): targets with transactions. A topic cannot take back what it published.
    pub fn rolls_back(&self) -> bool {
        self.resumes_snapshots() || matches!(self, SinkKind::Discard { .. })
    }

    /// Whether the sink records which tables a snapshot finished, so that a snapshot cut short resumes with the
    /// tables it had not finished (SQL targets). A topic cannot take back the reads it published.
    pub fn resumes_snapshots(&self) -> bool {
        matches!(
            self,
            SinkKind::Postgres { .. } | SinkKind::Mysql { .. } | SinkKind::Sqlite { .. }
        )
    }
}

/// How a Kafka sink writes.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSink {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic_prefix: String,
    /// Topic name template with `{prefix}`, `{schema}`, `{table}`; default `{prefix}.{schema}.{table}`.
    pub topic: String,
    pub format: KafkaFormat,
    /// Transactions (exactly once for `read_committed` consumers), or plain idempotent produce.
    pub exactly_once: bool,
    /// Include Kafka Connect's `schema` block beside `payload` (JsonConverter's `schemas.enable`).
    pub schemas: bool,
    /// A null-value record after each delete, so compaction can drop the key.
    pub tombstones: bool,
    /// BEGIN / END records per source transaction in `{prefix}.transaction` (Debezium's transaction metadata).
    pub transaction_topic: bool,
    pub decimal_handling: DecimalHandling,
    /// For topics Ferry creates.
    pub partitions: i32,
    pub replication_factor: i32,
    pub cleanup_policy: String,
    /// The largest record: the producer's `message.max.bytes` and created topics' `max.message.bytes`.
    pub max_message_bytes: usize,
    /// Where rows set aside under `on_error = "dead_letter"` go (compacted, one partition; key
    /// `{pipeline}/{sink}/{id}`, a tombstone once replayed or discarded).
    pub dead_letter_topic: String,
    /// Extra librdkafka properties (`[sink.kafka]`: TLS, SASL, …).
    pub properties: Vec<(String, String)>,
}

impl KafkaSink {
    /// A sink for `brokers` with every other setting at the default a config file gets.
    pub fn new(brokers: impl Into<String>) -> KafkaSink {
        KafkaSink {
            brokers: brokers.into(),
            topic_prefix: "ferry".into(),
            topic: "{prefix}.{schema}.{table}".into(),
            format: KafkaFormat::Json,
            exactly_once: true,
            schemas: true,
            tombstones: true,
            transaction_topic: false,
            decimal_handling: DecimalHandling::Precise,
            partitions: 1,
            replication_factor: 1,
            cleanup_policy: "delete".into(),
            max_message_bytes: 16 << 20,
            dead_letter_topic: "ferry_dead_letters".into(),
            properties: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaFormat {
    Json,
    /// Avro in the Confluent wire format, schemas registered at this registry URL (http or https, with basic
    /// auth credentials in its user info).
    Avro {
        schema_registry: String,
        /// The CA certificate (PEM) an https registry's certificate must chain to; the system's bundle if unset.
        schema_registry_ca: Option<std::path::PathBuf>,
    },
}

/// Debezium's `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalHandling {
    /// Exact: the unscaled value's two's-complement bytes (base64 in JSON) with the scale.
    Precise,
    Double,
    String,
}

impl SinkKind {
    /// The `type` key's value.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Postgres { .. } => "postgres",
            SinkKind::Mysql { .. } => "mysql",
            SinkKind::Sqlite { .. } => "sqlite",
            SinkKind::Discard { .. } => "discard",
            SinkKind::Kafka(_) => "kafka",
        }
    }
}

#[cfg(test)]
mod live_tests {
    use super::names_tx;

    #[test]
    fn an_expression_names_tx_after_any_separator_but_not_inside_a_word_or_after_a_dot() {
        for e in [
            "tx.position",
            "\ttx.position",
            "string(\ntx.commit_time)",
            "has(tx.origin)",
            "a == 1 &&tx.xid > 0",
        ] {
            assert!(names_tx(e), "{e:?}");
        }
        for e in ["txn == 1", "row.tx == 2", "ctx > 1", "after.tx_id"] {
            assert!(!names_tx(e), "{e:?}");
        }
    }
}
