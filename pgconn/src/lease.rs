//! Leases: one process at a time runs a pipeline. A lease is a session-level advisory lock
//! (`pg_try_advisory_lock`), so it lasts exactly as long as the connection holding it: a process that dies, or
//! whose connection the server drops, releases it without anyone's help.

use ferry_core::Error;
use tokio_postgres::Client;

/// Takes the lease named `name` on `client`'s session. `Ok(None)`: this process holds it now (the session's
/// `application_name` says so to others). `Ok(Some(holder))`: another session holds it; `holder` describes it
/// (its `application_name`, client address and since when) for the operator.
pub async fn try_lease(client: &Client, name: &str) -> Result<Option<String>, Error> {
    let key = ferry_core::fnv1a(format!("ferry lease {name}").into_bytes()) as i64;
    let owner = format!("ferry {}", ferry_core::process_owner());
    let err = |e| Error::transient(format!("taking the lease of {name}"), e);
    client
        .execute(
            "SELECT set_config('application_name', $1, false)",
            &[&owner],
        )
        .await
        .map_err(err)?;
    let try_lock = || async {
        client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map(|r| r.get::<_, bool>(0))
            .map_err(err)
    };
    if try_lock().await? {
        return Ok(None);
    }
    // A session of this very process holds it: a connection of an earlier attempt that stopped answering (the
    // server has not noticed yet). End it and take the lease.
    let stale: Vec<i32> = client
        .query(
            "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND ((l.classid::int8 << 32) | l.objid::int8) = $1 AND a.application_name = $2 \
               AND a.pid <> pg_backend_pid()",
            &[&key, &truncate_name(&owner)],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for pid in stale {
        tracing::warn!(lease = name, pid, "the lease was held by an earlier connection of this process that no longer answers: ending it");
        client
            .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
            .await
            .map_err(err)?;
        if try_lock().await? {
            return Ok(None);
        }
    }
    let holder = client
        .query_opt(
            "SELECT coalesce(nullif(a.application_name, ''), 'a session') || ' (from ' || \
                    coalesce(host(a.client_addr), 'a local socket') || ', since ' || \
                    to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC)' \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND ((l.classid::int8 << 32) | l.objid::int8) = $1",
            &[&key],
        )
        .await
        .map_err(err)?
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_else(|| "another process".to_owned());
    Ok(Some(holder))
}

/// `name` as PostgreSQL stores it in a `name` column: at most 63 bytes, cut at a character boundary.
fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
