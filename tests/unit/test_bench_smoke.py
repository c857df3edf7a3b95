"""Each benchmark's smoke run prints one JSON object with measured targets (the CI's short version)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_SERVER_BENCHES = ["satisfaction", "optimizer", "interest", "simulator"]


@pytest.mark.parametrize("name", NO_SERVER_BENCHES)
def test_quick_bench_prints_targets(name):
    res = subprocess.run([sys.executable, "-m", "engine.cli", "bench", name, "--quick", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, "exactly one JSON object on stdout"
    out = json.loads(lines[0])
    assert out["bench"] == name and out["quick"] is True
    assert out["targets"], "a bench names its targets"
    for t in out["targets"]:
        assert set(t) >= {"name", "value", "op", "goal", "unit", "met"}
        assert t["op"] in (">=", "<=")
        assert isinstance(t["value"], (int, float)) and math.isfinite(t["value"])
        assert t["met"] == (t["value"] >= t["goal"] if t["op"] == ">=" else t["value"] <= t["goal"])
    names = [t["name"] for t in out["targets"]]
    assert len(names) == len(set(names)), "target names are unique"
