//! Reading table schemas and resolving column types from the source's catalog.
//!
//! pgoutput's Relation message names the columns and their type OIDs; nullability, the primary key and what a
//! type really is (a domain's base type, an enum, an extension type) come from the catalog over an ordinary
//! connection. Resolved types are cached by OID.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_core::{Column, ColumnType, Error, TableId, TableSchema, Value};

use super::decode::decode_text;
use tokio_postgres::Client;
use tracing::warn;

/// A column as the stream or the catalog lists it, before its type is resolved.
#[derive(Debug, Clone)]
pub struct RawColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity, per the Relation message.
    pub is_key: bool,
}

#[derive(Debug, Clone)]
struct ResolvedType {
    ty: ColumnType,
    /// The DDL type a target without this type's definition can use (`text` for enums, the base type for
    /// domains); `None` when the column's own `format_type` is right.
    ddl_override: Option<String>,
    /// Why the values are carried as text, for the once-per-column log line.
    as_text_reason: Option<&'static str>,
    /// Whether `binary.rs` decodes the type's send format into the value its text form gives.
    binary: bool,
}

/// One attribute as the catalog describes it.
struct CatalogAttr {
    name: String,
    not_null: bool,
    /// Position in the primary key, from 1; 0 when not part of it.
    pk_ord: i32,
    in_identity: bool,
    attnum: i32,
    type_oid: u32,
    type_modifier: i32,
    /// A stored generated column's expression.
    generated: Option<String>,
    default: Option<String>,
    /// `attmissingval` as array text (`{dflt}`), when `atthasmissing`.
    missing: Option<String>,
}

/// Catalog access for one source database.
pub struct Catalog {
    client: Client,
    server_version: Option<u32>,
    formats: HashMap<(u32, i32), String>,
    types: HashMap<u32, ResolvedType>,
    warned: HashSet<(TableId, String)>,
    /// The per-table queries, prepared once: a snapshot or a stream meeting thousands of tables saves a round trip
    /// and a parse for each.
    prepared: HashMap<&'static str, tokio_postgres::Statement>,
}

const TABLE_SCHEMA_SQL: &str = "SELECT a.attname::text, a.attnotnull, \
            coalesce((SELECT k.ord::int FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                      WHERE i.indrelid = a.attrelid AND i.indisprimary AND k.attnum = a.attnum), 0), \
            CASE c.relreplident \
              WHEN 'f' THEN true \
              WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                        AND i.indisprimary AND a.attnum = ANY (i.indkey)) \
              WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                        AND i.indisreplident AND a.attnum = ANY (i.indkey)) \
              ELSE false END, \
            c.relreplident::text, a.attnum::int, a.atttypid::int8, a.atttypmod, \
            CASE WHEN a.attgenerated = 's' THEN pg_get_expr(d.adbin, d.adrelid) END, \
            CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
            CASE WHEN a.atthasmissing THEN a.attmissingval::text END \
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const COLUMNS_SQL: &str = "SELECT attname::text, atttypid::int8, atttypmod FROM pg_attribute \
     WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum";

fn catalog_error(e: tokio_postgres::Error) -> Error {
    Error::transient("reading the source catalog", e)
}

/// Whether a built-in type names a catalog object by OID, written as the object's name (`regclass`, `regtype`, …).
fn is_object_reference(typname: &str) -> bool {
    matches!(
        typname,
        "regclass"
            | "regtype"
            | "regproc"
            | "regprocedure"
            | "regoper"
            | "regoperator"
            | "regconfig"
            | "regdictionary"
            | "regnamespace"
            | "regrole"
            | "regcollation"
    )
}

/// The value type of a built-in (pg_catalog) type by name.
fn builtin(typname: &str) -> Option<ColumnType> {
    Some(match typname {
        "bool" => ColumnType::Bool,
        "int2" => ColumnType::Int2,
        "int4" => ColumnType::Int4,
        "int8" | "oid" => ColumnType::Int8,
        "float4" => ColumnType::Float4,
        "float8" => ColumnType::Float8,
        "numeric" => ColumnType::Numeric,
        "text" | "varchar" | "bpchar" | "name" | "char" => ColumnType::Text,
        "bytea" => ColumnType::Bytes,
        "json" => ColumnType::Json,
        "jsonb" => ColumnType::Jsonb,
        "uuid" => ColumnType::Uuid,
        "date" => ColumnType::Date,
        "time" => ColumnType::Time,
        "timetz" => ColumnType::TimeTz,
        "timestamp" => ColumnType::Timestamp,
        "timestamptz" => ColumnType::TimestampTz,
        "interval" => ColumnType::Interval,
        _ => return None,
    })
}

impl Catalog {
    pub fn new(client: Client) -> Self {
        Catalog {
            client,
            server_version: None,
            formats: HashMap::new(),
            types: HashMap::new(),
            warned: HashSet::new(),
            prepared: HashMap::new(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Resolves a type OID, following domains to their base type and arrays to their element type.
    async fn resolve(&mut self, oid: u32) -> Result<ResolvedType, Error> {
        if let Some(t) = self.types.get(&oid) {
            return Ok(t.clone());
        }
        let row = self
            .client
            .query_opt(
                "SELECT t.typname::text, n.nspname::text, t.typtype::text, t.typbasetype::int8, t.typelem::int8, \
                        t.typcategory::text, format_type(t.typbasetype, t.typtypmod) \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1::int8::oid",
                &[&i64::from(oid)],
            )
            .await
            .map_err(catalog_error)?;
        let Some(row) = row else {
            return Ok(ResolvedType {
                ty: ColumnType::Other,
                ddl_override: Some("text".into()),
                as_text_reason: Some("unknown type"),
                binary: false,
            });
        };
        let typname: String = row.get(0);
        let nspname: String = row.get(1);
        let typtype: String = row.get(2);
        let base: i64 = row.get(3);
        let elem: i64 = row.get(4);
        let category: String = row.get(5);
        let base_ddl: Option<String> = row.get(6);
        let resolved = if typtype == "d" {
            let base_type = Box::pin(self.resolve(base as u32)).await?;
            ResolvedType {
                ddl_override: base_type.ddl_override.clone().or(base_ddl),
                ..base_type
            }
        } else if nspname == "pg_catalog" && matches!(typname.as_str(), "int2vector" | "oidvector")
        {
            // Arrays by catalog, but written space-separated ("1 2 -3"): kept as that text, which the type reads.
            ResolvedType {
                ty: ColumnType::Other,
                ddl_override: None,
                as_text_reason: None,
                binary: false,
            }
        } else if category == "A" && elem != 0 {
            let element = Box::pin(self.resolve(elem as u32)).await?;
            // box[] separates elements with ';': keep it whole as text.
            let ty = if typname == "_box" {
                ColumnType::Other
            } else {
                ColumnType::Array(Box::new(element.ty))
            };
            ResolvedType {
                binary: element.binary && ty != ColumnType::Other,
                ty,
                ddl_override: element.ddl_override.map(|d| format!("{d}[]")),
                as_text_reason: element.as_text_reason,
            }
        } else if typtype == "e" {
            // enum_send writes the label, as enum_out does.
            ResolvedType {
                ty: ColumnType::Other,
                ddl_override: Some("text".into()),
                as_text_reason: None,
                binary: true,
            }
        } else if nspname == "pg_catalog" && is_object_reference(&typname) {
            // regclass, regtype, …: the name of a source object, which a target may not have (its input would
            // look it up there): kept as the name, text.
            ResolvedType {
                ty: ColumnType::Other,
                ddl_override: Some("text".into()),
                as_text_reason: None,
                binary: false,
            }
        } else if nspname == "pg_catalog" {
            let ty = builtin(&typname);
            ResolvedType {
                // "char" sends its byte raw, where its text escapes bytes above 127.
                binary: ty.is_some() && typname != "char",
                ty: ty.unwrap_or(ColumnType::Other),
                ddl_override: None,
                as_text_reason: None,
            }
        } else {
            let reason = if typtype == "c" {
                "composite type"
            } else {
                "extension or user-defined type"
            };
            ResolvedType {
                ty: ColumnType::Other,
                ddl_override: Some("text".into()),
                as_text_reason: Some(reason),
                binary: false,
            }
        };
        self.types.insert(oid, resolved.clone());
        Ok(resolved)
    }

    /// Whether values of type `oid` can be read in pgoutput's binary format (see `binary.rs`).
    pub async fn binary_decodable(&mut self, oid: u32) -> Result<bool, Error> {
        Ok(self.resolve(oid).await?.binary)
    }

    /// A column (`schema.table.column type`) of a table in `publication` whose values cannot be read in binary;
    /// `None` when every column's can.
    pub async fn text_only_column(&mut self, publication: &str) -> Result<Option<String>, Error> {
        let rows = self
            .client
            .query(
                "SELECT DISTINCT ON (a.atttypid) a.atttypid::int8, \
                        format('%I.%I.%I %s', n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)) \
                 FROM pg_publication_tables p \
                 JOIN pg_namespace n ON n.nspname = p.schemaname \
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE p.pubname = $1",
                &[&publication],
            )
            .await
            .map_err(catalog_error)?;
        for row in rows {
            if !self.binary_decodable(row.get::<_, i64>(0) as u32).await? {
                return Ok(Some(row.get(1)));
            }
        }
        Ok(None)
    }

    /// The relation's columns in catalog order, for the snapshot.
    pub async fn columns(&mut self, rel_oid: u32) -> Result<Vec<RawColumn>, Error> {
        let statement = self.prepared(COLUMNS_SQL).await?;
        let rows = self
            .client
            .query(&statement, &[&i64::from(rel_oid)])
            .await
            .map_err(catalog_error)?;
        Ok(rows
            .iter()
            .map(|r| RawColumn {
                name: r.get(0),
                type_oid: r.get::<_, i64>(1) as u32,
                type_modifier: r.get(2),
                is_key: false,
            })
            .collect())
    }

    async fn prepared(&mut self, sql: &'static str) -> Result<tokio_postgres::Statement, Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client.prepare(sql).await.map_err(catalog_error)?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }

    /// `format_type(oid, typmod)`: a type's DDL spelling (`character varying(20)`), cached.
    async fn format_type(&mut self, oid: u32, modifier: i32) -> Result<String, Error> {
        if let Some(f) = self.formats.get(&(oid, modifier)) {
            return Ok(f.clone());
        }
        let row = self
            .client
            .query_one(
                "SELECT format_type($1::int8::oid, $2)",
                &[&i64::from(oid), &modifier],
            )
            .await
            .map_err(catalog_error)?;
        let f: String = row.get(0);
        self.formats.insert((oid, modifier), f.clone());
        Ok(f)
    }

    /// The server's `server_version_num` (150004, 180006), read once.
    pub async fn server_version(&mut self) -> Result<u32, Error> {
        if let Some(v) = self.server_version {
            return Ok(v);
        }
        let row = self
            .client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(catalog_error)?;
        let v = row.get::<_, i32>(0) as u32;
        self.server_version = Some(v);
        Ok(v)
    }

    /// Whether the server publishes stored generated columns' values (PostgreSQL 18's `publish_generated_columns`).
    pub async fn publishes_generated_columns(&mut self) -> Result<bool, Error> {
        Ok(self.server_version().await? >= 180_000)
    }

    /// Builds the schema of table `id` (relation `rel_oid`) with `columns` as the stream or snapshot sees them.
    /// The primary key comes from the catalog; without one, replica-identity-index columns serve as the key.
    /// `replica_identity` is the Relation message's setting (`d`, `n`, `f`, `i`); `None` reads the catalog's.
    /// Stored generated columns the stream does not carry (PostgreSQL before 18) are added at their catalog place,
    /// so the target keeps them: their values arrive as NULL (see [`Catalog::publishes_generated_columns`]).
    pub async fn table_schema(
        &mut self,
        rel_oid: u32,
        id: TableId,
        columns: &[RawColumn],
        replica_identity: Option<u8>,
        version: u64,
        previous: Option<&TableSchema>,
    ) -> Result<Arc<TableSchema>, Error> {
        let statement = self.prepared(TABLE_SCHEMA_SQL).await?;
        let rows = self
            .client
            .query(&statement, &[&i64::from(rel_oid)])
            .await
            .map_err(catalog_error)?;
        let attrs: Vec<CatalogAttr> = rows
            .iter()
            .map(|r| CatalogAttr {
                name: r.get(0),
                not_null: r.get(1),
                pk_ord: r.get(2),
                in_identity: r.get(3),
                attnum: r.get(5),
                type_oid: r.get::<_, i64>(6) as u32,
                type_modifier: r.get(7),
                generated: r.get(8),
                default: r.get(9),
                missing: r.get(10),
            })
            .collect();
        // The table was dropped after this point of the stream, so the catalog no longer describes it: the
        // previous schema still does when the Relation message has the same columns.
        let dropped = attrs.is_empty();
        if let Some(previous) = previous.filter(|p| {
            dropped
                && p.id == id
                && p.columns.len() == columns.len()
                && p.columns.iter().zip(columns).all(|(a, b)| a.name == b.name)
        }) {
            return Ok(Arc::new(TableSchema {
                version,
                ..previous.clone()
            }));
        }
        let info: HashMap<&str, &CatalogAttr> =
            attrs.iter().map(|a| (a.name.as_str(), a)).collect();
        let publishes_generated = self.publishes_generated_columns().await?;
        // Column numbers are the catalog's now: they describe these columns only if the table has not changed
        // since this point of the stream other than by columns added after them (same names and types, in
        // order; Ferry's own version columns are added so). Otherwise none are given, and sinks match by name,
        // stopping where a rename cannot be told from a drop (see the sinks' evolve.rs).
        let current: Vec<&CatalogAttr> = attrs
            .iter()
            .filter(|a| a.generated.is_none() || columns.iter().any(|c| c.name == a.name))
            .collect();
        let numbered = columns.len() <= current.len()
            && current.iter().zip(columns).all(|(a, c)| {
                a.name == c.name && a.type_oid == c.type_oid && a.type_modifier == c.type_modifier
            })
            && current[columns.len()..].iter().all(|extra| {
                current[..columns.len()]
                    .iter()
                    .all(|a| a.attnum < extra.attnum)
            });
        // Generated columns the stream leaves out, placed before the first column that follows them in the catalog.
        let mut columns: Vec<RawColumn> = columns.to_vec();
        for attr in attrs.iter().filter(|a| a.generated.is_some()) {
            if columns.iter().any(|c| c.name == attr.name) {
                continue;
            }
            let at = columns
                .iter()
                .position(|c| {
                    info.get(c.name.as_str())
                        .is_some_and(|a| a.attnum > attr.attnum)
                })
                .unwrap_or(columns.len());
            columns.insert(
                at,
                RawColumn {
                    name: attr.name.clone(),
                    type_oid: attr.type_oid,
                    type_modifier: attr.type_modifier,
                    is_key: false,
                },
            );
        }
        let mut out = Vec::with_capacity(columns.len());
        let mut pk: Vec<(i32, usize)> = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            let resolved = self.resolve(c.type_oid).await?;
            let attr = info.get(c.name.as_str());
            // The type as the stream describes it at this point (the catalog may have changed it since).
            let format = self.format_type(c.type_oid, c.type_modifier).await?;
            let (not_null, pk_pos) = attr.map_or((false, 0), |a| (a.not_null, a.pk_ord));
            if pk_pos > 0 {
                pk.push((pk_pos, i));
            }
            if let Some(reason) = resolved.as_text_reason {
                if self.warned.insert((id.clone(), c.name.clone())) {
                    warn!(table = %id, column = %c.name, r#type = %format, reason, "column values pass through as text");
                }
            }
            let generated = attr.and_then(|a| a.generated.clone());
            if generated.is_some()
                && !publishes_generated
                && self.warned.insert((id.clone(), c.name.clone()))
            {
                warn!(table = %id, column = %c.name,
                    "PostgreSQL before 18 does not publish generated columns: a PostgreSQL target computes this \
                     column itself, other targets get NULL in it (snapshot and stream alike)");
            }
            let missing_value = match attr.and_then(|a| a.missing.as_deref()) {
                Some(text) => match decode_text(&ColumnType::Array(Box::new(resolved.ty.clone())), text.as_bytes()) {
                    Ok(Value::Array(mut items)) if items.len() == 1 => items.pop(),
                    _ => {
                        return Err(Error::fatal(format!(
                            "table {id}, column {}: cannot read the value existing rows have for it ({text:?})",
                            c.name
                        )))
                    }
                },
                None => None,
            };
            out.push(Column {
                name: c.name.clone(),
                ty: resolved.ty,
                source_type: resolved.ddl_override.unwrap_or(format),
                nullable: !not_null,
                generated,
                source_id: attr.filter(|_| numbered).map(|a| a.attnum as u32),
                default: attr.and_then(|a| a.default.clone()),
                missing_value,
                previous_name: None,
                described_at: None,
            });
        }
        pk.sort();
        let mut primary_key: Vec<usize> = pk.into_iter().map(|(_, i)| i).collect();
        // The stream's Relation message marks the identity as of its own point in the WAL; the snapshot has only
        // the catalog's current one.
        let identity: Vec<usize> = if columns.iter().any(|c| c.is_key) {
            columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_key)
                .map(|(i, _)| i)
                .collect()
        } else {
            columns
                .iter()
                .enumerate()
                .filter(|(_, c)| info.get(c.name.as_str()).is_some_and(|a| a.in_identity))
                .map(|(i, _)| i)
                .collect()
        };
        let replica_identity = replica_identity.unwrap_or_else(|| {
            rows.first()
                .and_then(|r| r.get::<_, String>(4).bytes().next())
                .unwrap_or(b'd')
        });
        if dropped && replica_identity == b'd' {
            // Only the Relation message is left: under REPLICA IDENTITY DEFAULT its key columns are the key.
            primary_key = identity.clone();
            for &k in &identity {
                out[k].nullable = false;
            }
        }
        if primary_key.is_empty() && replica_identity == b'i' {
            // Without a primary key, a USING INDEX identity (a unique index on NOT NULL columns) is the key.
            primary_key = identity.clone();
        }
        Ok(Arc::new(TableSchema {
            id,
            columns: out,
            primary_key,
            identity,
            version,
            relation_id: Some(rel_oid),
            lineage: Default::default(),
            dialect: ferry_core::Dialect::Postgres,
            keeps_absent_columns: false,
        }))
    }
}
