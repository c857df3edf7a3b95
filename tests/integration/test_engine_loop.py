"""The whole loop on the real broker: simulator -> Kafka -> `zot engine` worker process(es) -> decisions back.

A Kafka run must take exactly the decisions of the embedded run with the same
seed, with one worker and with two workers sharing the input partitions.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from engine import schemas
from engine import topics as registry
from engine.config import Config, load_config, secrets_from_env
from engine.faust_app import app_id
from engine.kafka_client import client_options, ensure_topics
from engine.remote_engine import RemoteEngineBus, spawn_worker, wait_group_members, write_config
from engine.state_changelog import changelog_topic, ensure_changelog
from simulators.loop import run

ROOT = Path(__file__).resolve().parents[2]


def small_config(bootstrap: str, partitions: int = 3, users: int = 40, epochs: int = 6) -> Config:
    """The example scenario cut down (one site, 3 cells) under a fresh topic prefix."""
    cfg = load_config(ROOT / "configs" / "example.yaml")
    return cfg.model_copy(update={
        "population": cfg.population.model_copy(update={"users": users}),
        # Apps are named one epoch late, so proactive decisions read the interest state too.
        "simulation": cfg.simulation.model_copy(update={"epochs": epochs, "policies": ["zot"],
                                                        "app_detection_epochs": 1}),
        "cells": cfg.cells.model_copy(update={"hex": cfg.cells.hex.model_copy(update={"sites": 1})}),
        "kafka": cfg.kafka.model_copy(update={"bootstrap_servers": bootstrap, "partitions": partitions,
                                              "topic_prefix": f"t{uuid.uuid4().hex[:8]}."}),
    })


def prepare(cfg: Config, tmp_path: Path) -> tuple[Path, dict]:
    options = client_options(cfg.kafka, secrets_from_env(cfg))
    ensure_topics(options, cfg.kafka)
    ensure_changelog(options, cfg.kafka)
    return write_config(cfg, tmp_path / "scenario.yaml"), options


def decision_key(decisions: list[schemas.Allocation]) -> list[tuple]:
    """Everything a decision says except wall-clock fields (ts, solve time)."""
    return sorted(
        (d.cell_id, d.epoch, d.prb_total, d.prb_used, d.overload,
         tuple((u.user_id, u.prb, u.rate_mbps, u.satisfaction, u.served, u.reason) for u in d.users))
        for d in decisions
    )


def stop(workers: list) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(30)
        except Exception:  # noqa: BLE001 - a stuck worker: kill it, ours only
            w.kill()
            w.wait(10)


def kafka_run(cfg: Config, tmp_path: Path, n_workers: int,
              consumer: str = "faust") -> tuple[list[schemas.Allocation], RemoteEngineBus]:
    path, options = prepare(cfg, tmp_path)
    workers = [spawn_worker(path, f"w{i}", tmp_path / f"worker{i}.log", consumer=consumer) for i in range(n_workers)]
    try:
        # All workers in the group before the first event: no rebalance mid-run.
        wait_group_members(options, app_id(cfg), n_workers, consumer=consumer)
        bus = RemoteEngineBus(cfg, options, timeout_s=90, workers=workers)
        try:
            result = run(cfg, ["zot"], bus=bus)
        finally:
            bus.close()
        assert all(w.poll() is None for w in workers), "a worker died during the run"
        return result.engine.decisions, bus
    finally:
        stop(workers)


@pytest.mark.parametrize("consumer", ["faust", "batch"])
def test_kafka_loop_takes_the_embedded_decisions(kafka_bootstrap, victoria_url, tmp_path, consumer):
    cfg = small_config(kafka_bootstrap)
    # The workers report their own series to the real time-series server.
    cfg = cfg.model_copy(update={
        "name": f"loop-{uuid.uuid4().hex[:8]}",
        "engine": cfg.engine.model_copy(update={"metrics": "timeseries"}),
        "timeseries": cfg.timeseries.model_copy(update={"url": victoria_url}),
    })
    ref = run(cfg, ["zot"]).engine
    embedded = ref.decisions
    on_kafka, bus = kafka_run(cfg, tmp_path, 1, consumer)
    assert len(embedded) == cfg.simulation.epochs * 3
    assert ref.core.counters.predicted_apps > 0  # some decisions used the next-app prediction
    assert decision_key(on_kafka) == decision_key(embedded)
    # Interactions went through the broker too: live recommendations and full profiles came out.
    recs = read_topic(cfg, registry.RECOMMENDATIONS, schemas.Recommendation)
    profiles = read_topic(cfg, registry.PROFILES, schemas.ProfileUpdate)
    assert recs and all(r.items for r in recs)
    assert any(p.interests and p.next_app for p in profiles)
    # Feedback of earlier epochs changed later decisions (the engine learned on Kafka too).
    assert len({k[5] for k in decision_key(embedded)}) > 1
    # The worker wrote its zot_engine series: events handled and decisions taken.
    q = urllib.parse.urlencode({"match[]": f'{{__name__=~"zot_engine_.*",scenario="{cfg.name}",worker="w0"}}'})
    # The last interval's point comes from the meter's timer (or the worker's stop): poll for it.
    deadline = time.monotonic() + 30
    while True:
        urllib.request.urlopen(f"{victoria_url}/internal/force_flush", timeout=30).read()
        with urllib.request.urlopen(f"{victoria_url}/api/v1/export?{q}", timeout=30) as resp:
            series = [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]
        names = {s["metric"]["__name__"] for s in series}
        decisions = sum(v for s in series if s["metric"]["__name__"] == "zot_engine_decisions" for v in s["values"])
        if decisions >= len(on_kafka) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"zot_engine_events_per_s", "zot_engine_decisions", "zot_engine_batch_ms"} <= names
    assert decisions == len(on_kafka)


@pytest.mark.parametrize("consumer", ["faust", "batch"])
def test_two_workers_take_the_decisions_of_one(kafka_bootstrap, tmp_path, consumer):
    cfg = small_config(kafka_bootstrap, partitions=4, epochs=5)
    embedded = run(cfg, ["zot"]).engine.decisions
    on_kafka, _ = kafka_run(cfg, tmp_path, 2, consumer)
    assert decision_key(on_kafka) == decision_key(embedded)
    # Both workers did work: each committed state records of its own users to the changelog,
    # marked with its process (read from the committed log, not from exit logs a slow
    # shutdown may never write).
    assert len(changelog_writers(cfg)) == 2


def read_topic(cfg: Config, topic: registry.Topic, kind: type) -> list:
    """Every committed event of an output topic (bounded: stops 5 s after the last record)."""
    from kafka import KafkaConsumer, TopicPartition

    name = registry.with_prefix(topic, cfg.kafka.topic_prefix)
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, isolation_level="read_committed",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or [])])
    consumer.seek_to_beginning()
    out = [schemas.decode(m.value, expect=kind) for m in consumer]
    consumer.close()
    return out


def changelog_writers(cfg: Config) -> set[bytes]:
    """The worker incarnations whose committed transactions wrote to the state changelog."""
    from kafka import KafkaConsumer, TopicPartition

    topic = changelog_topic(cfg.kafka)
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, isolation_level="read_committed",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning()
    writers: set[bytes] = set()
    for msg in consumer:  # bounded: stops 5 s after the last record
        writers.update(v for k, v in (msg.headers or []) if k == "w")
    consumer.close()
    return writers


def test_timer_trigger_decides_each_cells_latest_report(kafka_bootstrap, tmp_path):
    """engine.epoch_trigger=timer: reports wait for the tick, and only a cell's latest is decided."""
    from kafka import KafkaProducer

    from engine import topics as registry
    from tests.integration.test_engine_dead_letters import read_all

    cfg = small_config(kafka_bootstrap)
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"epoch_trigger": "timer", "epoch_s": 2.0})})
    path, options = prepare(cfg, tmp_path)
    worker = spawn_worker(path, "t", tmp_path / "worker.log")
    producer = KafkaProducer(acks="all", **options)
    try:
        wait_group_members(options, app_id(cfg), 1)
        topic = registry.with_prefix(registry.KPI, cfg.kafka.topic_prefix)
        for epoch in (1, 2):  # one flush: usually fetched before the next tick, so report 1 is superseded
            ev = schemas.CellKpi(event_id=f"k{epoch}", ts=float(epoch), cell_id="s0-0", epoch=epoch, prb_total=51,
                                 users=[schemas.UserChannel(user_id="u1", spectral_efficiency=2.0, app="video")])
            producer.send(topic, key=b"s0-0", value=schemas.encode(ev))
        producer.flush(30)
        alloc = registry.with_prefix(registry.ALLOCATIONS, cfg.kafka.topic_prefix)
        got: list = []
        for _ in range(200):  # the tick fires every epoch_s = 2 s
            got = [schemas.decode(v, expect=schemas.Allocation) for _, v in read_all(options, alloc, 200)]
            if got:
                break
            time.sleep(0.1)
        time.sleep(4.5)  # two more ticks: nothing pending, nothing decided again
        got = [schemas.decode(v, expect=schemas.Allocation) for _, v in read_all(options, alloc, 200)]
        # Each tick decides only the latest report pending at that moment (the superseding itself
        # is tested exactly in tests/unit/test_runner_batches.py). Here the two reports may straddle
        # a tick on a loaded machine, so: never a report twice, never out of order, the last is 2.
        decided = [(d.cell_id, d.epoch) for d in got]
        assert decided in ([("s0-0", 2)], [("s0-0", 1), ("s0-0", 2)]), decided
    finally:
        producer.close()
        stop([worker])


def test_the_simulator_releases_kpis_only_once_the_changelog_transactions_are_readable(kafka_bootstrap, tmp_path):
    """A worker's commit returns before the markers that make its records readable are
    written; a decision taken in that window misses its posteriors. The handshake waits
    for every transaction open on the changelog to end."""
    from kafka import KafkaProducer

    from engine.remote_engine import EngineTimeout

    cfg = small_config(kafka_bootstrap, partitions=2)
    _, options = prepare(cfg, tmp_path)
    bus = RemoteEngineBus(cfg, options, timeout_s=30)
    producer = KafkaProducer(transactional_id=f"t-{uuid.uuid4().hex[:8]}", **options)
    try:
        bus.wait_changelog_settled()  # nothing open: returns at once
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(changelog_topic(cfg.kafka), key=b"u:x", value=b"{}")
        producer.flush()
        t0 = time.monotonic()
        with pytest.raises(EngineTimeout, match="still open"):
            bus.wait_changelog_settled(deadline=time.monotonic() + 1.0)
        assert time.monotonic() - t0 >= 1.0
        producer.commit_transaction()
        t0 = time.monotonic()
        bus.wait_changelog_settled()  # the markers follow the commit within milliseconds
        assert time.monotonic() - t0 < 10
    finally:
        producer.close()
        bus.close()
