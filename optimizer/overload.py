"""What the allocator does when users' targets do not fit in the cell: explicit policies.

A cell is *overloaded* when the whole PRBs its users need to reach their targets
(satisfaction target s*, i.e. rate S^-1(s*), or the adequate level A) exceed its
PRB count N. Users that cannot reach their target at any load are set apart
first, with a reason, and never take part in the policy:

    no_channel  se = 0 and a positive target rate;
    capacity    the target needs more PRBs than the user's max share allows
                (also the reason for users a degraded or saturated cell leaves
                short of target).

Policies (config `overload.policy`, names exact):

max_served      Serve as many users as possible at their target: admit them
                cheapest first (fewest PRBs beyond their guaranteed minimum),
                which maximizes the number served; with `weighted`, order by
                PRBs per unit weight (greedy for the weighted count). Users not
                admitted get reason `admission`; the PRBs left after admission
                go to them in the same order as partial service (they stay
                unserved, but closer to target).
degrade_evenly  Lower everyone to one common satisfaction level, capped at each
                user's own target: water-filling on logit S with each user's
                ceiling at its target PRBs. Nobody is dropped; users left below
                target get reason `capacity`.

Never an exception, never a NaN: both policies always return an allocation
within N. The kernels here are called per cell by `optimizer.solver`;
`required_prbs` and `explain` are the Python-side helpers.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numba import njit

from engine.schemas import OverloadReason
from optimizer.rounding import argsort_by_key

OVERLOAD_POLICIES: tuple[str, ...] = ("max_served", "degrade_evenly")
_OVL: dict[str, int] = {name: i for i, name in enumerate(OVERLOAD_POLICIES)}

# Dense reason codes (index in the enum, like engine.schemas.SIGNAL_CODES).
REASONS: tuple[OverloadReason, ...] = tuple(OverloadReason)
REASON_CODES: dict[OverloadReason, int] = {r: i for i, r in enumerate(REASONS)}


@njit(cache=True)
def _required_prbs(c, lo, hi, target, n_prb, req, dropped) -> tuple[float, bool]:
    """Whole PRBs each user needs for its target into `req` (-1: unreachable here).

    Returns (the cell's total need, unreachable users counted at their minimum;
    whether some user with a channel needs more than the whole cell, which is
    an overload too). ceil(T/c (1 - 1e-12)) so that a target hit exactly by n
    PRBs needs n, not n + 1.
    """
    need = 0.0
    too_big = False
    for u in range(c.size):
        dropped[u] = False
        if target[u] <= 0.0:
            req[u] = lo[u]
        elif c[u] > 0.0:
            r = max(np.ceil(target[u] / c[u] * (1.0 - 1e-12)), lo[u])
            if r > n_prb and hi[u] >= n_prb:  # not held back by its own share: the cell is too small
                too_big = True
            req[u] = r if r <= hi[u] else -1.0
        else:
            req[u] = -1.0
        need += req[u] if req[u] >= 0.0 else lo[u]
    return need, too_big


@njit(cache=True)
def _max_served(w, lo, req, big_n, weighted, prb, dropped, key, order) -> None:
    """Admit users at their target cheapest first; leftover PRBs to the next in line.

    `key` (float64) and `order` (int64) are scratch of at least len(w).
    """
    n = w.size
    budget = big_n
    for u in range(n):
        prb[u] = np.int64(lo[u])
        budget -= lo[u]
        if req[u] >= 0.0:
            cost = req[u] - lo[u]
            if weighted:
                key[u] = cost / w[u] if w[u] > 0.0 else math.inf
            else:
                key[u] = cost
        else:
            key[u] = math.inf
    order = order[:n]
    argsort_by_key(key[:n], order)  # ties by index
    for j in range(n):
        u = order[j]
        if req[u] < 0.0:
            continue
        cost = req[u] - lo[u]
        if cost <= budget:
            prb[u] = np.int64(req[u])
            budget -= cost
        else:
            dropped[u] = True
    # Budget only shrank since each dropped user was refused, so budget < its
    # cost: partial service raises satisfaction without serving it.
    for j in range(n):
        u = order[j]
        if budget < 1.0:
            break
        if dropped[u]:
            give = min(budget, req[u] - prb[u])
            if give > 0.0:
                prb[u] += np.int64(give)
                budget -= give


@njit(cache=True)
def _degrade_caps(req, lo, cap) -> None:
    """Per-user ceiling for degrade_evenly: its target PRBs (its minimum if unreachable)."""
    for u in range(req.size):
        cap[u] = req[u] if req[u] >= 0.0 else lo[u]


def required_prbs(c: np.ndarray, lo: np.ndarray, hi: np.ndarray, target_rate: np.ndarray, n_prb: int) -> tuple[np.ndarray, float, bool]:
    """(whole PRBs per user for its target, -1 if unreachable; total need of the cell;
    whether a user needs more than the whole cell)."""
    c, lo, hi, t = (np.ascontiguousarray(v, dtype=np.float64) for v in (c, lo, hi, target_rate))
    req = np.empty(c.size)
    need, too_big = _required_prbs(c, lo, hi, t, float(n_prb), req, np.empty(c.size, dtype=np.bool_))
    return req, float(need), bool(too_big)


def explain(served: np.ndarray, reason: np.ndarray, user_ids: Sequence[str] | None = None) -> dict[str | int, OverloadReason]:
    """Users that did not reach their target -> why (keys are user ids if given, else indices)."""
    out: dict[str | int, OverloadReason] = {}
    for i in np.flatnonzero(~np.asarray(served, dtype=bool)):
        out[user_ids[i] if user_ids is not None else int(i)] = REASONS[int(reason[i])]
    return out
