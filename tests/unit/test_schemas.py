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


# ------------------------------------------------ fast decoder == reference decoder
#
# `decode` validates the bytes in one pass (pydantic-core) and falls back to the
# reference path (json.loads + model validation) for anything that pass rejects.
# These tests check that the two accept exactly the same payloads, with equal
# fields, and give the same reasons, on valid events mutated in the ways the
# fast path could differ: lax coercions, duplicate keys, missing `type`/`v`,
# NaN/Infinity literals, escapes, huge numbers, byte edits.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1", "1.0", "2.5", " 3 ", "-1", "1e400", "NaN", "inf", "true", "", "kept", "rating", "video",
                     "feedback", "kpi", "type", "u1", "a b", "\u00e9", "\ud800"]),
    st.text(max_size=6),
)
_json_values = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["user_id", "spectral_efficiency", "app", "cqi", "x"]),
                                                 inner, max_size=4)), max_leaves=6)


def _text(value: object) -> str:
    # Python's json writes NaN/Infinity (not JSON) and lone surrogates as escapes: both on purpose here.
    return json.dumps(value, allow_nan=True)


@st.composite
def _mutated_payload(draw) -> bytes:
    obj = dict(draw(st.sampled_from(VALID)))
    items = list(obj.items())
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        op = draw(st.sampled_from(["set", "drop", "dup", "add", "v", "type", "users"]))
        keys = [k for k, _ in items]
        if op == "set" and items:
            i = draw(st.integers(0, len(items) - 1))
            items[i] = (items[i][0], draw(_json_values))
        elif op == "drop" and items:
            items.pop(draw(st.integers(0, len(items) - 1)))
        elif op == "dup" and items:
            k = draw(st.sampled_from(keys))  # the same key twice: json.loads keeps the last
            items.insert(draw(st.integers(0, len(items))), (k, draw(_json_values)))
        elif op == "add":
            items.append((draw(st.sampled_from(["extra", "rating", "segment", "load", "cqi"])), draw(_json_values)))
        elif op == "v":
            items.append(("v", draw(st.sampled_from([1, 1.0, True, "1", 2, 0, None, 1.5]))))
        elif op == "type":
            items.append(("type", draw(st.sampled_from(["feedback", "context", "kpi", "interaction", "Feedback",
                                                         None, 1]))))
        elif op == "users":
            items.append(("users", [{"user_id": draw(st.sampled_from(["u1", "u2"])),
                                     "spectral_efficiency": draw(_json_scalars),
                                     "cqi": draw(_json_scalars)} for _ in range(draw(st.integers(0, 2)))]))
    text = "{" + ",".join(f"{_text(k)}:{_text(v)}" for k, v in items) + "}"
    raw = text.encode("utf-8", "surrogatepass")
    edit = draw(st.sampled_from(["none"] * 5 + ["insert", "delete", "escape"]))
    if edit == "insert":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.sampled_from([b" ", b"\xff", b"\\", b'"', b",", b"}", b"0", b"e"])) + raw[i:]
    elif edit == "delete" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + raw[i + 1:]
    elif edit == "escape":  # the same text with every ASCII letter of "type" written as \u escapes
        raw = raw.replace(b'"type"', b'"\\u0074\\u0079\\u0070\\u0065"')
    return raw


def _outcome(fn, payload: bytes, expect):
    try:
        return ("ok", fn(payload, expect=expect))
    except s.DecodeError as exc:
        return ("dead", exc.reason)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_payload(), st.sampled_from([None, s.Feedback, s.Context, s.CellKpi, s.Interaction]))
def test_fast_decoder_agrees_with_reference(payload, expect):
    fast, ref = _outcome(s.decode, payload, expect), _outcome(s.decode_reference, payload, expect)
    assert fast == ref
    if fast[0] == "ok":
        assert s.encode(fast[1]) == s.encode(ref[1])


@pytest.mark.parametrize("payload", [
    # the fast pass would fill a missing `type` from the model's default
    b'{"event_id":"e","ts":1,"user_id":"u","cell_id":"c","app":"a","signal":"kept","qos":2}',
    b'{"type":"feedback","v":"1","event_id":"e","ts":1,"user_id":"u","cell_id":"c","app":"a","signal":"kept","qos":2}',
    b'{"type":"feedback","event_id":"e","ts":1,"user_id":"u","cell_id":"c","app":"a","signal":"kept","qos":NaN}',
    b'{"type":"feedback","qos":2,"qos":-1,"event_id":"e","ts":1,"user_id":"u","cell_id":"c","app":"a","signal":"kept"}',
    # NaN/Infinity under a key a later duplicate overrides: pydantic-core parses them, json.loads does not
    b'{"type":Infinity,"type":"feedback","event_id":"e","ts":1,"user_id":"u","cell_id":"c","app":"a","signal":"kept",'
    b'"qos":2}',
    b'{"qos":NaN,"type":"feedback","event_id":"e","ts":1,"user_id":"u","cell_id":"c","app":"a","signal":"kept",'
    b'"qos":2}',
    b"[" * 100_000,  # json.loads raises RecursionError here: it must come out as a reason
])
def test_fast_decoder_rejects_like_reference(payload):
    with pytest.raises(s.DecodeError) as fast:
        s.decode(payload, expect=s.Feedback)
    with pytest.raises(s.DecodeError) as ref:
        s.decode_reference(payload, expect=s.Feedback)
    assert fast.value.reason == ref.value.reason


def test_encode_is_model_dump_json_for_every_type():
    # encode() calls the serializer directly; the bytes must be what model_dump_json gives.
    z = s.ZotEstimate(app="video", adequate=1.5, adequate_sd=0.25, desired=3.0, desired_sd=0.5, n_signals=2)
    users = [s.UserAllocation(user_id="u1", prb=3, rate_mbps=5.0, satisfaction=0.9, served=True)]
    events = [s.decode(json.dumps(o).encode()) for o in VALID] + [
        s.ProfileUpdate(event_id="p", ts=1.0, user_id="u1", zot=[z]),
        s.Allocation(event_id="a", ts=0, cell_id="c", epoch=0, policy="zot", prb_total=5, prb_used=3, users=users),
        s.DeadLetter(ts=1.0, reason="caf\u00e9 \u2028", source_topic="t", value_b64=""),
    ]
    for ev in events:
        assert s.encode(ev) == ev.model_dump_json(exclude_none=True).encode("utf-8")
    a, b = s.ProfileUpdate(event_id="p", ts=1.0, user_id="u1"), s.ProfileUpdate(event_id="q", ts=1.0, user_id="u2")
    assert a.zot == [] and a.interests == [] and a.zot is not b.zot  # a default list per instance


def test_feedback_fields_are_the_feedback_model_fields():
    assert set(s.FeedbackFields.__annotations__) == set(s.Feedback.model_fields)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_payload())
def test_feedback_fields_decoder_accepts_only_what_decode_accepts(payload):
    # The engine's hot path (operators/parse.py) takes these fields, or else asks decode.
    fields = s.decode_feedback_fields(payload)
    ref = _outcome(s.decode_reference, payload, s.Feedback)
    if fields is not None:
        assert ref[0] == "ok"
        assert s.Feedback.model_validate(fields) == ref[1]
