"""Interest operators: events in, recommendations / next app / profiles out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import schemas
from engine.schemas import Action, Interaction
from operators import interests as op

torch.set_num_threads(1)
NET = dict(dim=8, n_short=1, n_long=1, short_len=4, long_len=8, n_negatives=16, batch_size=32)


def ev(n, user, item, app="video", action=Action.PLAY, ts=None):
    return Interaction(event_id=f"e{n}", ts=float(n if ts is None else ts), user_id=user, item_id=item, app=app,
                       action=action)


def stream():
    """u1..u6 watch a -> b -> c in the evening on cell c1; gamers play g1, g2 in the morning on c2."""
    out, n = [], 0
    for d in range(5):
        for u in ("u1", "u2", "u3"):
            for it in ("a", "b", "c"):
                out.append(ev(n, u, f"{it}{d}", "video", ts=d * 86400 + 20 * 3600 + n))
                n += 1
        for u in ("g1", "g2"):
            for it in ("x", "y"):
                out.append(ev(n, u, it + str(d), "game", ts=d * 86400 + 8 * 3600 + n))
                n += 1
    return out


def cells_for(events):
    return {e.user_id: ("c1" if e.app == "video" else "c2") for e in events}


def test_encode_grows_catalog_and_weights_actions():
    cat = op.Catalog()
    b = op.encode_interactions(cat, [ev(0, "u1", "i1"), ev(1, "u2", "i1", action=Action.SKIP),
                                     ev(2, "u1", "i2", app="game", action=Action.LIKE)],
                               segments={"u1": "young"}, cells={"u2": "c9"})
    np.testing.assert_array_equal(b.user, [0, 1, 0])
    np.testing.assert_array_equal(b.item, [0, 0, 1])
    np.testing.assert_array_equal(b.app, [0, 0, 1])
    np.testing.assert_array_equal(b.weight, [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(b.segment, [0, -1, 0])
    np.testing.assert_array_equal(b.cell, [-1, 0, -1])
    b2 = op.encode_interactions(cat, [ev(3, "u3", "i1"), ev(4, "u1", "i9")])
    np.testing.assert_array_equal(b2.user, [2, 0])  # existing ids keep their index
    np.testing.assert_array_equal(b2.item, [0, 2])
    assert cat.items.ids == ["i1", "i2", "i9"]


def test_hour_of_day():
    np.testing.assert_array_equal(op.hour_of_day(np.array([0.0, 3599.0, 3600.0, 86400 + 7200.0])), [0, 0, 1, 2])
    assert op.hour_of_day(np.array([0.0]), utc_offset_h=-1)[0] == 23


def test_top_k_matches_full_sort_and_excludes():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 50))
    ex = rng.random((5, 50)) < 0.3
    idx, sc = op.top_k(s, 7, ex)
    for r in range(5):
        ref = [i for i in np.argsort(-s[r]) if not ex[r, i]][:7]
        assert list(idx[r]) == ref
        np.testing.assert_array_equal(sc[r], s[r, ref])


def test_demote_undeliverable_hard_and_soft():
    s = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    req = np.array([1.0, 8.0, np.nan, 2.0, 16.0])  # item 2 has no requirement
    hard = op.demote_undeliverable(s, req, np.array([2.0]))
    order = list(np.argsort(-hard[0], kind="stable"))
    assert order == [0, 2, 3, 1, 4]  # deliverable first, interest order kept in each group
    soft = op.demote_undeliverable(s, req, np.array([2.0]), penalty=1.0)
    np.testing.assert_allclose(soft[0], [5.0, 4.0 - 2.0, 3.0, 2.0, 1.0 - 3.0])
    # A margin below 1 asks for headroom: item 3 (needs exactly the rate) becomes undeliverable.
    assert op.demote_undeliverable(s, req, np.array([2.0]), margin=0.9, penalty=1.0)[0, 3] < 2.0
    # No rate at all: everything with a requirement sinks.
    assert list(np.argsort(-op.demote_undeliverable(s, req, np.array([0.0]))[0], kind="stable"))[0] == 2


@pytest.mark.parametrize("model", ["cooccurrence", "popularity", "net"])
def test_recommendations_are_valid_events_and_follow_the_sequence(model):
    st = op.new_state(net=NET)
    events = stream() + [ev(1000, "g3", "x0", "game", ts=9e5), ev(1001, "u9", "a0", ts=9e5)]
    b = op.encode_interactions(st.catalog, events, cells=cells_for(events))
    op.learn(st, b)
    recs = op.recommendations(st, ["u9", "g3", "nobody"], ts=1e6, k=4, model=model)
    for r in recs:
        schemas.decode(schemas.encode(r), expect=schemas.Recommendation)
        assert len(r.items) == 4 and r.model == model
        assert [i.score for i in r.items] == sorted((i.score for i in r.items), reverse=True)
    u1 = op.recommendations(st, ["u1"], ts=1e6, k=4, model=model)[0]
    recent = {st.catalog.items.ids[i] for i in st.cooccurrence.recent.sequences(np.array([0]))[0] if i >= 0}
    assert recent and not recent & {i.item_id for i in u1.items}
    assert "a0" not in {i.item_id for i in recs[0].items}
    if model == "cooccurrence":
        # u9 just had a0; every viewer of a0 went on to b0 then c0, and links stay among videos.
        assert [i.item_id for i in recs[0].items[:2]] == ["b0", "c0"]
        assert all(i.item_id[0] in "abc" for i in recs[0].items)
        assert recs[1].items[0].item_id == "y0"  # every gamer who had x0 had y0 next


def test_network_aware_recommendations_demote_heavy_items():
    st = op.new_state(use_net=False)
    op.learn(st, op.encode_interactions(st.catalog, stream()))
    plain = op.recommendations(st, ["u1"], ts=1e6, k=3)[0]
    heavy = np.zeros(len(st.catalog.items))
    top = st.catalog.items.pos[plain.items[0].item_id]
    heavy[top] = 50.0  # e.g. a 4K video needing 50 Mbit/s
    aware = op.recommendations(st, ["u1"], ts=1e6, k=3, item_rate=heavy, user_rate=np.array([5.0]))[0]
    assert aware.items[0].item_id != plain.items[0].item_id
    assert plain.items[0].item_id not in [i.item_id for i in aware.items]
    fast = op.recommendations(st, ["u1"], ts=1e6, k=3, item_rate=heavy, user_rate=np.array([100.0]))[0]
    assert fast.items == plain.items


def test_next_app_and_profiles():
    st = op.new_state(use_net=False)
    events = stream()
    op.learn(st, op.encode_interactions(st.catalog, events, cells=cells_for(events)))
    p, apps = op.next_app_probabilities(st, ["u1", "g1", "new"], ts=6 * 86400 + 20 * 3600, cells=["c1", "c2", "c1"])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert apps[int(p[0].argmax())] == "video" and apps[int(p[1].argmax())] == "game"
    # A new user in the evening on the video cell: the context says video.
    assert apps[int(p[2].argmax())] == "video"
    p_morning, _ = op.next_app_probabilities(st, ["new"], ts=6 * 86400 + 8 * 3600, cells=["c2"])
    assert p_morning[0, apps.index("game")] > p[2, apps.index("game")]
    zot = {"u1": [schemas.ZotEstimate(app="video", adequate=2, adequate_sd=0.5, desired=8, desired_sd=1, n_signals=3)]}
    prof = op.profile_updates(st, ["u1", "g1"], ts=6 * 86400.0, zot=zot)
    for pu in prof:
        schemas.decode(schemas.encode(pu), expect=schemas.ProfileUpdate)
    assert prof[0].zot == zot["u1"] and prof[1].zot == []
    assert prof[0].next_app == "video" and prof[1].next_app == "game"
    top_long = [i for i in prof[0].interests if i.horizon == "long"][0]
    assert top_long.key == "video" and {i.horizon for i in prof[0].interests} == {"long", "short"}


def test_state_snapshot_restore_gives_identical_outputs():
    st = op.new_state(net=NET)
    events = stream()
    op.learn(st, op.encode_interactions(st.catalog, events[:40]))
    st2 = op.InterestState.from_snapshot(st.snapshot())
    more = events[40:] + [ev(999, "newbie", "brand-new", app="music")]
    for s in (st, st2):
        op.learn(s, op.encode_interactions(s.catalog, more))
    for model in op.MODELS:
        a = op.recommendations(st, ["u1", "newbie"], ts=1e6, k=5, model=model)
        b = op.recommendations(st2, ["u1", "newbie"], ts=1e6, k=5, model=model)
        assert a == b
    assert op.profile_updates(st, ["newbie"], 1e6) == op.profile_updates(st2, ["newbie"], 1e6)
    assert "brand-new" in st2.catalog.items.pos and "music" in st2.catalog.apps.pos
