"""One engine worker's processing step on Kafka, with an exactly-once effect.

`TransactionalEngine.process(batch)` runs `EngineCore.handle` (the same operator
code as the embedded runner) on a batch of input messages and publishes, in ONE
Kafka transaction: the outputs (allocations, profiles, recommendations, dead
letters), the changelog records of every user whose state changed, and the next
input offset of every input partition in the batch (engine/state_changelog.py).

Guarantee: exactly-once effect per input message, for state and outputs as seen
by read_committed consumers.
- A crash before the commit aborts the transaction (the broker aborts it when a
  producer with the same transactional id starts again, or at its timeout): no
  output, no state, no offset of that batch is visible; the batch is delivered
  again because the consumer group's offsets only move after the commit.
- A crash after the commit but before the group's offsets were committed makes
  the consumer deliver the batch again: messages below the changelog's offset of
  their partition are skipped (dedupe by topic/partition/offset), so none is
  applied twice.
- State is rebuilt on start from the changelog (read_committed), so it is the
  state of exactly the committed batches.
Any Kafka error during a step (broker restart, fencing) aborts, rebuilds the
state from the changelog, and retries the same batch until it succeeds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, NamedTuple, Sequence, TypeVar

from engine import topics as registry
from engine.bus import Message
from engine.config import Config
from engine import schemas
from engine.runner import EngineCore, Output
from engine.warmup import warm_up
from operators.parse import dead_letter
from engine.state_changelog import (PENDING, USER, apply_records, changelog_topic, offset_key, pending_record,
                                   tables_records, user_records)

log = logging.getLogger("zot.engine")

TP = tuple[str, int]
Urgent = Callable[[], Awaitable[list[Message]]]
REPLAY_CHUNK = 5_000  # interactions learned at a time when a recovering worker rebuilds its item models
REPLAY_STALL_S = 60.0  # ... and how long it waits for a fetch that returns nothing before giving up
MAX_FLUSH_DEFERRALS = 3  # a flush gives way to waiting KPI reports at most this many times in a row
T = TypeVar("T")


class Step(NamedTuple):
    """What one transactional step did with the messages it was given."""

    consumed: int  # a prefix of the batch, handled or skipped (already applied); the rest is the caller's
    urgent: list[Message]  # the urgent messages it took (and handled)
    applied: int  # messages that took effect
    # The next offset of each partition in the consumed prefix: what the caller's
    # consumer may commit once the step is done (it saves a pass over the messages).
    offsets: dict[TP, int] = {}


def last_offsets(messages: Iterable[Message]) -> dict[TP, int]:
    """Each partition's last offset among `messages` (a consumer's, so offsets rise
    within a partition): one dict comprehension, ~0.17 us a message."""
    return {(m.topic, m.partition): m.offset for m in messages}

# murmur2 in pure Python costs ~9 us a key; a batch sends a profile and a changelog
# record per touched user (thousands), and users recur across batches.
_partition = functools.lru_cache(maxsize=1 << 18)(registry.partition_for)


def tune_gc() -> None:
    """Garbage collection for a worker process.

    A worker allocates a few short-lived dicts per event and holds millions of
    long-lived objects (the state's keys): with CPython's default gen-0 threshold
    (700) a collection runs every few hundred events. A threshold of 50,000 cut the
    handle step's CPU per event by about 15% (in-process measurement on the stream
    bench's batches); the state read at recovery is frozen out of collections too.
    """
    gc.set_threshold(50_000, 20, 100)


def aiokafka_options(options: dict[str, Any]) -> dict[str, Any]:
    """kafka-python client options (engine.kafka_client) as aiokafka keyword arguments."""
    out = {"bootstrap_servers": ",".join(options["bootstrap_servers"]),
           "security_protocol": options.get("security_protocol", "PLAINTEXT")}
    for k in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        if k in options:
            out[k] = options[k]
    return out


async def _close_quietly(client: Any) -> None:
    """Stop a Kafka client on the way out (or one that failed to start): log, never raise."""
    try:
        await client.stop()
    except Exception:  # noqa: BLE001 - closing on the way out
        log.exception("closing a Kafka client")


def _handle_into(outs: list[Output], core: EngineCore, batch: list[Message], now: float | None) -> Exception | None:
    """Handle a batch into `outs`; an exception the operators raised is returned, not
    raised (the step then isolates the message at fault)."""
    try:
        outs += core.handle(batch, now)
    except Exception as exc:  # noqa: BLE001 - a bug met by some input must not stop the stream
        return exc
    return None


@dataclass
class StepStats:
    batches: int = 0
    messages: int = 0
    skipped: int = 0  # already applied (redelivered after a crash)
    retries: int = 0
    isolated: int = 0  # messages dead-lettered because processing them raised
    interactions_replayed: int = 0  # committed interactions the item models were rebuilt from (recovery)
    flushes_deferred: int = 0  # timed profile flushes that gave way to waiting KPI reports
    handle_s: float = 0.0
    commit_s: float = 0.0
    tail_s: float = 0.0
    outputs: int = 0
    # Set by the batch consumer (engine/faust_app.py): waiting in getmany, and for
    # the group offset commits (overlapped with the next batch).
    fetch_s: float = 0.0
    offsets_s: float = 0.0
    # Per KPI report (the latest 10,000): ms from its record's timestamp (the producer's
    # clock, this host in the bench) to when a step took it from its consumer, and to
    # that step's commit. Where a KPI's latency goes: waiting vs being processed.
    kpi_wait_ms: list[float] = field(default_factory=list)
    kpi_commit_ms: list[float] = field(default_factory=list)


@dataclass
class TransactionalEngine:
    cfg: Config
    options: dict[str, Any]  # kafka-python style (engine.kafka_client.client_options)
    transactional_id: str
    cells: set[str] | None = None
    core: EngineCore = field(init=False)
    applied: dict[TP, int] = field(default_factory=dict)
    stats: StepStats = field(default_factory=StepStats)
    meter: Any = None  # engine.metrics.WorkerMeter: this worker's zot_engine series, if set
    # Whether urgent messages (KPI reports) wait for a step: a timed profile flush that
    # gets the lock then gives way to them (at most MAX_FLUSH_DEFERRALS flushes in a row).
    urgent_waiting: Callable[[], Awaitable[bool]] | None = None

    def __post_init__(self) -> None:
        self.prefix = self.cfg.kafka.topic_prefix
        self.changelog = changelog_topic(self.cfg.kafka)
        self.kpi_topic = registry.with_prefix(registry.KPI, self.prefix)
        self.user_topic = registry.with_prefix(registry.FEEDBACK, self.prefix)  # user-keyed, like context
        # Marks this incarnation's own changelog records, which it never needs to read back.
        self.incarnation = f"{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        self._producer = None
        self._reader = None
        self._partitions: dict[str, int] = {}
        self._user_partition: dict[str, int] = {}  # user -> its user-topic partition
        self._user_partition_n = 0  # ... for this many partitions
        self._assigned: set[TP] | None = None
        self._lock = asyncio.Lock()
        # The operators' thread (see _run); one, so the state is only ever touched by it
        # while a step runs, and by the event loop's thread between steps.
        self._operators = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zot-operators")
        self.core = self._new_core()
        self.must_tail = True
        self._stale = False  # the memory may be ahead of the changelog (a step was cancelled)
        self._flush_deferrals = 0  # timed flushes in a row that gave way to urgent messages

    def _new_core(self) -> EngineCore:
        # Profiles wait for flush_profiles() (a timer of the app) when an interval is set.
        return EngineCore(self.cfg, cells=self.cells, prefix=self.prefix,
                          defer_profiles=self.cfg.engine.profile_interval_s > 0)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a step's CPU work (the operators, building its records) in the operators'
        thread, under the step's lock. Meanwhile the event loop keeps reading the
        sockets: a KPI report that arrives during a chunk is in its consumer's buffer at
        the next check, and the next fetch of user events lands. When the chunks ran on
        the loop's thread, each check had only a few loop turns to get a report from the
        socket to the buffer, and reports sat through several chunks."""
        return await asyncio.get_running_loop().run_in_executor(self._operators, fn, *args)

    # -- lifecycle

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        # The kernels' first call (seconds in a busy worker) before the first batch, not in it.
        took = await self._run(warm_up, self.cfg, self.cells)
        if took:
            log.info("warmed the operators' kernels in %.2fs", took)
        opts = aiokafka_options(self.options)
        # Starting a producer with our transactional id fences any previous
        # incarnation and aborts its open transaction (KIP-98).
        producer = AIOKafkaProducer(transactional_id=self.transactional_id, enable_idempotence=True,
                                    linger_ms=0, max_batch_size=1 << 20,
                                    # No compression: broker and worker share this host's
                                    # cores; gzip (the only codec installed) takes ~14 ms of
                                    # CPU for a 5000-event batch's 1.4 MB of profiles, which
                                    # the loopback moves in well under 1 ms. Retries back off 5 ms,
                                    # not 100: a transaction that starts while the last one's markers
                                    # are being written gets CONCURRENT_TRANSACTIONS and waits (a
                                    # trivial transaction: 8.8 ms at 5, 12.7 ms at 20 here).
                                    retry_backoff_ms=5, **opts)
        # All or nothing: `_step` takes a producer for a started, recovered engine. A
        # producer whose start failed (broker still away) hung the next transaction
        # for good (seen once in a broker restart test), and a failed recovery would
        # leave a partial state.
        try:
            await producer.start()
            self._producer = producer
            await self.recover()
        except BaseException:
            self._producer = None
            await _close_quietly(producer)
            raise

    async def stop(self) -> None:
        for c in (self._producer, self._reader):
            if c is not None:
                await _close_quietly(c)
        self._producer = self._reader = None

    async def recover(self) -> None:
        """Rebuild the state from the committed changelog (all of it: any worker's users)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if self._reader is not None:
            old, self._reader = self._reader, None
            await old.stop()
        self.core = self._new_core()
        self.applied = {}
        reader = AIOKafkaConsumer(isolation_level="read_committed", enable_auto_commit=False,
                                  group_id=None, fetch_max_bytes=64 << 20,
                                  max_partition_fetch_bytes=16 << 20,
                                  **aiokafka_options(self.options))
        try:
            await reader.start()
        except BaseException:
            await _close_quietly(reader)
            raise
        self._reader = reader
        # aiokafka's partitions_for_topic only knows subscribed topics; ask the cluster.
        meta = await self._reader._client.fetch_all_metadata()
        parts = meta.partitions_for_topic(self.changelog) or set()
        self.user_partitions = len(meta.partitions_for_topic(self.user_topic) or ()) or self.cfg.kafka.partitions
        if not parts:
            raise RuntimeError(f"changelog topic {self.changelog} does not exist (ensure_changelog)")
        tps = [TopicPartition(self.changelog, p) for p in sorted(parts)]
        self._reader.assign(tps)
        await self._reader.seek_to_beginning(*tps)
        t0 = time.perf_counter()
        n = await self._tail(own_too=True)
        t1 = time.perf_counter()
        items = await self._replay_interactions()
        gc.freeze()  # the recovered state is long-lived: keep it out of every collection
        log.info("recovered %d changelog records (%d users with context, %d input partitions) in %.2fs; "
                 "item models from %d committed interactions in %.2fs", n, len(self.core.segment_of),
                 len(self.applied), t1 - t0, items, time.perf_counter() - t1)
        self.must_tail = False

    async def _replay_interactions(self) -> int:
        """Rebuild the item models (popularity, co-occurrence, the network) from the
        interactions topic, up to the offsets the changelog says took effect: the
        topic is the models' changelog, as Kafka Streams restores a table from its
        source topic. Every committed interaction once, whichever worker took it,
        partition by partition; return how many were learned.

        Not bitwise the models the worker had: their sums ran in the order the steps
        took the partitions' events, the replay's partition by partition (float
        rounding, and item indices, hence ties, may differ; the optional network's
        training batches differ). What the topic no longer holds (retention) is not
        replayed."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        core = self.core
        topic = registry.with_prefix(registry.INTERACTIONS, self.prefix)
        upto = {TopicPartition(topic, p): off for (t, p), off in self.applied.items() if t == topic and off > 0}
        if core.interests is None or not upto:
            return 0
        reader = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, max_poll_records=REPLAY_CHUNK,
                                  fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20,
                                  **aiokafka_options(self.options))
        n = 0
        try:
            await reader.start()
            tps = sorted(upto, key=lambda tp: tp.partition)
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            log_end = await reader.end_offsets(tps)
            upto = {tp: min(off, log_end[tp]) for tp, off in upto.items()}  # a recreated topic holds less
            with core.interests.replaying():
                for tp in tps:  # partition by partition: each user's events in their order
                    stalled = time.monotonic() + REPLAY_STALL_S
                    while await reader.position(tp) < upto[tp]:
                        got = await reader.getmany(tp, timeout_ms=200)
                        msgs = [r for r in got.get(tp, ()) if r.offset < upto[tp]]
                        if msgs:
                            n += await self._run(core.replay_interactions, msgs)
                            stalled = time.monotonic() + REPLAY_STALL_S
                        elif time.monotonic() > stalled:  # the step that called recover() retries
                            raise RuntimeError(f"no interactions from {tp.topic}[{tp.partition}] for "
                                               f"{REPLAY_STALL_S:.0f} s while rebuilding the item models")
        finally:
            await _close_quietly(reader)
        self.stats.interactions_replayed += n
        return n

    async def _tail_timed(self) -> None:
        t0 = time.perf_counter()
        await self._tail()
        self.must_tail = False
        self.stats.tail_s += time.perf_counter() - t0

    async def _tail(self, own_too: bool = False) -> int:
        """Read the changelog up to its last committed record and apply it.

        Only the latest record per key counts (one key lives in one partition, so
        log order is its write order). A latest record written by this very
        incarnation is already what memory holds and is skipped; an older own
        record followed by another worker's is not, so the last writer wins.
        """
        reader = self._reader
        tps = list(reader.assignment())
        end = await reader.end_offsets(tps)
        latest: dict[bytes, tuple[bytes, bool]] = {}
        mine = self.incarnation
        while True:
            behind = [tp for tp in tps if await reader.position(tp) < end[tp]]
            if not behind:
                break
            got = await reader.getmany(*behind, timeout_ms=200)
            for recs in got.values():
                for r in recs:
                    if r.key is not None and r.value is not None:
                        latest[r.key] = (r.value, not own_too and dict(r.headers or ()).get("w") == mine)
        return apply_records(self.core, self.applied, ((k, v) for k, (v, own) in latest.items() if not own))

    # -- one step

    async def _step(self, what: str, once: Callable[[], Awaitable[T]]) -> T:
        """Run one transactional step under the lock until it commits.

        Any error (Kafka of every kind: broker away, fencing, timeouts) aborts the
        transaction; the worker reconnects, which rebuilds the state from the
        changelog (the memory may be ahead of what was committed), and retries."""
        async with self._lock:
            delay = 0.2
            while True:
                try:
                    if self._producer is None:
                        await self.start()
                    elif self._stale:
                        await self.recover()
                    self._stale = False
                    return await once()
                except asyncio.CancelledError:
                    # Stopped mid-step (a worker's shutdown): the memory may hold what was
                    # not committed, or be changing still in the operators' thread. A later
                    # step (the flush at shutdown) starts from the changelog.
                    self._stale = True
                    raise
                except Exception as exc:  # noqa: BLE001 - see above
                    self.stats.retries += 1
                    log.warning("%s failed (%s: %s); rebuilding state and retrying in %.1fs", what,
                                type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    try:
                        await self.stop()
                        await self.start()
                    except Exception as exc2:  # noqa: BLE001 - broker still away: try again later
                        log.warning("reconnect failed (%s: %s)", type(exc2).__name__, exc2)

    def _state_records(self, core: EngineCore, users: Sequence[str]) -> list[tuple[str, bytes, bytes, list]]:
        """Changelog records of these users (those this worker owns, see _owned)."""
        hdr = [("w", self.incarnation)]
        return [(self.changelog, USER + u.encode(), v, hdr) for u, v in zip(users, user_records(core, users))]

    async def tick(self, now: float | None = None) -> int:
        """Timer trigger: decide the pending KPI reports, in one transaction; return decisions made."""

        async def once() -> int:
            if not self.core.pending:
                return 0
            await self._tail()  # decisions read every user's latest posterior
            core = self.core
            core.clear_dirty()
            outs = core.tick(now)
            hdr = [("w", self.incarnation)]
            records = [(core.topic(o.topic), o.key, o.value, []) for o in outs]
            records += self._state_records(core, self._owned(core.dirty, self._assigned))
            records += [(self.changelog, k, v, hdr)
                        for k, v in tables_records(core, self._owned_partitions(self._assigned))]
            records += [(self.changelog, PENDING + c.encode(), b"", hdr) for c in sorted(core.dirty_cells)]
            async with self._producer.transaction():
                await self._send_all(records)
            return len(outs)

        return await self._step("timer step", once)

    def _due_profiles(self, core: EngineCore, now: float | None, due_only: bool = True) -> list[Output]:
        """This worker's deferred profiles that are due (marked an interval ago or more;
        all pending ones with due_only=False), at most a tenth of those pending (at least
        64): users marked together (all of them, under a steady load) come due together,
        and one large flush would hold a transaction while KPI reports wait. They are no
        longer pending and their users are dirty (their state records go with them)."""
        if not core.profile_pending:
            return []
        mine = self._owned(set(core.profile_pending), self._assigned)
        if len(mine) < len(core.profile_pending):
            # Another worker's users (read from the changelog): theirs to publish.
            keep = set(mine)
            for u in [u for u in core.profile_pending if u not in keep]:
                del core.profile_pending[u]
        before = time.monotonic() - self.cfg.engine.profile_interval_s if due_only else None
        limit = max(64, -(-len(core.profile_pending) // 10)) if due_only else None
        return core.flush_profiles(now, marked_before=before, limit=limit)

    async def flush_profiles(self, now: float | None = None, due_only: bool = True) -> int:
        """Deferred profiles (engine.profile_interval_s): publish the due ones (see
        _due_profiles) and their users' state records (no longer pending) in one
        transaction; return how many. A timer calls this often (a tenth of the interval),
        so each flush stays small. (Riding in the steps' transactions instead made the
        KPI latency worse: p99 110-128 ms against 97-113, BENCHMARKS.md.)"""

        async def once() -> int:
            core = self.core
            if not core.profile_pending:
                return 0
            # A flush queued for the lock during a step gets it before the next step,
            # and a KPI report that came meanwhile waited for the whole flush (~10-25 ms
            # on the stream bench). The next timed flush is a tenth of an interval away.
            if (due_only and self.urgent_waiting is not None and self._flush_deferrals < MAX_FLUSH_DEFERRALS
                    and await self.urgent_waiting()):
                self._flush_deferrals += 1
                self.stats.flushes_deferred += 1
                return 0
            self._flush_deferrals = 0
            def records_of() -> tuple[int, list[tuple[str, bytes | None, bytes, list]]]:
                core.clear_dirty()
                outs = self._due_profiles(core, now, due_only)
                records = [(core.topic(o.topic), o.key, o.value, []) for o in outs]
                return len(outs), records + self._state_records(core, self._owned(core.dirty, self._assigned))

            n, records = await self._run(records_of)
            if not n:
                return 0
            async with self._producer.transaction():
                await self._send_all(records)
            return n

        return await self._step("profile flush", once)

    async def _isolate(self, fresh: list[Message], now: float | None, exc: Exception) -> list:
        """The batch raised inside the operators: redo it one message at a time from the
        committed state, dead-lettering (with the error as reason) each message whose
        processing raises and undoing its partial effect, so the stream goes on."""
        log.warning("batch of %d failed in the operators (%s: %s); isolating the message(s) at fault",
                    len(fresh), type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        await self.recover()  # memory holds a partly applied batch: back to the committed state
        core = self.core

        def redo() -> list[Output]:  # one message at a time: in the operators' thread, like a chunk
            outs: list[Output] = []
            for m in fresh:
                saved = core.save_point()
                try:
                    outs.extend(core.handle([m], now))
                except Exception as err:  # noqa: BLE001 - see above
                    core.restore_point(saved)
                    first = str(err).splitlines()[0] if str(err) else ""
                    reason = f"engine error while processing this event: {type(err).__name__}: {first}"
                    outs.append(Output(registry.DEAD_LETTERS, None, schemas.encode(dead_letter(m, reason))))
                    self.stats.isolated += 1
            return outs

        return await self._run(redo)

    async def _send_all(self, records: list[tuple[str, bytes | None, bytes, list]]) -> None:
        """Send records as one producer batch per partition (per-record send() costs ~30 us of Python).

        Partitions as Kafka's default partitioner (murmur2 of the key); unkeyed
        records (dead letters, a one-partition topic) go to partition 0.
        """
        prod = self._producer
        by_tp: dict[tuple[str, int], list[tuple[bytes | None, bytes, list]]] = {}
        for topic, key, value, headers in records:
            n = self._partitions.get(topic)
            if n is None:
                await prod.client._wait_on_metadata(topic)
                n = self._partitions[topic] = len(prod.client.cluster.partitions_for_topic(topic))
            p = 0 if key is None else _partition(key, n)
            by_tp.setdefault((topic, p), []).append((key, value, headers))
        for (topic, p), recs in by_tp.items():
            batch = prod.create_batch()
            for key, value, headers in recs:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    await prod.send_batch(batch, topic, partition=p)  # full: ship it, start another
                    batch = prod.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError(f"a record of {len(value)} bytes exceeds the producer batch size")
            await prod.send_batch(batch, topic, partition=p)

    @staticmethod
    async def _reading_ahead(commit: Awaitable[None], sent: asyncio.Event, messages: Sequence[Message],
                             more: Urgent | None, upto: int) -> None:
        """Await `commit` (a step's transaction) while `more()` adds the next messages
        to `messages` (a list), up to `upto` of them, for the next step.

        Once its records are sent (`sent`), a commit is ~20 ms of round trips to the
        broker in a 20,000-event step, the worker otherwise idle: the event loop
        decodes the next records meanwhile, time the next step would spend on it. It
        stops pulling once the commit is done.
        """
        task = asyncio.ensure_future(commit)
        try:
            if more is not None:
                waiting = asyncio.ensure_future(sent.wait())
                try:
                    await asyncio.wait((task, waiting), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
            while more is not None and not task.done() and len(messages) < upto:
                pulled = await more()
                if not pulled:
                    break
                messages.extend(pulled)  # type: ignore[attr-defined] - a list when `more` is given
                await asyncio.sleep(0)  # a pull from the fetcher's buffer never yields: let the replies in
            await task
        except BaseException:
            task.cancel()
            raise

    def _owned(self, users: set[str], assigned: set[TP] | None) -> list[str]:
        """The users whose state this worker writes: those of its user partitions.

        Another worker's KPI may create a user's slot at the prior; that copy is a
        cache, never written, so it can never overwrite the owner's posterior.
        """
        mine = self._owned_partitions(assigned)
        if mine is None:
            return sorted(users)
        # A dict by user id in front of `_partition` (keyed by bytes): no encode and no
        # lru_cache call per touched user (0.24 instead of 1.0 ms for 2,000 users).
        n, part = self.user_partitions, self._user_partition
        if self._user_partition_n != n:  # the cache holds partitions for one count
            part.clear()
            self._user_partition_n = n
        out = []
        for u in users:
            p = part.get(u)
            if p is None:
                p = part[u] = _partition(u.encode(), n)
            if p in mine:
                out.append(u)
        out.sort()
        return out

    def _owned_partitions(self, assigned: set[TP] | None) -> set[int] | None:
        """The user partitions this worker owns (None: all, when not in a group)."""
        return None if assigned is None else {p for t, p in assigned if t == self.user_topic}

    async def process(self, messages: Sequence[Message], now: float | None = None,
                      assigned: set[TP] | None = None, urgent: Urgent | None = None,
                      more: Urgent | None = None, limit: int = 0) -> Step:
        """Apply a batch, or a prefix of it, with an exactly-once effect.

        Without `urgent` the whole batch is one step. With it, the step handles the
        batch `engine.kpi_check_every` messages at a time and between those chunks
        asks `urgent()` for waiting messages (KPI reports, from their own consumer):
        if there are any, it handles them after the chunks done so far and commits
        that much, so a decision never waits for a whole batch of user events. The
        caller passes the rest (`messages[step.consumed:]`) to the next step.

        With `more`, a step that has handled all of `messages` asks `more()` for the
        next ones and appends them to `messages` (a list, extended in place), until
        it holds `limit` messages or `more()` has none. The caller's consumer then
        decodes a chunk's worth at a time: decoding a whole batch at once kept the
        event loop's thread from reading KPI reports for up to ~70 ms.
        """
        taken: list[Message] = []  # urgent messages taken: kept across retries (they left their consumer)
        return await self._step("engine step",
                                lambda: self._process_once(messages, now, assigned, urgent, taken, more, limit))

    async def _process_once(self, messages: Sequence[Message], now: float | None, assigned: set[TP] | None,
                            urgent: Urgent | None, taken: list[Message], more: Urgent | None = None,
                            limit: int = 0) -> Step:
        # Decisions read every user's state, including users other workers own. A
        # worker that owns every user partition is the only writer of user records
        # (after the read that follows each rebalance, `must_tail`), so it skips the
        # changelog read (two round trips) before its decisions.
        sole = assigned is not None and len({p for t, p in assigned if t == self.user_topic}) >= self.user_partitions
        taken_ms = time.time() * 1000  # when the step took its urgent messages (KPI wait ends)
        if urgent is not None and not taken:
            taken.extend(await urgent())
        if self.must_tail or (not sole and any(m.topic == self.kpi_topic for m in (*messages, *taken))):
            await self._tail_timed()
        self._assigned = assigned

        applied = self.applied
        seen: dict[TP, int] = {}  # last offset of each partition among the consumed messages
        hi: dict[TP, int] = {}  # ... among the fresh (handled) ones

        def fresh(ms: list[Message], consumed_part: bool = True) -> list[Message]:
            """The messages of `ms` not yet applied, of a partition this worker holds.

            Per partition, not per message, in the common case (all fresh): a
            consumer's offsets rise within a partition, so its first message decides.
            """
            last = last_offsets(ms)
            if consumed_part:
                seen.update(last)
            first = last_offsets(reversed(ms))
            if all(o >= applied.get(tp, 0) and (assigned is None or tp in assigned) for tp, o in first.items()):
                hi.update(last)
                return ms
            kept = [m for m in ms if m.offset >= applied.get((m.topic, m.partition), 0)
                    and (assigned is None or (m.topic, m.partition) in assigned)]
            hi.update(last_offsets(kept))
            return kept

        core = self.core
        core.clear_dirty()
        t0, t0_ms = time.perf_counter(), time.time() * 1000
        every = self.cfg.engine.kpi_check_every if urgent is not None else max(len(messages), 1)
        done: list[Message] = []  # fresh messages handled in this step, in order
        outs: list[Output] = []
        consumed = 0
        failed: Exception | None = None
        # Urgent messages as soon as they are there: taken before the step, or at a check
        # between chunks; the step ends with them.
        while failed is None:
            if taken:
                if consumed and not sole:
                    await self._tail_timed()  # reports taken mid-step read the latest states too
                batch = fresh(taken, consumed_part=False)
                done += batch
                failed = await self._run(_handle_into, outs, core, batch, now)
                break
            if consumed and urgent is not None:  # after every chunk, the last one too
                taken.extend(await urgent())
                if taken:
                    taken_ms = time.time() * 1000
                    continue
            if consumed >= len(messages):
                pulled = await more() if more is not None and len(messages) < limit else []
                if not pulled:
                    break
                messages.extend(pulled)  # type: ignore[attr-defined] - a list when `more` is given
            chunk = fresh(messages[consumed:consumed + every])
            consumed = min(consumed + every, len(messages))
            done += chunk
            failed = await self._run(_handle_into, outs, core, chunk, now)
        if failed is not None:
            outs = await self._isolate(done, now, failed)
            core = self.core
        self.stats.skipped += consumed + len(taken) - len(done)
        offsets = {tp: o + 1 for tp, o in seen.items()}
        if not done:
            return Step(consumed, list(taken), 0, offsets)
        nxt = {tp: o + 1 for tp, o in hi.items()}

        def records_of() -> list[tuple[str, bytes | None, bytes, list]]:
            hdr = [("w", self.incarnation)]
            records = [(core.topic(o.topic), o.key, o.value, []) for o in outs]
            records += self._state_records(core, self._owned(core.dirty, assigned))
            records += [(self.changelog, k, v, hdr) for k, v in tables_records(core, self._owned_partitions(assigned))]
            records += [(self.changelog, PENDING + c.encode(), pending_record(core, c), hdr)
                        for c in sorted(core.dirty_cells)]
            records += [(self.changelog, offset_key(t, p), str(off).encode(), hdr) for (t, p), off in nxt.items()]
            return records

        t1 = time.perf_counter()
        records = await self._run(records_of)
        prod = self._producer

        sent = asyncio.Event()

        async def commit() -> None:
            async with prod.transaction():
                await self._send_all(records)
                sent.set()  # what remains is the broker's: the produce replies, then EndTxn

        # On any failure here the in-memory state is ahead of what was committed;
        # process() then rebuilds it from the changelog before retrying.
        # Not in a step that decides KPI reports: its commit publishes the decisions, and
        # pulls between the commit's round trips delay them (p50 ~45 -> ~56 ms at half load).
        await self._reading_ahead(commit(), sent, messages, None if taken else more, consumed + limit)
        self.applied.update(nxt)
        t2 = time.perf_counter()
        s = self.stats
        kpi_topic = self.kpi_topic
        kpi_ts = [m.timestamp for m in done if m.topic == kpi_topic] if any(t == kpi_topic for t, _ in nxt) else []
        if kpi_ts:
            done_ms = time.time() * 1000
            if not taken:  # reports that came in the batch itself (the Faust agent): waited for its start
                taken_ms = t0_ms
            s.kpi_wait_ms.extend(taken_ms - t for t in kpi_ts)
            s.kpi_commit_ms.extend(done_ms - t for t in kpi_ts)
            del s.kpi_wait_ms[:-10_000], s.kpi_commit_ms[:-10_000]
        s.batches += 1
        s.messages += len(done)
        s.outputs += len(outs)
        s.handle_s += t1 - t0
        s.commit_s += t2 - t1
        if self.meter is not None:
            self.meter.record(
                events=len(done), batch_ms=(t2 - t0) * 1e3,
                dead_letters=sum(1 for o in outs if o.topic is registry.DEAD_LETTERS),
                decisions=sum(1 for o in outs if o.topic is registry.ALLOCATIONS),
            )
        return Step(consumed, list(taken), len(done), offsets)
