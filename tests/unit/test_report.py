"""The run report: every plot from the run folder's own data, notes where data is missing, valid PNGs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from engine.config import load_config
from engine.report import ReportError, write_report
from optimizer.pareto import pareto_front
from optimizer.problem import CellProblem
from simulators.loop import run
from simulators.run_dir import write_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = load_config(ROOT / "configs" / "example.yaml")
    cfg = base.model_copy(update={
        "population": base.population.model_copy(update={"users": 40}),
        "cells": base.cells.model_copy(update={"hex": base.cells.hex.model_copy(update={"sites": 1})}),
        "simulation": base.simulation.model_copy(update={"epochs": 6, "policies": ["zot", "universal_fit"]}),
    })
    out = tmp_path_factory.mktemp("run")
    write_run(run(cfg, ["zot", "universal_fit"]), out)
    return out


def _imgs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_report_has_every_plot_and_the_summary_numbers(run_dir):
    html = write_report(run_dir).read_text()
    imgs = _imgs(html)
    expected = ["map.png", "prb_used.png", "satisfaction_cdf.png", "segments.png", "zot_error.png"]
    has_pareto = (run_dir / "pareto.json").exists()
    assert sorted(Path(i).name for i in imgs) == sorted(expected + (["pareto.png"] if has_pareto else []))
    for src in imgs:
        img = mpimg.imread(run_dir / src)
        assert img.shape[0] > 200 and img.shape[1] > 400
        assert np.std(img) > 0.05  # not a blank canvas
    summary = json.loads((run_dir / "summary.json").read_text())
    z = summary["policies"]["zot"]["overall"]
    assert f"{100 * z['frac_adequate']:.1f}%" in html
    assert f"{z['mean_satisfaction']:.3f}" in html
    assert ("No Pareto front" in html) != has_pareto
    assert "$" not in re.sub(r"<script>.*?</script>", "", html, flags=re.S)  # every template slot filled


def test_pareto_json_is_plotted_when_present(run_dir, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    (d / "pareto.json").unlink(missing_ok=True)
    html = write_report(d).read_text()
    assert "No Pareto front" in html and "pareto.json" in html
    assert not (d / "report_files" / "pareto.png").exists()
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 3, 12)
    fr = pareto_front(CellProblem(n_prb=40, prb_bw_hz=360e3, se=rng.uniform(0.3, 5, 12), adequate=a, desired=a * 3),
                      n_points=7)
    (d / "pareto.json").write_text(json.dumps({"s0-0": fr.as_dict()}))
    html = write_report(d).read_text()
    assert "report_files/pareto.png" in html and "No Pareto front" not in html and "s0-0" in html
    (d / "pareto.json").unlink()
    write_report(d)
    assert not (d / "report_files" / "pareto.png").exists()  # no stale plot from the earlier report


def test_cli_report_and_not_a_run_folder(run_dir, tmp_path):
    with pytest.raises(ReportError, match="no summary.json"):
        write_report(tmp_path)
    res = subprocess.run([sys.executable, "-m", "engine.cli", "report", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no summary.json" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "engine.cli", "report", str(run_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"report: {run_dir / 'report.html'}" in res.stdout
