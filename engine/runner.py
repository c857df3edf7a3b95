"""The engine's loop body, and the embedded runner that drives it on the in-process bus.

`EngineCore.handle(messages)` takes one batch of input messages (any mix of the
input topics) and returns the output messages: it parses (dead-lettering what is
invalid), updates the users' zone-of-tolerance posteriors from feedback, assembles
each reporting cell's epoch with the current estimates, solves it with the Numba
optimizer and emits allocation decisions and profile updates. Everything it does
is an operator call; the Faust agents call the same operators.

Within a batch, context is applied first, then feedback, then KPI reports, so a
decision always uses every signal that arrived before it in the batch. Every KPI
report gets its decision (a cell reporting twice in a batch is solved twice, in
order), and `dirty` names the users whose persisted state changed, for the
streaming worker's changelog (engine/worker.py).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pydantic_core

from engine import schemas
from engine.schemas import SIGNAL_CODES
from engine import topics as registry
from engine.bus import Bus, Message
from engine.config import Config
from engine.interest_state import EngineInterests
from operators import satisfaction as zot
from operators.epoch import build_problem, gather_kpis
from operators.parse import FeedbackColumns, dead_letter, parse_batch
from optimizer import qos as qosmap
from optimizer.solver import solve_epoch

# A missing user->segment mapping falls back to the app-wide prior.
AD_PRIOR_CORRELATION = 0.5


@dataclass(frozen=True)
class Output:
    topic: registry.Topic
    key: bytes | None
    value: bytes


def app_specs(cfg: Config) -> list[zot.AppSpec]:
    """The learner's view of the config's applications (metric and its mapping to rate)."""
    return [zot.AppSpec(name, app.metric.value, app.metric_params()) for name, app in cfg.applications.items()]


def population_priors(cfg: Config) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
    """Priors over (log A, log W) per (segment, app), and an app-wide fallback.

    The operator's belief about its population, as the config states it (segment
    medians and spreads of the adequate and desired levels), mapped to rate.
    Spread of log W by the delta method from those of A and D.
    """
    specs = {s.name: s for s in app_specs(cfg)}
    priors: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    pooled: dict[str, list[tuple[float, float, float, float, float]]] = {}
    for seg in cfg.population.segments:
        for app, tol in seg.tolerance.items():
            spec = specs[app]
            a_r, d_r = (float(x) for x in qosmap.zone_in_rate(spec.metric, tol.adequate.median, tol.desired.median,
                                                             **dict(spec.params)))
            if not (0 < a_r < d_r < math.inf):
                continue  # a zone the rate mapping cannot represent; the fallback covers it
            sa, sd = max(tol.adequate.log_sd, 0.1), max(tol.desired.log_sd, 0.1)
            w = d_r - a_r
            var_w = (d_r * d_r * sd * sd + a_r * a_r * sa * sa - 2 * AD_PRIOR_CORRELATION * a_r * d_r * sa * sd) / (w * w)
            sw = float(np.clip(math.sqrt(max(var_w, 0.0)), 0.2, 1.5))
            priors[(seg.name, app, zot.WILDCARD)] = zot.prior_from_zone(a_r, d_r, sa, sw)
            pooled.setdefault(app, []).append((seg.share, a_r, d_r, sa, sw))
    for app in specs:
        rows = pooled.get(app)
        if not rows:
            raise ValueError(f"no segment gives a usable tolerance for application {app!r}")
        share = np.array([r[0] for r in rows])
        share = share / share.sum()
        log_a = float(np.dot(share, [math.log(r[1]) for r in rows]))
        log_d = float(np.dot(share, [math.log(r[2]) for r in rows]))
        a_r, d_r = math.exp(log_a), math.exp(log_d)
        # Between-segment spread widens the fallback.
        sa = float(np.sqrt(np.dot(share, [r[3] ** 2 + (math.log(r[1]) - log_a) ** 2 for r in rows])))
        sw = float(np.sqrt(np.dot(share, [r[4] ** 2 for r in rows])))
        priors[(zot.WILDCARD, app, zot.WILDCARD)] = zot.prior_from_zone(a_r, max(d_r, a_r * 1.05), sa, sw)
    return priors


@dataclass
class EngineCounters:
    accepted: int = 0
    dead_letters: int = 0
    feedback: int = 0
    decisions: int = 0
    predicted_apps: int = 0  # users in session allocated for their predicted next app (proactive)
    solve_ms: float = 0.0
    # Where handle() spends its time (seconds): decode+validate, learn (+profiles), decide.
    parse_s: float = 0.0
    learn_s: float = 0.0
    decide_s: float = 0.0


@dataclass
class EngineCore:
    """Engine state and the per-batch logic, independent of the bus it runs on."""

    cfg: Config
    cells: set[str] | None = None  # known cells; None accepts any
    prefix: str = "zot."
    state: zot.ZotState = field(init=False)
    params: zot.UpdateParams = field(init=False)
    segment_of: dict[str, str] = field(default_factory=dict)
    app_of: dict[str, str] = field(default_factory=dict)
    cell_of: dict[str, str] = field(default_factory=dict)
    # Users whose latest context named the app in use (else `app_of` is their last one).
    app_named: set[str] = field(default_factory=set)
    # Interest models (None when `interests.enabled` is false).
    interests: EngineInterests | None = field(init=False, default=None)
    counters: EngineCounters = field(default_factory=EngineCounters)
    # Users whose persisted state (segment, app, posterior rows) changed since the
    # caller last cleared it: what a streaming worker writes to its changelog.
    dirty: set[str] = field(default_factory=set)
    # epoch_trigger "timer": KPI reports wait here (latest per cell) until tick().
    pending: dict[str, schemas.CellKpi] = field(default_factory=dict)
    dirty_cells: set[str] = field(default_factory=set)
    # defer_profiles (a Kafka worker with engine.profile_interval_s > 0): users whose
    # profile changed and is not yet published, with when (time.monotonic()) they
    # were first marked, oldest first, until flush_profiles().
    defer_profiles: bool = False
    profile_pending: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = zot.new_state(app_specs(self.cfg), population_priors(self.cfg))
        self.params = zot.UpdateParams(eps=self.cfg.objective.eps, forgetting=self.cfg.satisfaction.forgetting)
        self._weight = {s.name: s.weight for s in self.cfg.population.segments}
        self._topic_types = {registry.with_prefix(t, self.prefix): t.event for t in registry.INPUTS}
        self._prb_bw = self.cfg.radio.prb_bandwidth_hz
        if self.cfg.interests.enabled:
            self.interests = EngineInterests(self.cfg, self.cfg.kafka.partitions)
        # Most likely app of each segment by the config's mix: the fallback for a user in
        # session whose app the network has not named and whose last app is unknown.
        self._segment_app = {s.name: max(s.app_mix, key=s.app_mix.__getitem__) for s in self.cfg.population.segments}
        shares: dict[str, float] = {}
        for s in self.cfg.population.segments:
            total = sum(s.app_mix.values())
            for a, w in s.app_mix.items():
                shares[a] = shares.get(a, 0.0) + s.share * w / total
        self._population_app = max(shares, key=shares.__getitem__)

    def topic(self, t: registry.Topic) -> str:
        return registry.with_prefix(t, self.prefix)

    def clear_dirty(self) -> None:
        """Forget what changed: the caller has persisted it (or is about to start a batch)."""
        self.dirty.clear()
        self.dirty_cells.clear()
        if self.interests is not None:
            self.interests.dirty_tables.clear()

    _SAVED = ("segment_of", "app_of", "cell_of", "app_named", "dirty", "pending", "dirty_cells", "profile_pending")

    def save_point(self) -> tuple:
        """A copy of all mutable state, to undo a message whose processing raised."""
        return (self.state.copy(), copy.deepcopy(self.interests),
                *(copy.copy(getattr(self, name)) for name in self._SAVED))

    def restore_point(self, saved: tuple) -> None:
        self.state, self.interests = saved[0], saved[1]
        for name, value in zip(self._SAVED, saved[2:]):
            setattr(self, name, value)

    def handle(self, messages: list[Message], now: float | None = None) -> list[Output]:
        now = time.time() if now is None else now
        t0 = time.perf_counter()
        parsed = parse_batch(messages, self._topic_types, self.cfg.applications, self.cells)
        rows_before = self.state.n_rows
        t1 = time.perf_counter()
        self.counters.parse_s += t1 - t0
        out: list[Output] = [Output(registry.DEAD_LETTERS, None, schemas.encode(d)) for d in parsed.dead]
        self.counters.accepted += parsed.accepted
        for ctx in parsed.context:
            self.dirty.add(ctx.user_id)
            self.cell_of[ctx.user_id] = ctx.cell_id
            if ctx.segment is not None:
                self.segment_of[ctx.user_id] = ctx.segment
            if ctx.app is not None:
                self.app_of[ctx.user_id] = ctx.app
                self.app_named.add(ctx.user_id)
            else:
                self.app_named.discard(ctx.user_id)
        profile_users: list[str] = []
        if parsed.feedback:
            dead, touched = self._learn(parsed.feedback, messages)
            out.extend(dead)
            profile_users.extend(touched)
        if parsed.interaction and self.interests is not None:
            touched = self.interests.learn(parsed.interaction, self.segment_of, self.cell_of)
            self.dirty.update(touched)
            out.extend(Output(registry.RECOMMENDATIONS, r.user_id.encode(), schemas.encode(r))
                       for r in self.interests.recommendations(touched, now))
            profile_users.extend(touched)
        # One profile per user per batch, whatever changed it (feedback, interactions);
        # or, deferred, one per user per flush.
        if self.defer_profiles:
            marked, pending = time.monotonic(), self.profile_pending
            for u in profile_users:
                pending.setdefault(u, marked)  # a pending user keeps its place (and its age)
        else:
            out.extend(self._profiles(list(dict.fromkeys(profile_users)), now))
        t2 = time.perf_counter()
        self.counters.learn_s += t2 - t1
        if parsed.kpi and self.cfg.engine.epoch_trigger == "timer":
            for k in parsed.kpi:  # the latest report of each cell is decided at the next tick
                prev = self.pending.get(k.cell_id)
                if prev is None or k.epoch >= prev.epoch:
                    self.pending[k.cell_id] = k
                    self.dirty_cells.add(k.cell_id)
        elif parsed.kpi:
            out.extend(self._decide(parsed.kpi, now))
            self.counters.decide_s += time.perf_counter() - t2
        self.counters.dead_letters += sum(1 for o in out if o.topic is registry.DEAD_LETTERS)
        self._mark_new_rows(rows_before)
        return out

    def replay_interactions(self, messages: list[Message]) -> int:
        """Learn already committed interaction messages into the item models only (the
        rest of their effect is in the changelog); return how many were learned. What
        was dead-lettered then is again, and skipped. Call inside `interests.replaying()`."""
        if self.interests is None:
            return 0
        events = parse_batch(messages, self._topic_types, self.cfg.applications, self.cells).interaction
        self.interests.learn_items(events, self.segment_of, self.cell_of)
        return len(events)

    def _mark_new_rows(self, rows_before: int) -> None:
        # Rows created at the prior by a KPI (or feedback) keep the group chosen
        # at creation; a replay must recreate them identically, so they count too.
        new = self.state.n_rows - rows_before
        if new <= 0:
            return
        for (u, _a), _r in itertools.islice(reversed(self.state.keys.items()), new):
            self.dirty.add(u)

    def tick(self, now: float | None = None) -> list[Output]:
        """Timer trigger: decide every cell's pending (latest) KPI report, once."""
        now = time.time() if now is None else now
        if not self.pending:
            return []
        kpis = [self.pending[c] for c in sorted(self.pending)]
        self.dirty_cells.update(self.pending)
        self.pending.clear()
        rows_before = self.state.n_rows
        out = self._decide(kpis, now)
        self._mark_new_rows(rows_before)
        return out

    # -- feedback -> posteriors -> profile updates

    def _learn(self, fb: FeedbackColumns, messages: list[Message]) -> tuple[list[Output], list[str]]:
        """Feedback into the posteriors; the dead letters of rejected rows and the users touched."""
        users = fb.column("user_id")
        codes = SIGNAL_CODES
        batch, rejects = zot.batch_from_columns(
            self.state, users, fb.column("app"), list(map(codes.__getitem__, fb.column("signal"))), fb.column("qos"),
            fb.ratings(), segment_of=self.segment_of)
        out = [
            Output(registry.DEAD_LETTERS, None, schemas.encode(dead_letter(messages[fb.index[int(i)]], reason)))
            for i, reason in zip(rejects.index, rejects.reason)
        ]
        self.state, late = zot.update(self.state, batch, self.params, inplace=True)
        assert len(late) == 0, "batch_from_columns must reject every row update() would"
        self.counters.feedback += len(batch)
        if len(rejects.index):
            rejected = set(rejects.index.tolist())
            users = [u for i, u in enumerate(users) if i not in rejected]
        touched = sorted(set(users))
        self.dirty.update(touched)
        return out, touched

    def flush_profiles(self, now: float | None = None, marked_before: float | None = None,
                       limit: int | None = None) -> list[Output]:
        """The profiles of the users whose profile is pending (deferred), now: all of
        them, or those first marked before `marked_before` (time.monotonic()), the
        oldest marks first and at most `limit` of them. They are no longer pending,
        and their persisted state changed (`dirty`)."""
        now = time.time() if now is None else now
        pending = self.profile_pending
        if marked_before is None:
            users = list(itertools.islice(pending, limit))
        else:  # marks are in insertion order: the due users are a prefix
            users = list(itertools.islice(itertools.takewhile(lambda u: pending[u] <= marked_before, pending), limit))
        for u in users:
            del pending[u]
        self.dirty.update(users)
        return self._profiles(users, now)

    def _profiles(self, users: list[str], now: float) -> list[Output]:
        """One profile per user, serialized straight from wire dicts (no event objects:
        this runs once per touched user per batch; tests/unit/test_engine_core.py
        checks the bytes equal the ProfileUpdate model's encoding)."""
        if not users:
            return []
        slots = zot.user_slots(self.state, users)
        est = zot.estimates(self.state, np.array([r for _, _, r in slots], dtype=np.int64))
        per_user: dict[str, list[dict]] = {}
        for (u, a, _), am, asd, dm, dsd, n in zip(slots, est.a_metric.tolist(), est.a_metric_sd.tolist(),
                                                  est.d_metric.tolist(), est.d_metric_sd.tolist(),
                                                  est.n_signals.tolist()):
            per_user.setdefault(u, []).append(
                {"app": a, "adequate": am, "adequate_sd": asd, "desired": dm, "desired_sd": dsd, "n_signals": n})
        if self.interests is not None:
            # The full profile each time: the topic is compacted, the last record per user stays.
            records = self.interests.profile_records(users, now, per_user, self.cell_of)
        else:
            now = float(now)
            records = [{"v": 1, "event_id": f"profile-{u}-{int(now * 1000)}", "ts": now, "type": "profile",
                        "user_id": u, "zot": per_user.get(u, []), "interests": []} for u in users]
        to_json, topic = pydantic_core.to_json, registry.PROFILES
        return [Output(topic, rec["user_id"].encode(), to_json(rec)) for rec in records]

    # -- KPI -> epoch -> decisions

    def _decide(self, kpis: list[schemas.CellKpi], now: float) -> list[Output]:
        # Every report gets its decision, whatever the batching: a cell reporting
        # k times in one batch is solved in k rounds, in arrival order, so a
        # replay with other batch boundaries (after a crash) decides the same.
        rounds: list[list[schemas.CellKpi]] = []
        seen: dict[str, int] = {}
        for k in kpis:
            r = seen.get(k.cell_id, 0)
            seen[k.cell_id] = r + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(k)
        return [o for group in rounds for o in self._decide_round(group, now)]

    def _decide_round(self, kpis: list[schemas.CellKpi], now: float) -> list[Output]:
        inp = gather_kpis(kpis, self.app_of)
        self._resolve_unnamed(inp, kpis[0].ts if kpis else now)
        known = np.array([a is not None for a in inp.apps], dtype=bool)
        if not known.all():
            inp = _only(inp, known)
        rows = zot.ensure_slots(self.state, inp.user_ids, [str(a) for a in inp.apps],
                                segments=[self.segment_of.get(u) for u in inp.user_ids])
        est = zot.estimates(self.state, rows)
        weight = np.array([self._weight.get(self.segment_of.get(u, ""), 1.0) for u in inp.user_ids])
        obj = self.cfg.objective
        problem = build_problem(inp, est.a_mean, est.d_mean, weight, self._prb_bw, obj.eps, obj.min_share,
                                obj.max_share)
        scal = obj.scalarization if obj.scalarization != "pareto" else "weighted_sum"
        target = obj.satisfaction_target if obj.target_level == "satisfaction" else None
        res = solve_epoch(problem, scal, price=obj.resource_price, target=target,
                          overload=self.cfg.overload.policy, weighted=self.cfg.overload.weighted)
        self.counters.solve_ms += res.solve_ms
        out = []
        track_rates = self.interests is not None and self.cfg.interests.network_aware
        for i, cid in enumerate(inp.cell_ids):
            a, b = int(inp.offsets[i]), int(inp.offsets[i + 1])
            alloc = res.cell(i).to_allocation(
                event_id=f"alloc-{cid}-{inp.epochs[i]}", ts=now, cell_id=cid, epoch=inp.epochs[i],
                prb_total=int(inp.prb_total[i]), user_ids=inp.user_ids[a:b], policy="zot",
            )
            out.append(Output(registry.ALLOCATIONS, cid.encode(), schemas.encode(alloc)))
            if track_rates:  # the rate each user just got: what network-aware ranking judges items by
                for ua in alloc.users:
                    self.interests.last_rate[ua.user_id] = ua.rate_mbps
                    self.dirty.add(ua.user_id)
        self.counters.decisions += len(inp.cell_ids)
        return out

    def _resolve_unnamed(self, inp, ts: float) -> None:
        """Users in session whose app the KPI report does not name (not yet classified).

        `interests.unnamed_app`: "predicted" (proactive; needs interests enabled): the
        app the interest model predicts next from the user's interests, the hour and
        the cell, so the user gets the QoS it is about to need; "last": the user's
        last app, else its segment's most likely one; "default": the population's
        most common app for everyone (what an engine without user history can do).
        """
        if inp.reported is None:
            return
        unnamed = [i for i, r in enumerate(inp.reported) if not r and inp.user_ids[i] not in self.app_named]
        if not unnamed:
            return
        users = [inp.user_ids[i] for i in unnamed]
        mode = self.cfg.interests.unnamed_app
        if mode == "predicted" and self.interests is not None:
            cells = [inp.cell_ids[int(np.searchsorted(inp.offsets, i, side="right")) - 1] for i in unnamed]
            guess = self.interests.next_apps(users, ts, cells, [self.segment_of.get(u) for u in users])
            self.counters.predicted_apps += len(users)
        elif mode == "default":
            guess = [self._population_app] * len(users)
        else:
            guess = [self.app_of.get(u) or self._segment_app.get(self.segment_of.get(u, ""), self._population_app)
                     for u in users]
        for i, app in zip(unnamed, guess):
            inp.apps[i] = app


def _only(inp, mask: np.ndarray):
    from operators.epoch import EpochInput

    cell_of = np.repeat(np.arange(len(inp.cell_ids)), np.diff(inp.offsets))
    keep = np.flatnonzero(mask)
    counts = np.bincount(cell_of[keep], minlength=len(inp.cell_ids))
    return EpochInput(
        cell_ids=inp.cell_ids, epochs=inp.epochs, prb_total=inp.prb_total,
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        user_ids=[inp.user_ids[i] for i in keep], apps=[inp.apps[i] for i in keep], se=inp.se[keep],
        reported=None if inp.reported is None else inp.reported[keep],
    )


class EmbeddedEngine:
    """The engine on a bus in this process: poll the inputs, handle, publish the outputs."""

    GROUP = "zot-engine"

    def __init__(self, core: EngineCore, bus: Bus) -> None:
        self.core = core
        self.bus = bus
        self._inputs = [core.topic(t) for t in registry.INPUTS]

    def step(self, now: float | None = None) -> int:
        """Process everything waiting on the input topics; return how many messages."""
        remote = getattr(self.bus, "engine_step", None)
        if remote is not None:
            # The engine runs as worker processes on Kafka (engine/remote_engine.py):
            # the bus hands the inputs over to them in a deterministic order.
            return remote()
        msgs = self.bus.poll(self.GROUP, self._inputs)
        if not msgs:
            return 0
        for o in self.core.handle(msgs, now):
            self.bus.produce(self.core.topic(o.topic), o.key, o.value)
        self.bus.flush()
        return len(msgs)
