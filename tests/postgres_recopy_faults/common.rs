//! Helpers shared by the re-copy fault tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

pub const WAIT: Duration = Duration::from_secs(40);

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub db: PathBuf,
    pub log: PathBuf,
    pub name: String,
}

/// Config text: fan-out to replica + sqlite; `source_extra` lines go after the source type.
pub fn setup(pg: &PgServer, name: &str, pipeline_extra: &str, source_extra: &str) -> Setup {
    let dir = scratch();
    let db = dir.path().join("r.db");
    let text = fan_out_config(pg, name, pipeline_extra, &db).replace(
        "[source]\ntype = \"postgres\"\n",
        &format!("[source]\ntype = \"postgres\"\n{source_extra}\n"),
    );
    let cfg = write_config(dir.path(), name, &text);
    let log = dir.path().join("f.log");
    Setup {
        dir,
        cfg,
        db,
        log,
        name: name.to_owned(),
    }
}

/// SQL that writes a re-copy request into the WAL (within the caller's transaction).
pub fn signal_sql(pipeline: &str, table: &str) -> String {
    format!(
        "SELECT pg_logical_emit_message(true, 'ferry_signal', '{{\"slot\":\"ferry_{pipeline}\",\"table\":\"{}\"}}');",
        table.replace('\'', "''").replace('"', "\\\"")
    )
}

pub fn request(config: &Path, table: &str) -> (bool, String) {
    let out = Command::new(ferry_bin())
        .args(["snapshot", "--table", table, "--config"])
        .arg(config)
        .output()
        .expect("run ferry snapshot");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Interesting log lines (re-copy, errors, warnings), trimmed.
pub fn log_excerpt(log: &str) -> String {
    log.lines()
        .filter(|l| {
            l.contains("re-copy")
                || l.contains("ERROR")
                || l.contains("WARN")
                || l.contains("panick")
                || l.contains("error")
        })
        .map(|l| if l.len() > 600 { &l[..600] } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for `count` "re-copy finished" lines (per sink: 2 sinks) and no shadow tables on the PG replica.
pub fn wait_finished(pg: &PgServer, ferry: &mut Ferry, count: usize) -> Result<(), String> {
    let ok = wait_until(WAIT, || {
        if ferry.try_exit().is_some() {
            return true;
        }
        ferry.log().matches("re-copy finished").count() >= count
            && pg
                .try_psql(
                    "replica",
                    "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ferry_recopy_%'",
                )
                .ok()
                .as_deref()
                == Some("0")
    });
    if let Some(status) = ferry.try_exit() {
        return Err(format!(
            "ferry exited ({status}) during the re-copy:\n{}",
            log_excerpt(&ferry.log())
        ));
    }
    if !ok {
        return Err(format!(
            "the re-copy did not finish in {WAIT:?}:\n{}",
            log_excerpt(&ferry.log())
        ));
    }
    Ok(())
}

/// Compares source vs PG replica (pg_sql) and source vs SQLite (lite_sql run on both).
pub fn compare(
    pg: &PgServer,
    s: &Setup,
    ferry: &Ferry,
    pg_sql: &str,
    lite_sql: Option<&str>,
) -> Result<(), String> {
    let ok = wait_until(Duration::from_secs(15), || {
        pg.try_psql("replica", pg_sql).ok() == pg.try_psql("shop", pg_sql).ok()
    });
    if !ok {
        let src = pg.psql("shop", pg_sql);
        let dst = pg.try_psql("replica", pg_sql).unwrap_or_else(|e| e);
        return Err(format!(
            "PG target differs for {pg_sql}\n{}\n--- log\n{}",
            diff(&src, &dst),
            log_excerpt(&ferry.log())
        ));
    }
    if let Some(lite) = lite_sql {
        let src = pg.psql("shop", lite);
        let ok = wait_until(Duration::from_secs(10), || {
            sqlite_rows(&s.db, lite).join("\n") == src
        });
        if !ok {
            let dst = sqlite_rows(&s.db, lite).join("\n");
            return Err(format!(
                "SQLite target differs for {lite}\n{}\n--- log\n{}",
                diff(&src, &dst),
                log_excerpt(&ferry.log())
            ));
        }
    }
    Ok(())
}

/// A short line diff: lines only in the source, lines only in the target (first 15 each).
pub fn diff(src: &str, dst: &str) -> String {
    let a: std::collections::BTreeSet<&str> = src.lines().collect();
    let b: std::collections::BTreeSet<&str> = dst.lines().collect();
    let only_src: Vec<&&str> = a.difference(&b).take(15).collect();
    let only_dst: Vec<&&str> = b.difference(&a).take(15).collect();
    format!(
        "source lines {} / target lines {}\nonly in source: {:?}\nonly in target: {:?}",
        src.lines().count(),
        dst.lines().count(),
        only_src,
        only_dst
    )
}
