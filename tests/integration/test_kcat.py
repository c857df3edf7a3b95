"""A client we did not write (librdkafka's kcat) produces events our decoder accepts."""

from __future__ import annotations

import json
import subprocess
import uuid

from kafka import KafkaConsumer, TopicPartition

from engine import schemas, topics
from engine.config import Kafka
from engine.kafka_client import ensure_topics, topic_name


def test_kcat_events_decoded_like_ours(kafka_bootstrap, kcat_bin):
    cfg = Kafka(bootstrap_servers=kafka_bootstrap, topic_prefix=f"k{uuid.uuid4().hex[:8]}-", partitions=3)
    ensure_topics({"bootstrap_servers": [kafka_bootstrap]}, cfg, [topics.FEEDBACK])
    name = topic_name(topics.FEEDBACK, cfg)
    good = [
        {"type": "feedback", "event_id": f"kc{i}", "ts": 100.0 + i, "user_id": f"user-{i % 7}", "cell_id": "c1",
         "app": "video", "signal": "rating" if i % 3 == 0 else "retry", "qos": 1.5 * i,
         **({"rating": 1 + i % 5} if i % 3 == 0 else {})}
        for i in range(30)
    ]
    bad = [
        ("user-x", '{"type": "feedback", "event_id": "b1", "ts": 1, "user_id": "user-x", "cell_id": "c", '
                   '"app": "video", "signal": "meh", "qos": 1}', "signal"),
        ("user-y", '{"type": "feedback", "event_id": "b2", "ts": 1, "user_id": "user-y", "cell_id": "c", '
                   '"app": "video", "signal": "kept", "qos": -4}', "qos"),
        ("user-z", "not json at all", "not JSON"),
    ]
    lines = [f"{e['user_id']}\t{json.dumps(e)}" for e in good] + [f"{k}\t{v}" for k, v, _ in bad]
    # librdkafka's murmur2_random partitioner is the Java/kafka-python default for keyed messages.
    subprocess.run(
        [kcat_bin, "-P", "-b", kafka_bootstrap, "-t", name, "-K", "\t",
         "-X", "topic.partitioner=murmur2_random"],
        input="\n".join(lines) + "\n", text=True, check=True, timeout=60,
    )
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=30000)
    consumer.assign([TopicPartition(name, p) for p in range(3)])
    msgs = []
    for msg in consumer:
        msgs.append(msg)
        if len(msgs) >= len(lines):
            break
    consumer.close()
    assert len(msgs) == len(lines)

    accepted, rejected = {}, {}
    for msg in msgs:
        assert msg.partition == topics.partition_for(msg.key, 3)
        try:
            ev = schemas.decode(msg.value, expect=schemas.Feedback)
            accepted[ev.event_id] = ev
        except schemas.DecodeError as exc:
            rejected[msg.key.decode()] = exc.reason
    assert {k: v.model_dump(exclude_none=True, mode="json") for k, v in accepted.items()} == {
        e["event_id"]: {"v": 1, **e} for e in good
    }
    for key, _, needle in bad:
        assert needle in rejected[key]
