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
from numba import njit

from engine.config import Config
from optimizer.baselines import BASELINES
from optimizer.baselines_epoch import (
    _equal_share,
    _max_rate,
    _proportional_fair,
    equal_share_epoch,
    max_rate_epoch,
    proportional_fair_epoch,
)
from optimizer.curves import slope_centre
from optimizer.solver import _check_options, _epoch_kernel, solve_arrays
from simulators.population import Population


def by_cell(serving: np.ndarray, active: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Active users sorted by serving cell (stable) and the per-cell offsets."""
    users = np.flatnonzero(active)
    order = users[np.argsort(serving[users], kind="stable")]
    offsets = np.searchsorted(serving[order], np.arange(n_cells + 1)).astype(np.int64)
    return order, offsets


def _column_stat(x: np.ndarray, stat) -> np.ndarray:
    """np.nanmedian / np.nanpercentile along axis 0 (the same numbers: both drop the NaN of
    each column and take the plain statistic), without the masked-array path that cost
    milliseconds per run at small sizes. NaN for an all-NaN column."""
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        v = x[:, j][~np.isnan(x[:, j])]
        if v.size:
            out[j] = stat(v)
    return out


class BaselinePolicy:
    """Per-epoch PRB decisions of one baseline for every cell."""

    def __init__(self, name: str, cfg: Config, pop: Population, a_rate: np.ndarray, d_rate: np.ndarray) -> None:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
        self.name = name
        self.cfg = cfg
        self.prb_bw_mhz = cfg.radio.prb_bandwidth_hz / 1e6
        # What the operator knows of each application: its population's zone and,
        # for universal fit, one target rate for everybody (only universal fit uses
        # them; the others get NaN, which costs nothing at set-up).
        n_apps = a_rate.shape[1]
        if name == "universal_fit":
            self.app_a = _column_stat(a_rate, np.median)
            self.app_d = _column_stat(d_rate, np.median)
            self.app_level = _column_stat(d_rate, lambda v: np.percentile(v, cfg.baselines.universal_fit_percentile))
            # The curve per application, as `allocate` computes it per user.
            k, m = slope_centre(self.app_a, self.app_d, cfg.objective.eps)
            self.app_k = np.asarray(k, float).reshape(-1)
            self.app_m = np.asarray(m, float).reshape(-1)
        else:
            self.app_a = self.app_d = self.app_level = self.app_k = self.app_m = np.full(n_apps, np.nan)
        self.avg_rate = np.zeros(pop.n)  # proportional fair's averages, per user
        self.code = POLICY_CODES[name]
        self.ovl = _check_options("epsilon_constraint", 0.0, cfg.overload.policy)[1]

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


# ------------------------------------------------------------ compiled twin

UNIVERSAL_FIT, EQUAL_SHARE, PROPORTIONAL_FAIR, MAX_RATE = 0, 1, 2, 3
POLICY_CODES = {"universal_fit": UNIVERSAL_FIT, "equal_share": EQUAL_SHARE, "proportional_fair": PROPORTIONAL_FAIR,
                "max_rate": MAX_RATE}


@njit(cache=True)
def allocate_kernel(code, serving, app, se, n_prb, prb_bw_mhz, avg_rate, pf_window, app_k, app_m, app_level, ovl,
                    prb, order, offsets, c):  # fmt: skip
    """`BaselinePolicy.allocate` in Numba: PRBs per user into prb (n,), updating
    avg_rate (proportional fair) in place. order (n,), offsets (C + 1,), c (n,): scratch.

    Active users sorted by cell, stably (a counting sort: the same order as
    `by_cell`'s stable argsort), then the same batched kernels.
    """
    n = serving.shape[0]
    n_cells = n_prb.shape[0]
    for i in range(n_cells + 1):
        offsets[i] = 0
    for u in range(n):
        prb[u] = 0
        if app[u] >= 0:
            offsets[serving[u] + 1] += 1
    for i in range(n_cells):
        offsets[i + 1] += offsets[i]
    m = offsets[n_cells]
    fill = offsets[:n_cells].copy()
    for u in range(n):
        if app[u] >= 0:
            order[fill[serving[u]]] = u
            fill[serving[u]] += 1
    order_m = order[:m]
    cm = c[:m]
    for j in range(m):
        cm[j] = se[order_m[j]] * prb_bw_mhz
    got = np.zeros(m, dtype=np.int64)
    if code == EQUAL_SHARE:
        _equal_share(offsets, n_prb, got)
    elif code == MAX_RATE:
        _max_rate(offsets, n_prb, cm, got)
    elif code == PROPORTIONAL_FAIR:
        avg = np.empty(m)
        for j in range(m):
            avg[j] = avg_rate[order_m[j]]
        _proportional_fair(offsets, n_prb, cm, avg, float(pf_window), got, np.zeros(m))
        b = 1.0 / pf_window
        for j in range(m):
            avg_rate[order_m[j]] = (1.0 - b) * avg[j] + b * got[j] * cm[j]
    else:  # universal fit: the batched solver's epsilon-constraint, one target per application
        k = np.empty(m)
        mm = np.empty(m)
        hi = np.empty(m)
        target = np.empty(m)
        for i in range(n_cells):
            for j in range(offsets[i], offsets[i + 1]):
                a = app[order_m[j]]
                k[j] = app_k[a]
                mm[j] = app_m[a]
                target[j] = app_level[a]
                hi[j] = float(n_prb[i])
        _epoch_kernel(offsets, n_prb, 1, ovl, False, 0.0, np.zeros(n_cells), cm, k, mm, np.ones(m), np.zeros(m), hi,
                      target, np.empty(m), got, np.empty(m), np.empty(m), np.empty(m, np.bool_), np.empty(m, np.int8),
                      np.empty(n_cells, np.int64), np.empty(n_cells), np.empty(n_cells, np.bool_), np.empty(n_cells))
    for j in range(m):
        prb[order_m[j]] = got[j]


def allocate_nb(policy: BaselinePolicy, serving: np.ndarray, app: np.ndarray, se: np.ndarray,
                prb_total: np.ndarray) -> np.ndarray:
    """`policy.allocate(serving, app, se, prb_total)` through `allocate_kernel` (same result and
    the same update of proportional fair's averages)."""
    n = serving.shape[0]
    n_cells = prb_total.size
    prb = np.zeros(n, dtype=np.int64)
    allocate_kernel(policy.code, np.ascontiguousarray(serving, np.int64), np.ascontiguousarray(app, np.int64),
                    np.ascontiguousarray(se, np.float64), np.ascontiguousarray(prb_total, np.int64),
                    float(policy.prb_bw_mhz), policy.avg_rate, int(policy.cfg.baselines.pf_window_epochs),
                    policy.app_k, policy.app_m, np.ascontiguousarray(policy.app_level, np.float64), int(policy.ovl),
                    prb, np.empty(n, np.int64), np.empty(n_cells + 1, np.int64), np.empty(n))
    return prb
