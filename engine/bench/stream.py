"""`zot bench stream`: the engine on the local Kafka broker against a bare consumer.

Throughput: N feedback events are loaded into the feedback topic first; then
(1) a bare consumer (aiokafka and kafka-python, the faster counts) reads and
decodes them (the engine's own feedback decoder, nothing else), and (2)
one `zot engine` worker process consumes them, updates the posteriors and
publishes profiles, changelog and offsets in its transactions. The engine's
sustained rate is taken from the consumer group's committed offsets between 10%
and 90% of the stream (worker start-up excluded).

Latency: at half the engine's measured rate, feedback keeps flowing (through
kcat, what is due every 5 ms) while every cell sends a KPI report every 100 ms; the latency
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
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from engine import schemas
from engine import topics as registry
from engine.config import Config, load_config, secrets_from_env

ROOT = Path(__file__).resolve().parents[2]
USERS = 2000
# Messages a step takes from a backlog: each transaction (~10 ms of round trips, a
# changelog record per touched user) is shared by 20,000 events; KPI reports do
# not wait for a step (engine.kpi_check_every).
BATCH = 20_000


def _config(bootstrap: str) -> Config:
    cfg = load_config(ROOT / "configs" / "example.yaml")
    return cfg.model_copy(update={
        "cells": cfg.cells.model_copy(update={"hex": cfg.cells.hex.model_copy(update={"sites": 1})}),
        "engine": cfg.engine.model_copy(update={"batch_size": BATCH}),
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


def _kcat_producer(kcat: str, bootstrap: str, topic: str, *extra: str) -> list[str]:
    """kcat producing key<TAB>value lines, partitioned as Kafka's default (murmur2)."""
    return [kcat, "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-X", "topic.partitioner=murmur2_random", *extra]


def _kcat_lines(values: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(k + b"\t" + v + b"\n" for k, v in values)


def _load_kcat(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], tmp: Path) -> None:
    """Produce with kcat (librdkafka, C): several times faster than the engine reads, so
    a load that starts after the workers joined never holds them back."""
    import subprocess

    from engine.infra import ensure_debian_package

    path = tmp / f"{topic}.tsv"
    path.write_bytes(_kcat_lines(values))
    res = subprocess.run(_kcat_producer(ensure_debian_package("kcat", "kcat"), bootstrap, topic,
                                        "-X", "linger.ms=20", "-l", str(path)),
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"kcat could not load {topic}: {res.stderr[-500:]}")


def _load(options: dict, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(acks=1, linger_ms=20, batch_size=1 << 20, **options)
    for k, v in values:
        p.send(topic, key=k, value=v)
    p.flush(120)
    p.close()


def _decode(value: bytes) -> object:
    """What the engine does to decode a feedback message (operators/parse.py), nothing more."""
    fields = schemas.decode_feedback_fields(value)
    return fields if fields is not None else schemas.decode(value, expect=schemas.Feedback)


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
                    _decode(r.value)
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
                    _decode(r.value)
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


def _latency(options: dict, cfg: Config, rate: float, seconds: float, worker_pid: int,
             broker_pid: int | None = None, settle_s: float = 5.0) -> dict[str, Any]:
    """KPI -> decision latency while feedback flows at `rate` events/s."""
    return asyncio.run(_latency_async(options, cfg, rate, seconds, worker_pid, broker_pid, settle_s))


async def _latency_async(options: dict, cfg: Config, rate: float, seconds: float,
                         worker_pid: int, broker_pid: int | None = None, settle_s: float = 5.0) -> dict[str, Any]:
    """The load: feedback at `rate`/s (what is due every 5 ms, written to a kcat
    producer's stdin) and one KPI report per cell every 100 ms (aiokafka); the latency
    of a report is from just before its send to the arrival of its decision
    (read_committed) at this process. The load runs `settle_s` before `seconds` of
    measurement: latency at a steady load, not the first seconds after it starts (in
    those one commit took 200 ms in a trial run); reports sent then must still get
    their decisions, and their p99 is reported as `settling_p99_ms`.

    Sleeping between sends: the load generator shares the machine with the broker
    and the worker, so it must not spin (a busy poll loop would take a core from the
    system it measures).
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from engine.infra import ensure_debian_package
    from engine.worker import aiokafka_options
    from simulators.radio import build_layout

    kcat = ensure_debian_package("kcat", "kcat")

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
    sent: dict[str, float] = {}  # decision event id -> when its report was sent
    reader: asyncio.Task | None = None
    users = [schemas.UserChannel(user_id=f"u{i}", spectral_efficiency=2.0, app="video") for i in range(20)]
    try:
        # Keys and values made before the clock starts.
        values = _feedback_values(int(rate * (settle_s + seconds)) + 1, np.random.default_rng(3), start=10**8)
        tps = [TopicPartition(alloc_t, q) for q in sorted(await consumer._client._wait_on_metadata(alloc_t))]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve "end" before the first KPI is sent

        # Warm-up, not measured: the first decisions of a fresh worker load (or JIT-compile)
        # the Numba solver, which the throughput phase (feedback only) never called.
        for c in cells:
            ev = schemas.CellKpi(event_id=f"warm-{c}", ts=0.0, cell_id=c, epoch=0, prb_total=51, users=users)
            sent[f"alloc-{c}-0"] = time.perf_counter()
            await producer.send(kpi_t, key=c.encode(), value=schemas.encode(ev))
        warmed = asyncio.Event()
        warmed.set()
        warm = await collect_decisions(consumer.getmany, sent, warmed, grace_s=110.0)  # every warm-up decision
        warm_ms = 1000 * max(w for _, w in warm) if warm else float("nan")
        sent.clear()

        # The feedback load goes through kcat (librdkafka, C) fed from a pipe: a Python
        # producer took half a core at 15k events/s on this 2-core machine, competing
        # with the worker it measures. Keys partition as Kafka's default (murmur2).
        # librdkafka's default linger (5 ms): at 2 ms the broker took ~0.27 of a core for
        # this load instead of ~0.17 (produce requests of a few records each).
        buf = _kcat_lines(values)
        ends = np.cumsum([len(k) + len(v) + 2 for k, v in values]).tolist()
        feeder = await asyncio.create_subprocess_exec(
            *_kcat_producer(kcat, options["bootstrap_servers"][0], fb_t, "-X", "linger.ms=5", "-X", "acks=1"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        t0 = time.perf_counter()
        t_measure = t0 + settle_s
        pids = {"worker": worker_pid, "broker": broker_pid, "load_generator": os.getpid(), "kcat": feeder.pid}
        cpu0: dict[str, float] | None = None
        load_over = asyncio.Event()
        reader = asyncio.create_task(collect_decisions(consumer.getmany, sent, load_over, grace_s=10.0))
        deliveries: list[asyncio.Future] = []  # each report's send: a report the broker never got has no decision
        i, epoch, next_kpi, i_measure, n_settling = 0, 0, t0, 0, 0
        try:
            while (now := time.perf_counter()) < t_measure + seconds:
                if cpu0 is None and now >= t_measure:  # the CPU shares are of the measured window
                    cpu0, i_measure, t_measure = {k: _cpu_s(pid) for k, pid in pids.items()}, i, now
                due = min(int((now - t0) * rate), len(values))
                if due > i:  # what is due, one write
                    feeder.stdin.write(buf[ends[i - 1] if i else 0:ends[due - 1]])
                    await feeder.stdin.drain()
                    i = due
                if now >= next_kpi:
                    epoch += 1
                    n_settling += len(cells) if now < t_measure else 0
                    for c in cells:
                        ev = schemas.CellKpi(event_id=f"k{epoch}-{c}", ts=float(epoch), cell_id=c, epoch=epoch,
                                             prb_total=51, users=users)
                        value = schemas.encode(ev)
                        sent[f"alloc-{c}-{epoch}"] = time.perf_counter()
                        deliveries.append(await producer.send(kpi_t, key=c.encode(), value=value))
                    next_kpi += 0.1
                await asyncio.sleep(0.005)
            # CPU shares while the load ran: what the worker got, and what the load took.
            cpu1 = {k: _cpu_s(pid) for k, pid in pids.items()}
            t_end = time.perf_counter()
            shares = {f"{k}_core_share": (cpu1[k] - cpu0[k]) / (t_end - t_measure) for k in cpu0}
        finally:
            load_over.set()
            feeder.stdin.close()
            err = (await asyncio.wait_for(feeder.stderr.read(), 30)).decode(errors="replace")
            if await asyncio.wait_for(feeder.wait(), 30) != 0:
                raise RuntimeError(f"kcat (the feedback load) failed: {err[-500:]}")
        matched = await reader
        lat_sent = [t for t, _ in matched]  # when the report of each latency was sent
        lat = [w for _, w in matched]
        undelivered = sum(1 for f in deliveries if not f.done() or f.cancelled() or f.exception() is not None)
        measured = np.array(lat_sent) >= t_measure
        all_ms = np.array(lat) * 1000
        ms, settling = all_ms[measured], all_ms[~measured]
        return {"p50_ms": float(np.percentile(ms, 50)) if ms.size else float("nan"),
                "p99_ms": float(np.percentile(ms, 99)) if ms.size else float("nan"),
                "max_ms": float(ms.max()) if ms.size else float("nan"),
                "decisions": int(ms.size), "missing": len(sent), "reports_not_delivered": undelivered,
                "offered_feedback_rate": rate,
                "warm_up_decision_ms": warm_ms, "settle_s": settle_s, "settling_reports": n_settling,
                "settling_p99_ms": float(np.percentile(settling, 99)) if settling.size else float("nan"),
                "feedback_rate": (i - i_measure) / (t_end - t_measure), **shares}
    finally:
        if reader is not None and not reader.done():  # the load failed: its error is the one to see
            reader.cancel()
        await producer.stop()
        await consumer.stop()


async def collect_decisions(getmany: Callable[..., Awaitable[dict[Any, list[Any]]]], sent: dict[str, float],
                            load_over: asyncio.Event, grace_s: float) -> list[tuple[float, float]]:
    """Read decisions (`getmany`, an aiokafka consumer's) and match them to the reports
    in `sent` (decision event id -> when its report was sent), which the load adds to
    and this removes from; return (sent at, seconds to the decision) of each match.

    It reads while the load runs, then until every report in `sent` has its decision
    (at most `grace_s` after `load_over` is set). The end is the load's own signal, not
    a time: a reader that stopped at the load's planned end, the moment `sent` was
    empty, missed the last round, sent on that very tick (before session 9, the
    "missing round": 3 reports of one round without a decision, ~1 run in 10).
    """
    out: list[tuple[float, float]] = []
    over_at: float | None = None
    while True:
        if load_over.is_set():
            over_at = over_at or time.perf_counter()
            if not sent or time.perf_counter() >= over_at + grace_s:
                return out
        got = await getmany(timeout_ms=20)
        arrived = time.perf_counter()
        for recs in got.values():
            for r in recs:
                t_sent = sent.pop(json.loads(r.value)["event_id"], None)
                if t_sent is not None:
                    out.append((t_sent, arrived - t_sent))


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc; NaN elsewhere or unknown)."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _engine_run(options: dict, cfg: Config, tmp: Path, consumer: str, n: int, quick: bool,
                latency: bool, workers: int = 1, broker_pid: int | None = None) -> dict[str, Any]:
    """Load n feedback events, run `workers` worker processes with this consumer on
    them; rate, CPU shares, and (one worker) latency and the worker's timers."""
    from engine.faust_app import app_id
    from engine.kafka_client import ensure_topics
    from engine.remote_engine import spawn_worker, wait_group_members, write_config
    from engine.state_changelog import ensure_changelog

    ensure_topics(options, cfg.kafka)
    ensure_changelog(options, cfg.kafka)
    fb_t = registry.with_prefix(registry.FEEDBACK, cfg.kafka.topic_prefix)
    values = _feedback_values(n, np.random.default_rng(1))
    if workers == 1:  # loaded before the worker starts: it reads a full topic
        _load(options, fb_t, values)
    name = f"{consumer}-{workers}"
    path = write_config(cfg, tmp / f"{name}.yaml")
    stats_file = tmp / f"{name}-stats.json"
    procs = []
    try:
        for i in range(workers):
            if i == 0:  # the first worker writes its timers at exit
                os.environ["ZOT_ENGINE_STATS"] = str(stats_file)
            try:
                procs.append(spawn_worker(path, f"bench{i}", tmp / f"{name}-worker{i}.log", consumer=consumer))
            finally:
                os.environ.pop("ZOT_ENGINE_STATS", None)
        wait_group_members(options, app_id(cfg), workers, timeout_s=120, consumer=consumer)
        if workers > 1:
            # Loaded once every worker has joined: a full topic would be half read by the
            # first worker before the second one got its partitions.
            _load_kcat(options["bootstrap_servers"][0], fb_t, values, tmp)
        t0, c0, b0 = time.perf_counter(), [_cpu_s(w.pid) for w in procs], _cpu_s(broker_pid)
        rate, done = _engine_rate(options, cfg, fb_t, n, timeout_s=120 if quick else 240)
        t1, c1, b1 = time.perf_counter(), [_cpu_s(w.pid) for w in procs], _cpu_s(broker_pid)
        # Each worker's CPU over the phase: the share of one core it got on this shared
        # machine, and the CPU per event of all of them (robust to what else runs).
        out: dict[str, Any] = {"workers": workers, "events": n, "events_per_s": rate, "fraction_done": done,
                               "wall_s": t1 - t0,
                               "worker_core_share": [(b - a) / (t1 - t0) for a, b in zip(c0, c1)],
                               "broker_core_share": (b1 - b0) / (t1 - t0),
                               "worker_cpu_us_per_event": sum(b - a for a, b in zip(c0, c1)) / n * 1e6}
        if latency:
            out["latency"] = _latency(options, cfg, rate / 2 if np.isfinite(rate) else 1000.0,
                                      seconds=4.0 if quick else 20.0, worker_pid=procs[0].pid, broker_pid=broker_pid,
                                      settle_s=1.0 if quick else 5.0)
        for w in procs:
            w.send_signal(signal.SIGTERM)
        for w in procs:
            w.wait(60)
    finally:
        for w in procs:
            if w.poll() is None:
                w.kill()
                w.wait(10)
    if workers > 1:
        return out
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    if latency:
        from simulators.radio import build_layout

        # One unmeasured warm-up report per cell comes first, then those sent while the load settled.
        n_warm = len(build_layout(cfg)[1]) + out["latency"]["settling_reports"]
        for key in ("kpi_wait_ms", "kpi_commit_ms"):  # the worker's side of the KPI latency
            v = np.array((stats.get(key) or [])[n_warm:] or [np.nan])
            out["latency"][f"worker_{key}_p50_p99"] = [float(np.percentile(v, 50)), float(np.percentile(v, 99))]
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
        bpid = broker.pid()  # its CPU share: the broker shares the machine's cores with the engine
        batch = _engine_run(options, cfg, tmp, "batch", n_batch, quick, latency=True, broker_pid=bpid)
        # The bare consumers read the topic the batch engine just read.
        fb_t = registry.with_prefix(registry.FEEDBACK, cfg.kafka.topic_prefix)
        bare_aio = asyncio.run(_bare_aiokafka(options, fb_t, n_batch))
        bare_kp = _bare_kafka_python(options, fb_t, n_batch)
        bare = max(bare_aio, bare_kp)
        faust = _engine_run(options, _config(broker.bootstrap), tmp, "faust", n_faust, quick, latency=False)
        # Scale-out on this machine: two worker processes in one group on a fresh topic.
        two = _engine_run(options, _config(broker.bootstrap), tmp, "batch", n_batch, quick, latency=False,
                          workers=2, broker_pid=bpid)
        rate = batch["events_per_s"]
        lat = batch["latency"]
        return {
            "bench": "stream",
            "bare_consumer_events_per_s": {"aiokafka": bare_aio, "kafka-python": bare_kp},
            "engine_batch_consumer": batch,
            "engine_batch_consumer_two_workers": two,
            "engine_faust_agent": faust,
            "note": f"6 partitions, config batch_size {BATCH}. The ratio and the latency are for one worker process "
                    "with the batch consumer (`zot engine`, the default) against one bare consumer process; "
                    "events/s is also measured with two worker processes in one group (the engine's "
                    "scale-out; the bare consumer is one process). The Faust agent's rate is reported beside. "
                    "Timers are worker totals over both phases (us_per_event: divided by the messages): "
                    "parse = decode+validate, learn = posterior update + profiles, decide = KPI solves, "
                    "handle = all three, commit = the Kafka transaction (outputs + changelog + offsets), "
                    "tail = reading the changelog before decisions, fetch = waiting in getmany, offsets = "
                    "waiting for the group offset commit. worker_core_share: CPU seconds the worker got per "
                    "wall second in that phase (2 cores shared with the broker and the load generator).",
            "targets": [
                {"name": "engine / bare consumer (feedback events/s)", "value": rate / bare if bare else float("nan"),
                 "op": ">=", "goal": 0.5, "unit": "ratio"},
                {"name": "engine feedback events/s (one worker)", "value": rate, "op": ">=", "goal": 50_000,
                 "unit": "events/s"},
                {"name": "engine feedback events/s (two workers)", "value": two["events_per_s"], "op": ">=",
                 "goal": 50_000, "unit": "events/s"},
                {"name": "KPI -> decision latency p99 at half load", "value": lat["p99_ms"], "op": "<=",
                 "goal": 100.0, "unit": "ms"},
                {"name": "KPI -> decision latency p50 at half load", "value": lat["p50_ms"], "op": "<=",
                 "goal": 100.0, "unit": "ms"},
            ],
        }
    finally:
        if started:
            broker.stop()
        # ~50 MB of worker logs and load files a run; ZOT_BENCH_KEEP=1 keeps them to look into.
        if not os.environ.get("ZOT_BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
