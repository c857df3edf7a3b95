"""Event schemas: round trips, rejections with reasons, exported JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from engine import schemas as s

ROOT = Path(__file__).resolve().parents[2]


def feedback(**over):
    base = dict(event_id="e1", ts=10.0, user_id="u1", cell_id="c1", app="video", signal="abandon", qos=2.5)
    base.update(over)
    return base


def kpi(**over):
    base = dict(
        event_id="k1", ts=1.0, cell_id="c1", epoch=3, prb_total=51,
        users=[{"user_id": "u1", "spectral_efficiency": 2.0}, {"user_id": "u2", "spectral_efficiency": 0.0}],
    )
    base.update(over)
    return base


VALID = [
    {"type": "feedback", **feedback()},
    {"type": "feedback", **feedback(signal="rating", rating=4)},
    {"type": "context", "event_id": "x1", "ts": 0, "user_id": "u1", "cell_id": "c2", "app": "web", "x_m": -3.5},
    {"type": "kpi", **kpi()},
    {"type": "interaction", "event_id": "i1", "ts": 5, "user_id": "u1", "item_id": "m42", "app": "video",
     "action": "play", "dwell_s": 30},
]


@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["type"])
def test_round_trip(obj):
    event = s.decode(json.dumps(obj).encode())
    assert event.type == obj["type"]
    again = s.decode(s.encode(event))
    assert again == event
    assert s.encode(again) == s.encode(event)


BAD = [
    (b"\xff\xfe", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"type": "feedback", **feedback(qos=-1.0)}).encode(), "qos"),
    (b'{"type": "feedback", "event_id": "e", "ts": 1, "user_id": "u", "cell_id": "c", "app": "a", '
     b'"signal": "kept", "qos": NaN}', "non-finite"),
    (json.dumps({"type": "feedback", **feedback(qos=float("inf"))}).encode(), "non-finite"),
    (json.dumps({"type": "feedback", **feedback()}).replace('"qos": 2.5', '"qos": 1e400').encode(), "qos"),
    (json.dumps({"type": "feedback", **feedback(signal="shrug")}).encode(), "signal"),
    (json.dumps({"type": "feedback", **feedback(signal="rating")}).encode(), "rating"),
    (json.dumps({"type": "feedback", **feedback(rating=3)}).encode(), "rating"),
    (json.dumps({"type": "feedback", **{k: v for k, v in feedback().items() if k != "user_id"}}).encode(), "user_id"),
    (json.dumps({"type": "feedback", **feedback(extra=1)}).encode(), "extra"),
    (json.dumps({"type": "kpi", **kpi(users=[{"user_id": "u1", "spectral_efficiency": 1},
                                            {"user_id": "u1", "spectral_efficiency": 2}])}).encode(), "duplicate"),
    (json.dumps({"type": "kpi", **kpi(prb_total=-1)}).encode(), "prb_total"),
    (json.dumps({"type": "teleport", "event_id": "e"}).encode(), "teleport"),
    (json.dumps({"type": "feedback", "v": 2, **feedback()}).encode(), "version"),
    (json.dumps({"type": "feedback", **feedback(user_id="bad id with spaces")}).encode(), "user_id"),
]


@pytest.mark.parametrize("payload,needle", BAD)
def test_rejects_with_reason(payload, needle):
    with pytest.raises(s.DecodeError) as info:
        s.decode(payload)
    assert needle.lower() in info.value.reason.lower()


def test_expect_type_mismatch():
    with pytest.raises(s.DecodeError, match="expected"):
        s.decode(json.dumps({"type": "feedback", **feedback()}), expect=s.CellKpi)
    assert isinstance(s.decode(json.dumps({"type": "kpi", **kpi()}), expect=s.CellKpi), s.CellKpi)


def test_allocation_is_consistent():
    users = [s.UserAllocation(user_id="u1", prb=3, rate_mbps=5.0, satisfaction=0.9, served=True)]
    s.Allocation(event_id="a", ts=0, cell_id="c", epoch=0, policy="zot", prb_total=5, prb_used=3, users=users)
    with pytest.raises(ValueError, match="sum"):
        s.Allocation(event_id="a", ts=0, cell_id="c", epoch=0, policy="zot", prb_total=5, prb_used=4, users=users)
    with pytest.raises(ValueError, match="exceeds"):
        s.Allocation(event_id="a", ts=0, cell_id="c", epoch=0, policy="zot", prb_total=2, prb_used=3, users=users)


def test_exported_schemas_are_current():
    exported = {p.stem: json.loads(p.read_text()) for p in (ROOT / "schemas").glob("*.json")}
    assert exported == s.json_schemas(), "run `zot schemas` to refresh schemas/"


@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["type"])
def test_json_schema_accepts_what_decoder_accepts(obj):
    schema = s.json_schemas()[obj["type"]]
    jsonschema.Draft202012Validator(schema).validate(obj)


def test_json_schema_rejects_unknown_enum():
    schema = s.json_schemas()["feedback"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({"type": "feedback", **feedback(signal="shrug")})


def test_signal_codes_dense_and_stable():
    assert sorted(s.SIGNAL_CODES.values()) == list(range(len(s.Signal)))
    assert s.SIGNAL_CODES[s.Signal.ABANDON] == 0  # append-only contract of the batch layout
