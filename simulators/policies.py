"""The baseline policies the simulator compares zot against.

A baseline decides from what an operator's scheduler knows today: each user's
channel and application, never its hidden tolerance. Universal fit gives every
user of an application the same target rate: the configured percentile of the
population's desired levels of that application (today's over-engineered
network, sized for demanding users), with the configured overload policy when a
cell cannot carry it. Equal share, proportional fair and max-rate hand out every
PRB of a cell. All run over the whole epoch at once (`optimizer.baselines_epoch`,
the batched solver), decision-for-decision the same as `optimizer.baselines`.
"""

from __future__ import annotations

import numpy as np

from engine.config import Config
from optimizer.baselines import BASELINES
from optimizer.baselines_epoch import equal_share_epoch, max_rate_epoch, proportional_fair_epoch
from optimizer.curves import slope_centre
from optimizer.solver import solve_arrays
from simulators.population import Population


def by_cell(serving: np.ndarray, active: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Active users sorted by serving cell (stable) and the per-cell offsets."""
    users = np.flatnonzero(active)
    order = users[np.argsort(serving[users], kind="stable")]
    offsets = np.searchsorted(serving[order], np.arange(n_cells + 1)).astype(np.int64)
    return order, offsets


class BaselinePolicy:
    """Per-epoch PRB decisions of one baseline for every cell."""

    def __init__(self, name: str, cfg: Config, pop: Population, a_rate: np.ndarray, d_rate: np.ndarray) -> None:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
        self.name = name
        self.cfg = cfg
        self.prb_bw_mhz = cfg.radio.prb_bandwidth_hz / 1e6
        # What the operator knows of each application: its population's zone and,
        # for universal fit, one target rate for everybody.
        self.app_a = np.nanmedian(a_rate, axis=0)
        self.app_d = np.nanmedian(d_rate, axis=0)
        self.app_level = np.nanpercentile(d_rate, cfg.baselines.universal_fit_percentile, axis=0)
        self.avg_rate = np.zeros(pop.n)  # proportional fair's averages, per user

    def allocate(self, serving: np.ndarray, app: np.ndarray, se: np.ndarray, prb_total: np.ndarray) -> np.ndarray:
        """PRBs per user (0 for users not in session)."""
        order, offsets = by_cell(serving, app >= 0, prb_total.size)
        c = se[order] * self.prb_bw_mhz
        n_prb = prb_total.astype(np.int64)
        if self.name == "equal_share":
            got = equal_share_epoch(offsets, n_prb)
        elif self.name == "max_rate":
            got = max_rate_epoch(offsets, n_prb, c)
        elif self.name == "proportional_fair":
            got, _ = proportional_fair_epoch(offsets, n_prb, c, self.avg_rate[order],
                                             self.cfg.baselines.pf_window_epochs)
            b = 1.0 / self.cfg.baselines.pf_window_epochs
            self.avg_rate[order] = (1.0 - b) * self.avg_rate[order] + b * got * c
        else:  # universal_fit: least PRBs for the common per-application target
            ua = app[order]
            k, m = slope_centre(self.app_a[ua], self.app_d[ua], self.cfg.objective.eps)
            n = order.size
            hi = n_prb[np.searchsorted(offsets, np.arange(n), side="right") - 1].astype(np.float64)
            res = solve_arrays(offsets, n_prb, c, np.asarray(k, float).reshape(n), np.asarray(m, float).reshape(n),
                               np.ones(n), np.zeros(n), hi, self.app_level[ua], "epsilon_constraint",
                               overload=self.cfg.overload.policy)
            got = res.prb
        prb = np.zeros(serving.size, dtype=np.int64)
        prb[order] = got
        return prb
