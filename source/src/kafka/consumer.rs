//! The consumer thread: librdkafka's consumer polled on a thread of its own, so that a rebalance callback may
//! block until the pipeline has settled the partitions (committed what it read of those revoked, claimed those
//! assigned) before librdkafka goes on.
//!
//! ```text
//!  consumer thread ── Records / Assigned(reply) / Revoked(reply) ──► source task ── events ──► pipeline
//!        ▲                                                              │
//!        └──────── start offsets / "revoked partitions committed" ──────┘
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_config::{KafkaSource, KafkaTopics};
use ferry_core::debezium::{ExactValues, EXACT_HEADER, ORDER_HEADER, UNCHANGED_HEADER};
use ferry_core::TopicPartition;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// One record as fetched.
#[derive(Debug)]
pub struct Fetched {
    pub partition: TopicPartition,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The [`UNCHANGED_HEADER`] Ferry's Kafka sink writes: the columns whose values the source did not send.
    pub unchanged: Option<Vec<String>>,
    /// The [`ORDER_HEADER`]: the change's place in its source transaction.
    pub order: Option<u64>,
    /// The [`EXACT_HEADER`]: values the envelope holds only approximately.
    pub exact: Option<ExactValues>,
}

/// Where a partition no sink has applied starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    At(i64),
    Earliest,
    Latest,
}

/// What the consumer thread tells the source task.
#[derive(Debug)]
pub enum FromConsumer {
    Records(Vec<Fetched>),
    /// Partitions given to this process; the reply is where each starts.
    Assigned(
        Vec<TopicPartition>,
        oneshot::Sender<Vec<(TopicPartition, Start)>>,
    ),
    /// Partitions taken away; the reply says everything read of them is committed (or never will be).
    Revoked(Vec<TopicPartition>, oneshot::Sender<()>),
    Failed(String),
}

struct Context {
    out: mpsc::Sender<FromConsumer>,
    /// Records fetched and not handed over yet. A rebalance hands them over before it says anything, so the
    /// source task never takes a record fetched under an earlier assignment for one of the next.
    pending: std::sync::Mutex<Vec<Fetched>>,
}

impl Context {
    /// Hands the pending records over; false once the source task is gone.
    fn flush(&self) -> bool {
        let chunk = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        chunk.is_empty() || self.out.blocking_send(FromConsumer::Records(chunk)).is_ok()
    }
}

impl ClientContext for Context {}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        self.flush();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let given = partitions(tpl);
                let (reply, answer) = oneshot::channel();
                let starts = if self
                    .out
                    .blocking_send(FromConsumer::Assigned(given.clone(), reply))
                    .is_ok()
                {
                    answer.blocking_recv().ok()
                } else {
                    None
                };
                let Some(starts) = starts else {
                    // The source task is gone: take nothing, so nothing is read from the wrong place.
                    debug!("no start offsets for assigned partitions: the source is stopping");
                    return;
                };
                for (tp, start) in starts {
                    let offset = match start {
                        Start::At(n) => Offset::Offset(n),
                        Start::Earliest => Offset::Beginning,
                        Start::Latest => Offset::End,
                    };
                    let _ = tpl.set_partition_offset(&tp.topic, tp.partition, offset);
                }
                let done = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = done {
                    let _ = self
                        .out
                        .blocking_send(FromConsumer::Failed(format!("assigning partitions: {e}")));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let taken = partitions(tpl);
                let (reply, answer) = oneshot::channel();
                if self
                    .out
                    .blocking_send(FromConsumer::Revoked(taken, reply))
                    .is_ok()
                {
                    let _ = answer.blocking_recv();
                }
                let done = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = done {
                    warn!(error = %e, "unassigning revoked partitions");
                }
            }
            other => {
                warn!(error = ?other, "consumer-group rebalance failed; dropping the assignment");
                let _ = consumer.unassign();
            }
        }
    }
}

/// Records handed over at a time.
const CHUNK: usize = 512;

/// Starts the consumer thread: subscribes to `config`'s topics in its group and hands records and rebalances
/// to `out` until `stop` is set or `out` closes. librdkafka's own settings come first, so `[source.kafka]`
/// cannot turn off what exactly-once needs (no auto-commit: offsets live in the targets).
pub fn spawn(
    config: &KafkaSource,
    out: mpsc::Sender<FromConsumer>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, KafkaError> {
    let mut client = ClientConfig::new();
    for (k, v) in &config.properties {
        client.set(k, v);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", &config.assignment)
        .set(
            "auto.offset.reset",
            if config.from_earliest {
                "earliest"
            } else {
                "latest"
            },
        );
    // Topics created after the group starts (and new ones a pattern matches) are seen within 10 s, not
    // librdkafka's default 5 minutes.
    for (k, v) in [
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
        ("topic.metadata.refresh.interval.ms", "10000"),
        ("enable.partition.eof", "false"),
    ] {
        if !config.properties.iter().any(|(p, _)| p == k) {
            client.set(k, v);
        }
    }
    let consumer: BaseConsumer<Context> = client.create_with_context(Context {
        out: out.clone(),
        pending: std::sync::Mutex::new(Vec::with_capacity(CHUNK)),
    })?;
    let topics: Vec<String> = match &config.topics {
        KafkaTopics::List(list) => list.clone(),
        KafkaTopics::Pattern(p) => vec![p.clone()],
    };
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    info!(group = %config.group_id, topics = ?topics, "subscribed");
    Ok(std::thread::Builder::new()
        .name("ferry-kafka-consumer".into())
        .spawn(move || poll(consumer, out, stop))
        .expect("spawn the Kafka consumer thread"))
}

fn poll(consumer: BaseConsumer<Context>, out: mpsc::Sender<FromConsumer>, stop: Arc<AtomicBool>) {
    let context = consumer.context().clone();
    let pending = || {
        context
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    };
    while !stop.load(Ordering::Relaxed) && !out.is_closed() {
        let wait = if pending() == 0 {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                let fetched = Fetched {
                    partition: TopicPartition::new(m.topic(), m.partition()),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    order: m.headers().and_then(|h| {
                        use rdkafka::message::Headers;
                        let h = h.iter().find(|h| h.key == ORDER_HEADER)?;
                        std::str::from_utf8(h.value?).ok()?.parse().ok()
                    }),
                    unchanged: m.headers().and_then(|h| {
                        use rdkafka::message::Headers;
                        let h = h.iter().find(|h| h.key == UNCHANGED_HEADER)?;
                        serde_json::from_slice::<Vec<String>>(h.value?).ok()
                    }),
                    exact: m.headers().and_then(|h| {
                        use rdkafka::message::Headers;
                        let h = h.iter().find(|h| h.key == EXACT_HEADER)?;
                        serde_json::from_slice::<ExactValues>(h.value?).ok()
                    }),
                };
                let mut chunk = context.pending.lock().unwrap_or_else(|p| p.into_inner());
                chunk.push(fetched);
                if chunk.len() < CHUNK {
                    continue;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                warn!(error = %e, "Kafka consumer error");
                if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                    context.flush();
                    let _ = out.blocking_send(FromConsumer::Failed(e.to_string()));
                    break;
                }
            }
            None => {}
        }
        if !context.flush() {
            break;
        }
    }
    // Leaving the group hands the partitions to the others at once, not after the session timeout.
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(100));
    drop(consumer);
    debug!("Kafka consumer closed");
}

/// The brokers answer, and each listed topic exists (with how many partitions).
pub fn check(config: &KafkaSource) -> Result<Vec<crate::CheckOutcome>, ferry_core::Error> {
    let mut client = ClientConfig::new();
    for (k, v) in &config.properties {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .create()
        .map_err(|e| ferry_core::Error::fatal_from("creating a Kafka client", e))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| {
            ferry_core::Error::fatal_from(
                format!("the Kafka brokers {} did not answer", config.brokers),
                e,
            )
        })?;
    let mut outcomes = vec![crate::CheckOutcome {
        name: "brokers".into(),
        ok: true,
        detail: format!(
            "{} answered ({} brokers)",
            config.brokers,
            metadata.brokers().len()
        ),
        fix: None,
    }];
    if let KafkaTopics::List(list) = &config.topics {
        for topic in list {
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none());
            outcomes.push(crate::CheckOutcome {
                name: format!("topic {topic}"),
                ok: found.is_some(),
                detail: match found {
                    Some(t) => format!("{} partitions", t.partitions().len()),
                    None => "missing".into(),
                },
                fix: found.is_none().then(|| {
                    format!("create it, or start the pipeline that writes it; the consumer waits for it otherwise ({topic})")
                }),
            });
        }
    }
    Ok(outcomes)
}

/// A consumer group as the coordinator describes it, for `ferry status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupStatus {
    pub group: String,
    /// The coordinator's word: `Stable`, `PreparingRebalance`, `Empty`, …
    pub state: String,
    pub members: Vec<MemberStatus>,
}

/// One member of the group and the partitions it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberStatus {
    pub client_id: String,
    pub host: String,
    pub partitions: Vec<String>,
}

/// The group's members and assignment, and the end offset (high watermark) of each of `partitions`.
pub fn group_status(
    config: &KafkaSource,
    partitions: &[TopicPartition],
) -> Result<(GroupStatus, Vec<Option<i64>>), ferry_core::Error> {
    let mut client = ClientConfig::new();
    for (k, v) in &config.properties {
        client.set(k, v);
    }
    // A client of its own, never subscribed: it does not join the group it describes.
    let consumer: BaseConsumer = client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", format!("{}.ferry-status", config.group_id))
        .create()
        .map_err(|e| ferry_core::Error::fatal_from("creating a Kafka client", e))?;
    let timeout = Duration::from_secs(10);
    let groups = consumer
        .fetch_group_list(Some(&config.group_id), timeout)
        .map_err(|e| {
            ferry_core::Error::fatal_from(
                format!("describing consumer group {}", config.group_id),
                e,
            )
        })?;
    let group = groups.groups().first();
    let status = GroupStatus {
        group: config.group_id.clone(),
        state: group.map_or_else(|| "unknown".to_owned(), |g| g.state().to_owned()),
        members: group
            .map(|g| {
                g.members()
                    .iter()
                    .map(|m| MemberStatus {
                        client_id: m.client_id().to_owned(),
                        host: m.client_host().to_owned(),
                        partitions: m.assignment().map(assigned).unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let ends = partitions
        .iter()
        .map(|tp| {
            consumer
                .fetch_watermarks(&tp.topic, tp.partition, timeout)
                .ok()
                .map(|(_, high)| high)
        })
        .collect();
    Ok((status, ends))
}

/// The partitions in a member's assignment (Kafka's ConsumerProtocolAssignment: version i16, then an array of
/// topic string and partition i32 array; integers big-endian, arrays and strings prefixed by an i32 / i16
/// length). Whatever cannot be read is left out.
fn assigned(bytes: &[u8]) -> Vec<String> {
    let mut at = 2usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let mut out = Vec::new();
    let mut read = || -> Option<()> {
        let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let topic = String::from_utf8_lossy(take(len.max(0) as usize)?).into_owned();
            let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
            for _ in 0..count.max(0) {
                let p = i32::from_be_bytes(take(4)?.try_into().ok()?);
                out.push(format!("{topic}:{p}"));
            }
        }
        Some(())
    };
    let _ = read();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn assignments_read_as_the_consumer_protocol_writes_them() {
        let mut bytes = vec![
            0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 5,
        ];
        assert_eq!(super::assigned(&bytes), ["t:3", "t:5"]);
        bytes.truncate(19);
        assert_eq!(super::assigned(&bytes), ["t:3"]);
        assert!(super::assigned(&[]).is_empty());
    }
}
