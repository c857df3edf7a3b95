"""Baseline schedulers: what each promises, and PF's explicit state across epochs."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.baselines import PFState, equal_share, max_rate, proportional_fair, universal_fit
from optimizer.problem import CellProblem, ProblemError


def _cell(n=6, n_prb=30, seed=0) -> CellProblem:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 3.0, n)
    se = rng.uniform(0.3, 5.0, n)
    se[-1] = 0.0
    return CellProblem(n_prb=n_prb, prb_bw_hz=360e3, se=se, adequate=a, desired=a * rng.uniform(2, 4, n))


def test_equal_share_and_max_rate() -> None:
    p = _cell()
    r = equal_share(p)
    np.testing.assert_array_equal(r.prb, [5] * 6)
    q = _cell(n_prb=32)
    np.testing.assert_array_equal(equal_share(q).prb, [6, 6, 5, 5, 5, 5])
    m = max_rate(p)
    assert m.prb[int(np.argmax(p.c))] == 30 and m.prb_used == 30
    assert m.reasons[-1].value == "no_channel"


def test_universal_fit_gives_everyone_the_percentile_rate() -> None:
    p = _cell(n=5, n_prb=200)
    pop = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    r = universal_fit(p, 50.0, population_desired=pop)  # 3 Mbps for everyone
    act = p.c > 0
    assert (r.rate_mbps[act] >= 3.0 - 1e-9).all()
    assert (p.c[act] * (r.prb[act] - 1) < 3.0).all()  # and not one PRB more
    hi = universal_fit(p, 100.0, population_desired=pop)
    assert hi.prb_used >= r.prb_used
    with pytest.raises(ProblemError):
        universal_fit(p, 120.0)


def test_proportional_fair_state_is_explicit_and_fair_over_time() -> None:
    p = _cell(n=4, n_prb=20)
    ids = ["a", "b", "c", "d"]
    s0 = PFState()
    r1, s1 = proportional_fair(p, s0, ids, window=10)
    assert s0.avg_rate == {}  # the input state is not touched
    # new users (no history): an equal split among users with a channel
    act = p.c > 0
    np.testing.assert_allclose(r1.x[act], 20 / act.sum())
    assert r1.prb_used == 20
    assert s1.avg_rate["a"] == pytest.approx(0.1 * r1.rate_mbps[0])
    # the user that got the most relative to its channel last time gets less now
    hist = PFState({"a": 10.0, "b": 0.1, "c": 0.1, "d": 0.0})
    r2, _ = proportional_fair(p, hist, ids, window=10)
    assert r2.x[0] < r2.x[1] or r2.x[0] == 0
    # restoring from the plain dict gives the same next decision
    again, _ = proportional_fair(p, PFState(dict(hist.avg_rate)), ids, window=10)
    np.testing.assert_array_equal(again.prb, r2.prb)
    with pytest.raises(ProblemError):
        proportional_fair(p, s0, ids, window=0)
