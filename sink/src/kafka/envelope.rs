//! Debezium's JSON record format: key `{id: …}` and value `{before, after, source, op, ts_ms}`, each optionally
//! wrapped as `{schema, payload}` the way Kafka Connect's JsonConverter writes them with `schemas.enable`.
//!
//! Value types follow Debezium's defaults: dates as days (`io.debezium.time.Date`), times and timestamps as
//! microseconds (`MicroTime`, `MicroTimestamp`), zoned timestamps as ISO-8601 strings (`ZonedTimestamp`), decimals
//! per `decimal.handling.mode`, bytes as base64, JSON as a string (`io.debezium.data.Json`).

use ferry_config::DecimalHandling;
use ferry_core::{ColumnType, Decimal, Dialect, Position, Row, TableSchema, Value};
use serde_json::{json, Map, Value as Json};

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
    /// Where the transaction is in the source.
    pub position: Option<&'a Position>,
    pub snapshot: bool,
    /// With transaction metadata on: `{id, total_order, data_collection_order}`.
    pub transaction: Option<Json>,
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
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
    out
}

/// The unscaled value of a decimal as big-endian two's-complement bytes, and its scale (Kafka Connect's
/// `Decimal` logical type).
pub(super) fn unscaled_bytes(text: &str) -> (Vec<u8>, usize) {
    let negative = text.starts_with('-');
    let body = text.trim_start_matches(['-', '+']);
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    // Magnitude as little-endian base-256 digits, built by multiply-and-add over the decimal digits.
    let mut mag: Vec<u8> = vec![0];
    for d in whole.bytes().chain(frac.bytes()) {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    // Room for the sign bit.
    if mag.last().is_some_and(|b| b & 0x80 != 0) {
        mag.push(0);
    }
    if negative {
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    // Shortest form: drop redundant sign bytes.
    while mag.len() > 1 {
        let top = mag[mag.len() - 1];
        let next = mag[mag.len() - 2];
        if (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0) {
            mag.pop();
        } else {
            break;
        }
    }
    mag.reverse();
    (mag, frac.len())
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

fn field_value(v: &Value, ty: &ColumnType, decimals: DecimalHandling) -> Json {
    match v {
        Value::Null | Value::Unchanged | Value::ZeroDate(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Decimal(d) => match (decimals, d) {
            (DecimalHandling::String, d) => Json::String(d.to_string()),
            (DecimalHandling::Double, Decimal::Finite(s)) => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Json::Null, Json::Number),
            // Debezium's VariableScaleDecimal struct; fix_decimal keeps only the bytes when the column declares
            // its scale.
            (DecimalHandling::Precise, Decimal::Finite(s)) => {
                let (bytes, scale) = unscaled_bytes(s);
                json!({ "scale": scale, "value": base64(&bytes) })
            }
            _ => Json::Null,
        },
        Value::Text(s) | Value::Json(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64(b)),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Date(d) => json!(d.0),
        Value::Time(t) => json!(t.0),
        Value::TimeTz(t) => Json::String(t.to_string()),
        Value::Timestamp(t) => json!(t.0),
        Value::TimestampTz(t) => {
            let text = t.display_utc().to_string();
            // `2024-01-02 03:04:05.5+00` → ISO-8601 `2024-01-02T03:04:05.5Z`.
            Json::String(
                text.replacen(' ', "T", 1)
                    .trim_end_matches("+00")
                    .to_owned()
                    + "Z",
            )
        }
        Value::Interval(i) => {
            json!(
                i.micros
                    + i64::from(i.days) * 86_400_000_000
                    + i64::from(i.months) * 30 * 86_400_000_000
            )
        }
        Value::Array(items) => Json::Array(
            items
                .iter()
                .map(|item| field_value(item, element_type(ty), decimals))
                .collect(),
        ),
    }
}

fn element_type(ty: &ColumnType) -> &ColumnType {
    match ty {
        ColumnType::Array(inner) => inner,
        other => other,
    }
}

/// The Kafka Connect schema of one column.
fn field_schema(table: &TableSchema, i: usize, decimals: DecimalHandling) -> Json {
    let column = &table.columns[i];
    let mut schema = column_schema(&column.ty, &column.source_type, decimals);
    if let Json::Object(m) = &mut schema {
        m.insert("optional".into(), Json::Bool(column.nullable));
        m.insert("field".into(), Json::String(column.name.clone()));
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

/// A decimal column with a declared scale is `{scale, value}` only without one; with one, plain base64 bytes.
fn fix_decimal(table: &TableSchema, i: usize, value: Json, decimals: DecimalHandling) -> Json {
    match (&table.columns[i].ty, decimals, value) {
        (ColumnType::Numeric, DecimalHandling::Precise, Json::Object(mut m))
            if declared_scale(&table.columns[i].source_type).is_some() =>
        {
            m.remove("value").unwrap_or(Json::Null)
        }
        (_, _, v) => v,
    }
}

/// Writes `{"column": value, …}` for `columns` of `row`, in column order.
fn write_row(
    out: &mut String,
    table: &TableSchema,
    row: &Row,
    columns: &[usize],
    decimals: DecimalHandling,
) {
    out.push('{');
    for (n, &i) in columns.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let column = &table.columns[i];
        out.push_str(&Json::String(column.name.clone()).to_string());
        out.push(':');
        let v = fix_decimal(
            table,
            i,
            field_value(&row[i], &column.ty, decimals),
            decimals,
        );
        out.push_str(&v.to_string());
    }
    out.push('}');
}

fn struct_schema(
    table: &TableSchema,
    name: &str,
    columns: &[usize],
    optional: bool,
    decimals: DecimalHandling,
) -> Json {
    json!({
        "type": "struct",
        "name": name,
        "optional": optional,
        "fields": columns.iter().map(|&i| field_schema(table, i, decimals)).collect::<Vec<_>>()
    })
}

/// `{"schema": …, "payload": …}` with a schema block, the bare payload without.
fn connect(schema: Option<&str>, payload: &str) -> String {
    match schema {
        Some(schema) => format!("{{\"schema\":{schema},\"payload\":{payload}}}"),
        None => payload.to_owned(),
    }
}

/// The key's schema block (JsonConverter's `schemas.enable`), once per table version.
pub fn key_schema(table: &TableSchema, topic: &str, decimals: DecimalHandling) -> Option<String> {
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

/// The record key: the primary key's columns; `None` for tables without one.
pub fn key(
    table: &TableSchema,
    row: &Row,
    schema: Option<&str>,
    decimals: DecimalHandling,
) -> Option<String> {
    if !table.has_primary_key() {
        return None;
    }
    let mut payload = String::new();
    write_row(&mut payload, table, row, &table.primary_key, decimals);
    Some(connect(schema, &payload))
}

fn source_block(info: &SourceInfo, change: &Change<'_>) -> Json {
    let mut m = Map::new();
    m.insert(
        "version".into(),
        json!(concat!("ferry-", env!("CARGO_PKG_VERSION"))),
    );
    m.insert("connector".into(), json!(info.connector));
    m.insert("name".into(), json!(info.name));
    m.insert("ts_ms".into(), json!(change.commit_ms));
    m.insert(
        "snapshot".into(),
        json!(if change.snapshot { "true" } else { "false" }),
    );
    m.insert("db".into(), json!(info.db));
    match change.table.dialect {
        Dialect::Postgres => {
            m.insert("schema".into(), json!(change.table.id.schema));
            m.insert("table".into(), json!(change.table.id.name));
            m.insert("txId".into(), Json::Null);
            m.insert(
                "lsn".into(),
                change
                    .position
                    .and_then(Position::as_lsn)
                    .map_or(Json::Null, |l| json!(l.0)),
            );
        }
        Dialect::Mysql => {
            m.insert("table".into(), json!(change.table.id.name));
            let (file, pos, gtid) = match change.position {
                Some(Position::Binlog(b)) => (
                    json!(b.pos.file),
                    json!(b.pos.offset),
                    b.gtid.as_ref().map_or(Json::Null, |g| json!(g.to_string())),
                ),
                _ => (Json::Null, Json::Null, Json::Null),
            };
            m.insert("file".into(), file);
            m.insert("pos".into(), pos);
            m.insert("gtid".into(), gtid);
        }
    }
    Json::Object(m)
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
pub fn value_schema(
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

/// The record value (the change event envelope), written straight into text.
pub fn value(
    info: &SourceInfo,
    change: &Change<'_>,
    now_ms: i64,
    schema: Option<&str>,
    decimals: DecimalHandling,
) -> String {
    let table = change.table;
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let mut p = String::with_capacity(256);
    let image = |p: &mut String, row: Option<&Row>| match row {
        Some(r) => write_row(p, table, r, &all, decimals),
        None => p.push_str("null"),
    };
    p.push_str("{\"before\":");
    image(&mut p, change.before);
    p.push_str(",\"after\":");
    image(&mut p, change.after);
    p.push_str(",\"source\":");
    p.push_str(&source_block(info, change).to_string());
    p.push_str(",\"op\":\"");
    p.push_str(change.op);
    p.push_str("\",\"ts_ms\":");
    p.push_str(&now_ms.to_string());
    p.push_str(",\"transaction\":");
    p.push_str(
        &change
            .transaction
            .as_ref()
            .map_or("null".into(), Json::to_string),
    );
    p.push('}');
    connect(schema, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_become_twos_complement_bytes() {
        assert_eq!(unscaled_bytes("1.25"), (vec![0x7d], 2));
        assert_eq!(unscaled_bytes("-1.25"), (vec![0x83], 2));
        assert_eq!(unscaled_bytes("128"), (vec![0x00, 0x80], 0));
        assert_eq!(unscaled_bytes("-128"), (vec![0x80], 0));
        assert_eq!(unscaled_bytes("0.000"), (vec![0x00], 3));
        assert_eq!(unscaled_bytes("65536"), (vec![0x01, 0x00, 0x00], 0));
        assert_eq!(base64(&[0x7d]), "fQ==");
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
    }
}
