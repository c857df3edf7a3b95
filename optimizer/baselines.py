"""Baseline schedulers zot is compared against, on the same `CellProblem`.

universal_fit      today's network: every user gets the same target rate, a
                   percentile (config `baselines.universal_fit_percentile`) of
                   the population's desired levels D, whatever it needs itself.
                   Least whole PRBs per user for that rate; if the cell cannot
                   carry it, the same overload policies as zot decide.
equal_share        floor(N / n) PRBs each, the remainder one each to the first
                   users; channel- and demand-blind.
proportional_fair  the gradient PF scheduler with an averaging window of W
                   epochs: maximize sum_u log((1 - b) T_u + b c_u x_u), b = 1/W,
                   given each user's average rate T_u so far. Water-filling
                   x_u = max(0, L - (1 - b) T_u / (b c_u)); new users (T = 0)
                   start from an equal split. The averages are explicit state
                   (`PFState`) passed in and returned: T_u <- (1 - b) T_u + b r_u.
max_rate           all PRBs to the user with the best channel (max C/I).

Each returns a `CellResult` measured the same way as zot's: rate, satisfaction,
served against each user's own target (satisfaction target s* or adequate
level), and the weighted log-satisfaction as `objective`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from engine.schemas import OverloadReason
from optimizer.curves import log_satisfaction, satisfaction
from optimizer.overload import REASON_CODES
from optimizer.problem import CellProblem, ProblemError
from optimizer.rounding import round_prbs_numpy
from optimizer.solver import CellResult, solve_arrays

BASELINES: tuple[str, ...] = ("universal_fit", "equal_share", "proportional_fair", "max_rate")


def measure(prob: CellProblem, prb: np.ndarray, name: str, target: float | None = None, x: np.ndarray | None = None,
            overload: bool | None = None, dropped: np.ndarray | None = None) -> CellResult:
    """A `CellResult` for any whole-PRB allocation, judged against each user's own target."""
    prb = np.asarray(prb, dtype=np.int64)
    if prb.sum() > prob.n_prb or (prb < 0).any():
        raise ProblemError("prb", "allocation exceeds the cell or is negative")  # a bug in the caller, not input
    rate = prob.c * prb
    n = prob.n_users
    sat = np.asarray(satisfaction(rate, prob.adequate, prob.desired, prob.eps), dtype=np.float64).reshape(n)
    ls = np.asarray(log_satisfaction(rate, prob.adequate, prob.desired, prob.eps), dtype=np.float64).reshape(n)
    tr = prob.target_rate(target)
    served = rate >= tr * (1.0 - 1e-9)
    reason = np.full(n, REASON_CODES[OverloadReason.CAPACITY], dtype=np.int8)
    reason[served] = REASON_CODES[OverloadReason.NONE]
    reason[~served & (prob.c <= 0)] = REASON_CODES[OverloadReason.NO_CHANNEL]
    if dropped is not None:
        reason[~served & (prob.c > 0) & dropped] = REASON_CODES[OverloadReason.ADMISSION]
    if overload is None:
        need = np.where(prob.c > 0, np.ceil(tr / np.where(prob.c > 0, prob.c, 1.0) * (1 - 1e-12)), 0.0)
        overload = bool(need.sum() > prob.n_prb)
    return CellResult(
        scalarization=name, prb=prb, rate_mbps=rate, satisfaction=sat, served=served, reason=reason,
        x=prb.astype(np.float64) if x is None else x, prb_used=int(prb.sum()),
        objective=float(np.sum(np.where(prob.weight > 0, prob.weight * ls, 0.0))), overload=overload, dual=0.0,
        objective_continuous=None,
    )


def universal_fit(prob: CellProblem, percentile: float = 90.0, *, population_desired: np.ndarray | None = None,
                  target: float | None = None, overload: str = "max_served") -> CellResult:
    """Every user gets the same rate: `percentile` of the population's D (this cell's users if not given)."""
    if not (0.0 <= float(percentile) <= 100.0):
        raise ProblemError("percentile", f"{percentile!r}; must be in [0, 100]")
    pop = prob.desired if population_desired is None else np.asarray(population_desired, dtype=np.float64)
    if pop.size and not np.isfinite(pop).all():
        raise ProblemError("population_desired", "NaN and inf are not allowed")
    level = float(np.percentile(pop, percentile)) if pop.size else 0.0
    res = solve_arrays(np.array([0, prob.n_users], dtype=np.int64), np.array([prob.n_prb], dtype=np.int64),
                       prob.c, prob.k, prob.m, prob.weight, prob.lo_prb, prob.hi_prb, np.full(prob.n_users, level),
                       "epsilon_constraint", overload=overload).cell(0)
    dropped = res.reason == REASON_CODES[OverloadReason.ADMISSION]
    return measure(prob, res.prb, "universal_fit", target, overload=res.overload, dropped=dropped)


def equal_share(prob: CellProblem, *, target: float | None = None) -> CellResult:
    n = prob.n_users
    prb = np.zeros(n, dtype=np.int64)
    if n:
        prb[:] = prob.n_prb // n
        prb[: prob.n_prb - int(prb.sum())] += 1
    return measure(prob, prb, "equal_share", target)


def max_rate(prob: CellProblem, *, target: float | None = None) -> CellResult:
    prb = np.zeros(prob.n_users, dtype=np.int64)
    if prob.n_users and prob.c.max() > 0:
        prb[int(np.argmax(prob.c))] = prob.n_prb
    return measure(prob, prb, "max_rate", target)


@dataclass(frozen=True)
class PFState:
    """Proportional-fair averages: each user's exponentially averaged rate (Mbps)."""

    avg_rate: dict[str, float] = field(default_factory=dict)

    def lookup(self, user_ids: Sequence[str]) -> np.ndarray:
        return np.array([self.avg_rate.get(u, 0.0) for u in user_ids], dtype=np.float64)

    def updated(self, user_ids: Sequence[str], rate: np.ndarray, window: int) -> "PFState":
        """New state after an epoch; users not in this cell this epoch keep their average."""
        b = 1.0 / window
        new = dict(self.avg_rate)
        for u, t, r in zip(user_ids, self.lookup(user_ids), rate):
            new[u] = (1.0 - b) * t + b * float(r)
        return PFState(new)


def proportional_fair(prob: CellProblem, state: PFState, user_ids: Sequence[str], window: int = 20, *,
                      target: float | None = None) -> tuple[CellResult, PFState]:
    """One epoch of PF: the allocation and the state for the next epoch (the input state is not changed)."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ProblemError("window", f"{window!r}; must be a whole number of epochs >= 1")
    if len(user_ids) != prob.n_users:
        raise ProblemError("user_ids", f"has {len(user_ids)} entries, expected {prob.n_users}")
    b = 1.0 / window
    avg = state.lookup(user_ids)
    act = prob.c > 0
    x = np.zeros(prob.n_users)
    if act.any() and prob.n_prb > 0:
        # Water level L with sum max(0, L - h_u) = N, h_u = (1 - b) T_u / (b c_u).
        h = np.sort((1.0 - b) * avg[act] / (b * prob.c[act]))
        csum = np.cumsum(h)
        j = np.arange(1, h.size + 1)
        level_j = (prob.n_prb + csum) / j  # level if the j lowest are filled
        ok = level_j > h  # filled users must sit below the level
        jj = int(np.flatnonzero(ok)[-1]) + 1
        level = (prob.n_prb + csum[jj - 1]) / jj
        x[act] = np.maximum(0.0, level - (1.0 - b) * avg[act] / (b * prob.c[act]))
    prb = round_prbs_numpy(x, np.zeros(prob.n_users), np.full(prob.n_users, float(prob.n_prb)), prob.n_prb)
    res = measure(prob, prb, "proportional_fair", target, x=x)
    return res, state.updated(user_ids, res.rate_mbps, window)
