"""Pareto fronts: non-dominated, ordered, and spanning the trade-off."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.pareto import ParetoPoint, non_dominated, pareto_front
from optimizer.problem import CellProblem, ProblemError


def _pt(prb, mean):
    return ParetoPoint("price", 0.0, prb, mean * 3, mean, 0.0, 0.0, 0.0, False)


def test_non_dominated_filter() -> None:
    pts = [_pt(10, 0.5), _pt(5, 0.5), _pt(5, 0.4), _pt(20, 0.9), _pt(15, 0.8), _pt(25, 0.85)]
    front = non_dominated(pts, "mean_satisfaction")
    assert [(p.prb_used, p.mean_satisfaction) for p in front] == [(5, 0.5), (15, 0.8), (20, 0.9)]


@pytest.mark.parametrize("metric", ["mean_satisfaction", "fraction_at_target", "weighted_log_satisfaction"])
def test_front_of_a_cell(metric) -> None:
    rng = np.random.default_rng(0)
    n = 15
    a = rng.uniform(0.5, 3, n)
    p = CellProblem(n_prb=40, prb_bw_hz=360e3, se=rng.uniform(0.3, 5, n), adequate=a, desired=a * 3)
    fr = pareto_front(p, n_points=9, metric=metric, target=0.5)
    d = fr.as_dict()
    assert len(d["points"]) == 18 and d["front"]
    prbs = [q.prb_used for q in fr.front]
    vals = [getattr(q, metric) for q in fr.front]
    assert prbs == sorted(prbs) and vals == sorted(vals)
    assert len(set(prbs)) == len(prbs)
    for q in fr.points:  # nobody off the front beats a front point on both axes
        for f in fr.front:
            assert not (q.prb_used <= f.prb_used and getattr(q, metric) > getattr(f, metric))
    assert fr.front[0].prb_used < fr.front[-1].prb_used  # a real trade-off
    with pytest.raises(ProblemError):
        pareto_front(p, sweep="grid")
