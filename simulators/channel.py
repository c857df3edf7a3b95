"""Radio channel: link gains, RSRP, fast fading, SINR and SINR -> CQI -> efficiency.

Per epoch the simulator does, for users x cells (see docs/radio.md):

1. `refresh_due` picks the users that moved far enough since their last
   refresh (large-scale gains change over metres, not per epoch).
2. `refresh_links` (hot path, in place on a `Links` from `init_links`):
   moves their per-(user, site) shadowing and LOS latents along the path
   walked (Gudmundson AR(1), so both are correlated in space and time), then
   rewrites gain = antenna gain - TR 38.901 path loss - shadowing (dB), RSRP
   (dBm per RE, for `simulators.handover`) and received power (mW).
   `advance_link_state` and `link_gain_db` are the same steps as pure
   functions.
3. `sinr_db`: serving power / (sum over other cells of load x power + noise)
   for one or several policies' cell loads at once, with Rayleigh fast fading
   drawn per epoch from a counter-based hash of (epoch key, user, cell), so
   every policy evaluated in the same epoch sees the same fading (common
   random numbers) and nothing is stored.
4. `spectral_efficiency`: SINR -> CQI (TS 38.214 table 1 or 2) -> bit/s/Hz,
   `prb_rate_bps` -> bit/s per PRB.

Units: dBm, dB, mW, metres, GHz. Hot loops are Numba kernels behind plain
functions; each has a NumPy reference of the same signature (`*_reference`)
that the tests compare it with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.special import ndtr

from simulators.antenna import (
    SectorPattern,
    atan2_deg_scalar,
    relative_azimuth_deg,
    sector_gain_db,
    sector_gain_from_vertical,
    vertical_attenuation_scalar,
    zenith_angle_deg,
)
from simulators.layout import Layout, site_offsets
from simulators.pathloss import (
    los_probability,
    los_probability_inverse,
    los_probability_scalar,
    pathloss_db,
    pathloss_constants,
    pathloss_from_constants,
    scenario_params,
    shadowing_sigma_db,
    validate_inputs,
)

THERMAL_NOISE_DBM_HZ = -174.0

# TS 38.214 Table 5.2.2.1-2 (CQI table 1, up to 64QAM) and 5.2.2.1-3 (table 2,
# up to 256QAM): modulation order Qm and code rate x 1024 for CQI 1..15. The
# efficiency is Qm * R / 1024 (bit per resource element); CQI 0 = out of range.
CQI_TABLE_1 = np.array(
    [
        (2, 78), (2, 120), (2, 193), (2, 308), (2, 449), (2, 602),
        (4, 378), (4, 490), (4, 616),
        (6, 466), (6, 567), (6, 666), (6, 772), (6, 873), (6, 948),
    ],
    dtype=float,
)
CQI_TABLE_2 = np.array(
    [
        (2, 78), (2, 193), (2, 449),
        (4, 378), (4, 490), (4, 616),
        (6, 466), (6, 567), (6, 666), (6, 772), (6, 873),
        (8, 711), (8, 797), (8, 885), (8, 948),
    ],
    dtype=float,
)
CQI_TABLES = {1: CQI_TABLE_1, 2: CQI_TABLE_2}


# ---------------------------------------------------------------- carrier, noise


def occupied_bandwidth_hz(n_prb: int, scs_khz: float) -> float:
    """Bandwidth the PRBs occupy: n_prb x 12 subcarriers x subcarrier spacing."""
    return float(n_prb) * 12.0 * float(scs_khz) * 1e3


def validate_carrier(bandwidth_mhz: float, scs_khz: float, n_prb: int) -> None:
    """ValueError unless the PRBs fit the channel bandwidth at a NR numerology."""
    if scs_khz not in (15.0, 30.0, 60.0, 120.0, 240.0):
        raise ValueError(f"subcarrier spacing {scs_khz} kHz is not 15 x 2^mu (15..240)")
    if n_prb < 1:
        raise ValueError(f"PRB count must be >= 1, got {n_prb}")
    occupied = occupied_bandwidth_hz(n_prb, scs_khz)
    if occupied > bandwidth_mhz * 1e6:
        raise ValueError(
            f"{n_prb} PRBs at {scs_khz} kHz occupy {occupied / 1e6:.2f} MHz, "
            f"more than the {bandwidth_mhz} MHz channel"
        )


def thermal_noise_dbm(
    bandwidth_hz: float, noise_figure_db: float, n0_dbm_hz: float = THERMAL_NOISE_DBM_HZ
) -> float:
    """Receiver noise power: N0 + 10 log10(B) + NF (dBm)."""
    return n0_dbm_hz + 10.0 * math.log10(bandwidth_hz) + noise_figure_db


def dbm_to_mw(dbm: np.ndarray | float) -> np.ndarray:
    return np.power(10.0, np.asarray(dbm, dtype=float) / 10.0)


def mw_to_dbm(mw: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(np.asarray(mw, dtype=float))


def received_power_mw(gain_db: np.ndarray, tx_power_dbm: np.ndarray | float) -> np.ndarray:
    """Mean received power (mW) over the whole carrier, (n, C): tx power + gain."""
    return np.exp((np.asarray(gain_db) + np.asarray(tx_power_dbm, dtype=float)) * (math.log(10.0) / 10.0))


def rsrp_dbm(gain_db: np.ndarray, tx_power_dbm: np.ndarray | float, n_prb: int) -> np.ndarray:
    """RSRP (dBm per resource element): total power spread over 12 x n_prb REs."""
    return np.asarray(gain_db) + np.asarray(tx_power_dbm, dtype=float) - 10.0 * math.log10(12.0 * n_prb)


# ---------------------------------------------------- spatially correlated state


def init_link_state(
    n_users: int, n_sites: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fresh latents (z_sf, z_los), each (n_users, n_sites) standard normal.

    Shadowing and LOS state are per (user, site): the sectors of one mast see
    the same buildings.
    """
    return rng.standard_normal((n_users, n_sites)), rng.standard_normal((n_users, n_sites))


def evolve_latent(
    z: np.ndarray, moved_m: np.ndarray, decorrelation_m: float, innovation: np.ndarray
) -> np.ndarray:
    """Gudmundson AR(1): z' = rho z + sqrt(1 - rho^2) e, rho = exp(-moved / d_corr).

    Keeps z standard normal; a user that did not move keeps its value exactly.
    z, innovation (n, S); `moved_m` is per user (n,), broadcast over sites.
    """
    rho = np.exp(-np.asarray(moved_m, dtype=float) / float(decorrelation_m))[:, None]
    return rho * z + np.sqrt(1.0 - rho * rho) * innovation


def advance_link_state(
    z_sf: np.ndarray,
    z_los: np.ndarray,
    los: np.ndarray,
    moved_m: np.ndarray,
    scenario: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Move shadowing and LOS latents of the given users by the distance moved.

    Shadowing decorrelates over the LOS/NLOS decorrelation distance of each
    link's current state (TR 38.901 Table 7.5-6), LOS state over Table
    7.6.3.1-2's distance. Draws 2 x z.size normals from `rng`.
    """
    p = scenario_params(scenario)
    e = rng.standard_normal((2,) + z_sf.shape)
    # rho is per user and LOS state: two per-user exps instead of one per link.
    sf = np.where(
        los,
        evolve_latent(z_sf, moved_m, p.sf_decorrelation_los_m, e[0]),
        evolve_latent(z_sf, moved_m, p.sf_decorrelation_nlos_m, e[0]),
    )
    return sf, evolve_latent(z_los, moved_m, p.los_decorrelation_m, e[1])


def refresh_due(
    since_refresh_m: np.ndarray, moved_m: np.ndarray, refresh_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which users' link gains to recompute this epoch.

    Large-scale gains change over metres (shadowing decorrelates over 10-50 m),
    so recomputing them for a user who moved 1 m is wasted work. Adds this
    epoch's movement to each user's distance since its last refresh and
    returns (rows due: distance >= refresh_m and > 0; their distance, to pass
    to `refresh_links`; the updated distances, 0 for the rows due).
    refresh_m = 0 refreshes every user that moved at all. Start the distances
    uniform in [0, refresh_m) so users of one speed do not all come due in the
    same epoch.
    """
    acc = np.asarray(since_refresh_m, dtype=float) + np.asarray(moved_m, dtype=float)
    due = (acc >= refresh_m) & (acc > 0.0)
    rows = np.flatnonzero(due)
    return rows, acc[rows], np.where(due, 0.0, acc)


# ------------------------------------------------------------------ link gains


def link_gain_db_reference(
    user_xy: np.ndarray,
    user_height_m: np.ndarray,
    z_sf: np.ndarray,
    z_los: np.ndarray,
    layout: Layout,
    scenario: str,
    fc_ghz: float,
    pattern: SectorPattern = SectorPattern(),
    omni_gain_dbi: float = 0.0,
    shadowing: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `link_gain_db` (same signature and result)."""
    dx, dy = site_offsets(layout, user_xy)
    d2d = np.hypot(dx, dy)
    h_ut = np.asarray(user_height_m, dtype=float)[:, None]
    h_bs = layout.site_height_m[None, :]
    p_los = los_probability(scenario, d2d, h_ut)
    los = ndtr(z_los) < p_los
    pl = pathloss_db(scenario, d2d, h_bs, h_ut, fc_ghz, los)
    loss = pl + (shadowing_sigma_db(scenario, los) * z_sf if shadowing else 0.0)  # (n, S)
    cs = layout.cell_site
    az = layout.cell_azimuth_deg
    omni = np.isnan(az)
    phi = relative_azimuth_deg(dx[:, cs], dy[:, cs], np.where(omni, 0.0, az)[None, :])
    theta = zenith_angle_deg(d2d[:, cs], h_bs[:, cs], h_ut)
    gain = np.where(omni[None, :], omni_gain_dbi, sector_gain_db(phi, theta, pattern))
    return gain - loss[:, cs], los


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_DB_TO_NEPER = math.log(10.0) / 10.0  # 10^(x/10) = exp(x * _DB_TO_NEPER)
# Kernels walk users in blocks with per-block scratch, ready for prange. They are
# serial: parallel=True cost ~20 s more cold compile and gained nothing on the
# shared 2-core machine (measured); flip it here if the run has cores to spare.
_BLOCK = 256
# Phi(k) for k = -3..3: a ladder that decides Phi(z) < p for most links without erfc.
_PHI_LADDER = np.array([ndtr(k) for k in (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)])
# ... and the distances where Pr_LOS falls to those values, per scenario code
# (users at or below 13 m), widened by 1e-9 so rounding can never flip a link:
# with z in [k, k+1), d >= D_k means NLOS and d < D_{k+1} LOS, without exp().
_LOS_D_NLOS = np.array([[los_probability_inverse(sc, float(p)) * (1.0 + 1e-9) for p in _PHI_LADDER]
                        for sc in ("UMa", "UMi")])  # fmt: skip
_LOS_D_LOS = _LOS_D_NLOS * ((1.0 - 1e-9) / (1.0 + 1e-9))


@njit(cache=True, inline="always")
def _is_los(z: float, p_los: float) -> bool:
    """Phi(z) < p_los, i.e. the link is LOS, calling erfc only when z is close."""
    if p_los >= 1.0:
        return True
    # Phi(floor(z)) <= Phi(z) <= Phi(ceil(z)) for z within the ladder.
    k = math.floor(z)
    if -3.0 <= k and k + 1.0 <= 3.0:
        if _PHI_LADDER[int(k) + 3] >= p_los:
            return False
        if _PHI_LADDER[int(k) + 4] < p_los:
            return True
    return 0.5 * math.erfc(-z * _INV_SQRT2) < p_los


@njit(cache=True, inline="always")
def _link_is_los(code: int, z: float, d2d: float, h_ut: float) -> bool:
    """LOS state of one link: Phi(z) < Pr_LOS(d2D), mostly from distance alone."""
    k = math.floor(z)
    if -3.0 <= k and k + 1.0 <= 3.0 and (code == 1 or h_ut <= 13.0):
        i = int(k) + 3
        if d2d >= _LOS_D_NLOS[code, i]:  # Pr_LOS(d) <= Phi(k) <= Phi(z)
            return False
        if d2d < _LOS_D_LOS[code, i + 1]:  # Pr_LOS(d) > Phi(k + 1) >= Phi(z)
            return True
    return _is_los(z, los_probability_scalar(code, d2d, h_ut))


@njit(cache=True)
def _links_kernel(
    rows, ux, uy, uh, moved, innov, evolve, z_sf, z_los, los_out,
    gain, rsrp, rx, write_power, tx_dbm, rsrp_offset,
    sx, sy, sh, shifts, cell_site, cell_az, cell_omni,
    code, fc_ghz, sig_los, sig_nlos, dc_los, dc_nlos, dc_state,
    g_max, phi3, theta3, a_m, sla_v, tilt, vertical, omni_gain, site_omni,
):  # fmt: skip
    """For each user in `rows` (indices into every per-user array): optionally
    evolve its latents (Gudmundson, innovations innov[:, i]), then write its
    LOS states, gains and optionally RSRP and received power, in place.
    site_omni[s]: every cell of site s is omni (its angles are never needed)."""
    m = rows.shape[0]
    n_sites = z_sf.shape[1]
    n_cells = cell_site.shape[0]
    n_shift = shifts.shape[0]
    near2 = 1e300  # squared distance below which the unshifted site is nearest
    for k in range(1, n_shift):
        near2 = min(near2, 0.25 * (shifts[k, 0] ** 2 + shifts[k, 1] ** 2))
    n_blocks = (m + _BLOCK - 1) // _BLOCK
    for b in range(n_blocks):
        loss = np.empty(n_sites)
        azim = np.empty(n_sites)
        a_v = np.empty(n_sites)
        for i in range(b * _BLOCK, min(m, (b + 1) * _BLOCK)):
            u = rows[i]
            if evolve:
                r_l = math.exp(-moved[i] / dc_los)
                r_n = math.exp(-moved[i] / dc_nlos)
                r_s = math.exp(-moved[i] / dc_state)
                k_l = math.sqrt(1.0 - r_l * r_l)
                k_n = math.sqrt(1.0 - r_n * r_n)
                k_s = math.sqrt(1.0 - r_s * r_s)
                for s in range(n_sites):
                    if los_out[u, s]:  # decorrelation distance of the current state
                        z_sf[u, s] = r_l * z_sf[u, s] + k_l * innov[0, i, s]
                    else:
                        z_sf[u, s] = r_n * z_sf[u, s] + k_n * innov[0, i, s]
                    z_los[u, s] = r_s * z_los[u, s] + k_s * innov[1, i, s]
            last_h = -1.0
            dh2 = dbp = a1 = b1 = a2 = a_n = b_n = 0.0
            for s in range(n_sites):
                if sh[s] != last_h:  # masts usually share one height: once per user
                    last_h = sh[s]
                    dh2, dbp, a1, b1, a2, a_n, b_n = pathloss_constants(code, sh[s], uh[u], fc_ghz)
                ox = ux[u] - sx[s] - shifts[0, 0]
                oy = uy[u] - sy[s] - shifts[0, 1]
                bx = ox
                by = oy
                best = ox * ox + oy * oy
                # A copy shifted by L can only be nearer when the site is more
                # than L/2 away, so near sites skip the search.
                if best > near2:
                    for k in range(1, n_shift):  # nearest wrap-around copy of the site
                        dx = ox - shifts[k, 0] + shifts[0, 0]
                        dy = oy - shifts[k, 1] + shifts[0, 1]
                        d = dx * dx + dy * dy
                        if d < best:
                            best = d
                            bx = dx
                            by = dy
                d2d = math.sqrt(best)
                los = _link_is_los(code, z_los[u, s], d2d, uh[u])
                los_out[u, s] = los
                sig = sig_los if los else sig_nlos
                pl = pathloss_from_constants(d2d, dh2, dbp, a1, b1, a2, a_n, b_n, los)
                loss[s] = pl + sig * z_sf[u, s]
                if site_omni[s]:  # omni cells: no pattern, so no angles (half the cost of a link)
                    azim[s] = 0.0
                    a_v[s] = 0.0
                    continue
                azim[s] = atan2_deg_scalar(by, bx)
                if vertical:
                    zen = 90.0 + atan2_deg_scalar(sh[s] - uh[u], d2d)
                    a_v[s] = vertical_attenuation_scalar(zen, theta3, sla_v, tilt)
                else:
                    a_v[s] = 0.0
            for c in range(n_cells):
                s = cell_site[c]
                if cell_omni[c]:
                    g = omni_gain - loss[s]
                else:
                    g = sector_gain_from_vertical(azim[s] - cell_az[c], a_v[s], g_max, phi3, a_m) - loss[s]
                gain[u, c] = g
                if write_power:
                    rsrp[u, c] = g + tx_dbm[c] - rsrp_offset
                    rx[u, c] = math.exp((g + tx_dbm[c]) * _DB_TO_NEPER)


def links_kernel_constants(layout: Layout, scenario: str, fc_ghz: float, pattern: SectorPattern = SectorPattern(),
                           omni_gain_dbi: float = 0.0, shadowing: bool = True) -> tuple:
    """The trailing arguments of `_links_kernel` (sites, cells, scenario, antenna):
    fixed for a run, so a compiled loop prepares them once and passes them as a tuple."""
    p = scenario_params(scenario)
    sig_los, sig_nlos = (p.sigma_sf_los_db, p.sigma_sf_nlos_db) if shadowing else (0.0, 0.0)
    return (
        np.ascontiguousarray(layout.site_xy[:, 0]), np.ascontiguousarray(layout.site_xy[:, 1]),
        layout.site_height_m.astype(float), np.ascontiguousarray(layout.wrap_shifts, dtype=float),
        layout.cell_site.astype(np.int64),
        np.where(layout.cell_omni, 0.0, layout.cell_azimuth_deg), layout.cell_omni.copy(),
        p.code, float(fc_ghz), sig_los, sig_nlos,
        p.sf_decorrelation_los_m, p.sf_decorrelation_nlos_m, p.los_decorrelation_m,
        pattern.max_gain_dbi, pattern.phi_3db_deg, pattern.theta_3db_deg,
        pattern.front_to_back_db, pattern.side_lobe_vertical_db, pattern.downtilt_deg,
        bool(pattern.vertical), float(omni_gain_dbi),
        np.bincount(layout.cell_site, weights=~layout.cell_omni, minlength=layout.n_sites) == 0,  # all omni
    )  # fmt: skip


def _run_links_kernel(
    rows, user_xy, user_height_m, moved, innov, evolve, z_sf, z_los, los,
    gain, rsrp, rx, write_power, tx_dbm, rsrp_offset,
    layout, scenario, fc_ghz, pattern, omni_gain_dbi, shadowing,
):  # fmt: skip
    xy = np.asarray(user_xy, dtype=float)
    n = xy.shape[0]
    _links_kernel(
        np.ascontiguousarray(rows, dtype=np.int64),
        np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1]),
        np.ascontiguousarray(np.broadcast_to(np.asarray(user_height_m, dtype=float), (n,))),
        np.ascontiguousarray(moved, dtype=float), innov, evolve, z_sf, z_los, los,
        gain, rsrp, rx, write_power, tx_dbm, float(rsrp_offset),
        *links_kernel_constants(layout, scenario, fc_ghz, pattern, omni_gain_dbi, shadowing),
    )  # fmt: skip


def link_gain_db(
    user_xy: np.ndarray,
    user_height_m: np.ndarray,
    z_sf: np.ndarray,
    z_los: np.ndarray,
    layout: Layout,
    scenario: str,
    fc_ghz: float,
    pattern: SectorPattern = SectorPattern(),
    omni_gain_dbi: float = 0.0,
    shadowing: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Link gain (dB) of every user to every cell, and each (user, site) LOS state.

    gain = antenna gain (sector pattern, or `omni_gain_dbi` for omni cells)
           - 38.901 path loss in the link's LOS state - sigma(LOS) * z_sf.
    A link is LOS when Phi(z_los) < Pr_LOS(d2D), so LOS flips consistently as
    the user moves. user_xy (n, 2), user_height_m (n,), z_* (n, S).
    `shadowing=False` leaves shadowing out (the latents still set LOS state).
    Returns gain_db (n, C) and los (n, S) bool.
    """
    n = np.asarray(user_xy).shape[0]
    gain = np.empty((n, layout.n_cells))
    los = np.zeros((n, layout.n_sites), dtype=np.bool_)
    none = np.empty((0, 0))
    _run_links_kernel(
        np.arange(n), user_xy, user_height_m, np.zeros(0), np.empty((2, 0, 0)), False,
        np.ascontiguousarray(z_sf, dtype=float), np.ascontiguousarray(z_los, dtype=float), los,
        gain, none, none, False, np.zeros(layout.n_cells), 0.0,
        layout, scenario, fc_ghz, pattern, omni_gain_dbi, shadowing,
    )  # fmt: skip
    return gain, los


# ----------------------------------------------- link state updated in place


@dataclass(eq=False)
class Links:
    """Everything the radio keeps per link, updated in place by `refresh_links`.

    z_sf, z_los (n, S) latent normals and los (n, S) per user and site;
    gain_db, rsrp_dbm (n, C) and rx_mw (n, C) per user and cell.
    """

    z_sf: np.ndarray
    z_los: np.ndarray
    los: np.ndarray
    gain_db: np.ndarray
    rsrp_dbm: np.ndarray
    rx_mw: np.ndarray

    def copy(self) -> "Links":
        return Links(*(a.copy() for a in (self.z_sf, self.z_los, self.los, self.gain_db, self.rsrp_dbm, self.rx_mw)))


def init_links(
    user_xy: np.ndarray,
    user_height_m: np.ndarray,
    layout: Layout,
    scenario: str,
    fc_ghz: float,
    tx_power_dbm: np.ndarray,
    n_prb: int,
    rng: np.random.Generator,
    pattern: SectorPattern = SectorPattern(),
    omni_gain_dbi: float = 0.0,
    shadowing: bool = True,
) -> Links:
    """Fresh latents from `rng` and the full link budget of every user.

    ValueError when carrier or heights are outside the scenario's validity.
    """
    validate_inputs(scenario, fc_ghz, layout.site_height_m, user_height_m)
    n = np.asarray(user_xy).shape[0]
    z_sf, z_los = init_link_state(n, layout.n_sites, rng)
    gain, los = link_gain_db(
        user_xy, user_height_m, z_sf, z_los, layout, scenario, fc_ghz, pattern, omni_gain_dbi, shadowing
    )
    tx = np.broadcast_to(np.asarray(tx_power_dbm, dtype=float), (layout.n_cells,))
    return Links(z_sf, z_los, los, gain, rsrp_dbm(gain, tx, n_prb), received_power_mw(gain, tx))


def refresh_links_reference(
    links: Links,
    rows: np.ndarray,
    user_xy: np.ndarray,
    user_height_m: np.ndarray,
    moved_m: np.ndarray,
    layout: Layout,
    scenario: str,
    fc_ghz: float,
    tx_power_dbm: np.ndarray,
    n_prb: int,
    rng: np.random.Generator,
    pattern: SectorPattern = SectorPattern(),
    omni_gain_dbi: float = 0.0,
    shadowing: bool = True,
) -> None:
    """NumPy reference of `refresh_links` (same signature and effect)."""
    rows = np.asarray(rows, dtype=np.int64)
    e = rng.standard_normal((2, rows.size, layout.n_sites))
    p = scenario_params(scenario)
    z_sf, z_los = links.z_sf[rows], links.z_los[rows]
    los = links.los[rows]
    moved = np.asarray(moved_m, dtype=float)
    z_sf = np.where(
        los,
        evolve_latent(z_sf, moved, p.sf_decorrelation_los_m, e[0]),
        evolve_latent(z_sf, moved, p.sf_decorrelation_nlos_m, e[0]),
    )
    z_los = evolve_latent(z_los, moved, p.los_decorrelation_m, e[1])
    h = np.broadcast_to(np.asarray(user_height_m, dtype=float), (np.asarray(user_xy).shape[0],))
    gain, los = link_gain_db_reference(
        np.asarray(user_xy)[rows], h[rows], z_sf, z_los, layout, scenario, fc_ghz, pattern, omni_gain_dbi,
        shadowing,
    )
    tx = np.broadcast_to(np.asarray(tx_power_dbm, dtype=float), (layout.n_cells,))
    links.z_sf[rows], links.z_los[rows], links.los[rows] = z_sf, z_los, los
    links.gain_db[rows] = gain
    links.rsrp_dbm[rows] = rsrp_dbm(gain, tx, n_prb)
    links.rx_mw[rows] = received_power_mw(gain, tx)


def refresh_links(
    links: Links,
    rows: np.ndarray,
    user_xy: np.ndarray,
    user_height_m: np.ndarray,
    moved_m: np.ndarray,
    layout: Layout,
    scenario: str,
    fc_ghz: float,
    tx_power_dbm: np.ndarray,
    n_prb: int,
    rng: np.random.Generator,
    pattern: SectorPattern = SectorPattern(),
    omni_gain_dbi: float = 0.0,
    shadowing: bool = True,
) -> None:
    """Move the users in `rows` and recompute their links, in place.

    `moved_m` (len(rows),) is each row's path length since its last refresh
    (`refresh_due`); user_xy / user_height_m are the full per-user arrays.
    Shadowing and LOS latents evolve as in `advance_link_state` (same draws
    from `rng`: 2 x len(rows) x S normals), then gains, RSRP (dBm per RE) and
    received power (mW) are rewritten for those rows. One fused pass: this is
    the per-epoch hot path, with no temporaries the size of the link matrix.
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    moved = np.ascontiguousarray(moved_m, dtype=float)
    if moved.shape != rows.shape:
        raise ValueError(f"moved_m must have one entry per row, got {moved.shape} for {rows.shape}")
    e = rng.standard_normal((2, rows.size, layout.n_sites))
    tx = np.ascontiguousarray(np.broadcast_to(np.asarray(tx_power_dbm, dtype=float), (layout.n_cells,)))
    _run_links_kernel(
        rows, user_xy, user_height_m, moved, e, True, links.z_sf, links.z_los, links.los,
        links.gain_db, links.rsrp_dbm, links.rx_mw, True, tx, 10.0 * math.log10(12.0 * n_prb),
        layout, scenario, fc_ghz, pattern, omni_gain_dbi, shadowing,
    )  # fmt: skip


# ------------------------------------------------------------- fast fading, SINR

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2^-53


def fading_key(rng: np.random.Generator) -> int:
    """A fresh 64-bit key for one epoch's fast fading, drawn from `rng`."""
    return int(rng.integers(0, 2**63 - 1, dtype=np.int64))


def rayleigh_power_reference(key: int, users: np.ndarray, cells: np.ndarray, n_cells: int) -> np.ndarray:
    """Rayleigh-fading power gains |h|^2 ~ Exp(1) for (users[i], cells[j]) pairs.

    splitmix64 of (key + (user * n_cells + cell + 1) * golden) -> uniform u in
    (0, 1] -> -log(u): each (epoch key, user, cell) always gives the same draw.
    Shape (len(users), len(cells)).
    """
    with np.errstate(over="ignore"):
        ctr = (
            np.asarray(users, dtype=np.uint64)[:, None] * np.uint64(n_cells)
            + np.asarray(cells, dtype=np.uint64)[None, :]
            + np.uint64(1)
        )
        z = np.uint64(key) + ctr * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    # u in (0, 1]: 53 random bits, offset by one so log(0) cannot happen.
    u = ((z >> np.uint64(11)).astype(np.float64) + 1.0) * _TO_UNIT
    return -np.log(u)


@njit(cache=True, inline="always")
def _rayleigh_scalar(key: np.uint64, user: int, cell: int, n_cells: int) -> float:
    ctr = np.uint64(user) * np.uint64(n_cells) + np.uint64(cell) + np.uint64(1)
    z = key + ctr * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    u = (np.float64(z >> np.uint64(11)) + 1.0) * _TO_UNIT
    return -math.log(u)


def _as_load_2d(load: np.ndarray, n_cells: int) -> tuple[np.ndarray, bool]:
    lo = np.asarray(load, dtype=float)
    single = lo.ndim == 1
    lo = np.atleast_2d(lo)
    if lo.shape[1] != n_cells:
        raise ValueError(f"load must have {n_cells} cells per row, got shape {lo.shape}")
    if np.any(lo < 0.0) or np.any(lo > 1.0) or not np.all(np.isfinite(lo)):
        raise ValueError("cell load must be a fraction in [0, 1]")
    return np.ascontiguousarray(lo), single


def sinr_db_reference(
    rx_mw: np.ndarray,
    serving: np.ndarray,
    load: np.ndarray,
    noise_mw: float,
    key: int | None,
    fading_floor_db: float = 20.0,
) -> np.ndarray:
    """NumPy reference of `sinr_db` (same signature and result)."""
    rx = np.asarray(rx_mw, dtype=float)
    n, n_cells = rx.shape
    lo, single = _as_load_2d(load, n_cells)
    rows = np.arange(n)
    serving = np.asarray(serving, dtype=np.int64)
    if key is None:
        h = np.ones_like(rx)
    else:
        h = rayleigh_power_reference(key, rows, np.arange(n_cells), n_cells)
        p_serv = rx[rows, serving]
        weak = rx < p_serv[:, None] * 10.0 ** (-fading_floor_db / 10.0)
        h = np.where(weak, 1.0, h)
    faded = rx * h
    signal = faded[rows, serving].copy()
    faded[rows, serving] = 0.0  # a cell does not interfere with its own users
    out = 10.0 * np.log10(signal[:, None] / (faded @ lo.T + noise_mw))
    return out[:, 0] if single else out.T


@njit(cache=True)
def _faded_power_kernel(rx, serving, key, use_fading, floor_lin):
    """Faded received powers (n, C) with the serving column zeroed, and the
    faded serving power (n,)."""
    n, n_cells = rx.shape
    faded = np.empty((n, n_cells))
    signal = np.empty(n)
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in range(n_blocks):
        for u in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            s = serving[u]
            thr = rx[u, s] * floor_lin
            for c in range(n_cells):
                pc = rx[u, c]
                if use_fading and pc >= thr:
                    pc *= _rayleigh_scalar(key, u, c, n_cells)
                faded[u, c] = pc
            signal[u] = faded[u, s]
            faded[u, s] = 0.0
    return faded, signal


def sinr_db(
    rx_mw: np.ndarray,
    serving: np.ndarray,
    load: np.ndarray,
    noise_mw: float,
    key: int | None,
    fading_floor_db: float = 20.0,
) -> np.ndarray:
    """Downlink SINR (dB) of each user on its serving cell.

    SINR = P_s h_s / (sum_{c != s} load_c P_c h_c + N), with P (n, C) the mean
    received power (mW, `received_power_mw`), `load` (C,) the fraction of each
    cell's PRBs in use (interference scales with it), or (P, C) to evaluate P
    policies at once (returns (P, n)); h ~ Exp(1) Rayleigh power from the
    epoch's `key` (None: no fast fading). Interferers more than
    `fading_floor_db` below the serving cell keep their mean power: each adds
    under 1 % (20 dB) of the signal, their fading barely moves the sum, and
    skipping it saves most of the draws (about 5 of 57 links per user are
    faded at 20 dB in the 19-site layout; use inf to fade every link).
    """
    rx = np.ascontiguousarray(rx_mw, dtype=float)
    lo, single = _as_load_2d(load, rx.shape[1])
    floor = 0.0 if math.isinf(fading_floor_db) else 10.0 ** (-fading_floor_db / 10.0)
    faded, signal = _faded_power_kernel(
        rx,
        np.ascontiguousarray(serving, dtype=np.int64),
        np.uint64(0 if key is None else key),
        key is not None,
        floor,
    )
    # The load-weighted interference of all policies is one matrix product.
    out = 10.0 * np.log10(signal[:, None] / (faded @ lo.T + noise_mw))
    return out[:, 0] if single else out.T


# ------------------------------------------------------------ CQI and efficiency


def cqi_efficiency(table: int = 1) -> np.ndarray:
    """Spectral efficiency (bit/s/Hz) of CQI 0..15 of TS 38.214 table 1 or 2.

    Index 0 (out of range) is 0.
    """
    try:
        t = CQI_TABLES[table]
    except KeyError:
        raise ValueError(f"CQI table must be 1 (64QAM) or 2 (256QAM), got {table}") from None
    return np.concatenate([[0.0], t[:, 0] * t[:, 1] / 1024.0])


def cqi_sinr_thresholds_db(table: int = 1, shannon_fraction: float = 0.75) -> np.ndarray:
    """Lowest SINR (dB) at which each CQI 1..15 is used, shape (15,).

    Link-level curves are not part of the standard; CQI k is used when its
    efficiency fits under an attenuated Shannon bound,
    eff_k <= shannon_fraction * log2(1 + SINR). The default 0.75 puts the
    switching points within about 1.5 dB of typical 10 % BLER link-level
    results for table 1. Pass explicit thresholds to `spectral_efficiency` to
    use measured curves instead.
    """
    if not 0.0 < shannon_fraction <= 1.0:
        raise ValueError(f"shannon_fraction must be in (0, 1], got {shannon_fraction}")
    eff = cqi_efficiency(table)[1:]
    return 10.0 * np.log10(np.exp2(eff / shannon_fraction) - 1.0)


def sinr_to_cqi(sinr_db_: np.ndarray, thresholds_db: np.ndarray) -> np.ndarray:
    """CQI (0..15, int8) = number of thresholds at or below the SINR."""
    th = np.asarray(thresholds_db, dtype=float)
    if th.shape != (15,) or np.any(np.diff(th) <= 0):
        raise ValueError("need 15 strictly increasing CQI thresholds (dB)")
    return np.searchsorted(th, np.asarray(sinr_db_, dtype=float), side="right").astype(np.int8)


def spectral_efficiency(
    sinr_db_: np.ndarray,
    table: int = 1,
    thresholds_db: np.ndarray | None = None,
) -> np.ndarray:
    """Spectral efficiency (bit/s/Hz) from SINR via the CQI table.

    Capped at CQI 15's efficiency however high the SINR; 0 below CQI 1 (out of
    range: the user gets nothing this epoch).
    """
    th = cqi_sinr_thresholds_db(table) if thresholds_db is None else thresholds_db
    return cqi_efficiency(table)[sinr_to_cqi(sinr_db_, th)]


def prb_rate_bps(efficiency: np.ndarray, scs_khz: float, overhead: float = 0.14) -> np.ndarray:
    """Bit rate of one PRB at a spectral efficiency (TS 38.306 4.1.2 style).

    12 subcarriers x 14 OFDM symbols per slot of 1/2^mu ms (= scs x 14/15
    symbols/s per subcarrier) x efficiency x (1 - overhead); overhead 0.14 is
    the 38.306 value for FR1 downlink.
    """
    return np.asarray(efficiency, dtype=float) * 12.0 * scs_khz * 1e3 * (14.0 / 15.0) * (1.0 - overhead)


# --------------------------------------------------- compiled twins for the loop
# Used by the compiled multi-epoch loop (`simulators.compiled_run`); each has a
# plain wrapper with its NumPy reference's signature, compared in the tests.


@njit(cache=True)
def refresh_due_kernel(since_refresh_m, moved_m, refresh_m, rows, dist):
    """`refresh_due` in place: updates since_refresh_m, writes the rows due and their
    distances into rows[:m], dist[:m]; returns m."""
    m = 0
    for u in range(since_refresh_m.shape[0]):
        acc = since_refresh_m[u] + moved_m[u]
        if acc >= refresh_m and acc > 0.0:
            rows[m] = u
            dist[m] = acc
            m += 1
            since_refresh_m[u] = 0.0
        else:
            since_refresh_m[u] = acc
    return m


def refresh_due_nb(
    since_refresh_m: np.ndarray, moved_m: np.ndarray, refresh_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`refresh_due` in Numba: same signature and result."""
    since = np.array(since_refresh_m, dtype=float)
    n = since.shape[0]
    rows = np.empty(n, dtype=np.int64)
    dist = np.empty(n)
    m = refresh_due_kernel(since, np.ascontiguousarray(moved_m, dtype=float), float(refresh_m), rows, dist)
    return rows[:m], dist[:m], since


@njit(cache=True)
def efficiency_kernel(rx, serving, load, noise_mw, key, use_fading, floor_lin, thresholds, eff_table, out, faded):
    """Spectral efficiency per policy and user, out (P, n), from SINR through the CQI
    thresholds (`spectral_efficiency` of `sinr_db`). faded: scratch (C,).

    The interference sum runs over cells in index order; NumPy's `sinr_db` uses a
    BLAS product, which may round the last bit differently (see docs/radio.md).
    """
    n, n_cells = rx.shape
    n_pol = load.shape[0]
    n_th = thresholds.shape[0]
    acc = np.empty(n_pol)
    for u in range(n):
        s = serving[u]
        thr = rx[u, s] * floor_lin
        for c in range(n_cells):
            pc = rx[u, c]
            if use_fading and pc >= thr:
                pc *= _rayleigh_scalar(key, u, c, n_cells)
            faded[c] = pc
        signal = faded[s]
        faded[s] = 0.0
        # Policies inner: their sums are independent chains the CPU overlaps; each
        # still adds its cells in index order.
        for p in range(n_pol):
            acc[p] = 0.0
        for c in range(n_cells):
            f = faded[c]
            for p in range(n_pol):
                acc[p] += f * load[p, c]
        for p in range(n_pol):
            sinr = 10.0 * math.log10(signal / (acc[p] + noise_mw))
            lo = 0  # searchsorted(thresholds, sinr, side="right"): thresholds at or below
            hi = n_th
            while lo < hi:
                mid = (lo + hi) // 2
                if thresholds[mid] <= sinr:
                    lo = mid + 1
                else:
                    hi = mid
            out[p, u] = eff_table[lo]


def sinr_efficiency_reference(
    rx_mw: np.ndarray,
    serving: np.ndarray,
    load: np.ndarray,
    noise_mw: float,
    key: int | None,
    table: int = 1,
    overhead: float = 0.0,
    fading_floor_db: float = 20.0,
) -> np.ndarray:
    """Data spectral efficiency (bit/s/Hz) per policy and user: `spectral_efficiency(sinr_db(...))`
    times (1 - overhead). load (C,) or (P, C) as in `sinr_db`."""
    return spectral_efficiency(sinr_db(rx_mw, serving, load, noise_mw, key, fading_floor_db), table) * (1.0 - overhead)


def efficiency_table(table: int = 1, overhead: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(SINR thresholds of CQI 1..15 in dB, efficiency of CQI 0..15 times 1 - overhead)."""
    return cqi_sinr_thresholds_db(table), cqi_efficiency(table) * (1.0 - overhead)


def sinr_efficiency(
    rx_mw: np.ndarray,
    serving: np.ndarray,
    load: np.ndarray,
    noise_mw: float,
    key: int | None,
    table: int = 1,
    overhead: float = 0.0,
    fading_floor_db: float = 20.0,
) -> np.ndarray:
    """`sinr_efficiency_reference` in one Numba pass, nothing (n, C) allocated."""
    rx = np.ascontiguousarray(rx_mw, dtype=float)
    lo, single = _as_load_2d(load, rx.shape[1])
    th, eff = efficiency_table(table, overhead)
    out = np.empty((lo.shape[0], rx.shape[0]))
    floor = 0.0 if math.isinf(fading_floor_db) else 10.0 ** (-fading_floor_db / 10.0)
    efficiency_kernel(rx, np.ascontiguousarray(serving, dtype=np.int64), lo, float(noise_mw),
                      np.uint64(0 if key is None else key), key is not None, floor, th, eff, out, np.empty(rx.shape[1]))
    return out[0] if single else out
