//! Values as MySQL SQL literals, for a session with `NO_BACKSLASH_ESCAPES` and `time_zone = '+00:00'`.

use std::fmt::Write;

use ferry_core::{Date, Decimal, Error, Timestamp, Value};

use super::ddl::TargetKind;

/// Quotes an identifier with backquotes.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal: quotes doubled (the session has NO_BACKSLASH_ESCAPES, so backslashes are plain).
pub fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn hex(b: &[u8]) -> String {
    let mut out = String::with_capacity(3 + b.len() * 2);
    out.push_str("X'");
    for byte in b {
        let _ = write!(out, "{byte:02X}");
    }
    out.push('\'');
    out
}

/// `[-]H:MM:SS[.ffffff]`: MySQL's TIME form of a signed duration.
fn time_text(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let a = micros.unsigned_abs();
    let secs = a / 1_000_000;
    let frac = a % 1_000_000;
    let mut s = format!(
        "{sign}{}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let _ = write!(s, ".{frac:06}");
    }
    s
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` of a UTC timestamp.
fn datetime_text(t: Timestamp) -> Result<String, String> {
    if t == Timestamp::INFINITY || t == Timestamp::NEG_INFINITY {
        return Err("MySQL has no infinite timestamps".into());
    }
    let days = t.0.div_euclid(86_400_000_000);
    let rest = t.0.rem_euclid(86_400_000_000);
    let (y, m, d) = Date(days as i32).ymd();
    if !(0..=9999).contains(&y) {
        return Err(format!("year {y} is outside MySQL's range"));
    }
    let secs = rest / 1_000_000;
    let mut s = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if rest % 1_000_000 != 0 {
        let _ = write!(s, ".{:06}", rest % 1_000_000);
    }
    Ok(s)
}

/// A value's MySQL form before quoting.
enum Lit<'a> {
    Null,
    /// Numbers: written as they are.
    Raw(String),
    /// Text: quoted in SQL.
    Str(std::borrow::Cow<'a, str>),
    Bin(&'a [u8]),
}

fn lit(v: &Value, kind: TargetKind) -> Result<Lit<'_>, Error> {
    let bad = |why: String| Error::fatal(format!("value cannot be written to MySQL: {why}"));
    let owned = |s: String| Lit::Str(std::borrow::Cow::Owned(s));
    Ok(match v {
        Value::Null | Value::Unchanged => Lit::Null,
        Value::Bool(b) => Lit::Raw(if *b { "1" } else { "0" }.into()),
        Value::Int(i) => Lit::Raw(i.to_string()),
        Value::Float(f) if f.is_finite() => {
            let s = format!("{f:?}");
            Lit::Raw(if s.contains('e') || s.contains('E') {
                format!("{f:e}")
            } else {
                s
            })
        }
        Value::Float(f) => return Err(bad(format!("{f} (MySQL floats have no NaN or infinity)"))),
        Value::Decimal(Decimal::Finite(s)) => Lit::Raw(s.clone()),
        Value::Decimal(d) => return Err(bad(format!("decimal {d}"))),
        Value::Text(s) | Value::Json(s) | Value::ZeroDate(s) => {
            Lit::Str(std::borrow::Cow::Borrowed(s))
        }
        Value::Bytes(b) => Lit::Bin(b),
        Value::Uuid(u) => owned(u.to_string()),
        Value::Date(d) => {
            let (y, m, day) = d.ymd();
            if !(0..=9999).contains(&y) {
                return Err(bad(format!("date {d}")));
            }
            owned(format!("{y:04}-{m:02}-{day:02}"))
        }
        Value::Time(t) => owned(t.to_string()),
        Value::TimeTz(t) => owned(t.to_string()),
        Value::Timestamp(t) | Value::TimestampTz(t) => owned(datetime_text(*t).map_err(bad)?),
        Value::Interval(i) => match kind {
            TargetKind::Time if i.months == 0 => {
                owned(time_text(i.micros + i64::from(i.days) * 86_400_000_000))
            }
            _ => owned(i.to_string()),
        },
        Value::Array(_) => owned(crate::sqlite::json_array(v)),
    })
}

/// The SQL literal for `v` in a column of `kind`.
pub fn literal(v: &Value, kind: TargetKind) -> Result<String, Error> {
    Ok(match lit(v, kind)? {
        Lit::Null => "NULL".into(),
        Lit::Raw(s) => s,
        Lit::Str(s) => text(&s),
        Lit::Bin(b) => hex(b),
    })
}

/// Appends `v` as one field of a `LOAD DATA` file (tab-separated, backslash escapes, `\N` for NULL).
pub fn load_field(out: &mut Vec<u8>, v: &Value, kind: TargetKind) -> Result<(), Error> {
    let escape = |out: &mut Vec<u8>, bytes: &[u8]| {
        for &b in bytes {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                0 => out.extend_from_slice(b"\\0"),
                b => out.push(b),
            }
        }
    };
    match lit(v, kind)? {
        Lit::Null => out.extend_from_slice(b"\\N"),
        Lit::Raw(s) => out.extend_from_slice(s.as_bytes()),
        Lit::Str(s) => escape(out, s.as_bytes()),
        Lit::Bin(b) => escape(out, b),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Interval;

    #[test]
    fn literals_are_exact_and_quoted() {
        assert_eq!(text("it's \\ fine"), "'it''s \\ fine'");
        assert_eq!(
            literal(&Value::Bytes(vec![0, 0xab]), TargetKind::Other).unwrap(),
            "X'00AB'"
        );
        assert_eq!(
            literal(&Value::Float(1.5), TargetKind::Other).unwrap(),
            "1.5"
        );
        assert_eq!(
            literal(&Value::Float(1e300), TargetKind::Other).unwrap(),
            "1e300"
        );
        assert!(literal(&Value::Float(f64::NAN), TargetKind::Other).is_err());
        let t = Value::Interval(Interval {
            months: 0,
            days: 0,
            micros: -(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 5,
        });
        assert_eq!(
            literal(&t, TargetKind::Time).unwrap(),
            "'-838:59:59.000005'"
        );
        let mut field = Vec::new();
        load_field(
            &mut field,
            &Value::Text("a\tb\\c\nd\0".into()),
            TargetKind::Other,
        )
        .unwrap();
        assert_eq!(field, b"a\\tb\\\\c\\nd\\0");
        field.clear();
        load_field(&mut field, &Value::Null, TargetKind::Other).unwrap();
        assert_eq!(field, b"\\N");
        let ts = Value::Timestamp(Timestamp(1_700_000_000_123_456));
        assert_eq!(
            literal(&ts, TargetKind::Other).unwrap(),
            "'2023-11-14 22:13:20.123456'"
        );
    }
}
