"""The Faust app of an engine worker: one agent over the input topics, in batches.

The agent reads the four input topics as one stream (Faust's consumer group
spreads their partitions over the workers), takes events in batches
(`stream.take_events`, so Faust's per-event cost is paid once per batch where it
can be) and hands each batch to `TransactionalEngine.process` (engine/worker.py),
which calls the same `EngineCore.handle` as the embedded runner and publishes
outputs + state changelog + offsets in one Kafka transaction. Faust acks the
batch's events (and so moves the group's committed offsets) only after that
transaction has committed.

Faust's own exactly-once mode is not used: it keeps one transactional producer
per *output* partition and commits them one after another, so a crash between
two of those commits would leave a batch half-visible. One transaction per batch
has no such window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from engine import topics as registry
from engine.bus import Message
from engine.config import Config
from engine.worker import TransactionalEngine, last_offsets

log = logging.getLogger("zot.engine")


def app_id(cfg: Config) -> str:
    """The Faust app id, which is also the input consumer group id."""
    return f"{cfg.kafka.topic_prefix}engine"


CONSUMERS = ("batch", "faust")
DEFAULT_CONSUMER = "batch"  # several times the agent's rate (docs/engine.md, BENCHMARKS.md)


def build_app(cfg: Config, options: dict[str, Any], worker_id: str, cells: set[str] | None = None,
              data_dir: Path | None = None, consumer: str = DEFAULT_CONSUMER) -> tuple[Any, TransactionalEngine]:
    """A Faust app that drives a `TransactionalEngine`; returns both.

    consumer="batch" (default): a task of the app reads the inputs with aiokafka's
    `getmany` (whole fetches, no per-event Faust machinery: several times the
    agent's rate), with the same transactional step.
    consumer="faust": a Faust agent reads them (`stream.take_events`).
    Both use the same consumer group.
    """
    import faust

    if consumer not in CONSUMERS:
        raise ValueError(f"consumer {consumer!r}: allowed {CONSUMERS}")
    aid = app_id(cfg)
    data_dir = data_dir or Path(tempfile.gettempdir()) / "zot-engine" / f"{aid}-{worker_id}"
    data_dir.mkdir(parents=True, exist_ok=True)  # Faust keeps its local files here (no tables: little)
    settings: dict[str, Any] = dict(
        broker=[f"kafka://{s}" for s in options["bootstrap_servers"]],
        web_enabled=False,
        datadir=str(data_dir),
        # Offsets only move after our transaction committed (acks); committing
        # them often keeps redelivery after a crash short.
        broker_commit_interval=0.2,
        broker_commit_every=max(cfg.engine.batch_size, 1000),
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        stream_buffer_maxsize=max(4 * cfg.engine.batch_size, 4096),
        broker_max_poll_records=max(cfg.engine.batch_size, 500),
        producer_linger=0.005,
        # A SIGKILLed worker's partitions move once its session expires: keep that short.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    if cfg.kafka.security_protocol.startswith("SASL"):
        settings["broker_credentials"] = faust.SASLCredentials(
            username=options["sasl_plain_username"], password=options["sasl_plain_password"],
            mechanism=options["sasl_mechanism"],
            ssl_context=None if cfg.kafka.security_protocol == "SASL_PLAINTEXT" else _ssl_context(),
        )
    # In batch mode the input group belongs to the aiokafka consumer; Faust's own
    # consumer (it always joins a group) must use another one.
    app = faust.App(aid if consumer == "faust" else f"{aid}-host", **settings)
    engine = TransactionalEngine(cfg, options, transactional_id=f"{aid}-worker-{worker_id}", cells=cells)
    names = [registry.with_prefix(t, cfg.kafka.topic_prefix) for t in registry.INPUTS]
    inputs = app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    batch = cfg.engine.batch_size

    if consumer == "faust":
        @app.agent(inputs, name="engine")
        async def engine_agent(stream: Any) -> None:
            async for events in stream.take_events(batch, within=0.05):
                msgs = [Message(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                                e.message.value, int(e.message.timestamp * 1000)) for e in events]
                assigned = {(tp.topic, tp.partition) for tp in app.consumer.assignment()}
                await engine.process(msgs, assigned=assigned)
    else:
        @app.task
        async def engine_batches() -> None:
            await _batch_loop(app, engine, options, aid, names, batch, client_id=f"zot-engine-{worker_id}")

    @app.task
    async def start_engine() -> None:
        # Recover before the first batch; process() would also do it lazily.
        async with engine._lock:
            if engine._producer is None:
                await engine.start()

    if cfg.engine.epoch_trigger == "timer":
        @app.timer(cfg.engine.epoch_s)
        async def epoch_timer() -> None:
            # Decides the latest report of each cell this worker received since the last tick.
            await engine.tick()

    if cfg.engine.profile_interval_s > 0:
        @app.timer(cfg.engine.profile_interval_s / 10)
        async def profile_flush() -> None:
            # The profiles of users marked an interval ago, one each (deferred profiles):
            # ten small flushes per interval rather than one that stalls the decisions.
            await engine.flush_profiles()

        @app.on_before_shutdown.connect
        async def flush_on_stop(sender: Any, **kwargs: Any) -> None:
            # A clean stop publishes what is pending (after a crash the changelog's marks do).
            try:
                await asyncio.wait_for(engine.flush_profiles(due_only=False), timeout=15)
            except Exception as exc:  # noqa: BLE001 - stopping anyway; the marks stay in the changelog
                log.warning("profiles pending at shutdown not flushed (%s: %s)", type(exc).__name__, exc)

    @app.timer(1.0)
    async def meter_tick() -> None:
        # Without batches `record` never runs: the timer closes the meter's intervals.
        if engine.meter is not None:
            engine.meter.tick()

    if consumer == "faust":
        # Faust's consumer reads the inputs: its rebalances move them. (In batch mode it
        # reads none, and its group rebalances on its own, e.g. when its leader topic
        # appears; the batch loop's consumers have their own listener, _Lane.)
        @app.on_partitions_assigned.connect
        async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            # New partitions may carry changelog offsets another worker wrote: read them first.
            engine.must_tail = True

        @app.on_partitions_revoked.connect
        async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            engine.must_tail = True

    return app, engine


class _Lane:
    """One aiokafka consumer of the engine's group and its offsets: what was
    processed (owed) and the group commit in flight. Commits are overlapped with
    the next step (one in flight): a crash before one lands only redelivers
    messages the changelog's offsets already mark as applied."""

    def __init__(self, engine: TransactionalEngine, options: dict[str, Any], group: str, client_id: str,
                 topics: list[str], **consumer_options: Any) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        from engine.worker import aiokafka_options

        self.engine = engine
        self.pending: asyncio.Task | None = None  # the group offset commit in flight
        self.in_flight: dict[Any, int] = {}  # what it commits
        self.owed: dict[Any, int] = {}  # next offsets processed but not known to be committed
        lane = self

        class Rebalance(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                engine.must_tail = True
                # Commit what we processed before the partitions move.
                await lane.settle()
                lane.commit_owed()
                await lane.settle()
                for tp in revoked:
                    lane.owed.pop(tp, None)  # another worker's now; the changelog's offsets dedupe the rest

            async def on_partitions_assigned(self, assigned: Any) -> None:
                engine.must_tail = True  # their changelog offsets may come from another worker

        # Range assignment: partition i of every user-keyed topic goes to the same
        # worker (a user's context, feedback and interactions meet in one process),
        # whatever the number of workers; round-robin only does so when it divides.
        self.consumer = AIOKafkaConsumer(group_id=group, client_id=client_id, enable_auto_commit=False,
                                         auto_offset_reset="earliest", session_timeout_ms=10_000,
                                         heartbeat_interval_ms=1_000,
                                         partition_assignment_strategy=(RangePartitionAssignor,),
                                         **consumer_options, **aiokafka_options(options))
        self.consumer.subscribe(topics, listener=Rebalance())

    async def settle(self) -> None:
        """Wait for the commit in flight; what it could not commit stays owed (retried)."""
        if self.pending is None:
            return
        task, self.pending = self.pending, None
        t0 = time.perf_counter()
        try:
            await task
        except Exception as exc:  # noqa: BLE001 - retried below; meanwhile a redelivery is deduped
            log.warning("committing the group offsets failed (%s: %s); will retry", type(exc).__name__, exc)
        else:
            for tp, off in self.in_flight.items():
                if self.owed.get(tp) == off:
                    del self.owed[tp]
        self.engine.stats.offsets_s += time.perf_counter() - t0

    def commit_owed(self) -> None:
        if self.owed and self.pending is None:
            # Only partitions still ours: aiokafka refuses a commit that names another
            # member's partition, and one such entry would hold back all the others.
            mine = self.consumer.assignment()
            for tp in [tp for tp in self.owed if tp not in mine]:
                del self.owed[tp]
            if self.owed:
                self.in_flight = dict(self.owed)
                self.pending = asyncio.ensure_future(self.consumer.commit(self.in_flight))

    def processed(self, offsets: dict[tuple[str, int], int]) -> None:
        """The messages before these next offsets took effect (or were skipped: already
        applied, or their partition moved to another worker meanwhile): the offsets are owed."""
        from aiokafka import TopicPartition

        for (topic, part), nxt in offsets.items():
            tp = TopicPartition(topic, part)
            if nxt > self.owed.get(tp, -1):
                self.owed[tp] = nxt

    async def after_step(self) -> None:
        await self.settle()
        self.commit_owed()

    async def idle(self) -> None:
        # Finish the commit in flight, and retry one that failed (e.g. during a broker
        # restart), or the group's offsets would stay behind until more input.
        if self.pending is not None and self.pending.done():
            await self.settle()
        self.commit_owed()

    async def close(self) -> None:
        try:
            await self.settle()
            self.commit_owed()
            await self.settle()
        finally:
            if self.pending is not None:
                self.pending.cancel()
            await self.consumer.stop()


def _records(got: dict[Any, list[Any]]) -> list[Any]:
    """getmany's records of every partition, in one list."""
    return [r for recs in got.values() for r in recs]


def group_members(workers: int, consumer: str = DEFAULT_CONSUMER) -> int:
    """Members of the engine's consumer group that `workers` workers make."""
    return workers * (2 if consumer == "batch" else 1)


async def _batch_loop(app: Any, engine: TransactionalEngine, options: dict[str, Any], group: str,
                      topics: list[str], batch: int, client_id: str) -> None:
    """Read the inputs in whole fetches and run the transactional step on them.

    Two consumers in the engine's group: one for the user-keyed topics (feedback,
    context, interactions: large fetches, `engine.fetch_min_bytes`, cheap for the
    broker) and one for KPI reports (each fetched as soon as it is there). A step
    takes what the user lane's fetcher holds, up to `batch` messages: under load
    batches grow (the per-transaction cost is shared by more events), when the
    worker keeps up they stay small. KPI reports jump the queue: a step checks for
    them every `engine.kpi_check_every` events, decides them and commits what it
    has done so far; the rest of its batch goes to the next step.
    """
    e = engine.cfg.engine
    kpi_topic = engine.kpi_topic
    users = _Lane(engine, options, group, f"{client_id}-users", [t for t in topics if t != kpi_topic],
                  max_poll_records=batch, fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20,
                  fetch_min_bytes=e.fetch_min_bytes, fetch_max_wait_ms=e.fetch_max_wait_ms)
    # A short long-poll: aiokafka keeps one fetch per broker in flight, so a partition a
    # step has just drained is fetched again only when the poll for the others returns.
    kpis = _Lane(engine, options, group, f"{client_id}-kpi", [kpi_topic], fetch_max_wait_ms=e.kpi_fetch_max_wait_ms)
    lanes = (users, kpis)
    for lane in lanes:
        await lane.consumer.start()
    stats = engine.stats

    held: list[Any] = []  # KPI reports taken from their consumer to see whether any wait

    async def urgent() -> list[Any]:
        got = await kpis.consumer.getmany(timeout_ms=0)
        out = held + _records(got)
        held.clear()
        return out

    async def kpi_waiting() -> bool:
        if not held:
            got = await kpis.consumer.getmany(timeout_ms=0)
            held.extend(_records(got))
        return bool(held)

    engine.urgent_waiting = kpi_waiting

    # The user lane is read a chunk at a time, as the step goes (engine.process's
    # `more`): aiokafka decodes records when they are taken, ~3.5 us each, on the
    # event loop's thread, and a whole batch at once (20,000) held up KPI reads for
    # ~70 ms. A step stops pulling when the assignment changed under it: its
    # `assigned` would skip (and so lose) a newly assigned partition's messages.
    chunk = max(1, min(e.kpi_check_every, batch))

    def assignment() -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for lane in lanes for tp in lane.consumer.assignment()}

    async def pull(timeout_ms: int = 0) -> list[Any]:
        # aiokafka's records as they are (engine.bus.Message's attributes): a copy
        # per message cost ~10% of the worker's CPU.
        got = await users.consumer.getmany(timeout_ms=timeout_ms, max_records=chunk)
        return _records(got)

    carry: list[Any] = []  # taken from the user lane, not yet processed (a step made way for KPIs)
    try:
        while not app.should_stop:
            t0 = time.perf_counter()
            if not carry:
                carry = await pull(timeout_ms=5)
            stats.fetch_s += time.perf_counter() - t0
            assigned = assignment()

            async def more() -> list[Any]:
                return await pull() if assignment() == assigned else []

            step = await engine.process(carry, assigned=assigned, urgent=urgent, more=more, limit=batch)
            if not step.consumed and not step.urgent:  # nothing came in
                for lane in lanes:
                    await lane.idle()
                continue
            # After the transaction: a crash in between only redelivers, and the
            # changelog's offsets make the redelivery a no-op.
            users.processed(step.offsets)
            kpis.processed({tp: o + 1 for tp, o in last_offsets(step.urgent).items()})
            carry = carry[step.consumed:]
            for lane in lanes:
                await lane.after_step()
    finally:
        for lane in lanes:
            await lane.close()


def _ssl_context() -> Any:
    import ssl

    return ssl.create_default_context()


def run_worker(cfg: Config, options: dict[str, Any], worker_id: str, cells: set[str] | None = None,
               loglevel: str = "warning", consumer: str = DEFAULT_CONSUMER) -> None:
    """Start a worker and block until it is stopped (SIGTERM/SIGINT stop it cleanly)."""
    import faust

    from engine import metrics

    from engine.worker import tune_gc

    tune_gc()
    app, engine = build_app(cfg, options, worker_id, cells, consumer=consumer)
    # Per-worker series (events/s, dead letters/s, slowest batch) to the configured sink:
    # the time-series server, or line protocol under runs/engine-<worker> by default.
    sink = metrics.sink_for(cfg, Path("runs") / f"engine-{worker_id}")
    engine.meter = metrics.WorkerMeter(sink, worker=str(worker_id), scenario=cfg.name)

    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        engine.meter.emit()
        sink.close()
        log.info("engine worker %s: %s", worker_id, engine.stats)
        stats_file = os.environ.get("ZOT_ENGINE_STATS")
        if stats_file:  # where the time went, for `zot bench stream`
            items = engine.core.interests.item_summary() if engine.core.interests is not None else None
            Path(stats_file).write_text(json.dumps({**dataclasses.asdict(engine.stats),
                                                    **dataclasses.asdict(engine.core.counters),
                                                    "item_models": items}))
