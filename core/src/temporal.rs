//! Dates, times, timestamps and intervals as exact integers, with PostgreSQL's ISO text forms.
//!
//! Representations follow PostgreSQL's own so that every value round-trips exactly: microsecond precision,
//! proleptic Gregorian calendar with astronomical years (1 BC is year 0), and `±infinity` as the extreme integers.
//! A timestamp counts from PostgreSQL's epoch (2000-01-01) in an i64 as PostgreSQL does, since microseconds from
//! 1970 overflow an i64 in PostgreSQL's last thirty years (after 294247-01-10).
//!
//! The parsers read PostgreSQL's output under Ferry's session settings (`datestyle = ISO, YMD`, `timezone = UTC`,
//! `intervalstyle = iso_8601`), accept exactly the range PostgreSQL holds, and refuse anything else without
//! panicking; `Display` writes PostgreSQL's own output text, which PostgreSQL accepts back as input.

use std::fmt;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * MICROS_PER_DAY;
/// Days since 1970-01-01 of 4714-11-24 BC (Julian day 0), PostgreSQL's first date and timestamp.
const FIRST_DAY: i64 = days_from_civil(-4713, 11, 24);
/// Days since 1970-01-01 of 5874897-12-31, PostgreSQL's last date.
const LAST_DATE_DAY: i64 = days_from_civil(5_874_897, 12, 31);
/// Microseconds since 2000-01-01 of PostgreSQL's first timestamp, 4714-11-24 00:00:00 BC.
const MIN_TIMESTAMP: i64 = (FIRST_DAY - PG_EPOCH_DAYS) * MICROS_PER_DAY;
/// Days since 1970-01-01 of 294277-01-01, the first day after PostgreSQL's timestamps.
const END_DAY: i64 = days_from_civil(294_277, 1, 1);
/// Microseconds since 2000-01-01 of 294277-01-01 00:00:00, the first instant after PostgreSQL's timestamps.
const END_TIMESTAMP: i64 = (END_DAY - PG_EPOCH_DAYS) * MICROS_PER_DAY;
/// PostgreSQL refuses UTC offsets of 16 hours or more.
const MAX_OFFSET_SECONDS: i64 = 16 * 3600;

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
        input: input.chars().take(200).collect(),
    }
}

/// A calendar date: days since 1970-01-01. `i32::MIN` / `i32::MAX` are `-infinity` / `infinity`; PostgreSQL's
/// dates (4714-11-24 BC to 5874897-12-31) lie well inside.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Date(pub i32);

/// A time of day in microseconds since midnight (`24:00:00` is allowed, as in PostgreSQL).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Time(pub i64);

/// A time of day with a UTC offset in seconds east of Greenwich (historic zones have seconds: `+05:30:15`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TimeTz {
    pub micros: i64,
    pub offset_seconds: i32,
}

/// A timestamp in PostgreSQL's own representation: microseconds since 2000-01-01 00:00:00, so that every value
/// PostgreSQL holds (4714-11-24 BC to 294276-12-31 23:59:59.999999) fits; `i64::MIN` / `i64::MAX` are
/// `-infinity` / `infinity`. Without a zone it is a wall-clock reading; as a `timestamptz` value it is UTC.
/// The field is private so that no caller mistakes it for microseconds since 1970: see
/// [`Timestamp::from_unix_micros`] and [`Timestamp::unix_micros`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Timestamp(i64);

/// An interval in PostgreSQL's three fields, which do not convert into each other exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date with an astronomical year.
const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
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

/// The number of days in a month of an astronomical year.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year.rem_euclid(4) == 0
            && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0) =>
        {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An unsigned decimal of `min_digits` to `max_digits` ASCII digits (no sign, no spaces: `str::parse` would
/// take `+5`).
fn digits(s: &str, min_digits: usize, max_digits: usize) -> Option<i64> {
    if !(min_digits..=max_digits).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Two digits, as PostgreSQL writes months, days, hours, minutes, seconds and offsets.
fn two_digits(s: &str) -> Option<i64> {
    digits(s, 2, 2)
}

/// Parses `YYYY-MM-DD` (four or more year digits) of a year AD, or BC with `bc`; returns days since 1970.
fn parse_ymd(s: &str, bc: bool) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let year = digits(parts.next()?, 4, 9)?;
    let month = u32::try_from(two_digits(parts.next()?)?).ok()?;
    let day = u32::try_from(two_digits(parts.next()?)?).ok()?;
    if year < 1 || !(1..=12).contains(&month) {
        return None;
    }
    let year = if bc { 1 - year } else { year };
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Writes the date of a day count as PostgreSQL does (`0044-03-15`, years beyond 9999 in full); true when the
/// year is BC, for the caller to append ` BC` where PostgreSQL puts it.
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

/// Splits `SS[.ffffff]` into whole seconds and microseconds: one to six fraction digits, when there is a point.
fn seconds_and_fraction(s: &str, min_whole: usize, max_whole: usize) -> Option<(i64, i64)> {
    let (whole, frac) = match s.split_once('.') {
        Some((whole, frac)) => {
            if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (whole, frac_micros(frac))
        }
        None => (s, 0),
    };
    Some((digits(whole, min_whole, max_whole)?, frac))
}

/// Parses `HH:MM:SS[.ffffff]` into microseconds since midnight, up to `24:00:00` as PostgreSQL allows.
fn parse_hms(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let h = two_digits(parts.next()?)?;
    let m = two_digits(parts.next()?)?;
    let (sec, frac) = seconds_and_fraction(parts.next()?, 2, 2)?;
    if m > 59 || sec > 59 {
        return None;
    }
    let micros = ((h * 60 + m) * 60 + sec) * MICROS_PER_SECOND + frac;
    (micros <= MICROS_PER_DAY).then_some(micros)
}

fn write_hms(f: &mut fmt::Formatter<'_>, micros: i64) -> fmt::Result {
    let secs = micros / MICROS_PER_SECOND;
    write!(
        f,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )?;
    write_fraction(f, micros % MICROS_PER_SECOND)
}

/// `.ffffff` without trailing zeros (`.5`, `.000123`); nothing for a whole second. `frac` is 0..1,000,000.
fn write_fraction(f: &mut fmt::Formatter<'_>, frac: i64) -> fmt::Result {
    if frac == 0 {
        return Ok(());
    }
    let (mut digits, mut width) = (frac, 6);
    while digits % 10 == 0 {
        digits /= 10;
        width -= 1;
    }
    write!(f, ".{digits:0width$}")
}

/// Parses a UTC offset `+HH`, `-HH:MM` or `+HH:MM:SS` into seconds east, below 16 hours as PostgreSQL allows.
fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let mut parts = rest.split(':');
    let h = two_digits(parts.next()?)?;
    let m = parts.next().map_or(Some(0), two_digits)?;
    let sec = parts.next().map_or(Some(0), two_digits)?;
    let secs = (h * 60 + m) * 60 + sec;
    if parts.next().is_some() || m > 59 || sec > 59 || secs >= MAX_OFFSET_SECONDS {
        return None;
    }
    i32::try_from(sign * secs).ok()
}

/// Writes an offset as PostgreSQL does: `+00`, `-08`, `+05:30`, `+05:30:15`.
fn write_offset(f: &mut fmt::Formatter<'_>, offset: i32) -> fmt::Result {
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    write!(f, "{sign}{:02}", a / 3600)?;
    if !a.is_multiple_of(3600) {
        write!(f, ":{:02}", a / 60 % 60)?;
    }
    if !a.is_multiple_of(60) {
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

    /// Whether this is a calendar date rather than `±infinity`.
    pub fn is_finite(self) -> bool {
        self != Date::INFINITY && self != Date::NEG_INFINITY
    }

    /// Parses PostgreSQL's ISO date output (`2024-01-31`, `0044-03-15 BC`, `5874897-12-31`, `infinity`): every
    /// date PostgreSQL holds, 4714-11-24 BC to 5874897-12-31, and nothing else.
    pub fn parse_iso(s: &str) -> Result<Date, TemporalParseError> {
        match s {
            "infinity" => return Ok(Date::INFINITY),
            "-infinity" => return Ok(Date::NEG_INFINITY),
            _ => {}
        }
        let (body, bc) = strip_bc(s);
        let days = parse_ymd(body, bc)
            .filter(|d| (FIRST_DAY..=LAST_DATE_DAY).contains(d))
            .ok_or_else(|| err("date", s))?;
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
    /// Parses PostgreSQL's `time` output, `00:00:00` to `24:00:00`.
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
    /// Parses PostgreSQL's `timetz` output: a time up to `24:00:00` and the offset it was written with
    /// (`12:00:00+05:30:15`, `24:00:00-15:59`), kept as written, as PostgreSQL keeps it.
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
    /// PostgreSQL's output: `04:05:06.5-08`, `12:00:00+05:30:15`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hms(f, self.micros)?;
        write_offset(f, self.offset_seconds)
    }
}

impl Timestamp {
    pub const NEG_INFINITY: Timestamp = Timestamp(i64::MIN);
    pub const INFINITY: Timestamp = Timestamp(i64::MAX);
    /// 1970-01-01 00:00:00.
    pub const UNIX_EPOCH: Timestamp = Timestamp(-PG_EPOCH_MICROS);

    /// A timestamp from PostgreSQL's representation, microseconds since 2000-01-01 (pgoutput's commit times).
    pub const fn from_pg_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since 2000-01-01; `i64::MIN` / `i64::MAX` for `-infinity` / `infinity`.
    pub const fn pg_micros(self) -> i64 {
        self.0
    }

    /// A timestamp from microseconds since 1970-01-01. Exact for every instant after the year 292,246 BC; earlier
    /// ones, which no source sends, saturate to `-infinity`.
    pub const fn from_unix_micros(micros: i64) -> Timestamp {
        Timestamp(micros.saturating_sub(PG_EPOCH_MICROS))
    }

    /// Microseconds since 1970-01-01, as Debezium's `MicroTimestamp` and Kafka's record times count; `None` for
    /// `±infinity` and for instants after 294247-01-10 04:00:54.775807, past an i64 of microseconds.
    pub fn unix_micros(self) -> Option<i64> {
        if !self.is_finite() {
            return None;
        }
        self.0.checked_add(PG_EPOCH_MICROS)
    }

    /// The current time.
    pub fn now() -> Timestamp {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Timestamp::from_unix_micros(micros)
    }

    /// Whether this is a point in time rather than `±infinity`.
    pub fn is_finite(self) -> bool {
        self != Timestamp::INFINITY && self != Timestamp::NEG_INFINITY
    }

    /// The timestamp of `micros` (0 to one day) after the start of `date`; `None` for an infinite date or a
    /// result outside PostgreSQL's range, 4714-11-24 BC to 294276 AD.
    pub fn from_date_time(date: Date, micros: i64) -> Option<Timestamp> {
        let days = i64::from(date.0);
        if !(FIRST_DAY..END_DAY).contains(&days) || !(0..=MICROS_PER_DAY).contains(&micros) {
            return None;
        }
        let t = (days - PG_EPOCH_DAYS) * MICROS_PER_DAY + micros;
        (MIN_TIMESTAMP..END_TIMESTAMP)
            .contains(&t)
            .then_some(Timestamp(t))
    }

    /// The calendar date and the microseconds into that day; `None` for `±infinity`.
    pub fn date_time(self) -> Option<(Date, i64)> {
        if !self.is_finite() {
            return None;
        }
        let days = self.0.div_euclid(MICROS_PER_DAY) + PG_EPOCH_DAYS;
        Some((
            Date(i32::try_from(days).ok()?),
            self.0.rem_euclid(MICROS_PER_DAY),
        ))
    }

    /// Parses `timestamp` output in ISO style (`2024-01-31 12:00:00.5`, `... BC`, `infinity`): every value
    /// PostgreSQL holds, 4714-11-24 00:00:00 BC to 294276-12-31 23:59:59.999999, and nothing else.
    pub fn parse_iso(s: &str) -> Result<Timestamp, TemporalParseError> {
        Self::parse_inner(s, false).ok_or_else(|| err("timestamp", s))
    }

    /// Parses `timestamptz` output in ISO style with any UTC offset (`2024-01-31 12:00:00+00`,
    /// `0044-03-15 10:00:00+00 BC`, `1799-12-31 19:03:58-04:56:02`), normalised to UTC.
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
        // Within a day of PostgreSQL's range (a local date before UTC's), so that nothing below overflows.
        let days = parse_ymd(date, bc)?;
        if !(FIRST_DAY - 1..=END_DAY).contains(&days) {
            return None;
        }
        let micros = (days - PG_EPOCH_DAYS) * MICROS_PER_DAY + parse_hms(time)?
            - i64::from(offset) * MICROS_PER_SECOND;
        (MIN_TIMESTAMP..END_TIMESTAMP)
            .contains(&micros)
            .then_some(Timestamp(micros))
    }

    fn fmt_with(&self, f: &mut fmt::Formatter<'_>, zone: bool) -> fmt::Result {
        let Some((date, micros)) = self.date_time() else {
            return f.write_str(if *self == Timestamp::INFINITY {
                "infinity"
            } else {
                "-infinity"
            });
        };
        let bc = write_ymd(f, i64::from(date.0))?;
        f.write_str(" ")?;
        write_hms(f, micros)?;
        if zone {
            f.write_str("+00")?;
        }
        if bc {
            f.write_str(" BC")?;
        }
        Ok(())
    }

    /// Appends the value in ISO-8601 UTC as Java's `ISO_OFFSET_DATE_TIME` writes it (Debezium's
    /// `ZonedTimestamp`): `2024-01-31T12:00:00.5Z`, `-0043-03-15T…Z` before year 1 (astronomical years),
    /// `+10000-…` after 9999; `infinity` and `-infinity` as PostgreSQL spells them. Written digit by digit: it
    /// runs for every zoned timestamp a Kafka sink publishes.
    pub fn push_iso_utc(&self, out: &mut String) {
        let Some((date, of_day)) = self.date_time() else {
            return out.push_str(if *self == Timestamp::INFINITY {
                "infinity"
            } else {
                "-infinity"
            });
        };
        let push2 = |out: &mut String, n: i64| {
            out.push(char::from(b'0' + (n / 10) as u8));
            out.push(char::from(b'0' + (n % 10) as u8));
        };
        let (year, month, day) = date.ymd();
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
    /// PostgreSQL 17's `infinity` interval: every field at its maximum.
    pub const INFINITY: Interval = Interval {
        months: i32::MAX,
        days: i32::MAX,
        micros: i64::MAX,
    };
    /// PostgreSQL 17's `-infinity` interval: every field at its minimum.
    pub const NEG_INFINITY: Interval = Interval {
        months: i32::MIN,
        days: i32::MIN,
        micros: i64::MIN,
    };

    /// Whether this is a finite interval rather than PostgreSQL 17's `±infinity`. (Before 17, all three fields
    /// at their extremes were a finite interval, with the same bits: see [`Interval::display_fields`].)
    pub fn is_finite(self) -> bool {
        self != Interval::INFINITY && self != Interval::NEG_INFINITY
    }

    /// The three fields in ISO 8601 even for `±infinity` (`P178956970Y7M2147483647DT2562047788H54.775807S`),
    /// which every PostgreSQL version reads back as these same bits: 17 and later as `infinity`, earlier ones as
    /// the finite interval they were there. What a PostgreSQL target is sent.
    pub fn display_fields(&self) -> impl fmt::Display + '_ {
        struct Fields<'a>(&'a Interval);
        impl fmt::Display for Fields<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_fields(f)
            }
        }
        Fields(self)
    }

    fn write_fields(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.months == 0 && self.days == 0 && self.micros == 0 {
            return f.write_str("PT0S");
        }
        f.write_str("P")?;
        let (years, months) = (self.months / 12, self.months % 12);
        if years != 0 {
            write!(f, "{years}Y")?;
        }
        if months != 0 {
            write!(f, "{months}M")?;
        }
        if self.days != 0 {
            write!(f, "{}D", self.days)?;
        }
        if self.micros == 0 {
            return Ok(());
        }
        let sign = if self.micros < 0 { "-" } else { "" };
        let a = self.micros.unsigned_abs();
        let (hours, minutes) = (a / 3_600_000_000, a / 60_000_000 % 60);
        let (secs, frac) = (a / 1_000_000 % 60, a % 1_000_000);
        f.write_str("T")?;
        if hours != 0 {
            write!(f, "{sign}{hours}H")?;
        }
        if minutes != 0 {
            write!(f, "{sign}{minutes}M")?;
        }
        if secs != 0 || frac != 0 {
            write!(f, "{sign}{secs}")?;
            write_fraction(f, frac as i64)?;
            f.write_str("S")?;
        }
        Ok(())
    }

    /// Parses ISO 8601 interval output (PostgreSQL's `intervalstyle = iso_8601`), e.g. `P1Y2M3DT4H5M6.5S`,
    /// `P-1Y-2M3DT-4H`, `PT0S`, `P-178956970Y-8M`, `PT-2562047788H-54.775808S`, and PostgreSQL 17's `infinity`.
    pub fn parse_iso(s: &str) -> Result<Interval, TemporalParseError> {
        Self::parse_inner(s).ok_or_else(|| err("interval", s))
    }

    fn parse_inner(s: &str) -> Option<Interval> {
        match s {
            "infinity" => return Some(Interval::INFINITY),
            "-infinity" => return Some(Interval::NEG_INFINITY),
            _ => {}
        }
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

/// `-54.775808` into microseconds, exactly; down to i64::MIN, which PostgreSQL prints as `-…H-54.775808S`.
fn parse_signed_seconds(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (whole, frac) = seconds_and_fraction(body, 1, 13)?;
    let micros = whole.checked_mul(MICROS_PER_SECOND)?.checked_add(frac)?;
    Some(if neg { -micros } else { micros })
}

impl Interval {
    /// Displays the value as PostgreSQL prints it under its default `IntervalStyle = postgres`
    /// (`1 year 2 mons -3 days +04:05:06.5`), from `EncodeInterval` in PostgreSQL's `datetime.c`.
    pub fn display_postgres(&self) -> impl fmt::Display + '_ {
        struct Postgres<'a>(&'a Interval);
        impl fmt::Display for Postgres<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let i = self.0;
                match *i {
                    Interval::INFINITY => return f.write_str("infinity"),
                    Interval::NEG_INFINITY => return f.write_str("-infinity"),
                    _ => {}
                }
                let (mut zero, mut before) = (true, false);
                let mut part =
                    |f: &mut fmt::Formatter<'_>, value: i64, unit: &str| -> fmt::Result {
                        if value == 0 {
                            return Ok(());
                        }
                        let space = if zero { "" } else { " " };
                        let plus = if before && value > 0 { "+" } else { "" };
                        let plural = if value != 1 { "s" } else { "" };
                        before = value < 0;
                        zero = false;
                        write!(f, "{space}{plus}{value} {unit}{plural}")
                    };
                let months = i64::from(i.months);
                part(f, months / 12, "year")?;
                part(f, months % 12, "mon")?;
                part(f, i64::from(i.days), "day")?;
                if zero || i.micros != 0 {
                    let t = i.micros;
                    let minus = t < 0;
                    let t = t.unsigned_abs();
                    let (hours, rest) = (t / 3_600_000_000, t % 3_600_000_000);
                    let (mins, rest) = (rest / 60_000_000, rest % 60_000_000);
                    let (secs, frac) = (rest / 1_000_000, rest % 1_000_000);
                    let space = if zero { "" } else { " " };
                    let sign = if minus {
                        "-"
                    } else if before {
                        "+"
                    } else {
                        ""
                    };
                    write!(f, "{space}{sign}{hours:02}:{mins:02}:{secs:02}")?;
                    if frac != 0 {
                        let digits = format!("{frac:06}");
                        write!(f, ".{}", digits.trim_end_matches('0'))?;
                    }
                }
                Ok(())
            }
        }
        Postgres(self)
    }
}

impl fmt::Display for Interval {
    /// PostgreSQL's own `iso_8601` output: zero fields left out, `PT0S` for zero, the time part's sign on each
    /// of its fields, and PostgreSQL 17's `infinity` / `-infinity` (which earlier versions do not read: a
    /// PostgreSQL target is sent [`Interval::display_fields`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Interval::INFINITY => f.write_str("infinity"),
            Interval::NEG_INFINITY => f.write_str("-infinity"),
            _ => self.write_fields(f),
        }
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
    fn dates_cover_postgres_whole_range_and_nothing_more() {
        for text in ["4714-11-24 BC", "5874897-12-31", "0001-01-01", "9999-12-31"] {
            let d = Date::parse_iso(text).unwrap();
            assert_eq!(d.to_string(), text);
            assert!(d.is_finite());
        }
        assert_eq!(
            Date::parse_iso("4714-11-24 BC").unwrap(),
            Date(-2_440_588),
            "Julian day 0"
        );
        for bad in [
            "4714-11-23 BC",
            "5874898-01-01",
            "2023-02-29",
            "2024-04-31",
            "0000-01-01",
            "+2024-01-01",
            "2024-1-01x",
            "99999999999999999999-01-01",
        ] {
            assert!(Date::parse_iso(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Date::parse_iso("2024-02-29").unwrap().to_string(),
            "2024-02-29"
        );
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
    fn timestamps_cover_postgres_whole_range_and_nothing_more() {
        let last = Timestamp::parse_iso("294276-12-31 23:59:59.999999").unwrap();
        assert_eq!(last.pg_micros(), END_TIMESTAMP - 1);
        assert_eq!(last.to_string(), "294276-12-31 23:59:59.999999");
        let first = Timestamp::parse_iso("4714-11-24 00:00:00 BC").unwrap();
        assert_eq!(
            first.pg_micros(),
            -211_813_488_000_000_000,
            "PostgreSQL's MIN_TIMESTAMP"
        );
        assert_eq!(first.to_string(), "4714-11-24 00:00:00 BC");
        let last_tz = Timestamp::parse_iso_tz("294276-12-31 23:59:59.999999+00").unwrap();
        assert_eq!(last_tz, last);
        assert_eq!(
            last_tz.display_utc().to_string(),
            "294276-12-31 23:59:59.999999+00"
        );
        assert_eq!(first.display_utc().to_string(), "4714-11-24 00:00:00+00 BC");
        // A zone west of UTC shows the first instant on the day before; one east past the end is refused.
        assert_eq!(
            Timestamp::parse_iso_tz("4714-11-23 19:03:58-04:56:02 BC").unwrap(),
            first
        );
        assert_eq!(
            Timestamp::parse_iso_tz("1799-12-31 19:03:58-04:56:02").unwrap(),
            Timestamp::parse_iso_tz("1800-01-01 00:00:00+00").unwrap()
        );
        for bad in [
            "294277-01-01 00:00:00",
            "4714-11-23 23:59:59.999999 BC",
            "5874897-12-31 00:00:00",
            "2024-01-01 24:00:01",
            "2024-01-01 12:60:00",
            "2024-01-01 12:00:00.",
            "2024-01-01 12:00:00.1234567",
            "2024-01-01 -1:00:00",
        ] {
            assert!(Timestamp::parse_iso(bad).is_err(), "{bad}");
        }
        assert!(Timestamp::parse_iso_tz("4714-11-24 00:00:00+01 BC").is_err());
        assert!(Timestamp::parse_iso_tz("294276-12-31 23:00:00-01").is_err());
        assert!(Timestamp::parse_iso_tz("2024-01-01 00:00:00+16").is_err());
    }

    #[test]
    fn unix_micros_are_exact_where_an_i64_holds_them() {
        assert_eq!(Timestamp::UNIX_EPOCH.unix_micros(), Some(0));
        assert_eq!(Timestamp::from_unix_micros(0), Timestamp::UNIX_EPOCH);
        let t = Timestamp::parse_iso("2018-06-20 15:13:16.945104").unwrap();
        assert_eq!(t.unix_micros(), Some(1_529_507_596_945_104));
        assert_eq!(Timestamp::from_unix_micros(1_529_507_596_945_104), t);
        let last_unix = Timestamp::from_unix_micros(i64::MAX);
        assert_eq!(last_unix.to_string(), "294247-01-10 04:00:54.775807");
        assert_eq!(last_unix.unix_micros(), Some(i64::MAX));
        let past = Timestamp::parse_iso("294247-01-10 04:00:54.775808").unwrap();
        assert_eq!(past.unix_micros(), None);
        assert_eq!(Timestamp::INFINITY.unix_micros(), None);
        assert_eq!(Timestamp::NEG_INFINITY.unix_micros(), None);
        assert_eq!(
            Timestamp::parse_iso("4714-11-24 00:00:00 BC")
                .unwrap()
                .unix_micros(),
            Some(-210_866_803_200_000_000)
        );
        assert_eq!(
            Timestamp::from_unix_micros(i64::MIN),
            Timestamp::NEG_INFINITY
        );
    }

    #[test]
    fn dates_and_times_of_day_make_timestamps() {
        let d = Date::parse_iso("2024-02-29").unwrap();
        let t = Timestamp::from_date_time(d, 3_600_000_001).unwrap();
        assert_eq!(t.to_string(), "2024-02-29 01:00:00.000001");
        assert_eq!(t.date_time(), Some((d, 3_600_000_001)));
        let bc = Timestamp::parse_iso("0001-12-31 23:59:59 BC").unwrap();
        let (day, micros) = bc.date_time().unwrap();
        assert_eq!(day.to_string(), "0001-12-31 BC");
        assert_eq!(micros, 86_399_000_000);
        assert_eq!(Timestamp::INFINITY.date_time(), None);
        assert_eq!(Timestamp::from_date_time(Date::INFINITY, 0), None);
        assert_eq!(Timestamp::from_date_time(d, -1), None);
        let last_date = Date::parse_iso("5874897-12-31").unwrap();
        assert_eq!(Timestamp::from_date_time(last_date, 0), None);
    }

    #[test]
    fn times_reach_24_and_zones_keep_their_seconds() {
        assert_eq!(Time::parse_iso("24:00:00").unwrap().to_string(), "24:00:00");
        assert_eq!(
            Time::parse_iso("23:59:59.999999").unwrap().to_string(),
            "23:59:59.999999"
        );
        for bad in [
            "24:00:00.000001",
            "25:00:00",
            "12:00",
            "12:00:60",
            "1:2:3:4",
            "12:00:00.5x",
        ] {
            assert!(Time::parse_iso(bad).is_err(), "{bad}");
        }
        for text in [
            "24:00:00+15:59",
            "00:00:00-15:59",
            "00:00:00+15:59:59",
            "12:00:00+05:30:15",
            "12:00:00-05",
            "04:05:06.5-08",
            "00:00:00+00",
        ] {
            assert_eq!(TimeTz::parse_iso(text).unwrap().to_string(), text);
        }
        let tz = TimeTz::parse_iso("12:00:00+05:30:15").unwrap();
        assert_eq!(tz.offset_seconds, 5 * 3600 + 30 * 60 + 15);
        let west = TimeTz::parse_iso("12:00:00-00:00:15").unwrap();
        assert_eq!(west.offset_seconds, -15);
        assert_eq!(west.to_string(), "12:00:00-00:00:15");
        for bad in [
            "12:00:00+16",
            "12:00:00+05:60",
            "12:00:00+5",
            "12:00:00+05:30:15:00",
            "12:00:00",
        ] {
            assert!(TimeTz::parse_iso(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_times_and_intervals() {
        let tz = TimeTz::parse_iso("04:05:06.5-08:00").unwrap();
        assert_eq!(tz.offset_seconds, -8 * 3600);
        assert_eq!(tz.to_string(), "04:05:06.5-08");
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

    #[test]
    fn intervals_print_as_postgres_and_reach_its_extremes() {
        // PostgreSQL 15 and 18 print these under intervalstyle = iso_8601.
        for text in [
            "P-178000000Y",
            "P178000000Y",
            "P-178956970Y-8M",
            "P178956970Y7M",
            "P-2147483648D",
            "P2147483647DT-2562047788H-54.775807S",
            "PT-2562047788H-54.775808S",
            "PT2562047788H54.775807S",
            "P1M1DT0.000001S",
            "PT-0.000001S",
            "P-1DT0.000001S",
            "P1Y-1DT0.000001S",
            "P1DT2H3M4S",
            "P1Y2M-3DT4H5M6.5S",
            "PT1H",
            "PT-5M",
            "PT0S",
            "infinity",
            "-infinity",
        ] {
            let iv = Interval::parse_iso(text).unwrap();
            assert_eq!(iv.to_string(), text);
        }
        assert_eq!(
            Interval::parse_iso("P-178956970Y-8M").unwrap().months,
            i32::MIN
        );
        assert_eq!(
            Interval::parse_iso("PT-2562047788H-54.775808S")
                .unwrap()
                .micros,
            i64::MIN
        );
        assert!(!Interval::parse_iso("infinity").unwrap().is_finite());
        // PostgreSQL 15's finite interval with every field at its extreme has 17's infinity's bits; its fields
        // are what a PostgreSQL target of any version reads back as the same value.
        let edge =
            Interval::parse_iso("P-178956970Y-8M-2147483648DT-2562047788H-54.775808S").unwrap();
        assert_eq!(edge, Interval::NEG_INFINITY);
        assert_eq!(
            Interval::INFINITY.display_fields().to_string(),
            "P178956970Y7M2147483647DT2562047788H54.775807S"
        );
        assert_eq!(
            edge.display_fields().to_string(),
            "P-178956970Y-8M-2147483648DT-2562047788H-54.775808S"
        );
        for bad in [
            "P178956970Y8M",
            "PT2562047788H54.775808S",
            "P2147483648D",
            "PT1.S",
            "PT.5S",
            "P1Y2",
        ] {
            assert!(Interval::parse_iso(bad).is_err(), "{bad}");
        }
    }

    /// PostgreSQL's own iso_8601 encoding, written from its C (EncodeInterval) with truncating division.
    fn postgres_iso(iv: Interval) -> String {
        if iv == Interval::INFINITY {
            return "infinity".into();
        }
        if iv == Interval::NEG_INFINITY {
            return "-infinity".into();
        }
        let (year, mon, mday) = (iv.months / 12, iv.months % 12, iv.days);
        let hour = iv.micros / 3_600_000_000;
        let min = iv.micros % 3_600_000_000 / 60_000_000;
        let sec = iv.micros % 60_000_000 / 1_000_000;
        let fsec = iv.micros % 1_000_000;
        if year == 0 && mon == 0 && mday == 0 && iv.micros == 0 {
            return "PT0S".into();
        }
        let mut out = String::from("P");
        let part = |out: &mut String, v: i64, unit: char| {
            if v != 0 {
                out.push_str(&format!("{v}{unit}"));
            }
        };
        part(&mut out, i64::from(year), 'Y');
        part(&mut out, i64::from(mon), 'M');
        part(&mut out, i64::from(mday), 'D');
        if iv.micros != 0 {
            out.push('T');
        }
        part(&mut out, hour, 'H');
        part(&mut out, min, 'M');
        if sec != 0 || fsec != 0 {
            if sec < 0 || fsec < 0 {
                out.push('-');
            }
            out.push_str(&sec.unsigned_abs().to_string());
            if fsec != 0 {
                out.push_str(format!(".{:06}", fsec.unsigned_abs()).trim_end_matches('0'));
            }
            out.push('S');
        }
        out
    }

    proptest! {
        #[test]
        fn dates_round_trip(days in FIRST_DAY as i32..=LAST_DATE_DAY as i32) {
            let d = Date(days);
            prop_assert_eq!(Date::parse_iso(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn timestamps_round_trip(micros in MIN_TIMESTAMP..END_TIMESTAMP) {
            let t = Timestamp::from_pg_micros(micros);
            prop_assert_eq!(Timestamp::parse_iso(&t.to_string()).unwrap(), t);
            prop_assert_eq!(Timestamp::parse_iso_tz(&t.display_utc().to_string()).unwrap(), t);
            let (date, of_day) = t.date_time().unwrap();
            prop_assert_eq!(Timestamp::from_date_time(date, of_day), Some(t));
        }

        #[test]
        fn zoned_timestamps_normalise_to_utc(micros in MIN_TIMESTAMP..END_TIMESTAMP, offset in -57_599i32..=57_599) {
            // The text PostgreSQL would show in a zone `offset` seconds east: local time, then the offset.
            let t = Timestamp::from_pg_micros(micros);
            let local = Timestamp::from_pg_micros(micros + i64::from(offset) * 1_000_000);
            let text = local.to_string();
            let (body, bc) = strip_bc(&text);
            let zone = TimeTz { micros: 0, offset_seconds: offset }.to_string();
            let text = format!("{body}{}{}", &zone[8..], if bc { " BC" } else { "" });
            prop_assert_eq!(Timestamp::parse_iso_tz(&text).unwrap(), t);
        }

        #[test]
        fn times_with_zones_round_trip(micros in 0..=MICROS_PER_DAY, offset in -57_599i32..=57_599) {
            let t = TimeTz { micros, offset_seconds: offset };
            prop_assert_eq!(TimeTz::parse_iso(&t.to_string()).unwrap(), t);
            prop_assert_eq!(Time::parse_iso(&Time(micros).to_string()).unwrap(), Time(micros));
        }

        #[test]
        fn intervals_print_as_postgres_and_round_trip(
            months in any::<i32>(),
            days in any::<i32>(),
            micros in prop_oneof![any::<i64>(), -100_000_000i64..100_000_000, Just(i64::MIN), Just(i64::MAX)],
        ) {
            let iv = Interval { months, days, micros };
            prop_assert_eq!(iv.to_string(), postgres_iso(iv));
            prop_assert_eq!(Interval::parse_iso(&iv.to_string()).unwrap(), iv);
            prop_assert_eq!(Interval::parse_iso(&iv.display_fields().to_string()).unwrap(), iv);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = Date::parse_iso(&s);
            let _ = Timestamp::parse_iso(&s);
            let _ = Timestamp::parse_iso_tz(&s);
            let _ = Time::parse_iso(&s);
            let _ = TimeTz::parse_iso(&s);
            let _ = Interval::parse_iso(&s);
        }

        #[test]
        fn parsers_never_panic_on_near_misses(s in "[0-9]{1,8}-[0-9]{1,3}-[0-9]{1,3}[ T][0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{0,8})?([+-][0-9]{1,3}(:[0-9]{1,3}){0,3})?( BC)?") {
            let _ = Timestamp::parse_iso(&s);
            let _ = Timestamp::parse_iso_tz(&s);
            let _ = Date::parse_iso(s.split(' ').next().unwrap_or(""));
        }

        #[test]
        fn intervals_never_panic_on_near_misses(s in "P(-?[0-9]{1,12}[YMWD]){0,4}(T(-?[0-9]{1,20}(\\.[0-9]{0,8})?[HMS]){0,4})?") {
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
        assert_eq!(
            iso(parse("294276-12-31 23:59:59.999999+00")),
            "+294276-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            iso(parse("4714-11-24 00:00:00+00 BC")),
            "-4713-11-24T00:00:00Z"
        );
        assert_eq!(iso(Timestamp::INFINITY), "infinity");
        assert_eq!(iso(Timestamp::NEG_INFINITY), "-infinity");
    }
}
