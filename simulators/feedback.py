"""Hidden-truth feedback generator: users with known zones (A, D) per app, and
the feedback they emit at the QoS they get.

Used by the satisfaction benchmark and tests now, and by the network simulator
later. Everything a learner could be accused of being tuned to is written down
here and was fixed before the learner was measured:

Population (`Population.default()`): four apps, two user segments, two contexts.
Zones are drawn in each app's *metric* (uniform draws, not the learner's
lognormal family), then mapped to rate with optimizer.qos:

    app      metric           params                      adequate A            desired D
    video    throughput_mbps  -                           U(1, 5) * f           A + U(1.5, 8) * f
    gaming   latency_ms       base 15 ms, 120 kbit        15 + U(75, 205) / f   15 + (A - 15) U(0.25, 0.6)
    startup  startup_delay_s  base 300 ms, 3000 kbit      0.3 + U(1.7, 7.7) / f 0.3 + (A - 0.3) U(0.2, 0.5)
    live     stall_ratio      bitrate 4 Mbps              U(0.05, 0.25) / f     A U(0, 0.4)

f = segment factor (light 1.0, heavy 1.5: heavy users demand more) times
context factor (home 1.0, commute 0.75: on the move users tolerate more).

Sessions: the rate a user gets in a session is log-uniform over the app's
range [0.5 q05(A_rate), 1.5 q95(D_rate)] (quantiles over the app's population),
independent of the user's own zone: the network does not know the zone.

Behaviour per session (`FeedbackBehaviour.default()`), S = S(rate; A_rate, D_rate)
the logistic ZoT curve in rate (optimizer.curves, eps = 0.1):
    * with probability 0.05 the user rates the session, 1..5, by an ordered logit
      in S: P(R <= r) = sigmoid(10 (c_r - S)), c = (0.2, 0.4, 0.6, 0.8);
    * otherwise the session is satisfying with probability S, and one signal is drawn:
          signal       P(. | satisfied)   P(. | dissatisfied)
          abandon      0.02               0.26
          retry        0.02               0.13
          downgrade    0.01               0.08
          app_switch   0.04               0.13
          complaint    0.002              0.03
          kept         0.908              0.37
Every session also records its hidden outcome `satisfied` (drawn with
probability S for rated sessions too), the ground truth for calibration.

This behaviour is exactly the likelihood family of operators.satisfaction
(`SignalModel`), with these numbers: a deployment would calibrate them from
sessions with a known outcome, so the learner is allowed to know them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from engine.schemas import SIGNAL_CODES, Feedback, Signal
from operators.satisfaction import N_CATS, N_SIGNALS, RATING_CODE, WILDCARD, AppSpec, SignalModel, fit_prior
from optimizer import qos as qosmap
from optimizer.curves import satisfaction

_CODE_TO_SIGNAL = {c: s for s, c in SIGNAL_CODES.items()}


@dataclass(frozen=True)
class FeedbackBehaviour:
    """Per-session feedback behaviour (see module doc). `model` is the same
    behaviour as the learner's likelihood object."""

    model: SignalModel
    eps: float = 0.1

    @classmethod
    def default(cls) -> "FeedbackBehaviour":
        return cls(SignalModel.from_tables(
            sat={Signal.ABANDON: 0.02, Signal.RETRY: 0.02, Signal.DOWNGRADE: 0.01, Signal.APP_SWITCH: 0.04,
                 Signal.COMPLAINT: 0.002, Signal.KEPT: 0.908},
            dis={Signal.ABANDON: 0.26, Signal.RETRY: 0.13, Signal.DOWNGRADE: 0.08, Signal.APP_SWITCH: 0.13,
                 Signal.COMPLAINT: 0.03, Signal.KEPT: 0.37},
            rating_rate=0.05, cutpoints=(0.2, 0.4, 0.6, 0.8), tau=10.0,
        ))

    def emit(
        self, rng: np.random.Generator, rate: np.ndarray, a_rate: np.ndarray, d_rate: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One session per element: (signal code int8, rating int8 (0 if none), satisfied bool)."""
        s = np.asarray(satisfaction(rate, a_rate, d_rate, self.eps), dtype=np.float64).reshape(-1)
        n = s.size
        m = self.model
        satisfied = rng.random(n) < s
        rated = rng.random(n) < m.rating_rate
        # Implicit signal from the satisfied / dissatisfied table.
        table = np.where(satisfied[:, None], m.p_sat[None, :], m.p_dis[None, :])
        sig = _draw(rng, table)
        # Rating by the ordered logit in S (the categories' conditional probabilities).
        cats = np.arange(N_SIGNALS, N_CATS)
        pr = m.likelihood(cats[None, :], s[:, None]) / m.rating_rate
        rating = (_draw(rng, pr) + 1).astype(np.int8)
        signal = np.where(rated, RATING_CODE, sig).astype(np.int8)
        rating = np.where(rated, rating, 0).astype(np.int8)
        return signal, rating, satisfied


def _draw(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One categorical draw per row of p (rows need not be normalized exactly)."""
    c = np.cumsum(p, axis=1)
    u = rng.random(p.shape[0]) * c[:, -1]
    return np.minimum((c < u[:, None]).sum(axis=1), p.shape[1] - 1)


@dataclass(frozen=True)
class AppPopulation:
    spec: AppSpec
    kind: str  # how A, D are drawn in the metric (see module table)


SEGMENTS: dict[str, float] = {"light": 1.0, "heavy": 1.5}
CONTEXTS: dict[str, float] = {"home": 1.0, "commute": 0.75}


@dataclass
class Users:
    """Drawn users, one (user, app) slot per element; zones in metric and rate."""

    user_id: list[str]
    app: np.ndarray  # int32 index into Population.apps
    segment: list[str]
    context: list[str]
    a_metric: np.ndarray
    d_metric: np.ndarray
    a_rate: np.ndarray
    d_rate: np.ndarray

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass
class Population:
    apps: tuple[AppPopulation, ...]
    segments: dict[str, float] = field(default_factory=lambda: dict(SEGMENTS))
    contexts: dict[str, float] = field(default_factory=lambda: dict(CONTEXTS))
    _ranges: dict[int, tuple[float, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def default(cls) -> "Population":
        return cls((
            AppPopulation(AppSpec("video", "throughput_mbps", {}), "video"),
            AppPopulation(AppSpec("gaming", "latency_ms", {"base_ms": 15.0, "payload_kbit": 120.0}), "gaming"),
            AppPopulation(AppSpec("startup", "startup_delay_s", {"base_ms": 300.0, "payload_kbit": 3000.0}), "startup"),
            AppPopulation(AppSpec("live", "stall_ratio", {"bitrate_mbps": 4.0}), "live"),
        ))

    @property
    def app_specs(self) -> tuple[AppSpec, ...]:
        return tuple(a.spec for a in self.apps)

    def groups(self) -> list[tuple[str, str, str]]:
        return [(s, a.spec.name, c) for a in self.apps for s in self.segments for c in self.contexts]

    def _draw_metric(self, rng: np.random.Generator, kind: str, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = f.size
        u1, u2 = rng.random(n), rng.random(n)
        if kind == "video":
            a = (1.0 + 4.0 * u1) * f
            return a, a + (1.5 + 6.5 * u2) * f
        if kind == "gaming":
            a = 15.0 + (75.0 + 130.0 * u1) / f
            return a, 15.0 + (a - 15.0) * (0.25 + 0.35 * u2)
        if kind == "startup":
            a = 0.3 + (1.7 + 6.0 * u1) / f
            return a, 0.3 + (a - 0.3) * (0.2 + 0.3 * u2)
        if kind == "live":
            a = (0.05 + 0.20 * u1) / f
            return a, a * 0.4 * u2
        raise ValueError(f"unknown population kind {kind!r}")

    def draw(
        self, rng: np.random.Generator, n_per_group: int, prefix: str = "u",
        groups: Sequence[tuple[str, str, str]] | None = None,
    ) -> Users:
        """n_per_group users for every (segment, app, context) group."""
        names = [a.spec.name for a in self.apps]
        out = {k: [] for k in ("uid", "app", "seg", "ctx", "am", "dm", "ar", "dr")}
        for g_i, (seg, app, ctx) in enumerate(groups or self.groups()):
            ai = names.index(app)
            spec = self.apps[ai].spec
            f = np.full(n_per_group, self.segments[seg] * self.contexts[ctx])
            am, dm = self._draw_metric(rng, self.apps[ai].kind, f)
            ar, dr = qosmap.zone_in_rate(spec.metric, am, dm, **dict(spec.params))
            out["uid"] += [f"{prefix}{g_i}_{i}" for i in range(n_per_group)]
            out["app"].append(np.full(n_per_group, ai, dtype=np.int32))
            out["seg"] += [seg] * n_per_group
            out["ctx"] += [ctx] * n_per_group
            for k, v in (("am", am), ("dm", dm), ("ar", ar), ("dr", dr)):
                out[k].append(np.asarray(v, dtype=np.float64))
        cat = lambda k: np.concatenate(out[k]) if out[k] else np.zeros(0)  # noqa: E731
        return Users(out["uid"], cat("app").astype(np.int32), out["seg"], out["ctx"], cat("am"), cat("dm"),
                     cat("ar"), cat("dr"))

    def rate_range(self, app: int) -> tuple[float, float]:
        """The app's session-rate range, from a fixed large population sample."""
        if app not in self._ranges:
            rng = np.random.default_rng(12345 + app)
            spec = self.apps[app].spec
            groups = [(s, spec.name, c) for s in self.segments for c in self.contexts]
            u = self.draw(rng, 5000, groups=groups)
            self._ranges[app] = (0.5 * float(np.quantile(u.a_rate, 0.05)), 1.5 * float(np.quantile(u.d_rate, 0.95)))
        return self._ranges[app]

    def session_rates(self, rng: np.random.Generator, app: np.ndarray) -> np.ndarray:
        """One session rate (Mbps) per element, log-uniform over its app's range."""
        app = np.asarray(app)
        lo = np.empty(app.size)
        hi = np.empty(app.size)
        for ai in np.unique(app):
            r = self.rate_range(int(ai))
            lo[app == ai], hi[app == ai] = r
        return np.exp(np.log(lo) + rng.random(app.size) * (np.log(hi) - np.log(lo)))

    def fitted_priors(self, rng: np.random.Generator, n_per_group: int = 4000) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
        """Population priors as an operator would get them: moments of (log A, log W)
        fitted to a separate sample of known zones (historical users), per group
        and per app (the ("*", app, "*") fallback)."""
        hist = self.draw(rng, n_per_group, prefix="hist")
        names = [a.spec.name for a in self.apps]
        seg_a, ctx_a = np.asarray(hist.segment), np.asarray(hist.context)
        pri = {}
        for seg, app, ctx in self.groups():
            m = (seg_a == seg) & (ctx_a == ctx) & (hist.app == names.index(app))
            pri[(seg, app, ctx)] = fit_prior(hist.a_rate[m], hist.d_rate[m])
        for ai, a in enumerate(self.apps):
            m = hist.app == ai
            pri[(WILDCARD, a.spec.name, WILDCARD)] = fit_prior(hist.a_rate[m], hist.d_rate[m])
        return pri


def feedback_events(
    users: Users, idx: np.ndarray, rate: np.ndarray, signal: np.ndarray, rating: np.ndarray,
    population: Population, ts: float = 0.0, cell_id: str = "cell0", id_prefix: str = "fb",
) -> list[Feedback]:
    """Wire `Feedback` events for sessions (rate mapped back to each app's metric)."""
    out = []
    for j, (i, r, s, rt) in enumerate(zip(idx, rate, signal, rating)):
        spec = population.apps[int(users.app[i])].spec
        q = float(qosmap.qos_for_rate(spec.metric, r, **dict(spec.params)))
        sig = _CODE_TO_SIGNAL[int(s)]
        out.append(Feedback(
            event_id=f"{id_prefix}{j}", ts=ts, user_id=users.user_id[i], cell_id=cell_id, app=spec.name,
            signal=sig, qos=q if math.isfinite(q) else 0.0, rating=int(rt) if sig is Signal.RATING else None,
        ))
    return out


__all__ = ["FeedbackBehaviour", "Population", "AppPopulation", "Users", "SEGMENTS", "CONTEXTS", "feedback_events"]
