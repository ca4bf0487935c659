//! `ferry_dead_letters` in a PostgreSQL target: row changes the target refused, set aside by `on_error =
//! "dead_letter"` (see `ferry_core::isolate`), written in the transaction of their batch and checkpoint.

use ferry_core::dead_letter::{DeadLetter, StoredDeadLetter, DEAD_LETTERS_TABLE};
use ferry_core::{Error, TableId};
use tokio_postgres::{Client, Row};

use super::write_error;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS ferry_dead_letters (\
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, pipeline text NOT NULL, sink text NOT NULL, \
    table_schema text NOT NULL, table_name text NOT NULL, row_key text NOT NULL, op text NOT NULL, \
    row_data text NOT NULL, change text NOT NULL, error text NOT NULL, code text NOT NULL, \
    position text NOT NULL, commit_time bigint, attempts integer NOT NULL, \
    created_at timestamptz NOT NULL DEFAULT now())";

const COLUMNS: &str = "id, pipeline, sink, to_char(created_at AT TIME ZONE 'UTC', \
    'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), table_schema, table_name, row_key, op, row_data, change, error, code, \
    position, commit_time, attempts";

/// Writes `letter` in the open transaction, creating the table on first use.
pub async fn write(
    client: &Client,
    (pipeline, sink): (&str, &str),
    letter: &DeadLetter,
) -> Result<(), Error> {
    client
        .batch_execute(CREATE)
        .await
        .map_err(write_error("creating ferry_dead_letters"))?;
    client
        .execute(
            "INSERT INTO ferry_dead_letters (pipeline, sink, table_schema, table_name, row_key, op, row_data, \
             change, error, code, position, commit_time, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &pipeline,
                &sink,
                &letter.table.schema,
                &letter.table.name,
                &letter.key,
                &letter.op,
                &letter.row,
                &letter.change,
                &letter.error,
                &letter.code,
                &letter.position,
                &letter.commit_time,
                &(letter.attempts as i32),
            ],
        )
        .await
        .map_err(write_error("writing a dead letter"))?;
    Ok(())
}

/// The dead letters of `pipeline`'s sink `sink`, oldest first; `table` and `id` narrow them. None when the target
/// has no dead-letter table (read-only: nothing is created).
pub async fn read(
    client: &Client,
    (pipeline, sink): (&str, &str),
    table: Option<&TableId>,
    id: Option<i64>,
) -> Result<Vec<StoredDeadLetter>, Error> {
    let exists: bool = client
        .query_one(
            &format!("SELECT to_regclass('{DEAD_LETTERS_TABLE}') IS NOT NULL"),
            &[],
        )
        .await
        .map_err(write_error("looking for ferry_dead_letters"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let (schema, name) = table.map_or((None, None), |t| (Some(&t.schema), Some(&t.name)));
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM ferry_dead_letters WHERE pipeline = $1 AND sink = $2 \
                 AND ($3::text IS NULL OR table_schema = $3) AND ($4::text IS NULL OR table_name = $4) \
                 AND ($5::bigint IS NULL OR id = $5) ORDER BY id"
            ),
            &[&pipeline, &sink, &schema, &name, &id],
        )
        .await
        .map_err(write_error("reading ferry_dead_letters"))?;
    Ok(rows.iter().map(stored).collect())
}

fn stored(r: &Row) -> StoredDeadLetter {
    StoredDeadLetter {
        id: r.get(0),
        pipeline: r.get(1),
        sink: r.get(2),
        created_at: r.get(3),
        letter: DeadLetter {
            table: TableId::new(r.get::<_, String>(4), r.get::<_, String>(5)),
            key: r.get(6),
            op: r.get(7),
            row: r.get(8),
            change: r.get(9),
            error: r.get(10),
            code: r.get(11),
            position: r.get(12),
            commit_time: r.get(13),
            attempts: r.get::<_, i32>(14) as u32,
        },
    }
}

/// Deletes dead letter `id` in the open transaction.
pub async fn forget(client: &Client, (pipeline, sink): (&str, &str), id: i64) -> Result<(), Error> {
    client
        .execute(
            "DELETE FROM ferry_dead_letters WHERE pipeline = $1 AND sink = $2 AND id = $3",
            &[&pipeline, &sink, &id],
        )
        .await
        .map_err(write_error("deleting a dead letter"))?;
    Ok(())
}
