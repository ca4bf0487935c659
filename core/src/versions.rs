//! Row versions for conflict detection in a MySQL / MariaDB database (docs/multi-master.md), as SQL text shared
//! by the MySQL sink (a target under a conflict policy) and the MySQL source (a multi-master source versions its
//! rows from the start). The PostgreSQL counterpart is `ferry_pgconn::versions`.
//!
//! A versioned table gets the two version columns ([`crate::VERSION_TS`], [`crate::VERSION_NODE`]) and two
//! `BEFORE` triggers that stamp local writes with a hybrid logical clock (`GREATEST(now, previous + 1 µs)`) and
//! the database's node name (the one row of `ferry_node`). Ferry's sessions set `@ferry_applying = 1`, and the
//! triggers leave their writes alone. Creating triggers needs the TRIGGER privilege, and with binary logging on,
//! SUPER or `log_bin_trust_function_creators = 1`.

use crate::{VERSION_NODE, VERSION_TS};

/// The table naming a database's node: one row, `id = 1`.
pub const NODE_TABLE: &str = "ferry_node";

/// The table a MySQL sink writes first in each transaction it applies (`[pipeline] node` set), so that a MySQL
/// source reading that database can recognise and skip Ferry's own transactions: the binlog's stand-in for
/// PostgreSQL's replication origins, which works without SUPER (a session `server_id` or GTID domain needs it).
pub const ORIGIN_TABLE: &str = "ferry_origin";

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `CREATE TABLE` of [`NODE_TABLE`] and [`ORIGIN_TABLE`] in `database`.
pub fn mysql_support_sql(database: &str) -> Vec<String> {
    let db = quote(database);
    vec![
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

/// The query that counts a table's version columns and triggers (`?` = database, table): 4 when prepared.
pub const MYSQL_PREPARED_SQL: &str = "SELECT (SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
     AND TABLE_NAME = ? AND COLUMN_NAME IN ('_ferry_ts', '_ferry_node')) + (SELECT COUNT(*) FROM \
     information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? AND TRIGGER_NAME LIKE 'ferry\\_%')";

/// The statements that give `database`.`table` the version columns (when `add_columns`) and the stamping
/// triggers. Trigger names carry a hash of the table's name (they are unique per database, at most 64 bytes).
pub fn mysql_prepare_sql(database: &str, table: &str, add_columns: bool) -> Vec<String> {
    let (db, t) = (quote(database), quote(table));
    let h = crate::fnv1a(format!("{database}.{table}").into_bytes());
    let now = "CAST(UNIX_TIMESTAMP(SYSDATE(6)) * 1000000 AS SIGNED)";
    let node = format!("(SELECT node FROM {db}.{NODE_TABLE} WHERE id = 1)");
    let mut out = Vec::new();
    if add_columns {
        out.push(format!(
            "ALTER TABLE {db}.{t} ADD COLUMN IF NOT EXISTS {VERSION_TS} BIGINT NULL, \
             ADD COLUMN IF NOT EXISTS {VERSION_NODE} VARCHAR(64) NULL"
        ));
    }
    for (event, name, ts) in [
        ("INSERT", format!("ferry_si_{h:016x}"), now.to_owned()),
        (
            "UPDATE",
            format!("ferry_su_{h:016x}"),
            format!("GREATEST({now}, IFNULL(OLD.{VERSION_TS}, 0) + 1)"),
        ),
    ] {
        out.push(format!("DROP TRIGGER IF EXISTS {db}.{name}"));
        out.push(format!(
            "CREATE TRIGGER {db}.{name} BEFORE {event} ON {db}.{t} FOR EACH ROW BEGIN \
             IF @ferry_applying IS NULL THEN SET NEW.{VERSION_TS} = {ts}, NEW.{VERSION_NODE} = {node}; END IF; END"
        ));
    }
    out
}
