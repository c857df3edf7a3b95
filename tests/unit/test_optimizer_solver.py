"""The Numba allocator against the cvxpy reference, its NumPy twins and the KKT conditions.

Random instances (hypothesis) cover zero and one user, spectral efficiencies
over 4 orders of magnitude (and 0), zones with A almost equal to D, zero
weights, min/max shares, prices, and targets that cannot all be met.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.schemas import OverloadReason
from optimizer.curves import log_dissatisfaction, log_satisfaction, satisfaction
from optimizer.overload import REASON_CODES, explain, required_prbs
from optimizer.problem import CellProblem, EpochProblem, objective_value
from optimizer.reference import SOLVED, solve_reference
from optimizer.rounding import round_prbs_numpy
from optimizer.solver import (
    approx_log,
    solve_cell,
    solve_epoch,
    waterfill_continuous,
    waterfill_continuous_numpy,
    weighted_sum_continuous,
    weighted_sum_continuous_numpy,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cells(draw, max_users: int = 10, narrow: float = 1e-4, shares: bool = True) -> CellProblem:
    """A random cell; `narrow` is the narrowest zone width relative to A."""
    n = draw(st.integers(0, max_users))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    se = 10.0 ** rng.uniform(-2.0, 2.0, n)  # 4 orders of magnitude
    se[rng.random(n) < 0.15] = 0.0
    a = rng.uniform(0.05, 20.0, n)
    rel = np.where(rng.random(n) < 0.25, 10.0 ** rng.uniform(np.log10(narrow), -2, n), rng.uniform(0.2, 5.0, n))
    d = a * (1.0 + rel)
    w = rng.uniform(0.0, 3.0, n)
    w[rng.random(n) < 0.1] = 0.0
    n_prb = draw(st.integers(0, 120))
    mn, mx = 0.0, 1.0
    if shares and draw(st.booleans()):
        mn = rng.uniform(0.0, 0.05, n)
        mx = np.maximum(mn, rng.uniform(0.05, 1.0, n))
    return CellProblem(n_prb=n_prb, prb_bw_hz=float(rng.choice([180e3, 360e3, 720e3])), se=se, adequate=a,
                       desired=d, weight=w, min_share=mn, max_share=mx)


def _rel_gap(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


def _marginal(p: CellProblem, x: np.ndarray) -> np.ndarray:
    # d/dx of w log S(c x) = w k c (1 - S(c x)); 1 - S from log(1 - S), exact when S rounds to 1
    one_minus_s = np.exp(np.asarray(log_dissatisfaction(p.c * x, p.adequate, p.desired, p.eps)).reshape(-1))
    return p.weight * p.k * p.c * one_minus_s


def _lo(p: CellProblem) -> np.ndarray:
    lo = p.lo_prb.copy()
    if lo.sum() > p.n_prb:
        lo = np.floor(lo * p.n_prb / lo.sum())
    return lo


# ------------------------------------------------------------------ weighted sum


@SETTINGS
@given(p=cells(), price=st.one_of(st.just(0.0), st.floats(1e-4, 2.0)))
def test_weighted_sum_matches_cvxpy(p: CellProblem, price: float) -> None:
    res = solve_cell(p, "weighted_sum", price=price)
    ref = solve_reference(p, "weighted_sum", price=price)
    assert ref.status in SOLVED, ref.status
    f_nb = objective_value(p, "weighted_sum", res.x, price)
    assert res.objective_continuous == pytest.approx(f_nb, rel=1e-12, abs=1e-12)
    assert _rel_gap(f_nb, ref.objective) <= 1e-6, (f_nb, ref.objective)


@SETTINGS
@given(p=cells(narrow=1e-8), price=st.one_of(st.just(0.0), st.floats(1e-4, 2.0)))
def test_weighted_sum_kkt(p: CellProblem, price: float) -> None:
    lo, hi = _lo(p), p.hi_prb
    x, mu = weighted_sum_continuous(p.c, p.k, p.m, p.weight, lo, hi, p.n_prb, price)
    n = p.n_prb
    assert np.isfinite(x).all() and math.isfinite(mu)
    # primal feasibility
    assert x.sum() <= n + 1e-9 * max(n, 1)
    assert (x >= lo - 1e-12).all() and (x <= hi + 1e-12).all()
    # dual feasibility and complementary slackness of the capacity constraint
    assert mu >= price * (1 - 1e-12)
    if mu > price * (1 + 1e-9) + 1e-300:
        assert abs(x.sum() - n) <= 1e-9 * max(n, 1)
    # stationarity, read off the monotone marginal around x (robust to steep marginals)
    act = p.weight * p.k * p.c > 0
    dx = 1e-9 * np.maximum(1.0, x)
    g_minus = _marginal(p, np.maximum(x - dx, 0.0))
    g_plus = _marginal(p, x + dx)
    tol = 1e-9 * max(mu, 1e-300)
    interior = act & (x > lo + 1e-9) & (x < hi - 1e-9)
    at_lo = act & (x <= lo + 1e-9) & (lo < hi)
    at_hi = act & (x >= hi - 1e-9) & (lo < hi)
    assert (g_minus[interior] >= mu - tol).all() and (g_plus[interior] <= mu + tol).all()
    assert (g_plus[at_lo] <= mu + tol).all()  # no gain in raising a user held at its minimum
    assert (g_minus[at_hi] >= mu - tol).all()  # a user at its maximum would take more


@SETTINGS
@given(p=cells(narrow=1e-6), price=st.one_of(st.just(0.0), st.floats(1e-4, 2.0)))
def test_weighted_sum_numba_matches_numpy_reference(p: CellProblem, price: float) -> None:
    lo = _lo(p)
    x1, mu1 = weighted_sum_continuous(p.c, p.k, p.m, p.weight, lo, p.hi_prb, p.n_prb, price)
    x2, mu2 = weighted_sum_continuous_numpy(p.c, p.k, p.m, p.weight, lo, p.hi_prb, p.n_prb, price)
    f1 = objective_value(p, "weighted_sum", x1, price)
    f2 = objective_value(p, "weighted_sum", x2, price)
    assert _rel_gap(f1, f2) <= 1e-9
    # (mu itself need not match: at a kink any price in an interval is a valid multiplier)
    assert x1.sum() <= p.n_prb + 1e-9 and x2.sum() <= p.n_prb + 1e-9
    assert mu1 >= price and mu2 >= price


def test_warm_start_changes_nothing_but_the_path() -> None:
    rng = np.random.default_rng(3)
    n = 60
    a = rng.uniform(0.5, 5, n)
    p = CellProblem(n_prb=100, prb_bw_hz=360e3, se=rng.uniform(0.2, 5, n), adequate=a, desired=a * 3)
    x0, mu0 = weighted_sum_continuous(p.c, p.k, p.m, p.weight, p.lo_prb, p.hi_prb, 100, 0.01)
    for guess in (mu0 * 0.5, mu0 * 1.001, mu0 * 20):
        x1, mu1 = weighted_sum_continuous(p.c, p.k, p.m, p.weight, p.lo_prb, p.hi_prb, 100, 0.01, mu0=guess)
        assert mu1 == pytest.approx(mu0, rel=1e-9)
        np.testing.assert_allclose(x1, x0, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------ max-min and epsilon-constraint


@SETTINGS
@given(p=cells())
def test_max_min_matches_cvxpy(p: CellProblem) -> None:
    res = solve_cell(p, "max_min")
    ref = solve_reference(p, "max_min")
    assert ref.status in SOLVED, ref.status
    assert _rel_gap(res.objective_continuous, ref.objective) <= 1e-6 or abs(res.objective_continuous - ref.objective) <= 1e-9


@SETTINGS
@given(p=cells(narrow=1e-8, shares=False))
def test_waterfill_numba_matches_numpy_and_is_max_min(p: CellProblem) -> None:
    lo, hi = p.lo_prb, p.hi_prb
    x1, l1 = waterfill_continuous(p.c, p.k, p.m, lo, hi, p.n_prb)
    x2, l2 = waterfill_continuous_numpy(p.c, p.k, p.m, lo, hi, p.n_prb)
    np.testing.assert_allclose(x1, x2, rtol=1e-9, atol=1e-9 * max(1, p.n_prb))
    act = p.c > 0
    if act.any() and math.isfinite(l1):
        # Everyone with a channel below its cap sits exactly at the common level.
        z = p.k * (p.c * x1 - p.m)
        free = act & (x1 < hi - 1e-9) & (x1 > lo + 1e-9)
        np.testing.assert_allclose(z[free], l1, rtol=1e-7, atol=1e-7)
        assert x1.sum() == pytest.approx(p.n_prb, rel=1e-9, abs=1e-9)


@SETTINGS
@given(p=cells(), s=st.floats(0.05, 0.95))
def test_epsilon_constraint_feasibility_and_cost_match_cvxpy(p: CellProblem, s: float) -> None:
    res = solve_cell(p, "epsilon_constraint", target=s)
    ref = solve_reference(p, "epsilon_constraint", target=s)
    lo = _lo(p)
    tr = p.target_rate(s)
    req, need, too_big = required_prbs(p.c, lo, p.hi_prb, tr, p.n_prb)
    reach = req >= 0
    cont_need = np.where(reach, np.maximum(lo, np.where(reach & (tr > 0), tr / np.where(p.c > 0, p.c, 1), lo)), lo).sum()
    if need <= p.n_prb and not too_big:
        assert not res.overload or p.lo_prb.sum() > p.n_prb
        assert ref.status in SOLVED
        assert _rel_gap(res.objective_continuous, ref.objective) <= 1e-6
        assert res.prb_used == need  # least whole PRBs: exactly what the targets need
        assert res.served[reach].all()
    elif cont_need > p.n_prb * (1 + 1e-6) or too_big:
        assert res.overload
        assert ref.status == "infeasible"


# ------------------------------------------------------------------ whole PRBs, outputs, overload


@SETTINGS
@given(p=cells(narrow=1e-8), scal=st.sampled_from(["weighted_sum", "max_min", "epsilon_constraint"]),
       policy=st.sampled_from(["max_served", "degrade_evenly"]), weighted=st.booleans(),
       target=st.one_of(st.none(), st.floats(0.05, 0.99)), price=st.floats(0.0, 1.0))
def test_outputs_are_whole_within_the_cell_and_never_nan(p, scal, policy, weighted, target, price) -> None:
    r = solve_cell(p, scal, price=price, target=target, overload=policy, weighted=weighted)
    assert r.prb.dtype == np.int64 and (r.prb >= 0).all()
    assert r.prb_used == r.prb.sum() <= p.n_prb
    assert (r.prb <= np.maximum(p.hi_prb, _lo(p))).all()
    for arr in (r.rate_mbps, r.satisfaction, r.x):
        assert np.isfinite(arr).all()
    assert math.isfinite(r.objective) and math.isfinite(r.objective_continuous)
    np.testing.assert_allclose(r.rate_mbps, p.c * r.prb)
    np.testing.assert_allclose(r.satisfaction, np.asarray(satisfaction(r.rate_mbps, p.adequate, p.desired, p.eps)).reshape(-1), rtol=1e-12, atol=1e-15)
    tr = p.target_rate(target)
    np.testing.assert_array_equal(r.served, r.rate_mbps >= tr * (1 - 1e-9))
    reasons = r.reasons
    for i in range(p.n_users):
        if r.served[i]:
            assert reasons[i] is OverloadReason.NONE
        elif p.c[i] == 0:
            assert reasons[i] is OverloadReason.NO_CHANNEL
        else:
            assert reasons[i] in (OverloadReason.CAPACITY, OverloadReason.ADMISSION)
    if scal == "weighted_sum":
        # Rounding never loses to plain flooring of the continuous optimum.
        floor = np.clip(np.floor(r.x), _lo(p), p.hi_prb)
        assert r.objective >= objective_value(p, "weighted_sum", floor, price) - 1e-9 * max(1, abs(r.objective))


def _overloaded_cell() -> CellProblem:
    # 6 users, 20 PRBs: targets need 2, 3, 4, 6, 9, 12 PRBs; user 6 has no channel.
    c = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    a = np.array([2.0, 3.0, 4.0, 6.0, 9.0, 12.0, 1.0])
    return CellProblem(n_prb=20, prb_bw_hz=1e6, se=c, adequate=a, desired=a * 2,
                       weight=np.array([1.0, 1.0, 1.0, 1.0, 1.0, 10.0, 1.0]))


def test_max_served_serves_the_most_users_cheapest_first() -> None:
    p = _overloaded_cell()
    r = solve_cell(p, "epsilon_constraint", overload="max_served")
    assert r.overload
    # 2 + 3 + 4 + 6 = 15 fit, 9 does not: 4 served, the leftover 5 PRBs go to the next in line.
    np.testing.assert_array_equal(r.served, [True, True, True, True, False, False, False])
    np.testing.assert_array_equal(r.prb, [2, 3, 4, 6, 5, 0, 0])
    assert explain(r.served, r.reason) == {4: OverloadReason.ADMISSION, 5: OverloadReason.ADMISSION,
                                           6: OverloadReason.NO_CHANNEL}


def test_weighted_max_served_prefers_weight_per_prb() -> None:
    p = _overloaded_cell()
    r = solve_cell(p, "epsilon_constraint", overload="max_served", weighted=True)
    # PRBs per unit weight: user 5 costs 1.2, so it goes first; then 2, 3, 4 fit (2+3+4+12=21 > 20: 4 dropped).
    assert r.served[5] and r.served[0] and r.served[1]
    assert r.prb_used <= 20
    assert r.reason[3] == REASON_CODES[OverloadReason.ADMISSION] or r.served[3]


def test_degrade_evenly_gives_everyone_one_level() -> None:
    p = _overloaded_cell()
    r = solve_cell(p, "epsilon_constraint", overload="degrade_evenly")
    assert r.overload and r.prb_used == 20
    act = p.c > 0
    # continuous allocation: a single logit level for all users with a channel (none reaches its cap)
    z = p.k * (p.c * r.x - p.m)
    assert np.ptp(z[act]) < 1e-9
    assert z[act].max() < p.k[0] * (p.adequate[0] - p.m[0])  # the common level is below every target (S = eps)
    # whole PRBs can lift a user onto its target; everyone else is short for capacity
    assert r.served[act].sum() <= 2
    assert {r.reasons[i] for i in range(6) if not r.served[i]} == {OverloadReason.CAPACITY}


def test_zero_users_and_zero_prbs() -> None:
    empty = CellProblem(n_prb=10, prb_bw_hz=360e3, se=[], adequate=[], desired=[])
    for scal in ("weighted_sum", "max_min", "epsilon_constraint"):
        r = solve_cell(empty, scal)
        assert r.prb_used == 0 and r.prb.size == 0 and math.isfinite(r.objective)
    p = CellProblem(n_prb=0, prb_bw_hz=360e3, se=[1.0, 2.0], adequate=[1.0, 1.0], desired=[2.0, 3.0])
    r = solve_cell(p, "epsilon_constraint", overload="degrade_evenly")
    assert r.prb_used == 0 and r.overload and not r.served.any()


def test_epoch_equals_cells_solved_one_by_one() -> None:
    rng = np.random.default_rng(7)
    cells_ = []
    for n in (0, 1, 5, 40, 3):
        a = rng.uniform(0.5, 5, n)
        cells_.append(CellProblem(n_prb=int(rng.integers(0, 60)), prb_bw_hz=360e3, se=10 ** rng.uniform(-1, 1, n),
                                  adequate=a, desired=a * rng.uniform(1.5, 4, n), weight=rng.uniform(0.5, 2, n)))
    ep = EpochProblem.from_cells(cells_)
    for scal in ("weighted_sum", "max_min", "epsilon_constraint"):
        er = solve_epoch(ep, scal, price=0.01, target=0.8)
        for i, c in enumerate(cells_):
            cr = solve_cell(c, scal, price=0.01, target=0.8)
            np.testing.assert_array_equal(er.cell(i).prb, cr.prb)
            assert er.objective[i] == cr.objective
    # warm start from the previous epoch's prices: same decisions
    er = solve_epoch(ep, "weighted_sum", price=0.01)
    er2 = solve_epoch(ep, "weighted_sum", price=0.01, warm_start=er.dual)
    np.testing.assert_array_equal(er.prb, er2.prb)


def test_to_allocation_is_a_valid_wire_event() -> None:
    p = _overloaded_cell()
    r = solve_cell(p, "epsilon_constraint")
    ev = r.to_allocation(event_id="e1", ts=1.0, cell_id="c1", epoch=3, prb_total=p.n_prb,
                         user_ids=[f"u{i}" for i in range(p.n_users)])
    assert ev.prb_used == r.prb_used and ev.overload
    assert ev.users[6].reason is OverloadReason.NO_CHANNEL


# ------------------------------------------------------------------ the fast paths of the batched kernel


def test_approx_log_is_within_its_bound() -> None:
    # The coarse phase's logarithm: 3.4e-8 absolute over the whole normal range.
    rng = np.random.default_rng(11)
    y = np.concatenate([10.0 ** rng.uniform(-300, 300, 200_000), rng.uniform(0.5, 2.0, 200_000),
                        [2.2250738585072014e-308, 1.0, 2.0, 1.7976931348623157e308]])
    err = np.abs(approx_log(y) - np.log(y))
    assert err.max() <= 5e-8
    assert err.max() >= 1e-9  # it is an approximation: the exact phase must follow it


def _exact_completion(p: CellProblem, x: np.ndarray, price: float) -> np.ndarray:
    """NumPy reference of the weighted sum's whole PRBs: floors, then the R best exact gains (if > 0)."""
    lo = _lo(p)
    f = np.clip(np.floor(x), lo, p.hi_prb)
    ls = lambda q: np.asarray(log_satisfaction(p.c * q, p.adequate, p.desired, p.eps)).reshape(-1)  # noqa: E731
    gain = np.where((p.c > 0) & (p.weight > 0), p.weight * (ls(f + 1) - ls(f)) - price, -np.inf)
    return round_prbs_numpy(x, lo, p.hi_prb, p.n_prb, gain, 0.0)


@SETTINGS
@given(p=cells(max_users=40, narrow=1e-6), price=st.one_of(st.just(0.0), st.floats(1e-4, 2.0)))
def test_weighted_sum_whole_prbs_and_outputs_match_a_numpy_recomputation(p: CellProblem, price: float) -> None:
    # The kernel's exp/log1p shortcuts (one log per gain, S and log S from exp(-|z|)) against plain NumPy.
    r = solve_cell(p, "weighted_sum", price=price)
    expected = _exact_completion(p, r.x, price)
    rate = p.c * expected
    ls = np.asarray(log_satisfaction(rate, p.adequate, p.desired, p.eps)).reshape(-1)
    f_expected = float(np.sum(np.where(p.weight > 0, p.weight * ls, 0.0)) - price * expected.sum())
    if not np.array_equal(r.prb, expected):
        # Only an exact tie in the gains (to rounding) may pick another user: same objective.
        assert r.objective == pytest.approx(f_expected, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(r.satisfaction, np.asarray(satisfaction(p.c * r.prb, p.adequate, p.desired, p.eps)).reshape(-1),
                               rtol=1e-13, atol=1e-300)
    ls_got = np.asarray(log_satisfaction(p.c * r.prb, p.adequate, p.desired, p.eps)).reshape(-1)
    f_got = float(np.sum(np.where(p.weight > 0, p.weight * ls_got, 0.0)) - price * r.prb.sum())
    assert r.objective == pytest.approx(f_got, rel=1e-12, abs=1e-12)


def test_batched_epoch_is_deterministic_and_warm_starts_agree() -> None:
    # The benchmark's kind of epoch: the two-phase root search gives one answer per cell,
    # whatever the start, and the same bits on every call.
    rng = np.random.default_rng(2026)
    n = 3_000
    offsets = np.linspace(0, n, 31).astype(np.int64)
    a = np.exp(rng.normal(0.0, 0.8, n))
    ep = EpochProblem(offsets=offsets, n_prb=np.full(30, 273, dtype=np.int64), prb_bw_hz=360e3,
                      se=rng.uniform(0.15, 5.55, n), adequate=a, desired=a * rng.uniform(2.0, 5.0, n))
    r1 = solve_epoch(ep, "weighted_sum", price=0.01)
    r2 = solve_epoch(ep, "weighted_sum", price=0.01)
    for f in ("prb", "x", "satisfaction", "objective", "dual"):
        np.testing.assert_array_equal(getattr(r1, f), getattr(r2, f))
    for scale in (0.5, 1.0001, 3.0):
        rw = solve_epoch(ep, "weighted_sum", price=0.01, warm_start=r1.dual * scale)
        np.testing.assert_array_equal(rw.prb, r1.prb)
        np.testing.assert_allclose(rw.x, r1.x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(rw.dual, r1.dual, rtol=1e-9)
    for i in (0, 17):
        c = ep.cell(i)
        x, mu = weighted_sum_continuous_numpy(c.c, c.k, c.m, c.weight, c.lo_prb, c.hi_prb, c.n_prb, 0.01)
        np.testing.assert_allclose(r1.cell(i).x, x, rtol=0, atol=1e-8)
        assert r1.dual[i] == pytest.approx(mu, rel=1e-9)


def test_waterfill_converges_where_newton_cycles() -> None:
    """Found by hypothesis: two near-step users (A almost D) and two clipped at 0; plain
    Newton-secant cycled between pieces of sum x(L) and ran out of iterations."""
    p = CellProblem(n_prb=39, prb_bw_hz=360000.0,
                    se=np.array([1.54739578e-02, 4.61468399e+01, 0.0, 1.11614752e-02, 3.18454104e-01]),
                    adequate=np.array([16.43793715, 8.87437886, 14.32454887, 17.07701328, 1.61242126]),
                    desired=np.array([16.4387369, 8.8745792, 37.09831772, 17.11773397, 2.47959738]),
                    weight=np.array([0.34636957, 1.67632847, 0.46241668, 2.64451342, 2.39530863]), eps=0.1)
    x, level = waterfill_continuous(p.c, p.k, p.m, p.lo_prb, p.hi_prb, p.n_prb)
    x_ref, level_ref = waterfill_continuous_numpy(p.c, p.k, p.m, p.lo_prb, p.hi_prb, p.n_prb)
    np.testing.assert_allclose(x, x_ref, rtol=1e-9, atol=1e-9)
    z = p.k * (p.c * x - p.m)
    assert z[0] == pytest.approx(z[1], rel=1e-9) == pytest.approx(level_ref, rel=1e-9)
