"""What a policy achieved: accumulated per user-epoch, summarised per policy.

Keys of a policy's summary (stable; documented in docs/simulator.md):
`user_epochs` (active user-epochs counted), `frac_adequate` (share of them at or
better than the user's hidden adequate level), `frac_desired` (at or better than
desired), `mean_satisfaction` (hidden-truth S at the delivered QoS), `prb_used`
(mean PRBs in use per cell-epoch), `bandwidth_used_frac` (PRBs used / PRBs
available), `bandwidth_saved_frac` (1 - that), `revenue` (saved PRB-hours at the
configured price: capacity that can be sold), `jain` (Jain's fairness index of
users' mean satisfaction), `handovers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# Satisfaction histogram bins (for the CDF per policy): 50 equal bins on [0, 1].
SAT_BINS = np.linspace(0.0, 1.0, 51)


def jain(x: np.ndarray) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one user has everything."""
    x = np.asarray(x, float)
    if x.size == 0 or not np.any(x):
        return float("nan") if x.size == 0 else 1.0
    return float(x.sum() ** 2 / (x.size * np.square(x).sum()))


@dataclass
class Outcomes:
    n_users: int
    n_segments: int
    n_cells: int
    prb_per_cell: int
    epoch_s: float
    prb_hour_price: float
    # sums over active user-epochs, per segment and per cell
    seg_count: np.ndarray = field(init=False)
    seg_adequate: np.ndarray = field(init=False)
    seg_desired: np.ndarray = field(init=False)
    seg_sat: np.ndarray = field(init=False)
    cell_count: np.ndarray = field(init=False)
    cell_adequate: np.ndarray = field(init=False)
    cell_sat: np.ndarray = field(init=False)
    cell_prb: np.ndarray = field(init=False)
    user_sat: np.ndarray = field(init=False)
    user_count: np.ndarray = field(init=False)
    epochs: int = 0
    handovers: int = 0
    prb_series: list[int] = field(default_factory=list)
    sat_series: list[float] = field(default_factory=list)
    # Per epoch and cell (for time series and dashboards): one (n_cells,) array per epoch.
    cell_epoch: dict[str, list[np.ndarray]] = field(default_factory=lambda: {
        "users": [], "prb_used": [], "sat_sum": [], "adequate": [], "desired": []})
    sat_hist: np.ndarray = field(init=False)  # counts of user-epoch satisfaction in SAT_BINS

    def __post_init__(self) -> None:
        s, c, n = self.n_segments, self.n_cells, self.n_users
        self.seg_count, self.seg_adequate, self.seg_desired, self.seg_sat = (np.zeros(s) for _ in range(4))
        self.cell_count, self.cell_adequate, self.cell_sat, self.cell_prb = (np.zeros(c) for _ in range(4))
        self.user_sat, self.user_count = np.zeros(n), np.zeros(n)
        self.sat_hist = np.zeros(SAT_BINS.size - 1, dtype=np.int64)

    def record(
        self,
        active: np.ndarray,
        segment: np.ndarray,
        cell: np.ndarray,
        satisfaction: np.ndarray,
        at_adequate: np.ndarray,
        at_desired: np.ndarray,
        prb_per_cell: np.ndarray,
        handovers: int,
    ) -> None:
        """One epoch. Arrays are per user; only `active` users count."""
        idx = np.flatnonzero(active)
        seg, cel = segment[idx], cell[idx]
        sat, ad, de = satisfaction[idx], at_adequate[idx].astype(float), at_desired[idx].astype(float)
        self.seg_count += np.bincount(seg, minlength=self.n_segments)
        self.seg_adequate += np.bincount(seg, ad, minlength=self.n_segments)
        self.seg_desired += np.bincount(seg, de, minlength=self.n_segments)
        self.seg_sat += np.bincount(seg, sat, minlength=self.n_segments)
        self.cell_count += np.bincount(cel, minlength=self.n_cells)
        self.cell_adequate += np.bincount(cel, ad, minlength=self.n_cells)
        self.cell_sat += np.bincount(cel, sat, minlength=self.n_cells)
        self.cell_prb += prb_per_cell
        self.user_sat[idx] += sat
        self.user_count[idx] += 1
        self.epochs += 1
        self.handovers += int(handovers)
        self.sat_hist += np.histogram(sat, bins=SAT_BINS)[0]
        c = self.n_cells
        ce = self.cell_epoch
        ce["users"].append(np.bincount(cel, minlength=c))
        ce["prb_used"].append(np.asarray(prb_per_cell, dtype=float))
        ce["sat_sum"].append(np.bincount(cel, sat, minlength=c))
        ce["adequate"].append(np.bincount(cel, ad, minlength=c))
        ce["desired"].append(np.bincount(cel, de, minlength=c))
        self.prb_series.append(int(prb_per_cell.sum()))
        self.sat_series.append(float(sat.mean()) if sat.size else float("nan"))

    def user_mean_satisfaction(self) -> np.ndarray:
        """Each user's mean satisfaction over its active epochs (NaN if never active)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.user_count > 0, self.user_sat / np.maximum(self.user_count, 1), np.nan)

    def _block(self, count: float, adequate: float, desired: float | None, sat: float, prb: float, cells: int) -> dict:
        cap = self.prb_per_cell * cells * max(self.epochs, 1)
        used_frac = prb / cap if cap else 0.0
        saved_prb_hours = (cap - prb) * self.epoch_s / 3600.0
        out = {
            "user_epochs": int(count),
            "frac_adequate": adequate / count if count else None,
            "mean_satisfaction": sat / count if count else None,
            "prb_used": prb / (cells * max(self.epochs, 1)) if cells else 0.0,
            "bandwidth_used_frac": used_frac,
            "bandwidth_saved_frac": 1.0 - used_frac,
            "revenue": saved_prb_hours * self.prb_hour_price,
        }
        if desired is not None:
            out["frac_desired"] = desired / count if count else None
        return out

    def summary(self, segment_names: list[str], cell_ids: list[str]) -> dict:
        total = self.seg_count.sum()
        overall = self._block(
            total, self.seg_adequate.sum(), self.seg_desired.sum(), self.seg_sat.sum(), self.cell_prb.sum(),
            self.n_cells,
        )
        seen = self.user_count > 0
        overall["jain"] = jain(self.user_sat[seen] / self.user_count[seen])
        overall["handovers"] = self.handovers
        per_segment = {}
        for i, name in enumerate(segment_names):
            c = self.seg_count[i]
            per_segment[name] = {
                "user_epochs": int(c),
                "frac_adequate": self.seg_adequate[i] / c if c else None,
                "frac_desired": self.seg_desired[i] / c if c else None,
                "mean_satisfaction": self.seg_sat[i] / c if c else None,
            }
        per_cell = {
            cid: self._block(self.cell_count[i], self.cell_adequate[i], None, self.cell_sat[i], self.cell_prb[i], 1)
            for i, cid in enumerate(cell_ids)
        }
        return {
            "overall": overall,
            "per_segment": per_segment,
            "per_cell": per_cell,
            "series": {"prb_used": self.prb_series, "mean_satisfaction": self.sat_series},
            "satisfaction_hist": {"bins": SAT_BINS.tolist(), "counts": self.sat_hist.tolist()},
        }
