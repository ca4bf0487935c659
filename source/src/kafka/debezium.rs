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
    decimal_text, MICRO_TIMESTAMP_INFINITY, MICRO_TIMESTAMP_NEG_INFINITY, UNAVAILABLE,
};
use ferry_core::{
    Column, ColumnType, Date, Decimal, Dialect, Interval, RowOp, SchemaRef, TableId, TableSchema,
    Time, TimeTz, Timestamp, Uuid, Value,
};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
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

#[derive(Debug, Deserialize)]
struct Record {
    schema: Option<Json>,
    payload: Option<Envelope>,
    #[serde(flatten)]
    bare: Envelope,
}

/// A key: `{"schema": …, "payload": {…}}` or the plain object.
#[derive(Debug, Deserialize)]
struct Key {
    schema: Option<Json>,
    payload: Option<Ordered>,
    #[serde(flatten)]
    bare: HashMap<String, Json>,
}

/// Decodes records, keeping each table's last schema so that unchanged tables share one `Arc`.
#[derive(Debug, Default)]
pub struct Decoder {
    tables: HashMap<TableId, SchemaRef>,
}

/// One column as a record describes it.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
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
    /// Decodes one record: its key and value bytes as Kafka holds them.
    pub fn decode(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Decoded, DecodeError> {
        let Some(value) = value else {
            return Ok(Decoded::Tombstone);
        };
        let record: Record = serde_json::from_slice(value)
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
        let key_fields = key_columns(key)?;
        let fields = match &schema {
            Some(schema) => row_fields(schema, dialect)?,
            None => {
                let image = envelope.after.as_ref().or(envelope.before.as_ref());
                let image =
                    image.ok_or_else(|| bad(format!("a {op:?} event without before or after")))?;
                self.inferred_fields(&table, image, dialect)
            }
        };
        let schema = self.schema_for(table, dialect, &fields, &key_fields);
        let row = |image: &Ordered| image_row(image, &fields, schema.as_ref());
        let op = match (op, &envelope.before, &envelope.after) {
            ("c", _, Some(after)) => RowOp::Insert { after: row(after)? },
            ("r", _, Some(after)) => RowOp::Read { after: row(after)? },
            ("u", before, Some(after)) => RowOp::Update {
                before: before.as_ref().map(row).transpose()?,
                after: row(after)?,
            },
            ("d", Some(before), _) => RowOp::Delete { before: row(before)? },
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
        let known = self.tables.get(table);
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

    /// The table's schema for these fields: the one in use when nothing changed, else the next version.
    fn schema_for(
        &mut self,
        id: TableId,
        dialect: Dialect,
        fields: &[Field],
        key: &[String],
    ) -> SchemaRef {
        let columns: Vec<Column> = fields
            .iter()
            .map(|f| {
                let spelled = f
                    .source_type
                    .clone()
                    .unwrap_or_else(|| default_spelling(&f.ty, dialect));
                Column::new(
                    &f.name,
                    f.ty.clone(),
                    spelled,
                    f.optional && !key.contains(&f.name),
                )
            })
            .collect();
        let primary_key: Vec<usize> = key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        if let Some(known) = self.tables.get(&id) {
            if known.columns == columns && known.primary_key == primary_key {
                return known.clone();
            }
        }
        let version = self.tables.get(&id).map_or(1, |t| t.version + 1);
        let schema = Arc::new(TableSchema {
            columns,
            primary_key,
            version,
            ..TableSchema::named(id.clone(), dialect)
        });
        self.tables.insert(id, schema.clone());
        schema
    }
}

fn plain_field(name: &str, ty: ColumnType, source_type: Option<String>) -> Field {
    Field {
        name: name.to_owned(),
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

/// The key's column names, in key order; none for a record without a key.
fn key_columns(key: Option<&[u8]>) -> Result<Vec<String>, DecodeError> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Ok(Vec::new());
    };
    let key: Key = serde_json::from_slice(key)
        .map_err(|e| bad(format!("the key is not a JSON object: {e}")))?;
    if let Some(fields) = key
        .schema
        .as_ref()
        .and_then(|s| s.get("fields"))
        .and_then(Json::as_array)
    {
        return Ok(fields
            .iter()
            .filter_map(|f| f.get("field").and_then(Json::as_str).map(str::to_owned))
            .collect());
    }
    match key.payload {
        Some(payload) => Ok(payload.0.into_iter().map(|(k, _)| k).collect()),
        None => {
            // A plain key object: its field order is lost to the map, so it follows the row's column order.
            let mut names: Vec<String> = key.bare.into_keys().collect();
            names.sort();
            Ok(names)
        }
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

/// One image (`before` / `after`) as a row in `table`'s column order.
fn image_row(
    image: &Ordered,
    fields: &[Field],
    table: &TableSchema,
) -> Result<Vec<Value>, DecodeError> {
    let mut row = vec![Value::Null; table.columns.len()];
    for (i, f) in fields.iter().enumerate() {
        let Some((_, v)) = image.0.iter().find(|(k, _)| *k == f.name) else {
            // A column the image leaves out: PostgreSQL's old image carries only the identity.
            continue;
        };
        row[i] = value(v, f).map_err(|why| bad(format!("{}.{}: {why}", table.id, f.name)))?;
    }
    Ok(row)
}

/// One value as the field's type and logical name have it written.
fn value(v: &Json, f: &Field) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let unavailable_bytes = || base64::engine::general_purpose::STANDARD.encode(UNAVAILABLE);
    if v.as_str() == Some(UNAVAILABLE)
        || (f.ty == ColumnType::Bytes && v.as_str() == Some(&unavailable_bytes()))
    {
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
                    .map(|i| value(i, &element))
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

fn decimal(bytes: &[u8], scale: usize) -> Result<Value, String> {
    let text = decimal_text(bytes, scale).ok_or("an empty decimal")?;
    Ok(Value::Decimal(Decimal::Finite(text)))
}

/// ISO 8601 as Debezium writes zoned times (`2024-02-29T10:11:12.5Z`, `…+05:30`) in PostgreSQL's spelling
/// (`2024-02-29 10:11:12.5+00`), which Ferry's parsers read.
fn iso_to_pg(s: &str) -> String {
    let s = s.replacen('T', " ", 1);
    match s.strip_suffix('Z') {
        Some(body) => format!("{body}+00"),
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
        let decoded = Decoder::default().decode(Some(&key), Some(&value)).unwrap();
        let checked = check(
            "postgres-avro",
            decoded,
            &expected["records"]["key.bin+value.bin"],
            true,
        );
        assert!(checked > 20, "only {checked} values checked");
    }
}
