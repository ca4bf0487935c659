//! Row images of WRITE / UPDATE / DELETE rows events, decoded into typed values. Every read is bounds-checked:
//! malformed bytes give an error, never a panic.

use ferry_core::{Date, Decimal, Interval, Row, RowOp, Timestamp, Value};
use mysql_common::binlog::decimal::Decimal as BinDecimal;

use super::jsonb;
use super::layout::{ColumnLayout, Wire};

/// A malformed or unsupported row image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

/// A row image whose column `column` (an index into the layout) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    pub column: Option<usize>,
    pub error: RowError,
}

impl From<RowError> for ImageError {
    fn from(error: RowError) -> Self {
        ImageError {
            column: None,
            error,
        }
    }
}

impl ImageError {
    /// The error with the column named from `names` (the layout's schema columns).
    pub fn describe(&self, names: &[ferry_core::Column]) -> String {
        match self.column {
            Some(i) => format!(
                "column {}: {}",
                names
                    .get(i)
                    .map_or_else(|| (i + 1).to_string(), |c| c.name.clone()),
                self.error
            ),
            None => self.error.0.clone(),
        }
    }
}

fn short(what: &str) -> RowError {
    RowError(format!("row image ends inside {what}"))
}

/// A bounds-checked cursor over row bytes.
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], RowError> {
        if self.buf.len() < n {
            return Err(short(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn uint_le(&mut self, n: usize, what: &str) -> Result<u64, RowError> {
        let b = self.take(n, what)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn uint_be(&mut self, n: usize, what: &str) -> Result<u64, RowError> {
        let b = self.take(n, what)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }
}

/// Which columns an image holds (the rows event's column bitmap).
pub type Present<'a> = &'a [bool];

/// Decodes one row image: its NULL bitmap, then each present non-NULL column. Columns not in the image are
/// [`Value::Unchanged`].
pub fn decode_image(
    cur: &mut Cursor<'_>,
    layout: &[ColumnLayout],
    present: Present<'_>,
) -> Result<Row, ImageError> {
    decode_partial_image(cur, layout, present, &[], None)
}

/// Like [`decode_image`]; columns flagged in `partial` hold JSON diffs against `before`'s value (MySQL's
/// PARTIAL_UPDATE_ROWS).
fn decode_partial_image(
    cur: &mut Cursor<'_>,
    layout: &[ColumnLayout],
    present: Present<'_>,
    partial: &[bool],
    before: Option<&Row>,
) -> Result<Row, ImageError> {
    let at = |i: usize| {
        move |error: RowError| ImageError {
            column: Some(i),
            error,
        }
    };
    let count = present.iter().filter(|p| **p).count();
    let nulls = cur.take(count.div_ceil(8), "the NULL bitmap")?;
    let mut row = Vec::with_capacity(layout.len());
    let mut n = 0;
    for (i, column) in layout.iter().enumerate() {
        if !present.get(i).copied().unwrap_or(false) {
            row.push(Value::Unchanged);
            continue;
        }
        let is_null = nulls[n / 8] & (1 << (n % 8)) != 0;
        n += 1;
        let value = if is_null {
            Value::Null
        } else if partial.get(i).copied().unwrap_or(false) {
            let Wire::Json { len_bytes } = column.wire else {
                return Err(at(i)(RowError(
                    "partial update of a non-JSON column".into(),
                )));
            };
            let len_bytes = if (1..=4).contains(&len_bytes) {
                len_bytes
            } else {
                4
            };
            let len = cur
                .uint_le(usize::from(len_bytes), "a JSON diff length")
                .map_err(at(i))? as usize;
            let diffs = cur.take(len, "JSON diffs").map_err(at(i))?;
            let base = match before.and_then(|b| b.get(i)) {
                Some(Value::Json(text)) => text.as_str(),
                _ => {
                    return Err(at(i)(RowError(
                        "a partial JSON update, but the before image lacks the old document to apply it to; set binlog_row_image = FULL (or binlog_row_value_options = '') on the source".into(),
                    )))
                }
            };
            Value::Json(
                jsonb::apply_diffs(base, diffs)
                    .map_err(RowError)
                    .map_err(at(i))?,
            )
        } else {
            decode_value(cur, column).map_err(at(i))?
        };
        row.push(value);
    }
    Ok(row)
}

/// The rows of one event: inserts / deletes have one image per row, updates two (before, after).
/// `partial_json` for MySQL's PARTIAL_UPDATE_ROWS, whose after images start with value options
/// and a bitmap of the JSON columns sent as diffs.
pub fn decode_rows(
    data: &[u8],
    layout: &[ColumnLayout],
    kind: RowsKind,
    before: Present<'_>,
    after: Present<'_>,
    partial_json: bool,
) -> Result<Vec<RowOp>, ImageError> {
    let mut cur = Cursor::new(data);
    let mut out = Vec::new();
    while !cur.is_empty() {
        let left = cur.remaining();
        out.push(match kind {
            RowsKind::Write => RowOp::Insert {
                after: decode_image(&mut cur, layout, after)?,
            },
            RowsKind::Delete => RowOp::Delete {
                before: decode_image(&mut cur, layout, before)?,
            },
            RowsKind::Update => {
                let old = decode_image(&mut cur, layout, before)?;
                let partial = if partial_json {
                    partial_columns(&mut cur, layout)?
                } else {
                    Vec::new()
                };
                let new = decode_partial_image(&mut cur, layout, after, &partial, Some(&old))?;
                RowOp::Update {
                    before: Some(old),
                    after: new,
                }
            }
        });
        // A row that takes no bytes (no column present) would repeat forever on malformed input.
        if cur.remaining() == left {
            return Err(ImageError {
                column: None,
                error: RowError("a row image with no bytes".into()),
            });
        }
    }
    Ok(out)
}

/// The value options of a partial after image and, with PARTIAL_JSON_UPDATES set, which JSON columns (in column
/// order) carry diffs.
fn partial_columns(cur: &mut Cursor<'_>, layout: &[ColumnLayout]) -> Result<Vec<bool>, RowError> {
    let options = lenenc(cur)?;
    let mut partial = vec![false; layout.len()];
    if options & 1 == 0 {
        return Ok(partial);
    }
    let json: Vec<usize> = (0..layout.len())
        .filter(|&i| matches!(layout[i].wire, Wire::Json { .. }))
        .collect();
    let bits = cur.take(json.len().div_ceil(8), "the partial JSON bitmap")?;
    for (n, &i) in json.iter().enumerate() {
        partial[i] = bits[n / 8] & (1 << (n % 8)) != 0;
    }
    Ok(partial)
}

/// A length-encoded integer.
pub fn lenenc(cur: &mut Cursor<'_>) -> Result<u64, RowError> {
    let first = cur.take(1, "a length")?[0];
    let n = match first {
        0..=250 => return Ok(u64::from(first)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return Err(RowError(format!("length prefix {first:#x}"))),
    };
    let b = cur.take(n, "a length")?;
    Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsKind {
    Write,
    Update,
    Delete,
}

/// Sign-extends the low `bits` of `v`.
fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Fractional seconds after a TIME2 / DATETIME2 / TIMESTAMP2 integer part: 1, 2 or 3 bytes for 1–2, 3–4, 5–6
/// digits, scaled to microseconds.
fn fraction(cur: &mut Cursor<'_>, fsp: u8) -> Result<(u64, usize), RowError> {
    let bytes = usize::from(fsp).div_ceil(2);
    if bytes == 0 {
        return Ok((0, 0));
    }
    if bytes > 3 {
        return Err(RowError(format!("fractional-second precision {fsp}")));
    }
    let raw = cur.uint_be(bytes, "fractional seconds")?;
    Ok((raw, bytes))
}

fn micros_of_fraction(raw: u64, bytes: usize) -> i64 {
    match bytes {
        1 => raw as i64 * 10_000,
        2 => raw as i64 * 100,
        _ => raw as i64,
    }
}

fn decode_value(cur: &mut Cursor<'_>, c: &ColumnLayout) -> Result<Value, RowError> {
    Ok(match c.wire {
        Wire::Int { bytes } => {
            let bits = u32::from(bytes) * 8;
            let raw = cur.uint_le(usize::from(bytes), "an integer")?;
            if c.unsigned {
                match i64::try_from(raw) {
                    Ok(v) => Value::Int(v),
                    Err(_) => Value::Decimal(Decimal::Finite(raw.to_string())),
                }
            } else {
                Value::Int(sign_extend(raw, bits))
            }
        }
        Wire::Float => {
            let b = cur.take(4, "a FLOAT")?;
            let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            // The shortest decimal that reads back as this f32, so 1.1 stays 1.1 rather than 1.100000023841858.
            Value::Float(f.to_string().parse().unwrap_or(f64::from(f)))
        }
        Wire::Double => {
            let b = cur.take(8, "a DOUBLE")?;
            Value::Float(f64::from_le_bytes(
                b.try_into().map_err(|_| short("a DOUBLE"))?,
            ))
        }
        Wire::Decimal { precision, scale } => {
            if precision == 0 || precision > 65 || scale > 30 || scale > precision {
                return Err(RowError(format!("DECIMAL({precision},{scale})")));
            }
            let size = mysql_common::binlog::decimal::decimal_bin_size(
                usize::from(precision),
                usize::from(scale),
            );
            let bytes = cur.take(size, "a DECIMAL")?;
            if !decimal_groups_valid(bytes, usize::from(precision), usize::from(scale)) {
                return Err(RowError(format!(
                    "DECIMAL({precision},{scale}): a digit group out of range"
                )));
            }
            let d = BinDecimal::read_bin(bytes, usize::from(precision), usize::from(scale), false)
                .map_err(|e| RowError(format!("DECIMAL: {e}")))?;
            Value::Decimal(Decimal::parse(&d.to_string()).map_err(|e| RowError(e.to_string()))?)
        }
        Wire::Year => {
            let y = cur.uint_le(1, "a YEAR")?;
            Value::Int(if y == 0 { 0 } else { 1900 + y as i64 })
        }
        Wire::Date => {
            let v = cur.uint_le(3, "a DATE")?;
            date_value((v >> 9) as i32, ((v >> 5) & 15) as u32, (v & 31) as u32)
        }
        Wire::TimeV1 => {
            let v = sign_extend(cur.uint_le(3, "a TIME")?, 24);
            let (sign, a) = (v.signum(), v.abs());
            let secs = (a / 10_000) * 3600 + (a / 100 % 100) * 60 + a % 100;
            interval(sign * secs * 1_000_000)
        }
        Wire::Time2 { fsp } => {
            // 3 bytes big-endian, offset by 0x800000: sign, 10 bits hour, 6 minute, 6 second.
            let int_part = cur.uint_be(3, "a TIME")? as i64 - 0x80_0000;
            let (raw, bytes) = fraction(cur, fsp)?;
            let mut frac = micros_of_fraction(raw, bytes);
            let mut int_part = int_part;
            // Negative times store the fraction as its complement (MySQL's my_time_packed_from_binary).
            if int_part < 0 && raw != 0 {
                int_part += 1;
                frac -= match bytes {
                    1 => 0x100 * 10_000,
                    2 => 0x1_0000 * 100,
                    _ => 0x100_0000,
                };
            }
            let packed = (int_part << 24) + frac;
            let (sign, a) = (packed.signum(), packed.abs());
            let hms = a >> 24;
            let micros = a % (1 << 24);
            let secs = ((hms >> 12) & 0x3ff) * 3600 + ((hms >> 6) & 63) * 60 + (hms & 63);
            interval(sign * (secs * 1_000_000 + micros))
        }
        Wire::DatetimeV1 => {
            let v = cur.uint_le(8, "a DATETIME")?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            datetime_value(
                (d / 10_000) as i32,
                (d / 100 % 100) as u32,
                (d % 100) as u32,
                (t / 10_000) as i64,
                (t / 100 % 100) as i64,
                (t % 100) as i64,
                0,
            )
        }
        Wire::Datetime2 { fsp } => {
            // 5 bytes big-endian, offset by 0x8000000000: 17 bits year*13+month, 5 day, 5 hour, 6 minute, 6 second.
            let int_part = cur.uint_be(5, "a DATETIME")? as i64 - 0x80_0000_0000;
            let (raw, bytes) = fraction(cur, fsp)?;
            let frac = micros_of_fraction(raw, bytes);
            let a = int_part.abs();
            let ymd = a >> 17;
            let ym = ymd >> 5;
            let hms = a % (1 << 17);
            datetime_value(
                (ym / 13) as i32,
                (ym % 13) as u32,
                (ymd % 32) as u32,
                hms >> 12,
                (hms >> 6) % 64,
                hms % 64,
                frac,
            )
        }
        Wire::TimestampV1 => {
            let secs = cur.uint_le(4, "a TIMESTAMP")? as i64;
            Value::TimestampTz(Timestamp::from_unix_micros(secs * 1_000_000))
        }
        Wire::Timestamp2 { fsp } => {
            let secs = cur.uint_be(4, "a TIMESTAMP")? as i64;
            let (raw, bytes) = fraction(cur, fsp)?;
            // MySQL writes the zero timestamp as 0 seconds; it reads back as '0000-00-00 00:00:00'.
            if secs == 0 && raw == 0 {
                Value::ZeroDate("0000-00-00 00:00:00".into())
            } else {
                Value::TimestampTz(Timestamp::from_unix_micros(
                    secs * 1_000_000 + micros_of_fraction(raw, bytes),
                ))
            }
        }
        Wire::Bit { bytes } => Value::Bytes(cur.take(usize::from(bytes), "a BIT")?.to_vec()),
        Wire::Enum { bytes } => {
            let index = cur.uint_le(usize::from(bytes), "an ENUM")? as usize;
            match index {
                // Index 0 is the empty string MySQL stores for an invalid value in non-strict mode.
                0 => Value::Text(String::new()),
                i => Value::Text(c.labels.get(i - 1).cloned().ok_or_else(|| {
                    RowError(format!(
                        "ENUM index {i} but the column has {} labels",
                        c.labels.len()
                    ))
                })?),
            }
        }
        Wire::Set { bytes } => {
            let bits = cur.uint_le(usize::from(bytes), "a SET")?;
            let mut chosen = Vec::new();
            for bit in 0..64 {
                if bits & (1 << bit) != 0 {
                    chosen.push(c.labels.get(bit).map(String::as_str).ok_or_else(|| {
                        RowError(format!(
                            "SET bit {bit} but the column has {} labels",
                            c.labels.len()
                        ))
                    })?);
                }
            }
            Value::Text(chosen.join(","))
        }
        Wire::String { len_bytes, fixed } => {
            let len = cur.uint_le(usize::from(len_bytes), "a string length")? as usize;
            let bytes = cur.take(len, "a string")?;
            match fixed {
                Some(size) if c.binary && bytes.len() < usize::from(size) => {
                    let mut padded = bytes.to_vec();
                    padded.resize(usize::from(size), 0);
                    Value::Bytes(padded)
                }
                _ => string_value(bytes, c)?,
            }
        }
        Wire::Blob { len_bytes } => {
            if !(1..=4).contains(&len_bytes) {
                return Err(RowError(format!("BLOB length of {len_bytes} bytes")));
            }
            let len = cur.uint_le(usize::from(len_bytes), "a BLOB length")? as usize;
            string_value(cur.take(len, "a BLOB")?, c)?
        }
        Wire::Json { len_bytes } => {
            let len_bytes = if (1..=4).contains(&len_bytes) {
                len_bytes
            } else {
                4
            };
            let len = cur.uint_le(usize::from(len_bytes), "a JSON length")? as usize;
            let doc = cur.take(len, "a JSON document")?;
            Value::Json(jsonb::to_json_text(doc).map_err(|e| RowError(format!("JSON: {e}")))?)
        }
        Wire::Null => Value::Null,
    })
}

/// A CHAR / VARCHAR / TEXT value decoded from the column's character set, or bytes (BINARY, BLOB, the `binary`
/// character set).
fn string_value(bytes: &[u8], c: &ColumnLayout) -> Result<Value, RowError> {
    if c.binary {
        return Ok(Value::Bytes(bytes.to_vec()));
    }
    c.charset.value(bytes).map_err(RowError)
}

fn interval(micros: i64) -> Value {
    Value::Interval(Interval {
        months: 0,
        days: 0,
        micros,
    })
}

/// A DATE; MySQL's zero dates (`0000-00-00`, `2024-00-00`) have no calendar value and travel as their text.
pub fn date_value(year: i32, month: u32, day: u32) -> Value {
    Date::from_ymd(year, month, day).map_or_else(
        || Value::ZeroDate(format!("{year:04}-{month:02}-{day:02}")),
        Value::Date,
    )
}

/// A DATETIME; with zero date parts, MySQL's text.
pub fn datetime_value(
    year: i32,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    micros: i64,
) -> Value {
    let of_day = ((hour * 60 + minute) * 60 + second) * 1_000_000 + micros;
    match Date::from_ymd(year, month, day).and_then(|d| Timestamp::from_date_time(d, of_day)) {
        Some(t) => Value::Timestamp(t),
        None => {
            let mut text =
                format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}");
            if micros != 0 {
                text.push_str(&format!(".{micros:06}"));
            }
            Value::ZeroDate(text)
        }
    }
}

/// Whether `bytes` is a binary DECIMAL of a declarable `precision` and `scale` (MySQL allows up to 65 digits, 30
/// after the point), with every digit group within its range.
pub fn decimal_valid(bytes: &[u8], precision: usize, scale: usize) -> bool {
    (1..=65).contains(&precision)
        && scale <= 30
        && scale <= precision
        && decimal_groups_valid(bytes, precision, scale)
}

/// Whether MySQL's binary DECIMAL (groups of up to 9 decimal digits, big-endian, the sign in the first bit and
/// negative values inverted) holds only digit groups within their range: mysql_common's reader assumes it does.
fn decimal_groups_valid(bytes: &[u8], precision: usize, scale: usize) -> bool {
    const DIG_TO_BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let intg = precision.saturating_sub(scale);
    let groups: Vec<usize> = std::iter::once(intg % 9)
        .chain(std::iter::repeat_n(9, intg / 9))
        .chain(std::iter::repeat_n(9, scale / 9))
        .chain(std::iter::once(scale % 9))
        .filter(|&d| d > 0)
        .collect();
    if bytes.is_empty() || groups.iter().map(|&d| DIG_TO_BYTES[d]).sum::<usize>() != bytes.len() {
        return false;
    }
    let negative = bytes[0] & 0x80 == 0;
    let mut at = 0;
    groups.iter().all(|&digits| {
        let len = DIG_TO_BYTES[digits];
        let value = bytes[at..at + len]
            .iter()
            .enumerate()
            .fold(0u64, |v, (i, &b)| {
                let b = if at + i == 0 { b ^ 0x80 } else { b };
                (v << 8) | u64::from(if negative { !b } else { b })
            });
        at += len;
        value < 10u64.pow(digits as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(wire: Wire, unsigned: bool) -> ColumnLayout {
        ColumnLayout {
            wire,
            unsigned,
            binary: false,
            charset: crate::mysql::charset::Charset::UTF8MB4,
            labels: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    fn one(bytes: &[u8], c: ColumnLayout) -> Value {
        decode_value(&mut Cursor::new(bytes), &c).unwrap()
    }

    #[test]
    fn signed_mediumint_is_sign_extended() {
        assert_eq!(
            one(&[0xff, 0xff, 0xff], col(Wire::Int { bytes: 3 }, false)),
            Value::Int(-1)
        );
        assert_eq!(
            one(&[0x00, 0x00, 0x80], col(Wire::Int { bytes: 3 }, false)),
            Value::Int(-8_388_608)
        );
        assert_eq!(
            one(&[0xff, 0xff, 0xff], col(Wire::Int { bytes: 3 }, true)),
            Value::Int(16_777_215)
        );
    }

    #[test]
    fn unsigned_bigint_beyond_i64_is_exact() {
        assert_eq!(
            one(&[0xff; 8], col(Wire::Int { bytes: 8 }, true)),
            Value::Decimal(Decimal::Finite("18446744073709551615".into()))
        );
        assert_eq!(
            one(&[0xff; 8], col(Wire::Int { bytes: 8 }, false)),
            Value::Int(-1)
        );
    }

    #[test]
    fn enum_and_set_become_labels() {
        assert_eq!(
            one(&[2], col(Wire::Enum { bytes: 1 }, false)),
            Value::Text("b".into())
        );
        assert_eq!(
            one(&[0b101], col(Wire::Set { bytes: 1 }, false)),
            Value::Text("a,c".into())
        );
        assert!(
            decode_value(&mut Cursor::new(&[9]), &col(Wire::Enum { bytes: 1 }, false)).is_err()
        );
    }

    #[test]
    fn enum_index_zero_is_the_empty_string_and_an_empty_set_is_empty() {
        // Index 0: the '' MySQL stores for an invalid value under a non-strict sql_mode.
        assert_eq!(
            one(&[0], col(Wire::Enum { bytes: 1 }, false)),
            Value::Text(String::new())
        );
        assert_eq!(
            one(&[0, 0], col(Wire::Enum { bytes: 2 }, false)),
            Value::Text(String::new())
        );
        assert_eq!(
            one(&[0], col(Wire::Set { bytes: 1 }, false)),
            Value::Text(String::new())
        );
    }

    #[test]
    fn strings_decode_from_their_column_character_set() {
        use crate::mysql::charset::Charset;
        let string = |charset: &str| ColumnLayout {
            charset: Charset::from_name(charset).unwrap(),
            ..col(
                Wire::String {
                    len_bytes: 1,
                    fixed: None,
                },
                false,
            )
        };
        assert_eq!(
            one(b"\x04\x80uro", string("latin1")),
            Value::Text("€uro".into())
        );
        assert_eq!(
            one(b"\x02\xC3\xA9", string("latin1")),
            Value::Text("Ã©".into())
        );
        assert_eq!(
            one(b"\x04\xD6\xD0\xCE\xC4", string("gbk")),
            Value::Text("中文".into())
        );
        let blob = ColumnLayout {
            charset: Charset::from_name("cp1251").unwrap(),
            ..col(Wire::Blob { len_bytes: 2 }, false)
        };
        assert_eq!(one(b"\x02\x00\xCF\xF0", blob), Value::Text("Пр".into()));
        // Bytes that are not valid in the column's character set stop with the column named, never mojibake.
        let layout = vec![string("utf8mb4")];
        let err = decode_rows(
            b"\x00\x02\xC3\x28",
            &layout,
            RowsKind::Write,
            &[true],
            &[true],
            false,
        )
        .unwrap_err();
        assert_eq!(err.column, Some(0));
        assert!(err.error.0.contains("0xC328"), "{err:?}");
    }

    #[test]
    fn negative_time2_with_fraction() {
        // -00:00:01.5 at fsp 1: MySQL writes the packed value's floor int part (-2 + 0x800000) and the fraction
        // as a signed byte (-50).
        let v = one(
            &[0x7f, 0xff, 0xfe, 0xce],
            col(Wire::Time2 { fsp: 1 }, false),
        );
        assert_eq!(v, interval(-1_500_000));
        // 838:59:59 at fsp 0.
        let hms: i64 = (838 << 12) | (59 << 6) | 59;
        let raw = (hms + 0x80_0000) as u32;
        let b = raw.to_be_bytes();
        assert_eq!(
            one(&b[1..], col(Wire::Time2 { fsp: 0 }, false)),
            interval((838 * 3600 + 59 * 60 + 59) * 1_000_000)
        );
    }

    #[test]
    fn truncated_images_are_errors() {
        let layout = vec![col(Wire::Int { bytes: 4 }, false)];
        assert!(decode_rows(
            &[0, 1, 2],
            &layout,
            RowsKind::Write,
            &[true],
            &[true],
            false
        )
        .is_err());
        assert!(decode_rows(
            &[0, 1, 0, 0, 0],
            &layout,
            RowsKind::Write,
            &[true],
            &[true],
            false
        )
        .is_ok());
    }

    /// cargo-fuzz ran out of memory on a rows event whose images hold no column: each row took no bytes, so the
    /// loop pushed rows forever. A row image must consume bytes.
    #[test]
    fn a_row_image_that_takes_no_bytes_is_an_error_not_an_endless_loop() {
        let layout = [col(Wire::Int { bytes: 4 }, false)];
        let err = decode_rows(
            &[0, 0, 0],
            &layout,
            RowsKind::Write,
            &[false],
            &[false],
            false,
        )
        .unwrap_err();
        assert!(err.error.0.contains("no bytes"), "{}", err.error.0);
    }
}
