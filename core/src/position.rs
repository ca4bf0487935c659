//! Replication positions as values.
//!
//! A position names a point in a source's change stream. Positions of different kinds (a PostgreSQL LSN and a
//! MySQL GTID set, say) have no order between them: [`Position::try_cmp`] returns an error instead of `false`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::binlog_position::BinlogPosition;
use crate::kafka_offsets::KafkaOffsets;

/// A PostgreSQL write-ahead-log location, displayed as PostgreSQL does (`16/B374D848`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid LSN `0/0`, which PostgreSQL uses for "none".
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A string that is not a valid position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position {input:?}: expected {expected}")]
pub struct ParsePositionError {
    input: String,
    expected: &'static str,
}

impl ParsePositionError {
    pub(crate) fn new(input: &str, expected: &'static str) -> Self {
        ParsePositionError {
            input: input.to_owned(),
            expected,
        }
    }
}

impl FromStr for Lsn {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError::new(s, "an LSN such as 16/B374D848");
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// Where a source stands: the end of the last committed source transaction that has been applied.
///
/// Stored by sinks in their checkpoint as its `Display` form (`pg:16/B374D848;timeline=2`,
/// `mysql:binlog.000003:1234;gtid=0-1-42`), read back with `FromStr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Position {
    /// PostgreSQL: the end LSN of a transaction's commit record, and the timeline of the server Ferry read it from
    /// (0: not known, as in checkpoints written before Ferry recorded it). Restarting the slot there replays only
    /// transactions that committed after it; the timeline tells a server that forked from the targets' history
    /// (an old primary started again after a failover) from its successor. Positions order by LSN alone.
    Pg(Lsn, u32),
    /// MySQL / MariaDB: the binlog offset just past a transaction's commit event, with the GTID state after it.
    Binlog(BinlogPosition),
    /// A Kafka source: per partition, the next offset to apply and the claim that owns it
    /// ([`KafkaOffsets`]). Maps order only partially: [`Position::lower`] takes their meet.
    Kafka(KafkaOffsets),
}

/// Two positions of different kinds were compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot compare position {left} with {right}: they come from different kinds of source")]
pub struct IncomparablePositions {
    left: String,
    right: String,
}

impl Position {
    /// Orders two positions of the same kind; positions of different kinds are an error.
    pub fn try_cmp(&self, other: &Position) -> Result<Ordering, IncomparablePositions> {
        match (self, other) {
            (Position::Pg(a, _), Position::Pg(b, _)) => Ok(a.cmp(b)),
            (Position::Binlog(a), Position::Binlog(b)) => {
                a.try_cmp(b).ok_or_else(|| self.incomparable(other))
            }
            (Position::Kafka(a), Position::Kafka(b)) => {
                a.try_cmp(b).ok_or_else(|| self.incomparable(other))
            }
            _ => Err(self.incomparable(other)),
        }
    }

    /// The position both include: the lower of two ordered positions; for Kafka offsets, per partition the
    /// lower offset of the partitions both hold. Positions of different kinds are an error.
    pub fn lower(&self, other: &Position) -> Result<Position, IncomparablePositions> {
        match (self, other) {
            (Position::Kafka(a), Position::Kafka(b)) => Ok(Position::Kafka(a.meet(b))),
            _ => Ok(if self.try_cmp(other)?.is_le() {
                self.clone()
            } else {
                other.clone()
            }),
        }
    }

    /// This position as a checkpoint that never moves back from `floor` (a sink's stored checkpoint): `floor`
    /// when this one is below it; for Kafka offsets, each partition's offset raised to `floor`'s.
    pub fn not_below(&self, floor: &Position) -> Position {
        match (self, floor) {
            (Position::Kafka(a), Position::Kafka(f)) => Position::Kafka(a.not_below(f)),
            _ if self.try_cmp(floor).is_ok_and(|o| o.is_lt()) => floor.clone(),
            _ => self.clone(),
        }
    }

    fn incomparable(&self, other: &Position) -> IncomparablePositions {
        IncomparablePositions {
            left: self.to_string(),
            right: other.to_string(),
        }
    }

    /// The LSN of a PostgreSQL position, `None` for other kinds.
    pub fn as_lsn(&self) -> Option<Lsn> {
        match self {
            Position::Pg(lsn, _) => Some(*lsn),
            Position::Binlog(_) | Position::Kafka(_) => None,
        }
    }

    /// A PostgreSQL position whose timeline is not known.
    pub fn pg(lsn: Lsn) -> Position {
        Position::Pg(lsn, 0)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Pg(lsn, 0) => write!(f, "pg:{lsn}"),
            Position::Pg(lsn, timeline) => write!(f, "pg:{lsn};timeline={timeline}"),
            Position::Binlog(pos) => write!(f, "mysql:{pos}"),
            Position::Kafka(offsets) => write!(f, "kafka:{offsets}"),
        }
    }
}

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("pg", rest)) => {
                let (lsn, timeline) = match rest.split_once(";timeline=") {
                    Some((lsn, tli)) => (
                        lsn,
                        tli.parse().map_err(|_| {
                            ParsePositionError::new(
                                s,
                                "a position such as pg:16/B374D848;timeline=2",
                            )
                        })?,
                    ),
                    None => (rest, 0),
                };
                Ok(Position::Pg(lsn.parse()?, timeline))
            }
            Some(("mysql", pos)) => Ok(Position::Binlog(pos.parse()?)),
            Some(("kafka", offsets)) => Ok(Position::Kafka(offsets.parse()?)),
            _ => Err(ParsePositionError::new(
                s,
                "a position such as pg:16/B374D848 or mysql:binlog.000003:1234",
            )),
        }
    }
}

/// A point a client waits for a sink to reach (read your writes, `GET /wait`): a PostgreSQL LSN (`0/1D6C138`,
/// from `pg_current_wal_insert_lsn()` after the commit), a MariaDB GTID position (`0-1-42,1-1-7`, from
/// `@@gtid_binlog_pos`), or a MySQL GTID set (`3E11FA47-…:1-5`, from `@@gtid_executed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitPoint {
    Lsn(Lsn),
    MariaDb(Vec<crate::binlog_position::MariaGtid>),
    MySql(crate::binlog_position::MysqlGtidSet),
}

impl FromStr for WaitPoint {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        // Ferry's own spelling of a PostgreSQL position (`pg:0/1D6C138`, as `ferry status` prints it) too.
        let s = s.strip_prefix("pg:").unwrap_or(s);
        if s.contains('/') {
            let s = s.split_once(";timeline=").map_or(s, |(lsn, _)| lsn);
            return Ok(WaitPoint::Lsn(s.parse()?));
        }
        let maria: Option<Vec<_>> = s
            .split(',')
            .map(|g| {
                let mut parts = g.trim().split('-').map(|p| p.parse::<u64>().ok());
                match (parts.next()??, parts.next()??, parts.next()??, parts.next()) {
                    (d, srv, n, None) => Some(crate::binlog_position::MariaGtid {
                        domain: u32::try_from(d).ok()?,
                        server: u32::try_from(srv).ok()?,
                        sequence: n,
                    }),
                    _ => None,
                }
            })
            .collect();
        if let Some(gtids) = maria.filter(|g| !g.is_empty()) {
            return Ok(WaitPoint::MariaDb(gtids));
        }
        match s.parse::<crate::binlog_position::MysqlGtidSet>() {
            Ok(set) if !set.0.is_empty() => Ok(WaitPoint::MySql(set)),
            _ => Err(ParsePositionError::new(
                s,
                "an LSN such as 0/1D6C138, a MariaDB GTID position such as 0-1-42, or a MySQL GTID set",
            )),
        }
    }
}

impl WaitPoint {
    /// Whether `checkpoint` includes everything up to this point; `None` when they come from different kinds of
    /// source (or the checkpoint carries no GTIDs).
    pub fn reached_by(&self, checkpoint: &Position) -> Option<bool> {
        use crate::binlog_position::GtidState;
        match (self, checkpoint) {
            (WaitPoint::Lsn(want), Position::Pg(at, _)) => Some(at >= want),
            (WaitPoint::MariaDb(want), Position::Binlog(b)) => match &b.gtid {
                // Each GTID on its own: a point may name one domain twice.
                Some(GtidState::MariaDb(at)) => Some(want.iter().all(|g| {
                    at.contains(&crate::binlog_position::MariaGtidList(
                        [(g.domain, *g)].into(),
                    ))
                })),
                _ => None,
            },
            (WaitPoint::MySql(want), Position::Binlog(b)) => match &b.gtid {
                Some(GtidState::MySql(at)) => Some(at.contains(want)),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Position {
    /// Whether a transaction that commits at `commit_at` (from [`crate::Event::Begin`]) is already covered by
    /// this checkpoint. PostgreSQL: the checkpoint is a commit's end LSN and `commit_at` the commit record's start,
    /// so the transaction is covered when it starts before the checkpoint. Binlog: `commit_at` is where the
    /// transaction's first event starts, the checkpoint where a transaction's last event ends; same rule.
    pub fn includes(&self, commit_at: &Position) -> Result<bool, IncomparablePositions> {
        match (self, commit_at) {
            (Position::Pg(checkpoint, _), Position::Pg(commit, _)) => Ok(commit < checkpoint),
            (Position::Binlog(checkpoint), Position::Binlog(start)) => checkpoint
                .includes(start)
                .ok_or_else(|| self.incomparable(commit_at)),
            (Position::Kafka(checkpoint), Position::Kafka(record)) => {
                Ok(checkpoint.includes(record))
            }
            _ => Err(self.incomparable(commit_at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lsn_displays_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::ZERO);
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn position_rejects_unknown_kind() {
        assert!("mysql:1".parse::<Position>().is_err());
        assert!("oracle:1".parse::<Position>().is_err());
        let binlog: Position = "mysql:bin.000002:77".parse().unwrap();
        assert!(binlog.try_cmp(&Position::pg(Lsn(1))).is_err());
        assert!(binlog
            .includes(&"mysql:bin.000002:4".parse().unwrap())
            .unwrap());
        assert!(!binlog
            .includes(&"mysql:bin.000002:77".parse().unwrap())
            .unwrap());
    }

    proptest! {
        #[test]
        fn position_round_trips(v in any::<u64>(), timeline in any::<u32>()) {
            let p = Position::Pg(Lsn(v), timeline);
            prop_assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
        }
    }

    #[test]
    fn wait_points_parse_and_compare_with_checkpoints() {
        let lsn: WaitPoint = "0/1D6C138".parse().unwrap();
        assert_eq!(lsn.reached_by(&"pg:0/1D6C138".parse().unwrap()), Some(true));
        assert_eq!(
            lsn.reached_by(&"pg:0/1D6C137".parse().unwrap()),
            Some(false)
        );
        let on_timeline: WaitPoint = "pg:0/1D6C138;timeline=3".parse().unwrap();
        assert_eq!(on_timeline, lsn);
        assert_eq!(
            lsn.reached_by(&"pg:0/1D6C138;timeline=2".parse().unwrap()),
            Some(true)
        );
        // Old checkpoints, without a timeline, still read; timelines do not order positions.
        let old: Position = "pg:0/10".parse().unwrap();
        assert_eq!(old, Position::Pg(Lsn(0x10), 0));
        assert!(old.try_cmp(&Position::Pg(Lsn(0x10), 2)).unwrap().is_eq());
        assert!("pg:0/10;timeline=x".parse::<Position>().is_err());
        let maria: WaitPoint = "0-1-42,1-1-7".parse().unwrap();
        assert!(matches!(maria, WaitPoint::MariaDb(ref g) if g.len() == 2));
        assert_eq!(maria.reached_by(&"pg:0/1".parse().unwrap()), None);
        assert!("nonsense".parse::<WaitPoint>().is_err());
        assert!("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"
            .parse::<WaitPoint>()
            .is_ok());
    }
}
