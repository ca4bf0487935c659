//! How a column's type change treats the values it holds, judged from the types' spellings in the source's
//! dialect (`numeric(12,2)`, `character varying(40)`, `bigint`).

/// Whether the values a column holds stay the source's when its type changes from `old` to `new` without the
/// target converting them (SQLite keeps stored values as they arrived): a wider integer, a longer or unbounded
/// string, no fewer digits before or after the decimal point. Any other change (fewer digits or scale, text to a date) would leave
/// values the source no longer has.
pub fn values_survive(old: &str, new: &str) -> bool {
    fn parts(t: &str) -> (String, Vec<u32>) {
        let t = t.trim().to_ascii_lowercase();
        let (base, args) = match t.split_once('(') {
            Some((b, rest)) => (
                b.trim().to_owned(),
                rest.trim_end_matches(')')
                    .split(',')
                    .filter_map(|a| a.trim().parse().ok())
                    .collect(),
            ),
            None => (t.clone(), Vec::new()),
        };
        (base, args)
    }
    let rank = |b: &str| match b {
        "tinyint" => Some(1),
        "smallint" | "int2" => Some(2),
        "mediumint" => Some(3),
        "integer" | "int" | "int4" => Some(4),
        "bigint" | "int8" => Some(5),
        _ => None,
    };
    let strings = ["character varying", "varchar", "text", "character", "char"];
    let ((ob, oa), (nb, na)) = (parts(old), parts(new));
    if ob == nb && oa == na {
        return true;
    }
    if let (Some(o), Some(n)) = (rank(&ob), rank(&nb)) {
        return n >= o;
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

/// Whether a type change from `old` to `new` narrows a column within its kind of type: `new` holds fewer values
/// (a shorter string, fewer digits, a smaller integer) all of which `old` holds.
pub fn narrows(old: &str, new: &str) -> bool {
    fn kind(t: &str) -> String {
        let base = t.split('(').next().unwrap_or(t).trim().to_ascii_lowercase();
        match base.as_str() {
            "tinyint" | "smallint" | "int2" | "mediumint" | "integer" | "int" | "int4"
            | "bigint" | "int8" => "integer".into(),
            "character varying" | "varchar" | "character" | "char" | "text" => "string".into(),
            "decimal" => "numeric".into(),
            _ => base,
        }
    }
    kind(old) == kind(new) && values_survive(new, old) && !values_survive(old, new)
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
        ] {
            assert!(!values_survive(old, new), "{old} -> {new}");
        }
    }
}
