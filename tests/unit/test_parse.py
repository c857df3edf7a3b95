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
