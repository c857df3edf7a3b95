"""Real-time allocator: Numba solvers for every scalarization, one cell or a whole epoch.

Problem families (see docs/optimizer.md for the derivations and KKT conditions):

weighted_sum        max sum_u w_u log S_u(c_u x_u) - price sum_u x_u
                    s.t. sum_u x_u <= N, lo_u <= x_u <= hi_u.
                    Separable given one cell price mu >= price: the marginal
                    w k c (1 - S(c x)) = mu gives x in closed form
                    x = (m + (log(W - mu) - log mu)/k)/c, W = w k c, clipped to
                    [lo, hi] (x = lo when W(1 - S(c lo)) <= mu). mu is found by a
                    safeguarded Halley iteration on t = log mu (bracketed,
                    Illinois-secant fallback) so that sum x = N when capacity
                    binds: first on approximate logarithms (`approx_log`,
                    vectorized), then exactly, usually one pass and a Taylor
                    step instead of a final pass of logarithms; the previous
                    epoch's mu can seed it (`warm_start`).
epsilon_constraint  min sum_u x_u s.t. c_u x_u >= T_u (T = S^-1(target) or A):
                    closed form x_u = ceil(T_u / c_u) in whole PRBs; if that does
                    not fit in N the overload policy decides.
max_min             max min_u S_u(c_u x_u): water-filling on the common level
                    L = logit(S), x_u = clip((m + L/k)/c, lo, hi), which is
                    piecewise linear in L (Newton with secant/bisection fallback
                    hits the exact piece). Lexicographic: users capped at hi free their
                    share for the rest.

Overload (targets do not fit in N): `max_served` admits users cheapest first
(by PRBs needed, or PRBs per unit weight when `weighted`), and hands any
leftover PRBs to the next users in that order; `degrade_evenly` lowers every
user's satisfaction to one common level (water-filling capped at each target).
Users with se = 0 and a positive target are `no_channel`; users whose target
needs more than their max share are `capacity`. Nothing here raises on a valid
`CellProblem`/`EpochProblem`, and nothing returns NaN.

Whole PRBs come from `optimizer.rounding` with the objective-aware score.

Speed (the 100,000-user, 1,000-cell epoch is a benchmark target): one kernel
over all cells with one scratch buffer; per-user loops split so that libm
calls run alone and the arithmetic vectorizes (see docs/optimizer.md).

Entry points: `solve_cell(problem, ...)`, `solve_epoch(epoch, ...)` (one Numba
call over all cells, users sorted by cell with offsets), and the continuous
kernels `weighted_sum_continuous` / `waterfill_continuous`, each with a NumPy
reference of the same signature (`*_numpy`) the tests compare against.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from numba import njit

from engine.schemas import Allocation, OverloadReason, UserAllocation
from optimizer.problem import CellProblem, EpochProblem, ProblemError, objective_value
from optimizer.overload import OVERLOAD_POLICIES, REASON_CODES, REASONS, _OVL, _degrade_caps, _max_served, _required_prbs
from optimizer.rounding import _round_into, floor_within

SCALARIZATIONS: tuple[str, ...] = ("weighted_sum", "epsilon_constraint", "max_min", "pareto")
_SCAL = {"weighted_sum": 0, "epsilon_constraint": 1, "max_min": 2}
_R_NONE = REASON_CODES[OverloadReason.NONE]
_R_CAPACITY = REASON_CODES[OverloadReason.CAPACITY]
_R_NO_CHANNEL = REASON_CODES[OverloadReason.NO_CHANNEL]
_R_ADMISSION = REASON_CODES[OverloadReason.ADMISSION]

# Newton/bisection stopping rule: |sum x - N| <= _TOL_REL * max(N, 1) PRBs.
_TOL_REL = 1e-12
# The weighted sum stops earlier, once its next Halley step dt is small,
# (1 + max_u r_u) |dt| <= _POLISH_STEP, and applies that step to x directly by
# each user's Taylor expansion (x_u += x_u' dt + x_u'' dt^2 / 2): what one more
# evaluation would give, to third order, without its n logarithms. The
# remainder is ~(r dt)^2 |x' dt| / 3 <~ 1e-15 PRB. If a user crosses its
# bound within the step (the sum then misses N by more than
# _POLISH_SUM_REL N), the solver evaluates there instead.
_POLISH_STEP = 2e-5
_POLISH_SUM_REL = 1e-11
# The coarse phase stops once its Halley step dt is small, (1 + r) |dt| <=
# _COARSE_STEP with r the d1-weighted mean of mu/(W - mu) (dds/ds), and
# returns t + dt: its logarithms are good to 3.4e-8, so the exact phase
# starts ~1e-7 away and usually polishes after one pass.
_COARSE_STEP = 1e-2
_COARSE_MAX_IT = 60
_MAX_IT = 200
# A rate counts as reaching its target within this relative slack (PRB counts
# are ceil(T/c (1 - 1e-12)), so exact targets are not lost to rounding).
_SERVED_RTOL = 1e-9


# The ZoT curve in its logit form z = k (q - m), with k, m from
# optimizer.curves.slope_centre (precomputed per user by the problem): the hot
# loops evaluate it millions of times per epoch, so they skip recomputing
# (k, m) from (A, D, eps) as the curves' scalar helpers do. Tests check these
# against optimizer.curves.


@njit(cache=True, inline="always")
def _sig(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


# ------------------------------------------------------------------ weighted sum


# log(1 + f) on [0, 1) to 3.4e-8: a degree-8 polynomial (Chebyshev least
# squares), for the coarse phase of the weighted-sum root search only.
_ALOG = (3.380092128413281e-08, 0.9999942754832564, -0.4998385997043017, 0.3315488284179245,
         -0.23982677968493948, 0.16582375872676303, -0.09325294495535735, 0.034850128772746986,
         -0.00615154505390585)
_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8 = _ALOG
_LN2 = math.log(2.0)


@njit(cache=True, inline="always")
def _alog(y: float) -> float:
    """log(y) to 3.4e-8 absolute for normal y > 0 (finite garbage otherwise), branch-free.

    Exponent from the bits, a polynomial for the mantissa: Numba vectorizes a
    loop of these (~2.3 ns per value against ~8 ns for math.log here, which
    has no vectorized form in this build). Never decides a result: the exact
    phase after it does (see _ws_cell).
    """
    i = np.float64(y).view(np.int64)
    e = (i >> 52) - 1023
    f = np.int64((i & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000).view(np.float64) - 1.0
    p = _A0 + f * (_A1 + f * (_A2 + f * (_A3 + f * (_A4 + f * (_A5 + f * (_A6 + f * (_A7 + f * _A8)))))))
    return e * _LN2 + p


@njit(cache=True)
def _alog_array(y, out) -> None:
    for u in range(y.size):
        out[u] = _alog(y[u])


def approx_log(y: np.ndarray) -> np.ndarray:
    """`_alog` over an array (Numba); np.log is its reference (tests: |error| <= 5e-8 on normal y > 0)."""
    y = np.ascontiguousarray(y, dtype=np.float64)
    out = np.empty_like(y)
    _alog_array(y, out)
    return out


@njit(cache=True)
def _coefficients(c, k, m, w, big_w, mc, ikc) -> None:
    """Per-user constants of the closed forms: W = w k c, m/c and 1/(k c) (0 without a channel).

    Computed once per cell so the iterations below multiply instead of divide.
    """
    for u in range(c.size):
        big_w[u] = w[u] * k[u] * c[u]
        if c[u] > 0.0:
            mc[u] = m[u] / c[u]
            ikc[u] = 1.0 / (k[u] * c[u])
        else:
            mc[u] = 0.0
            ikc[u] = 0.0


@njit(cache=True, error_model="numpy")
def _ws_eval(t: float, big_w, mc, ikc, lo, hi, x, buf, d2, approx: bool) -> tuple[float, float, float, float]:
    """x(mu = e^t) into `x`; returns (sum x, d sum x/dt, d2 sum x/dt2, max_u mu/(W_u - mu)).

    The derivatives and the max are over users strictly inside (lo, hi): with
    r = mu/(W - mu), x' = -(1 + r)/(k c) and x'' = -r (1 + r)/(k c); the max
    only in the exact mode (the coarse one returns 0). `approx` takes the
    logarithms from _alog (the coarse phase). `buf`, `d2`: scratch.
    Three loops, not one: the logarithms, a branch-free map (Numba
    vectorizes it) and the sums in index order (the same floats as one loop),
    ~2x faster than one loop with branches around the calls.
    """
    mu = math.exp(t)
    n = big_w.size
    if approx:
        for u in range(n):
            buf[u] = _alog(big_w[u] - mu)
    else:
        for u in range(n):
            buf[u] = big_w[u] - mu
        for u in range(n):
            if buf[u] > 0.0:
                buf[u] = math.log(buf[u])
    for u in range(n):
        # Loads first and selects only (no min/max, no loads under a branch):
        # the form LLVM vectorizes.
        wu = big_w[u]
        lu = lo[u]
        hu = hi[u]
        ik = ikc[u]
        d = wu - mu
        act = d > 0.0
        xu = mc[u] + (buf[u] - t) * ik
        inside = act & (xu > lu) & (xu < hu)
        xc = xu if xu > lu else lu
        xc = xc if xc < hu else hu
        x[u] = xc if act else lu
        q = 1.0 / d  # inf or garbage outside (lo, hi): masked below
        d1 = wu * q * ik
        buf[u] = d1 if inside else 0.0
        d2[u] = d1 * (mu * q) if inside else 0.0
    s = 0.0
    ds = 0.0
    dds = 0.0
    for u in range(n):
        s += x[u]
        ds -= buf[u]
        dds -= d2[u]
    rho = 0.0
    if not approx:
        for u in range(n):
            if buf[u] > 0.0:
                rho = max(rho, d2[u] / buf[u])
    return s, ds, dds, rho


@njit(cache=True, error_model="numpy")
def _ws_polish(t: float, dt: float, big_w, ikc, lo, hi, x) -> float:
    """x(t + dt) from x(t) by its second-order Taylor step, interior users only; returns sum x.

    No logarithms: what one more evaluation would give, to third order in dt
    (the caller keeps (1 + max r) |dt| tiny, see _POLISH_STEP).
    """
    mu = math.exp(t)
    s = 0.0
    for u in range(big_w.size):
        if big_w[u] > mu and lo[u] < x[u] < hi[u]:
            q = 1.0 / (big_w[u] - mu)
            d1 = big_w[u] * q * ikc[u]
            x[u] = min(max(x[u] - d1 * dt * (1.0 + 0.5 * mu * q * dt), lo[u]), hi[u])
        s += x[u]
    return s


@njit(cache=True, inline="always")
def _halley(g: float, ds: float, dds: float) -> float:
    """Root nearest 0 of the quadratic model g + ds d + dds d^2 / 2 (ds < 0); the Newton step if it has none."""
    disc = ds * ds - 2.0 * g * dds
    if disc < 0.0:
        return -g / ds
    return -2.0 * g / (ds - math.sqrt(disc))


@njit(cache=True)
def _ws_start(big_w, mc, ikc, lo, hi, n_prb: float, n_act: int) -> float:
    """Cold start for log mu: log of the mean marginal at an equal share, over ~16 users (a stride).

    The marginal is W (1 - S(c x)), 1 - S = sigmoid(-z), z = k (c x - m) =
    (x - m/c) / (1/(kc)). On the benchmark's cells this is ~0.25 (rms) from
    log mu*; the geometric mean used before was off by 1 to 3 (satisfied
    users' tiny marginals drag it down), and solving a stride sample first
    cost more than it saved.
    """
    n = big_w.size
    x_eq = n_prb / n_act
    step = max(1, n // 16)
    acc = 0.0
    cnt = 0
    for u in range(0, n, step):
        if big_w[u] > 0.0:
            xe = min(max(x_eq, lo[u]), hi[u])
            acc += big_w[u] * _sig(-(xe - mc[u]) / ikc[u])
            cnt += 1
    return math.log(acc / cnt) if acc > 0.0 else math.nan


@njit(cache=True)
def _ws_root(t: float, big_w, mc, ikc, lo, hi, n_prb: float, price: float, w_max: float, x, tmp, buf, d2,
             approx: bool) -> float:
    """Safeguarded Halley iteration for sum x(t) = N from `t`.

    Exact (`approx` False): returns the cell price mu with x(mu) in `x`.
    Coarse (`approx` True, logarithms from _alog): returns only where the
    iteration settles, the start of the exact phase.
    """
    n = big_w.size
    big_n = max(n_prb, 1.0)
    tol = _TOL_REL * big_n
    # exp(log W) may round below W, where that user would take its hi: keep a margin.
    b = math.log(w_max) + 1e-12
    a = -math.inf
    t_floor = math.log(price) if price > 0.0 else -math.inf  # mu never goes below the price
    t = min(max(t, t_floor), b - 1e-9)
    g_a = math.inf
    g_b = -math.inf
    side = 0
    for it in range(_MAX_IT):
        s, ds, dds, rho = _ws_eval(t, big_w, mc, ikc, lo, hi, x, buf, d2, approx)
        g = s - n_prb
        if t == t_floor and g <= tol:
            return t if approx else price  # capacity does not bind at the operator's price
        if abs(g) <= tol:
            return t if approx else math.exp(t)
        tn = math.nan
        if ds < 0.0:
            # Halley's step (the quadratic model of sum x in t): the curvature
            # comes from users about to drop to lo, the reason plain Newton
            # needed ~8 evaluations per cell.
            dt = _halley(g, ds, dds)
            if approx:
                # Halley converges cubically: once the step is small, t + dt is
                # the approximate root to ~(r dt)^2 dt, no need to confirm it.
                if abs(dt) * (1.0 + dds / ds) <= _COARSE_STEP:
                    return max(t + dt, t_floor)
            elif abs(dt) * (1.0 + rho) <= _POLISH_STEP and t + dt >= t_floor:
                if abs(_ws_polish(t, dt, big_w, ikc, lo, hi, x) - n_prb) <= _POLISH_SUM_REL * big_n:
                    return math.exp(t + dt)
                # A user crossed a bound within the step: evaluate there exactly.
            tn = t + dt
        # Illinois: an end kept twice in a row has its g halved for the secant.
        if g > 0.0:
            a = t
            g_a = g
            if side == 1:
                g_b *= 0.5
            side = 1
        else:
            b = t
            g_b = g
            if side == -1:
                g_a *= 0.5
            side = -1
        if a > -math.inf and b - a <= 4e-16 * max(1.0, abs(t)):
            break
        if approx and it >= _COARSE_MAX_IT:
            return t
        if not (a < tn < b):
            # Past a kink: the secant through the bracket ends (Illinois),
            # or expand downwards while no point with sum x > N is known.
            if a == -math.inf:
                tn = t - max(1.0, 2.0 * (b - t))
            else:
                tn = a + (b - a) * g_a / (g_a - g_b) if g_b > -math.inf else math.nan
                if not (a < tn < b):
                    tn = 0.5 * (a + b)
        if tn <= t_floor:
            if t == t_floor or a >= t_floor:
                tn = 0.5 * (a + b) if a > -math.inf else t_floor
            else:
                tn = t_floor
        t = tn
    if approx:
        return b
    # Bracket collapsed on a point where sum x jumps across N (a nearly flat
    # marginal): the optimum is the mix of the two endpoint allocations that
    # uses exactly N, both satisfy the KKT conditions at this mu.
    s_b = _ws_eval(b, big_w, mc, ikc, lo, hi, x, buf, d2, False)[0]
    for u in range(n):
        tmp[u] = x[u]
    s_a = _ws_eval(a, big_w, mc, ikc, lo, hi, x, buf, d2, False)[0]  # x(a) in x, x(b) in tmp
    if s_a > s_b:
        theta = min(1.0, max(0.0, (n_prb - s_b) / (s_a - s_b)))
        for u in range(n):
            x[u] = tmp[u] + theta * (x[u] - tmp[u])
    return math.exp(b)


@njit(cache=True)
def _ws_cell(big_w, mc, ikc, lo, hi, n_prb: float, price: float, mu0: float, x, tmp, buf, d2) -> float:
    """Continuous weighted-sum optimum into `x`; returns the cell price mu (>= price).

    Needs sum(lo) <= n_prb. `mu0` is a starting guess (the previous epoch's mu;
    <= 0 or NaN for none). `tmp`, `buf` and `d2` are scratch of the same size. At
    mu >= max W every user sits at lo, which brackets the root from above.
    Two phases: a coarse one on approximate logarithms finds log mu to ~1e-7
    (~6 cheap passes from a cold start), then usually one exact pass and the
    Taylor polish finish it; the answer is the exact phase's alone.
    """
    n = big_w.size
    w_max = 0.0
    s_top = 0.0  # sum x as mu -> 0 (active users at hi)
    n_act = 0
    for u in range(n):
        if big_w[u] > 0.0:
            w_max = max(w_max, big_w[u])
            s_top += hi[u]
            n_act += 1
        else:
            s_top += lo[u]
    if w_max <= price or n == 0:
        for u in range(n):
            x[u] = lo[u]
        return price
    if s_top <= n_prb:  # capacity never binds: x(price) or everyone at hi
        if price > 0.0:
            _ws_eval(math.log(price), big_w, mc, ikc, lo, hi, x, buf, d2, False)
            return price
        for u in range(n):
            x[u] = hi[u] if big_w[u] > 0.0 else lo[u]
        return 0.0
    t = math.log(mu0) if mu0 > 0.0 else _ws_start(big_w, mc, ikc, lo, hi, n_prb, n_act)
    if not (t == t):
        t = math.log(w_max) - 1.0
    t = _ws_root(t, big_w, mc, ikc, lo, hi, n_prb, price, w_max, x, tmp, buf, d2, True)
    return _ws_root(t, big_w, mc, ikc, lo, hi, n_prb, price, w_max, x, tmp, buf, d2, False)


def _coef(c, k, m, w):
    c, k, m, w = (np.ascontiguousarray(v, dtype=np.float64) for v in (c, k, m, w))
    big_w, mc, ikc = np.empty(c.size), np.empty(c.size), np.empty(c.size)
    _coefficients(c, k, m, w, big_w, mc, ikc)
    return big_w, mc, ikc


def weighted_sum_continuous(c: np.ndarray, k: np.ndarray, m: np.ndarray, w: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_prb: float, price: float, mu0: float = 0.0) -> tuple[np.ndarray, float]:
    """Continuous weighted-sum optimum (x, mu) of one cell (Numba). Needs sum(lo) <= n_prb.

    `mu0` > 0 starts the search there (warm start); the result does not depend on it.
    """
    big_w, mc, ikc = _coef(c, k, m, w)
    lo, hi = (np.ascontiguousarray(v, dtype=np.float64) for v in (lo, hi))
    x = np.empty(big_w.size)
    mu = _ws_cell(big_w, mc, ikc, lo, hi, float(n_prb), float(price), float(mu0), x, np.empty_like(x), np.empty_like(x),
                  np.empty_like(x))
    return x, float(mu)


def _ws_x_numpy(mu: float, c, k, m, w, lo, hi) -> np.ndarray:
    big_w = w * k * c
    act = big_w > mu
    with np.errstate(divide="ignore", invalid="ignore"):
        xr = (m + (np.log(np.where(act, big_w - mu, 1.0)) - np.log(mu)) / k) / np.where(c > 0, c, 1.0)
    return np.where(act, np.clip(xr, lo, hi), lo)


def weighted_sum_continuous_numpy(c: np.ndarray, k: np.ndarray, m: np.ndarray, w: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_prb: float, price: float, mu0: float = 0.0) -> tuple[np.ndarray, float]:
    """NumPy reference: plain bisection on log mu (slow, obviously correct)."""
    c, k, m, w, lo, hi = (np.asarray(v, dtype=np.float64) for v in (c, k, m, w, lo, hi))
    big_w = w * k * c
    if c.size == 0 or not (big_w > 0).any():
        return lo.copy(), float(price)
    z = k * (c * lo - m)
    mu_max = float(np.max(np.where(big_w > 0, big_w / (1.0 + np.exp(np.minimum(z, 700.0))), 0.0)))
    if mu_max <= price:
        return lo.copy(), float(price)
    if price > 0:
        x = _ws_x_numpy(price, c, k, m, w, lo, hi)
        if x.sum() <= n_prb * (1 + _TOL_REL):
            return x, float(price)
        a = math.log(price)
    else:
        x = np.where(big_w > 0, hi, lo)
        if x.sum() <= n_prb:
            return x, 0.0
        a = math.log(mu_max) - 1.0
        while _ws_x_numpy(math.exp(a), c, k, m, w, lo, hi).sum() <= n_prb:
            a -= 2.0 * (math.log(mu_max) - a)
    b = math.log(mu_max) + 1e-12  # exp(log W) may round below W
    for _ in range(400):
        t = 0.5 * (a + b)
        if t in (a, b):
            break
        if _ws_x_numpy(math.exp(t), c, k, m, w, lo, hi).sum() > n_prb:
            a = t
        else:
            b = t
    xa = _ws_x_numpy(math.exp(a), c, k, m, w, lo, hi)
    xb = _ws_x_numpy(math.exp(b), c, k, m, w, lo, hi)
    sa, sb = xa.sum(), xb.sum()
    theta = 0.0 if sa <= sb else min(1.0, max(0.0, (n_prb - sb) / (sa - sb)))
    return xb + theta * (xa - xb), math.exp(b)


# ------------------------------------------------------------------ water-filling (max-min, degrade evenly)


@njit(cache=True)
def _wf_eval(level: float, mc, ikc, lo, hi, x) -> tuple[float, float]:
    s = 0.0
    ds = 0.0
    for u in range(mc.size):
        xu = lo[u]
        if ikc[u] > 0.0:
            xu = mc[u] + level * ikc[u]
            if xu <= lo[u]:
                xu = lo[u]
            elif xu >= hi[u]:
                xu = hi[u]
            else:
                ds += ikc[u]
        x[u] = xu
        s += xu
    return s, ds


@njit(cache=True)
def _wf_cell(mc, ikc, lo, hi, n_prb: float, x, tmp) -> float:
    """Lexicographic max-min water-filling into `x`; returns the common level L = logit(S).

    Users without a channel (ikc = 0) stay at lo. Returns +inf when every user
    with a channel reaches its hi, -inf when none has one. sum x(L) is piecewise
    linear, so Newton lands exactly once it is on the right piece.
    """
    n = mc.size
    a = math.inf
    b = -math.inf
    s_top = 0.0
    num = 0.0
    den = 0.0
    for u in range(n):
        if ikc[u] > 0.0:
            a = min(a, (lo[u] - mc[u]) / ikc[u])
            b = max(b, (hi[u] - mc[u]) / ikc[u])
            s_top += hi[u]
            num += mc[u]
            den += ikc[u]
        else:
            s_top += lo[u]
            num += lo[u]
    if a == math.inf:
        for u in range(n):
            x[u] = lo[u]
        return -math.inf
    if s_top <= n_prb:
        for u in range(n):
            x[u] = hi[u] if ikc[u] > 0.0 else lo[u]
        return math.inf
    tol = _TOL_REL * max(n_prb, 1.0)
    t = (n_prb - num) / den  # the level if nobody were clipped
    if not (a < t < b):
        t = 0.5 * (a + b)
    g_a = -math.inf
    g_b = math.inf
    width = b - a  # the bracket at the last progress check
    for it in range(_MAX_IT):
        s, ds = _wf_eval(t, mc, ikc, lo, hi, x)
        g = s - n_prb
        if abs(g) <= tol:
            return t
        if g < 0.0:
            a = t
            g_a = g
        else:
            b = t
            g_b = g
        if b - a <= 4e-16 * max(1.0, abs(t)):
            break
        tn = t - g / ds if ds > 0.0 else math.nan
        if not (a < tn < b):
            # Newton-secant: the secant through the bracket ends, else bisect.
            tn = a + (b - a) * g_a / (g_a - g_b) if (g_a > -math.inf and g_b < math.inf) else math.nan
            if not (a < tn < b):
                tn = 0.5 * (a + b)
        if it % 4 == 3:
            # sum x(L) is neither convex nor concave (users enter, then saturate): Newton
            # can cycle between two pieces. Bisect when four steps did not halve the bracket.
            if b - a > 0.5 * width:
                tn = 0.5 * (a + b)
            width = b - a
        t = tn
    s_b, _ = _wf_eval(b, mc, ikc, lo, hi, tmp)
    s_a, _ = _wf_eval(a, mc, ikc, lo, hi, x)
    if s_b > s_a:
        theta = min(1.0, max(0.0, (n_prb - s_a) / (s_b - s_a)))
        for u in range(n):
            x[u] = x[u] + theta * (tmp[u] - x[u])
    return a


def waterfill_continuous(c: np.ndarray, k: np.ndarray, m: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_prb: float) -> tuple[np.ndarray, float]:
    """Continuous lexicographic max-min allocation (x, level L = logit S) of one cell (Numba)."""
    _, mc, ikc = _coef(c, k, m, np.ones(np.size(c)))
    lo, hi = (np.ascontiguousarray(v, dtype=np.float64) for v in (lo, hi))
    x = np.empty(mc.size)
    level = _wf_cell(mc, ikc, lo, hi, float(n_prb), x, np.empty_like(x))
    return x, float(level)


def waterfill_continuous_numpy(c: np.ndarray, k: np.ndarray, m: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_prb: float) -> tuple[np.ndarray, float]:
    """NumPy reference: bisection on the level."""
    c, k, m, lo, hi = (np.asarray(v, dtype=np.float64) for v in (c, k, m, lo, hi))
    act = c > 0
    if not act.any():
        return lo.copy(), -math.inf
    top = np.where(act, hi, lo)
    if top.sum() <= n_prb:
        return top, math.inf
    cc = np.where(act, c, 1.0)

    def xs(level: float) -> np.ndarray:
        return np.where(act, np.clip((m + level / k) / cc, lo, hi), lo)

    a = float(np.min((k * (cc * lo - m))[act]))
    b = float(np.max((k * (cc * hi - m))[act]))
    for _ in range(400):
        t = 0.5 * (a + b)
        if t in (a, b):
            break
        if xs(t).sum() < n_prb:
            a = t
        else:
            b = t
    xa, xb = xs(a), xs(b)
    sa, sb = xa.sum(), xb.sum()
    theta = 0.0 if sb <= sa else min(1.0, max(0.0, (n_prb - sa) / (sb - sa)))
    return xa + theta * (xb - xa), a


# ------------------------------------------------------------------ one cell, all scalarizations


@njit(cache=True, error_model="numpy")
def _log1p_into(v, out) -> None:
    """out = log1p(v) for v > -1, in three loops (only the middle one calls log).

    log(u) v / (u - 1) with u = 1 + v, v itself where u rounds to 1: to a few
    ulp, the rounding of u cancels in the ratio (Goldberg 1991, Theorem 4);
    about half the cost of math.log1p here.
    """
    n = v.size
    for u in range(n):
        out[u] = 1.0 + v[u]
    for u in range(n):
        out[u] = math.log(out[u])
    for u in range(n):
        vu = v[u]
        d = (1.0 + vu) - 1.0
        out[u] = vu if d == 0.0 else out[u] * vu / d


@njit(cache=True, error_model="numpy")
def _ws_round(c, k, m, w, price, n_prb, x, lo, hi, prb, e0, e1, score, cand, neg, aux, aux2) -> None:
    """Whole PRBs for the weighted sum: floors, then the R leftover PRBs by exact gain.

    The gain of the PRB above the floor f is w (log S(z1) - log S(z0)) - price,
    z = k (c x - m). With log S(z) = min(z, 0) - log1p(e), e = exp(-|z|):
    log S(z1) - log S(z0) = min(z1, 0) - min(z0, 0) + log1p((e0 - e1)/(1 + e1)),
    one log per user instead of two log1p; e0, e1 are kept for the outputs.
    The exponentials and logarithms run in loops of their own, the rest in
    branch-free loops Numba vectorizes. error_model="numpy": a divisor that
    can be 0 is always masked. `aux`, `aux2`: scratch.
    """
    n = c.size
    for u in range(n):
        f = floor_within(x[u], lo[u], hi[u])
        z0 = k[u] * (c[u] * f - m[u])
        z1 = k[u] * (c[u] * (f + 1.0) - m[u])
        e0[u] = -abs(z0)
        e1[u] = -abs(z1)
        score[u] = (z1 if z1 < 0.0 else 0.0) - (z0 if z0 < 0.0 else 0.0)
    for u in range(n):
        e0[u] = math.exp(e0[u])
    for u in range(n):
        e1[u] = math.exp(e1[u])
    for u in range(n):
        neg[u] = (e0[u] - e1[u]) / (1.0 + e1[u])
    _log1p_into(neg, aux)
    for u in range(n):
        ok = (c[u] > 0.0) & (w[u] > 0.0)
        gain = w[u] * (score[u] + aux[u]) - price
        score[u] = gain if ok else -math.inf
    _round_into(x, lo, hi, n_prb, score, 0.0, prb, cand, neg, aux2)


@njit(cache=True)
def _cell_kernel(scal, ovl, weighted, n_prb, price, mu0, c, k, m, w, lo_in, hi, target,
                 x, prb, rate, sat, served, reason, big_w, mc, ikc, lo, req, score, tmp, buf, dropped, iscr):
    """Solve one cell into the per-user outputs; returns (used, objective, overload, dual).

    Everything after `reason` is scratch of at least the cell's size (`dropped`
    bool, `iscr` int64, the rest float64); the batched solver passes views of
    one buffer sized for its largest cell, so no cell allocates.
    """
    n = c.size
    big_n = float(n_prb)
    overload = False
    _coefficients(c, k, m, w, big_w, mc, ikc)
    # Guaranteed minimums that do not fit are scaled down (and flagged).
    s_lo = 0.0
    for u in range(n):
        s_lo += lo_in[u]
    if s_lo > big_n:
        overload = True
        for u in range(n):
            lo[u] = np.floor(lo_in[u] * big_n / s_lo)
    else:
        for u in range(n):
            lo[u] = lo_in[u]
    need, too_big = _required_prbs(c, lo, hi, target, big_n, req, dropped)
    if need > big_n or too_big:
        overload = True
    dual = 0.0
    if scal == 0:
        dual = _ws_cell(big_w, mc, ikc, lo, hi, big_n, price, mu0, x, tmp, buf, score)
        # tmp, req: exp(-|z|) at the floor and at the floor + 1, for the outputs.
        _ws_round(c, k, m, w, price, n_prb, x, lo, hi, prb, tmp, req, score, iscr, buf, big_w, mc)
    elif scal == 2:
        dual = _wf_cell(mc, ikc, lo, hi, big_n, x, tmp)
        _maxmin_score(c, k, m, x, lo, hi, score)
        _round_into(x, lo, hi, n_prb, score, -math.inf, prb, iscr, buf, big_w)
    else:
        if need <= big_n:
            for u in range(n):
                if req[u] >= 0.0:
                    prb[u] = np.int64(req[u])
                    x[u] = max(lo[u], target[u] / c[u]) if (target[u] > 0.0 and c[u] > 0.0) else lo[u]
                else:
                    prb[u] = np.int64(lo[u])
                    x[u] = lo[u]
        elif ovl == 0:
            _max_served(w, lo, req, big_n, weighted, prb, dropped, score, iscr)
            for u in range(n):
                x[u] = prb[u]
        else:
            # Everyone's satisfaction down to one common level, capped at each target.
            _degrade_caps(req, lo, tmp)
            dual = _wf_cell(mc, ikc, lo, tmp, big_n, x, score)
            _maxmin_score(c, k, m, x, lo, tmp, score)
            _round_into(x, lo, tmp, n_prb, score, -math.inf, prb, iscr, buf, big_w)
    # Outputs per user.
    obj = 0.0
    worst = 1.0
    if scal == 0:
        obj = _ws_outputs(c, k, m, w, x, lo, hi, prb, tmp, req, rate, sat, buf, score, mc)
    else:
        for u in range(n):
            rate[u] = c[u] * prb[u]
            sat[u] = _sig(k[u] * (rate[u] - m[u]))
            if scal == 2 and c[u] > 0.0:
                worst = min(worst, sat[u])
    used = _served(c, target, rate, prb, dropped, served, reason)
    if scal == 0:
        obj -= price * used
    elif scal == 1:
        obj = float(used)
    else:
        obj = worst
    return used, obj, overload, dual


@njit(cache=True, error_model="numpy")
def _ws_outputs(c, k, m, w, x, lo, hi, prb, e0, e1, rate, sat, zb, eb, aux) -> float:
    """Rate and S of the whole-PRB allocation; returns sum_u w_u log S_u (users with w > 0).

    e0, e1 are exp(-|z|) at each user's floor and floor + 1 (from _ws_round):
    S = 1/(1 + e) (z >= 0) or e/(1 + e), log S = min(z, 0) - log1p(e), so no
    further exp. zb, eb, aux: scratch. Loops split as in _ws_round.
    """
    n = c.size
    for u in range(n):
        p = float(prb[u])
        lu = lo[u]
        hu = hi[u]
        f = np.floor(x[u])
        f = f if f > lu else lu
        f = f if f < hu else hu
        r = c[u] * p
        rate[u] = r
        zb[u] = k[u] * (r - m[u])
        a0 = e0[u]
        a1 = e1[u]
        eb[u] = a0 if p == f else (a1 if p == f + 1.0 else -1.0)
    for u in range(n):
        if eb[u] < 0.0:  # a PRB taken back below the floor (x overshot N): rare
            eb[u] = math.exp(-abs(zb[u]))
    for u in range(n):
        e = eb[u]
        sat[u] = (1.0 if zb[u] >= 0.0 else e) / (1.0 + e)
    _log1p_into(eb, aux)
    obj = 0.0
    for u in range(n):
        if w[u] > 0.0:
            z = zb[u]
            obj += w[u] * ((z if z < 0.0 else 0.0) - aux[u])
    return obj


@njit(cache=True)
def _served(c, target, rate, prb, dropped, served, reason) -> int:
    """Served flags and reason codes (a user is served if its rate reaches its target); returns PRBs used."""
    used = 0
    for u in range(c.size):
        used += prb[u]
        ok = rate[u] >= target[u] * (1.0 - _SERVED_RTOL)
        served[u] = ok
        if ok:
            reason[u] = _R_NONE
        elif c[u] <= 0.0:
            reason[u] = _R_NO_CHANNEL
        elif dropped[u]:
            reason[u] = _R_ADMISSION
        else:
            reason[u] = _R_CAPACITY
    return used


@njit(cache=True)
def _maxmin_score(c, k, m, x, lo, hi, score):
    # Least satisfied (at its floor) first; users without a channel never get extras.
    for u in range(c.size):
        if c[u] > 0.0:
            f = min(max(np.floor(x[u]), lo[u]), hi[u])
            score[u] = -_sig(k[u] * (c[u] * f - m[u]))
        else:
            score[u] = -math.inf


@njit(cache=True)
def _epoch_kernel(offsets, n_prb, scal, ovl, weighted, price, mu0, c, k, m, w, lo_in, hi, target,
                  x, prb, rate, sat, served, reason, cell_used, cell_obj, cell_overload, cell_dual):
    # One scratch buffer for the largest cell, reused by every cell: it stays
    # in cache, and no cell allocates.
    nmax = 0
    for i in range(offsets.size - 1):
        nmax = max(nmax, offsets[i + 1] - offsets[i])
    fs = np.empty((8, nmax))
    dropped = np.empty(nmax, dtype=np.bool_)
    iscr = np.empty(nmax, dtype=np.int64)
    for i in range(offsets.size - 1):
        a = offsets[i]
        b = offsets[i + 1]
        n = b - a
        used, obj, ovf, dual = _cell_kernel(
            scal, ovl, weighted, n_prb[i], price, mu0[i], c[a:b], k[a:b], m[a:b], w[a:b],
            lo_in[a:b], hi[a:b], target[a:b], x[a:b], prb[a:b], rate[a:b], sat[a:b], served[a:b], reason[a:b],
            fs[0, :n], fs[1, :n], fs[2, :n], fs[3, :n], fs[4, :n], fs[5, :n], fs[6, :n], fs[7, :n],
            dropped[:n], iscr[:n])
        cell_used[i] = used
        cell_obj[i] = obj
        cell_overload[i] = ovf
        cell_dual[i] = dual


# ------------------------------------------------------------------ results and Python entry points


@dataclass(frozen=True, eq=False)
class EpochResult:
    """All cells of an epoch, flat per user (same order as the input) and per cell."""

    scalarization: str
    offsets: np.ndarray
    prb: np.ndarray  # int64 per user
    rate_mbps: np.ndarray  # expected rate with those PRBs
    satisfaction: np.ndarray  # S_u(rate)
    served: np.ndarray  # bool: reached its target
    reason: np.ndarray  # int8 codes into REASONS (optimizer.overload)
    x: np.ndarray  # the continuous allocation before rounding
    prb_used: np.ndarray  # int64 per cell
    objective: np.ndarray  # per cell, of the whole-PRB allocation
    overload: np.ndarray  # bool per cell: targets did not all fit
    dual: np.ndarray  # per cell: price mu (weighted_sum), logit level (max_min, degrade_evenly), else 0
    solve_ms: float  # wall time of the one Numba call

    def cell(self, i: int) -> "CellResult":
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return CellResult(
            scalarization=self.scalarization, prb=self.prb[a:b], rate_mbps=self.rate_mbps[a:b],
            satisfaction=self.satisfaction[a:b], served=self.served[a:b], reason=self.reason[a:b], x=self.x[a:b],
            prb_used=int(self.prb_used[i]), objective=float(self.objective[i]), overload=bool(self.overload[i]),
            dual=float(self.dual[i]), solve_ms=self.solve_ms,
        )


@dataclass(frozen=True, eq=False)
class CellResult:
    """One cell's decision: per-user arrays plus the cell's totals.

    `objective` is the scalarization's objective of the whole-PRB allocation
    (weighted_sum: sum w log S - price PRBs; epsilon_constraint: PRBs used;
    max_min: the worst satisfaction among users with a channel, 1 if none).
    `objective_continuous` is the same at the continuous optimum `x` (what the
    cvxpy reference is compared with); `solve_cell` fills it, epoch slices
    leave it None.
    """

    scalarization: str
    prb: np.ndarray
    rate_mbps: np.ndarray
    satisfaction: np.ndarray
    served: np.ndarray
    reason: np.ndarray
    x: np.ndarray
    prb_used: int
    objective: float
    overload: bool
    dual: float
    solve_ms: float = 0.0
    objective_continuous: float | None = None

    @property
    def reasons(self) -> list[OverloadReason]:
        return [REASONS[int(r)] for r in self.reason]

    @property
    def unserved(self) -> dict[int, OverloadReason]:
        """Index -> reason for every user that did not reach its target."""
        return {int(i): REASONS[int(self.reason[i])] for i in np.flatnonzero(~self.served)}

    def to_allocation(self, *, event_id: str, ts: float, cell_id: str, epoch: int, prb_total: int,
                      user_ids: Sequence[str], policy: str | None = None) -> Allocation:
        """The decision as the wire event `engine.schemas.Allocation`."""
        users = [
            UserAllocation(user_id=uid, prb=int(self.prb[i]), rate_mbps=float(self.rate_mbps[i]),
                           satisfaction=float(self.satisfaction[i]), served=bool(self.served[i]),
                           reason=REASONS[int(self.reason[i])])
            for i, uid in enumerate(user_ids)
        ]
        return Allocation(event_id=event_id, ts=ts, cell_id=cell_id, epoch=epoch, policy=policy or self.scalarization,
                          prb_total=prb_total, prb_used=self.prb_used, overload=self.overload,
                          solve_ms=self.solve_ms, users=users)


def _check_options(scalarization: str, price: float, overload: str) -> tuple[int, int, float]:
    if scalarization == "pareto":
        raise ProblemError("scalarization", "'pareto' is a sweep: use optimizer.pareto.pareto_front and pick a point")
    if scalarization not in _SCAL:
        raise ProblemError("scalarization", f"{scalarization!r}; allowed: {', '.join(SCALARIZATIONS)}")
    if overload not in _OVL:
        raise ProblemError("overload", f"{overload!r}; allowed: {', '.join(OVERLOAD_POLICIES)}")
    p = float(price)
    if not (math.isfinite(p) and p >= 0.0):
        raise ProblemError("price", f"{price!r}; must be finite and >= 0")
    return _SCAL[scalarization], _OVL[overload], p


def solve_arrays(offsets: np.ndarray, n_prb: np.ndarray, c: np.ndarray, k: np.ndarray, m: np.ndarray,
                 w: np.ndarray, lo: np.ndarray, hi: np.ndarray, target_rate: np.ndarray,
                 scalarization: str = "weighted_sum", *, price: float = 0.0, overload: str = "max_served",
                 weighted: bool = False, warm_start: np.ndarray | None = None) -> EpochResult:
    """The batched solver on already-validated flat arrays (what `solve_epoch` calls).

    c: Mbps per PRB, (k, m): the curve's slope and centre (optimizer.curves.slope_centre),
    lo/hi: whole-PRB bounds, target_rate: Mbps each user must reach to count as served.
    """
    scal, ovl, p = _check_options(scalarization, price, overload)
    n = c.size
    n_cells = offsets.size - 1
    out = dict(x=np.empty(n), prb=np.empty(n, np.int64), rate=np.empty(n), sat=np.empty(n),
               served=np.empty(n, np.bool_), reason=np.empty(n, np.int8))
    cells = dict(used=np.empty(n_cells, np.int64), obj=np.empty(n_cells),
                 ovf=np.empty(n_cells, np.bool_), dual=np.empty(n_cells))
    if warm_start is None:
        mu0 = np.zeros(n_cells)
    else:
        mu0 = np.nan_to_num(np.asarray(warm_start, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if mu0.shape != (n_cells,):
            raise ProblemError("warm_start", f"needs one value per cell ({n_cells}), got shape {mu0.shape}")
    t0 = time.perf_counter()
    _epoch_kernel(offsets, n_prb, scal, ovl, bool(weighted), p, mu0, c, k, m, w, lo, hi, target_rate,
                  out["x"], out["prb"], out["rate"], out["sat"], out["served"], out["reason"],
                  cells["used"], cells["obj"], cells["ovf"], cells["dual"])
    ms = (time.perf_counter() - t0) * 1e3
    return EpochResult(scalarization=scalarization, offsets=offsets, prb=out["prb"], rate_mbps=out["rate"],
                       satisfaction=out["sat"], served=out["served"], reason=out["reason"], x=out["x"],
                       prb_used=cells["used"], objective=cells["obj"], overload=cells["ovf"], dual=cells["dual"],
                       solve_ms=ms)


def solve_epoch(epoch: EpochProblem, scalarization: str = "weighted_sum", *, price: float = 0.0,
                target: float | None = None, overload: str = "max_served", weighted: bool = False,
                warm_start: np.ndarray | None = None) -> EpochResult:
    """Solve every cell of an epoch in one Numba call.

    `warm_start`: the previous epoch's `EpochResult.dual` for the same cells
    (weighted_sum starts each cell's price search there; same answer, fewer
    iterations when the cells changed little).

    `target` is the satisfaction target s* in (0, 1) (each user's target rate is
    S_u^-1(s*)); None means each user's adequate level A. `price` is in
    log-satisfaction units per PRB (weighted_sum only).
    """
    _check_options(scalarization, price, overload)
    return solve_arrays(epoch.offsets, epoch.n_prb, epoch.c, epoch.k, epoch.m, epoch.weight, epoch.lo_prb,
                        epoch.hi_prb, epoch.target_rate(target), scalarization, price=price, overload=overload,
                        weighted=weighted, warm_start=warm_start)


def solve_cell(problem: CellProblem, scalarization: str = "weighted_sum", *, price: float = 0.0,
               target: float | None = None, overload: str = "max_served", weighted: bool = False) -> CellResult:
    """Solve one cell (the same kernel as `solve_epoch`, with one cell), plus the continuous objective."""
    if problem.has_slices:
        raise ProblemError("slice_id", "slice quotas are only in the cvxpy reference (optimizer.reference); "
                                       "the real-time solver has none")
    _check_options(scalarization, price, overload)
    res = solve_arrays(np.array([0, problem.n_users], dtype=np.int64), np.array([problem.n_prb], dtype=np.int64),
                       problem.c, problem.k, problem.m, problem.weight, problem.lo_prb, problem.hi_prb,
                       problem.target_rate(target), scalarization, price=price, overload=overload,
                       weighted=weighted).cell(0)
    return replace(res, objective_continuous=objective_value(problem, scalarization, res.x, price))
