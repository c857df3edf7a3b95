"""The radio network of a scenario: layout, users' movement, links, serving cells, efficiency.

Composes the physics modules (layout, mobility, pathloss/antenna via channel,
handover) into the per-epoch state the simulation loop needs. Everything that
does not depend on the allocation policy (movement, link gains, RSRP, serving
cell, fast fading) is computed once per epoch and shared by all policies; only
the SINR depends on each policy's cell loads, so policies are compared on
common random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import Config
from simulators import channel as ch
from simulators.handover import HandoverState, attach, handover_step
from simulators.layout import Layout, explicit_layout, hex_layout, sample_positions
from simulators.mobility import MODEL_CODES, MobilityState, init_mobility, step_mobility
from simulators.population import Population

# TS 38.306 FR1 downlink overhead: the share of resource elements not carrying data.
DL_OVERHEAD = 0.14
# Large-scale gains are recomputed for a user once it has moved this far since the
# last time: shadowing decorrelates over 10-50 m, so metre-by-metre updates buy nothing.
REFRESH_M = 5.0
# The UE's layer-3 RSRP filter runs per measurement period (TS 38.331, k = 4), not per
# allocation epoch: over an epoch of m periods its weight on the new sample is
# 1 - (1 - a)^m, which is ~1 for epochs of a second or more.
L3_PERIOD_S = 0.2
L3_A = 0.5  # 1 / 2^(k/4), k = 4


def build_layout(cfg: Config) -> tuple[Layout, list[str]]:
    """The scenario's cells and their ids (hex: `s<site>-<sector>`)."""
    r = cfg.radio
    if cfg.cells.layout == "hex":
        h = cfg.cells.hex
        layout = hex_layout(h.rings, h.isd_m, h.sectors, r.bs_height_m, wrap_around=h.wrap_around)
        if h.sectors == 3:
            ids = [f"s{s}-{k}" for s in range(layout.n_sites) for k in range(3)]
        else:
            ids = [f"s{s}" for s in range(layout.n_sites)]
        return layout, ids
    cells = cfg.cells.explicit
    xy = np.array([[c.x_m, c.y_m] for c in cells])
    az = np.array([np.nan if c.azimuth_deg is None else c.azimuth_deg for c in cells])
    return explicit_layout(xy, az, r.bs_height_m), [c.id for c in cells]


@dataclass
class RadioEpoch:
    serving: np.ndarray  # (n,) cell index
    handed_over: np.ndarray  # (n,) bool
    rx_mw: np.ndarray  # (n, C) mean received power
    fading_key: int | None


class RadioNetwork:
    """Per-scenario radio state, advanced one epoch at a time."""

    def __init__(self, cfg: Config, pop: Population, rng: np.random.Generator) -> None:
        self.cfg = cfg
        r = cfg.radio
        self.layout, self.cell_ids = build_layout(cfg)
        self.n_cells = self.layout.n_cells
        self.prb_per_cell = np.full(self.n_cells, r.prb_per_cell, dtype=np.int64)
        if cfg.cells.layout == "explicit":
            for i, c in enumerate(cfg.cells.explicit):
                if c.prb is not None:
                    self.prb_per_cell[i] = c.prb
        n = pop.n
        self.model = np.array([MODEL_CODES[pop.mobility[s]] for s in pop.segment], dtype=np.int64)
        self.mean_speed = rng.uniform(pop.speed_min, pop.speed_max)
        self.memory = pop.memory[pop.segment]
        xy = sample_positions(self.layout, n, rng)
        self.mobility: MobilityState = init_mobility(xy, self.mean_speed, self.layout.bounds, rng)
        self.ue_height = np.full(n, r.ue_height_m)
        self.links = ch.init_links(xy, self.ue_height, self.layout, r.scenario, r.carrier_ghz, r.tx_power_dbm,
                                   r.prb_per_cell, rng, shadowing=r.shadowing)
        # Spread the refresh phase so users of one speed do not all come due together.
        self.since_refresh = rng.uniform(0.0, REFRESH_M, n)
        bw_hz = r.prb_per_cell * r.prb_bandwidth_hz
        self.noise_mw = float(ch.dbm_to_mw(ch.thermal_noise_dbm(bw_hz, r.noise_figure_db)))
        self.rsrp = self.links.rsrp_dbm.copy()
        self.handover: HandoverState = attach(self.rsrp)

    @property
    def xy(self) -> np.ndarray:
        return self.mobility.xy

    def step(self, dt_s: float, rng: np.random.Generator) -> RadioEpoch:
        """Move users, refresh the links of those that moved far enough, update serving cells."""
        r = self.cfg.radio
        alpha = float(np.mean(self.memory)) if self.memory.size else 0.85
        self.mobility, moved = step_mobility(
            self.mobility, self.model, self.mean_speed, dt_s, self.layout.bounds, rng, alpha=alpha
        )
        rows, dist, self.since_refresh = ch.refresh_due(self.since_refresh, moved, REFRESH_M)
        if rows.size:
            ch.refresh_links(self.links, rows, self.mobility.xy, self.ue_height, dist, self.layout, r.scenario,
                             r.carrier_ghz, r.tx_power_dbm, r.prb_per_cell, rng, shadowing=r.shadowing)
        a = 1.0 - (1.0 - L3_A) ** max(dt_s / L3_PERIOD_S, 1.0)
        self.rsrp = (1.0 - a) * self.rsrp + a * self.links.rsrp_dbm
        self.handover, went = handover_step(self.handover, self.rsrp, r.handover_hysteresis_db, r.handover_ttt_epochs)
        key = ch.fading_key(rng) if r.fast_fading == "rayleigh" else None
        return RadioEpoch(self.handover.serving.copy(), went, self.links.rx_mw, key)

    def efficiency(self, ep: RadioEpoch, loads: np.ndarray) -> np.ndarray:
        """Data spectral efficiency (bit/s/Hz after overhead) per policy and user.

        `loads` (P, C): each policy's cell loads (PRBs used / PRBs) of the last
        epoch, which scale the interference its users see. Returns (P, n).
        """
        sinr = ch.sinr_db(ep.rx_mw, ep.serving, loads, self.noise_mw, ep.fading_key)
        return ch.spectral_efficiency(sinr, self.cfg.radio.cqi_table) * (1.0 - DL_OVERHEAD)
