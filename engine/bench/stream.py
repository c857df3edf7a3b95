"""`zot bench stream`: the engine on the local Kafka broker against a bare consumer.

Throughput: N feedback events are loaded into the feedback topic first; then
(1) a bare consumer (aiokafka and kafka-python, the faster counts) reads and
decodes them (`schemas.decode`, the engine's own decoder, nothing else), and (2)
one `zot engine` worker process consumes them, updates the posteriors and
publishes profiles, changelog and offsets in its transactions. The engine's
sustained rate is taken from the consumer group's committed offsets between 10%
and 90% of the stream (worker start-up excluded).

Latency: at half the engine's measured rate, feedback keeps flowing (sent every
5 ms, what is due) while every cell sends a KPI report every 100 ms; the latency
is from just before a KPI's send to its decision's arrival on the allocations
topic (read_committed). One KPI per cell is decided first, unmeasured: the
throughput phase never called the solver, and its first call loads it.

The worker's own timers say where the time goes; its CPU time (from /proc) says
what share of a core it got in each phase, and the load generator's share too:
on a shared 2-core machine the broker, the generator and the worker compete.

A broker is started on 127.0.0.1 (port ZOT_BENCH_KAFKA_PORT, default 39192) if
none answers there, and stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from engine import schemas
from engine import topics as registry
from engine.config import Config, load_config, secrets_from_env

ROOT = Path(__file__).resolve().parents[2]
USERS = 2000


def _config(bootstrap: str) -> Config:
    cfg = load_config(ROOT / "configs" / "example.yaml")
    return cfg.model_copy(update={
        "cells": cfg.cells.model_copy(update={"hex": cfg.cells.hex.model_copy(update={"sites": 1})}),
        "engine": cfg.engine.model_copy(update={"batch_size": 5000}),
        "kafka": cfg.kafka.model_copy(update={"bootstrap_servers": bootstrap, "partitions": 6,
                                              "topic_prefix": f"bench{uuid.uuid4().hex[:6]}."}),
    })


def _feedback_values(n: int, rng: np.random.Generator, start: int = 0) -> list[tuple[bytes, bytes]]:
    apps = {"video": (0.2, 20.0), "download": (0.2, 50.0)}
    names = sorted(apps)
    sig = list(schemas.Signal)
    out = []
    for i in range(start, start + n):
        u = f"u{int(rng.integers(USERS))}"
        app = names[i % 2]
        s = sig[int(rng.integers(len(sig)))]
        ev = schemas.Feedback(event_id=f"f{i}", ts=float(i), user_id=u, cell_id="s0-0", app=app, signal=s,
                              qos=float(rng.uniform(*apps[app])),
                              rating=int(rng.integers(1, 6)) if s is schemas.Signal.RATING else None)
        out.append((u.encode(), schemas.encode(ev)))
    return out


def _load(options: dict, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(acks=1, linger_ms=20, batch_size=1 << 20, **options)
    for k, v in values:
        p.send(topic, key=k, value=v)
    p.flush(120)
    p.close()


async def _bare_aiokafka(options: dict, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    from engine.worker import aiokafka_options

    c = AIOKafkaConsumer(topic, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
                         fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20, **aiokafka_options(options))
    await c.start()
    try:
        got, t0 = 0, None
        while got < n:
            batch = await c.getmany(timeout_ms=1000, max_records=10_000)
            for recs in batch.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for r in recs:
                    schemas.decode(r.value, expect=schemas.Feedback)
                got += sum(len(r) for r in batch.values())
        return n / (time.perf_counter() - t0)
    finally:
        await c.stop()


def _bare_kafka_python(options: dict, topic: str, n: int) -> float:
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
                      fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20, **options)
    try:
        got, t0 = 0, None
        while got < n:
            for recs in c.poll(timeout_ms=1000, max_records=10_000).values():
                if t0 is None:
                    t0 = time.perf_counter()
                for r in recs:
                    schemas.decode(r.value, expect=schemas.Feedback)
                got += len(recs)
        return n / (time.perf_counter() - t0)
    finally:
        c.close()


def _committed(admin: Any, group: str, topic: str) -> int:
    from kafka.errors import KafkaError

    try:
        offs = admin.list_group_offsets(group).get(group, {})
    except KafkaError:
        return 0
    return sum(o.offset for tp, o in offs.items() if tp.topic == topic)


def _engine_rate(options: dict, cfg: Config, topic: str, n: int, timeout_s: float) -> tuple[float, float]:
    """Sustained events/s between 10% and 90% of the stream, from the group's committed offsets."""
    from kafka import KafkaAdminClient

    from engine.faust_app import app_id

    admin = KafkaAdminClient(client_id="zot-bench", **options)
    try:
        marks: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = _committed(admin, app_id(cfg), topic)
            marks.append((time.perf_counter(), done))
            if done >= n:
                break
            time.sleep(0.05)
        lo = next(((t, d) for t, d in marks if d >= n // 10), None)
        hi = next(((t, d) for t, d in marks if d >= n * 9 // 10), None)
        if lo is None or hi is None or hi[0] <= lo[0]:
            return float("nan"), marks[-1][1] / max(n, 1)
        return (hi[1] - lo[1]) / (hi[0] - lo[0]), 1.0
    finally:
        admin.close()


def _latency(options: dict, cfg: Config, rate: float, seconds: float) -> dict[str, float]:
    """KPI -> decision latency while feedback flows at `rate` events/s."""
    return asyncio.run(_latency_async(options, cfg, rate, seconds))


async def _latency_async(options: dict, cfg: Config, rate: float, seconds: float) -> dict[str, float]:
    """The load: feedback at `rate`/s (sent every 5 ms, what is due) and one KPI report
    per cell every 100 ms; the latency of a report is from just before its send to
    the arrival of its decision (read_committed) at this process.

    asyncio + aiokafka, sleeping between sends: the load generator shares the
    machine with the broker and the worker, so it must not spin (a busy poll loop
    would take a core from the system it measures).
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from engine.worker import aiokafka_options
    from simulators.radio import build_layout

    p = cfg.kafka.topic_prefix
    fb_t, kpi_t = (registry.with_prefix(t, p) for t in (registry.FEEDBACK, registry.KPI))
    alloc_t = registry.with_prefix(registry.ALLOCATIONS, p)
    _, cells = build_layout(cfg)
    opts = aiokafka_options(options)
    producer = AIOKafkaProducer(acks=1, linger_ms=0, max_batch_size=1 << 18, **opts)
    consumer = AIOKafkaConsumer(isolation_level="read_committed", enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=100, **opts)
    await producer.start()
    await consumer.start()
    sent: dict[str, float] = {}
    lat: list[float] = []
    users = [schemas.UserChannel(user_id=f"u{i}", spectral_efficiency=2.0, app="video") for i in range(20)]
    try:
        n_fb = len(await producer.client._wait_on_metadata(fb_t))
        # Keys, values and partitions made before the clock starts (the default partitioner's choice).
        values = [(k, v, registry.partition_for(k, n_fb))
                  for k, v in _feedback_values(int(rate * seconds) + 1, np.random.default_rng(3), start=10**8)]
        tps = [TopicPartition(alloc_t, q) for q in sorted(await consumer._client._wait_on_metadata(alloc_t))]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve "end" before the first KPI is sent

        async def collect(sending_until: float, grace_s: float = 10.0) -> None:
            # While the load runs, then until every decision arrived (at most grace_s more).
            while time.perf_counter() < sending_until or (sent and time.perf_counter() < sending_until + grace_s):
                got = await consumer.getmany(timeout_ms=20)
                arrived = time.perf_counter()
                for recs in got.values():
                    for r in recs:
                        eid = json.loads(r.value)["event_id"]
                        if eid in sent:
                            lat.append(arrived - sent.pop(eid))

        # Warm-up, not measured: the first decisions of a fresh worker load (or JIT-compile)
        # the Numba solver, which the throughput phase (feedback only) never called.
        for c in cells:
            ev = schemas.CellKpi(event_id=f"warm-{c}", ts=0.0, cell_id=c, epoch=0, prb_total=51, users=users)
            sent[f"alloc-{c}-0"] = time.perf_counter()
            await producer.send(kpi_t, key=c.encode(), value=schemas.encode(ev))
        await collect(time.perf_counter(), grace_s=110.0)  # until every warm-up decision arrived
        warm_ms = 1000 * max(lat) if lat else float("nan")
        lat.clear()
        sent.clear()

        t0 = time.perf_counter()
        reader = asyncio.create_task(collect(t0 + seconds))
        i, epoch, next_kpi = 0, 0, t0
        while (now := time.perf_counter()) - t0 < seconds:
            due = min(int((now - t0) * rate), len(values))
            if due > i:  # what is due, one producer batch per partition
                batches: dict[int, Any] = {}
                for k, v, part in values[i:due]:
                    b = batches.get(part)
                    if b is None:
                        b = batches[part] = producer.create_batch()
                    if b.append(key=k, value=v, timestamp=None) is None:
                        await producer.send_batch(b, fb_t, partition=part)
                        b = batches[part] = producer.create_batch()
                        b.append(key=k, value=v, timestamp=None)
                for part, b in batches.items():
                    await producer.send_batch(b, fb_t, partition=part)
                i = due
            if now >= next_kpi:
                epoch += 1
                for c in cells:
                    ev = schemas.CellKpi(event_id=f"k{epoch}-{c}", ts=float(epoch), cell_id=c, epoch=epoch,
                                         prb_total=51, users=users)
                    value = schemas.encode(ev)
                    sent[f"alloc-{c}-{epoch}"] = time.perf_counter()
                    await producer.send(kpi_t, key=c.encode(), value=value)
                next_kpi += 0.1
            await asyncio.sleep(0.005)
        await reader
        ms = np.array(lat) * 1000
        return {"p50_ms": float(np.percentile(ms, 50)) if ms.size else float("nan"),
                "p99_ms": float(np.percentile(ms, 99)) if ms.size else float("nan"),
                "max_ms": float(ms.max()) if ms.size else float("nan"),
                "decisions": int(ms.size), "missing": len(sent), "offered_feedback_rate": rate,
                "warm_up_decision_ms": warm_ms,
                "feedback_rate": i / seconds}
    finally:
        await producer.stop()
        await consumer.stop()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _engine_run(options: dict, cfg: Config, tmp: Path, consumer: str, n: int, quick: bool,
                latency: bool) -> dict[str, Any]:
    """Load n feedback events, run one worker with this consumer on them; rate, latency, timers."""
    from engine.faust_app import app_id
    from engine.kafka_client import ensure_topics
    from engine.remote_engine import spawn_worker, wait_group_members, write_config
    from engine.state_changelog import ensure_changelog

    ensure_topics(options, cfg.kafka)
    ensure_changelog(options, cfg.kafka)
    fb_t = registry.with_prefix(registry.FEEDBACK, cfg.kafka.topic_prefix)
    _load(options, fb_t, _feedback_values(n, np.random.default_rng(1)))
    path = write_config(cfg, tmp / f"{consumer}.yaml")
    stats_file = tmp / f"{consumer}-stats.json"
    os.environ["ZOT_ENGINE_STATS"] = str(stats_file)
    try:
        worker = spawn_worker(path, "bench", tmp / f"{consumer}-worker.log", consumer=consumer)
    finally:
        os.environ.pop("ZOT_ENGINE_STATS")
    try:
        wait_group_members(options, app_id(cfg), 1, timeout_s=120)
        t0, c0 = time.perf_counter(), _cpu_s(worker.pid)
        rate, done = _engine_rate(options, cfg, fb_t, n, timeout_s=120 if quick else 240)
        t1, c1 = time.perf_counter(), _cpu_s(worker.pid)
        # The worker's CPU over the phase: the share of one core it got on this shared
        # machine, and its CPU per event (robust to what else runs).
        out: dict[str, Any] = {"events": n, "events_per_s": rate, "fraction_done": done, "wall_s": t1 - t0,
                               "worker_core_share": (c1 - c0) / (t1 - t0),
                               "worker_cpu_us_per_event": (c1 - c0) / n * 1e6}
        if latency:
            g1 = _cpu_s(os.getpid())
            out["latency"] = _latency(options, cfg, rate / 2 if np.isfinite(rate) else 1000.0,
                                      seconds=4.0 if quick else 20.0)
            t2, c2 = time.perf_counter(), _cpu_s(worker.pid)
            out["latency"]["worker_core_share"] = (c2 - c1) / (t2 - t1)
            out["latency"]["load_generator_core_share"] = (_cpu_s(os.getpid()) - g1) / (t2 - t1)
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    keys = ("parse_s", "learn_s", "decide_s", "handle_s", "commit_s", "tail_s", "fetch_s", "offsets_s")
    out["where_the_time_goes_s"] = {k: stats.get(k) for k in (*keys, "batches", "messages")}
    if stats.get("messages"):  # the same, per event (worker totals over every batch, both phases)
        out["us_per_event"] = {k.removesuffix("_s"): round(stats[k] / stats["messages"] * 1e6, 1)
                               for k in keys if stats.get(k) is not None}
        out["events_per_batch"] = round(stats["messages"] / max(stats.get("batches") or 1, 1), 1)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    from engine.infra import KafkaBroker
    from engine.kafka_client import client_options, ensure_topics

    port = int(os.environ.get("ZOT_BENCH_KAFKA_PORT", "39192"))
    broker = KafkaBroker(ROOT, port=port, controller_port=port + 1)
    started = not broker.answers()
    if started:
        broker.start()
    tmp = Path(tempfile.mkdtemp(prefix="zot-bench-stream-"))
    try:
        n_batch, n_faust = (40_000, 8_000) if quick else (300_000, 30_000)
        cfg = _config(broker.bootstrap)
        options = client_options(cfg.kafka, secrets_from_env(cfg))
        batch = _engine_run(options, cfg, tmp, "batch", n_batch, quick, latency=True)
        # The bare consumers read the topic the batch engine just read.
        fb_t = registry.with_prefix(registry.FEEDBACK, cfg.kafka.topic_prefix)
        bare_aio = asyncio.run(_bare_aiokafka(options, fb_t, n_batch))
        bare_kp = _bare_kafka_python(options, fb_t, n_batch)
        bare = max(bare_aio, bare_kp)
        faust = _engine_run(options, _config(broker.bootstrap), tmp, "faust", n_faust, quick, latency=False)
        rate = batch["events_per_s"]
        lat = batch["latency"]
        return {
            "bench": "stream",
            "bare_consumer_events_per_s": {"aiokafka": bare_aio, "kafka-python": bare_kp},
            "engine_batch_consumer": batch,
            "engine_faust_agent": faust,
            "note": "one worker process, 6 partitions, config batch_size 5000; targets are for the batch "
                    "consumer (`zot engine`, the default); the Faust agent's rate is reported beside it. "
                    "Timers are worker totals over both phases (us_per_event: divided by the messages): "
                    "parse = decode+validate, learn = posterior update + profiles, decide = KPI solves, "
                    "handle = all three, commit = the Kafka transaction (outputs + changelog + offsets), "
                    "tail = reading the changelog before decisions, fetch = waiting in getmany, offsets = "
                    "waiting for the group offset commit. worker_core_share: CPU seconds the worker got per "
                    "wall second in that phase (2 cores shared with the broker and the load generator).",
            "targets": [
                {"name": "engine / bare consumer (feedback events/s)", "value": rate / bare if bare else float("nan"),
                 "op": ">=", "goal": 0.5, "unit": "ratio"},
                {"name": "engine feedback events/s", "value": rate, "op": ">=", "goal": 50_000, "unit": "events/s"},
                {"name": "KPI -> decision latency p99 at half load", "value": lat["p99_ms"], "op": "<=",
                 "goal": 100.0, "unit": "ms"},
                {"name": "KPI -> decision latency p50 at half load", "value": lat["p50_ms"], "op": "<=",
                 "goal": 100.0, "unit": "ms"},
            ],
        }
    finally:
        if started:
            broker.stop()
