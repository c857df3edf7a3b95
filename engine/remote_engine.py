"""The simulator's bus when the engine runs as `zot engine` worker processes on Kafka.

It keeps the order the embedded runner guarantees within a batch (context, then
feedback, then KPIs) across separate Kafka topics and processes:
`engine_step()` (called where the embedded engine would run) waits until the
engine's consumer group has committed every context/feedback message published
so far, which it does only after the transaction holding their effect committed
(engine/worker.py), and until that transaction's records are readable in the
state changelog; only then are the epoch's KPI reports released. `poll` of the
allocation topic then blocks until one decision per released KPI has arrived,
read with isolation_level=read_committed so aborted (crashed) attempts are never
seen. With that handshake a Kafka run takes the same decisions as the embedded
run of the same seed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from engine import topics as registry
from engine.bus import Message
from engine.config import Config
from engine.faust_app import app_id
from engine.state_changelog import changelog_topic


class EngineTimeout(RuntimeError):
    """The engine workers did not catch up or decide in time."""


class RemoteEngineBus:
    def __init__(self, cfg: Config, options: dict[str, Any], timeout_s: float = 120.0,
                 workers: list[Any] | None = None) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

        self.timeout_s = timeout_s
        self.workers = workers if workers is not None else []  # Popen of spawned workers: fail fast if one dies
        p = cfg.kafka.topic_prefix
        self.group = app_id(cfg)
        self.inputs = [registry.with_prefix(t, p) for t in registry.INPUTS]
        self.kpi = registry.with_prefix(registry.KPI, p)
        self.alloc = registry.with_prefix(registry.ALLOCATIONS, p)
        self._producer = KafkaProducer(acks="all", linger_ms=2, **options)
        self._admin = KafkaAdminClient(client_id="zot-sim-admin", **options)
        self._meta = KafkaConsumer(**options)
        self._decisions = KafkaConsumer(isolation_level="read_committed", enable_auto_commit=False, **options)
        tps = [TopicPartition(self.alloc, q) for q in sorted(self._meta.partitions_for_topic(self.alloc) or ())]
        if not tps:
            raise RuntimeError(f"topic {self.alloc} does not exist (run `zot engine` or ensure_topics first)")
        self._decisions.assign(tps)
        self._decisions.seek_to_end(*tps)
        for tp in tps:
            self._decisions.position(tp)  # resolve "end" now, before any decision of this run exists
        self._input_tps = [TopicPartition(t, q) for t in self.inputs
                           for q in sorted(self._meta.partitions_for_topic(t) or ())]
        self._changelog = changelog_topic(cfg.kafka)
        self._changelog_tps: list[Any] = []  # looked up when first needed: the workers create it
        self._held: list[tuple[str, bytes | None, bytes]] = []
        self._expected = 0
        self.wait_s = 0.0  # time spent waiting for the engine (for reports)

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        if topic == self.kpi:
            self._held.append((topic, key, value))
        else:
            self._producer.send(topic, key=key, value=value)

    def flush(self) -> None:
        self._producer.flush(timeout=60)

    def engine_step(self) -> int:
        """Wait for the engine to apply every earlier input, then release the held KPIs."""
        t0 = time.monotonic()
        self.flush()
        self.wait_consumed()
        for topic, key, value in self._held:
            self._producer.send(topic, key=key, value=value)
        self._expected += len(self._held)
        self._held.clear()
        self.flush()
        self.wait_s += time.monotonic() - t0
        return 0

    def wait_consumed(self) -> None:
        """Block until the engine group's committed offsets reach the inputs' end offsets."""
        from kafka.errors import KafkaError

        end = self._meta.end_offsets(self._input_tps)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                committed = self._admin.list_group_offsets(self.group).get(self.group, {})
            except KafkaError as exc:
                if not getattr(exc, "retriable", False):
                    raise
                committed = {}  # the group's coordinator is not up yet (fresh cluster): wait
            lag = {tp: n for tp, n in end.items()
                   if n > 0 and (committed.get(tp) is None or committed[tp].offset < n)}
            if not lag:
                return self.wait_changelog_settled(deadline)
            self._check_workers()
            if time.monotonic() > deadline:
                raise EngineTimeout(f"engine group {self.group!r} did not consume its inputs in "
                                    f"{self.timeout_s:.0f}s; lagging: {sorted(map(str, lag))[:4]}")
            time.sleep(0.02)

    def wait_changelog_settled(self, deadline: float | None = None) -> None:
        """Block until every transaction with records in the state changelog so far has ended.

        A transaction's commit returns (and the worker then commits its group
        offsets) once the coordinator has logged the decision; the markers that make
        its records readable to read_committed consumers are written after that. A
        worker that decides right then would read the changelog without the other
        worker's latest posteriors (a CI run took a different allocation that way).
        So: wait until each partition's last stable offset (read_committed end)
        reaches its high watermark as of now. A transaction begun later does not
        hold this up; one open now (a profile flush) ends within a step.
        """
        from kafka import TopicPartition

        deadline = deadline if deadline is not None else time.monotonic() + self.timeout_s
        if not self._changelog_tps:
            self._changelog_tps = [TopicPartition(self._changelog, q)
                                   for q in sorted(self._meta.partitions_for_topic(self._changelog) or ())]
        if not self._changelog_tps:
            return  # no worker has started yet: nothing written
        high = self._meta.end_offsets(self._changelog_tps)
        while True:
            stable = self._decisions.end_offsets(self._changelog_tps)  # read_committed: the LSO
            open_ = {tp: (stable[tp], n) for tp, n in high.items() if stable[tp] < n}
            if not open_:
                return
            self._check_workers()
            if time.monotonic() > deadline:
                raise EngineTimeout(f"transactions on the state changelog still open after {self.timeout_s:.0f}s "
                                    f"(stable, high): {sorted((str(k), v) for k, v in open_.items())[:4]}")
            time.sleep(0.005)

    def poll(self, group: str, topics: Iterable[str], max_records: int = 100_000) -> list[Message]:
        topics = list(topics)
        if topics != [self.alloc]:
            raise ValueError(f"RemoteEngineBus only reads {self.alloc}, not {topics}")
        out: list[Message] = []
        deadline = time.monotonic() + self.timeout_s
        t0 = time.monotonic()
        while len(out) < self._expected:
            self._check_workers()
            if time.monotonic() > deadline:
                raise EngineTimeout(f"got {len(out)} of {self._expected} decisions in {self.timeout_s:.0f}s")
            for recs in self._decisions.poll(timeout_ms=100).values():
                out.extend(Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in recs)
        self._expected = 0
        self.wait_s += time.monotonic() - t0
        return out

    def _check_workers(self) -> None:
        dead = [w.args for w in self.workers if w.poll() is not None]
        if dead and len(dead) == len(self.workers):
            raise EngineTimeout(f"every engine worker exited: {dead}")

    def close(self) -> None:
        self._producer.flush(timeout=60)
        for c in (self._producer, self._decisions, self._meta, self._admin):
            c.close()


def write_config(cfg: Config, path: Path) -> Path:
    """Write a config as YAML that `zot` commands load back to the same config."""
    import yaml

    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return path


def spawn_worker(config_path: Path, worker_id: str, log_path: Path, python: str | None = None,
                 consumer: str = "batch") -> Any:
    """Start `zot engine CONFIG --worker-id ID` as a separate process (its output to log_path)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    log = open(log_path, "ab")
    return subprocess.Popen([python or sys.executable, "-m", "engine.cli", "engine", str(config_path),
                             "--worker-id", worker_id, "--log-level", "info", "--consumer", consumer],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_group_members(options: dict[str, Any], group: str, workers: int, timeout_s: float = 90.0,
                       consumer: str = "batch") -> None:
    """Block until `group` is Stable with every member of `workers` workers of this
    consumer kind (engine.faust_app.group_members): joined, partitions assigned."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from engine.faust_app import group_members

    n = group_members(workers, consumer)

    admin = KafkaAdminClient(client_id="zot-sim-admin", **options)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                g = admin.describe_groups([group])[group]
                if g["group_state"] == "Stable" and len(g["members"]) == n:
                    return
            except (KafkaError, IndexError, KeyError):
                pass  # coordinator not ready yet
            time.sleep(0.2)
        raise EngineTimeout(f"group {group!r} did not reach {n} stable members ({workers} workers) in {timeout_s:.0f}s")
    finally:
        admin.close()
