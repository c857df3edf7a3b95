"""Online learning of each user's zone of tolerance (A, D) per application.

Model (docs/satisfaction.md has the full statement):

* Per (user, app) slot, theta = (alpha, beta) = (log A, log W) with A the
  adequate rate and W = D - A the zone width, in Mbps; D > A > 0 by construction.
  The posterior is kept as a Gaussian N(mu, Sigma) over theta.
* A feedback event (signal, rate q the user had) has likelihood
  L = P(signal | dissatisfied) + (P(signal | satisfied) - P(signal | dissatisfied)) S(q; A, D),
  i.e. the session was satisfying with probability S(q) and the signal was drawn
  from a satisfied or dissatisfied profile (`SignalModel`). Ratings 1..5 are
  five categories of their own, with ordinal (monotone) likelihood ratios.
* Each event first applies forgetting, an AR(1) drift toward the slot's
  population prior (mu <- mu0 + sqrt(lam)(mu - mu0), Sigma <- lam Sigma + (1-lam) Sigma0),
  then an assumed-density-filtering step: the tilted distribution's mean and
  covariance by product Gauss-Hermite quadrature.
* Slots start at the prior of their (segment, app, context) group; unseen users
  get the prior, sparse users are shrunk toward it by Bayes' rule itself.

Batches are struct-of-arrays (`Batch`). `update` (Numba, in order, per event)
and `update_reference` (NumPy, one event at a time) compute the same thing.
Rows failing validation are rejected with a reason before anything changes and
the other rows are applied; `update(..., on_reject="raise")` raises instead.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from engine.schemas import SIGNAL_CODES, Feedback, Signal
from operators import satisfaction_kernels as K
from optimizer import qos as qosmap

N_SIGNALS = len(SIGNAL_CODES)
RATING_CODE = SIGNAL_CODES[Signal.RATING]
# Likelihood categories: the signal code, or N_SIGNALS + rating - 1 for ratings
# (category RATING_CODE itself is never used).
N_CATS = N_SIGNALS + 5
WILDCARD = "*"


def categories(signal: np.ndarray, rating: np.ndarray) -> np.ndarray:
    """Likelihood category of each (valid) event."""
    signal = np.asarray(signal).astype(np.int64)
    rating = np.asarray(rating).astype(np.int64)
    return np.where(signal == RATING_CODE, N_SIGNALS + rating - 1, signal)


# ------------------------------------------------------------------ likelihood


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        ez = np.exp(-np.abs(z))
    return np.where(z >= 0.0, 1.0 / (1.0 + ez), ez / (1.0 + ez))


_BIG = 1e300  # stands in for the open ends of the rating cutpoints


@dataclass(frozen=True, eq=False)
class SignalModel:
    """How a session's outcome produces one feedback event, as a function of S.

    With probability `rating_rate` (independent of S) the user rates the session,
    1..5 by an ordered logit in S: P(R <= r | S) = sigmoid(tau (c_r - S)) with
    increasing cutpoints c_1..c_4 in (0, 1). Otherwise the session was satisfying
    with probability S and one implicit signal is drawn from `p_sat` or `p_dis`
    (indexed by engine.schemas.SIGNAL_CODES, the RATING entry ignored, each summing
    to 1 over the other signals, every entry > 0 so no event is impossible).

    The likelihood of category c is then
        L_c(S) = lin_a[c] + lin_b[c] S + rate_w[c] (sigmoid(tau (hi[c] - S)) - sigmoid(tau (lo[c] - S))).
    """

    p_sat: np.ndarray
    p_dis: np.ndarray
    rating_rate: float = 0.05
    cutpoints: tuple[float, float, float, float] = (0.2, 0.4, 0.6, 0.8)
    tau: float = 10.0
    lin_a: np.ndarray = field(init=False, repr=False)
    lin_b: np.ndarray = field(init=False, repr=False)
    rate_w: np.ndarray = field(init=False, repr=False)
    cut_lo: np.ndarray = field(init=False, repr=False)
    cut_hi: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("p_sat", "p_dis"):
            p = np.asarray(getattr(self, name), dtype=np.float64).copy()
            if p.shape != (N_SIGNALS,):
                raise ValueError(f"{name} must have shape ({N_SIGNALS},), indexed by SIGNAL_CODES")
            p[RATING_CODE] = 0.0
            used = np.delete(p, RATING_CODE)
            if not np.all(np.isfinite(used) & (used > 0.0)):
                raise ValueError(f"{name}: every implicit-signal probability must be finite and > 0")
            if abs(used.sum() - 1.0) > 1e-9:
                raise ValueError(f"{name}: probabilities must sum to 1 (got {used.sum():.12g})")
            p.flags.writeable = False
            object.__setattr__(self, name, p)
        if not 0.0 < self.rating_rate < 1.0:
            raise ValueError("rating_rate must lie in (0, 1)")
        c = np.asarray(self.cutpoints, dtype=np.float64)
        if c.shape != (4,) or not np.all(np.diff(c) > 0) or not np.all((c > 0) & (c < 1)):
            raise ValueError("cutpoints must be 4 increasing values in (0, 1)")
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise ValueError("tau must be finite and > 0")
        lin_a = np.zeros(N_CATS)
        lin_b = np.zeros(N_CATS)
        lin_a[:N_SIGNALS] = (1.0 - self.rating_rate) * self.p_dis
        lin_b[:N_SIGNALS] = (1.0 - self.rating_rate) * (self.p_sat - self.p_dis)
        rate_w = np.zeros(N_CATS)
        rate_w[N_SIGNALS:] = self.rating_rate
        ext = np.concatenate([[-_BIG], c, [_BIG]])
        lo = np.zeros(N_CATS)
        hi = np.zeros(N_CATS)
        lo[N_SIGNALS:] = ext[:5]
        hi[N_SIGNALS:] = ext[1:]
        for name, arr in (("lin_a", lin_a), ("lin_b", lin_b), ("rate_w", rate_w), ("cut_lo", lo), ("cut_hi", hi)):
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    @classmethod
    def from_tables(
        cls, sat: Mapping[Signal, float], dis: Mapping[Signal, float], rating_rate: float = 0.05,
        cutpoints: Sequence[float] = (0.2, 0.4, 0.6, 0.8), tau: float = 10.0,
    ) -> "SignalModel":
        """Implicit-signal tables keyed by Signal (RATING omitted) and the rating model."""
        arrs = []
        for table in (sat, dis):
            p = np.zeros(N_SIGNALS)
            for s, code in SIGNAL_CODES.items():
                if s is not Signal.RATING:
                    p[code] = table[s]
            arrs.append(p)
        return cls(arrs[0], arrs[1], float(rating_rate), tuple(float(x) for x in cutpoints), float(tau))

    def likelihood(self, cat: np.ndarray, s: np.ndarray) -> np.ndarray:
        """L_c(S): the probability of an event of category `cat` in a session with satisfaction S."""
        cat = np.asarray(cat, dtype=np.int64)
        s = np.asarray(s, dtype=np.float64)
        t = self.tau
        rated = _sigmoid(t * (self.cut_hi[cat] - s)) - _sigmoid(t * (self.cut_lo[cat] - s))
        return self.lin_a[cat] + self.lin_b[cat] * s + np.where(self.rate_w[cat] > 0.0, self.rate_w[cat] * rated, 0.0)

    def category_probabilities(self, s: np.ndarray) -> np.ndarray:
        """(..., N_CATS) probabilities of every category at satisfaction S (rows sum to 1)."""
        s = np.asarray(s, dtype=np.float64)[..., None]
        return self.likelihood(np.arange(N_CATS), s)


# Calibrated defaults (the same per-session behaviour the feedback simulator
# documents, simulators/feedback.py); a deployment re-estimates them from
# sessions with known outcome.
DEFAULT_SIGNAL_MODEL = SignalModel.from_tables(
    sat={Signal.ABANDON: 0.02, Signal.RETRY: 0.02, Signal.DOWNGRADE: 0.01, Signal.APP_SWITCH: 0.04,
         Signal.COMPLAINT: 0.002, Signal.KEPT: 0.908},
    dis={Signal.ABANDON: 0.26, Signal.RETRY: 0.13, Signal.DOWNGRADE: 0.08, Signal.APP_SWITCH: 0.13,
         Signal.COMPLAINT: 0.03, Signal.KEPT: 0.37},
    rating_rate=0.05, cutpoints=(0.2, 0.4, 0.6, 0.8), tau=10.0,
)


@dataclass(frozen=True, eq=False)
class UpdateParams:
    """Learner settings: likelihood, curve eps, forgetting factor per event, quadrature size."""

    signals: SignalModel = DEFAULT_SIGNAL_MODEL
    eps: float = 0.1
    forgetting: float = 1.0  # lambda in (0, 1]; 1 = no forgetting
    n_quad: int = 7  # Gauss-Hermite nodes per axis (n_quad**2 per event)
    nodes: np.ndarray = field(init=False, repr=False)
    weights: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {self.eps}")
        if not 0.0 < self.forgetting <= 1.0:
            raise ValueError(f"forgetting must lie in (0, 1], got {self.forgetting}")
        if not 2 <= self.n_quad <= 40:
            raise ValueError(f"n_quad must lie in 2..40, got {self.n_quad}")
        x, w = np.polynomial.hermite_e.hermegauss(self.n_quad)
        object.__setattr__(self, "nodes", np.ascontiguousarray(x))
        object.__setattr__(self, "weights", np.ascontiguousarray(w / math.sqrt(2.0 * math.pi)))

    @property
    def two_l(self) -> float:
        return 2.0 * (math.log1p(-self.eps) - math.log(self.eps))


# ------------------------------------------------------------------ state


@dataclass(frozen=True)
class AppSpec:
    """An application, its QoS metric (optimizer.qos.METRICS) and the metric's parameters."""

    name: str
    metric: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        qosmap.higher_is_better(self.metric)  # raises on an unknown metric
        qosmap.rate_for_qos(self.metric, 1.0, **dict(self.params))  # raises on missing/bad params


def prior_from_zone(
    a_rate: float, d_rate: float, sd_log_a: float = 0.5, sd_log_w: float = 0.5, corr: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """A prior N(mu, Sigma) over (log A, log W) centred on a typical zone [a_rate, d_rate]."""
    if not (0.0 < a_rate < d_rate < math.inf):
        raise ValueError(f"need 0 < a_rate < d_rate < inf, got {a_rate}, {d_rate}")
    mu = np.array([math.log(a_rate), math.log(d_rate - a_rate)])
    c = corr * sd_log_a * sd_log_w
    return mu, np.array([[sd_log_a**2, c], [c, sd_log_w**2]])


def fit_prior(a_rate: np.ndarray, d_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Population prior fitted (moments of log A, log W) to known zones of a group,
    e.g. converged estimates of long-standing users or survey answers."""
    a_rate = np.asarray(a_rate, dtype=np.float64)
    d_rate = np.asarray(d_rate, dtype=np.float64)
    ok = np.isfinite(a_rate) & np.isfinite(d_rate) & (a_rate > 0) & (d_rate > a_rate)
    if ok.sum() < 3:
        raise ValueError("fit_prior needs at least 3 valid zones (0 < A < D < inf)")
    th = np.stack([np.log(a_rate[ok]), np.log(d_rate[ok] - a_rate[ok])], axis=1)
    return th.mean(axis=0), np.cov(th, rowvar=False)


@dataclass(eq=False)
class ZotState:
    """Posterior of every (user, app) slot, plus the population priors.

    Row arrays have `capacity` rows; rows [0, n_rows) are live. Groups are the
    (segment, app, context) priors; ("*", app, "*") is each app's fallback.
    """

    apps: tuple[AppSpec, ...]
    prior_mu: np.ndarray  # (G, 2)
    prior_cov: np.ndarray  # (G, 2, 2)
    group_app: np.ndarray  # (G,) int32
    group_keys: dict[tuple[str, str, str], int]
    mu: np.ndarray  # (capacity, 2)
    cov: np.ndarray  # (capacity, 2, 2)
    n_signals: np.ndarray  # (capacity,) int64
    group: np.ndarray  # (capacity,) int32
    app: np.ndarray  # (capacity,) int32
    n_rows: int = 0
    keys: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def app_index(self) -> dict[str, int]:
        return {a.name: i for i, a in enumerate(self.apps)}

    def copy(self) -> "ZotState":
        return ZotState(
            apps=self.apps, prior_mu=self.prior_mu.copy(), prior_cov=self.prior_cov.copy(),
            group_app=self.group_app.copy(), group_keys=dict(self.group_keys), mu=self.mu.copy(),
            cov=self.cov.copy(), n_signals=self.n_signals.copy(), group=self.group.copy(),
            app=self.app.copy(), n_rows=self.n_rows, keys=dict(self.keys),
        )


def new_state(
    apps: Sequence[AppSpec],
    priors: Mapping[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
    capacity: int = 1024,
) -> ZotState:
    """An empty state. `priors` maps (segment, app, context) -> (mu, Sigma) over
    (log A, log W); every app needs its fallback ("*", app, "*")."""
    names = [a.name for a in apps]
    if len(set(names)) != len(names):
        raise ValueError("duplicate app names")
    idx = {n: i for i, n in enumerate(names)}
    keys = sorted(priors)
    g_mu = np.zeros((len(keys), 2))
    g_cov = np.zeros((len(keys), 2, 2))
    g_app = np.zeros(len(keys), dtype=np.int32)
    for g, key in enumerate(keys):
        if key[1] not in idx:
            raise ValueError(f"prior {key} names an unknown app {key[1]!r}")
        m, c = (np.asarray(x, dtype=np.float64) for x in priors[key])
        if m.shape != (2,) or c.shape != (2, 2) or not np.all(np.isfinite(m)) or not np.all(np.isfinite(c)):
            raise ValueError(f"prior {key}: need finite mu (2,) and Sigma (2, 2)")
        if abs(c[0, 1] - c[1, 0]) > 1e-12 or np.any(np.linalg.eigvalsh(c) <= 0):
            raise ValueError(f"prior {key}: Sigma must be symmetric positive definite")
        g_mu[g], g_cov[g], g_app[g] = m, c, idx[key[1]]
    for n in names:
        if (WILDCARD, n, WILDCARD) not in priors:
            raise ValueError(f"app {n!r} needs a fallback prior ('*', {n!r}, '*')")
    capacity = max(int(capacity), 1)
    return ZotState(
        apps=tuple(apps), prior_mu=g_mu, prior_cov=g_cov, group_app=g_app,
        group_keys={k: g for g, k in enumerate(keys)},
        mu=np.zeros((capacity, 2)), cov=np.zeros((capacity, 2, 2)),
        n_signals=np.zeros(capacity, dtype=np.int64), group=np.zeros(capacity, dtype=np.int32),
        app=np.zeros(capacity, dtype=np.int32),
    )


def group_for(state: ZotState, segment: str | None, app: str, context: str | None) -> int:
    """Most specific prior group: exact, then segment-only, context-only, app-wide."""
    seg = segment or WILDCARD
    ctx = context or WILDCARD
    for key in ((seg, app, ctx), (seg, app, WILDCARD), (WILDCARD, app, ctx), (WILDCARD, app, WILDCARD)):
        g = state.group_keys.get(key)
        if g is not None:
            return g
    raise KeyError(f"unknown app {app!r}")


def _grow(state: ZotState, need: int) -> None:
    cap = state.mu.shape[0]
    if need <= cap:
        return
    new_cap = max(need, 2 * cap)
    for name in ("mu", "cov", "n_signals", "group", "app"):
        old = getattr(state, name)
        arr = np.zeros((new_cap,) + old.shape[1:], dtype=old.dtype)
        arr[:cap] = old
        setattr(state, name, arr)


def ensure_slots(
    state: ZotState,
    users: Sequence[str],
    apps: Sequence[str],
    segments: Sequence[str | None] | None = None,
    contexts: Sequence[str | None] | None = None,
) -> np.ndarray:
    """Rows of the (user, app) slots, creating missing ones at their group prior.

    Appends rows in place (existing rows are never touched). Raises KeyError for
    an unknown app before creating anything.
    """
    index = state.app_index
    if not index.keys() >= set(apps):
        raise KeyError(f"unknown app {next(a for a in apps if a not in index)!r}")
    # Existing slots looked up without a Python-level loop (zip yields the keys); the
    # engine's batches are almost all existing slots (0.5 -> 0.1 us an event).
    keys = state.keys
    found: list[int | None] = list(map(keys.get, zip(users, apps)))
    new: list[tuple[int, int, int]] = []
    if None in found:
        for i, r in enumerate(found):
            if r is None:
                u, a = users[i], apps[i]
                r = keys.get((u, a))  # created by an earlier event of this batch
                if r is None:
                    r = state.n_rows + len(new)
                    g = group_for(state, segments[i] if segments else None, a, contexts[i] if contexts else None)
                    keys[(u, a)] = r
                    new.append((r, g, index[a]))
                found[i] = r
    rows = np.array(found, dtype=np.int32)
    if new:
        _grow(state, state.n_rows + len(new))
        r_new = np.array([n[0] for n in new], dtype=np.int64)
        g_new = np.array([n[1] for n in new], dtype=np.int32)
        state.mu[r_new] = state.prior_mu[g_new]
        state.cov[r_new] = state.prior_cov[g_new]
        state.n_signals[r_new] = 0
        state.group[r_new] = g_new
        state.app[r_new] = np.array([n[2] for n in new], dtype=np.int32)
        state.n_rows += len(new)
    return rows


def user_slots(state: ZotState, users: Sequence[str]) -> list[tuple[str, str, int]]:
    """(user, app, row) of every existing slot of these users, user by user in the
    given order, apps in state order (no slot is created)."""
    keys = state.keys
    apps = [spec.name for spec in state.apps]
    return [(u, a, r) for u in users for a in apps if (r := keys.get((u, a))) is not None]


def set_groups(state: ZotState, rows: np.ndarray, groups: np.ndarray) -> None:
    """Re-assign slots to another prior group (e.g. the user's context changed);
    forgetting then drifts them toward the new prior."""
    rows = np.asarray(rows, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int32)
    if np.any((rows < 0) | (rows >= state.n_rows)) or np.any((groups < 0) | (groups >= len(state.group_keys))):
        raise IndexError("row or group out of range")
    if np.any(state.group_app[groups] != state.app[rows]):
        raise ValueError("a slot can only move to a prior group of its own app")
    state.group[rows] = groups


# ------------------------------------------------------------------ batches and validation


@dataclass(frozen=True, eq=False)
class Batch:
    """Feedback events as struct-of-arrays; qos in rate units (Mbps)."""

    row: np.ndarray  # int32, slot row
    app: np.ndarray  # int32, app code (index in state.apps); must match the slot's app
    signal: np.ndarray  # int8, engine.schemas.SIGNAL_CODES
    qos: np.ndarray  # float64, the rate the user had (Mbps)
    rating: np.ndarray  # int8, 1..5 for ratings, 0 otherwise

    @classmethod
    def of(cls, row, app, signal, qos, rating=None) -> "Batch":
        n = len(row)
        return cls(
            row=np.asarray(row, dtype=np.int32), app=np.asarray(app, dtype=np.int32),
            signal=np.asarray(signal, dtype=np.int8), qos=np.asarray(qos, dtype=np.float64),
            rating=np.zeros(n, dtype=np.int8) if rating is None else np.asarray(rating, dtype=np.int8),
        )

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def take(self, idx: np.ndarray) -> "Batch":
        return Batch(self.row[idx], self.app[idx], self.signal[idx], self.qos[idx], self.rating[idx])


class Rejects(NamedTuple):
    """Rejected rows: their positions in the batch and a one-line reason each."""

    index: np.ndarray
    reason: list[str]

    def __len__(self) -> int:
        return int(self.index.shape[0])


class BatchRejected(ValueError):
    def __init__(self, rejects: Rejects) -> None:
        super().__init__(f"{len(rejects)} feedback row(s) rejected, first: row {rejects.index[0]}: {rejects.reason[0]}")
        self.rejects = rejects


def validate(state: ZotState, batch: Batch) -> tuple[np.ndarray, Rejects]:
    """Mask of acceptable rows and the rejects (first failing check per row)."""
    n = len(batch)
    for name in ("row", "app", "signal", "qos", "rating"):
        if getattr(batch, name).shape != (n,):
            raise ValueError(f"batch column {name!r} must be 1-D of length {n}")
    q = batch.qos
    sig = batch.signal.astype(np.int64)
    a = batch.app.astype(np.int64)
    r = batch.row.astype(np.int64)
    in_range = (r >= 0) & (r < state.n_rows)
    slot_app = np.where(in_range, state.app[np.clip(r, 0, max(state.mu.shape[0] - 1, 0))], -1)
    rt = batch.rating.astype(np.int64)
    is_rating = sig == RATING_CODE
    checks = (  # in order: a row's reason is its first failing check
        (np.isnan(q), "qos is NaN"),
        (np.isinf(q), "qos is infinite"),
        (q < 0.0, "negative qos (rate)"),
        ((sig < 0) | (sig >= N_SIGNALS), "unknown signal code"),
        ((a < 0) | (a >= len(state.apps)), "unknown app"),
        (~in_range, "unknown slot row"),
        (in_range & (slot_app != a), "app does not match the slot's app"),
        (is_rating & ((rt < 1) | (rt > 5)), "rating signal needs a rating in 1..5"),
        (~is_rating & (rt != 0), "rating given for a non-rating signal"),
    )
    failed = np.zeros(n, dtype=bool)
    for mask, _ in checks:
        failed |= mask
    bad = np.flatnonzero(failed)
    if not bad.size:  # the common case: no per-row reasons to work out
        return ~failed, Rejects(bad.astype(np.int64), [])
    reason = np.full(n, "", dtype=object)
    for mask, why in reversed(checks):  # the first failing check is written last
        reason[mask] = why
    return ~failed, Rejects(bad.astype(np.int64), [str(x) for x in reason[bad]])


def _prepare(state: ZotState, batch: Batch, inplace: bool, on_reject: str) -> tuple[ZotState, Batch, Rejects]:
    if on_reject not in ("skip", "raise"):
        raise ValueError("on_reject must be 'skip' or 'raise'")
    ok, rej = validate(state, batch)
    if len(rej) and on_reject == "raise":
        raise BatchRejected(rej)
    good = batch if ok.all() else batch.take(np.flatnonzero(ok))
    return (state if inplace else state.copy()), good, rej


def _lik_arrays(sm: SignalModel) -> tuple:
    return sm.lin_a, sm.lin_b, sm.rate_w, sm.cut_lo, sm.cut_hi, float(sm.tau)


# Below this many events a batch is updated on one thread: starting Numba's threads
# (~20-50 us) costs more than it saves.
PARALLEL_MIN_EVENTS = 256


def update(
    state: ZotState, batch: Batch, params: UpdateParams = UpdateParams(), *, inplace: bool = False,
    on_reject: str = "skip",
) -> tuple[ZotState, Rejects]:
    """Apply a batch in order (Numba path). Returns the new state and the rejects.

    Bad rows are found before any change; with on_reject="skip" the valid rows
    are applied, with "raise" nothing is and BatchRejected is raised. With
    inplace=False the input state is left untouched.
    """
    out, good, rej = _prepare(state, batch, inplace, on_reject)
    if len(good):
        kernel = K.update_kernel_by_slot if len(good) >= PARALLEL_MIN_EVENTS else K.update_kernel
        kernel(
            good.row.astype(np.int64), categories(good.signal, good.rating), good.qos,
            out.mu, out.cov, out.n_signals, out.group, out.prior_mu, out.prior_cov,
            *_lik_arrays(params.signals), params.two_l, float(params.forgetting),
            params.nodes, params.weights,
        )
    return out, rej


def _nodes_theta(mu: np.ndarray, cov: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """alpha (..., n, 1) and beta (..., n, n) at the product-rule nodes (as the kernel)."""
    saa, sab, sbb = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    l11 = np.sqrt(saa)
    l21 = sab / l11
    rr = sbb - l21 * l21
    l22 = np.sqrt(np.where(rr > K.VAR_FLOOR, rr, K.VAR_FLOOR))
    e = (Ellipsis, None, None)
    ta = mu[..., 0][e] + l11[e] * nodes[:, None]
    tb = mu[..., 1][e] + l21[e] * nodes[:, None] + l22[e] * nodes[None, :]
    return ta, tb


def _sat_nodes(q: np.ndarray, ta: np.ndarray, tb: np.ndarray, two_l: float) -> np.ndarray:
    a = np.exp(ta)
    w = np.exp(tb)
    return _sigmoid(two_l * (q - a - 0.5 * w) / w)


def update_reference(
    state: ZotState, batch: Batch, params: UpdateParams = UpdateParams(), *, inplace: bool = False,
    on_reject: str = "skip",
) -> tuple[ZotState, Rejects]:
    """Per-event NumPy reference of `update` (same contract, same results)."""
    out, good, rej = _prepare(state, batch, inplace, on_reject)
    cats = categories(good.signal, good.rating)
    lam = float(params.forgetting)
    rho = math.sqrt(lam)
    ww = params.weights[:, None] * params.weights[None, :]
    for i in range(len(good)):
        r = int(good.row[i])
        g = int(out.group[r])
        if lam < 1.0:
            out.mu[r] = out.prior_mu[g] + rho * (out.mu[r] - out.prior_mu[g])
            out.cov[r] = lam * out.cov[r] + (1.0 - lam) * out.prior_cov[g]
        ta, tb = _nodes_theta(out.mu[r], out.cov[r], params.nodes)
        lik = ww * params.signals.likelihood(cats[i], _sat_nodes(good.qos[i], ta, tb, params.two_l))
        ta = np.broadcast_to(ta, tb.shape)
        z = lik.sum()
        na = (lik * ta).sum() / z
        nb = (lik * tb).sum() / z
        da, db = ta - na, tb - nb
        caa = (lik * da * da).sum() / z
        cab = (lik * da * db).sum() / z
        cbb = (lik * db * db).sum() / z
        out.mu[r] = (na, nb)
        out.cov[r] = ((max(caa, K.VAR_FLOOR), cab), (cab, max(cbb, K.VAR_FLOOR)))
        tr, tr0 = np.trace(out.cov[r]), np.trace(out.prior_cov[g])
        if tr > tr0:
            out.cov[r] *= tr0 / tr
        lim = K.MAX_CORR * math.sqrt(out.cov[r, 0, 0] * out.cov[r, 1, 1])
        out.cov[r, 0, 1] = out.cov[r, 1, 0] = min(max(out.cov[r, 0, 1], -lim), lim)
        out.n_signals[r] += 1
    return out, rej


# ------------------------------------------------------------------ events -> batch


def batch_from_columns(
    state: ZotState,
    user_ids: Sequence[str],
    apps: Sequence[str],
    signals: Sequence[int],
    qos: Sequence[float] | np.ndarray,
    ratings: Sequence[int] | None = None,
    segment_of: Mapping[str, str] | None = None,
    context_of: Mapping[str, str] | None = None,
) -> tuple[Batch, Rejects]:
    """Feedback given by column (signal codes, ratings 0 for none) as a batch: the
    metric value becomes the rate (Mbps) via the app's metric map, one vectorized
    call per app; slots are created for new (user, app) pairs of acceptable events
    only. Rejects index into the columns; a row is rejected for the first of: an
    unknown app, a qos that is not finite and >= 0, a qos no rate reaches."""
    n = len(user_ids)
    index = state.app_index
    app_i = np.array(list(map(index.get, apps, itertools.repeat(-1, n))), dtype=np.int64)
    q = np.asarray(qos, dtype=np.float64)
    known = app_i >= 0
    q_ok = np.isfinite(q) & (q >= 0)
    rate = np.full(n, np.nan)
    for a in np.unique(app_i[known & q_ok]).tolist():
        spec = state.apps[a]
        m = (app_i == a) & q_ok
        rate[m] = qosmap.rate_for_qos(spec.metric, q[m], **dict(spec.params))
    keep = known & q_ok & np.isfinite(rate)
    bad = np.flatnonzero(~keep)
    reasons = []
    for i in bad.tolist():
        if not known[i]:
            reasons.append(f"unknown app {apps[i]!r}")
        elif not q_ok[i]:
            reasons.append("qos must be finite and >= 0")
        else:
            spec = state.apps[int(app_i[i])]
            reasons.append(f"{spec.metric}={float(q[i])} is unreachable at any rate for app {apps[i]!r}")
    if len(bad):
        kept = np.flatnonzero(keep).tolist()
        users = [user_ids[i] for i in kept]
        app_names = [apps[i] for i in kept]
    else:
        users, app_names = list(user_ids), list(apps)
    seg = [segment_of.get(u) for u in users] if segment_of else [None] * len(users)
    ctx = [context_of.get(u) for u in users] if context_of else [None] * len(users)
    rows = ensure_slots(state, users, app_names, seg, ctx)
    sig = np.asarray(signals, dtype=np.int8)
    rat = np.zeros(n, dtype=np.int8) if ratings is None else np.asarray(ratings, dtype=np.int8)
    batch = Batch.of(rows, app_i[keep], sig[keep], rate[keep], rat[keep])
    return batch, Rejects(bad.astype(np.int64), reasons)


def batch_from_feedback(
    state: ZotState,
    events: Sequence[Feedback],
    segment_of: Mapping[str, str] | None = None,
    context_of: Mapping[str, str] | None = None,
) -> tuple[Batch, Rejects]:
    """`batch_from_columns` for validated `Feedback` events; rejects index into `events`."""
    return batch_from_columns(
        state, [e.user_id for e in events], [e.app for e in events], [SIGNAL_CODES[e.signal] for e in events],
        [e.qos for e in events], [e.rating or 0 for e in events], segment_of, context_of,
    )


# ------------------------------------------------------------------ estimates


Z90 = 1.6448536269514722  # standard normal 95% quantile


class Estimates(NamedTuple):
    """Posterior summaries per queried row. Rate units (Mbps) unless `_metric`.

    Means and sds are the lognormal moments of A = e^alpha and D = e^alpha + e^beta;
    the central `level` interval of A is exact, that of D uses a moment-matched
    lognormal (Fenton-Wilkinson). Metric values are the rate values mapped by the
    app's metric (interval ends mapped exactly, sds by the delta method); for
    lower-is-better metrics the metric's A is above its D.
    """

    a_mean: np.ndarray
    a_sd: np.ndarray
    a_lo: np.ndarray
    a_hi: np.ndarray
    d_mean: np.ndarray
    d_sd: np.ndarray
    d_lo: np.ndarray
    d_hi: np.ndarray
    a_metric: np.ndarray
    a_metric_sd: np.ndarray
    a_metric_lo: np.ndarray
    a_metric_hi: np.ndarray
    d_metric: np.ndarray
    d_metric_sd: np.ndarray
    d_metric_lo: np.ndarray
    d_metric_hi: np.ndarray
    n_signals: np.ndarray


def _zscore(level: float) -> float:
    if level == 0.9:
        return Z90
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2.0))


def _check_rows(state: ZotState, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    if np.any((rows < 0) | (rows >= state.n_rows)):
        raise IndexError("row out of range")
    return rows


def estimates_from_moments(mu: np.ndarray, cov: np.ndarray, level: float = 0.9) -> dict[str, np.ndarray]:
    """Rate-unit summaries (see Estimates) from posterior moments over (log A, log W)."""
    zq = _zscore(level)
    ma, mb = mu[..., 0], mu[..., 1]
    saa, sab, sbb = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    ea = np.exp(ma + 0.5 * saa)
    ew = np.exp(mb + 0.5 * sbb)
    va = ea * ea * np.expm1(saa)
    vw = ew * ew * np.expm1(sbb)
    cv = ea * ew * np.expm1(sab)
    ed = ea + ew
    vd = np.maximum(va + vw + 2.0 * cv, 0.0)
    s2 = np.log1p(vd / (ed * ed))  # Fenton-Wilkinson: log D ~ N(log ed - s2/2, s2)
    md = np.log(ed) - 0.5 * s2
    return {
        "a_mean": ea, "a_sd": np.sqrt(va), "a_lo": np.exp(ma - zq * np.sqrt(saa)), "a_hi": np.exp(ma + zq * np.sqrt(saa)),
        "d_mean": ed, "d_sd": np.sqrt(vd), "d_lo": np.exp(md - zq * np.sqrt(s2)), "d_hi": np.exp(md + zq * np.sqrt(s2)),
    }


def _estimates(
    apps: Sequence[AppSpec], mu: np.ndarray, cov: np.ndarray, app: np.ndarray, n_signals: np.ndarray, level: float
) -> Estimates:
    e = estimates_from_moments(mu, cov, level)
    out = {k: np.empty(app.size) for k in Estimates._fields if "_metric" in k}
    for ai in np.unique(app):
        spec = apps[int(ai)]
        p = dict(spec.params)
        m = app == ai
        for x in ("a", "d"):
            mean_r = e[f"{x}_mean"][m]
            out[f"{x}_metric"][m] = qosmap.qos_for_rate(spec.metric, mean_r, **p)
            out[f"{x}_metric_sd"][m] = np.abs(qosmap.dqos_drate(spec.metric, mean_r, **p)) * e[f"{x}_sd"][m]
            lo = qosmap.qos_for_rate(spec.metric, e[f"{x}_lo"][m], **p)
            hi = qosmap.qos_for_rate(spec.metric, e[f"{x}_hi"][m], **p)
            out[f"{x}_metric_lo"][m] = np.minimum(lo, hi)
            out[f"{x}_metric_hi"][m] = np.maximum(lo, hi)
    return Estimates(**e, **out, n_signals=np.asarray(n_signals, dtype=np.int64).copy())


def estimates(state: ZotState, rows: np.ndarray, level: float = 0.9) -> Estimates:
    """Posterior A and D of the given slots, in rate and in each app's metric."""
    rows = _check_rows(state, rows)
    return _estimates(state.apps, state.mu[rows], state.cov[rows], state.app[rows], state.n_signals[rows], level)


def lookup(
    state: ZotState, users: Sequence[str], apps: Sequence[str],
    segments: Sequence[str | None] | None = None, contexts: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Posterior moments (mu, Sigma), app codes and signal counts for (user, app)
    keys without creating slots: unseen users get their group prior (cold start).
    Raises KeyError for an unknown app."""
    index = state.app_index
    n = len(users)
    mu = np.empty((n, 2))
    cov = np.empty((n, 2, 2))
    app = np.empty(n, dtype=np.int32)
    cnt = np.zeros(n, dtype=np.int64)
    for i, (u, a) in enumerate(zip(users, apps)):
        if a not in index:
            raise KeyError(f"unknown app {a!r}")
        app[i] = index[a]
        r = state.keys.get((u, a))
        if r is None:
            g = group_for(state, segments[i] if segments else None, a, contexts[i] if contexts else None)
            mu[i], cov[i] = state.prior_mu[g], state.prior_cov[g]
        else:
            mu[i], cov[i], cnt[i] = state.mu[r], state.cov[r], state.n_signals[r]
    return mu, cov, app, cnt


def estimates_for_keys(
    state: ZotState, users: Sequence[str], apps: Sequence[str],
    segments: Sequence[str | None] | None = None, contexts: Sequence[str | None] | None = None, level: float = 0.9,
) -> Estimates:
    """`estimates` by (user, app) key; unseen users get their group prior's estimates."""
    mu, cov, app, cnt = lookup(state, users, apps, segments, contexts)
    return _estimates(state.apps, mu, cov, app, cnt, level)


def p_dissatisfied_from_moments(
    mu: np.ndarray, cov: np.ndarray, q: np.ndarray, params: UpdateParams = UpdateParams()
) -> np.ndarray:
    """E[1 - S(q; A, D)] under N(mu, Sigma) over (log A, log W), by the update's quadrature."""
    ta, tb = _nodes_theta(np.asarray(mu, dtype=np.float64), np.asarray(cov, dtype=np.float64), params.nodes)
    q = np.asarray(q, dtype=np.float64)[..., None, None]
    s = _sat_nodes(q, ta, tb, params.two_l)
    ww = params.weights[:, None] * params.weights[None, :]
    return np.clip(1.0 - (ww * s).sum(axis=(-1, -2)), 0.0, 1.0)


def p_dissatisfied(state: ZotState, rows: np.ndarray, q_rate: np.ndarray, params: UpdateParams = UpdateParams()) -> np.ndarray:
    """Predicted probability that each slot's user is dissatisfied at rate q (Mbps)."""
    rows = _check_rows(state, rows)
    return p_dissatisfied_from_moments(state.mu[rows], state.cov[rows], np.broadcast_to(q_rate, rows.shape), params)


# ------------------------------------------------------------------ snapshot


def snapshot(state: ZotState) -> dict:
    """Plain-data copy of the live part of the state."""
    n = state.n_rows
    return {
        "version": 1,
        "apps": [{"name": a.name, "metric": a.metric, "params": dict(a.params)} for a in state.apps],
        "group_keys": [list(k) for k, _ in sorted(state.group_keys.items(), key=lambda kv: kv[1])],
        "prior_mu": state.prior_mu.copy(),
        "prior_cov": state.prior_cov.copy(),
        "group_app": state.group_app.copy(),
        "keys": [[u, a] for (u, a), _ in sorted(state.keys.items(), key=lambda kv: kv[1])],
        "mu": state.mu[:n].copy(),
        "cov": state.cov[:n].copy(),
        "n_signals": state.n_signals[:n].copy(),
        "group": state.group[:n].copy(),
        "app": state.app[:n].copy(),
    }


def restore(snap: Mapping) -> ZotState:
    """Inverse of `snapshot`."""
    if snap.get("version") != 1:
        raise ValueError(f"unsupported ZoT snapshot version {snap.get('version')!r}")
    n = len(snap["keys"])
    cap = max(n, 1)
    st = ZotState(
        apps=tuple(AppSpec(a["name"], a["metric"], dict(a["params"])) for a in snap["apps"]),
        prior_mu=np.array(snap["prior_mu"], dtype=np.float64),
        prior_cov=np.array(snap["prior_cov"], dtype=np.float64),
        group_app=np.array(snap["group_app"], dtype=np.int32),
        group_keys={tuple(k): g for g, k in enumerate(snap["group_keys"])},
        mu=np.zeros((cap, 2)), cov=np.zeros((cap, 2, 2)), n_signals=np.zeros(cap, dtype=np.int64),
        group=np.zeros(cap, dtype=np.int32), app=np.zeros(cap, dtype=np.int32), n_rows=n,
        keys={(u, a): r for r, (u, a) in enumerate(snap["keys"])},
    )
    st.mu[:n] = snap["mu"]
    st.cov[:n] = snap["cov"]
    st.n_signals[:n] = snap["n_signals"]
    st.group[:n] = snap["group"]
    st.app[:n] = snap["app"]
    return st


__all__ = [
    "N_SIGNALS", "RATING_CODE", "N_CATS", "WILDCARD", "categories", "SignalModel", "DEFAULT_SIGNAL_MODEL",
    "UpdateParams", "AppSpec", "prior_from_zone", "fit_prior", "ZotState", "new_state", "group_for",
    "ensure_slots", "set_groups", "Batch", "Rejects", "BatchRejected", "validate", "update", "update_reference",
    "batch_from_columns", "batch_from_feedback", "user_slots", "Estimates", "estimates", "lookup", "estimates_for_keys", "estimates_from_moments", "p_dissatisfied",
    "p_dissatisfied_from_moments", "snapshot", "restore",
]
