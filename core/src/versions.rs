//! Row versions for conflict detection in a MySQL / MariaDB database (docs/multi-master.md), as SQL text shared
//! by the MySQL sink (a target under a conflict policy) and the MySQL source (a multi-master source versions its
//! rows from the start). The PostgreSQL counterpart is `ferry_pgconn::versions`.
//!
//! A versioned table gets the two version columns ([`crate::VERSION_TS`], [`crate::VERSION_NODE`]) and two
//! `BEFORE` triggers that stamp local writes with a hybrid logical clock (`GREATEST(now, previous + 1 µs)`) and
//! the database's node name (the one row of `ferry_node`). Ferry's sessions set `@ferry_applying = 1`, and the
//! triggers leave their writes alone. Creating triggers needs the TRIGGER privilege, and with binary logging on,
//! SUPER or `log_bin_trust_function_creators = 1`.

use crate::{TOMBSTONES_TABLE, VERSION_NODE, VERSION_TS, VERSION_VECTOR};

/// The table naming a database's node: one row, `id = 1`.
pub const NODE_TABLE: &str = "ferry_node";

/// The table a MySQL sink writes first in each transaction it applies (`[pipeline] node` set), so that a MySQL
/// source reading that database can recognise and skip Ferry's own transactions: the binlog's stand-in for
/// PostgreSQL's replication origins, which works without SUPER (a session `server_id` or GTID domain needs it).
pub const ORIGIN_TABLE: &str = "ferry_origin";

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `CREATE TABLE` of [`NODE_TABLE`], [`ORIGIN_TABLE`] and the tombstone table in `database`.
///
/// A tombstone is keyed by the table (`database.table`) and the SHA-256 of its key's `JSON_ARRAY` (see
/// [`mysql_key_json`]): the server computes both from typed values, so a trigger's `OLD` row and Ferry's
/// lookup give the same text for every key type.
pub fn mysql_support_sql(database: &str) -> Vec<String> {
    let db = quote(database);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{TOMBSTONES_TABLE} (table_name VARCHAR(255) NOT NULL, \
             key_hash BINARY(32) NOT NULL, `key` LONGTEXT NOT NULL, {VERSION_TS} BIGINT NOT NULL, \
             {VERSION_NODE} VARCHAR(64) NULL, deleted_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
             PRIMARY KEY (table_name, key_hash)) CHARACTER SET utf8mb4"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{NODE_TABLE} (id TINYINT NOT NULL PRIMARY KEY, node VARCHAR(64) NOT NULL)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{ORIGIN_TABLE} (pipeline VARCHAR(255) NOT NULL PRIMARY KEY, \
             transactions BIGINT NOT NULL)"
        ),
    ]
}

/// Names `database`'s node.
pub fn mysql_register_node_sql(database: &str, node: &str) -> String {
    format!(
        "INSERT INTO {}.{NODE_TABLE} VALUES (1, '{}') ON DUPLICATE KEY UPDATE node = VALUES(node)",
        quote(database),
        node.replace('\'', "''")
    )
}

/// The statement that marks the open transaction as applied by pipeline `pipeline`.
pub fn mysql_origin_marker_sql(pipeline: &str) -> String {
    format!(
        "INSERT INTO {ORIGIN_TABLE} VALUES ('{}', 1) ON DUPLICATE KEY UPDATE transactions = transactions + 1",
        pipeline.replace('\'', "''")
    )
}

/// Whether [`MYSQL_PREPARED_SQL`]'s count says a table is prepared: two version columns and four triggers; with
/// version vectors, the vector column too, and its two stamping triggers are the vector-counting ones
/// (`ferry_v…`, counted twice). Without vectors wanted, a table counting vectors is prepared too: the peer's
/// sink keeps them (a MySQL source sees its tables before routing, so it cannot tell), and a vector column left
/// from an earlier rule does not matter.
pub fn mysql_is_prepared(count: i64, vectors: bool) -> bool {
    if vectors {
        count == 9
    } else {
        matches!(count, 6 | 7 | 9)
    }
}

/// The `table_name` of a table's tombstones: `database.table`.
pub fn mysql_tombstone_name(database: &str, table: &str) -> String {
    format!("{database}.{table}")
}

/// `JSON_ARRAY` of a key's columns, each read from `alias` (`OLD` in a trigger, a typed key table in Ferry's
/// lookups): the key text of [`TOMBSTONES_TABLE`].
pub fn mysql_key_json(alias: &str, keys: &[String]) -> String {
    let columns: Vec<String> = keys
        .iter()
        .map(|k| format!("{alias}.{}", quote(k)))
        .collect();
    format!("JSON_ARRAY({})", columns.join(", "))
}

/// The query that counts a table's version columns and triggers, the vector-counting ones twice (`?` = database,
/// table, database, table, database, table); see [`mysql_is_prepared`].
pub const MYSQL_PREPARED_SQL: &str = "SELECT (SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
     AND TABLE_NAME = ? AND COLUMN_NAME IN ('_ferry_ts', '_ferry_node', '_ferry_vv')) + (SELECT COUNT(*) FROM \
     information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? AND TRIGGER_NAME LIKE 'ferry\\_%') \
     + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? \
     AND TRIGGER_NAME LIKE 'ferry\\_v%')";

/// The statements that give `database`.`table` (primary key `keys`) the version columns (when `add_columns`),
/// the stamping triggers, and the triggers that leave a tombstone of a local delete or key change (version: the
/// removed one + 1, as on PostgreSQL). Trigger names carry a hash of the table's name (they are unique per
/// database, at most 64 bytes).
pub fn mysql_prepare_sql(
    database: &str,
    table: &str,
    keys: &[String],
    vectors: bool,
    add_columns: bool,
) -> Vec<String> {
    let (db, t) = (quote(database), quote(table));
    let h = crate::fnv1a(format!("{database}.{table}").into_bytes());
    let now = "CAST(UNIX_TIMESTAMP(SYSDATE(6)) * 1000000 AS SIGNED)";
    let node = format!("(SELECT node FROM {db}.{NODE_TABLE} WHERE id = 1)");
    let mut out = Vec::new();
    if add_columns {
        let vector = if vectors {
            format!(", ADD COLUMN IF NOT EXISTS {VERSION_VECTOR} JSON NULL")
        } else {
            String::new()
        };
        out.push(format!(
            "ALTER TABLE {db}.{t} ADD COLUMN IF NOT EXISTS {VERSION_TS} BIGINT NULL, \
             ADD COLUMN IF NOT EXISTS {VERSION_NODE} VARCHAR(64) NULL{vector}"
        ));
    }
    // A local write counts one more for this database's node in the row's vector: `{"a": 3, "b": 1}`.
    let path = format!("CONCAT('$.\"', REPLACE(COALESCE({node}, ''), '\"', '\\\\\"'), '\"')");
    let counted = |base: &str| {
        format!(
            ", NEW.{VERSION_VECTOR} = JSON_SET(COALESCE({base}, JSON_OBJECT()), {path}, \
             COALESCE(JSON_EXTRACT({base}, {path}), 0) + 1)"
        )
    };
    for (event, short, ts, base) in [
        ("INSERT", "i", now.to_owned(), "NULL"),
        (
            "UPDATE",
            "u",
            format!("GREATEST({now}, IFNULL(OLD.{VERSION_TS}, 0) + 1)"),
            &*format!("OLD.{VERSION_VECTOR}"),
        ),
    ] {
        // One name per kind of stamping, so that turning vectors on or off replaces the trigger.
        let (name, other) = if vectors {
            (
                format!("ferry_v{short}_{h:016x}"),
                format!("ferry_s{short}_{h:016x}"),
            )
        } else {
            (
                format!("ferry_s{short}_{h:016x}"),
                format!("ferry_v{short}_{h:016x}"),
            )
        };
        let vector = if vectors {
            counted(base)
        } else {
            String::new()
        };
        out.push(format!("DROP TRIGGER IF EXISTS {db}.{other}"));
        out.push(format!("DROP TRIGGER IF EXISTS {db}.{name}"));
        out.push(format!(
            "CREATE TRIGGER {db}.{name} BEFORE {event} ON {db}.{t} FOR EACH ROW BEGIN \
             IF @ferry_applying IS NULL THEN SET NEW.{VERSION_TS} = {ts}, NEW.{VERSION_NODE} = {node}{vector}; \
             END IF; END"
        ));
    }
    let key = mysql_key_json("OLD", keys);
    let tombstone = format!(
        "INSERT INTO {db}.{TOMBSTONES_TABLE} (table_name, key_hash, `key`, {VERSION_TS}, {VERSION_NODE}) \
         VALUES ('{}', UNHEX(SHA2({key}, 256)), {key}, IFNULL(OLD.{VERSION_TS}, 0) + 1, {node}) \
         ON DUPLICATE KEY UPDATE {VERSION_TS} = VALUES({VERSION_TS}), {VERSION_NODE} = VALUES({VERSION_NODE}), \
         deleted_at = CURRENT_TIMESTAMP(6)",
        mysql_tombstone_name(database, table)
            .replace('\\', "\\\\")
            .replace('\'', "''")
    );
    let moved: Vec<String> = keys
        .iter()
        .map(|k| format!("OLD.{0} <=> NEW.{0}", quote(k)))
        .collect();
    for (event, name, when) in [
        ("DELETE", format!("ferry_sd_{h:016x}"), String::new()),
        (
            "UPDATE",
            format!("ferry_sk_{h:016x}"),
            format!(" AND NOT ({})", moved.join(" AND ")),
        ),
    ] {
        out.push(format!("DROP TRIGGER IF EXISTS {db}.{name}"));
        out.push(format!(
            "CREATE TRIGGER {db}.{name} AFTER {event} ON {db}.{t} FOR EACH ROW BEGIN \
             IF @ferry_applying IS NULL{when} THEN {tombstone}; END IF; END"
        ));
    }
    out
}
