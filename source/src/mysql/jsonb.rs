//! MySQL's binary JSON (the JSON column type of MySQL 5.7+) as JSON text. Opaque values inside documents
//! (DECIMAL, DATE, TIME, DATETIME) are written as MySQL prints them: decimals as numbers, temporals as strings.

use std::fmt::Write;

use mysql_common::binlog::jsonb::{self, JsonContainer, JsonDom, JsonNumber, JsonScalar};
use mysql_common::io::ParseBuf;

/// Decodes one binary JSON document; an empty document is JSON `null`, as MySQL reads it.
pub fn to_json_text(doc: &[u8]) -> Result<String, String> {
    let value: jsonb::Value<'_> = ParseBuf(doc).parse(()).map_err(|e| e.to_string())?;
    check_decimals(&value)?;
    let dom = value.parse().map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(doc.len());
    write_dom(&mut out, &dom);
    Ok(out)
}

/// Checks every DECIMAL inside the document (precision, scale and digit groups) before mysql_common's `parse`,
/// which trusts them (a scale above the precision made it subtract with overflow; cargo-fuzz found it).
fn check_decimals(value: &jsonb::Value<'_>) -> Result<(), String> {
    use jsonb::Value as V;
    let e = |e: std::io::Error| e.to_string();
    match value {
        V::SmallArray(c) => c.iter().try_for_each(|v| check_decimals(&v.map_err(e)?)),
        V::LargeArray(c) => c.iter().try_for_each(|v| check_decimals(&v.map_err(e)?)),
        V::SmallObject(c) => c
            .iter()
            .try_for_each(|kv| check_decimals(&kv.map_err(e)?.1)),
        V::LargeObject(c) => c
            .iter()
            .try_for_each(|kv| check_decimals(&kv.map_err(e)?.1)),
        V::Opaque(o)
            if o.value_type() == mysql_common::constants::ColumnType::MYSQL_TYPE_NEWDECIMAL =>
        {
            match o.data_raw() {
                [precision, scale, bin @ ..]
                    if super::rows::decimal_valid(
                        bin,
                        usize::from(*precision),
                        usize::from(*scale),
                    ) =>
                {
                    Ok(())
                }
                _ => Err("a DECIMAL inside a JSON document is malformed".into()),
            }
        }
        _ => Ok(()),
    }
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

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leg {
    Key(String),
    Index(usize),
}

/// Parses the paths MySQL writes into partial updates: `$`, `.key`, `."quoted key"`, `[n]`.
fn parse_path(path: &str) -> Result<Vec<Leg>, String> {
    let bad = || format!("JSON path {path:?}");
    let mut chars = path.strip_prefix('$').ok_or_else(bad)?.chars().peekable();
    let mut legs = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '.' if chars.peek() == Some(&'"') => {
                chars.next();
                let mut key = String::new();
                loop {
                    match chars.next().ok_or_else(bad)? {
                        '\\' => key.push(chars.next().ok_or_else(bad)?),
                        '"' => break,
                        other => key.push(other),
                    }
                }
                legs.push(Leg::Key(key));
            }
            '.' => {
                let mut key = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    key.push(n);
                    chars.next();
                }
                if key.is_empty() {
                    return Err(bad());
                }
                legs.push(Leg::Key(key));
            }
            '[' => {
                let mut digits = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    digits.push(n);
                }
                legs.push(Leg::Index(digits.trim().parse().map_err(|_| bad())?));
            }
            c if c.is_whitespace() => {}
            _ => return Err(bad()),
        }
    }
    Ok(legs)
}

fn dom_to_serde(dom: &JsonDom) -> Result<serde_json::Value, String> {
    let mut text = String::new();
    write_dom(&mut text, dom);
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// Applies a PARTIAL_UPDATE_ROWS column value (a sequence of JSON diffs) to the column's before-image document.
pub fn apply_diffs(before: &str, diffs: &[u8]) -> Result<String, String> {
    use mysql_common::binlog::jsondiff::{JsonDiff, JsonDiffOperation};
    let mut doc: serde_json::Value =
        serde_json::from_str(before).map_err(|e| format!("before image: {e}"))?;
    let mut buf = ParseBuf(diffs);
    while !buf.is_empty() {
        let diff: JsonDiff<'_> = buf.parse(()).map_err(|e| format!("JSON diff: {e}"))?;
        let legs = parse_path(&diff.path_str())?;
        let value = match diff.value() {
            Some(v) => Some(dom_to_serde(
                &v.clone().parse().map_err(|e| e.to_string())?,
            )?),
            None => None,
        };
        let missing = || format!("JSON diff path {} is not in the document", diff.path_str());
        let Some((last, parents)) = legs.split_last() else {
            // The whole document.
            doc = value.ok_or_else(missing)?;
            continue;
        };
        let mut parent = &mut doc;
        for leg in parents {
            parent = match (leg, parent) {
                (Leg::Key(k), serde_json::Value::Object(m)) => m.get_mut(k).ok_or_else(missing)?,
                (Leg::Index(i), serde_json::Value::Array(a)) => {
                    a.get_mut(*i).ok_or_else(missing)?
                }
                _ => return Err(missing()),
            };
        }
        match (diff.operation(), last, parent, value) {
            (
                JsonDiffOperation::REPLACE | JsonDiffOperation::INSERT,
                Leg::Key(k),
                serde_json::Value::Object(m),
                Some(v),
            ) => {
                m.insert(k.clone(), v);
            }
            (JsonDiffOperation::REPLACE, Leg::Index(i), serde_json::Value::Array(a), Some(v)) => {
                *a.get_mut(*i).ok_or_else(missing)? = v;
            }
            (JsonDiffOperation::INSERT, Leg::Index(i), serde_json::Value::Array(a), Some(v)) => {
                let at = (*i).min(a.len());
                a.insert(at, v);
            }
            (JsonDiffOperation::REMOVE, Leg::Key(k), serde_json::Value::Object(m), _) => {
                m.remove(k);
            }
            (JsonDiffOperation::REMOVE, Leg::Index(i), serde_json::Value::Array(a), _)
                if *i < a.len() =>
            {
                a.remove(*i);
            }
            _ => return Err(missing()),
        }
    }
    let mut out = String::with_capacity(before.len());
    write_serde(&mut out, &doc);
    Ok(out)
}

/// JSON text as MySQL prints it (`", "` and `": "` separators), like [`to_json_text`].
fn write_serde(out: &mut String, v: &serde_json::Value) {
    match v {
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_serde(out, item);
            }
            out.push(']');
        }
        serde_json::Value::Object(fields) => {
            out.push('{');
            for (i, (k, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, k);
                out.push_str(": ");
                write_serde(out, item);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_parse() {
        assert_eq!(parse_path("$").unwrap(), vec![]);
        assert_eq!(
            parse_path("$.a[2].\"b c\"").unwrap(),
            vec![Leg::Key("a".into()), Leg::Index(2), Leg::Key("b c".into())]
        );
        assert!(parse_path("a.b").is_err());
        assert!(parse_path("$[x]").is_err());
    }

    #[test]
    fn partial_updates_apply_to_the_old_document() {
        let mut diffs = Vec::new();
        // REPLACE $.a with int16 5; REMOVE $.b[0]; INSERT $.c with the string "x"; INSERT $.b[9] (appends) true.
        diffs.extend([0, 3, b'$', b'.', b'a', 3, 0x05, 5, 0]);
        diffs.extend([2, 6]);
        diffs.extend(b"$.b[0]");
        diffs.extend([1, 3, b'$', b'.', b'c', 3, 0x0c, 1, b'x']);
        diffs.extend([1, 6]);
        diffs.extend(b"$.b[9]");
        diffs.extend([2, 0x04, 0x01]);
        let after = apply_diffs(r#"{"a": 1, "b": [10, 20]}"#, &diffs).unwrap();
        assert_eq!(after, r#"{"a": 5, "b": [20, true], "c": "x"}"#);
        // A path the document does not have is an error, never a silently different document.
        let missing = [0u8, 4, b'$', b'.', b'z', b'z', 3, 0x05, 5, 0];
        assert!(apply_diffs(
            r#"{"a": [1]}"#,
            &[&[0u8, 6][..], b"$.q[1]", &[3, 0x05, 5, 0]].concat()
        )
        .is_err());
        assert!(apply_diffs("{}", &missing[..5]).is_err());
    }
}
