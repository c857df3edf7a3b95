"""The HTML report of a run folder: `report.html` plus PNG plots in `report_files/`.

Everything comes from the files `zot simulate` writes (see docs/simulator.md):
summary.json (numbers, per-policy satisfaction histogram, PRB series, segments),
users.csv (per-user mean satisfaction), zot_estimates.csv + truth.csv (ZoT
estimation error vs feedback count), layout.json (map), pareto.json if present.
A plot whose input is missing is replaced by a note saying what is missing.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from string import Template

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engine import logs  # noqa: E402

log = logs.get("zot.report")
TEMPLATE = Path(__file__).resolve().parent / "templates" / "report.html"
FILES = "report_files"
DPI = 110


class ReportError(Exception):
    """The folder is not a run folder (no summary.json) or a file in it cannot be read."""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _figure(name: str, caption: str) -> str:
    return (f'<figure><img src="{FILES}/{name}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _save(fig, out: Path, name: str) -> None:
    fig.tight_layout()
    fig.savefig(out / FILES / name, dpi=DPI)
    plt.close(fig)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _f(x: str | None) -> float:
    try:
        return float(x) if x not in (None, "") else math.nan
    except ValueError:
        return math.nan


# ---------------------------------------------------------------- plots


def plot_satisfaction_cdf(summary: dict, users: list[dict[str, str]], out: Path) -> str:
    pols = summary["policies"]
    have_hist = all("satisfaction_hist" in p for p in pols.values())
    if not have_hist and not users:
        return _note("No satisfaction samples in this run folder (summary.json has no satisfaction_hist and "
                     "there is no users.csv).")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, p in pols.items():
        if have_hist:
            bins = np.asarray(p["satisfaction_hist"]["bins"])
            counts = np.asarray(p["satisfaction_hist"]["counts"], float)
            if counts.sum():
                axes[0].step(bins, np.concatenate([[0.0], np.cumsum(counts) / counts.sum()]), where="post",
                             label=name)
        col = f"mean_satisfaction_{name}"
        vals = np.sort([v for v in (_f(u.get(col)) for u in users) if math.isfinite(v)])
        if vals.size:
            axes[1].step(vals, np.arange(1, vals.size + 1) / vals.size, where="post", label=name)
    axes[0].set_title("Active user-epochs")
    axes[1].set_title("Users' mean satisfaction")
    for ax in axes:
        ax.set_xlabel("satisfaction S (hidden truth)")
        ax.set_ylabel("fraction at or below")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(loc="upper left")
    _save(fig, out, "satisfaction_cdf.png")
    return _figure("satisfaction_cdf.png", "CDF of satisfaction per policy: over every active user-epoch (left) "
                                           "and over users' run means (right). Further right is better.")


def plot_prb_series(summary: dict, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(10, 3.8))
    epoch_s = summary.get("epoch_s", 1.0)
    cap = summary.get("prb_per_cell", 0) * summary.get("cells", 0)
    for name, p in summary["policies"].items():
        s = p.get("series", {}).get("prb_used", [])
        ax.plot(np.arange(len(s)) * epoch_s, s, label=name, lw=1.5)
    if cap:
        ax.axhline(cap, color="k", ls="--", lw=1, label="capacity")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("PRBs in use, all cells")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", ncol=4)
    _save(fig, out, "prb_used.png")
    return _figure("prb_used.png", "PRBs in use per epoch (all cells together) per policy; dashed: all PRBs.")


def _fronts(data) -> list[tuple[str, dict]]:
    """pareto.json as (label, ParetoFront.as_dict()) pairs: one front, a list, or a mapping of them."""
    if isinstance(data, dict) and "front" in data:
        label = f"cell {data['cell']}" if "cell" in data else "front"
        return [(label + (f" ({data['users']} users)" if "users" in data else ""), data)]
    if isinstance(data, dict):
        return [(str(k), v) for k, v in data.items() if isinstance(v, dict) and "front" in v]
    if isinstance(data, list):
        return [(str(v.get("label", i)), v) for i, v in enumerate(data) if isinstance(v, dict) and "front" in v]
    return []


def plot_pareto(run_dir: Path, out: Path) -> str:
    path = run_dir / "pareto.json"
    if not path.exists():
        return _note("No Pareto front: this run folder has no pareto.json (the run did not sweep the "
                     "satisfaction/resources trade-off).")
    fronts = _fronts(json.loads(path.read_text()))
    if not fronts:
        return _note("pareto.json holds no front (expected ParetoFront.as_dict() data, or a list/mapping of them).")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    metric = fronts[0][1].get("metric", "mean_satisfaction")
    for label, fr in fronts[:12]:
        pts = fr.get("points", [])
        if pts:
            ax.scatter([p["prb_used"] for p in pts], [p[metric] for p in pts], s=10, color="0.7")
        front = fr["front"]
        ax.plot([p["prb_used"] for p in front], [p[metric] for p in front], marker="o", ms=4, label=label)
    ax.set_xlabel("PRBs used")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out, "pareto.png")
    shown = ", ".join(label for label, _ in fronts[:12])
    return _figure("pareto.png", f"Pareto front ({shown}): fewest PRBs for each level of {metric.replace('_', ' ')} "
                                 "(grey: every solve of the sweep; lines: the non-dominated points).")


def plot_zot_error(estimates: list[dict[str, str]], truth: list[dict[str, str]], out: Path) -> tuple[str, str]:
    """Relative error of the estimated adequate and desired levels against the number of feedback signals."""
    if not estimates or not truth:
        return "", _note("No ZoT estimates (zot_estimates.csv and truth.csv): the run did not include zot.")
    true = {(t["user_id"], t["app"]): (_f(t["adequate"]), _f(t["desired"])) for t in truth}
    n, ea, ed = [], [], []
    for e in estimates:
        key = (e["user_id"], e["app"])
        if key not in true:
            continue
        a, d = true[key]
        width = abs(d - a)
        if not width or not math.isfinite(width):
            continue
        n.append(int(e["n_signals"]))
        ea.append(abs(_f(e["adequate"]) - a) / width)
        ed.append(abs(_f(e["desired"]) - d) / width)
    if not n:
        return "", _note("zot_estimates.csv and truth.csv share no (user, app) slot.")
    n, ea, ed = np.array(n), np.array(ea), np.array(ed)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, n.size)  # fixed seed: the same run gives the same plot
    ax.scatter(n + jitter, ea, s=8, alpha=0.35, label="adequate (each slot)", color="tab:blue")
    ax.scatter(n + jitter, ed, s=8, alpha=0.35, label="desired (each slot)", color="tab:orange")
    rows = []
    for lo, hi in ((0, 0), (1, 2), (3, 5), (6, 10), (11, 20), (21, 10**9)):
        m = (n >= lo) & (n <= hi)
        if not m.any():
            continue
        mid = float(np.median(n[m]))
        ax.plot(mid, np.median(ea[m]), "s", color="navy", ms=8)
        ax.plot(mid, np.median(ed[m]), "D", color="darkred", ms=7)
        rows.append([f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"), str(int(m.sum())),
                     _pct(float(np.median(ea[m]))), _pct(float(np.median(ed[m])))])
    ax.plot([], [], "s", color="navy", label="median, adequate")
    ax.plot([], [], "D", color="darkred", label="median, desired")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel("feedback signals received for the (user, app) slot")
    ax.set_ylabel("|estimate - truth| / zone width")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    _save(fig, out, "zot_error.png")
    table = _table(["signals", "slots", "median error, adequate", "median error, desired"], rows)
    table = "<p>The same in each application's own metric (zot_estimates.csv against truth.csv):</p>" + table
    return table, _figure("zot_error.png", "ZoT estimation error against the number of feedback signals: each "
                                           "dot a (user, app) slot; squares/diamonds: medians per bucket.")


def plot_segments(summary: dict, out: Path) -> tuple[str, str]:
    pols = summary["policies"]
    segments = sorted({s for p in pols.values() for s in p.get("per_segment", {})})
    if not segments:
        return "", _note("summary.json has no per-segment outcomes.")
    keys = (("frac_adequate", "at adequate"), ("frac_desired", "at desired"), ("mean_satisfaction", "mean S"))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharey=True)
    width = 0.8 / max(len(pols), 1)
    x = np.arange(len(segments))
    rows = []
    for j, (name, p) in enumerate(pols.items()):
        for ax, (k, label) in zip(axes, keys):
            vals = [p["per_segment"].get(s, {}).get(k) for s in segments]
            ax.bar(x + (j - (len(pols) - 1) / 2) * width, [v if v is not None else 0 for v in vals], width,
                   label=name)
        for s in segments:
            b = p["per_segment"].get(s, {})
            rows.append([s, name, str(b.get("user_epochs", 0)), _pct(b.get("frac_adequate")),
                         _pct(b.get("frac_desired")), _num(b.get("mean_satisfaction"))])
    for ax, (_, label) in zip(axes, keys):
        ax.set_xticks(x, segments)
        ax.set_title(label)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, out, "segments.png")
    table = _table(["segment", "policy", "user-epochs", "at adequate", "at desired", "mean S"], rows)
    return table, _figure("segments.png", "Outcomes per user segment and policy (hidden truth).")


def plot_map(run_dir: Path, users: list[dict[str, str]], out: Path) -> str:
    path = run_dir / "layout.json"
    if not path.exists():
        return _note("No layout.json in this run folder.")
    layout = json.loads(path.read_text())
    seg = {u["user_id"]: u.get("segment", "") for u in users}
    fig, ax = plt.subplots(figsize=(7.5, 7))
    by_seg: dict[str, list[tuple[float, float]]] = {}
    for u in layout.get("users", []):
        by_seg.setdefault(seg.get(u["id"], "users") or "users", []).append((u["x_m"], u["y_m"]))
    for name, xy in sorted(by_seg.items()):
        a = np.array(xy)
        ax.scatter(a[:, 0], a[:, 1], s=9, alpha=0.7, label=f"{name} ({len(xy)})")
    cells = layout.get("cells", [])
    sites: dict[tuple[float, float], list[str]] = {}
    for c in cells:
        sites.setdefault((round(c["x_m"], 1), round(c["y_m"], 1)), []).append(c["id"])
    if sites:
        s = np.array(list(sites))
        ax.scatter(s[:, 0], s[:, 1], marker="^", s=90, color="k", label=f"sites ({len(sites)}), {len(cells)} cells")
        for (x, y), ids in sites.items():
            ax.annotate(ids[0].rsplit("-", 1)[0] if len(ids) > 1 else ids[0], (x, y), textcoords="offset points",
                        xytext=(5, 5), fontsize=7)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    _save(fig, out, "map.png")
    return _figure("map.png", "Cell sites and users' final positions, coloured by segment.")


# ---------------------------------------------------------------- tables


def _overall_table(summary: dict) -> str:
    rows = []
    for name, p in summary["policies"].items():
        o = p["overall"]
        rows.append([name, str(o.get("user_epochs", "-")), _pct(o.get("frac_adequate")), _pct(o.get("frac_desired")),
                     _num(o.get("mean_satisfaction")), _num(o.get("prb_used"), ".1f"),
                     _pct(o.get("bandwidth_saved_frac")), _num(o.get("revenue"), ".2f"), _num(o.get("jain")),
                     str(o.get("handovers", "-"))])
    return _table(["policy", "user-epochs", "at adequate", "at desired", "mean S", "PRBs/cell", "bandwidth saved",
                   "revenue", "Jain", "handovers"], rows)


def _comparison(summary: dict) -> str:
    c = summary.get("comparison")
    if not c:
        return _note("zot and universal fit did not both run: no comparison.")
    return _table(["zot vs universal fit", "value"], [
        ["bandwidth saving", _pct(c.get("bandwidth_saving_vs_universal_fit"))],
        ["users at adequate, zot", _pct(c.get("frac_adequate_zot"))],
        ["users at adequate, universal fit", _pct(c.get("frac_adequate_universal_fit"))],
    ])


def _estimation_table(summary: dict) -> str:
    est = summary.get("estimation", {})
    rows = [[(f"{b['signals_min']}+" if b.get("signals_max") is None else
              (str(b["signals_min"]) if b["signals_min"] == b["signals_max"] else
               f"{b['signals_min']}-{b['signals_max']}")),
             str(b["slots"]), _pct(b.get("median_err_adequate_rel")), _pct(b.get("median_err_desired_rel")),
             _pct(b.get("coverage90_adequate"))] for b in est.get("by_signals", [])]
    if not rows:
        return ""
    return ("<p>Engine's final estimates against the truth, zone in rate (summary.json <code>estimation</code>):</p>"
            + _table(["signals", "slots", "median error A", "median error D", "90% interval covers A"], rows))


def _engine_table(summary: dict, run_dir: Path) -> str:
    rows = [[k.replace("_", " "), str(v)] for k, v in summary.get("engine", {}).items()]
    timing = run_dir / "timing.json"
    if timing.exists():
        for k, v in json.loads(timing.read_text()).items():
            rows.append([k.replace("_", " "), _num(v, ".3f") if isinstance(v, (int, float)) else str(v)])
    return _table(["engine", "value"], rows) if rows else _note("No engine numbers (zot did not run).")


# ---------------------------------------------------------------- entry point


def write_report(run_dir: Path) -> Path:
    """Write `report.html` and its PNGs into the run folder; return the HTML path."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except FileNotFoundError:
        raise ReportError(f"{run_dir}: not a run folder (no summary.json)") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{run_dir / 'summary.json'}: not valid JSON: {exc}") from None
    out = run_dir
    (out / FILES).mkdir(parents=True, exist_ok=True)
    for old in (out / FILES).glob("*.png"):  # a plot this run cannot draw must not survive from an earlier one
        old.unlink()
    users = _read_csv(run_dir / "users.csv")
    if users and "segment" not in users[0]:
        users = []
    if not users:  # segments for the map from truth.csv
        seen: dict[str, dict[str, str]] = {}
        for t in _read_csv(run_dir / "truth.csv"):
            seen.setdefault(t["user_id"], {"user_id": t["user_id"], "segment": t.get("segment", "")})
        users = list(seen.values())
    est_table, fig_zot = plot_zot_error(_read_csv(run_dir / "zot_estimates.csv"), _read_csv(run_dir / "truth.csv"), out)
    seg_table, fig_seg = plot_segments(summary, out)
    parts = {
        "title": html.escape(str(summary.get("scenario", run_dir.name))),
        "subtitle": html.escape(
            f"{summary.get('users')} users, {summary.get('cells')} cells x {summary.get('prb_per_cell')} PRBs, "
            f"{summary.get('epochs')} epochs of {summary.get('epoch_s')} s, seed {summary.get('seed')}; "
            f"policies: {', '.join(summary['policies'])}"),
        "overall_table": _overall_table(summary),
        "comparison": _comparison(summary),
        "fig_cdf": plot_satisfaction_cdf(summary, users, out),
        "fig_prb": plot_prb_series(summary, out),
        "fig_pareto": plot_pareto(run_dir, out),
        "estimation_table": _estimation_table(summary) + est_table,
        "fig_zot": fig_zot,
        "segment_table": seg_table,
        "fig_segments": fig_seg,
        "fig_map": plot_map(run_dir, users, out),
        "engine_table": _engine_table(summary, run_dir),
    }
    path = out / "report.html"
    path.write_text(Template(TEMPLATE.read_text()).substitute(parts), encoding="utf-8")
    logs.event(log, "report_written", path=str(path), images=len(list((out / FILES).glob("*.png"))))
    return path
