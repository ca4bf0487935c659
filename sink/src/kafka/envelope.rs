//! Debezium's JSON record format: key `{id: …}` and value `{before, after, source, op, ts_ms}`, each optionally
//! wrapped as `{schema, payload}` the way Kafka Connect's JsonConverter writes them with `schemas.enable`.
//!
//! Value types follow Debezium's defaults: dates as days (`io.debezium.time.Date`), times and timestamps as
//! microseconds (`MicroTime`, `MicroTimestamp`), zoned timestamps as ISO-8601 strings (`ZonedTimestamp`), decimals
//! per `decimal.handling.mode`, bytes as base64, JSON as a string (`io.debezium.data.Json`). A value those
//! forms cannot hold (a timestamp past an i64 of microseconds since 1970) stops the pipeline naming it.

use ferry_config::DecimalHandling;
pub(super) use ferry_core::debezium::{unscaled_bytes, UNAVAILABLE};
use ferry_core::debezium::{MICRO_TIMESTAMP_INFINITY, MICRO_TIMESTAMP_NEG_INFINITY};
use ferry_core::{
    ColumnType, Decimal, Dialect, Error, Interval, Position, Row, SchemaRef, TableSchema,
    Timestamp, TxContext, Value,
};
use std::fmt::Write as _;

use serde_json::{json, Value as Json};

/// What every record of a pipeline says about its source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// `postgresql` or `mysql`, as Debezium names its connectors.
    pub connector: &'static str,
    /// The logical name: the topic prefix.
    pub name: String,
    pub db: String,
}

/// One change, as the envelope needs it.
pub struct Change<'a> {
    pub table: &'a TableSchema,
    /// `c`, `u`, `d`, `r` (snapshot read) or `t` (truncate).
    pub op: &'static str,
    pub before: Option<&'a Row>,
    pub after: Option<&'a Row>,
    /// The source transaction's commit time, in milliseconds.
    pub commit_ms: i64,
    /// The source transaction (its position, id and GTID); `None` outside one.
    pub tx: Option<&'a TxContext>,
    pub snapshot: bool,
    /// With transaction metadata on: `{id, total_order, data_collection_order}`.
    pub transaction: Option<Json>,
}

impl Change<'_> {
    /// Where the transaction commits in the source ([`TxContext::commit_at`]).
    pub fn position(&self) -> Option<&Position> {
        self.tx.map(|t| &t.commit_at)
    }

    /// PostgreSQL's transaction id.
    pub fn xid(&self) -> Option<u32> {
        self.tx.and_then(|t| t.xid)
    }

    /// The transaction's own GTID (binlog sources), as Debezium's MySQL `source.gtid`; for snapshot reads, which
    /// belong to no transaction, the GTID state of the snapshot's position.
    pub fn gtid(&self) -> Option<String> {
        let tx = self.tx?;
        tx.origin.gtid.clone().or_else(|| match &tx.commit_at {
            Position::Binlog(b) => b.gtid.as_ref().map(ToString::to_string),
            _ => None,
        })
    }
}

/// What every JSON record of one table version shares, built once: its schema blocks (with `schemas`), the
/// escaped `"column":` names, and the constant parts of the `source` block.
pub struct JsonTable {
    table: SchemaRef,
    key_schema: Option<String>,
    value_schema: Option<String>,
    names: Vec<String>,
    /// Per column, the declared scale of a precise decimal (written as plain bytes).
    scales: Vec<Option<usize>>,
    /// The source block up to `ts_ms`'s value.
    source_head: String,
    /// From `db` up to the position's fields.
    source_middle: String,
}

impl JsonTable {
    pub fn new(
        table: &SchemaRef,
        info: &SourceInfo,
        topic: &str,
        schemas: bool,
        decimals: DecimalHandling,
    ) -> JsonTable {
        let names = table
            .columns
            .iter()
            .map(|c| {
                let mut name = String::new();
                push_json_str(&mut name, &c.name);
                name.push(':');
                name
            })
            .collect();
        let scales = table
            .columns
            .iter()
            .map(|c| match (&c.ty, decimals) {
                (ColumnType::Numeric, DecimalHandling::Precise) => declared_scale(&c.source_type),
                _ => None,
            })
            .collect();
        let mut source_head = concat!(
            "{\"version\":\"ferry-",
            env!("CARGO_PKG_VERSION"),
            "\",\"connector\":"
        )
        .to_owned();
        push_json_str(&mut source_head, info.connector);
        source_head.push_str(",\"name\":");
        push_json_str(&mut source_head, &info.name);
        source_head.push_str(",\"ts_ms\":");
        let mut source_middle = ",\"db\":".to_owned();
        push_json_str(&mut source_middle, &info.db);
        if table.dialect == Dialect::Postgres {
            source_middle.push_str(",\"schema\":");
            push_json_str(&mut source_middle, &table.id.schema);
        }
        source_middle.push_str(",\"table\":");
        push_json_str(&mut source_middle, &table.id.name);
        JsonTable {
            table: table.clone(),
            key_schema: schemas
                .then(|| key_schema(table, topic, decimals))
                .flatten(),
            value_schema: schemas.then(|| value_schema(table, info, topic, decimals)),
            names,
            scales,
            source_head,
            source_middle,
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends `bytes` in standard base64 with padding (what Kafka Connect's JsonConverter writes for bytes).
pub(super) fn push_base64(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    // Runs of bytes that need no escape are copied whole; found with a table, as serde_json does.
    while let Some(offset) = bytes[plain_from..].iter().position(|&b| ESCAPE[b as usize]) {
        let i = plain_from + offset;
        // Every byte that needs an escape is ASCII, so `i` is a character boundary.
        out.push_str(&s[plain_from..i]);
        match bytes[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        plain_from = i + 1;
    }
    out.push_str(&s[plain_from..]);
    out.push('"');
}

/// The bytes a JSON string cannot hold as they are: control characters, `"` and `\\`.
const ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends an integer in decimal.
fn push_int(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// The decimal's precision and scale as the column declares them (`numeric(12,2)`, `decimal(65,30)`), if it does.
pub(super) fn declared_precision_scale(source_type: &str) -> Option<(usize, usize)> {
    let args = source_type.split_once('(')?.1.split_once(')')?.0;
    let (p, s) = args.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

fn declared_scale(source_type: &str) -> Option<usize> {
    declared_precision_scale(source_type).map(|(_, s)| s)
}

/// The form the placeholder takes in a column, as Debezium's `UnchangedToastedPlaceholder` writes it: text in
/// text-typed fields, its bytes in binary ones, its bytes as numbers in integer arrays, a one-element array in
/// other arrays. Only numeric scalars (`double` or variable-scale decimals) cannot hold it: those stay null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unavailable {
    Text,
    Bytes,
    Ints,
    TextArray,
    BytesArray,
    Null,
}

pub(super) fn unavailable(
    ty: &ColumnType,
    declared_scale: Option<usize>,
    decimals: DecimalHandling,
) -> Unavailable {
    let scalar = |ty: &ColumnType| match ty {
        ColumnType::Text
        | ColumnType::Other
        | ColumnType::Json
        | ColumnType::Jsonb
        | ColumnType::Uuid
        | ColumnType::TimeTz
        | ColumnType::TimestampTz => Unavailable::Text,
        ColumnType::Bytes => Unavailable::Bytes,
        ColumnType::Numeric => match (decimals, declared_scale) {
            (DecimalHandling::String, _) => Unavailable::Text,
            (DecimalHandling::Precise, Some(_)) => Unavailable::Bytes,
            _ => Unavailable::Null,
        },
        _ => Unavailable::Null,
    };
    match ty {
        ColumnType::Array(inner) => match inner.as_ref() {
            ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => Unavailable::Ints,
            inner => match scalar(inner) {
                Unavailable::Text => Unavailable::TextArray,
                Unavailable::Bytes => Unavailable::BytesArray,
                _ => Unavailable::Null,
            },
        },
        ty => scalar(ty),
    }
}

fn push_unavailable(out: &mut String, form: Unavailable) {
    match form {
        Unavailable::Text => push_json_str(out, UNAVAILABLE),
        Unavailable::Bytes => {
            out.push('"');
            push_base64(out, UNAVAILABLE.as_bytes());
            out.push('"');
        }
        Unavailable::Ints => {
            out.push('[');
            for (n, b) in UNAVAILABLE.bytes().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                push_int(out, i64::from(b));
            }
            out.push(']');
        }
        Unavailable::TextArray | Unavailable::BytesArray => {
            out.push('[');
            let element = if form == Unavailable::TextArray {
                Unavailable::Text
            } else {
                Unavailable::Bytes
            };
            push_unavailable(out, element);
            out.push(']');
        }
        Unavailable::Null => out.push_str("null"),
    }
}

const MICROS_PER_DAY: i128 = 86_400_000_000;

/// A timestamp as Debezium's `MicroTimestamp`: microseconds since 1970, `±infinity` as Debezium writes them; why
/// not for PostgreSQL's last thirty years (after 294247-01-10 04:00:54.775807), past an i64 of microseconds.
pub(super) fn micro_timestamp(t: Timestamp) -> Result<i64, String> {
    match t {
        Timestamp::INFINITY => Ok(MICRO_TIMESTAMP_INFINITY),
        Timestamp::NEG_INFINITY => Ok(MICRO_TIMESTAMP_NEG_INFINITY),
        t => t.unix_micros().ok_or_else(|| {
            format!(
                "timestamp {t} is past io.debezium.time.MicroTimestamp's range (microseconds since 1970 in an \
                 i64, up to 294247-01-10 04:00:54.775807)"
            )
        }),
    }
}

/// An interval as Debezium's `MicroDuration`, a month counted as 30 days; why not when the sum is past an i64 of
/// microseconds (beyond about ±292,000 years) or the interval is PostgreSQL 17's `±infinity`.
pub(super) fn micro_duration(i: Interval) -> Result<i64, String> {
    let micros = i128::from(i.micros)
        + i128::from(i.days) * MICROS_PER_DAY
        + i128::from(i.months) * 30 * MICROS_PER_DAY;
    match i64::try_from(micros) {
        Ok(m) if i.is_finite() => Ok(m),
        _ => Err(format!(
            "interval {i} is past io.debezium.time.MicroDuration's range (microseconds in an i64, a month \
             counted as 30 days)"
        )),
    }
}

/// Appends one column value, typed as Debezium's defaults have it. `declared_scale` is the column's scale when
/// it declares one: such decimals are plain base64 bytes (Kafka Connect's `Decimal`), others Debezium's
/// VariableScaleDecimal `{scale, value}`. A value the form cannot hold is an error saying why.
fn push_value(
    out: &mut String,
    v: &Value,
    ty: &ColumnType,
    declared_scale: Option<usize>,
    decimals: DecimalHandling,
) -> Result<(), String> {
    let quoted = |out: &mut String, text: &dyn std::fmt::Display| {
        // Writing into a String cannot fail.
        let _ = write!(out, "\"{text}\"");
    };
    match v {
        Value::Unchanged => push_unavailable(out, unavailable(ty, declared_scale, decimals)),
        Value::Null | Value::ZeroDate(_) => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => push_int(out, *i),
        Value::Float(f) => push_float(out, *f),
        Value::Decimal(d) => match (decimals, d) {
            // Decimal text is digits, sign, point or a word: nothing to escape.
            (DecimalHandling::String, d) => quoted(out, d),
            (DecimalHandling::Double, Decimal::Finite(s)) => match s.parse::<f64>() {
                Ok(f) => push_float(out, f),
                Err(_) => out.push_str("null"),
            },
            (DecimalHandling::Precise, Decimal::Finite(s)) => {
                let (bytes, scale) = unscaled_bytes(s);
                if declared_scale.is_none() {
                    out.push_str("{\"scale\":");
                    push_int(out, scale);
                    out.push_str(",\"value\":");
                }
                out.push('"');
                push_base64(out, &bytes);
                out.push('"');
                if declared_scale.is_none() {
                    out.push('}');
                }
            }
            _ => out.push_str("null"),
        },
        Value::Text(s) | Value::Json(s) => push_json_str(out, s),
        Value::Bytes(b) => {
            out.push('"');
            push_base64(out, b);
            out.push('"');
        }
        Value::Uuid(u) => quoted(out, u),
        Value::Date(d) => push_int(out, d.0),
        Value::Time(t) => push_int(out, t.0),
        Value::TimeTz(t) => quoted(out, t),
        Value::Timestamp(t) => push_int(out, micro_timestamp(*t)?),
        Value::TimestampTz(t) => {
            out.push('"');
            t.push_iso_utc(out);
            out.push('"');
        }
        Value::Interval(i) => push_int(out, micro_duration(*i)?),
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                push_value(out, item, element_type(ty), None, decimals)?;
            }
            out.push(']');
        }
    }
    Ok(())
}

/// Appends a double as serde_json writes it; NaN and the infinities, which JSON numbers cannot hold, as the
/// strings `"NaN"`, `"Infinity"` and `"-Infinity"`, as Kafka Connect's `JsonConverter` (Jackson) writes them.
fn push_float(out: &mut String, f: f64) {
    match serde_json::Number::from_f64(f) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None if f.is_nan() => out.push_str("\"NaN\""),
        None if f > 0.0 => out.push_str("\"Infinity\""),
        None => out.push_str("\"-Infinity\""),
    }
}

/// Whether the envelope's form of `value` loses some of it, so that Ferry's sink also carries it exactly
/// ([`ferry_core::debezium::ExactValues`]): an interval with months or days (`MicroDuration`), a decimal NaN or
/// ±Infinity unless decimals are text, any decimal written as a double, a MySQL zero date (null), or an array
/// holding one.
pub(super) fn approximated(value: &Value, decimals: DecimalHandling) -> bool {
    match (value, decimals) {
        (Value::Interval(i), _) => i.months != 0 || i.days != 0,
        (Value::Decimal(_), DecimalHandling::String) => false,
        (Value::Decimal(Decimal::Finite(_)), DecimalHandling::Precise) => false,
        (Value::Decimal(_) | Value::ZeroDate(_), _) => true,
        (Value::Array(items), _) => items.iter().any(|v| approximated(v, decimals)),
        _ => false,
    }
}

fn element_type(ty: &ColumnType) -> &ColumnType {
    match ty {
        ColumnType::Array(inner) => inner,
        other => other,
    }
}

/// The Kafka Connect schema of one column. `ferry`: with Ferry's parameters (value schemas only: a key's bytes
/// choose its partition, so they must not change when the source's catalog numbers a column or not).
fn field_schema(table: &TableSchema, i: usize, decimals: DecimalHandling, ferry: bool) -> Json {
    let column = &table.columns[i];
    let mut schema = column_schema(&column.ty, &column.source_type, decimals);
    if let Json::Object(m) = &mut schema {
        m.insert("optional".into(), Json::Bool(column.nullable));
        m.insert("field".into(), Json::String(column.name.clone()));
        // So that a Ferry Kafka source creates the target column exactly (Debezium's
        // `column.propagate.source.type` gives only the type's name and size).
        let params = super::avro::ferry_parameters(column);
        if ferry && !params.is_empty() {
            if let Json::Object(p) = m.entry("parameters").or_insert_with(|| json!({})) {
                p.extend(params);
            }
        }
    }
    schema
}

fn column_schema(ty: &ColumnType, source_type: &str, decimals: DecimalHandling) -> Json {
    let named = |t: &str, name: &str| json!({ "type": t, "name": name, "version": 1 });
    match ty {
        ColumnType::Bool => json!({ "type": "boolean" }),
        ColumnType::Int2 => json!({ "type": "int16" }),
        ColumnType::Int4 => json!({ "type": "int32" }),
        ColumnType::Int8 => json!({ "type": "int64" }),
        ColumnType::Float4 => json!({ "type": "float" }),
        ColumnType::Float8 => json!({ "type": "double" }),
        ColumnType::Numeric => match decimals {
            DecimalHandling::String => json!({ "type": "string" }),
            DecimalHandling::Double => json!({ "type": "double" }),
            DecimalHandling::Precise => match declared_scale(source_type) {
                Some(scale) => json!({
                    "type": "bytes",
                    "name": "org.apache.kafka.connect.data.Decimal",
                    "version": 1,
                    "parameters": { "scale": scale.to_string() }
                }),
                None => json!({
                    "type": "struct",
                    "name": "io.debezium.data.VariableScaleDecimal",
                    "version": 1,
                    "fields": [
                        { "type": "int32", "optional": false, "field": "scale" },
                        { "type": "bytes", "optional": false, "field": "value" }
                    ]
                }),
            },
        },
        ColumnType::Bytes => json!({ "type": "bytes" }),
        ColumnType::Json | ColumnType::Jsonb => named("string", "io.debezium.data.Json"),
        ColumnType::Uuid => named("string", "io.debezium.data.Uuid"),
        ColumnType::Date => named("int32", "io.debezium.time.Date"),
        ColumnType::Time => named("int64", "io.debezium.time.MicroTime"),
        ColumnType::TimeTz => named("string", "io.debezium.time.ZonedTime"),
        ColumnType::Timestamp => named("int64", "io.debezium.time.MicroTimestamp"),
        ColumnType::TimestampTz => named("string", "io.debezium.time.ZonedTimestamp"),
        ColumnType::Interval => named("int64", "io.debezium.time.MicroDuration"),
        ColumnType::Array(inner) => json!({
            "type": "array",
            "items": column_schema(inner, "", decimals)
        }),
        ColumnType::Text | ColumnType::Other => json!({ "type": "string" }),
    }
}

/// Appends `{"column": value, …}` for `columns` of `row`, in column order.
fn write_row(
    out: &mut String,
    layout: &JsonTable,
    row: &Row,
    columns: impl Iterator<Item = usize>,
    decimals: DecimalHandling,
) -> Result<(), Error> {
    out.push('{');
    for (n, i) in columns.enumerate() {
        if n > 0 {
            out.push(',');
        }
        let column = &layout.table.columns[i];
        out.push_str(&layout.names[i]);
        push_value(out, &row[i], &column.ty, layout.scales[i], decimals)
            .map_err(|why| crate::rows::unwritable("Kafka", &layout.table, row, i, &why))?;
    }
    out.push('}');
    Ok(())
}

fn struct_schema(
    table: &TableSchema,
    name: &str,
    columns: &[usize],
    optional: bool,
    decimals: DecimalHandling,
) -> Json {
    // A row's struct is optional (before / after); a key's is not.
    let ferry = optional;
    json!({
        "type": "struct",
        "name": name,
        "optional": optional,
        "fields": columns.iter().map(|&i| field_schema(table, i, decimals, ferry)).collect::<Vec<_>>()
    })
}

/// Opens `{"schema": …, "payload": ` with a schema block; nothing without one.
fn open_connect(out: &mut String, schema: Option<&str>) {
    if let Some(schema) = schema {
        out.push_str("{\"schema\":");
        out.push_str(schema);
        out.push_str(",\"payload\":");
    }
}

/// Closes what [`open_connect`] opened.
fn close_connect(out: &mut String, schema: Option<&str>) {
    if schema.is_some() {
        out.push('}');
    }
}

/// The key's schema block (JsonConverter's `schemas.enable`), once per table version.
fn key_schema(table: &TableSchema, topic: &str, decimals: DecimalHandling) -> Option<String> {
    table.has_primary_key().then(|| {
        struct_schema(
            table,
            &format!("{topic}.Key"),
            &table.primary_key,
            false,
            decimals,
        )
        .to_string()
    })
}

/// Writes the record key into `out` (cleared first): the primary key's columns. False, with nothing written, for
/// tables without one.
pub fn write_key(
    out: &mut String,
    layout: &JsonTable,
    row: &Row,
    decimals: DecimalHandling,
) -> Result<bool, Error> {
    out.clear();
    let table = &layout.table;
    if !table.has_primary_key() {
        return Ok(false);
    }
    let schema = layout.key_schema.as_deref();
    open_connect(out, schema);
    write_row(
        out,
        layout,
        row,
        table.primary_key.iter().copied(),
        decimals,
    )?;
    close_connect(out, schema);
    Ok(true)
}

/// Appends the `source` block: where the change comes from, in Debezium's field order.
fn push_source(out: &mut String, layout: &JsonTable, change: &Change<'_>) {
    out.push_str(&layout.source_head);
    push_int(out, change.commit_ms);
    out.push_str(if change.snapshot {
        ",\"snapshot\":\"true\""
    } else {
        ",\"snapshot\":\"false\""
    });
    out.push_str(&layout.source_middle);
    match layout.table.dialect {
        Dialect::Postgres => {
            out.push_str(",\"txId\":");
            match change.xid() {
                Some(xid) => push_int(out, xid),
                None => out.push_str("null"),
            }
            out.push_str(",\"lsn\":");
            match change.position().and_then(Position::as_lsn) {
                Some(lsn) => push_int(out, lsn.0),
                None => out.push_str("null"),
            }
        }
        Dialect::Mysql => match change.position() {
            Some(Position::Binlog(b)) => {
                out.push_str(",\"file\":");
                push_json_str(out, &b.pos.file);
                out.push_str(",\"pos\":");
                push_int(out, b.pos.offset);
                out.push_str(",\"gtid\":");
                match change.gtid() {
                    Some(g) => push_json_str(out, &g),
                    None => out.push_str("null"),
                }
            }
            _ => out.push_str(",\"file\":null,\"pos\":null,\"gtid\":null"),
        },
    }
    out.push('}');
}

fn source_schema(info: &SourceInfo) -> Json {
    let s = |f: &str, optional: bool| json!({ "type": "string", "optional": optional, "field": f });
    let i = |f: &str| json!({ "type": "int64", "optional": true, "field": f });
    let mut fields = vec![
        s("version", false),
        s("connector", false),
        s("name", false),
        json!({ "type": "int64", "optional": false, "field": "ts_ms" }),
        s("snapshot", true),
        s("db", false),
    ];
    if info.connector == "postgresql" {
        fields.extend([s("schema", false), s("table", false), i("txId"), i("lsn")]);
    } else {
        fields.extend([s("table", true), s("file", true), i("pos"), s("gtid", true)]);
    }
    json!({
        "type": "struct",
        "name": format!("io.debezium.connector.{}.Source", info.connector),
        "optional": false,
        "fields": fields,
        "field": "source"
    })
}

/// The record value (the change event envelope).
/// The value's schema block: Debezium's envelope for this table version, once per table version.
fn value_schema(
    table: &TableSchema,
    info: &SourceInfo,
    topic: &str,
    decimals: DecimalHandling,
) -> String {
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let row = |field: &str| {
        let mut s = struct_schema(table, &format!("{topic}.Value"), &all, true, decimals);
        if let Json::Object(m) = &mut s {
            m.insert("field".into(), json!(field));
        }
        s
    };
    json!({
        "type": "struct",
        "name": format!("{topic}.Envelope"),
        "optional": false,
        "version": 1,
        "fields": [
            row("before"),
            row("after"),
            source_schema(info),
            { "type": "string", "optional": false, "field": "op" },
            { "type": "int64", "optional": true, "field": "ts_ms" },
            { "type": "struct", "optional": true, "field": "transaction", "fields": [
                { "type": "string", "optional": false, "field": "id" },
                { "type": "int64", "optional": false, "field": "total_order" },
                { "type": "int64", "optional": false, "field": "data_collection_order" }
            ]}
        ]
    })
    .to_string()
}

/// Writes the record value (the change event envelope) into `out`, cleared first. `change.table` is
/// `layout`'s table.
pub fn write_value(
    out: &mut String,
    layout: &JsonTable,
    change: &Change<'_>,
    now_ms: i64,
    decimals: DecimalHandling,
) -> Result<(), Error> {
    out.clear();
    let schema = layout.value_schema.as_deref();
    open_connect(out, schema);
    let all = || 0..layout.table.columns.len();
    out.push_str("{\"before\":");
    match change.before {
        Some(r) => write_row(out, layout, r, all(), decimals)?,
        None => out.push_str("null"),
    }
    out.push_str(",\"after\":");
    match change.after {
        Some(r) => write_row(out, layout, r, all(), decimals)?,
        None => out.push_str("null"),
    }
    out.push_str(",\"source\":");
    push_source(out, layout, change);
    out.push_str(",\"op\":\"");
    out.push_str(change.op);
    out.push_str("\",\"ts_ms\":");
    push_int(out, now_ms);
    out.push_str(",\"transaction\":");
    match &change.transaction {
        Some(t) => {
            let _ = write!(out, "{t}");
        }
        None => out.push_str("null"),
    }
    out.push('}');
    close_connect(out, schema);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_specials_are_jacksons_strings_and_lossy_values_are_found_in_arrays_too() {
        let text = |f: f64| {
            let mut out = String::new();
            push_float(&mut out, f);
            out
        };
        assert_eq!(text(f64::NAN), "\"NaN\"");
        assert_eq!(text(f64::INFINITY), "\"Infinity\"");
        assert_eq!(text(f64::NEG_INFINITY), "\"-Infinity\"");
        assert_eq!(text(-0.5), "-0.5");
        let iv = |months, days, micros| {
            Value::Interval(Interval {
                months,
                days,
                micros,
            })
        };
        let nan = Value::Decimal(Decimal::NaN);
        let finite = Value::Decimal(Decimal::Finite("1.5".into()));
        use DecimalHandling::{Double, Precise, String as Text};
        for (v, decimals, lossy) in [
            (iv(0, 0, 5), Precise, false),
            (iv(1, 0, 0), Precise, true),
            (iv(0, -1, 0), Precise, true),
            (nan.clone(), Precise, true),
            (nan.clone(), Double, true),
            (nan.clone(), Text, false),
            (finite.clone(), Precise, false),
            (finite.clone(), Double, true),
            (finite, Text, false),
            (Value::ZeroDate("0000-00-00".into()), Precise, true),
            (Value::Array(vec![Value::Null, iv(0, 0, 1)]), Precise, false),
            (Value::Array(vec![Value::Array(vec![nan])]), Precise, true),
            (Value::Float(f64::NAN), Precise, false),
        ] {
            assert_eq!(approximated(&v, decimals), lossy, "{v:?} {decimals:?}");
        }
    }

    #[test]
    fn unchanged_values_carry_debeziums_placeholder_never_null() {
        let json = |ty: ColumnType, source_type: &str| {
            let mut out = String::new();
            let scale = declared_scale(source_type);
            push_value(
                &mut out,
                &Value::Unchanged,
                &ty,
                scale,
                DecimalHandling::Precise,
            )
            .unwrap();
            out
        };
        let arr = |t: ColumnType| ColumnType::Array(Box::new(t));
        assert_eq!(
            json(ColumnType::Text, "text"),
            "\"__debezium_unavailable_value\""
        );
        assert_eq!(
            json(ColumnType::Jsonb, "jsonb"),
            "\"__debezium_unavailable_value\""
        );
        assert_eq!(
            json(ColumnType::Bytes, "bytea"),
            "\"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==\""
        );
        assert_eq!(
            json(ColumnType::Numeric, "numeric(10,2)"),
            "\"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==\""
        );
        assert_eq!(
            json(arr(ColumnType::Text), "text[]"),
            "[\"__debezium_unavailable_value\"]"
        );
        assert!(json(arr(ColumnType::Int4), "integer[]").starts_with("[95,95,100,"));
        // A NULL the source wrote stays null.
        let mut out = String::new();
        push_value(
            &mut out,
            &Value::Null,
            &ColumnType::Text,
            None,
            DecimalHandling::Precise,
        )
        .unwrap();
        assert_eq!(out, "null");
    }

    #[test]
    fn timestamps_and_intervals_take_debeziums_forms_or_name_what_they_cannot_hold() {
        let ts = |s: &str| Timestamp::parse_iso(s).unwrap();
        // Debezium's documented example.
        assert_eq!(
            micro_timestamp(ts("2018-06-20 15:13:16.945104")),
            Ok(1_529_507_596_945_104)
        );
        assert_eq!(
            micro_timestamp(ts("4714-11-24 00:00:00 BC")),
            Ok(-210_866_803_200_000_000)
        );
        assert_eq!(
            micro_timestamp(ts("294247-01-10 04:00:54.775807")),
            Ok(i64::MAX)
        );
        assert_eq!(
            micro_timestamp(Timestamp::INFINITY),
            Ok(9_223_372_036_825_200_000)
        );
        assert_eq!(
            micro_timestamp(Timestamp::NEG_INFINITY),
            Ok(-9_223_372_036_832_400_000)
        );
        let past = micro_timestamp(ts("294276-12-31 23:59:59.999999")).unwrap_err();
        assert!(
            past.starts_with(
                "timestamp 294276-12-31 23:59:59.999999 is past io.debezium.time.MicroTimestamp"
            ),
            "{past}"
        );
        let iv = |s: &str| Interval::parse_iso(s).unwrap();
        assert_eq!(
            micro_duration(iv("P1M1DT0.000001S")),
            Ok(31 * 86_400_000_000 + 1)
        );
        assert_eq!(
            micro_duration(iv("PT-2562047788H-54.775808S")),
            Ok(i64::MIN)
        );
        assert_eq!(
            micro_duration(iv("P-178000000Y")).unwrap_err(),
            "interval P-178000000Y is past io.debezium.time.MicroDuration's range (microseconds in an i64, a \
             month counted as 30 days)"
        );
        assert!(micro_duration(Interval::INFINITY)
            .unwrap_err()
            .starts_with("interval infinity "));
    }

    #[test]
    fn a_value_kafka_cannot_hold_stops_the_record_naming_table_key_column_and_value() {
        use ferry_core::{Column, TableId};
        let table = std::sync::Arc::new(TableSchema {
            id: TableId::new("public", "events"),
            columns: vec![
                Column::new("id", ColumnType::Int4, "integer", false),
                Column::new(
                    "at",
                    ColumnType::Timestamp,
                    "timestamp without time zone",
                    true,
                ),
            ],
            primary_key: vec![0],
            identity: Vec::new(),
            version: 1,
            relation_id: None,
            lineage: Default::default(),
            dialect: Dialect::Postgres,
            keeps_absent_columns: false,
        });
        let row = vec![
            Value::Int(7),
            Value::Timestamp(Timestamp::parse_iso("294276-12-31 23:59:59.999999").unwrap()),
        ];
        let info = SourceInfo {
            connector: "postgresql",
            name: "ferry".into(),
            db: "shop".into(),
        };
        let change = Change {
            table: &table,
            op: "c",
            before: None,
            after: Some(&row),
            commit_ms: 1000,
            tx: None,
            snapshot: false,
            transaction: None,
        };
        let layout = JsonTable::new(&table, &info, "t", false, DecimalHandling::Precise);
        let mut out = String::new();
        let e =
            write_value(&mut out, &layout, &change, 2000, DecimalHandling::Precise).unwrap_err();
        assert!(!e.is_transient());
        assert!(
            e.to_string().starts_with(
                "table public.events, row (id) = (7), column at: timestamp 294276-12-31 23:59:59.999999 is past \
                 io.debezium.time.MicroTimestamp's range"
            ),
            "{e}"
        );
        assert!(e.to_string().contains("Kafka cannot hold it"), "{e}");
        let e = super::super::avro::value_datum(&info, &change, 2000, DecimalHandling::Precise)
            .unwrap_err();
        assert!(
            e.to_string().contains("column at: timestamp 294276-12-31"),
            "{e}"
        );
    }

    #[test]
    fn decimals_become_twos_complement_bytes() {
        assert_eq!(unscaled_bytes("1.25"), (vec![0x7d], 2));
        assert_eq!(unscaled_bytes("-1.25"), (vec![0x83], 2));
        assert_eq!(unscaled_bytes("128"), (vec![0x00, 0x80], 0));
        assert_eq!(unscaled_bytes("-128"), (vec![0x80], 0));
        assert_eq!(unscaled_bytes("0.000"), (vec![0x00], 3));
        assert_eq!(unscaled_bytes("65536"), (vec![0x01, 0x00, 0x00], 0));
        let base64 = |b: &[u8]| {
            let mut out = String::new();
            push_base64(&mut out, b);
            out
        };
        assert_eq!(base64(&[0x7d]), "fQ==");
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
    }

    #[test]
    fn values_are_valid_json_with_debezium_types() {
        use ferry_core::{Column, Lsn, TableId, Timestamp};
        let column = |name: &str, ty: ColumnType, source_type: &str| {
            Column::new(name, ty, source_type, true)
        };
        let table = std::sync::Arc::new(TableSchema {
            id: TableId::new("public", "odd \"table\""),
            columns: vec![
                column("id", ColumnType::Int8, "bigint"),
                column("note\n", ColumnType::Text, "text"),
                column("price", ColumnType::Numeric, "numeric(12,2)"),
                column("amount", ColumnType::Numeric, "numeric"),
                column("at", ColumnType::TimestampTz, "timestamp with time zone"),
                column("ratio", ColumnType::Float8, "double precision"),
                column(
                    "tags",
                    ColumnType::Array(Box::new(ColumnType::Text)),
                    "text[]",
                ),
            ],
            primary_key: vec![0],
            identity: Vec::new(),
            version: 1,
            relation_id: None,
            lineage: Default::default(),
            dialect: Dialect::Postgres,
            keeps_absent_columns: false,
        });
        let note = "quote \" backslash \\ newline \n tab \t bell \u{7} é 😀";
        let row = vec![
            Value::Int(-7),
            Value::Text(note.into()),
            Value::Decimal(Decimal::Finite("-1.25".into())),
            Value::Decimal(Decimal::Finite("128".into())),
            // 1970-01-01 00:00:01.5 UTC.
            Value::TimestampTz(Timestamp::from_unix_micros(1_500_000)),
            Value::Float(f64::NAN),
            Value::Array(vec![Value::Text("a\"".into()), Value::Null]),
        ];
        let info = SourceInfo {
            connector: "postgresql",
            name: "ferry".into(),
            db: "shop".into(),
        };
        let tx = TxContext {
            xid: Some(7),
            ..TxContext::at(Position::pg(Lsn(42)))
        };
        let change = Change {
            table: &table,
            op: "c",
            before: None,
            after: Some(&row),
            commit_ms: 1000,
            tx: Some(&tx),
            snapshot: false,
            transaction: None,
        };
        let layout = JsonTable::new(&table, &info, "t", false, DecimalHandling::Precise);
        let mut out = String::new();
        write_value(&mut out, &layout, &change, 2000, DecimalHandling::Precise).unwrap();
        let v: Json = serde_json::from_str(&out).expect("valid JSON");
        let after = &v["after"];
        assert_eq!(after["id"], -7);
        assert_eq!(after["note\n"], note);
        assert_eq!(after["price"], "gw==", "declared scale: bytes only");
        assert_eq!(after["amount"], json!({ "scale": 0, "value": "AIA=" }));
        assert_eq!(after["at"], "1970-01-01T00:00:01.5Z");
        assert_eq!(after["ratio"], "NaN", "Jackson's string for a NaN double");
        assert_eq!(after["tags"], json!(["a\"", null]));
        assert_eq!(v["before"], Json::Null);
        assert_eq!(v["op"], "c");
        assert_eq!(v["ts_ms"], 2000);
        let source = &v["source"];
        assert_eq!(source["table"], "odd \"table\"");
        assert_eq!(source["lsn"], 42);
        assert_eq!(source["txId"], 7);
        assert_eq!(source["ts_ms"], 1000);
        assert_eq!(source["snapshot"], "false");

        let with_schemas = JsonTable::new(&table, &info, "t", true, DecimalHandling::Precise);
        write_value(
            &mut out,
            &with_schemas,
            &change,
            2000,
            DecimalHandling::Precise,
        )
        .unwrap();
        let wrapped: Json = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(wrapped["payload"], v);
        assert_eq!(wrapped["schema"]["name"], "t.Envelope");

        let mut key = String::new();
        assert!(write_key(&mut key, &layout, &row, DecimalHandling::Precise).unwrap());
        assert_eq!(
            serde_json::from_str::<Json>(&key).unwrap(),
            json!({ "id": -7 })
        );
    }
}
