//! Pure validation of a parsed TOML document into a [`PipelineConfig`], collecting every error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_core::dead_letter::OnErrorRule;
use ferry_core::{Alerts, BatchLimits, OnError, RowErrors, TableId};
use toml::{Table, Value};

use crate::env::expand;
use crate::model::*;
use crate::{ConfigError, ConfigErrors};

/// The sink kinds, as the `type` key expects them.
const SINK_TYPES: &str = "\"postgres\", \"mysql\", \"sqlite\", \"kafka\" or \"discard\"";

/// Collects errors while reading one file.
struct Reader<'a> {
    file: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

/// A table being read, with the keys looked at so far (the rest are unknown).
struct Section<'t> {
    path: String,
    table: &'t Table,
    known: BTreeSet<&'static str>,
}

impl<'t> Section<'t> {
    fn new(path: impl Into<String>, table: &'t Table) -> Self {
        Section {
            path: path.into(),
            table,
            known: BTreeSet::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl Reader<'_> {
    fn error(&mut self, key: String, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            key,
            message: message.into(),
        });
    }

    fn get<'t>(&mut self, sec: &mut Section<'t>, key: &'static str) -> Option<&'t Value> {
        sec.known.insert(key);
        sec.table.get(key)
    }

    fn string(
        &mut self,
        sec: &mut Section<'_>,
        key: &'static str,
        expected: &str,
    ) -> Option<String> {
        match self.get(sec, key)? {
            Value::String(s) => match expand(s, self.env) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(sec.key(key), e.to_string());
                    None
                }
            },
            other => {
                self.error(
                    sec.key(key),
                    format!("expected {expected}, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn required_string(
        &mut self,
        sec: &mut Section<'_>,
        key: &'static str,
        expected: &str,
    ) -> Option<String> {
        if !sec.table.contains_key(key) {
            sec.known.insert(key);
            self.error(sec.key(key), format!("missing; expected {expected}"));
            return None;
        }
        self.string(sec, key, expected)
    }

    fn string_list(
        &mut self,
        sec: &mut Section<'_>,
        key: &'static str,
        expected: &str,
    ) -> Option<Vec<String>> {
        let value = self.get(sec, key)?;
        let Value::Array(items) = value else {
            self.error(
                sec.key(key),
                format!("expected a list of {expected}, found {}", value.type_str()),
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => match expand(s, self.env) {
                    Ok(v) => out.push(v),
                    Err(e) => self.error(format!("{}[{i}]", sec.key(key)), e.to_string()),
                },
                other => self.error(
                    format!("{}[{i}]", sec.key(key)),
                    format!("expected {expected}, found {}", other.type_str()),
                ),
            }
        }
        Some(out)
    }

    /// An integer from `min` to `max`: every numeric setting has bounds, so a huge value is a config error,
    /// not a failure (or a panic) when the pipeline runs.
    fn int_within(
        &mut self,
        sec: &mut Section<'_>,
        key: &'static str,
        (min, max): (usize, usize),
    ) -> Option<usize> {
        match self.get(sec, key)? {
            Value::Integer(n) if *n >= min as i64 && (*n as u64) <= max as u64 => Some(*n as usize),
            other => {
                self.error(
                    sec.key(key),
                    format!(
                        "expected an integer from {min} to {max}, found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// A duration from `min` to `max` (or "off" where `allow_off`).
    fn duration_within(
        &mut self,
        sec: &mut Section<'_>,
        key: &'static str,
        allow_off: bool,
        (min, max): (Duration, Duration),
    ) -> Option<Option<Duration>> {
        let d = self.duration(sec, key, allow_off)?;
        match d {
            Some(v) if v < min || v > max => {
                self.error(
                    sec.key(key),
                    format!("expected a duration from {min:?} to {max:?}, found {v:?}"),
                );
                None
            }
            other => Some(other),
        }
    }

    /// A name PostgreSQL takes as an identifier: 1 to 63 bytes; `slot` names also only lowercase letters, digits
    /// and `_` (as replication slots must be).
    fn pg_name(&mut self, sec: &mut Section<'_>, key: &'static str, slot: bool) -> Option<String> {
        let expected = if slot {
            "a slot name: 1 to 63 lowercase letters, digits and _"
        } else {
            "a publication name: 1 to 63 bytes"
        };
        let name = self.string(sec, key, expected)?;
        let ok = !name.is_empty()
            && name.len() <= 63
            && (!slot
                || name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        if !ok {
            self.error(sec.key(key), format!("expected {expected}, found {name:?}"));
            return None;
        }
        Some(name)
    }

    fn duration(
        &mut self,
        sec: &mut Section<'_>,
        key: &'static str,
        allow_off: bool,
    ) -> Option<Option<Duration>> {
        let text = self.string(sec, key, "a duration such as \"500ms\", \"10s\" or \"2m\"")?;
        if allow_off && text == "off" {
            return Some(None);
        }
        match parse_duration(&text) {
            Some(d) => Some(Some(d)),
            None => {
                let off = if allow_off { " or \"off\"" } else { "" };
                self.error(sec.key(key), format!("expected a duration such as \"500ms\", \"10s\" or \"2m\"{off}, found {text:?}"));
                None
            }
        }
    }

    fn table_id(&mut self, key: String, text: &str) -> Option<TableId> {
        let id = TableId::parse(text, "public");
        if id.is_none() {
            self.error(
                key,
                format!("expected a table as \"schema.table\", found {text:?}"),
            );
        }
        id
    }

    fn table_list(&mut self, sec: &mut Section<'_>, key: &'static str) -> Option<Vec<TableId>> {
        let names = self.string_list(sec, key, "tables as \"schema.table\"")?;
        Some(
            names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| self.table_id(format!("{}[{i}]", sec.key(key)), n))
                .collect(),
        )
    }

    fn subtable<'t>(&mut self, sec: &mut Section<'t>, key: &'static str) -> Option<Section<'t>> {
        match self.get(sec, key)? {
            Value::Table(t) => Some(Section::new(sec.key(key), t)),
            other => {
                self.error(
                    sec.key(key),
                    format!(
                        "expected a table ([{}]), found {}",
                        sec.key(key),
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// The required `url` key of a PostgreSQL source or sink.
    fn postgres_url(&mut self, sec: &mut Section<'_>) -> Option<String> {
        let url =
            self.required_string(sec, "url", "a URL such as \"postgres://user@host:5432/db\"")?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            self.error(
                sec.key("url"),
                "expected a URL starting with postgres:// or postgresql://",
            );
            return None;
        }
        // The URL is parsed again at connect time; parsing it here reports a bad one with its file and key.
        if let Err(e) = ferry_pgconn::PgUrl::parse(&url) {
            self.error(sec.key("url"), format!("{e}"));
            return None;
        }
        Some(url)
    }

    /// A required path; relative paths are relative to the config file's folder.
    fn file_path(
        &mut self,
        sec: &mut Section<'_>,
        key: &'static str,
        expected: &str,
    ) -> Option<PathBuf> {
        let text = self.required_string(sec, key, expected)?;
        if text.trim().is_empty() {
            self.error(
                sec.key(key),
                format!("expected {expected}, found an empty string"),
            );
            return None;
        }
        let path = PathBuf::from(text);
        if path.is_relative() {
            Some(self.file.parent().unwrap_or(Path::new(".")).join(path))
        } else {
            Some(path)
        }
    }

    /// Reports keys of `sec` that were never looked at.
    fn finish(&mut self, sec: Section<'_>) {
        for key in sec.table.keys() {
            if !sec.known.contains(key.as_str()) {
                let known: Vec<_> = sec.known.iter().copied().collect();
                self.error(
                    sec.key(key),
                    format!("unknown key; expected one of: {}", known.join(", ")),
                );
            }
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Integer(n) => n.to_string(),
        other => other.type_str().to_owned(),
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
}

/// Parses a size: a whole number and a unit, `B`, `kB`, `MB`, `GB` or `TB` (powers of 1024, as PostgreSQL's
/// settings take them): `"1GB"` is 1,073,741,824 bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim() {
        "B" => 0,
        "kB" | "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// Validates one parsed file. `env` looks variables up; `base_dir` resolves relative SQLite paths.
pub fn validate(
    file: &Path,
    doc: &Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineConfig, ConfigErrors> {
    let mut r = Reader {
        file,
        env,
        errors: Vec::new(),
    };
    let mut root = Section::new("", doc);

    let mut name = None;
    let mut batch = BatchLimits::default();
    let mut heartbeat_interval = Some(Duration::from_secs(10));
    let mut snapshot_parallelism = 2;
    let mut source_timeout = Duration::from_secs(30);
    let mut node = None;
    let mut row_errors = RowErrors::default();
    let mut alerts = Alerts::default();
    match r.subtable(&mut root, "pipeline") {
        Some(mut p) => {
            name = r.required_string(&mut p, "name", "a pipeline name (letters, digits and _)");
            if let Some(n) = &name {
                if n.is_empty()
                    || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    || n.len() > 40
                {
                    r.error(p.key("name"), format!("expected letters, digits and _ (at most 40; it names the replication slot), found {n:?}"));
                }
            }
            if let Some(d) = r.duration_within(
                &mut p,
                "heartbeat_interval",
                true,
                (Duration::from_millis(100), Duration::from_secs(86_400)),
            ) {
                heartbeat_interval = d;
            }
            if let Some(Some(d)) = r.duration_within(
                &mut p,
                "source_timeout",
                false,
                (Duration::from_secs(1), Duration::from_secs(3600)),
            ) {
                source_timeout = d;
            }
            node = r.string(&mut p, "node", "a node id such as \"a\"");
            if let Some(n) = &node {
                if n.is_empty()
                    || n.len() > 64
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    r.error(
                        p.key("node"),
                        format!("expected letters, digits, _ and - (at most 64), found {n:?}"),
                    );
                    node = None;
                }
            }
            if let Some(n) = r.int_within(&mut p, "snapshot_parallelism", (1, 64)) {
                snapshot_parallelism = n;
            }
            row_errors = read_row_errors(&mut r, &mut p);
            if let Some(mut a) = r.subtable(&mut p, "alerts") {
                alerts = read_alerts(&mut r, &mut a);
                if let (Some(lag), Some(beat)) = (alerts.lag_seconds, heartbeat_interval) {
                    if lag <= beat.as_secs_f64() {
                        r.error(
                            a.key("lag_seconds"),
                            format!(
                                "expected more than heartbeat_interval ({beat:?}): an idle source reports its lag \
                                 once per heartbeat, so the alert would fire whenever it is idle; raise lag_seconds \
                                 or lower [pipeline] heartbeat_interval"
                            ),
                        );
                    }
                }
                r.finish(a);
            }
            if let Some(mut b) = r.subtable(&mut p, "batch") {
                if let Some(n) = r.int_within(&mut b, "max_events", (1, 10_000_000)) {
                    batch.max_events = n;
                }
                if let Some(n) = r.int_within(&mut b, "max_bytes", (1024, 1 << 32)) {
                    batch.max_bytes = n;
                }
                if let Some(Some(d)) = r.duration_within(
                    &mut b,
                    "max_wait",
                    false,
                    (Duration::ZERO, Duration::from_secs(3600)),
                ) {
                    batch.max_wait = d;
                }
                if let Some(n) = r.int_within(&mut b, "max_transaction_events", (1, 100_000_000)) {
                    batch.max_transaction_events = n;
                }
                r.finish(b);
            }
            r.finish(p);
        }
        None if !doc.contains_key("pipeline") => r.error(
            "pipeline".into(),
            "missing; expected a [pipeline] table with name = \"…\"",
        ),
        None => {}
    }
    let pipeline_name = name.clone().unwrap_or_default().to_lowercase();

    let source = match r.subtable(&mut root, "source") {
        Some(s) => read_source(&mut r, s, &pipeline_name),
        None => {
            if !doc.contains_key("source") {
                r.error(
                    "source".into(),
                    "missing; expected a [source] table with type = \"postgres\"",
                );
            }
            None
        }
    };

    let filter = match r.subtable(&mut root, "filter") {
        Some(f) => read_filter(&mut r, f),
        None => FilterConfig::default(),
    };
    let filter = FilterConfig {
        include_tables: match &source {
            Some(SourceConfig::Postgres(pg)) => pg.tables.clone(),
            Some(SourceConfig::Mysql(my)) => my.tables.clone(),
            Some(SourceConfig::Kafka(_)) | None => None,
        },
        ..filter
    };

    let transforms = read_transforms(&mut r, &mut root);
    let sinks = read_sinks(&mut r, &mut root);
    r.finish(root);
    // A Kafka source's offsets are stored in the targets' checkpoint tables (checked whatever else is wrong with
    // the source, so that every error is reported at once).
    let kafka_source = doc
        .get("source")
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        == Some("kafka");
    if kafka_source {
        for (i, sink) in sinks.iter().enumerate() {
            if matches!(sink.kind, SinkKind::Kafka(_)) {
                r.error(
                    format!("sink[{i}].type"),
                    "a Kafka source applies to \"postgres\", \"mysql\", \"sqlite\" or \"discard\" sinks, which store \
                     its offsets with the rows; to copy topics between clusters use MirrorMaker",
                );
            }
        }
    }
    // A row a transform sets aside goes to every sink's dead letters: each sink must keep them.
    let no_letters: Vec<&str> = sinks
        .iter()
        .filter(|s| matches!(s.kind, SinkKind::Discard { .. }))
        .map(|s| s.name.as_str())
        .collect();
    if !no_letters.is_empty() {
        for t in transforms
            .iter()
            .filter(|t| t.on_error == RowErrorPolicy::DeadLetter)
        {
            r.error(
                format!("{}.on_error", t.key),
                format!(
                    "\"dead_letter\" needs every sink to keep dead letters (SQL sinks in ferry_dead_letters, Kafka \
                     sinks in their dead-letter topic), but the discard sink {} does not; expected \"halt\" or \"skip\"",
                    no_letters.join(", ")
                ),
            );
        }
    }

    if r.errors.is_empty() {
        if let (Some(name), Some(source)) = (name, source) {
            return Ok(PipelineConfig {
                file: file.to_path_buf(),
                name,
                source,
                filter,
                transforms,
                sinks,
                batch,
                heartbeat_interval,
                snapshot_parallelism,
                source_timeout,
                node,
                row_errors,
                alerts,
            });
        }
    }
    Err(ConfigErrors(r.errors))
}

fn read_source(r: &mut Reader<'_>, mut s: Section<'_>, pipeline: &str) -> Option<SourceConfig> {
    let ty = r.required_string(&mut s, "type", "\"postgres\" or \"mysql\"");
    let result = match ty.as_deref() {
        Some("postgres") => {
            let url = r.postgres_url(&mut s);
            let tables = r.table_list(&mut s, "tables");
            let snapshot = read_snapshot_mode(r, &mut s);
            let default_name = format!("ferry_{pipeline}");
            let slot = r
                .pg_name(&mut s, "slot", true)
                .unwrap_or_else(|| default_name.clone());
            let publication = r
                .pg_name(&mut s, "publication", false)
                .unwrap_or(default_name);
            let on_schema_change = match choice(
                r,
                &mut s,
                "on_schema_change",
                &["halt", "quarantine", "resnapshot"],
                "halt",
            )
            .as_deref()
            {
                Some("halt") => Some(SchemaChangePolicy::Halt),
                Some("quarantine") => Some(SchemaChangePolicy::Quarantine),
                Some(_) => Some(SchemaChangePolicy::Resnapshot),
                None => None,
            };
            let origins = read_origins(r, &mut s);
            let streaming = flag(r, &mut s, "streaming", false);
            let binary = flag(r, &mut s, "binary", false);
            let spool_dir = if s.table.contains_key("spool_dir") {
                r.file_path(
                    &mut s,
                    "spool_dir",
                    "a directory such as \"/var/lib/ferry/spool\"",
                )
                .map(Some)
            } else {
                Some(None)
            };
            // Not `?` here: the unknown keys below must be reported too.
            (|| {
                Some(SourceConfig::Postgres(PostgresSource {
                    url: url?,
                    tables,
                    snapshot: snapshot?,
                    slot,
                    publication,
                    on_schema_change: on_schema_change?,
                    origins: origins?,
                    streaming: streaming?,
                    binary: binary?,
                    spool_dir: spool_dir?,
                }))
            })()
        }
        Some("mysql") => {
            let url =
                r.required_string(&mut s, "url", "a URL such as \"mysql://user@host:3306/db\"");
            let url = url.filter(|u| {
                let ok = u.starts_with("mysql://") || u.starts_with("mariadb://");
                if !ok {
                    r.error(
                        s.key("url"),
                        "expected a URL starting with mysql:// or mariadb://",
                    );
                }
                ok
            });
            let tables = r.table_list(&mut s, "tables");
            let snapshot = read_snapshot_mode(r, &mut s);
            let server_id = match s.table.get("server_id") {
                None => Some(None),
                Some(_) => r
                    .int_within(&mut s, "server_id", (1, u32::MAX as usize))
                    .map(|n| Some(n as u32)),
            };
            let on_unknown_ddl = match r
                .string(&mut s, "on_unknown_ddl", "\"fail\" or \"skip\"")
                .as_deref()
            {
                None | Some("fail") => Some(false),
                Some("skip") => Some(true),
                Some(other) => {
                    r.error(
                        s.key("on_unknown_ddl"),
                        format!("expected \"fail\" or \"skip\", found {other:?}"),
                    );
                    None
                }
            };
            let origins = read_origins(r, &mut s);
            let semi_sync = flag(r, &mut s, "semi_sync", false);
            (|| {
                Some(SourceConfig::Mysql(MysqlSource {
                    url: url?,
                    tables,
                    snapshot: snapshot?,
                    server_id: server_id?,
                    skip_unknown_ddl: on_unknown_ddl?,
                    origins: origins?,
                    semi_sync: semi_sync?,
                }))
            })()
        }
        Some("kafka") => read_kafka_source(r, &mut s),
        Some(other) => {
            r.error(
                s.key("type"),
                format!("expected \"postgres\", \"mysql\" or \"kafka\", found {other:?}"),
            );
            None
        }
        None => None,
    };
    r.finish(s);
    result
}

/// `origins = "any" | "local"` and `skip_origins = [...]` of a `[source]`.
fn read_origins(r: &mut Reader<'_>, s: &mut Section<'_>) -> Option<OriginFilter> {
    let origins = choice(r, s, "origins", &["any", "local"], "any");
    let skip = r.string_list(s, "skip_origins", "origin names such as \"ferry_b_to_a\"");
    match (origins.as_deref(), skip) {
        (Some("local"), Some(_)) => {
            r.error(
                s.key("skip_origins"),
                "origins = \"local\" skips every origin already; drop skip_origins, or set origins = \"any\" \
                 and list the origins to skip",
            );
            None
        }
        (Some("local"), None) => Some(OriginFilter::Local),
        (Some(_), Some(list)) if list.is_empty() => Some(OriginFilter::Any),
        (Some(_), Some(list)) => Some(OriginFilter::Skip(list)),
        (Some(_), None) => Some(OriginFilter::Any),
        (None, _) => None,
    }
}

/// `conflict = "…"` and `[[sink.conflict_rules]]` of a `[[sink]]`.
/// The sink's conflict policy. `refused`: why this kind of sink cannot take one (`None`: it can).
fn read_conflicts(
    r: &mut Reader<'_>,
    s: &mut Section<'_>,
    refused: Option<&str>,
) -> ConflictPolicy {
    let resolvers: Vec<&str> = Resolver::ALL.iter().map(|r| r.name()).collect();
    let resolver_of = |name: &str| Resolver::ALL.into_iter().find(|r| r.name() == name);
    let mut policy = ConflictPolicy::default();
    if s.table.contains_key("conflict") {
        policy.default =
            choice(r, s, "conflict", &resolvers, "apply_remote").and_then(|n| resolver_of(&n));
    }
    let rules = array_of_tables(r, s, "conflict_rules", "sink.conflict_rules");
    if let Some(why) = refused.filter(|_| s.table.contains_key("conflict") || !rules.is_empty()) {
        r.error(
            s.key(if s.table.contains_key("conflict") {
                "conflict"
            } else {
                "conflict_rules"
            }),
            why,
        );
    }
    for (key, table) in rules {
        let mut c = Section::new(key.clone(), table);
        let tables = table_globs(r, &mut c);
        let resolver = if c.table.contains_key("conflict") {
            choice(r, &mut c, "conflict", &resolvers, "apply_remote").and_then(|n| resolver_of(&n))
        } else {
            None
        };
        let mut columns = Vec::new();
        let merges: Vec<&str> = MergeRule::ALL.iter().map(|m| m.name()).collect();
        match r.get(&mut c, "columns") {
            None => {}
            Some(Value::Table(cols)) => {
                for (col, rule) in cols {
                    let ckey = format!("{}.{col}", c.key("columns"));
                    match rule.as_str().and_then(|n| MergeRule::ALL.into_iter().find(|m| m.name() == n)) {
                        Some(m) => columns.push((col.clone(), m)),
                        None => r.error(
                            ckey,
                            format!(
                                "expected one of {}, found {}",
                                merges.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", "),
                                rule
                            ),
                        ),
                    }
                }
            }
            Some(other) => r.error(
                c.key("columns"),
                format!(
                    "expected a table of column merge rules such as {{ n = \"sum_delta\" }}, found {}",
                    other.type_str()
                ),
            ),
        }
        let version_vectors = flag(r, &mut c, "version_vectors", false).unwrap_or(false);
        let merge = if c.table.contains_key("merge") {
            read_expression(
                r,
                &mut c,
                "merge",
                "a CEL expression over local and remote giving a map of column to value",
            )
        } else {
            None
        };
        if merge.is_some() && resolver.is_some() {
            r.error(
                c.key("merge"),
                "a merge expression decides conflicting rows itself: drop conflict = \"…\" from this rule",
            );
        }
        if resolver.is_none()
            && columns.is_empty()
            && !version_vectors
            && merge.is_none()
            && !c.table.contains_key("conflict")
            && !c.table.contains_key("merge")
        {
            r.error(
                key.clone(),
                "expected conflict = \"…\" or columns = { … } (a rule that changes nothing)",
            );
        }
        r.finish(c);
        if let Some(tables) = tables {
            policy.rules.push(ConflictRule {
                key,
                tables,
                resolver,
                columns,
                version_vectors,
                merge,
            });
        }
    }
    policy
}

/// `[[<what>]]` under `key`: each table with its key path (`sink[0].conflict_rules[1]`).
fn array_of_tables<'t>(
    r: &mut Reader<'_>,
    s: &mut Section<'t>,
    key: &'static str,
    what: &str,
) -> Vec<(String, &'t Table)> {
    match r.get(s, key) {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let path = format!("{}[{i}]", s.key(key));
                match item {
                    Value::Table(t) => Some((path, t)),
                    _ => {
                        r.error(path, format!("expected a [[{what}]] table"));
                        None
                    }
                }
            })
            .collect(),
        Some(other) => {
            r.error(
                s.key(key),
                format!("expected [[{what}]] tables, found {}", other.type_str()),
            );
            Vec::new()
        }
    }
}

/// A rule's required `tables = ["schema.table", …]`, globs allowed.
fn table_globs(r: &mut Reader<'_>, c: &mut Section<'_>) -> Option<Vec<String>> {
    let tables = r.string_list(
        c,
        "tables",
        "tables as \"schema.table\" (globs: \"public.*\")",
    );
    match &tables {
        None if !c.table.contains_key("tables") => r.error(
            c.key("tables"),
            "missing; expected tables = [\"schema.table\", …] (globs: \"public.*\")",
        ),
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                if TableId::parse(p, "public").is_none() || !TableId::is_valid_glob(p) {
                    r.error(
                        format!("{}[{i}]", c.key("tables")),
                        format!("expected \"schema.table\" (globs: \"public.*\"), found {p:?}"),
                    );
                }
            }
        }
        None => {}
    }
    // A bare name is in `public`, as everywhere else a table is named.
    tables.map(|list| {
        list.into_iter()
            .map(|p| {
                if p.contains('.') {
                    p
                } else {
                    format!("public.{p}")
                }
            })
            .collect()
    })
}

/// `[pipeline.alerts]`.
fn read_alerts(r: &mut Reader<'_>, a: &mut Section<'_>) -> Alerts {
    let mut out = Alerts::default();
    if let Some(n) = r.int_within(a, "lag_seconds", (1, 86_400)) {
        out.lag_seconds = Some(n as f64);
    }
    for key in ["lag_bytes", "retained_wal"] {
        let expected = "a size such as \"512MB\" or \"10GB\"";
        if let Some(text) = r.string(a, key, expected) {
            match parse_size(&text) {
                Some(n) if n > 0 => {
                    if key == "lag_bytes" {
                        out.lag_bytes = Some(n);
                    } else {
                        out.retained_wal = Some(n);
                    }
                }
                _ => r.error(a.key(key), format!("expected {expected}, found {text:?}")),
            }
        }
    }
    if let Some(b) = flag(r, a, "readyz", false) {
        out.readyz = b;
    }
    out
}

/// `on_error`, `max_dead_letters`, `[pipeline.retry]` and `[[pipeline.on_error_rules]]` of `[pipeline]`.
fn read_row_errors(r: &mut Reader<'_>, p: &mut Section<'_>) -> RowErrors {
    let mut out = RowErrors::default();
    let names: Vec<&str> = OnError::ALL.iter().map(|o| o.name()).collect();
    let policy_of = |name: &str| OnError::ALL.into_iter().find(|o| o.name() == name);
    if let Some(o) = choice(r, p, "on_error", &names, "halt").and_then(|n| policy_of(&n)) {
        out.on_error = o;
    }
    if let Some(n) = r.int_within(p, "max_dead_letters", (1, 100_000_000)) {
        out.max_dead_letters = n as u64;
    }
    if let Some(mut t) = r.subtable(p, "retry") {
        let bounds = (Duration::from_millis(1), Duration::from_secs(3600));
        if let Some(Some(d)) = r.duration_within(&mut t, "initial", false, bounds) {
            out.retry.initial = d;
        }
        if let Some(Some(d)) = r.duration_within(&mut t, "max", false, bounds) {
            out.retry.max = d;
        }
        if out.retry.max < out.retry.initial {
            r.error(
                t.key("max"),
                format!(
                    "expected at least initial ({:?}), found {:?}",
                    out.retry.initial, out.retry.max
                ),
            );
        }
        if let Some(n) = r.int_within(&mut t, "attempts", (1, 100)) {
            out.retry.attempts = n as u32;
        }
        r.finish(t);
    }
    for (key, table) in array_of_tables(r, p, "on_error_rules", "pipeline.on_error_rules") {
        let mut c = Section::new(key.clone(), table);
        let tables = table_globs(r, &mut c);
        let on_error = if c.table.contains_key("on_error") {
            choice(r, &mut c, "on_error", &names, "halt").and_then(|n| policy_of(&n))
        } else {
            r.error(
                c.key("on_error"),
                format!("missing; expected one of {}", quoted(&names)),
            );
            None
        };
        r.finish(c);
        if let (Some(tables), Some(on_error)) = (tables, on_error) {
            out.rules.push(OnErrorRule {
                key,
                tables,
                on_error,
            });
        }
    }
    out
}

fn quoted(choices: &[&str]) -> String {
    choices
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// One of `choices` for `key`, or `default` when absent.
fn choice(
    r: &mut Reader<'_>,
    s: &mut Section<'_>,
    key: &'static str,
    choices: &[&str],
    default: &str,
) -> Option<String> {
    let expected = quoted(choices);
    match r.string(s, key, &expected) {
        None if !s.table.contains_key(key) => Some(default.to_owned()),
        None => None,
        Some(v) if choices.contains(&v.as_str()) => Some(v),
        Some(v) => {
            r.error(s.key(key), format!("expected {expected}, found {v:?}"));
            None
        }
    }
}

fn flag(r: &mut Reader<'_>, s: &mut Section<'_>, key: &'static str, default: bool) -> Option<bool> {
    match r.get(s, key) {
        None => Some(default),
        Some(Value::Boolean(b)) => Some(*b),
        Some(other) => {
            r.error(
                s.key(key),
                format!("expected true or false, found {}", other.type_str()),
            );
            None
        }
    }
}

fn read_kafka(r: &mut Reader<'_>, s: &mut Section<'_>) -> Option<SinkKind> {
    let brokers = r.required_string(s, "brokers", "a broker list such as \"127.0.0.1:9092\"");
    let defaults = KafkaSink::new("");
    let topic_prefix = r
        .string(s, "topic_prefix", "a topic prefix")
        .unwrap_or(defaults.topic_prefix);
    let topic = r
        .string(
            s,
            "topic",
            "a topic template such as \"{prefix}.{schema}.{table}\"",
        )
        .unwrap_or(defaults.topic);
    let dead_letter_topic = r
        .string(s, "dead_letter_topic", "a topic name")
        .unwrap_or(defaults.dead_letter_topic);
    let format = read_kafka_format(r, s);
    let exactly_once = choice(
        r,
        s,
        "delivery",
        &["exactly_once", "at_least_once"],
        "exactly_once",
    )
    .map(|d| d == "exactly_once");
    let decimal_handling = choice(
        r,
        s,
        "decimal_handling",
        &["precise", "double", "string"],
        "precise",
    )
    .map(|d| match d.as_str() {
        "double" => DecimalHandling::Double,
        "string" => DecimalHandling::String,
        _ => DecimalHandling::Precise,
    });
    let schemas = flag(r, s, "schemas", defaults.schemas);
    let tombstones = flag(r, s, "tombstones", defaults.tombstones);
    let transaction_topic = flag(r, s, "transaction_topic", defaults.transaction_topic);
    let partitions = if s.table.contains_key("partitions") {
        r.int_within(s, "partitions", (1, 100_000))
            .map(|n| n as i32)
    } else {
        Some(defaults.partitions)
    };
    let replication_factor = if s.table.contains_key("replication_factor") {
        r.int_within(s, "replication_factor", (1, 100))
            .map(|n| n as i32)
    } else {
        Some(defaults.replication_factor)
    };
    let cleanup_policy = choice(
        r,
        s,
        "cleanup_policy",
        &["delete", "compact", "compact,delete"],
        "delete",
    );
    let max_message_bytes = if s.table.contains_key("max_message_bytes") {
        r.int_within(s, "max_message_bytes", (1024, 1 << 30))
    } else {
        Some(defaults.max_message_bytes)
    };
    let properties = read_kafka_properties(r, s);
    Some(SinkKind::Kafka(KafkaSink {
        brokers: brokers?,
        topic_prefix,
        topic,
        format: format?,
        exactly_once: exactly_once?,
        schemas: schemas?,
        tombstones: tombstones?,
        transaction_topic: transaction_topic?,
        decimal_handling: decimal_handling?,
        partitions: partitions?,
        replication_factor: replication_factor?,
        cleanup_policy: cleanup_policy?,
        max_message_bytes: max_message_bytes?,
        dead_letter_topic,
        properties,
    }))
}

/// `format` with `schema_registry` and `schema_registry_ca` (a Kafka sink's or source's).
fn read_kafka_format(r: &mut Reader<'_>, s: &mut Section<'_>) -> Option<KafkaFormat> {
    let registry = r.string(
        s,
        "schema_registry",
        "a schema registry URL such as \"http://registry:8081\" or \"https://KEY:SECRET@registry.example.com\"",
    );
    let registry_ca = r
        .string(
            s,
            "schema_registry_ca",
            "the path of a PEM file with the CA certificate of an https registry",
        )
        .map(std::path::PathBuf::from);
    let format = match choice(r, s, "format", &["json", "avro"], "json").as_deref() {
        None => None,
        Some("avro") => match registry {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(KafkaFormat::Avro {
                    schema_registry: url,
                    schema_registry_ca: registry_ca,
                })
            }
            Some(url) => {
                // Not echoed whole: the URL may carry credentials.
                let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
                r.error(
                    s.key("schema_registry"),
                    format!("expected an http:// or https:// URL, found one starting {scheme:?}"),
                );
                None
            }
            None => {
                r.error(s.key("schema_registry"), "missing; format = \"avro\" needs a schema registry URL such as \"http://registry:8081\"");
                None
            }
        },
        Some(_) => Some(KafkaFormat::Json),
    };
    format
}

/// `[sink.kafka]` / `[source.kafka]`: librdkafka properties passed through (TLS, SASL, …).
fn read_kafka_properties(r: &mut Reader<'_>, s: &mut Section<'_>) -> Vec<(String, String)> {
    let mut properties = Vec::new();
    if let Some(props) = r.subtable(s, "kafka") {
        for (k, v) in props.table {
            match v {
                Value::String(text) => match expand(text, r.env) {
                    Ok(text) => properties.push((k.clone(), text)),
                    Err(e) => r.error(props.key(k), e.to_string()),
                },
                Value::Integer(n) => properties.push((k.clone(), n.to_string())),
                Value::Boolean(b) => properties.push((k.clone(), b.to_string())),
                other => r.error(
                    props.key(k),
                    format!("expected a librdkafka property value (string, number or boolean), found {}", other.type_str()),
                ),
            }
        }
    }
    properties
}

/// A `[source] type = "kafka"`: Debezium-format topics read in a consumer group.
fn read_kafka_source(r: &mut Reader<'_>, s: &mut Section<'_>) -> Option<SourceConfig> {
    let brokers = r.required_string(s, "brokers", "a broker list such as \"127.0.0.1:9092\"");
    let list = r.string_list(s, "topics", "topic names such as \"shop.public.orders\"");
    let pattern = r.string(
        s,
        "topic_pattern",
        "a regular expression such as \"^shop\\\\..*\"",
    );
    let topics = match (list, pattern) {
        (Some(_), Some(_)) => {
            r.error(
                s.key("topic_pattern"),
                "set either topics or topic_pattern, not both",
            );
            None
        }
        (Some(list), None) if list.is_empty() => {
            r.error(s.key("topics"), "expected at least one topic name");
            None
        }
        (Some(list), None) => {
            let bad: Vec<_> = list.iter().filter(|t| !valid_topic(t)).cloned().collect();
            if bad.is_empty() {
                Some(KafkaTopics::List(list))
            } else {
                r.error(s.key("topics"), format!("expected Kafka topic names (letters, digits, '.', '_', '-'), found {bad:?}"));
                None
            }
        }
        // librdkafka subscribes by regular expression to a name that starts with `^`.
        (None, Some(p)) if p.starts_with('^') && p.len() > 1 => Some(KafkaTopics::Pattern(p)),
        (None, Some(_)) => {
            r.error(
                s.key("topic_pattern"),
                "expected a regular expression starting with ^, such as \"^shop\\\\..*\"",
            );
            None
        }
        (None, None) => {
            r.error(s.key("topics"), "missing; expected topics = [\"shop.public.orders\", …] or topic_pattern = \"^shop\\\\..*\"");
            None
        }
    };
    let group_id = r
        .required_string(
            s,
            "group_id",
            "a consumer group id such as \"ferry-replica-eu\"",
        )
        .filter(|g| {
            let ok = !g.trim().is_empty();
            if !ok {
                r.error(
                    s.key("group_id"),
                    "expected a consumer group id such as \"ferry-replica-eu\", found an empty string",
                );
            }
            ok
        });
    let format = read_kafka_format(r, s);
    let assignment = choice(
        r,
        s,
        "assignment",
        &["cooperative-sticky", "range", "roundrobin"],
        "cooperative-sticky",
    );
    let start = choice(r, s, "start", &["earliest", "latest"], "earliest").map(|v| v == "earliest");
    let properties = read_kafka_properties(r, s);
    Some(SourceConfig::Kafka(KafkaSource {
        brokers: brokers?,
        topics: topics?,
        group_id: group_id?,
        format: format?,
        assignment: assignment?,
        from_earliest: start?,
        properties,
    }))
}

/// Kafka's rule for topic names.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn read_snapshot_mode(r: &mut Reader<'_>, s: &mut Section<'_>) -> Option<SnapshotMode> {
    match r
        .string(s, "snapshot", "\"initial\", \"never\" or \"only\"")
        .as_deref()
    {
        None | Some("initial") => Some(SnapshotMode::Initial),
        Some("never") => Some(SnapshotMode::Never),
        Some("only") => Some(SnapshotMode::Only),
        Some(other) => {
            r.error(
                s.key("snapshot"),
                format!("expected \"initial\", \"never\" or \"only\", found {other:?}"),
            );
            None
        }
    }
}

fn read_filter(r: &mut Reader<'_>, mut f: Section<'_>) -> FilterConfig {
    let exclude_tables = r.table_list(&mut f, "exclude_tables").unwrap_or_default();
    let columns = r
        .string_list(
            &mut f,
            "exclude_columns",
            "columns as \"schema.table.column\"",
        )
        .unwrap_or_default();
    let mut exclude_columns = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        match c
            .rsplit_once('.')
            .and_then(|(t, col)| Some((TableId::parse(t, "public")?, col)))
        {
            Some((t, col)) if !col.is_empty() => exclude_columns.push((t, col.to_owned())),
            _ => r.error(
                format!("{}[{i}]", f.key("exclude_columns")),
                format!("expected \"schema.table.column\", found {c:?}"),
            ),
        }
    }
    r.finish(f);
    FilterConfig {
        include_tables: None,
        exclude_tables,
        exclude_columns,
    }
}

/// The types `convert.to` and `compute.column_type` accept (PostgreSQL's spelling; MySQL sources get the
/// equivalent MySQL type).
pub const COLUMN_TYPES: &[&str] = &[
    "text",
    "bigint",
    "integer",
    "smallint",
    "double precision",
    "real",
    "numeric",
    "boolean",
    "bytea",
    "json",
    "jsonb",
    "uuid",
    "date",
    "timestamp",
    "timestamptz",
];

const TRANSFORM_TYPES: &str = "\"filter\", \"route\", \"rename_columns\", \"drop_columns\", \"keep_columns\", \"convert\", \"mask\" or \"compute\"";

/// `[[transform]]` stages, each checked for its kind's keys; CEL expressions are compiled here so a syntax error
/// is reported with every other error.
fn read_transforms(r: &mut Reader<'_>, root: &mut Section<'_>) -> Vec<TransformConfig> {
    let sections: Vec<Section<'_>> = match r.get(root, "transform") {
        None => return Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::Table(t) => Some(Section::new(format!("transform[{i}]"), t)),
                _ => {
                    r.error(format!("transform[{i}]"), "expected a [[transform]] table");
                    None
                }
            })
            .collect(),
        Some(other) => {
            r.error(
                "transform".into(),
                format!("expected [[transform]] tables, found {}", describe(other)),
            );
            return Vec::new();
        }
    };
    sections
        .into_iter()
        .filter_map(|mut t| {
            let stage = read_transform(r, &mut t);
            r.finish(t);
            stage
        })
        .collect()
}

fn read_transform(r: &mut Reader<'_>, t: &mut Section<'_>) -> Option<TransformConfig> {
    let ty = r.required_string(t, "type", TRANSFORM_TYPES);
    let tables = r.string_list(
        t,
        "tables",
        "tables as \"schema.table\" (globs: \"public.*\")",
    );
    // `table = "schema.table"`: one table (the form docs of earlier releases show).
    let tables = match (tables, r.string(t, "table", "a table as \"schema.table\"")) {
        (None, Some(one)) => Some(vec![one]),
        (Some(_), Some(_)) => {
            r.error(
                t.key("table"),
                "expected either table = \"…\" or tables = [\"…\"], not both",
            );
            None
        }
        (tables, None) => tables,
    };
    if let Some(tables) = &tables {
        for (i, p) in tables.iter().enumerate() {
            if TableId::parse(p, "public").is_none() {
                r.error(
                    format!("{}[{i}]", t.key("tables")),
                    format!("expected \"schema.table\" (globs: \"public.*\"), found {p:?}"),
                );
            }
        }
    }
    let on_error =
        match choice(r, t, "on_error", &["halt", "skip", "dead_letter"], "halt")?.as_str() {
            "skip" => RowErrorPolicy::Skip,
            "dead_letter" => RowErrorPolicy::DeadLetter,
            _ => RowErrorPolicy::Halt,
        };
    let kind = match ty.as_deref()? {
        "filter" => {
            let predicate = read_expression(
                r,
                t,
                "where",
                "a CEL predicate such as \"after.status != 'draft'\"",
            );
            let rows = choice(r, t, "mode", &["changes", "rows"], "changes")? == "rows";
            TransformKind::Filter {
                predicate: predicate?,
                rows,
            }
        }
        "route" => {
            let to = r.string(
                t,
                "to",
                "\"schema.table\" with {schema} and {table} templates",
            );
            let expr = match t.table.contains_key("to_expression") {
                true => Some(read_expression(
                    r,
                    t,
                    "to_expression",
                    "a CEL expression giving \"schema.table\"",
                )?),
                false => None,
            };
            match (to, expr) {
                (Some(to), None) => {
                    let sample = to.replace("{schema}", "s").replace("{table}", "t");
                    if TableId::parse(&sample, "public").is_none() || sample.contains(['{', '}']) {
                        r.error(t.key("to"), format!("expected \"schema.table\" with {{schema}} and {{table}} templates, found {to:?}"));
                        return None;
                    }
                    TransformKind::Route {
                        to: RouteTo::Template(to),
                    }
                }
                (None, Some(e)) => TransformKind::Route {
                    to: RouteTo::Expression(e),
                },
                _ => {
                    r.error(t.key("to"), "expected exactly one of to = \"schema.table\" or to_expression = \"<CEL>\"");
                    return None;
                }
            }
        }
        "rename_columns" => {
            let Some(map) = r.subtable(t, "columns") else {
                r.error(t.key("columns"), "missing; expected a table of old = \"new\" names, e.g. columns = { email = \"email_address\" }");
                return None;
            };
            let mut renames = Vec::new();
            for (old, new) in map.table {
                match new {
                    Value::String(new) if !new.is_empty() => {
                        renames.push((old.clone(), new.clone()))
                    }
                    other => r.error(
                        map.key(old),
                        format!(
                            "expected the new name as a string, found {}",
                            describe(other)
                        ),
                    ),
                }
            }
            TransformKind::RenameColumns { renames }
        }
        "drop_columns" => TransformKind::DropColumns {
            columns: read_columns(r, t)?,
        },
        "keep_columns" => TransformKind::KeepColumns {
            columns: read_columns(r, t)?,
        },
        "convert" => {
            let columns = read_columns(r, t)?;
            let to = r.string(t, "to", "a column type");
            if let Some(ty) = &to {
                if !COLUMN_TYPES.contains(&ty.as_str()) {
                    r.error(
                        t.key("to"),
                        format!("expected one of {}, found {ty:?}", COLUMN_TYPES.join(", ")),
                    );
                }
            }
            let zone = r.string(t, "zone", "an IANA time zone such as \"Europe/Paris\"");
            if let Some(z) = &zone {
                if z.parse::<chrono_tz::Tz>().is_err() {
                    r.error(
                        t.key("zone"),
                        format!("expected an IANA time zone such as \"Europe/Paris\", found {z:?}"),
                    );
                }
            }
            let trim = flag(r, t, "trim", false)?;
            let case = match choice(r, t, "case", &["lower", "upper", "keep"], "keep")?.as_str() {
                "lower" => Some(Case::Lower),
                "upper" => Some(Case::Upper),
                _ => None,
            };
            if to.is_none() && !trim && case.is_none() {
                r.error(t.key("to"), "missing; expected to = \"<type>\", trim = true or case = \"lower\" / \"upper\"");
            }
            TransformKind::Convert {
                columns,
                to,
                zone,
                trim,
                case,
            }
        }
        "mask" => {
            let columns = read_columns(r, t)?;
            let with = choice(
                r,
                t,
                "with",
                &["sha256", "redact", "null", "keep_first", "keep_last"],
                "",
            )?;
            let keep =
                |r: &mut Reader<'_>, t: &mut Section<'_>| r.int_within(t, "n", (0, 1_000_000));
            let with = match with.as_str() {
                "sha256" => TransformKind::Mask {
                    columns,
                    with: MaskKind::Sha256 {
                        salt: r.required_string(
                            t,
                            "salt",
                            "a secret salt, e.g. salt = \"${MASK_SALT}\"",
                        )?,
                    },
                },
                "redact" => TransformKind::Mask {
                    columns,
                    with: MaskKind::Redact {
                        value: r
                            .string(t, "value", "the text that replaces each value")
                            .unwrap_or_else(|| "REDACTED".into()),
                    },
                },
                "null" => TransformKind::Mask {
                    columns,
                    with: MaskKind::Null,
                },
                "keep_first" | "keep_last" => {
                    let Some(n) = keep(r, t) else {
                        r.error(
                            t.key("n"),
                            "missing; expected how many characters to keep, e.g. n = 4",
                        );
                        return None;
                    };
                    let with = if with == "keep_first" {
                        MaskKind::KeepFirst(n)
                    } else {
                        MaskKind::KeepLast(n)
                    };
                    TransformKind::Mask { columns, with }
                }
                _ => {
                    r.error(t.key("with"), "missing; expected \"sha256\", \"redact\", \"null\", \"keep_first\" or \"keep_last\"");
                    return None;
                }
            };
            with
        }
        "compute" => {
            let column = r.required_string(t, "column", "the new column's name");
            let column_type = r.required_string(t, "column_type", "a column type such as \"text\"");
            if let Some(ty) = &column_type {
                if !COLUMN_TYPES.contains(&ty.as_str()) {
                    r.error(
                        t.key("column_type"),
                        format!("expected one of {}, found {ty:?}", COLUMN_TYPES.join(", ")),
                    );
                }
            }
            let expression = read_expression(
                r,
                t,
                "expression",
                "a CEL expression such as \"after.first + ' ' + after.last\"",
            );
            TransformKind::Compute {
                column: column?,
                column_type: column_type?,
                expression: expression?,
            }
        }
        other => {
            r.error(
                t.key("type"),
                format!("expected {TRANSFORM_TYPES}, found {other:?}"),
            );
            return None;
        }
    };
    Some(TransformConfig {
        key: t.path.clone(),
        tables,
        on_error,
        kind,
    })
}

const MAX_NESTING: usize = 32;
const MAX_EXPRESSION_BYTES: usize = 100_000;

/// How deep brackets nest in a CEL expression, outside its string literals.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut quote, mut escaped) = (0usize, 0usize, None, false);
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    max
}

/// A required CEL expression, compiled to report syntax errors now.
fn read_expression(
    r: &mut Reader<'_>,
    t: &mut Section<'_>,
    key: &'static str,
    expected: &str,
) -> Option<String> {
    let text = r.required_string(t, key, expected)?;
    // CEL's parser recurses per nesting level: a deep expression would overflow the stack, not fail.
    let depth = nesting_depth(&text);
    if depth > MAX_NESTING || text.len() > MAX_EXPRESSION_BYTES {
        r.error(
            t.key(key),
            format!(
                "the expression is {} bytes and nests {depth} levels deep; at most {MAX_EXPRESSION_BYTES} bytes \
                 and {MAX_NESTING} levels",
                text.len()
            ),
        );
        return None;
    }
    match cel::Program::compile(&text) {
        Ok(_) => Some(text),
        Err(e) => {
            r.error(
                t.key(key),
                format!("not a valid CEL expression: {}", e.to_string().trim()),
            );
            None
        }
    }
}

/// The required `columns` list: `column` or `schema.table.column` (the table part may use globs).
fn read_columns(r: &mut Reader<'_>, t: &mut Section<'_>) -> Option<Vec<ColumnRef>> {
    if !t.table.contains_key("columns") {
        t.known.insert("columns");
        r.error(
            t.key("columns"),
            "missing; expected a list of columns as \"column\" or \"schema.table.column\"",
        );
        return None;
    }
    let names = r.string_list(
        t,
        "columns",
        "columns as \"column\" or \"schema.table.column\"",
    )?;
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let parts: Vec<&str> = n.split('.').collect();
        match parts.as_slice() {
            [c] if !c.is_empty() => out.push(ColumnRef {
                table: None,
                column: (*c).to_owned(),
            }),
            [s, tb, c] if !s.is_empty() && !tb.is_empty() && !c.is_empty() => out.push(ColumnRef {
                table: Some(format!("{s}.{tb}")),
                column: (*c).to_owned(),
            }),
            _ => r.error(
                format!("{}[{i}]", t.key("columns")),
                format!("expected \"column\" or \"schema.table.column\", found {n:?}"),
            ),
        }
    }
    Some(out)
}

fn read_sinks(r: &mut Reader<'_>, root: &mut Section<'_>) -> Vec<SinkConfig> {
    let sections: Vec<Section<'_>> = match r.get(root, "sink") {
        Some(Value::Table(t)) => vec![Section::new("sink", t)],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::Table(t) => Some(Section::new(format!("sink[{i}]"), t)),
                _ => {
                    r.error(format!("sink[{i}]"), "expected a [[sink]] table");
                    None
                }
            })
            .collect(),
        Some(other) => {
            r.error(
                "sink".into(),
                format!(
                    "expected a [sink] table or [[sink]] tables, found {}",
                    other.type_str()
                ),
            );
            return Vec::new();
        }
        None => {
            r.error(
                "sink".into(),
                "missing; expected a [sink] table with type = \"postgres\", \"mysql\", \"sqlite\" or \"discard\"",
            );
            return Vec::new();
        }
    };
    let mut sinks: Vec<SinkConfig> = Vec::new();
    for mut s in sections {
        let ty = r.required_string(&mut s, "type", SINK_TYPES);
        let name = r.string(&mut s, "name", "a sink name");
        let kind = match ty.as_deref() {
            Some("postgres") => {
                let url = r.postgres_url(&mut s);
                url.map(|url| SinkKind::Postgres { url })
            }
            Some("mysql") => {
                let url =
                    r.required_string(&mut s, "url", "a URL such as \"mysql://user@host:3306/db\"");
                url.filter(|u| {
                    let ok = u.starts_with("mysql://") || u.starts_with("mariadb://");
                    if !ok {
                        r.error(
                            s.key("url"),
                            "expected a URL starting with mysql:// or mariadb://",
                        );
                    }
                    ok
                })
                .map(|url| SinkKind::Mysql { url })
            }
            Some("kafka") => read_kafka(r, &mut s),
            Some("sqlite") => r
                .file_path(&mut s, "path", "a file path such as \"replica.db\"")
                .map(|path| SinkKind::Sqlite { path }),
            Some("discard") => r
                .file_path(
                    &mut s,
                    "path",
                    "a checkpoint file path such as \"discard.pos\"",
                )
                .map(|checkpoint_file| SinkKind::Discard { checkpoint_file }),
            Some(other) => {
                r.error(
                    s.key("type"),
                    format!("expected {SINK_TYPES}, found {other:?}"),
                );
                None
            }
            None => None,
        };
        if let Some(kind) = kind {
            let name = name.unwrap_or_else(|| {
                let base = kind.type_name();
                let n = sinks.iter().filter(|s| s.kind.type_name() == base).count();
                if n == 0 {
                    base.to_owned()
                } else {
                    format!("{base}_{}", n + 1)
                }
            });
            if sinks.iter().any(|other| other.name == name) {
                r.error(
                    s.key("name"),
                    format!("sink name {name:?} is used twice; give each sink a unique name"),
                );
            }
            let refused = match kind {
                SinkKind::Postgres { .. } | SinkKind::Mysql { .. } | SinkKind::Sqlite { .. } => None,
                _ => Some(
                    "conflict resolution needs a SQL target (postgres, mysql or sqlite): a Kafka or discard sink holds no \
                     rows to conflict with",
                ),
            };
            let conflicts = read_conflicts(r, &mut s, refused);
            sinks.push(SinkConfig {
                name,
                kind,
                conflicts,
            });
        }
        r.finish(s);
    }
    sinks
}
