"""Map each application's QoS metric to the user's rate (Mbps) and back.

The optimizer and the satisfaction learner work in one currency: the rate the
user gets, in Mbps, where higher is always better. Each metric is a monotone
function of that rate:

    throughput_mbps   q = rate                                   (higher is better)
    latency_ms        q = base_ms + payload_kbit / rate          (lower is better)
    startup_delay_s   q = (base_ms + payload_kbit / rate) / 1000 (lower is better)
    stall_ratio       q = max(0, 1 - rate / bitrate_mbps)        (lower is better)

(kbit / Mbps = ms.) `base_ms` is the part of the delay the radio rate cannot buy
(core network, server), `payload_kbit` what must cross the link per request
(frame, first segment), `bitrate_mbps` the media bitrate a player must sustain.

`rate_for_qos` returns the *least* rate achieving a level: levels no rate can
reach (a latency at or below base_ms, a negative stall ratio) give +inf, never
NaN or an exception; levels any rate reaches (stall ratio >= 1) give 0. A NaN
level stays NaN (it is not a level; callers validate input upstream).
`qos_for_rate` treats a negative rate as no service (rate 0).

Because the metric is monotone in rate, a zone [A, D] in the metric maps to a
zone in rate with `zone_in_rate`, always with A_rate <= D_rate (ties only at the
clamped ends, e.g. a stall ratio of 0 and below both need the full bitrate).
"""

from __future__ import annotations

import numpy as np

ArrayLike = float | np.ndarray

METRICS: tuple[str, ...] = ("throughput_mbps", "latency_ms", "startup_delay_s", "stall_ratio")
# Parameters each metric needs; anything else passed is ignored.
METRIC_PARAMS: dict[str, tuple[str, ...]] = {
    "throughput_mbps": (),
    "latency_ms": ("base_ms", "payload_kbit"),
    "startup_delay_s": ("base_ms", "payload_kbit"),
    "stall_ratio": ("bitrate_mbps",),
}


def _check(metric: str, params: dict[str, ArrayLike]) -> dict[str, np.ndarray]:
    if metric not in METRIC_PARAMS:
        raise ValueError(f"unknown QoS metric {metric!r}; known: {', '.join(METRICS)}")
    out = {}
    for name in METRIC_PARAMS[metric]:
        if name not in params or params[name] is None:
            raise ValueError(f"metric {metric!r} needs parameter {name!r}")
        v = np.asarray(params[name], dtype=np.float64)
        if not np.all(np.isfinite(v) & (v >= 0.0)):
            raise ValueError(f"parameter {name!r} of metric {metric!r} must be finite and >= 0, got {params[name]!r}")
        out[name] = v
    if metric == "stall_ratio" and not np.all(out["bitrate_mbps"] > 0.0):
        raise ValueError("parameter 'bitrate_mbps' of metric 'stall_ratio' must be > 0")
    return out


def _out(x: np.ndarray) -> ArrayLike:
    x = np.asarray(x, dtype=np.float64)
    return x[()] if x.ndim == 0 else x


def higher_is_better(metric: str) -> bool:
    """True for throughput, False for latency, start-up delay and stall ratio."""
    _check(metric, {k: 1.0 for k in METRIC_PARAMS.get(metric, ())})
    return metric == "throughput_mbps"


def _rate_for_delay_ms(q_ms: np.ndarray, base: np.ndarray, payload: np.ndarray) -> np.ndarray:
    slack = q_ms - base
    with np.errstate(divide="ignore", invalid="ignore"):
        r = payload / slack
    # No payload: any rate (0) meets a level at or above the fixed part.
    r = np.where(payload == 0.0, np.where(slack >= 0.0, 0.0, np.inf), r)
    r = np.where((payload > 0.0) & (slack <= 0.0), np.inf, r)
    return np.where(np.isnan(q_ms), np.nan, r)


def rate_for_qos(metric: str, q: ArrayLike, **params: ArrayLike) -> ArrayLike:
    """Least rate (Mbps) at which the metric reaches level q; +inf if unreachable."""
    p = _check(metric, params)
    q = np.asarray(q, dtype=np.float64)
    if metric == "throughput_mbps":
        r = np.where(q < 0.0, 0.0, q)  # any rate meets a negative throughput level
    elif metric == "latency_ms":
        r = _rate_for_delay_ms(q, p["base_ms"], p["payload_kbit"])
    elif metric == "startup_delay_s":
        r = _rate_for_delay_ms(q * 1000.0, p["base_ms"], p["payload_kbit"])
    else:  # stall_ratio
        b = p["bitrate_mbps"]
        r = np.where(q < 0.0, np.inf, b * (1.0 - np.minimum(q, 1.0)))
        r = np.where(np.isnan(q), np.nan, r)
    return _out(r)


def qos_for_rate(metric: str, rate: ArrayLike, **params: ArrayLike) -> ArrayLike:
    """The metric's value at a rate (Mbps); a negative rate counts as 0."""
    p = _check(metric, params)
    r = np.asarray(rate, dtype=np.float64)
    r = np.where(r < 0.0, 0.0, r)
    if metric == "throughput_mbps":
        q = r
    elif metric in ("latency_ms", "startup_delay_s"):
        with np.errstate(divide="ignore", invalid="ignore"):
            tx = p["payload_kbit"] / r
        tx = np.where(p["payload_kbit"] == 0.0, 0.0, tx)  # no payload: no transfer time even at rate 0
        tx = np.where(np.isnan(r), np.nan, tx)
        q = p["base_ms"] + tx
        if metric == "startup_delay_s":
            q = q / 1000.0
    else:
        q = np.maximum(0.0, 1.0 - r / p["bitrate_mbps"])
        q = np.where(np.isnan(r), np.nan, q)
    return _out(q)


def dqos_drate(metric: str, rate: ArrayLike, **params: ArrayLike) -> ArrayLike:
    """Derivative of the metric with respect to the rate (for delta-method sds)."""
    p = _check(metric, params)
    r = np.asarray(rate, dtype=np.float64)
    r = np.where(r < 0.0, 0.0, r)
    if metric == "throughput_mbps":
        g = np.ones_like(r)
    elif metric in ("latency_ms", "startup_delay_s"):
        with np.errstate(divide="ignore", invalid="ignore"):
            g = -p["payload_kbit"] / (r * r)
        g = np.where(p["payload_kbit"] == 0.0, 0.0, g)
        if metric == "startup_delay_s":
            g = g / 1000.0
    else:
        b = p["bitrate_mbps"]
        g = np.where(r < b, -1.0 / b, 0.0)
    return _out(np.where(np.isnan(r), np.nan, g))


def zone_in_rate(metric: str, a: ArrayLike, d: ArrayLike, **params: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """Adequate and desired levels of the metric as rates (Mbps): A_rate <= D_rate.

    For lower-is-better metrics A > D in the metric; the map reverses the order,
    so the optimizer always sees a higher-is-better zone.
    """
    return rate_for_qos(metric, a, **params), rate_for_qos(metric, d, **params)


__all__ = [
    "METRICS",
    "METRIC_PARAMS",
    "higher_is_better",
    "rate_for_qos",
    "qos_for_rate",
    "dqos_drate",
    "zone_in_rate",
]
