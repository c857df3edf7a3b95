"""Numba kernels of the ZoT posterior update (see operators/satisfaction.py and
docs/satisfaction.md for the model). Everything here is scalar code over flat
arrays; the NumPy reference in satisfaction.py computes the same quantities in
the same order, and the tests hold the two to 1e-9.

Parametrization per (user, app) slot: theta = (alpha, beta) = (log A, log W),
A the adequate rate and W = D - A the zone width, both in Mbps; a Gaussian
N(mu, Sigma) over theta, so A > 0 and D > A always hold.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import njit, prange

# Numba's OpenMP threads (update_kernel_by_slot) otherwise spin after each parallel
# region: ~0.4 of a core burned in a Kafka worker, taken from the broker's share
# of a small machine. Set before Numba loads its OpenMP layer (the first parallel
# call); an operator's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

VAR_FLOOR = 1e-10  # keeps Sigma positive definite after many sharp updates
# A slot's posterior is never allowed to be less certain than its population prior
# (trace of Sigma at most the prior's), and its correlation stays inside +-MAX_CORR.
# The likelihood is a mixture, not log-concave: on a wide posterior the quadrature
# moments can grow step after step (seen in the stream benchmark: a variance of 379
# after 57 signals, prior 0.25); no evidence should ever leave us knowing less
# about a user than knowing nothing.
MAX_CORR = 0.999


@njit(cache=True, inline="always")
def sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@njit(cache=True, inline="always")
def sat_aw(q: float, a: float, w: float, two_l: float) -> float:
    """S(q) for a zone [a, a + w] in rate (w > 0): logistic with k = 2L/w, m = a + w/2."""
    return sigmoid(two_l * (q - a - 0.5 * w) / w)


@njit(cache=True, inline="always")
def likelihood(s: float, lin_a: float, lin_b: float, rate_w: float, cut_lo: float, cut_hi: float,
               tau: float) -> float:
    """L_c(S) of operators.satisfaction.SignalModel (linear part, plus the ordered logit
    for ratings), given category c's entries of its tables."""
    out = lin_a + lin_b * s
    if rate_w > 0.0:
        out += rate_w * (sigmoid(tau * (cut_hi - s)) - sigmoid(tau * (cut_lo - s)))
    return out


@njit(cache=True, inline="always")
def chol2(saa: float, sab: float, sbb: float) -> tuple[float, float, float]:
    l11 = math.sqrt(saa)
    l21 = sab / l11
    r = sbb - l21 * l21
    l22 = math.sqrt(r if r > VAR_FLOOR else VAR_FLOOR)
    return l11, l21, l22


@njit(cache=True)
def forget_step(mu: np.ndarray, cov: np.ndarray, r: int, pmu: np.ndarray, pcov: np.ndarray, g: int, lam: float) -> None:
    """AR(1) drift toward the slot's prior: mu <- mu0 + rho (mu - mu0), Sigma <- lam Sigma + (1 - lam) Sigma0."""
    if lam >= 1.0:
        return
    rho = math.sqrt(lam)
    for j in range(2):
        mu[r, j] = pmu[g, j] + rho * (mu[r, j] - pmu[g, j])
    for j in range(2):
        for k in range(2):
            cov[r, j, k] = lam * cov[r, j, k] + (1.0 - lam) * pcov[g, j, k]


@njit(cache=True)
def cap_to_prior(cov: np.ndarray, r: int, pcov: np.ndarray, g: int) -> None:
    """Shrink Sigma_r toward no more spread than the prior (see MAX_CORR's comment)."""
    tr = cov[r, 0, 0] + cov[r, 1, 1]
    tr0 = pcov[g, 0, 0] + pcov[g, 1, 1]
    if tr > tr0:
        f = tr0 / tr
        for j in range(2):
            for k in range(2):
                cov[r, j, k] *= f
    lim = MAX_CORR * math.sqrt(cov[r, 0, 0] * cov[r, 1, 1])
    if cov[r, 0, 1] > lim:
        cov[r, 0, 1] = lim
        cov[r, 1, 0] = lim
    elif cov[r, 0, 1] < -lim:
        cov[r, 0, 1] = -lim
        cov[r, 1, 0] = -lim


@njit(cache=True)
def adf_step(
    mu: np.ndarray,
    cov: np.ndarray,
    r: int,
    q: float,
    c: int,
    lin_a: np.ndarray,
    lin_b: np.ndarray,
    rate_w: np.ndarray,
    cut_lo: np.ndarray,
    cut_hi: np.ndarray,
    tau: float,
    two_l: float,
    nodes: np.ndarray,
    weights: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """Assumed-density filtering: replace N(mu, Sigma) by the Gaussian with the
    mean and covariance of N(mu, Sigma) * L_c(S(q; theta)),
    the moments taken by a product Gauss-Hermite rule on Sigma's Cholesky axes.
    `scratch` is a (4, n*n) work array (weighted likelihood, alpha, beta per node;
    the second axis' exponentials)."""
    ma = mu[r, 0]
    mb = mu[r, 1]
    l11, l21, l22 = chol2(cov[r, 0, 0], cov[r, 0, 1], cov[r, 1, 1])
    n = nodes.size
    # Category c's table entries, read once: indexing the tables inside the node loop
    # cost as much as the rest of it. Both: 4.1 -> 2.0 us an event at n = 7.
    la, lb, rw, cl, ch = lin_a[c], lin_b[c], rate_w[c], cut_lo[c], cut_hi[c]
    # W at node (i, j) is exp(mb + l21 x_i) * exp(l22 x_j): 2n exponentials, not n*n.
    ew = scratch[3]
    for j in range(n):
        ew[j] = math.exp(l22 * nodes[j])
    z = 0.0
    sa = 0.0
    sb = 0.0
    for i in range(n):
        ta = ma + l11 * nodes[i]
        aa = math.exp(ta)
        tb_i = mb + l21 * nodes[i]
        w_i = math.exp(tb_i)
        for j in range(n):
            tb = tb_i + l22 * nodes[j]
            s = sat_aw(q, aa, w_i * ew[j], two_l)
            lik = weights[i] * weights[j] * likelihood(s, la, lb, rw, cl, ch, tau)
            idx = i * n + j
            scratch[0, idx] = lik
            scratch[1, idx] = ta
            scratch[2, idx] = tb
            z += lik
            sa += lik * ta
            sb += lik * tb
    na = sa / z
    nb = sb / z
    caa = 0.0
    cab = 0.0
    cbb = 0.0
    for idx in range(n * n):
        lik = scratch[0, idx]
        da = scratch[1, idx] - na
        db = scratch[2, idx] - nb
        caa += lik * da * da
        cab += lik * da * db
        cbb += lik * db * db
    mu[r, 0] = na
    mu[r, 1] = nb
    caa /= z
    cab /= z
    cbb /= z
    cov[r, 0, 0] = caa if caa > VAR_FLOOR else VAR_FLOOR
    cov[r, 0, 1] = cab
    cov[r, 1, 0] = cab
    cov[r, 1, 1] = cbb if cbb > VAR_FLOOR else VAR_FLOOR


# nogil: a Kafka worker runs it in its operators thread, and its event loop's thread
# reads the sockets and parses fetched records meanwhile.
@njit(cache=True, nogil=True)
def update_kernel(
    rows: np.ndarray,
    cats: np.ndarray,
    q: np.ndarray,
    mu: np.ndarray,
    cov: np.ndarray,
    n_signals: np.ndarray,
    group: np.ndarray,
    prior_mu: np.ndarray,
    prior_cov: np.ndarray,
    lin_a: np.ndarray,
    lin_b: np.ndarray,
    rate_w: np.ndarray,
    cut_lo: np.ndarray,
    cut_hi: np.ndarray,
    tau: float,
    two_l: float,
    lam: float,
    nodes: np.ndarray,
    weights: np.ndarray,
) -> None:
    """Apply validated events in order, in place: forget, then ADF, per event."""
    scratch = np.empty((4, nodes.size * nodes.size))
    for i in range(rows.size):
        r = rows[i]
        c = cats[i]
        forget_step(mu, cov, r, prior_mu, prior_cov, group[r], lam)
        adf_step(mu, cov, r, q[i], c, lin_a, lin_b, rate_w, cut_lo, cut_hi, tau, two_l, nodes, weights, scratch)
        cap_to_prior(cov, r, prior_cov, group[r])
        n_signals[r] += 1


# Events of different slots are independent; a slot's events must stay in order. A
# large batch is grouped by slot (a stable sort keeps each slot's order) and the
# groups are spread over Numba's threads: the same arithmetic per slot in the same
# order, so the same bits as update_kernel (tests check), ~1.8x faster on two idle
# cores. A Kafka worker holds the GIL ~1 core's worth, so the other core is mostly free.
@njit(cache=True, nogil=True, parallel=True)
def update_kernel_by_slot(
    rows: np.ndarray,
    cats: np.ndarray,
    q: np.ndarray,
    mu: np.ndarray,
    cov: np.ndarray,
    n_signals: np.ndarray,
    group: np.ndarray,
    prior_mu: np.ndarray,
    prior_cov: np.ndarray,
    lin_a: np.ndarray,
    lin_b: np.ndarray,
    rate_w: np.ndarray,
    cut_lo: np.ndarray,
    cut_hi: np.ndarray,
    tau: float,
    two_l: float,
    lam: float,
    nodes: np.ndarray,
    weights: np.ndarray,
) -> None:
    """update_kernel, slots in parallel (each slot's events in order)."""
    order = np.argsort(rows, kind="mergesort")
    n = rows.size
    starts = np.empty(n + 1, dtype=np.int64)
    n_groups = 0
    for k in range(n):
        if k == 0 or rows[order[k]] != rows[order[k - 1]]:
            starts[n_groups] = k
            n_groups += 1
    starts[n_groups] = n
    for t in prange(n_groups):
        scratch = np.empty((4, nodes.size * nodes.size))
        for k in range(starts[t], starts[t + 1]):
            i = order[k]
            r = rows[i]
            forget_step(mu, cov, r, prior_mu, prior_cov, group[r], lam)
            adf_step(mu, cov, r, q[i], cats[i], lin_a, lin_b, rate_w, cut_lo, cut_hi, tau, two_l, nodes, weights,
                     scratch)
            cap_to_prior(cov, r, prior_cov, group[r])
            n_signals[r] += 1
