//! MySQL's binary JSON (the JSON column type of MySQL 5.7+) as JSON text. Opaque values inside documents
//! (DECIMAL, DATE, TIME, DATETIME) are written as MySQL prints them: decimals as numbers, temporals as strings.

use std::fmt::Write;

use mysql_common::binlog::jsonb::{self, JsonContainer, JsonDom, JsonNumber, JsonScalar};
use mysql_common::io::ParseBuf;

/// Decodes one binary JSON document; an empty document is JSON `null`, as MySQL reads it.
pub fn to_json_text(doc: &[u8]) -> Result<String, String> {
    let value: jsonb::Value<'_> = ParseBuf(doc).parse(()).map_err(|e| e.to_string())?;
    let dom = value.parse().map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(doc.len());
    write_dom(&mut out, &dom);
    Ok(out)
}

fn write_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
}

fn write_dom(out: &mut String, dom: &JsonDom) {
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_dom(out, item);
            }
            out.push(']');
        }
        JsonDom::Container(JsonContainer::Object(fields)) => {
            out.push('{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, key);
                out.push_str(": ");
                write_dom(out, value);
            }
            out.push('}');
        }
        JsonDom::Scalar(scalar) => match scalar {
            JsonScalar::Null => out.push_str("null"),
            JsonScalar::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            JsonScalar::String(s) => write_string(out, s),
            JsonScalar::DateTime(t) => write_string(out, &format!("{t:.6}")),
            JsonScalar::Number(JsonNumber::Int(n)) => {
                let _ = write!(out, "{n}");
            }
            JsonScalar::Number(JsonNumber::Uint(n)) => {
                let _ = write!(out, "{n}");
            }
            JsonScalar::Number(JsonNumber::Double(f)) => match serde_json::Number::from_f64(*f) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            },
            JsonScalar::Number(JsonNumber::Decimal(d)) => {
                let _ = write!(out, "{d}");
            }
            // Other opaque types (geometry, blobs) have no JSON form of their own.
            JsonScalar::Opaque(o) => write_string(out, &o.to_string()),
        },
    }
}
