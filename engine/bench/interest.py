"""`zot bench interest`: the interest models on MovieLens-100k, prequentially.

Protocol: all 100,000 interactions in timestamp order (ties by user, item). For
each interaction, every item the user has not interacted with yet is ranked, and
HR@10 and NDCG@10 of the held-out item are recorded; then the models learn it.
The test step is batched for speed: events are taken in chunks of `CHUNK`;
each event of a chunk is ranked by the model parameters as they were before the
chunk, with the user's own history (the items excluded from ranking, and the
recent sequence the item-to-item and neural models read) exact up to that
event; then the models learn the chunk in order. Ties in score are broken at
random (seeded), so a model cannot gain from an arbitrary item order; items a
model has never seen rank below those it has.

Models side by side, all learning from the same stream in the same run:
- popularity: global counts (the reference baseline of the targets);
- popularity_7d: counts decayed with a 7-day half-life;
- river_biasedmf_ratings: River's BiasedMF trained on the ratings, ranking by predicted rating;
- river_biasedmf_negatives: the same trained on implicit feedback, each event a
  positive (1) and `RIVER_NEGATIVES` sampled unseen items as negatives (0);
- cooccurrence: zot's item-to-item model over the user's recent sequence;
- interest_net: zot's PyTorch multi-interest model (mini-batch learning).

River models are scored with their learned weights read into numpy at the start
of each chunk (the same formula as its predict_one, vectorized over items).

Targets, for PRIMARY (the engine's default recommender) and for the PyTorch
net: HR@10 >= 0.11; NDCG@10 >= 1.4x popularity's NDCG@10 in this run (the value
is the ratio); learning throughput >= 20,000 events/s,
timing `update` alone in CPU time of the one thread that runs it (torch and
Numba single-threaded), so other tenants of a shared machine do not count; the
wall-clock rate is reported beside it. Hyperparameters were chosen on the
first 20,000 interactions (a handful of settings, see docs/interests.md) and are
fixed here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.datasets import movielens
from engine.models.cooccurrence import ItemCooccurrence, SequenceQuery
from engine.models.interest_net import InterestNet
from engine.models.popularity import DecayedPopularity, PopularityQuery
from engine.models.recent_items import RecentItems

NAME = "interest"
_EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "example.yaml"
SEED = 7
CHUNK = 256
K = 10
QUICK_LIMIT = 5000
RIVER_NEGATIVES = 4
PRIMARY = "cooccurrence"
COOCCURRENCE = dict(window=20, decay=0.9, recency=0.9, query_len=20)
NET = dict(dim=32, n_short=1, n_long=1, short_len=10, long_len=30, n_negatives=768, batch_size=256,
           replay_ratio=0.0, lr=0.03)


class _Batch:
    """The record the zot models learn from (dense ids, implicit weight 1)."""

    def __init__(self, user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> None:
        self.user, self.item, self.ts = user, item, ts.astype(np.float64)
        self.weight = np.ones(len(user))
        self.segment = None


class _Ranker:
    def __init__(self, name: str, score: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 update: Callable[[_Batch, np.ndarray], None], about: str) -> None:
        self.name, self.score, self.update, self.about = name, score, update, about
        self.hits = 0.0
        self.ndcg = 0.0
        self.learn_s = 0.0  # wall clock
        self.learn_cpu_s = 0.0  # this thread's CPU time: what the code costs, whatever else runs
        self.rank_s = 0.0


def _river_rankers(n_items: int, seen: np.ndarray, rng: np.random.Generator) -> list[_Ranker]:
    from river import optim, reco

    def make() -> Any:
        return reco.BiasedMF(
            n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=SEED), l2_bias=0.0, l2_latent=0.0,
            seed=SEED,
        )

    def scorer(m: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def score(users: np.ndarray, seqs: np.ndarray) -> np.ndarray:
            # Read dicts without touching River's defaultdicts (a lookup would insert).
            known = np.array([i in m.i_latents for i in range(n_items)])
            q = np.zeros((n_items, 10))
            bi = np.zeros(n_items)
            for i in np.flatnonzero(known):
                q[i] = m.i_latents[i]
                bi[i] = m.i_biases.get(i, 0.0)
            p = np.array([m.u_latents[u] if u in m.u_latents else np.zeros(10) for u in users.tolist()])
            bu = np.array([m.u_biases.get(u, 0.0) for u in users.tolist()])
            s = m.global_mean.get() + bu[:, None] + bi[None] + p @ q.T
            return np.where(known[None], s, np.nan)  # nan: never seen, ranked last
        return score

    ratings_model, neg_model = make(), make()

    def learn_ratings(b: _Batch, rating: np.ndarray) -> None:
        for u, i, r in zip(b.user.tolist(), b.item.tolist(), rating.tolist()):
            ratings_model.learn_one(u, i, r)

    seen_items: list[int] = []  # items seen so far: where negatives are drawn from
    seen_set: set[int] = set()

    def learn_negatives(b: _Batch, rating: np.ndarray) -> None:
        for u, i in zip(b.user.tolist(), b.item.tolist()):
            if i not in seen_set:
                seen_set.add(i)
                seen_items.append(i)
            neg_model.learn_one(u, i, 1.0)
            for _ in range(RIVER_NEGATIVES):
                j = seen_items[int(rng.integers(len(seen_items)))]
                if j != i and not seen[u, j]:
                    neg_model.learn_one(u, j, 0.0)

    return [
        _Ranker("river_biasedmf_ratings", scorer(ratings_model), learn_ratings,
                "river.reco.BiasedMF(n_factors=10, SGD 0.025/0.05) on the 1-5 ratings"),
        _Ranker("river_biasedmf_negatives", scorer(neg_model), learn_negatives,
                f"river.reco.BiasedMF, same settings, y=1 per event + {RIVER_NEGATIVES} sampled unseen items y=0"),
    ]


def _zot_rankers() -> list[_Ranker]:
    pop = DecayedPopularity(None)
    pop7 = DecayedPopularity(7 * 86400.0)
    co = ItemCooccurrence(**COOCCURRENCE)
    net = InterestNet(seed=SEED, **NET)

    def glob(m: DecayedPopularity) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        return lambda users, seqs: m.predict(PopularityQuery(np.full(len(users), -1)))

    return [
        _Ranker("popularity", glob(pop), lambda b, r: pop.update(b), "global interaction counts"),
        _Ranker("popularity_7d", glob(pop7), lambda b, r: pop7.update(b), "counts decayed with a 7-day half-life"),
        _Ranker("cooccurrence", lambda u, s: co.predict(SequenceQuery(u, s)), lambda b, r: co.update(b),
                f"ItemCooccurrence({COOCCURRENCE})"),
        _Ranker("interest_net", lambda u, s: net.predict(SequenceQuery(u, s)), lambda b, r: net.update(b),
                f"InterestNet({NET}) PyTorch, CPU, 1 thread"),
    ]


def _ranks(scores: np.ndarray, target: np.ndarray, exclude: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among the non-excluded items, ties at random."""
    B, n = exclude.shape
    s = np.full((B, n), -np.inf)
    s[:, : scores.shape[1]] = np.nan_to_num(scores, nan=-np.inf)
    fin = np.isfinite(s)
    # Items the model cannot score (never seen) tie below every scored item.
    lo = np.where(fin, s, np.inf).min(axis=1, keepdims=True)
    lo = np.where(np.isfinite(lo), lo, 0.0)
    s = np.where(fin, s, lo - 1.0)
    s[exclude] = -np.inf
    rows = np.arange(B)
    t = s[rows, target][:, None]
    greater = (s > t).sum(axis=1)
    ties = ((s == t) & (noise < noise[rows, target][:, None])).sum(axis=1)
    return greater + ties


def _warm_up(data: movielens.MovieLens) -> None:
    """Compile the Numba kernels and touch torch once, so no timing includes that."""
    b = _Batch(data.user[:CHUNK], data.item[:CHUNK], data.ts[:CHUNK])
    for r in _zot_rankers():
        r.update(b, data.rating[:CHUNK])
        r.score(b.user, RecentItems(50).sequences_before(b.user, b.item))


def _targets(row: dict[str, Any], pop: dict[str, Any]) -> list[dict[str, Any]]:
    m = row["model"]
    return [
        {"name": f"HR@10 ({m})", "value": row["hr@10"], "op": ">=", "goal": 0.11, "unit": ""},
        {"name": f"NDCG@10 ({m}) / NDCG@10 (popularity)", "value": row["ndcg@10"] / pop["ndcg@10"],
         "op": ">=", "goal": 1.4, "unit": "x"},
        {"name": f"learning throughput ({m})", "value": row["learn_events_per_s"], "op": ">=",
         "goal": 20000.0, "unit": "events/s"},
    ]


def run(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = movielens.load(QUICK_LIMIT if quick else None)
    _warm_up(data)
    n, n_items = len(data), data.n_items
    rng = np.random.default_rng(SEED)
    seen = np.zeros((data.n_users, n_items), dtype=bool)
    history = RecentItems(50)
    rankers = _zot_rankers() + _river_rankers(n_items, seen, np.random.default_rng(SEED + 1))

    t_all = time.perf_counter()
    for a in range(0, n, CHUNK):
        u, it = data.user[a:a + CHUNK], data.item[a:a + CHUNK]
        B = len(u)
        seqs = history.sequences_before(u, it)
        exclude = seen[u]
        # Items the same user had earlier in this chunk are seen too.
        for e in range(1, B):
            prev = np.flatnonzero(u[:e] == u[e])
            if len(prev):
                exclude[e, it[prev]] = True
        noise = rng.random((B, n_items))
        batch = _Batch(u, it, data.ts[a:a + CHUNK])
        for r in rankers:
            t0 = time.perf_counter()
            rk = _ranks(r.score(u, seqs), it, exclude, noise)
            t1, c1 = time.perf_counter(), time.thread_time()
            r.update(batch, data.rating[a:a + CHUNK])
            r.learn_s += time.perf_counter() - t1
            r.learn_cpu_s += time.thread_time() - c1
            r.rank_s += t1 - t0
            hit = rk < K
            r.hits += hit.sum()
            r.ndcg += np.where(hit, 1.0 / np.log2(rk + 2.0), 0.0).sum()
        seen[u, it] = True
        history.push(u, it)

    table = [{
        "model": r.name, "hr@10": r.hits / n, "ndcg@10": r.ndcg / n,
        "learn_events_per_s": n / r.learn_cpu_s if r.learn_cpu_s > 0 else float("inf"),
        "learn_events_per_s_wall": n / r.learn_s if r.learn_s > 0 else float("inf"),
        "rank_s": r.rank_s, "learn_s": r.learn_s, "learn_cpu_s": r.learn_cpu_s, "about": r.about,
    } for r in rankers]
    by = {row["model"]: row for row in table}
    prim, pop = by[PRIMARY], by["popularity"]
    return {
        "bench": NAME,
        "targets": [t for name in (PRIMARY, "interest_net") for t in _targets(by[name], pop)],
        "protocol": (f"prequential over {n} MovieLens-100k interactions in time order; rank all unseen items; "
                     f"test step batched in chunks of {CHUNK} (parameters as of the chunk start, each user's "
                     "history exact up to the event), then learn the chunk"),
        "interactions": n, "items": n_items, "users": data.n_users, "chunk": CHUNK, "seed": SEED,
        "models": table,
        "simulator_next_app": simulator_next_app(hours=6.0 if quick else 48.0,
                                                 checkpoints_h=(1.0, 6.0) if quick else (1.0, 6.0, 24.0, 48.0)),
        "simulator_in_the_loop": simulator_in_the_loop(quick),
        "wall_s": time.perf_counter() - t_all,
    }



def score_next_app(pred: np.ndarray, pred_apps: list[str], truth: np.ndarray, truth_apps: list[str]) -> dict[str, float]:
    """How well next-app probabilities match a simulator's hidden interests.

    pred (n_users, len(pred_apps)): the engine's P(next app) per user (columns in its
    catalog's order); truth (n_users, len(truth_apps)): `Population.interest`, the
    hidden distribution the simulator draws each user's apps from (same user rows).
    Returns means over users of: `expected_hit` (probability the predicted app is the
    one the user opens next, if choices follow the truth) beside `oracle_hit` (that
    of the truth's own argmax) and `uniform_hit` (guessing among the apps the user
    uses); `top1_match` (same argmax); `total_variation` (0 = identical, 1 = disjoint);
    `cross_entropy` (nats) beside `truth_entropy`, its floor.
    """
    truth = np.asarray(truth, dtype=np.float64)
    aligned = np.zeros_like(truth)
    pos = {a: j for j, a in enumerate(pred_apps)}
    for j, a in enumerate(truth_apps):
        if a in pos:  # an app the engine never saw gets probability 0
            aligned[:, j] = np.asarray(pred)[:, pos[a]]
    s = aligned.sum(axis=1, keepdims=True)
    aligned = np.where(s > 0, aligned / np.where(s > 0, s, 1.0), 1.0 / truth.shape[1])
    rows = np.arange(len(truth))
    guess = aligned.argmax(axis=1)
    used = (truth > 0).sum(axis=1)
    with np.errstate(divide="ignore"):
        ce = -(truth * np.log(np.maximum(aligned, 1e-12))).sum(axis=1)
        ent = -(np.where(truth > 0, truth * np.log(np.where(truth > 0, truth, 1.0)), 0.0)).sum(axis=1)
    return {
        "users": float(len(truth)),
        "expected_hit": float(truth[rows, guess].mean()),
        "oracle_hit": float(truth.max(axis=1).mean()),
        "uniform_hit": float((1.0 / np.maximum(used, 1)).mean()),
        "top1_match": float((guess == truth.argmax(axis=1)).mean()),
        "total_variation": float(0.5 * np.abs(aligned - truth).sum(axis=1).mean()),
        "cross_entropy": float(ce.mean()),
        "truth_entropy": float(ent.mean()),
    }



def simulator_next_app(config_path: str | None = None, hours: float = 48.0, epoch_s: float = 60.0,
                       checkpoints_h: tuple[float, ...] = (1.0, 6.0, 24.0, 48.0), seed: int = SEED) -> list[dict[str, Any]]:
    """Next-app prediction against the simulator's hidden interests (part 4, accuracy half).

    Draws the config's population, runs its session process (simulators.traffic:
    apps drawn from each user's hidden interests weighted by the hour, activity by
    segment and hour)
    for `hours` in steps of `epoch_s`, and feeds each session start to
    `UserInterests` as an interaction (user, app, hour, segment). At each
    checkpoint, P(next app | user, hour) for every user is scored with
    `score_next_app` against the distribution sessions draw from at that hour
    (`Population.interest` x the apps' hour weights), beside the segment prior alone
    (the same model asked about the users as if unseen).
    """
    from types import SimpleNamespace

    from engine.config import load_config
    from engine.models.user_interests import InterestQuery, UserInterests
    from simulators.population import draw_population
    from simulators.traffic import Sessions, app_hour_weights, choice_interest, step_sessions

    cfg = load_config(config_path or _EXAMPLE_CONFIG)
    rng = np.random.default_rng(seed)
    pop = draw_population(cfg, rng)
    mean_epochs = np.array([cfg.applications[a].session_mean_s / epoch_s for a in pop.apps])
    activity = np.array([cfg.population.segments[s].activity for s in pop.segment])
    peaks = [cfg.applications[a].peak_hour for a in pop.apps]
    amps = [cfg.applications[a].hour_amplitude for a in pop.apps]
    model = UserInterests()
    model.set_segments(np.arange(pop.n), pop.segment)
    sessions = Sessions.steady(pop.interest, activity, mean_epochs, rng)
    users = np.arange(pop.n)
    n_events = 0
    out = []
    todo = sorted(checkpoints_h)
    for step in range(int(hours * 3600 / epoch_s) + 1):
        ts = step * epoch_s
        while todo and ts >= todo[0] * 3600:
            hour = np.full(pop.n, int(ts // 3600) % 24)
            # The model's key space grows as apps appear: give every app a column.
            keys = model.n_keys
            learned = model.next_key(InterestQuery(users, np.full(pop.n, ts)), hours=hour)
            prior = model.next_key(InterestQuery(np.full(pop.n, -1), np.full(pop.n, ts), pop.segment), hours=hour)
            names = list(pop.apps[:keys])
            # The truth now: hidden interests weighted by the hour (what sessions draw from).
            truth = choice_interest(pop.interest, app_hour_weights(peaks, amps, (ts / 3600.0) % 24.0))
            out.append({"hours": todo.pop(0), "sessions_per_user": n_events / pop.n,
                        "learned": score_next_app(learned, names, truth, list(pop.apps)),
                        "segment_prior": score_next_app(prior, names, truth, list(pop.apps))})
        hour_now = (ts / 3600.0) % 24.0
        choose = choice_interest(pop.interest, app_hour_weights(peaks, amps, hour_now))
        sessions = step_sessions(sessions, choose, activity, mean_epochs, hour_now, rng)
        start = np.flatnonzero(sessions.started)
        if len(start):
            app = sessions.app[start]
            model.update(SimpleNamespace(user=start, key=app, ts=np.full(len(start), ts), weight=np.ones(len(start)),
                                         hour=np.full(len(start), int(ts // 3600) % 24)))
            n_events += len(start)
    return out


def simulator_in_the_loop(quick: bool = False, config_path: str | None = None, detect_epochs: int = 2
                          ) -> dict[str, Any]:
    """The engine in the simulator's loop, interactions on the bus (part 4, both halves).

    The example scenario with apps classified `detect_epochs` epochs after a
    session starts, run once per `interests.unnamed_app` mode on the same seed:
    "predicted" (proactive: the interest model's next app), "last" (the user's last
    app) and "default" (the population's most common app), plus a run where the
    network names every app at once (the bound). Reported: the share of user-epochs
    at the adequate level in the sessions' first `detect_epochs` epochs; the
    engine's next-app accuracy at every session start beside the oracle (hidden
    top app), the last app and the segment's top app; and how far the engine's
    long-term interest estimates are from the hidden interests at the end (mean
    total variation) beside the segment prior's.
    """
    from engine.config import load_config
    from engine.models.user_interests import InterestQuery
    from simulators.loop import run as simulate

    base = load_config(config_path or _EXAMPLE_CONFIG)
    users, epochs = (60, 60) if quick else (150, 480)

    def cfg_for(mode: str, detect: int):
        return base.model_copy(update={
            "population": base.population.model_copy(update={"users": users}),
            "simulation": base.simulation.model_copy(update={"epochs": epochs, "policies": ["zot"],
                                                             "app_detection_epochs": detect}),
            "interests": base.interests.model_copy(update={"unnamed_app": mode}),
        })

    out: dict[str, Any] = {"users": users, "epochs": epochs, "epoch_s": base.simulation.epoch_s,
                           "detect_epochs": detect_epochs, "adequate_share_first_epochs": {}}
    for mode in ("predicted", "last", "default"):
        res = simulate(cfg_for(mode, detect_epochs), ["zot"], track_interests=mode == "predicted")
        out["adequate_share_first_epochs"][mode] = res.extra["session_start"]["zot"]["adequate_share"]
        if mode == "predicted":
            out["user_epochs_first_epochs"] = res.extra["session_start"]["zot"]["user_epochs"]
            out["next_app_at_session_start"] = res.extra["next_app"]
            it, pop = res.engine.core.interests, res.population
            idx = np.array([it.state.catalog.users.get(u) for u in pop.user_ids])
            seg = np.array([it.state.catalog.segments.get(pop.segment_names[s]) for s in pop.segment])
            it.install_tables()
            ts = np.full(pop.n, epochs * base.simulation.epoch_s)
            learned = it.state.apps.predict(InterestQuery(idx, ts, seg)).long
            prior = it.state.apps.predict(InterestQuery(np.full(pop.n, -1), ts, seg)).long
            names = list(it.state.catalog.apps.ids)
            out["interests_vs_hidden"] = {
                "learned": score_next_app(learned, names, pop.interest, list(pop.apps)),
                "segment_prior": score_next_app(prior, names, pop.interest, list(pop.apps)),
            }
    named = simulate(cfg_for("predicted", 0), ["zot"])
    out["adequate_share_first_epochs"]["named_at_once"] = named.extra["session_start"]["zot"]["adequate_share"]
    share = out["adequate_share_first_epochs"]
    out["proactive_gain_pp"] = {"vs_default": 100 * (share["predicted"] - share["default"]),
                                "vs_last": 100 * (share["predicted"] - share["last"])}
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
