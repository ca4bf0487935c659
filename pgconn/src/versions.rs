//! Row versions for conflict detection in a PostgreSQL database (docs/multi-master.md): the two version columns
//! (`ferry_core::VERSION_TS`, `VERSION_NODE`), the trigger that stamps local writes with a hybrid logical clock,
//! the trigger that keeps a tombstone of local deletes, and the database's node name. Shared by the sink (a
//! target under a conflict policy) and the source (a multi-master source stamps its rows from the start, so its
//! peer compares the versions it stores).

use ferry_core::{TOMBSTONES_TABLE, VERSION_NODE, VERSION_TS};
use tokio_postgres::Client;
use tracing::info;

/// The tombstone table and the trigger functions. Ferry's own sessions set `ferry.applying = on`, so the
/// triggers leave the versions they write alone.
pub fn support_sql() -> String {
    format!(
        r#"CREATE TABLE IF NOT EXISTS public.{TOMBSTONES_TABLE} (
  table_name text NOT NULL, key text[] NOT NULL, {VERSION_TS} bigint NOT NULL, {VERSION_NODE} text,
  deleted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, key));
DO $ferry$ BEGIN
  IF to_regprocedure('public.ferry_local_node()') IS NULL THEN
    CREATE FUNCTION public.ferry_local_node() RETURNS text LANGUAGE sql STABLE AS 'SELECT NULL::text';
  END IF;
END $ferry$;
CREATE OR REPLACE FUNCTION public.ferry_stamp() RETURNS trigger LANGUAGE plpgsql AS $ferry$
BEGIN
  IF current_setting('ferry.applying', true) = 'on' THEN RETURN NEW; END IF;
  NEW.{VERSION_TS} := greatest((extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
    CASE WHEN TG_OP = 'UPDATE' THEN coalesce(OLD.{VERSION_TS}, 0) + 1 ELSE 0 END);
  NEW.{VERSION_NODE} := public.ferry_local_node();
  RETURN NEW;
END $ferry$;
CREATE OR REPLACE FUNCTION public.ferry_tombstone() RETURNS trigger LANGUAGE plpgsql AS $ferry$
DECLARE k text[];
BEGIN
  IF current_setting('ferry.applying', true) = 'on' THEN RETURN OLD; END IF;
  EXECUTE format('SELECT ARRAY[%s]::text[]',
    (SELECT string_agg(format('($1).%I::text', a), ', ') FROM unnest(TG_ARGV) a)) USING OLD INTO k;
  INSERT INTO public.{TOMBSTONES_TABLE} (table_name, key, {VERSION_TS}, {VERSION_NODE})
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, k, coalesce(OLD.{VERSION_TS}, 0) + 1, public.ferry_local_node())
    ON CONFLICT (table_name, key) DO UPDATE SET {VERSION_TS} = excluded.{VERSION_TS},
      {VERSION_NODE} = excluded.{VERSION_NODE}, deleted_at = now();
  RETURN OLD;
END $ferry$;"#
    )
}

/// Gives `table` (a quoted, qualified name) the version columns and the stamping and tombstone triggers when it
/// lacks them. `Ok(false)`: the table has no primary key, so its rows cannot be versioned (nothing done).
pub async fn prepare_table(client: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let keys: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
             AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if keys.is_empty() {
        return Ok(false);
    }
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = ANY($2) \
             AND NOT attisdropped), (SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::text::regclass \
             AND tgname IN ('ferry_stamp', 'ferry_tombstone'))",
            &[&table, &vec![VERSION_TS, VERSION_NODE]],
        )
        .await?;
    let (columns, triggers): (i64, i64) = (row.get(0), row.get(1));
    if columns == 2 && triggers == 2 {
        return Ok(true);
    }
    let args: Vec<String> = keys
        .iter()
        .map(|k| format!("'{}'", k.replace('\'', "''")))
        .collect();
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; {support};
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {VERSION_TS} bigint, ADD COLUMN IF NOT EXISTS {VERSION_NODE} text;
             DROP TRIGGER IF EXISTS ferry_stamp ON {table};
             CREATE TRIGGER ferry_stamp BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW {unless_ferry} EXECUTE FUNCTION public.ferry_stamp();
             DROP TRIGGER IF EXISTS ferry_tombstone ON {table};
             CREATE TRIGGER ferry_tombstone AFTER DELETE ON {table} FOR EACH ROW {unless_ferry} EXECUTE FUNCTION public.ferry_tombstone({});
             RESET client_min_messages;",
            args.join(", "),
            support = support_sql(),
            // Evaluated without calling the function: Ferry's own writes cost no trigger call.
            unless_ferry = "WHEN (current_setting('ferry.applying', true) IS DISTINCT FROM 'on')",
        ))
        .await?;
    info!(
        table,
        "table prepared for conflict detection: version columns and triggers"
    );
    Ok(true)
}

/// Names this database's node (`public.ferry_local_node()`), which the stamping trigger writes into local rows.
pub async fn register_node(client: &Client, node: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; {}; CREATE OR REPLACE FUNCTION public.ferry_local_node() \
             RETURNS text LANGUAGE sql STABLE AS $ferry$SELECT '{}'::text$ferry$; RESET client_min_messages",
            support_sql(),
            node.replace('\'', "''")
        ))
        .await
}
