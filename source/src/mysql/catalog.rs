//! Table definitions from information_schema, read at start (and for the snapshot).

use std::collections::BTreeMap;

use std::sync::Arc;

use ferry_core::{Column, ColumnType, Dialect, Error, TableId, TableSchema};

use super::charset::{Charset, UnsupportedCharset};
use super::statement::{takes_charset, AlterSpec, ColumnDef, Ddl, Placement};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// One column as information_schema describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogColumn {
    pub name: String,
    /// `COLUMN_TYPE`: `int(10) unsigned`, `enum('a','b')`, `decimal(12,2)`.
    pub column_type: String,
    /// `DATA_TYPE`: `int`, `enum`, `longtext`.
    pub data_type: String,
    pub unsigned: bool,
    /// Bytes rather than text: binary string types, or no character set.
    pub binary: bool,
    /// `CHARACTER_SET_NAME`: the character set of a string, ENUM or SET column (`None` for other columns, and for
    /// a column DDL created without one in a table and database of unknown default).
    pub charset: Option<String>,
    /// ENUM / SET labels in declaration order.
    pub labels: Vec<String>,
    pub nullable: bool,
}

/// A table's columns in ordinal order and its primary key (column indexes in key order).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogTable {
    pub columns: Vec<CatalogColumn>,
    pub primary_key: Vec<usize>,
    /// The table's default character set, which columns added without one take.
    pub default_charset: Option<String>,
}

/// schema, table, column, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, TABLE_COLLATION.
type ColumnRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn query_error(e: mysql_async::Error) -> Error {
    Error::transient("reading table definitions from information_schema", e)
}

/// Reads the tables of `databases` (all base tables, or just `only` when given).
pub async fn read_tables(
    conn: &mut Conn,
    databases: &[String],
    only: Option<&[TableId]>,
) -> Result<BTreeMap<TableId, CatalogTable>, Error> {
    let mut out: BTreeMap<TableId, CatalogTable> = BTreeMap::new();
    if databases.is_empty() {
        return Ok(out);
    }
    let in_list = databases
        .iter()
        .map(|d| format!("'{}'", d.replace('\\', "\\\\").replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<ColumnRow> = conn
        .query(format!(
            "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.DATA_TYPE, c.IS_NULLABLE, c.CHARACTER_SET_NAME, t.TABLE_COLLATION \
             FROM information_schema.COLUMNS c JOIN information_schema.TABLES t \
               ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA IN ({in_list}) AND t.TABLE_TYPE = 'BASE TABLE' \
             ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"
        ))
        .await
        .map_err(query_error)?;
    for (schema, table, name, column_type, data_type, nullable, charset, collation) in rows {
        let id = TableId::new(schema, table);
        if only.is_some_and(|o| !o.contains(&id)) || ferry_core::is_internal_table(&id) {
            continue;
        }
        let lower = column_type.to_ascii_lowercase();
        let binary = matches!(
            data_type.as_str(),
            "binary"
                | "varbinary"
                | "tinyblob"
                | "blob"
                | "mediumblob"
                | "longblob"
                | "bit"
                | "geometry"
        ) || (charset.as_deref() == Some("binary"));
        let labels = if matches!(data_type.as_str(), "enum" | "set") {
            ferry_core::enum_labels(&column_type)
        } else {
            Vec::new()
        };
        out.entry(id)
            .or_insert_with(|| CatalogTable {
                columns: Vec::new(),
                primary_key: Vec::new(),
                default_charset: collation
                    .as_deref()
                    .and_then(Charset::from_collation_name)
                    .and_then(Result::ok)
                    .map(|c| c.name().to_owned()),
            })
            .columns
            .push(CatalogColumn {
                name,
                unsigned: lower.contains(" unsigned"),
                column_type,
                data_type,
                binary,
                charset,
                labels,
                nullable: nullable == "YES",
            });
    }
    let keys: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA IN ({in_list}) AND INDEX_NAME = 'PRIMARY' \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, SEQ_IN_INDEX"
        ))
        .await
        .map_err(query_error)?;
    for (schema, table, column) in keys {
        if let Some(t) = out.get_mut(&TableId::new(schema, table)) {
            if let Some(i) = t.columns.iter().position(|c| c.name == column) {
                t.primary_key.push(i);
            }
        }
    }
    Ok(out)
}

/// Each of `databases`' default character set (`SCHEMATA.DEFAULT_CHARACTER_SET_NAME`).
pub async fn database_charsets(
    conn: &mut Conn,
    databases: &[String],
) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for db in databases {
        let charset: Option<String> = conn
            .exec_first(
                "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (db.clone(),),
            )
            .await
            .map_err(query_error)?;
        if let Some(charset) = charset {
            out.insert(db.clone(), charset);
        }
    }
    Ok(out)
}

impl CatalogTable {
    /// The schema rows of this table are decoded into; the same as the binlog's TABLE_MAP gives for an unchanged
    /// table (layout.rs), so the stream does not announce a new schema version after the snapshot.
    pub fn schema(&self, id: &TableId, version: u64) -> TableSchema {
        TableSchema {
            id: id.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| {
                    Column::new(
                        c.name.clone(),
                        c.column_type_logical(),
                        c.column_type.clone(),
                        c.nullable,
                    )
                })
                .collect(),
            primary_key: self.primary_key.clone(),
            identity: Vec::new(),
            version,
            relation_id: None,
            lineage: Default::default(),
            dialect: Dialect::Mysql,
            keeps_absent_columns: false,
        }
    }
}

impl CatalogColumn {
    /// The character set the column's text (and ENUM / SET labels) is in: bytes for binary columns, utf8mb4
    /// where nothing says otherwise.
    pub fn charset(&self) -> Result<Charset, UnsupportedCharset> {
        match &self.charset {
            Some(name) => Charset::from_name(name),
            None if self.binary => Ok(Charset::BINARY),
            None => Ok(Charset::UTF8MB4),
        }
    }

    /// The logical type, as layout::column_type derives it from the binlog.
    pub fn column_type_logical(&self) -> ColumnType {
        match (self.data_type.as_str(), self.unsigned) {
            ("tinyint" | "year", _) | ("smallint", false) => ColumnType::Int2,
            ("smallint" | "mediumint", _) | ("int" | "integer", false) => ColumnType::Int4,
            ("int" | "integer", true) | ("bigint", false) => ColumnType::Int8,
            ("bigint" | "decimal" | "numeric", _) => ColumnType::Numeric,
            ("float", _) => ColumnType::Float4,
            ("double" | "real", _) => ColumnType::Float8,
            ("date", _) => ColumnType::Date,
            ("time", _) => ColumnType::Interval,
            ("datetime", _) => ColumnType::Timestamp,
            ("timestamp", _) => ColumnType::TimestampTz,
            ("json", _) => ColumnType::Json,
            ("bit", _) => ColumnType::Bytes,
            _ if self.binary => ColumnType::Bytes,
            _ => ColumnType::Text,
        }
    }
}

impl CatalogColumn {
    /// A column as DDL defines it, in a table whose default character set is `default_charset`.
    fn defined(d: &ColumnDef, default_charset: Option<&str>) -> Self {
        let mut column = CatalogColumn::from(d);
        if column.charset.is_none() && takes_charset(&column.data_type) {
            column.charset = default_charset.map(str::to_owned);
        }
        column
    }
}

impl From<&ColumnDef> for CatalogColumn {
    fn from(d: &ColumnDef) -> Self {
        CatalogColumn {
            name: d.name.clone(),
            column_type: d.column_type.clone(),
            data_type: d.data_type.clone(),
            unsigned: d.unsigned,
            binary: d.binary,
            charset: d.charset.clone(),
            labels: d.labels.clone(),
            nullable: d.nullable,
        }
    }
}

/// Applies an interpreted DDL statement to the table definitions: the catalog is the schema history the binlog's
/// rows are decoded with when their TABLE_MAP events carry no column names.
/// A string column created without a character set takes the table's default, itself the database's unless the
/// statement names one.
pub fn apply_ddl(
    catalog: &mut BTreeMap<TableId, CatalogTable>,
    ddl: &Ddl,
    database_charsets: &BTreeMap<String, String>,
) -> Result<(), String> {
    match ddl {
        Ddl::Create {
            table,
            columns,
            primary_key,
            default_charset,
        } => {
            let default_charset = default_charset
                .clone()
                .or_else(|| database_charsets.get(&table.schema).cloned());
            let columns: Vec<CatalogColumn> = columns
                .iter()
                .map(|d| CatalogColumn::defined(d, default_charset.as_deref()))
                .collect();
            let primary_key = primary_key
                .iter()
                .map(|k| {
                    columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(k))
                        .ok_or_else(|| format!("primary key column {k} is not in the table"))
                })
                .collect::<Result<_, _>>()?;
            catalog.insert(
                table.clone(),
                CatalogTable {
                    columns,
                    primary_key,
                    default_charset,
                },
            );
        }
        Ddl::Drop(tables) => {
            for t in tables {
                catalog.remove(t);
            }
        }
        Ddl::Rename(pairs) => {
            for (from, to) in pairs {
                if let Some(t) = catalog.remove(from) {
                    catalog.insert(to.clone(), t);
                }
            }
        }
        Ddl::Alter(id, specs) => {
            let Some(mut table) = catalog.remove(id) else {
                return Ok(());
            };
            let mut id = id.clone();
            for spec in specs {
                table.alter(spec, &mut id)?;
            }
            catalog.insert(id, table);
        }
    }
    Ok(())
}

impl CatalogTable {
    fn index_of(&self, name: &str) -> Result<usize, String> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("column {name} is not in the table"))
    }

    fn place(&mut self, column: CatalogColumn, at: &Placement) -> Result<(), String> {
        let keys: Vec<String> = self
            .primary_key
            .iter()
            .map(|&k| self.columns[k].name.clone())
            .collect();
        let index = match at {
            Placement::Last => self.columns.len(),
            Placement::First => 0,
            Placement::After(c) => self.index_of(c)? + 1,
        };
        self.columns.insert(index, column);
        self.rekey(&keys)
    }

    /// Recomputes key indexes from key column names after columns moved.
    fn rekey(&mut self, keys: &[String]) -> Result<(), String> {
        self.primary_key = keys
            .iter()
            .map(|k| self.index_of(k))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn alter(&mut self, spec: &AlterSpec, id: &mut TableId) -> Result<(), String> {
        let keys: Vec<String> = self
            .primary_key
            .iter()
            .map(|&k| self.columns[k].name.clone())
            .collect();
        match spec {
            AlterSpec::Add(def, at) => {
                let column = CatalogColumn::defined(def, self.default_charset.as_deref());
                self.place(column, at)?
            }
            AlterSpec::Drop(name) => {
                let i = self.index_of(name)?;
                self.columns.remove(i);
                let keys: Vec<String> = keys
                    .into_iter()
                    .filter(|k| !k.eq_ignore_ascii_case(name))
                    .collect();
                self.rekey(&keys)?;
            }
            AlterSpec::Change(old, def, at) => {
                let i = self.index_of(old)?;
                let renamed: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        if k.eq_ignore_ascii_case(old) {
                            def.name.clone()
                        } else {
                            k.clone()
                        }
                    })
                    .collect();
                let mut column = CatalogColumn::defined(def, self.default_charset.as_deref());
                // MODIFY / CHANGE restate NULL-ability; a key column stays NOT NULL.
                column.nullable = def.nullable && !renamed.contains(&def.name);
                if *at == Placement::Last {
                    self.columns[i] = column;
                } else {
                    self.columns.remove(i);
                    self.place(column, at)?;
                }
                self.rekey(&renamed)?;
            }
            AlterSpec::RenameColumn(from, to) => {
                let i = self.index_of(from)?;
                self.columns[i].name = to.clone();
            }
            AlterSpec::AddPrimaryKey(columns) => {
                self.primary_key = columns
                    .iter()
                    .map(|c| self.index_of(c))
                    .collect::<Result<_, _>>()?;
            }
            AlterSpec::DropPrimaryKey => self.primary_key.clear(),
            AlterSpec::RenameTable(to) => *id = to.clone(),
            AlterSpec::DefaultCharset(charset) => self.default_charset = Some(charset.clone()),
            AlterSpec::ConvertCharset(charset) => {
                for c in &mut self.columns {
                    if takes_charset(&c.data_type) && !c.binary {
                        c.charset = Some(charset.clone());
                    }
                }
                self.default_charset = Some(charset.clone());
            }
            AlterSpec::NoLayoutChange => {}
        }
        Ok(())
    }
}

/// A shared schema for a catalog table.
pub fn shared_schema(id: &TableId, table: &CatalogTable, version: u64) -> Arc<TableSchema> {
    Arc::new(table.schema(id, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_gives_string_columns_the_table_or_database_character_set() {
        use super::super::statement::parse_ddl;
        let mut catalog = BTreeMap::new();
        let databases = BTreeMap::from([("d".to_owned(), "latin1".to_owned())]);
        let apply = |catalog: &mut BTreeMap<TableId, CatalogTable>, sql: &str| {
            apply_ddl(catalog, &parse_ddl(sql, "d").unwrap(), &databases).unwrap();
        };
        apply(
            &mut catalog,
            "CREATE TABLE t (id int, a varchar(5), b varchar(5) CHARACTER SET sjis, c blob)",
        );
        apply(
            &mut catalog,
            "CREATE TABLE u (a text) DEFAULT CHARSET = cp1251",
        );
        apply(
            &mut catalog,
            "ALTER TABLE t DEFAULT CHARACTER SET gbk, ADD COLUMN d char(2)",
        );
        let charsets =
            |catalog: &BTreeMap<TableId, CatalogTable>, t: &str| -> Vec<Option<String>> {
                catalog[&TableId::new("d", t)]
                    .columns
                    .iter()
                    .map(|c| c.charset.clone())
                    .collect()
            };
        let s = |c: &str| Some(c.to_owned());
        assert_eq!(
            charsets(&catalog, "t"),
            [None, s("latin1"), s("sjis"), s("binary"), s("gbk")]
        );
        assert_eq!(charsets(&catalog, "u"), [s("cp1251")]);
        apply(&mut catalog, "ALTER TABLE t CONVERT TO CHARACTER SET big5");
        assert_eq!(
            charsets(&catalog, "t"),
            [None, s("big5"), s("big5"), s("binary"), s("big5")]
        );
        let id = TableId::new("d", "t");
        assert_eq!(catalog[&id].columns[1].charset().unwrap().name(), "big5");
        assert!(catalog[&id].columns[3].charset().unwrap().is_binary());
    }

    #[test]
    fn labels_are_unquoted() {
        assert_eq!(
            ferry_core::enum_labels("enum('a','b''c','d,e')"),
            vec!["a", "b'c", "d,e"]
        );
        assert_eq!(ferry_core::enum_labels("set('x')"), vec!["x"]);
        assert!(ferry_core::enum_labels("int").is_empty());
    }
}
