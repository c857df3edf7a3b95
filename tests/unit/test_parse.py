"""The parse operator: every input comes out as an event or a dead letter, never lost."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bus import Message
from operators.parse import parse_batch

TOPICS = {"zot.feedback": "feedback", "zot.kpi": "kpi"}
APPS = {"video", "web"}
CELLS = {"c1", "c2"}


def msg(value: bytes, topic: str = "zot.feedback", offset: int = 0) -> Message:
    return Message(topic, 0, offset, b"k", value, 1000)


def fb(**over) -> bytes:
    base = {"type": "feedback", "event_id": "e", "ts": 1, "user_id": "u", "cell_id": "c1", "app": "video",
            "signal": "kept", "qos": 3.0}
    base.update(over)
    return json.dumps(base).encode()


def test_routes_valid_and_dead_letters_invalid_with_original_bytes():
    batch = [
        msg(fb()),
        msg(fb(app="radio"), offset=1),
        msg(fb(cell_id="c9"), offset=2),
        msg(b"\x00garbage", offset=3),
        msg(fb(), topic="zot.kpi", offset=4),  # a feedback event on the KPI topic
        msg(json.dumps({"type": "kpi", "event_id": "k", "ts": 0, "cell_id": "c2", "epoch": 0, "prb_total": 5,
                        "users": [{"user_id": "u", "spectral_efficiency": 1.0, "app": "tv"}]}).encode(),
            topic="zot.kpi", offset=5),
    ]
    out = parse_batch(batch, TOPICS, APPS, CELLS)
    assert len(out.feedback) == 1 and out.accepted == 1
    reasons = {d.offset: d.reason for d in out.dead}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "unknown application 'radio'" in reasons[1]
    assert "unknown cell 'c9'" in reasons[2]
    assert "UTF-8" in reasons[3] or "JSON" in reasons[3]
    assert "expected" in reasons[4]
    assert "'tv'" in reasons[5]
    for d in out.dead:
        assert base64.b64decode(d.value_b64) == batch[d.offset].value
        assert d.source_topic == batch[d.offset].topic


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=64), st.builds(fb, qos=st.floats(allow_nan=True))), max_size=20))
def test_nothing_lost(values):
    batch = [msg(v, offset=i) for i, v in enumerate(values)]
    out = parse_batch(batch, TOPICS, APPS, CELLS)
    assert out.accepted + len(out.dead) == len(batch)


def test_null_value_is_dead_lettered_not_a_crash():
    out = parse_batch([msg(None, offset=0), msg(fb(), offset=1)], TOPICS, APPS, CELLS)  # type: ignore[arg-type]
    assert len(out.feedback) == 1
    assert [(d.offset, d.reason, d.value_b64) for d in out.dead] == [(0, "null value: no event", "")]


def _reference(m: Message):
    """What one message becomes by the reference decoder and the general semantic check."""
    from engine import schemas
    from operators.parse import _semantic_error

    try:
        ev = schemas.decode_reference(m.value, expect=schemas.INPUT_TYPES[TOPICS[m.topic]])
    except schemas.DecodeError as exc:
        return ("dead", exc.reason)
    problem = _semantic_error(ev, APPS, CELLS)
    return ("dead", problem) if problem else (ev.type, schemas.encode(ev))


_fb_variants = st.builds(
    fb, app=st.sampled_from(["video", "web", "radio"]), cell_id=st.sampled_from(["c1", "c2", "c9", "bad id"]),
    qos=st.one_of(st.floats(allow_nan=True), st.sampled_from(["2", "x", None])),
    signal=st.sampled_from(["kept", "rating", "nope"]), ts=st.sampled_from([1, -1, "1", True]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(TOPICS)), st.one_of(st.binary(max_size=32), _fb_variants)),
                max_size=20))
def test_each_message_routed_as_the_reference_decoder_says(items):
    batch = [msg(v, topic=t, offset=i) for i, (t, v) in enumerate(items)]
    out = parse_batch(batch, TOPICS, APPS, CELLS)
    got: dict[int, tuple] = {d.offset: ("dead", d.reason) for d in out.dead}
    from engine import schemas

    accepted = iter(out.feedback)  # only feedback can be valid here, in arrival order
    for m in batch:
        if m.offset not in got:
            got[m.offset] = ("feedback", schemas.encode(next(accepted)))
    assert next(accepted, None) is None
    assert got == {m.offset: _reference(m) for m in batch}
