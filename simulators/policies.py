"""The baseline policies the simulator compares zot against (`optimizer.baselines`).

A baseline decides from what an operator's scheduler knows today: each user's
channel and application, never its hidden tolerance. Universal fit gives every
user of an application the same target rate: the configured percentile of the
population's desired levels of that application (today's over-engineered
network, sized for demanding users).
"""

from __future__ import annotations

import numpy as np

from engine.config import Config
from optimizer import baselines
from optimizer.problem import CellProblem
from optimizer.solver import solve_arrays
from simulators.population import Population


class BaselinePolicy:
    """Per-epoch PRB decisions of one baseline for every cell."""

    def __init__(self, name: str, cfg: Config, pop: Population, a_rate: np.ndarray, d_rate: np.ndarray) -> None:
        if name not in baselines.BASELINES:
            raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(baselines.BASELINES)}")
        self.name = name
        self.cfg = cfg
        self.user_ids = pop.user_ids
        # What the operator knows of each application: its population's zone (for
        # the problem's bookkeeping) and, for universal fit, one target for all.
        self.app_a = np.nanmedian(a_rate, axis=0)
        self.app_d = np.nanmedian(d_rate, axis=0)
        self.app_level = np.nanpercentile(d_rate, cfg.baselines.universal_fit_percentile, axis=0)
        self.pf_state = baselines.PFState()

    def allocate(self, serving: np.ndarray, app: np.ndarray, se: np.ndarray, prb_total: np.ndarray) -> np.ndarray:
        """PRBs per user (0 for users not in session)."""
        prb = np.zeros(serving.size, dtype=np.int64)
        active = np.flatnonzero(app >= 0)
        order = active[np.argsort(serving[active], kind="stable")]
        bounds = np.searchsorted(serving[order], np.arange(len(prb_total) + 1))
        for c in range(len(prb_total)):
            users = order[bounds[c]:bounds[c + 1]]
            if users.size == 0:
                continue
            prb[users] = self._cell(users, app[users], se[users], int(prb_total[c]))
        return prb

    def _cell(self, users: np.ndarray, app: np.ndarray, se: np.ndarray, n_prb: int) -> np.ndarray:
        prob = CellProblem(n_prb=n_prb, prb_bw_hz=self.cfg.radio.prb_bandwidth_hz, se=se,
                           adequate=self.app_a[app], desired=self.app_d[app], eps=self.cfg.objective.eps)
        if self.name == "equal_share":
            return baselines.equal_share(prob).prb
        if self.name == "max_rate":
            return baselines.max_rate(prob).prb
        if self.name == "proportional_fair":
            ids = [self.user_ids[u] for u in users]
            res, self.pf_state = baselines.proportional_fair(prob, self.pf_state, ids,
                                                              self.cfg.baselines.pf_window_epochs)
            return res.prb
        # universal_fit: least PRBs for the common per-application target; overload as configured.
        res = solve_arrays(np.array([0, prob.n_users], dtype=np.int64), np.array([n_prb], dtype=np.int64),
                           prob.c, prob.k, prob.m, prob.weight, prob.lo_prb, prob.hi_prb, self.app_level[app],
                           "epsilon_constraint",
                           overload=self.cfg.overload.policy)
        return res.prb
