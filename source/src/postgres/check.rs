//! Source prerequisites, each with the statement or setting that fixes it.

use ferry_config::PostgresSource;
use ferry_core::{Error, TableId};
use tokio_postgres::Client;

use super::slot::quote_ident;
use crate::check::{fail, pass, CheckOutcome};

fn query_error(e: tokio_postgres::Error) -> Error {
    Error::transient("checking source prerequisites", e)
}

async fn setting(client: &Client, name: &str) -> Result<String, Error> {
    let row = client
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .map_err(query_error)?;
    Ok(row.get(0))
}

/// Fails unless `wal_level = logical` (used at start as well as by `ferry check`).
pub async fn require_logical_wal(client: &Client) -> Result<(), Error> {
    let level = setting(client, "wal_level").await?;
    if level == "logical" {
        Ok(())
    } else {
        Err(Error::fatal(format!(
            "the source has wal_level = {level}; logical replication needs wal_level = logical. Fix: run \
             ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        )))
    }
}

/// Runs every check against the source and returns all outcomes.
pub async fn check_prerequisites(
    client: &Client,
    config: &PostgresSource,
) -> Result<Vec<CheckOutcome>, Error> {
    let mut out = Vec::new();

    let version = setting(client, "server_version").await?;
    let number: u32 = setting(client, "server_version_num")
        .await?
        .parse()
        .unwrap_or(0);
    out.push(if number >= 180_000 {
        pass(
            "server version",
            format!("PostgreSQL {version}: generated columns are published with their values"),
        )
    } else if number >= 100_000 {
        pass(
            "server version",
            format!(
                "PostgreSQL {version}: generated columns are not published before 18 (a PostgreSQL target \
                 computes them; other targets get NULL in them)"
            ),
        )
    } else {
        fail(
            "server version",
            format!("PostgreSQL {version} is older than 10, which logical replication needs"),
            "upgrade the source server",
        )
    });

    out.push(if number < 170_000 {
        pass(
            "failover",
            "before PostgreSQL 17 a promoted standby has no logical slot: after a failover Ferry stops, and the \
             tables are copied anew (`ferry reset`)",
        )
    } else if let Some(standbys) = super::failover::standbys_not_waited_for(client).await? {
        fail(
            "failover",
            format!(
                "standbys follow this server (slots {standbys}) but synchronized_standby_slots is empty: Ferry may \
                 receive changes a standby lacks, and would have to stop after that standby's promotion"
            ),
            format!(
                "ALTER SYSTEM SET synchronized_standby_slots = '{standbys}'; SELECT pg_reload_conf(); -- and on \
                 each standby: sync_replication_slots = on, hot_standby_feedback = on (docs/operations.md)"
            ),
        )
    } else {
        pass(
            "failover",
            "Ferry's slot is a failover slot; standbys with sync_replication_slots = on keep a copy of it",
        )
    });

    let (trigger, superuser) = super::rewrite::state(client).await?;
    out.push(match (trigger, superuser) {
        (true, _) => pass("table rewrites", "the ferry_table_rewrite event trigger reports them"),
        (false, true) => pass(
            "table rewrites",
            "the ferry_table_rewrite event trigger is created at start (this role is a superuser)",
        ),
        (false, false) => fail(
            "table rewrites",
            "without the ferry_table_rewrite event trigger, DDL that changes rows without row events \
             (ALTER COLUMN … TYPE … USING, ADD COLUMN with a volatile default) goes unnoticed, and creating it \
             needs a superuser",
            format!("run as a superuser in the source database: {}", super::rewrite::INSTALL),
        ),
    });

    let level = setting(client, "wal_level").await?;
    out.push(if level == "logical" {
        pass("wal_level", "logical")
    } else {
        fail(
            "wal_level",
            format!("wal_level is {level}"),
            "ALTER SYSTEM SET wal_level = logical; -- then restart PostgreSQL",
        )
    });

    let row = client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int, \
                    (SELECT count(*)::int FROM pg_replication_slots), \
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1), \
                    current_setting('max_wal_senders')::int, \
                    (SELECT count(*)::int FROM pg_stat_replication)",
            &[&config.slot],
        )
        .await
        .map_err(query_error)?;
    let (max_slots, used_slots, ours, max_senders, used_senders): (i32, i32, bool, i32, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    out.push(if ours || used_slots < max_slots {
        pass("replication slots", format!("{used_slots} of {max_slots} in use"))
    } else {
        fail(
            "replication slots",
            format!("all {max_slots} replication slots are in use"),
            format!("ALTER SYSTEM SET max_replication_slots = {}; -- then restart PostgreSQL (or drop an unused slot)", max_slots + 4),
        )
    });
    out.push(if used_senders < max_senders {
        pass(
            "wal senders",
            format!("{used_senders} of {max_senders} in use"),
        )
    } else {
        fail(
            "wal senders",
            format!("all {max_senders} WAL senders are in use"),
            format!(
                "ALTER SYSTEM SET max_wal_senders = {}; -- then restart PostgreSQL",
                max_senders + 4
            ),
        )
    });

    let row = client
        .query_one("SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(query_error)?;
    let (user, can_replicate): (String, bool) = (row.get(0), row.get(1));
    out.push(if can_replicate {
        pass(
            "REPLICATION privilege",
            format!("role {user} may replicate"),
        )
    } else {
        fail(
            "REPLICATION privilege",
            format!("role {user} lacks REPLICATION"),
            format!("ALTER ROLE {} REPLICATION;", quote_ident(&user)),
        )
    });

    let tables: Vec<TableId> = match &config.tables {
        Some(t) => t.clone(),
        None => client
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(query_error)?
            .iter()
            .map(|r| TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect(),
    };
    for t in &tables {
        let qualified = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name));
        let row = client
            .query_one(
                "SELECT c.oid IS NOT NULL, c.relreplident::text, \
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                        CASE WHEN c.oid IS NULL THEN false ELSE has_table_privilege(c.oid, 'SELECT') END \
                 FROM (SELECT to_regclass($1) AS oid) r LEFT JOIN pg_class c ON c.oid = r.oid",
                &[&qualified],
            )
            .await
            .map_err(query_error)?;
        let (exists, ident, has_pk, can_select): (bool, Option<String>, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let name = format!("table {t}");
        if !exists {
            out.push(fail(
                name,
                "does not exist",
                format!("create the table, or remove {t} from [source] tables"),
            ));
            continue;
        }
        out.push(match (ident.as_deref(), has_pk) {
            (Some("f"), _) | (Some("i"), _) | (Some("d"), true) => pass(name.clone(), "rows are identified for updates and deletes"),
            _ => fail(
                name.clone(),
                "has no primary key and REPLICA IDENTITY is not FULL: its updates and deletes cannot be replicated",
                format!("ALTER TABLE {qualified} REPLICA IDENTITY FULL; -- or add a primary key"),
            ),
        });
        if !can_select {
            out.push(fail(
                format!("{name} SELECT"),
                "cannot be read for the snapshot",
                format!("GRANT SELECT ON {qualified} TO {};", quote_ident(&user)),
            ));
        }
    }
    Ok(out)
}
