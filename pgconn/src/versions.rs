//! Row versions for conflict detection in a PostgreSQL database (docs/multi-master.md): the two version columns
//! (`ferry_core::VERSION_TS`, `VERSION_NODE`), the trigger that stamps local writes with a hybrid logical clock,
//! the trigger that keeps a tombstone of local deletes, and the database's node name. Shared by the sink (a
//! target under a conflict policy) and the source (a multi-master source stamps its rows from the start, so its
//! peer compares the versions it stores).

use ferry_core::{TOMBSTONES_TABLE, VERSION_NODE, VERSION_TS, VERSION_VECTOR};
use tokio_postgres::Client;
use tracing::info;

/// Held to the end of the transaction: the sink prepares inside its open one, whose catalog changes stay locked
/// until it commits.
use crate::SETUP_LOCK as LOCK;

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
CREATE OR REPLACE FUNCTION public.ferry_stamp_vv() RETURNS trigger LANGUAGE plpgsql AS $ferry$
DECLARE
  n text := coalesce(public.ferry_local_node(), '');
  base jsonb;
BEGIN
  IF current_setting('ferry.applying', true) = 'on' THEN RETURN NEW; END IF;
  NEW.{VERSION_TS} := greatest((extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
    CASE WHEN TG_OP = 'UPDATE' THEN coalesce(OLD.{VERSION_TS}, 0) + 1 ELSE 0 END);
  NEW.{VERSION_NODE} := public.ferry_local_node();
  base := CASE WHEN TG_OP = 'UPDATE' THEN coalesce(OLD.{VERSION_VECTOR}, '{{}}'::jsonb) ELSE '{{}}'::jsonb END;
  NEW.{VERSION_VECTOR} := base || jsonb_build_object(n, coalesce((base ->> n)::bigint, 0) + 1);
  RETURN NEW;
END $ferry$;
-- How version vector a relates to b: 0 equal, 1 a follows b, -1 b follows a, 2 concurrent.
CREATE OR REPLACE FUNCTION public.ferry_vv_cmp(a jsonb, b jsonb) RETURNS int LANGUAGE sql IMMUTABLE AS $ferry$
  SELECT CASE WHEN bool_and(x = y) IS NOT FALSE THEN 0 WHEN bool_and(x >= y) THEN 1 WHEN bool_and(x <= y) THEN -1 ELSE 2 END
  FROM (SELECT coalesce((a ->> k)::bigint, 0) AS x, coalesce((b ->> k)::bigint, 0) AS y
        FROM (SELECT jsonb_object_keys(coalesce(a, '{{}}')) UNION SELECT jsonb_object_keys(coalesce(b, '{{}}'))) AS keys(k)) d
$ferry$;
-- Each node's larger counter: the history of both.
CREATE OR REPLACE FUNCTION public.ferry_vv_max(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $ferry$
  SELECT coalesce(jsonb_object_agg(k, greatest(coalesce((a ->> k)::bigint, 0), coalesce((b ->> k)::bigint, 0))), '{{}}')
  FROM (SELECT jsonb_object_keys(coalesce(a, '{{}}')) UNION SELECT jsonb_object_keys(coalesce(b, '{{}}'))) AS keys(k)
$ferry$;
CREATE OR REPLACE FUNCTION public.ferry_tombstone() RETURNS trigger LANGUAGE plpgsql
  -- The key's text must not depend on the deleting session's settings: Ferry's sessions use these.
  SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY' SET IntervalStyle = 'postgres' SET extra_float_digits = 1
  AS $ferry$
DECLARE k text[]; cols text;
BEGIN
  IF current_setting('ferry.applying', true) = 'on' THEN RETURN OLD; END IF;
  -- The primary key's columns as they are named now, not as they were when the trigger was made: a renamed key
  -- column must not make the application's deletes fail.
  SELECT string_agg(format('($1).%I::text', a.attname), ', ' ORDER BY k.ord) INTO cols
    FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = TG_RELID AND i.indisprimary;
  IF cols IS NULL THEN RETURN OLD; END IF;
  EXECUTE format('SELECT ARRAY[%s]::text[]', cols) USING OLD INTO k;
  INSERT INTO public.{TOMBSTONES_TABLE} (table_name, key, {VERSION_TS}, {VERSION_NODE})
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, k, coalesce(OLD.{VERSION_TS}, 0) + 1, public.ferry_local_node())
    ON CONFLICT (table_name, key) DO UPDATE SET {VERSION_TS} = excluded.{VERSION_TS},
      {VERSION_NODE} = excluded.{VERSION_NODE}, deleted_at = now();
  RETURN OLD;
END $ferry$;"#
    )
}

/// Gives `table` (a quoted, qualified name) the version columns and the stamping and tombstone triggers when it
/// lacks them; with `vectors`, the version vector column too, and the trigger that counts local writes in it.
/// `Ok(false)`: the table has no primary key, so its rows cannot be versioned (nothing done).
pub async fn prepare_table(
    client: &Client,
    table: &str,
    vectors: bool,
) -> Result<bool, tokio_postgres::Error> {
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
    let stamp = if vectors {
        "ferry_stamp_vv"
    } else {
        "ferry_stamp"
    };
    let mut wanted = vec![VERSION_TS, VERSION_NODE];
    if vectors {
        wanted.push(VERSION_VECTOR);
    }
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = ANY($2) \
             AND NOT attisdropped), (SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid \
             WHERE t.tgrelid = $1::text::regclass AND ((t.tgname = 'ferry_stamp' AND p.proname = $3) \
             OR t.tgname IN ('ferry_tombstone', 'ferry_tombstone_move')))",
            &[&table, &wanted, &stamp],
        )
        .await?;
    let (columns, triggers): (i64, i64) = (row.get(0), row.get(1));
    if columns == wanted.len() as i64 && triggers == 3 {
        return Ok(true);
    }
    let vector_column = if vectors {
        format!(", ADD COLUMN IF NOT EXISTS {VERSION_VECTOR} jsonb")
    } else {
        String::new()
    };
    let args: Vec<String> = keys
        .iter()
        .map(|k| format!("'{}'", k.replace('\'', "''")))
        .collect();
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; SELECT pg_advisory_xact_lock({LOCK}); {support};
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {VERSION_TS} bigint, ADD COLUMN IF NOT EXISTS {VERSION_NODE} text{vector_column};
             DROP TRIGGER IF EXISTS ferry_stamp ON {table};
             CREATE TRIGGER ferry_stamp BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW {unless_ferry} EXECUTE FUNCTION public.{stamp}();
             DROP TRIGGER IF EXISTS ferry_tombstone ON {table};
             CREATE TRIGGER ferry_tombstone AFTER DELETE ON {table} FOR EACH ROW {unless_ferry} EXECUTE FUNCTION public.ferry_tombstone({});
             DROP TRIGGER IF EXISTS ferry_tombstone_move ON {table};
             CREATE TRIGGER ferry_tombstone_move AFTER UPDATE ON {table} FOR EACH ROW
               WHEN (current_setting('ferry.applying', true) IS DISTINCT FROM 'on' AND ({old_key}) IS DISTINCT FROM ({new_key}))
               EXECUTE FUNCTION public.ferry_tombstone({});
             RESET client_min_messages;",
            args.join(", "),
            args.join(", "),
            support = support_sql(),
            // A key change leaves a tombstone of the old key, as a delete would.
            old_key = keys.iter().map(|k| format!("OLD.\"{}\"", k.replace('"', "\"\""))).collect::<Vec<_>>().join(", "),
            new_key = keys.iter().map(|k| format!("NEW.\"{}\"", k.replace('"', "\"\""))).collect::<Vec<_>>().join(", "),
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

/// Creates `extra` (the sink's conflict log table) and the tombstone table and trigger functions, under the
/// advisory lock that serialises them with a peer preparing the same database.
pub async fn ensure_support(client: &Client, extra: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; SELECT pg_advisory_xact_lock({LOCK}); {extra}; {}; \
             RESET client_min_messages",
            support_sql()
        ))
        .await
}

/// Makes `table` log whole old rows (`REPLICA IDENTITY FULL`), which a multi-master source needs: an update's
/// and a delete's old row then carry the version they replaced (so both sides decide on the same versions) and
/// every column (so no update arrives without its unchanged TOAST values). Whether it changed the table.
pub async fn ensure_full_identity(
    client: &Client,
    table: &str,
) -> Result<bool, tokio_postgres::Error> {
    let full: bool = client
        .query_one(
            "SELECT relreplident = 'f' FROM pg_class WHERE oid = $1::text::regclass",
            &[&table],
        )
        .await?
        .get(0);
    if full {
        return Ok(false);
    }
    client
        .batch_execute(&format!("ALTER TABLE {table} REPLICA IDENTITY FULL"))
        .await?;
    info!(
        table,
        "REPLICA IDENTITY FULL set: updates and deletes carry the version they replaced"
    );
    Ok(true)
}

/// Names this database's node (`public.ferry_local_node()`), which the stamping trigger writes into local rows.
pub async fn register_node(client: &Client, node: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; SELECT pg_advisory_xact_lock({LOCK}); {}; CREATE OR REPLACE FUNCTION \
             public.ferry_local_node() RETURNS text LANGUAGE sql STABLE AS $ferry$SELECT '{}'::text$ferry$; \
             RESET client_min_messages",
            support_sql(),
            node.replace('\'', "''")
        ))
        .await
}
