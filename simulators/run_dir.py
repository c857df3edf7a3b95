"""A run folder: what `zot simulate` writes, so results can be read, scored and plotted.

- `summary.json`: scenario, seed, sizes, and per policy the outcomes (keys in
  `simulators.outcomes`), plus `comparison` of zot against universal fit.
- `truth.csv`: the hidden truth, one row per (user, app) (`population.truth_table`).
- `items.csv`, `tastes.csv`: the catalog (app, item, topic, popularity, rate) and each
  user's hidden topic tastes at the end (runs of the NumPy loop, i.e. with zot).
- `zot_estimates.csv`: the engine's final estimate per (user, app) slot beside the truth.
- `decisions.jsonl`: zot's allocation decisions as published on the bus.
- `metrics.lp`: the metrics as InfluxDB line protocol (`engine.metrics`).
- `users.csv`: each user's segment, mean satisfaction under each policy and active epochs.
- `layout.json`: cell and final user positions (for the map).
- `pareto.json`: the satisfaction-vs-PRBs Pareto front of the first epoch's busiest cell.
- `config.yaml`: the config the run used.
- `timing.json`: wall-clock time of the run and of the optimizer (the only files
  that differ between two runs of the same seed).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import yaml

from engine import metrics
from engine.bus import InProcessBus
from operators import satisfaction as zot
from simulators.loop import RunResult
from simulators.world import zones_in_rate
from simulators.population import truth_table

SUMMARY_VERSION = 1


def _clean(x):
    """JSON-safe: numpy scalars to Python, NaN to null."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def summarize(res: RunResult) -> dict:
    cfg = res.cfg
    policies = {}
    for name, out in res.outcomes.items():
        policies[name] = out.summary(res.population.segment_names, res.cell_ids)
    summary = {
        "version": SUMMARY_VERSION,
        "scenario": cfg.name,
        "seed": cfg.simulation.seed,
        "epochs": cfg.simulation.epochs,
        "epoch_s": cfg.simulation.epoch_s,
        "users": res.population.n,
        "cells": len(res.cell_ids),
        "prb_per_cell": cfg.radio.prb_per_cell,
        "policies": policies,
    }
    for name, block in (res.extra.get("session_start") or {}).items():
        policies[name]["session_start"] = block
    if "zot" in policies and "universal_fit" in policies:
        z, u = policies["zot"]["overall"], policies["universal_fit"]["overall"]
        summary["comparison"] = {
            "bandwidth_saving_vs_universal_fit": (1.0 - z["prb_used"] / u["prb_used"]) if u["prb_used"] else None,
            "frac_adequate_zot": z["frac_adequate"],
            "frac_adequate_universal_fit": u["frac_adequate"],
        }
    if res.engine is not None:
        summary["engine"] = {
            "accepted_events": res.engine.core.counters.accepted,
            "dead_letters": res.engine.core.counters.dead_letters,
            "feedback_events": res.engine.core.counters.feedback,
            "decisions": res.engine.core.counters.decisions,
            "predicted_apps": res.engine.core.counters.predicted_apps,
        }
        summary["estimation"] = estimation_quality(res)
    return _clean(summary)


def estimation_quality(res: RunResult) -> dict:
    """How close the engine's ZoT estimates are to the hidden truth, by signals received."""
    state = res.engine.core.state
    if state.n_rows == 0:
        return {"slots": 0}
    index = {uid: i for i, uid in enumerate(res.population.user_ids)}
    app_index = {a: i for i, a in enumerate(res.population.apps)}
    a_true, d_true = zones_in_rate(res.cfg, res.population)
    rows = np.arange(state.n_rows)
    keys = sorted(state.keys.items(), key=lambda kv: kv[1])
    u = np.array([index[k[0]] for k, _ in keys])
    a = np.array([app_index[k[1]] for k, _ in keys])
    est = zot.estimates(state, rows)
    width = d_true[u, a] - a_true[u, a]
    err_a = np.abs(est.a_mean - a_true[u, a]) / width
    err_d = np.abs(est.d_mean - d_true[u, a]) / width
    cover = (est.a_lo <= a_true[u, a]) & (a_true[u, a] <= est.a_hi)
    n = est.n_signals
    out = {"slots": int(state.n_rows), "by_signals": []}
    for lo, hi in ((0, 0), (1, 4), (5, 19), (20, 10**9)):
        m = (n >= lo) & (n <= hi)
        if m.any():
            out["by_signals"].append({
                "signals_min": lo, "signals_max": hi if hi < 10**9 else None, "slots": int(m.sum()),
                "median_err_adequate_rel": float(np.median(err_a[m])),
                "median_err_desired_rel": float(np.median(err_d[m])),
                "coverage90_adequate": float(cover[m].mean()),
            })
    return out


def write_run(res: RunResult, out_dir: Path) -> dict:
    """Write every file of the run folder; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(res)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    # Wall-clock numbers vary run to run: kept apart so summary.json is a pure function of the seed.
    timing = {"wall_s": res.seconds}
    if res.engine is not None:
        timing["optimizer_ms_total"] = res.engine.core.counters.solve_ms
    (out_dir / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    (out_dir / "config.yaml").write_text(yaml.safe_dump(res.cfg.model_dump(mode="json"), sort_keys=False))
    rows = truth_table(res.population)
    with (out_dir / "truth.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["user_id"])
        w.writeheader()
        w.writerows(rows)
    with (out_dir / "users.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        names = list(res.outcomes)
        # Sessions do not depend on the policy, so active epochs are the same for all.
        w.writerow(["user_id", "segment", *[f"mean_satisfaction_{p}" for p in names], "active_epochs"])
        means = [res.outcomes[p].user_mean_satisfaction() for p in names]
        counts = res.outcomes[names[0]].user_count if names else np.zeros(res.population.n)
        for i, uid in enumerate(res.population.user_ids):
            w.writerow([uid, res.population.segment_names[res.population.segment[i]],
                        *["" if np.isnan(m[i]) else f"{m[i]:.6f}" for m in means], int(counts[i])])
    (out_dir / "layout.json").write_text(json.dumps({
        "cells": [{"id": c, "x_m": float(x), "y_m": float(y)} for c, (x, y) in zip(res.cell_ids, res.cell_xy)],
        "users": [{"id": u, "x_m": float(x), "y_m": float(y)} for u, (x, y) in zip(res.population.user_ids, res.user_xy)],
    }) + "\n")
    if res.catalog is not None:
        _write_catalog(res, out_dir)
    if res.engine is not None:
        _write_estimates(res, out_dir / "zot_estimates.csv")
        bus = res.engine.bus
        if isinstance(bus, InProcessBus):
            with (out_dir / "decisions.jsonl").open("w") as fh:
                for d in res.engine.decisions:
                    fh.write(d.model_dump_json() + "\n")
    _write_metrics(res, summary, out_dir / "metrics.lp")
    (out_dir / "pareto.json").write_text(json.dumps(_clean(pareto_of_busiest_cell(res.cfg)), indent=2) + "\n")
    return summary


def _write_catalog(res: RunResult, out_dir: Path) -> None:
    """The hidden item side: every catalog item, and every user's topic tastes at the end."""
    cat = res.catalog
    with (out_dir / "items.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["app", "item_id", "topic", "popularity", "rate_mbps"])
        for app, c in zip(res.population.apps, cat.apps):
            for i, item in enumerate(c.item_ids):
                rate = "" if np.isnan(c.rate_mbps[i]) else f"{c.rate_mbps[i]:g}"
                w.writerow([app, item, int(c.topic[i]), f"{c.popularity[i]:.6g}", rate])
    with (out_dir / "tastes.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", *[f"topic_{t}" for t in range(cat.taste.shape[1])]])
        for uid, row in zip(res.population.user_ids, cat.taste):
            w.writerow([uid, *[f"{x:.6f}" for x in row]])


def pareto_of_busiest_cell(cfg) -> dict:
    """The satisfaction-vs-PRBs front of the first epoch's busiest cell (zones from the prior)."""
    from optimizer.pareto import pareto_front
    from simulators.snapshot import first_epoch

    snap = first_epoch(cfg)
    sizes = np.diff(snap.problem.offsets)
    i = int(np.argmax(sizes))
    target = cfg.objective.satisfaction_target if cfg.objective.target_level == "satisfaction" else None
    front = pareto_front(snap.problem.cell(i), n_points=cfg.objective.pareto_points, target=target,
                         overload=cfg.overload.policy)
    return {"cell": snap.cell_ids[i], "users": int(sizes[i]), **front.as_dict()}


def _write_estimates(res: RunResult, path: Path) -> None:
    state = res.engine.core.state
    keys = sorted(state.keys.items(), key=lambda kv: kv[1])
    est = zot.estimates(state, np.arange(state.n_rows)) if state.n_rows else None
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "app", "n_signals", "adequate_rate", "adequate_rate_sd", "desired_rate",
                    "desired_rate_sd", "adequate", "desired"])
        for i, ((user, app), _) in enumerate(keys):
            w.writerow([user, app, int(est.n_signals[i]), est.a_mean[i], est.a_sd[i], est.d_mean[i], est.d_sd[i],
                        est.a_metric[i], est.d_metric[i]])


def _write_metrics(res: RunResult, summary: dict, path: Path) -> None:
    """Every series of the metrics catalogue (`engine.metrics.CATALOGUE`) the run can give, as line protocol.

    Per epoch: each policy's cells (`zot_cell`) and totals (`zot_policy`); zot's
    ZoT learning per app (`zot_zot`) and engine worker (`zot_engine`) from what
    the engine published on the bus; a fixed sample of users (`zot_user`,
    `zot_user_zot`). Whole run: per segment (`zot_segment`), Jain's index and
    the engine's final lag. Simulation time 0 is a fixed instant, so two runs of
    one seed write the same points (only the optimizer timings `solve_ms` and
    `batch_ms` differ); `metrics.replay` shifts them to now.
    If the config asks for a time-series server, the same points are loaded into it.
    """
    import json as _json

    from optimizer.curves import satisfaction as sat_curve

    scen = res.cfg.name
    t0 = 1_700_000_000_000  # simulation time 0, in ms since the epoch (a fixed origin keeps runs comparable)
    epoch_s = res.cfg.simulation.epoch_s
    step = int(epoch_s * 1000)
    n_epochs = max((o.epochs for o in res.outcomes.values()), default=0)
    t_end = t0 + max(n_epochs - 1, 0) * step
    price_per_prb_epoch = res.cfg.pricing.prb_hour * epoch_s / 3600.0
    cap = res.cfg.radio.prb_per_cell
    n_cells = len(res.cell_ids)
    pop = res.population
    pts = []

    def ep_of(ts: float) -> int:
        return int(round(ts / epoch_s))

    # zot's decisions and what the engine published (embedded bus only; a Kafka run has them on the broker).
    decisions = {}
    if res.engine is not None:
        for d in res.engine.decisions:
            decisions[(d.cell_id, d.epoch)] = d
    bus = res.engine.bus if res.engine is not None else None
    published = getattr(bus, "messages", None)

    def topic_json(topic):
        if published is None:
            return []
        return [_json.loads(m.value) for m in published(res.engine.t(topic))]

    # ---- per policy: cells and totals, per epoch
    for name, out in res.outcomes.items():
        ce = getattr(out, "cell_epoch", None)
        revenue_cells = np.zeros(n_cells)
        for e in range(out.epochs):
            ts = t0 + e * step
            tags = {"scenario": scen, "policy": name}
            pol = {"prb_used": out.prb_series[e], "prb_saved_frac": 1.0 - out.prb_series[e] / (cap * n_cells)}
            if ce is not None:
                users, used = ce["users"][e], ce["prb_used"][e]
                sat_sum, adequate, desired = ce["sat_sum"][e], ce["adequate"][e], ce["desired"][e]
                revenue_cells += (cap - used) * price_per_prb_epoch
                for c, cid in enumerate(res.cell_ids):
                    f = {"users": users[c], "prb_used": used[c], "prb_total": cap, "prb_saved": cap - used[c],
                         "revenue": revenue_cells[c]}
                    if users[c]:
                        f.update(frac_adequate=adequate[c] / users[c], frac_desired=desired[c] / users[c],
                                 mean_satisfaction=sat_sum[c] / users[c])
                    dec = decisions.get((cid, e)) if name == "zot" else None
                    if dec is not None:
                        f.update(solve_ms=dec.solve_ms, overload=float(dec.overload))
                    pts.append(metrics.point("zot_cell", {**tags, "cell": cid}, f, ts))
                n = users.sum()
                pol["users"] = n
                pol["revenue"] = revenue_cells.sum()
                if n:
                    pol.update(frac_adequate=adequate.sum() / n, frac_desired=desired.sum() / n)
            if math.isfinite(out.sat_series[e]):
                pol["mean_satisfaction"] = out.sat_series[e]
            if e == out.epochs - 1 and summary["policies"][name]["overall"].get("jain") is not None:
                pol["jain"] = summary["policies"][name]["overall"]["jain"]
            pts.append(metrics.point("zot_policy", tags, pol, ts))
        if ce is None:  # an Outcomes without per-epoch cells: the run's per-cell totals, once
            for cell, block in summary["policies"][name]["per_cell"].items():
                f = {k: block[k] for k in ("prb_used", "frac_adequate", "mean_satisfaction", "revenue")
                     if block.get(k) is not None}
                pts.append(metrics.point("zot_cell", {"scenario": scen, "policy": name, "cell": cell}, f, t_end))
        for seg, block in summary["policies"][name]["per_segment"].items():
            f = {k: block[k] for k in ("user_epochs", "frac_adequate", "frac_desired", "mean_satisfaction")
                 if block.get(k) is not None}
            pts.append(metrics.point("zot_segment", {"scenario": scen, "policy": name, "segment": seg}, f, t_end))

    # ---- sampled users: a fixed, evenly spread sample keeps the `user` tag's cardinality bounded
    k = min(metrics.USER_SAMPLE, pop.n)
    sample = {pop.user_ids[i]: i for i in np.linspace(0, pop.n - 1, k).round().astype(int)} if k else {}
    app_index = {a: i for i, a in enumerate(pop.apps)}
    if res.engine is not None and published is not None:
        from engine import topics as registry

        a_rate, d_rate = zones_in_rate(res.cfg, pop)
        app_at = {}  # (user, epoch) -> app, for sampled users, from the KPI reports
        events = np.zeros(n_epochs + 1)
        for topic in (registry.CONTEXT, registry.FEEDBACK, registry.KPI, registry.INTERACTIONS):
            for ev in topic_json(topic):
                events[min(ep_of(ev["ts"]), n_epochs)] += 1
                if topic is registry.KPI:
                    for uc in ev["users"]:
                        if uc["user_id"] in sample:
                            app_at[(uc["user_id"], ev["epoch"])] = uc.get("app")
        for (cid, e), dec in sorted(decisions.items(), key=lambda kv: kv[0][1]):
            for ua in dec.users:
                if ua.user_id not in sample or (ua.user_id, e) not in app_at:
                    continue
                u, ai = sample[ua.user_id], app_index[app_at[(ua.user_id, e)]]
                true_s = float(sat_curve(ua.rate_mbps, a_rate[u, ai], d_rate[u, ai], res.cfg.objective.eps))
                pts.append(metrics.point("zot_user", {"scenario": scen, "policy": "zot", "user": ua.user_id},
                                         {"prb": ua.prb, "rate_mbps": ua.rate_mbps, "satisfaction": true_s},
                                         t0 + e * step))
        # ZoT learning per app and epoch, from the profile updates as published (latest estimate per slot).
        latest = {}
        by_epoch = {}
        for ev in topic_json(registry.PROFILES):
            by_epoch.setdefault(ep_of(ev["ts"]), []).append(ev)
        slots_per_app = {a: int(np.sum(~np.isnan(pop.adequate[:, i]))) for a, i in app_index.items()}
        index = {uid: i for i, uid in enumerate(pop.user_ids)}
        for e in range(n_epochs):
            for ev in by_epoch.get(e, []):
                for z in ev.get("zot", []):
                    latest[(ev["user_id"], z["app"])] = z
                    if ev["user_id"] in sample:
                        u, ai = index[ev["user_id"]], app_index[z["app"]]
                        pts.append(metrics.point(
                            "zot_user_zot", {"scenario": scen, "user": ev["user_id"], "app": z["app"]},
                            {"adequate_est": z["adequate"], "adequate_sd": z["adequate_sd"],
                             "desired_est": z["desired"], "desired_sd": z["desired_sd"],
                             "n_signals": z["n_signals"], "adequate_true": pop.adequate[u, ai],
                             "desired_true": pop.desired[u, ai]}, t0 + e * step))
            per_app = {}
            for (uid, app), z in latest.items():
                if z["n_signals"] > 0:
                    per_app.setdefault(app, []).append((index[uid], app_index[app], z))
            for app, rows in sorted(per_app.items()):
                u = np.array([r[0] for r in rows])
                ai = np.array([r[1] for r in rows])
                a_est = np.array([r[2]["adequate"] for r in rows])
                d_est = np.array([r[2]["desired"] for r in rows])
                a_sd = np.array([r[2]["adequate_sd"] for r in rows])
                a_true, d_true = pop.adequate[u, ai], pop.desired[u, ai]
                width = np.abs(d_true - a_true)
                pts.append(metrics.point("zot_zot", {"scenario": scen, "app": app}, {
                    "slots": len(rows), "learned_frac": len(rows) / max(slots_per_app[app], 1),
                    "err_adequate_rel": float(np.median(np.abs(a_est - a_true) / width)),
                    "err_desired_rel": float(np.median(np.abs(d_est - d_true) / width)),
                    # in the app's metric units: a normal-approximation 90% interval
                    "coverage90": float(np.mean(np.abs(a_est - a_true) <= 1.645 * a_sd)),
                    "mean_signals": float(np.mean([r[2]["n_signals"] for r in rows])),
                }, t0 + e * step))
        # The embedded engine is one worker; rates are per second of simulated time.
        dead = np.zeros(n_epochs + 1)
        for ev in topic_json(registry.DEAD_LETTERS):
            dead[min(ep_of(ev["ts"]), n_epochs)] += 1
        per_epoch_dec = {}
        for (_cid, e), dec in decisions.items():
            n_dec, ms = per_epoch_dec.get(e, (0, 0.0))
            per_epoch_dec[e] = (n_dec + 1, max(ms, dec.solve_ms))
        positions = getattr(bus, "_positions", {}).get(res.engine.engine.GROUP)
        for e in range(n_epochs):
            n_dec, ms = per_epoch_dec.get(e, (0, 0.0))
            f = {"events_per_s": events[e] / epoch_s, "dead_letters_per_s": dead[e] / epoch_s, "batch_ms": ms,
                 "decisions": n_dec}
            if e == n_epochs - 1:
                f["dropped_points"] = 0.0  # the run folder's file sink drops nothing
                if positions is not None:
                    # Input messages the engine had not consumed when the run ended.
                    f["lag"] = sum(len(bus.messages(t)) for t in res.engine.engine._inputs) - sum(positions.values())
            pts.append(metrics.point("zot_engine", {"scenario": scen, "worker": "embedded"}, f, t0 + e * step))

    sink = metrics.FileSink(path)
    sink.write(pts)
    sink.close()
    if res.cfg.engine.metrics == "timeseries":
        from engine.config import secrets_from_env

        ts = res.cfg.timeseries
        metrics.replay(path.parent, ts.url, ts.org, ts.bucket, secrets_from_env(res.cfg).ts_token)
