//! Decodes Debezium change events (the JSON envelope Kafka Connect's `JsonConverter` writes, with or without its
//! `schema` block) into Ferry's row changes.
//!
//! Shapes follow Debezium's connector documentation ("Data change events", "Data type mappings") for the
//! PostgreSQL and MySQL connectors, which Ferry's own Kafka sink writes too (`ferry_sink::kafka::envelope`):
//! `{"before": {…}, "after": {…}, "source": {…}, "op": "c|u|d|r|t", "ts_ms": …, "transaction": …}`. The schema
//! block's field types and logical names (`io.debezium.time.MicroTimestamp`, `org.apache.kafka.connect.data.Decimal`,
//! …) give each column's type; without it, types are read off the values. A column's source spelling comes from
//! Ferry's `__ferry.source.type` parameter or Debezium's `__debezium.source.column.type` (with
//! `column.propagate.source.type`), otherwise from the logical type.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use ferry_core::debezium::{
    decimal_text, ExactValues, MICRO_TIMESTAMP_INFINITY, MICRO_TIMESTAMP_NEG_INFINITY, UNAVAILABLE,
};
use ferry_core::type_change::{narrowed_at_source, narrows};
use ferry_core::{
    Column, ColumnType, Date, Decimal, Dialect, Interval, LogPoint, RowOp, SchemaRef, TableId,
    TableSchema, Time, TimeTz, Timestamp, Uuid, Value,
};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;

/// What one record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A row change of `table` (the schema this decoder derived; the same `Arc` while it does not change).
    Row {
        table: SchemaRef,
        op: RowOp,
        tx: TxInfo,
    },
    /// Debezium's truncate event (`op = "t"`).
    Truncate { table: TableId, tx: TxInfo },
    /// A tombstone (null value), which only lets compaction drop a deleted key.
    Tombstone,
}

/// What the envelope's `source` block says of the transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TxInfo {
    /// `source.ts_ms`: when the source committed.
    pub commit_time: Option<Timestamp>,
    /// PostgreSQL's `source.txId`.
    pub xid: Option<u32>,
    /// MySQL / MariaDB's `source.gtid`.
    pub gtid: Option<String>,
    /// MySQL / MariaDB's `source.server_id`.
    pub server_id: Option<u32>,
}

/// A record that is not a Debezium change event Ferry can apply: why, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// An object's fields in the order they were written (the JSON map would sort them, and a column's place in its
/// table is its place in the record).
#[derive(Debug, Default)]
struct Ordered(Vec<(String, Json)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    fields.push((k, v));
                }
                Ok(Ordered(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// The envelope, at the top (`schemas.enable = false`) or under `payload`.
#[derive(Debug, Deserialize, Default)]
struct Envelope {
    before: Option<Ordered>,
    after: Option<Ordered>,
    source: Option<Json>,
    op: Option<String>,
}

/// A record value: `{"schema": …, "payload": {envelope}}`, or the envelope alone. The schema block is kept as
/// its text: every record repeats it, and it is read once per distinct text ([`Decoder`]).
#[derive(Debug, Default)]
struct Record<'a> {
    schema: Option<&'a RawValue>,
    payload: Option<Envelope>,
    bare: Envelope,
}

impl<'de: 'a, 'a> Deserialize<'de> for Record<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Record<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Record<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Debezium envelope")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record<'a>, A::Error> {
                let mut r = Record::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "schema" => r.schema = map.next_value()?,
                        "payload" => r.payload = map.next_value()?,
                        "before" => r.bare.before = map.next_value()?,
                        "after" => r.bare.after = map.next_value()?,
                        "source" => r.bare.source = map.next_value()?,
                        "op" => r.bare.op = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A key: `{"schema": …, "payload": {…}}` or the plain object. Only names are wanted: the schema block and the
/// payload stay text until needed, and a plain object's values are skipped.
#[derive(Debug, Default)]
struct Key<'a> {
    schema: Option<&'a RawValue>,
    payload: Option<&'a RawValue>,
    /// A plain object's field names.
    bare: Vec<String>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key<'a>, A::Error> {
                let mut k = Key::default();
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match name.as_ref() {
                        "schema" => k.schema = map.next_value()?,
                        "payload" => k.payload = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                    k.bare.push(name.into_owned());
                }
                Ok(k)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Decodes records. What a schema block says is worked out once per distinct text, and each table's schema is
/// one `Arc` for as long as it does not change.
///
/// Partitions are read in no order between them, so a record written before a schema change can arrive after
/// one written after it. A table's schema is therefore merged from every record's ([`Merged`]): columns are
/// added, never dropped (as Debezium's JDBC sink evolves tables), and a column's name and type are those of the
/// record with the latest source position (`source.lsn`; binlog file and offset) that describes it, so an older
/// record never takes a table back to an earlier schema.
#[derive(Debug, Default)]
pub struct Decoder {
    tables: HashMap<TableId, Merged>,
    /// Value schema blocks read so far, by text (per dialect: the default spellings differ).
    row_fields: HashMap<String, Vec<(Dialect, FieldList)>>,
    /// Key schema blocks read so far: the key's columns.
    key_fields: HashMap<String, Arc<[String]>>,
    /// The value and key schema blocks met last: records of one topic come in runs, and comparing a block's text
    /// with the last one costs less than hashing it.
    last_row: Option<(String, Dialect, FieldList)>,
    last_key: Option<(String, Arc<[String]>)>,
}

/// A record's fields, as its schema block lists them.
type FieldList = Arc<Vec<Field>>;

/// A record's field list, and where each of its fields sits among a merged table's columns.
type FieldMap = (Arc<Vec<Field>>, Arc<Vec<usize>>);

/// A table as its records have described it so far.
#[derive(Debug)]
struct Merged {
    columns: Vec<Field>,
    /// Per column, the source position of the newest record that described it, whose form it has (even when a
    /// newer record no longer describes it: dropped or renamed since). Moved by every newer record describing it,
    /// with its form or not, so a record older than one already met never changes the column (the source may
    /// have gone back and forth between two forms).
    column_at: Vec<Option<LogPoint>>,
    /// Per column, each source type records gave it, with the first and last source positions of those records:
    /// a narrower type described after a wider one means the source narrowed the column ([`Forms::note`]).
    forms: Vec<Forms>,
    key: Vec<String>,
    schema: SchemaRef,
    /// The source position of the newest record whose description was taken (`None`: none had one).
    newest: Option<LogPoint>,
    /// That record's fields: the table's columns at that point of the source.
    newest_fields: Arc<Vec<Field>>,
    /// Field lists met, and where each of their fields sits among `columns` (indexes never move: columns are
    /// only replaced or appended).
    maps: Vec<FieldMap>,
}

/// The source types records gave one column, each with the first and last source positions that did.
#[derive(Debug, Default)]
struct Forms(Vec<(String, LogPoint, LogPoint)>);

impl Forms {
    fn new(f: &Field, at: Option<LogPoint>) -> Forms {
        let mut forms = Forms::default();
        if let (Some(ty), Some(at)) = (&f.source_type, at) {
            forms.0.push((ty.clone(), at, at));
        }
        forms
    }

    /// Notes that a record at `at` describes the column as `f`. A narrower type (within its kind) described
    /// after a wider one means the source narrowed the column, rewriting its rows without row changes: records
    /// read over partitions cannot bring a target to the same values, and the error says so.
    fn note(&mut self, table: &TableId, f: &Field, at: LogPoint) -> Result<(), DecodeError> {
        let Some(ty) = &f.source_type else {
            return Ok(());
        };
        match self.0.iter_mut().find(|(t, ..)| t == ty) {
            Some((_, first, last)) => {
                *first = at.min(*first);
                *last = at.max(*last);
            }
            None => self.0.push((ty.clone(), at, at)),
        }
        if self.0.len() < 2 {
            return Ok(());
        }
        for (other, first, last) in &self.0 {
            let narrowed = if narrows(other, ty) && *first < at {
                Some((other, ty))
            } else if narrows(ty, other) && at < *last {
                Some((ty, other))
            } else {
                None
            };
            if let Some((wide, narrow)) = narrowed {
                return Err(DecodeError(
                    narrowed_at_source(table, &f.name, wide, narrow).to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// One column as a record describes it.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    /// The source's stable column number (Ferry's `__ferry.source.id`, PostgreSQL's attnum): a column renamed
    /// keeps it.
    source_id: Option<u32>,
    /// A stored generated column's expression (Ferry's `__ferry.generated`).
    generated: Option<String>,
    ty: ColumnType,
    /// The Connect schema's logical name, which says how values are written.
    logical: Option<String>,
    /// Connect's `parameters.scale` of a `Decimal`.
    scale: Option<usize>,
    source_type: Option<String>,
    optional: bool,
    /// Element field of an array.
    items: Option<Box<Field>>,
}

impl Decoder {
    /// Decodes one record: its key and value bytes as Kafka holds them, and what its headers say ([`Hints`]).
    pub fn decode(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        hints: &Hints<'_>,
    ) -> Result<Decoded, DecodeError> {
        let unchanged = hints.unchanged;
        let Some(value) = value else {
            return Ok(Decoded::Tombstone);
        };
        let record: Record<'_> = serde_json::from_slice(value)
            .map_err(|e| bad(format!("the value is not a Debezium JSON envelope: {e}")))?;
        let (schema, envelope) = match record.payload {
            Some(payload) => (record.schema, payload),
            None => (None, record.bare),
        };
        let op = envelope
            .op
            .as_deref()
            .ok_or_else(|| bad("the envelope has no \"op\" (not a Debezium change event)"))?;
        let source = envelope
            .source
            .as_ref()
            .ok_or_else(|| bad("the envelope has no \"source\" block"))?;
        let (table, dialect) = table_of(source)?;
        let tx = tx_info(source);
        if op == "t" {
            return Ok(Decoded::Truncate { table, tx });
        }
        let key_fields = self.key_columns(key)?;
        let fields = match schema.filter(|s| s.get() != "null") {
            Some(schema) => self.value_fields(schema.get(), dialect)?,
            None => {
                let image = envelope.after.as_ref().or(envelope.before.as_ref());
                let image =
                    image.ok_or_else(|| bad(format!("a {op:?} event without before or after")))?;
                Arc::new(self.inferred_fields(&table, image, dialect))
            }
        };
        let at = source_position(source, hints.order);
        let (schema, map) = self.merge(table, dialect, &fields, &key_fields, at)?;
        // Ferry's sink writes the order header on every row change, and names the values not sent in another;
        // records without it (Debezium's, or an older Ferry's) mark them with the placeholder.
        let ferry_written = hints.order.is_some();
        let image = Image {
            fields: &fields,
            map: &map,
            table: &schema,
            unchanged: unchanged.or(ferry_written.then_some(&[][..])),
            exact: hints.exact,
        };
        // A column a record does not describe (it was added after the record was written) is left as the target
        // has it by an update, and NULL in a new row.
        let op = match (op, &envelope.before, &envelope.after) {
            ("c", _, Some(after)) => RowOp::Insert {
                after: image.row(after, Value::Null, true)?,
            },
            ("r", _, Some(after)) => RowOp::Read {
                after: image.row(after, Value::Null, true)?,
            },
            ("u", before, Some(after)) => RowOp::Update {
                before: before
                    .as_ref()
                    .map(|b| image.row(b, Value::Null, false))
                    .transpose()?,
                after: image.row(after, Value::Unchanged, true)?,
            },
            ("d", Some(before), _) => RowOp::Delete {
                before: image.row(before, Value::Null, false)?,
            },
            (op, _, _) => {
                return Err(bad(format!(
                    "op {op:?} with the images it needs missing (c, r and u need after; d needs before)"
                )))
            }
        };
        Ok(Decoded::Row {
            table: schema,
            op,
            tx,
        })
    }

    /// Columns of a schemaless record: each keeps the type its first non-null value had.
    fn inferred_fields(&self, table: &TableId, image: &Ordered, dialect: Dialect) -> Vec<Field> {
        let known = self.tables.get(table).map(|m| &m.schema);
        image
            .0
            .iter()
            .map(|(name, v)| {
                if let Some(c) = known.and_then(|t| t.columns.iter().find(|c| &c.name == name)) {
                    if !(matches!(v, Json::Null)
                        || c.ty == ColumnType::Text && c.source_type.is_empty())
                    {
                        return plain_field(name, c.ty.clone(), Some(c.source_type.clone()));
                    }
                }
                let ty = match v {
                    Json::Bool(_) => ColumnType::Bool,
                    Json::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Int8,
                    Json::Number(_) => ColumnType::Float8,
                    Json::Object(_) | Json::Array(_) => ColumnType::Jsonb,
                    Json::String(_) | Json::Null => ColumnType::Text,
                };
                let spelled = (!matches!(v, Json::Null)).then(|| default_spelling(&ty, dialect));
                plain_field(name, ty, spelled)
            })
            .collect()
    }

    /// Merges a record's description of its table into what earlier records said ([`Decoder`]): the table's
    /// schema (the same `Arc` while nothing changed) and where each of the record's fields sits in it.
    fn merge(
        &mut self,
        id: TableId,
        dialect: Dialect,
        fields: &Arc<Vec<Field>>,
        key: &[String],
        at: Option<LogPoint>,
    ) -> Result<(SchemaRef, Arc<Vec<usize>>), DecodeError> {
        let Some(m) = self.tables.get_mut(&id) else {
            let map = Arc::new((0..fields.len()).collect::<Vec<_>>());
            let schema = build_schema(&id, dialect, fields, &vec![at; fields.len()], key, 1);
            self.tables.insert(
                id,
                Merged {
                    columns: fields.to_vec(),
                    column_at: vec![at; fields.len()],
                    forms: fields.iter().map(|f| Forms::new(f, at)).collect(),
                    key: key.to_vec(),
                    schema: schema.clone(),
                    newest: at,
                    newest_fields: fields.clone(),
                    maps: vec![(fields.clone(), map.clone())],
                },
            );
            return Ok((schema, map));
        };
        // Records without a position count as the newest (what arrives last).
        let newer = match (at, m.newest) {
            (Some(a), Some(n)) => a >= n,
            _ => true,
        };
        if newer && !Arc::ptr_eq(&m.newest_fields, fields) {
            // Columns gone and others come since the newest description, without the source's column numbers
            // to tell a rename from a drop and an add: the target cannot be made to match by guessing.
            let same = |a: &Field, b: &Field| match (a.source_id, b.source_id) {
                (Some(x), Some(y)) => x == y,
                _ => a.name == b.name,
            };
            let gone: Vec<&Field> = m
                .newest_fields
                .iter()
                .filter(|c| !fields.iter().any(|f| same(c, f)))
                .collect();
            let added: Vec<&Field> = fields
                .iter()
                .filter(|f| !m.newest_fields.iter().any(|c| same(c, f)))
                .collect();
            let unnumbered = gone.iter().chain(&added).any(|f| f.source_id.is_none());
            if !gone.is_empty() && !added.is_empty() && unnumbered {
                let names = |fs: &[&Field]| {
                    fs.iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(bad(format!(
                    "table {id}: columns {} disappeared and {} appeared, and the records do not say whether they \
                     were renamed (Ferry's Kafka sink numbers columns only while the source's catalog still \
                     describes them; Debezium never does), so the target cannot follow the topic exactly. Nothing \
                     was applied of this record. Publish the table anew from a new snapshot of the source (a new \
                     topic, or `ferry reset` of the capture pipeline) and apply from there",
                    names(&gone),
                    names(&added)
                )));
            }
            m.newest_fields = fields.clone();
        }
        if newer {
            m.newest = at.max(m.newest);
        }
        let mut changed = false;
        if newer && key != m.key.as_slice() {
            m.key = key.to_vec();
            changed = true;
        }
        let known = m
            .maps
            .iter()
            .find(|(f, _)| Arc::ptr_eq(f, fields))
            .map(|(_, map)| map.clone());
        let map = match known {
            // Met before, and every column has its form already.
            Some(map)
                if fields
                    .iter()
                    .zip(map.iter())
                    .all(|(f, &j)| m.columns[j] == *f) =>
            {
                if let Some(at) = at {
                    for (f, &j) in fields.iter().zip(map.iter()) {
                        if m.column_at[j].is_none_or(|c| c < at) {
                            m.column_at[j] = Some(at);
                        }
                        m.forms[j].note(&id, f, at)?;
                    }
                }
                map
            }
            _ => {
                let mut map = Vec::with_capacity(fields.len());
                for f in fields.iter() {
                    let same = |c: &Field| match (f.source_id, c.source_id) {
                        (Some(a), Some(b)) => a == b,
                        _ => c.name == f.name,
                    };
                    match m.columns.iter().position(same) {
                        Some(j) => {
                            // Records without a position count as the newest (what arrives last).
                            let newer_here = match (at, m.column_at[j]) {
                                (Some(a), Some(c)) => a >= c,
                                _ => true,
                            };
                            if newer_here && m.columns[j] != *f {
                                m.columns[j] = f.clone();
                                changed = true;
                            }
                            if newer_here && at.is_some() {
                                m.column_at[j] = at;
                            }
                            if let Some(at) = at {
                                m.forms[j].note(&id, f, at)?;
                            }
                            map.push(j);
                        }
                        None => {
                            m.columns.push(f.clone());
                            m.column_at.push(at);
                            m.forms.push(Forms::new(f, at));
                            changed = true;
                            map.push(m.columns.len() - 1);
                        }
                    }
                }
                let map = Arc::new(map);
                m.maps.retain(|(f, _)| !Arc::ptr_eq(f, fields));
                m.maps.push((fields.clone(), map.clone()));
                map
            }
        };
        if changed {
            let schema = build_schema(
                &id,
                dialect,
                &m.columns,
                &m.column_at,
                &m.key,
                m.schema.version + 1,
            );
            // The same columns described again (another field list) keep the schema in use.
            if schema.columns != m.schema.columns || schema.primary_key != m.schema.primary_key {
                m.schema = schema;
            }
        }
        Ok((m.schema.clone(), map))
    }

    /// The key's column names, in key order; none for a record without a key.
    fn key_columns(&mut self, key: Option<&[u8]>) -> Result<Arc<[String]>, DecodeError> {
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Ok(Arc::from([]));
        };
        let key: Key<'_> = serde_json::from_slice(key)
            .map_err(|e| bad(format!("the key is not a JSON object: {e}")))?;
        if let Some(schema) = key.schema.filter(|s| s.get() != "null") {
            let text = schema.get();
            if let Some((last, names)) = &self.last_key {
                if last == text {
                    return Ok(names.clone());
                }
            }
            let names = match self.key_fields.get(text) {
                Some(names) => names.clone(),
                None => {
                    let parsed: Json = serde_json::from_str(text)
                        .map_err(|e| bad(format!("the key's schema block is not JSON: {e}")))?;
                    let names: Arc<[String]> = parsed
                        .get("fields")
                        .and_then(Json::as_array)
                        .map(|fields| {
                            fields
                                .iter()
                                .filter_map(|f| {
                                    f.get("field").and_then(Json::as_str).map(str::to_owned)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    self.key_fields.insert(text.to_owned(), names.clone());
                    names
                }
            };
            self.last_key = Some((text.to_owned(), names.clone()));
            return Ok(names);
        }
        match key.payload {
            Some(payload) => {
                let payload: Ordered = serde_json::from_str(payload.get())
                    .map_err(|e| bad(format!("the key's payload is not a JSON object: {e}")))?;
                Ok(payload.0.into_iter().map(|(k, _)| k).collect())
            }
            None => {
                // A plain key object: its field order is not the key's, so the names go sorted.
                let mut names = key.bare;
                names.sort();
                Ok(names.into())
            }
        }
    }

    /// The fields of a value schema block's row struct (`text`), read once per distinct text.
    fn value_fields(
        &mut self,
        text: &str,
        dialect: Dialect,
    ) -> Result<Arc<Vec<Field>>, DecodeError> {
        if let Some((last, d, fields)) = &self.last_row {
            if *d == dialect && last == text {
                return Ok(fields.clone());
            }
        }
        let known = self
            .row_fields
            .get(text)
            .and_then(|per| per.iter().find(|(d, _)| *d == dialect))
            .map(|(_, fields)| fields.clone());
        let fields = match known {
            Some(fields) => fields,
            None => {
                let parsed: Json = serde_json::from_str(text)
                    .map_err(|e| bad(format!("the schema block is not JSON: {e}")))?;
                let fields = Arc::new(row_fields(&parsed, dialect)?);
                self.row_fields
                    .entry(text.to_owned())
                    .or_default()
                    .push((dialect, fields.clone()));
                fields
            }
        };
        self.last_row = Some((text.to_owned(), dialect, fields.clone()));
        Ok(fields)
    }
}

/// A table schema of merged columns, each described at `described_at`.
fn build_schema(
    id: &TableId,
    dialect: Dialect,
    fields: &[Field],
    described_at: &[Option<LogPoint>],
    key: &[String],
    version: u64,
) -> SchemaRef {
    let columns: Vec<Column> = fields
        .iter()
        .zip(described_at)
        .map(|(f, &described_at)| {
            let spelled = f
                .source_type
                .clone()
                .unwrap_or_else(|| default_spelling(&f.ty, dialect));
            Column {
                source_id: f.source_id,
                generated: f.generated.clone(),
                described_at,
                ..Column::new(
                    &f.name,
                    f.ty.clone(),
                    spelled,
                    f.optional && !key.contains(&f.name),
                )
            }
        })
        .collect();
    let primary_key: Vec<usize> = key
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    Arc::new(TableSchema {
        columns,
        primary_key,
        version,
        keeps_absent_columns: true,
        ..TableSchema::named(id.clone(), dialect)
    })
}

/// Where a record stands in its source's log, to tell which of two records describes a table as it is later:
/// PostgreSQL's `source.lsn`, or a binlog's file sequence number and `source.pos`; then the change's place
/// within that position (Ferry's order header: its sink writes a transaction's position on every change of
/// it; Debezium's MySQL `source.row`, the row within its event).
fn source_position(source: &Json, order: Option<u64>) -> Option<LogPoint> {
    let row = order
        .or_else(|| source.get("row").and_then(Json::as_u64))
        .unwrap_or(0);
    if let Some(lsn) = source.get("lsn").and_then(Json::as_u64) {
        return Some(LogPoint {
            file: 0,
            offset: lsn,
            row,
        });
    }
    let file = source.get("file").and_then(Json::as_str)?;
    let seq = file.rsplit('.').next()?.parse::<u64>().ok()?;
    Some(LogPoint {
        file: seq,
        offset: source.get("pos").and_then(Json::as_u64)?,
        row,
    })
}

/// What a record's headers say besides its key and value.
#[derive(Debug, Default, Clone, Copy)]
pub struct Hints<'a> {
    /// The columns Ferry's Kafka sink listed in the `ferry.unchanged` header (values the source did not send);
    /// `None` for records without it, where Debezium's `__debezium_unavailable_value` placeholder marks them.
    pub unchanged: Option<&'a [String]>,
    /// Ferry's `ferry.order` header: the change's place in its source transaction.
    pub order: Option<u64>,
    /// Ferry's `ferry.exact` header: values the envelope holds only approximately, exactly.
    pub exact: Option<&'a ExactValues>,
}

/// One record's images turned into rows of the merged table.
struct Image<'a> {
    /// The record's own fields, which say how its values are written.
    fields: &'a [Field],
    /// Where each sits in the table.
    map: &'a [usize],
    table: &'a TableSchema,
    /// Ferry-written records: the columns whose values the source did not send (the `ferry.unchanged` header);
    /// `None`: Debezium's placeholder value marks them.
    unchanged: Option<&'a [String]>,
    /// Ferry-written records: values the envelope holds only approximately, by image and column.
    exact: Option<&'a ExactValues>,
}

impl Image<'_> {
    /// `missing`: what a column the record does not describe gets. `new_values`: an after-image (where a value
    /// may be one the source did not send).
    fn row(
        &self,
        image: &Ordered,
        missing: Value,
        new_values: bool,
    ) -> Result<Vec<Value>, DecodeError> {
        let mut row = vec![missing; self.table.columns.len()];
        for (f, &j) in self.fields.iter().zip(self.map) {
            let Some((_, v)) = image.0.iter().find(|(k, _)| *k == f.name) else {
                // A column the image leaves out: PostgreSQL's old image carries only the identity.
                row[j] = Value::Null;
                continue;
            };
            let value = match self.unchanged {
                Some(names) if new_values && names.contains(&f.name) => Ok(Value::Unchanged),
                Some(_) => value(v, f, false),
                None => value(v, f, new_values),
            };
            row[j] = value.map_err(|why| bad(format!("{}.{}: {why}", self.table.id, f.name)))?;
        }
        let exact = self
            .exact
            .map(|e| if new_values { &e.after } else { &e.before });
        for (name, v) in exact.into_iter().flatten() {
            if let Some(i) = self.fields.iter().position(|f| f.name == *name) {
                row[self.map[i]] = v.clone();
            }
        }
        Ok(row)
    }
}

fn plain_field(name: &str, ty: ColumnType, source_type: Option<String>) -> Field {
    Field {
        name: name.to_owned(),
        source_id: None,
        generated: None,
        ty,
        logical: None,
        scale: None,
        source_type,
        optional: true,
        items: None,
    }
}

/// The table a change is about, and the dialect of its source: PostgreSQL's `schema`.`table`; MySQL's and
/// MariaDB's `db`.`table`.
fn table_of(source: &Json) -> Result<(TableId, Dialect), DecodeError> {
    let text = |k: &str| {
        source
            .get(k)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
    };
    let connector = text("connector").unwrap_or_default();
    let dialect = if matches!(connector, "mysql" | "mariadb") {
        Dialect::Mysql
    } else {
        Dialect::Postgres
    };
    let schema = match dialect {
        Dialect::Mysql => text("db"),
        Dialect::Postgres => text("schema").or_else(|| text("db")),
    };
    match (schema, text("table")) {
        (Some(schema), Some(table)) => Ok((TableId::new(schema, table), dialect)),
        _ => Err(bad(
            "the source block names no table (expected source.schema and source.table, or source.db and source.table)",
        )),
    }
}

fn tx_info(source: &Json) -> TxInfo {
    let int = |k: &str| source.get(k).and_then(Json::as_i64);
    TxInfo {
        commit_time: int("ts_ms").map(|ms| Timestamp::from_unix_micros(ms.saturating_mul(1000))),
        xid: int("txId").and_then(|x| u32::try_from(x).ok()),
        gtid: source.get("gtid").and_then(Json::as_str).map(str::to_owned),
        server_id: int("server_id").and_then(|x| u32::try_from(x).ok()),
    }
}

/// The columns of the `after` (else `before`) struct of an envelope's schema.
fn row_fields(schema: &Json, dialect: Dialect) -> Result<Vec<Field>, DecodeError> {
    let fields = schema
        .get("fields")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("the schema block has no fields"))?;
    let image = ["after", "before"]
        .iter()
        .find_map(|name| {
            fields
                .iter()
                .find(|f| f.get("field").and_then(Json::as_str) == Some(name))
        })
        .ok_or_else(|| bad("the schema block has no before or after struct"))?;
    image
        .get("fields")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("the row struct of the schema block has no fields"))?
        .iter()
        .map(|f| field(f, dialect))
        .collect()
}

fn field(f: &Json, dialect: Dialect) -> Result<Field, DecodeError> {
    let name = f
        .get("field")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let connect = f.get("type").and_then(Json::as_str).unwrap_or_default();
    let logical = f.get("name").and_then(Json::as_str).map(str::to_owned);
    let params = f.get("parameters");
    let param = |k: &str| -> Option<String> {
        params
            .and_then(|p| p.get(k))
            .and_then(Json::as_str)
            .map(str::to_owned)
    };
    let scale = param("scale").and_then(|s| s.parse().ok());
    let items = match f.get("items") {
        Some(items) => Some(Box::new(field(items, dialect)?)),
        None => None,
    };
    let ty = match (logical.as_deref(), connect) {
        (
            Some("org.apache.kafka.connect.data.Decimal" | "io.debezium.data.VariableScaleDecimal"),
            _,
        ) => ColumnType::Numeric,
        (Some("io.debezium.data.Json"), _) => ColumnType::Jsonb,
        (Some("io.debezium.data.Uuid"), _) => ColumnType::Uuid,
        (Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date"), _) => {
            ColumnType::Date
        }
        (
            Some(
                "io.debezium.time.Time"
                | "io.debezium.time.MicroTime"
                | "io.debezium.time.NanoTime",
            ),
            _,
        ) => ColumnType::Time,
        (Some("io.debezium.time.ZonedTime"), _) => ColumnType::TimeTz,
        (
            Some(
                "io.debezium.time.Timestamp"
                | "io.debezium.time.MicroTimestamp"
                | "io.debezium.time.NanoTimestamp"
                | "org.apache.kafka.connect.data.Timestamp",
            ),
            _,
        ) => ColumnType::Timestamp,
        (Some("io.debezium.time.ZonedTimestamp"), _) => ColumnType::TimestampTz,
        (Some("io.debezium.time.MicroDuration"), _) => ColumnType::Interval,
        (Some("io.debezium.time.Year"), _) => ColumnType::Int4,
        (Some("io.debezium.data.Enum" | "io.debezium.data.EnumSet"), _) => ColumnType::Text,
        (_, "boolean") => ColumnType::Bool,
        (_, "int8" | "int16") => ColumnType::Int2,
        (_, "int32") => ColumnType::Int4,
        (_, "int64") => ColumnType::Int8,
        (_, "float" | "float32") => ColumnType::Float4,
        (_, "double" | "float64") => ColumnType::Float8,
        (_, "bytes") => ColumnType::Bytes,
        (_, "string") => ColumnType::Text,
        (_, "array") => ColumnType::Array(Box::new(
            items.as_ref().map_or(ColumnType::Text, |i| i.ty.clone()),
        )),
        (_, other) => {
            return Err(bad(format!(
                "column {name:?} has Connect type {other:?}{}, which Ferry cannot map to a column",
                logical
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            )))
        }
    };
    let source_type = param("__ferry.source.type").or_else(|| debezium_spelling(&param, dialect));
    // Decimals written as text (decimal.handling.mode = string, a variable scale in Avro) are still decimals.
    let ty = match (&ty, source_type.as_deref()) {
        (ColumnType::Text, Some(t))
            if logical.is_none() && (t.starts_with("numeric") || t.starts_with("decimal")) =>
        {
            ColumnType::Numeric
        }
        _ => ty,
    };
    Ok(Field {
        name,
        source_id: param("__ferry.source.id").and_then(|id| id.parse().ok()),
        generated: param("__ferry.generated"),
        ty,
        logical,
        scale,
        source_type,
        optional: f.get("optional").and_then(Json::as_bool).unwrap_or(true),
        items,
    })
}

/// A column's type from Debezium's `column.propagate.source.type` parameters (`NUMERIC`, length 12, scale 2).
fn debezium_spelling(param: &dyn Fn(&str) -> Option<String>, _dialect: Dialect) -> Option<String> {
    let name = param("__debezium.source.column.type")?.to_ascii_lowercase();
    let length = param("__debezium.source.column.length");
    let scale = param("__debezium.source.column.scale");
    let sized = matches!(
        name.as_str(),
        "numeric"
            | "decimal"
            | "varchar"
            | "char"
            | "character varying"
            | "bpchar"
            | "varbinary"
            | "binary"
            | "bit"
            | "varbit"
    );
    Some(match (length.as_deref(), scale.as_deref()) {
        (Some(l), Some(s)) if sized && matches!(name.as_str(), "numeric" | "decimal") => {
            format!("{name}({l},{s})")
        }
        (Some(l), _) if sized && l != "2147483647" => format!("{name}({l})"),
        _ => name,
    })
}

/// How a target of `dialect` spells a column of `ty` when the record does not say.
fn default_spelling(ty: &ColumnType, dialect: Dialect) -> String {
    let pg = dialect == Dialect::Postgres;
    match ty {
        ColumnType::Bool => if pg { "boolean" } else { "tinyint(1)" }.into(),
        ColumnType::Int2 => "smallint".into(),
        ColumnType::Int4 => if pg { "integer" } else { "int" }.into(),
        ColumnType::Int8 => "bigint".into(),
        ColumnType::Float4 => if pg { "real" } else { "float" }.into(),
        ColumnType::Float8 => if pg { "double precision" } else { "double" }.into(),
        ColumnType::Numeric => if pg { "numeric" } else { "decimal(65,30)" }.into(),
        ColumnType::Text | ColumnType::Other => if pg { "text" } else { "longtext" }.into(),
        ColumnType::Bytes => if pg { "bytea" } else { "longblob" }.into(),
        ColumnType::Json | ColumnType::Jsonb => if pg { "jsonb" } else { "json" }.into(),
        ColumnType::Uuid => if pg { "uuid" } else { "char(36)" }.into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => if pg { "time" } else { "time(6)" }.into(),
        ColumnType::TimeTz => if pg {
            "time with time zone"
        } else {
            "varchar(32)"
        }
        .into(),
        ColumnType::Timestamp => if pg { "timestamp" } else { "datetime(6)" }.into(),
        ColumnType::TimestampTz => if pg {
            "timestamp with time zone"
        } else {
            "timestamp(6)"
        }
        .into(),
        ColumnType::Interval => if pg { "interval" } else { "bigint" }.into(),
        ColumnType::Array(inner) if pg => format!("{}[]", default_spelling(inner, dialect)),
        ColumnType::Array(_) => "json".into(),
    }
}

/// One value as the field's type and logical name have it written. `placeholders`: Debezium's
/// `__debezium_unavailable_value` (in each form its connector writes it: text, base64 bytes, an array of it or
/// of its bytes) means a value the source did not send.
fn value(v: &Json, f: &Field, placeholders: bool) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    if placeholders && is_placeholder(v) {
        return Ok(Value::Unchanged);
    }
    let int = || {
        v.as_i64()
            .ok_or_else(|| format!("expected an integer, found {v}"))
    };
    let text = || {
        v.as_str()
            .ok_or_else(|| format!("expected a string, found {v}"))
    };
    let bytes = || {
        base64::engine::general_purpose::STANDARD
            .decode(text()?)
            .map_err(|e| format!("expected base64 bytes: {e}"))
    };
    let logical = f.logical.as_deref();
    Ok(match (&f.ty, logical) {
        (ColumnType::Numeric, Some("io.debezium.data.VariableScaleDecimal")) => {
            let scale = v
                .get("scale")
                .and_then(Json::as_u64)
                .ok_or("expected {scale, value}")?;
            let raw = v
                .get("value")
                .and_then(Json::as_str)
                .ok_or("expected {scale, value}")?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|e| format!("expected base64 bytes: {e}"))?;
            decimal(&raw, scale as usize)?
        }
        (ColumnType::Numeric, Some("org.apache.kafka.connect.data.Decimal")) => {
            if v.as_str() == Some("NaN") {
                Value::Decimal(Decimal::NaN)
            } else {
                decimal(&bytes()?, f.scale.unwrap_or(0))?
            }
        }
        // decimal.handling.mode = string / double.
        (ColumnType::Numeric, _) => match v {
            Json::String(s) => Value::Decimal(Decimal::parse(s).map_err(|e| e.to_string())?),
            Json::Number(n) => {
                Value::Decimal(Decimal::parse(&n.to_string()).map_err(|e| e.to_string())?)
            }
            _ => return Err(format!("expected a decimal, found {v}")),
        },
        (ColumnType::Bool, _) => Value::Bool(
            v.as_bool()
                .ok_or_else(|| format!("expected a boolean, found {v}"))?,
        ),
        (ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8, _) => match v {
            // An unsigned BIGINT past i64 (bigint.unsigned.handling.mode = precise writes it as Decimal).
            Json::Number(n) if n.as_i64().is_none() => {
                Value::Decimal(Decimal::parse(&n.to_string()).map_err(|e| e.to_string())?)
            }
            _ => Value::Int(int()?),
        },
        (ColumnType::Float4 | ColumnType::Float8, _) => match v {
            Json::String(s) => Value::Float(match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => return Err(format!("expected a number, found {v}")),
            }),
            _ => Value::Float(
                v.as_f64()
                    .ok_or_else(|| format!("expected a number, found {v}"))?,
            ),
        },
        (ColumnType::Bytes, _) => Value::Bytes(bytes()?),
        (ColumnType::Json | ColumnType::Jsonb, _) => match v {
            Json::String(s) => Value::Json(s.clone()),
            other => Value::Json(other.to_string()),
        },
        (ColumnType::Uuid, _) => Value::Uuid(Uuid::parse(text()?).map_err(|e| e.to_string())?),
        (ColumnType::Date, _) => Value::Date(Date(
            i32::try_from(int()?).map_err(|_| "date out of range")?,
        )),
        (ColumnType::Time, Some("io.debezium.time.Time")) => Value::Time(Time(int()? * 1000)),
        (ColumnType::Time, Some("io.debezium.time.NanoTime")) => Value::Time(Time(int()? / 1000)),
        (ColumnType::Time, _) => Value::Time(Time(int()?)),
        (ColumnType::TimeTz, _) => {
            Value::TimeTz(TimeTz::parse_iso(&iso_to_pg(text()?)).map_err(|e| e.to_string())?)
        }
        (ColumnType::Timestamp, _) => {
            let n = int()?;
            Value::Timestamp(match logical {
                _ if n == MICRO_TIMESTAMP_INFINITY => Timestamp::INFINITY,
                _ if n == MICRO_TIMESTAMP_NEG_INFINITY => Timestamp::NEG_INFINITY,
                Some("io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") => {
                    Timestamp::from_unix_micros(n.saturating_mul(1000))
                }
                Some("io.debezium.time.NanoTimestamp") => Timestamp::from_unix_micros(n / 1000),
                _ => Timestamp::from_unix_micros(n),
            })
        }
        (ColumnType::TimestampTz, _) => Value::TimestampTz(match text()? {
            "infinity" => Timestamp::INFINITY,
            "-infinity" => Timestamp::NEG_INFINITY,
            t => Timestamp::parse_iso_tz(&iso_to_pg(t)).map_err(|e| e.to_string())?,
        }),
        (ColumnType::Interval, _) => Value::Interval(Interval {
            months: 0,
            days: 0,
            micros: int()?,
        }),
        (ColumnType::Array(_), _) => {
            let items = v
                .as_array()
                .ok_or_else(|| format!("expected an array, found {v}"))?;
            let element = f
                .items
                .as_deref()
                .cloned()
                .unwrap_or_else(|| plain_field("", ColumnType::Text, None));
            Value::Array(
                items
                    .iter()
                    // A multi-dimensional array nests one level per dimension.
                    .map(|i| match i {
                        Json::Array(_) if !matches!(element.ty, ColumnType::Array(_)) => {
                            value(i, f, false)
                        }
                        i => value(i, &element, false),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        (ColumnType::Text | ColumnType::Other, _) => match v {
            Json::String(s) => Value::Text(s.clone()),
            // A schemaless column first seen as text.
            other => Value::Text(other.to_string()),
        },
    })
}

/// Whether `v` is Debezium's placeholder for a value not sent, in any of the forms Ferry's sink and Debezium's
/// PostgreSQL connector write it.
fn is_placeholder(v: &Json) -> bool {
    let b64 = || base64::engine::general_purpose::STANDARD.encode(UNAVAILABLE);
    match v {
        Json::String(s) => s == UNAVAILABLE || *s == b64(),
        Json::Array(items) => match items.as_slice() {
            [one @ Json::String(_)] => is_placeholder(one),
            ints => {
                ints.len() == UNAVAILABLE.len()
                    && ints
                        .iter()
                        .zip(UNAVAILABLE.bytes())
                        .all(|(i, b)| i.as_u64() == Some(u64::from(b)))
            }
        },
        _ => false,
    }
}

fn decimal(bytes: &[u8], scale: usize) -> Result<Value, String> {
    let text = decimal_text(bytes, scale).ok_or("an empty decimal")?;
    Ok(Value::Decimal(Decimal::Finite(text)))
}

/// ISO 8601 as Debezium writes zoned times (`2024-02-29T10:11:12.5Z`, `…+05:30`) in PostgreSQL's spelling
/// (`2024-02-29 10:11:12.5+00`), which Ferry's parsers read.
/// Years outside 0001–9999 come signed (`-4712-01-01T…Z` is 4713 BC, the astronomical year -4712;
/// `+294276-…`), which PostgreSQL spells with `BC` and no sign.
fn iso_to_pg(s: &str) -> String {
    let s = s.replacen('T', " ", 1);
    let s = match s.strip_suffix('Z') {
        Some(body) => format!("{body}+00"),
        None => s,
    };
    if let Some(rest) = s.strip_prefix('+') {
        return rest.to_owned();
    }
    if let Some(rest) = s.strip_prefix("0000-") {
        return format!("0001-{rest} BC");
    }
    match s.strip_prefix('-').and_then(|rest| rest.split_once('-')) {
        Some((year, rest)) => match year.parse::<u64>() {
            Ok(y) => format!("{:04}-{rest} BC", y + 1),
            Err(_) => s,
        },
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text of a decoded value in the fixtures' conventions (tests/fixtures/debezium/*/expected.json).
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::Null => None,
            Value::Unchanged => Some(UNAVAILABLE.into()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Interval(i) => Some(i.micros.to_string()),
            Value::Json(s) => Some(s.clone()),
            // PostgreSQL's array output: elements quoted only when they must be.
            Value::Array(items) => Some(format!(
                "{{{}}}",
                items
                    .iter()
                    .map(|i| match text(i) {
                        None => "NULL".to_owned(),
                        Some(t)
                            if t.is_empty()
                                || t.eq_ignore_ascii_case("null")
                                || t.contains([' ', ',', '"', '{', '}', '\\']) =>
                        {
                            format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))
                        }
                        Some(t) => t,
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            other => ferry_core::pg_text::pg_text(other),
        }
    }

    fn fixtures() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/debezium")
    }

    /// Checks one decoded record against its entry in a fixture folder's expected.json: op, table, key columns
    /// and (`typed`) every value; returns how many values it compared.
    fn check(what: &str, decoded: Decoded, want: &Json, typed: bool) -> usize {
        let mut checked = 0;
        match (decoded, want["op"].as_str()) {
            (Decoded::Tombstone, None) => {}
            (Decoded::Truncate { table, .. }, Some("t")) => {
                assert_eq!(
                    Some(table.to_string().as_str()),
                    want["table"].as_str(),
                    "{what}"
                )
            }
            (
                Decoded::Row {
                    table, op: row_op, ..
                },
                Some(op),
            ) => {
                assert_eq!(
                    Some(table.id.to_string().as_str()),
                    want["table"].as_str(),
                    "{what}"
                );
                let (before, after, letter) = match &row_op {
                    RowOp::Insert { after } => (None, Some(after), "c"),
                    RowOp::Read { after } => (None, Some(after), "r"),
                    RowOp::Update { before, after } => (before.as_ref(), Some(after), "u"),
                    RowOp::Delete { before } => (Some(before), None, "d"),
                };
                assert_eq!(letter, op, "{what}");
                let mut key: Vec<&str> = table
                    .primary_key
                    .iter()
                    .map(|&i| table.columns[i].name.as_str())
                    .collect();
                let mut want_key: Vec<&str> = want["key"]
                    .as_object()
                    .map_or(Vec::new(), |k| k.keys().map(String::as_str).collect());
                key.sort();
                want_key.sort();
                assert_eq!(key, want_key, "{what}: key columns");
                for (image, row) in [("before", before), ("after", after)] {
                    let Some(fields) = want[image].as_object().filter(|_| typed) else {
                        continue;
                    };
                    let row = row.unwrap_or_else(|| panic!("{what}: no {image}"));
                    for (column, value) in fields {
                        let i = table
                            .column_index(column)
                            .unwrap_or_else(|| panic!("{what}: no column {column}"));
                        assert_eq!(
                            text(&row[i]).as_deref(),
                            value.as_str(),
                            "{what}: {image}.{column}"
                        );
                        checked += 1;
                    }
                }
            }
            (other, op) => panic!("{what}: decoded {other:?}, expected op {op:?}"),
        }
        checked
    }

    /// Debezium-written JSON records decode to the values their fixtures' expected.json lists, column by column.
    /// A Ferry-like record of `t` at `lsn` with columns `(name, source type)` (all text).
    fn record(lsn: u64, columns: &[(&str, &str)]) -> (Vec<u8>, Vec<u8>) {
        let fields: Vec<Json> =
            std::iter::once(serde_json::json!({"type": "int32", "optional": false, "field": "id"}))
                .chain(columns.iter().map(|(name, ty)| {
                    serde_json::json!({"type": "string", "optional": true, "field": name,
                    "parameters": {"__ferry.source.type": ty}})
                }))
                .collect();
        let row: serde_json::Map<String, Json> =
            std::iter::once(("id".to_owned(), serde_json::json!(1)))
                .chain(
                    columns
                        .iter()
                        .map(|(name, _)| (name.to_string(), serde_json::json!("x"))),
                )
                .collect();
        let value = serde_json::json!({
            "schema": {"type": "struct", "fields": [
                {"type": "struct", "optional": true, "field": "before", "fields": fields},
                {"type": "struct", "optional": true, "field": "after", "fields": fields}]},
            "payload": {"before": null, "after": row, "op": "u",
                "source": {"connector": "postgresql", "schema": "public", "table": "t", "lsn": lsn}}
        });
        let key = serde_json::json!({"schema": {"type": "struct", "fields": [{"type": "int32", "field": "id"}]},
            "payload": {"id": 1}});
        (key.to_string().into_bytes(), value.to_string().into_bytes())
    }

    /// Records read out of order (partitions) never take a column back to an older form; each column has the form
    /// of the newest record describing it, even when a later record no longer does; columns are never dropped.
    #[test]
    fn a_column_keeps_the_form_of_the_newest_record_that_describes_it() {
        let mut d = Decoder::default();
        let mut types = |lsn, columns: &[(&str, &str)]| {
            let (k, v) = record(lsn, columns);
            match d.decode(Some(&k), Some(&v), &Hints::default()).unwrap() {
                Decoded::Row { table, .. } => table
                    .columns
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.source_type))
                    .collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            types(100, &[("v", "varchar(10)")]),
            ["id integer", "v varchar(10)"]
        );
        // The column is gone from the newest record: kept.
        assert_eq!(types(300, &[]), ["id integer", "v varchar(10)"]);
        // A record between them widens it; an older one does not narrow it back.
        assert_eq!(
            types(200, &[("v", "varchar(20)")]),
            ["id integer", "v varchar(20)"]
        );
        assert_eq!(
            types(150, &[("v", "varchar(15)")]),
            ["id integer", "v varchar(20)"]
        );
        // A column only an old record describes is added.
        assert_eq!(
            types(50, &[("w", "text")]),
            ["id integer", "v varchar(20)", "w text"]
        );
    }

    /// A narrower type described after a wider one (the source narrowed the column, rewriting its rows) stops,
    /// in whichever order the two are read; widenings never do.
    #[test]
    fn a_column_narrowed_at_the_source_stops_the_decoder() {
        for order in [[100, 200], [200, 100]] {
            let mut d = Decoder::default();
            let widen = record(50, &[("v", "varchar(5)")]);
            d.decode(Some(&widen.0), Some(&widen.1), &Hints::default())
                .unwrap();
            let mut outcome = Vec::new();
            for lsn in order {
                let ty = if lsn == 100 {
                    "varchar(20)"
                } else {
                    "varchar(10)"
                };
                let (k, v) = record(lsn, &[("v", ty)]);
                outcome.push(d.decode(Some(&k), Some(&v), &Hints::default()).map(|_| ()));
            }
            let err = outcome
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| panic!("no error reading {order:?}"));
            assert!(
                err.0.contains(
                    "column v was narrowed at the source from varchar(20) to varchar(10)"
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn zoned_times_outside_years_1_to_9999_read_as_postgresql_spells_them() {
        assert_eq!(
            iso_to_pg("-4712-01-01T00:00:00Z"),
            "4713-01-01 00:00:00+00 BC"
        );
        assert_eq!(
            iso_to_pg("0000-03-01T10:00:00Z"),
            "0001-03-01 10:00:00+00 BC"
        );
        assert_eq!(
            iso_to_pg("+294276-12-31T23:59:59Z"),
            "294276-12-31 23:59:59+00"
        );
        assert_eq!(
            iso_to_pg("2024-02-29T10:11:12.5+05:30"),
            "2024-02-29 10:11:12.5+05:30"
        );
    }

    #[test]
    fn debezium_json_fixtures_decode_to_their_expected_values() {
        let mut checked = 0;
        // Without the schema block a value's type is what JSON says (a timestamp is a number): the plain
        // records are checked for op, table and key only.
        for (folder, typed) in [
            ("postgres-json-schema", true),
            ("postgres-json-plain", false),
            ("mysql-json-schema", true),
        ] {
            let dir = fixtures().join(folder);
            let expected: Json =
                serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
            let mut decoder = Decoder::default();
            let mut files: Vec<_> = expected["records"].as_object().unwrap().iter().collect();
            files.sort_by_key(|(k, _)| k.to_owned());
            for (file, want) in files {
                let record: Json =
                    serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap();
                let bytes = |v: &Json| (!v.is_null()).then(|| v.to_string().into_bytes());
                let what = format!("{folder}/{file}");
                let decoded = decoder
                    .decode(
                        bytes(&record["key"]).as_deref(),
                        bytes(&record["value"]).as_deref(),
                        &Hints::default(),
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                checked += check(&what, decoded, want, typed);
            }
        }
        assert!(checked > 100, "only {checked} values checked");
    }

    /// An Avro record as Confluent's AvroConverter frames Debezium's event decodes to the same values.
    #[test]
    fn a_debezium_avro_fixture_decodes_to_its_expected_values() {
        let dir = fixtures().join("postgres-avro");
        let expected: Json =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let json = |name: &str, id: i32| {
            let framed = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
            assert_eq!(framed[0], 0, "magic byte");
            assert_eq!(
                i32::from_be_bytes(framed[1..5].try_into().unwrap()),
                id,
                "schema id"
            );
            let text = std::fs::read_to_string(dir.join(format!("{name}.avsc"))).unwrap();
            let (schema, connect) = super::super::avro::parse(&text).unwrap();
            super::super::avro::json_of(&schema, &connect, &framed[5..]).unwrap()
        };
        let (key, value) = (json("key", 41), json("value", 42));
        let decoded = Decoder::default()
            .decode(Some(&key), Some(&value), &Hints::default())
            .unwrap();
        let checked = check(
            "postgres-avro",
            decoded,
            &expected["records"]["key.bin+value.bin"],
            true,
        );
        assert!(checked > 20, "only {checked} values checked");
    }
}
