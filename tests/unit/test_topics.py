"""Topic registry: keys, compaction, and a partitioner identical to Kafka's."""

from __future__ import annotations

from engine import schemas, topics


def test_every_topic_names_a_known_event_and_key():
    for t in topics.ALL:
        model = schemas.ALL_TYPES[t.event]
        if t.key is not None:
            assert t.key in model.model_fields, (t.name, t.key)


def test_user_state_topics_keyed_by_user_cell_topics_by_cell():
    assert topics.FEEDBACK.key == topics.CONTEXT.key == topics.INTERACTIONS.key == "user_id"
    assert topics.PROFILES.key == topics.RECOMMENDATIONS.key == "user_id"
    assert topics.KPI.key == topics.ALLOCATIONS.key == "cell_id"
    assert topics.PROFILES.topic_configs()["cleanup.policy"] == "compact"
    assert topics.FEEDBACK.topic_configs()["cleanup.policy"] == "delete"


def test_partitioner_matches_java_murmur2_vectors():
    # Values of Java's Utils.toPositive(Utils.murmur2(key)) % 100 for these keys are the
    # cross-client contract; a different hash would route users to other partitions.
    from kafka.partitioner.default import murmur2

    for key in (b"", b"a", b"user-1", b"cell-42", "é".encode()):
        assert topics.partition_for(key, 7) == (murmur2(key) & 0x7FFFFFFF) % 7
    # Kafka's own test vectors for murmur2 (clients/src/test/.../UtilsTest.java).
    # kafka-python returns the 32-bit hash unsigned; Java's int is the same bits.
    def signed(h: int) -> int:
        return h - (1 << 32) if h >= 1 << 31 else h

    assert signed(murmur2(b"21")) == -973932308
    assert signed(murmur2(b"foobar")) == -790332482
    assert signed(murmur2(b"a-little-bit-long-string")) == -985981536
    assert signed(murmur2(b"a-little-bit-longer-string")) == -1486304829
    assert signed(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")) == -58897971
    assert signed(murmur2(b"abc")) == 479470107


def test_key_of_and_prefix():
    ev = schemas.Feedback(event_id="e", ts=0, user_id="u7", cell_id="c", app="a", signal="kept", qos=1.0)
    assert topics.FEEDBACK.key_of(ev) == b"u7"
    assert topics.DEAD_LETTERS.key_of(ev) is None
    assert topics.with_prefix(topics.FEEDBACK, "zot.") == "zot.feedback"
    assert topics.with_prefix(topics.FEEDBACK, "op1-zot-") == "op1-zot-feedback"
