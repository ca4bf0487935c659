//! Avro records in the Confluent wire format (magic byte 0, the writer schema's registry id big-endian, the Avro
//! datum), as Confluent's `AvroConverter` writes Debezium's events and Ferry's Kafka sink does with
//! `format = "avro"`.
//!
//! Each record is turned into the JSON Kafka Connect's `JsonConverter` would have written for it — the schema block
//! (from the Avro schema's types and its `connect.name`, `connect.type` and `connect.parameters` annotations) and
//! the payload — which [`super::debezium`] decodes: one decoder of Debezium's types for both encodings.

use std::collections::HashMap;

use apache_avro::types::Value as Avro;
use base64::Engine;
use ferry_core::Error;
use ferry_registry::Registry;
use serde_json::{json, Map, Value as Json};

use super::debezium::DecodeError;

/// Reads records framed with registry ids, fetching each writer schema once.
pub struct AvroRecords {
    registry: Registry,
    /// Per schema id: the parsed writer schema and its Connect form.
    schemas: HashMap<i32, (apache_avro::Schema, Json)>,
}

impl AvroRecords {
    pub fn new(registry: Registry) -> AvroRecords {
        AvroRecords {
            registry,
            schemas: HashMap::new(),
        }
    }

    /// [`AvroRecords::connect_json`] of a key or value that may be absent (no key; a tombstone's value).
    pub async fn connect_json_opt(
        &mut self,
        framed: Option<Vec<u8>>,
    ) -> Result<Result<Option<Vec<u8>>, DecodeError>, Error> {
        match framed.filter(|b| !b.is_empty()) {
            Some(b) => Ok(self.connect_json(&b).await?.map(Some)),
            None => Ok(Ok(None)),
        }
    }

    /// The record's JsonConverter form (`{"schema": …, "payload": …}`), as bytes. A registry that cannot be
    /// reached is an [`Error`]; a record that is not an Avro datum of its schema is a [`DecodeError`].
    pub async fn connect_json(
        &mut self,
        framed: &[u8],
    ) -> Result<Result<Vec<u8>, DecodeError>, Error> {
        let (id, datum) = match framed {
            [0, a, b, c, d, datum @ ..] => (i32::from_be_bytes([*a, *b, *c, *d]), datum),
            _ => {
                return Ok(Err(DecodeError(
                    "not in the Confluent wire format (magic byte 0 and a schema id); is the topic JSON? set \
                     format = \"json\""
                        .into(),
                )))
            }
        };
        if !self.schemas.contains_key(&id) {
            match parse(self.registry.schema(id).await?) {
                Ok(parsed) => self.schemas.insert(id, parsed),
                Err(e) => return Ok(Err(DecodeError(format!("schema {id}: {}", e.0)))),
            };
        }
        let (schema, connect) = &self.schemas[&id];
        Ok(json_of(schema, connect, datum)
            .map_err(|e| DecodeError(format!("schema {id}: {}", e.0))))
    }
}

/// An Avro schema's text as the parsed writer schema and its Connect form.
pub(super) fn parse(text: &str) -> Result<(apache_avro::Schema, Json), DecodeError> {
    let parsed = apache_avro::Schema::parse_str(text)
        .map_err(|e| DecodeError(format!("not an Avro schema: {e}")))?;
    let raw: Json = serde_json::from_str(text).unwrap_or(Json::Null);
    Ok((parsed, to_connect(&raw, None, &mut HashMap::new()).0))
}

/// One datum (the bytes after the wire format's header) in JsonConverter's form, as bytes.
pub(super) fn json_of(
    schema: &apache_avro::Schema,
    connect: &Json,
    datum: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    let value = apache_avro::from_avro_datum(schema, &mut &datum[..], None)
        .map_err(|e| DecodeError(format!("not an Avro datum of its schema: {e}")))?;
    Ok(json!({ "schema": connect, "payload": payload(&value) })
        .to_string()
        .into_bytes())
}

/// A Connect schema for an Avro schema, and whether it is optional (a union with `null`). `names` holds the
/// named types defined so far: Debezium's envelope defines its row record under `before` and names it again under
/// `after`.
fn to_connect(
    avro: &Json,
    namespace: Option<&str>,
    names: &mut HashMap<String, Json>,
) -> (Json, bool) {
    match avro {
        Json::String(t) => (
            match t.as_str() {
                "boolean" => json!({ "type": "boolean" }),
                "int" => json!({ "type": "int32" }),
                "long" => json!({ "type": "int64" }),
                "float" => json!({ "type": "float" }),
                "double" => json!({ "type": "double" }),
                "bytes" => json!({ "type": "bytes" }),
                "string" => json!({ "type": "string" }),
                named => names
                    .get(named)
                    .or_else(|| namespace.and_then(|ns| names.get(&format!("{ns}.{named}"))))
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "string" })),
            },
            false,
        ),
        Json::Array(branches) => {
            let real: Vec<&Json> = branches
                .iter()
                .filter(|b| b.as_str() != Some("null"))
                .collect();
            let optional = real.len() < branches.len();
            match real.as_slice() {
                [one] => (to_connect(one, namespace, names).0, optional),
                _ => (json!({ "type": "string" }), optional),
            }
        }
        Json::Object(o) => {
            let ty = o.get("type").cloned().unwrap_or(Json::Null);
            let mut out = match ty.as_str() {
                Some("record") => {
                    let ns = o
                        .get("namespace")
                        .and_then(Json::as_str)
                        .or(namespace)
                        .map(str::to_owned);
                    let fields: Vec<Json> = o
                        .get("fields")
                        .and_then(Json::as_array)
                        .map(|fields| {
                            fields
                                .iter()
                                .map(|f| {
                                    let (mut schema, optional) = to_connect(
                                        f.get("type").unwrap_or(&Json::Null),
                                        ns.as_deref(),
                                        names,
                                    );
                                    if let Json::Object(m) = &mut schema {
                                        m.insert("optional".into(), Json::Bool(optional));
                                        m.insert(
                                            "field".into(),
                                            f.get("name").cloned().unwrap_or(Json::Null),
                                        );
                                    }
                                    schema
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let s = json!({ "type": "struct", "fields": fields });
                    if let Some(name) = o.get("name").and_then(Json::as_str) {
                        names.insert(name.to_owned(), s.clone());
                        if let Some(ns) = &ns {
                            names.insert(format!("{ns}.{name}"), s.clone());
                        }
                    }
                    s
                }
                Some("array") => {
                    let items = o.get("items").map(|i| to_connect(i, namespace, names).0);
                    json!({ "type": "array", "items": items })
                }
                Some("enum") => json!({ "type": "string" }),
                Some("fixed") => json!({ "type": "bytes" }),
                Some("map") => json!({ "type": "string" }),
                _ => to_connect(&ty, namespace, names).0,
            };
            if let Json::Object(m) = &mut out {
                if let Some(t @ ("int8" | "int16")) = o.get("connect.type").and_then(Json::as_str) {
                    m.insert("type".into(), json!(t));
                }
                let mut params = o.get("connect.parameters").cloned();
                let name = o.get("connect.name").cloned().or_else(|| {
                    match o.get("logicalType").and_then(Json::as_str) {
                        Some("decimal") => {
                            let scale = o.get("scale").and_then(Json::as_u64).unwrap_or(0);
                            params.get_or_insert_with(|| json!({ "scale": scale.to_string() }));
                            Some(json!("org.apache.kafka.connect.data.Decimal"))
                        }
                        Some("date") => Some(json!("org.apache.kafka.connect.data.Date")),
                        Some("timestamp-millis") => {
                            Some(json!("org.apache.kafka.connect.data.Timestamp"))
                        }
                        Some("timestamp-micros") => Some(json!("io.debezium.time.MicroTimestamp")),
                        Some("time-micros") => Some(json!("io.debezium.time.MicroTime")),
                        Some("time-millis") => Some(json!("io.debezium.time.Time")),
                        Some("uuid") => Some(json!("io.debezium.data.Uuid")),
                        _ => None,
                    }
                });
                if let Some(name) = name {
                    m.insert("name".into(), name);
                }
                if let Some(p) = params {
                    m.insert("parameters".into(), p);
                }
            }
            (out, false)
        }
        _ => (json!({ "type": "string" }), true),
    }
}

/// An Avro value as JsonConverter writes the Connect value: bytes and decimals base64, records as objects.
fn payload(v: &Avro) -> Json {
    let b64 = |b: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(b));
    let float = |f: f64| match serde_json::Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => json!("NaN"),
        None if f > 0.0 => json!("Infinity"),
        None => json!("-Infinity"),
    };
    match v {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => json!(i),
        Avro::Long(l)
        | Avro::TimeMicros(l)
        | Avro::TimestampMillis(l)
        | Avro::TimestampMicros(l)
        | Avro::TimestampNanos(l)
        | Avro::LocalTimestampMillis(l)
        | Avro::LocalTimestampMicros(l)
        | Avro::LocalTimestampNanos(l) => json!(l),
        Avro::Float(f) => float(f64::from(*f)),
        Avro::Double(f) => float(*f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => b64(b),
        Avro::String(s) | Avro::Enum(_, s) => json!(s),
        Avro::Union(_, inner) => payload(inner),
        Avro::Array(items) => Json::Array(items.iter().map(payload).collect()),
        Avro::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), payload(v)))
                .collect::<Map<_, _>>(),
        ),
        Avro::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), payload(v)))
                .collect::<Map<_, _>>(),
        ),
        Avro::Decimal(d) => Vec::<u8>::try_from(d).map_or(Json::Null, |b| b64(&b)),
        Avro::BigDecimal(d) => json!(d.to_string()),
        Avro::Uuid(u) => json!(u.to_string()),
        Avro::Duration(_) => Json::Null,
    }
}
