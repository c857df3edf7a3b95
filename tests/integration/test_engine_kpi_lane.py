"""KPI reports jump the queue (engine/faust_app.py's KPI lane, engine/worker.py's
step that makes way for them): a step over user events stops at its next check
when a report is waiting, decides it and commits what it has done; and a worker
with a large feedback backlog decides a report long before the backlog is drained,
and still processes every feedback event.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from engine import schemas
from engine import topics as registry
from engine.bench.stream import _feedback_values, _load_kcat
from engine.bus import Message
from engine.runner import EngineCore
from engine.worker import TransactionalEngine
from engine.faust_app import app_id
from engine.remote_engine import spawn_worker, wait_group_members
from tests.integration.test_engine_loop import prepare, small_config, stop
from tests.integration.test_engine_recovery import committed_feedback

N_BACKLOG = 100_000


def one_partition(bootstrap: str, tmp_path, **engine) -> tuple:
    """A fresh one-partition scenario with these engine settings, its topics made; (cfg, options)."""
    cfg = small_config(bootstrap, partitions=1)
    if engine:
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update=engine)})
    _, options = prepare(cfg, tmp_path)
    return cfg, options


def test_a_step_makes_way_for_a_waiting_kpi_report(kafka_bootstrap, tmp_path, monkeypatch):
    from tests.integration.test_engine_dead_letters import read_all

    cfg, options = one_partition(kafka_bootstrap, tmp_path, kpi_check_every=300)
    p = cfg.kafka.topic_prefix
    fb, kpi, alloc = (registry.with_prefix(t, p) for t in (registry.FEEDBACK, registry.KPI, registry.ALLOCATIONS))
    feedback = [Message(fb, 0, i, k, v, 0) for i, (k, v) in enumerate(_feedback_values(1300, np.random.default_rng(2)))]
    tail, feedback = feedback[1000:], feedback[:1000]
    report = schemas.CellKpi(event_id="k1", ts=1.0, cell_id="s0-0", epoch=1, prb_total=51,
                             users=[schemas.UserChannel(user_id="u1", spectral_efficiency=2.0, app="video")])
    kpi_msg = Message(kpi, 0, 0, b"s0-0", schemas.encode(report), 0)
    late_msg = Message(kpi, 0, 1, b"s0-0", schemas.encode(report.model_copy(update={"event_id": "k2", "epoch": 2})), 0)
    polls: list[int] = []
    late_polls: list[int] = []

    async def urgent() -> list[Message]:  # the report "arrives" at the first check between chunks
        polls.append(1)
        return [kpi_msg] if len(polls) == 2 else []

    async def none() -> list[Message]:
        return []

    async def late() -> list[Message]:  # the report "arrives" during the step's last chunk
        late_polls.append(1)
        return [late_msg] if len(late_polls) == 2 else []

    threads: set[str] = set()
    handle = EngineCore.handle

    def spy(core: EngineCore, *args, **kwargs):  # which thread runs the operators
        threads.add(threading.current_thread().name)
        return handle(core, *args, **kwargs)

    async def scenario() -> tuple:
        engine = TransactionalEngine(cfg, options, transactional_id=f"{p}lane-test")
        try:
            first = await engine.process(feedback, urgent=urgent)
            applied_after_first = dict(engine.applied)
            second = await engine.process(feedback[first.consumed:], urgent=none)
            applied_after_second = dict(engine.applied)
            third = await engine.process(tail, urgent=late)
            return first, applied_after_first, second, applied_after_second, third, dict(engine.applied)
        finally:
            await engine.stop()

    monkeypatch.setattr(EngineCore, "handle", spy)
    first, applied1, second, applied2, third, applied3 = asyncio.run(scenario())
    # The operators ran off the event loop's thread (which keeps reading the sockets).
    assert threads and all(t.startswith("zot-operators") for t in threads), threads
    # The step stopped after its first chunk, took the report, and committed both.
    assert first.consumed == 300 and first.urgent == [kpi_msg] and first.applied == 301
    assert applied1 == {(fb, 0): 300, (kpi, 0): 1}
    # The rest of the batch in the next step: nothing lost, nothing twice.
    assert second.consumed == 700 and second.applied == 700 and not second.urgent
    assert applied2 == {(fb, 0): 1000, (kpi, 0): 1}
    # A report that arrives during a step's last chunk is decided in that step, not after
    # its commit and the next fetch.
    assert third.consumed == 300 and third.urgent == [late_msg] and third.applied == 301
    assert applied3 == {(fb, 0): 1300, (kpi, 0): 2}
    # Each report decided once.
    decided = [schemas.decode(v, expect=schemas.Allocation) for _, v in read_all(options, alloc)]
    assert sorted((d.cell_id, d.epoch) for d in decided) == [("s0-0", 1), ("s0-0", 2)]


def test_kpi_report_is_decided_ahead_of_a_feedback_backlog(kafka_bootstrap, kcat_bin, tmp_path):
    cfg = small_config(kafka_bootstrap, partitions=3)
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"batch_size": 5000,
                                                                          "kpi_check_every": 500})})
    path, options = prepare(cfg, tmp_path)
    p = cfg.kafka.topic_prefix
    fb, kpi, alloc = (registry.with_prefix(t, p) for t in (registry.FEEDBACK, registry.KPI, registry.ALLOCATIONS))
    _load_kcat(kafka_bootstrap, fb, _feedback_values(N_BACKLOG, np.random.default_rng(5)), tmp_path)

    decisions = KafkaConsumer(isolation_level="read_committed", enable_auto_commit=False, **options)
    tps = [TopicPartition(alloc, q) for q in sorted(decisions.partitions_for_topic(alloc) or ())]
    decisions.assign(tps)
    decisions.seek_to_end(*tps)
    for tp in tps:
        decisions.position(tp)
    producer = KafkaProducer(acks="all", **options)
    worker = spawn_worker(path, "q", tmp_path / "worker.log")
    try:
        wait_group_members(options, app_id(cfg), 1)
        deadline = time.monotonic() + 120
        while committed_feedback(options, cfg) == 0:  # the worker is into the backlog
            assert time.monotonic() < deadline and worker.poll() is None, "the worker never started on the feedback"
            time.sleep(0.02)
        ev = schemas.CellKpi(event_id="k1", ts=1.0, cell_id="s0-0", epoch=1, prb_total=51,
                             users=[schemas.UserChannel(user_id="u1", spectral_efficiency=2.0, app="video")])
        producer.send(kpi, key=b"s0-0", value=schemas.encode(ev))
        producer.flush(30)
        got = []
        while not got:
            assert time.monotonic() < deadline and worker.poll() is None, "no decision"
            got = [r for recs in decisions.poll(timeout_ms=50).values() for r in recs]
        done_at_decision = committed_feedback(options, cfg)
        decided = schemas.decode(got[0].value, expect=schemas.Allocation)
        assert (decided.cell_id, decided.epoch) == ("s0-0", 1)
        assert done_at_decision < N_BACKLOG // 2, (
            f"the report waited for the backlog: {done_at_decision} of {N_BACKLOG} feedback events were done")
        while committed_feedback(options, cfg) < N_BACKLOG:  # and the rest of the backlog is processed
            assert time.monotonic() < deadline and worker.poll() is None, "the backlog was not finished"
            time.sleep(0.1)
        assert committed_feedback(options, cfg) == N_BACKLOG
    finally:
        producer.close()
        decisions.close()
        stop([worker])


def test_a_lane_commits_only_the_offsets_of_its_own_partitions(kafka_bootstrap, tmp_path):
    """Messages taken before a rebalance may belong to a partition that moved to
    another worker: their offsets must not go into this worker's group commit (it
    could move the new owner's position past events it has not processed yet)."""
    from aiokafka import TopicPartition as ATP
    from kafka import KafkaAdminClient

    from engine.faust_app import _Lane

    cfg = small_config(kafka_bootstrap, partitions=2)
    _, options = prepare(cfg, tmp_path)
    fb = registry.with_prefix(registry.FEEDBACK, cfg.kafka.topic_prefix)
    group = f"{cfg.kafka.topic_prefix}lane-test"
    engine = TransactionalEngine(cfg, options, transactional_id=f"{group}-tx")

    async def scenario() -> int:
        a, b = (_Lane(engine, options, group, f"lane-{x}", [fb]) for x in "ab")
        for lane in (a, b):
            await lane.consumer.start()
        try:
            deadline = time.monotonic() + 60
            # One partition each (during the rebalance one member may still hold both).
            while not (len(a.consumer.assignment()) == 1 and len(b.consumer.assignment()) == 1):
                assert time.monotonic() < deadline, "the two members never split the partitions"
                await asyncio.gather(a.consumer.getmany(timeout_ms=100), b.consumer.getmany(timeout_ms=100))
            (mine,) = a.consumer.assignment()
            other = 1 - mine.partition
            # Taken by a before its partition `other` moved to b.
            a.processed({(fb, mine.partition): 6, (fb, other): 8})
            assert a.owed == {mine: 6, ATP(fb, other): 8}
            await a.after_step()
            await a.settle()
            assert a.owed == {}, "a's own offset was committed, the other one dropped"
            return mine.partition
        finally:
            for lane in (a, b):
                await lane.close()

    mine = asyncio.run(scenario())
    admin = KafkaAdminClient(client_id="zot-test", **options)
    try:
        offs = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    assert {tp.partition: o.offset for tp, o in offs.items() if tp.topic == fb and o.offset >= 0} == {mine: 6}


def test_a_step_cancelled_mid_chunk_leaves_no_uncommitted_state_behind(kafka_bootstrap, tmp_path, monkeypatch):
    """A worker's shutdown cancels a step while its chunk runs in the operators'
    thread (which goes on): the flush at shutdown that follows must start from the
    changelog, not from a memory that holds a batch whose offsets were never committed
    (its state records would make the restarted worker apply that batch twice)."""
    import contextlib

    cfg, options = one_partition(kafka_bootstrap, tmp_path)
    fb = registry.with_prefix(registry.FEEDBACK, cfg.kafka.topic_prefix)
    feedback = [Message(fb, 0, i, k, v, 0) for i, (k, v) in enumerate(_feedback_values(600, np.random.default_rng(4)))]
    handle = EngineCore.handle

    def slow(core: EngineCore, *args, **kwargs):
        time.sleep(0.5)
        return handle(core, *args, **kwargs)

    def signals(engine: TransactionalEngine) -> int:
        st = engine.core.state
        return int(st.n_signals[:st.n_rows].sum())

    async def scenario() -> tuple[int, int, bool]:
        engine = TransactionalEngine(cfg, options, transactional_id=f"{cfg.kafka.topic_prefix}cancel-test")
        try:
            await engine.process(feedback[:300])
            committed = signals(engine)
            monkeypatch.setattr(EngineCore, "handle", slow)
            step = asyncio.ensure_future(engine.process(feedback[300:]))
            await asyncio.sleep(0.2)  # inside the slow chunk
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await step
            monkeypatch.setattr(EngineCore, "handle", handle)
            await engine.flush_profiles(due_only=False)
            return committed, signals(engine), engine.applied.get((fb, 0)) == 300
        finally:
            await engine.stop()

    committed, after, offsets_ok = asyncio.run(scenario())
    assert committed > 0 and after == committed and offsets_ok


def test_a_message_whose_processing_raises_is_dead_lettered_and_the_rest_applied(kafka_bootstrap, tmp_path,
                                                                                   monkeypatch):
    """A bug met by one input (the operators raise on it) must not stop the stream: the
    step redoes its batch one message at a time from the committed state (in the
    operators' thread, like a chunk), dead-letters the message at fault with the
    error as its reason, and applies every other message once."""
    from tests.integration.test_engine_dead_letters import read_all

    cfg, options = one_partition(kafka_bootstrap, tmp_path)
    p = cfg.kafka.topic_prefix
    fb, dlq = registry.with_prefix(registry.FEEDBACK, p), registry.with_prefix(registry.DEAD_LETTERS, p)
    feedback = [Message(fb, 0, i, k, v, 0) for i, (k, v) in enumerate(_feedback_values(50, np.random.default_rng(6)))]
    poison = feedback[17]
    handle = EngineCore.handle
    threads: set[str] = set()

    def buggy(core: EngineCore, batch, *args, **kwargs):
        threads.add(threading.current_thread().name)
        if any(m is poison for m in batch):
            raise RuntimeError("boom")
        return handle(core, batch, *args, **kwargs)

    async def scenario() -> tuple:
        engine = TransactionalEngine(cfg, options, transactional_id=f"{p}isolate-test")
        try:
            monkeypatch.setattr(EngineCore, "handle", buggy)
            step = await engine.process(feedback)
            st = engine.core.state
            return step, int(st.n_signals[:st.n_rows].sum()), engine.stats.isolated, dict(engine.applied)
        finally:
            await engine.stop()

    step, signals, isolated, applied = asyncio.run(scenario())
    assert step.consumed == 50 and step.applied == 50 and isolated == 1
    assert signals == 49 and applied == {(fb, 0): 50}
    letters = [json.loads(v) for _, v in read_all(options, dlq)]
    assert len(letters) == 1 and "RuntimeError: boom" in json.dumps(letters[0])
    assert threads and all(t.startswith("zot-operators") for t in threads), threads


def test_a_step_skips_what_was_applied_or_is_not_its_own_and_owes_every_consumed_offset(kafka_bootstrap, tmp_path):
    """A redelivered prefix (offsets below what the changelog says was applied) and the
    messages of a partition this worker no longer holds are skipped, in chunks that
    mix partitions; the step still reports every consumed partition's next offset
    (the consumer's commit), and applies the rest exactly once."""
    cfg = small_config(kafka_bootstrap, partitions=2)
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"kpi_check_every": 40})})
    _, options = prepare(cfg, tmp_path)
    p = cfg.kafka.topic_prefix
    fb = registry.with_prefix(registry.FEEDBACK, p)
    values = _feedback_values(400, np.random.default_rng(8))
    part0 = [Message(fb, 0, i, k, v, 0) for i, (k, v) in enumerate(values[:200])]
    part1 = [Message(fb, 1, i, k, v, 0) for i, (k, v) in enumerate(values[200:])]
    both = {(fb, 0), (fb, 1)}

    async def none() -> list[Message]:
        return []

    async def scenario() -> tuple:
        engine = TransactionalEngine(cfg, options, transactional_id=f"{p}skip-test")
        try:
            first = await engine.process(part0[:100] + part1[:50], assigned=both, urgent=none)
            st = engine.core.state
            before = int(st.n_signals[:st.n_rows].sum())
            # Partition 0 again from offset 50 (a redelivery), then partition 1, no longer ours.
            second = await engine.process(part0[50:150] + part1[50:80], assigned={(fb, 0)}, urgent=none)
            st = engine.core.state
            return first, before, second, int(st.n_signals[:st.n_rows].sum()), dict(engine.applied)
        finally:
            await engine.stop()

    first, before, second, after, applied = asyncio.run(scenario())
    assert first.applied == 150 and first.offsets == {(fb, 0): 100, (fb, 1): 50}
    assert second.consumed == 130 and second.applied == 50
    assert second.offsets == {(fb, 0): 150, (fb, 1): 80}, "skipped messages are owed too"
    assert after - before == 50, "only partition 0's offsets 100..149 took effect"
    assert applied == {(fb, 0): 150, (fb, 1): 50}


def test_a_step_pulls_user_events_a_chunk_at_a_time(kafka_bootstrap, tmp_path, monkeypatch):
    """The worker's consumer decodes records as they are taken, on the event loop's
    thread: a step takes one chunk at a time (`more`) after the previous one is done,
    up to its limit, and stops pulling when a KPI report is waiting."""
    cfg, options = one_partition(kafka_bootstrap, tmp_path, kpi_check_every=300)
    p = cfg.kafka.topic_prefix
    fb, kpi = registry.with_prefix(registry.FEEDBACK, p), registry.with_prefix(registry.KPI, p)
    source = [Message(fb, 0, i, k, v, 0) for i, (k, v) in enumerate(_feedback_values(1500, np.random.default_rng(8)))]
    report = schemas.CellKpi(event_id="k1", ts=1.0, cell_id="s0-0", epoch=1, prb_total=51,
                             users=[schemas.UserChannel(user_id="u1", spectral_efficiency=2.0, app="video")])
    kpi_msg = Message(kpi, 0, 0, b"s0-0", schemas.encode(report), 0)
    log: list[tuple[str, int]] = []  # pulls and chunks, in order
    handle = EngineCore.handle

    def spy(core: EngineCore, batch, *args, **kwargs):
        log.append(("chunk", len(batch)))
        return handle(core, batch, *args, **kwargs)

    async def pull() -> list[Message]:
        got = source[len(pulled):len(pulled) + 300]
        pulled.extend(got)
        log.append(("pull", len(got)))
        return got

    pulled: list[Message] = []
    calls: list[int] = []

    async def none() -> list[Message]:
        return []

    async def at_third_check() -> list[Message]:
        calls.append(1)
        return [kpi_msg] if len(calls) == 3 else []

    async def scenario() -> tuple:
        engine = TransactionalEngine(cfg, options, transactional_id=f"{p}pull-test")
        try:
            first_batch = list(await pull())
            first = await engine.process(first_batch, urgent=none, more=pull, limit=900)
            applied1, log1 = dict(engine.applied), list(log)
            log.clear()
            # What the first step read ahead during its commit comes first, as the batch loop's carry.
            second_batch = first_batch[first.consumed:] or list(await pull())
            second = await engine.process(second_batch, urgent=at_third_check, more=pull, limit=10_000)
            return first, first_batch, applied1, log1, second, second_batch, dict(engine.applied), list(log)
        finally:
            await engine.stop()

    monkeypatch.setattr(EngineCore, "handle", spy)
    first, first_batch, applied1, log1, second, second_batch, applied2, log2 = asyncio.run(scenario())
    # Up to the limit, a chunk pulled only once the one before was handled; the caller's
    # list holds what the step pulled (and any pulls while it committed: read ahead).
    assert log1[:6] == [("pull", 300), ("chunk", 300), ("pull", 300), ("chunk", 300), ("pull", 300), ("chunk", 300)]
    assert all(entry[0] == "pull" for entry in log1[6:])
    assert first.consumed == 900 and first.applied == 900 and first_batch == source[:len(first_batch)]
    assert applied1 == {(fb, 0): 900}
    # A report waiting at a check ends the step: no further pull, the report decided.
    chunks2 = [entry for entry in log2 if entry[0] == "chunk"]
    assert chunks2 == [("chunk", 300), ("chunk", 300), ("chunk", 1)]
    after_second_chunk = [i for i, entry in enumerate(log2) if entry == ("chunk", 300)][1] + 1
    assert log2[after_second_chunk] == ("chunk", 1), "the report is decided next, without another pull"
    assert log2[-1] == ("chunk", 1), "a step that decides reports reads nothing ahead while it commits"
    assert second.consumed == 600 and second.urgent == [kpi_msg] and second.applied == 601
    assert second_batch[:600] == source[900:1500] and applied2 == {(fb, 0): 1500, (kpi, 0): 1}


def test_a_step_reads_the_next_events_ahead_while_its_transaction_commits(kafka_bootstrap, tmp_path, monkeypatch):
    """While the broker commits a step, the worker pulls the next records (up to a
    step's limit) into the caller's list: the next step starts with them, and every
    event still takes effect once. It stops pulling once the commit is done."""
    cfg, options = one_partition(kafka_bootstrap, tmp_path, kpi_check_every=300)
    p = cfg.kafka.topic_prefix
    fb = registry.with_prefix(registry.FEEDBACK, p)
    source = [Message(fb, 0, i, k, v, 0) for i, (k, v) in enumerate(_feedback_values(1500, np.random.default_rng(9)))]
    pulled: list[Message] = []
    log: list[str] = []
    slow = {"commit": 0.0, "pull": 0.0}
    from aiokafka import AIOKafkaProducer

    commit_transaction = AIOKafkaProducer.commit_transaction

    async def slow_commit(self):  # the broker taking its time over EndTxn
        log.append("commit")
        await asyncio.sleep(slow["commit"])
        await commit_transaction(self)
        log.append("committed")

    async def pull() -> list[Message]:
        await asyncio.sleep(slow["pull"])
        got = source[len(pulled):len(pulled) + 300]
        pulled.extend(got)
        log.append(f"pull {len(got)}")
        return got

    async def none() -> list[Message]:
        return []

    async def scenario() -> tuple:
        engine = TransactionalEngine(cfg, options, transactional_id=f"{p}ahead-test")
        try:
            slow["commit"] = 0.5
            batch = list(await pull())
            first = await engine.process(batch, urgent=none, more=pull, limit=600)
            ahead, log1, applied1 = len(batch) - first.consumed, list(log), dict(engine.applied)
            # The commit is quick now and each pull slow: one pull at most, then the step ends.
            slow["commit"], slow["pull"] = 0.0, 0.3
            log.clear()
            carry = batch[first.consumed:]
            second = await engine.process(carry, urgent=none, more=pull, limit=600)
            log2 = list(log)
            carry = carry[second.consumed:]
            rest = [] if not carry else [await engine.process(carry, urgent=none, more=pull, limit=600)]
            st = engine.core.state
            return first, ahead, log1, applied1, second, log2, rest, int(st.n_signals[:st.n_rows].sum()), \
                dict(engine.applied)
        finally:
            await engine.stop()

    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", slow_commit)
    first, ahead, log1, applied1, second, log2, rest, signals, applied = asyncio.run(scenario())
    assert first.consumed == 600 and applied1 == {(fb, 0): 600}, "what was read ahead is not applied yet"
    assert ahead == 600, "a slow commit: read ahead up to a step's limit"
    assert log1[log1.index("commit"):] == ["commit", "pull 300", "pull 300", "committed"]
    assert second.consumed == 600
    assert log2[log2.index("commit"):] == ["commit", "committed", "pull 300"], "no pull once committed"
    assert signals == 1500 and applied == {(fb, 0): 1500}, "every event took effect once"


def test_a_timed_profile_flush_gives_way_to_waiting_kpi_reports(kafka_bootstrap, tmp_path):
    """A flush that got the lock while a KPI report waits would make the report wait
    for the whole flush: it gives way (a few times in a row at most, so profiles are
    never held back for long), and a flush at shutdown never does."""
    from tests.integration.test_engine_dead_letters import read_all

    from engine.worker import MAX_FLUSH_DEFERRALS

    cfg, options = one_partition(kafka_bootstrap, tmp_path, profile_interval_s=0.05)
    p = cfg.kafka.topic_prefix
    fb, profiles = registry.with_prefix(registry.FEEDBACK, p), registry.with_prefix(registry.PROFILES, p)
    feedback = [Message(fb, 0, i, k, v, 0) for i, (k, v) in enumerate(_feedback_values(200, np.random.default_rng(9)))]
    asked: list[int] = []

    async def waiting() -> bool:
        asked.append(1)
        return True

    async def scenario() -> tuple:
        engine = TransactionalEngine(cfg, options, transactional_id=f"{p}defer-test")
        engine.urgent_waiting = waiting
        try:
            await engine.process(feedback[:150])
            pending = len(engine.core.profile_pending)
            await asyncio.sleep(0.1)  # every mark is due
            gave_way = [await engine.flush_profiles() for _ in range(MAX_FLUSH_DEFERRALS)]
            flushed = await engine.flush_profiles()
            await engine.process(feedback[150:])
            at_stop = await engine.flush_profiles(due_only=False)
            return pending, gave_way, flushed, at_stop, engine.stats.flushes_deferred
        finally:
            await engine.stop()

    pending, gave_way, flushed, at_stop, deferred = asyncio.run(scenario())
    assert pending > 0
    assert gave_way == [0] * MAX_FLUSH_DEFERRALS and deferred == MAX_FLUSH_DEFERRALS
    assert flushed > 0 and at_stop > 0 and len(asked) == MAX_FLUSH_DEFERRALS  # not asked at the stop
    assert len(read_all(options, profiles)) == flushed + at_stop
