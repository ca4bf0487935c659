"""Reads every record of the given topics as a read_committed consumer, with Confluent's Python client.

Usage: kafka_consume.py BROKERS TOPIC...  Prints one JSON object per record, in partition order:
{"topic", "partition", "offset", "key", "value"}; key and value are the UTF-8 text of the bytes, or null.
       kafka_consume.py --describe BROKERS TOPIC  Prints {"partitions": N, "cleanup.policy": "...",
       "max.message.bytes": "..."}.
       kafka_consume.py --avro REGISTRY_URL BROKERS TOPIC...  Decodes keys and values with Confluent's
       AvroDeserializer through that registry; key and value are then JSON objects (bytes and decimals as text).
       An https registry's CA certificate comes from the environment: REGISTRY_CA=<PEM file>.
"""
import json
import sys

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

if sys.argv[1] == "--describe":
    brokers, topic = sys.argv[2], sys.argv[3]
    admin = AdminClient({"bootstrap.servers": brokers})
    partitions = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    setting = lambda name: configs[name].value if name in configs else None
    print(json.dumps({"partitions": partitions, "cleanup.policy": setting("cleanup.policy"),
                      "max.message.bytes": setting("max.message.bytes")}))
    sys.exit(0)

avro = None
if sys.argv[1] == "--avro":
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    import os

    registry = {"url": sys.argv[2]}  # credentials, if any, in the URL's user info
    if os.environ.get("REGISTRY_CA"):
        registry["ssl.ca.location"] = os.environ["REGISTRY_CA"]
    avro = AvroDeserializer(SchemaRegistryClient(registry))
    sys.argv = sys.argv[2:]

brokers, topics = sys.argv[1], sys.argv[2:]
consumer = Consumer({
    "bootstrap.servers": brokers,
    "group.id": "ferry-test-reader",
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
    "enable.partition.eof": True,
    "session.timeout.ms": 6000,
    # noida-db answers a fetch with everything up to the end, whatever fetch.max.bytes says.
    "receive.message.max.bytes": 1_000_000_000,
})
assignment = []
for topic in topics:
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = metadata.topics[topic].partitions
    for p in partitions:
        assignment.append(TopicPartition(topic, p, 0))
consumer.assign(assignment)
remaining = {(tp.topic, tp.partition) for tp in assignment}
idle = 0
while remaining and idle < 60:
    msg = consumer.poll(0.5)
    if msg is None:
        idle += 1
        continue
    if msg.error():
        if msg.error().code() == KafkaError._PARTITION_EOF:
            remaining.discard((msg.topic(), msg.partition()))
            continue
        raise SystemExit(f"consumer error: {msg.error()}")
    idle = 0
    if avro is None:
        decode = lambda b, field: None if b is None else b.decode("utf-8")
    else:
        def decode(b, field):
            if b is None:
                return None
            return avro(b, SerializationContext(msg.topic(), field))
    print(json.dumps({
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": decode(msg.key(), "key" if avro is None else MessageField.KEY),
        "value": decode(msg.value(), "value" if avro is None else MessageField.VALUE),
    }, default=str))
consumer.close()
if remaining:
    raise SystemExit(f"no end of partitions {sorted(remaining)} within 30 s")
