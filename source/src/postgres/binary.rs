//! pgoutput's binary values (`binary 'true'`, PostgreSQL 14+) into typed [`Value`]s.
//!
//! Each value is its type's send function's output, as `COPY … (FORMAT binary)` writes it (PostgreSQL's
//! `src/backend/utils/adt/*.c`, `*_send`): big-endian integers, IEEE floats, timestamps as microseconds since
//! 2000-01-01, numerics as base-10000 digits, arrays with a header. Every value decodes to exactly the [`Value`]
//! its text form decodes to (see `decode.rs`), so the two formats are interchangeable for sinks; which types are
//! sent binary at all is the catalog's call (`Catalog::binary_decodable`).

use std::fmt::Write as _;

use ferry_core::{ColumnType, Date, Decimal, Interval, Time, TimeTz, Timestamp, Uuid, Value};

use super::decode::ValueError;

/// Days from 1970-01-01 (ferry's [`Date`]) to 2000-01-01 (PostgreSQL's date epoch).
const PG_EPOCH_DAYS: i32 = 10_957;

fn bad(ty: &ColumnType, bytes: &[u8]) -> ValueError {
    let mut hex = String::from("binary \\x");
    for b in bytes.iter().take(100) {
        let _ = write!(hex, "{b:02x}");
    }
    ValueError {
        ty: format!("{ty:?}").to_lowercase(),
        text: hex,
    }
}

fn be<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

/// Decodes one binary value of a column of type `ty`. `ColumnType::Other` is decoded as text: the catalog sends
/// binary only those of its types whose send function writes the text form (enums).
pub fn decode_binary(ty: &ColumnType, bytes: &[u8]) -> Result<Value, ValueError> {
    decode(ty, bytes).ok_or_else(|| bad(ty, bytes))
}

fn text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

fn decode(ty: &ColumnType, b: &[u8]) -> Option<Value> {
    Some(match ty {
        ColumnType::Bool => match b {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            _ => return None,
        },
        // `oid` is an unsigned 4-byte value in an Int8 column.
        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => Value::Int(match b.len() {
            2 => i64::from(i16::from_be_bytes(be(b)?)),
            4 if *ty == ColumnType::Int8 => i64::from(u32::from_be_bytes(be(b)?)),
            4 => i64::from(i32::from_be_bytes(be(b)?)),
            8 => i64::from_be_bytes(be(b)?),
            _ => return None,
        }),
        ColumnType::Float4 => Value::Float(float4(f32::from_be_bytes(be(b)?))),
        ColumnType::Float8 => Value::Float(f64::from_be_bytes(be(b)?)),
        ColumnType::Numeric => Value::Decimal(numeric(b)?),
        ColumnType::Text | ColumnType::Other => Value::Text(text(b)?),
        ColumnType::Bytes => Value::Bytes(b.to_vec()),
        ColumnType::Json => Value::Json(text(b)?),
        // jsonb_send: a version byte (1), then the document's text.
        ColumnType::Jsonb => match b.split_first() {
            Some((1, doc)) => Value::Json(text(doc)?),
            _ => return None,
        },
        ColumnType::Uuid => Value::Uuid(Uuid(be(b)?)),
        ColumnType::Date => {
            let days = i32::from_be_bytes(be(b)?);
            Value::Date(match days {
                i32::MAX => Date::INFINITY,
                i32::MIN => Date::NEG_INFINITY,
                d => Date(d.checked_add(PG_EPOCH_DAYS)?),
            })
        }
        ColumnType::Time => Value::Time(Time(i64::from_be_bytes(be(b)?))),
        ColumnType::TimeTz => {
            let (micros, zone) = b.split_at_checked(8)?;
            // The zone is in seconds west of Greenwich; ferry keeps the offset east.
            Value::TimeTz(TimeTz {
                micros: i64::from_be_bytes(be(micros)?),
                offset_seconds: i32::from_be_bytes(be(zone)?).checked_neg()?,
            })
        }
        ColumnType::Timestamp => {
            Value::Timestamp(Timestamp::from_pg_micros(i64::from_be_bytes(be(b)?)))
        }
        ColumnType::TimestampTz => {
            Value::TimestampTz(Timestamp::from_pg_micros(i64::from_be_bytes(be(b)?)))
        }
        ColumnType::Interval => {
            let (micros, rest) = b.split_at_checked(8)?;
            let (days, months) = rest.split_at_checked(4)?;
            Value::Interval(Interval {
                micros: i64::from_be_bytes(be(micros)?),
                days: i32::from_be_bytes(be(days)?),
                months: i32::from_be_bytes(be(months)?),
            })
        }
        ColumnType::Array(elem) => array(elem, b)?,
    })
}

/// A `float4` as the `f64` its text form reads as: PostgreSQL writes the shortest text that reads back as the same
/// `float4` (`1.1`), and so does Rust's `Display`, so both formats give `1.1f64` rather than `1.100000023841858`.
fn float4(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    f.to_string().parse().unwrap_or(f64::from(f))
}

/// numeric_send: digit count, weight of the first digit (in base-10000 places), sign, display scale, then the
/// base-10000 digits; written out as numeric_out does (`get_str_from_var`).
fn numeric(b: &[u8]) -> Option<Decimal> {
    let mut c = Reader(b);
    let ndigits = usize::try_from(c.i16()?).ok()?;
    let weight = i32::from(c.i16()?);
    let sign = c.u16()?;
    let dscale = usize::from(c.u16()?);
    let digits: Vec<i16> = (0..ndigits).map(|_| c.i16()).collect::<Option<_>>()?;
    if !c.0.is_empty() || digits.iter().any(|d| !(0..10_000).contains(d)) {
        return None;
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Some(Decimal::NaN),
        0xD000 => return Some(Decimal::Infinity),
        0xF000 => return Some(Decimal::NegInfinity),
        _ => return None,
    }
    // Digit i has weight `weight - i`; places outside the digits are zero.
    let digit = |w: i32| -> i16 {
        usize::try_from(weight - w)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut s = String::with_capacity(ndigits * 4 + dscale + 4);
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for w in (0..=weight).rev() {
            if w == weight {
                let _ = write!(s, "{}", digit(w));
            } else {
                let _ = write!(s, "{:04}", digit(w));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let start = s.len();
        let mut w = -1;
        while s.len() - start < dscale {
            let _ = write!(s, "{:04}", digit(w));
            w -= 1;
        }
        s.truncate(start + dscale);
    }
    Some(Decimal::Finite(s))
}

/// array_send: dimensions, a has-nulls flag, the element type's OID, each dimension's length and lower bound,
/// then each element as a length (-1: NULL) and its bytes, in row-major order. Lower bounds are not kept, as in
/// the text form.
fn array(elem: &ColumnType, b: &[u8]) -> Option<Value> {
    let mut c = Reader(b);
    let ndim = usize::try_from(c.i32()?).ok()?;
    let _flags = c.i32()?;
    let _elem_oid = c.i32()?;
    if ndim > 6 {
        return None;
    }
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        dims.push(usize::try_from(c.i32()?).ok()?);
        let _lower_bound = c.i32()?;
    }
    if ndim == 0 {
        return c.0.is_empty().then(|| Value::Array(Vec::new()));
    }
    let v = dimension(elem, &dims, &mut c)?;
    c.0.is_empty().then_some(v)
}

fn dimension(elem: &ColumnType, dims: &[usize], c: &mut Reader<'_>) -> Option<Value> {
    let (&len, inner) = dims.split_first()?;
    // Each element takes at least its 4-byte length: a longer count is malformed, not a reason to allocate.
    let mut items = Vec::with_capacity(len.min(c.0.len() / 4));
    for _ in 0..len {
        items.push(if inner.is_empty() {
            match c.i32()? {
                -1 => Value::Null,
                n => decode(elem, c.take(usize::try_from(n).ok()?)?)?,
            }
        } else {
            dimension(elem, inner, c)?
        });
    }
    Some(Value::Array(items))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(be(self.take(2)?)?))
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(be(self.take(2)?)?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(be(self.take(4)?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn num(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [ndigits as u16, weight as u16, sign, dscale] {
            b.extend(v.to_be_bytes());
        }
        for d in digits {
            b.extend(d.to_be_bytes());
        }
        b
    }

    fn dec(b: &[u8]) -> String {
        numeric(b).expect("numeric").to_string()
    }

    #[test]
    fn numerics_read_as_numeric_out_writes_them() {
        // Values and their send bytes as PostgreSQL 15 writes them (`SELECT numeric_send(…)`).
        assert_eq!(dec(&num(0, 0, 0, 0, &[])), "0");
        assert_eq!(dec(&num(0, 0, 0, 3, &[])), "0.000");
        assert_eq!(
            dec(&num(4, 2, 0x4000, 3, &[1, 2345, 6789, 1230])),
            "-123456789.123"
        );
        assert_eq!(dec(&num(1, -5, 0, 20, &[1])), "0.00000000000000000001");
        assert_eq!(dec(&num(1, 0, 0, 0, &[7])), "7");
        assert_eq!(dec(&num(1, 1, 0, 0, &[1])), "10000");
        assert_eq!(dec(&num(2, 0, 0, 2, &[12, 3400])), "12.34");
        assert_eq!(numeric(&num(0, 0, 0xC000, 0, &[])), Some(Decimal::NaN));
        assert_eq!(numeric(&num(0, 0, 0xD000, 0, &[])), Some(Decimal::Infinity));
        assert_eq!(
            numeric(&num(0, 0, 0xF000, 0, &[])),
            Some(Decimal::NegInfinity)
        );
        assert_eq!(numeric(&num(1, 0, 0, 0, &[10_000])), None);
    }

    #[test]
    fn float4_reads_as_its_shortest_text() {
        assert_eq!(float4(1.1), 1.1f64);
        assert_eq!(float4(3.402_823_5e38), 3.402_823_5e38f64);
        assert!(float4(f32::NAN).is_nan());
        assert_eq!(float4(f32::NEG_INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    fn dates_times_and_arrays() {
        let d = |days: i32| decode_binary(&ColumnType::Date, &days.to_be_bytes()).unwrap();
        assert_eq!(d(0), Value::Date(Date::from_ymd(2000, 1, 1).unwrap()));
        assert_eq!(d(i32::MAX), Value::Date(Date::INFINITY));
        let mut ttz = 3_600_000_000i64.to_be_bytes().to_vec();
        ttz.extend(28_800i32.to_be_bytes());
        assert_eq!(
            decode_binary(&ColumnType::TimeTz, &ttz).unwrap(),
            Value::TimeTz(TimeTz::parse_iso("01:00:00-08").unwrap())
        );
        // int4[][] {{1,2},{3,NULL}} with lower bounds 1.
        let mut a = Vec::new();
        for v in [2i32, 1, 23, 2, 1, 2, 1] {
            a.extend(v.to_be_bytes());
        }
        for v in [Some(1i32), Some(2), Some(3), None] {
            match v {
                Some(v) => {
                    a.extend(4i32.to_be_bytes());
                    a.extend(v.to_be_bytes());
                }
                None => a.extend((-1i32).to_be_bytes()),
            }
        }
        let ty = ColumnType::Array(Box::new(ColumnType::Int4));
        assert_eq!(
            decode_binary(&ty, &a).unwrap(),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Null]),
            ])
        );
        assert!(decode_binary(&ty, &a[..a.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), which in 0usize..20) {
            let types = [
                ColumnType::Bool, ColumnType::Int2, ColumnType::Int4, ColumnType::Int8, ColumnType::Float4,
                ColumnType::Float8, ColumnType::Numeric, ColumnType::Text, ColumnType::Bytes, ColumnType::Json,
                ColumnType::Jsonb, ColumnType::Uuid, ColumnType::Date, ColumnType::Time, ColumnType::TimeTz,
                ColumnType::Timestamp, ColumnType::TimestampTz, ColumnType::Interval,
                ColumnType::Array(Box::new(ColumnType::Numeric)),
                ColumnType::Array(Box::new(ColumnType::Array(Box::new(ColumnType::Text)))),
            ];
            let _ = decode_binary(&types[which], &bytes);
        }
    }
}
