"""Events produced by Debian's kcat (librdkafka), a client we did not write, are processed like our own.

Context, feedback (with a few broken lines) and KPI reports go in through kcat; the
engine worker's committed state, decisions and profiles must equal the embedded
engine's on the same events, and the broken lines must be dead-lettered.
"""

from __future__ import annotations

import base64
import subprocess

from engine import schemas
from engine import topics as registry
from engine.faust_app import app_id
from engine.remote_engine import RemoteEngineBus, spawn_worker, wait_group_members
from tests.integration.test_engine_dead_letters import read_all
from tests.integration.test_engine_loop import prepare, small_config, stop
from tests.integration.test_engine_recovery import check_as_if_never_died, reference, stream

BROKEN = [b'{"type": "feedback", "v": 1, "event_id": "x1", "ts": 1, "user_id": "u1", "cell_id": "s0-0", '
          b'"app": "video", "signal": "meh", "qos": 1}',
          b"not json at all"]


def kcat_produce(kcat: str, bootstrap: str, topic: str, lines: list[bytes]) -> None:
    # librdkafka's murmur2_random is the Java/kafka-python partitioner for keyed messages.
    subprocess.run([kcat, "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-X", "topic.partitioner=murmur2_random"],
                   input=b"\n".join(lines) + b"\n", check=True, timeout=60)


def test_kcat_events_processed_like_ours(kafka_bootstrap, kcat_bin, tmp_path):
    cfg = small_config(kafka_bootstrap, partitions=3)
    path, options = prepare(cfg, tmp_path)
    phases = stream(cfg, n_users=30, n_feedback=600, seed=5)
    worker = spawn_worker(path, "kc", tmp_path / "worker.log")
    try:
        wait_group_members(options, app_id(cfg), 1)
        bus = RemoteEngineBus(cfg, options, timeout_s=120, workers=[worker])
        fb_topic = registry.with_prefix(registry.FEEDBACK, cfg.kafka.topic_prefix)
        for i, phase in enumerate(phases):
            by_topic: dict[str, list[bytes]] = {}
            for topic, key, ev in phase:
                by_topic.setdefault(topic, []).append(key.encode() + b"\t" + schemas.encode(ev))
            if i == 1:
                by_topic[fb_topic] += [b"u1\t" + line for line in BROKEN]
            for topic, lines in by_topic.items():
                kcat_produce(kcat_bin, kafka_bootstrap, topic, lines)
            bus.wait_consumed()  # phase by phase, as the reference takes them
        bus.close()
        check_as_if_never_died(cfg, options, reference(cfg, list(phases)), 600)
        dead = [schemas.DeadLetter.model_validate_json(v)
                for _, v in read_all(options, registry.with_prefix(registry.DEAD_LETTERS, cfg.kafka.topic_prefix))]
        assert sorted(base64.b64decode(d.value_b64) for d in dead) == sorted(BROKEN)
        assert all(d.source_topic == fb_topic and d.offset is not None for d in dead)
    finally:
        stop([worker])
