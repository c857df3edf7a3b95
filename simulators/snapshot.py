"""One epoch of a scenario as the engine would see it before any feedback.

For `zot optimize`: the scenario's users in session at the first epoch, their
serving cells and spectral efficiencies, and their zones as the engine's
population prior states them (not the hidden truth), laid out as one
`EpochProblem`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import Config
from engine.runner import EngineCore
from operators import satisfaction as zot
from optimizer.problem import EpochProblem
from simulators.world import Streams
from simulators.policies import by_cell
from simulators.population import draw_population
from simulators.radio import RadioNetwork
from simulators.traffic import Sessions


@dataclass(frozen=True)
class EpochSnapshot:
    cell_ids: list[str]
    user_ids: list[str]  # in problem order (sorted by cell)
    apps: list[str]  # in problem order
    problem: EpochProblem


def first_epoch(cfg: Config) -> EpochSnapshot:
    rs = Streams.from_seed(cfg.simulation.seed)
    pop = draw_population(cfg, rs.population)
    radio = RadioNetwork(cfg, pop, rs.radio)
    mean_epochs = np.array([cfg.applications[a].session_mean_s / cfg.simulation.epoch_s for a in pop.apps])
    activity = np.array([cfg.population.segments[s].activity for s in pop.segment])
    sessions = Sessions.steady(pop.interest, activity, mean_epochs, rs.traffic)
    ep = radio.step(cfg.simulation.epoch_s, rs.radio)
    se = radio.efficiency(ep, np.zeros((1, radio.n_cells)))[0]  # no load yet: no interference
    order, offsets = by_cell(ep.serving, sessions.app >= 0, radio.n_cells)
    core = EngineCore(cfg)
    users = [pop.user_ids[u] for u in order]
    apps = [pop.apps[sessions.app[u]] for u in order]
    rows = zot.ensure_slots(core.state, users, apps, segments=[pop.segment_names[pop.segment[u]] for u in order])
    est = zot.estimates(core.state, rows)
    weight = np.array([cfg.population.segments[pop.segment[u]].weight for u in order])
    problem = EpochProblem(
        offsets=offsets, n_prb=radio.prb_per_cell, prb_bw_hz=cfg.radio.prb_bandwidth_hz, se=se[order],
        adequate=est.a_mean, desired=est.d_mean, weight=weight, min_share=cfg.objective.min_share,
        max_share=cfg.objective.max_share, eps=cfg.objective.eps,
    )
    return EpochSnapshot(radio.cell_ids, users, apps, problem)
