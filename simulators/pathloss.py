"""Large-scale propagation from 3GPP TR 38.901 (v17) for UMa and UMi-Street Canyon.

Path loss (Table 7.4.1-1), LOS probability (Table 7.4.2-1) and the log-normal
shadow-fading standard deviations and decorrelation distances (Tables 7.4.1-1,
7.5-6 and 7.6.3.1-2). Distances in metres, carrier frequency in GHz, path loss
and sigma in dB.

Two forms of every formula live here: the NumPy array functions (the readable
reference, tested against hand-evaluated points of the standard) and scalar
``@njit`` twins used inside the fused radio kernel of `simulators.channel`;
`tests/unit/test_pathloss.py` checks the two agree.

Simplifications (see docs/radio.md): the effective environment height h_E is
1 m (exact for UMa users below 13 m, always exact for UMi); 2D distances below
the standard's 10 m minimum are evaluated at 10 m; beyond 5 km the formulas are
extrapolated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit

Scenario = Literal["UMa", "UMi"]

SPEED_OF_LIGHT_M_S = 299_792_458.0
MIN_D2D_M = 10.0  # lower validity limit of every 38.901 UMa/UMi formula
MAX_D2D_M = 5000.0  # upper validity limit (extrapolated beyond, not clipped)

# Integer codes passed into the Numba kernels (strings do not cross cheaply).
SCENARIO_CODES: dict[str, int] = {"UMa": 0, "UMi": 1}


@dataclass(frozen=True)
class ScenarioParams:
    """Constants of one 38.901 scenario."""

    name: str
    code: int
    default_bs_height_m: float
    bs_height_range_m: tuple[float, float]
    ut_height_range_m: tuple[float, float]
    fc_range_ghz: tuple[float, float]
    sigma_sf_los_db: float
    sigma_sf_nlos_db: float
    sf_decorrelation_los_m: float  # Table 7.5-6, "SF correlation distance"
    sf_decorrelation_nlos_m: float
    los_decorrelation_m: float  # Table 7.6.3.1-2, LOS/NLOS state correlation distance


SCENARIOS: dict[str, ScenarioParams] = {
    "UMa": ScenarioParams(
        name="UMa",
        code=0,
        default_bs_height_m=25.0,
        # 38.901 fixes h_BS = 25 m; other masts are allowed but warned about in docs.
        bs_height_range_m=(10.0, 50.0),
        ut_height_range_m=(1.5, 22.5),
        fc_range_ghz=(0.5, 100.0),
        sigma_sf_los_db=4.0,
        sigma_sf_nlos_db=6.0,
        sf_decorrelation_los_m=37.0,
        sf_decorrelation_nlos_m=50.0,
        los_decorrelation_m=50.0,
    ),
    "UMi": ScenarioParams(
        name="UMi",
        code=1,
        default_bs_height_m=10.0,
        bs_height_range_m=(3.0, 25.0),
        ut_height_range_m=(1.5, 22.5),
        fc_range_ghz=(0.5, 100.0),
        sigma_sf_los_db=4.0,
        sigma_sf_nlos_db=7.82,
        sf_decorrelation_los_m=10.0,
        sf_decorrelation_nlos_m=13.0,
        los_decorrelation_m=50.0,
    ),
}


def scenario_params(scenario: str) -> ScenarioParams:
    """Constants of `scenario` ("UMa" or "UMi"); ValueError names the allowed ones."""
    try:
        return SCENARIOS[scenario]
    except KeyError:
        raise ValueError(
            f"unknown path-loss scenario {scenario!r}; allowed: {sorted(SCENARIOS)}"
        ) from None


def validate_inputs(
    scenario: str,
    fc_ghz: float,
    bs_height_m: float | np.ndarray,
    ut_height_m: float | np.ndarray,
) -> None:
    """Raise ValueError when carrier or heights fall outside the scenario's range."""
    p = scenario_params(scenario)
    lo, hi = p.fc_range_ghz
    if not (lo <= fc_ghz <= hi):
        raise ValueError(f"{p.name}: carrier {fc_ghz} GHz outside [{lo}, {hi}] GHz")
    for what, value, (lo, hi) in (
        ("BS height", bs_height_m, p.bs_height_range_m),
        ("UT height", ut_height_m, p.ut_height_range_m),
    ):
        v = np.asarray(value, dtype=float)
        if v.size and (not np.all(np.isfinite(v)) or v.min() < lo or v.max() > hi):
            raise ValueError(
                f"{p.name}: {what} in [{v.min()}, {v.max()}] m outside [{lo}, {hi}] m"
            )


def distance_3d_m(d2d_m: np.ndarray, bs_height_m: np.ndarray | float, ut_height_m: np.ndarray | float) -> np.ndarray:
    """3D distance from 2D distance and the two antenna heights."""
    dh = np.asarray(bs_height_m, dtype=float) - np.asarray(ut_height_m, dtype=float)
    return np.sqrt(np.asarray(d2d_m, dtype=float) ** 2 + dh**2)


def breakpoint_distance_m(
    fc_ghz: float, bs_height_m, ut_height_m, env_height_m: float = 1.0
) -> np.ndarray:
    """d'_BP = 4 h'_BS h'_UT f_c / c with effective heights h' = h - h_E (f_c in Hz)."""
    hb = np.asarray(bs_height_m, dtype=float) - env_height_m
    hu = np.asarray(ut_height_m, dtype=float) - env_height_m
    return 4.0 * hb * hu * fc_ghz * 1e9 / SPEED_OF_LIGHT_M_S


def los_probability(scenario: str, d2d_m: np.ndarray, ut_height_m=1.5) -> np.ndarray:
    """Pr_LOS of Table 7.4.2-1 (outdoor users): 1 up to 18 m, then decaying."""
    p = scenario_params(scenario)
    d = np.maximum(np.asarray(d2d_m, dtype=float), 1e-9)
    d1, d2 = 18.0, (63.0 if p.code == 0 else 36.0)
    base = np.where(d <= d1, 1.0, d1 / d + np.exp(-d / d2) * (1.0 - d1 / d))
    if p.code == 1:
        return base
    h = np.asarray(ut_height_m, dtype=float)
    c_h = np.where(h <= 13.0, 0.0, ((np.clip(h, 13.0, 23.0) - 13.0) / 10.0) ** 1.5)
    boost = 1.0 + c_h * 1.25 * (d / 100.0) ** 3 * np.exp(-d / 150.0)
    return np.where(d <= d1, 1.0, base * boost)


def pathloss_los_db(
    scenario: str, d2d_m: np.ndarray, bs_height_m, ut_height_m, fc_ghz: float
) -> np.ndarray:
    """LOS path loss: PL1 before the breakpoint, PL2 after (Table 7.4.1-1)."""
    p = scenario_params(scenario)
    d2 = np.maximum(np.asarray(d2d_m, dtype=float), MIN_D2D_M)
    hb = np.asarray(bs_height_m, dtype=float)
    hu = np.asarray(ut_height_m, dtype=float)
    d3 = distance_3d_m(d2, hb, hu)
    dbp = breakpoint_distance_m(fc_ghz, hb, hu)
    lf = 20.0 * np.log10(fc_ghz)
    if p.code == 0:
        pl1 = 28.0 + 22.0 * np.log10(d3) + lf
        pl2 = 28.0 + 40.0 * np.log10(d3) + lf - 9.0 * np.log10(dbp**2 + (hb - hu) ** 2)
    else:
        pl1 = 32.4 + 21.0 * np.log10(d3) + lf
        pl2 = 32.4 + 40.0 * np.log10(d3) + lf - 9.5 * np.log10(dbp**2 + (hb - hu) ** 2)
    return np.where(d2 <= dbp, pl1, pl2)


def pathloss_nlos_db(
    scenario: str, d2d_m: np.ndarray, bs_height_m, ut_height_m, fc_ghz: float
) -> np.ndarray:
    """NLOS path loss: max(PL_LOS, PL'_NLOS) (Table 7.4.1-1)."""
    p = scenario_params(scenario)
    d2 = np.maximum(np.asarray(d2d_m, dtype=float), MIN_D2D_M)
    hu = np.asarray(ut_height_m, dtype=float)
    d3 = distance_3d_m(d2, bs_height_m, hu)
    if p.code == 0:
        pl_n = 13.54 + 39.08 * np.log10(d3) + 20.0 * np.log10(fc_ghz) - 0.6 * (hu - 1.5)
    else:
        pl_n = 22.4 + 35.3 * np.log10(d3) + 21.3 * np.log10(fc_ghz) - 0.3 * (hu - 1.5)
    return np.maximum(pathloss_los_db(scenario, d2, bs_height_m, hu, fc_ghz), pl_n)


def pathloss_db(
    scenario: str,
    d2d_m: np.ndarray,
    bs_height_m,
    ut_height_m,
    fc_ghz: float,
    los: np.ndarray,
) -> np.ndarray:
    """Path loss of each link in its LOS state (`los` True -> LOS formula)."""
    return np.where(
        np.asarray(los, dtype=bool),
        pathloss_los_db(scenario, d2d_m, bs_height_m, ut_height_m, fc_ghz),
        pathloss_nlos_db(scenario, d2d_m, bs_height_m, ut_height_m, fc_ghz),
    )


def shadowing_sigma_db(scenario: str, los: np.ndarray) -> np.ndarray:
    """Log-normal shadow-fading standard deviation per link (dB) by LOS state."""
    p = scenario_params(scenario)
    return np.where(np.asarray(los, dtype=bool), p.sigma_sf_los_db, p.sigma_sf_nlos_db)


def shadowing_decorrelation_m(scenario: str, los: np.ndarray) -> np.ndarray:
    """Shadow-fading decorrelation distance per link (m) by LOS state."""
    p = scenario_params(scenario)
    return np.where(
        np.asarray(los, dtype=bool), p.sf_decorrelation_los_m, p.sf_decorrelation_nlos_m
    )


_INV_LN10 = 1.0 / math.log(10.0)


def los_probability_inverse(scenario: str, p_target: float) -> float:
    """Distance (m) beyond which Pr_LOS <= p_target (users at or below 13 m).

    Pr_LOS falls strictly from 1 at 18 m, so the crossing is unique; found by
    bisection. The radio kernel uses a few of these to settle most links'
    LOS state from their distance alone.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    lo, hi = 18.0, 18.0
    while los_probability(scenario, np.array([hi]), 1.5)[0] > p_target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if los_probability(scenario, np.array([mid]), 1.5)[0] > p_target:
            lo = mid
        else:
            hi = mid
    return hi


# --- scalar twins for the Numba kernels (same formulas, one link at a time) ---


@njit(cache=True, inline="always")
def los_probability_scalar(code: int, d2d: float, h_ut: float) -> float:
    if d2d <= 18.0:
        return 1.0
    if code == 0:
        base = 18.0 / d2d + math.exp(-d2d / 63.0) * (1.0 - 18.0 / d2d)
        if h_ut <= 13.0:
            return base
        c_h = ((min(h_ut, 23.0) - 13.0) / 10.0) ** 1.5
        return base * (1.0 + c_h * 1.25 * (d2d / 100.0) ** 3 * math.exp(-d2d / 150.0))
    return 18.0 / d2d + math.exp(-d2d / 36.0) * (1.0 - 18.0 / d2d)


@njit(cache=True, inline="always")
def pathloss_constants(code: int, h_bs: float, h_ut: float, fc_ghz: float):
    """Terms of the path-loss formulas that do not depend on distance.

    Returns (dh^2, d'_BP, a1, b1, a2, a_n, b_n) with, in log10(d3D) = L:
    PL1 = a1 + b1 L, PL2 = a2 + 40 L, PL'_NLOS = a_n + b_n L. The radio kernel
    computes them once per user and mast height instead of once per link.
    """
    dh = h_bs - h_ut
    dbp = 4.0 * (h_bs - 1.0) * (h_ut - 1.0) * fc_ghz * 1e9 / SPEED_OF_LIGHT_M_S
    lf = math.log10(fc_ghz)
    if code == 0:
        return (
            dh * dh, dbp, 28.0 + 20.0 * lf, 22.0,
            28.0 + 20.0 * lf - 9.0 * math.log10(dbp * dbp + dh * dh),
            13.54 + 20.0 * lf - 0.6 * (h_ut - 1.5), 39.08,
        )  # fmt: skip
    return (
        dh * dh, dbp, 32.4 + 20.0 * lf, 21.0,
        32.4 + 20.0 * lf - 9.5 * math.log10(dbp * dbp + dh * dh),
        22.4 + 21.3 * lf - 0.3 * (h_ut - 1.5), 35.3,
    )  # fmt: skip


@njit(cache=True, inline="always")
def pathloss_from_constants(
    d2d: float, dh2: float, dbp: float, a1: float, b1: float, a2: float, a_n: float, b_n: float, los: bool
) -> float:
    d2 = max(d2d, MIN_D2D_M)
    ld3 = 0.5 * math.log(d2 * d2 + dh2) * _INV_LN10  # log10(d3D); log is cheaper than log10
    pl_los = a1 + b1 * ld3 if d2 <= dbp else a2 + 40.0 * ld3
    if los:
        return pl_los
    return max(pl_los, a_n + b_n * ld3)


@njit(cache=True)
def pathloss_scalar(
    code: int, d2d: float, h_bs: float, h_ut: float, fc_ghz: float, los: bool
) -> float:
    """Path loss of one link (dB): the scalar twin of `pathloss_db`."""
    dh2, dbp, a1, b1, a2, a_n, b_n = pathloss_constants(code, h_bs, h_ut, fc_ghz)
    return pathloss_from_constants(d2d, dh2, dbp, a1, b1, a2, a_n, b_n, los)
