"""Zone-of-tolerance (ZoT) satisfaction curves: NumPy reference and Numba kernels.

The curve is a logistic in the QoS value q, fixed by the user's adequate level A
and desired level D (PRODUCT.md, point 1):

    S(q) = 1 / (1 + exp(-z)),   z = k (q - m),
    m = (A + D) / 2,            k = 2 L / (D - A),   L = ln((1 - eps) / eps),

so S(A) = eps, S(m) = 1/2 and S(D) = 1 - eps exactly.

Lower-is-better metrics (latency, start-up delay, stall ratio) have A > D
numerically. The same formula holds unchanged: D - A < 0 makes k < 0, S then
decreases in q, and still S(A) = eps, S(D) = 1 - eps. Nothing in this module
special-cases the direction.

Degenerate zones: |D - A| is floored at `MIN_WIDTH` (keeping its sign; A == D
counts as higher-is-better), so k stays finite (at most ~4e300) and S becomes a
step at m without NaN. z = k (q - m) may overflow to +-inf; every function below
is written to take that: S -> 0 or 1, log S -> 0 or -inf (the exact limits), the
derivative stays finite.

Functions (all broadcast over their array arguments):
    slope_centre(a, d, eps)              -> (k, m)
    satisfaction(q, a, d, eps)           -> S(q)
    log_satisfaction(q, a, d, eps)       -> log S(q) = -log1p(exp(-z)), stable
    log_dissatisfaction(q, a, d, eps)    -> log(1 - S(q)) = -log1p(exp(z)), stable
    dlog_satisfaction_dq(q, a, d, eps)   -> d log S / dq = k (1 - S)
    inverse(s, a, d, eps)                -> q with S(q) = s, for s in (0, 1)

Each has a `*_nb` twin with the same signature backed by an `@njit` loop, and a
scalar `@njit` helper (`satisfaction_scalar` ...) for other Numba code (the
optimizer's solver). `eps` must lie in (0, 0.5): the NumPy functions and the
`*_nb` wrappers raise ValueError otherwise; the scalar helpers trust their caller.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit

ArrayLike = float | np.ndarray

DEFAULT_EPS = 0.1
# Smallest |D - A| used; 2 L / MIN_WIDTH stays finite for eps >= 1e-300-ish
# values used in practice (L = ln 9 ~ 2.2 at eps = 0.1 -> k ~ 4.4e300).
MIN_WIDTH = 1e-300


# ------------------------------------------------------------------ helpers


def _check_eps(eps: ArrayLike) -> np.ndarray:
    e = np.asarray(eps, dtype=np.float64)
    if not np.all((e > 0.0) & (e < 0.5)):
        raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
    return e


def _out(x: np.ndarray) -> ArrayLike:
    # 0-d results come back as numpy float64 scalars, the rest as arrays.
    return x[()] if x.ndim == 0 else x


def _f(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------ NumPy reference


def slope_centre(a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> tuple[ArrayLike, ArrayLike]:
    """Slope k and centre m of the logistic ZoT curve (k < 0 when A > D)."""
    a, d, e = _f(a), _f(d), _check_eps(eps)
    w = d - a
    w = np.where(np.abs(w) < MIN_WIDTH, np.copysign(MIN_WIDTH, w), w)
    big_l = np.log1p(-e) - np.log(e)
    k = 2.0 * big_l / w
    m = 0.5 * a + 0.5 * d  # not (a + d) / 2: no overflow near the float max
    return _out(np.asarray(k)), _out(np.asarray(m))


def _z(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike) -> np.ndarray:
    k, m = slope_centre(a, d, eps)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(np.asarray(k) * (_f(q) - m))


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    # log(1/(1+e^-z)) without overflow: exp only ever sees a non-positive argument.
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(z >= 0.0, -np.log1p(np.exp(-np.abs(z))), z - np.log1p(np.exp(-np.abs(z))))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        ez = np.exp(-np.abs(z))
        return np.where(z >= 0.0, 1.0 / (1.0 + ez), ez / (1.0 + ez))


def satisfaction(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    """S(q) in [0, 1]."""
    return _out(_sigmoid(_z(q, a, d, eps)))


def log_satisfaction(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    """log S(q) = -log1p(exp(-z)), exact to rounding for any z (even +-inf)."""
    return _out(_log_sigmoid(_z(q, a, d, eps)))


def log_dissatisfaction(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    """log(1 - S(q)) = log sigmoid(-z)."""
    return _out(_log_sigmoid(-_z(q, a, d, eps)))


def dlog_satisfaction_dq(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    """d log S / dq = k (1 - S(q)); negative for lower-is-better metrics."""
    k, m = slope_centre(a, d, eps)
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.asarray(np.asarray(k) * (_f(q) - m))
    return _out(np.asarray(k) * _sigmoid(-z))


def inverse(s: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    """The QoS q at which S(q) = s.

    Computed as m + logit(s) (D - A) / (2 L), i.e. without forming k, so it is
    exact for narrow zones too. s = 0 or 1 give the infinite limits; s outside
    [0, 1] (or NaN) gives NaN.
    """
    s, a, d, e = _f(s), _f(a), _f(d), _check_eps(eps)
    w = d - a
    w = np.where(np.abs(w) < MIN_WIDTH, np.copysign(MIN_WIDTH, w), w)
    big_l = np.log1p(-e) - np.log(e)
    m = 0.5 * a + 0.5 * d
    with np.errstate(divide="ignore", invalid="ignore"):
        logit = np.log(s) - np.log1p(-s)
        q = m + logit * (w / (2.0 * big_l))
    return _out(np.asarray(q))


# ------------------------------------------------------------------ Numba scalar kernels


@njit(cache=True, inline="always")
def slope_centre_scalar(a: float, d: float, eps: float) -> tuple[float, float]:
    w = d - a
    if abs(w) < MIN_WIDTH:
        w = math.copysign(MIN_WIDTH, w)
    big_l = math.log1p(-eps) - math.log(eps)
    return 2.0 * big_l / w, 0.5 * a + 0.5 * d


@njit(cache=True, inline="always")
def _log_sigmoid_scalar(z: float) -> float:
    if z >= 0.0:
        return -math.log1p(math.exp(-z))
    return z - math.log1p(math.exp(z))


@njit(cache=True, inline="always")
def _sigmoid_scalar(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@njit(cache=True)
def satisfaction_scalar(q: float, a: float, d: float, eps: float) -> float:
    k, m = slope_centre_scalar(a, d, eps)
    return _sigmoid_scalar(k * (q - m))


@njit(cache=True)
def log_satisfaction_scalar(q: float, a: float, d: float, eps: float) -> float:
    k, m = slope_centre_scalar(a, d, eps)
    return _log_sigmoid_scalar(k * (q - m))


@njit(cache=True)
def log_dissatisfaction_scalar(q: float, a: float, d: float, eps: float) -> float:
    k, m = slope_centre_scalar(a, d, eps)
    return _log_sigmoid_scalar(-(k * (q - m)))


@njit(cache=True)
def dlog_satisfaction_scalar(q: float, a: float, d: float, eps: float) -> float:
    k, m = slope_centre_scalar(a, d, eps)
    return k * _sigmoid_scalar(-(k * (q - m)))


@njit(cache=True)
def inverse_scalar(s: float, a: float, d: float, eps: float) -> float:
    w = d - a
    if abs(w) < MIN_WIDTH:
        w = math.copysign(MIN_WIDTH, w)
    big_l = math.log1p(-eps) - math.log(eps)
    m = 0.5 * a + 0.5 * d
    if not (s >= 0.0 and s <= 1.0):
        return math.nan
    if s == 0.0:
        logit = -math.inf
    elif s == 1.0:
        logit = math.inf
    else:
        logit = math.log(s) - math.log1p(-s)
    return m + logit * (w / (2.0 * big_l))


# ------------------------------------------------------------------ Numba array kernels (1-D, flat)


@njit(cache=True)
def _satisfaction_1d(q, a, d, e, out):
    for i in range(out.size):
        out[i] = satisfaction_scalar(q[i], a[i], d[i], e[i])


@njit(cache=True)
def _log_satisfaction_1d(q, a, d, e, out):
    for i in range(out.size):
        out[i] = log_satisfaction_scalar(q[i], a[i], d[i], e[i])


@njit(cache=True)
def _log_dissatisfaction_1d(q, a, d, e, out):
    for i in range(out.size):
        out[i] = log_dissatisfaction_scalar(q[i], a[i], d[i], e[i])


@njit(cache=True)
def _dlog_1d(q, a, d, e, out):
    for i in range(out.size):
        out[i] = dlog_satisfaction_scalar(q[i], a[i], d[i], e[i])


@njit(cache=True)
def _inverse_1d(s, a, d, e, out):
    for i in range(out.size):
        out[i] = inverse_scalar(s[i], a[i], d[i], e[i])


@njit(cache=True)
def _slope_centre_1d(a, d, e, k_out, m_out):
    for i in range(k_out.size):
        k_out[i], m_out[i] = slope_centre_scalar(a[i], d[i], e[i])


def _run(kernel: Callable, *args: ArrayLike) -> ArrayLike:
    _check_eps(args[-1])
    arrs = np.broadcast_arrays(*[_f(x) for x in args])
    shape = arrs[0].shape
    flat = [np.ascontiguousarray(x).reshape(-1) for x in arrs]
    out = np.empty(flat[0].size, dtype=np.float64)
    kernel(*flat, out)
    return _out(out.reshape(shape))


# ------------------------------------------------------------------ Numba twins (same signatures)


def slope_centre_nb(a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> tuple[ArrayLike, ArrayLike]:
    _check_eps(eps)
    arrs = np.broadcast_arrays(_f(a), _f(d), _f(eps))
    shape = arrs[0].shape
    flat = [np.ascontiguousarray(x).reshape(-1) for x in arrs]
    k = np.empty(flat[0].size)
    m = np.empty(flat[0].size)
    _slope_centre_1d(*flat, k, m)
    return _out(k.reshape(shape)), _out(m.reshape(shape))


def satisfaction_nb(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    return _run(_satisfaction_1d, q, a, d, eps)


def log_satisfaction_nb(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    return _run(_log_satisfaction_1d, q, a, d, eps)


def log_dissatisfaction_nb(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    return _run(_log_dissatisfaction_1d, q, a, d, eps)


def dlog_satisfaction_dq_nb(q: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    return _run(_dlog_1d, q, a, d, eps)


def inverse_nb(s: ArrayLike, a: ArrayLike, d: ArrayLike, eps: ArrayLike = DEFAULT_EPS) -> ArrayLike:
    return _run(_inverse_1d, s, a, d, eps)


__all__ = [
    "DEFAULT_EPS",
    "MIN_WIDTH",
    "slope_centre",
    "satisfaction",
    "log_satisfaction",
    "log_dissatisfaction",
    "dlog_satisfaction_dq",
    "inverse",
    "slope_centre_nb",
    "satisfaction_nb",
    "log_satisfaction_nb",
    "log_dissatisfaction_nb",
    "dlog_satisfaction_dq_nb",
    "inverse_nb",
    "slope_centre_scalar",
    "satisfaction_scalar",
    "log_satisfaction_scalar",
    "log_dissatisfaction_scalar",
    "dlog_satisfaction_scalar",
    "inverse_scalar",
]
