"""ZotPosterior: the OnlineModel around the ZoT state."""

from __future__ import annotations

import numpy as np
import pytest

from engine.models.base import OnlineModel
from engine.models.zot_posterior import ZotPosterior
from engine.schemas import Feedback, Signal
from operators import satisfaction as zs
from simulators.feedback import FeedbackBehaviour, Population, feedback_events

POP = Population.default()
BEH = FeedbackBehaviour.default()
PRIORS = POP.fitted_priors(np.random.default_rng(0), 600)


def _model(forgetting: float = 0.99) -> ZotPosterior:
    return ZotPosterior(POP.app_specs, PRIORS, zs.UpdateParams(signals=BEH.model, forgetting=forgetting), capacity=8)


def _events(rng, users, n_rounds, start=0):
    evs = []
    for t in range(n_rounds):
        q = POP.session_rates(rng, users.app)
        sig, rt, _ = BEH.emit(rng, q, users.a_rate, users.d_rate)
        evs += feedback_events(users, np.arange(len(users)), q, sig, rt, POP, ts=float(start + t), id_prefix=f"r{start + t}_")
    return evs


def test_is_online_model() -> None:
    assert isinstance(_model(), OnlineModel)


def test_snapshot_restore_identical_updates_and_predictions() -> None:
    rng = np.random.default_rng(1)
    users = POP.draw(rng, 1)
    m = _model()
    for u, s, c in zip(users.user_id, users.segment, users.context):
        m.set_context(u, s, c)
    m.update(_events(rng, users, 6))
    snap = m.snapshot()
    twin = ZotPosterior.from_snapshot(snap)
    later = _events(rng, users, 6, start=6)
    assert len(m.update(later)) == 0 and len(twin.update(later)) == 0
    keys = (users.user_id + ["unseen"], [POP.apps[a].spec.name for a in users.app] + ["video"])
    p1, p2 = m.predict(keys), twin.predict(keys)
    for f in zs.Estimates._fields:
        assert np.asarray(getattr(p1, f)).tobytes() == np.asarray(getattr(p2, f)).tobytes(), f
    assert m.snapshot()["state"]["mu"].tobytes() == twin.snapshot()["state"]["mu"].tobytes()
    # The snapshot is a copy: later updates do not leak into it.
    assert snap["state"]["n_signals"].max() == 6


def test_feedback_rejects_map_to_event_positions() -> None:
    m = _model()
    ev = [
        Feedback(event_id="a", ts=0, user_id="u", cell_id="c", app="video", signal=Signal.ABANDON, qos=1.0),
        Feedback(event_id="b", ts=0, user_id="u", cell_id="c", app="nope", signal=Signal.KEPT, qos=1.0),
        Feedback(event_id="c", ts=0, user_id="u", cell_id="c", app="gaming", signal=Signal.KEPT, qos=3.0),
        Feedback(event_id="d", ts=0, user_id="u", cell_id="c", app="video", signal=Signal.RATING, qos=9.0, rating=5),
    ]
    rej = m.update(ev)
    np.testing.assert_array_equal(rej.index, [1, 2])
    assert "unknown app" in rej.reason[0] and "unreachable" in rej.reason[1]
    prof = m.profile("u")
    assert [z.app for z in prof] == ["video"] and prof[0].n_signals == 2


def test_profile_in_metric_units_and_prediction_of_unseen() -> None:
    m = _model()
    m.set_context("g", "heavy", "home")
    m.update([Feedback(event_id="x", ts=0, user_id="g", cell_id="c", app="gaming", signal=Signal.KEPT, qos=60.0)])
    (z,) = m.profile("g")
    assert z.app == "gaming" and z.adequate > z.desired > 15.0  # latency: adequate above desired, above base
    e = m.predict((["g", "stranger"], ["gaming", "gaming"]))
    assert e.n_signals.tolist() == [1, 0]
    p = m.p_dissatisfied(["g", "g"], ["gaming", "gaming"], np.array([0.5, 50.0]))
    assert p[0] > p[1]


def test_set_context_moves_slot_to_matching_prior_group() -> None:
    m = _model()
    m.update([Feedback(event_id="x", ts=0, user_id="w", cell_id="c", app="video", signal=Signal.KEPT, qos=5.0)])
    st = m.state
    r = st.keys[("w", "video")]
    assert st.group[r] == st.group_keys[("*", "video", "*")]
    m.set_context("w", "heavy", "commute")
    assert st.group[r] == st.group_keys[("heavy", "video", "commute")]
    with pytest.raises(KeyError):
        m.predict((["w"], ["nope"]))
