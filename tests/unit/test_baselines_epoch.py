"""Epoch-batched baselines decide exactly as the per-cell baselines, cell by cell."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer import baselines
from optimizer.baselines_epoch import equal_share_epoch, max_rate_epoch, proportional_fair_epoch
from optimizer.problem import CellProblem


@st.composite
def epochs(draw):
    n_cells = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(0, 12), min_size=n_cells, max_size=n_cells))
    n = sum(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n_prb = np.array(draw(st.lists(st.integers(0, 60), min_size=n_cells, max_size=n_cells)), dtype=np.int64)
    se = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(0.01, 7.4)), min_size=n, max_size=n)))
    avg = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 50.0)), min_size=n, max_size=n)))
    return offsets, n_prb, se, avg


def cells(offsets, n_prb, se):
    for i in range(n_prb.size):
        a, b = offsets[i], offsets[i + 1]
        yield a, b, CellProblem(n_prb=int(n_prb[i]), prb_bw_hz=360e3, se=se[a:b], adequate=np.ones(b - a),
                                desired=np.full(b - a, 3.0))


@settings(max_examples=150, deadline=None)
@given(epochs(), st.integers(1, 50))
def test_batched_equals_per_cell(ep, window):
    offsets, n_prb, se, avg = ep
    c = se * 360e3 / 1e6
    eq = equal_share_epoch(offsets, n_prb)
    mr = max_rate_epoch(offsets, n_prb, c)
    pf, pf_x = proportional_fair_epoch(offsets, n_prb, c, avg, window)
    for a, b, prob in cells(offsets, n_prb, se):
        np.testing.assert_array_equal(eq[a:b], baselines.equal_share(prob).prb)
        np.testing.assert_array_equal(mr[a:b], baselines.max_rate(prob).prb)
        ids = [f"u{i}" for i in range(a, b)]
        state = baselines.PFState({u: float(t) for u, t in zip(ids, avg[a:b])})
        res, _ = baselines.proportional_fair(prob, state, ids, window)
        # The same water level; rounding may break an exact tie of remainders the other way.
        np.testing.assert_allclose(pf_x[a:b], res.x, rtol=1e-9, atol=1e-9)
        assert pf[a:b].sum() == res.prb.sum()
        diff = np.flatnonzero(pf[a:b] != res.prb)
        assert np.all(np.abs(pf[a:b] - res.prb) <= 1)
        frac = res.x[diff] - np.floor(res.x[diff])
        assert frac.size == 0 or np.ptp(frac) < 1e-9
    for out in (eq, mr, pf):
        for i in range(n_prb.size):
            if offsets[i + 1] > offsets[i]:
                assert out[offsets[i]:offsets[i + 1]].sum() <= n_prb[i]
