//! Dates, times, timestamps and intervals as exact integers, with PostgreSQL's ISO text forms.
//!
//! Representations follow PostgreSQL's own so that every value round-trips exactly: microsecond precision,
//! proleptic Gregorian calendar with astronomical years (1 BC is year 0), and `±infinity` as the extreme integers.

use std::fmt;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// A value that does not parse as the temporal type it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}")]
pub struct TemporalParseError {
    kind: &'static str,
    input: String,
}

fn err(kind: &'static str, input: &str) -> TemporalParseError {
    TemporalParseError {
        kind,
        input: input.to_owned(),
    }
}

/// A calendar date: days since 1970-01-01. `i32::MIN` / `i32::MAX` are `-infinity` / `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

/// A time of day in microseconds since midnight (`24:00:00` is allowed, as in PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub i64);

/// A time of day with a UTC offset in seconds east of Greenwich.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeTz {
    pub micros: i64,
    pub offset_seconds: i32,
}

/// A timestamp in microseconds since 1970-01-01 00:00:00; `i64::MIN` / `i64::MAX` are `-infinity` / `infinity`.
/// Without a zone it is a wall-clock reading; as a `timestamptz` value it is UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// An interval in PostgreSQL's three fields, which do not convert into each other exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date with an astronomical year.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (astronomical year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses `YYYY-MM-DD` (any number of year digits) and an optional trailing ` BC`; returns days since epoch.
fn parse_ymd(s: &str, bc: bool) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1 {
        return None;
    }
    let year = if bc { 1 - year } else { year };
    Some(days_from_civil(year, month, day))
}

fn write_ymd(f: &mut fmt::Formatter<'_>, days: i64) -> Result<bool, fmt::Error> {
    let (year, month, day) = civil_from_days(days);
    let (shown, bc) = if year <= 0 {
        (1 - year, true)
    } else {
        (year, false)
    };
    write!(f, "{shown:04}-{month:02}-{day:02}")?;
    Ok(bc)
}

/// Splits a trailing ` BC` marker off.
fn strip_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

/// The microseconds in a fraction's digits (at most six, already checked): `5` is 500,000. Each digit at its
/// place, without building a padded string: this runs for every timestamp a PostgreSQL source decodes.
fn frac_micros(digits: &str) -> i64 {
    digits
        .bytes()
        .zip([100_000, 10_000, 1_000, 100, 10, 1])
        .map(|(digit, place)| i64::from(digit - b'0') * place)
        .sum()
}

/// Parses `HH:MM:SS[.ffffff]` into microseconds.
fn parse_hms(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec = parts.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = whole.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) || m > 59 || s > 60 || h > 24 {
        return None;
    }
    let frac_micros = frac_micros(frac);
    Some(((h * 60 + m) * 60 + s) * MICROS_PER_SECOND + frac_micros)
}

fn write_hms(f: &mut fmt::Formatter<'_>, micros: i64) -> fmt::Result {
    let secs = micros / MICROS_PER_SECOND;
    let frac = micros % MICROS_PER_SECOND;
    write!(
        f,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )?;
    if frac != 0 {
        // Six digits without their trailing zeros: .5, .000123.
        let (mut digits, mut width) = (frac, 6);
        while digits % 10 == 0 {
            digits /= 10;
            width -= 1;
        }
        write!(f, ".{digits:0width$}")?;
    }
    Ok(())
}

/// Parses a UTC offset `+HH`, `-HH:MM` or `+HH:MM:SS` into seconds east.
fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let mut secs = 0i32;
    let mut scale = 3600;
    for part in rest.split(':') {
        if part.len() != 2 || scale == 0 {
            return None;
        }
        secs += part.parse::<i32>().ok()? * scale;
        scale /= 60;
    }
    Some(sign * secs)
}

fn write_offset(f: &mut fmt::Formatter<'_>, offset: i32) -> fmt::Result {
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.abs();
    write!(f, "{sign}{:02}:{:02}", a / 3600, a / 60 % 60)?;
    if a % 60 != 0 {
        write!(f, ":{:02}", a % 60)?;
    }
    Ok(())
}

impl Date {
    pub const NEG_INFINITY: Date = Date(i32::MIN);
    pub const INFINITY: Date = Date(i32::MAX);

    /// A calendar date (astronomical year); `None` for month or day out of range (MySQL's zero dates).
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return None;
        }
        i32::try_from(days_from_civil(i64::from(year), month, day))
            .ok()
            .map(Date)
    }

    /// The (astronomical year, month, day) of this date.
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(i64::from(self.0))
    }

    /// Parses PostgreSQL's ISO date output (`2024-01-31`, `0044-03-15 BC`, `infinity`).
    pub fn parse_iso(s: &str) -> Result<Date, TemporalParseError> {
        match s {
            "infinity" => return Ok(Date::INFINITY),
            "-infinity" => return Ok(Date::NEG_INFINITY),
            _ => {}
        }
        let (body, bc) = strip_bc(s);
        let days = parse_ymd(body, bc).ok_or_else(|| err("date", s))?;
        i32::try_from(days).map(Date).map_err(|_| err("date", s))
    }
}

impl fmt::Display for Date {
    /// PostgreSQL's ISO form, which PostgreSQL accepts back as input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Date::INFINITY => f.write_str("infinity"),
            Date::NEG_INFINITY => f.write_str("-infinity"),
            Date(days) => {
                if write_ymd(f, i64::from(days))? {
                    f.write_str(" BC")?;
                }
                Ok(())
            }
        }
    }
}

impl Time {
    pub fn parse_iso(s: &str) -> Result<Time, TemporalParseError> {
        parse_hms(s).map(Time).ok_or_else(|| err("time", s))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hms(f, self.0)
    }
}

impl TimeTz {
    pub fn parse_iso(s: &str) -> Result<TimeTz, TemporalParseError> {
        let at = s.rfind(['+', '-']).ok_or_else(|| err("timetz", s))?;
        let micros = parse_hms(&s[..at]).ok_or_else(|| err("timetz", s))?;
        let offset_seconds = parse_offset(&s[at..]).ok_or_else(|| err("timetz", s))?;
        Ok(TimeTz {
            micros,
            offset_seconds,
        })
    }
}

impl fmt::Display for TimeTz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hms(f, self.micros)?;
        write_offset(f, self.offset_seconds)
    }
}

impl Timestamp {
    pub const NEG_INFINITY: Timestamp = Timestamp(i64::MIN);
    pub const INFINITY: Timestamp = Timestamp(i64::MAX);

    /// Parses `timestamp` output in ISO style (`2024-01-31 12:00:00.5`, `... BC`, `infinity`).
    pub fn parse_iso(s: &str) -> Result<Timestamp, TemporalParseError> {
        Self::parse_inner(s, false).ok_or_else(|| err("timestamp", s))
    }

    /// Parses `timestamptz` output in ISO style with any UTC offset (`2024-01-31 12:00:00+00`,
    /// `0044-03-15 10:00:00+00 BC`), normalised to UTC.
    pub fn parse_iso_tz(s: &str) -> Result<Timestamp, TemporalParseError> {
        Self::parse_inner(s, true).ok_or_else(|| err("timestamptz", s))
    }

    fn parse_inner(s: &str, with_zone: bool) -> Option<Timestamp> {
        match s {
            "infinity" => return Some(Timestamp::INFINITY),
            "-infinity" => return Some(Timestamp::NEG_INFINITY),
            _ => {}
        }
        let (body, bc) = strip_bc(s);
        let (date, time) = body.split_once([' ', 'T'])?;
        let (time, offset) = if with_zone {
            let at = time.rfind(['+', '-'])?;
            (&time[..at], parse_offset(&time[at..])?)
        } else {
            (time, 0)
        };
        let days = parse_ymd(date, bc)?;
        let micros = days
            .checked_mul(MICROS_PER_DAY)?
            .checked_add(parse_hms(time)?)?
            .checked_sub(i64::from(offset) * MICROS_PER_SECOND)?;
        Some(Timestamp(micros))
    }

    fn fmt_with(&self, f: &mut fmt::Formatter<'_>, zone: bool) -> fmt::Result {
        match *self {
            Timestamp::INFINITY => f.write_str("infinity"),
            Timestamp::NEG_INFINITY => f.write_str("-infinity"),
            Timestamp(micros) => {
                let bc = write_ymd(f, micros.div_euclid(MICROS_PER_DAY))?;
                f.write_str(" ")?;
                write_hms(f, micros.rem_euclid(MICROS_PER_DAY))?;
                if zone {
                    f.write_str("+00")?;
                }
                if bc {
                    f.write_str(" BC")?;
                }
                Ok(())
            }
        }
    }

    /// Appends the value in ISO-8601 UTC as Java's `ISO_OFFSET_DATE_TIME` writes it (Debezium's
    /// `ZonedTimestamp`): `2024-01-31T12:00:00.5Z`, `-0043-03-15T…Z` before year 1 (astronomical years),
    /// `+10000-…` after 9999; `infinity` and `-infinity` as PostgreSQL spells them. Written digit by digit: it
    /// runs for every zoned timestamp a Kafka sink publishes.
    pub fn push_iso_utc(&self, out: &mut String) {
        let micros = match *self {
            Timestamp::INFINITY => return out.push_str("infinity"),
            Timestamp::NEG_INFINITY => return out.push_str("-infinity"),
            Timestamp(micros) => micros,
        };
        let push2 = |out: &mut String, n: i64| {
            out.push(char::from(b'0' + (n / 10) as u8));
            out.push(char::from(b'0' + (n % 10) as u8));
        };
        let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
        if year < 0 {
            out.push('-');
        } else if year > 9999 {
            out.push('+');
        }
        let digits = year.unsigned_abs().to_string();
        for _ in digits.len()..4 {
            out.push('0');
        }
        out.push_str(&digits);
        out.push('-');
        push2(out, i64::from(month));
        out.push('-');
        push2(out, i64::from(day));
        out.push('T');
        let of_day = micros.rem_euclid(MICROS_PER_DAY);
        let secs = of_day / MICROS_PER_SECOND;
        push2(out, secs / 3600);
        out.push(':');
        push2(out, secs / 60 % 60);
        out.push(':');
        push2(out, secs % 60);
        let mut frac = of_day % MICROS_PER_SECOND;
        if frac != 0 {
            // Six digits without their trailing zeros.
            let mut width = 6;
            while frac % 10 == 0 {
                frac /= 10;
                width -= 1;
            }
            out.push('.');
            for place in (0..width).rev() {
                out.push(char::from(b'0' + (frac / 10i64.pow(place) % 10) as u8));
            }
        }
        out.push('Z');
    }

    /// Displays the value as a UTC `timestamptz` (`2024-01-31 12:00:00+00`).
    pub fn display_utc(&self) -> impl fmt::Display + '_ {
        struct Utc<'a>(&'a Timestamp);
        impl fmt::Display for Utc<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt_with(f, true)
            }
        }
        Utc(self)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, false)
    }
}

impl Interval {
    /// Parses ISO 8601 interval output (PostgreSQL's `intervalstyle = iso_8601`), e.g. `P1Y2M3DT4H5M6.5S`,
    /// `P-1Y-2M3DT-4H`, `PT0S`.
    pub fn parse_iso(s: &str) -> Result<Interval, TemporalParseError> {
        Self::parse_inner(s).ok_or_else(|| err("interval", s))
    }

    fn parse_inner(s: &str) -> Option<Interval> {
        let rest = s.strip_prefix('P')?;
        let (date_part, time_part) = rest.split_once('T').unwrap_or((rest, ""));
        let mut iv = Interval {
            months: 0,
            days: 0,
            micros: 0,
        };
        for (unit, number) in iso_fields(date_part)? {
            let n: i32 = number.parse().ok()?;
            match unit {
                'Y' => iv.months = iv.months.checked_add(n.checked_mul(12)?)?,
                'M' => iv.months = iv.months.checked_add(n)?,
                'W' => iv.days = iv.days.checked_add(n.checked_mul(7)?)?,
                'D' => iv.days = iv.days.checked_add(n)?,
                _ => return None,
            }
        }
        for (unit, number) in iso_fields(time_part)? {
            let micros = match unit {
                'H' => number
                    .parse::<i64>()
                    .ok()?
                    .checked_mul(3600 * MICROS_PER_SECOND)?,
                'M' => number
                    .parse::<i64>()
                    .ok()?
                    .checked_mul(60 * MICROS_PER_SECOND)?,
                'S' => parse_signed_seconds(number)?,
                _ => return None,
            };
            iv.micros = iv.micros.checked_add(micros)?;
        }
        Some(iv)
    }
}

/// Splits `1Y-2M3D` into `[('Y', "1"), ('M', "-2"), ('D', "3")]`.
fn iso_fields(s: &str) -> Option<Vec<(char, &str)>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c.is_ascii_alphabetic() {
            if i == start {
                return None;
            }
            out.push((c, &s[start..i]));
            start = i + 1;
        }
    }
    (start == s.len()).then_some(out)
}

fn parse_signed_seconds(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_micros = frac_micros(frac);
    let micros = whole
        .parse::<i64>()
        .ok()?
        .checked_mul(MICROS_PER_SECOND)?
        .checked_add(frac_micros)?;
    Some(if neg { -micros } else { micros })
}

impl fmt::Display for Interval {
    /// ISO 8601 form, which PostgreSQL accepts as interval input whatever its `intervalstyle`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        let years = self.months / 12;
        let months = self.months % 12;
        if years != 0 {
            write!(f, "{years}Y")?;
        }
        if months != 0 {
            write!(f, "{months}M")?;
        }
        if self.days != 0 {
            write!(f, "{}D", self.days)?;
        }
        if self.micros != 0 || (self.months == 0 && self.days == 0) {
            let sign = if self.micros < 0 { "-" } else { "" };
            let a = self.micros.unsigned_abs();
            let secs = a / 1_000_000;
            let frac = a % 1_000_000;
            write!(
                f,
                "T{sign}{}H{sign}{}M{sign}{}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            )?;
            if frac != 0 {
                write!(f, ".{}", format!("{frac:06}").trim_end_matches('0'))?;
            }
            f.write_str("S")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_postgres_dates() {
        assert_eq!(Date::parse_iso("1970-01-01").unwrap(), Date(0));
        assert_eq!(
            Date::parse_iso("2000-02-29").unwrap().to_string(),
            "2000-02-29"
        );
        assert_eq!(
            Date::parse_iso("0044-03-15 BC").unwrap().to_string(),
            "0044-03-15 BC"
        );
        assert_eq!(
            Date::parse_iso("0001-01-01 BC").unwrap(),
            Date(days_from_civil(0, 1, 1) as i32)
        );
        assert_eq!(Date::parse_iso("infinity").unwrap(), Date::INFINITY);
        assert!(Date::parse_iso("2000-13-01").is_err());
        assert!(Date::parse_iso("").is_err());
    }

    #[test]
    fn parses_postgres_timestamps() {
        let t = Timestamp::parse_iso("2024-01-31 12:34:56.789").unwrap();
        assert_eq!(t.to_string(), "2024-01-31 12:34:56.789");
        let tz = Timestamp::parse_iso_tz("2024-01-31 12:34:56+05:30").unwrap();
        assert_eq!(tz.display_utc().to_string(), "2024-01-31 07:04:56+00");
        let bc = Timestamp::parse_iso_tz("0044-03-15 10:00:00+00 BC").unwrap();
        assert_eq!(bc.display_utc().to_string(), "0044-03-15 10:00:00+00 BC");
        assert_eq!(
            Timestamp::parse_iso("-infinity").unwrap(),
            Timestamp::NEG_INFINITY
        );
        assert!(Timestamp::parse_iso("2024-01-31").is_err());
    }

    #[test]
    fn parses_times_and_intervals() {
        assert_eq!(Time::parse_iso("24:00:00").unwrap().to_string(), "24:00:00");
        let tz = TimeTz::parse_iso("04:05:06.5-08:00").unwrap();
        assert_eq!(tz.offset_seconds, -8 * 3600);
        assert_eq!(tz.to_string(), "04:05:06.5-08:00");
        let iv = Interval::parse_iso("P1Y2M-3DT4H-5M6.25S").unwrap();
        assert_eq!(
            iv,
            Interval {
                months: 14,
                days: -3,
                micros: (4 * 3600 - 5 * 60) * 1_000_000 + 6_250_000
            }
        );
        assert_eq!(Interval::parse_iso(&iv.to_string()).unwrap(), iv);
        assert_eq!(
            Interval::parse_iso("PT0S").unwrap(),
            Interval {
                months: 0,
                days: 0,
                micros: 0
            }
        );
        assert!(Interval::parse_iso("P1").is_err());
    }

    proptest! {
        #[test]
        fn dates_round_trip(days in -2_000_000i32..2_000_000) {
            let d = Date(days);
            prop_assert_eq!(Date::parse_iso(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn timestamps_round_trip(micros in -200_000_000_000_000_000i64..200_000_000_000_000_000) {
            let t = Timestamp(micros);
            prop_assert_eq!(Timestamp::parse_iso(&t.to_string()).unwrap(), t);
            prop_assert_eq!(Timestamp::parse_iso_tz(&t.display_utc().to_string()).unwrap(), t);
        }

        #[test]
        fn intervals_round_trip(months in any::<i32>(), days in any::<i32>(), micros in -1i64<<50..1i64<<50) {
            let iv = Interval { months: months / 12 * 12 + months % 12, days, micros };
            prop_assert_eq!(Interval::parse_iso(&iv.to_string()).unwrap(), iv);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = Date::parse_iso(&s);
            let _ = Timestamp::parse_iso_tz(&s);
            let _ = TimeTz::parse_iso(&s);
            let _ = Interval::parse_iso(&s);
        }
    }

    #[test]
    fn iso_utc_is_javas_offset_date_time() {
        let iso = |t: Timestamp| {
            let mut out = String::new();
            t.push_iso_utc(&mut out);
            out
        };
        let parse = |s: &str| Timestamp::parse_iso_tz(s).unwrap();
        assert_eq!(
            iso(parse("2024-01-02 03:04:05.5+00")),
            "2024-01-02T03:04:05.5Z"
        );
        assert_eq!(
            iso(parse("2024-01-02 03:04:05.000123+02")),
            "2024-01-02T01:04:05.000123Z"
        );
        assert_eq!(iso(parse("1970-01-01 00:00:00+00")), "1970-01-01T00:00:00Z");
        assert_eq!(
            iso(parse("1969-12-31 23:59:59.999999+00")),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            iso(parse("0044-03-15 12:00:00+00 BC")),
            "-0043-03-15T12:00:00Z"
        );
        assert_eq!(
            iso(parse("0001-01-01 00:00:00+00 BC")),
            "0000-01-01T00:00:00Z"
        );
        assert_eq!(
            iso(parse("12345-06-07 08:09:10+00")),
            "+12345-06-07T08:09:10Z"
        );
        assert_eq!(iso(Timestamp::INFINITY), "infinity");
        assert_eq!(iso(Timestamp::NEG_INFINITY), "-infinity");
    }
}
