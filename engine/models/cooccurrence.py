"""Item-to-item co-occurrence: "users who just had j then had x".

For each event (u, x) the item is linked to the user's previous `window` items j,
with weight `decay**(d-1)` at distance d (closer in the sequence = stronger),
in both directions (`forward_only=False`) or only j -> x. Scores for a user sum the
links of their recent items, recent ones weighted more, normalized like a cosine:
C[j, x] / (n_j**alpha * n_x**beta). A small share of popularity breaks ties and
serves users with no history. The matrix is dense (capacity doubling): right for
catalogs up to a few tens of thousands of items; a larger catalog wants a sparse
top-N neighbour list per item instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from engine.models.base import OnlineModel
from engine.models.recent_items import RecentItems


@dataclass(frozen=True)
class SequenceQuery:
    """Rank for users: `users` (B,) dense indices; `sequences` (B, L) optional recent
    items (most recent last, -1 = none) to use instead of the stored ones."""

    users: np.ndarray
    sequences: np.ndarray | None = None


@numba.njit(cache=True)
def _learn(C, n, hist, user, item, weight, window, decay, forward_only):
    L = hist.shape[1]
    for e in range(user.shape[0]):
        x = item[e]
        w0 = weight[e]
        h = hist[user[e]]
        if w0 > 0.0:
            w = w0
            for d in range(1, window + 1):
                j = h[L - d]
                if j < 0:
                    break
                if j != x:
                    C[j, x] += w
                    if not forward_only:
                        C[x, j] += w
                w *= decay
            n[x] += w0
            for k in range(L - 1):
                h[k] = h[k + 1]
            h[L - 1] = x


class ItemCooccurrence(OnlineModel):
    """Online item-to-item model over each user's recent sequence.

    update(batch): record with int `user`, `item` (dense indices) and float `weight`
    (events with weight <= 0, e.g. skips, are neither links nor history).
    predict(query): `SequenceQuery` -> (B, n_items) scores.
    """

    def __init__(self, window: int = 20, decay: float = 0.9, alpha: float = 0.5, beta: float = 0.5,
                 recency: float = 0.9, query_len: int = 20, pop_weight: float = 1e-3,
                 forward_only: bool = False) -> None:
        if window < 1 or query_len < 1:
            raise ValueError("window and query_len must be >= 1")
        self.params = dict(window=int(window), decay=float(decay), alpha=float(alpha), beta=float(beta),
                           recency=float(recency), query_len=int(query_len), pop_weight=float(pop_weight),
                           forward_only=bool(forward_only))
        self.recent = RecentItems(max(window, query_len))
        self.C = np.zeros((0, 0), dtype=np.float32)
        self.n = np.zeros(0, dtype=np.float64)
        self.n_items = 0

    def _ensure_items(self, m: int) -> None:
        if m > self.C.shape[0]:
            new = max(m, 2 * self.C.shape[0], 64)
            C = np.zeros((new, new), dtype=np.float32)
            C[: self.C.shape[0], : self.C.shape[1]] = self.C
            n = np.zeros(new)
            n[: len(self.n)] = self.n
            self.C, self.n = C, n
        self.n_items = max(self.n_items, m)

    def update(self, batch: Any) -> None:
        user = np.ascontiguousarray(batch.user, dtype=np.int64)
        item = np.ascontiguousarray(batch.item, dtype=np.int64)
        weight = np.ascontiguousarray(batch.weight, dtype=np.float64)
        if len(user) == 0:
            return
        if min(user.min(), item.min()) < 0 or not np.isfinite(weight).all():
            raise ValueError("users/items must be dense indices >= 0 and weights finite")
        self._ensure_items(int(item.max()) + 1)
        self.recent.ensure_users(int(user.max()) + 1)
        p = self.params
        _learn(self.C, self.n, self.recent.hist, user, item, weight, p["window"], p["decay"], p["forward_only"])

    def _query_weights(self, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clean (B, q) sequences and their per-position weights recency**age / n_j**alpha."""
        p, m = self.params, self.n_items
        seq = seq[:, -p["query_len"]:]
        seq = np.where(seq < m, seq, -1)  # items this model has not seen carry no links
        age = np.arange(seq.shape[1])[::-1]  # positions from the most recent backwards
        n = self.n[:m] if m else np.ones(1)
        wq = np.where(seq >= 0, p["recency"] ** age, 0.0) / np.maximum(n[np.maximum(seq, 0)], 1.0) ** p["alpha"]
        return np.maximum(seq, 0), wq.astype(np.float32)

    def predict(self, query: SequenceQuery) -> np.ndarray:
        p, m = self.params, self.n_items
        seq = self.recent.sequences(query.users) if query.sequences is None else np.asarray(query.sequences)
        if m == 0:
            return np.zeros((len(seq), 0))
        n = self.n[:m]
        seq, wq = self._query_weights(seq)
        rows = self.C[seq, :m]  # (B, L, m)
        s = np.einsum("bl,blm->bm", wq, rows) / np.maximum(n, 1.0) ** p["beta"]
        return s + p["pop_weight"] * n / max(n.sum(), 1e-300)

    def predict_columns(self, sequences: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(B, M) scores of the items `cols` (B, M) per row: `predict` restricted to them,
        for training a model on a few candidates without scoring the whole catalog."""
        p, m = self.params, self.n_items
        cols = np.asarray(cols, dtype=np.int64)
        if m == 0:
            return np.zeros(cols.shape)
        seq, wq = self._query_weights(np.asarray(sequences))
        known = cols < m
        c = np.where(known, cols, 0)
        rows = self.C[seq[:, :, None], c[:, None, :]]  # (B, L, M)
        n = self.n[:m]
        nc = n[c]
        s = np.einsum("bl,blm->bm", wq, rows) / np.maximum(nc, 1.0) ** p["beta"]
        s = s + p["pop_weight"] * nc / max(n.sum(), 1e-300)
        return np.where(known, s, 0.0)

    def snapshot(self) -> dict[str, Any]:
        m = self.n_items
        return {"params": dict(self.params), "C": self.C[:m, :m].copy(), "n": self.n[:m].copy(),
                "n_items": m, "recent": self.recent.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.params = dict(state["params"])
        m = int(state["n_items"])
        self.C = np.zeros((m, m), dtype=np.float32)
        self.n = np.zeros(m)
        self.C[:, :] = state["C"]
        self.n[:] = state["n"]
        self.n_items = m
        self.recent = RecentItems(1)
        self.recent.restore(state["recent"])
