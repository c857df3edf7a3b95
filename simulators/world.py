"""The simulated world, one epoch at a time: what every policy shares.

`World` owns the population with its hidden truth, the radio network, sessions,
the catalog and its items, and the random streams. Each epoch `advance()` moves
users, drifts interests, starts and ends sessions and items, and says who gives
feedback; then each policy's PRBs go through `deliver()` (rate, hidden
satisfaction, its own cell loads for the next epoch's interference) and
`feedback()` (the signals, on common random numbers for every policy).
`simulators.loop.run` drives it with several policies and the engine on a bus;
`simulators.gym_env` drives it with an agent's actions.

Random draws, in order per epoch: radio (movement, channels), interests (drift
of app interests and topic tastes), traffic (sessions), interests (items),
feedback (who gives it, then each policy's signals from the same state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine.config import Config
from optimizer import qos as qosmap
from optimizer.curves import satisfaction
from simulators.catalog import Catalog, draw_catalog, drift, item_ends, pick_items
from simulators.feedback import FeedbackBehaviour
from simulators.population import Population, draw_population
from simulators.radio import RadioEpoch, RadioNetwork
from simulators.traffic import IDLE, Sessions, app_hour_weights, choice_interest, step_sessions

PopulationFn = Callable[[Config, np.random.Generator], Population]


@dataclass
class Streams:
    """Independent random streams, so a policy's choices never shift another draw."""

    population: np.random.Generator
    radio: np.random.Generator
    traffic: np.random.Generator
    feedback: np.random.Generator
    interests: np.random.Generator  # catalog, tastes, drift, items (spawned last: the others keep their draws)

    @classmethod
    def from_seed(cls, seed: int) -> "Streams":
        ss = np.random.SeedSequence(seed)
        return cls(*(np.random.default_rng(s) for s in ss.spawn(5)))


def zones_in_rate(cfg: Config, pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """Hidden (A, D) of every (user, app) mapped to rate (Mbps); NaN where unused."""
    a = np.full(pop.adequate.shape, np.nan)
    d = np.full(pop.desired.shape, np.nan)
    for ai, app in enumerate(pop.apps):
        spec = cfg.applications[app]
        params = spec.metric_params()
        ok = ~np.isnan(pop.adequate[:, ai])
        a[ok, ai], d[ok, ai] = qosmap.zone_in_rate(spec.metric.value, pop.adequate[ok, ai], pop.desired[ok, ai],
                                                   **params)
    return a, d


@dataclass
class Epoch:
    """What `World.advance` decided for this epoch, shared by every policy."""

    epoch: int
    ts: float
    hour: float
    radio: RadioEpoch
    app: np.ndarray  # (n,) app in session, IDLE if none
    active: np.ndarray  # (n,) bool
    started: np.ndarray  # (n,) bool: the session began this epoch
    choice: np.ndarray  # (n, apps) the distribution a session starting now draws its app from
    named: np.ndarray  # (n,) the app as the network has classified it (IDLE: not yet)
    in_window: np.ndarray  # (n,) bool: in a session's first `window` epochs
    a_u: np.ndarray  # (n,) hidden adequate rate of the app in use (1.0 when idle)
    d_u: np.ndarray  # (n,) hidden desired rate (2.0 when idle)
    gives: np.ndarray  # (n,) bool: gives feedback this epoch
    ended: np.ndarray  # user indices whose item ended (an interaction each)
    ended_item: np.ndarray  # the item that ended, per user in `ended`
    dwell_s: np.ndarray  # how long it lasted


@dataclass
class Delivery:
    """One policy's allocation applied."""

    rate: np.ndarray  # (n,) Mbps
    sat: np.ndarray  # (n,) hidden-truth satisfaction (0 when idle)
    at_adequate: np.ndarray  # (n,) bool
    at_desired: np.ndarray  # (n,) bool
    used: np.ndarray  # (cells,) PRBs used


class World:
    def __init__(self, cfg: Config, n_policies: int = 1, population: PopulationFn = draw_population,
                 rs: Streams | None = None) -> None:
        self.cfg = cfg
        self.rs = rs = rs if rs is not None else Streams.from_seed(cfg.simulation.seed)
        self.pop = pop = population(cfg, rs.population)
        self.radio = RadioNetwork(cfg, pop, rs.radio)
        self.a_rate, self.d_rate = zones_in_rate(cfg, pop)
        apps = [cfg.applications[a] for a in pop.apps]
        self.mean_epochs = np.array([a.session_mean_s / cfg.simulation.epoch_s for a in apps])
        self.item_mean = np.array([a.item_mean_s / cfg.simulation.epoch_s for a in apps])
        self.peaks, self.amps = [a.peak_hour for a in apps], [a.hour_amplitude for a in apps]
        self.activity = np.array([cfg.population.segments[s].activity for s in pop.segment])
        self.behaviour = FeedbackBehaviour.default()
        self.loads = np.zeros((n_policies, self.radio.n_cells))  # each policy's, for its interference
        self.sessions = Sessions.steady(pop.interest, self.activity, self.mean_epochs, rs.traffic)
        self.catalog: Catalog = draw_catalog(cfg, pop.n, rs.interests)
        self.detect = cfg.simulation.app_detection_epochs
        self.window = max(self.detect, 1)  # "a session's first epochs"
        # Epochs since each session started; sessions running at the start are long classified.
        self.age = np.where(self.sessions.app >= 0, 1 << 40, 0).astype(np.int64)
        self.item = np.full(pop.n, -1, dtype=np.int64)  # current item within the session's app
        self.item_start = np.zeros(pop.n)
        self.epoch = 0
        self._fb_state = None
        self._rows = np.arange(pop.n)

    def advance(self) -> Epoch:
        """The shared part of the next epoch (call once per epoch, before any `deliver`)."""
        cfg, pop, rs = self.cfg, self.pop, self.rs
        e = self.epoch
        self.epoch += 1
        dt = cfg.simulation.epoch_s
        ts = e * dt
        hour = (ts / 3600.0) % 24.0
        ep = self.radio.step(dt, rs.radio)
        drift(pop.interest, cfg.population.interest_drift, dt, rs.interests)
        drift(self.catalog.taste, cfg.population.interest_drift, dt, rs.interests)
        prev_app = self.sessions.app
        choose = choice_interest(pop.interest, app_hour_weights(self.peaks, self.amps, hour))
        s = self.sessions = step_sessions(self.sessions, choose, self.activity, self.mean_epochs, hour, rs.traffic)
        app, active = s.app, s.app >= 0
        age = self.age = np.where(s.started, 0, self.age + 1)
        # Items: the one that ends is logged (an interaction); the next one starts, or the session's first.
        ends = item_ends(active & (prev_app == app), age, self.item_mean, app, rs.interests)
        done = np.flatnonzero(ends)
        ended_item, dwell = self.item[done].copy(), ts - self.item_start[done]
        fresh = np.flatnonzero(ends | s.started)
        self.item[fresh] = pick_items(self.catalog, fresh, app[fresh], rs.interests)
        self.item_start[fresh] = ts
        # The same uniforms decide who gives feedback under every policy.
        gives = active & (rs.feedback.random(pop.n) < pop.feedback_rate)
        self._fb_state = rs.feedback.bit_generator.state
        ai = np.where(active, app, 0)
        a_u, d_u = self.a_rate[self._rows, ai], self.d_rate[self._rows, ai]
        return Epoch(e, ts, hour, ep, app, active, s.started, choose, np.where(age >= self.detect, app, IDLE),
                     active & (age < self.window), np.where(active, a_u, 1.0), np.where(active, d_u, 2.0),
                     gives, done, ended_item, dwell)

    def efficiency(self, ep: Epoch) -> np.ndarray:
        """(policies, n) spectral efficiency, each policy with its own last loads."""
        return self.radio.efficiency(ep.radio, self.loads)

    def deliver(self, policy: int, ep: Epoch, prb: np.ndarray, se: np.ndarray) -> Delivery:
        """Apply one policy's PRBs: rates, hidden satisfaction, and its loads for the next epoch."""
        prb = np.where(ep.active, prb, 0)
        rate = prb * se * self.cfg.radio.prb_bandwidth_hz / 1e6
        sat = np.where(ep.active, satisfaction(rate, ep.a_u, ep.d_u, self.cfg.objective.eps), 0.0)
        used = np.bincount(ep.radio.serving, weights=prb, minlength=self.radio.n_cells)
        self.loads[policy] = used / self.radio.prb_per_cell
        return Delivery(rate, sat, ep.active & (rate >= ep.a_u), ep.active & (rate >= ep.d_u), used)

    def feedback(self, ep: Epoch, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, signal codes, ratings) of this epoch's feedback at the delivered rates:
        the same stream position for every policy (common random numbers)."""
        self.rs.feedback.bit_generator.state = self._fb_state
        who = np.flatnonzero(ep.gives)
        signal, rating, _ = self.behaviour.emit(self.rs.feedback, rate[who], ep.a_u[who], ep.d_u[who])
        return who, signal, rating

    def qos_on_the_wire(self, who: np.ndarray, app: np.ndarray, rate: np.ndarray) -> np.ndarray:
        """The QoS `who` got, in each app's own metric, as feedback events carry it
        (the metric's worst, 1e9, for a session no rate makes usable)."""
        pop = self.pop
        q = np.empty(who.size)
        for k in np.unique(app[who]):
            m = app[who] == k
            params = self.cfg.applications[pop.apps[k]].metric_params()
            q[m] = qosmap.qos_for_rate(pop.metrics[k], rate[who][m], **params)
        return np.where(np.isfinite(q), q, 1e9)
