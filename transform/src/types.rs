//! The column types stages produce (`convert.to`, `compute.column_type`, masked columns) and value casts.

use cel::Value as Cel;
use ferry_core::{Column, ColumnType, Date, Decimal, Dialect, Timestamp, Uuid, Value};

/// A column type as the config names it (PostgreSQL's spelling, `ferry_config`'s `COLUMN_TYPES`).
pub fn column_type(name: &str) -> Option<ColumnType> {
    Some(match name {
        "text" => ColumnType::Text,
        "bigint" => ColumnType::Int8,
        "integer" => ColumnType::Int4,
        "smallint" => ColumnType::Int2,
        "double precision" => ColumnType::Float8,
        "real" => ColumnType::Float4,
        "numeric" => ColumnType::Numeric,
        "boolean" => ColumnType::Bool,
        "bytea" => ColumnType::Bytes,
        "json" => ColumnType::Json,
        "jsonb" => ColumnType::Jsonb,
        "uuid" => ColumnType::Uuid,
        "date" => ColumnType::Date,
        "timestamp" => ColumnType::Timestamp,
        "timestamptz" => ColumnType::TimestampTz,
        _ => return None,
    })
}

/// How a schema of `dialect` spells `ty` in DDL (a target of the same dialect creates the column with it).
pub fn spelling(ty: &ColumnType, dialect: Dialect) -> &'static str {
    use ColumnType as T;
    match (dialect, ty) {
        (Dialect::Postgres, T::Text) => "text",
        (Dialect::Postgres, T::Int8) => "bigint",
        (Dialect::Postgres, T::Int4) => "integer",
        (Dialect::Postgres, T::Int2) => "smallint",
        (Dialect::Postgres, T::Float8) => "double precision",
        (Dialect::Postgres, T::Float4) => "real",
        (Dialect::Postgres, T::Numeric) => "numeric",
        (Dialect::Postgres, T::Bool) => "boolean",
        (Dialect::Postgres, T::Bytes) => "bytea",
        (Dialect::Postgres, T::Json) => "json",
        (Dialect::Postgres, T::Jsonb) => "jsonb",
        (Dialect::Postgres, T::Uuid) => "uuid",
        (Dialect::Postgres, T::Date) => "date",
        (Dialect::Postgres, T::Timestamp) => "timestamp without time zone",
        (Dialect::Postgres, T::TimestampTz) => "timestamp with time zone",
        (Dialect::Mysql, T::Text) => "longtext",
        (Dialect::Mysql, T::Int8) => "bigint",
        (Dialect::Mysql, T::Int4) => "int",
        (Dialect::Mysql, T::Int2) => "smallint",
        (Dialect::Mysql, T::Float8) => "double",
        (Dialect::Mysql, T::Float4) => "float",
        (Dialect::Mysql, T::Numeric) => "decimal(65,30)",
        (Dialect::Mysql, T::Bool) => "tinyint(1)",
        (Dialect::Mysql, T::Bytes) => "longblob",
        (Dialect::Mysql, T::Json | T::Jsonb) => "json",
        (Dialect::Mysql, T::Uuid) => "char(36)",
        (Dialect::Mysql, T::Date) => "date",
        (Dialect::Mysql, T::Timestamp) => "datetime(6)",
        (Dialect::Mysql, T::TimestampTz) => "timestamp(6)",
        (_, _) => "text",
    }
}

/// `col` with a new type: its DDL spelling, default and generation expression (written for the old type) gone.
pub fn retype(col: &Column, ty: ColumnType, dialect: Dialect) -> Column {
    Column {
        source_type: spelling(&ty, dialect).to_owned(),
        ty,
        generated: None,
        default: None,
        missing_value: None,
        ..col.clone()
    }
}

/// A value's text form, as PostgreSQL prints it for a column of type `ty` (`real` and `double precision` print
/// differently; `None`: the value's own kind), a MySQL zero date as MySQL does; `None` for NULL and unchanged
/// values.
pub fn text_of(v: &Value, ty: Option<&ColumnType>) -> Option<String> {
    match (v, ty) {
        (Value::ZeroDate(s), _) => Some(s.clone()),
        (v, Some(ty)) => ferry_core::pg_text::pg_output_text(v, ty),
        (v, None) => ferry_core::pg_text::pg_output_text(v, &ColumnType::Other),
    }
}

/// Casts `v`, a value of a `from` column, to `ty`. `zone`: for a `timestamp` cast to `timestamptz`, the zone its wall time is in (UTC when
/// `None`). NULL and unchanged values stay as they are. The error says why the value does not convert.
pub fn cast(
    v: Value,
    from: &ColumnType,
    ty: &ColumnType,
    zone: Option<chrono_tz::Tz>,
) -> Result<Value, String> {
    use ColumnType as T;
    if matches!(v, Value::Null | Value::Unchanged) {
        return Ok(v);
    }
    let shown = |v: &Value| {
        let mut t = text_of(v, Some(from)).unwrap_or_default();
        if t.len() > 60 {
            t.truncate(t.floor_char_boundary(60));
            t.push('…');
        }
        t
    };
    let fail = |v: &Value, what: &str| Err(format!("{:?} is not {what}", shown(v)));
    Ok(match (ty, v) {
        (T::Text, v) => Value::Text(text_of(&v, Some(from)).unwrap_or_default()),
        (T::Int8 | T::Int4 | T::Int2, Value::Int(i)) => int_in_range(i, ty)?,
        (T::Int8 | T::Int4 | T::Int2, Value::Text(s)) => match s.trim().parse::<i64>() {
            Ok(i) => int_in_range(i, ty)?,
            Err(e)
                if matches!(
                    e.kind(),
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                ) =>
            {
                return Err(format!("{} is out of range for {ty:?}", s.trim()))
            }
            Err(_) => return fail(&Value::Text(s), "an integer"),
        },
        (T::Int8 | T::Int4 | T::Int2, Value::Decimal(Decimal::Finite(d))) => {
            match d.split_once('.') {
                Some((whole, frac)) if frac.bytes().all(|b| b == b'0') => match whole.parse() {
                    Ok(i) => int_in_range(i, ty)?,
                    Err(_) => return fail(&Value::Text(d), "an integer"),
                },
                None => match d.parse() {
                    Ok(i) => int_in_range(i, ty)?,
                    Err(_) => return fail(&Value::Text(d), "an integer"),
                },
                _ => return fail(&Value::Text(d), "a whole number"),
            }
        }
        (T::Float8 | T::Float4, Value::Float(f)) => Value::Float(f),
        (T::Float8 | T::Float4, Value::Int(i)) => Value::Float(i as f64),
        (T::Float8 | T::Float4, v @ (Value::Text(_) | Value::Decimal(_))) => {
            match text_of(&v, Some(from))
                .unwrap_or_default()
                .trim()
                .parse::<f64>()
            {
                Ok(f) => Value::Float(f),
                Err(_) => return fail(&v, "a number"),
            }
        }
        (T::Numeric, Value::Decimal(d)) => Value::Decimal(d),
        (T::Numeric, Value::Int(i)) => Value::Decimal(Decimal::Finite(i.to_string())),
        (T::Numeric, Value::Float(f)) if f.is_finite() => {
            Value::Decimal(Decimal::Finite(f.to_string()))
        }
        (T::Numeric, Value::Text(s)) => match Decimal::parse(s.trim()) {
            Ok(d) => Value::Decimal(d),
            Err(_) => return fail(&Value::Text(s), "a decimal number"),
        },
        (T::Bool, Value::Bool(b)) => Value::Bool(b),
        (T::Bool, Value::Int(i)) => Value::Bool(i != 0),
        (T::Bool, Value::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "y" | "on" | "1" => Value::Bool(true),
            "f" | "false" | "no" | "n" | "off" | "0" => Value::Bool(false),
            _ => return fail(&Value::Text(s), "a boolean"),
        },
        (T::Bytes, Value::Bytes(b)) => Value::Bytes(b),
        (T::Bytes, Value::Text(s)) => Value::Bytes(s.into_bytes()),
        (T::Json | T::Jsonb, v @ (Value::Json(_) | Value::Text(_))) => {
            let text = text_of(&v, Some(from)).unwrap_or_default();
            if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                return fail(&v, "a JSON document");
            }
            Value::Json(text)
        }
        (T::Uuid, Value::Uuid(u)) => Value::Uuid(u),
        (T::Uuid, Value::Text(s)) => match Uuid::parse(s.trim()) {
            Ok(u) => Value::Uuid(u),
            Err(_) => return fail(&Value::Text(s), "a UUID"),
        },
        (T::Date, Value::Date(d)) => Value::Date(d),
        (T::Date, Value::Text(s)) => match Date::parse_iso(s.trim()) {
            Ok(d) => Value::Date(d),
            Err(_) => return fail(&Value::Text(s), "a date (YYYY-MM-DD)"),
        },
        (T::Timestamp, Value::Timestamp(t)) => Value::Timestamp(t),
        // To UTC: the instant's wall time in UTC.
        (T::Timestamp, Value::TimestampTz(t)) => Value::Timestamp(t),
        (T::Timestamp, Value::Text(s)) => match Timestamp::parse_iso(s.trim()) {
            Ok(t) => Value::Timestamp(t),
            Err(_) => return fail(&Value::Text(s), "a timestamp"),
        },
        (T::TimestampTz, Value::TimestampTz(t)) => Value::TimestampTz(t),
        (T::TimestampTz, Value::Timestamp(t)) => Value::TimestampTz(in_zone(t, zone)?),
        (T::TimestampTz, Value::Text(s)) => match Timestamp::parse_iso_tz(s.trim()) {
            Ok(t) => Value::TimestampTz(t),
            Err(_) => match Timestamp::parse_iso(s.trim()) {
                Ok(t) => Value::TimestampTz(in_zone(t, zone)?),
                Err(_) => return fail(&Value::Text(s), "a timestamp"),
            },
        },
        (ty, v) => return Err(format!("{:?} cannot be cast to {ty:?}", shown(&v))),
    })
}

fn int_in_range(i: i64, ty: &ColumnType) -> Result<Value, String> {
    let ok = match ty {
        ColumnType::Int2 => i16::try_from(i).is_ok(),
        ColumnType::Int4 => i32::try_from(i).is_ok(),
        _ => true,
    };
    if ok {
        Ok(Value::Int(i))
    } else {
        Err(format!("{i} is out of range for {ty:?}"))
    }
}

/// The instant at which the wall clock of `zone` showed `wall`, by PostgreSQL's rules for `AT TIME ZONE`: a time
/// the clocks repeat (fall-back) takes the offset in force after the transition, a time they skip
/// (spring-forward) the offset in force before it.
fn in_zone(wall: Timestamp, zone: Option<chrono_tz::Tz>) -> Result<Timestamp, String> {
    use chrono::{LocalResult, Offset, TimeZone};
    let Some(zone) = zone else { return Ok(wall) };
    if !wall.is_finite() {
        return Ok(wall);
    }
    let naive = wall
        .unix_micros()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(|| format!("{wall} is out of range"))?
        .naive_utc();
    let instant = match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.naive_utc(),
        LocalResult::Ambiguous(_, later) => later.naive_utc(),
        LocalResult::None => {
            // The offset a day earlier: in force before the transition.
            let before = naive - chrono::Duration::days(1);
            let offset = zone.offset_from_utc_datetime(&before).fix();
            naive - chrono::Duration::seconds(i64::from(offset.local_minus_utc()))
        }
    };
    Ok(Timestamp::from_unix_micros(
        instant.and_utc().timestamp_micros(),
    ))
}

/// A CEL result as a value of `ty` (`compute`): the CEL type must fit the column type.
pub fn from_cel(v: &Cel, ty: &ColumnType) -> Result<Value, String> {
    use ColumnType as T;
    Ok(match (ty, v) {
        (_, Cel::Null) => Value::Null,
        (T::Text, Cel::String(s)) => Value::Text(s.to_string()),
        (T::Int8 | T::Int4 | T::Int2, Cel::Int(i)) => int_in_range(*i, ty)?,
        (T::Int8 | T::Int4 | T::Int2, Cel::UInt(u)) => int_in_range(
            i64::try_from(*u).map_err(|_| format!("{u} is out of range"))?,
            ty,
        )?,
        (T::Float8 | T::Float4, Cel::Float(f)) => Value::Float(*f),
        (T::Float8 | T::Float4, Cel::Int(i)) => Value::Float(*i as f64),
        (T::Numeric, Cel::Int(i)) => Value::Decimal(Decimal::Finite(i.to_string())),
        (T::Numeric, Cel::Float(f)) if f.is_finite() => {
            Value::Decimal(Decimal::Finite(f.to_string()))
        }
        (T::Numeric, Cel::String(s)) => {
            Value::Decimal(Decimal::parse(s).map_err(|e| e.to_string())?)
        }
        (T::Bool, Cel::Bool(b)) => Value::Bool(*b),
        (T::Bytes, Cel::Bytes(b)) => Value::Bytes(b.to_vec()),
        (T::Json | T::Jsonb, Cel::String(s)) => {
            cast(Value::Text(s.to_string()), &T::Text, ty, None)?
        }
        (T::Uuid | T::Date | T::Timestamp | T::TimestampTz, Cel::String(s)) => {
            cast(Value::Text(s.to_string()), &T::Text, ty, None)?
        }
        (T::Timestamp | T::TimestampTz, Cel::Timestamp(t)) => {
            let t = Timestamp::from_unix_micros(t.timestamp_micros());
            if *ty == T::Timestamp {
                Value::Timestamp(t)
            } else {
                Value::TimestampTz(t)
            }
        }
        (ty, v) => return Err(format!("the expression gave {}, not a {ty:?}", cel_type(v))),
    })
}

/// CEL's name of a value's type, for messages.
pub fn cel_type(v: &Cel) -> &'static str {
    match v {
        Cel::List(_) => "a list",
        Cel::Map(_) => "a map",
        Cel::Function(..) => "a function",
        Cel::Int(_) => "an int",
        Cel::UInt(_) => "a uint",
        Cel::Float(_) => "a double",
        Cel::String(_) => "a string",
        Cel::Bytes(_) => "bytes",
        Cel::Bool(_) => "a bool",
        Cel::Duration(_) => "a duration",
        Cel::Timestamp(_) => "a timestamp",
        Cel::Null => "null",
        _ => "a value of another type",
    }
}
