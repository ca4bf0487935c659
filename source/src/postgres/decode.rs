//! pgoutput's text values into typed [`Value`]s.
//!
//! The walsender session runs with `datestyle=ISO`, `timezone=UTC`, `intervalstyle=iso_8601`,
//! `extra_float_digits=3` and `bytea_output=hex` (see `conn.rs`, and the snapshot session), so each type has one
//! text form and decoding is exact.

use ferry_core::{ColumnType, Date, Decimal, Interval, Time, TimeTz, Timestamp, Uuid, Value};

/// A value whose text does not parse as its column's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {text:?} as {ty}")]
pub struct ValueError {
    pub ty: String,
    pub text: String,
}

fn bad(ty: &ColumnType, text: &str) -> ValueError {
    ValueError {
        ty: format!("{ty:?}").to_lowercase(),
        text: text.chars().take(200).collect(),
    }
}

/// Decodes one text value of a column of type `ty`.
pub fn decode_text(ty: &ColumnType, bytes: &[u8]) -> Result<Value, ValueError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ValueError {
        ty: "text".into(),
        text: String::from_utf8_lossy(bytes).into_owned(),
    })?;
    decode_str(ty, text)
}

fn decode_str(ty: &ColumnType, s: &str) -> Result<Value, ValueError> {
    let v = match ty {
        ColumnType::Bool => match s {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(bad(ty, s)),
        },
        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => {
            Value::Int(s.parse().map_err(|_| bad(ty, s))?)
        }
        ColumnType::Float4 | ColumnType::Float8 => Value::Float(match s {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            // Rust would also accept "inf" and "nan"; PostgreSQL never sends them, so refuse them.
            _ if s
                .bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
            {
                return Err(bad(ty, s))
            }
            _ => s.parse().map_err(|_| bad(ty, s))?,
        }),
        ColumnType::Numeric => Value::Decimal(Decimal::parse(s).map_err(|_| bad(ty, s))?),
        ColumnType::Text | ColumnType::Other => Value::Text(s.to_owned()),
        ColumnType::Bytes => Value::Bytes(decode_hex(s).ok_or_else(|| bad(ty, s))?),
        ColumnType::Json | ColumnType::Jsonb => Value::Json(s.to_owned()),
        ColumnType::Uuid => Value::Uuid(Uuid::parse(s).map_err(|_| bad(ty, s))?),
        ColumnType::Date => Value::Date(Date::parse_iso(s).map_err(|_| bad(ty, s))?),
        ColumnType::Time => Value::Time(Time::parse_iso(s).map_err(|_| bad(ty, s))?),
        ColumnType::TimeTz => Value::TimeTz(TimeTz::parse_iso(s).map_err(|_| bad(ty, s))?),
        ColumnType::Timestamp => Value::Timestamp(Timestamp::parse_iso(s).map_err(|_| bad(ty, s))?),
        ColumnType::TimestampTz => {
            Value::TimestampTz(Timestamp::parse_iso_tz(s).map_err(|_| bad(ty, s))?)
        }
        ColumnType::Interval => Value::Interval(Interval::parse_iso(s).map_err(|_| bad(ty, s))?),
        ColumnType::Array(elem) => {
            // Arrays with non-default lower bounds are written "[0:1]={…}"; the bounds are not kept.
            let body = match s.strip_prefix('[') {
                Some(_) => s
                    .split_once('=')
                    .map(|(_, b)| b)
                    .ok_or_else(|| bad(ty, s))?,
                None => s,
            };
            let mut parser = ArrayParser {
                s: body.as_bytes(),
                pos: 0,
                elem,
            };
            let v = parser.array().ok_or_else(|| bad(ty, s))?;
            if parser.pos != body.len() {
                return Err(bad(ty, s));
            }
            v
        }
    };
    Ok(v)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    hex.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// A recursive-descent parser for PostgreSQL's array literal (`{1,NULL,"a \"b\""}`, nested for more dimensions).
struct ArrayParser<'a> {
    s: &'a [u8],
    pos: usize,
    elem: &'a ColumnType,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn array(&mut self) -> Option<Value> {
        if self.peek()? != b'{' {
            return None;
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(Value::Array(items));
        }
        loop {
            let item = match self.peek()? {
                b'{' => self.array()?,
                b'"' => {
                    let text = self.quoted()?;
                    decode_str(self.elem, &text).ok()?
                }
                _ => {
                    let start = self.pos;
                    while !matches!(self.peek()?, b',' | b'}') {
                        self.pos += 1;
                    }
                    let raw = std::str::from_utf8(&self.s[start..self.pos]).ok()?;
                    if raw.eq_ignore_ascii_case("NULL") {
                        Value::Null
                    } else {
                        decode_str(self.elem, raw).ok()?
                    }
                }
            };
            items.push(item);
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    out.push(*self.s.get(self.pos + 1)?);
                    self.pos += 2;
                }
                b => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arr(elem: ColumnType) -> ColumnType {
        ColumnType::Array(Box::new(elem))
    }

    #[test]
    fn decodes_scalars() {
        assert_eq!(
            decode_text(&ColumnType::Bool, b"t").unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            decode_text(&ColumnType::Int8, b"-9223372036854775808").unwrap(),
            Value::Int(i64::MIN)
        );
        assert!(
            matches!(decode_text(&ColumnType::Float8, b"NaN").unwrap(), Value::Float(f) if f.is_nan())
        );
        assert_eq!(
            decode_text(&ColumnType::Float4, b"-Infinity").unwrap(),
            Value::Float(f64::NEG_INFINITY)
        );
        assert!(decode_text(&ColumnType::Float8, b"inf").is_err());
        assert_eq!(
            decode_text(&ColumnType::Bytes, b"\\x00ff").unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert!(decode_text(&ColumnType::Bytes, b"\\x0").is_err());
        assert!(decode_text(&ColumnType::Int4, b"12a").is_err());
        assert!(decode_text(&ColumnType::Text, &[0xff]).is_err());
    }

    #[test]
    fn decodes_arrays_with_nulls_quotes_and_dimensions() {
        let v = decode_text(&arr(ColumnType::Text), br#"{a,"b c","d\"e",NULL,"NULL"}"#).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Text("a".into()),
                Value::Text("b c".into()),
                Value::Text("d\"e".into()),
                Value::Null,
                Value::Text("NULL".into())
            ])
        );
        let v = decode_text(&arr(ColumnType::Int4), b"{{1,2},{3,NULL}}").unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Null])
            ])
        );
        assert_eq!(
            decode_text(&arr(ColumnType::Int4), b"{}").unwrap(),
            Value::Array(vec![])
        );
        assert_eq!(
            decode_text(&arr(ColumnType::Int4), b"[0:1]={5,6}").unwrap(),
            Value::Array(vec![Value::Int(5), Value::Int(6)])
        );
        assert!(decode_text(&arr(ColumnType::Int4), b"{1,2").is_err());
        assert!(decode_text(&arr(ColumnType::Int4), b"{1,x}").is_err());
        assert!(decode_text(&arr(ColumnType::Int4), b"{1}}").is_err());
    }

    /// The text of a decoded temporal value as the sinks write it back (PostgreSQL's own output form).
    fn temporal_text(v: &Value) -> String {
        match v {
            Value::Date(d) => d.to_string(),
            Value::Time(t) => t.to_string(),
            Value::TimeTz(t) => t.to_string(),
            Value::Timestamp(t) => t.to_string(),
            Value::TimestampTz(t) => t.display_utc().to_string(),
            Value::Interval(i) => i.to_string(),
            other => panic!("not temporal: {other:?}"),
        }
    }

    #[test]
    fn decodes_every_temporal_extreme_postgres_prints_and_prints_it_back() {
        use ColumnType as T;
        // What PostgreSQL 15 and 18 print for the ends of each type's range under datestyle ISO, timezone UTC
        // and intervalstyle iso_8601 (PostgreSQL 17 added the interval infinities).
        let cases = [
            (T::Date, "5874897-12-31"),
            (T::Date, "4714-11-24 BC"),
            (T::Date, "0001-01-01 BC"),
            (T::Date, "infinity"),
            (T::Date, "-infinity"),
            (T::Timestamp, "294276-12-31 23:59:59.999999"),
            (T::Timestamp, "4714-11-24 00:00:00 BC"),
            (T::Timestamp, "0001-12-31 23:59:59.000001 BC"),
            (T::Timestamp, "infinity"),
            (T::Timestamp, "-infinity"),
            (T::TimestampTz, "294276-12-31 23:59:59.999999+00"),
            (T::TimestampTz, "4714-11-24 00:00:00+00 BC"),
            (T::TimestampTz, "infinity"),
            (T::TimestampTz, "-infinity"),
            (T::Time, "24:00:00"),
            (T::Time, "00:00:00"),
            (T::Time, "23:59:59.999999"),
            (T::TimeTz, "24:00:00-15:59"),
            (T::TimeTz, "00:00:00+15:59:59"),
            (T::TimeTz, "12:00:00+05:30:15"),
            (T::TimeTz, "00:00:00.000001+00"),
            (T::Interval, "P-178000000Y"),
            (T::Interval, "P178000000Y"),
            (
                T::Interval,
                "P-178956970Y-8M-2147483647DT-2562047788H-54.775808S",
            ),
            (
                T::Interval,
                "P178956970Y7M2147483647DT2562047788H54.775806S",
            ),
            (T::Interval, "PT0.000001S"),
            (T::Interval, "P-1DT0.000001S"),
            (T::Interval, "infinity"),
            (T::Interval, "-infinity"),
        ];
        for (ty, text) in cases {
            let v = decode_text(&ty, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(temporal_text(&v), text, "{ty:?}");
        }
        // A zone with seconds, as a timestamptz shows in a session outside UTC, normalises to UTC.
        let v = decode_text(&T::TimestampTz, b"1799-12-31 19:03:58-04:56:02").unwrap();
        assert_eq!(temporal_text(&v), "1800-01-01 00:00:00+00");
        let v = decode_text(
            &arr(T::Timestamp),
            br#"{"294276-12-31 23:59:59.999999","4714-11-24 00:00:00 BC",infinity,NULL}"#,
        )
        .unwrap();
        let Value::Array(items) = v else {
            panic!("{v:?}")
        };
        assert_eq!(temporal_text(&items[1]), "4714-11-24 00:00:00 BC");
        assert_eq!(items[3], Value::Null);
    }

    #[test]
    fn refuses_what_postgres_would_not_print_naming_the_text() {
        let e = decode_text(&ColumnType::Timestamp, b"294277-01-01 00:00:00").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode \"294277-01-01 00:00:00\" as timestamp"
        );
        assert!(decode_text(&ColumnType::Date, b"5874898-01-01").is_err());
        assert!(decode_text(&ColumnType::Time, b"24:00:00.000001").is_err());
        assert!(decode_text(&ColumnType::TimeTz, b"12:00:00+16").is_err());
        assert!(decode_text(&ColumnType::Interval, b"P178956970Y8M").is_err());
    }

    proptest! {
        #[test]
        fn temporal_decoders_never_panic(s in "[0-9:.+ BCTPYMDHS-]{0,40}") {
            for ty in [ColumnType::Date, ColumnType::Time, ColumnType::TimeTz, ColumnType::Timestamp,
                       ColumnType::TimestampTz, ColumnType::Interval] {
                let _ = decode_text(&ty, s.as_bytes());
            }
        }

        #[test]
        fn array_parser_never_panics(s in "[{}\",\\\\a-c0-9N ]{0,40}") {
            let _ = decode_text(&arr(arr(ColumnType::Text)), s.as_bytes());
        }
    }
}
