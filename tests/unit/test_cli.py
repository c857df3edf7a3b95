"""The CLI as a user runs it: a real `zot` process, its output and exit status."""

from __future__ import annotations

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


def test_unfinished_commands_say_so_and_fail():
    res = run("report", "runs/none")
    assert res.returncode != 0 and "not implemented yet" in res.stderr


def test_unknown_bench_is_a_usage_error():
    res = run("bench", "warp-drive")
    assert res.returncode == 2 and "unknown benchmark" in res.stderr
