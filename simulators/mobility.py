"""User movement: static, random waypoint and Gauss-Markov, vectorized over users.

Positions are (n, 2) metres inside a rectangle `bounds` = (xmin, ymin, xmax,
ymax) (a layout's `bounds`); a step of `dt_s` seconds returns the new state and
the path length each user covered (m), which drives the spatial decorrelation
of shadowing (`simulators.channel.advance_link_state`). Randomness comes
only from the given Generator in a fixed order, so a run is reproducible
from its seed.

- Static: never moves.
- Random waypoint (Johnson & Maltz 1996; zero pause): walk straight to a
  uniformly drawn waypoint at the user's speed, draw the next one on arrival
  and walk the rest of the step towards it.
- Gauss-Markov (Liang & Haas 1999; Camp et al. 2002): speed and heading are
  AR(1) processes with memory alpha around the user's mean speed and mean
  heading; at an edge the user (and its mean heading) is mirrored back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

Bounds = tuple[float, float, float, float]

STATIC, RANDOM_WAYPOINT, GAUSS_MARKOV = 0, 1, 2
MODEL_CODES = {"static": STATIC, "random_waypoint": RANDOM_WAYPOINT, "gauss_markov": GAUSS_MARKOV}

# 3GPP evaluation speeds (TR 38.913 / TR 38.901 indoor-outdoor users): 3 km/h
# pedestrians, 30 km/h urban vehicles.
PEDESTRIAN_KMH = 3.0
VEHICULAR_KMH = 30.0


def kmh_to_mps(kmh: np.ndarray | float) -> np.ndarray:
    return np.asarray(kmh, dtype=float) / 3.6


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles (rad) mapped to [-pi, pi)."""
    return np.mod(np.asarray(a, dtype=float) + np.pi, 2.0 * np.pi) - np.pi


def _check_bounds(bounds: Bounds) -> None:
    x0, y0, x1, y1 = bounds
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"bounds must be (xmin, ymin, xmax, ymax) with min < max, got {bounds}")


def reflect(xy: np.ndarray, bounds: Bounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror points back into `bounds` (any overshoot, even several widths).

    Returns (xy, flipped_x, flipped_y): the flags say whether the x (y)
    direction of motion ended up reversed (an odd number of bounces).
    """
    lo = np.array(bounds[:2], dtype=float)
    width = np.array([bounds[2] - bounds[0], bounds[3] - bounds[1]], dtype=float)
    t = np.asarray(xy, dtype=float) - lo
    bounces = np.floor(t / width)
    t = np.mod(t, 2.0 * width)
    t = np.where(t > width, 2.0 * width - t, t)
    odd = np.mod(bounces, 2.0) != 0.0
    return lo + t, odd[:, 0], odd[:, 1]


@dataclass(frozen=True, eq=False)
class MobilityState:
    """Per-user movement state; arrays of length n (xy, waypoint: (n, 2)).

    heading and mean_heading in radians counter-clockwise from +x; speed in
    m/s. Models use the fields they need and carry the others unchanged.
    """

    xy: np.ndarray
    waypoint: np.ndarray
    speed: np.ndarray
    heading: np.ndarray
    mean_heading: np.ndarray


def uniform_points(n: int, bounds: Bounds, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = bounds
    return np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])


def init_mobility(
    xy: np.ndarray, mean_speed_mps: np.ndarray, bounds: Bounds, rng: np.random.Generator
) -> MobilityState:
    """State at the start: a first waypoint and a random (mean) heading per user."""
    _check_bounds(bounds)
    xy = np.asarray(xy, dtype=float)
    n = xy.shape[0]
    speed = np.broadcast_to(np.asarray(mean_speed_mps, dtype=float), (n,)).copy()
    if np.any(speed < 0) or not np.all(np.isfinite(speed)):
        raise ValueError("speeds must be finite and >= 0")
    heading = rng.uniform(-np.pi, np.pi, n)
    return MobilityState(
        xy=xy.copy(),
        waypoint=uniform_points(n, bounds, rng),
        speed=speed,
        heading=heading,
        mean_heading=heading.copy(),
    )


def random_waypoint_step(
    xy: np.ndarray,
    waypoint: np.ndarray,
    speed_mps: np.ndarray,
    dt_s: float,
    bounds: Bounds,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random-waypoint step. Returns (xy, waypoint, path length moved (m)).

    Every user walks exactly speed x dt: on reaching its waypoint it draws a
    new uniform one and walks the rest of the step towards it (repeated while
    steps outrun waypoints). Each round draws waypoints for all users and uses
    them only for the arriving ones, so the stream is reproducible.
    """
    n = xy.shape[0]
    rest = np.broadcast_to(np.asarray(speed_mps, dtype=float) * dt_s, (n,)).copy()
    moved = np.zeros(n)
    xy = np.array(xy, dtype=float)
    waypoint = np.array(waypoint, dtype=float)
    for _ in range(64):  # a user needs more rounds only if waypoints keep landing within one step
        delta = waypoint - xy
        dist = np.hypot(delta[:, 0], delta[:, 1])
        arrive = (rest > 0.0) & (rest >= dist)
        walk = np.minimum(rest, dist)
        xy = xy + (walk / np.maximum(dist, 1e-300))[:, None] * delta
        moved += walk
        rest -= walk
        if not arrive.any():
            break
        fresh = uniform_points(n, bounds, rng)
        waypoint = np.where(arrive[:, None], fresh, waypoint)
    return xy, waypoint, moved


def gauss_markov_step(
    xy: np.ndarray,
    speed: np.ndarray,
    heading: np.ndarray,
    mean_speed_mps: np.ndarray,
    mean_heading: np.ndarray,
    dt_s: float,
    bounds: Bounds,
    rng: np.random.Generator,
    alpha: float = 0.85,
    speed_std_mps: np.ndarray | float | None = None,
    heading_std_rad: float = np.pi / 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One Gauss-Markov step. Returns (xy, speed, heading, mean_heading, moved).

    s' = a s + (1 - a) s_mean + sqrt(1 - a^2) sigma_s e1 (clipped at 0),
    h' = h + (1 - a) wrap(h_mean - h) + sqrt(1 - a^2) sigma_h e2,
    then the user moves s' dt along h'. `speed_std_mps` defaults to 20 % of
    the mean speed. Reflection at the edges mirrors heading and mean heading.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    n = xy.shape[0]
    mean_s = np.broadcast_to(np.asarray(mean_speed_mps, dtype=float), (n,))
    sd_s = 0.2 * mean_s if speed_std_mps is None else np.broadcast_to(speed_std_mps, (n,))
    e = rng.standard_normal((2, n))
    k = np.sqrt(1.0 - alpha * alpha)
    new_speed = np.maximum(alpha * speed + (1.0 - alpha) * mean_s + k * sd_s * e[0], 0.0)
    dh = wrap_angle(mean_heading - heading)
    new_heading = heading + (1.0 - alpha) * dh + k * heading_std_rad * e[1]
    step = new_speed * dt_s
    raw = xy + step[:, None] * np.column_stack([np.cos(new_heading), np.sin(new_heading)])
    new_xy, fx, fy = reflect(raw, bounds)
    # Mirror heading and its mean so the user does not steer back into the wall.
    new_heading = np.where(fx, np.pi - new_heading, new_heading)
    new_heading = np.where(fy, -new_heading, new_heading)
    new_mean = np.where(fx, np.pi - mean_heading, mean_heading)
    new_mean = np.where(fy, -new_mean, new_mean)
    return new_xy, new_speed, wrap_angle(new_heading), wrap_angle(new_mean), step


def step_mobility(
    state: MobilityState,
    model: np.ndarray,
    mean_speed_mps: np.ndarray,
    dt_s: float,
    bounds: Bounds,
    rng: np.random.Generator,
    alpha: float = 0.85,
    heading_std_rad: float = np.pi / 4,
) -> tuple[MobilityState, np.ndarray]:
    """Advance every user by its own model (`model` codes per user, (n,)).

    Random-waypoint users walk at `mean_speed_mps`; Gauss-Markov users vary
    around it. Returns the new state and the path length moved (m) per user.
    """
    _check_bounds(bounds)
    if dt_s < 0:
        raise ValueError(f"dt_s must be >= 0, got {dt_s}")
    model = np.asarray(model)
    n = state.xy.shape[0]
    if model.shape != (n,) or not np.isin(model, list(MODEL_CODES.values())).all():
        raise ValueError(f"model must be ({n},) codes in {MODEL_CODES}")
    mean_s = np.broadcast_to(np.asarray(mean_speed_mps, dtype=float), (n,))
    rw = np.flatnonzero(model == RANDOM_WAYPOINT)
    gm = np.flatnonzero(model == GAUSS_MARKOV)
    xy, waypoint = state.xy.copy(), state.waypoint.copy()
    speed = np.where(model == STATIC, 0.0, mean_s)
    heading, mean_heading = state.heading.copy(), state.mean_heading.copy()
    moved = np.zeros(n)
    # Each model moves only its own users (random waypoint first, then
    # Gauss-Markov), so the random stream is fixed by the seed and the mix.
    if rw.size:
        xy[rw], waypoint[rw], moved[rw] = random_waypoint_step(
            state.xy[rw], state.waypoint[rw], mean_s[rw], dt_s, bounds, rng
        )
    if gm.size:
        xy[gm], speed[gm], heading[gm], mean_heading[gm], moved[gm] = gauss_markov_step(
            state.xy[gm], state.speed[gm], state.heading[gm], mean_s[gm], state.mean_heading[gm],
            dt_s, bounds, rng, alpha=alpha, heading_std_rad=heading_std_rad,
        )  # fmt: skip
    new = MobilityState(xy=xy, waypoint=waypoint, speed=speed, heading=heading, mean_heading=mean_heading)
    return new, moved


# ------------------------------------------------------------ compiled twin
# `step_mobility_nb` is `step_mobility` as one Numba pass (same draws from the same
# Generator in the same order, same floating-point operations), so a compiled
# multi-epoch loop (`simulators.compiled_run`) can move users without a Python call.


@njit(cache=True, inline="always")
def _np_mod(a: float, b: float) -> float:
    """np.mod for floats (sign of the divisor), operation for operation."""
    m = np.fmod(a, b)
    if m != 0.0:
        if (b < 0.0) != (m < 0.0):
            m += b
    else:
        m = math.copysign(0.0, b)
    return m


@njit(cache=True, inline="always")
def _wrap_angle_scalar(a: float) -> float:
    return _np_mod(a + np.pi, 2.0 * np.pi) - np.pi


@njit(cache=True, inline="always")
def _reflect_scalar(v: float, lo: float, width: float) -> tuple[float, bool]:
    t = v - lo
    bounces = math.floor(t / width)
    t = _np_mod(t, 2.0 * width)
    if t > width:
        t = 2.0 * width - t
    return lo + t, _np_mod(bounces, 2.0) != 0.0


@njit(cache=True)
def mobility_kernel(model, mean_s, dt_s, x0, y0, x1, y1, alpha, heading_std, xy, waypoint, speed, heading,
                    mean_heading, moved, rest, fresh, rng):  # fmt: skip
    """One step of every user, in place (xy, waypoint, speed, heading, mean_heading, moved).

    rest, fresh: scratch of n and (2, n). Random waypoint users first (each round
    draws x then y of a fresh point for every such user), then Gauss-Markov users
    (all speed innovations, then all heading innovations), as `step_mobility`.
    """
    n = model.shape[0]
    n_rw = 0
    n_gm = 0
    for u in range(n):
        moved[u] = 0.0
        if model[u] == RANDOM_WAYPOINT:
            n_rw += 1
        elif model[u] == GAUSS_MARKOV:
            n_gm += 1
        else:
            speed[u] = 0.0
    if n_rw:
        for u in range(n):
            if model[u] == RANDOM_WAYPOINT:
                rest[u] = mean_s[u] * dt_s
                speed[u] = mean_s[u]
        for _ in range(64):
            any_arrive = False
            for u in range(n):
                if model[u] != RANDOM_WAYPOINT:
                    continue
                dx = waypoint[u, 0] - xy[u, 0]
                dy = waypoint[u, 1] - xy[u, 1]
                dist = math.hypot(dx, dy)
                arrive = rest[u] > 0.0 and rest[u] >= dist
                walk = min(rest[u], dist)
                f = walk / max(dist, 1e-300)
                xy[u, 0] = xy[u, 0] + f * dx
                xy[u, 1] = xy[u, 1] + f * dy
                moved[u] += walk
                rest[u] -= walk
                fresh[0, u] = 1.0 if arrive else 0.0  # arrival flag until the draws below
                any_arrive = any_arrive or arrive
            if not any_arrive:
                break
            # uniform_points: n_rw x-coordinates, then n_rw y-coordinates.
            for u in range(n):
                if model[u] == RANDOM_WAYPOINT:
                    fresh[1, u] = rng.uniform(x0, x1)
                    if fresh[0, u] == 1.0:
                        waypoint[u, 0] = fresh[1, u]
            for u in range(n):
                if model[u] == RANDOM_WAYPOINT:
                    yv = rng.uniform(y0, y1)
                    if fresh[0, u] == 1.0:
                        waypoint[u, 1] = yv
    if n_gm:
        k = math.sqrt(1.0 - alpha * alpha)
        for u in range(n):
            if model[u] == GAUSS_MARKOV:
                fresh[0, u] = rng.standard_normal()
        for u in range(n):
            if model[u] == GAUSS_MARKOV:
                fresh[1, u] = rng.standard_normal()
        for u in range(n):
            if model[u] != GAUSS_MARKOV:
                continue
            ms = mean_s[u]
            s = max(alpha * speed[u] + (1.0 - alpha) * ms + k * (0.2 * ms) * fresh[0, u], 0.0)
            h = heading[u]
            dh = _wrap_angle_scalar(mean_heading[u] - h)
            h = h + (1.0 - alpha) * dh + k * heading_std * fresh[1, u]
            step = s * dt_s
            nx, fx = _reflect_scalar(xy[u, 0] + step * math.cos(h), x0, x1 - x0)
            ny, fy = _reflect_scalar(xy[u, 1] + step * math.sin(h), y0, y1 - y0)
            mh = mean_heading[u]
            if fx:
                h = np.pi - h
                mh = np.pi - mh
            if fy:
                h = -h
                mh = -mh
            xy[u, 0] = nx
            xy[u, 1] = ny
            speed[u] = s
            heading[u] = _wrap_angle_scalar(h)
            mean_heading[u] = _wrap_angle_scalar(mh)
            moved[u] = step


def step_mobility_nb(
    state: MobilityState,
    model: np.ndarray,
    mean_speed_mps: np.ndarray,
    dt_s: float,
    bounds: Bounds,
    rng: np.random.Generator,
    alpha: float = 0.85,
    heading_std_rad: float = np.pi / 4,
) -> tuple[MobilityState, np.ndarray]:
    """`step_mobility` in one Numba pass: same signature, draws and result."""
    _check_bounds(bounds)
    if dt_s < 0:
        raise ValueError(f"dt_s must be >= 0, got {dt_s}")
    model = np.ascontiguousarray(model, dtype=np.int64)
    if np.any(model == GAUSS_MARKOV) and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    n = state.xy.shape[0]
    if model.shape != (n,) or not np.isin(model, list(MODEL_CODES.values())).all():
        raise ValueError(f"model must be ({n},) codes in {MODEL_CODES}")
    mean_s = np.ascontiguousarray(np.broadcast_to(np.asarray(mean_speed_mps, dtype=float), (n,)))
    xy, waypoint = np.array(state.xy, dtype=float), np.array(state.waypoint, dtype=float)
    speed, heading = np.array(state.speed, dtype=float), np.array(state.heading, dtype=float)
    mean_heading = np.array(state.mean_heading, dtype=float)
    moved = np.zeros(n)
    x0, y0, x1, y1 = (float(b) for b in bounds)
    mobility_kernel(model, mean_s, float(dt_s), x0, y0, x1, y1, float(alpha), float(heading_std_rad), xy, waypoint,
                    speed, heading, mean_heading, moved, np.empty(n), np.empty((2, n)), rng)
    return MobilityState(xy=xy, waypoint=waypoint, speed=speed, heading=heading, mean_heading=mean_heading), moved
