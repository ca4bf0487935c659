//! `[pipeline.alerts]`: thresholds on lag and retained WAL. Crossing one logs a warning once (and once when it
//! clears), shows in `ferry status` and `/metrics` (`ferry_alert_firing`), and with `readyz = true` turns
//! `/readyz` to 503, so a probe or a load balancer stops sending reads to a stale replica (docs/monitoring.md).

use tracing::{info, warn};

use crate::stats::PipelineStats;

/// A pipeline's alert thresholds; `None` leaves that alert off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Alerts {
    /// Seconds from a source commit to its commit in a sink (`ferry_sink_lag_seconds`), any sink.
    pub lag_seconds: Option<f64>,
    /// Source WAL between the server's position and a sink's checkpoint, bytes (PostgreSQL sources).
    pub lag_bytes: Option<u64>,
    /// WAL the pipeline's slot holds back on the source, bytes (PostgreSQL sources).
    pub retained_wal: Option<u64>,
    /// Whether a firing alert makes `/readyz` answer 503.
    pub readyz: bool,
}

/// An alert's name, threshold, worst value (and whose) and unit.
type Check<'a> = (&'static str, Option<f64>, Option<(f64, String)>, &'a str);

/// The alert names, as `ferry_alert_firing{alert}` and `ferry status` show them.
pub const LAG_SECONDS: &str = "lag_seconds";
pub const LAG_BYTES: &str = "lag_bytes";
pub const RETAINED_WAL: &str = "retained_wal";

impl Alerts {
    pub fn any(&self) -> bool {
        self.lag_seconds.is_some() || self.lag_bytes.is_some() || self.retained_wal.is_some()
    }

    /// Compares the pipeline's figures with the thresholds and updates its alerts, logging each change.
    pub fn evaluate(&self, stats: &PipelineStats) {
        let worst = |f: &dyn Fn(&crate::stats::SinkStats) -> Option<f64>| {
            stats
                .sinks
                .iter()
                .filter_map(|s| f(s).map(|v| (v, s.name.clone())))
                .max_by(|a, b| a.0.total_cmp(&b.0))
        };
        let checks: [Check; 3] = [
            (
                LAG_SECONDS,
                self.lag_seconds,
                worst(&|s| s.lag_seconds()),
                "s behind the source",
            ),
            (
                LAG_BYTES,
                self.lag_bytes.map(|b| b as f64),
                worst(&|s| stats.lag_bytes(s).map(|b| b as f64)),
                "bytes of WAL behind the source",
            ),
            (
                RETAINED_WAL,
                self.retained_wal.map(|b| b as f64),
                stats
                    .retained_wal()
                    .map(|b| (b as f64, "the slot".to_owned())),
                "bytes of WAL retained on the source",
            ),
        ];
        for (name, threshold, value, unit) in checks {
            let Some(threshold) = threshold else {
                continue;
            };
            let firing = value
                .filter(|(v, _)| *v > threshold)
                .map(|(v, who)| format!("{who}: {v:.0} {unit} (threshold {threshold:.0})"));
            let message = firing.clone();
            match stats.set_alert(name, firing) {
                Some(true) => {
                    warn!(pipeline = %stats.name, alert = name, detail = message.as_deref().unwrap_or(""), "alert firing")
                }
                Some(false) => info!(pipeline = %stats.name, alert = name, "alert cleared"),
                None => {}
            }
        }
    }
}
