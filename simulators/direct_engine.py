"""zot's personalized policy in process, on arrays: the engine's learner and solver without the bus.

`DirectEnginePolicy` does per epoch what `EngineCore` does with events: the zone
estimates of every user in session from the same posterior state (population
priors from the config, one slot per user and app), the same epoch problem and
the same Numba solve (`operators.epoch.build_problem`, `optimizer.solver.solve_epoch`),
and after delivery the same posterior update from the users' feedback, with the
QoS mapped to the app's metric and back as it travels on the bus. Without
events, queues and JSON it runs large scenarios (`zot simulate --direct`, the
simulator benchmark's 10,000-user run) at the cost of the solver and the learner;
`tests/unit/test_direct_engine.py` checks it takes exactly the engine's decisions.

It sees what the baselines see: the app of every session from its first epoch
(`simulation.app_detection_epochs` and interactions only reach the engine on a bus).
"""

from __future__ import annotations

import numpy as np

from engine import schemas
from engine.config import Config
from engine.runner import app_specs, population_priors
from operators import satisfaction as zot
from operators.epoch import EpochInput, build_problem
from optimizer import qos as qosmap
from optimizer.solver import solve_epoch
from simulators.policies import by_cell
from simulators.population import Population


class DirectEnginePolicy:
    name = "zot"

    def __init__(self, cfg: Config, pop: Population, cell_ids: list[str]) -> None:
        self.cfg, self.pop, self.cell_ids = cfg, pop, cell_ids
        self.state = zot.new_state(app_specs(cfg), population_priors(cfg))
        self.params = zot.UpdateParams(eps=cfg.objective.eps, forgetting=cfg.satisfaction.forgetting)
        seg_weight = np.array([s.weight for s in cfg.population.segments])
        self.weight = seg_weight[pop.segment]
        self.segment = [pop.segment_names[s] for s in pop.segment]
        # Posterior row of each (user, app), -1 until created: the engine looks slots up by
        # id in a dict, which at 10,000 users costs more than the solve.
        self.row = np.full((pop.n, len(pop.apps)), -1, dtype=np.int64)
        self.solve_ms = 0.0

    def rows(self, users: np.ndarray, apps: np.ndarray) -> np.ndarray:
        """The posterior rows of (users[i], apps[i]), created at the segment's prior when new."""
        r = self.row[users, apps]
        new = np.flatnonzero(r < 0)
        if new.size:
            pop = self.pop
            made = zot.ensure_slots(self.state, [pop.user_ids[u] for u in users[new]],
                                    [pop.apps[a] for a in apps[new]], [self.segment[u] for u in users[new]])
            self.row[users[new], apps[new]] = made
            r[new] = made
        return r

    def allocate(self, epoch: int, serving: np.ndarray, app: np.ndarray, se: np.ndarray,
                 prb_total: np.ndarray) -> np.ndarray:
        """(n,) PRBs per user: every cell's epoch solved in one call on the estimated zones."""
        cfg, pop, obj = self.cfg, self.pop, self.cfg.objective
        order, offsets = by_cell(serving, app >= 0, len(self.cell_ids))
        est = zot.estimates(self.state, self.rows(order, app[order]))
        # build_problem reads the channel and the cells' layout, not the ids: none are built.
        inp = EpochInput(cell_ids=self.cell_ids, epochs=[epoch] * len(self.cell_ids),
                         prb_total=np.asarray(prb_total, dtype=np.int64), offsets=offsets, user_ids=[], apps=[],
                         se=se[order])
        problem = build_problem(inp, est.a_mean, est.d_mean, self.weight[order], cfg.radio.prb_bandwidth_hz,
                                obj.eps, obj.min_share, obj.max_share)
        scal = obj.scalarization if obj.scalarization != "pareto" else "weighted_sum"
        target = obj.satisfaction_target if obj.target_level == "satisfaction" else None
        res = solve_epoch(problem, scal, price=obj.resource_price, target=target, overload=cfg.overload.policy,
                          weighted=cfg.overload.weighted)
        self.solve_ms += res.solve_ms
        prb = np.zeros(pop.n, dtype=np.int64)
        prb[order] = res.prb
        return prb

    def learn(self, who: np.ndarray, app: np.ndarray, qos: np.ndarray, signal: np.ndarray,
              rating: np.ndarray) -> None:
        """The posterior update for feedback of users `who` (app per user in `app`, QoS per
        event in the app's metric, as on the bus); a QoS no rate reaches is dropped, as the
        engine dead-letters it."""
        pop = self.pop
        a = app[who]
        rate = np.empty(who.size)
        for k in np.unique(a):
            m = a == k
            rate[m] = qosmap.rate_for_qos(pop.metrics[k], qos[m], **self.cfg.applications[pop.apps[k]].metric_params())
        ok = np.isfinite(rate)
        who, a, rate, signal, rating = who[ok], a[ok], rate[ok], signal[ok], rating[ok]
        rows = self.rows(who, a)
        # Only a rating event carries a rating (the others' is 0 in the engine's batch).
        rating = np.where(signal == schemas.SIGNAL_CODES[schemas.Signal.RATING], rating, 0)
        self.state, _ = zot.update(self.state, zot.Batch.of(rows, a, signal, rate, rating), self.params, inplace=True)
