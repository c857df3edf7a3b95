"""Events through the real broker: keyed and partitioned as the registry says."""

from __future__ import annotations

import uuid
from collections import defaultdict

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from engine import schemas, topics
from engine.config import Kafka
from engine.kafka_client import ensure_topics, topic_name

N_EVENTS = 3000


@pytest.fixture()
def kafka_cfg(kafka_bootstrap: str) -> Kafka:
    # A fresh prefix per test: topics of earlier runs never mix in.
    return Kafka(bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}-", partitions=4)


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000), group_id=None,
    )
    parts = consumer.partitions_for_topic(topic)
    consumer.assign([TopicPartition(topic, p) for p in parts])
    out = []
    for msg in consumer:  # bounded by consumer_timeout_ms
        out.append(msg)
        if len(out) >= expected:
            break
    consumer.close()
    return out


def test_topics_created_with_registry_layout(kafka_bootstrap, kafka_cfg):
    created = ensure_topics({"bootstrap_servers": [kafka_bootstrap]}, kafka_cfg)
    assert created[topic_name(topics.FEEDBACK, kafka_cfg)] == 4
    assert created[topic_name(topics.DEAD_LETTERS, kafka_cfg)] == 1
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        res = admin.describe_configs([
            ConfigResource(ConfigResourceType.TOPIC, topic_name(topics.PROFILES, kafka_cfg)),
            ConfigResource(ConfigResourceType.TOPIC, topic_name(topics.FEEDBACK, kafka_cfg)),
        ])
        # kafka-python 3: {"topic": {name: {config: {"value": ...}}}} (explicitly set configs)
        policies = {name: cfgs["cleanup.policy"]["value"] for name, cfgs in res["topic"].items()}
    finally:
        admin.close()
    assert policies[topic_name(topics.PROFILES, kafka_cfg)] == "compact"
    assert policies[topic_name(topics.FEEDBACK, kafka_cfg)] == "delete"
    # Idempotent: a second worker starting up changes nothing.
    assert ensure_topics({"bootstrap_servers": [kafka_bootstrap]}, kafka_cfg) == created


def test_thousands_of_events_round_trip_keyed_and_in_order(kafka_bootstrap, kafka_cfg):
    ensure_topics({"bootstrap_servers": [kafka_bootstrap]}, kafka_cfg, [topics.FEEDBACK])
    name = topic_name(topics.FEEDBACK, kafka_cfg)
    rng = np.random.default_rng(3)
    sent = []
    for i in range(N_EVENTS):
        sig = schemas.Signal(rng.choice([s.value for s in schemas.Signal]))
        sent.append(schemas.Feedback(
            event_id=f"e{i}", ts=float(i), user_id=f"u{rng.integers(200)}", cell_id=f"c{rng.integers(20)}",
            app="video", signal=sig, qos=float(rng.uniform(0, 20)),
            rating=int(rng.integers(1, 6)) if sig is schemas.Signal.RATING else None,
        ))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for ev in sent:
        producer.send(name, key=topics.FEEDBACK.key_of(ev), value=schemas.encode(ev))
    producer.flush(timeout=60)
    producer.close()

    got = consume_all(kafka_bootstrap, name, N_EVENTS)
    assert len(got) == N_EVENTS
    by_partition_keys = defaultdict(set)
    decoded = {}
    per_user = defaultdict(list)
    for msg in sorted(got, key=lambda m: (m.partition, m.offset)):
        ev = schemas.decode(msg.value, expect=schemas.Feedback)
        assert msg.key == ev.user_id.encode()
        assert msg.partition == topics.partition_for(msg.key, 4)
        by_partition_keys[msg.partition].add(msg.key)
        decoded[ev.event_id] = ev
        per_user[ev.user_id].append(int(ev.event_id[1:]))
    assert decoded == {ev.event_id: ev for ev in sent}
    # A user's events stay in the order they were produced (one partition per key).
    assert all(seq == sorted(seq) for seq in per_user.values())
    assert len(by_partition_keys) == 4  # 200 users spread over every partition
