"""Serving-cell selection: strongest RSRP with A3 hysteresis and time-to-trigger.

Users attach to the strongest cell. Afterwards a user hands over when a
neighbour is stronger than the serving cell by more than `hysteresis_db`
(3GPP event A3 with offset = hysteresis) and stays the strongest such
neighbour for `ttt_epochs` further epochs (time-to-trigger; 0 = at once).
If the best neighbour changes, or the condition lapses, the timer restarts:
one timer per user for the current best neighbour, a simplification of the
per-neighbour timers of TS 38.331 (see docs/radio.md).

Feed it RSRP without fast fading (the large-scale `rsrp_dbm`, optionally
smoothed with `l3_filter`) as a UE's layer-3 filtered measurements are.
All functions are vectorized over users: (n, C) RSRP in, (n,) state out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True, eq=False)
class HandoverState:
    """Per user: serving cell, A3 candidate (-1 none) and how many consecutive
    epochs it has met the condition, handovers and ping-pongs so far, the cell
    last left and the epochs since the last handover."""

    serving: np.ndarray
    candidate: np.ndarray
    held: np.ndarray
    handovers: np.ndarray
    ping_pongs: np.ndarray
    previous: np.ndarray
    since_handover: np.ndarray


def attach(rsrp_dbm: np.ndarray) -> HandoverState:
    """Initial attachment to the strongest cell; no handover counted."""
    rsrp = np.asarray(rsrp_dbm, dtype=float)
    if rsrp.ndim != 2 or rsrp.shape[1] == 0:
        raise ValueError(f"rsrp_dbm must be (n_users, n_cells), got {rsrp.shape}")
    n = rsrp.shape[0]
    return HandoverState(
        serving=np.argmax(rsrp, axis=1),
        candidate=np.full(n, -1, dtype=np.int64),
        held=np.zeros(n, dtype=np.int64),
        handovers=np.zeros(n, dtype=np.int64),
        ping_pongs=np.zeros(n, dtype=np.int64),
        previous=np.full(n, -1, dtype=np.int64),
        since_handover=np.full(n, np.iinfo(np.int64).max // 2, dtype=np.int64),
    )


def handover_step(
    state: HandoverState,
    rsrp_dbm: np.ndarray,
    hysteresis_db: float = 3.0,
    ttt_epochs: int = 0,
    ping_pong_epochs: int = 5,
) -> tuple[HandoverState, np.ndarray]:
    """One epoch of A3 evaluation. Returns (new state, mask of users handed over).

    A handover back to the cell just left within `ping_pong_epochs` epochs of
    the previous handover counts as a ping-pong.
    """
    if hysteresis_db < 0 or ttt_epochs < 0:
        raise ValueError("hysteresis_db and ttt_epochs must be >= 0")
    rsrp = np.asarray(rsrp_dbm, dtype=float)
    n = state.serving.shape[0]
    if rsrp.shape[0] != n:
        raise ValueError(f"rsrp_dbm has {rsrp.shape[0]} users, state has {n}")
    rows = np.arange(n)
    best = np.argmax(rsrp, axis=1)
    a3 = (best != state.serving) & (rsrp[rows, best] > rsrp[rows, state.serving] + hysteresis_db)
    same = a3 & (best == state.candidate)
    held = np.where(a3, np.where(same, state.held + 1, 1), 0)
    candidate = np.where(a3, best, -1)
    go = a3 & (held > ttt_epochs)
    since = state.since_handover + 1
    ping = go & (best == state.previous) & (since <= ping_pong_epochs)
    new = HandoverState(
        serving=np.where(go, best, state.serving),
        candidate=np.where(go, -1, candidate),
        held=np.where(go, 0, held),
        handovers=state.handovers + go,
        ping_pongs=state.ping_pongs + ping,
        previous=np.where(go, state.serving, state.previous),
        since_handover=np.where(go, 0, since),
    )
    return new, go


def l3_filter(previous_dbm: np.ndarray | None, measured_dbm: np.ndarray, k: int = 4) -> np.ndarray:
    """Layer-3 RSRP filter of TS 38.331 5.5.3.2: F = (1 - a) F_prev + a M, a = 1/2^(k/4).

    Applied in dB as the standard does; `previous_dbm` None starts the filter.
    """
    m = np.asarray(measured_dbm, dtype=float)
    if previous_dbm is None:
        return m.copy()
    a = 1.0 / 2.0 ** (k / 4.0)
    return (1.0 - a) * np.asarray(previous_dbm, dtype=float) + a * m


# ------------------------------------------------------------ compiled twin


@njit(cache=True)
def handover_kernel(rsrp, hysteresis_db, ttt_epochs, ping_pong_epochs, serving, candidate, held, handovers,
                    ping_pongs, previous, since_handover, went):  # fmt: skip
    """`handover_step` in place on the state arrays; went[u] = handed over this epoch."""
    n, n_cells = rsrp.shape
    for u in range(n):
        best = 0
        for c in range(1, n_cells):  # argmax: the first of equal maxima
            if rsrp[u, c] > rsrp[u, best]:
                best = c
        s = serving[u]
        a3 = best != s and rsrp[u, best] > rsrp[u, s] + hysteresis_db
        h = (held[u] + 1 if best == candidate[u] else 1) if a3 else 0
        go = a3 and h > ttt_epochs
        since = since_handover[u] + 1
        went[u] = go
        if go:
            if best == previous[u] and since <= ping_pong_epochs:
                ping_pongs[u] += 1
            handovers[u] += 1
            previous[u] = s
            serving[u] = best
            candidate[u] = -1
            held[u] = 0
            since_handover[u] = 0
        else:
            candidate[u] = best if a3 else -1
            held[u] = h
            since_handover[u] = since


def handover_step_nb(
    state: HandoverState,
    rsrp_dbm: np.ndarray,
    hysteresis_db: float = 3.0,
    ttt_epochs: int = 0,
    ping_pong_epochs: int = 5,
) -> tuple[HandoverState, np.ndarray]:
    """`handover_step` as one Numba pass: same signature and result."""
    if hysteresis_db < 0 or ttt_epochs < 0:
        raise ValueError("hysteresis_db and ttt_epochs must be >= 0")
    rsrp = np.ascontiguousarray(rsrp_dbm, dtype=float)
    n = state.serving.shape[0]
    if rsrp.ndim != 2 or rsrp.shape[0] != n:
        raise ValueError(f"rsrp_dbm has {rsrp.shape[0]} users, state has {n}")
    new = HandoverState(*(np.array(a, dtype=np.int64) for a in (
        state.serving, state.candidate, state.held, state.handovers, state.ping_pongs, state.previous,
        state.since_handover)))  # fmt: skip
    went = np.zeros(n, dtype=np.bool_)
    handover_kernel(rsrp, float(hysteresis_db), int(ttt_epochs), int(ping_pong_epochs), new.serving, new.candidate,
                    new.held, new.handovers, new.ping_pongs, new.previous, new.since_handover, went)
    return new, went
