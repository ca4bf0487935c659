//! The Kafka source: Debezium-format topics read in a consumer group and applied exactly once.
//!
//! Each record becomes one transaction (`Begin`, its change, `Commit`) whose commit position is this process's
//! whole offset map ([`ferry_core::KafkaOffsets`]), which every SQL sink stores row by row in its checkpoint
//! table with the rows. Offsets are never committed to Kafka: the group's committed offsets play no part.
//!
//! ```text
//!  consumer thread (consumer.rs) ─► this task: decode (debezium.rs), claim, revoke ─► pipeline ─► sinks
//!                                       ▲                                              │
//!                                       └──── acked offsets, claim answers ◄───────────┘
//! ```
//!
//! A partition given in a rebalance is claimed first ([`ferry_core::Event::Claim`]): every sink stamps it with a
//! new token and answers with the offset it holds; reading starts at the lowest, and each sink skips what it
//! holds. A partition taken away is handed over once every sink has committed what was read of it, so its next
//! owner starts exactly there; a process that missed the rebalance fails its next commit on the token.
//! Order: Kafka keeps a partition's order, and Debezium (and Ferry's sink) key records by primary key, so each
//! row's changes apply in order; there is no order across partitions (docs/scale-out.md).

mod avro;
mod consumer;
pub mod debezium;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_config::KafkaSource;
use ferry_core::{
    Change, Claim, Error, Event, KafkaOffsets, Origin, PartitionMark, Position, SchemaRef,
    SourceExit, TableId, Timestamp, TopicPartition, TxContext,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use consumer::{FromConsumer, Start};
use debezium::{Decoded, Decoder};

/// What a Kafka source needs besides its `[source]` table.
#[derive(Debug, Clone)]
pub struct KafkaSourceSettings {
    pub pipeline: String,
    pub config: KafkaSource,
    /// How many sinks answer each claim.
    pub sinks: usize,
}

/// How long a revoked partition waits for the sinks to commit what was read of it before it is handed over
/// anyway (its next owner's claim then fences this process's late commit).
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// How long stopping waits for the consumer to leave its group, then for its thread to end.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Streams the topics' records into `events` until `shutdown`.
pub async fn run(
    settings: &KafkaSourceSettings,
    events: mpsc::Sender<Event>,
    mut acked: watch::Receiver<Option<Position>>,
    mut shutdown: watch::Receiver<bool>,
    stats: &ferry_core::PipelineStats,
) -> Result<SourceExit, Error> {
    let (tx, mut rx) = mpsc::channel(16);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = consumer::spawn(&settings.config, tx, stop.clone()).map_err(|e| {
        Error::fatal_from(
            format!(
                "cannot start a Kafka consumer for {} (check [source] brokers and [source.kafka])",
                settings.config.brokers
            ),
            e,
        )
    })?;
    let mut state = State {
        settings,
        offsets: KafkaOffsets::default(),
        announced: HashMap::new(),
        decoder: Decoder::default(),
        avro: match &settings.config.format {
            ferry_config::KafkaFormat::Json => None,
            ferry_config::KafkaFormat::Avro {
                schema_registry,
                schema_registry_ca,
            } => Some(avro::AvroRecords::new(ferry_registry::Registry::new(
                schema_registry,
                schema_registry_ca.as_deref(),
            )?)),
        },
    };
    // Subscribed: the group gives this process its partitions (or none, as a standby) from here on.
    stats.set_state(ferry_core::PipelineState::Streaming);
    let result = loop {
        let message = tokio::select! {
            m = rx.recv() => m,
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break Ok(SourceExit::Shutdown);
                }
                continue;
            }
        };
        let Some(message) = message else {
            break Err(Error::transient(
                "the Kafka consumer stopped",
                std::io::Error::other("consumer thread ended"),
            ));
        };
        let step = match message {
            FromConsumer::Records(records) => state.records(records, &events).await,
            FromConsumer::Assigned(partitions, reply) => {
                match state.assign(&partitions, &events).await {
                    Ok(starts) => {
                        let _ = reply.send(starts);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            FromConsumer::Revoked(partitions, reply) => {
                state.revoke(&partitions, &mut acked).await;
                let _ = reply.send(());
                Ok(())
            }
            FromConsumer::Failed(why) => Err(Error::transient(
                format!("the Kafka consumer failed: {why}"),
                std::io::Error::other(why),
            )),
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    // Let the thread leave the group: answer what it still asks (nothing more is read or claimed).
    stop.store(true, Ordering::Relaxed);
    drop(events);
    let drain = async {
        while let Some(m) = rx.recv().await {
            if let FromConsumer::Revoked(_, reply) = m {
                let _ = reply.send(());
            }
        }
    };
    if tokio::time::timeout(CLOSE_WAIT, drain).await.is_err() {
        warn!("the Kafka consumer did not leave its group within 5 s");
    }
    // A consumer still closing (a broker that does not answer its LeaveGroup) must not hold the pipeline: what it
    // sends from here on fails at once, and it is left to finish on its own.
    drop(rx);
    let joined = tokio::task::spawn_blocking(move || thread.join());
    if tokio::time::timeout(CLOSE_WAIT, joined).await.is_err() {
        warn!("the Kafka consumer did not close within 5 s; leaving it behind");
    }
    result
}

struct State<'a> {
    settings: &'a KafkaSourceSettings,
    /// The partitions this process holds, each with its claim and the offset the next record must have at
    /// least (records below it were read before, under another assignment; `None` until the first record when no
    /// sink had applied any): also the commit position of the next record.
    offsets: KafkaOffsets,
    /// The schema each table's rows were last announced with.
    announced: HashMap<TableId, SchemaRef>,
    decoder: Decoder,
    /// `format = "avro"`: records become JsonConverter's JSON before they are decoded.
    avro: Option<avro::AvroRecords>,
}

impl State<'_> {
    async fn records(
        &mut self,
        records: Vec<consumer::Fetched>,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), Error> {
        for r in records {
            let Some(&held) = self.offsets.get(&r.partition) else {
                // Read before the partition was taken away: its next owner reads it.
                continue;
            };
            if held.next.is_some_and(|n| r.offset < n) {
                continue;
            }
            let claim = held.claim;
            let refused = |e: debezium::DecodeError| {
                Error::fatal(format!(
                    "Kafka record {}@{} is not a change Ferry can apply: {e}",
                    r.partition, r.offset
                ))
            };
            let (key, value) = match &mut self.avro {
                None => (r.key, r.value),
                Some(avro) => {
                    let key = avro.connect_json_opt(r.key).await?.map_err(refused)?;
                    let value = avro.connect_json_opt(r.value).await?.map_err(refused)?;
                    (key, value)
                }
            };
            let decoded = self
                .decoder
                .decode(
                    key.as_deref(),
                    value.as_deref(),
                    &debezium::Hints {
                        unchanged: r.unchanged.as_deref(),
                        order: r.order,
                        exact: r.exact.as_ref(),
                    },
                )
                .map_err(refused)?;
            let (tx_info, change) = match decoded {
                Decoded::Row { table, op, tx } => {
                    if !self
                        .announced
                        .get(&table.id)
                        .is_some_and(|s| Arc::ptr_eq(s, &table))
                    {
                        self.announced.insert(table.id.clone(), table.clone());
                        // Announced inside the transaction, as a source announces a table's new schema.
                        (tx, Some((Some(table.clone()), Change::Row { table, op })))
                    } else {
                        (tx, Some((None, Change::Row { table, op })))
                    }
                }
                Decoded::Truncate { table, tx } => (
                    tx,
                    Some((
                        None,
                        Change::Truncate {
                            tables: vec![table],
                            snapshot: false,
                        },
                    )),
                ),
                Decoded::Tombstone => (Default::default(), None),
            };
            let commit_time = tx_info.commit_time;
            let begin = TxContext {
                commit_at: Position::Kafka(KafkaOffsets::record(r.partition.clone(), r.offset)),
                commit_time,
                xid: tx_info.xid,
                origin: Origin {
                    name: None,
                    server_id: tx_info.server_id,
                    gtid: tx_info.gtid,
                },
                continues_snapshot: false,
                in_progress: false,
            };
            self.offsets.set(
                r.partition.clone(),
                PartitionMark {
                    next: Some(r.offset + 1),
                    claim,
                },
            );
            send(events, Event::Begin(Arc::new(begin))).await?;
            if let Some((schema, change)) = change {
                if let Some(schema) = schema {
                    send(events, Event::Schema(schema)).await?;
                }
                send(events, Event::Change(change)).await?;
            }
            send(
                events,
                Event::Commit {
                    position: Position::Kafka(self.offsets.clone()),
                    commit_time: commit_time.unwrap_or_else(Timestamp::now),
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Claims `partitions` in every sink and returns where each starts.
    async fn assign(
        &mut self,
        partitions: &[TopicPartition],
        events: &mpsc::Sender<Event>,
    ) -> Result<Vec<(TopicPartition, Start)>, Error> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let token = new_token();
        let (answers, mut answered) = mpsc::unbounded_channel();
        let claim = Claim {
            partitions: partitions.to_vec(),
            token,
            answers,
        };
        send(events, Event::Claim(Arc::new(claim))).await?;
        // Per partition: the lowest offset a sink holds, and whether some sink holds none (one added since).
        let mut lowest: BTreeMap<TopicPartition, (Option<i64>, bool)> = BTreeMap::new();
        for _ in 0..self.settings.sinks {
            let (sink, held) = answered.recv().await.ok_or_else(|| {
                Error::fatal("a sink stopped before it claimed the assigned Kafka partitions")
            })?;
            let held = held.map_err(|e| {
                Error::fatal(format!(
                    "sink #{sink} could not claim Kafka partitions: {e}"
                ))
            })?;
            for tp in partitions {
                let next = held.get(tp).and_then(|m| m.next);
                let (low, none) = lowest.entry(tp.clone()).or_insert((None, false));
                match next {
                    Some(n) => *low = Some(low.map_or(n, |l| l.min(n))),
                    None => *none = true,
                }
            }
        }
        let mut starts = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let (low, none) = lowest.get(tp).copied().unwrap_or((None, true));
            // A sink that holds nothing of the partition starts at `start`: the earliest record (the others skip
            // what they hold), or, with "latest", where the others are, so that none of them skips anything.
            let start = match (low, none) {
                (None, _) if self.settings.config.from_earliest => Start::Earliest,
                (None, _) => Start::Latest,
                (Some(_), true) if self.settings.config.from_earliest => Start::Earliest,
                (Some(n), _) => Start::At(n),
            };
            let next = match start {
                Start::At(n) => Some(n),
                _ => None,
            };
            self.offsets
                .set(tp.clone(), PartitionMark { next, claim: token });
            starts.push((tp.clone(), start));
        }
        info!(pipeline = %self.settings.pipeline, partitions = %list(partitions), claim = format!("{token:x}"), "assigned Kafka partitions");
        Ok(starts)
    }

    /// Waits until every sink has committed what was read of `partitions`, then lets them go.
    async fn revoke(
        &mut self,
        partitions: &[TopicPartition],
        acked: &mut watch::Receiver<Option<Position>>,
    ) {
        let wanted: Vec<(TopicPartition, i64)> = partitions
            .iter()
            .filter_map(|tp| Some((tp.clone(), self.offsets.get(tp)?.next?)))
            .collect();
        let settled = |acked: &Option<Position>| match acked {
            Some(Position::Kafka(at)) => wanted
                .iter()
                .all(|(tp, next)| at.get(tp).and_then(|m| m.next).is_some_and(|n| n >= *next)),
            _ => wanted.is_empty(),
        };
        let waited = tokio::time::timeout(REVOKE_WAIT, acked.wait_for(settled)).await;
        if !matches!(waited, Ok(Ok(_))) {
            warn!(partitions = %list(partitions), "revoked Kafka partitions handed over before the sinks committed all that was read of them; their next owner fences this process's late commits");
        }
        for tp in partitions {
            self.offsets.remove(tp);
        }
        info!(pipeline = %self.settings.pipeline, partitions = %list(partitions), "revoked Kafka partitions");
    }
}

async fn send(events: &mpsc::Sender<Event>, event: Event) -> Result<(), Error> {
    events
        .send(event)
        .await
        .map_err(|_| Error::fatal("the pipeline stopped taking events"))
}

fn list(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A claim token no other claim is likely to share: the process's randomly keyed SipHash of the time, the
/// process id and a counter.
fn new_token() -> u64 {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::time::SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    COUNT.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    h.finish().max(1)
}

/// `ferry check`: the brokers answer and every listed topic exists.
pub async fn check_prerequisites(config: &KafkaSource) -> Result<Vec<crate::CheckOutcome>, Error> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || consumer::check(&config))
        .await
        .map_err(|e| Error::fatal(format!("checking the Kafka source: {e}")))?
}

pub use consumer::{GroupStatus, MemberStatus};

/// `ferry status`: the group's members and assignment, and each of `partitions`' end offset.
pub async fn group_status(
    config: &KafkaSource,
    partitions: Vec<TopicPartition>,
) -> Result<(GroupStatus, Vec<Option<i64>>), Error> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || consumer::group_status(&config, &partitions))
        .await
        .map_err(|e| Error::fatal(format!("describing the Kafka group: {e}")))?
}
