"""The MovieLens loader and the prequential ranking of the interest benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from engine.bench import interest as bench
from engine.datasets import movielens


def test_ranks_count_better_items_and_break_ties_by_the_shared_noise():
    scores = np.array([[3.0, 5.0, 1.0, 5.0, np.nan]])  # item 4 never seen by the model
    noise = np.array([[0.5, 0.9, 0.1, 0.2, 0.3]])
    excl = np.zeros((1, 6), dtype=bool)  # the catalog has one more item than the model knows
    # Target 0: items 1 and 3 score higher.
    assert bench._ranks(scores, np.array([0]), excl, noise=np.c_[noise, 0.0])[0] == 2
    # Target 1 ties with item 3; item 3's noise is lower, so it goes first.
    assert bench._ranks(scores, np.array([1]), excl, noise=np.c_[noise, 0.0])[0] == 1
    # Excluding item 3 (already seen) moves item 1 to the top.
    ex = excl.copy()
    ex[0, 3] = True
    assert bench._ranks(scores, np.array([1]), ex, noise=np.c_[noise, 0.0])[0] == 0
    # Unscored items (4, 5) rank below every scored one, among themselves at random.
    r4 = bench._ranks(scores, np.array([4]), excl, noise=np.c_[noise, 0.0])[0]
    r5 = bench._ranks(scores, np.array([5]), excl, noise=np.c_[noise, 0.0])[0]
    assert {r4, r5} == {4, 5}


def test_ranks_against_brute_force():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(20, 30)).astype(float)
    noise = rng.random((20, 30))
    ex = rng.random((20, 30)) < 0.2
    t = rng.integers(0, 30, 20)
    ex[np.arange(20), t] = False
    got = bench._ranks(s, t, ex, noise)
    for r in range(20):
        cand = [i for i in range(30) if not ex[r, i]]
        order = sorted(cand, key=lambda i: (-s[r, i], noise[r, i]))
        assert got[r] == order.index(t[r])


def test_movielens_is_typed_and_in_time_order():
    try:
        d = movielens.load()
    except movielens.DatasetMissing as exc:
        assert "bootstrap.sh" in str(exc)
        pytest.skip("MovieLens data not installed")
    assert len(d) == 100_000 and d.n_users == 943 and d.n_items == 1682
    assert (np.diff(d.ts) >= 0).all()
    assert d.user.max() < d.n_users and d.item.max() < d.n_items and d.user.min() == 0
    assert set(np.unique(d.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # No repeated (user, item): every held-out item is one the user has not had.
    assert len(np.unique(d.user * d.n_items + d.item)) == len(d)
    assert d.item_titles[d.item_ids.tolist().index(1)] == "Toy Story (1995)"
    assert len(movielens.load(limit=10)) == 10


def test_score_next_app_against_hidden_interests():
    truth = np.array([[0.7, 0.3, 0.0], [0.0, 0.2, 0.8]])
    apps = ["video", "game", "call"]
    perfect = bench.score_next_app(truth, apps, truth, apps)
    assert perfect["total_variation"] == pytest.approx(0.0)
    assert perfect["expected_hit"] == pytest.approx(perfect["oracle_hit"]) == pytest.approx(0.75)
    assert perfect["cross_entropy"] == pytest.approx(perfect["truth_entropy"])
    assert perfect["uniform_hit"] == pytest.approx(0.5)
    # Columns in another order, one app unknown to the engine: aligned by name.
    pred = np.array([[0.1, 0.9], [0.6, 0.4]])  # columns: game, video
    s = bench.score_next_app(pred, ["game", "video"], truth, apps)
    assert s["expected_hit"] == pytest.approx((0.7 + 0.2) / 2)
    assert s["top1_match"] == pytest.approx(0.5)
    assert s["total_variation"] == pytest.approx((0.2 + 0.8) / 2)
    assert s["cross_entropy"] > s["truth_entropy"]


def test_simulator_next_app_learns_the_hidden_interests():
    res = bench.simulator_next_app(hours=3.0, checkpoints_h=(0.0, 3.0))
    first, last = res
    assert first["sessions_per_user"] == 0
    # With no events yet the model is its segment prior; with events it gets closer to the truth.
    assert first["learned"]["total_variation"] == pytest.approx(first["segment_prior"]["total_variation"])
    assert last["learned"]["total_variation"] < 0.8 * last["segment_prior"]["total_variation"]
    assert last["learned"]["expected_hit"] > last["segment_prior"]["expected_hit"]
    assert last["learned"]["expected_hit"] <= last["learned"]["oracle_hit"] + 1e-12
