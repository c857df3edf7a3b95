"""The CLI as a user runs it: a real `zot` process, its output and exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ZOT = [sys.executable, "-m", "engine.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZOT, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_check_config_ok():
    res = run("check-config", "configs/example.yaml")
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout and "example" in res.stdout


def test_check_config_broken_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "configs" / "example.yaml").read_text()
    bad.write_text(text.replace("policy: max_served", "policy: serve_everyone"))
    line = next(i for i, l in enumerate(bad.read_text().splitlines(), 1) if "serve_everyone" in l)
    res = run("check-config", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr + res.stdout
    assert f"{bad}:{line}:" in res.stderr
    assert "overload.policy" in res.stderr and "'degrade_evenly'" in res.stderr


def test_unknown_bench_is_a_usage_error():
    res = run("bench", "warp-drive")
    assert res.returncode == 2 and "unknown benchmark" in res.stderr


def test_optimize_first_epoch_matches_cvxpy_and_prints_a_front(tmp_path):
    cfg = tmp_path / "one-site.yaml"
    text = (ROOT / "configs" / "example.yaml").read_text()
    cfg.write_text(text.replace("hex: {sites: 7, isd_m: 500, sectors: 3}", "hex: {sites: 1, isd_m: 500, sectors: 3}")
                   .replace("users: 300", "users: 40"))
    res = run("optimize", str(cfg), "--reference", "--pareto", "busiest", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert len(out["cells"]) == 3
    for c in out["cells"]:
        assert 0 <= c["prb_used"] <= c["prb_total"]
        if c["users"]:
            assert c["reference_status"].startswith("optimal")
            assert c["reference_gap_rel"] <= 1e-6
    front = out["pareto"]["front"]
    prbs = [p["prb_used"] for p in front]
    sats = [p["mean_satisfaction"] for p in front]
    assert prbs == sorted(prbs) and sats == sorted(sats)  # more PRBs buy more satisfaction, never less
    assert len(front) >= 3
