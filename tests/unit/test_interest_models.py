"""The interest models: counters, item-to-item, user interests, the PyTorch net."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from engine.models.cooccurrence import ItemCooccurrence, SequenceQuery
from engine.models.interest_net import InterestNet
from engine.models.popularity import DecayedPopularity, PopularityQuery
from engine.models.recent_items import RecentItems
from engine.models.user_interests import InterestQuery, UserInterests

torch.set_num_threads(1)
DAY = 86400.0


def batch(user, item, ts=None, weight=None, **kw):
    user, item = np.asarray(user), np.asarray(item)
    ts = np.arange(len(user), dtype=float) if ts is None else np.asarray(ts, dtype=float)
    weight = np.ones(len(user)) if weight is None else np.asarray(weight, dtype=float)
    return NS(user=user, item=item, ts=ts, weight=weight, **kw)


def two_cluster_stream(n_users=40, n_per_user=30, n_items=40, seed=0):
    """Users each stay inside one half of the catalog (items 0..19 or 20..39)."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    users, items = [], []
    for _ in range(n_per_user):
        for u in range(n_users):
            base = 0 if u % 2 == 0 else half
            users.append(u)
            items.append(base + rng.integers(half))
    return np.array(users), np.array(items)


# ---------------------------------------------------------------- recent items


def test_sequences_before_matches_replaying_events_one_by_one():
    rng = np.random.default_rng(1)
    r = RecentItems(4)
    r.push(rng.integers(0, 5, 30), rng.integers(0, 50, 30))
    u, it = rng.integers(0, 7, 40), rng.integers(0, 50, 40)
    got = r.sequences_before(u, it)
    ref = RecentItems(4)
    ref.restore(r.snapshot())
    for e in range(len(u)):
        np.testing.assert_array_equal(got[e], ref.sequences(u[e:e + 1])[0])
        ref.push(u[e:e + 1], it[e:e + 1])
    r.push(u, it)
    np.testing.assert_array_equal(r.hist[:7], ref.hist[:7])


# ---------------------------------------------------------------- popularity


def test_popularity_half_life_halves_old_events_even_across_rescaling():
    m = DecayedPopularity(half_life_s=DAY)
    # Item 0 once at t=0, item 1 once a half-life later; far later item 2 forces rebasing.
    m.update(batch([0, 0], [0, 1], ts=[0.0, DAY]))
    s = m.predict(PopularityQuery(np.array([-1])))[0]
    assert s[0] == pytest.approx(s[1] / 2, rel=1e-12)
    m.update(batch([0], [2], ts=[100 * DAY]))
    s = m.predict(PopularityQuery(np.array([-1])))[0]
    assert s[1] / s[2] == pytest.approx(2.0 ** -99, rel=1e-9)
    assert np.isfinite(m.counts).all()


def test_popularity_batch_equals_event_by_event_and_segments_shrink_to_global():
    rng = np.random.default_rng(2)
    item, seg = rng.integers(0, 30, 200), rng.integers(-1, 3, 200)
    ts = np.sort(rng.uniform(0, 10 * DAY, 200))
    a, b = DecayedPopularity(2 * DAY, prior_strength=10.0), DecayedPopularity(2 * DAY, prior_strength=10.0)
    a.update(batch(np.zeros(200, int), item, ts, segment=seg))
    for e in range(200):
        b.update(batch([0], item[e:e + 1], ts[e:e + 1], segment=seg[e:e + 1]))
    q = PopularityQuery(np.array([-1, 0, 1, 2, 7]))
    np.testing.assert_allclose(a.predict(q), b.predict(q), rtol=1e-10)
    p = a.predict(q)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[4], p[0])  # a segment never seen is the population
    # A segment's favourite item gains on the global share.
    sc = a.seg_counts[1, :30]
    assert p[2, sc.argmax()] > p[0, sc.argmax()]


def test_popularity_snapshot_restore_identical():
    m = DecayedPopularity(DAY)
    m.update(batch([0, 0, 0], [3, 1, 3], ts=[0, 5, 9], segment=np.array([0, 1, -1])))
    r = DecayedPopularity()
    r.restore(m.snapshot())
    nb = batch([0, 0], [7, 1], ts=[10, 11], segment=np.array([1, 2]))
    m.update(nb)
    r.update(nb)
    q = PopularityQuery(np.array([-1, 0, 1, 2]))
    np.testing.assert_array_equal(m.predict(q), r.predict(q))


# ---------------------------------------------------------------- co-occurrence


def test_cooccurrence_learns_what_follows_and_matches_event_by_event():
    m = ItemCooccurrence(window=3, decay=0.5)
    # Users go 1 -> 2 -> 3; item 9 is popular but never follows 1.
    seqs = [[1, 2, 3]] * 10 + [[9]] * 30
    users = np.concatenate([np.full(len(s), u) for u, s in enumerate(seqs)])
    items = np.concatenate(seqs)
    m.update(batch(users, items))
    s = m.predict(SequenceQuery(np.array([-1]), np.array([[-1, -1, 1]])))[0]
    assert s.argmax() == 2 and s[3] > s[9]
    one = ItemCooccurrence(window=3, decay=0.5)
    for e in range(len(users)):
        one.update(batch(users[e:e + 1], items[e:e + 1]))
    np.testing.assert_array_equal(one.C[:10, :10], m.C[:10, :10])
    # A skip (weight 0) neither links nor enters the sequence.
    m.update(batch([100], [1], weight=[0.0]))
    assert m.recent.sequences(np.array([100]))[0].max() == -1


def test_cooccurrence_snapshot_restore_and_new_items():
    u, it = two_cluster_stream()
    m = ItemCooccurrence()
    m.update(batch(u[:500], it[:500]))
    r = ItemCooccurrence(window=1)
    r.restore(m.snapshot())
    nb = batch(np.array([0, 1, 500]), np.array([3, 5000, 5001]))  # new user and new items
    m.update(nb)
    r.update(nb)
    q = SequenceQuery(np.array([0, 1, 500, -1]))
    np.testing.assert_array_equal(m.predict(q), r.predict(q))
    assert m.predict(q).shape == (4, 5002)


# ---------------------------------------------------------------- user interests


def test_user_interests_two_time_scales_and_cold_start():
    m = UserInterests(long_half_life_s=30 * DAY, short_half_life_s=3600.0, prior_strength=2.0)
    # User 0 used app 0 for weeks, then switches to app 1 in the last half hour.
    ts = np.concatenate([np.linspace(0, 20 * DAY, 50), 20 * DAY + np.linspace(0, 1800, 5)])
    keys = np.array([0] * 50 + [1] * 5)
    m.set_segments(np.array([0, 1]), np.array([0, 1]))
    m.update(batch(np.zeros(55, int), item=keys, ts=ts, key=keys))
    m.update(batch(np.ones(10, int), item=np.full(10, 2), ts=np.linspace(0, DAY, 10), key=np.full(10, 2)))
    now = 20 * DAY + 1800
    it = m.predict(InterestQuery(np.array([0]), np.array([now])))
    assert it.long[0].argmax() == 0 and it.short[0].argmax() == 1
    # A day later the short-term view has faded back toward the long-term one.
    later = m.predict(InterestQuery(np.array([0]), np.array([now + DAY])))
    assert later.short[0, 0] > it.short[0, 0]
    # A new user of segment 1 starts from segment 1 (app 2), of no segment from the population.
    cold = m.predict(InterestQuery(np.array([-1, 57]), np.array([now, now]), segments=np.array([1, -1])))
    assert cold.long[0].argmax() == 2 and cold.long_mass[0] == 0
    np.testing.assert_allclose(cold.long[1], m.key_counts[:3] / m.key_counts[:3].sum())
    np.testing.assert_allclose(it.long.sum(), 1.0)


def test_next_app_uses_hour_and_cell_and_snapshot_restore():
    rng = np.random.default_rng(3)
    n = 400
    app = rng.integers(0, 2, n)
    hour = np.where(app == 0, 8, 20)  # app 0 in the morning, app 1 in the evening
    cell = np.where(app == 0, 0, 1)
    user = rng.integers(0, 20, n)
    m = UserInterests()
    m.update(batch(user, app, ts=np.sort(rng.uniform(0, DAY, n)), key=app, hour=hour, cell=cell))
    q = InterestQuery(np.array([0, 0]), np.array([DAY, DAY]))
    p = m.next_key(q, hours=np.array([8, 20]))
    assert p[0, 0] > 0.9 and p[1, 1] > 0.9
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    pc = m.next_key(q, cells=np.array([0, 1]))
    assert pc[0, 0] > pc[1, 0]
    r = UserInterests()
    r.restore(m.snapshot())
    np.testing.assert_array_equal(r.next_key(q, np.array([8, 20]), np.array([0, 1])),
                                  m.next_key(q, np.array([8, 20]), np.array([0, 1])))


# ---------------------------------------------------------------- the net


NET = dict(dim=16, n_short=1, n_long=2, short_len=5, long_len=10, n_negatives=32, batch_size=64, lr=0.03)


def test_net_learns_clusters_from_the_stream():
    u, it = two_cluster_stream(n_per_user=40)
    net = InterestNet(seed=0, **NET)
    for a in range(0, len(u), 64):
        net.update(batch(u[a:a + 64], it[a:a + 64]))
    s = net.predict(SequenceQuery(np.arange(40)))
    top = np.argsort(-s, axis=1)[:, :10]
    home = np.where(np.arange(40)[:, None] % 2 == 0, top < 20, top >= 20)
    assert home.mean() > 0.9  # chance is 0.5


def test_net_is_deterministic_and_restores_exactly():
    u, it = two_cluster_stream(n_per_user=10)
    a, b = InterestNet(seed=5, replay_ratio=0.5, **NET), InterestNet(seed=5, replay_ratio=0.5, **NET)
    for m in (a, b):
        m.update(batch(u[:300], it[:300]))
    q = SequenceQuery(np.array([0, 1, 2, -1, 999]))
    np.testing.assert_array_equal(a.predict(q), b.predict(q))
    r = InterestNet()
    r.restore(a.snapshot())
    np.testing.assert_array_equal(a.predict(q), r.predict(q))
    nb = batch(np.r_[u[300:], 999], np.r_[it[300:], 77])  # a new user and a new item
    a.update(nb)
    r.update(nb)
    np.testing.assert_array_equal(a.predict(q), r.predict(q))
    assert a.predict(q).shape[1] == 78
    c = InterestNet(seed=6, **NET)
    c.update(batch(u[:300], it[:300]))
    assert not np.array_equal(c.predict(q), b.predict(q))


def test_net_with_item2item_feature_restores_exactly():
    u, it = two_cluster_stream(n_per_user=10)
    a = InterestNet(seed=1, item2item=dict(window=5), **NET)
    a.update(batch(u[:300], it[:300]))
    r = InterestNet()
    r.restore(a.snapshot())
    q = SequenceQuery(np.array([0, 1, -1]))
    np.testing.assert_array_equal(a.predict(q), r.predict(q))
    a.update(batch(u[300:], it[300:]))
    r.update(batch(u[300:], it[300:]))
    np.testing.assert_array_equal(a.predict(q), r.predict(q))


def test_models_reject_bad_rows_before_changing_state():
    for m in (DecayedPopularity(), ItemCooccurrence(), InterestNet(**NET)):
        m.update(batch([0, 1, 0], [0, 1, 1], ts=[0, 1, 2]))
        q = PopularityQuery(np.array([-1])) if isinstance(m, DecayedPopularity) else SequenceQuery(np.array([0, 1]))
        before = m.predict(q)
        with pytest.raises(ValueError):
            m.update(batch([0, 1], [2, -3], ts=[2, 3]))
        with pytest.raises(ValueError):
            m.update(batch([0], [2], ts=[4], weight=[np.nan]))
        np.testing.assert_array_equal(m.predict(q), before)


def test_net_result_does_not_depend_on_how_the_stream_is_batched():
    u, it = two_cluster_stream(n_per_user=9)  # 360 events: 5 full mini-batches of 64 and 40 pending
    whole, pieces = InterestNet(seed=2, **NET), InterestNet(seed=2, **NET)
    whole.update(batch(u, it))
    cuts = [0, 1, 50, 51, 130, 200, len(u)]
    for a, b in zip(cuts[:-1], cuts[1:]):
        pieces.update(batch(u[a:b], it[a:b]))
    q = SequenceQuery(np.arange(40))
    np.testing.assert_array_equal(whole.predict(q), pieces.predict(q))
    assert len(whole.pending[0]) == len(u) % NET["batch_size"] > 0
    before = whole.predict(q)
    whole.flush()
    assert len(whole.pending[0]) == 0 and not np.array_equal(before, whole.predict(q))


def test_an_unseen_hour_does_not_favour_rare_apps():
    m = UserInterests()
    # App 0 is common, app 1 rare, all seen at 08:00 only.
    keys = np.array([0] * 90 + [1] * 10)
    m.update(batch(np.arange(100) % 10, keys, ts=np.arange(100.0), key=keys, hour=np.full(100, 8)))
    q = InterestQuery(np.array([0, 1]), np.array([100.0, 100.0]))
    np.testing.assert_allclose(m.next_key(q, hours=np.array([15, 15])), m.next_key(q), rtol=1e-12)
    assert UserInterests().next_key(q).shape == (2, 0)
