"""The in-process bus behaves like Kafka where zot relies on it."""

from __future__ import annotations

import pytest

from engine import topics
from engine.bus import InProcessBus


def test_keys_routed_like_kafka_and_order_kept_per_key():
    bus = InProcessBus(partitions=4)
    for i in range(200):
        bus.produce("zot.feedback", f"u{i % 40}".encode(), f"{i}".encode())
    msgs = bus.messages("zot.feedback")
    assert len(msgs) == 200
    per_key: dict[bytes, list[int]] = {}
    for m in msgs:
        assert m.partition == topics.partition_for(m.key, 4)
        per_key.setdefault(m.key, []).append(int(m.value))
    assert all(v == sorted(v) for v in per_key.values())
    assert {m.partition for m in msgs} == {0, 1, 2, 3}


def test_consumer_groups_have_their_own_offsets():
    bus = InProcessBus()
    for i in range(10):
        bus.produce("zot.kpi", b"c1", str(i).encode())
    a = bus.poll("a", ["zot.kpi"], max_records=4)
    assert [m.value for m in a] == [b"0", b"1", b"2", b"3"]
    assert [m.offset for m in bus.poll("a", ["zot.kpi"])] == list(range(4, 10))
    assert bus.poll("a", ["zot.kpi"]) == []
    assert len(bus.poll("b", ["zot.kpi"])) == 10


def test_unknown_topic_rejected_and_dead_letters_single_partition():
    bus = InProcessBus(partitions=8)
    with pytest.raises(KeyError, match="unknown topic"):
        bus.produce("zot.nope", None, b"x")
    assert bus.partitions("zot.dead-letters") == 1
    assert bus.partitions("zot.profiles") == 8
