//! Avro records for a Confluent-compatible schema registry: Debezium's envelope as Avro schemas (Kafka Connect's
//! `connect.name` annotations), values encoded with apache-avro, framed in the registry's wire format (magic byte
//! 0, the schema id big-endian, the Avro datum).
//!
//! Every non-key column is a `["null", T]` union with default null, so adding or dropping a column stays
//! backward compatible for consumers (TopicNameStrategy subjects `{topic}-key` / `{topic}-value`).

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use ferry_config::DecimalHandling;
use ferry_core::{ColumnType, Decimal, Dialect, Error, Position, Row, TableSchema, Value};
use serde_json::{json, Value as Json};

use super::envelope::{
    declared_precision_scale, micro_duration, micro_timestamp, unavailable, unscaled_bytes, Change,
    SourceInfo, Unavailable, UNAVAILABLE,
};

/// An Avro name: letters, digits and `_`, not starting with a digit.
fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A namespace from a topic: each dotted part an Avro name.
fn namespace(topic: &str) -> String {
    topic
        .split('.')
        .map(avro_name)
        .collect::<Vec<_>>()
        .join(".")
}

fn column_type(ty: &ColumnType, source_type: &str, decimals: DecimalHandling) -> Json {
    let named = |t: &str, name: &str| json!({ "type": t, "connect.name": name });
    match ty {
        ColumnType::Bool => json!("boolean"),
        ColumnType::Int2 => json!({ "type": "int", "connect.type": "int16" }),
        ColumnType::Int4 => json!("int"),
        ColumnType::Int8 => json!("long"),
        ColumnType::Float4 => json!("float"),
        ColumnType::Float8 => json!("double"),
        ColumnType::Numeric => match (decimals, declared_precision_scale(source_type)) {
            (DecimalHandling::Precise, Some((precision, scale))) => json!({
                "type": "bytes",
                "logicalType": "decimal",
                "precision": precision,
                "scale": scale,
                "connect.name": "org.apache.kafka.connect.data.Decimal",
                "connect.parameters": { "scale": scale.to_string() }
            }),
            (DecimalHandling::Double, _) => json!("double"),
            // Variable scale: exact digits as text.
            _ => json!("string"),
        },
        ColumnType::Bytes => json!("bytes"),
        ColumnType::Json | ColumnType::Jsonb => named("string", "io.debezium.data.Json"),
        ColumnType::Uuid => named("string", "io.debezium.data.Uuid"),
        ColumnType::Date => named("int", "io.debezium.time.Date"),
        ColumnType::Time => named("long", "io.debezium.time.MicroTime"),
        ColumnType::TimeTz => named("string", "io.debezium.time.ZonedTime"),
        ColumnType::Timestamp => named("long", "io.debezium.time.MicroTimestamp"),
        ColumnType::TimestampTz => named("string", "io.debezium.time.ZonedTimestamp"),
        ColumnType::Interval => named("long", "io.debezium.time.MicroDuration"),
        ColumnType::Array(inner) => json!({
            "type": "array",
            "items": ["null", column_type(inner, "", decimals)]
        }),
        ColumnType::Text | ColumnType::Other => json!("string"),
    }
}

/// What Ferry adds to a column's Connect parameters so that a Ferry Kafka source recreates it exactly: its type
/// as the source spells it (`__ferry.source.type`), the source's stable column number, which survives a rename
/// (`__ferry.source.id`), and a stored generated column's expression (`__ferry.generated`). Consumers ignore
/// parameters they do not know.
pub(super) fn ferry_parameters(column: &ferry_core::Column) -> Vec<(String, Json)> {
    let mut params = Vec::new();
    if !column.source_type.is_empty() {
        params.push(("__ferry.source.type".into(), json!(column.source_type)));
    }
    if let Some(id) = column.source_id {
        params.push(("__ferry.source.id".into(), json!(id.to_string())));
    }
    if let Some(expression) = &column.generated {
        params.push(("__ferry.generated".into(), json!(expression)));
    }
    params
}

/// [`ferry_parameters`] in the Avro type's `connect.parameters`.
fn with_ferry_parameters(ty: Json, column: &ferry_core::Column) -> Json {
    let params = ferry_parameters(column);
    if params.is_empty() {
        return ty;
    }
    let mut ty = match ty {
        Json::String(name) => json!({ "type": name }),
        other => other,
    };
    if let Json::Object(m) = &mut ty {
        if let Json::Object(p) = m.entry("connect.parameters").or_insert_with(|| json!({})) {
            p.extend(params);
        }
    }
    ty
}

/// The fields of `columns`; `ferry`: with Ferry's parameters (a value's; not a key's, whose bytes choose its
/// partition and must not change when the source's catalog numbers a column or not).
fn row_fields(
    table: &TableSchema,
    columns: &[usize],
    decimals: DecimalHandling,
    ferry: bool,
) -> Vec<Json> {
    columns
        .iter()
        .map(|&i| {
            let c = &table.columns[i];
            let ty = column_type(&c.ty, &c.source_type, decimals);
            let ty = if ferry {
                with_ferry_parameters(ty, c)
            } else {
                ty
            };
            if table.primary_key.contains(&i) {
                json!({ "name": avro_name(&c.name), "type": ty })
            } else {
                json!({ "name": avro_name(&c.name), "type": ["null", ty], "default": null })
            }
        })
        .collect()
}

/// The key schema (primary-key columns), `None` for keyless tables.
pub fn key_schema(table: &TableSchema, topic: &str, decimals: DecimalHandling) -> Option<Json> {
    table.has_primary_key().then(|| {
        json!({
            "type": "record",
            "name": "Key",
            "namespace": namespace(topic),
            "fields": row_fields(table, &table.primary_key, decimals, false)
        })
    })
}

/// The value schema: Debezium's envelope around this table's row record.
pub fn value_schema(
    table: &TableSchema,
    info: &SourceInfo,
    topic: &str,
    decimals: DecimalHandling,
) -> Json {
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let opt = |name: &str, t: &str| json!({ "name": name, "type": ["null", t], "default": null });
    let mut source = vec![
        json!({ "name": "version", "type": "string" }),
        json!({ "name": "connector", "type": "string" }),
        json!({ "name": "name", "type": "string" }),
        json!({ "name": "ts_ms", "type": "long" }),
        opt("snapshot", "string"),
        json!({ "name": "db", "type": "string" }),
    ];
    if info.connector == "postgresql" {
        source.extend([
            opt("schema", "string"),
            opt("table", "string"),
            opt("txId", "long"),
            opt("lsn", "long"),
        ]);
    } else {
        source.extend([
            opt("table", "string"),
            opt("file", "string"),
            opt("pos", "long"),
            opt("gtid", "string"),
        ]);
    }
    json!({
        "type": "record",
        "name": "Envelope",
        "namespace": namespace(topic),
        "fields": [
            { "name": "before", "type": ["null", {
                "type": "record", "name": "Value", "fields": row_fields(table, &all, decimals, true)
            }], "default": null },
            { "name": "after", "type": ["null", "Value"], "default": null },
            { "name": "source", "type": {
                "type": "record", "name": "Source",
                "namespace": format!("io.debezium.connector.{}", info.connector),
                "fields": source
            }},
            { "name": "op", "type": "string" },
            { "name": "ts_ms", "type": ["null", "long"], "default": null }
        ],
        "connect.name": format!("{}.Envelope", namespace(topic))
    })
}

/// One value in Debezium's form, or why the form cannot hold it.
fn value(
    v: &Value,
    ty: &ColumnType,
    source_type: &str,
    decimals: DecimalHandling,
) -> Result<Avro, String> {
    Ok(match (v, ty) {
        (Value::Unchanged, _) => {
            let bytes = || Avro::Bytes(UNAVAILABLE.as_bytes().to_vec());
            let text = || Avro::String(UNAVAILABLE.to_owned());
            let one = |v: Avro| Avro::Array(vec![Avro::Union(1, Box::new(v))]);
            let scale = declared_precision_scale(source_type).map(|(_, s)| s);
            match unavailable(ty, scale, decimals) {
                Unavailable::Text => text(),
                Unavailable::Bytes if *ty == ColumnType::Numeric => {
                    Avro::Decimal(apache_avro::Decimal::from(UNAVAILABLE.as_bytes().to_vec()))
                }
                Unavailable::Bytes => bytes(),
                Unavailable::Ints => Avro::Array(
                    UNAVAILABLE
                        .bytes()
                        .map(|b| {
                            let n = match ty {
                                ColumnType::Array(inner) if **inner == ColumnType::Int8 => {
                                    Avro::Long(i64::from(b))
                                }
                                _ => Avro::Int(i32::from(b)),
                            };
                            Avro::Union(1, Box::new(n))
                        })
                        .collect(),
                ),
                Unavailable::TextArray => one(text()),
                Unavailable::BytesArray => one(bytes()),
                Unavailable::Null => Avro::Null,
            }
        }
        (Value::Null | Value::ZeroDate(_), _) => Avro::Null,
        (Value::Bool(b), _) => Avro::Boolean(*b),
        (Value::Int(i), ColumnType::Int2 | ColumnType::Int4) => Avro::Int(*i as i32),
        (Value::Int(i), _) => Avro::Long(*i),
        (Value::Float(f), ColumnType::Float4) => Avro::Float(*f as f32),
        (Value::Float(f), _) => Avro::Double(*f),
        (Value::Decimal(Decimal::Finite(s)), _) => {
            match (decimals, declared_precision_scale(source_type)) {
                (DecimalHandling::Precise, Some((_, scale))) => {
                    // The value's digits at the schema's scale.
                    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
                    let frac: String = frac
                        .chars()
                        .chain(std::iter::repeat('0'))
                        .take(scale)
                        .collect();
                    let (bytes, _) = unscaled_bytes(&format!("{whole}.{frac}"));
                    Avro::Decimal(apache_avro::Decimal::from(bytes))
                }
                (DecimalHandling::Double, _) => Avro::Double(s.parse().unwrap_or(f64::NAN)),
                _ => Avro::String(s.clone()),
            }
        }
        // NaN and the infinities: Kafka Connect's `Decimal` has no form for them, so a precise decimal is null
        // (as in JSON; the exact value travels in Ferry's `ferry.exact` header).
        (Value::Decimal(d), _) => match decimals {
            DecimalHandling::String => Avro::String(d.to_string()),
            DecimalHandling::Double => Avro::Double(match d {
                Decimal::Infinity => f64::INFINITY,
                Decimal::NegInfinity => f64::NEG_INFINITY,
                _ => f64::NAN,
            }),
            DecimalHandling::Precise => Avro::Null,
        },
        (Value::Text(s) | Value::Json(s), _) => Avro::String(s.clone()),
        (Value::Bytes(b), _) => Avro::Bytes(b.clone()),
        (Value::Uuid(u), _) => Avro::String(u.to_string()),
        (Value::Date(d), _) => Avro::Int(d.0),
        (Value::Time(t), _) => Avro::Long(t.0),
        (Value::TimeTz(t), _) => Avro::String(t.to_string()),
        (Value::Timestamp(t), _) => Avro::Long(micro_timestamp(*t)?),
        (Value::TimestampTz(t), _) => {
            let mut text = String::with_capacity(32);
            t.push_iso_utc(&mut text);
            Avro::String(text)
        }
        (Value::Interval(i), _) => Avro::Long(micro_duration(*i)?),
        (Value::Array(items), ty) => {
            let inner = match ty {
                ColumnType::Array(inner) => inner.as_ref(),
                other => other,
            };
            Avro::Array(
                items
                    .iter()
                    .map(|item| {
                        Ok(match value(item, inner, "", decimals)? {
                            Avro::Null => Avro::Union(0, Box::new(Avro::Null)),
                            v => Avro::Union(1, Box::new(v)),
                        })
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
    })
}

/// The record of `columns` of `row`; a value Debezium's form cannot hold is an error naming it.
fn row_record(
    table: &TableSchema,
    row: &Row,
    columns: &[usize],
    decimals: DecimalHandling,
) -> Result<Avro, Error> {
    let fields = columns
        .iter()
        .map(|&i| {
            let c = &table.columns[i];
            let v = value(&row[i], &c.ty, &c.source_type, decimals)
                .map_err(|why| crate::rows::unwritable("Kafka", table, row, i, &why))?;
            let v = if table.primary_key.contains(&i) {
                v
            } else if v == Avro::Null {
                Avro::Union(0, Box::new(Avro::Null))
            } else {
                Avro::Union(1, Box::new(v))
            };
            Ok((avro_name(&c.name), v))
        })
        .collect::<Result<_, Error>>()?;
    Ok(Avro::Record(fields))
}

fn optional(v: Option<Avro>) -> Avro {
    match v {
        Some(v) => Avro::Union(1, Box::new(v)),
        None => Avro::Union(0, Box::new(Avro::Null)),
    }
}

pub fn key_datum(table: &TableSchema, row: &Row, decimals: DecimalHandling) -> Result<Avro, Error> {
    row_record(table, row, &table.primary_key, decimals)
}

pub fn value_datum(
    info: &SourceInfo,
    change: &Change<'_>,
    now_ms: i64,
    decimals: DecimalHandling,
) -> Result<Avro, Error> {
    let table = change.table;
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let s = |v: &str| Avro::String(v.to_owned());
    let opt_s = |v: Option<String>| optional(v.map(Avro::String));
    let opt_l = |v: Option<i64>| optional(v.map(Avro::Long));
    let mut source = vec![
        (
            "version".to_owned(),
            s(concat!("ferry-", env!("CARGO_PKG_VERSION"))),
        ),
        ("connector".to_owned(), s(info.connector)),
        ("name".to_owned(), s(&info.name)),
        ("ts_ms".to_owned(), Avro::Long(change.commit_ms)),
        (
            "snapshot".to_owned(),
            opt_s(Some(if change.snapshot { "true" } else { "false" }.into())),
        ),
        ("db".to_owned(), s(&info.db)),
    ];
    match table.dialect {
        Dialect::Postgres => {
            source.push(("schema".into(), opt_s(Some(table.id.schema.clone()))));
            source.push(("table".into(), opt_s(Some(table.id.name.clone()))));
            source.push(("txId".into(), opt_l(change.xid().map(i64::from))));
            source.push((
                "lsn".into(),
                opt_l(
                    change
                        .position()
                        .and_then(Position::as_lsn)
                        .map(|l| l.0 as i64),
                ),
            ));
        }
        Dialect::Mysql => {
            let (file, pos) = match change.position() {
                Some(Position::Binlog(b)) => (Some(b.pos.file.clone()), Some(b.pos.offset as i64)),
                _ => (None, None),
            };
            let gtid = change.gtid();
            source.push(("table".into(), opt_s(Some(table.id.name.clone()))));
            source.push(("file".into(), opt_s(file)));
            source.push(("pos".into(), opt_l(pos)));
            source.push(("gtid".into(), opt_s(gtid)));
        }
    }
    let row = |r: Option<&Row>| r.map(|r| row_record(table, r, &all, decimals)).transpose();
    Ok(Avro::Record(vec![
        ("before".into(), optional(row(change.before)?)),
        ("after".into(), optional(row(change.after)?)),
        ("source".into(), Avro::Record(source)),
        ("op".into(), s(change.op)),
        ("ts_ms".into(), opt_l(Some(now_ms))),
    ]))
}

/// Encodes `datum` in the registry's wire format.
pub fn frame(schema_id: i32, schema: &Schema, datum: Avro) -> Result<Vec<u8>, String> {
    let body = apache_avro::to_avro_datum(schema, datum).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_avro_names() {
        assert_eq!(avro_name("order-id"), "order_id");
        assert_eq!(avro_name("1st"), "_1st");
        assert_eq!(namespace("shop.public.my-table"), "shop.public.my_table");
    }
}
