//! Replication slot and publication management, and the checks that keep resumption gap-free.

use ferry_core::{Error, Lsn, Position, TableId};
use tokio_postgres::Client;

use super::conn::ReplicationConn;

fn sql_error(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| match e.code() {
        Some(code) if code.code().starts_with("42") => Error::fatal_from(what.to_owned(), e),
        _ => Error::transient(what.to_owned(), e),
    }
}

/// Quotes an identifier for PostgreSQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for PostgreSQL.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"schema"."name"`.
pub(crate) fn qualified(t: &TableId) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name))
}

/// What the server says about a slot.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub confirmed_flush: Option<Lsn>,
    pub active: bool,
    /// `lost` means the server removed WAL the slot needed.
    pub wal_status: Option<String>,
}

/// Reads the slot, `None` when it does not exist.
pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>, Error> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, active, wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql_error("reading the replication slot"))?;
    Ok(row.map(|r| SlotInfo {
        confirmed_flush: r.get::<_, Option<String>>(0).and_then(|s| s.parse().ok()),
        active: r.get(1),
        wal_status: r.get(2),
    }))
}

/// Creates the publication when missing; when tables are listed, makes it publish exactly those. Changes of
/// partitions are published under their partitioned table (`publish_via_partition_root`), and from PostgreSQL 18
/// stored generated columns are published with their values (`publish_generated_columns`); an existing
/// publication is altered to both.
pub async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: Option<&[TableId]>,
    server_version: u32,
) -> Result<Vec<TableId>, Error> {
    let exists = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(sql_error("reading the publication"))?;
    let target = match tables {
        Some(t) => format!(
            "TABLE {}",
            t.iter().map(qualified).collect::<Vec<_>>().join(", ")
        ),
        None => "ALL TABLES".to_owned(),
    };
    let options = if server_version >= 180_000 {
        "publish_via_partition_root = true, publish_generated_columns = stored"
    } else {
        "publish_via_partition_root = true"
    };
    let quoted = quote_ident(name);
    let sql = match (&exists, tables) {
        (None, _) => format!("CREATE PUBLICATION {quoted} FOR {target} WITH ({options})"),
        (Some(_), Some(_)) => {
            format!("ALTER PUBLICATION {quoted} SET {target}; ALTER PUBLICATION {quoted} SET ({options})")
        }
        (Some(row), None) if row.get::<_, bool>(0) => {
            format!("ALTER PUBLICATION {quoted} SET ({options})")
        }
        (Some(_), None) => {
            return Err(Error::fatal(format!(
                "publication {name} exists but does not publish all tables, while the config lists none; \
                 list the tables under [source] tables, or run: DROP PUBLICATION {quoted}"
            )))
        }
    };
    // Listed tables an existing publication lost (dropped and created again at the source): their rows written
    // in between never reached the stream.
    let lost = match (&exists, tables) {
        (Some(_), Some(t)) => missing_from_publication(client, name, t).await?,
        _ => Vec::new(),
    };
    client
        .batch_execute(&sql)
        .await
        .map_err(sql_error("creating the publication"))?;
    Ok(lost)
}

/// The tables of `tables` that publication `name` does not publish.
pub async fn missing_from_publication(
    client: &Client,
    name: &str,
    tables: &[TableId],
) -> Result<Vec<TableId>, Error> {
    let published: Vec<(String, String)> = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(sql_error("reading the publication's tables"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(tables
        .iter()
        .filter(|t| {
            !published
                .iter()
                .any(|(s, n)| *s == t.schema && *n == t.name)
        })
        .cloned()
        .collect())
}

/// Adds `table` to publication `name` if it exists now; whether it was added.
pub async fn add_to_publication(
    client: &Client,
    name: &str,
    table: &TableId,
) -> Result<bool, Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified(table)])
        .await
        .map_err(sql_error("looking up a followed table"))?
        .get(0);
    if exists {
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(name),
                qualified(table)
            ))
            .await
            .map_err(sql_error("adding a table to the publication"))?;
    }
    Ok(exists)
}

/// The tables the publication publishes, with their relation OIDs and row estimates.
pub async fn published_tables(
    client: &Client,
    publication: &str,
) -> Result<Vec<(TableId, u32, f64)>, Error> {
    let rows = client
        .query(
            "SELECT p.schemaname::text, p.tablename::text, c.oid::int8, greatest(c.reltuples, 0)::float8 \
             FROM pg_publication_tables p \
             JOIN pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             WHERE p.pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(sql_error("listing the published tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                r.get::<_, i64>(2) as u32,
                r.get(3),
            )
        })
        .filter(|(id, _, _)| !ferry_core::is_internal_table(id))
        .collect())
}

/// A freshly created slot and the snapshot that matches its start.
pub struct CreatedSlot {
    pub consistent_point: Lsn,
    pub snapshot_name: Option<String>,
}

/// Creates the logical slot on `conn`. With `export_snapshot`, the returned snapshot stays usable until `conn`
/// runs another command or closes.
/// From PostgreSQL 17 the slot is a failover slot: a standby with `sync_replication_slots = on` keeps a copy of it,
/// so the pipeline continues from the standby once it is promoted (docs/operations.md, failover).
pub async fn create_slot(
    conn: &mut ReplicationConn,
    slot: &str,
    export_snapshot: bool,
    server_version: u32,
) -> Result<CreatedSlot, Error> {
    let command = if server_version >= 170_000 {
        let snapshot = if export_snapshot { "export" } else { "nothing" };
        format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT '{snapshot}', FAILOVER true)",
            quote_ident(slot)
        )
    } else {
        let mode = if export_snapshot {
            "EXPORT_SNAPSHOT"
        } else {
            "NOEXPORT_SNAPSHOT"
        };
        format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {mode}",
            quote_ident(slot)
        )
    };
    let rows = conn.simple_query(&command).await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::fatal("CREATE_REPLICATION_SLOT returned no row"))?;
    let consistent_point = row
        .get(1)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::fatal("CREATE_REPLICATION_SLOT returned no consistent point"))?;
    Ok(CreatedSlot {
        consistent_point,
        snapshot_name: row.get(2).cloned().flatten(),
    })
}

/// Ends the connection that keeps `slot` active, if any. Called under the slot's lease: no other live process
/// runs this pipeline, so whoever still streams from the slot is a connection of an earlier run that stopped
/// answering (a frozen network path) and that the server has not noticed yet. Waits until the slot is free.
pub async fn release_stale(client: &Client, slot: &str) -> Result<(), Error> {
    let pid: Option<i32> = client
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active",
            &[&slot],
        )
        .await
        .map_err(sql_error("reading the slot's connection"))?
        .and_then(|r| r.get(0));
    let Some(pid) = pid else { return Ok(()) };
    tracing::warn!(
        slot,
        pid,
        "the slot is held by a connection of an earlier run that no longer answers: ending it"
    );
    client
        .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
        .await
        .map_err(sql_error("ending the slot's stale connection"))?;
    for _ in 0..50 {
        if !slot_info(client, slot).await?.is_some_and(|i| i.active) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Drops the slot if it exists and no one is using it.
pub async fn drop_slot(client: &Client, slot: &str) -> Result<bool, Error> {
    match slot_info(client, slot).await? {
        None => Ok(false),
        Some(info) if info.active => Err(Error::fatal(format!(
            "replication slot {slot} is in use by another connection; stop the other ferry process first"
        ))),
        Some(_) => {
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
                .map_err(sql_error("dropping the replication slot"))?;
            Ok(true)
        }
    }
}

/// Drops the publication if it exists.
pub async fn drop_publication(client: &Client, publication: &str) -> Result<(), Error> {
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(publication)
        ))
        .await
        .map_err(sql_error("dropping the publication"))
}

/// Checks that streaming can resume at `checkpoint` without a gap: the slot exists, still has its WAL, and has not
/// confirmed past the checkpoint.
pub async fn check_resumable(
    client: &Client,
    slot: &str,
    checkpoint: &Position,
) -> Result<Lsn, Error> {
    let Some(lsn) = checkpoint.as_lsn() else {
        return Err(Error::fatal(format!(
            "the sinks hold checkpoint {checkpoint}, which is not a PostgreSQL position: they were filled from another source; point them at new targets or run `ferry reset --config <file> --yes`"
        )));
    };
    let reset =
        "run `ferry reset --config <file> --yes` to drop the checkpoints and take a new snapshot";
    let info = slot_info(client, slot).await?.ok_or_else(|| {
        Error::fatal(format!("replication slot {slot} does not exist, but the sinks hold checkpoint {checkpoint}: changes since then are lost to Ferry (after a failover: a promoted standby has Ferry's slot only on PostgreSQL 17+ with sync_replication_slots = on, docs/operations.md); {reset}"))
    })?;
    if info.wal_status.as_deref() == Some("lost") {
        return Err(Error::fatal(format!(
            "replication slot {slot} was invalidated (the server removed WAL it needed, see max_slot_wal_keep_size); {reset}"
        )));
    }
    if let Some(confirmed) = info.confirmed_flush {
        if confirmed > lsn {
            return Err(Error::fatal(format!(
                "replication slot {slot} has confirmed {confirmed}, past the sinks' checkpoint {lsn}: the changes between \
                 them cannot be replayed (was the slot used by another consumer?); {reset}"
            )));
        }
    }
    if info.active {
        return Err(Error::transient(
            format!("replication slot {slot} is in use by another connection"),
            std::io::Error::other("slot active"),
        ));
    }
    Ok(lsn)
}
