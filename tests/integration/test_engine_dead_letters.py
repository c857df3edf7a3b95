"""Hypothesis throws >= 10,000 random and mutated payloads at a running engine worker.

Each payload is built valid or broken on purpose (bad bytes, truncated or non-object
JSON, NaN, negative numbers, unknown enum values, unknown cells or apps, missing or
extra fields, wrong schema version, an event on another type's topic). After the
worker caught up: every broken one is on the dead-letter topic exactly once with its
original bytes, a reason and its source topic/partition/offset; every valid one took
effect (its feedback counted in the committed state, its KPI decided); the worker is
still running and decides a KPI sent after all of it.
"""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from engine import schemas
from engine import topics as registry
from engine.faust_app import app_id
from engine.remote_engine import RemoteEngineBus, spawn_worker, wait_group_members
from engine.runner import EngineCore
from engine.state_changelog import apply_records, changelog_topic
from tests.integration.test_engine_loop import prepare, small_config, stop

N_PAYLOADS = 10_000
CELLS = ["s0-0", "s0-1", "s0-2"]
USERS = [f"u{i}" for i in range(60)]
APPS = {"video": (0.1, 50.0), "download": (0.1, 100.0), "gaming": (25.0, 400.0), "web": (0.5, 30.0)}
SIGNALS = [s.value for s in schemas.Signal]

ident = st.sampled_from(USERS)
qos_for = {a: st.floats(lo, hi) for a, (lo, hi) in APPS.items()}


@st.composite
def feedback(draw) -> dict:
    app = draw(st.sampled_from(sorted(APPS)))
    sig = draw(st.sampled_from(SIGNALS))
    ev = {"v": 1, "type": "feedback", "event_id": f"f{draw(st.integers(0, 10**9))}", "ts": draw(st.floats(0, 1e6)),
          "user_id": draw(ident), "cell_id": draw(st.sampled_from(CELLS)), "app": app, "signal": sig,
          "qos": draw(qos_for[app])}
    if sig == "rating":
        ev["rating"] = draw(st.integers(1, 5))
    return ev


@st.composite
def context(draw) -> dict:
    return {"v": 1, "type": "context", "event_id": f"c{draw(st.integers(0, 10**9))}", "ts": draw(st.floats(0, 1e6)),
            "user_id": draw(ident), "cell_id": draw(st.sampled_from(CELLS)),
            "app": draw(st.sampled_from(sorted(APPS))), "segment": draw(st.sampled_from(["casual", "gamer"]))}


@st.composite
def kpi(draw) -> dict:
    users = draw(st.lists(ident, max_size=4, unique=True))
    return {"v": 1, "type": "kpi", "event_id": f"k{draw(st.integers(0, 10**9))}", "ts": draw(st.floats(0, 1e6)),
            "cell_id": draw(st.sampled_from(CELLS)), "epoch": 0, "prb_total": draw(st.integers(0, 51)),
            "users": [{"user_id": u, "spectral_efficiency": draw(st.floats(0, 6)),
                       "app": draw(st.sampled_from(sorted(APPS)))} for u in users]}


EVENTS = {"feedback": feedback(), "context": context(), "kpi": kpi()}
REQUIRED = {"feedback": ["event_id", "ts", "user_id", "cell_id", "app", "signal", "qos"],
            "context": ["event_id", "ts", "user_id", "cell_id"],
            "kpi": ["event_id", "ts", "cell_id", "epoch", "prb_total", "users"]}
# Mutations that make any event invalid (each is a documented rejection).
MUTATIONS = ["drop", "extra", "nan", "negative_ts", "bad_enum", "unknown_cell", "unknown_app", "version",
             "truncate", "not_utf8", "not_object", "wrong_topic", "random_bytes"]


@st.composite
def recipe(draw) -> tuple[str, dict | bytes, str | None]:
    """(event type, event dict or raw bytes, mutation or None)."""
    kind = draw(st.sampled_from(["feedback"] * 4 + ["context"] * 2 + ["kpi"]))
    ev = draw(EVENTS[kind])
    if draw(st.booleans()):
        return kind, ev, None
    m = draw(st.sampled_from(MUTATIONS))
    if m == "random_bytes":
        return kind, draw(st.binary(max_size=64)), m
    if m == "drop":
        ev.pop(draw(st.sampled_from(REQUIRED[kind])))
    elif m == "extra":
        ev[draw(st.sampled_from(["zzz", "extra_field", "userid"]))] = draw(st.integers())
    elif m == "negative_ts":
        ev["ts"] = -draw(st.floats(0.001, 1e6))
    elif m == "bad_enum":
        if kind == "feedback":
            ev["signal"] = draw(st.text(min_size=1, max_size=8).filter(lambda s: s not in SIGNALS))
        else:
            ev["type"] = draw(st.sampled_from(["allocation", "profile", "Feedback", ""]))
    elif m == "unknown_cell":
        ev["cell_id"] = "nocell-" + draw(st.sampled_from("abcdef"))
    elif m == "unknown_app":
        if kind == "kpi":
            ev["users"] = [{"user_id": "u1", "spectral_efficiency": 1.0, "app": "tiktok"}]
        else:
            ev["app"] = "tiktok"
    elif m == "version":
        ev["v"] = draw(st.sampled_from([0, 2, "1", None]))
    return kind, ev, m


def encode(kind: str, ev: dict | bytes, mutation: str | None, epoch: int, cut: int) -> bytes:
    if isinstance(ev, bytes):
        return ev
    if kind == "kpi" and "epoch" in ev:
        ev = dict(ev, epoch=epoch)  # every valid KPI its own (cell, epoch): one decision each
    if mutation == "nan":
        key = {"feedback": "qos", "context": "ts", "kpi": "ts"}[kind]
        return json.dumps(dict(ev, **{key: float("nan")})).encode()  # Python writes NaN; JSON has none
    raw = json.dumps(ev).encode()
    if mutation == "truncate":
        return raw[: cut % (len(raw) - 1) + 1][:-1] or b"{"
    if mutation == "not_utf8":
        i = cut % len(raw)
        return raw[:i] + b"\xff\xfe" + raw[i:]
    if mutation == "not_object":
        return json.dumps([ev]).encode()
    return raw


def test_every_payload_is_processed_or_dead_lettered(kafka_bootstrap, tmp_path):
    cfg = small_config(kafka_bootstrap, partitions=3, users=20)
    path, options = prepare(cfg, tmp_path)
    p = cfg.kafka.topic_prefix
    topic = {k: registry.with_prefix(registry.BY_EVENT[k], p) for k in ("feedback", "context", "kpi")}
    other = {"feedback": "kpi", "context": "feedback", "kpi": "context"}
    worker = spawn_worker(path, "dl", tmp_path / "worker.log")
    producer = KafkaProducer(acks="all", linger_ms=5, **options)
    sent: list[tuple[object, bytes, bool, str, str | None]] = []  # (future, bytes, valid, kind, mutation)
    try:
        wait_group_members(options, app_id(cfg), 1)

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(recipe(), min_size=200, max_size=200), st.integers(0, 2**31))
        def throw(batch, cut):
            for kind, ev, mutation in batch:
                raw = encode(kind, ev, mutation, epoch=len(sent), cut=cut + len(sent))
                dest = topic[other[kind]] if mutation == "wrong_topic" else topic[kind]
                key = (ev.get("user_id") or ev.get("cell_id") or "k").encode() if isinstance(ev, dict) else None
                if isinstance(key, bytes) and not key:
                    key = None
                sent.append((producer.send(dest, key=key, value=raw), raw, mutation is None, kind, mutation))

        while len(sent) < N_PAYLOADS:
            throw()
        producer.flush(60)
        where = {}
        for fut, raw, valid, kind, mutation in sent:
            md = fut.get(timeout=30)
            where[(md.topic, md.partition, md.offset)] = (raw, valid, kind, mutation)

        # One more valid KPI after all the garbage: the engine keeps deciding.
        last = schemas.CellKpi(event_id="k-last", ts=1.0, cell_id="s0-0", epoch=10**6, prb_total=51,
                               users=[schemas.UserChannel(user_id="u1", spectral_efficiency=2.0, app="video")])
        producer.send(topic["kpi"], key=b"s0-0", value=schemas.encode(last)).get(timeout=30)
        bus = RemoteEngineBus(cfg, options, timeout_s=240, workers=[worker])
        try:
            bus.wait_consumed()
        finally:
            bus.close()
        assert worker.poll() is None, "the worker stopped on bad input"

        invalid = {pos for pos, (_, valid, _, _) in where.items() if not valid}
        valid_kpis = sum(1 for _, valid, kind, _ in where.values() if valid and kind == "kpi")
        valid_fb = sum(1 for _, valid, kind, _ in where.values() if valid and kind == "feedback")
        assert len(where) >= N_PAYLOADS and len(invalid) > 3000 and valid_kpis > 300 and valid_fb > 1500

        dead = read_all(options, registry.with_prefix(registry.DEAD_LETTERS, p))
        letters = [schemas.DeadLetter.model_validate_json(v) for _, v in dead]
        positions = [(d.source_topic, d.partition, d.offset) for d in letters]
        assert len(positions) == len(set(positions)), "a payload was dead-lettered twice"
        assert set(positions) == invalid
        for d in letters:
            assert base64.b64decode(d.value_b64) == where[(d.source_topic, d.partition, d.offset)][0]
            assert d.reason

        decided = {schemas.decode(v, expect=schemas.Allocation).event_id
                   for _, v in read_all(options, registry.with_prefix(registry.ALLOCATIONS, p))}
        assert len(decided) == valid_kpis + 1 and f"alloc-s0-0-{10**6}" in decided

        # Every valid feedback event changed the committed state exactly once.
        core = EngineCore(cfg, prefix=p)
        apply_records(core, {}, read_all(options, changelog_topic(cfg.kafka)))
        assert int(core.state.n_signals[: core.state.n_rows].sum()) == valid_fb
    finally:
        producer.close()
        stop([worker])


def read_all(options: dict, topic: str, timeout_ms: int = 3000) -> list[tuple[bytes | None, bytes]]:
    """Every committed record of a topic, in partition order."""
    c = KafkaConsumer(isolation_level="read_committed", enable_auto_commit=False, **options)
    try:
        tps = [TopicPartition(topic, q) for q in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out = []
        for _ in range(10_000):
            if all(c.position(tp) >= end[tp] for tp in tps):
                break
            for recs in c.poll(timeout_ms=timeout_ms).values():
                out.extend((r.key, r.value) for r in recs)
        return out
    finally:
        c.close()
