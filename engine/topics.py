"""The topic registry: every topic zot reads or writes, its key and its layout.

One place for names, keys, partition counts and compaction, used by the Kafka
admin that creates topics, by the producers (the key decides the partition) and
by the embedded in-process bus, which partitions exactly like Kafka's default
partitioner so a run without servers and a run on Kafka group events the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kafka.partitioner.default import murmur2

from engine import schemas

KeyField = Literal["user_id", "cell_id"]


@dataclass(frozen=True)
class Topic:
    """One Kafka topic: what it carries and how it is keyed and kept."""

    name: str
    event: str  # schema type name in engine.schemas.ALL_TYPES
    key: KeyField | None  # the event field whose value is the message key
    partitions: int = 6
    compacted: bool = False
    retention_ms: int = 7 * 24 * 3600 * 1000
    doc: str = ""

    def topic_configs(self) -> dict[str, str]:
        """Broker-side topic configs for kafka-python's NewTopic."""
        if self.compacted:
            return {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}

    def key_of(self, event: object) -> bytes | None:
        """The message key of an event on this topic (UTF-8 of the key field)."""
        if self.key is None:
            return None
        return str(getattr(event, self.key)).encode("utf-8")


# Inputs are keyed by the entity whose state they change, so one partition (and
# one worker) owns all of a user's (or a cell's) events, in order.
FEEDBACK = Topic("zot.feedback", "feedback", "user_id", doc="User QoS feedback signals.")
CONTEXT = Topic("zot.context", "context", "user_id", doc="User context: cell, app, position.")
KPI = Topic("zot.kpi", "kpi", "cell_id", doc="Cell KPI reports with per-user channel quality.")
INTERACTIONS = Topic("zot.interactions", "interaction", "user_id", doc="User interactions with catalog items.")
ALLOCATIONS = Topic("zot.allocations", "allocation", "cell_id", doc="Allocation decisions per cell and epoch.")
PROFILES = Topic(
    "zot.profiles", "profile", "user_id", compacted=True, doc="Latest profile per user (ZoT estimates, interests)."
)
RECOMMENDATIONS = Topic("zot.recommendations", "recommendation", "user_id", doc="Live top-K recommendations.")
DEAD_LETTERS = Topic(
    "zot.dead-letters", "dead_letter", None, partitions=1, retention_ms=30 * 24 * 3600 * 1000,
    doc="Inputs the engine rejected, with the original bytes and the reason.",
)

INPUTS: tuple[Topic, ...] = (FEEDBACK, CONTEXT, KPI, INTERACTIONS)
OUTPUTS: tuple[Topic, ...] = (ALLOCATIONS, PROFILES, RECOMMENDATIONS, DEAD_LETTERS)
ALL: tuple[Topic, ...] = INPUTS + OUTPUTS
BY_NAME: dict[str, Topic] = {t.name: t for t in ALL}
BY_EVENT: dict[str, Topic] = {t.event: t for t in ALL}

assert all(t.event in schemas.ALL_TYPES for t in ALL)


def partition_for(key: bytes | None, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for a key.

    Java's and kafka-python's default partitioners agree; librdkafka producers
    (kcat) agree when configured with `partitioner=murmur2_random`. Unkeyed
    messages go to partition 0 here (the broker-side spread does not matter for
    the only unkeyed topic, dead letters, which has one partition).
    """
    if key is None:
        return 0
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def with_prefix(topic: Topic, prefix: str) -> str:
    """Topic name under an operator-chosen prefix (config `kafka.topic_prefix`)."""
    return topic.name if prefix == "zot." else prefix + topic.name.removeprefix("zot.")
