"""The baselines over a whole epoch at once: every cell from flat arrays, in Numba.

Same decisions as the per-cell baselines of `optimizer.baselines` (the tests
compare them cell by cell), laid out like the batched solver: users sorted by
cell, `offsets[i]:offsets[i+1]` are cell i's users, `c` is each user's Mbps per
PRB. The simulator runs these for its 10,000-user, 57-cell scenarios, where one
Python call per cell would cost more than the whole radio model.

Universal fit needs no kernel of its own: it is the batched solver's
epsilon-constraint with one common target rate per application
(`optimizer.solver.solve_arrays`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from optimizer.rounding import _round_cell


@njit(cache=True)
def _equal_share(offsets, n_prb, out):
    for cell in range(n_prb.size):
        a, b = offsets[cell], offsets[cell + 1]
        n = b - a
        if n == 0:
            continue
        q = n_prb[cell] // n
        r = n_prb[cell] - q * n
        for j in range(n):
            out[a + j] = q + (1 if j < r else 0)


def equal_share_epoch(offsets: np.ndarray, n_prb: np.ndarray) -> np.ndarray:
    """floor(N/n) PRBs each, the remainder one each to a cell's first users."""
    out = np.zeros(int(offsets[-1]), dtype=np.int64)
    _equal_share(np.asarray(offsets, np.int64), np.asarray(n_prb, np.int64), out)
    return out


@njit(cache=True)
def _max_rate(offsets, n_prb, c, out):
    for cell in range(n_prb.size):
        a, b = offsets[cell], offsets[cell + 1]
        best = -1
        for u in range(a, b):
            if c[u] > 0 and (best < 0 or c[u] > c[best]):
                best = u
        if best >= 0:
            out[best] = n_prb[cell]


def max_rate_epoch(offsets: np.ndarray, n_prb: np.ndarray, c: np.ndarray) -> np.ndarray:
    """All of a cell's PRBs to its user with the best channel (the first on ties)."""
    out = np.zeros(int(offsets[-1]), dtype=np.int64)
    _max_rate(np.asarray(offsets, np.int64), np.asarray(n_prb, np.int64), np.asarray(c, np.float64), out)
    return out


@njit(cache=True)
def _proportional_fair(offsets, n_prb, c, avg, window, out, x_out):
    b = 1.0 / window
    for cell in range(n_prb.size):
        a, e = offsets[cell], offsets[cell + 1]
        n = e - a
        if n == 0:
            continue
        x = np.zeros(n)
        h = np.empty(n)
        m = 0
        for j in range(n):
            if c[a + j] > 0:
                h[m] = (1.0 - b) * avg[a + j] / (b * c[a + j])
                m += 1
        if m > 0 and n_prb[cell] > 0:
            hs = np.sort(h[:m])
            csum = 0.0
            level = 0.0
            for j in range(m):
                csum += hs[j]
                lj = (n_prb[cell] + csum) / (j + 1)
                if lj > hs[j]:  # the j+1 lowest sit below this water level
                    level = lj
            for j in range(n):
                if c[a + j] > 0:
                    x[j] = max(0.0, level - (1.0 - b) * avg[a + j] / (b * c[a + j]))
        lo = np.zeros(n)
        hi = np.full(n, float(n_prb[cell]))
        score = np.empty(n)
        for j in range(n):
            score[j] = x[j] - np.floor(x[j])
        _round_cell(x, lo, hi, n_prb[cell], score, -math.inf, out[a:e])
        x_out[a:e] = x


def proportional_fair_epoch(offsets: np.ndarray, n_prb: np.ndarray, c: np.ndarray, avg_rate: np.ndarray,
                            window: int) -> tuple[np.ndarray, np.ndarray]:
    """Gradient proportional fair: water-filling on sum log((1-b) T + b c x), b = 1/window.

    `avg_rate` is each user's exponentially averaged rate T so far (Mbps); the
    caller updates it with the rates delivered: T <- (1 - b) T + b r.
    Returns whole PRBs and the continuous water-filling allocation they round.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 epoch, got {window}")
    out = np.zeros(int(offsets[-1]), dtype=np.int64)
    x = np.zeros(int(offsets[-1]))
    _proportional_fair(np.asarray(offsets, np.int64), np.asarray(n_prb, np.int64), np.asarray(c, np.float64),
                       np.asarray(avg_rate, np.float64), float(window), out, x)
    return out, x
