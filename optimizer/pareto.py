"""Pareto fronts: satisfaction against resources used, by sweeping the scalarization.

Two sweeps, each a family of single-cell solves:

price   weighted_sum at prices from 0 up to the largest marginal utility in the
        cell (beyond it nobody is worth a PRB): a high price saves PRBs, a low
        price buys satisfaction.
target  epsilon_constraint at satisfaction targets s* in (0, 1): the least
        PRBs for every user to reach s* (overloaded points follow the overload
        policy, so they stay feasible and are marked).

Every point is measured on the whole-PRB allocation: PRBs used, total and mean
satisfaction, the fraction of users at their target, the weighted log-
satisfaction and the worst satisfaction. `pareto_front` keeps the points no
other point beats on both (fewer PRBs, more of the chosen metric) and returns
them as plain data (`ParetoFront.as_dict()`), sorted by PRBs used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from optimizer.problem import CellProblem, ProblemError
from optimizer.solver import CellResult, solve_cell

METRICS: tuple[str, ...] = ("mean_satisfaction", "total_satisfaction", "fraction_at_target", "weighted_log_satisfaction", "min_satisfaction")
SWEEPS: tuple[str, ...] = ("price", "target", "both")


@dataclass(frozen=True)
class ParetoPoint:
    knob: str  # "price" or "target"
    value: float  # the price or the satisfaction target of this solve
    prb_used: int
    total_satisfaction: float
    mean_satisfaction: float
    fraction_at_target: float
    weighted_log_satisfaction: float
    min_satisfaction: float
    overload: bool


@dataclass(frozen=True)
class ParetoFront:
    metric: str
    points: list[ParetoPoint]  # every solve of the sweep
    front: list[ParetoPoint]  # the non-dominated ones, fewest PRBs first

    def as_dict(self) -> dict:
        return {"metric": self.metric, "points": [asdict(p) for p in self.points], "front": [asdict(p) for p in self.front]}


def _point(prob: CellProblem, res: CellResult, knob: str, value: float, served_target: np.ndarray) -> ParetoPoint:
    n = prob.n_users
    sat = res.satisfaction
    ls = np.log(np.maximum(sat, 1e-300))
    at_target = res.rate_mbps >= served_target * (1.0 - 1e-9)
    return ParetoPoint(
        knob=knob, value=float(value), prb_used=int(res.prb_used),
        total_satisfaction=float(sat.sum()), mean_satisfaction=float(sat.mean()) if n else 1.0,
        fraction_at_target=float(at_target.mean()) if n else 1.0,
        weighted_log_satisfaction=float(np.sum(prob.weight * ls)),
        min_satisfaction=float(sat[prob.c > 0].min()) if (prob.c > 0).any() else 1.0,
        overload=bool(res.overload),
    )


def non_dominated(points: list[ParetoPoint], metric: str) -> list[ParetoPoint]:
    """Points not beaten on both axes (fewer-or-equal PRBs and higher-or-equal metric, one strictly)."""
    if metric not in METRICS:
        raise ProblemError("metric", f"{metric!r}; allowed: {', '.join(METRICS)}")
    order = sorted(points, key=lambda p: (p.prb_used, -getattr(p, metric)))
    front: list[ParetoPoint] = []
    best = -np.inf
    for p in order:
        v = getattr(p, metric)
        if v > best:
            if front and front[-1].prb_used == p.prb_used:
                continue  # same PRBs, already have the better one
            front.append(p)
            best = v
    return front


def pareto_front(prob: CellProblem, *, sweep: str = "both", n_points: int = 21, metric: str = "mean_satisfaction",
                 target: float | None = None, overload: str = "max_served", weighted: bool = False) -> ParetoFront:
    """Sweep the scalarization on one cell and keep the non-dominated points.

    `target` defines "at target" for `fraction_at_target` (satisfaction target
    s*, or each user's adequate level if None).
    """
    if sweep not in SWEEPS:
        raise ProblemError("sweep", f"{sweep!r}; allowed: {', '.join(SWEEPS)}")
    if metric not in METRICS:
        raise ProblemError("metric", f"{metric!r}; allowed: {', '.join(METRICS)}")
    if not isinstance(n_points, int) or n_points < 2:
        raise ProblemError("n_points", f"{n_points!r}; must be an integer >= 2")
    served_target = prob.target_rate(target)
    points: list[ParetoPoint] = []
    if sweep in ("price", "both"):
        # Marginal utility of a user's first PRB is at most W = w k c: no price above max W buys anything.
        w_max = float(np.max(prob.weight * prob.k * prob.c, initial=0.0))
        prices = [0.0] + (list(np.geomspace(w_max * 1e-4, w_max, n_points - 1)) if w_max > 0 else [])
        for p in prices:
            res = solve_cell(prob, "weighted_sum", price=p, target=target)
            points.append(_point(prob, res, "price", p, served_target))
    if sweep in ("target", "both"):
        for s in np.linspace(0.02, 0.98, n_points):
            res = solve_cell(prob, "epsilon_constraint", target=float(s), overload=overload, weighted=weighted)
            points.append(_point(prob, res, "target", float(s), served_target))
    return ParetoFront(metric=metric, points=points, front=non_dominated(points, metric))
