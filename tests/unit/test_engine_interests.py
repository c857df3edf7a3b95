"""The engine's interest path: interactions in; recommendations, full profiles,
network-aware ranking and proactive allocation out; its state exact through the
changelog and the same whichever worker owns which user partition."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import schemas
from engine import topics as registry
from engine.bus import Message
from engine.config import load_config
from engine.runner import EngineCore
from engine.state_changelog import TABLES, USER, apply_records, tables_records, user_record

CFG = load_config(Path(__file__).resolve().parents[2] / "configs" / "example.yaml")
IX, CTX, KPI, FB = (registry.with_prefix(t, "zot.") for t in
                    (registry.INTERACTIONS, registry.CONTEXT, registry.KPI, registry.FEEDBACK))


def cfg_with(**interests):
    return CFG.model_copy(update={"interests": CFG.interests.model_copy(update=interests)})


def msgs(topic: str, events, start: int = 0) -> list[Message]:
    return [Message(topic, 0, start + i, None, e if isinstance(e, bytes) else schemas.encode(e), 0)
            for i, e in enumerate(events)]


def ix(i: int, user: str, item: str, app: str = "video", ts: float = 100.0, rate: float | None = None):
    return schemas.Interaction(event_id=f"i{i}", ts=ts + i, user_id=user, item_id=item, app=app,
                               action=schemas.Action.VIEW, item_rate_mbps=rate)


def ctx(user: str, cell: str = "c1", app: str | None = None, segment: str = "casual"):
    return schemas.Context(event_id=f"c-{user}", ts=0.0, user_id=user, cell_id=cell, app=app, segment=segment)


def outputs(outs, topic, kind):
    return [schemas.decode(o.value, expect=kind) for o in outs if o.topic is topic]


def test_interactions_give_one_recommendation_and_one_full_profile_per_user():
    core = EngineCore(CFG, cells={"c1"})
    # Users watch sequences: v1 -> v2 -> v3 is common, so a user who just had v1, v2 gets v3 first.
    events = []
    for u in range(6):
        events += [ix(3 * u, f"p{u}", "v1"), ix(3 * u + 1, f"p{u}", "v2"), ix(3 * u + 2, f"p{u}", "v3")]
    events += [ix(100, "new", "v1"), ix(101, "new", "v2")]
    events += [ix(200 + i, "all", f"v{i}") for i in range(1, 5)]  # has seen the whole catalog: nothing to offer
    events += [ix(300, "q", "v4")]
    outs = core.handle(msgs(CTX, [ctx("new")]) + msgs(IX, events), now=500.0)
    recs = {r.user_id: r for r in outputs(outs, registry.RECOMMENDATIONS, schemas.Recommendation)}
    assert sorted(recs) == sorted([f"p{u}" for u in range(6)] + ["new", "q"])  # no empty recommendation
    top = [i.item_id for i in recs["new"].items]
    assert top[0] == "v3" and "v1" not in top and "v2" not in top  # seen items are not recommended
    profiles = outputs(outs, registry.PROFILES, schemas.ProfileUpdate)
    assert len(profiles) == 9 and len({p.user_id for p in profiles}) == 9
    new = next(p for p in profiles if p.user_id == "new")
    assert new.next_app == "video" and {i.horizon for i in new.interests} == {"long", "short"}
    # A later feedback-only profile of the same user still carries the interests (compacted topic).
    fb = schemas.Feedback(event_id="f", ts=501.0, user_id="new", cell_id="c1", app="video", signal="abandon",
                          qos=0.5)
    later = outputs(core.handle(msgs(FB, [fb]), now=501.0), registry.PROFILES, schemas.ProfileUpdate)
    assert len(later) == 1 and later[0].interests and later[0].zot and later[0].next_app == "video"


def test_unknown_item_enters_the_catalog_and_unknown_app_is_dead_lettered():
    core = EngineCore(CFG, cells={"c1"})
    bad = ix(0, "u1", "x1", app="radio")  # not a configured application
    outs = core.handle(msgs(IX, [ix(1, "u1", "brand-new-item"), bad]), now=10.0)
    dead = [o for o in outs if o.topic is registry.DEAD_LETTERS]
    assert len(dead) == 1 and b"radio" in dead[0].value
    assert "brand-new-item" in core.interests.state.catalog.items.pos


def test_network_aware_ranking_demotes_what_the_last_rate_cannot_carry():
    cfg = cfg_with(network_aware=True)
    core = EngineCore(cfg, cells={"c1"})
    # Everybody moves from v0 to the 12 Mbps v-hi more often than to the 1.5 Mbps v-lo.
    events = []
    for u in range(8):
        events += [ix(10 * u, f"w{u}", "v0", rate=1.5), ix(10 * u + 1, f"w{u}", "v-hi", rate=12.0)]
    for u in range(3):
        events += [ix(200 + 10 * u, f"l{u}", "v0", rate=1.5), ix(201 + 10 * u, f"l{u}", "v-lo", rate=1.5)]
    core.handle(msgs(IX, events), now=1000.0)
    plain = EngineCore(CFG, cells={"c1"})
    plain.handle(msgs(IX, events), now=1000.0)
    probe = [ix(500, "slow", "v0", rate=1.5)]
    core.interests.last_rate["slow"] = 2.0  # the user's last allocation carried 2 Mbps
    aware = outputs(core.handle(msgs(IX, probe, 100), now=1001.0), registry.RECOMMENDATIONS, schemas.Recommendation)
    blind = outputs(plain.handle(msgs(IX, probe, 100), now=1001.0), registry.RECOMMENDATIONS, schemas.Recommendation)
    assert [i.item_id for i in blind[0].items][0] == "v-hi"
    assert [i.item_id for i in aware[0].items][0] == "v-lo"
    assert "v-hi" in [i.item_id for i in aware[0].items]  # demoted, not dropped


def test_network_aware_engine_records_each_users_allocated_rate():
    core = EngineCore(cfg_with(network_aware=True), cells={"c1"})
    k = schemas.CellKpi(event_id="k", ts=1.0, cell_id="c1", epoch=1, prb_total=20,
                        users=[schemas.UserChannel(user_id="a", spectral_efficiency=2.0, app="video")])
    outs = core.handle(msgs(KPI, [k]), now=1.0)
    alloc = outputs(outs, registry.ALLOCATIONS, schemas.Allocation)[0]
    assert core.interests.last_rate["a"] == alloc.users[0].rate_mbps > 0 and "a" in core.dirty


def gamer_history(user: str) -> list:
    return [ix(i, user, f"g{i % 3}", app="gaming", ts=10.0) for i in range(12)]


def unnamed_kpi(users: list[str]) -> schemas.CellKpi:
    return schemas.CellKpi(event_id="k", ts=60.0, cell_id="c1", epoch=3, prb_total=30,
                           users=[schemas.UserChannel(user_id=u, spectral_efficiency=2.0) for u in users])


def test_proactive_allocation_serves_the_predicted_app_before_the_network_names_it():
    # A casual user (segment mix: video first) who mostly games, in a session whose app
    # is not classified yet, last seen running web.
    for mode, expect in (("predicted", "gaming"), ("last", "web"), ("default", "video")):
        core = EngineCore(cfg_with(unnamed_app=mode), cells={"c1"})
        core.handle(msgs(CTX, [ctx("g", app="web")]) + msgs(IX, gamer_history("g")), now=50.0)
        core.handle(msgs(CTX, [ctx("g", app=None)], 1), now=55.0)  # session ended; a new one starts
        core.handle(msgs(KPI, [unnamed_kpi(["g"])]), now=60.0)
        assert ("g", expect) in core.state.keys, (mode, sorted(core.state.keys))
    # Without any history or last app: the segment's most likely app (casual: video).
    core = EngineCore(cfg_with(unnamed_app="last"), cells={"c1"})
    core.handle(msgs(CTX, [ctx("n", segment="gamer")]) + msgs(KPI, [unnamed_kpi(["n"])]), now=60.0)
    assert ("n", "gaming") in core.state.keys


def test_a_named_app_is_never_second_guessed():
    core = EngineCore(CFG, cells={"c1"})
    core.handle(msgs(CTX, [ctx("g", app="web")]) + msgs(IX, gamer_history("g")), now=50.0)
    core.handle(msgs(KPI, [unnamed_kpi(["g"])]), now=60.0)  # context still names web: current
    assert ("g", "web") in core.state.keys and ("g", "gaming") not in core.state.keys


def records_of(core: EngineCore, users, partitions=None):
    recs = [(USER + u.encode(), user_record(core, u)) for u in users]
    return recs + tables_records(core, partitions)


def test_interest_state_round_trips_through_the_changelog_exactly():
    a = EngineCore(CFG, cells={"c1"})
    events = gamer_history("g") + [ix(50 + i, "h", f"v{i}", ts=30.0) for i in range(5)]
    a.handle(msgs(CTX, [ctx("g", cell="c1"), ctx("h", cell="c2", segment="gamer")]) + msgs(IX, events), now=40.0)
    b = EngineCore(CFG, cells={"c1"})
    apply_records(b, {}, records_of(a, ["g", "h"]))
    users = ["g", "h", "stranger"]
    cells, segs = ["c1", "c2", None], ["casual", "gamer", "gamer"]
    assert a.interests.next_apps(users, 99.0, cells, segs) == b.interests.next_apps(users, 99.0, cells, segs)
    for u in ("g", "h"):
        assert user_record(a, u) == user_record(b, u)
    ra = [r.items for r in a.interests.recommendations(["h"], 99.0)]
    rb = [r.items for r in b.interests.recommendations(["h"], 99.0)]
    assert {i.item_id for i in ra[0]}.isdisjoint({f"v{i}" for i in range(5)})
    assert {i.item_id for i in rb[0]}.isdisjoint({f"v{i}" for i in range(5)})  # recent items restored


def test_next_app_is_the_same_whichever_worker_owns_which_partition():
    """One core learning every user equals two cores that each learn their own
    partitions' users and read the other's changelog records (what workers do)."""
    rng = np.random.default_rng(3)
    apps = ["video", "gaming", "web"]
    users = [f"u{i}" for i in range(40)]
    events = [ix(i, users[int(rng.integers(40))], f"it{int(rng.integers(9))}", app=apps[int(rng.integers(3))],
                 ts=float(i)) for i in range(400)]
    contexts = [ctx(u, cell=f"c{i % 3}", segment=("casual", "gamer")[i % 2]) for i, u in enumerate(users)]
    one = EngineCore(CFG, cells=None)
    one.handle(msgs(CTX, contexts) + msgs(IX, events), now=500.0)
    parts = CFG.kafka.partitions
    owner = {u: one.interests.partition_of(u) % 2 for u in users}
    workers = [EngineCore(CFG, cells=None) for _ in range(2)]
    for w, core in enumerate(workers):
        mine = [e for e in events if owner[e.user_id] == w]
        core.handle(msgs(CTX, contexts) + msgs(IX, mine), now=500.0)
    for w, core in enumerate(workers):
        other = workers[1 - w]
        theirs = [u for u in users if owner[u] != w]
        owned_parts = {p for p in range(parts) if p % 2 != w}
        apply_records(core, {}, records_of(other, theirs, owned_parts))
    cells = [f"c{i % 3}" for i in range(40)]
    segs = [("casual", "gamer")[i % 2] for i in range(40)]
    expect = one.interests.next_apps(users, 600.0, cells, segs)
    assert len(set(expect)) > 1  # the test would not see a wrong table otherwise
    for core in workers:
        got = core.interests.next_apps(users, 600.0, cells, segs)
        assert got == expect
    probs = [np.round(c.interests.state.apps.key_counts[:4], 12).tolist() for c in (one, *workers)]
    assert probs[0] == probs[1] == probs[2]
    assert any(k.startswith(TABLES) for k, _ in tables_records(one, None))


def test_app_interests_count_visits_not_items():
    """One long video session of many clips weighs less than three separate game visits."""
    core = EngineCore(CFG, cells={"c1"})
    video = [ix(i, "v", f"clip{i}", app="video", ts=1000.0 + 30 * i) for i in range(12)]  # one visit
    games = [ix(100 + i, "v", "g1", app="gaming", ts=5000.0 + 1000 * i) for i in range(3)]  # three visits
    core.handle(msgs(CTX, [ctx("v", segment="gamer")]) + msgs(IX, video + games), now=9000.0)
    it = core.interests
    from engine.models.user_interests import InterestQuery
    u = it.state.catalog.users.get("v")
    counts = dict(zip(it.state.catalog.apps.ids, it.state.apps.long[u, :len(it.state.catalog.apps)].round(6)))
    assert counts["gaming"] > counts["video"] > 0
    long = it.state.apps.predict(InterestQuery(np.array([u]), np.array([9000.0]))).long[0]
    names = it.state.catalog.apps.ids
    assert long[names.index("gaming")] > long[names.index("video")]
    # The visit state is part of the user's changelog record.
    b = EngineCore(CFG, cells={"c1"})
    apply_records(b, {}, records_of(core, ["v"]))
    assert b.interests.last_visit["v"] == core.interests.last_visit["v"]


def item_models(core: EngineCore) -> tuple[dict, dict, dict, dict]:
    """The item models by item id: co-occurrence weight per item and per item pair,
    popularity shares, item rates (dense indices differ between cores)."""
    st = core.interests.state
    ids, co = st.catalog.items.ids, st.cooccurrence
    m = co.n_items
    weight = {ids[i]: float(co.n[i]) for i in range(m)}
    pairs = {(ids[j], ids[x]): float(co.C[j, x]) for j in range(m) for x in range(m) if co.C[j, x]}
    counts = st.popularity.counts[: st.popularity.n_items]
    shares = {ids[i]: float(c / counts.sum()) for i, c in enumerate(counts)}
    return weight, pairs, shares, dict(core.interests.item_rate)


def test_a_recovering_core_rebuilds_the_item_models_from_the_committed_interactions():
    """What a restarted worker does: the changelog gives the per-user state, a replay of
    the interactions topic (partition by partition, in chunks) the item models."""
    rng = np.random.default_rng(5)
    users = [f"u{i}" for i in range(30)]
    part = {u: i % 3 for i, u in enumerate(users)}  # three partitions of the interactions topic
    items = [int(rng.integers(12)) for _ in range(600)]  # an item's rate is the item's (its top bitrate)
    events = [ix(i, users[int(rng.integers(30))], f"it{k}", ts=float(i), rate=1.0 + k % 5)
              for i, k in enumerate(items)]
    contexts = [ctx(u, segment=("casual", "gamer")[i % 2]) for i, u in enumerate(users)]
    offset = {p: 0 for p in range(3)}
    topic_msgs = []  # as the worker read them: each partition's events in order, partitions interleaved
    for e in events:
        p = part[e.user_id]
        topic_msgs.append(Message(IX, p, offset[p], e.user_id.encode(), schemas.encode(e), 0))
        offset[p] += 1
    topic_msgs.append(Message(IX, 0, offset[0], b"u0", b"{not json", 0))  # dead-lettered then, skipped now
    worker = EngineCore(CFG, cells={"c1"})
    worker.handle(msgs(CTX, contexts), now=1.0)
    for i in range(0, len(topic_msgs), 70):
        worker.handle(topic_msgs[i:i + 70], now=700.0)

    restarted = EngineCore(CFG, cells={"c1"})
    apply_records(restarted, {}, records_of(worker, users))
    recent_before = {u: user_record(restarted, u) for u in users}
    learned = 0
    with restarted.interests.replaying():
        for p in range(3):
            mine = [m for m in topic_msgs if m.partition == p]
            for i in range(0, len(mine), 50):
                learned += restarted.replay_interactions(mine[i:i + 50])
    assert learned == len(events)

    want, got = item_models(worker), item_models(restarted)
    assert got[0] == want[0]  # action weights are dyadic: the sums are exact in any order
    assert got[1].keys() == want[1].keys()
    assert np.allclose([got[1][k] for k in want[1]], list(want[1].values()), rtol=1e-5)
    assert got[2].keys() == want[2].keys()
    assert np.allclose([got[2][k] for k in want[2]], list(want[2].values()), rtol=1e-9)
    assert got[3] == want[3]
    # The per-user state came from the changelog and the replay left it as it was.
    assert {u: user_record(restarted, u) for u in users} == recent_before == {u: user_record(worker, u)
                                                                              for u in users}
    ra = worker.interests.recommendations(users, 800.0)
    rb = restarted.interests.recommendations(users, 800.0)
    assert [r.user_id for r in ra] == [r.user_id for r in rb]
    for a, b in zip(ra, rb):
        assert np.allclose([i.score for i in a.items], [i.score for i in b.items], rtol=1e-5)

    # Without the replay's own history, each event would link to the user's *last*
    # items (the restored ones), not those before it: other pairs.
    wrong = EngineCore(CFG, cells={"c1"})
    apply_records(wrong, {}, records_of(worker, users))
    for p in range(3):
        wrong.replay_interactions([m for m in topic_msgs if m.partition == p])
    assert item_models(wrong)[1] != want[1]
