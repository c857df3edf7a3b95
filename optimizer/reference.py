"""cvxpy reference formulations: the ground truth for the Numba solvers and the
place where an operator adds its own constraints.

Every formulation is DPP (disciplined parametrized programming): the cell's data
are `cp.Parameter`s, so a problem is compiled once per size and later epochs only
re-bind parameter values (no recompilation; `Problem.is_dpp()` holds, tested).
Problems are padded to the next size bucket (powers of two) with inert users, so
cells of 37 and 50 users share one compiled problem.

weighted_sum        min  w.t + price 1.x
                    s.t. logistic(k m - (k c) o x) <= t      (t_u >= -log S_u(c_u x_u))
                         1.x <= N, lo <= x <= hi, slice quotas
                    The logistic is an exponential-cone term, hence CLARABEL
                    (an interior-point solver with native exponential cones).
                    w.t rather than sum(w o logistic(...)) keeps it DPP: a
                    parameter may only multiply a parameter-free expression.
epsilon_constraint  min 1.x  s.t. c o x >= T, 1.x <= N, lo <= x <= hi, slices
                    (S is increasing, so S_u(c x) >= s* is the linear c x >= T).
max_min             max L  s.t. (k c) o x - k m >= L on users with a channel,
                    1.x <= N, lo <= x <= hi, slices; the optimum level is
                    sigmoid(L) (logit S is affine in the rate, so it is an LP).

Users that cannot change the objective (se = 0 or weight 0) are kept but made
inert (their x pinned to lo); their constant term is added back when the
objective is evaluated with `optimizer.curves`, exactly as for the Numba path.

Adding a constraint (see docs/optimizer.md): pass `extra_constraints`, a
function `(x, params) -> list[cp.Constraint]` built from parameters only, e.g.
`lambda x, p: [x[0] + x[1] <= 10]`. It gets its own compiled problem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import cvxpy as cp
import numpy as np

from optimizer.problem import CellProblem, ProblemError, objective_value

ExtraConstraints = Callable[[cp.Variable, dict[str, cp.Parameter]], list]

# Tighter than CLARABEL's defaults (1e-8) so the reference is a trustworthy
# yardstick; 1e-10 was tried and ends "optimal_inaccurate" more often on cells
# whose log S terms are ~1e-200 (users far above D), without better objectives.
CLARABEL_SETTINGS: dict[str, float | int] = {
    "tol_gap_abs": 1e-9,
    "tol_gap_rel": 1e-9,
    "tol_feas": 1e-9,
    "max_iter": 500,
}
# Statuses whose x the tests and the benchmark compare (inaccurate ones still
# have to agree on the objective within the stated tolerance).
SOLVED = ("optimal", "optimal_inaccurate")


@dataclass(frozen=True)
class ReferenceResult:
    status: str  # cvxpy status: "optimal", "infeasible", ...
    x: np.ndarray  # continuous PRBs per user (zeros if not solved)
    objective: float  # the scalarization's objective evaluated at x with optimizer.curves
    solver_objective: float  # what the solver reported (before adding constants back)
    solve_s: float  # wall time of Problem.solve (parameters bound, problem already compiled if cached)
    solver_s: float = float("nan")  # CLARABEL's own solve time (solver_stats.solve_time)
    dpp: bool = True  # solved through the compiled DPP problem (False: compiled for this data only)


# Largest padded size solved through the compiled DPP problem (see solve_reference).
DPP_MAX_USERS = 1024


def _bucket(n: int) -> int:
    return max(8, 1 << max(0, (n - 1)).bit_length())


class _Formulation:
    """One compiled DPP problem of a fixed (padded) size."""

    def __init__(self, kind: str, n: int, n_slices: int, extra: ExtraConstraints | None) -> None:
        self.kind, self.n, self.n_slices = kind, n, n_slices
        x = cp.Variable(n, name="x")
        p = {
            "c": cp.Parameter(n, nonneg=True, name="c"),
            "kc": cp.Parameter(n, nonneg=True, name="kc"),
            "km": cp.Parameter(n, name="km"),
            "w": cp.Parameter(n, nonneg=True, name="w"),
            "target": cp.Parameter(n, nonneg=True, name="target"),
            "active": cp.Parameter(n, nonneg=True, name="active"),
            "lo": cp.Parameter(n, nonneg=True, name="lo"),
            "hi": cp.Parameter(n, nonneg=True, name="hi"),
            "n_prb": cp.Parameter(nonneg=True, name="n_prb"),
            "price": cp.Parameter(nonneg=True, name="price"),
        }
        cons = [cp.sum(x) <= p["n_prb"], x >= p["lo"], x <= p["hi"]]
        if n_slices:
            p["member"] = cp.Parameter((n_slices, n), nonneg=True, name="member")
            p["slice_lo"] = cp.Parameter(n_slices, nonneg=True, name="slice_lo")
            p["slice_hi"] = cp.Parameter(n_slices, nonneg=True, name="slice_hi")
            cons += [p["member"] @ x <= p["slice_hi"], p["member"] @ x >= p["slice_lo"]]
        if kind == "weighted_sum":
            t = cp.Variable(n, name="t")
            cons.append(cp.logistic(p["km"] - cp.multiply(p["kc"], x)) <= t)
            objective = cp.Minimize(p["w"] @ t + p["price"] * cp.sum(x))
        elif kind == "epsilon_constraint":
            cons.append(cp.multiply(p["c"], x) >= p["target"])
            objective = cp.Minimize(cp.sum(x))
        elif kind == "max_min":
            level = cp.Variable(name="level")
            cons.append(cp.multiply(p["kc"], x) - p["km"] >= p["active"] * level)
            objective = cp.Maximize(level)
        else:
            raise ProblemError("scalarization", f"{kind!r} has no reference formulation")
        if extra is not None:
            cons += list(extra(x, p))
        self.x, self.params = x, p
        self.problem = cp.Problem(objective, cons)
        if not self.problem.is_dcp(dpp=True):
            raise ProblemError("extra_constraints", "the formulation is not DPP; build constraints from parameters only")

    def bind(self, prob: CellProblem, price: float, target_rate: np.ndarray) -> np.ndarray:
        """Set parameter values from the cell (padding with inert users); returns the active mask."""
        n, n_u = self.n, prob.n_users
        pad = lambda v, fill=0.0: np.concatenate([np.asarray(v, dtype=np.float64), np.full(n - n_u, fill)])  # noqa: E731
        c, k, m, w = pad(prob.c), pad(prob.k, 1.0), pad(prob.m), pad(prob.weight)
        lo, hi = pad(prob.lo_prb), pad(prob.hi_prb)
        if lo[:n_u].sum() > prob.n_prb:  # the same scaling of guaranteed minimums as the Numba path
            lo[:n_u] = np.floor(lo[:n_u] * prob.n_prb / lo[:n_u].sum())
        if self.kind == "weighted_sum":
            active = (c > 0) & (w > 0)
        else:
            active = c > 0
        hi_eff = np.where(active, hi, lo)  # inert users pinned at lo
        p = self.params
        p["c"].value = c
        p["kc"].value = np.where(active, k * c, 0.0)
        p["km"].value = np.where(active, k * m, 0.0)
        # Inert users: t_u >= log 2 with weight 1 (bounded, constant), removed again in `objective`.
        p["w"].value = np.where(active, w, 1.0)
        p["active"].value = active.astype(np.float64)
        tr = pad(target_rate)
        req = np.where(c > 0, tr / np.where(c > 0, c, 1.0), np.inf)
        # Targets beyond a user's max share are not constraints (that user is
        # unservable, as in the Numba path); beyond the whole cell they stay:
        # that is an overloaded, infeasible cell.
        p["target"].value = np.where(active & ((req <= hi) | (hi >= prob.n_prb)), tr, 0.0)
        p["lo"].value = lo
        p["hi"].value = hi_eff
        p["n_prb"].value = float(prob.n_prb)
        p["price"].value = float(price)
        if self.n_slices:
            member = np.zeros((self.n_slices, n))
            sid = prob.slice_id
            rows = np.flatnonzero(sid >= 0)
            member[sid[rows], rows] = 1.0
            p["member"].value = member
            p["slice_lo"].value = np.ceil(prob.slice_min_share * prob.n_prb - 1e-9)
            p["slice_hi"].value = np.floor(prob.slice_max_share * prob.n_prb + 1e-9)
        return active[:n_u]


_CACHE: dict[tuple, _Formulation] = {}


def formulation(kind: str, n_users: int, n_slices: int = 0, extra_constraints: ExtraConstraints | None = None) -> _Formulation:
    """The compiled-once DPP problem for this kind and size bucket (cached)."""
    key = (kind, _bucket(n_users), n_slices, extra_constraints)
    f = _CACHE.get(key)
    if f is None:
        f = _Formulation(kind, _bucket(n_users), n_slices, extra_constraints)
        _CACHE[key] = f
    return f


def solve_reference(prob: CellProblem, scalarization: str = "weighted_sum", *, price: float = 0.0,
                    target: float | None = None, extra_constraints: ExtraConstraints | None = None,
                    solver_settings: dict | None = None, dpp: bool | None = None) -> ReferenceResult:
    """Solve one cell with cvxpy + CLARABEL (continuous PRBs, no overload policy:
    an infeasible epsilon-constraint comes back with status 'infeasible').

    `dpp=None` uses the compiled DPP problem up to `DPP_MAX_USERS` users and
    compiles for this data only above (cvxpy's DPP tensor grows with
    constraints x variables: ~50 GB at 16,384 users).
    """
    n_sl = int(prob.slice_id.max(initial=-1)) + 1 if prob.slice_id is not None else 0
    f = formulation(scalarization, prob.n_users, n_sl, extra_constraints)
    use_dpp = f.n <= DPP_MAX_USERS if dpp is None else bool(dpp)
    active = f.bind(prob, price, prob.target_rate(target))
    if prob.n_users == 0 or (scalarization == "max_min" and not active.any()):
        x = np.asarray(f.params["lo"].value[: prob.n_users], dtype=np.float64).copy()
        return ReferenceResult("optimal", x, objective_value(prob, scalarization, x, price), 0.0, 0.0, 0.0, use_dpp)
    t0 = time.perf_counter()
    try:
        f.problem.solve(solver=cp.CLARABEL, ignore_dpp=not use_dpp, **(solver_settings or CLARABEL_SETTINGS))
    except cp.error.SolverError as exc:
        return ReferenceResult(f"solver_error: {exc}", np.zeros(prob.n_users), float("nan"), float("nan"),
                               time.perf_counter() - t0, float("nan"), use_dpp)
    dt = time.perf_counter() - t0
    status = f.problem.status
    stats = f.problem.solver_stats
    solver_s = float(stats.solve_time) if stats is not None and stats.solve_time is not None else float("nan")
    if f.x.value is None:
        return ReferenceResult(status, np.zeros(prob.n_users), float("nan"), float("nan"), dt, solver_s, use_dpp)
    x = np.clip(np.asarray(f.x.value[: prob.n_users], dtype=np.float64), 0.0, None)
    return ReferenceResult(status, x, objective_value(prob, scalarization, x, price), float(f.problem.value), dt,
                           solver_s, use_dpp)
