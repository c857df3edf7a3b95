"""The simulator's catalog, hidden tastes, drift, interaction events and late app classification."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import schemas
from engine import topics as registry
from engine.bus import InProcessBus
from engine.config import load_config
from simulators.catalog import N_TOPICS, draw_catalog, drift, pick_items
from simulators.loop import run

CFG = load_config(Path(__file__).resolve().parents[2] / "configs" / "example.yaml")


def small(detect: int = 0, epochs: int = 40, users: int = 60):
    return CFG.model_copy(update={
        "population": CFG.population.model_copy(update={"users": users}),
        "cells": CFG.cells.model_copy(update={"hex": CFG.cells.hex.model_copy(update={"sites": 1})}),
        "simulation": CFG.simulation.model_copy(update={"epochs": epochs, "policies": ["zot"],
                                                        "app_detection_epochs": detect}),
    })


def test_catalog_is_deterministic_and_video_items_carry_ladder_rates():
    a = draw_catalog(CFG, 50, np.random.default_rng(1))
    b = draw_catalog(CFG, 50, np.random.default_rng(1))
    assert [c.item_ids for c in a.apps] == [c.item_ids for c in b.apps]
    assert np.array_equal(a.taste, b.taste)
    video = a.apps[list(CFG.applications).index("video")]
    assert len(video.item_ids) == 500 and set(video.rate_mbps) <= {0.7, 1.5, 3.0, 6.0, 12.0}
    web = a.apps[list(CFG.applications).index("web")]
    assert len(web.item_ids) == 20 and np.isnan(web.rate_mbps).all()
    assert np.allclose(a.taste.sum(axis=1), 1.0) and a.taste.shape == (50, N_TOPICS)


def test_users_pick_items_of_the_topics_they_like():
    cat = draw_catalog(CFG, 2, np.random.default_rng(2))
    cat.taste[:] = 0.0
    cat.taste[0, 3] = cat.taste[1, 5] = 1.0  # user 0 likes only topic 3, user 1 only topic 5
    video = list(CFG.applications).index("video")
    users = np.repeat([0, 1], 200)
    picks = pick_items(cat, users, np.full(400, video), np.random.default_rng(3))
    topics = cat.apps[video].topic[picks]
    assert (topics[:200] == 3).all() and (topics[200:] == 5).all()


def test_drift_moves_interests_but_keeps_them_distributions_with_their_zeros():
    w = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    before = w.copy()
    drift(w, 0.0, 3600.0, np.random.default_rng(0))
    assert np.array_equal(w, before)
    drift(w, 0.5, 3600.0, np.random.default_rng(0))
    assert not np.allclose(w, before) and np.allclose(w.sum(axis=1), 1.0) and w[0, 2] == 0.0


def test_sessions_emit_interactions_and_the_app_is_named_late():
    cfg = small(detect=2)
    bus = InProcessBus(cfg.kafka.partitions, cfg.kafka.topic_prefix)
    res = run(cfg, ["zot"], bus=bus)
    t = lambda topic: registry.with_prefix(topic, cfg.kafka.topic_prefix)  # noqa: E731
    inter = [schemas.decode(m.value, expect=schemas.Interaction) for m in bus.messages(t(registry.INTERACTIONS))]
    kpis = [schemas.decode(m.value, expect=schemas.CellKpi) for m in bus.messages(t(registry.KPI))]
    assert len(inter) > 50
    assert all(i.item_id.startswith(i.app + "-") for i in inter)  # items of the session's app
    assert all((i.item_rate_mbps is not None) == (i.app == "video") for i in inter)
    # A user's channel entries: unnamed for exactly the first 2 epochs of each session.
    runs: dict[str, list[tuple[int, str | None]]] = {}
    for k in sorted(kpis, key=lambda k: k.epoch):
        for u in k.users:
            runs.setdefault(u.user_id, []).append((k.epoch, u.app))
    checked = 0
    for seq in runs.values():
        for prev, (e0, a0), (e1, a1), (e2, a2) in zip([None] + seq, seq, seq[1:], seq[2:]):
            # A session starts at e0 when the user was idle the epoch before.
            starts = e0 > 0 and (prev is None or prev[0] != e0 - 1)
            if starts and e1 == e0 + 1 and e2 == e1 + 1:
                assert a0 is None and a1 is None and a2 is not None, seq  # unnamed for its first 2 epochs
                checked += 1
    # Sessions already running when the simulation starts are named from the first epoch
    # (only those starting in epoch 0 itself are not).
    first = [seq[0][1] is not None for seq in runs.values() if seq[0][0] == 0]
    assert sum(first) > 0.8 * len(first)
    assert checked > 5
    assert res.extra["session_start"]["zot"]["epochs"] == 2
    assert 0.0 < res.extra["session_start"]["zot"]["adequate_share"] <= 1.0
    # With detection 0 every channel entry names its app.
    bus0 = InProcessBus(cfg.kafka.partitions, cfg.kafka.topic_prefix)
    run(small(detect=0), ["zot"], bus=bus0)
    assert all(u.app is not None for m in bus0.messages(t(registry.KPI))
               for u in schemas.decode(m.value, expect=schemas.CellKpi).users)


def test_next_app_tracking_scores_the_engine_beside_its_references():
    res = run(small(epochs=60), ["zot"], track_interests=True)
    na = res.extra["next_app"]
    assert na["sessions"] > 20
    for k in ("engine", "oracle", "last_app", "segment_prior"):
        assert 0.0 <= na[f"accuracy_{k}"] <= 1.0
    assert na["accuracy_oracle"] >= na["accuracy_segment_prior"] - 0.1


def test_apps_are_chosen_by_interest_and_hour_of_day():
    from simulators.traffic import app_hour_weights, choice_interest

    w = app_hour_weights([21.0, None, 9.0], [0.5, 0.5, 1.0], hour=21.0)
    assert np.allclose(w, [1.5, 1.0, 0.0])
    interest = np.array([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    now = choice_interest(interest, w)
    assert np.allclose(now.sum(axis=1), 1.0) and now[0, 2] == 0.0 and now[0, 0] > interest[0, 0]
    assert np.array_equal(now[1], interest[1])  # a user of one app keeps it
    assert choice_interest(interest, np.ones(3)) is interest
