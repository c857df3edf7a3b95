"""Base-station antenna gain: the 3GPP sector element pattern and an omni antenna.

Sector pattern of TR 38.901 Table 7.3-1 (single element, used as the whole
sector antenna as in system-level calibration):

    A_H(phi)   = -min(12 (phi / phi_3dB)^2, A_m)            horizontal, phi_3dB = 65 deg
    A_V(theta) = -min(12 ((theta - theta_tilt) / theta_3dB)^2, SLA_V)   vertical
    A(phi, theta) = G_max - min(-(A_H + A_V), A_m)          G_max = 8 dBi, A_m = 30 dB

phi is the azimuth of the user relative to the sector boresight, theta the
zenith angle from the mast to the user (90 deg = horizon) and theta_tilt the
zenith angle of the electrical tilt (90 + downtilt). With the vertical part
disabled A = G_max + A_H. Angles in degrees, gains in dBi.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class SectorPattern:
    """Parameters of the 3GPP sector pattern (defaults: TR 38.901 Table 7.3-1)."""

    max_gain_dbi: float = 8.0
    phi_3db_deg: float = 65.0
    theta_3db_deg: float = 65.0
    front_to_back_db: float = 30.0  # A_m
    side_lobe_vertical_db: float = 30.0  # SLA_V
    downtilt_deg: float = 12.0  # electrical downtilt below the horizon
    vertical: bool = True  # False: horizontal pattern only (2D studies)

    def __post_init__(self) -> None:
        if self.phi_3db_deg <= 0 or self.theta_3db_deg <= 0:
            raise ValueError("antenna 3 dB beamwidths must be positive")
        if self.front_to_back_db < 0 or self.side_lobe_vertical_db < 0:
            raise ValueError("antenna attenuation limits must be non-negative")


def wrap_angle_deg(angle_deg: np.ndarray) -> np.ndarray:
    """Map angles to [-180, 180)."""
    return (np.asarray(angle_deg, dtype=float) + 180.0) % 360.0 - 180.0


def relative_azimuth_deg(dx: np.ndarray, dy: np.ndarray, boresight_deg) -> np.ndarray:
    """Azimuth of the vector (dx, dy) (mast -> user) relative to the boresight.

    Azimuths are counter-clockwise from the +x axis (east), as in the layout.
    """
    return wrap_angle_deg(np.degrees(np.arctan2(dy, dx)) - boresight_deg)


def zenith_angle_deg(d2d_m: np.ndarray, bs_height_m, ut_height_m) -> np.ndarray:
    """Zenith angle at the mast towards the user: 90 deg = horizon, >90 = below."""
    return 90.0 + np.degrees(
        np.arctan2(np.asarray(bs_height_m, float) - np.asarray(ut_height_m, float), d2d_m)
    )


def horizontal_gain_db(phi_deg: np.ndarray, pattern: SectorPattern = SectorPattern()) -> np.ndarray:
    """A_H(phi) = -min(12 (phi/phi_3dB)^2, A_m), relative to boresight gain."""
    phi = wrap_angle_deg(phi_deg)
    return -np.minimum(12.0 * (phi / pattern.phi_3db_deg) ** 2, pattern.front_to_back_db)


def vertical_gain_db(theta_deg: np.ndarray, pattern: SectorPattern = SectorPattern()) -> np.ndarray:
    """A_V(theta) = -min(12 ((theta - theta_tilt)/theta_3dB)^2, SLA_V)."""
    tilt = 90.0 + pattern.downtilt_deg
    return -np.minimum(
        12.0 * ((np.asarray(theta_deg, float) - tilt) / pattern.theta_3db_deg) ** 2,
        pattern.side_lobe_vertical_db,
    )


def sector_gain_db(
    phi_deg: np.ndarray,
    theta_deg: np.ndarray | None = None,
    pattern: SectorPattern = SectorPattern(),
) -> np.ndarray:
    """Total gain (dBi) towards azimuth `phi_deg` (relative) and zenith `theta_deg`."""
    a_h = horizontal_gain_db(phi_deg, pattern)
    if theta_deg is None or not pattern.vertical:
        return pattern.max_gain_dbi + a_h
    a_v = vertical_gain_db(theta_deg, pattern)
    return pattern.max_gain_dbi - np.minimum(-(a_h + a_v), pattern.front_to_back_db)


def omni_gain_db(shape: tuple[int, ...], gain_dbi: float = 0.0) -> np.ndarray:
    """An omnidirectional antenna: the same gain in every direction."""
    return np.full(shape, float(gain_dbi))


@njit(cache=True, inline="always")
def vertical_attenuation_scalar(theta_deg: float, theta_3db: float, sla_v: float, downtilt_deg: float) -> float:
    """A_V(theta) (dB, <= 0). Depends on the site only, so the kernel computes it
    once per user and site, not per sector."""
    t = (theta_deg - 90.0 - downtilt_deg) / theta_3db
    return -min(12.0 * t * t, sla_v)


@njit(cache=True, inline="always")
def sector_gain_from_vertical(phi_deg: float, a_v: float, max_gain_dbi: float, phi_3db: float, a_m: float) -> float:
    """G_max - min(-(A_H(phi) + a_v), A_m); a_v = 0 gives the horizontal cut alone."""
    phi = phi_deg  # wrap to [-180, 180) without the slow float modulo
    while phi >= 180.0:
        phi -= 360.0
    while phi < -180.0:
        phi += 360.0
    r = phi / phi_3db
    a_h = -min(12.0 * r * r, a_m)
    return max_gain_dbi - min(-(a_h + a_v), a_m)


@njit(cache=True, inline="always")
def sector_gain_scalar(
    phi_deg: float,
    theta_deg: float,
    max_gain_dbi: float,
    phi_3db: float,
    theta_3db: float,
    a_m: float,
    sla_v: float,
    downtilt_deg: float,
    vertical: bool,
) -> float:
    """Scalar twin of `sector_gain_db`."""
    a_v = vertical_attenuation_scalar(theta_deg, theta_3db, sla_v, downtilt_deg) if vertical else 0.0
    return sector_gain_from_vertical(phi_deg, a_v, max_gain_dbi, phi_3db, a_m)


@njit(cache=True, inline="always")
def zenith_angle_scalar(d2d: float, h_bs: float, h_ut: float) -> float:
    return 90.0 + math.degrees(math.atan2(h_bs - h_ut, d2d))


# atan on [0, 1] as an odd degree-19 polynomial (least squares on 4000 Chebyshev
# nodes; max error 1e-9 rad = 6e-8 deg). libm's atan2 costs ~20-30 ns a call and
# is the largest cost of the radio kernel; this costs a few ns.
_ATAN_COEF = (
    0.9999999841277822,
    -0.333331947387072,
    0.19996626041685528,
    -0.1424841859941297,
    0.10882237729399476,
    -0.08222729239912155,
    0.05514476858711209,
    -0.02858193153088024,
    0.009606583465693902,
    -0.0015164540529662707,
)
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9 = _ATAN_COEF
_DEG = 180.0 / math.pi


@njit(cache=True, inline="always")
def atan2_deg_scalar(y: float, x: float) -> float:
    """atan2(y, x) in degrees, within 1e-7 deg of the exact value."""
    ax = abs(x)
    ay = abs(y)
    t = min(ax, ay) / max(ax, ay, 1e-300)
    s = t * t
    s2 = s * s
    s4 = s2 * s2
    # Estrin's scheme: a shorter dependency chain than Horner's, same polynomial.
    p03 = (_C0 + _C1 * s) + (_C2 + _C3 * s) * s2
    p47 = (_C4 + _C5 * s) + (_C6 + _C7 * s) * s2
    r = t * (p03 + p47 * s4 + (_C8 + _C9 * s) * (s4 * s4))
    # Written as selects so the compiler need not branch on the quadrant.
    r = (0.5 * math.pi - r) if ay > ax else r
    r = (math.pi - r) if x < 0.0 else r
    return math.copysign(r, y) * _DEG
