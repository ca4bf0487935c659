//! The dead-letter topic of Kafka sinks: rows set aside under `on_error = "dead_letter"`, one record per letter
//! under the key `{pipeline}/{sink}/{id}` (the letter as JSON, the same fields `ferry_dead_letters` holds in SQL
//! targets), written in the Kafka transaction of its batch. A letter replayed or discarded gets a tombstone, so
//! the live letters are the last record of each key; the topic is compacted and has one partition, so it reads
//! back in the order the letters were written. Kafka Connect's dead-letter queue is the peer: a topic beside the
//! data, with the cause in each record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_config::KafkaSink as KafkaConfig;
use ferry_core::dead_letter::StoredDeadLetter;
use ferry_core::Error;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{client_config, kafka_error, TIMEOUT};

/// The key of letter `id` of a sink.
pub(super) fn key(pipeline: &str, sink: &str, id: i64) -> String {
    format!("{pipeline}/{sink}/{id}")
}

/// The live letters of `pipeline`'s sink `sink` in `cfg`'s dead-letter topic, oldest first (read_committed, from
/// the beginning; a missing topic holds none), and the highest letter id the topic has seen, live or not.
pub(crate) fn read(
    cfg: &KafkaConfig,
    pipeline: &str,
    sink: &str,
) -> Result<(Vec<StoredDeadLetter>, i64), Error> {
    let topic = &cfg.dead_letter_topic;
    let consumer: BaseConsumer = client_config(cfg)
        .set("group.id", "ferry-dead-letter-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| Error::fatal_from("creating the Kafka dead-letter reader", e))?;
    let (low, high) = match consumer.fetch_watermarks(topic, 0, TIMEOUT) {
        Ok(marks) => marks,
        Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition))
        | Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
            return Ok((Vec::new(), 0))
        }
        Err(e) => return Err(kafka_error(format!("reading the offsets of {topic}"))(e)),
    };
    let prefix = format!("{pipeline}/{sink}/");
    let mut live: BTreeMap<i64, StoredDeadLetter> = BTreeMap::new();
    let mut highest = 0;
    if high <= low {
        return Ok((Vec::new(), 0));
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(low))
        .map_err(kafka_error(format!("assigning {topic}")))?;
    consumer
        .assign(&assignment)
        .map_err(kafka_error(format!("assigning {topic}")))?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let id = m
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| k.strip_prefix(&prefix))
                    .and_then(|id| id.parse::<i64>().ok());
                if let Some(id) = id {
                    highest = highest.max(id);
                    match m.payload() {
                        None => {
                            live.remove(&id);
                        }
                        Some(p) => {
                            let letter: StoredDeadLetter =
                                serde_json::from_slice(p).map_err(|e| {
                                    Error::fatal_from(
                                        format!(
                                            "dead letter {id} in {topic} is not readable (written by another \
                                             Ferry version?)"
                                        ),
                                        e,
                                    )
                                })?;
                            live.insert(id, letter);
                        }
                    }
                }
                if m.offset() + 1 >= high {
                    break;
                }
            }
            // With read_committed, the end is the last stable offset.
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(kafka_error(format!("reading {topic}"))(e)),
            None if Instant::now() > deadline => {
                return Err(Error::transient(
                    format!("reading {topic}"),
                    "no end of the topic within 30 s",
                ))
            }
            None => {}
        }
    }
    Ok((live.into_values().collect(), highest))
}
