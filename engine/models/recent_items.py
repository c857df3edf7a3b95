"""Each user's most recent items, in order: the short-term sequence the item-to-item
and neural models read.

A fixed-length buffer per user (most recent last, -1 = empty), grown as users
arrive. `push` is a Numba loop because events of one user inside a batch must be
appended in order, and `sequences_before` gives, for every event of a batch, the
user's sequence just before that event (what a prequential test may use).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(cache=True)
def _push(hist: np.ndarray, user: np.ndarray, item: np.ndarray) -> None:
    L = hist.shape[1]
    for e in range(user.shape[0]):
        h = hist[user[e]]
        for k in range(L - 1):
            h[k] = h[k + 1]
        h[L - 1] = item[e]


@numba.njit(cache=True)
def _sequences_before(work: np.ndarray, slot: np.ndarray, item: np.ndarray, out: np.ndarray) -> None:
    # Replays the batch on `work`, a private copy of the rows of the users it touches.
    L = work.shape[1]
    for e in range(slot.shape[0]):
        s = slot[e]
        out[e] = work[s]
        for k in range(L - 1):
            work[s, k] = work[s, k + 1]
        work[s, L - 1] = item[e]


class RecentItems:
    """Per-user buffer of the last `length` item indices (most recent last, -1 = none)."""

    def __init__(self, length: int = 50) -> None:
        if length < 1:
            raise ValueError("length must be >= 1")
        self.length = int(length)
        self.hist = np.full((0, self.length), -1, dtype=np.int64)

    @property
    def n_users(self) -> int:
        return self.hist.shape[0]

    def ensure_users(self, n: int) -> None:
        if n > self.hist.shape[0]:
            new = max(n, 2 * self.hist.shape[0], 16)
            grown = np.full((new, self.length), -1, dtype=np.int64)
            grown[: self.hist.shape[0]] = self.hist
            self.hist = grown

    def push(self, user: np.ndarray, item: np.ndarray) -> None:
        """Append each (user, item) in order."""
        user = np.ascontiguousarray(user, dtype=np.int64)
        if len(user):
            self.ensure_users(int(user.max()) + 1)
            _push(self.hist, user, np.ascontiguousarray(item, dtype=np.int64))

    def sequences(self, user: np.ndarray) -> np.ndarray:
        """(B, length) current sequences (unknown users: all -1)."""
        user = np.asarray(user, dtype=np.int64)
        out = np.full((len(user), self.length), -1, dtype=np.int64)
        known = (user >= 0) & (user < self.hist.shape[0])
        out[known] = self.hist[user[known]]
        return out

    def sequences_before(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """For each event of a batch, the user's sequence just before it (state unchanged)."""
        user = np.ascontiguousarray(user, dtype=np.int64)
        out = np.full((len(user), self.length), -1, dtype=np.int64)
        if len(user):
            self.ensure_users(int(user.max()) + 1)
            uniq, slot = np.unique(user, return_inverse=True)
            work = np.ascontiguousarray(self.hist[uniq])
            _sequences_before(work, slot.astype(np.int64), np.ascontiguousarray(item, dtype=np.int64), out)
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"length": self.length, "hist": self.hist.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        self.length = int(state["length"])
        self.hist = np.array(state["hist"], dtype=np.int64)
