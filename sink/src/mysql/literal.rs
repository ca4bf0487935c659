//! Values as MySQL SQL literals, for a session with `NO_BACKSLASH_ESCAPES` and `time_zone = '+00:00'`.

use std::fmt::Write;

use ferry_core::{Date, Decimal, Dialect, Timestamp, Value};

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

/// The first year a date `from` a source keeps in MySQL's DATE and DATETIME, which end with 9999. A MySQL
/// source's year 0 goes back as it came. PostgreSQL's year 0 is 1 BC, a leap year, but MySQL's year 0 is no leap
/// year (`0000-02-29` does not exist there, and `DATEDIFF('0001-01-01', '0000-01-01')` is 365): so PostgreSQL's
/// dates start at 0001-01-01, the start MariaDB documents (MySQL documents 1000-01-01 and stores earlier years
/// alike).
fn first_year(from: Dialect) -> i64 {
    match from {
        Dialect::Mysql => 0,
        Dialect::Postgres => 1,
    }
}

/// `YYYY-MM-DD` of a date in MySQL's range for its source; `None` outside it, `±infinity` included.
fn date_text(d: Date, from: Dialect) -> Option<String> {
    let (y, m, day) = d.ymd();
    if !(d.is_finite() && (first_year(from)..=9999).contains(&y)) {
        return None;
    }
    // Written digit by digit: this runs for every date of every row loaded.
    let mut s = String::with_capacity(26);
    push_digits(&mut s, y as u32, 4);
    s.push('-');
    push_digits(&mut s, m, 2);
    s.push('-');
    push_digits(&mut s, day, 2);
    Some(s)
}

/// `n` (below 10^`width`) in `width` digits, zero-padded.
fn push_digits(s: &mut String, mut n: u32, width: usize) {
    let mut digits = [b'0'; 6];
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    s.extend(digits[..width].iter().map(|&d| d as char));
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` of a UTC timestamp in MySQL's DATETIME range (see [`date_text`]).
fn datetime_text(t: Timestamp, from: Dialect) -> Option<String> {
    let (date, rest) = t.date_time()?;
    let mut s = date_text(date, from)?;
    let secs = (rest / 1_000_000) as u32;
    s.push(' ');
    push_digits(&mut s, secs / 3600, 2);
    s.push(':');
    push_digits(&mut s, secs / 60 % 60, 2);
    s.push(':');
    push_digits(&mut s, secs % 60, 2);
    if rest % 1_000_000 != 0 {
        s.push('.');
        push_digits(&mut s, (rest % 1_000_000) as u32, 6);
    }
    Some(s)
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

/// A value's literal, or why MySQL cannot hold it (quoting the value). `from` is the source's dialect.
fn lit(v: &Value, kind: TargetKind, from: Dialect) -> Result<Lit<'_>, String> {
    let range = || {
        match from {
        Dialect::Mysql => "outside MySQL's 0000-01-01 .. 9999-12-31",
        Dialect::Postgres => {
            "outside MySQL's 0001-01-01 .. 9999-12-31 (MySQL's year 0000 is not 1 BC: it has no leap day)"
        }
    }
    };
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
        Value::Float(f) => return Err(format!("{f} (MySQL floats have no NaN or infinity)")),
        Value::Decimal(Decimal::Finite(s)) => Lit::Raw(s.clone()),
        Value::Decimal(d) => {
            return Err(format!(
                "decimal {d} (MySQL decimals have no NaN or infinity)"
            ))
        }
        Value::Text(s) | Value::Json(s) | Value::ZeroDate(s) => {
            Lit::Str(std::borrow::Cow::Borrowed(s))
        }
        Value::Bytes(b) => Lit::Bin(b),
        Value::Uuid(u) => owned(u.to_string()),
        Value::Date(d) => {
            owned(date_text(*d, from).ok_or_else(|| format!("date {d} is {}", range()))?)
        }
        Value::Time(t) => owned(t.to_string()),
        Value::TimeTz(t) => owned(t.to_string()),
        Value::Timestamp(t) => {
            owned(datetime_text(*t, from).ok_or_else(|| format!("timestamp {t} is {}", range()))?)
        }
        Value::TimestampTz(t) => owned(
            datetime_text(*t, from)
                .ok_or_else(|| format!("timestamptz {} is {}", t.display_utc(), range()))?,
        ),
        Value::Interval(i) => match kind {
            TargetKind::Time if i.months == 0 => {
                owned(time_text(i.micros + i64::from(i.days) * 86_400_000_000))
            }
            _ => owned(i.to_string()),
        },
        Value::Array(_) => owned(crate::sqlite::json_array(v)),
    })
}

/// The SQL literal for `v` (from a `from` source) in a column of `kind`, or why MySQL cannot hold the value (for
/// [`crate::rows::unwritable`]).
pub fn literal(v: &Value, kind: TargetKind, from: Dialect) -> Result<String, String> {
    Ok(match lit(v, kind, from)? {
        Lit::Null => "NULL".into(),
        Lit::Raw(s) => s,
        Lit::Str(s) => text(&s),
        Lit::Bin(b) => hex(b),
    })
}

/// Appends `v` as one field of a `LOAD DATA` file (tab-separated, backslash escapes, `\N` for NULL), or says
/// why MySQL cannot hold it.
pub fn load_field(
    out: &mut Vec<u8>,
    v: &Value,
    kind: TargetKind,
    from: Dialect,
) -> Result<(), String> {
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
    match lit(v, kind, from)? {
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

    fn pg(v: &Value, kind: TargetKind) -> Result<String, String> {
        literal(v, kind, Dialect::Postgres)
    }

    #[test]
    fn literals_are_exact_and_quoted() {
        assert_eq!(text("it's \\ fine"), "'it''s \\ fine'");
        assert_eq!(
            pg(&Value::Bytes(vec![0, 0xab]), TargetKind::Other).unwrap(),
            "X'00AB'"
        );
        assert_eq!(pg(&Value::Float(1.5), TargetKind::Other).unwrap(), "1.5");
        assert_eq!(
            pg(&Value::Float(1e300), TargetKind::Other).unwrap(),
            "1e300"
        );
        assert!(pg(&Value::Float(f64::NAN), TargetKind::Other).is_err());
        let t = Value::Interval(Interval {
            months: 0,
            days: 0,
            micros: -(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 5,
        });
        assert_eq!(
            literal(&t, TargetKind::Time, Dialect::Mysql).unwrap(),
            "'-838:59:59.000005'"
        );
        let mut field = Vec::new();
        load_field(
            &mut field,
            &Value::Text("a\tb\\c\nd\0".into()),
            TargetKind::Other,
            Dialect::Postgres,
        )
        .unwrap();
        assert_eq!(field, b"a\\tb\\\\c\\nd\\0");
        field.clear();
        load_field(
            &mut field,
            &Value::Null,
            TargetKind::Other,
            Dialect::Postgres,
        )
        .unwrap();
        assert_eq!(field, b"\\N");
        let ts = Value::Timestamp(Timestamp::from_unix_micros(1_700_000_000_123_456));
        assert_eq!(
            pg(&ts, TargetKind::Other).unwrap(),
            "'2023-11-14 22:13:20.123456'"
        );
    }

    #[test]
    fn dates_outside_mysqls_range_are_refused_naming_the_value() {
        let date = |s: &str| pg(&Value::Date(Date::parse_iso(s).unwrap()), TargetKind::Other);
        let ts = |s: &str| {
            pg(
                &Value::Timestamp(Timestamp::parse_iso(s).unwrap()),
                TargetKind::Other,
            )
        };
        let tstz = |s: &str| {
            pg(
                &Value::TimestampTz(Timestamp::parse_iso_tz(s).unwrap()),
                TargetKind::Other,
            )
        };
        assert_eq!(date("0001-01-01").unwrap(), "'0001-01-01'");
        assert_eq!(date("9999-12-31").unwrap(), "'9999-12-31'");
        assert_eq!(
            ts("9999-12-31 23:59:59.999999").unwrap(),
            "'9999-12-31 23:59:59.999999'"
        );
        assert_eq!(ts("0001-01-01 00:00:00").unwrap(), "'0001-01-01 00:00:00'");
        const RANGE: &str =
            "outside MySQL's 0001-01-01 .. 9999-12-31 (MySQL's year 0000 is not 1 BC: it has no leap day)";
        assert_eq!(
            date("10000-01-01").unwrap_err(),
            format!("date 10000-01-01 is {RANGE}")
        );
        assert_eq!(
            date("0001-12-31 BC").unwrap_err(),
            format!("date 0001-12-31 BC is {RANGE}")
        );
        assert!(date("infinity").unwrap_err().starts_with("date infinity "));
        assert_eq!(
            ts("294276-12-31 23:59:59.999999").unwrap_err(),
            format!("timestamp 294276-12-31 23:59:59.999999 is {RANGE}")
        );
        assert!(ts("-infinity")
            .unwrap_err()
            .starts_with("timestamp -infinity "));
        assert_eq!(
            tstz("4714-11-24 00:00:00+00 BC").unwrap_err(),
            format!("timestamptz 4714-11-24 00:00:00+00 BC is {RANGE}")
        );
        // A MySQL source's year 0 goes back as it came.
        let zero = Value::Date(Date::from_ymd(0, 3, 1).unwrap());
        assert_eq!(
            literal(&zero, TargetKind::Other, Dialect::Mysql).unwrap(),
            "'0000-03-01'"
        );
        // TIME reaches 838 hours: PostgreSQL's 24:00:00 is exact.
        let midnight = Value::Time(ferry_core::Time::parse_iso("24:00:00").unwrap());
        assert_eq!(pg(&midnight, TargetKind::Other).unwrap(), "'24:00:00'");
    }
}
