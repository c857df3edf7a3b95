"""The compiled loop gives what `simulators.loop.run` gives, on the same seed.

Equality is exact: `summarize` of both runs (every number of summary.json), the
per-epoch cell rows, the extra outcomes, the users' final positions and their
drifted interests. (The one place the two could part is a SINR within ~1e-15 dB
of a CQI threshold, see `simulators.compiled_run`: it does not happen here.)
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from engine.config import ExplicitCell, HexLayout, load_config
from simulators.compiled_run import run_compiled
from simulators.layout import hex_site_positions
from simulators.loop import run
from simulators.run_dir import summarize

ROOT = Path(__file__).resolve().parents[2]
BASE = load_config(ROOT / "configs" / "example.yaml")
BASELINES = ["universal_fit", "equal_share", "proportional_fair", "max_rate"]
# Once `loop.run` dispatches baseline-only runs to the compiled loop, its NumPy path
# is the one with compiled=False: compare against that, never the compiled loop itself.
_NUMPY = {"compiled": False} if "compiled" in inspect.signature(run).parameters else {}


def numpy_run(cfg, policies):
    return run(cfg, policies, **_NUMPY)


def _cfg(users, epochs, cells, seed=5, **pop):
    return BASE.model_copy(update={
        "cells": cells,
        "population": BASE.population.model_copy(update={"users": users, **pop}),
        "simulation": BASE.simulation.model_copy(update={"epochs": epochs, "epoch_s": 1.0, "seed": seed}),
    })


def _omni13():
    xy = hex_site_positions(2, 500.0)[:13]
    return BASE.cells.model_copy(update={
        "layout": "explicit",
        "explicit": [ExplicitCell(id=f"bs{i}", x_m=float(x), y_m=float(y)) for i, (x, y) in enumerate(xy)]})


def _assert_same(a, b):
    sa, sb = summarize(a), summarize(b)
    assert sa == sb
    assert a.extra == b.extra
    assert np.array_equal(a.user_xy, b.user_xy)
    assert np.array_equal(a.population.interest, b.population.interest)
    for name, oa in a.outcomes.items():
        ob = b.outcomes[name]
        assert np.array_equal(oa.user_sat, ob.user_sat) and np.array_equal(oa.user_count, ob.user_count)
        for k in oa.cell_epoch:
            assert np.array_equal(np.array(oa.cell_epoch[k]), np.array(ob.cell_epoch[k])), k
    return sa


def test_all_baselines_at_mobile_env_size_match_the_loop():
    cfg = _cfg(30, 300, _omni13())
    s = _assert_same(numpy_run(cfg, BASELINES), run_compiled(cfg, BASELINES))
    o = s["policies"]
    # Not a degenerate run: users were served, handed over, and the policies differ.
    assert o["equal_share"]["overall"]["user_epochs"] > 1000
    assert o["equal_share"]["overall"]["handovers"] > 0
    assert len({round(o[p]["overall"]["prb_used"], 6) for p in BASELINES}) == 4


def test_sectored_wraparound_layout_fixed_interests_and_detection_window_match_the_loop():
    cells = BASE.cells.model_copy(update={"hex": HexLayout(sites=7, isd_m=300.0, sectors=3, wrap_around=True)})
    cfg = _cfg(150, 80, cells, seed=9, interest_drift=0.0)
    cfg = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"app_detection_epochs": 3})})
    pols = ["max_rate", "proportional_fair"]
    s = _assert_same(numpy_run(cfg, pols), run_compiled(cfg, pols, chunk_epochs=7))
    assert s["policies"]["max_rate"]["overall"]["user_epochs"] > 0


def test_chunks_and_progress():
    cfg = _cfg(30, 50, _omni13())
    seen = []
    a = run_compiled(cfg, ["equal_share"], progress=seen.append, chunk_epochs=16)
    assert seen == [16, 32, 48, 50]
    assert summarize(a) == summarize(run_compiled(cfg, ["equal_share"]))


def test_zot_is_refused():
    with pytest.raises(ValueError, match="baseline"):
        run_compiled(_cfg(10, 2, _omni13()), ["zot", "equal_share"])
