"""ZoT posterior per (user, app): the OnlineModel handle around operators.satisfaction.

The operator functions stay pure (state in, state out); this class holds the
state between batches for the embedded runner, the Faust agents and the
benchmarks, and turns it into the profile entries the engine publishes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from engine.models.base import OnlineModel
from engine.schemas import Feedback, ZotEstimate
from operators import satisfaction as zs


def _params_to_plain(p: zs.UpdateParams) -> dict[str, Any]:
    sm = p.signals
    return {
        "p_sat": sm.p_sat.copy(), "p_dis": sm.p_dis.copy(), "rating_rate": sm.rating_rate,
        "cutpoints": list(sm.cutpoints), "tau": sm.tau, "eps": p.eps, "forgetting": p.forgetting, "n_quad": p.n_quad,
    }


def _params_from_plain(d: Mapping[str, Any]) -> zs.UpdateParams:
    sm = zs.SignalModel(np.asarray(d["p_sat"]), np.asarray(d["p_dis"]), float(d["rating_rate"]),
                        tuple(float(x) for x in d["cutpoints"]), float(d["tau"]))
    return zs.UpdateParams(signals=sm, eps=float(d["eps"]), forgetting=float(d["forgetting"]), n_quad=int(d["n_quad"]))


class ZotPosterior(OnlineModel):
    """Online posterior of each user's zone of tolerance, per application.

    update(batch): a `zs.Batch` (rows already resolved) or a sequence of
    `Feedback` events (resolved here; new (user, app) pairs start at the prior of
    their (segment, app, context) group, from `segments` / `contexts`, user id ->
    name, kept on the model). Returns the rejected rows with reasons (also kept
    as `last_rejects`); valid rows are applied, the state is never corrupted.

    predict(query): (users, apps) keys -> `zs.Estimates`; unseen users get the prior.
    """

    def __init__(
        self,
        apps: Sequence[zs.AppSpec],
        priors: Mapping[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
        params: zs.UpdateParams = zs.UpdateParams(),
        capacity: int = 1024,
    ) -> None:
        self.state = zs.new_state(apps, priors, capacity)
        self.params = params
        self.segments: dict[str, str] = {}
        self.contexts: dict[str, str] = {}
        self.last_rejects = zs.Rejects(np.zeros(0, dtype=np.int64), [])

    # -------------------------------------------------------------- learning

    def update(self, batch: zs.Batch | Sequence[Feedback]) -> zs.Rejects:
        if isinstance(batch, zs.Batch):
            self.state, rej = zs.update(self.state, batch, self.params, inplace=True)
        else:
            events = list(batch)
            b, pre = zs.batch_from_feedback(self.state, events, self.segments, self.contexts)
            # Rows of `b` are the accepted events in order; map their rejects back.
            keep = np.setdiff1d(np.arange(len(events)), pre.index)
            self.state, rej_b = zs.update(self.state, b, self.params, inplace=True)
            idx = np.concatenate([pre.index, keep[rej_b.index]]).astype(np.int64)
            reasons = list(pre.reason) + list(rej_b.reason)
            order = np.argsort(idx, kind="stable")
            rej = zs.Rejects(idx[order], [reasons[i] for i in order])
        self.last_rejects = rej
        return rej

    def set_context(self, user_id: str, segment: str | None = None, context: str | None = None) -> None:
        """Record a user's segment/context; its existing slots move to the matching
        prior group (forgetting then drifts them toward it)."""
        if segment is not None:
            self.segments[user_id] = segment
        if context is not None:
            self.contexts[user_id] = context
        st = self.state
        rows = [r for (u, _), r in st.keys.items() if u == user_id]
        if rows:
            groups = [zs.group_for(st, self.segments.get(user_id), st.apps[int(st.app[r])].name,
                                   self.contexts.get(user_id)) for r in rows]
            zs.set_groups(st, np.asarray(rows), np.asarray(groups))

    # -------------------------------------------------------------- queries

    def predict(self, query: tuple[Sequence[str], Sequence[str]]) -> zs.Estimates:
        users, apps = query
        return zs.estimates_for_keys(
            self.state, users, apps, [self.segments.get(u) for u in users], [self.contexts.get(u) for u in users]
        )

    def p_dissatisfied(self, users: Sequence[str], apps: Sequence[str], q_rate: np.ndarray) -> np.ndarray:
        """Predicted P(dissatisfied) of each (user, app) at rate q (Mbps)."""
        mu, cov, _, _ = zs.lookup(self.state, users, apps, [self.segments.get(u) for u in users],
                                  [self.contexts.get(u) for u in users])
        return zs.p_dissatisfied_from_moments(mu, cov, np.broadcast_to(q_rate, (len(users),)), self.params)

    def profile(self, user_id: str) -> list[ZotEstimate]:
        """The user's ZoT estimates in each app's metric, for ProfileUpdate.zot."""
        st = self.state
        items = sorted((a, r) for (u, a), r in st.keys.items() if u == user_id)
        if not items:
            return []
        e = zs.estimates(st, np.array([r for _, r in items]))
        return [
            ZotEstimate(app=a, adequate=float(e.a_metric[i]), adequate_sd=float(e.a_metric_sd[i]),
                        desired=float(e.d_metric[i]), desired_sd=float(e.d_metric_sd[i]),
                        n_signals=int(e.n_signals[i]))
            for i, (a, _) in enumerate(items)
        ]

    # -------------------------------------------------------------- persistence

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": zs.snapshot(self.state),
            "params": _params_to_plain(self.params),
            "segments": dict(self.segments),
            "contexts": dict(self.contexts),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.state = zs.restore(state["state"])
        self.params = _params_from_plain(state["params"])
        self.segments = dict(state["segments"])
        self.contexts = dict(state["contexts"])
        self.last_rejects = zs.Rejects(np.zeros(0, dtype=np.int64), [])

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "ZotPosterior":
        obj = cls.__new__(cls)
        obj.restore(snap)
        return obj
