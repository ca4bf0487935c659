//! Column values as a typed enum, shared by every source and sink.

use std::fmt;

use crate::temporal::{Date, Interval, Time, TimeTz, Timestamp};

/// One column value of one row.
///
/// Serialized (a dead letter's row) as `{"Int": 5}`, `"Null"`…; a float as its shortest exact text, so NaN and
/// the infinities survive JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    /// A column the source did not send (an unchanged TOAST value, a minimal row image). Sinks never write it:
    /// an UPDATE leaves the target column as it is.
    Unchanged,
    Bool(bool),
    /// Every signed integer type, and PostgreSQL `oid`.
    Int(i64),
    Float(#[serde(with = "float_text")] f64),
    /// An exact decimal (PostgreSQL `numeric`), kept as its text form.
    Decimal(Decimal),
    Text(String),
    Bytes(Vec<u8>),
    /// JSON document text (`json` keeps the source's spelling; `jsonb` is normalised by its source).
    Json(String),
    Uuid(Uuid),
    Date(Date),
    Time(Time),
    TimeTz(TimeTz),
    Timestamp(Timestamp),
    /// A point in time, UTC.
    TimestampTz(Timestamp),
    Interval(Interval),
    /// An array; a multi-dimensional array nests `Array` values, one level per dimension.
    Array(Vec<Value>),
    /// A MySQL date or datetime with zero parts (`0000-00-00`, `2024-02-00 10:00:00`), which no calendar holds:
    /// carried as MySQL's own text. MySQL targets store it as it is, SQLite as text, other targets as NULL.
    ZeroDate(String),
}

impl Value {
    /// Approximate heap and inline size, for batch size limits.
    pub fn size_hint(&self) -> usize {
        16 + match self {
            Value::Decimal(Decimal::Finite(s))
            | Value::Text(s)
            | Value::Json(s)
            | Value::ZeroDate(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(items) => items.iter().map(Value::size_hint).sum(),
            _ => 0,
        }
    }
}

/// An exact decimal number, with PostgreSQL's special values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Decimal {
    /// Digits as text, e.g. `-12.3400` (trailing zeros kept: they carry the scale).
    Finite(String),
    NaN,
    Infinity,
    NegInfinity,
}

/// A decimal string that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid decimal {0:?}")]
pub struct DecimalParseError(String);

impl Decimal {
    /// Parses a plain decimal (`-12.34`, `1e10` is refused: sources send plain digits) or NaN / ±Infinity.
    pub fn parse(s: &str) -> Result<Decimal, DecimalParseError> {
        match s {
            "NaN" => return Ok(Decimal::NaN),
            "Infinity" => return Ok(Decimal::Infinity),
            "-Infinity" => return Ok(Decimal::NegInfinity),
            _ => {}
        }
        let body = s.strip_prefix(['-', '+']).unwrap_or(s);
        let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && frac.is_empty() || !digits_ok(whole) || !digits_ok(frac) {
            return Err(DecimalParseError(s.to_owned()));
        }
        Ok(Decimal::Finite(s.to_owned()))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decimal::Finite(s) => f.write_str(s),
            Decimal::NaN => f.write_str("NaN"),
            Decimal::Infinity => f.write_str("Infinity"),
            Decimal::NegInfinity => f.write_str("-Infinity"),
        }
    }
}

/// A 128-bit UUID, displayed in the canonical hyphenated lower-case form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Uuid(pub [u8; 16]);

/// A string that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid uuid {0:?}")]
pub struct UuidParseError(String);

impl Uuid {
    /// Parses the hyphenated form (hyphens optional, either case).
    pub fn parse(s: &str) -> Result<Uuid, UuidParseError> {
        let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 {
            return Err(UuidParseError(s.to_owned()));
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| UuidParseError(s.to_owned()))?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| UuidParseError(s.to_owned()))?;
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A float as its shortest exact text (`1.5`, `NaN`, `inf`), which parses back to the same bits (JSON has no NaN).
mod float_text {
    pub fn serialize<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_digits() {
        assert_eq!(Decimal::parse("-12.3400").unwrap().to_string(), "-12.3400");
        assert_eq!(Decimal::parse("NaN").unwrap(), Decimal::NaN);
        assert!(Decimal::parse("1e5").is_err());
        assert!(Decimal::parse("-").is_err());
        assert!(Decimal::parse(".").is_err());
    }

    #[test]
    fn uuids_round_trip() {
        let s = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(Uuid::parse(s).unwrap().to_string(), s);
        assert!(Uuid::parse("a0eebc99").is_err());
        assert!(Uuid::parse("g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").is_err());
    }

    #[test]
    fn values_survive_json() {
        let values = vec![
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(0.1 + 0.2),
            Value::Float(-0.0),
            Value::Decimal(Decimal::Finite("-12.3400".into())),
            Value::Array(vec![Value::Null, Value::Text("a\u{0}b".into())]),
            Value::Bytes(vec![0, 255]),
            Value::Unchanged,
        ];
        let text = serde_json::to_string(&values).unwrap();
        let back: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(matches!(back[0], Value::Float(f) if f.is_nan()));
        assert_eq!(back[1..], values[1..]);
        assert!(matches!(back[3], Value::Float(f) if f.is_sign_negative()));
    }
}
