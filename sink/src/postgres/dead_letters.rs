//! `ferry_dead_letters` in a PostgreSQL target (the layout: `crate::dead_letters`).

use ferry_core::dead_letter::{DeadLetter, StoredDeadLetter, DEAD_LETTERS_TABLE};
use ferry_core::{Error, TableId};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::write_error;
use crate::dead_letters::{self as layout, Dialect};

/// Writes `letter` in the open transaction; `create`: create the table first (once per sink).
pub async fn write(
    client: &Client,
    names: (&str, &str),
    letter: &DeadLetter,
    create: bool,
) -> Result<(), Error> {
    if create {
        client
            .batch_execute(&ferry_pgconn::setup_locked(
                &Dialect::Postgres.create_table(),
            ))
            .await
            .map_err(write_error("creating ferry_dead_letters"))?;
    }
    let (text, commit_time, attempts, moved) = layout::values(names, letter);
    let mut params: Vec<&(dyn ToSql + Sync)> = text.iter().map(|t| t as _).collect();
    params.push(&commit_time);
    params.push(&attempts);
    params.push(&moved);
    client
        .execute(&Dialect::Postgres.insert(), &params)
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
    let f = layout::Filter::new(table, id);
    let rows = client
        .query(
            &Dialect::Postgres.select(),
            &[&pipeline, &sink, &f.schema, &f.name, &f.id],
        )
        .await
        .map_err(write_error("reading ferry_dead_letters"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let text: [String; 12] = std::array::from_fn(|i| r.get(i + 1));
            layout::stored(r.get(0), text, r.get(13), r.get(14), r.get(15))
        })
        .collect())
}

/// Deletes dead letter `id` in the open transaction.
pub async fn forget(client: &Client, (pipeline, sink): (&str, &str), id: i64) -> Result<(), Error> {
    client
        .execute(&Dialect::Postgres.delete(), &[&pipeline, &sink, &id])
        .await
        .map_err(write_error("deleting a dead letter"))?;
    Ok(())
}
