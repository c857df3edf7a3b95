"""The engine's interest state: the interest models plus what makes them exactly-once.

`EngineInterests` wraps the operators' `InterestState` (catalog, decayed
popularity, item co-occurrence, two-time-scale user interests, optional neural
model) for `EngineCore`, and splits it by who may write it:

- per-user state (the user's long- and short-term app interests, recent items,
  segment, the rate of their last allocation): one changelog record per user,
  written by the worker that owns the user's partition, read by every worker;
- population tables (app counts per segment, hour of day and cell), which
  next-app prediction reads: kept per *user partition* and written by that
  partition's owner, so every worker sums the same tables in the same order and
  a proactive decision is the same whichever worker takes it, and after a crash;
- the item models behind recommendations (popularity, co-occurrence counts, the
  network): learned by each worker from the interactions it reads, and rebuilt by a
  recovering worker from the committed interactions themselves (`learn_items` inside
  `replaying()`; the interactions topic is their changelog, see docs/interests.md).

Cold start comes from the config: each segment's `app_mix` enters the population
tables as `prior_strength` pseudo-events, so a user the engine has never seen is
their segment.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from engine import schemas
from engine import topics as registry
from engine.config import Config
from engine.models.recent_items import RecentItems
from engine.models.user_interests import N_HOURS, InterestQuery
from operators import interests as ops

# App-count tables of one user partition: per segment, per hour of day, per cell, in total.
Tables = dict[str, dict[str, dict[str, float]]]


def _empty_tables() -> Tables:
    return {"seg": {}, "hour": {}, "cell": {}}


def _add(table: dict[str, dict[str, float]], row: str, app: str, w: float) -> None:
    r = table.setdefault(row, {})
    r[app] = r.get(app, 0.0) + w


@dataclass
class EngineInterests:
    cfg: Config
    partitions: int
    state: ops.InterestState = field(init=False)
    tables: dict[int, Tables] = field(default_factory=dict)
    item_rate: dict[str, float] = field(default_factory=dict)  # item id -> rate its best quality needs
    last_rate: dict[str, float] = field(default_factory=dict)  # user id -> Mbps of its last allocation
    last_visit: dict[str, tuple[str, float]] = field(default_factory=dict)  # user id -> (app, ts of last event)
    dirty_tables: set[int] = field(default_factory=set)
    items_learned: int = 0  # interaction events the item models learned (replayed ones included)
    _tables_stale: bool = True

    def __post_init__(self) -> None:
        ic = self.cfg.interests
        self.state = ops.new_state(
            use_net=ic.model == "net", seed=self.cfg.simulation.seed,
            user_interests={"long_half_life_s": ic.long_half_life_s, "short_half_life_s": ic.short_half_life_s,
                            "prior_strength": ic.prior_strength, "short_share": ic.short_share,
                            "learn_context": False},
        )
        cat = self.state.catalog
        for app in self.cfg.applications:  # fixed key order: the config's
            cat.apps.add(app)
        for seg in self.cfg.population.segments:
            cat.segments.add(seg.name)
        self._prior = self._config_prior()

    def _config_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """Segment x app pseudo-counts from the config's app mix, and their total per app."""
        cat = self.state.catalog
        strength = self.cfg.interests.prior_strength
        seg = np.zeros((len(cat.segments), len(cat.apps)))
        for s in self.cfg.population.segments:
            mix = np.array([s.app_mix.get(a, 0.0) for a in cat.apps.ids])
            seg[cat.segments.get(s.name)] = strength * mix / mix.sum()
        share = np.array([s.share for s in self.cfg.population.segments])
        return seg, (share / share.sum()) @ seg

    def partition_of(self, user: str) -> int:
        return registry.partition_for(user.encode(), self.partitions)

    # ------------------------------------------------------------ learning

    def learn(self, events: Sequence[schemas.Interaction], segment_of: Mapping[str, str],
              cell_of: Mapping[str, str]) -> list[str]:
        """Update every model with valid interaction events (new items and users enter
        the catalog); return the users whose state changed, in first-seen order.

        The item models learn from every event. App interests learn from *visits*:
        an event opens a visit when the user's previous one was of another app or
        more than `interests.visit_gap_s` earlier. Counting every item would weigh
        an app by how many items its sessions go through, not by how often the user
        turns to it (a video session logs many clips, a game one).
        """
        if not events:
            return []
        st = self.state
        batch = ops.encode_interactions(st.catalog, events, segments=segment_of, cells=cell_of)
        visit = np.zeros(len(events), dtype=bool)
        gap = self.cfg.interests.visit_gap_s
        for r, e in enumerate(events):
            if ops.ACTION_WEIGHTS[e.action] <= 0:
                continue
            prev = self.last_visit.get(e.user_id)
            visit[r] = prev is None or prev[0] != e.app or e.ts - prev[1] > gap
            self.last_visit[e.user_id] = (e.app, max(e.ts, prev[1]) if prev and prev[0] == e.app else e.ts)
        self._learn_items(batch, events)
        ui = st.apps
        ui.set_segments(batch.user, batch.segment)
        visits = dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[visit]
                                               for f in dataclasses.fields(batch)})
        visits = dataclasses.replace(visits, weight=np.ones(len(visits)))
        ui.update(visits)
        for e, h, v in zip(events, batch.hour.tolist(), visit.tolist()):
            if not v:
                continue
            p = self.partition_of(e.user_id)
            t = self.tables.setdefault(p, _empty_tables())
            _add(t["hour"], str(h), e.app, 1.0)  # a visit counts once, whatever its action
            seg = segment_of.get(e.user_id)
            if seg is not None:
                _add(t["seg"], seg, e.app, 1.0)
            cell = e.cell_id if e.cell_id is not None else cell_of.get(e.user_id)
            if cell is not None:
                _add(t["cell"], cell, e.app, 1.0)
            self.dirty_tables.add(p)
            self._tables_stale = True
        return list(dict.fromkeys(e.user_id for e in events))

    def _learn_items(self, batch: ops.InteractionBatch, events: Sequence[schemas.Interaction]) -> None:
        """The item models' part of `learn`: popularity, co-occurrence, the network, item rates."""
        st = self.state
        st.popularity.update(batch)
        st.cooccurrence.update(batch)
        if st.net is not None:
            st.net.update(batch)
        for e in events:
            if e.item_rate_mbps is not None:
                self.item_rate[e.item_id] = e.item_rate_mbps
        self.items_learned += len(events)

    def item_summary(self) -> dict[str, float | int]:
        """What the item models hold: the interactions they learned, the items, and the
        total action weight (exact: the weights are dyadic, so any order sums the same)."""
        co = self.state.cooccurrence
        return {"interactions": self.items_learned, "items": co.n_items, "weight": float(co.n[:co.n_items].sum())}

    def learn_items(self, events: Sequence[schemas.Interaction], segment_of: Mapping[str, str],
                    cell_of: Mapping[str, str]) -> None:
        """Update only the item models with `events`: a recovering worker replaying the
        committed interactions (the per-user state comes from the changelog). Inside
        `replaying()`, so the co-occurrence links follow each user's own sequence."""
        if events:
            self._learn_items(ops.encode_interactions(self.state.catalog, events, segments=segment_of,
                                                      cells=cell_of), events)

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        """A replay of interactions from the start of their topic: the co-occurrence
        model links each event to the user's items *before* it, so the replay keeps its
        own history of each user's items, from empty, and the restored one (the
        changelog's, the truth) comes back after it. The network's sequences are not in
        the changelog: it keeps the replay's."""
        restored = self.state.cooccurrence.recent
        self.state.cooccurrence.recent = RecentItems(restored.length)
        try:
            yield
        finally:
            self.state.cooccurrence.recent = restored


    def install_tables(self) -> None:
        """Sum the partitions' tables (partition order: the same on every worker) into the model."""
        if not self._tables_stale:
            return
        cat = self.state.catalog
        for p in sorted(self.tables):
            for c in self.tables[p]["cell"]:
                cat.cells.add(c)
            for s in self.tables[p]["seg"]:
                cat.segments.add(s)
        K = len(cat.apps)
        seg = np.zeros((len(cat.segments), K))
        hour = np.zeros((N_HOURS, K))
        cell = np.zeros((len(cat.cells), K))
        for p in sorted(self.tables):
            t = self.tables[p]
            for name, target, index in (("seg", seg, cat.segments), ("cell", cell, cat.cells)):
                for row, apps in t[name].items():
                    for app, w in apps.items():
                        target[index.get(row), cat.apps.add(app)] += w
            for h, apps in t["hour"].items():
                for app, w in apps.items():
                    hour[int(h), cat.apps.get(app)] += w
        prior_seg, prior_key = self._prior
        seg[: prior_seg.shape[0], : prior_seg.shape[1]] += prior_seg
        # Every learned event has its hour, so the hour table holds them all once.
        key = hour.sum(axis=0) + prior_key
        self.state.apps.set_context_tables(seg, key, hour, cell)
        self._tables_stale = False

    # ------------------------------------------------------------ predictions

    def next_app_probabilities(self, users: Sequence[str], ts: float, cells: Sequence[str | None],
                               segments: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
        """(B, n_apps) P(next app | interests, hour of day, cell; segment prior) and the app names."""
        self.install_tables()
        return ops.next_app_probabilities(self.state, users, ts, cells=cells, segments=segments)

    def next_apps(self, users: Sequence[str], ts: float, cells: Sequence[str | None],
                  segments: Sequence[str | None]) -> list[str]:
        """The most likely next app of each user."""
        p, apps = self.next_app_probabilities(users, ts, cells, segments)
        return [apps[int(i)] for i in np.argmax(p, axis=1)]

    def recommendations(self, users: Sequence[str], ts: float) -> list[schemas.Recommendation]:
        ic = self.cfg.interests
        item_rate = user_rate = None
        if ic.network_aware:
            ids = self.state.catalog.items.ids
            item_rate = np.array([self.item_rate.get(i, np.nan) for i in ids])
            # No allocation seen yet: no rate to judge by, so nothing is demoted (nan).
            user_rate = np.array([self.last_rate.get(u, np.nan) for u in users])
        recs = ops.recommendations(self.state, users, ts, k=ic.top_k, model=ic.model, item_rate=item_rate,
                                   user_rate=user_rate, margin=ic.margin)
        return [r for r in recs if r.items]  # early on a user may have seen the whole catalog so far

    def profile_records(self, users: Sequence[str], ts: float, zot: Mapping[str, list[dict[str, Any]]],
                        cell_of: Mapping[str, str]) -> list[dict[str, Any]]:
        """Profile events as wire dicts (operators.interests.profile_records)."""
        self.install_tables()
        return ops.profile_records(self.state, users, ts, zot=zot, cells=[cell_of.get(u) for u in users])

    # ------------------------------------------------------------ changelog

    def user_record(self, user: str) -> dict[str, Any] | None:
        """The user's interest state (None: the engine holds none)."""
        cat = self.state.catalog
        u = cat.users.get(user)
        ui = self.state.apps
        if u < 0 or u >= ui.n_users:
            return {"r": self.last_rate[user]} if user in self.last_rate else None
        K = ui.n_keys
        seq = self.state.cooccurrence.recent.sequences(np.array([u]))[0]
        seg = int(ui.segment[u])
        return {
            "long": dict(zip(cat.apps.ids[:K], ui.long[u, :K].tolist())),
            "short": dict(zip(cat.apps.ids[:K], ui.short[u, :K].tolist())),
            "t": None if np.isnan(ui.last[u]) else float(ui.last[u]),
            "seg": cat.segments.ids[seg] if seg >= 0 else None,
            "recent": [cat.items.ids[i] for i in seq.tolist() if i >= 0],
            "r": self.last_rate.get(user),
            "v": list(self.last_visit[user]) if user in self.last_visit else None,
        }

    def apply_user_record(self, user: str, rec: Mapping[str, Any] | None) -> None:
        """Make the engine hold exactly the recorded interest state of `user` (idempotent)."""
        if rec is None:
            return
        if rec.get("r") is None:
            self.last_rate.pop(user, None)
        else:
            self.last_rate[user] = float(rec["r"])
        if "long" not in rec:
            return
        if rec.get("v") is None:
            self.last_visit.pop(user, None)
        else:
            self.last_visit[user] = (rec["v"][0], float(rec["v"][1]))
        cat = self.state.catalog
        ui = self.state.apps
        u = cat.users.add(user)
        keys = [cat.apps.add(a) for a in rec["long"]]
        ui._ensure(u + 1, max(keys, default=-1) + 1)
        ui.long[u, :], ui.short[u, :] = 0.0, 0.0
        ui.long[u, keys] = list(rec["long"].values())
        ui.short[u, keys] = [rec["short"][a] for a in rec["long"]]
        ui.last[u] = np.nan if rec["t"] is None else rec["t"]
        ui.segment[u] = -1 if rec["seg"] is None else cat.segments.add(rec["seg"])
        recent = self.state.cooccurrence.recent
        recent.ensure_users(u + 1)
        items = [cat.items.add(i) for i in rec["recent"][-recent.length:]]
        recent.hist[u, :] = -1
        if items:
            recent.hist[u, recent.length - len(items):] = items
        self._tables_stale = True  # new ids may have widened the catalog

    def tables_record(self, partition: int) -> dict[str, Any]:
        return self.tables.get(partition, _empty_tables())

    def apply_tables_record(self, partition: int, rec: Tables) -> None:
        self.tables[partition] = {k: {r: dict(v) for r, v in rec[k].items()} for k in ("seg", "hour", "cell")}
        self._tables_stale = True
