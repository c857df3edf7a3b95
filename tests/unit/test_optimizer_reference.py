"""The cvxpy reference: DPP (compiled once per size bucket), slices and operator constraints honoured."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from optimizer.problem import CellProblem, ProblemError
from optimizer.reference import SOLVED, formulation, solve_reference
from optimizer.solver import solve_cell


def _cell(n: int, seed: int = 0, **kw) -> CellProblem:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 3.0, n)
    return CellProblem(n_prb=kw.pop("n_prb", 40), prb_bw_hz=360e3, se=rng.uniform(0.3, 5.0, n), adequate=a,
                       desired=a * rng.uniform(2, 4, n), **kw)


@pytest.mark.parametrize("kind", ["weighted_sum", "epsilon_constraint", "max_min"])
def test_formulations_are_dpp_and_cached_per_bucket(kind) -> None:
    f = formulation(kind, 37)
    assert f.problem.is_dcp(dpp=True)
    assert formulation(kind, 50) is f  # 37 and 50 users share the 64 bucket: no recompilation
    assert formulation(kind, 65) is not f


def test_second_epoch_reuses_the_compiled_problem() -> None:
    p1, p2 = _cell(12, seed=1), _cell(12, seed=2)
    r1 = solve_reference(p1, "weighted_sum", price=0.01)
    f = formulation("weighted_sum", 12)
    cache = f.problem._cache  # cvxpy keeps the parametrized compilation here
    r2 = solve_reference(p2, "weighted_sum", price=0.01)
    assert f.problem._cache is cache and cache.param_prog is not None
    assert r1.status in SOLVED and r2.status in SOLVED
    assert not np.allclose(r1.x, r2.x)  # new data really went in


def test_slice_quota_binds() -> None:
    base = _cell(6, seed=3, n_prb=30)
    sid = np.array([0, 0, 0, 1, 1, -1])
    free = solve_reference(base, "weighted_sum")
    used0 = free.x[sid == 0].sum()
    cap = max(0.0, (used0 - 5.0) / 30.0)
    p = _cell(6, seed=3, n_prb=30, slice_id=sid, slice_max_share=np.array([cap, 1.0]),
              slice_min_share=np.array([0.0, 0.5]))
    r = solve_reference(p, "weighted_sum")
    assert r.status in SOLVED
    assert r.x[sid == 0].sum() <= np.floor(cap * 30 + 1e-9) + 1e-6
    assert r.x[sid == 1].sum() >= 15 - 1e-6
    assert r.objective <= free.objective + 1e-9  # a constraint can only cost
    with pytest.raises(ProblemError, match="slice"):
        solve_cell(p)  # the real-time path says where slices live


def test_operator_constraint() -> None:
    p = _cell(5, seed=4)

    def users_0_and_1_share_at_most_4(x: cp.Variable, params: dict) -> list:
        return [x[0] + x[1] <= 4]

    r = solve_reference(p, "weighted_sum", extra_constraints=users_0_and_1_share_at_most_4)
    assert r.status in SOLVED and r.x[0] + r.x[1] <= 4 + 1e-6
    free = solve_reference(p, "weighted_sum")
    assert free.x[0] + free.x[1] > 4  # the constraint actually binds here


def test_infeasible_targets_are_reported_not_raised() -> None:
    p = _cell(8, seed=5, n_prb=2)
    r = solve_reference(p, "epsilon_constraint", target=0.9)
    assert r.status == "infeasible"
    res = solve_cell(p, "epsilon_constraint", target=0.9)
    assert res.overload and res.prb_used <= 2
