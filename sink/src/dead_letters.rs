//! Row isolation in the SQL sinks (their savepoints), and `ferry_dead_letters` as every SQL sink keeps it: row
//! changes the target refused, set aside by `on_error = "dead_letter"` (see `ferry_core::isolate`) in the
//! transaction of their batch and checkpoint. One layout for PostgreSQL, MySQL / MariaDB and SQLite; only the id
//! column, the clock and the placeholders differ.

use ferry_core::dead_letter::{DeadLetter, StoredDeadLetter};
use ferry_core::{Savepoint, TableId};

use crate::conflict::ConflictTally;

/// The SQL of a row-isolation savepoint step (the same in the three dialects), keeping the conflicts counted in
/// the open transaction in step: going back forgets those detected since the point (`mark`).
pub fn savepoint_sql(step: Savepoint, tally: &mut ConflictTally, mark: &mut usize) -> &'static str {
    match step {
        Savepoint::Set => {
            *mark = tally.mark();
            "SAVEPOINT ferry_row"
        }
        Savepoint::Rollback => {
            tally.rollback(*mark);
            "ROLLBACK TO SAVEPOINT ferry_row"
        }
        Savepoint::Release => "RELEASE SAVEPOINT ferry_row",
    }
}

/// A target's SQL dialect, as far as the dead-letter table differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
    Sqlite,
}

/// The columns a letter is written with, in [`values`] order.
const WRITTEN: &str =
    "pipeline, sink, table_schema, table_name, row_key, op, row_data, change_data, error, code, \
     position, commit_time, attempts, new_row_key";

impl Dialect {
    pub fn create_table(self) -> String {
        let (id, text, short, created) = match self {
            Dialect::Postgres => (
                "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                "text",
                "text",
                "created_at timestamptz NOT NULL DEFAULT now()",
            ),
            Dialect::Mysql => (
                "id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
                "LONGTEXT",
                "VARCHAR(255)",
                "created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
            ),
            Dialect::Sqlite => (
                "id INTEGER PRIMARY KEY AUTOINCREMENT",
                "TEXT",
                "TEXT",
                "created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            ),
        };
        format!(
            "CREATE TABLE IF NOT EXISTS ferry_dead_letters ({id}, pipeline {short} NOT NULL, sink {short} NOT NULL, \
             table_schema {short} NOT NULL, table_name {short} NOT NULL, row_key {text} NOT NULL, new_row_key {text}, op {short} NOT NULL, \
             row_data {text} NOT NULL, change_data {text} NOT NULL, error {text} NOT NULL, code {short} NOT NULL, \
             position {short} NOT NULL, commit_time BIGINT, attempts BIGINT NOT NULL, {created})"
        )
    }

    fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Mysql => "?".to_owned(),
            Dialect::Sqlite => format!("?{n}"),
        }
    }

    pub fn insert(self) -> String {
        let marks: Vec<String> = (1..=14).map(|n| self.placeholder(n)).collect();
        format!(
            "INSERT INTO ferry_dead_letters ({WRITTEN}) VALUES ({})",
            marks.join(", ")
        )
    }

    /// Reads the letters of a pipeline's sink, oldest first, in [`stored`] order; parameters: pipeline, sink,
    /// then table schema, table name and id, each of which may be NULL for "any".
    pub fn select(self) -> String {
        let p = |n| self.placeholder(n);
        let created = match self {
            Dialect::Postgres => {
                "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            }
            Dialect::Mysql => "DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%fZ')",
            Dialect::Sqlite => "created_at",
        };
        let cast = |n, ty: &str| match self {
            Dialect::Postgres => format!("{}::{ty}", p(n)),
            _ => p(n),
        };
        // MySQL's positional `?` cannot be repeated: each test names its own parameter.
        let (s1, s2, t1, t2, i1, i2) = match self {
            Dialect::Mysql => (3, 4, 5, 6, 7, 8),
            _ => (3, 3, 4, 4, 5, 5),
        };
        format!(
            "SELECT id, pipeline, sink, {created}, table_schema, table_name, row_key, op, row_data, change_data, error, \
             code, position, commit_time, attempts, new_row_key FROM ferry_dead_letters WHERE pipeline = {} AND sink = {} \
             AND ({} IS NULL OR table_schema = {}) AND ({} IS NULL OR table_name = {}) \
             AND ({} IS NULL OR id = {}) ORDER BY id",
            p(1),
            p(2),
            cast(s1, "text"),
            p(s2),
            cast(t1, "text"),
            p(t2),
            cast(i1, "bigint"),
            p(i2)
        )
    }

    /// Deletes a table's letters: pipeline, sink, table schema, table name.
    pub fn delete_table(self) -> String {
        let p = |n| self.placeholder(n);
        format!(
            "DELETE FROM ferry_dead_letters WHERE pipeline = {} AND sink = {} AND table_schema = {} \
             AND table_name = {}",
            p(1),
            p(2),
            p(3),
            p(4)
        )
    }

    pub fn delete(self) -> String {
        format!(
            "DELETE FROM ferry_dead_letters WHERE pipeline = {} AND sink = {} AND id = {}",
            self.placeholder(1),
            self.placeholder(2),
            self.placeholder(3)
        )
    }
}

/// The select's filter parameters after pipeline and sink (see [`Dialect::select`]; MySQL takes each twice).
pub struct Filter {
    pub schema: Option<String>,
    pub name: Option<String>,
    pub id: Option<i64>,
}

impl Filter {
    pub fn new(table: Option<&TableId>, id: Option<i64>) -> Filter {
        Filter {
            schema: table.map(|t| t.schema.clone()),
            name: table.map(|t| t.name.clone()),
            id,
        }
    }
}

/// The written columns' values of `letter`: text, then commit time, attempts and the new key of a key change.
pub fn values<'a>(
    (pipeline, sink): (&'a str, &'a str),
    letter: &'a DeadLetter,
) -> ([&'a str; 11], Option<i64>, i64, Option<&'a str>) {
    (
        [
            pipeline,
            sink,
            &letter.table.schema,
            &letter.table.name,
            &letter.key,
            &letter.op,
            &letter.row,
            &letter.change,
            &letter.error,
            &letter.code,
            &letter.position,
        ],
        letter.commit_time,
        i64::from(letter.attempts),
        letter.moved_key.as_deref(),
    )
}

/// A letter from a selected row: id, twelve text columns in select order (pipeline … position), commit time,
/// attempts, the new key of a key change.
pub fn stored(
    id: i64,
    text: [String; 12],
    commit_time: Option<i64>,
    attempts: i64,
    moved_key: Option<String>,
) -> StoredDeadLetter {
    let [pipeline, sink, created_at, schema, name, key, op, row, change, error, code, position] =
        text;
    StoredDeadLetter {
        id,
        pipeline,
        sink,
        created_at,
        letter: DeadLetter {
            table: TableId::new(schema, name),
            key,
            moved_key,
            op,
            row,
            change,
            error,
            code,
            position,
            commit_time,
            attempts: u32::try_from(attempts).unwrap_or(0),
        },
    }
}
