"""Validation at the optimizer's boundary: bad input is rejected with the field and the reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optimizer.problem import CellProblem, EpochProblem, ProblemError, objective_value
from optimizer.solver import solve_cell


def _ok(**kw):
    base = dict(n_prb=10, prb_bw_hz=360e3, se=[1.0, 2.0], adequate=[1.0, 2.0], desired=[2.0, 4.0])
    base.update(kw)
    return CellProblem(**base)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(se=[1.0, math.nan]), "se"),
        (dict(se=[1.0, math.inf]), "se"),
        (dict(se=[1.0, -0.5]), "se"),
        (dict(se=[1.0, 1e301]), "se"),  # beyond any radio: k c would overflow
        (dict(adequate=[1.0, -2.0]), "adequate"),
        (dict(desired=[2.0, math.nan]), "desired"),
        (dict(desired=[2.0, 2.0]), "desired"),  # A == D: no zone
        (dict(desired=[0.5, 4.0]), "desired"),  # A > D
        (dict(weight=[1.0, -1.0]), "weight"),
        (dict(weight=[1.0, math.inf]), "weight"),
        (dict(n_prb=-1), "n_prb"),
        (dict(n_prb=2.5), "n_prb"),
        (dict(prb_bw_hz=0.0), "prb_bw_hz"),
        (dict(prb_bw_hz=math.nan), "prb_bw_hz"),
        (dict(eps=0.5), "eps"),
        (dict(min_share=[0.5, 0.2], max_share=[0.4, 1.0]), "min_share"),
        (dict(max_share=[1.5, 1.0]), "max_share"),
        (dict(se=[1.0, 2.0, 3.0]), "adequate"),  # length mismatch
    ],
)
def test_bad_input_is_rejected_with_field_and_reason(kw, field) -> None:
    with pytest.raises(ProblemError) as info:
        _ok(**kw)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert field in str(info.value) and len(info.value.reason) > 10


def test_bad_options_are_rejected() -> None:
    p = _ok()
    with pytest.raises(ProblemError, match="scalarization"):
        solve_cell(p, "lexicographic")
    with pytest.raises(ProblemError, match="pareto"):
        solve_cell(p, "pareto")
    with pytest.raises(ProblemError, match="overload"):
        solve_cell(p, "epsilon_constraint", overload="drop_all")
    with pytest.raises(ProblemError, match="price"):
        solve_cell(p, price=math.nan)
    with pytest.raises(ProblemError, match="target"):
        solve_cell(p, "epsilon_constraint", target=1.0)


def test_derived_quantities() -> None:
    p = _ok(min_share=0.15, max_share=0.55)
    np.testing.assert_allclose(p.c, [0.36, 0.72])  # Mbps per PRB
    np.testing.assert_array_equal(p.lo_prb, [2.0, 2.0])  # ceil(1.5)
    np.testing.assert_array_equal(p.hi_prb, [5.0, 5.0])  # floor(5.5)
    # S(A) = eps, S(D) = 1 - eps on the stored slope and centre
    assert 1 / (1 + math.exp(-p.k[0] * (1.0 - p.m[0]))) == pytest.approx(0.1)
    assert 1 / (1 + math.exp(-p.k[0] * (2.0 - p.m[0]))) == pytest.approx(0.9)
    # a min share that rounds above the cap on a tiny cell gives way to the cap
    q = _ok(n_prb=1, min_share=0.03, max_share=0.9)
    np.testing.assert_array_equal(q.lo_prb, [0.0, 0.0])
    # satisfaction target -> rate: S^-1(0.9) = D
    np.testing.assert_allclose(p.target_rate(0.9), [2.0, 4.0])
    np.testing.assert_allclose(p.target_rate(None), [1.0, 2.0])
    assert objective_value(p, "epsilon_constraint", np.array([1.0, 2.0])) == 3.0


def test_epoch_validation_and_cells() -> None:
    with pytest.raises(ProblemError, match="offsets"):
        EpochProblem(offsets=np.array([0, 3, 2]), n_prb=np.array([5, 5]), prb_bw_hz=1e5,
                     se=np.ones(2), adequate=np.ones(2), desired=np.full(2, 2.0))
    with pytest.raises(ProblemError, match="n_prb"):
        EpochProblem(offsets=np.array([0, 1, 2]), n_prb=np.array([5]), prb_bw_hz=1e5,
                     se=np.ones(2), adequate=np.ones(2), desired=np.full(2, 2.0))
    with pytest.raises(ProblemError, match="se"):
        EpochProblem(offsets=np.array([0, 1, 2]), n_prb=np.array([5, 5]), prb_bw_hz=1e5,
                     se=np.array([1.0, math.nan]), adequate=np.ones(2), desired=np.full(2, 2.0))
    cells = [_ok(), _ok(n_prb=3, se=[0.0], adequate=[1.0], desired=[3.0])]
    ep = EpochProblem.from_cells(cells)
    assert ep.n_cells == 2 and ep.n_users == 3
    np.testing.assert_array_equal(ep.cell(1).se, [0.0])
    np.testing.assert_allclose(ep.c, np.concatenate([cells[0].c, cells[1].c]))
