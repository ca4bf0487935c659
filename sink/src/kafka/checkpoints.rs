//! The checkpoint topic: every Kafka sink's checkpoint, one record per commit under the key `{pipeline}/{sink}`,
//! in partition 0 of a compacted topic, read back with `read_committed`.

use std::time::{Duration, Instant};

use ferry_config::KafkaSink as KafkaConfig;
use ferry_core::{Error, Timestamp};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::{client_config, kafka_error, Deliveries, CHECKPOINT_TOPIC, TIMEOUT};

/// The first stretch of the topic's end searched for a key; each further stretch is 16 times longer.
const FIRST_WINDOW: i64 = 1024;

/// The last committed checkpoint for `key` and when it was written (Unix milliseconds); `None` if there is
/// none, or if its last record is a tombstone (`ferry reset`).
///
/// Every sink commits often, so its newest record is near the end: the topic is read backwards in growing
/// stretches rather than from the beginning, which compaction may have left millions of records long.
pub(super) fn read(cfg: &KafkaConfig, key: &str) -> Result<Option<(String, i64)>, Error> {
    let consumer: BaseConsumer = client_config(cfg)
        .set("group.id", "ferry-checkpoint-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("session.timeout.ms", "6000")
        .create()
        .map_err(|e| Error::fatal_from("creating the Kafka checkpoint reader", e))?;
    let (low, high) = consumer
        .fetch_watermarks(CHECKPOINT_TOPIC, 0, TIMEOUT)
        .map_err(kafka_error("reading the checkpoint topic's offsets"))?;
    let deadline = Instant::now() + TIMEOUT;
    let (mut end, mut window) = (high, FIRST_WINDOW);
    while end > low {
        let start = end.saturating_sub(window).max(low);
        if let Some(found) = scan(&consumer, key, start, end, deadline)? {
            return Ok(found);
        }
        (end, window) = (start, window.saturating_mul(16));
    }
    Ok(None)
}

/// The last record for `key` among offsets `start..end`: `None` if there is none, `Some(None)` for a tombstone.
fn scan(
    consumer: &BaseConsumer,
    key: &str,
    start: i64,
    end: i64,
    deadline: Instant,
) -> Result<Option<Option<(String, i64)>>, Error> {
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(CHECKPOINT_TOPIC, 0, Offset::Offset(start))
        .map_err(kafka_error("assigning the checkpoint topic"))?;
    consumer
        .assign(&assignment)
        .map_err(kafka_error("assigning the checkpoint topic"))?;
    let mut last = None;
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            // Offsets past the stretch were read before (or are newer than the topic's end when it started).
            Some(Ok(m)) if m.offset() >= end => break,
            Some(Ok(m)) => {
                if m.key() == Some(key.as_bytes()) {
                    let at = m.timestamp().to_millis().unwrap_or(0);
                    last = Some(
                        m.payload()
                            .map(|p| (String::from_utf8_lossy(p).into_owned(), at)),
                    );
                }
                if m.offset() + 1 >= end {
                    break;
                }
            }
            // With read_committed, the end is the last stable offset.
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(kafka_error("reading the checkpoint topic")(e)),
            None if Instant::now() > deadline => {
                return Err(Error::transient(
                    "reading the checkpoint topic",
                    "no end of the topic within 30 s",
                ))
            }
            None => {}
        }
    }
    Ok(last)
}

/// A Kafka sink's checkpoint and when it was written (UTC text), for `ferry status` and `ferry check`.
pub async fn stored_checkpoint(
    cfg: &KafkaConfig,
    pipeline: &str,
    sink: &str,
) -> Result<Option<(String, String)>, Error> {
    let (cfg, key) = (cfg.clone(), format!("{pipeline}/{sink}"));
    let stored = tokio::task::spawn_blocking(move || read(&cfg, &key))
        .await
        .map_err(|e| Error::fatal(format!("checkpoint reader failed: {e}")))??;
    Ok(stored.map(|(position, at_ms)| {
        let at = Timestamp::from_unix_micros(at_ms.saturating_mul(1000))
            .display_utc()
            .to_string();
        (position, at)
    }))
}

/// Removes a Kafka sink's checkpoint (`ferry reset`): a tombstone for its key in the compacted topic.
pub async fn delete_checkpoint(cfg: &KafkaConfig, pipeline: &str, sink: &str) -> Result<(), Error> {
    let producer: ThreadedProducer<Deliveries> = client_config(cfg)
        .create_with_context(Deliveries::default())
        .map_err(|e| Error::fatal_from("creating the Kafka producer", e))?;
    let key = format!("{pipeline}/{sink}");
    tokio::task::block_in_place(|| {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(CHECKPOINT_TOPIC)
                    .key(key.as_bytes())
                    .partition(0),
            )
            .map_err(|(e, _)| kafka_error("deleting the checkpoint")(e))?;
        producer
            .flush(TIMEOUT)
            .map_err(kafka_error("deleting the checkpoint"))
    })?;
    producer.context().check("deleting the checkpoint")
}
