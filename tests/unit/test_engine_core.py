"""The engine's loop body on the in-process bus: learn, decide, publish, dead-letter."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from engine import schemas
from engine.bus import InProcessBus
from engine.config import load_config
from engine.runner import EmbeddedEngine, EngineCore

CFG = load_config(Path(__file__).resolve().parents[2] / "configs" / "example.yaml")


def engine() -> tuple[EmbeddedEngine, InProcessBus]:
    bus = InProcessBus(partitions=3)
    return EmbeddedEngine(EngineCore(CFG, cells={"c1", "c2"}), bus), bus


def kpi(cell: str, epoch: int, users: list[tuple[str, float, str]], prb: int = 51) -> bytes:
    return schemas.encode(schemas.CellKpi(
        event_id=f"k-{cell}-{epoch}", ts=float(epoch), cell_id=cell, epoch=epoch, prb_total=prb,
        users=[schemas.UserChannel(user_id=u, spectral_efficiency=se, app=a) for u, se, a in users],
    ))


def feedback(i: int, user: str, signal: str, qos: float, app: str = "video") -> bytes:
    return schemas.encode(schemas.Feedback(event_id=f"f{i}", ts=0.0, user_id=user, cell_id="c1", app=app,
                                           signal=signal, qos=qos))


def allocations(bus: InProcessBus) -> list[schemas.Allocation]:
    return [schemas.decode(m.value, expect=schemas.Allocation) for m in bus.messages("zot.allocations")]


def test_one_decision_per_cell_within_its_prbs():
    eng, bus = engine()
    bus.produce("zot.kpi", b"c1", kpi("c1", 0, [("a", 2.0, "video"), ("b", 0.5, "web"), ("c", 4.0, "download")]))
    bus.produce("zot.kpi", b"c2", kpi("c2", 0, [("d", 1.0, "gaming")], prb=10))
    eng.step(now=1.0)
    decs = {d.cell_id: d for d in allocations(bus)}
    assert set(decs) == {"c1", "c2"}
    for d in decs.values():
        assert d.prb_used == sum(u.prb for u in d.users) <= d.prb_total
        assert d.policy == "zot" and d.epoch == 0
    assert [u.user_id for u in decs["c1"].users] == ["a", "b", "c"]
    # Messages are keyed by cell id on the allocation topic.
    assert {m.key for m in bus.messages("zot.allocations")} == {b"c1", b"c2"}


def test_feedback_changes_the_next_decision():
    """A user who abandons at a high rate is learned to need more, and gets more PRBs."""
    users = [("picky", 2.0, "video"), ("easy", 2.0, "video")]
    base, bus0 = engine()
    bus0.produce("zot.kpi", b"c1", kpi("c1", 0, users, prb=20))
    base.step(now=0.0)
    before = {u.user_id: u.prb for u in allocations(bus0)[0].users}
    assert before["picky"] == before["easy"]  # same prior, same channel

    eng, bus = engine()
    for i in range(40):
        bus.produce("zot.feedback", b"picky", feedback(i, "picky", "abandon", 6.0))
        bus.produce("zot.feedback", b"easy", feedback(100 + i, "easy", "kept", 1.0))
    bus.produce("zot.kpi", b"c1", kpi("c1", 0, users, prb=20))
    eng.step(now=0.0)
    after = {u.user_id: u.prb for u in allocations(bus)[0].users}
    assert after["picky"] > after["easy"]
    profiles = {m.key: schemas.decode(m.value, expect=schemas.ProfileUpdate) for m in bus.messages("zot.profiles")}
    assert set(profiles) == {b"picky", b"easy"}
    (pz,) = profiles[b"picky"].zot
    (ez,) = profiles[b"easy"].zot
    assert pz.n_signals == 40 and pz.adequate > ez.adequate


def test_invalid_inputs_dead_lettered_with_original_bytes_and_state_untouched():
    eng, bus = engine()
    bad = [
        (b"u1", b"{oops"),
        (b"u1", feedback(1, "u1", "kept", 3.0, app="radio")),  # unknown application
        (b"u1", json.dumps({"type": "feedback", "event_id": "x", "ts": 0, "user_id": "u1", "cell_id": "c9",
                            "app": "video", "signal": "kept", "qos": 1}).encode()),  # unknown cell
    ]
    for key, value in bad:
        bus.produce("zot.feedback", key, value)
    eng.step(now=5.0)
    dead = [schemas.DeadLetter.model_validate_json(m.value) for m in bus.messages("zot.dead-letters")]
    assert len(dead) == 3
    assert sorted(base64.b64decode(d.value_b64) for d in dead) == sorted(v for _, v in bad)
    assert all(d.source_topic == "zot.feedback" and d.offset is not None for d in dead)
    assert eng.core.state.n_rows == 0 and eng.core.counters.accepted == 0


def _casual_share(weight: float) -> int:
    segs = [CFG.population.segments[0].model_copy(update={"weight": weight}), CFG.population.segments[1]]
    cfg = CFG.model_copy(update={"population": CFG.population.model_copy(update={"segments": segs})})
    bus = InProcessBus()
    eng = EmbeddedEngine(EngineCore(cfg, cells={"c1"}), bus)
    for user, seg in (("p", "casual"), ("q", "gamer")):
        ctx = schemas.Context(event_id=f"c-{user}", ts=0, user_id=user, cell_id="c1", segment=seg)
        bus.produce("zot.context", user.encode(), schemas.encode(ctx))
    bus.produce("zot.kpi", b"c1", kpi("c1", 0, [("p", 1.0, "video"), ("q", 1.0, "video")], prb=20))
    eng.step(now=0.0)
    (dec,) = allocations(bus)
    return {u.user_id: u.prb for u in dec.users}["p"]


def test_weights_of_premium_segment_shift_resources():
    # Scarce PRBs: a casual user weighted 5x (premium) gets more of them than at weight 1.
    assert _casual_share(5.0) > _casual_share(1.0)


def test_profiles_are_the_profile_model_encoding():
    """The engine serializes profiles from wire dicts; the bytes must be exactly what the
    ProfileUpdate model encodes, with and without interest models."""
    for cfg in (CFG, CFG.model_copy(update={"interests": CFG.interests.model_copy(update={"enabled": False})})):
        bus = InProcessBus(partitions=3)
        eng = EmbeddedEngine(EngineCore(cfg, cells={"c1", "c2"}), bus)
        for i in range(30):
            bus.produce("zot.feedback", f"u{i % 7}".encode(),
                        feedback(i, f"u{i % 7}", ["abandon", "kept", "retry"][i % 3], 0.5 + i, app=["video", "web"][i % 2]))
        eng.step(now=12345.678)
        profiles = bus.messages("zot.profiles")
        assert len(profiles) == 7
        for m in profiles:
            ev = schemas.decode(m.value, expect=schemas.ProfileUpdate)
            assert schemas.encode(ev) == m.value
            assert {z.app for z in ev.zot} == {"video", "web"} and all(z.n_signals > 0 for z in ev.zot)
            assert (len(ev.interests) > 0) == cfg.interests.enabled
