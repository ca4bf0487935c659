//! Values in PostgreSQL's text form: what `psql` prints and every PostgreSQL input function reads back as the
//! same value. The PostgreSQL sink sends values this way; transform stages use it as a value's text.

use std::fmt::Write;

use crate::schema::ColumnType;
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

/// The text PostgreSQL prints for `v`, a value of a column of type `ty` (what `psql` shows and `::text` gives,
/// with the server's default `extra_float_digits` and `IntervalStyle`); `None` for SQL NULL. Differs from
/// [`pg_text`] (an input form every version reads) in floats (`1e+20`, `1.234567e+06` for `real`), intervals
/// (`1 day 02:00:00`) and array quoting.
pub fn pg_output_text(v: &Value, ty: &ColumnType) -> Option<String> {
    let mut out = String::new();
    match v {
        Value::Null | Value::Unchanged | Value::ZeroDate(_) => return None,
        Value::Float(f) => write_float(&mut out, *f, *ty == ColumnType::Float4),
        Value::Interval(i) => {
            let _ = write!(out, "{}", i.display_postgres());
        }
        Value::Array(items) => {
            let inner = match ty {
                ColumnType::Array(inner) => inner,
                other => other,
            };
            write_output_array(&mut out, items, inner);
        }
        other => write_pg_text(&mut out, other),
    }
    Some(out)
}

/// A float as PostgreSQL 12+ prints it: the shortest digits that read back as the same value, in exponent form
/// when the exponent is below -4 or at least 15 (`real`: 6), as `float8out` / `float4out` do.
fn write_float(out: &mut String, f: f64, single: bool) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let sci = if single {
        format!("{:e}", f as f32)
    } else {
        format!("{f:e}")
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= if single { 6 } else { 15 } {
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exp.abs());
    } else if single {
        let _ = write!(out, "{}", f as f32);
    } else {
        let _ = write!(out, "{f}");
    }
}

/// An array as PostgreSQL prints it: elements bare unless they need double quotes.
fn write_output_array(out: &mut String, items: &[Value], ty: &ColumnType) {
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Array(inner) => write_output_array(out, inner, ty),
            v => match pg_output_text(v, ty) {
                None => out.push_str("NULL"),
                Some(text) => {
                    let quote = text.is_empty()
                        || text.eq_ignore_ascii_case("NULL")
                        || text.chars().any(|c| {
                            matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace()
                        });
                    if quote {
                        out.push('"');
                        for c in text.chars() {
                            if c == '"' || c == '\\' {
                                out.push('\\');
                            }
                            out.push(c);
                        }
                        out.push('"');
                    } else {
                        out.push_str(&text);
                    }
                }
            },
        }
    }
    out.push('}');
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
mod output_tests {
    use super::*;
    use crate::Interval;

    /// Each expected text is what PostgreSQL 15 prints for the value (`SELECT v::text`).
    #[test]
    fn prints_values_as_postgres_does() {
        let f8 = |f: f64| pg_output_text(&Value::Float(f), &ColumnType::Float8).unwrap();
        let f4 = |f: f64| pg_output_text(&Value::Float(f), &ColumnType::Float4).unwrap();
        assert_eq!(f8(1e20), "1e+20");
        assert_eq!(f8(1.5e-7), "1.5e-07");
        assert_eq!(f8(0.1), "0.1");
        assert_eq!(f8(123456789012345.0), "123456789012345");
        assert_eq!(f8(1234567890123456.0), "1.234567890123456e+15");
        assert_eq!(f8(0.0001), "0.0001");
        assert_eq!(f8(f64::INFINITY), "Infinity");
        assert_eq!(f8(-0.0), "-0");
        assert_eq!(f4(3.4e38), "3.4e+38");
        assert_eq!(f4(1234567.0), "1.234567e+06");
        assert_eq!(f4(123456.0), "123456");
        let iv = |months, days, micros| {
            pg_output_text(
                &Value::Interval(Interval {
                    months,
                    days,
                    micros,
                }),
                &ColumnType::Interval,
            )
            .unwrap()
        };
        assert_eq!(iv(0, 1, 7_200_000_000), "1 day 02:00:00");
        assert_eq!(iv(1, -3, 0), "1 mon -3 days");
        assert_eq!(
            iv(14, 3, 14_706_789_000),
            "1 year 2 mons 3 days 04:05:06.789"
        );
        assert_eq!(iv(0, -1, 7_380_000_000), "-1 days +02:03:00");
        assert_eq!(iv(0, 0, 0), "00:00:00");
        assert_eq!(iv(-12, 0, -1_500_000), "-1 years -00:00:01.5");
        let arr = Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Array(vec![Value::Int(3), Value::Null]),
        ]);
        assert_eq!(
            pg_output_text(&arr, &ColumnType::Array(Box::new(ColumnType::Int4))).unwrap(),
            "{{1,2},{3,NULL}}"
        );
        let texts = Value::Array(vec![
            Value::Text("a b".into()),
            Value::Text(String::new()),
            Value::Text("null".into()),
            Value::Text("x\"y".into()),
            Value::Text("plain".into()),
        ]);
        assert_eq!(
            pg_output_text(&texts, &ColumnType::Array(Box::new(ColumnType::Text))).unwrap(),
            r#"{"a b","","null","x\"y",plain}"#
        );
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
