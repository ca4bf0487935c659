//! Conflict handling in a MySQL / MariaDB target (see [`crate::conflict`] and docs/multi-master.md).
//!
//! MySQL has neither writable CTEs nor `RETURNING` for updates, so a group of changes costs one locking probe: a
//! `SELECT … FOR UPDATE` of the target rows the group's keys meet, in one statement, returning each row's version
//! (and the row itself, for the log). [`crate::conflict::decide_change`] decides each change on it, the rule the
//! PostgreSQL statements compile into SQL, and the sink writes the winners through its usual paths.
//!
//! Versions travel in the rows themselves ([`crate::conflict::augment`]).

use crate::conflict::{Version, CONFLICTS_TABLE};

/// The conflict log table in a MySQL target.
pub fn conflicts_table_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CONFLICTS_TABLE} (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         pipeline VARCHAR(255) NOT NULL, sink VARCHAR(255) NOT NULL, table_name VARCHAR(255) NOT NULL, \
         `key` TEXT NOT NULL, kind VARCHAR(32) NOT NULL, resolver VARCHAR(32) NOT NULL, winner VARCHAR(16) NOT NULL, \
         local_row LONGTEXT NULL, remote_row LONGTEXT NOT NULL, local_node VARCHAR(64) NULL, local_ts BIGINT NULL, \
         remote_node VARCHAR(64) NOT NULL, remote_ts BIGINT NOT NULL, source_position TEXT NOT NULL, \
         detected_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) CHARACTER SET utf8mb4"
    )
}

/// The keys of a group of changes in a session-private temporary table typed like the target's key columns, so
/// the server computes their tombstone key ([`ferry_core::versions::mysql_key_json`]) from typed values exactly
/// as the delete trigger does from `OLD` (a `DATETIME(6)` or `DECIMAL(10,2)` key prints the same on both paths).
/// Besides each key it holds the change's place in the group and version.
pub struct KeyTable {
    /// Quoted name of the temporary table.
    name: String,
    /// Quoted tombstone table of the target's database.
    tombstones: String,
    /// `table_name` of the target's tombstones, as an SQL string literal.
    table_name: String,
    /// The key's `JSON_ARRAY` over the temporary table's rows (alias `k`).
    key_json: String,
    keys: Vec<String>,
}

impl KeyTable {
    /// The key table of `database`.`table` (primary key `keys`).
    pub fn new(database: &str, table: &str, keys: Vec<String>) -> KeyTable {
        let h = ferry_core::fnv1a(format!("{database}.{table}").into_bytes());
        KeyTable {
            name: format!("`ferry_keys_{h:016x}`"),
            tombstones: format!(
                "{}.{}",
                super::quote_ident(database),
                ferry_core::TOMBSTONES_TABLE
            ),
            table_name: super::literal::text(&ferry_core::versions::mysql_tombstone_name(
                database, table,
            )),
            key_json: ferry_core::versions::mysql_key_json("k", &keys),
            keys,
        }
    }

    /// (Re)creates the temporary table from the target `target` (quoted): its key columns' types, the place and
    /// the version.
    pub fn create_sql(&self, target: &str) -> [String; 2] {
        let keys: Vec<String> = self.keys.iter().map(|k| super::quote_ident(k)).collect();
        [
            format!("DROP TEMPORARY TABLE IF EXISTS {}", self.name),
            // The place and version columns are declared, the key columns copied from the target.
            format!(
                "CREATE TEMPORARY TABLE {} (ord INT NOT NULL, vts BIGINT NOT NULL, vnode VARCHAR(64) NOT NULL) \
                 CHARACTER SET utf8mb4 AS SELECT 0 AS ord, {}, 0 AS vts, '' AS vnode FROM {target} LIMIT 0",
                self.name,
                keys.join(", ")
            ),
        ]
    }

    /// Replaces the table's rows with `rows`: place, key literals (in key order) and version.
    pub fn load_sql(&self, rows: &[(usize, Vec<String>, &Version)]) -> [String; 2] {
        let values: Vec<String> = rows
            .iter()
            .map(|(ord, keys, v)| {
                format!(
                    "({ord}, {}, {}, {})",
                    keys.join(", "),
                    v.ts,
                    super::literal::text(&v.node)
                )
            })
            .collect();
        let keys: Vec<String> = self.keys.iter().map(|k| super::quote_ident(k)).collect();
        [
            format!("DELETE FROM {}", self.name),
            format!(
                "INSERT INTO {} (ord, {}, vts, vnode) VALUES {}",
                self.name,
                keys.join(", "),
                values.join(", ")
            ),
        ]
    }

    fn matching(&self) -> String {
        format!(
            "tb.table_name = {} AND tb.key_hash = UNHEX(SHA2({}, 256))",
            self.table_name, self.key_json
        )
    }

    fn places(ords: &[usize]) -> String {
        ords.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The tombstones of the keys at places `ords`: place, version µs, node. A locking read: it sees the latest
    /// tombstones, not the transaction's snapshot (the probe before it may have waited for a row that a delete,
    /// committed meanwhile, took away), and holds the keys' places in the tombstone table until the transaction
    /// ends, so a concurrent writer of one of these tombstones waits for it (or deadlocks, and goes again).
    pub fn lookup_sql(&self, ords: &[usize]) -> String {
        format!(
            "SELECT k.ord, tb.{ts}, COALESCE(tb.{node}, '') FROM {} k JOIN {} tb ON {} WHERE k.ord IN ({}) \
             LOCK IN SHARE MODE",
            self.name,
            self.tombstones,
            self.matching(),
            Self::places(ords),
            ts = ferry_core::VERSION_TS,
            node = ferry_core::VERSION_NODE,
        )
    }

    /// Leaves a tombstone of each key at places `ords` (deletes applied, or that met no row) with the delete's
    /// version, unless a later one is there. Two statements: in MySQL's `ON DUPLICATE KEY UPDATE`, each
    /// assignment sees the ones before it, so one conditional upsert cannot move both version columns together.
    pub fn write_sql(&self, ords: &[usize]) -> [String; 2] {
        let (ts, node) = (ferry_core::VERSION_TS, ferry_core::VERSION_NODE);
        [
            format!(
                "INSERT INTO {tb} (table_name, key_hash, `key`, {ts}, {node}) SELECT {name}, \
                 UNHEX(SHA2({key}, 256)), {key}, k.vts, k.vnode FROM {keys} k WHERE k.ord IN ({ords}) \
                 ON DUPLICATE KEY UPDATE table_name = table_name",
                tb = self.tombstones,
                name = self.table_name,
                key = self.key_json,
                keys = self.name,
                ords = Self::places(ords),
            ),
            format!(
                "UPDATE {tb} tb JOIN {keys} k ON {matching} SET tb.{ts} = k.vts, tb.{node} = k.vnode, \
                 tb.deleted_at = CURRENT_TIMESTAMP(6) WHERE k.ord IN ({ords}) \
                 AND (k.vts, k.vnode) > (tb.{ts}, COALESCE(tb.{node}, ''))",
                tb = self.tombstones,
                keys = self.name,
                matching = self.matching(),
                ords = Self::places(ords),
            ),
        ]
    }
}
