"""Assemble the cells' epoch: KPI reports plus each user's zone into one optimizer problem.

Pure: KPI events and per-user arrays in, an `EpochProblem` (users sorted by cell,
offsets per cell) and the ids to map the result back out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import schemas
from optimizer.problem import EpochProblem


@dataclass(frozen=True)
class EpochInput:
    """The users of every reporting cell, flattened in cell order."""

    cell_ids: list[str]
    epochs: list[int]
    prb_total: np.ndarray  # (cells,)
    offsets: np.ndarray  # (cells + 1,)
    user_ids: list[str]  # (users,)
    apps: list[str | None]  # (users,) app each user runs, None if not known
    se: np.ndarray  # (users,) bit/s/Hz
    reported: np.ndarray | None = None  # (users,) bool: the KPI report named the app


def gather_kpis(kpis: list[schemas.CellKpi], current_app: dict[str, str]) -> EpochInput:
    """Flatten KPI reports. A cell reporting twice keeps its latest report (highest epoch).

    A user's app is the one in the KPI report, else the one its last context named.
    """
    latest: dict[str, schemas.CellKpi] = {}
    for k in kpis:
        prev = latest.get(k.cell_id)
        if prev is None or k.epoch >= prev.epoch:
            latest[k.cell_id] = k
    cells = sorted(latest)
    users: list[str] = []
    apps: list[str | None] = []
    reported: list[bool] = []
    se: list[float] = []
    offsets = [0]
    for cid in cells:
        for u in latest[cid].users:
            users.append(u.user_id)
            apps.append(u.app if u.app is not None else current_app.get(u.user_id))
            reported.append(u.app is not None)
            se.append(u.spectral_efficiency)
        offsets.append(len(users))
    return EpochInput(
        cell_ids=cells,
        epochs=[latest[c].epoch for c in cells],
        prb_total=np.array([latest[c].prb_total for c in cells], dtype=np.int64),
        offsets=np.array(offsets, dtype=np.int64),
        user_ids=users,
        apps=apps,
        se=np.array(se, dtype=np.float64),
        reported=np.array(reported, dtype=bool),
    )


def build_problem(
    inp: EpochInput,
    a_rate: np.ndarray,
    d_rate: np.ndarray,
    weight: np.ndarray,
    prb_bw_hz: float,
    eps: float,
    min_share: float = 0.0,
    max_share: float = 1.0,
) -> EpochProblem:
    """The optimizer's problem for these users, given their zones in rate (Mbps)."""
    return EpochProblem(
        offsets=inp.offsets,
        n_prb=inp.prb_total,
        prb_bw_hz=prb_bw_hz,
        se=inp.se,
        adequate=a_rate,
        desired=d_rate,
        weight=weight,
        min_share=min_share,
        max_share=max_share,
        eps=eps,
    )
