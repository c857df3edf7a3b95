"""Metric <-> rate maps: round trips, unreachable levels, zone ordering."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer import qos

LAT = {"base_ms": 20.0, "payload_kbit": 400.0}
STALL = {"bitrate_mbps": 5.0}


def test_names_and_direction() -> None:
    assert qos.METRICS == ("throughput_mbps", "latency_ms", "startup_delay_s", "stall_ratio")
    assert qos.higher_is_better("throughput_mbps")
    for m in ("latency_ms", "startup_delay_s", "stall_ratio"):
        assert not qos.higher_is_better(m)
    with pytest.raises(ValueError):
        qos.higher_is_better("jitter_ms")


def test_closed_forms() -> None:
    # 400 kbit at 10 Mbps = 40 ms, plus 20 ms fixed.
    assert qos.qos_for_rate("latency_ms", 10.0, **LAT) == pytest.approx(60.0)
    assert qos.qos_for_rate("startup_delay_s", 10.0, **LAT) == pytest.approx(0.060)
    assert qos.rate_for_qos("latency_ms", 60.0, **LAT) == pytest.approx(10.0)
    assert qos.rate_for_qos("startup_delay_s", 0.060, **LAT) == pytest.approx(10.0)
    assert qos.qos_for_rate("stall_ratio", 4.0, **STALL) == pytest.approx(0.2)
    assert qos.qos_for_rate("stall_ratio", 7.0, **STALL) == 0.0
    assert qos.rate_for_qos("stall_ratio", 0.2, **STALL) == pytest.approx(4.0)
    assert qos.rate_for_qos("throughput_mbps", 12.5) == 12.5


@pytest.mark.parametrize("metric,params", [
    ("throughput_mbps", {}), ("latency_ms", LAT), ("startup_delay_s", LAT), ("stall_ratio", STALL)])
def test_round_trip(metric: str, params: dict) -> None:
    rate = np.geomspace(0.1, 4.9, 50)  # below the bitrate so stall ratio is invertible
    q = qos.qos_for_rate(metric, rate, **params)
    np.testing.assert_allclose(qos.rate_for_qos(metric, q, **params), rate, rtol=1e-12)
    # Monotone in the documented direction.
    dq = np.diff(q)
    assert np.all(dq > 0) if qos.higher_is_better(metric) else np.all(dq < 0)
    # Derivative matches finite differences.
    h = 1e-6
    num = (qos.qos_for_rate(metric, rate + h, **params) - qos.qos_for_rate(metric, rate - h, **params)) / (2 * h)
    np.testing.assert_allclose(qos.dqos_drate(metric, rate, **params), num, rtol=1e-5, atol=1e-10)


def test_unreachable_levels_are_inf_never_nan() -> None:
    with np.errstate(all="raise"):
        r = qos.rate_for_qos("latency_ms", np.array([5.0, 20.0, 21.0]), **LAT)
    assert r[0] == np.inf and r[1] == np.inf and np.isfinite(r[2])
    r = qos.rate_for_qos("startup_delay_s", np.array([0.0, 0.019]), **LAT)
    assert np.all(r == np.inf)
    r = qos.rate_for_qos("stall_ratio", np.array([-0.1, 0.0, 1.0, 2.0]), **STALL)
    np.testing.assert_array_equal(r, [np.inf, 5.0, 0.0, 0.0])
    r = qos.rate_for_qos("latency_ms", np.array([10.0, 20.0, 30.0]), base_ms=20.0, payload_kbit=0.0)
    np.testing.assert_array_equal(r, [np.inf, 0.0, 0.0])
    assert qos.qos_for_rate("latency_ms", 0.0, **LAT) == np.inf
    assert qos.qos_for_rate("latency_ms", -3.0, **LAT) == np.inf


def test_zone_in_rate_orders_lower_is_better() -> None:
    # Latency: adequate 150 ms, desired 40 ms -> A_rate < D_rate.
    a_r, d_r = qos.zone_in_rate("latency_ms", 150.0, 40.0, **LAT)
    assert a_r == pytest.approx(400.0 / 130.0) and d_r == pytest.approx(400.0 / 20.0)
    assert a_r < d_r
    a_r, d_r = qos.zone_in_rate("stall_ratio", np.array([0.3, 0.1]), np.array([0.05, 0.0]), **STALL)
    assert np.all(a_r < d_r)
    a_r, d_r = qos.zone_in_rate("throughput_mbps", 2.0, 8.0)
    assert (a_r, d_r) == (2.0, 8.0)


def test_vectorized_params_broadcast() -> None:
    base = np.array([10.0, 20.0, 30.0])
    r = qos.rate_for_qos("latency_ms", 50.0, base_ms=base, payload_kbit=100.0)
    np.testing.assert_allclose(r, 100.0 / (50.0 - base))


def test_missing_or_bad_params() -> None:
    with pytest.raises(ValueError, match="payload_kbit"):
        qos.rate_for_qos("latency_ms", 50.0, base_ms=10.0)
    with pytest.raises(ValueError):
        qos.rate_for_qos("stall_ratio", 0.1, bitrate_mbps=0.0)
    with pytest.raises(ValueError):
        qos.qos_for_rate("latency_ms", 5.0, base_ms=np.nan, payload_kbit=1.0)
