"""ZoT logistic curves: closed forms, NumPy == Numba, extreme slopes, direction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from optimizer import curves as c

EPS_VALUES = [0.01, 0.1, 0.25]


@pytest.mark.parametrize("eps", EPS_VALUES)
@pytest.mark.parametrize("a,d", [(2.0, 10.0), (10.0, 2.0), (0.0, 1e-3), (150.0, 40.0), (1e6, 1e6 + 3.0)])
def test_closed_form_at_a_d_and_centre(a: float, d: float, eps: float) -> None:
    m = 0.5 * (a + d)
    for fn in (c.satisfaction, c.satisfaction_nb):
        assert fn(a, a, d, eps) == pytest.approx(eps, rel=1e-9)
        assert fn(d, a, d, eps) == pytest.approx(1.0 - eps, rel=1e-9)
        assert fn(m, a, d, eps) == pytest.approx(0.5, rel=1e-12)
    k, mm = c.slope_centre(a, d, eps)
    assert k == pytest.approx(2.0 * math.log((1.0 - eps) / eps) / (d - a), rel=1e-12)
    assert mm == pytest.approx(m, rel=1e-15)
    for fn in (c.log_satisfaction, c.log_satisfaction_nb):
        assert fn(a, a, d, eps) == pytest.approx(math.log(eps), rel=1e-9)
        assert fn(d, a, d, eps) == pytest.approx(math.log1p(-eps), rel=1e-9)
    for fn in (c.log_dissatisfaction, c.log_dissatisfaction_nb):
        assert fn(a, a, d, eps) == pytest.approx(math.log1p(-eps), rel=1e-9)
    for fn in (c.dlog_satisfaction_dq, c.dlog_satisfaction_dq_nb):
        # At the centre S = 1/2, so d log S / dq = k / 2.
        assert fn(m, a, d, eps) == pytest.approx(k / 2.0, rel=1e-9)
        assert fn(a, a, d, eps) == pytest.approx(k * (1.0 - eps), rel=1e-9)
    for fn in (c.inverse, c.inverse_nb):
        assert fn(eps, a, d, eps) == pytest.approx(a, rel=1e-9, abs=1e-12)
        assert fn(1.0 - eps, a, d, eps) == pytest.approx(d, rel=1e-9, abs=1e-12)
        assert fn(0.5, a, d, eps) == pytest.approx(m, rel=1e-12)


def test_lower_is_better_decreases_and_mirrors() -> None:
    # Latency zone: adequate 150 ms, desired 40 ms (A > D numerically).
    q = np.linspace(0.0, 300.0, 301)
    s = c.satisfaction(q, 150.0, 40.0)
    assert np.all(np.diff(s) < 0.0)
    assert c.slope_centre(150.0, 40.0)[0] < 0.0
    # Mirror image of the higher-is-better curve with A and D reflected around 0.
    np.testing.assert_allclose(s, c.satisfaction(-q, -150.0, -40.0), rtol=1e-12)
    assert np.all(c.dlog_satisfaction_dq(q, 150.0, 40.0) < 0.0)
    s_up = c.satisfaction(q, 40.0, 150.0)
    assert np.all(np.diff(s_up) > 0.0)


def test_log_satisfaction_is_concave_and_derivative_matches() -> None:
    q = np.linspace(-20.0, 40.0, 2001)
    ls = c.log_satisfaction(q, 3.0, 12.0)
    assert np.all(np.diff(ls, 2) <= 1e-12)
    h = 1e-6
    num = (c.log_satisfaction(q + h, 3.0, 12.0) - c.log_satisfaction(q - h, 3.0, 12.0)) / (2 * h)
    np.testing.assert_allclose(c.dlog_satisfaction_dq(q, 3.0, 12.0), num, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("width", [1e-9, 1e-14, 1e-200, 0.0, -0.0])
def test_extreme_slopes_no_overflow_or_nan(width: float) -> None:
    a = 5.0
    d = a + width
    q = np.array([-1e300, -1e6, a - 1.0, a, 0.5 * (a + d), d, a + 1.0, 1e6, 1e300])
    for fns in [(c.satisfaction, c.satisfaction_nb), (c.log_satisfaction, c.log_satisfaction_nb),
                (c.log_dissatisfaction, c.log_dissatisfaction_nb),
                (c.dlog_satisfaction_dq, c.dlog_satisfaction_dq_nb)]:
        ref, nb = fns[0](q, a, d), fns[1](q, a, d)
        assert not np.any(np.isnan(ref)), (fns[0].__name__, ref)
        np.testing.assert_array_equal(ref, nb)
    s = c.satisfaction(q, a, d)
    assert np.all((s >= 0.0) & (s <= 1.0))
    assert s[0] == 0.0 and s[-1] == 1.0
    ls = c.log_satisfaction(q, a, d)
    assert np.all(ls <= 0.0)
    assert np.all(np.isfinite(c.dlog_satisfaction_dq(q, a, d)))
    inv = c.inverse(np.array([0.1, 0.5, 0.9]), a, d)
    assert np.all(np.isfinite(inv)) and np.all(np.abs(inv - a) <= max(abs(width), 1e-300) + 1e-15)


def test_log_satisfaction_huge_z() -> None:
    # |z| up to 1e6 and beyond: log S must be exact (z for very negative z, 0 for positive).
    k, m = c.slope_centre(0.0, 1.0)
    z = np.array([-1e6, -1e3, -40.0, 0.0, 40.0, 1e3, 1e6])
    q = m + z / k
    for fn in (c.log_satisfaction, c.log_satisfaction_nb):
        ls = fn(q, 0.0, 1.0)
        assert np.all(np.isfinite(ls))
        np.testing.assert_allclose(ls[:2], z[:2], rtol=1e-12)
        assert ls[-1] == 0.0 and ls[3] == pytest.approx(-math.log(2.0))
        np.testing.assert_allclose(ls[4], -math.exp(-40.0), rtol=1e-9)


def test_inverse_limits_and_invalid() -> None:
    for fn in (c.inverse, c.inverse_nb):
        out = fn(np.array([0.0, 1.0, -0.1, 1.1, np.nan]), 2.0, 10.0)
        assert out[0] == -np.inf and out[1] == np.inf
        assert np.all(np.isnan(out[2:]))


def test_bad_eps_rejected() -> None:
    for fn in (c.satisfaction, c.satisfaction_nb, c.inverse, c.inverse_nb):
        with pytest.raises(ValueError):
            fn(1.0, 0.0, 2.0, 0.5)
        with pytest.raises(ValueError):
            fn(1.0, 0.0, 2.0, 0.0)


finite = st.floats(-1e4, 1e4, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(q=finite, a=finite, d=finite, eps=st.floats(1e-4, 0.49), s=st.floats(1e-6, 1 - 1e-6))
def test_numba_equals_numpy(q: float, a: float, d: float, eps: float, s: float) -> None:
    pairs = [
        (c.satisfaction, c.satisfaction_nb, c.satisfaction_scalar, (q, a, d, eps)),
        (c.log_satisfaction, c.log_satisfaction_nb, c.log_satisfaction_scalar, (q, a, d, eps)),
        (c.log_dissatisfaction, c.log_dissatisfaction_nb, c.log_dissatisfaction_scalar, (q, a, d, eps)),
        (c.dlog_satisfaction_dq, c.dlog_satisfaction_dq_nb, c.dlog_satisfaction_scalar, (q, a, d, eps)),
        (c.inverse, c.inverse_nb, c.inverse_scalar, (s, a, d, eps)),
    ]
    for ref, nb, sc, args in pairs:
        r = ref(*args)
        np.testing.assert_allclose(nb(*args), r, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(sc(*args), r, rtol=1e-13, atol=1e-300)
    if abs(d - a) > 1e-6:
        q_s = c.inverse(s, a, d, eps)
        assert c.satisfaction(q_s, a, d, eps) == pytest.approx(s, rel=1e-6, abs=1e-9)


def test_broadcasting_shapes() -> None:
    q = np.linspace(0.0, 20.0, 7)[:, None]
    a = np.array([1.0, 2.0, 3.0])
    d = np.array([5.0, 8.0, 1.0])
    ref = c.satisfaction(q, a, d, 0.1)
    nb = c.satisfaction_nb(q, a, d, 0.1)
    assert ref.shape == nb.shape == (7, 3)
    np.testing.assert_allclose(nb, ref, rtol=1e-14)
    k, m = c.slope_centre_nb(a, d)
    np.testing.assert_allclose(k, c.slope_centre(a, d)[0], rtol=1e-15)


def test_scalar_helpers_callable_from_njit() -> None:
    @njit
    def total_log_s(q, a, d):
        t = 0.0
        for i in range(q.size):
            t += c.log_satisfaction_scalar(q[i], a[i], d[i], 0.1)
        return t

    q = np.array([1.0, 5.0, 9.0])
    a = np.array([2.0, 2.0, 2.0])
    d = np.array([8.0, 8.0, 8.0])
    assert total_log_s(q, a, d) == pytest.approx(float(np.sum(c.log_satisfaction(q, a, d))), rel=1e-13)
