//! Failover of the source: the slot follows a promoted standby, and Ferry never streams on past a fork.
//!
//! ```text
//! old primary, timeline 1 ──────────────┬── … changes after S: sent to Ferry, never on the standby?
//!                                       S (switch point: where the standby's WAL ended)
//! promoted standby, timeline 2          └── new changes
//! ```
//!
//! From PostgreSQL 17 Ferry's slot is a failover slot, which a standby with `sync_replication_slots = on` copies,
//! so the promoted server has it. What the copy cannot say is whether the sinks hold changes past `S`: with
//! `synchronized_standby_slots` set on the primary they never do (the walsender holds changes back until the
//! standby has them); without it they may, and the targets would then keep rows the new primary never had.
//!
//! So every position Ferry reads carries the server's timeline ([`Position::Pg`]), and the sinks store it with
//! their checkpoints. On resuming on a later timeline, Ferry reads the server's timeline history: if a sink's
//! checkpoint lies past the end of the timeline it was read on, it stops loudly instead of continuing with a gap;
//! on an earlier timeline (an old primary started again after a failover) it stops too. Checkpoints written before
//! positions carried timelines fall back on the timeline Ferry records in its publication's comment (`ferry slot
//! <slot> timeline <N>`, one line per slot) before streaming.

use ferry_core::{Error, Lsn, Position};
use tokio_postgres::Client;
use tracing::{info, warn};

use super::conn::ReplicationConn;
use super::slot::{quote_ident, quote_literal};

/// Marks the slot for failover (PostgreSQL 17+), warns when the primary lets Ferry run ahead of its standbys, and
/// checks that every sink's checkpoint (none: a new slot) lies in this server's history. Returns the server's
/// timeline, which the stream records in every position.
pub async fn prepare(
    conn: &mut ReplicationConn,
    client: &Client,
    slot: &str,
    publication: &str,
    server_version: u32,
    checkpoints: &[Position],
) -> Result<u32, Error> {
    if server_version >= 170_000 {
        failover_slot(conn, client, slot).await?;
    }
    let (timeline, flushed) = current_timeline(conn).await?;
    let comment = publication_comment(client, publication).await?;
    let recorded = recorded_timeline(comment.as_deref().unwrap_or(""), slot);
    let mut history = None;
    for checkpoint in checkpoints {
        let Position::Pg(lsn, read_on) = *checkpoint else {
            continue;
        };
        // A checkpoint from before Ferry recorded timelines: the timeline last recorded on the source stands in.
        let read_on = match (read_on, recorded) {
            (0, Some(recorded)) => recorded,
            (0, None) if timeline > 1 => {
                check_fork(conn, slot, lsn, None, timeline, &mut history).await?;
                continue;
            }
            (0, None) => timeline,
            (known, _) => known,
        };
        if read_on > timeline {
            return Err(Error::fatal(format!(
                "the sinks hold changes read on timeline {read_on} (up to {lsn}), but this server is on timeline \
                 {timeline}: it is not the current primary but one from before a failover (an old primary started \
                 again, perhaps taking writes of its own). Point the source URL at the current primary; if this \
                 server must be the source, the targets hold changes it lacks: `ferry reset --config <file> --yes` \
                 copies the tables anew"
            )));
        }
        if read_on < timeline {
            check_fork(conn, slot, lsn, Some(read_on), timeline, &mut history).await?;
        }
    }
    // A position this server never wrote: the targets hold changes from another history (an old primary started
    // again, or a server promoted before it received them).
    let furthest = checkpoints.iter().filter_map(Position::as_lsn).max();
    if let Some(checkpoint) = furthest.filter(|c| *c > flushed) {
        return Err(Error::fatal(format!(
            "the sinks hold changes up to {checkpoint}, past the end of this server's WAL ({flushed}, timeline \
             {timeline}): it is not the server the targets were filled from, or a successor that has them (an old \
             primary started again after a failover, or a standby promoted before it received them). Point the \
             source URL at the current primary; if this is it, the targets hold changes it lacks: `ferry reset \
             --config <file> --yes` copies the tables anew"
        )));
    }
    if recorded != Some(timeline) {
        record_timeline(client, publication, comment.as_deref(), slot, timeline).await?;
    }
    Ok(timeline)
}

/// Resuming at `checkpoint`, read on timeline `read_on` (`None`: not known, as when neither the checkpoint nor the
/// source recorded it), on a server now on `timeline`: `read_on` must be an ancestor of `timeline` (of the parent
/// timeline when unknown) in this server's history, and the checkpoint must lie before the point where it ended.
/// `history` caches the server's timeline history across the sinks' checkpoints.
async fn check_fork(
    conn: &mut ReplicationConn,
    slot: &str,
    checkpoint: Lsn,
    read_on: Option<u32>,
    timeline: u32,
    history: &mut Option<Vec<(u32, Lsn)>>,
) -> Result<(), Error> {
    if history.is_none() {
        *history = Some(timeline_history(conn, timeline).await?);
    }
    let history = history.as_deref().unwrap_or_default();
    let ended = match read_on {
        Some(last) => history.iter().find(|(tli, _)| *tli == last).copied(),
        None => history.last().copied(),
    };
    let Some((last, end)) = ended else {
        return Err(Error::fatal(format!(
            "the sinks hold changes of slot {slot} read on timeline {}, which is not in the history of the \
             source's timeline {timeline}: this server is not a successor of the one the targets were filled \
             from; run `ferry reset --config <file> --yes` to copy the tables anew",
            read_on.map_or_else(|| "?".to_owned(), |t| t.to_string())
        )));
    };
    if checkpoint > end {
        return Err(Error::fatal(format!(
            "the source was promoted from a standby whose WAL ended at {end} (timeline {last} → {timeline}), but \
             the sinks hold changes up to {checkpoint}: the changes between the two reached the targets and are \
             not on the new primary. Ferry stops rather than leave that difference: bring the targets back in line \
             with `ferry reset --config <file> --yes` (a new snapshot), and set synchronized_standby_slots on the \
             primary so that Ferry never receives what a standby lacks (docs/operations.md, failover)"
        )));
    }
    warn!(slot, from = last, to = timeline, switch_point = %end, %checkpoint,
          "the source was promoted: the sinks' checkpoint precedes the switch point, continuing on the new timeline");
    Ok(())
}

/// Makes an existing slot a failover slot (new ones are created so) and warns when a standby follows the primary
/// without the primary waiting for it.
async fn failover_slot(
    conn: &mut ReplicationConn,
    client: &Client,
    slot: &str,
) -> Result<(), Error> {
    let failover: Option<bool> = client
        .query_opt(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| Error::transient("reading the slot's failover flag", e))?
        .map(|r| r.get(0));
    if failover == Some(false) {
        conn.simple_query(&format!(
            "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
            quote_ident(slot)
        ))
        .await?;
        info!(slot, "made the replication slot a failover slot");
    }
    if let Some(physical) = standbys_not_waited_for(client).await? {
        warn!(slot, standby_slots = %physical,
              "standbys replicate from this primary, but synchronized_standby_slots is empty: Ferry may receive changes a \
               standby does not have yet, and after that standby's promotion Ferry would have to stop (the targets \
               would hold changes the new primary lacks); set synchronized_standby_slots to the standbys' slots");
    }
    Ok(())
}

/// PostgreSQL 17+: the physical slots of standbys (comma-separated) when the primary does not wait for any of them
/// before sending logical changes (`synchronized_standby_slots` empty); `None` when it does or none exist.
pub(crate) async fn standbys_not_waited_for(client: &Client) -> Result<Option<String>, Error> {
    let row = client
        .query_one(
            "SELECT current_setting('synchronized_standby_slots'), \
                    (SELECT string_agg(slot_name, ',') FROM pg_replication_slots WHERE slot_type = 'physical')",
            &[],
        )
        .await
        .map_err(|e| Error::transient("reading synchronized_standby_slots", e))?;
    let (waited_for, physical): (String, Option<String>) = (row.get(0), row.get(1));
    Ok(physical.filter(|_| waited_for.trim().is_empty()))
}

/// The server's timeline and its WAL flush position (IDENTIFY_SYSTEM).
pub(crate) async fn current_timeline(conn: &mut ReplicationConn) -> Result<(u32, Lsn), Error> {
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
    let field = |i: usize| {
        rows.first()
            .and_then(|r| r.get(i))
            .and_then(|v| v.as_deref())
    };
    let timeline = field(1).and_then(|v| v.parse().ok());
    let flushed = field(2).and_then(|v| v.parse().ok());
    timeline
        .zip(flushed)
        .ok_or_else(|| Error::fatal("IDENTIFY_SYSTEM returned no timeline or WAL position"))
}

/// The ancestors of `timeline` with the LSN where each ended (TIMELINE_HISTORY; timeline 1 has none).
async fn timeline_history(
    conn: &mut ReplicationConn,
    timeline: u32,
) -> Result<Vec<(u32, Lsn)>, Error> {
    if timeline <= 1 {
        return Ok(Vec::new());
    }
    let rows = conn
        .simple_query(&format!("TIMELINE_HISTORY {timeline}"))
        .await?;
    let content = rows
        .first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.clone())
        .ok_or_else(|| Error::fatal("TIMELINE_HISTORY returned no content"))?;
    Ok(parse_history(&content))
}

/// A timeline history file: `<parent timeline> <tab> <switch point> <tab> <reason>` per line, `#` comments.
fn parse_history(content: &str) -> Vec<(u32, Lsn)> {
    content
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let tli = fields.next()?.parse().ok()?;
            let end = fields.next()?.parse().ok()?;
            Some((tli, end))
        })
        .collect()
}

async fn publication_comment(client: &Client, publication: &str) -> Result<Option<String>, Error> {
    Ok(client
        .query_opt(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| Error::transient("reading the publication's comment", e))?
        .and_then(|r| r.get(0)))
}

fn marker_prefix(slot: &str) -> String {
    format!("ferry slot {slot} timeline ")
}

/// The timeline recorded for `slot` in the publication's comment.
fn recorded_timeline(comment: &str, slot: &str) -> Option<u32> {
    let prefix = marker_prefix(slot);
    comment
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|t| t.trim().parse().ok())
}

/// The comment with `slot`'s line set to `timeline`, other lines kept.
fn with_timeline(comment: &str, slot: &str, timeline: u32) -> String {
    let prefix = marker_prefix(slot);
    comment
        .lines()
        .filter(|l| !l.starts_with(&prefix) && !l.trim().is_empty())
        .map(str::to_owned)
        .chain([format!("{prefix}{timeline}")])
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records the timeline, before Ferry streams on it: the publication is Ferry's (it alters it on every start), so
/// its owner may comment on it.
async fn record_timeline(
    client: &Client,
    publication: &str,
    comment: Option<&str>,
    slot: &str,
    timeline: u32,
) -> Result<(), Error> {
    let text = with_timeline(comment.unwrap_or(""), slot, timeline);
    let sql = format!(
        "COMMENT ON PUBLICATION {} IS {}",
        quote_ident(publication),
        quote_literal(&text)
    );
    client.batch_execute(&sql).await.map_err(|e| {
        let what = "recording the source's timeline in the publication's comment";
        match e.code() {
            // Not the publication's owner: retrying will not change that.
            Some(c) if *c == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => Error::fatal_from(
                format!("{what}: Ferry's role must own publication {publication} (ALTER PUBLICATION … OWNER TO)"),
                e,
            ),
            _ => Error::transient(what, e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lines_give_each_ancestor_and_its_end() {
        let history = "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tbefore 2026-01-01\n";
        assert_eq!(
            parse_history(history),
            vec![
                (1, "0/3000158".parse().unwrap()),
                (2, "0/5000000".parse().unwrap())
            ]
        );
        assert!(parse_history("garbage\n\t\n").is_empty());
    }

    #[test]
    fn each_slot_keeps_its_own_line() {
        let c = with_timeline("", "a", 1);
        assert_eq!(recorded_timeline(&c, "a"), Some(1));
        let c = with_timeline(&c, "b", 3);
        let c = with_timeline(&c, "a", 2);
        assert_eq!(recorded_timeline(&c, "a"), Some(2));
        assert_eq!(recorded_timeline(&c, "b"), Some(3));
        assert_eq!(recorded_timeline(&c, "ab"), None);
        assert_eq!(c.lines().count(), 2);
        assert_eq!(recorded_timeline("a note of the DBA", "a"), None);
        assert!(with_timeline("a note of the DBA", "a", 4).starts_with("a note of the DBA\n"));
    }
}
