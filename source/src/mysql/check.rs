//! MySQL / MariaDB source prerequisites, each with the statement or setting that fixes it.

use ferry_config::MysqlSource;
use ferry_core::Error;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::check::{fail, pass, CheckOutcome};

fn query_error(what: &str) -> impl Fn(mysql_async::Error) -> Error + '_ {
    move |e| Error::transient(format!("reading {what} from the MySQL source"), e)
}

/// One server variable as text (`None` when this server version does not have it). `SHOW GLOBAL VARIABLES`
/// works on MySQL 5.x, 8.x and MariaDB alike (information_schema.GLOBAL_VARIABLES is gone in MySQL 8).
async fn variable(conn: &mut Conn, name: &'static str) -> Result<Option<String>, Error> {
    let row: Option<(String, Option<String>)> = conn
        .query_first(format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
        .await
        .map_err(query_error(name))?;
    Ok(row.and_then(|(_, v)| v))
}

/// Checks what streaming from the binlog needs: binary log on, row format with full images, a server id,
/// replication privileges, retention, and keys on the tables.
pub async fn check_prerequisites(cfg: &MysqlSource) -> Result<Vec<CheckOutcome>, Error> {
    let mut conn = super::connect(&cfg.url).await?;
    let mut out = Vec::new();
    let on = |v: &Option<String>| v.as_deref().is_some_and(|v| v == "ON" || v == "1");

    let log_bin = variable(&mut conn, "log_bin").await?;
    out.push(if on(&log_bin) {
        pass("log_bin", "ON")
    } else {
        fail(
            "log_bin",
            "the binary log is off",
            "start the server with log_bin (e.g. `log_bin = mysql-bin` under [mysqld] in my.cnf) and restart it",
        )
    });
    let expect = |name: &str, value: Option<String>, want: &str, fix: String| match value {
        Some(v) if v.eq_ignore_ascii_case(want) => pass(name, v),
        other => fail(
            name,
            format!(
                "{} (Ferry needs {want})",
                other.as_deref().unwrap_or("unknown")
            ),
            fix,
        ),
    };
    out.push(expect(
        "binlog_format",
        variable(&mut conn, "binlog_format").await?,
        "ROW",
        "SET GLOBAL binlog_format = 'ROW'; and binlog_format = ROW in my.cnf (sessions already open keep the old format)".into(),
    ));
    out.push(expect(
        "binlog_row_image",
        variable(&mut conn, "binlog_row_image").await?,
        "FULL",
        "SET GLOBAL binlog_row_image = 'FULL'; and binlog_row_image = FULL in my.cnf".into(),
    ));
    // Recommended, not required: without it column names, signedness and enum labels come from the schema history.
    out.push(match variable(&mut conn, "binlog_row_metadata").await? {
        Some(v) if v.eq_ignore_ascii_case("FULL") => pass("binlog_row_metadata", v),
        Some(v) => pass(
            "binlog_row_metadata",
            format!("{v} (recommended: SET GLOBAL binlog_row_metadata = 'FULL')"),
        ),
        None => pass(
            "binlog_row_metadata",
            "not supported by this server version",
        ),
    });
    let server_id = variable(&mut conn, "server_id").await?;
    out.push(match server_id.as_deref() {
        Some("0") | None => fail(
            "server_id",
            "0: a server without an id cannot serve replicas",
            "SET GLOBAL server_id = 1; and server_id = 1 in my.cnf",
        ),
        Some(id) => pass("server_id", id.to_owned()),
    });

    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(query_error("the grants"))?;
    let granted = |privilege: &str| {
        grants.iter().any(|g| {
            let g = g.to_uppercase();
            g.contains(" ON *.* ") && (g.contains(privilege) || g.contains("ALL PRIVILEGES"))
        })
    };
    let user: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(query_error("the current user"))?;
    let user = user.unwrap_or_default();
    let grantee = match user.split_once('@') {
        Some((name, host)) => format!("'{name}'@'{host}'"),
        None => format!("'{user}'"),
    };
    out.push(
        if granted("REPLICATION SLAVE") || granted("REPLICATION REPLICA") {
            pass("privilege REPLICATION SLAVE", user.clone())
        } else {
            fail(
                "privilege REPLICATION SLAVE",
                format!("{user} may not read the binary log"),
                format!("GRANT REPLICATION SLAVE ON *.* TO {grantee};"),
            )
        },
    );
    // MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR.
    out.push(
        if granted("REPLICATION CLIENT") || granted("BINLOG MONITOR") {
            pass("privilege REPLICATION CLIENT", user.clone())
        } else {
            fail(
                "privilege REPLICATION CLIENT",
                format!("{user} may not read binlog positions"),
                format!("GRANT REPLICATION CLIENT ON *.* TO {grantee};"),
            )
        },
    );

    // Retention: a binlog purged past the checkpoint means a new snapshot.
    let seconds = match variable(&mut conn, "binlog_expire_logs_seconds").await? {
        Some(s) => s.parse::<u64>().ok(),
        None => variable(&mut conn, "expire_logs_days")
            .await?
            .and_then(|d| d.parse::<f64>().ok())
            .map(|d| (d * 86400.0) as u64),
    };
    out.push(match seconds {
        Some(0) | None => pass("binlog retention", "binlogs are never expired automatically"),
        Some(s) if s >= 86400 => pass("binlog retention", format!("{:.1} days", s as f64 / 86400.0)),
        Some(s) => fail(
            "binlog retention",
            format!("binlogs expire after {s} s: a ferry stopped longer than that must re-snapshot"),
            "SET GLOBAL binlog_expire_logs_seconds = 604800; (7 days; expire_logs_days = 7 on older servers)",
        ),
    });

    if cfg.semi_sync {
        // MariaDB and MySQL's old plugin say master, MySQL's plugin since 8.0.26 source.
        let enabled = match variable(&mut conn, "rpl_semi_sync_master_enabled").await? {
            Some(v) => Some(v),
            None => variable(&mut conn, "rpl_semi_sync_source_enabled").await?,
        };
        out.push(if on(&enabled) {
            pass("semi_sync", "rpl_semi_sync_master_enabled is ON")
        } else {
            fail(
                "semi_sync",
                format!(
                    "semi_sync is set, but rpl_semi_sync_master_enabled is {}: the source's commits do not wait \
                     for Ferry",
                    enabled.as_deref().unwrap_or("unknown (MySQL: the semisync source plugin is not installed)")
                ),
                "SET GLOBAL rpl_semi_sync_master_enabled = ON; SET GLOBAL rpl_semi_sync_master_wait_point = \
                 'AFTER_SYNC'; (and both in my.cnf)",
            )
        });
    }

    for table in cfg.tables.iter().flatten() {
        let keys: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(c.COLUMN_NAME) FROM information_schema.TABLES t
                 LEFT JOIN information_schema.KEY_COLUMN_USAGE c
                   ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_NAME = 'PRIMARY'
                 WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ? GROUP BY t.TABLE_NAME",
                (table.schema.as_str(), table.name.as_str()),
            )
            .await
            .map_err(query_error("table definitions"))?;
        let name = format!("table {table}");
        out.push(match keys {
            None => fail(
                name,
                "does not exist",
                format!("create it, or remove {table} from [source] tables"),
            ),
            Some(0) => fail(
                name,
                "has no primary key: updates and deletes cannot be matched exactly",
                format!(
                    "ALTER TABLE `{}`.`{}` ADD PRIMARY KEY (…);",
                    table.schema, table.name
                ),
            ),
            Some(_) => pass(name, "exists, has a primary key"),
        });
    }
    let _ = conn.disconnect().await;
    Ok(out)
}
