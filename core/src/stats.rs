//! Live counters of a running pipeline, shared by its tasks and read by the HTTP endpoints
//! (`/metrics`, `/status`, `/readyz`).
//!
//! Plain atomics: writers never wait on readers, and a reader sees each counter as of its own load.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::event::{Change, Event};
use crate::position::Position;

/// Microseconds since the Unix epoch, now.
pub fn now_unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A Prometheus histogram of durations in seconds: counts per upper bound (cumulated when read), their sum and
/// count. Lock-free; a reader may see an observation in the count before its bucket.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; HISTOGRAM_BOUNDS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// The upper bounds of [`Histogram`]'s buckets, in seconds (`+Inf` is the count).
pub const HISTOGRAM_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        if let Some(i) = HISTOGRAM_BOUNDS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative counts per bound, the sum in seconds, the count.
    pub fn read(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut total = 0;
        let buckets = HISTOGRAM_BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| {
                total += n.load(Relaxed);
                (*b, total)
            })
            .collect();
        (
            buckets,
            self.sum_micros.load(Relaxed) as f64 / 1e6,
            self.count.load(Relaxed),
        )
    }
}

/// What a pipeline is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineState {
    Starting,
    Snapshotting,
    Streaming,
    /// A transient failure; the pipeline restarts from its checkpoints after a back-off.
    Retrying {
        error: String,
    },
    /// Another process runs the pipeline; this one waits to take over (`owner` says which holds the lease).
    Standby {
        owner: String,
    },
    /// The pipeline waits for an operator (`max_dead_letters` reached); `reason` says what to do.
    Paused {
        reason: String,
    },
    /// A fatal failure: the pipeline stopped and needs a person.
    Failed {
        error: String,
    },
    Stopped,
}

/// Counters of the initial snapshot.
#[derive(Debug, Default)]
pub struct SnapshotProgress {
    pub rows_copied: AtomicU64,
    pub rows_estimated: AtomicU64,
    pub tables_total: AtomicU64,
    pub tables_done: AtomicU64,
    /// When the copy started (µs since the epoch); 0 before.
    pub started_unix_micros: AtomicI64,
    /// When it finished; 0 while running.
    pub finished_unix_micros: AtomicI64,
}

/// A readable copy of [`SnapshotProgress`] with rate and ETA.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotReport {
    pub rows_copied: u64,
    pub rows_estimated: u64,
    pub percent: f64,
    pub rows_per_s: f64,
    pub eta_s: Option<u64>,
    pub tables_done: u64,
    pub tables_total: u64,
    pub finished: bool,
}

impl SnapshotProgress {
    /// Marks the start of a (new) copy, clearing the previous one's counters.
    pub fn start(&self, tables: u64, estimated_rows: u64) {
        self.rows_copied.store(0, Relaxed);
        self.tables_done.store(0, Relaxed);
        self.finished_unix_micros.store(0, Relaxed);
        self.tables_total.store(tables, Relaxed);
        self.rows_estimated.store(estimated_rows, Relaxed);
        self.started_unix_micros.store(now_unix_micros(), Relaxed);
    }

    pub fn finish(&self) {
        self.finished_unix_micros.store(now_unix_micros(), Relaxed);
    }

    /// `None` before any snapshot started.
    pub fn report(&self) -> Option<SnapshotReport> {
        let started = self.started_unix_micros.load(Relaxed);
        if started == 0 {
            return None;
        }
        let finished_at = self.finished_unix_micros.load(Relaxed);
        let finished = finished_at != 0;
        let end = if finished {
            finished_at
        } else {
            now_unix_micros()
        };
        let rows = self.rows_copied.load(Relaxed);
        // reltuples is an estimate: never report more than 100 %.
        let estimated = self.rows_estimated.load(Relaxed).max(rows);
        let secs = (end - started).max(1) as f64 / 1e6;
        let rate = rows as f64 / secs;
        Some(SnapshotReport {
            rows_copied: rows,
            rows_estimated: estimated,
            percent: if finished || estimated == 0 {
                100.0
            } else {
                (1000.0 * rows as f64 / estimated as f64).round() / 10.0
            },
            rows_per_s: rate.round(),
            eta_s: (!finished && rate >= 1.0).then(|| ((estimated - rows) as f64 / rate) as u64),
            tables_done: self.tables_done.load(Relaxed),
            tables_total: self.tables_total.load(Relaxed),
            finished,
        })
    }
}

/// Counters of one sink.
#[derive(Debug)]
pub struct SinkStats {
    pub name: String,
    pub batches: AtomicU64,
    pub rows: AtomicU64,
    pub transactions: AtomicU64,
    checkpoint: Mutex<Option<Position>>,
    /// Source time of the last durable point: a commit time, or when a heartbeat became durable (µs since the
    /// epoch; 0: none yet).
    last_commit_unix_micros: AtomicI64,
    /// Conflicts the sink detected and made durable: (table, type, resolution) → count.
    conflicts: Mutex<std::collections::BTreeMap<(String, &'static str, &'static str), u64>>,
    /// Row changes set aside and made durable: (table, `dead_letter` or `skip`, the target's code) → count.
    set_aside: Mutex<std::collections::BTreeMap<(String, &'static str, String), u64>>,
    /// Tries of a refused row after its first.
    pub row_retries: AtomicU64,
    /// Transactions applied live (while in progress at the source) and then undone.
    pub live_abandoned: AtomicU64,
    /// Dead letters the sink's target holds (as of its last commit).
    pub dead_letters: AtomicU64,
    /// Source commit to target commit, per transaction made durable, seconds.
    pub lag: Histogram,
    /// How long each apply that commits takes, seconds.
    pub apply_seconds: Histogram,
    /// Row isolation under way: the sink sets each failing row aside until its checkpoint includes the source
    /// transaction at this position (the last one begun when a row failed). Kept across restarts.
    isolate_through: Mutex<Option<Position>>,
}

/// One conflict a sink detected, as counted in `ferry_conflicts_total{table,type,resolution}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictCount {
    pub table: String,
    /// `insert_exists`, `update_origin_differs`, `update_missing`, `delete_origin_differs`, `delete_missing`.
    pub kind: &'static str,
    /// `apply_remote` (the change won) or `keep_local` (the target row stayed).
    pub resolution: &'static str,
}

impl SinkStats {
    /// A transaction applied live was undone: its rows, counted since `rows_before`, no longer count.
    pub fn abandoned(&self, rows_before: u64) {
        let rows = self.rows.load(Relaxed);
        self.rows
            .fetch_sub(rows.saturating_sub(rows_before), Relaxed);
        self.live_abandoned.fetch_add(1, Relaxed);
    }

    /// Adds conflicts the sink made durable.
    pub fn conflicts_committed(&self, conflicts: Vec<ConflictCount>) {
        if conflicts.is_empty() {
            return;
        }
        let mut m = self.conflicts.lock().unwrap_or_else(|p| p.into_inner());
        for c in conflicts {
            *m.entry((c.table, c.kind, c.resolution)).or_default() += 1;
        }
    }

    /// Conflicts made durable so far: (table, type, resolution, count).
    pub fn conflicts(&self) -> Vec<(String, &'static str, &'static str, u64)> {
        let m = self.conflicts.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((t, k, r), n)| (t.clone(), *k, *r, *n))
            .collect()
    }

    fn new(name: &str) -> SinkStats {
        SinkStats {
            conflicts: Mutex::new(Default::default()),
            name: name.to_owned(),
            batches: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            checkpoint: Mutex::new(None),
            last_commit_unix_micros: AtomicI64::new(0),
            set_aside: Mutex::new(Default::default()),
            lag: Histogram::default(),
            apply_seconds: Histogram::default(),
            row_retries: AtomicU64::new(0),
            live_abandoned: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            isolate_through: Mutex::new(None),
        }
    }

    /// Adds row changes set aside (dead-lettered or skipped) that the sink made durable: (table, outcome, code).
    pub fn set_aside_committed(&self, rows: Vec<(String, &'static str, String)>) {
        if rows.is_empty() {
            return;
        }
        let mut m = self.set_aside.lock().unwrap_or_else(|p| p.into_inner());
        for key in rows {
            *m.entry(key).or_default() += 1;
        }
    }

    /// Row changes set aside so far: (table, outcome, code, count).
    pub fn set_aside(&self) -> Vec<(String, &'static str, String, u64)> {
        let m = self.set_aside.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((t, o, c), n)| (t.clone(), *o, c.clone(), *n))
            .collect()
    }

    pub fn isolate_through(&self) -> Option<Position> {
        self.isolate_through
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_isolate_through(&self, position: Option<Position>) {
        *self
            .isolate_through
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = position;
    }

    /// Records events the sink made durable up to `position`.
    pub fn applied(&self, events: &[Event], position: Option<&Position>) {
        let mut rows = 0;
        let mut transactions = 0;
        let mut last_commit = None;
        let now = now_unix_micros();
        for e in events {
            match e {
                Event::Change(Change::Row { .. }) => rows += 1,
                Event::Change(Change::CopyRows { rows: n, .. }) => rows += n,
                Event::Commit { commit_time, .. } => {
                    transactions += 1;
                    last_commit = commit_time.unix_micros();
                    if let Some(at) = last_commit.filter(|t| *t > 0 && position.is_some()) {
                        self.lag.observe((now - at) as f64 / 1e6);
                    }
                }
                // The source had nothing more to send: the sink is caught up as of now.
                Event::Heartbeat { .. } => last_commit = Some(now_unix_micros()),
                _ => {}
            }
        }
        self.rows.fetch_add(rows, Relaxed);
        self.transactions.fetch_add(transactions, Relaxed);
        if let Some(position) = position {
            self.batches.fetch_add(1, Relaxed);
            *self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(position.clone());
            // A commit without a source time (0) says nothing about lag.
            if let Some(at) = last_commit.filter(|t| *t > 0) {
                self.last_commit_unix_micros.store(at, Relaxed);
            }
        }
    }

    /// Sets the checkpoint the sink starts from.
    pub fn set_checkpoint(&self, position: Option<Position>) {
        *self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = position;
    }

    pub fn checkpoint(&self) -> Option<Position> {
        self.checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Seconds from the source time of the last durable point to now: the commit time of the last durable
    /// transaction, or the moment a heartbeat (an idle source) became durable. It keeps growing while nothing
    /// arrives, so a source that went silent without closing its connection shows, instead of a frozen gauge.
    pub fn lag_seconds(&self) -> Option<f64> {
        let commit = self.last_commit_unix_micros.load(Relaxed);
        (commit > 0).then(|| (now_unix_micros() - commit).max(0) as f64 / 1e6)
    }
}

/// Counters of one pipeline.
#[derive(Debug)]
pub struct PipelineStats {
    pub name: String,
    state: Mutex<PipelineState>,
    pub restarts: AtomicU64,
    /// The back-off the pipeline is waiting out before its next restart, ms (0: none).
    pub backoff_ms: AtomicU64,
    /// PostgreSQL sources: the server's current WAL position (0: not measured yet).
    pub source_wal_lsn: AtomicU64,
    /// PostgreSQL sources: WAL the pipeline's slot holds back, bytes (-1: not measured yet).
    pub retained_wal_bytes: AtomicI64,
    /// MySQL / MariaDB sources: the server's binary logs, oldest first, with their sizes in bytes (`SHOW BINARY
    /// LOGS`; empty: not measured yet).
    pub source_binlogs: Mutex<Vec<(String, u64)>>,
    /// Alerts judged (`[pipeline.alerts]`): name → what crossed which threshold, `None` while clear.
    alerts: Mutex<std::collections::BTreeMap<&'static str, Option<String>>>,
    /// Asks the source to make its position move now (a PostgreSQL heartbeat message): a read-your-writes wait
    /// (`GET /wait`) for a position past the last transaction the pipeline carried.
    pub source_wake: tokio::sync::Notify,
    /// `[pipeline.alerts] readyz`: a firing alert makes `/readyz` answer 503.
    pub alerts_gate_readiness: std::sync::atomic::AtomicBool,
    /// Events read from the source (before filters).
    pub source_events: AtomicU64,
    pub source_transactions: AtomicU64,
    pub snapshot: SnapshotProgress,
    pub sinks: Vec<SinkStats>,
    /// Tables quarantined in this run (`on_schema_change = "quarantine"`), with why.
    quarantined: Mutex<Vec<(String, String)>>,
    /// Online re-copies of this run: table, rows copied, finished.
    recopies: Mutex<Vec<(String, u64, bool)>>,
    /// Rows `filter` transforms left out.
    pub rows_filtered: AtomicU64,
    /// Row changes the source left out because their transaction was written under a skipped origin
    /// (`[source] origins`, `skip_origins`).
    pub origin_skipped: AtomicU64,
    /// Rows left out after a transform failed on them (`on_error = "skip"`), per stage key and table.
    rows_skipped: Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

impl PipelineStats {
    /// Sets alert `name` firing with `message`, or cleared (`None`). Returns whether it changed: `Some(true)` it
    /// started, `Some(false)` it cleared.
    pub fn set_alert(&self, name: &'static str, message: Option<String>) -> Option<bool> {
        let mut alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        let was = alerts.insert(name, message.clone()).flatten().is_some();
        (was != message.is_some()).then_some(!was)
    }

    /// The alerts firing: name and message.
    pub fn alerts(&self) -> Vec<(&'static str, String)> {
        let alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        alerts
            .iter()
            .filter_map(|(n, m)| m.clone().map(|m| (*n, m)))
            .collect()
    }

    /// Every alert judged so far and whether it fires.
    pub fn alert_states(&self) -> Vec<(&'static str, bool)> {
        let alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        alerts.iter().map(|(n, m)| (*n, m.is_some())).collect()
    }

    /// Bytes of the source's log between the server's current position and `sink`'s checkpoint, once measured:
    /// WAL for PostgreSQL; for MySQL / MariaDB the rest of the checkpoint's binlog file and every later file
    /// (`None` while the file is not among the server's binary logs).
    pub fn lag_bytes(&self, sink: &SinkStats) -> Option<u64> {
        match sink.checkpoint()? {
            Position::Pg(at, _) => {
                let head = self.source_wal_lsn.load(Relaxed);
                (head > 0).then(|| head.saturating_sub(at.0))
            }
            Position::Binlog(at) => {
                let logs = self
                    .source_binlogs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let i = logs.iter().position(|(name, _)| *name == at.pos.file)?;
                Some(
                    logs[i].1.saturating_sub(at.pos.offset)
                        + logs[i + 1..].iter().map(|(_, size)| size).sum::<u64>(),
                )
            }
            // Measured in records, per partition (`ferry status`).
            Position::Kafka(_) => None,
        }
    }

    /// WAL the slot holds back, bytes, once measured.
    pub fn retained_wal(&self) -> Option<u64> {
        u64::try_from(self.retained_wal_bytes.load(Relaxed)).ok()
    }

    pub fn new(name: &str, sinks: &[&str]) -> PipelineStats {
        PipelineStats {
            name: name.to_owned(),
            state: Mutex::new(PipelineState::Starting),
            restarts: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(0),
            source_wal_lsn: AtomicU64::new(0),
            retained_wal_bytes: AtomicI64::new(-1),
            source_binlogs: Mutex::new(Vec::new()),
            alerts: Mutex::new(Default::default()),
            alerts_gate_readiness: std::sync::atomic::AtomicBool::new(false),
            source_wake: tokio::sync::Notify::new(),
            source_events: AtomicU64::new(0),
            source_transactions: AtomicU64::new(0),
            snapshot: SnapshotProgress::default(),
            sinks: sinks.iter().map(|n| SinkStats::new(n)).collect(),
            quarantined: Mutex::new(Vec::new()),
            recopies: Mutex::new(Vec::new()),
            rows_filtered: AtomicU64::new(0),
            origin_skipped: AtomicU64::new(0),
            rows_skipped: Mutex::new(Default::default()),
        }
    }

    /// Counts row changes left out by their origin.
    pub fn add_origin_skipped(&self, n: u64) {
        self.origin_skipped.fetch_add(n, Relaxed);
    }

    /// Counts a row the transform stage `stage` (`transform[2]`) failed on and left out.
    pub fn row_skipped(&self, stage: &str, table: &str) {
        let mut m = self.rows_skipped.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((stage.to_owned(), table.to_owned())).or_default() += 1;
    }

    /// Rows left out after a transform failed on them: (stage, table, count).
    pub fn rows_skipped(&self) -> Vec<(String, String, u64)> {
        let m = self.rows_skipped.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((s, t), n)| (s.clone(), t.clone(), *n))
            .collect()
    }

    /// Records how far the online re-copy of `table` got.
    pub fn recopy(&self, table: String, rows: u64, finished: bool) {
        let mut r = self.recopies.lock().unwrap_or_else(|p| p.into_inner());
        match r.iter_mut().find(|(t, _, _)| *t == table) {
            Some(entry) => *entry = (table, rows, finished),
            None => r.push((table, rows, finished)),
        }
    }

    /// The online re-copies of this run: table, rows copied, finished.
    pub fn recopies(&self) -> Vec<(String, u64, bool)> {
        self.recopies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a quarantined table.
    pub fn quarantine(&self, table: String, reason: String) {
        let mut q = self.quarantined.lock().unwrap_or_else(|p| p.into_inner());
        if !q.iter().any(|(t, _)| *t == table) {
            q.push((table, reason));
        }
    }

    /// A quarantined table was copied anew.
    pub fn release_quarantine(&self, table: &str) {
        self.quarantined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(t, _)| t != table);
    }

    /// The tables quarantined in this run, with why.
    pub fn quarantined(&self) -> Vec<(String, String)> {
        self.quarantined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_state(&self, state: PipelineState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub fn state(&self) -> PipelineState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counts an event read from the source.
    pub fn source_event(&self, event: &Event) {
        self.source_events.fetch_add(1, Relaxed);
        if matches!(event, Event::Commit { .. }) {
            self.source_transactions.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Lsn, Timestamp};

    #[test]
    fn binlog_distance_is_the_rest_of_the_checkpoint_file_and_every_later_file() {
        let stats = PipelineStats::new("p", &["a"]);
        let sink = &stats.sinks[0];
        let at = |file: &str, offset: u64| {
            Position::Binlog(crate::BinlogPosition {
                pos: crate::BinlogFilePos {
                    file: file.to_owned(),
                    offset,
                },
                gtid: None,
            })
        };
        sink.set_checkpoint(Some(at("binlog.000002", 400)));
        assert_eq!(stats.lag_bytes(sink), None, "not measured yet");
        *stats.source_binlogs.lock().unwrap() = vec![
            ("binlog.000001".to_owned(), 5_000),
            ("binlog.000002".to_owned(), 1_000),
            ("binlog.000003".to_owned(), 256),
        ];
        assert_eq!(stats.lag_bytes(sink), Some(600 + 256));
        sink.set_checkpoint(Some(at("binlog.000003", 256)));
        assert_eq!(stats.lag_bytes(sink), Some(0));
        sink.set_checkpoint(Some(at("binlog.000009", 4)));
        assert_eq!(
            stats.lag_bytes(sink),
            None,
            "a file the server does not list"
        );
    }

    #[test]
    fn sink_stats_count_rows_transactions_and_lag() {
        let stats = PipelineStats::new("p", &["a"]);
        let sink = &stats.sinks[0];
        let position = Position::pg(Lsn(42));
        let commit_time = now_unix_micros() - 2_000_000;
        sink.applied(
            &[
                Event::begin_at(position.clone()),
                Event::Change(Change::Truncate {
                    tables: vec![],
                    snapshot: false,
                }),
                Event::Commit {
                    position: position.clone(),
                    commit_time: Timestamp::from_unix_micros(commit_time),
                },
            ],
            Some(&position),
        );
        assert_eq!(sink.transactions.load(Relaxed), 1);
        assert_eq!(sink.rows.load(Relaxed), 0);
        assert_eq!(sink.checkpoint(), Some(position));
        let lag = sink.lag_seconds().unwrap();
        assert!((2.0..3.0).contains(&lag), "{lag}");
        // Nothing more arrives: the lag grows instead of freezing.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let later = sink.lag_seconds().unwrap();
        assert!(later >= lag + 0.25, "{lag} then {later}");
        // A heartbeat of an idle source says the sink is caught up as of now.
        sink.applied(
            &[Event::Heartbeat {
                position: Position::pg(Lsn(43)),
            }],
            Some(&Position::pg(Lsn(43))),
        );
        assert!(sink.lag_seconds().unwrap() < 0.5);
    }

    #[test]
    fn snapshot_report_never_exceeds_the_estimate() {
        let p = SnapshotProgress::default();
        assert!(p.report().is_none());
        p.start(2, 100);
        p.rows_copied.store(150, Relaxed);
        let r = p.report().unwrap();
        assert_eq!(r.rows_estimated, 150);
        assert_eq!(r.percent, 100.0);
        p.finish();
        assert!(p.report().unwrap().finished);
    }
}
