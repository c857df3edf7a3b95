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
from numba import njit


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


# ------------------------------------------------------------ compiled twin
# `record_kernel` is `Outcomes.record` for a compiled loop: the same sums in the same
# order (per-epoch partial sums in user order, then added; the epoch's mean
# satisfaction by NumPy's pairwise summation), so the summaries are bit-identical.


@njit(cache=True)
def pairwise_sum(a, n):
    """sum(a[:n]) exactly as NumPy's float64 add.reduce adds it (pairwise, blocks of 8)."""
    if n < 8:
        r = 0.0
        for i in range(n):
            r += a[i]
        return r
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
        i = 8
        while i < n - (n % 8):
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a[:n2], n2) + pairwise_sum(a[n2:], n - n2)


@njit(cache=True, error_model="numpy")
def record_kernel(active, segment, cell, sat, at_adequate, at_desired, used,
                  seg_count, seg_adequate, seg_desired, seg_sat, cell_count, cell_adequate, cell_sat, cell_prb,
                  user_sat, user_count, sat_hist, bins, ce_users, ce_prb, ce_sat, ce_adequate, ce_desired,
                  ep_seg, buf):  # fmt: skip
    """One epoch into the accumulators (in place); the ce_* rows (C,) receive this
    epoch's per-cell values. ep_seg (4, S) and buf (n,) are scratch.
    Returns (PRBs used in all cells, mean satisfaction of the active users or NaN)."""
    n_seg = seg_count.shape[0]
    n_cells = cell_count.shape[0]
    nb = bins.shape[0] - 1
    ep_seg[:, :] = 0.0
    ce_users[:] = 0
    ce_sat[:] = 0.0
    ce_adequate[:] = 0.0
    ce_desired[:] = 0.0
    m = 0
    for u in range(active.shape[0]):
        if not active[u]:
            continue
        s = segment[u]
        c = cell[u]
        x = sat[u]
        ad = 1.0 if at_adequate[u] else 0.0
        de = 1.0 if at_desired[u] else 0.0
        ep_seg[0, s] += 1.0
        ep_seg[1, s] += ad
        ep_seg[2, s] += de
        ep_seg[3, s] += x
        ce_users[c] += 1
        ce_adequate[c] += ad
        ce_desired[c] += de
        ce_sat[c] += x
        user_sat[u] += x
        user_count[u] += 1.0
        if bins[0] <= x <= bins[nb]:  # np.histogram: [e_i, e_i+1), the last bin closed
            lo = 0
            hi = nb
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if bins[mid] <= x:
                    lo = mid
                else:
                    hi = mid
            sat_hist[lo] += 1
        buf[m] = x
        m += 1
    for s in range(n_seg):
        seg_count[s] += ep_seg[0, s]
        seg_adequate[s] += ep_seg[1, s]
        seg_desired[s] += ep_seg[2, s]
        seg_sat[s] += ep_seg[3, s]
    total = 0.0
    for c in range(n_cells):
        cell_count[c] += ce_users[c]
        cell_adequate[c] += ce_adequate[c]
        cell_sat[c] += ce_sat[c]
        cell_prb[c] += used[c]
        ce_prb[c] = used[c]
        total += used[c]
    mean = pairwise_sum(buf, m) / m if m else np.nan
    return int(total), mean


def record_nb(out: Outcomes, active: np.ndarray, segment: np.ndarray, cell: np.ndarray, satisfaction: np.ndarray,
              at_adequate: np.ndarray, at_desired: np.ndarray, prb_per_cell: np.ndarray, handovers: int) -> None:
    """`out.record(...)` through `record_kernel` (same arguments, same effect)."""
    c = out.n_cells
    rows = {"users": np.zeros(c, np.int64), "prb_used": np.zeros(c), "sat_sum": np.zeros(c),
            "adequate": np.zeros(c), "desired": np.zeros(c)}
    n = np.asarray(active).shape[0]
    total, mean = record_kernel(
        np.ascontiguousarray(active, np.bool_), np.ascontiguousarray(segment, np.int64),
        np.ascontiguousarray(cell, np.int64), np.ascontiguousarray(satisfaction, np.float64),
        np.ascontiguousarray(at_adequate, np.bool_), np.ascontiguousarray(at_desired, np.bool_),
        np.ascontiguousarray(prb_per_cell, np.float64), out.seg_count, out.seg_adequate, out.seg_desired, out.seg_sat,
        out.cell_count, out.cell_adequate, out.cell_sat, out.cell_prb, out.user_sat, out.user_count, out.sat_hist,
        SAT_BINS, rows["users"], rows["prb_used"], rows["sat_sum"], rows["adequate"], rows["desired"],
        np.zeros((4, out.n_segments)), np.empty(n))  # fmt: skip
    out.epochs += 1
    out.handovers += int(handovers)
    for k, v in rows.items():
        out.cell_epoch[k].append(v)
    out.prb_series.append(int(total))
    out.sat_series.append(float(mean))


def outcomes_from_arrays(out: Outcomes, arrays: dict[str, np.ndarray], epochs: int, handovers: int) -> Outcomes:
    """Fill a fresh `Outcomes` with what a compiled loop accumulated for one policy over
    `epochs` epochs: the accumulators by name, `ce_<key>` (epochs, C) per-epoch cell rows,
    `prb_series` and `sat_series` (epochs,)."""
    for name in ("seg_count", "seg_adequate", "seg_desired", "seg_sat", "cell_count", "cell_adequate", "cell_sat",
                 "cell_prb", "user_sat", "user_count", "sat_hist"):
        setattr(out, name, arrays[name])
    out.epochs = int(epochs)
    out.handovers = int(handovers)
    for k in out.cell_epoch:
        out.cell_epoch[k] = list(arrays["ce_" + k][:epochs])
    out.prb_series = [int(v) for v in arrays["prb_series"][:epochs]]
    out.sat_series = [float(v) for v in arrays["sat_series"][:epochs]]
    return out
