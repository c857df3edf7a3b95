"""A run folder: what `zot simulate` writes, so results can be read, scored and plotted.

- `summary.json`: scenario, seed, sizes, and per policy the outcomes (keys in
  `simulators.outcomes`), plus `comparison` of zot against universal fit.
- `truth.csv`: the hidden truth, one row per (user, app) (`population.truth_table`).
- `zot_estimates.csv`: the engine's final estimate per (user, app) slot beside the truth.
- `decisions.jsonl`: zot's allocation decisions as published on the bus.
- `metrics.lp`: the metrics as InfluxDB line protocol (`engine.metrics`).
- `users.csv`: each user's segment, mean satisfaction under each policy and active epochs.
- `layout.json`: cell and final user positions (for the map).
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
from simulators.loop import RunResult, zones_in_rate
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
    if res.engine is not None:
        _write_estimates(res, out_dir / "zot_estimates.csv")
        bus = res.engine.bus
        if isinstance(bus, InProcessBus):
            with (out_dir / "decisions.jsonl").open("w") as fh:
                for d in res.engine.decisions:
                    fh.write(d.model_dump_json() + "\n")
    _write_metrics(res, summary, out_dir / "metrics.lp")
    return summary


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
    """Per-epoch policy series and final per-cell values as line protocol."""
    sink = metrics.FileSink(path)
    scen = res.cfg.name
    t0 = 1_700_000_000_000  # simulation time 0, in ms since the epoch (a fixed origin keeps runs comparable)
    step = int(res.cfg.simulation.epoch_s * 1000)
    pts = []
    for name, out in res.outcomes.items():
        for e, (prb, sat) in enumerate(zip(out.prb_series, out.sat_series)):
            fields = {"prb_used": prb}
            if math.isfinite(sat):
                fields["mean_satisfaction"] = sat
            pts.append(metrics.point("zot_policy", {"scenario": scen, "policy": name}, fields, t0 + e * step))
        for cell, block in summary["policies"][name]["per_cell"].items():
            fields = {k: block[k] for k in ("prb_used", "frac_adequate", "mean_satisfaction", "revenue")
                      if block.get(k) is not None}
            pts.append(metrics.point("zot_cell", {"scenario": scen, "policy": name, "cell": cell}, fields,
                                     t0 + len(out.prb_series) * step))
    sink.write(pts)
    sink.close()
