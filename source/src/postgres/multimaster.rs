//! Start-up checks of a PostgreSQL source in a multi-master setup (docs/multi-master.md): two pipelines that
//! would replicate each other's changes back and forth, and counters merged with `sum_delta` whose old values the
//! source does not log.

use ferry_config::{MergeRule, OriginFilter, PipelineConfig, SinkKind, SourceConfig};
use ferry_core::{Error, TableId};
use tokio_postgres::Client;

use crate::check::{fail, pass, CheckOutcome};

/// The Ferry pipelines that apply into the source database (its replication origins `ferry_<pipeline>`) and
/// whose slot lives in one of `config`'s PostgreSQL sink targets, while the source takes their changes: each
/// would come back to where it was written. One outcome per such pair, or one pass.
pub async fn loop_check(client: &Client, config: &PipelineConfig) -> Result<CheckOutcome, Error> {
    let SourceConfig::Postgres(source) = &config.source else {
        return Ok(pass("loop", "not a PostgreSQL source"));
    };
    let origins: Vec<String> = client
        .query(
            "SELECT roname::text FROM pg_catalog.pg_replication_origin WHERE roname LIKE 'ferry\\_%'",
            &[],
        )
        .await
        .map_err(|e| Error::transient("reading the source's replication origins", e))?
        .iter()
        .map(|r| r.get(0))
        // This pipeline's own sinks apply under its origin (cluster-wide, as slots are).
        .filter(|name: &String| *name != format!("ferry_{}", config.name.to_lowercase()))
        .filter(|name: &String| !source.origins.skips(name))
        .collect();
    for sink in &config.sinks {
        let SinkKind::Postgres { url } = &sink.kind else {
            continue;
        };
        if origins.is_empty() {
            break;
        }
        let Ok(target) = crate::postgres::connect_client(url).await else {
            continue;
        };
        let slots: Vec<String> = target
            .query(
                "SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE slot_name = ANY($1) \
                 AND database = current_database()",
                &[&origins],
            )
            .await
            .map_err(|e| Error::transient("reading the target's replication slots", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(slot) = slots.first() {
            let peer = slot.trim_start_matches("ferry_");
            return Ok(fail(
                "loop",
                format!(
                    "pipeline {peer} reads sink {}'s database (slot {slot}) and applies into this source (replication \
                     origin {slot}), and this source takes the changes of every origin: each change would travel \
                     back to where it was written",
                    sink.name
                ),
                format!(
                    "set origins = \"local\" (or skip_origins = [\"{slot}\"]) in [source] of {}, and the same in \
                     pipeline {peer}'s config",
                    config.file.display()
                ),
            ));
        }
    }
    Ok(pass(
        "loop",
        match source.origins {
            OriginFilter::Local => {
                "origins = \"local\": changes applied by replication origins are skipped"
            }
            _ => "no Ferry pipeline applies into this source from one of its targets",
        },
    ))
}

/// Whether the tables whose counters are merged with `sum_delta` log their old values (REPLICA IDENTITY FULL).
pub async fn sum_delta_check(
    client: &Client,
    config: &PipelineConfig,
) -> Result<Option<CheckOutcome>, Error> {
    let patterns: Vec<&str> = config
        .sinks
        .iter()
        .flat_map(|s| &s.conflicts.rules)
        .filter(|r| r.columns.iter().any(|(_, m)| *m == MergeRule::SumDelta))
        .flat_map(|r| r.tables.iter().map(String::as_str))
        .collect();
    if patterns.is_empty() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relreplident = 'f' FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .map_err(|e| Error::transient("reading the tables' replica identity", e))?;
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(2))
        .map(|r| TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|t| patterns.iter().any(|p| t.matches_glob(p)))
        .map(|t| t.to_string())
        .collect();
    Ok(Some(if missing.is_empty() {
        pass(
            "sum_delta old values",
            "every table with a sum_delta column has REPLICA IDENTITY FULL",
        )
    } else {
        fail(
            "sum_delta old values",
            format!(
                "{} merge counters with sum_delta, which needs the value each update replaced, and the source does \
                 not log it",
                missing.join(", ")
            ),
            missing
                .iter()
                .map(|t| format!("ALTER TABLE {t} REPLICA IDENTITY FULL;"))
                .collect::<Vec<_>>()
                .join(" "),
        )
    }))
}
