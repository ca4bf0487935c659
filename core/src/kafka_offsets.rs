//! A Kafka source's position: one offset per topic partition, and the claim that owns each partition.
//!
//! Kafka orders records only within a partition, so a Kafka source's position is not one point but a map: for
//! each partition this process applies, the offset of the next record to apply (Kafka's committed-offset
//! convention: last applied + 1). Consumer processes of one group share a topic's partitions, and each sink keeps
//! one checkpoint row per partition (`ferry_sink::checkpoint`), so processes never write each other's rows.
//!
//! A process that takes a partition stamps it with a new claim (a random 64-bit token) in every sink, in a
//! target transaction of its own ([`crate::Sink::claim`]). Every later commit of the partition's offset is a
//! compare-and-set on that token: a process that lost the partition in a rebalance without hearing of it (a
//! "zombie", paused past the session timeout) finds another token there and its commit fails whole, rows and
//! offsets together. That is the fencing Kafka's own transactional consumers get from the group generation.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::position::ParsePositionError;

/// A topic partition. Kafka topic names are `[a-zA-Z0-9._-]`, so `topic:partition` is unambiguous. The name is
/// shared: every record's commit position holds each partition's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.topic, self.partition)
    }
}

/// Where one partition stands: the next offset to apply (`None`: nothing applied yet) and the claim that owns
/// it (0: none, as in a transaction's `commit_at`, which names a record, not an owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionMark {
    pub next: Option<i64>,
    pub claim: u64,
}

/// Offsets per partition, shared (`Arc`): each record's commit position is the whole map, and most records
/// change one entry of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KafkaOffsets(Arc<BTreeMap<TopicPartition, PartitionMark>>);

impl KafkaOffsets {
    /// The position of one record: `offset` in `tp` (a transaction's `commit_at`).
    pub fn record(tp: TopicPartition, offset: i64) -> KafkaOffsets {
        KafkaOffsets(Arc::new(BTreeMap::from([(
            tp,
            PartitionMark {
                next: Some(offset),
                claim: 0,
            },
        )])))
    }

    pub fn from_map(map: BTreeMap<TopicPartition, PartitionMark>) -> KafkaOffsets {
        KafkaOffsets(Arc::new(map))
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<&PartitionMark> {
        self.0.get(tp)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &PartitionMark)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sets one partition's mark (copying the map when it is shared).
    pub fn set(&mut self, tp: TopicPartition, mark: PartitionMark) {
        Arc::make_mut(&mut self.0).insert(tp, mark);
    }

    pub fn remove(&mut self, tp: &TopicPartition) {
        if self.0.contains_key(tp) {
            Arc::make_mut(&mut self.0).remove(tp);
        }
    }

    /// Whether a checkpoint of these offsets holds the record `commit_at` names (a one-entry map from
    /// [`KafkaOffsets::record`]): its partition's next offset is past it.
    pub fn includes(&self, commit_at: &KafkaOffsets) -> bool {
        commit_at.iter().all(|(tp, record)| {
            matches!((self.get(tp).and_then(|m| m.next), record.next), (Some(next), Some(at)) if at < next)
        })
    }

    /// Per partition, the lower of the two, over the partitions both hold (where only one holds a partition,
    /// the other has made nothing of it durable).
    pub fn meet(&self, other: &KafkaOffsets) -> KafkaOffsets {
        let map = self
            .iter()
            .filter_map(|(tp, a)| {
                let b = other.get(tp)?;
                let lower = match (a.next, b.next) {
                    (Some(x), Some(y)) if y < x => b,
                    (Some(_), None) => b,
                    _ => a,
                };
                Some((tp.clone(), *lower))
            })
            .collect();
        KafkaOffsets::from_map(map)
    }

    /// These offsets, with each partition's offset raised to `floor`'s where that is further (a sink whose
    /// checkpoint for a partition is ahead of where the source resumed it: it must not move back). The claims
    /// stay these.
    pub fn not_below(&self, floor: &KafkaOffsets) -> KafkaOffsets {
        let mut out = self.clone();
        for (tp, mark) in self.iter() {
            // Nothing read yet of a partition the sink holds up to `f`: still `f`.
            if let (Some(f), n) = (floor.get(tp).and_then(|m| m.next), mark.next) {
                if n.is_none_or(|n| f > n) {
                    out.set(
                        tp.clone(),
                        PartitionMark {
                            next: Some(f),
                            claim: mark.claim,
                        },
                    );
                }
            }
        }
        out
    }

    /// These offsets with `partitions` replaced by what `claimed` holds of them (absent there: nothing applied).
    pub fn with_claimed(
        &self,
        partitions: &[TopicPartition],
        claimed: &KafkaOffsets,
    ) -> KafkaOffsets {
        let mut out = self.clone();
        for tp in partitions {
            match claimed.get(tp) {
                Some(mark) => out.set(tp.clone(), *mark),
                None => out.remove(tp),
            }
        }
        out
    }

    /// Orders two maps when one is at or below the other in every partition and they hold the same partitions.
    pub fn try_cmp(&self, other: &KafkaOffsets) -> Option<std::cmp::Ordering> {
        use std::cmp::Ordering;
        if self.len() != other.len() {
            return None;
        }
        let mut order = Ordering::Equal;
        for (tp, a) in self.iter() {
            let b = other.get(tp)?;
            let step = a.next.cmp(&b.next);
            order = match (order, step) {
                (o, Ordering::Equal) => o,
                (Ordering::Equal, s) => s,
                (o, s) if o == s => o,
                _ => return None,
            };
        }
        Some(order)
    }
}

/// Partitions a consumer-group rebalance gave this process ([`crate::Event::Claim`]). Every sink's runner,
/// once it has committed what came before, claims them ([`crate::Sink::claim`]) and answers with the offsets
/// the sink holds for them; the source starts each partition at the lowest answer, and each sink skips what it
/// holds already.
#[derive(Debug)]
pub struct Claim {
    pub partitions: Vec<TopicPartition>,
    /// The token each partition is stamped with.
    pub token: u64,
    /// Where each sink's runner answers: its index and what its sink holds of `partitions` (or why it could not
    /// claim them).
    pub answers: tokio::sync::mpsc::UnboundedSender<(usize, Result<KafkaOffsets, String>)>,
}

impl PartialEq for Claim {
    fn eq(&self, other: &Claim) -> bool {
        self.partitions == other.partitions && self.token == other.token
    }
}

// Stored (a dead letter's position, status JSON) as the text form.
impl serde::Serialize for KafkaOffsets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KafkaOffsets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for KafkaOffsets {
    /// `topic:0@120#9f3a…,topic:1@-#…` (`-`: nothing applied yet; the claim in hex).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (tp, mark)) in self.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{tp}@")?;
            match mark.next {
                Some(next) => write!(f, "{next}")?,
                None => f.write_str("-")?,
            }
            write!(f, "#{:x}", mark.claim)?;
        }
        Ok(())
    }
}

impl FromStr for KafkaOffsets {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError::new(s, "Kafka offsets such as kafka:orders:0@120#1f");
        let mut map = BTreeMap::new();
        for entry in s.split(',').filter(|e| !e.is_empty()) {
            let (tp, mark) = entry.rsplit_once('@').ok_or_else(err)?;
            let (topic, partition) = tp.rsplit_once(':').ok_or_else(err)?;
            let (next, claim) = mark.split_once('#').ok_or_else(err)?;
            let next = match next {
                "-" => None,
                n => Some(n.parse::<i64>().map_err(|_| err())?),
            };
            let claim = u64::from_str_radix(claim, 16).map_err(|_| err())?;
            if topic.is_empty() {
                return Err(err());
            }
            map.insert(
                TopicPartition::new(topic, partition.parse().map_err(|_| err())?),
                PartitionMark { next, claim },
            );
        }
        Ok(KafkaOffsets::from_map(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(s: &str) -> KafkaOffsets {
        s.parse().unwrap()
    }

    #[test]
    fn offsets_round_trip_and_refuse_nonsense() {
        let o = offsets("shop.orders:0@120#1f,shop.orders:1@-#2");
        assert_eq!(o.to_string(), "shop.orders:0@120#1f,shop.orders:1@-#2");
        assert_eq!(o.to_string().parse::<KafkaOffsets>().unwrap(), o);
        for bad in ["t:0@x#1", "t@1#1", ":0@1#1", "t:0@1", "t:x@1#1", "t:0@1#zz"] {
            assert!(bad.parse::<KafkaOffsets>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_checkpoint_includes_the_records_before_each_partitions_next_offset() {
        let cp = offsets("t:0@10#1,t:1@-#1");
        let tp = |p| TopicPartition::new("t", p);
        assert!(cp.includes(&KafkaOffsets::record(tp(0), 9)));
        assert!(!cp.includes(&KafkaOffsets::record(tp(0), 10)));
        assert!(!cp.includes(&KafkaOffsets::record(tp(1), 0)));
        assert!(!cp.includes(&KafkaOffsets::record(tp(2), 0)));
    }

    #[test]
    fn meet_keeps_the_lower_offset_of_partitions_both_hold() {
        let a = offsets("t:0@10#1,t:1@5#1,t:2@7#1");
        let b = offsets("t:0@8#2,t:1@9#2");
        assert_eq!(a.meet(&b), offsets("t:0@8#2,t:1@5#1"));
        assert_eq!(
            offsets("t:0@-#1").meet(&offsets("t:0@3#1")),
            offsets("t:0@-#1")
        );
    }

    #[test]
    fn a_checkpoint_ahead_is_not_moved_back_and_claims_replace_entries() {
        let committing = offsets("t:0@10#5,t:1@4#5");
        let floor = offsets("t:0@12#3,t:1@2#3,t:2@9#3");
        assert_eq!(committing.not_below(&floor), offsets("t:0@12#5,t:1@4#5"));
        // A partition claimed and not read yet keeps what the sink holds.
        assert_eq!(offsets("t:2@-#5").not_below(&floor), offsets("t:2@9#5"));
        let claimed = offsets("t:1@7#6");
        let parts = [TopicPartition::new("t", 1), TopicPartition::new("t", 2)];
        assert_eq!(
            floor.with_claimed(&parts, &claimed),
            offsets("t:0@12#3,t:1@7#6")
        );
    }

    #[test]
    fn maps_order_only_when_every_partition_agrees() {
        use std::cmp::Ordering;
        let a = offsets("t:0@1#1,t:1@1#1");
        assert_eq!(a.try_cmp(&offsets("t:0@2#1,t:1@1#1")), Some(Ordering::Less));
        assert_eq!(a.try_cmp(&offsets("t:0@2#1,t:1@0#1")), None);
        assert_eq!(a.try_cmp(&offsets("t:0@1#1")), None);
        assert_eq!(a.try_cmp(&a), Some(Ordering::Equal));
    }
}
