"""EngineCore details the streaming worker relies on: batch-independent decisions,
dirty users, dead letters that cite their source, and exact changelog records."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from engine import schemas
from engine import topics as registry
from engine.bus import Message
from engine.config import load_config
from engine.runner import EngineCore
from engine.state_changelog import apply_records, apply_user_record, offset_key, user_record

CFG = load_config(Path(__file__).resolve().parents[2] / "configs" / "example.yaml")
FB, CTX, KPI = (registry.with_prefix(t, "zot.") for t in (registry.FEEDBACK, registry.CONTEXT, registry.KPI))


def msg(topic: str, offset: int, ev, partition: int = 0) -> Message:
    return Message(topic, partition, offset, None, schemas.encode(ev) if not isinstance(ev, bytes) else ev, 0)


def kpi(epoch: int, se: float) -> schemas.CellKpi:
    return schemas.CellKpi(event_id=f"k{epoch}", ts=float(epoch), cell_id="c1", epoch=epoch, prb_total=20,
                           users=[schemas.UserChannel(user_id="a", spectral_efficiency=se, app="video"),
                                  schemas.UserChannel(user_id="b", spectral_efficiency=1.0, app="video")])


def fb(i: int, user: str, qos: float, signal: str = "abandon", app: str = "video") -> schemas.Feedback:
    return schemas.Feedback(event_id=f"f{i}", ts=1.0, user_id=user, cell_id="c1", app=app, signal=signal, qos=qos)


def decisions(outs) -> list[tuple]:
    return [(d.epoch, [(u.user_id, u.prb) for u in d.users])
            for d in (schemas.decode(o.value, expect=schemas.Allocation) for o in outs
                      if o.topic is registry.ALLOCATIONS)]


def test_every_kpi_report_is_decided_whatever_the_batching():
    events = [msg(KPI, 0, kpi(1, 0.5)), msg(FB, 0, fb(0, "a", 1.0)), msg(KPI, 1, kpi(2, 3.0))]
    one = EngineCore(CFG, cells={"c1"})
    together = decisions(one.handle(events, now=1.0))
    two = EngineCore(CFG, cells={"c1"})
    apart = decisions(two.handle(events[:1], now=1.0)) + decisions(two.handle(events[1:], now=1.0))
    assert [e for e, _ in together] == [1, 2]  # both reports decided, in order
    # Within one batch feedback precedes the KPIs, so only the first decision may differ.
    assert together[1] == apart[1]


def test_dirty_users_are_context_feedback_and_new_slots():
    core = EngineCore(CFG, cells={"c1"})
    core.handle([msg(CTX, 0, schemas.Context(event_id="c", ts=0.0, user_id="z", cell_id="c1", segment="gamer")),
                 msg(FB, 0, fb(0, "y", 2.0)), msg(KPI, 0, kpi(1, 1.0))], now=1.0)
    assert core.dirty == {"z", "y", "a", "b"}


def test_unreachable_feedback_is_dead_lettered_with_its_source():
    core = EngineCore(CFG, cells={"c1"})
    bad = fb(1, "u", 5.0, app="gaming")  # 5 ms is below gaming's base latency: no rate reaches it
    raw = schemas.encode(bad)
    outs = core.handle([msg(FB, 7, fb(0, "u", 1.0)), Message(FB, 2, 41, b"u", raw, 0)], now=1.0)
    dead = [schemas.DeadLetter.model_validate_json(o.value) for o in outs if o.topic is registry.DEAD_LETTERS]
    assert len(dead) == 1
    assert (dead[0].source_topic, dead[0].partition, dead[0].offset) == (FB, 2, 41)
    assert base64.b64decode(dead[0].value_b64) == raw and "unreachable" in dead[0].reason
    assert core.counters.feedback == 1


def test_changelog_records_restore_the_exact_state():
    core = EngineCore(CFG, cells={"c1"})
    core.handle([msg(CTX, 0, schemas.Context(event_id="c", ts=0.0, user_id="a", cell_id="c1", app="video",
                                             segment="gamer"))]
                + [msg(FB, i, fb(i, "a", 0.5 + i)) for i in range(5)] + [msg(KPI, 0, kpi(1, 2.0))], now=1.0)
    fresh = EngineCore(CFG, cells={"c1"})
    applied: dict = {}
    records = [(b"u:" + u.encode(), user_record(core, u)) for u in sorted(core.dirty)]
    apply_records(fresh, applied, records + [(offset_key(FB, 0), b"5"), (offset_key(FB, 0), b"3")])
    assert applied == {(FB, 0): 5}  # offsets never move back
    assert all(user_record(fresh, u) == user_record(core, u) for u in core.dirty)
    # Applying a record twice changes nothing.
    apply_user_record(fresh, "a", user_record(core, "a"))
    assert user_record(fresh, "a") == user_record(core, "a")
    # The next decision is the same from the restored state.
    assert decisions(fresh.handle([msg(KPI, 1, kpi(2, 2.0))], now=2.0)) == \
        decisions(core.handle([msg(KPI, 1, kpi(2, 2.0))], now=2.0))


def test_timer_trigger_decides_the_latest_report_once_and_survives_a_restart():
    from engine.state_changelog import PENDING, pending_record

    cfg = CFG.model_copy(update={"engine": CFG.engine.model_copy(update={"epoch_trigger": "timer"})})
    core = EngineCore(cfg, cells={"c1"})
    assert decisions(core.handle([msg(KPI, 0, kpi(1, 1.0)), msg(KPI, 1, kpi(2, 2.0))], now=1.0)) == []
    assert core.dirty_cells == {"c1"}
    # A restarted worker gets the pending report back from the changelog.
    restarted = EngineCore(cfg, cells={"c1"})
    apply_records(restarted, {}, [(PENDING + b"c1", pending_record(core, "c1"))])
    first = decisions(core.tick(now=2.0))
    assert [e for e, _ in first] == [2] and decisions(restarted.tick(now=2.0)) == first
    assert core.tick(now=3.0) == [] and pending_record(core, "c1") == b""
    apply_records(restarted, {}, [(PENDING + b"c1", b"")])
    assert restarted.pending == {}


def test_deferred_profiles_wait_for_a_flush_and_survive_a_restart():
    profiles = lambda outs: [schemas.decode(o.value, expect=schemas.ProfileUpdate)  # noqa: E731
                             for o in outs if o.topic is registry.PROFILES]
    core = EngineCore(CFG, cells={"c1"}, defer_profiles=True)
    outs = core.handle([msg(FB, i, fb(i, u, 0.5 + i)) for i, u in enumerate("abab")], now=1.0)
    assert profiles(outs) == [] and list(core.profile_pending) == ["a", "b"]
    # The pending mark is part of the user's record: a restarted worker publishes them.
    restarted = EngineCore(CFG, cells={"c1"}, defer_profiles=True)
    apply_records(restarted, {}, [(b"u:" + u.encode(), user_record(core, u)) for u in sorted(core.dirty)])
    assert list(restarted.profile_pending) == ["a", "b"]
    core.clear_dirty()
    # Only users marked before the cut are due (a worker flushes those an interval old).
    assert core.flush_profiles(now=2.0, marked_before=time.monotonic() - 60) == [] and len(core.profile_pending) == 2
    first = profiles(core.flush_profiles(now=2.0, marked_before=time.monotonic()))
    assert [p.user_id for p in first] == ["a", "b"] and core.dirty == {"a", "b"} and not core.profile_pending
    # A limited flush takes the oldest marks first and leaves the rest pending.
    assert [p.user_id for p in profiles(restarted.flush_profiles(now=2.0, limit=1))] == ["a"]
    assert list(restarted.profile_pending) == ["b"]
    assert [p.zot for p in profiles(restarted.flush_profiles(now=2.0))] == [p.zot for p in first[1:]]
    # One profile per user however many batches touched it, with the latest estimates.
    for i in range(3):
        assert profiles(core.handle([msg(FB, 10 + i, fb(10 + i, "a", 2.0 + i))], now=3.0)) == []
    flushed = profiles(core.flush_profiles(now=4.0))
    assert [p.user_id for p in flushed] == ["a"] and flushed[0].zot[0].n_signals == 5
    # Restored as published: nothing pending after the flush's records are applied.
    apply_records(restarted, {}, [(b"u:a", user_record(core, "a"))])
    assert "a" not in restarted.profile_pending
