"""The simulation loop: the network, its users and the policies, epoch by epoch.

Every epoch (all policies in lockstep, on common random numbers):

1. users move; links, RSRP and serving cells are updated (`RadioNetwork.step`);
2. sessions start and end (`traffic.step_sessions`); hidden interests drift; items
   in session end and emit interaction events (`catalog.py`); the network names a
   session's app only `simulation.app_detection_epochs` epochs after it starts;
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
from simulators.catalog import Catalog
from simulators.direct_engine import DirectEnginePolicy
from simulators.outcomes import Outcomes
from simulators.policies import BaselinePolicy
from simulators.population import Population
from simulators.world import World

ProgressFn = Callable[[int], None]


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
        """Context events for users whose cell or app changed (and everyone at the start).

        `app`: the app the network has named for each user (IDLE: none, or not yet classified).
        """
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
                 se: np.ndarray, prb_total: np.ndarray, named: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """KPI reports of every cell out, decisions back. `named`: the app the network has
        classified for each user in session (IDLE: not yet); default: all of them."""
        named = app if named is None else named
        active = np.flatnonzero(app >= 0)
        for c, cid in enumerate(self.cell_ids):
            users = active[serving[active] == c]
            kpi = schemas.CellKpi(
                event_id=f"kpi-{cid}-{epoch}", ts=ts, cell_id=cid, epoch=epoch, prb_total=int(prb_total[c]),
                users=[schemas.UserChannel(user_id=pop.user_ids[u], spectral_efficiency=float(se[u]),
                                           app=pop.apps[named[u]] if named[u] >= 0 else None) for u in users],
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

    def publish_interactions(self, epoch: int, ts: float, pop: Population, cat: Catalog, users: np.ndarray,
                             app: np.ndarray, item: np.ndarray, dwell_s: np.ndarray, cells: list[str]) -> None:
        """One interaction event per item that ended this epoch (`cells`: where each user is)."""
        for u, a, i, d, cell in zip(users.tolist(), app.tolist(), item.tolist(), dwell_s.tolist(), cells):
            c = cat.apps[a]
            rate = float(c.rate_mbps[i])
            ev = schemas.Interaction(
                event_id=f"ix-{epoch}-{u}", ts=ts, user_id=pop.user_ids[u], item_id=c.item_ids[i], app=pop.apps[a],
                action=schemas.Action.VIEW, dwell_s=d, item_rate_mbps=rate if np.isfinite(rate) else None,
                cell_id=cell,
            )
            self.bus.produce(self.t(registry.INTERACTIONS), ev.user_id.encode(), schemas.encode(ev))

    def predict_next_apps(self, ts: float, pop: Population, users: np.ndarray, serving: np.ndarray) -> list[str]:
        """The engine's next-app prediction for `users` now (embedded engine only)."""
        it = self.core.interests
        if it is None or getattr(self.bus, "engine_step", None) is not None:
            raise RuntimeError("next-app predictions are read from an embedded engine with interests enabled")
        ids = [pop.user_ids[u] for u in users]
        return it.next_apps(ids, ts, [self.cell_ids[serving[u]] for u in users],
                            [pop.segment_names[pop.segment[u]] for u in users])

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
    catalog: Catalog | None = None  # items and users' hidden topic tastes (at the end), when the loop ran


def run(cfg: Config, policies: list[str], bus: Bus | None = None, progress: ProgressFn | None = None,
        track_interests: bool = False, compiled: bool = True, direct: bool = False) -> RunResult:
    """Run the scenario with every policy in lockstep; return what each achieved.

    `extra["session_start"]`: per policy, the share of user-epochs at the adequate
    level in each session's first epochs (those before the network names the app,
    at least the first). `track_interests` (embedded engine only): also score the
    engine's next-app prediction at every session start against the app the user
    then runs, beside the oracle (the top app of the user's hidden interests at that
    hour), the user's last app
    and the segment's top app (`extra["next_app"]`). `compiled`: without "zot",
    run the compiled loop (`simulators/compiled_run.py`, equal results). `direct`:
    zot decides in process on arrays (`simulators/direct_engine.py`: the engine's
    learner and solver, no events; `engine` is then None).
    """
    if compiled and "zot" not in policies:
        # Baselines only: the same run, many epochs per Numba call (equal results, tested).
        from simulators.compiled_run import run_compiled  # imported here: it imports this module
        return run_compiled(cfg, policies, progress=progress)
    t0 = time.perf_counter()
    world = World(cfg, n_policies=len(policies))
    pop, radio = world.pop, world.radio
    if direct and bus is not None:
        raise ValueError("direct runs zot without a bus; drop one of them")
    engine = EnginePolicy(cfg, radio.cell_ids, bus) if "zot" in policies and not direct else None
    in_process = DirectEnginePolicy(cfg, pop, radio.cell_ids) if "zot" in policies and direct else None
    deciders = {p: (engine if p == "zot" else BaselinePolicy(p, cfg, pop, world.a_rate, world.d_rate))
                for p in policies}
    outcomes = {p: Outcomes(pop.n, len(pop.segment_names), radio.n_cells, cfg.radio.prb_per_cell,
                            cfg.simulation.epoch_s, cfg.pricing.prb_hour) for p in policies}
    start_counts = {p: [0, 0] for p in policies}  # user-epochs in a session's first epochs, at adequate
    tracker = _NextAppTracker(cfg, pop) if track_interests and engine is not None else None
    for epoch in range(cfg.simulation.epochs):
        ep = world.advance()
        ts, app, serving = ep.ts, ep.app, ep.radio.serving
        # Interactions carry the user's cell, so the engine learns the same whichever of
        # the context and interaction streams it reads first. None in the first epoch:
        # the engine has no one's context (segment) before it.
        if engine is not None and ep.ended.size and epoch > 0:
            engine.publish_interactions(epoch, ts, pop, world.catalog, ep.ended, app[ep.ended], ep.ended_item,
                                        ep.dwell_s, [radio.cell_ids[c] for c in serving[ep.ended]])
        if tracker is not None:
            tracker.score(engine, ts, np.flatnonzero(ep.started), app, serving, ep.choice)
        se_all = world.efficiency(ep)
        if engine is not None:
            engine.publish_context(epoch, ts, pop, serving, ep.named)
        for p, name in enumerate(policies):
            se = se_all[p]
            if name == "zot" and in_process is not None:
                prb = in_process.allocate(epoch, serving, app, se, radio.prb_per_cell)
            elif name == "zot":
                prb, _ = engine.allocate(epoch, ts, pop, serving, app, se, radio.prb_per_cell, ep.named)
            else:
                prb = deciders[name].allocate(serving, app, se, radio.prb_per_cell)
            got = world.deliver(p, ep, prb, se)
            outcomes[name].record(ep.active, pop.segment, serving, got.sat, got.at_adequate, got.at_desired,
                                  got.used, int(ep.radio.handed_over.sum()))
            start_counts[name][0] += int(ep.in_window.sum())
            start_counts[name][1] += int((ep.in_window & got.at_adequate).sum())
            who, signal, rating = world.feedback(ep, got.rate)
            if name == "zot" and who.size and in_process is not None:
                in_process.learn(who, app, world.qos_on_the_wire(who, app, got.rate), signal, rating)
            elif name == "zot" and who.size:
                engine.publish_feedback(epoch, ts, pop, who, app, world.qos_on_the_wire(who, app, got.rate),
                                        signal, rating, serving)
        if progress is not None:
            progress(epoch + 1)
    window = world.window
    extra: dict = {"session_start": {p: {"epochs": window, "user_epochs": n, "adequate_share": k / max(n, 1)}
                                     for p, (n, k) in start_counts.items()}}
    if tracker is not None:
        extra["next_app"] = tracker.result()
    return RunResult(cfg, pop, radio.cell_ids, radio.layout.cell_xy, radio.xy.copy(), outcomes, engine,
                     time.perf_counter() - t0, extra=extra, catalog=world.catalog)


class _NextAppTracker:
    """Scores next-app predictions at session starts against what the user then runs."""

    def __init__(self, cfg: Config, pop: Population) -> None:
        self.pop = pop
        seg_top = [max(s.app_mix, key=s.app_mix.__getitem__) for s in cfg.population.segments]
        self.segment_top = np.array([pop.apps.index(seg_top[s]) for s in pop.segment])
        self.last = np.full(pop.n, -1)
        self.hits = {"engine": 0, "oracle": 0, "last_app": 0, "segment_prior": 0}
        self.n = 0

    def score(self, engine: EnginePolicy, ts: float, started: np.ndarray, app: np.ndarray,
              serving: np.ndarray, choice: np.ndarray) -> None:
        """`choice`: the distributions the starting sessions drew their apps from (the oracle's)."""
        if started.size:
            guess = engine.predict_next_apps(ts, self.pop, started, serving)
            truth = app[started]
            self.hits["engine"] += int(sum(g == self.pop.apps[t] for g, t in zip(guess, truth)))
            self.hits["oracle"] += int((np.argmax(choice[started], axis=1) == truth).sum())
            last = self.last[started]
            self.hits["last_app"] += int((np.where(last >= 0, last, self.segment_top[started]) == truth).sum())
            self.hits["segment_prior"] += int((self.segment_top[started] == truth).sum())
            self.n += started.size
        running = app >= 0
        self.last[running] = app[running]

    def result(self) -> dict[str, float]:
        return {"sessions": self.n, **{f"accuracy_{k}": v / max(self.n, 1) for k, v in self.hits.items()}}
