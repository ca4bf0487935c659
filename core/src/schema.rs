//! Table identities and versioned table schemas.

use std::fmt;
use std::sync::Arc;

use crate::value::Value;

/// A source table: schema (or database, for MySQL) and name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TableId {
    pub schema: String,
    pub name: String,
}

impl TableId {
    /// Whether `schema.table` matches `pattern`, a glob (`public.*`, `shop.order_?`) as `[[transform]] tables`
    /// and `[[sink.conflict_rules]] tables` take them; an invalid pattern matches nothing (config validation
    /// rejects it first).
    pub fn matches_glob(&self, pattern: &str) -> bool {
        glob::Pattern::new(pattern).is_ok_and(|p| p.matches(&self.to_string()))
    }

    /// Whether `pattern` is a glob [`TableId::matches_glob`] can use.
    pub fn is_valid_glob(pattern: &str) -> bool {
        glob::Pattern::new(pattern).is_ok()
    }

    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableId {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses `schema.table`; a bare `table` is in `default_schema`.
    pub fn parse(s: &str, default_schema: &str) -> Option<TableId> {
        let (schema, name) = s.split_once('.').unwrap_or((default_schema, s));
        (!schema.is_empty() && !name.is_empty() && !name.contains('.'))
            .then(|| TableId::new(schema, name))
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The logical type of a column: how its values are decoded and how a sink stores them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ColumnType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytes,
    Json,
    Jsonb,
    Uuid,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Array(Box<ColumnType>),
    /// Carried as text: network addresses, bit strings, money, enums, ranges, geometry, tsvector, composites,
    /// extension types. Their text form is exact in the source's own syntax.
    Other,
}

/// One column of a table schema.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// The column's type as the source spells it in DDL (`numeric(12,2)`, `character varying(40)`, `integer[]`),
    /// with enums and other user-defined types replaced by what a target without them can hold.
    pub source_type: String,
    pub nullable: bool,
    /// A stored generated column's expression (`GENERATED ALWAYS AS (expr) STORED`), in the source's dialect: a
    /// target of the same dialect computes the column itself and is never written to it; other targets store
    /// the values the source sends (PostgreSQL sends them from version 18, with `publish_generated_columns`).
    pub generated: Option<String>,
    /// The source's stable number for the column, which survives a rename (PostgreSQL's `attnum`); `None` when the
    /// source has none. Sinks match columns of successive schema versions by it: same number, new name = rename.
    pub source_id: Option<u32>,
    /// The column's default expression in the source's dialect (`'dflt'::character varying`, `now()`); a target
    /// of the same dialect gets the same default.
    pub default: Option<String>,
    /// The value that rows written before the column was added read for it (PostgreSQL's `attmissingval`, set by
    /// `ADD COLUMN … DEFAULT <constant>` without rewriting the table): a target that adds the column fills its
    /// existing rows with it. `None`: those rows read NULL.
    pub missing_value: Option<Value>,
    /// The column's name in the table's previous schema version, when the source reported a rename (MySQL's
    /// `RENAME COLUMN` / `CHANGE`, read from the binlog's DDL): sinks rename the column instead of dropping it.
    pub previous_name: Option<String>,
    /// Where in the source's log the description that gave the column this form was written, for a source whose
    /// descriptions of one table arrive out of order (a Kafka source: partitions, and processes, read at their
    /// own pace). A sink never takes a column back to the form of an earlier point, across restarts and processes
    /// (it keeps the point in its record of the table). `None`: the source describes tables in order.
    #[serde(default)]
    pub described_at: Option<LogPoint>,
}

/// A point in a source's log, as far as it orders descriptions of a table: PostgreSQL's LSN (`file` 0), or a
/// binlog file's sequence number and byte offset; then the change's place at that point (its index within its
/// transaction, or the row within its binlog event). Compared field by field, in that order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LogPoint {
    pub file: u64,
    pub offset: u64,
    pub row: u64,
}

impl Column {
    /// A plain column: not generated, no source number, no default.
    pub fn new(
        name: impl Into<String>,
        ty: ColumnType,
        source_type: impl Into<String>,
        nullable: bool,
    ) -> Column {
        Column {
            name: name.into(),
            ty,
            source_type: source_type.into(),
            nullable,
            generated: None,
            source_id: None,
            default: None,
            missing_value: None,
            previous_name: None,
            described_at: None,
        }
    }
}

/// Which SQL dialect a schema's `source_type` spellings are in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Dialect {
    #[default]
    Postgres,
    /// MySQL and MariaDB (`int(10) unsigned`, `enum('a','b')`, `datetime(6)`).
    Mysql,
}

/// A table's columns at one moment of the stream. Schemas are shared (`Arc`) by every change that uses them and
/// replaced, never mutated, when the source reports a change; `version` grows with each replacement.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableSchema {
    pub id: TableId,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order; empty when the table has none.
    pub primary_key: Vec<usize>,
    /// Indexes into `columns` of the replica identity: the columns an old row image (of an update or delete) is
    /// sure to carry, so the ones by which a target finds the row a change is about. PostgreSQL: the primary key
    /// (`REPLICA IDENTITY DEFAULT`), the columns of the identity index (`USING INDEX`), every column (`FULL`), or
    /// none (`NOTHING`); MySQL and MariaDB: the primary key. Empty means "the same as `primary_key`".
    pub identity: Vec<usize>,
    pub version: u64,
    /// The source's stable identity of the table, which survives renames (PostgreSQL's relation OID); `None`
    /// when the source has none. A new identity under a known name means the table was dropped and created
    /// again, or another table was renamed into its place.
    pub relation_id: Option<u32>,
    /// What the source said about this table's identity since its last schema, for sources without a stable
    /// relation id (MySQL / MariaDB): renamed from another table, or dropped and created again.
    pub lineage: Lineage,
    /// The dialect of the columns' `source_type`: a sink of the same dialect can create columns exactly as the
    /// source has them; others map from [`ColumnType`].
    pub dialect: Dialect,
    /// Target columns this schema lacks are kept, not dropped: the source cannot tell a column dropped from
    /// one its record had not met yet (a Kafka source, whose partitions arrive in no order between them).
    #[serde(default)]
    pub keeps_absent_columns: bool,
}

/// A shared schema.
pub type SchemaRef = Arc<TableSchema>;

/// Where a table comes from, as far as DDL said (see [`TableSchema::lineage`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Lineage {
    /// The same table as before (or nothing said).
    #[default]
    Same,
    /// `RENAME TABLE from TO this` (or `ALTER TABLE from RENAME TO this`): the target table of `from` is renamed.
    RenamedFrom(TableId),
    /// `DROP TABLE` then `CREATE TABLE` under this name: the target table is dropped and created anew.
    Recreated,
}

impl TableSchema {
    /// A schema naming `id` and nothing else: no columns, no key, version 0 (for what needs only the name).
    pub fn named(id: TableId, dialect: Dialect) -> TableSchema {
        TableSchema {
            id,
            columns: Vec::new(),
            primary_key: Vec::new(),
            identity: Vec::new(),
            version: 0,
            relation_id: None,
            lineage: Lineage::default(),
            dialect,
            keeps_absent_columns: false,
        }
    }

    /// Whether an old row image (an update's or a delete's `before`) holds column `i`'s value. PostgreSQL sends
    /// only the replica identity's columns (all of them under `REPLICA IDENTITY FULL`); the others arrive as NULL
    /// without being NULL. MySQL / MariaDB row images hold every column they carry (one a minimal image leaves
    /// out is [`Value::Unchanged`]).
    pub fn old_value_known(&self, i: usize) -> bool {
        match self.dialect {
            Dialect::Mysql => true,
            Dialect::Postgres => {
                let identity = if self.identity.is_empty() {
                    &self.primary_key
                } else {
                    &self.identity
                };
                identity.contains(&i)
            }
        }
    }

    /// Whether an old row image holds every column (PostgreSQL `REPLICA IDENTITY FULL`, MySQL row images).
    pub fn old_image_complete(&self) -> bool {
        (0..self.columns.len()).all(|i| self.old_value_known(i))
    }

    /// The position of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Whether rows can be matched by a primary key.
    pub fn has_primary_key(&self) -> bool {
        !self.primary_key.is_empty()
    }

    /// The columns by which a sink finds the target row of an update or delete: the primary key when the old
    /// image carries it (identity DEFAULT or FULL), otherwise the identity columns (a `USING INDEX` identity on a
    /// unique index other than the key: the old image carries only those, and the key itself may change).
    pub fn match_key(&self) -> &[usize] {
        if self.identity.is_empty() || self.primary_key.iter().all(|k| self.identity.contains(k)) {
            &self.primary_key
        } else {
            &self.identity
        }
    }

    /// Whether the target row is found by other columns than the primary key (see [`TableSchema::match_key`]).
    pub fn matches_by_identity_index(&self) -> bool {
        self.match_key() != self.primary_key.as_slice()
    }
}

/// The labels of a MySQL `enum('a','b''c')` / `set(…)` column type as declared (information_schema's
/// `COLUMN_TYPE`: quotes doubled, backslash escapes).
pub fn enum_labels(column_type: &str) -> Vec<String> {
    let Some(body) = column_type.find('(').and_then(|start| {
        column_type
            .rfind(')')
            .map(|end| &column_type[start + 1..end])
    }) else {
        return Vec::new();
    };
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                other => label.push(other),
            }
        }
        labels.push(label);
    }
    labels
}
