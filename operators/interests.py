"""Interest operators: interaction events in; recommendations, next-app predictions
and profile interests out.

The engine (embedded runner or Faust agent) calls, per batch of `Interaction` events:

    batch = encode_interactions(state.catalog, events, segments=..., cells=...)
    learn(state, batch)
    recs = recommendations(state, user_ids, ts, k=10)                 # -> Recommendation events
    probs, apps = next_app_probabilities(state, user_ids, ts, cells)  # -> proactive QoS
    prof = profile_updates(state, user_ids, ts, zot=...)              # -> ProfileUpdate events

Ids are mapped to dense indices by the `Catalog`, which is append-only: a new user,
item, app, cell or segment gets the next index and no existing index ever changes,
so growing it in place while a batch is encoded is safe, and every model grows its
tables to match. The ranking helpers (`top_k`, `demote_undeliverable`) are pure
numpy. `InterestState` bundles the catalog and the models for the runner and
snapshots them together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from engine.models.cooccurrence import ItemCooccurrence, SequenceQuery
from engine.models.interest_net import InterestNet
from engine.models.popularity import DecayedPopularity, PopularityQuery
from engine.models.user_interests import InterestQuery, UserInterests
from engine.schemas import Action, Interaction, ProfileUpdate, Recommendation, RecommendedItem, ZotEstimate

# How much each action says the user is interested in the item. A skip is not
# interest: it neither counts nor enters the user's sequence.
ACTION_WEIGHTS: dict[Action, float] = {
    Action.PLAY: 1.0, Action.VIEW: 1.0, Action.CLICK: 0.5, Action.SKIP: 0.0, Action.LIKE: 2.0, Action.COMPLETE: 1.5,
}

MODELS = ("cooccurrence", "net", "popularity")


# ---------------------------------------------------------------- catalog and batches


class _Index:
    """Append-only string id <-> dense index map."""

    def __init__(self, ids: Sequence[str] = ()) -> None:
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        for i in ids:
            self.add(i)

    def add(self, key: str) -> int:
        k = self.pos.get(key)
        if k is None:
            k = self.pos[key] = len(self.ids)
            self.ids.append(key)
        return k

    def get(self, key: str | None) -> int:
        return -1 if key is None else self.pos.get(key, -1)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Catalog:
    """Every id the interest models have seen, by kind."""

    users: _Index = field(default_factory=_Index)
    items: _Index = field(default_factory=_Index)
    apps: _Index = field(default_factory=_Index)
    cells: _Index = field(default_factory=_Index)
    segments: _Index = field(default_factory=_Index)

    def snapshot(self) -> dict[str, list[str]]:
        return {k: list(getattr(self, k).ids) for k in ("users", "items", "apps", "cells", "segments")}

    @classmethod
    def from_snapshot(cls, state: Mapping[str, Sequence[str]]) -> "Catalog":
        return cls(**{k: _Index(v) for k, v in state.items()})


@dataclass(frozen=True)
class InteractionBatch:
    """Model-ready arrays, one row per accepted event, in event order (-1 = unknown)."""

    user: np.ndarray  # int64
    item: np.ndarray  # int64
    app: np.ndarray  # int64
    ts: np.ndarray  # float64 seconds
    weight: np.ndarray  # float64, from the action
    hour: np.ndarray  # int64 hour of day 0..23 (UTC + offset)
    segment: np.ndarray  # int64
    cell: np.ndarray  # int64

    @property
    def key(self) -> np.ndarray:
        """The interest key of each row for `UserInterests`: the app."""
        return self.app

    def __len__(self) -> int:
        return len(self.user)


def hour_of_day(ts: np.ndarray, utc_offset_h: float = 0.0) -> np.ndarray:
    return (np.floor(np.asarray(ts, dtype=np.float64) / 3600.0 + utc_offset_h) % 24).astype(np.int64)


def encode_interactions(
    catalog: Catalog,
    events: Sequence[Interaction],
    segments: Mapping[str, str] | None = None,
    cells: Mapping[str, str] | None = None,
    action_weights: Mapping[Action, float] = ACTION_WEIGHTS,
    utc_offset_h: float = 0.0,
) -> InteractionBatch:
    """Map validated `Interaction` events to dense arrays; new ids enter `catalog`.

    `segments` / `cells`: user id -> the user's segment / current cell, from the
    context stream (users missing from them get -1); an event's own `cell_id`
    comes first (it does not depend on which stream a worker read first).
    """
    segments, cells = segments or {}, cells or {}
    n = len(events)
    user, item, app = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    seg, cell = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    ts, w = np.empty(n), np.empty(n)
    for r, e in enumerate(events):
        user[r] = catalog.users.add(e.user_id)
        item[r] = catalog.items.add(e.item_id)
        app[r] = catalog.apps.add(e.app)
        if e.user_id in segments:
            seg[r] = catalog.segments.add(segments[e.user_id])
        where = e.cell_id if e.cell_id is not None else cells.get(e.user_id)
        if where is not None:
            cell[r] = catalog.cells.add(where)
        ts[r] = e.ts
        w[r] = action_weights[e.action]
    return InteractionBatch(user, item, app, ts, w, hour_of_day(ts, utc_offset_h), seg, cell)


# ---------------------------------------------------------------- state and learning


@dataclass
class InterestState:
    """The catalog and the interest models the engine keeps between batches."""

    catalog: Catalog
    popularity: DecayedPopularity
    cooccurrence: ItemCooccurrence
    apps: UserInterests
    net: InterestNet | None = None  # optional: the counters are the fallback

    def snapshot(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog.snapshot(), "popularity": self.popularity.snapshot(),
            "cooccurrence": self.cooccurrence.snapshot(), "apps": self.apps.snapshot(),
            "net": None if self.net is None else self.net.snapshot(),
        }

    @classmethod
    def from_snapshot(cls, state: Mapping[str, Any]) -> "InterestState":
        pop, co, apps = DecayedPopularity(), ItemCooccurrence(), UserInterests()
        pop.restore(state["popularity"])
        co.restore(state["cooccurrence"])
        apps.restore(state["apps"])
        net = None
        if state["net"] is not None:
            net = InterestNet()
            net.restore(state["net"])
        return cls(Catalog.from_snapshot(state["catalog"]), pop, co, apps, net)


def new_state(
    popularity_half_life_s: float | None = 7 * 86400.0,
    use_net: bool = True,
    seed: int = 0,
    cooccurrence: Mapping[str, Any] | None = None,
    net: Mapping[str, Any] | None = None,
    user_interests: Mapping[str, Any] | None = None,
) -> InterestState:
    """Fresh state; the mappings are keyword arguments of the model classes."""
    return InterestState(
        catalog=Catalog(),
        popularity=DecayedPopularity(popularity_half_life_s),
        cooccurrence=ItemCooccurrence(**dict(cooccurrence or {})),
        apps=UserInterests(**dict(user_interests or {})),
        net=InterestNet(seed=seed, **dict(net or {})) if use_net else None,
    )


def learn(state: InterestState, batch: InteractionBatch) -> None:
    """Update every model with the batch, in event order."""
    if len(batch) == 0:
        return
    state.popularity.update(batch)
    state.cooccurrence.update(batch)
    state.apps.update(batch)
    if state.net is not None:
        state.net.update(batch)


# ---------------------------------------------------------------- ranking


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` columns per row, best first: (B, k') indices and scores, k' = min(k, n).

    `exclude` (B, n) bool marks columns never to return (seen items).
    """
    s = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        s[exclude] = -np.inf
    k = min(int(k), s.shape[1])
    if k <= 0:
        return np.zeros((len(s), 0), np.int64), np.zeros((len(s), 0))
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    # Ties broken by item index, so the output is deterministic.
    order = np.lexsort((part, -ps), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(s, idx, axis=1)


def demote_undeliverable(
    scores: np.ndarray,
    required_rate: np.ndarray,
    predicted_rate: np.ndarray,
    margin: float = 1.0,
    penalty: float = float("inf"),
) -> np.ndarray:
    """Network-aware ranking: lower the items the network cannot deliver to each user now.

    required_rate (n_items,): what each item needs (e.g. a video's bitrate; nan = no
    requirement); predicted_rate (B,): the rate each user is predicted to get, in
    the same unit. An item is undeliverable when required > margin * predicted.
    `penalty` = inf (default) puts every undeliverable item after every deliverable
    one, keeping the interest order within each group; a finite penalty subtracts
    penalty * log2(required / (margin * predicted)), so a slight shortfall costs
    less than a large one.
    """
    s = np.asarray(scores, dtype=np.float64)
    req = np.asarray(required_rate, dtype=np.float64)[None, : s.shape[1]]
    cap = margin * np.asarray(predicted_rate, dtype=np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # A user with no predicted rate (0) can be delivered nothing that needs a rate.
        ratio = req / np.maximum(cap, 1e-12)
    short = np.where(np.isfinite(ratio) & (ratio > 1.0), np.log2(np.where(ratio > 1.0, ratio, 1.0)), 0.0)
    bad = short > 0
    if np.isinf(penalty):
        fin = np.isfinite(s)
        hi = np.where(fin, s, -np.inf).max(axis=1, initial=-np.inf)
        lo = np.where(fin, s, np.inf).min(axis=1, initial=np.inf)
        spread = np.where(np.isfinite(hi - lo), hi - lo, 0.0) + 1.0
        out = np.where(bad, s - spread[:, None], s)
    else:
        out = s - penalty * short
    return out


def item_scores(state: InterestState, users: np.ndarray, model: str = "cooccurrence",
                sequences: np.ndarray | None = None) -> np.ndarray:
    """(B, n_items) scores of every catalog item for dense `users` (-1 = unknown user)."""
    n = len(state.catalog.items)
    users = np.asarray(users, dtype=np.int64)
    if model == "popularity":
        s = state.popularity.predict(PopularityQuery(np.full(len(users), -1)))
    elif model == "cooccurrence":
        s = state.cooccurrence.predict(SequenceQuery(users, sequences))
    elif model == "net":
        if state.net is None:
            raise ValueError("model 'net' asked for but the state has no InterestNet (use_net=False)")
        s = state.net.predict(SequenceQuery(users, sequences))
    else:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    out = np.zeros((len(users), n))
    out[:, : s.shape[1]] = s[:, :n]
    return out


def _event_id(kind: str, user_id: str, ts: float) -> str:
    # Deterministic, so a replayed batch produces the same output ids (idempotent sinks).
    return f"{kind}-" + hashlib.blake2b(f"{user_id}|{ts!r}".encode(), digest_size=12).hexdigest()


def recommendations(
    state: InterestState,
    user_ids: Sequence[str],
    ts: float,
    k: int = 10,
    model: str = "cooccurrence",
    item_rate: np.ndarray | None = None,
    user_rate: np.ndarray | None = None,
    margin: float = 1.0,
    penalty: float = float("inf"),
) -> list[Recommendation]:
    """Top-K items per user, the items in the user's recent sequence excluded.

    Network-aware when `item_rate` (n_items,) and `user_rate` (B,) are given (see
    `demote_undeliverable`); unknown users get the model's cold-start ranking.
    """
    users = np.array([state.catalog.users.get(u) for u in user_ids], dtype=np.int64)
    s = item_scores(state, users, model)
    if item_rate is not None and user_rate is not None:
        s = demote_undeliverable(s, item_rate, user_rate, margin, penalty)
    seq = state.cooccurrence.recent.sequences(users)
    exclude = np.zeros_like(s, dtype=bool)
    rows, cols = np.nonzero(seq >= 0)
    exclude[rows, seq[rows, cols]] = True
    idx, sc = top_k(s, k, exclude)
    items = state.catalog.items.ids
    out = []
    for r, uid in enumerate(user_ids):
        ok = np.isfinite(sc[r])
        out.append(Recommendation(
            event_id=_event_id("rec", uid, ts), ts=ts, user_id=uid, model=model,
            items=[RecommendedItem(item_id=items[i], score=float(v)) for i, v in zip(idx[r][ok], sc[r][ok])],
        ))
    return out


# ---------------------------------------------------------------- next app and profiles


def next_app_probabilities(
    state: InterestState,
    user_ids: Sequence[str],
    ts: float | np.ndarray,
    cells: Sequence[str | None] | None = None,
    segments: Sequence[str | None] | None = None,
    utc_offset_h: float = 0.0,
) -> tuple[np.ndarray, list[str]]:
    """(B, n_apps) P(next app | user interests, hour of day, cell) and the app names.

    Unknown users start from their segment's prior (or the population's).
    """
    cat = state.catalog
    users = np.array([cat.users.get(u) for u in user_ids], dtype=np.int64)
    ts_arr = np.broadcast_to(np.asarray(ts, dtype=np.float64), users.shape)
    seg = None if segments is None else np.array([cat.segments.get(s) for s in segments], dtype=np.int64)
    cell = None if cells is None else np.array([cat.cells.get(c) for c in cells], dtype=np.int64)
    if len(cat.apps) == 0:
        return np.zeros((len(users), 0)), []
    p = state.apps.next_key(InterestQuery(users, ts_arr, seg), hour_of_day(ts_arr, utc_offset_h), cell)
    return p, list(cat.apps.ids)


def profile_interests(state: InterestState, user_ids: Sequence[str], ts: float,
                      per_horizon: int = 3) -> list[list[dict[str, Any]]]:
    """Each user's top apps by long- and short-term interest, as profile entries
    (wire dicts of `Interest`: key, weight, horizon)."""
    cat = state.catalog
    users = np.array([cat.users.get(u) for u in user_ids], dtype=np.int64)
    if len(cat.apps) == 0:
        return [[] for _ in user_ids]
    it = state.apps.predict(InterestQuery(users, np.full(len(users), float(ts))))
    ids = cat.apps.ids
    # Whole matrices to lists once: a row's own .tolist() (and the row view) cost ~8 us a user.
    ranked = [(horizon, *(a.tolist() for a in top_k(dist, per_horizon)))
              for horizon, dist in (("long", it.long), ("short", it.short))]
    return [[{"key": ids[i], "weight": v, "horizon": h} for h, idx, w in ranked
             for i, v in zip(idx[r], w[r])] for r in range(len(users))]


def profile_records(
    state: InterestState,
    user_ids: Sequence[str],
    ts: float,
    zot: Mapping[str, list[dict[str, Any]]] | None = None,
    cells: Sequence[str | None] | None = None,
    per_horizon: int = 3,
) -> list[dict[str, Any]]:
    """Profile events as wire dicts (the `ProfileUpdate` fields in order, None left out):
    interests, the most likely next app, and the ZoT estimates given (wire dicts of
    `ZotEstimate`). The engine serializes these directly, once per touched user per
    batch; `profile_updates` validates them into events."""
    zot = zot or {}
    interests = profile_interests(state, user_ids, ts, per_horizon)
    p, apps = next_app_probabilities(state, user_ids, ts, cells)
    best = np.argmax(p, axis=1).tolist() if len(apps) else [None] * len(user_ids)
    ts = float(ts)
    out = []
    for r, uid in enumerate(user_ids):
        rec = {"v": 1, "event_id": _event_id("profile", uid, ts), "ts": ts, "type": "profile", "user_id": uid,
               "zot": zot.get(uid, []), "interests": interests[r]}
        if best[r] is not None:
            rec["next_app"] = apps[best[r]]
        out.append(rec)
    return out


def profile_updates(
    state: InterestState,
    user_ids: Sequence[str],
    ts: float,
    zot: Mapping[str, list[ZotEstimate]] | None = None,
    cells: Sequence[str | None] | None = None,
    per_horizon: int = 3,
) -> list[ProfileUpdate]:
    """Profile events: interests, the most likely next app, and the ZoT estimates given."""
    given = {u: [e.model_dump() for e in ests] for u, ests in (zot or {}).items()}
    return [ProfileUpdate.model_validate(rec)
            for rec in profile_records(state, user_ids, ts, given, cells, per_horizon)]
