//! The Kafka sink: Debezium-compatible records, exactly once for `read_committed` consumers.
//!
//! With `delivery = "exactly_once"` each batch is one Kafka transaction (`transactional.id =
//! ferry.{pipeline}.{sink}`) holding its records and a checkpoint record in the compacted `ferry_checkpoints`
//! topic (key `{pipeline}/{sink}`). At start the last committed checkpoint is read back with `read_committed`, and
//! `init_transactions` fences any older instance with the same id, aborting its open transaction. With
//! `at_least_once`, records and then the checkpoint are produced without transactions (idempotent producer):
//! after a crash, records since the last checkpoint are produced again.

mod avro;
mod checkpoints;
pub(crate) mod dead_letters;
mod envelope;
use ferry_core::debezium::{ExactValues, EXACT_HEADER, ORDER_HEADER, UNCHANGED_HEADER};
use ferry_registry as registry;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apache_avro::Schema;
use ferry_config::{KafkaFormat, KafkaSink as KafkaConfig};
use std::sync::Arc;

use ferry_core::{
    Change, Dialect, Error, Event, Position, RowOp, SchemaRef, Sink, TableId, TableSchema,
    Timestamp, TxContext,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tracing::{info, warn};

pub use checkpoints::{delete_checkpoint, stored_checkpoint};
pub use envelope::SourceInfo;

/// The compacted topic holding every Kafka sink's checkpoint.
pub const CHECKPOINT_TOPIC: &str = "ferry_checkpoints";

const TIMEOUT: Duration = Duration::from_secs(30);

/// Remembers the first failed delivery, so a flush or commit can report it.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl Deliveries {
    /// The first failed delivery since the last check, as an error.
    fn check(&self, what: &str) -> Result<(), Error> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take();
        match failed {
            Some(failed) => Err(Error::transient(what, failed)),
            None => Ok(()),
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

fn kafka_error(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
    let what = what.into();
    move |e| {
        let fatal = matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            )
        );
        if e.to_string().contains("Message size too large") {
            return Error::fatal_from(
                format!("{what}: a record is larger than the broker or topic accepts; raise max_message_bytes in the sink (sets max.message.bytes on topics Ferry creates) or the topic's max.message.bytes and the broker's message.max.bytes"),
                e,
            );
        }
        if fatal {
            Error::fatal_from(
                format!("{what}: another Ferry with the same transactional.id took over, or access is denied"),
                e,
            )
        } else {
            Error::transient(what, e)
        }
    }
}

/// A record larger than the producer accepts: a row error (code `record_too_large`).
fn too_large(topic: &str, max: usize) -> Error {
    Error::row(
        format!(
            "a record for {topic} is larger than max_message_bytes ({max}); raise max_message_bytes in the sink \
             (and the topic's max.message.bytes and the broker's message.max.bytes) to publish it"
        ),
        "record_too_large",
        std::io::Error::other("record too large"),
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    with_settings(ClientConfig::new(), cfg)
}

/// `c` with the sink's brokers and `[sink.kafka]` properties over it.
fn with_settings(mut c: ClientConfig, cfg: &KafkaConfig) -> ClientConfig {
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// The producer's settings: Ferry's defaults, then `[sink.kafka]` over them, then what delivery depends on.
fn producer_config(name: &str, pipeline: &str, cfg: &KafkaConfig) -> ClientConfig {
    let mut defaults = ClientConfig::new();
    defaults
        // Java clients' default: the same key lands on the same partition as with Debezium.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        // librdkafka's 60 s would abort (and so retry forever) any source transaction that takes longer to
        // stream; 15 minutes is the brokers' default transaction.max.timeout.ms.
        .set("transaction.timeout.ms", "900000");
    let mut producer = with_settings(defaults, cfg);
    producer
        .set("enable.idempotence", "true")
        .set("message.max.bytes", cfg.max_message_bytes.to_string());
    if cfg.exactly_once {
        producer.set("transactional.id", format!("ferry.{pipeline}.{name}"));
    }
    producer
}

/// Writes into Kafka topics.
pub struct KafkaSink {
    name: String,
    pipeline: String,
    cfg: KafkaConfig,
    info: SourceInfo,
    producer: ThreadedProducer<Deliveries>,
    admin: AdminClient<DefaultClientContext>,
    topics: HashSet<String>,
    in_transaction: bool,
    /// Avro: the registry, and per topic and schema version the key and value schemas with their ids.
    registry: Option<registry::Registry>,
    avro_schemas: HashMap<(String, u64), Arc<AvroSchemas>>,
    /// JSON: what the records of each topic and schema version share.
    json_tables: HashMap<(String, u64), Arc<envelope::JsonTable>>,
    /// The source transaction in progress, for records whose `Begin` was in an earlier batch.
    open_tx: Option<Arc<TxContext>>,
    /// Row records produced so far in the open source transaction ([`ORDER_HEADER`]).
    change_order: u64,
    /// The latest schema of each table seen, for truncates (which name tables only).
    known: HashMap<TableId, SchemaRef>,
    /// With `transaction_topic`: the source transaction in progress and its event counts.
    transaction: Option<TransactionCounts>,
    /// Under a savepoint (row isolation, `on_error`): the records produced since, held back until it is released
    /// (sent) or rolled back (dropped), with the source-transaction state to go back to.
    held: std::sync::Mutex<Option<Vec<HeldRecord>>>,
    saved: Option<(Option<Arc<TxContext>>, Option<TransactionCounts>)>,
    /// The live dead letters of this sink (id → table), and the next letter's id.
    letters: std::collections::BTreeMap<i64, TableId>,
    next_letter: i64,
}

/// A record produced under a savepoint, not sent yet.
struct HeldRecord {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
}

/// Debezium's transaction metadata for one source transaction: its id (the position where it starts) and how
/// many events it had, per table.
#[derive(Clone)]
struct TransactionCounts {
    id: String,
    total: u64,
    per_table: std::collections::BTreeMap<String, u64>,
}

impl TransactionCounts {
    /// Counts one more event of `table`; the record's `transaction` block.
    fn count(&mut self, table: &TableId) -> serde_json::Value {
        self.total += 1;
        let n = self.per_table.entry(table.to_string()).or_insert(0);
        *n += 1;
        serde_json::json!({ "id": self.id, "total_order": self.total, "data_collection_order": *n })
    }
}

/// What a batch needs to write one table's rows, looked up once per batch.
struct Prepared<'t> {
    table: &'t SchemaRef,
    topic: String,
    encoding: Encoding,
}

enum Encoding {
    Json(Arc<envelope::JsonTable>),
    Avro(Arc<AvroSchemas>),
}

/// Encoding buffers, reused for every record of a batch.
#[derive(Default)]
struct Buffers {
    json_key: String,
    json_value: String,
    avro_key: Option<Vec<u8>>,
    avro_value: Vec<u8>,
}

struct AvroSchemas {
    key: Option<(Schema, i32)>,
    value: (Schema, i32),
}

/// One record a row change becomes: op code, before, after, whether a snapshot read.
type Record<'a> = (
    &'static str,
    Option<&'a ferry_core::Row>,
    Option<&'a ferry_core::Row>,
    bool,
);

impl KafkaSink {
    /// Connects, and with exactly-once initialises the transactional producer (fencing older instances).
    pub async fn connect(
        name: &str,
        pipeline: &str,
        cfg: &KafkaConfig,
        info: SourceInfo,
    ) -> Result<Self, Error> {
        let producer_config = producer_config(name, pipeline, cfg);
        let producer: ThreadedProducer<Deliveries> = producer_config
            .create_with_context(Deliveries::default())
            .map_err(|e| Error::fatal_from("creating the Kafka producer", e))?;
        let admin: AdminClient<DefaultClientContext> = client_config(cfg)
            .create()
            .map_err(|e| Error::fatal_from("creating the Kafka admin client", e))?;
        let mut sink = KafkaSink {
            name: name.to_owned(),
            pipeline: pipeline.to_owned(),
            cfg: cfg.clone(),
            info,
            producer,
            admin,
            topics: HashSet::new(),
            in_transaction: false,
            registry: match &cfg.format {
                KafkaFormat::Avro {
                    schema_registry,
                    schema_registry_ca,
                } => Some(registry::Registry::new(
                    schema_registry,
                    schema_registry_ca.as_deref(),
                )?),
                KafkaFormat::Json => None,
            },
            avro_schemas: HashMap::new(),
            json_tables: HashMap::new(),
            open_tx: None,
            change_order: 0,
            known: HashMap::new(),
            transaction: None,
            held: std::sync::Mutex::new(None),
            saved: None,
            letters: Default::default(),
            next_letter: 1,
        };
        sink.ensure_topic(CHECKPOINT_TOPIC, 1, "compact").await?;
        if cfg.exactly_once {
            let producer = &sink.producer;
            tokio::task::block_in_place(|| producer.init_transactions(TIMEOUT))
                .map_err(kafka_error("initialising Kafka transactions"))?;
        }
        Ok(sink)
    }

    fn checkpoint_key(&self) -> String {
        format!("{}/{}", self.pipeline, self.name)
    }

    async fn ensure_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        cleanup: &str,
    ) -> Result<(), Error> {
        if self.topics.contains(topic) {
            return Ok(());
        }
        let max_bytes = self.cfg.max_message_bytes.to_string();
        let mut new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(self.cfg.replication_factor),
        )
        .set("cleanup.policy", cleanup)
        .set("max.message.bytes", &max_bytes);
        if topic == CHECKPOINT_TOPIC {
            // Kafka compacts only closed segments (a week by default): roll hourly, so superseded checkpoints go.
            new = new.set("segment.ms", "3600000");
        }
        let results = self
            .admin
            .create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
            )
            .await
            .map_err(kafka_error(format!("creating topic {topic}")))?;
        for r in results {
            match r {
                Ok(_) => info!(topic, partitions, cleanup, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(Error::transient(
                        format!("creating topic {t}"),
                        KafkaError::AdminOp(code),
                    ))
                }
            }
        }
        self.topics.insert(topic.to_owned());
        Ok(())
    }

    /// The topic of `table`'s rows, created if missing, and how they are encoded: the Avro schemas registered
    /// (once per table version), or the JSON schema blocks built (once per table version, with `schemas`).
    async fn prepare<'t>(&mut self, table: &'t SchemaRef) -> Result<Prepared<'t>, Error> {
        let topic = self.topic_for(&table.id);
        let (partitions, cleanup) = (self.cfg.partitions, self.cfg.cleanup_policy.clone());
        self.ensure_topic(&topic, partitions, &cleanup).await?;
        let cache = (topic.clone(), table.version);
        let decimals = self.cfg.decimal_handling;
        let encoding = if self.registry.is_some() {
            let schemas = match self.avro_schemas.get(&cache) {
                Some(schemas) => schemas.clone(),
                None => {
                    let schemas = Arc::new(self.register_avro(table, &topic).await?);
                    self.avro_schemas.insert(cache, schemas.clone());
                    schemas
                }
            };
            Encoding::Avro(schemas)
        } else {
            let schemas = self.cfg.schemas;
            let layout = self.json_tables.entry(cache).or_insert_with(|| {
                Arc::new(envelope::JsonTable::new(
                    table, &self.info, &topic, schemas, decimals,
                ))
            });
            Encoding::Json(layout.clone())
        };
        Ok(Prepared {
            table,
            topic,
            encoding,
        })
    }

    /// Registers the Avro key and value schemas of `table`'s topic.
    async fn register_avro(
        &mut self,
        table: &TableSchema,
        topic: &str,
    ) -> Result<AvroSchemas, Error> {
        let registry = self
            .registry
            .as_mut()
            .ok_or_else(|| Error::fatal("Avro records need a schema registry"))?;
        let decimals = self.cfg.decimal_handling;
        let parse = |json: &serde_json::Value| {
            Schema::parse(json).map_err(|e| Error::fatal(format!("Avro schema for {topic}: {e}")))
        };
        let key = match avro::key_schema(table, topic, decimals) {
            Some(json) => {
                let id = registry
                    .id(&format!("{topic}-key"), &json.to_string())
                    .await?;
                Some((parse(&json)?, id))
            }
            None => None,
        };
        let json = avro::value_schema(table, &self.info, topic, decimals);
        let id = registry
            .id(&format!("{topic}-value"), &json.to_string())
            .await?;
        let value = (parse(&json)?, id);
        Ok(AvroSchemas { key, value })
    }

    /// With `transaction_topic`: a BEGIN record at each source transaction's start and an END record with its
    /// event counts at its commit, in `{prefix}.transaction` (Debezium's format), inside the same Kafka transaction.
    async fn transaction_marker(&mut self, event: &Event, ts_ms: i64) -> Result<(), Error> {
        let topic = format!("{}.transaction", self.cfg.topic_prefix);
        let record = match event {
            Event::Begin(tx) => {
                // Debezium's PostgreSQL form, `txId:lsn`, when the source has an xid; the GTID for binlog sources.
                let id = match (tx.xid, tx.commit_at.as_lsn(), &tx.origin.gtid) {
                    (Some(xid), Some(lsn), _) => format!("{xid}:{}", lsn.0),
                    (_, _, Some(gtid)) => gtid.clone(),
                    _ => tx.commit_at.to_string(),
                };
                self.transaction = Some(TransactionCounts {
                    id: id.clone(),
                    total: 0,
                    per_table: Default::default(),
                });
                serde_json::json!({ "status": "BEGIN", "id": id, "event_count": null, "data_collections": null, "ts_ms": ts_ms })
            }
            Event::Commit { .. } => {
                let Some(t) = self.transaction.take() else {
                    return Ok(());
                };
                let collections: Vec<serde_json::Value> = t
                    .per_table
                    .iter()
                    .map(|(table, n)| serde_json::json!({ "data_collection": table, "event_count": n }))
                    .collect();
                serde_json::json!({ "status": "END", "id": t.id, "event_count": t.total, "data_collections": collections, "ts_ms": ts_ms })
            }
            _ => return Ok(()),
        };
        let (partitions, cleanup) = (self.cfg.partitions, self.cfg.cleanup_policy.clone());
        self.ensure_topic(&topic, partitions, &cleanup).await?;
        let key = serde_json::json!({ "id": record["id"] }).to_string();
        self.produce(
            &topic,
            Some(key.as_bytes()),
            Some(record.to_string().as_bytes()),
            &[],
        )
        .await
    }

    /// Encodes one change as its record key (`None` without a primary key, or without a row) and value.
    fn encode<'b>(
        &self,
        prepared: &Prepared<'_>,
        change: &envelope::Change<'_>,
        now: i64,
        buffers: &'b mut Buffers,
    ) -> Result<(Option<&'b [u8]>, &'b [u8]), Error> {
        let decimals = self.cfg.decimal_handling;
        let (table, topic) = (change.table, &prepared.topic);
        let key_row = change.after.or(change.before);
        match &prepared.encoding {
            Encoding::Avro(schemas) => {
                let failed = |what: &str, e| {
                    Error::fatal(format!("encoding an Avro {what} for {topic}: {e}"))
                };
                buffers.avro_key = match (&schemas.key, key_row) {
                    (Some((schema, id)), Some(row)) => Some(
                        avro::frame(*id, schema, avro::key_datum(table, row, decimals)?)
                            .map_err(|e| failed("key", e))?,
                    ),
                    _ => None,
                };
                let (schema, id) = &schemas.value;
                buffers.avro_value = avro::frame(
                    *id,
                    schema,
                    avro::value_datum(&self.info, change, now, decimals)?,
                )
                .map_err(|e| failed("value", e))?;
                Ok((buffers.avro_key.as_deref(), &buffers.avro_value))
            }
            Encoding::Json(layout) => {
                let has_key = match key_row {
                    Some(row) => envelope::write_key(&mut buffers.json_key, layout, row, decimals)?,
                    None => false,
                };
                envelope::write_value(&mut buffers.json_value, layout, change, now, decimals)?;
                Ok((
                    has_key.then_some(buffers.json_key.as_bytes()),
                    buffers.json_value.as_bytes(),
                ))
            }
        }
    }

    fn topic_for(&self, table: &TableId) -> String {
        self.cfg
            .topic
            .replace("{prefix}", &self.cfg.topic_prefix)
            .replace("{schema}", &table.schema)
            .replace("{table}", &table.name)
    }

    /// Queues one record, waiting while librdkafka's queue is full (its own thread drains it).
    /// Produces one record with `headers` (Ferry's own: [`ferry_core::debezium::UNCHANGED_HEADER`],
    /// [`ferry_core::debezium::ORDER_HEADER`]).
    async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&'static str, String)],
    ) -> Result<(), Error> {
        if let Some(held) = self.held.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            held.push(HeldRecord {
                topic: topic.to_owned(),
                key: key.map(<[u8]>::to_vec),
                payload: payload.map(<[u8]>::to_vec),
                headers: headers.to_vec(),
            });
            return Ok(());
        }
        self.send(topic, key, payload, headers).await
    }

    /// Sends one record now, waiting while librdkafka's queue is full.
    async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&'static str, String)],
    ) -> Result<(), Error> {
        let mut record = BaseRecord::to(topic);
        if !headers.is_empty() {
            let mut owned = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len());
            for (key, value) in headers {
                owned = owned.insert(rdkafka::message::Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
            record = record.headers(owned);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        // Checkpoints always go to (and are read from) partition 0, even if someone gave the topic more.
        if topic == CHECKPOINT_TOPIC {
            record = record.partition(0);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // One record too large for the producer is that row's fault: the row policy decides.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    return Err(too_large(topic, self.cfg.max_message_bytes))
                }
                Err((e, _)) => return Err(kafka_error(format!("producing to {topic}"))(e)),
            }
        }
    }

    /// Waits until every queued record is acknowledged, then reports the first that failed. rdkafka's own
    /// `flush` (also the first step of its `commit_transaction`) polls in whole 100 ms steps, which cost each
    /// batch 100 ms for nothing; the producer's thread serves the delivery reports, so watching the queue length
    /// returns within a millisecond.
    async fn delivered(&self) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if std::time::Instant::now() > deadline {
                return Err(Error::transient(
                    "delivering records",
                    "the broker did not acknowledge them within 30 s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.producer.context().check("delivering records")
    }

    async fn apply_events(
        &mut self,
        events: &[Event],
        commit: Option<&Position>,
    ) -> Result<(), Error> {
        // Topics and schemas first (creating a topic is a round trip outside the transaction), once per table
        // schema in the batch rather than per row.
        let mut tables: Vec<Prepared<'_>> = Vec::new();
        for e in events {
            if let Event::Change(Change::Row { table, .. }) = e {
                if !tables.iter().any(|p| Arc::ptr_eq(p.table, table)) {
                    self.known.insert(table.id.clone(), table.clone());
                    let prepared = self.prepare(table).await?;
                    tables.push(prepared);
                }
            }
        }
        if self.cfg.exactly_once && !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(kafka_error("beginning a Kafka transaction"))?;
            self.in_transaction = true;
        }
        let now = now_ms();
        let encode_started = std::time::Instant::now();
        // Reused for every record: librdkafka copies what it is given.
        let mut buffers = Buffers::default();
        // The source transaction in progress, carried across batches; a Commit ends it after its own event.
        let mut open_tx = self.open_tx.take();
        let mut ended = false;
        for e in events {
            if std::mem::take(&mut ended) {
                open_tx = None;
            }
            ended = matches!(e, Event::Commit { .. });
            if let Event::Begin(begin) = e {
                open_tx = Some(begin.clone());
                self.change_order = 0;
            }
            let tx = open_tx.as_deref();
            // The source's commit time; now for snapshot reads, which belong to no source transaction.
            let commit_ms = tx
                .and_then(|t| t.commit_time)
                .and_then(Timestamp::unix_micros)
                .map_or(now, |us| us / 1000);
            if self.cfg.transaction_topic {
                self.transaction_marker(e, commit_ms).await?;
            }
            let change = match e {
                Event::Change(change) => change,
                Event::Schema(table) => {
                    self.known.insert(table.id.clone(), table.clone());
                    continue;
                }
                _ => continue,
            };
            match change {
                Change::Row { table, op } => {
                    let prepared = tables
                        .iter()
                        .find(|p| Arc::ptr_eq(p.table, table))
                        .ok_or_else(|| {
                            Error::fatal("a row's table was not prepared for the batch")
                        })?;
                    // A key change is a delete of the old key and a create of the new one, as Debezium's
                    // connectors write it: each record goes to its own key's partition, so a consumer that
                    // applies partitions apart still sees every key's changes in order.
                    let parts: [Option<Record<'_>>; 2] = match op {
                        RowOp::Insert { after } => [Some(("c", None, Some(after), false)), None],
                        RowOp::Read { after } => [Some(("r", None, Some(after), true)), None],
                        RowOp::Update {
                            before: Some(before),
                            after,
                        } if table.has_primary_key()
                            && table.primary_key.iter().any(|&k| before[k] != after[k]) =>
                        {
                            [
                                Some(("d", Some(before), None, false)),
                                Some(("c", None, Some(after), false)),
                            ]
                        }
                        RowOp::Update { before, after } => {
                            [Some(("u", before.as_ref(), Some(after), false)), None]
                        }
                        RowOp::Delete { before } => [Some(("d", Some(before), None, false)), None],
                    };
                    for (op_code, before, after, snapshot) in parts.into_iter().flatten() {
                        let change = envelope::Change {
                            table,
                            op: op_code,
                            before,
                            after,
                            commit_ms,
                            tx,
                            snapshot,
                            transaction: self.transaction.as_mut().map(|t| t.count(&table.id)),
                        };
                        // A row that cannot be encoded or is too large is refused alone (`on_error`).
                        let (key, value) = self
                            .encode(prepared, &change, now, &mut buffers)
                            .map_err(|e| Error::row(e.message.clone(), "encode", e))?;
                        let size = key.map_or(0, <[u8]>::len) + value.len();
                        if size > self.cfg.max_message_bytes {
                            return Err(too_large(&prepared.topic, self.cfg.max_message_bytes));
                        }
                        // Values the source did not send, by name: Debezium's placeholder cannot mark them
                        // in every type (a number, an array of numbers, a timestamp).
                        let unchanged: Vec<&str> = after
                            .map(|row| {
                                row.iter()
                                    .zip(&table.columns)
                                    .filter(|(v, _)| **v == ferry_core::Value::Unchanged)
                                    .map(|(_, c)| c.name.as_str())
                                    .collect()
                            })
                            .unwrap_or_default();
                        // The change's place in its transaction, which orders records of one transaction
                        // (they share its position) across partitions.
                        self.change_order += 1;
                        let mut headers = vec![(ORDER_HEADER, self.change_order.to_string())];
                        if !unchanged.is_empty() {
                            // A JSON array: column names may hold any character.
                            headers
                                .push((UNCHANGED_HEADER, serde_json::json!(unchanged).to_string()));
                        }
                        let exact = exact_values(table, before, after, self.cfg.decimal_handling);
                        if !exact.is_empty() {
                            headers.push((
                                EXACT_HEADER,
                                serde_json::to_string(&exact).unwrap_or_default(),
                            ));
                        }
                        self.produce(&prepared.topic, key, Some(value), &headers)
                            .await?;
                        if op_code == "d" && self.cfg.tombstones && key.is_some() {
                            self.produce(&prepared.topic, key, None, &[]).await?;
                        }
                    }
                }
                // The snapshot empties SQL targets first; Debezium reports no truncate for a snapshot.
                Change::Truncate { snapshot: true, .. } => {}
                // A topic keeps no record of which tables a snapshot finished (a snapshot into Kafka is one
                // transaction).
                Change::Copied { .. } => {}
                Change::CopyRows { .. } => return Err(crate::rows::raw_copy_reached(&self.name)),
                // A topic holds events, not a copy: the table's later changes are still true events.
                Change::Refused(_) => {
                    return Err(ferry_core::dead_letter::refused_row_reached(&self.name))
                }
                Change::Quarantine { table, reason } => {
                    warn!(%table, reason, "the table changed in a way no event describes; its topic goes on with its later changes");
                }
                // A re-copy's rows are published as reads (Debezium's incremental snapshot does the same).
                Change::Recopy { .. } => {}
                // Debezium's truncate event: no key, no row images, in each table's topic.
                Change::Truncate {
                    tables: truncated, ..
                } => {
                    for t in truncated {
                        let table = match self.known.get(t) {
                            Some(table) => table.clone(),
                            // An Avro value needs the table's registered schema.
                            None if self.registry.is_some() => {
                                warn!(table = %t, "a TRUNCATE is not published: Avro records need the table's schema, and none was seen since Ferry started");
                                continue;
                            }
                            // JSON needs only the table's name.
                            None => Arc::new(TableSchema::named(
                                t.clone(),
                                if self.info.connector == "mysql" {
                                    Dialect::Mysql
                                } else {
                                    Dialect::Postgres
                                },
                            )),
                        };
                        let prepared = self.prepare(&table).await?;
                        let change = envelope::Change {
                            table: &table,
                            op: "t",
                            before: None,
                            after: None,
                            commit_ms,
                            tx,
                            snapshot: false,
                            transaction: self.transaction.as_mut().map(|c| c.count(t)),
                        };
                        let (_, value) = self.encode(&prepared, &change, now, &mut buffers)?;
                        self.produce(&prepared.topic, None, Some(value), &[])
                            .await?;
                    }
                }
            }
        }
        self.open_tx = if ended { None } else { open_tx };
        let encoded = encode_started.elapsed();
        let Some(position) = commit else {
            return Ok(());
        };
        let commit_started = std::time::Instant::now();
        let key = self.checkpoint_key();
        let text = position.to_string();
        if !self.cfg.exactly_once {
            // The checkpoint only after every record is acknowledged: at least once.
            self.delivered().await?;
        }
        self.produce(
            CHECKPOINT_TOPIC,
            Some(key.as_bytes()),
            Some(text.as_bytes()),
            &[],
        )
        .await?;
        self.delivered().await?;
        if self.cfg.exactly_once {
            let producer = &self.producer;
            tokio::task::block_in_place(|| producer.commit_transaction(TIMEOUT))
                .map_err(kafka_error("committing the Kafka transaction"))?;
            self.in_transaction = false;
        }
        tracing::debug!(
            sink = %self.name,
            events = events.len(),
            encode_ms = encoded.as_millis() as u64,
            commit_ms = commit_started.elapsed().as_millis() as u64,
            "kafka batch"
        );
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, Error> {
        let (cfg, key) = (self.cfg.clone(), self.checkpoint_key());
        let stored = tokio::task::spawn_blocking(move || checkpoints::read(&cfg, &key))
            .await
            .map_err(|e| Error::fatal(format!("checkpoint reader failed: {e}")))??;
        stored
            .map(|(text, _)| {
                text.parse()
                    .map_err(|e| Error::fatal_from("stored checkpoint", e))
            })
            .transpose()
    }

    async fn apply(&mut self, events: &[Event], commit: Option<&Position>) -> Result<(), Error> {
        let result = self.apply_events(events, commit).await;
        // A row refused under a savepoint is undone by rolling back to it; anything else ends the transaction.
        let isolated = self.saved.is_some()
            && result
                .as_ref()
                .is_err_and(|e| e.class == ferry_core::ErrorClass::Row);
        if result.is_err() && self.in_transaction && !isolated {
            let producer = &self.producer;
            let _ = tokio::task::block_in_place(|| producer.abort_transaction(TIMEOUT));
            self.in_transaction = false;
        }
        result
    }

    /// Records produced under a savepoint are held in memory (a Kafka transaction cannot take back one record):
    /// released, they are sent into the transaction; rolled back, dropped with the source-transaction state.
    async fn savepoint(&mut self, step: ferry_core::Savepoint) -> Result<(), Error> {
        use ferry_core::Savepoint;
        if self.cfg.exactly_once && !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(kafka_error("beginning a Kafka transaction"))?;
            self.in_transaction = true;
        }
        let held = self.held.get_mut().unwrap_or_else(|p| p.into_inner());
        match step {
            Savepoint::Set => {
                *held = Some(Vec::new());
                self.saved = Some((self.open_tx.clone(), self.transaction.clone()));
            }
            Savepoint::Rollback => {
                *held = None;
                if let Some((open_tx, transaction)) = self.saved.take() {
                    self.open_tx = open_tx;
                    self.transaction = transaction;
                }
            }
            Savepoint::Release => {
                let records = held.take().unwrap_or_default();
                self.saved = None;
                for r in records {
                    self.send(&r.topic, r.key.as_deref(), r.payload.as_deref(), &r.headers)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// A letter is a record of the dead-letter topic, in the open transaction.
    async fn dead_letter(&mut self, letter: &ferry_core::DeadLetter) -> Result<(), Error> {
        let topic = self.cfg.dead_letter_topic.clone();
        self.ensure_topic(&topic, 1, "compact").await?;
        let id = self.next_letter;
        let stored = ferry_core::dead_letter::StoredDeadLetter {
            id,
            pipeline: self.pipeline.clone(),
            sink: self.name.clone(),
            created_at: Timestamp::from_unix_micros(now_ms().saturating_mul(1000))
                .display_utc()
                .to_string(),
            letter: letter.clone(),
        };
        let encode = |stored: &ferry_core::dead_letter::StoredDeadLetter| {
            serde_json::to_vec(stored).map_err(|e| Error::fatal_from("encoding a dead letter", e))
        };
        let mut value = encode(&stored)?;
        // A row too large for a record is too large for its letter too: the letter then names it without it.
        if value.len() + 512 > self.cfg.max_message_bytes {
            let mut without = stored;
            without.letter.row = serde_json::json!({
                "…": "the row is larger than the dead-letter topic accepts; re-copy the table to bring it (ferry snapshot --table)"
            })
            .to_string();
            without.letter.change = String::new();
            warn!(sink = %self.name, table = %letter.table, key = letter.key, "a dead letter is too large for its topic: it is kept without the row");
            value = encode(&without)?;
        }
        let key = dead_letters::key(&self.pipeline, &self.name, id);
        self.produce(&topic, Some(key.as_bytes()), Some(&value), &[])
            .await?;
        self.next_letter += 1;
        self.letters.insert(id, letter.table.clone());
        Ok(())
    }

    async fn dead_letters(
        &mut self,
    ) -> Result<Vec<ferry_core::dead_letter::StoredDeadLetter>, Error> {
        let (cfg, pipeline, name) = (self.cfg.clone(), self.pipeline.clone(), self.name.clone());
        let (letters, highest) =
            tokio::task::spawn_blocking(move || dead_letters::read(&cfg, &pipeline, &name))
                .await
                .map_err(|e| Error::fatal(format!("dead-letter reader failed: {e}")))??;
        self.letters = letters
            .iter()
            .map(|l| (l.id, l.letter.table.clone()))
            .collect();
        self.next_letter = highest + 1;
        Ok(letters)
    }

    async fn forget_dead_letters_of(&mut self, table: &TableId) -> Result<u64, Error> {
        let ids: Vec<i64> = self
            .letters
            .iter()
            .filter(|(_, t)| *t == table)
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            self.forget_dead_letter(id).await?;
        }
        Ok(ids.len() as u64)
    }

    /// A tombstone for the letter's key, in the open transaction.
    async fn forget_dead_letter(&mut self, id: i64) -> Result<(), Error> {
        if self.cfg.exactly_once && !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(kafka_error("beginning a Kafka transaction"))?;
            self.in_transaction = true;
        }
        let key = dead_letters::key(&self.pipeline, &self.name, id);
        let topic = self.cfg.dead_letter_topic.clone();
        self.produce(&topic, Some(key.as_bytes()), None, &[])
            .await?;
        self.letters.remove(&id);
        Ok(())
    }
}

/// The values of a change's row images that its envelope holds only approximately ([`envelope::approximated`]),
/// for the [`EXACT_HEADER`].
fn exact_values(
    table: &TableSchema,
    before: Option<&ferry_core::Row>,
    after: Option<&ferry_core::Row>,
    decimals: ferry_config::DecimalHandling,
) -> ExactValues {
    let image = |row: Option<&ferry_core::Row>| {
        row.into_iter()
            .flat_map(|row| row.iter().zip(&table.columns))
            .filter(|(v, _)| envelope::approximated(v, decimals))
            .map(|(v, c)| (c.name.clone(), v.clone()))
            .collect()
    };
    ExactValues {
        before: image(before),
        after: image(after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_override_defaults_but_not_delivery() {
        let cfg = KafkaConfig {
            properties: vec![
                ("linger.ms".into(), "50".into()),
                ("enable.idempotence".into(), "false".into()),
                ("compression.type".into(), "zstd".into()),
            ],
            ..KafkaConfig::new("b:9092")
        };
        let c = producer_config("kafka", "shop", &cfg);
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("compression.type"), Some("zstd"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
        assert_eq!(c.get("transaction.timeout.ms"), Some("900000"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("transactional.id"), Some("ferry.shop.kafka"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
    }

    #[test]
    fn tls_sasl_and_zstd_are_built_in() {
        // librdkafka refuses these settings when built without OpenSSL or libzstd.
        let setting = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let cfg = KafkaConfig {
            properties: vec![
                setting("security.protocol", "SASL_SSL"),
                setting("sasl.mechanisms", "SCRAM-SHA-512"),
                setting("sasl.username", "ferry"),
                setting("sasl.password", "secret"),
                setting("compression.type", "zstd"),
            ],
            ..KafkaConfig::new("127.0.0.1:9")
        };
        let producer: Result<rdkafka::producer::BaseProducer, _> =
            producer_config("kafka", "shop", &cfg).create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }
}
