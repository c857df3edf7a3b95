"""The main job end to end: simulator + engine in the loop on the embedded bus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import HexLayout, load_config
from simulators.loop import run
from simulators.run_dir import write_run

ROOT = Path(__file__).resolve().parents[2]
BASE = load_config(ROOT / "configs" / "example.yaml")


def small(policies=("zot",), seed=3):
    return BASE.model_copy(update={
        "population": BASE.population.model_copy(update={"users": 60}),
        "cells": BASE.cells.model_copy(update={"hex": HexLayout(sites=1, isd_m=400, sectors=3, wrap_around=False)}),
        "simulation": BASE.simulation.model_copy(update={"epochs": 12, "seed": seed, "policies": list(policies)}),
    })


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    cfg = small()
    out = tmp_path_factory.mktemp("a")
    return cfg, write_run(run(cfg, ["zot"]), out), out


def test_same_seed_same_summary(run_a, tmp_path):
    cfg, _, out = run_a
    write_run(run(cfg, ["zot"]), tmp_path)
    assert (tmp_path / "summary.json").read_bytes() == (out / "summary.json").read_bytes()
    other = small(seed=4)
    write_run(run(other, ["zot"]), tmp_path / "other")
    assert (tmp_path / "other" / "summary.json").read_bytes() != (out / "summary.json").read_bytes()


def test_summary_is_consistent_with_decisions(run_a):
    cfg, summary, out = run_a
    o = summary["policies"]["zot"]["overall"]
    assert o["user_epochs"] > 0
    for k in ("frac_adequate", "frac_desired", "mean_satisfaction", "bandwidth_used_frac"):
        assert 0.0 <= o[k] <= 1.0
    assert o["frac_desired"] <= o["frac_adequate"]
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert len(decisions) == cfg.simulation.epochs * summary["cells"]
    used = 0
    for d in decisions:
        assert sum(u["prb"] for u in d["users"]) == d["prb_used"] <= d["prb_total"] == cfg.radio.prb_per_cell
        used += d["prb_used"]
    # The outcome's mean PRBs per cell-epoch are exactly what the engine decided.
    assert abs(o["prb_used"] - used / len(decisions)) < 1e-9
    assert summary["engine"]["dead_letters"] == 0
    assert summary["engine"]["feedback_events"] > 0
    assert summary["estimation"]["slots"] > 0
    truth = (out / "truth.csv").read_text().splitlines()
    assert truth[0].startswith("user_id,segment,app")
    assert (out / "metrics.lp").read_text().count("zot_policy,") == cfg.simulation.epochs
    # The item side of the truth: every catalog item once, every user's tastes summing to 1.
    items = (out / "items.csv").read_text().splitlines()
    assert len(items) - 1 == sum(a.catalog_items or 20 for a in cfg.applications.values())
    tastes = [row.split(",") for row in (out / "tastes.csv").read_text().splitlines()[1:]]
    assert len(tastes) == cfg.population.users
    assert all(abs(sum(float(x) for x in row[1:]) - 1.0) < 1e-4 for row in tastes)


def test_cli_main_job_runs_without_servers(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    text = (ROOT / "configs" / "example.yaml").read_text()
    cfg.write_text(text.replace("users: 300", "users: 40").replace("epochs: 60", "epochs: 5")
                   .replace("hex: {sites: 7, isd_m: 500, sectors: 3}", "hex: {sites: 1, isd_m: 500, sectors: 3}"))
    res = subprocess.run([sys.executable, "-m", "engine.cli", "simulate", str(cfg), "--out", str(tmp_path / "run")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"results: {tmp_path / 'run'}" in res.stdout
    assert (tmp_path / "run" / "summary.json").exists()


def test_policies_share_random_numbers(run_a, tmp_path):
    """Adding baselines to a run changes nothing for zot: all policies see the same users and draws."""
    cfg, alone, _ = run_a
    both = write_run(run(cfg, ["zot", "universal_fit", "equal_share", "proportional_fair", "max_rate"]), tmp_path)
    assert both["policies"]["zot"] == alone["policies"]["zot"]
    eq = both["policies"]["equal_share"]["overall"]
    assert eq["user_epochs"] == alone["policies"]["zot"]["overall"]["user_epochs"]
    # Equal share hands out every PRB of a cell with users; universal fit only what its targets need.
    assert eq["prb_used"] >= both["policies"]["universal_fit"]["overall"]["prb_used"]
    assert both["comparison"]["frac_adequate_zot"] == alone["policies"]["zot"]["overall"]["frac_adequate"]


def test_cli_direct_runs_zot_without_events(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    text = (ROOT / "configs" / "example.yaml").read_text()
    cfg.write_text(text.replace("users: 300", "users: 40").replace("epochs: 60", "epochs: 5")
                   .replace("hex: {sites: 7, isd_m: 500, sectors: 3}", "hex: {sites: 1, isd_m: 500, sectors: 3}"))
    res = subprocess.run([sys.executable, "-m", "engine.cli", "simulate", str(cfg), "--direct", "--out",
                          str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "zot" in summary["policies"] and "engine" not in summary  # decided in process, no bus
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "simulate", str(cfg), "--direct", "--kafka"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--direct" in bad.stderr
