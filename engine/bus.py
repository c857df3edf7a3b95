"""The event bus seen by the simulator and the embedded engine.

`InProcessBus` is the embedded default: the registry's topics, each an append-only
log per partition, keys routed by Kafka's murmur2 partitioner, offsets per consumer
group. A run on it and a run on Kafka see the same topics, keys and per-key order.
`KafkaBus` is the same interface on a real broker (kafka-python).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from engine import topics as registry


@dataclass(frozen=True)
class Message:
    """One consumed record. The engine reads only these attributes, so a Kafka
    client's own record (aiokafka's or kafka-python's ConsumerRecord, same names)
    is used as is on the hot path, without a copy."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int  # ms since the Unix epoch, as Kafka records carry it


class Bus(Protocol):
    def produce(self, topic: str, key: bytes | None, value: bytes) -> None: ...

    def flush(self) -> None: ...

    def poll(self, group: str, topics: Iterable[str], max_records: int = 100_000) -> list[Message]: ...

    def close(self) -> None: ...


class InProcessBus:
    """Kafka's topic/partition/offset model in one process, for runs without servers."""

    def __init__(self, partitions: int = 6, prefix: str = "zot.") -> None:
        self._parts: dict[str, int] = {}
        for t in registry.ALL:
            self._parts[registry.with_prefix(t, prefix)] = t.partitions if t.key is None else partitions
        self._logs: dict[str, list[list[Message]]] = {n: [[] for _ in range(p)] for n, p in self._parts.items()}
        self._positions: dict[str, dict[tuple[str, int], int]] = defaultdict(dict)

    def partitions(self, topic: str) -> int:
        return self._parts[topic]

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        if topic not in self._logs:
            raise KeyError(f"unknown topic {topic!r}; the registry has {sorted(self._logs)}")
        p = registry.partition_for(key, self._parts[topic])
        log = self._logs[topic][p]
        log.append(Message(topic, p, len(log), key, value, int(time.time() * 1000)))

    def flush(self) -> None:
        pass  # produce is synchronous here

    def poll(self, group: str, topics: Iterable[str], max_records: int = 100_000) -> list[Message]:
        """Next messages for a consumer group, partition by partition, committed on return."""
        out: list[Message] = []
        pos = self._positions[group]
        for topic in topics:
            for p, log in enumerate(self._logs[topic]):
                start = pos.get((topic, p), 0)
                take = log[start : start + max(0, max_records - len(out))]
                out.extend(take)
                pos[(topic, p)] = start + len(take)
        return out

    def messages(self, topic: str) -> list[Message]:
        """Everything ever written to a topic (for reports and tests)."""
        return [m for log in self._logs[topic] for m in log]

    def close(self) -> None:
        pass


class KafkaBus:
    """The same interface over a real broker, with kafka-python."""

    def __init__(self, client_options: dict[str, Any]) -> None:
        from kafka import KafkaProducer

        self._opts = client_options
        self._producer = KafkaProducer(acks="all", linger_ms=2, **client_options)
        self._consumers: dict[str, Any] = {}

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._producer.send(topic, key=key, value=value)

    def flush(self) -> None:
        self._producer.flush(timeout=60)

    def poll(self, group: str, topics: Iterable[str], max_records: int = 100_000) -> list[Message]:
        from kafka import KafkaConsumer

        topics = list(topics)
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = KafkaConsumer(
                group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **self._opts
            )
            consumer.subscribe(topics)
            self._consumers[group] = consumer
        out: list[Message] = []
        batches = consumer.poll(timeout_ms=500, max_records=max_records)
        for records in batches.values():
            for r in records:
                out.append(Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp))
        if out:
            consumer.commit()
        return out

    def close(self) -> None:
        self._producer.flush(timeout=60)
        self._producer.close()
        for c in self._consumers.values():
            c.close()
