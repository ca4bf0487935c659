//! The initial snapshot: every followed table read inside one consistent-snapshot transaction, with the binlog
//! position that transaction corresponds to.
//!
//! MariaDB reports that position from inside the transaction (`binlog_snapshot_file` / `binlog_snapshot_position`),
//! so no lock is taken. MySQL has no such status: a `FLUSH TABLES WITH READ LOCK` is held only while the
//! transaction starts and the position is read.
//!
//! One connection holds the snapshot, so tables are read one after another.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferry_core::{
    BinlogFilePos, BinlogPosition, Change, Date, Decimal, Error, Event, GtidState, Interval,
    PipelineStats, Position, RowOp, SchemaRef, TableId, Timestamp, Value,
};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::mpsc;
use tracing::info;

use super::catalog::{shared_schema, CatalogTable};
use super::{quote_ident, Flavor};

fn sql_error(what: &'static str) -> impl Fn(mysql_async::Error) -> Error {
    move |e| Error::transient(what, e)
}

/// Opens the snapshot transaction on `conn` and returns the binlog position it sees.
pub async fn begin(conn: &mut Conn, flavor: Flavor) -> Result<BinlogPosition, Error> {
    for sql in [
        "SET SESSION time_zone = '+00:00'",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        conn.query_drop(sql)
            .await
            .map_err(sql_error("setting up the snapshot session"))?;
    }
    let pos = match flavor {
        Flavor::MariaDb => {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(sql_error("starting the snapshot transaction"))?;
            let rows: Vec<(String, String)> = conn
                .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(sql_error("reading the snapshot's binlog position"))?;
            let get = |name: &str| {
                rows.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let file = get("binlog_snapshot_file").unwrap_or_default();
            let offset = get("binlog_snapshot_position").and_then(|p| p.parse().ok());
            let (false, Some(offset)) = (file.is_empty(), offset) else {
                return Err(Error::fatal("the server reports no binlog_snapshot_file / binlog_snapshot_position: is log_bin on?"));
            };
            let gtid: Option<String> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), offset))
                .await
                .map_err(sql_error("reading the snapshot's GTID position"))?
                .flatten();
            BinlogPosition {
                pos: BinlogFilePos::new(file, offset),
                gtid: gtid
                    .and_then(|g| g.parse().ok())
                    .map(GtidState::MariaDb)
                    .filter(|g| !g.is_empty()),
            }
        }
        Flavor::MySql => {
            conn.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(sql_error(
                    "taking the brief read lock for the snapshot position",
                ))?;
            let started = conn
                .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(sql_error("starting the snapshot transaction"));
            let status: Result<Option<mysql_async::Row>, _> = match started {
                Ok(()) => conn
                    .query_first("SHOW MASTER STATUS")
                    .await
                    .map_err(sql_error("reading the binlog position")),
                Err(e) => Err(e),
            };
            conn.query_drop("UNLOCK TABLES")
                .await
                .map_err(sql_error("releasing the read lock"))?;
            let row = status?
                .ok_or_else(|| Error::fatal("SHOW MASTER STATUS is empty: is log_bin on?"))?;
            let file: String = row.get(0).unwrap_or_default();
            let offset: u64 = row.get(1).unwrap_or_default();
            let gtid: Option<String> = row.get(4);
            BinlogPosition {
                pos: BinlogFilePos::new(file, offset),
                gtid: gtid
                    .map(|g| g.replace(['\n', ' '], ""))
                    .and_then(|g| g.parse().ok())
                    .map(GtidState::MySql)
                    .filter(|g| !g.is_empty()),
            }
        }
    };
    Ok(pos)
}

/// Reads `tables` in the open snapshot transaction and emits them as one transaction committing at `position`.
pub async fn run(
    conn: &mut Conn,
    position: &BinlogPosition,
    tables: &[(TableId, CatalogTable)],
    events: &mpsc::Sender<Event>,
    stats: Arc<PipelineStats>,
) -> Result<(), Error> {
    let closed = || Error::fatal("the pipeline stopped during the snapshot");
    let position = Position::Binlog(position.clone());
    let schemas: Vec<SchemaRef> = tables
        .iter()
        .map(|(id, t)| shared_schema(id, t, 0))
        .collect();
    let mut estimated = 0u64;
    for (id, _) in tables {
        let rows: Option<Option<u64>> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (id.schema.clone(), id.name.clone()),
            )
            .await
            .map_err(sql_error("estimating table sizes"))?;
        estimated += rows.flatten().unwrap_or(0);
    }
    events
        .send(Event::Begin {
            commit_at: position.clone(),
        })
        .await
        .map_err(|_| closed())?;
    for s in &schemas {
        events
            .send(Event::Schema(s.clone()))
            .await
            .map_err(|_| closed())?;
    }
    events
        .send(Event::Change(Change::Truncate {
            tables: schemas.iter().map(|s| s.id.clone()).collect(),
        }))
        .await
        .map_err(|_| closed())?;
    stats.snapshot.start(tables.len() as u64, estimated);
    info!(
        tables = tables.len(),
        estimated_rows = estimated,
        "snapshot started"
    );
    let started = Instant::now();
    let reporter = tokio::spawn(crate::postgres::snapshot::report_progress(stats.clone()));
    let result = async {
        for schema in &schemas {
            let rows = copy_table(conn, schema, events, &stats).await?;
            stats.snapshot.tables_done.fetch_add(1, Ordering::Relaxed);
            info!(table = %schema.id, rows, "table copied");
        }
        Ok::<_, Error>(())
    }
    .await;
    reporter.abort();
    result?;
    conn.query_drop("COMMIT")
        .await
        .map_err(sql_error("ending the snapshot transaction"))?;
    stats.snapshot.finish();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    events
        .send(Event::Commit {
            position,
            commit_time: Timestamp(now),
        })
        .await
        .map_err(|_| closed())?;
    let rows = stats.snapshot.rows_copied.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    info!(
        rows,
        seconds = format!("{secs:.1}"),
        rows_per_s = (rows as f64 / secs.max(1e-9)) as u64,
        "snapshot copied"
    );
    Ok(())
}

async fn copy_table(
    conn: &mut Conn,
    schema: &SchemaRef,
    events: &mpsc::Sender<Event>,
    stats: &PipelineStats,
) -> Result<u64, Error> {
    let columns = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns} FROM {}.{}",
        quote_ident(&schema.id.schema),
        quote_ident(&schema.id.name)
    );
    let err = |e: mysql_async::Error| Error::transient(format!("reading table {}", schema.id), e);
    // The binary protocol gives typed values (integers, dates) rather than text.
    let mut result = conn.exec_iter(sql, ()).await.map_err(err)?;
    let mut stream = result
        .stream::<mysql_async::Row>()
        .await
        .map_err(err)?
        .ok_or_else(|| Error::fatal(format!("reading table {}: no result set", schema.id)))?;
    let mut count = 0u64;
    use futures_util::StreamExt;
    while let Some(row) = stream.next().await {
        let row = row.map_err(err)?;
        let values = row
            .unwrap()
            .into_iter()
            .zip(&schema.columns)
            .map(|(v, c)| snapshot_value(v, &c.ty))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| Error::fatal(format!("reading table {}: {e}", schema.id)))?;
        events
            .send(Event::Change(Change::Row {
                table: schema.clone(),
                op: RowOp::Read { after: values },
            }))
            .await
            .map_err(|_| Error::fatal("the pipeline stopped during the snapshot"))?;
        stats.snapshot.rows_copied.fetch_add(1, Ordering::Relaxed);
        count += 1;
    }
    Ok(count)
}

/// One value of the binary protocol as the typed value the binlog decoder gives for the same column.
fn snapshot_value(v: mysql_async::Value, ty: &ferry_core::ColumnType) -> Result<Value, String> {
    use ferry_core::ColumnType as T;
    use mysql_async::Value as M;
    Ok(match (v, ty) {
        (M::NULL, _) => Value::Null,
        (M::Int(i), T::Numeric) => Value::Decimal(Decimal::Finite(i.to_string())),
        (M::Int(i), _) => Value::Int(i),
        (M::UInt(u), T::Numeric) => Value::Decimal(Decimal::Finite(u.to_string())),
        (M::UInt(u), _) => Value::Int(i64::try_from(u).map_err(|_| format!("{u} out of range"))?),
        (M::Float(f), _) => Value::Float(f.to_string().parse().unwrap_or(f64::from(f))),
        (M::Double(f), _) => Value::Float(f),
        (M::Bytes(b), T::Numeric) => {
            let s = String::from_utf8(b).map_err(|e| e.to_string())?;
            Value::Decimal(Decimal::parse(&s).map_err(|e| e.to_string())?)
        }
        (M::Bytes(b), T::Int2 | T::Int4 | T::Int8) => {
            let s = String::from_utf8(b).map_err(|e| e.to_string())?;
            Value::Int(s.parse().map_err(|_| format!("integer {s:?}"))?)
        }
        (M::Bytes(b), T::Bytes) => Value::Bytes(b),
        (M::Bytes(b), T::Json) => Value::Json(String::from_utf8(b).map_err(|e| e.to_string())?),
        (M::Bytes(b), _) => Value::Text(match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
        }),
        (M::Date(y, m, d, h, mi, s, us), T::Date) => {
            let _ = (h, mi, s, us);
            Date::from_ymd(i32::from(y), u32::from(m), u32::from(d))
                .map_or(Value::Null, Value::Date)
        }
        (M::Date(y, m, d, h, mi, s, us), t) => {
            match Date::from_ymd(i32::from(y), u32::from(m), u32::from(d)) {
                None => Value::Null,
                Some(date) => {
                    let micros = i64::from(date.0) * 86_400_000_000
                        + ((i64::from(h) * 60 + i64::from(mi)) * 60 + i64::from(s)) * 1_000_000
                        + i64::from(us);
                    // TIMESTAMP columns are read in the session time zone, set to UTC in begin().
                    if *t == T::TimestampTz {
                        if micros == 0 {
                            Value::Null
                        } else {
                            Value::TimestampTz(Timestamp(micros))
                        }
                    } else {
                        Value::Timestamp(Timestamp(micros))
                    }
                }
            }
        }
        (M::Time(negative, days, h, m, s, us), _) => {
            let micros =
                ((i64::from(days) * 24 + i64::from(h)) * 3600 + i64::from(m) * 60 + i64::from(s))
                    * 1_000_000
                    + i64::from(us);
            Value::Interval(Interval {
                months: 0,
                days: 0,
                micros: if negative { -micros } else { micros },
            })
        }
    })
}
