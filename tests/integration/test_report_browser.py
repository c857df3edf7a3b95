"""The run report renders in headless Chromium (Debian's `chromium`): no script errors, every image decodes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from engine.config import load_config
from engine.infra import ensure_debian_package
from engine.report import write_report
from simulators.loop import run
from simulators.run_dir import write_run

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--allow-file-access-from-files"]


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_debian_package("chromium", "chromium")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    base = load_config(ROOT / "configs" / "example.yaml")
    cfg = base.model_copy(update={
        "population": base.population.model_copy(update={"users": 60}),
        "cells": base.cells.model_copy(update={"hex": base.cells.hex.model_copy(update={"sites": 1})}),
        "simulation": base.simulation.model_copy(update={"epochs": 12, "policies": ["zot", "universal_fit"]}),
    })
    out = tmp_path_factory.mktemp("run")
    write_run(run(cfg, ["zot", "universal_fit"]), out)
    return write_report(out)


def _browse(chromium: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _check(dom: str) -> tuple[int, int, int]:
    m = re.search(r'<pre id="render-check">images=(\d+) loaded=(\d+) errors=(\d+)</pre>', dom)
    assert m, "the report's load script did not run"
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_report_renders_and_every_image_loads(chromium, report, tmp_path):
    html = report.read_text()
    n_img = html.count("<img ")
    assert n_img == len(list((report.parent / "report_files").glob("*.png"))) >= 5
    res = _browse(chromium, report, tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert _check(res.stdout) == (n_img, n_img, 0)
    console_errors = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or ":ERROR:" in ln)]
    assert not console_errors, console_errors
    # The numbers from summary.json are in the page.
    assert "zot vs universal fit" in res.stdout and "universal_fit" in res.stdout
    shot = tmp_path / "report.png"
    res = _browse(chromium, report, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1200,2400",
                  "--hide-scrollbars")
    assert res.returncode == 0 and shot.stat().st_size > 10_000


def test_a_missing_image_is_caught(chromium, report, tmp_path):
    """The check above would fail on a broken image: remove one and it reports one fewer loaded."""
    pngs = sorted((report.parent / "report_files").glob("*.png"))
    broken = tmp_path / "copy"
    broken.mkdir()
    (broken / "report_files").mkdir()
    for p in pngs[1:]:
        (broken / "report_files" / p.name).write_bytes(p.read_bytes())
    page = broken / "report.html"
    page.write_text(report.read_text())
    res = _browse(chromium, page, tmp_path / "profile", "--dump-dom")
    images, loaded, _ = _check(res.stdout)
    assert (images, loaded) == (len(pngs), len(pngs) - 1)
