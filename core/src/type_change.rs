//! How a column's type change treats the values it holds, judged from the types' spellings in the source's
//! dialect (`numeric(12,2)`, `character varying(40)`, `bigint`).

/// Whether the values a column holds stay the source's when its type changes from `old` to `new` without the
/// target converting them (SQLite keeps stored values as they arrived): a wider integer, a longer or unbounded
/// string, no fewer digits before or after the decimal point, no fewer fractional digits of a time or timestamp.
/// Any other change (fewer digits or scale, text to a date) would leave values the source no longer has.
pub fn values_survive(old: &str, new: &str) -> bool {
    // An integer type's size, and whether it is unsigned (MySQL's `int(11) unsigned`: the width is display only).
    let rank = |b: &str| {
        let b = b.trim_end_matches(" zerofill");
        let (b, unsigned) = b
            .strip_suffix(" unsigned")
            .map_or((b, false), |b| (b, true));
        let size = match b {
            "tinyint" => 1,
            "smallint" | "int2" => 2,
            "mediumint" => 3,
            "integer" | "int" | "int4" => 4,
            "bigint" | "int8" => 5,
            _ => return None,
        };
        Some((size, unsigned))
    };
    let strings = ["character varying", "varchar", "text", "character", "char"];
    // Arrays keep their values when their elements do.
    if let (Some(o), Some(n)) = (old.trim().strip_suffix("[]"), new.trim().strip_suffix("[]")) {
        return values_survive(o, n);
    }
    if let (Some((ok, od)), Some((nk, nd))) = (fraction_digits(old), fraction_digits(new)) {
        return ok == nk && nd >= od;
    }
    let ((ob, oa), (nb, na)) = (spelling(old), spelling(new));
    if ob == nb && oa == na {
        return true;
    }
    if let (Some((o, o_unsigned)), Some((n, n_unsigned))) = (rank(&ob), rank(&nb)) {
        return match (o_unsigned, n_unsigned) {
            (a, b) if a == b => n >= o,
            // Unsigned into a larger signed type holds every value; signed into unsigned loses the negatives.
            (true, false) => n > o,
            _ => false,
        };
    }
    let unbounded =
        |b: &str, a: &[u32]| b == "text" || (b != "character" && b != "char" && a.is_empty());
    if strings.contains(&ob.as_str()) && strings.contains(&nb.as_str()) {
        return unbounded(&nb, &na)
            || (nb != "character"
                && nb != "char"
                && na.first().zip(oa.first()).is_some_and(|(n, o)| n >= o));
    }
    if rank(&ob).is_some() && nb == "text" {
        return true;
    }
    if matches!(ob.as_str(), "numeric" | "decimal") && matches!(nb.as_str(), "numeric" | "decimal")
    {
        return match (oa.as_slice(), na.as_slice()) {
            (_, []) => true,
            // No fewer digits on either side of the point: every value is the same number.
            ([op, os], [np, ns]) => {
                let digits = |p: &u32, s: &u32| i64::from(*p) - i64::from(*s);
                ns >= os && digits(np, ns) >= digits(op, os)
            }
            ([op], [np]) => np >= op,
            _ => false,
        };
    }
    false
}

/// Whether a type change from `old` to `new` narrows a column: the source rewrites values the new type cannot
/// hold (rounds, cuts, drops fractions or precision). Within a kind of type, anything [`values_survive`] does not
/// keep: a shorter string, fewer digits before or after the point, a smaller integer; across kinds, a decimal to
/// an integer, a double to a real; for times, timestamps and datetimes, fewer fractional digits.
pub fn narrows(old: &str, new: &str) -> bool {
    fn kind(base: &str) -> &str {
        match base {
            "tinyint" | "smallint" | "int2" | "mediumint" | "integer" | "int" | "int4"
            | "bigint" | "int8" => "integer",
            "character varying" | "varchar" | "character" | "char" | "text" => "string",
            "numeric" | "decimal" => "numeric",
            "double precision" | "float8" | "double" => "float8",
            "real" | "float4" | "float" => "float4",
            other => other,
        }
    }
    if let (Some(o), Some(n)) = (old.trim().strip_suffix("[]"), new.trim().strip_suffix("[]")) {
        return narrows(o, n);
    }
    if let (Some((ok, od)), Some((nk, nd))) = (fraction_digits(old), fraction_digits(new)) {
        return ok == nk && nd < od;
    }
    let ((ob, _), (nb, _)) = (spelling(old), spelling(new));
    match (kind(&ob), kind(&nb)) {
        (o, n) if o == n && matches!(o, "integer" | "string" | "numeric") => {
            !values_survive(old, new)
        }
        ("numeric", "integer") | ("float8", "float4") => true,
        _ => false,
    }
}

/// A type's spelling without its `(…)` arguments (`timestamp(3) without time zone` → `timestamp without time
/// zone`), and those arguments.
pub fn spelling(t: &str) -> (String, Vec<u32>) {
    let t = t.trim().to_ascii_lowercase();
    match (t.find('('), t.find(')')) {
        (Some(open), Some(close)) if open < close => (
            format!("{} {}", t[..open].trim(), t[close + 1..].trim())
                .trim()
                .to_owned(),
            t[open + 1..close]
                .split(',')
                .filter_map(|a| a.trim().parse().ok())
                .collect(),
        ),
        _ => (t, Vec::new()),
    }
}

/// For a time, timestamp, datetime or interval type: its spelling without arguments, and how many fractional digits
/// of a second it keeps. When none are given: PostgreSQL's 6 (it spells the zone: `time without time zone`), MySQL's 0
/// (`time`, `timestamp`, `datetime`). `None` for other types.
pub fn fraction_digits(t: &str) -> Option<(String, u32)> {
    let (base, args) = spelling(t);
    let default = match base.as_str() {
        "time" | "timestamp" | "datetime" => 0,
        "timestamp without time zone"
        | "timestamp with time zone"
        | "timestamptz"
        | "time without time zone"
        | "time with time zone"
        | "timetz" => 6,
        // `interval`, `interval(3)`, `interval day to second(3)`: the fields are part of the kind.
        b if b == "interval" || b.starts_with("interval ") => 6,
        _ => return None,
    };
    let digits = args.first().copied().unwrap_or(default);
    Some((base, digits))
}

/// The error of a column narrowed at the source (`from` to `to`, within its type) behind a Kafka source. The
/// narrowing rewrote the source's rows without a row change for any of them; a target can do the same only if it
/// narrows the column after every earlier change and before every later one, an order a topic read over
/// partitions does not keep.
pub fn narrowed_at_source(
    table: &crate::TableId,
    column: &str,
    from: &str,
    to: &str,
) -> crate::Error {
    crate::Error::fatal(format!(
        "table {table}: column {column} was narrowed at the source from {from} to {to}, which rewrote its rows \
         (rounded or cut) without a change event for any of them; read over partitions in no order between them, \
         the topic cannot bring the target to the same values. Nothing was applied of it. Publish the table anew \
         from a new snapshot of the source (a new topic, or `ferry reset` of the capture pipeline) and apply from \
         there"
    ))
}

#[cfg(test)]
mod narrowing_tests {
    use super::narrows;

    #[test]
    fn narrowings_are_told_from_widenings_and_conversions() {
        for (old, new) in [
            ("numeric(12,4)", "numeric(10,2)"),
            ("numeric(10,4)", "numeric(12,2)"),
            ("numeric(12,4)", "integer"),
            ("character varying(40)", "character varying(10)"),
            ("text", "character varying(5)"),
            ("bigint", "integer"),
            ("double precision", "real"),
            (
                "timestamp(6) without time zone",
                "timestamp(0) without time zone",
            ),
            (
                "timestamp without time zone",
                "timestamp(3) without time zone",
            ),
            ("time without time zone", "time(0) without time zone"),
            ("timestamp with time zone", "timestamp(2) with time zone"),
            ("datetime(6)", "datetime"),
            ("time(3)", "time"),
        ] {
            assert!(narrows(old, new), "{old} -> {new}");
        }
        for (old, new) in [
            ("numeric(10,2)", "numeric(12,4)"),
            ("numeric(12,4)", "numeric"),
            ("integer", "bigint"),
            ("integer", "numeric(12,2)"),
            ("integer", "text"),
            ("text", "integer"),
            ("real", "double precision"),
            ("character varying(5)", "text"),
            (
                "timestamp(0) without time zone",
                "timestamp without time zone",
            ),
            ("timestamp without time zone", "timestamp with time zone"),
            ("datetime", "datetime(6)"),
            ("time", "time(3)"),
            ("numeric(12,4)", "numeric(12,4)"),
        ] {
            assert!(!narrows(old, new), "{old} -> {new}");
        }
    }
}

#[cfg(test)]
mod survive_tests {
    use super::values_survive;

    #[test]
    fn only_widening_type_changes_keep_values() {
        for (old, new) in [
            ("integer", "bigint"),
            ("smallint", "integer"),
            ("character varying(5)", "character varying(20)"),
            ("varchar(5)", "text"),
            ("numeric(6,2)", "numeric(10,2)"),
            ("numeric(6,2)", "numeric(10,5)"),
            ("numeric(6,2)", "numeric"),
            ("int", "text"),
            ("bigint", "bigint"),
            (
                "timestamp(3) without time zone",
                "timestamp without time zone",
            ),
            ("time(0) without time zone", "time(6) without time zone"),
            ("datetime", "datetime(6)"),
            ("int(11) unsigned", "bigint(20) unsigned"),
            ("int unsigned", "bigint"),
            ("integer[]", "bigint[]"),
            ("numeric(12,2)[]", "numeric(14,4)[]"),
            ("interval(0)", "interval"),
            ("interval day to second(1)", "interval day to second(3)"),
        ] {
            assert!(values_survive(old, new), "{old} -> {new}");
        }
        for (old, new) in [
            ("bigint", "integer"),
            ("numeric(10,3)", "numeric(8,1)"),
            ("numeric(6,2)", "numeric(6,3)"),
            ("text", "date"),
            ("character varying(20)", "character varying(5)"),
            ("text", "integer"),
            ("timestamp without time zone", "timestamp with time zone"),
            (
                "timestamp(6) without time zone",
                "timestamp(3) without time zone",
            ),
            (
                "timestamp without time zone",
                "timestamp(0) without time zone",
            ),
            ("time with time zone", "time(2) with time zone"),
            ("datetime(6)", "datetime(3)"),
            ("time(3)", "time"),
            ("int", "int unsigned"),
            ("int unsigned", "int"),
            ("numeric(12,4)[]", "numeric(12,1)[]"),
            (
                "timestamp(6) without time zone[]",
                "timestamp(0) without time zone[]",
            ),
            ("interval", "interval(0)"),
            ("interval", "interval hour to minute"),
            ("interval day to second(3)", "interval day to second(1)"),
        ] {
            assert!(!values_survive(old, new), "{old} -> {new}");
        }
    }
}
