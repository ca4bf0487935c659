//! Values in PostgreSQL's text form: what `psql` prints and every PostgreSQL input function reads back as the
//! same value. The PostgreSQL sink sends values this way; transform stages use it as a value's text.

use std::fmt::Write;

use crate::value::Value;

/// The PostgreSQL input text of `v`; `None` for SQL NULL. `Unchanged` never reaches here (callers leave those
/// columns out).
pub fn pg_text(v: &Value) -> Option<String> {
    match v {
        // A MySQL zero date has no PostgreSQL value (docs/type-mapping.md).
        Value::Null | Value::Unchanged | Value::ZeroDate(_) => None,
        other => {
            let mut s = String::new();
            write_pg_text(&mut s, other);
            Some(s)
        }
    }
}

/// Appends the PostgreSQL text of `v` to `out` (`NULL` for SQL NULL).
pub fn write_pg_text(out: &mut String, v: &Value) {
    match v {
        Value::Null | Value::Unchanged | Value::ZeroDate(_) => out.push_str("NULL"),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) if f.is_nan() => out.push_str("NaN"),
        Value::Float(f) if f.is_infinite() => {
            out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
        }
        // Rust prints the shortest text that reads back as the same double, which float4in/float8in accept.
        Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::Decimal(d) => {
            let _ = write!(out, "{d}");
        }
        Value::Text(s) | Value::Json(s) => out.push_str(s),
        Value::Bytes(b) => {
            out.push_str("\\x");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        Value::Uuid(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Date(d) => {
            let _ = write!(out, "{d}");
        }
        Value::Time(t) => {
            let _ = write!(out, "{t}");
        }
        Value::TimeTz(t) => {
            let _ = write!(out, "{t}");
        }
        Value::Timestamp(t) => {
            let _ = write!(out, "{t}");
        }
        Value::TimestampTz(t) => {
            let _ = write!(out, "{}", t.display_utc());
        }
        // PostgreSQL 17's ±infinity as its fields, which every version reads back as the same value.
        Value::Interval(i) => {
            let _ = write!(out, "{}", i.display_fields());
        }
        Value::Array(items) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::Null | Value::Unchanged | Value::ZeroDate(_) => out.push_str("NULL"),
                    Value::Array(_) => write_pg_text(out, item),
                    scalar => {
                        let mut text = String::new();
                        write_pg_text(&mut text, scalar);
                        out.push('"');
                        for c in text.chars() {
                            if c == '"' || c == '\\' {
                                out.push('\\');
                            }
                            out.push(c);
                        }
                        out.push('"');
                    }
                }
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_arrays_floats_and_bytes() {
        let v = Value::Array(vec![
            Value::Text("a\"b".into()),
            Value::Null,
            Value::Array(vec![Value::Int(1)]),
        ]);
        assert_eq!(pg_text(&v).unwrap(), r#"{"a\"b",NULL,{"1"}}"#);
        assert_eq!(pg_text(&Value::Float(0.1)).unwrap(), "0.1");
        assert_eq!(pg_text(&Value::Float(1e300)).unwrap(), "1e300");
        assert_eq!(
            pg_text(&Value::Float(f64::NEG_INFINITY)).unwrap(),
            "-Infinity"
        );
        assert_eq!(pg_text(&Value::Bytes(vec![0, 0xab])).unwrap(), "\\x00ab");
        assert_eq!(pg_text(&Value::Null), None);
    }
}

#[cfg(test)]
mod temporal_tests {
    use super::*;
    use crate::{Date, Interval, Time, TimeTz, Timestamp};

    #[test]
    fn temporal_extremes_are_sent_as_postgres_prints_them() {
        let text = |v: Value| pg_text(&v).unwrap();
        assert_eq!(
            text(Value::Timestamp(
                Timestamp::parse_iso("294276-12-31 23:59:59.999999").unwrap()
            )),
            "294276-12-31 23:59:59.999999"
        );
        assert_eq!(
            text(Value::TimestampTz(
                Timestamp::parse_iso_tz("4714-11-24 00:00:00+00 BC").unwrap()
            )),
            "4714-11-24 00:00:00+00 BC"
        );
        assert_eq!(
            text(Value::Date(Date::parse_iso("5874897-12-31").unwrap())),
            "5874897-12-31"
        );
        assert_eq!(
            text(Value::Time(Time::parse_iso("24:00:00").unwrap())),
            "24:00:00"
        );
        assert_eq!(
            text(Value::TimeTz(
                TimeTz::parse_iso("12:00:00+05:30:15").unwrap()
            )),
            "12:00:00+05:30:15"
        );
        assert_eq!(
            text(Value::Interval(
                Interval::parse_iso("P-178000000Y").unwrap()
            )),
            "P-178000000Y"
        );
        // PostgreSQL 17's infinity as fields: 17 and later read it back as infinity, 15 and 16 as the same bits.
        assert_eq!(
            text(Value::Interval(Interval::INFINITY)),
            "P178956970Y7M2147483647DT2562047788H54.775807S"
        );
        assert_eq!(
            text(Value::Array(vec![Value::Timestamp(
                Timestamp::parse_iso("4714-11-24 00:00:00 BC").unwrap()
            )])),
            r#"{"4714-11-24 00:00:00 BC"}"#
        );
    }
}
