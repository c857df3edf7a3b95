"""The simulation loop: the network, its users and the policies, epoch by epoch.

Every epoch (all policies in lockstep, on common random numbers):

1. users move; links, RSRP and serving cells are updated (`RadioNetwork.step`);
2. sessions start and end (`traffic.step_sessions`);
3. each policy sees its own cells' loads of the last epoch, hence its own SINR
   and spectral efficiency, and decides every cell's PRBs:
   - `zot`: the simulator publishes context and KPI events on the bus; the
     engine consumes them (and the feedback of earlier epochs), learns, solves
     and publishes allocation decisions, which the simulator reads back;
   - baselines (`policies.py`) decide directly from the same KPIs;
4. the QoS each user got follows from its PRBs and efficiency; its hidden-truth
   satisfaction, and whether it reached its adequate and desired levels, are
   recorded (`outcomes.Outcomes`);
5. users in session give feedback with the documented behaviour
   (`feedback.FeedbackBehaviour`) at the QoS they got; under `zot` it goes to the
   bus, where the engine learns from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine import schemas
from engine import topics as registry
from engine.bus import Bus, InProcessBus
from engine.config import Config
from engine.runner import EmbeddedEngine, EngineCore
from optimizer import qos as qosmap
from optimizer.curves import satisfaction
from simulators.feedback import FeedbackBehaviour
from simulators.outcomes import Outcomes
from simulators.policies import BaselinePolicy
from simulators.population import Population, draw_population
from simulators.radio import RadioNetwork
from simulators.traffic import Sessions, step_sessions

ProgressFn = Callable[[int], None]


@dataclass
class Streams:
    """Independent random streams, so a policy's choices never shift another draw."""

    population: np.random.Generator
    radio: np.random.Generator
    traffic: np.random.Generator
    feedback: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> "Streams":
        ss = np.random.SeedSequence(seed)
        return cls(*(np.random.default_rng(s) for s in ss.spawn(4)))


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


class EnginePolicy:
    """The personalized policy: zot's engine in the loop, over a bus."""

    name = "zot"

    def __init__(self, cfg: Config, cell_ids: list[str], bus: Bus | None = None) -> None:
        self.cfg = cfg
        self.bus = bus if bus is not None else InProcessBus(cfg.kafka.partitions, cfg.kafka.topic_prefix)
        self.core = EngineCore(cfg, cells=set(cell_ids), prefix=cfg.kafka.topic_prefix)
        self.engine = EmbeddedEngine(self.core, self.bus)
        self.cell_ids = cell_ids
        self._announced: dict[int, tuple[str | None, str | None]] = {}
        self.decisions: list[schemas.Allocation] = []

    def t(self, topic: registry.Topic) -> str:
        return registry.with_prefix(topic, self.cfg.kafka.topic_prefix)

    def publish_context(self, epoch: int, ts: float, pop: Population, serving: np.ndarray, app: np.ndarray) -> None:
        """Context events for users whose cell or app changed (and everyone at the start)."""
        for u in range(pop.n):
            state = (self.cell_ids[serving[u]], pop.apps[app[u]] if app[u] >= 0 else None)
            if self._announced.get(u) == state:
                continue
            self._announced[u] = state
            ev = schemas.Context(
                event_id=f"ctx-{epoch}-{u}", ts=ts, user_id=pop.user_ids[u], cell_id=state[0], app=state[1],
                segment=pop.segment_names[pop.segment[u]],
            )
            self.bus.produce(self.t(registry.CONTEXT), ev.user_id.encode(), schemas.encode(ev))

    def allocate(self, epoch: int, ts: float, pop: Population, serving: np.ndarray, app: np.ndarray,
                 se: np.ndarray, prb_total: np.ndarray) -> tuple[np.ndarray, float]:
        active = np.flatnonzero(app >= 0)
        for c, cid in enumerate(self.cell_ids):
            users = active[serving[active] == c]
            kpi = schemas.CellKpi(
                event_id=f"kpi-{cid}-{epoch}", ts=ts, cell_id=cid, epoch=epoch, prb_total=int(prb_total[c]),
                users=[schemas.UserChannel(user_id=pop.user_ids[u], spectral_efficiency=float(se[u]),
                                           app=pop.apps[app[u]]) for u in users],
            )
            self.bus.produce(self.t(registry.KPI), cid.encode(), schemas.encode(kpi))
        self.bus.flush()
        self.engine.step(now=ts)
        prb = np.zeros(pop.n, dtype=np.int64)
        index = {uid: i for i, uid in enumerate(pop.user_ids)}
        solve_ms = 0.0
        got = set()
        for msg in self.bus.poll("simulator", [self.t(registry.ALLOCATIONS)]):
            dec = schemas.decode(msg.value, expect=schemas.Allocation)
            if dec.epoch != epoch:
                continue
            got.add(dec.cell_id)
            self.decisions.append(dec)
            solve_ms = max(solve_ms, dec.solve_ms)
            for ua in dec.users:
                prb[index[ua.user_id]] = ua.prb
        missing = set(self.cell_ids) - got
        if missing:
            raise RuntimeError(f"engine returned no decision for cells {sorted(missing)[:5]} in epoch {epoch}")
        return prb, solve_ms

    def publish_feedback(self, epoch: int, ts: float, pop: Population, users: np.ndarray, app: np.ndarray,
                         qos: np.ndarray, signal: np.ndarray, rating: np.ndarray, serving: np.ndarray) -> None:
        codes = list(schemas.SIGNAL_CODES)
        for j, u in enumerate(users):
            sig = codes[int(signal[j])]
            ev = schemas.Feedback(
                event_id=f"fb-{epoch}-{u}", ts=ts, user_id=pop.user_ids[u], cell_id=self.cell_ids[serving[u]],
                app=pop.apps[app[u]], signal=sig, qos=float(qos[j]),
                rating=int(rating[j]) if sig is schemas.Signal.RATING else None,
            )
            self.bus.produce(self.t(registry.FEEDBACK), ev.user_id.encode(), schemas.encode(ev))


@dataclass
class RunResult:
    cfg: Config
    population: Population
    cell_ids: list[str]
    cell_xy: np.ndarray
    user_xy: np.ndarray
    outcomes: dict[str, Outcomes]
    engine: EnginePolicy | None
    seconds: float
    user_epochs: int = 0
    extra: dict = field(default_factory=dict)


def run(cfg: Config, policies: list[str], bus: Bus | None = None, progress: ProgressFn | None = None) -> RunResult:
    """Run the scenario with every policy in lockstep; return what each achieved."""
    t0 = time.perf_counter()
    rs = Streams.from_seed(cfg.simulation.seed)
    pop = draw_population(cfg, rs.population)
    radio = RadioNetwork(cfg, pop, rs.radio)
    a_rate, d_rate = zones_in_rate(cfg, pop)
    prb_bw = cfg.radio.prb_bandwidth_hz
    mean_epochs = np.array([cfg.applications[a].session_mean_s / cfg.simulation.epoch_s for a in pop.apps])
    activity = np.array([cfg.population.segments[s].activity for s in pop.segment])
    behaviour = FeedbackBehaviour.default()

    engine = EnginePolicy(cfg, radio.cell_ids, bus) if "zot" in policies else None
    deciders = {p: (engine if p == "zot" else BaselinePolicy(p, cfg, pop, a_rate, d_rate)) for p in policies}
    outcomes = {p: Outcomes(pop.n, len(pop.segment_names), radio.n_cells, cfg.radio.prb_per_cell,
                            cfg.simulation.epoch_s, cfg.pricing.prb_hour) for p in policies}
    loads = np.zeros((len(policies), radio.n_cells))
    sessions = Sessions.steady(pop.interest, activity, mean_epochs, rs.traffic)
    rows = np.arange(pop.n)
    for epoch in range(cfg.simulation.epochs):
        ts = epoch * cfg.simulation.epoch_s
        ep = radio.step(cfg.simulation.epoch_s, rs.radio)
        sessions = step_sessions(sessions, pop.interest, activity, mean_epochs, (ts / 3600.0) % 24.0, rs.traffic)
        app = sessions.app
        active = app >= 0
        se_all = radio.efficiency(ep, loads)
        # The same uniforms decide who gives feedback under every policy.
        gives = active & (rs.feedback.random(pop.n) < pop.feedback_rate)
        fb_state = rs.feedback.bit_generator.state
        if engine is not None:
            engine.publish_context(epoch, ts, pop, ep.serving, app)
        for p, name in enumerate(policies):
            se = se_all[p]
            if name == "zot":
                prb, _ = engine.allocate(epoch, ts, pop, ep.serving, app, se, radio.prb_per_cell)
            else:
                prb = deciders[name].allocate(ep.serving, app, se, radio.prb_per_cell)
            prb = np.where(active, prb, 0)
            rate = prb * se * prb_bw / 1e6
            ai = np.where(active, app, 0)
            a_u, d_u = a_rate[rows, ai], d_rate[rows, ai]
            sat = np.where(active, satisfaction(rate, np.where(active, a_u, 1.0), np.where(active, d_u, 2.0),
                                                cfg.objective.eps), 0.0)
            used = np.bincount(ep.serving, weights=prb, minlength=radio.n_cells)
            loads[p] = used / radio.prb_per_cell
            outcomes[name].record(active, pop.segment, ep.serving, sat, active & (rate >= a_u),
                                  active & (rate >= d_u), used, int(ep.handed_over.sum()))
            # Feedback: same stream position for every policy (common random numbers).
            rs.feedback.bit_generator.state = fb_state
            who = np.flatnonzero(gives)
            signal, rating, _ = behaviour.emit(rs.feedback, rate[who], a_u[who], d_u[who])
            if name == "zot" and who.size:
                q = np.empty(who.size)
                for k in np.unique(app[who]):
                    m = app[who] == k
                    params = cfg.applications[pop.apps[k]].metric_params()
                    q[m] = qosmap.qos_for_rate(pop.metrics[k], rate[who][m], **params)
                q = np.where(np.isfinite(q), q, 1e9)  # an unusable session: the metric's worst
                engine.publish_feedback(epoch, ts, pop, who, app, q, signal, rating, ep.serving)
        if progress is not None:
            progress(epoch + 1)
    return RunResult(cfg, pop, radio.cell_ids, radio.layout.cell_xy, radio.xy.copy(), outcomes, engine,
                     time.perf_counter() - t0)
