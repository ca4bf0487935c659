//! MySQL / MariaDB binlog positions: a file and offset, plus the GTID state when the server has GTIDs.
//!
//! Display forms (what sinks store): `mysql:mariadb-bin.000003:1234` or, with GTIDs,
//! `mysql:mariadb-bin.000003:1234;gtid=0-1-42,1-2-7` (MariaDB) /
//! `mysql:binlog.000003:1234;gtid=3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5` (MySQL).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::position::ParsePositionError;

/// A byte offset in a named binlog file. Offsets are event ends: resuming there reads the next event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogFilePos {
    pub file: String,
    pub offset: u64,
}

impl BinlogFilePos {
    pub fn new(file: impl Into<String>, offset: u64) -> Self {
        BinlogFilePos {
            file: file.into(),
            offset,
        }
    }

    /// Orders positions on one server: files by their numeric extension (`.000010` after `.000009`), then offset.
    /// Files of different base names (another server, a renamed log) have no order.
    pub fn try_cmp(&self, other: &BinlogFilePos) -> Option<Ordering> {
        let split = |f: &str| {
            let (base, seq) = f.rsplit_once('.')?;
            Some((base.to_owned(), seq.parse::<u64>().ok()?))
        };
        match (split(&self.file), split(&other.file)) {
            (Some((a, x)), Some((b, y))) if a == b => {
                Some((x, self.offset).cmp(&(y, other.offset)))
            }
            _ if self.file == other.file => Some(self.offset.cmp(&other.offset)),
            _ => None,
        }
    }
}

impl fmt::Display for BinlogFilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

/// One MariaDB GTID: `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub sequence: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.sequence)
    }
}

/// MariaDB's replication state: the last GTID of each domain (`gtid_binlog_pos`, `@slave_connect_state`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MariaGtidList(pub BTreeMap<u32, MariaGtid>);

impl MariaGtidList {
    /// Records a transaction's GTID: it becomes its domain's latest.
    pub fn advance(&mut self, gtid: MariaGtid) {
        self.0.insert(gtid.domain, gtid);
    }

    /// Whether this state includes every GTID of `other`: in each of its domains, a sequence number at least as
    /// high (sequence numbers grow within a domain, which `gtid_strict_mode` enforces).
    pub fn contains(&self, other: &MariaGtidList) -> bool {
        other.0.values().all(|g| {
            self.0
                .get(&g.domain)
                .is_some_and(|a| a.sequence >= g.sequence)
        })
    }
}

impl fmt::Display for MariaGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl FromStr for MariaGtidList {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut list = MariaGtidList::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.splitn(3, '-');
            let mut next = || it.next().ok_or(());
            let gtid = MariaGtid {
                domain: next()?.parse().map_err(|_| ())?,
                server: next()?.parse().map_err(|_| ())?,
                sequence: next()?.parse().map_err(|_| ())?,
            };
            list.advance(gtid);
        }
        Ok(list)
    }
}

/// A MySQL GTID set: per source id (a UUID, with `:tag` for tagged GTIDs), the executed transaction numbers as
/// closed intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MysqlGtidSet(pub BTreeMap<String, Vec<(u64, u64)>>);

impl MysqlGtidSet {
    /// Adds transaction `gno` of source `sid`, merging adjacent intervals.
    pub fn add(&mut self, sid: &str, gno: u64) {
        self.add_interval(sid, gno, gno);
    }

    /// Adds transactions `lo..=hi` of source `sid`.
    pub fn add_interval(&mut self, sid: &str, lo: u64, hi: u64) {
        let intervals = self.0.entry(sid.to_ascii_lowercase()).or_default();
        intervals.push((lo, hi));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(lo, hi) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        *intervals = merged;
    }

    /// Whether every transaction of `other` is in this set.
    pub fn contains(&self, other: &MysqlGtidSet) -> bool {
        other.0.iter().all(|(sid, intervals)| {
            let held = self.0.get(sid).map_or(&[][..], Vec::as_slice);
            intervals
                .iter()
                .all(|(lo, hi)| held.iter().any(|(a, b)| a <= lo && hi <= b))
        })
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (sid, intervals)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(sid)?;
            for (lo, hi) in intervals {
                if lo == hi {
                    write!(f, ":{lo}")?;
                } else {
                    write!(f, ":{lo}-{hi}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MysqlGtidSet {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut set = MysqlGtidSet::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split(':');
            let uuid = fields.next().ok_or(())?;
            if uuid.len() != 36 {
                return Err(());
            }
            let mut sid = uuid.to_owned();
            for field in fields {
                if field.starts_with(|c: char| c.is_ascii_digit()) {
                    let (lo, hi) = field.split_once('-').unwrap_or((field, field));
                    let (lo, hi): (u64, u64) =
                        (lo.parse().map_err(|_| ())?, hi.parse().map_err(|_| ())?);
                    if lo > hi {
                        return Err(());
                    }
                    set.add_interval(&sid, lo, hi);
                } else {
                    sid = format!("{uuid}:{field}");
                }
            }
        }
        Ok(set)
    }
}

/// The GTID state of a position, in the server family's own form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GtidState {
    MariaDb(MariaGtidList),
    MySql(MysqlGtidSet),
}

impl GtidState {
    pub fn is_empty(&self) -> bool {
        match self {
            GtidState::MariaDb(l) => l.0.is_empty(),
            GtidState::MySql(s) => s.0.is_empty(),
        }
    }

    /// Whether this state includes every transaction of `other`; `None` for states of different server families.
    pub fn contains(&self, other: &GtidState) -> Option<bool> {
        match (self, other) {
            (GtidState::MariaDb(a), GtidState::MariaDb(b)) => Some(a.contains(b)),
            (GtidState::MySql(a), GtidState::MySql(b)) => Some(a.contains(b)),
            _ => None,
        }
    }

    /// Orders states by inclusion; `None` when neither includes the other.
    pub fn try_cmp(&self, other: &GtidState) -> Option<Ordering> {
        match (self.contains(other)?, other.contains(self)?) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidState::MariaDb(l) => l.fmt(f),
            GtidState::MySql(s) => s.fmt(f),
        }
    }
}

impl FromStr for GtidState {
    type Err = ();

    /// MySQL sets start with a 36-character UUID; MariaDB lists are `d-s-n` numbers.
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.split(',').next().is_some_and(|p| p.trim().len() >= 36) {
            s.parse().map(GtidState::MySql)
        } else {
            s.parse().map(GtidState::MariaDb)
        }
    }
}

/// Where a MySQL / MariaDB source stands: the end of the last applied transaction in the binlog, and the GTID
/// state including that transaction when the server has GTIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub pos: BinlogFilePos,
    pub gtid: Option<GtidState>,
}

impl BinlogPosition {
    /// Orders positions: by GTID state when both have one, which holds across servers (after a failover the new
    /// primary's files and offsets have nothing to do with the old one's), else by file and offset on one server.
    pub fn try_cmp(&self, other: &BinlogPosition) -> Option<Ordering> {
        match (self.gtids(), other.gtids()) {
            (Some(a), Some(b)) => a.try_cmp(b),
            _ => self.pos.try_cmp(&other.pos),
        }
    }

    /// Whether this position (a checkpoint) includes the transaction that starts at `start` (its GTID state holds
    /// that transaction's own GTID): by GTID when both have one, else by file and offset. `None`: no order.
    pub fn includes(&self, start: &BinlogPosition) -> Option<bool> {
        match (self.gtids(), start.gtids()) {
            (Some(a), Some(b)) => a.contains(b),
            _ => Some(start.pos.try_cmp(&self.pos)?.is_lt()),
        }
    }

    fn gtids(&self) -> Option<&GtidState> {
        self.gtid.as_ref().filter(|g| !g.is_empty())
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.pos)?;
        if let Some(gtid) = &self.gtid {
            write!(f, ";gtid={gtid}")?;
        }
        Ok(())
    }
}

impl FromStr for BinlogPosition {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err =
            || ParsePositionError::new(s, "a binlog position such as mysql:binlog.000003:1234");
        let (pos, gtid) = match s.split_once(";gtid=") {
            Some((pos, gtid)) => (pos, Some(gtid)),
            None => (s, None),
        };
        let (file, offset) = pos.rsplit_once(':').ok_or_else(err)?;
        if file.is_empty() {
            return Err(err());
        }
        let offset = offset.parse().map_err(|_| err())?;
        let gtid = match gtid {
            Some(g) => Some(g.parse().map_err(|_| err())?),
            None => None,
        };
        Ok(BinlogPosition {
            pos: BinlogFilePos::new(file, offset),
            gtid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> BinlogPosition {
        text.parse().unwrap()
    }

    #[test]
    fn gtids_order_positions_across_servers() {
        // The old primary's checkpoint in its 6th file; the promoted replica writes its 2nd.
        let checkpoint = at("binlog.000006:900;gtid=0-1-100");
        let later = at("binlog.000002:400;gtid=0-2-101");
        let earlier = at("binlog.000002:300;gtid=0-1-99");
        assert_eq!(checkpoint.try_cmp(&later), Some(Ordering::Less));
        assert_eq!(checkpoint.try_cmp(&earlier), Some(Ordering::Greater));
        // A transaction's own GTID: included when the checkpoint's state has it.
        assert_eq!(
            checkpoint.includes(&at("binlog.000002:350;gtid=0-2-101")),
            Some(false)
        );
        assert_eq!(
            checkpoint.includes(&at("binlog.000002:250;gtid=0-1-100")),
            Some(true)
        );
        // A domain the checkpoint never saw is not included; states that each lack the other's have no order.
        assert_eq!(
            checkpoint.includes(&at("binlog.000002:250;gtid=1-2-1")),
            Some(false)
        );
        assert_eq!(
            at("b.000001:4;gtid=0-1-5").try_cmp(&at("b.000001:4;gtid=1-1-5")),
            None
        );
        // Without GTIDs, file and offset on one server.
        assert_eq!(
            at("b.000003:10").try_cmp(&at("b.000002:90")),
            Some(Ordering::Greater)
        );
        assert_eq!(at("b.000003:10").includes(&at("b.000003:4")), Some(true));
        // MySQL GTID sets: inclusion of sets.
        let sid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let set = at(&format!("binlog.000009:10;gtid={sid}:1-50"));
        assert_eq!(
            set.includes(&at(&format!("binlog.000001:5;gtid={sid}:42"))),
            Some(true)
        );
        assert_eq!(
            set.includes(&at(&format!("binlog.000001:5;gtid={sid}:51"))),
            Some(false)
        );
        assert_eq!(
            set.try_cmp(&at(&format!("binlog.000001:5;gtid={sid}:1-60"))),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn positions_round_trip_through_text() {
        for text in [
            "mariadb-bin.000003:1234",
            "mariadb-bin.000003:1234;gtid=0-1-42,1-2-7",
            "binlog.000001:4;gtid=3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7",
            "binlog.000001:4;gtid=3e11fa47-71ca-11e1-9e33-c80aa9429562:1-2,3e11fa47-71ca-11e1-9e33-c80aa9429562:tag_a:1",
        ] {
            let p: BinlogPosition = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        // MySQL's combined form for tagged GTIDs reads the same as one entry per tag.
        let tagged: BinlogPosition = "b.1:4;gtid=3e11fa47-71ca-11e1-9e33-c80aa9429562:1-2:tag_a:1"
            .parse()
            .unwrap();
        assert_eq!(
            tagged.gtid.unwrap().to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-2,3e11fa47-71ca-11e1-9e33-c80aa9429562:tag_a:1"
        );
        assert!("nofile".parse::<BinlogPosition>().is_err());
        assert!("f.1:x".parse::<BinlogPosition>().is_err());
        assert!("f.1:5;gtid=0-x-1".parse::<BinlogPosition>().is_err());
    }

    #[test]
    fn files_order_by_sequence_then_offset() {
        let a = BinlogFilePos::new("bin.000009", 900);
        let b = BinlogFilePos::new("bin.000010", 4);
        assert_eq!(a.try_cmp(&b), Some(Ordering::Less));
        assert_eq!(
            b.try_cmp(&BinlogFilePos::new("bin.000010", 4)),
            Some(Ordering::Equal)
        );
        assert_eq!(a.try_cmp(&BinlogFilePos::new("other.000009", 1)), None);
    }

    #[test]
    fn gtid_sets_merge_intervals() {
        let mut set = MysqlGtidSet::default();
        for gno in [1, 2, 3, 5, 4, 9] {
            set.add("3E11FA47-71CA-11E1-9E33-C80AA9429562", gno);
        }
        assert_eq!(
            set.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:9"
        );
        let mut list: MariaGtidList = "0-1-5".parse().unwrap();
        list.advance(MariaGtid {
            domain: 0,
            server: 2,
            sequence: 6,
        });
        list.advance(MariaGtid {
            domain: 3,
            server: 1,
            sequence: 1,
        });
        assert_eq!(list.to_string(), "0-2-6,3-1-1");
    }
}
