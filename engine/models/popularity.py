"""Decayed item popularity, global and per segment: the baseline and cold-start fallback.

Counts decay exponentially with event time (half-life `half_life_s`; None = never,
i.e. plain global popularity). Decay is applied lazily: counts are kept in units
of a reference time and an event at time t adds w * 2**((t - t_ref) / half_life),
so an update touches one entry instead of the whole catalog; the units are
rescaled before the exponent could overflow. Scores are only compared within one
call, so the common factor never matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.models.base import OnlineModel

_RESCALE_AT = 60.0  # exponent (in half-lives) past which the units are rebased


@dataclass(frozen=True)
class PopularityQuery:
    """Score every item for each row: `segments` (B,) int (-1 = global only)."""

    segments: np.ndarray


def _grow(a: np.ndarray, n: int, axis: int = -1) -> np.ndarray:
    """Zero-pad `a` along `axis` to at least n (capacity doubling, amortized O(1))."""
    cur = a.shape[axis]
    if n <= cur:
        return a
    new = max(n, 2 * cur, 16)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, new - cur)
    return np.pad(a, pad)


class DecayedPopularity(OnlineModel):
    """Exponentially decayed item counts, globally and per user segment.

    update(batch): any record with int arrays `item` (dense item index), float `ts`,
    float `weight` and optionally int `segment` (-1 = unknown). Items and segments
    beyond the current size enter the catalog.
    predict(query): a `PopularityQuery` -> (B, n_items) scores; a segment's scores are
    its counts shrunk toward the global distribution with `prior_strength`
    pseudo-events, so a small segment starts from the population and moves away.
    """

    def __init__(self, half_life_s: float | None = None, prior_strength: float = 50.0) -> None:
        if half_life_s is not None and not half_life_s > 0:
            raise ValueError("half_life_s must be > 0 or None")
        self.half_life_s = half_life_s
        self.prior_strength = float(prior_strength)
        self.counts = np.zeros(0, dtype=np.float64)  # (n_items,)
        self.seg_counts = np.zeros((0, 0), dtype=np.float64)  # (n_segments, n_items)
        self.t_ref: float | None = None
        self.n_items = 0

    # ------------------------------------------------------------ learning

    def _scale(self, ts: np.ndarray) -> np.ndarray:
        if self.half_life_s is None:
            return np.ones(len(ts))
        if self.t_ref is None:
            self.t_ref = float(ts.min()) if len(ts) else 0.0
        if len(ts) and (float(ts.max()) - self.t_ref) / self.half_life_s > _RESCALE_AT:
            shift = float(ts.max()) - self.t_ref
            f = 2.0 ** (-shift / self.half_life_s)
            self.counts *= f
            self.seg_counts *= f
            self.t_ref += shift
        return 2.0 ** ((np.asarray(ts, dtype=np.float64) - self.t_ref) / self.half_life_s)

    def update(self, batch: Any) -> None:
        item = np.asarray(batch.item, dtype=np.int64)
        w = np.asarray(batch.weight, dtype=np.float64)
        if len(item) == 0:
            return
        if item.min() < 0 or not np.isfinite(w).all():
            raise ValueError("items must be dense indices >= 0 and weights finite")
        seg = getattr(batch, "segment", None)
        self.n_items = max(self.n_items, int(item.max()) + 1)
        self.counts = _grow(self.counts, self.n_items)
        add = w * self._scale(np.asarray(batch.ts))
        np.add.at(self.counts, item, add)
        if seg is not None:
            seg = np.asarray(seg, dtype=np.int64)
            known = seg >= 0
            if known.any():
                n_seg = max(self.seg_counts.shape[0], int(seg.max()) + 1)
                self.seg_counts = _grow(_grow(self.seg_counts, self.n_items, axis=1), n_seg, axis=0)
                np.add.at(self.seg_counts, (seg[known], item[known]), add[known])

    # ------------------------------------------------------------ queries

    def global_scores(self) -> np.ndarray:
        return self.counts[: self.n_items].copy()

    def predict(self, query: PopularityQuery) -> np.ndarray:
        seg = np.asarray(query.segments, dtype=np.int64)
        g = self.counts[: self.n_items]
        gsum = max(g.sum(), 1e-300)
        # Rows are shares of the (decayed) mass, so global and segment rows compare.
        out = np.broadcast_to(g / gsum, (len(seg), self.n_items)).copy()
        have = (seg >= 0) & (seg < self.seg_counts.shape[0])
        if have.any():
            sc = self.seg_counts[seg[have], : self.n_items]
            mass = sc.sum(axis=1, keepdims=True)
            # Shrink toward the global distribution: posterior mean of a Dirichlet.
            out[have] = (sc + self.prior_strength * g / gsum) / (mass + self.prior_strength)
        return out

    # ------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        return {
            "half_life_s": self.half_life_s, "prior_strength": self.prior_strength,
            "counts": self.counts.copy(), "seg_counts": self.seg_counts.copy(),
            "t_ref": self.t_ref, "n_items": self.n_items,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.half_life_s = state["half_life_s"]
        self.prior_strength = float(state["prior_strength"])
        self.counts = np.array(state["counts"], dtype=np.float64)
        self.seg_counts = np.array(state["seg_counts"], dtype=np.float64)
        self.t_ref = state["t_ref"]
        self.n_items = int(state["n_items"])
