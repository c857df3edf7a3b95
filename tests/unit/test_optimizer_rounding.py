"""Whole PRBs: the Numba rounding against its NumPy twin, and the guarantees it gives."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.rounding import argsort_by_key, kth_smallest, round_prbs, round_prbs_numpy


@st.composite
def instances(draw):
    n = draw(st.integers(0, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(0, 12, n) * (rng.random(n) < 0.85)
    lo = np.minimum(np.floor(x * rng.uniform(0, 1, n)), np.floor(x))
    hi = np.maximum(np.ceil(x) + rng.integers(0, 3, n), lo)
    n_prb = max(int(lo.sum()), int(math.floor(x.sum())) + int(rng.integers(-3, 4)))
    score = np.round(rng.normal(size=n), 1)  # coarse: plenty of ties
    min_score = float(draw(st.sampled_from([-math.inf, -0.5, 0.0])))
    return x, lo, hi, n_prb, score, min_score


@settings(max_examples=300, deadline=None)
@given(inst=instances(), use_score=st.booleans())
def test_numba_matches_numpy_and_respects_bounds(inst, use_score) -> None:
    x, lo, hi, n_prb, score, min_score = inst
    s = score if use_score else None
    a = round_prbs(x, lo, hi, n_prb, s, min_score)
    b = round_prbs_numpy(x, lo, hi, n_prb, s, min_score)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64
    assert a.sum() <= n_prb
    assert (a >= lo).all() and (a <= hi).all()


@settings(max_examples=200, deadline=None)
@given(inst=instances())
def test_largest_remainder_is_floor_or_ceil_and_uses_the_cell(inst) -> None:
    x, lo, hi, n_prb, _, _ = inst
    x = np.clip(x, lo, hi)
    a = round_prbs(x, lo, hi, n_prb)
    f = np.floor(x)
    assert ((a == f) | (a == f + 1) | (a < f)).all()
    if n_prb >= x.sum() and (a < hi).any():
        # whole units left over only when every user that could take one has one
        cand = np.floor(x) + 1 <= hi
        assert a.sum() == min(n_prb, int(np.floor(x).sum()) + int(cand.sum()))
    # the users that got their ceiling have the largest remainders among those eligible
    got = (a == f + 1)
    left = (a == f) & (f + 1 <= hi)
    if got.any() and left.any():
        r = x - f
        assert r[got].min() >= r[left].max()


def test_largest_remainder_example() -> None:
    # 10 PRBs, continuous 3.6 / 3.3 / 3.1: floors 9, one left -> the 0.6 remainder.
    out = round_prbs(np.array([3.6, 3.3, 3.1]), np.zeros(3), np.full(3, 10.0), 10)
    np.testing.assert_array_equal(out, [4, 3, 3])
    # ties go to the lower index
    out = round_prbs(np.array([1.5, 1.5, 1.5]), np.zeros(3), np.full(3, 10.0), 4)
    np.testing.assert_array_equal(out, [2, 1, 1])


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.sampled_from([0.0, 1.0, -2.5, 3.0, math.inf]) | st.floats(-1e6, 1e6), max_size=80))
def test_sort_agrees_with_a_stable_sort(keys) -> None:
    k = np.array(keys, dtype=np.float64)
    idx = np.empty(k.size, dtype=np.int64)
    argsort_by_key(k, idx)
    np.testing.assert_array_equal(idx, np.argsort(k, kind="stable"))


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.sampled_from([0.0, 1.0, -2.5, 3.0, math.inf, -math.inf]) | st.floats(-1e6, 1e6),
                     min_size=1, max_size=200),
       frac=st.floats(0.0, 1.0))
def test_kth_smallest_matches_a_sort(keys, frac) -> None:
    # The rounding's threshold: ties and repeated values included (the out-of-place three-way partition).
    k = np.array(keys, dtype=np.float64)
    r = min(int(frac * k.size), k.size - 1)
    assert kth_smallest(k, r) == np.sort(k)[r]
