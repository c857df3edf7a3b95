"""Each user's interests at two time scales, several per user, with segment priors.

Interests are weights over a small key space (the apps a user uses, or item
attributes such as genres): a user into both video and gaming keeps both, not
their average. Two exponentially decayed counters per (user, key):

- long-term (half-life `long_half_life_s`, weeks): what the user keeps coming back to;
- short-term (half-life `short_half_life_s`, an hour): what they are into now.

Cold start is shrinkage: the long-term distribution is the user's decayed counts
plus `prior_strength` pseudo-events drawn from their segment's distribution (itself
shrunk toward the population's), and the short-term distribution is shrunk toward
the user's own long-term one. A new user is their segment; as evidence arrives,
and decays, the weights move between these levels by themselves.

Next-application prediction is naive Bayes over context:
P(app | user, hour, cell) ∝ P(app | user) · P(app | hour)/P(app) · P(app | cell)/P(app),
with P(app | user) a blend of the short- and long-term interests and the context
tables counted from all users' events, P(app | context) shrunk toward P(app) so
that an unseen context is neutral.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from engine.models.base import OnlineModel

N_HOURS = 24


@dataclass(frozen=True)
class InterestQuery:
    """Interests of `users` (B,) dense indices (unknown or new: -1 or beyond the
    table, then the segment prior) at times `ts` (B,); `segments` (B,) optional
    segment indices for users the model has no segment for."""

    users: np.ndarray
    ts: np.ndarray
    segments: np.ndarray | None = None


@dataclass(frozen=True)
class Interests:
    """(B, n_keys) distributions (rows sum to 1) and the evidence behind them."""

    long: np.ndarray
    short: np.ndarray
    long_mass: np.ndarray  # (B,) decayed number of the user's own events, long-term
    short_mass: np.ndarray  # (B,) same, short-term


@numba.njit(cache=True)
def _learn(long, short, last, user, key, ts, w, hl_long, hl_short):
    for e in range(user.shape[0]):
        u = user[e]
        t = ts[e]
        if np.isnan(last[u]):
            last[u] = t
        dt = t - last[u]
        if dt > 0.0:
            # Decay the row to this event's time, then add at full weight.
            fl = 2.0 ** (-dt / hl_long)
            fs = 2.0 ** (-dt / hl_short)
            for k in range(long.shape[1]):
                long[u, k] *= fl
                short[u, k] *= fs
            last[u] = t
            long[u, key[e]] += w[e]
            short[u, key[e]] += w[e]
        else:
            # A late event: add it already decayed to the row's time.
            long[u, key[e]] += w[e] * 2.0 ** (dt / hl_long)
            short[u, key[e]] += w[e] * 2.0 ** (dt / hl_short)


def _grow_rows(a: np.ndarray, n: int, fill: float = 0.0) -> np.ndarray:
    if n <= a.shape[0]:
        return a
    out = np.full((max(n, 2 * a.shape[0], 16),) + a.shape[1:], fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def _grow_cols(a: np.ndarray, n: int) -> np.ndarray:
    if n <= a.shape[1]:
        return a
    out = np.zeros((a.shape[0], max(n, 2 * a.shape[1], 8)), dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


class UserInterests(OnlineModel):
    """Two-time-scale interests per user over a growing key space, with segment priors.

    update(batch): record with int `user`, `key` (dense indices), float `ts`, `weight`,
    and optional int `segment`, `hour` (0..23), `cell` (-1 = unknown in each).
    predict(query): `InterestQuery` -> `Interests`.
    """

    def __init__(self, long_half_life_s: float = 30 * 86400.0, short_half_life_s: float = 3600.0,
                 prior_strength: float = 5.0, short_prior_strength: float = 2.0, short_share: float = 0.5,
                 context_strength: float = 20.0, learn_context: bool = True) -> None:
        if not (long_half_life_s > 0 and short_half_life_s > 0):
            raise ValueError("half-lives must be > 0")
        if not 0.0 <= short_share <= 1.0:
            raise ValueError("short_share must be in [0, 1]")
        self.cfg = dict(long_half_life_s=float(long_half_life_s), short_half_life_s=float(short_half_life_s),
                        prior_strength=float(prior_strength), short_prior_strength=float(short_prior_strength),
                        short_share=float(short_share), context_strength=float(context_strength),
                        learn_context=bool(learn_context))
        self.n_keys = 0
        self.n_users = 0
        self.long = np.zeros((0, 0))
        self.short = np.zeros((0, 0))
        self.last = np.zeros(0)  # time each user's rows were last decayed to (nan = never)
        self.segment = np.zeros(0, dtype=np.int64)  # -1 = unknown
        self.seg_counts = np.zeros((0, 0))
        self.key_counts = np.zeros(0)
        self.hour_counts = np.zeros((N_HOURS, 0))
        self.cell_counts = np.zeros((0, 0))

    # ------------------------------------------------------------ learning

    def _ensure(self, n_users: int, n_keys: int) -> None:
        if n_keys > self.long.shape[1]:
            self.long, self.short = _grow_cols(self.long, n_keys), _grow_cols(self.short, n_keys)
            self.seg_counts, self.hour_counts = _grow_cols(self.seg_counts, n_keys), _grow_cols(self.hour_counts, n_keys)
            self.cell_counts = _grow_cols(self.cell_counts, n_keys)
            self.key_counts = _grow_cols(self.key_counts[None], n_keys)[0]
        if n_users > self.long.shape[0]:
            self.long, self.short = _grow_rows(self.long, n_users), _grow_rows(self.short, n_users)
            self.last = _grow_rows(self.last, n_users, np.nan)
            self.segment = _grow_rows(self.segment, n_users, -1)
        self.n_users, self.n_keys = max(self.n_users, n_users), max(self.n_keys, n_keys)

    def set_segments(self, users: np.ndarray, segments: np.ndarray) -> None:
        """Record users' segments (dense indices; -1 leaves a user's segment as it was)."""
        users, segments = np.asarray(users, dtype=np.int64), np.asarray(segments, dtype=np.int64)
        if len(users):
            self._ensure(int(users.max()) + 1, self.n_keys)
            known = segments >= 0
            self.segment[users[known]] = segments[known]
            if known.any():
                self.seg_counts = _grow_rows(self.seg_counts, int(segments.max()) + 1)

    def update(self, batch: Any) -> None:
        user = np.ascontiguousarray(batch.user, dtype=np.int64)
        key = np.ascontiguousarray(batch.key, dtype=np.int64)
        ts = np.ascontiguousarray(batch.ts, dtype=np.float64)
        w = np.ascontiguousarray(batch.weight, dtype=np.float64)
        if len(user) == 0:
            return
        if min(user.min(), key.min()) < 0 or not (np.isfinite(ts).all() and np.isfinite(w).all()) or (w < 0).any():
            raise ValueError("users/keys must be dense indices >= 0, ts finite, weights finite and >= 0")
        hour = getattr(batch, "hour", None)
        cell = getattr(batch, "cell", None)
        if hour is not None and ((np.asarray(hour) >= N_HOURS).any()):
            raise ValueError("hour must be in 0..23 (or -1 = unknown)")
        self._ensure(int(user.max()) + 1, int(key.max()) + 1)
        if getattr(batch, "segment", None) is not None:
            self.set_segments(user, np.asarray(batch.segment))
        c = self.cfg
        _learn(self.long, self.short, self.last, user, key, ts, w, c["long_half_life_s"], c["short_half_life_s"])
        if not c["learn_context"]:
            return  # the owner sets the population tables (`set_context_tables`)
        np.add.at(self.key_counts, key, w)
        seg = self.segment[user]
        known = seg >= 0
        np.add.at(self.seg_counts, (seg[known], key[known]), w[known])
        if hour is not None:
            hour = np.asarray(hour, dtype=np.int64)
            ok = hour >= 0
            np.add.at(self.hour_counts, (hour[ok], key[ok]), w[ok])
        if cell is not None:
            cell = np.asarray(cell, dtype=np.int64)
            ok = cell >= 0
            if ok.any():
                self.cell_counts = _grow_rows(self.cell_counts, int(cell.max()) + 1)
                np.add.at(self.cell_counts, (cell[ok], key[ok]), w[ok])

    def set_context_tables(self, seg_counts: np.ndarray, key_counts: np.ndarray, hour_counts: np.ndarray,
                           cell_counts: np.ndarray) -> None:
        """Replace the population tables (segment x key, key, hour x key, cell x key counts).

        For an owner that keeps them itself (`learn_context=False`), e.g. the engine,
        which sums per-partition tables so every worker predicts alike.
        """
        K = max(self.n_keys, key_counts.shape[0])
        self._ensure(self.n_users, K)
        width = self.long.shape[1]
        self.key_counts = _grow_cols(np.asarray(key_counts, dtype=np.float64)[None], width)[0]
        self.seg_counts = _grow_cols(np.asarray(seg_counts, dtype=np.float64).reshape(-1, key_counts.shape[0]), width)
        self.hour_counts = _grow_cols(np.asarray(hour_counts, dtype=np.float64).reshape(N_HOURS, -1), width)
        self.cell_counts = _grow_cols(np.asarray(cell_counts, dtype=np.float64).reshape(-1, key_counts.shape[0]), width)

    # ------------------------------------------------------------ queries

    def segment_prior(self, segments: np.ndarray) -> np.ndarray:
        """(B, n_keys) each segment's distribution shrunk toward the population's."""
        K = self.n_keys
        g = self.key_counts[:K]
        gd = g / g.sum() if g.sum() > 0 else np.full(K, 1.0 / max(K, 1))
        segments = np.asarray(segments, dtype=np.int64)
        out = np.broadcast_to(gd, (len(segments), K)).copy()
        have = (segments >= 0) & (segments < self.seg_counts.shape[0])
        if have.any():
            sc = self.seg_counts[segments[have], :K]
            s = self.cfg["prior_strength"]
            out[have] = (sc + s * gd) / (sc.sum(axis=1, keepdims=True) + s)
        return out

    def predict(self, query: InterestQuery) -> Interests:
        c, K = self.cfg, self.n_keys
        users = np.asarray(query.users, dtype=np.int64)
        ts = np.broadcast_to(np.asarray(query.ts, dtype=np.float64), users.shape)
        known = (users >= 0) & (users < self.n_users)
        seg = np.full(len(users), -1, dtype=np.int64)
        if query.segments is not None:
            seg[:] = query.segments
        seg[known] = np.where(self.segment[users[known]] >= 0, self.segment[users[known]], seg[known])
        long = np.zeros((len(users), K))
        short = np.zeros((len(users), K))
        if known.any():
            u = users[known]
            age = np.maximum(ts[known] - np.nan_to_num(self.last[u], nan=ts[known]), 0.0)
            long[known] = self.long[u, :K] * (2.0 ** (-age / c["long_half_life_s"]))[:, None]
            short[known] = self.short[u, :K] * (2.0 ** (-age / c["short_half_life_s"]))[:, None]
        lm, sm = long.sum(axis=1), short.sum(axis=1)
        prior = self.segment_prior(seg)
        long_d = (long + c["prior_strength"] * prior) / (lm + c["prior_strength"])[:, None]
        short_d = (short + c["short_prior_strength"] * long_d) / (sm + c["short_prior_strength"])[:, None]
        return Interests(long=long_d, short=short_d, long_mass=lm, short_mass=sm)

    def _lift(self, table: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        """(B, n_keys) P(key | context) / P(key), P(key | context) shrunk toward P(key)
        with `context_strength` pseudo-events: a context seen rarely (or never) is
        neutral (lift 1) instead of favouring the keys with the fewest events, which
        is what Laplace-smoothed P(context | key) would do."""
        K = self.n_keys
        g = self.key_counts[:K]
        p_key = (g + 1.0) / (g.sum() + K)
        c = table[ctx, :K]
        a = self.cfg["context_strength"]
        p_key_ctx = (c + a * p_key) / (c.sum(axis=1, keepdims=True) + a)
        return p_key_ctx / p_key

    def next_key(self, query: InterestQuery, hours: np.ndarray | None = None,
                 cells: np.ndarray | None = None) -> np.ndarray:
        """(B, n_keys) P(key | user, hour, cell): the next application, when keys are apps.

        Naive Bayes in the form P(key | user) x prod over contexts of
        P(key | context) / P(key). Unknown hour or cell (-1, or None) drops that factor.
        """
        if self.n_keys == 0:
            return np.zeros((len(np.asarray(query.users)), 0))
        it = self.predict(query)
        sh = self.cfg["short_share"]
        logp = np.log(sh * it.short + (1.0 - sh) * it.long + 1e-300)
        if hours is not None:
            hours = np.asarray(hours, dtype=np.int64)
            ok = hours >= 0
            logp[ok] += np.log(self._lift(self.hour_counts, hours[ok]))
        if cells is not None and self.cell_counts.shape[0]:
            cells = np.asarray(cells, dtype=np.int64)
            ok = (cells >= 0) & (cells < self.cell_counts.shape[0])  # a cell never seen: no information
            logp[ok] += np.log(self._lift(self.cell_counts, cells[ok]))
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        U, K = self.n_users, self.n_keys
        return {
            "cfg": dict(self.cfg), "n_users": U, "n_keys": K,
            "long": self.long[:U, :K].copy(), "short": self.short[:U, :K].copy(), "last": self.last[:U].copy(),
            "segment": self.segment[:U].copy(), "seg_counts": self.seg_counts[:, :K].copy(),
            "key_counts": self.key_counts[:K].copy(), "hour_counts": self.hour_counts[:, :K].copy(),
            "cell_counts": self.cell_counts[:, :K].copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.__init__(**state["cfg"])
        self._ensure(int(state["n_users"]), int(state["n_keys"]))
        U, K = self.n_users, self.n_keys
        self.long[:U, :K], self.short[:U, :K] = state["long"], state["short"]
        self.last[:U], self.segment[:U] = state["last"], state["segment"]
        self.seg_counts = _grow_cols(np.array(state["seg_counts"], dtype=np.float64), self.long.shape[1])
        self.key_counts[:K] = state["key_counts"]
        self.hour_counts[:, :K] = state["hour_counts"]
        self.cell_counts = _grow_cols(np.array(state["cell_counts"], dtype=np.float64), self.long.shape[1])
