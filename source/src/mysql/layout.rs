//! How one table's rows are laid out in the binlog: each column's wire type and metadata from the TABLE_MAP
//! event, completed with names, signedness, character sets and ENUM / SET labels from the event's optional
//! metadata (`binlog_row_metadata = FULL`) or, failing that, from the catalog read at start.

use std::sync::Arc;

use ferry_core::{Column, ColumnType, Dialect, Error, TableId, TableSchema};
use mysql_common::binlog::events::{OptionalMetadataField, TableMapEvent};

use super::catalog::CatalogTable;
use super::charset::Charset;
use super::rows::{lenenc, Cursor};

/// Wire type codes (`enum_field_types`).
pub mod wire {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const VECTOR: u8 = 242;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// How one column's value is encoded in a row image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Little-endian integer of 1, 2, 3, 4 or 8 bytes.
    Int {
        bytes: u8,
    },
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Year,
    Date,
    /// Pre-5.6 TIME: 3 bytes `HHMMSS`.
    TimeV1,
    Time2 {
        fsp: u8,
    },
    /// Pre-5.6 DATETIME: 8 bytes `YYYYMMDDHHMMSS`.
    DatetimeV1,
    Datetime2 {
        fsp: u8,
    },
    /// Pre-5.6 TIMESTAMP: 4 bytes of epoch seconds.
    TimestampV1,
    Timestamp2 {
        fsp: u8,
    },
    Bit {
        bytes: u8,
    },
    Enum {
        bytes: u8,
    },
    Set {
        bytes: u8,
    },
    /// A string with a 1- or 2-byte length prefix (CHAR, VARCHAR, BINARY, VARBINARY). `fixed` is a CHAR /
    /// BINARY column's declared size in bytes: the binlog strips BINARY's trailing zero bytes, which decoding puts
    /// back.
    String {
        len_bytes: u8,
        fixed: Option<u16>,
    },
    /// A value with a 1–4-byte length prefix (BLOB, TEXT, GEOMETRY, MariaDB JSON, VECTOR).
    Blob {
        len_bytes: u8,
    },
    /// MySQL's binary JSON, with a 4-byte length prefix... or its length-prefix size from the metadata.
    Json {
        len_bytes: u8,
    },
    /// A column that is always NULL.
    Null,
}

/// One column as laid out in the binlog, with what decoding its values needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnLayout {
    pub wire: Wire,
    pub unsigned: bool,
    /// Bytes rather than text (the `binary` character set, BLOB, BINARY).
    pub binary: bool,
    /// The character set text values (and ENUM / SET labels) are decoded from.
    pub charset: Charset,
    /// ENUM labels, 1-based in the binlog; SET labels by bit.
    pub labels: Vec<String>,
}

/// A table as the binlog lays it out, and the schema its rows are decoded into.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub columns: Vec<ColumnLayout>,
    pub schema: Arc<TableSchema>,
}

/// Decodes the real type and wire encoding of column `i` from its TABLE_MAP type code and metadata bytes.
fn wire_of(type_code: u8, meta: &[u8]) -> Result<(u8, Wire), String> {
    use wire::*;
    let m = |i: usize| meta.get(i).copied().unwrap_or(0);
    let need = |n: usize| {
        if meta.len() < n {
            Err(format!(
                "column type {type_code} needs {n} metadata bytes, the TABLE_MAP event has {}",
                meta.len()
            ))
        } else {
            Ok(())
        }
    };
    Ok(match type_code {
        TINY => (type_code, Wire::Int { bytes: 1 }),
        SHORT => (type_code, Wire::Int { bytes: 2 }),
        INT24 => (type_code, Wire::Int { bytes: 3 }),
        LONG => (type_code, Wire::Int { bytes: 4 }),
        LONGLONG => (type_code, Wire::Int { bytes: 8 }),
        FLOAT => (type_code, Wire::Float),
        DOUBLE => (type_code, Wire::Double),
        NEWDECIMAL => {
            need(2)?;
            (
                type_code,
                Wire::Decimal {
                    precision: m(0),
                    scale: m(1),
                },
            )
        }
        YEAR => (type_code, Wire::Year),
        DATE | NEWDATE => (DATE, Wire::Date),
        TIME => (type_code, Wire::TimeV1),
        TIME2 => (type_code, Wire::Time2 { fsp: m(0) }),
        DATETIME => (type_code, Wire::DatetimeV1),
        DATETIME2 => (type_code, Wire::Datetime2 { fsp: m(0) }),
        TIMESTAMP => (type_code, Wire::TimestampV1),
        TIMESTAMP2 => (type_code, Wire::Timestamp2 { fsp: m(0) }),
        BIT => {
            need(2)?;
            // BIT(M), M ≤ 64: whole bytes, then the bits of a last partial byte.
            if m(1) > 8 || m(0) > 7 {
                return Err(format!(
                    "BIT metadata ({} bytes, {} bits) out of range",
                    m(1),
                    m(0)
                ));
            }
            let bytes = m(1) + u8::from(m(0) > 0);
            (type_code, Wire::Bit { bytes })
        }
        VARCHAR | VAR_STRING => {
            need(2)?;
            let max = u16::from_le_bytes([m(0), m(1)]);
            (
                VARCHAR,
                Wire::String {
                    len_bytes: if max < 256 { 1 } else { 2 },
                    fixed: None,
                },
            )
        }
        STRING => {
            need(2)?;
            let (b0, b1) = (m(0), m(1));
            // A CHAR longer than 255 bytes keeps its length's high bits in the type byte (MySQL bug #37426).
            let (real, len) = if b0 & 0x30 != 0x30 {
                (
                    b0 | 0x30,
                    usize::from(b1) | (usize::from((b0 & 0x30) ^ 0x30) << 4),
                )
            } else {
                (b0, usize::from(b1))
            };
            match real {
                ENUM => (ENUM, Wire::Enum { bytes: b1 }),
                SET => (SET, Wire::Set { bytes: b1 }),
                _ => (
                    STRING,
                    Wire::String {
                        len_bytes: if len < 256 { 1 } else { 2 },
                        fixed: u16::try_from(len).ok(),
                    },
                ),
            }
        }
        ENUM => (ENUM, Wire::Enum { bytes: m(1).max(1) }),
        SET => (SET, Wire::Set { bytes: m(1).max(1) }),
        BLOB | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | GEOMETRY | VECTOR => {
            need(1)?;
            (type_code, Wire::Blob { len_bytes: m(0) })
        }
        JSON => {
            need(1)?;
            (type_code, Wire::Json { len_bytes: m(0) })
        }
        NULL => (type_code, Wire::Null),
        other => return Err(format!("column type {other} is not supported")),
    })
}

/// Whether the binlog's signedness metadata has a bit for this real type (MySQL's `is_numeric_type`).
fn has_signedness_bit(real: u8) -> bool {
    use wire::*;
    matches!(
        real,
        TINY | SHORT | INT24 | LONG | LONGLONG | NEWDECIMAL | FLOAT | DOUBLE | DECIMAL
    )
}

/// Whether the binlog's column-charset metadata has an entry for this real type (MySQL's `is_character_type`).
fn has_charset(real: u8) -> bool {
    use wire::*;
    matches!(
        real,
        STRING | VAR_STRING | VARCHAR | BLOB | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB
    )
}

/// The optional metadata of a TABLE_MAP event, per column.
#[derive(Debug, Default)]
struct OptionalMeta {
    names: Vec<String>,
    unsigned: Option<Vec<bool>>,
    /// Collation ids of character columns (by column index; 0 for other columns).
    charsets: Option<Vec<u16>>,
    /// Collation ids of ENUM / SET columns, likewise.
    enum_set_charsets: Option<Vec<u16>>,
    /// Labels as the column's character set spells them.
    enum_labels: Vec<Vec<Vec<u8>>>,
    set_labels: Vec<Vec<Vec<u8>>>,
    primary_key: Option<Vec<usize>>,
}

fn read_optional_meta(tme: &TableMapEvent<'_>, reals: &[u8]) -> Result<OptionalMeta, String> {
    let mut out = OptionalMeta::default();
    let numeric: Vec<usize> = (0..reals.len())
        .filter(|&i| has_signedness_bit(reals[i]))
        .collect();
    let character: Vec<usize> = (0..reals.len())
        .filter(|&i| has_charset(reals[i]))
        .collect();
    let enum_set: Vec<usize> = (0..reals.len())
        .filter(|&i| matches!(reals[i], wire::ENUM | wire::SET))
        .collect();
    for field in tme.iter_optional_meta() {
        let field = field.map_err(|e| format!("optional metadata: {e}"))?;
        match field {
            OptionalMetadataField::Signedness(bits) => {
                let mut unsigned = vec![false; reals.len()];
                for (n, &i) in numeric.iter().enumerate() {
                    unsigned[i] = bits.get(n).is_some_and(|b| *b);
                }
                out.unsigned = Some(unsigned);
            }
            OptionalMetadataField::DefaultCharset(d) => {
                out.charsets = Some(default_charsets(&d, &character, reals.len())?);
            }
            OptionalMetadataField::ColumnCharset(c) => {
                out.charsets = Some(column_charsets(&c, &character, reals.len())?);
            }
            OptionalMetadataField::EnumAndSetDefaultCharset(d) => {
                out.enum_set_charsets = Some(default_charsets(&d, &enum_set, reals.len())?);
            }
            OptionalMetadataField::EnumAndSetColumnCharset(c) => {
                out.enum_set_charsets = Some(column_charsets(&c, &enum_set, reals.len())?);
            }
            OptionalMetadataField::ColumnName(names) => {
                for name in names.iter_names() {
                    let name = name.map_err(|e| format!("column names: {e}"))?;
                    out.names.push(name.name().into_owned());
                }
            }
            OptionalMetadataField::EnumStrValue(values) => {
                if !labels_bounded(&values) {
                    return Err("enum labels: a count exceeds the bytes that follow".into());
                }
                for labels in values.iter_values() {
                    let labels = labels.map_err(|e| format!("enum labels: {e}"))?;
                    out.enum_labels.push(
                        labels
                            .values()
                            .iter()
                            .map(|v| v.value_raw().to_vec())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(values) => {
                if !labels_bounded(&values) {
                    return Err("set labels: a count exceeds the bytes that follow".into());
                }
                for labels in values.iter_values() {
                    let labels = labels.map_err(|e| format!("set labels: {e}"))?;
                    out.set_labels.push(
                        labels
                            .values()
                            .iter()
                            .map(|v| v.value_raw().to_vec())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SimplePrimaryKey(pk) => {
                let mut key = Vec::new();
                for i in pk.iter_indexes() {
                    let i = i.map_err(|e| format!("primary key metadata: {e}"))?;
                    key.push(usize::try_from(i).map_err(|_| "primary key index".to_owned())?);
                }
                out.primary_key = Some(key);
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(pk) => {
                let mut key = Vec::new();
                for entry in pk.iter_keys() {
                    let entry = entry.map_err(|e| format!("primary key metadata: {e}"))?;
                    key.push(
                        usize::try_from(entry.column_index())
                            .map_err(|_| "primary key index".to_owned())?,
                    );
                }
                out.primary_key = Some(key);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Collation ids by column from a default-charset field: the default, and the exceptions by their index among
/// `which` (the character, or the ENUM / SET, columns).
fn default_charsets(
    d: &mysql_common::binlog::events::DefaultCharset<'_>,
    which: &[usize],
    count: usize,
) -> Result<Vec<u16>, String> {
    let mut charsets = vec![0; count];
    for &i in which {
        charsets[i] = d.default_charset();
    }
    for entry in d.iter_non_default() {
        let entry = entry.map_err(|e| format!("charset metadata: {e}"))?;
        if let Some(&i) = usize::try_from(entry.column_index())
            .ok()
            .and_then(|n| which.get(n))
        {
            charsets[i] = entry.charset();
        }
    }
    Ok(charsets)
}

/// Collation ids by column from a per-column charset field, listed in the order of `which`.
fn column_charsets(
    c: &mysql_common::binlog::events::ColumnCharsets<'_>,
    which: &[usize],
    count: usize,
) -> Result<Vec<u16>, String> {
    let mut charsets = vec![0; count];
    for (n, cs) in c.iter_charsets().enumerate() {
        let cs = cs.map_err(|e| format!("charset metadata: {e}"))?;
        if let Some(&i) = which.get(n) {
            charsets[i] = cs;
        }
    }
    Ok(charsets)
}

/// Builds a table's layout from its TABLE_MAP event. `catalog` is what information_schema said at start; it
/// fills in what the event's metadata lacks, and is only trusted when its column count still matches.
pub fn layout_from_table_map(
    tme: &TableMapEvent<'_>,
    catalog: Option<&CatalogTable>,
    version: u64,
    anonymous_columns: bool,
) -> Result<TableLayout, Error> {
    let id = TableId::new(tme.database_name(), tme.table_name());
    let bad = |why: String| Error::fatal(format!("TABLE_MAP event for {id}: {why}"));
    let count = usize::try_from(tme.columns_count()).map_err(|_| bad("column count".into()))?;
    let mut reals = Vec::with_capacity(count);
    let mut wires = Vec::with_capacity(count);
    for i in 0..count {
        let code = tme
            .get_raw_column_type(i)
            .map_err(|e| bad(format!("column {i}: {e:?}")))?
            .ok_or_else(|| bad(format!("column {i} is missing")))? as u8;
        let meta = tme.get_column_metadata(i).unwrap_or(&[]);
        let (real, wire) = wire_of(code, meta).map_err(|e| bad(format!("column {i}: {e}")))?;
        reals.push(real);
        wires.push(wire);
    }
    let meta = read_optional_meta(tme, &reals).map_err(bad)?;
    let catalog = catalog.filter(|c| c.columns.len() == count);
    let has_names = meta.names.len() == count;
    if !has_names && catalog.is_none() && !anonymous_columns {
        return Err(bad(format!(
            "the event carries no column names (binlog_row_metadata is not FULL) and the catalog's {} columns do not match the event's {count}: the table changed since Ferry read it. Set binlog_row_metadata = FULL so every row carries its own schema",
            catalog.map_or(0, |c| c.columns.len())
        )));
    }
    let nullable_bits = tme.null_bitmask();
    let (mut enums, mut sets) = (meta.enum_labels.into_iter(), meta.set_labels.into_iter());
    let mut columns = Vec::with_capacity(count);
    let mut schema_columns = Vec::with_capacity(count);
    for i in 0..count {
        let cat = catalog.map(|c| &c.columns[i]);
        let real = reals[i];
        let unsigned = match (&meta.unsigned, cat) {
            (Some(u), _) => u[i],
            (None, Some(c)) => c.unsigned,
            (None, None) => false,
        };
        let name = if has_names {
            meta.names[i].clone()
        } else {
            cat.map_or_else(|| format!("col_{}", i + 1), |c| c.name.clone())
        };
        let unsupported = |e: super::charset::UnsupportedCharset| {
            bad(format!(
                "column {name} is in {e}. Convert the column (ALTER TABLE … CONVERT TO CHARACTER SET utf8mb4) or leave the table out of the pipeline"
            ))
        };
        // The binlog's own metadata first (MINIMAL and FULL row metadata carry it), then the catalog; a string
        // column neither describes is read as utf8mb4, and bytes that are not are an error, never mojibake.
        let is_enum_set = matches!(real, wire::ENUM | wire::SET);
        let binlog_charset = if is_enum_set {
            meta.enum_set_charsets.as_ref()
        } else if has_charset(real) {
            meta.charsets.as_ref()
        } else {
            None
        }
        .map(|c| c[i]);
        let charset = match (binlog_charset, cat) {
            (Some(id), _) => Charset::from_collation_id(id).map_err(unsupported)?,
            (None, Some(c)) if has_charset(real) || is_enum_set => {
                c.charset().map_err(unsupported)?
            }
            _ => Charset::UTF8MB4,
        };
        // BIT, GEOMETRY and VECTOR hold bytes whatever character set the metadata lists for them.
        let binary = matches!(real, wire::BIT | wire::GEOMETRY | wire::VECTOR)
            || match (binlog_charset, cat) {
                (Some(_), _) => charset.is_binary(),
                (_, Some(c)) => c.binary,
                _ => false,
            };
        let labels = match real {
            wire::ENUM => enums.next(),
            wire::SET => sets.next(),
            _ => None,
        }
        .map(|raw| {
            raw.iter()
                .map(|label| charset.text(label))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e| bad(format!("the labels of column {name}: {e}")))?
        .or_else(|| cat.map(|c| c.labels.clone()))
        .unwrap_or_default();
        let layout = ColumnLayout {
            wire: wires[i],
            unsigned,
            binary,
            charset,
            labels,
        };
        let ty = column_type(real, &layout);
        // The catalog's spelling is exact (`varchar(40)`, `decimal(12,2)`) when it describes this column.
        let source_type = match cat {
            Some(c) if c.name == name => c.column_type.clone(),
            _ => spell_type(real, &layout),
        };
        schema_columns.push(Column::new(
            name,
            ty,
            source_type,
            nullable_bits.get(i).is_some_and(|b| *b),
        ));
        columns.push(layout);
    }
    let primary_key = match (meta.primary_key, catalog) {
        (Some(pk), _) => pk.into_iter().filter(|&i| i < count).collect(),
        (None, Some(c)) => c.primary_key.clone(),
        (None, None) => Vec::new(),
    };
    Ok(TableLayout {
        columns,
        schema: Arc::new(TableSchema {
            id,
            columns: schema_columns,
            primary_key,
            identity: Vec::new(),
            version,
            relation_id: None,
            lineage: Default::default(),
            dialect: Dialect::Mysql,
            keeps_absent_columns: false,
        }),
    })
}

/// The logical type Ferry carries a column's values as (docs/type-mapping.md).
pub fn column_type(real: u8, c: &ColumnLayout) -> ColumnType {
    use wire::*;
    match c.wire {
        Wire::Int { bytes: 1 } => ColumnType::Int2,
        Wire::Int { bytes: 2 } if !c.unsigned => ColumnType::Int2,
        Wire::Int { bytes: 2 | 3 } => ColumnType::Int4,
        Wire::Int { bytes: 4 } if !c.unsigned => ColumnType::Int4,
        Wire::Int { bytes: 4 } => ColumnType::Int8,
        Wire::Int { .. } if !c.unsigned => ColumnType::Int8,
        Wire::Int { .. } => ColumnType::Numeric,
        Wire::Float => ColumnType::Float4,
        Wire::Double => ColumnType::Float8,
        Wire::Decimal { .. } => ColumnType::Numeric,
        Wire::Year => ColumnType::Int2,
        Wire::Date => ColumnType::Date,
        Wire::TimeV1 | Wire::Time2 { .. } => ColumnType::Interval,
        Wire::DatetimeV1 | Wire::Datetime2 { .. } => ColumnType::Timestamp,
        Wire::TimestampV1 | Wire::Timestamp2 { .. } => ColumnType::TimestampTz,
        Wire::Bit { .. } => ColumnType::Bytes,
        Wire::Enum { .. } | Wire::Set { .. } => ColumnType::Text,
        Wire::Json { .. } => ColumnType::Json,
        Wire::String { .. } | Wire::Blob { .. } if c.binary || real == GEOMETRY => {
            ColumnType::Bytes
        }
        Wire::String { .. } | Wire::Blob { .. } => ColumnType::Text,
        Wire::Null => ColumnType::Text,
    }
}

/// A MySQL type spelling from the binlog alone, for tables the catalog does not describe.
fn spell_type(real: u8, c: &ColumnLayout) -> String {
    use wire::*;
    let unsigned = if c.unsigned { " unsigned" } else { "" };
    let fsp = |fsp: u8| {
        if fsp > 0 {
            format!("({fsp})")
        } else {
            String::new()
        }
    };
    let quoted = |labels: &[String]| {
        labels
            .iter()
            .map(|l| format!("'{}'", l.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(",")
    };
    match (real, c.wire) {
        (_, Wire::Int { bytes: 1 }) => format!("tinyint{unsigned}"),
        (_, Wire::Int { bytes: 2 }) => format!("smallint{unsigned}"),
        (_, Wire::Int { bytes: 3 }) => format!("mediumint{unsigned}"),
        (_, Wire::Int { bytes: 4 }) => format!("int{unsigned}"),
        (_, Wire::Int { .. }) => format!("bigint{unsigned}"),
        (_, Wire::Float) => format!("float{unsigned}"),
        (_, Wire::Double) => format!("double{unsigned}"),
        (_, Wire::Decimal { precision, scale }) => {
            format!("decimal({precision},{scale}){unsigned}")
        }
        (_, Wire::Year) => "year".into(),
        (_, Wire::Date) => "date".into(),
        (_, Wire::TimeV1) => "time".into(),
        (_, Wire::Time2 { fsp: f }) => format!("time{}", fsp(f)),
        (_, Wire::DatetimeV1) => "datetime".into(),
        (_, Wire::Datetime2 { fsp: f }) => format!("datetime{}", fsp(f)),
        (_, Wire::TimestampV1) => "timestamp".into(),
        (_, Wire::Timestamp2 { fsp: f }) => format!("timestamp{}", fsp(f)),
        (_, Wire::Bit { bytes }) => format!("bit({})", u32::from(bytes) * 8),
        (_, Wire::Enum { .. }) => format!("enum({})", quoted(&c.labels)),
        (_, Wire::Set { .. }) => format!("set({})", quoted(&c.labels)),
        (_, Wire::Json { .. }) => "json".into(),
        (GEOMETRY, _) => "geometry".into(),
        (_, Wire::String { .. }) if c.binary => "varbinary(65535)".into(),
        (_, Wire::String { .. }) => "text".into(),
        (_, Wire::Blob { .. }) if c.binary => "longblob".into(),
        (_, Wire::Blob { .. }) => "longtext".into(),
        (_, Wire::Null) => "text".into(),
    }
}

/// Whether every count in a TABLE_MAP's ENUM or SET label list (per column: a length-encoded count, then that
/// many length-encoded strings) fits in the bytes that follow. mysql_common reserves memory for each count before
/// reading: a malformed count would ask for more than exists (cargo-fuzz found a capacity overflow).
fn labels_bounded(field: &impl mysql_common::proto::MySerialize) -> bool {
    let mut raw = Vec::new();
    field.serialize(&mut raw);
    let mut cur = Cursor::new(&raw);
    let mut walk = || -> Result<(), super::rows::RowError> {
        while !cur.is_empty() {
            let count = lenenc(&mut cur)?;
            // Each label takes at least its length byte.
            if count > cur.remaining() as u64 {
                return Err(super::rows::RowError("count".into()));
            }
            for _ in 0..count {
                let len = lenenc(&mut cur)?;
                cur.take(usize::try_from(len).unwrap_or(usize::MAX), "a label")?;
            }
        }
        Ok(())
    };
    walk().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_metadata_reveals_enum_set_and_long_char() {
        assert_eq!(
            wire_of(wire::STRING, &[wire::ENUM, 1]).unwrap(),
            (wire::ENUM, Wire::Enum { bytes: 1 })
        );
        assert_eq!(
            wire_of(wire::STRING, &[wire::SET, 8]).unwrap(),
            (wire::SET, Wire::Set { bytes: 8 })
        );
        // CHAR(255) in utf8mb4 = 1020 bytes: the high bits of the length hide in the type byte.
        let (real, w) = wire_of(wire::STRING, &[0xce, 0xfc]).unwrap();
        assert_eq!(
            (real, w),
            (
                wire::STRING,
                Wire::String {
                    len_bytes: 2,
                    fixed: Some(1020)
                }
            )
        );
        assert!(wire_of(wire::NEWDECIMAL, &[10]).is_err());
        assert!(wire_of(200, &[]).is_err());
    }
}
