"""zot in process on arrays takes exactly the decisions of the engine on the bus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import load_config
from simulators.loop import run

ROOT = Path(__file__).resolve().parents[2]


def cfg_small(**sim):
    cfg = load_config(ROOT / "configs" / "example.yaml")
    return cfg.model_copy(update={
        "population": cfg.population.model_copy(update={"users": 80}),
        "cells": cfg.cells.model_copy(update={"hex": cfg.cells.hex.model_copy(update={"sites": 1})}),
        "simulation": cfg.simulation.model_copy(update={"epochs": 25, **sim}),
    })


def outcome(res, name: str) -> str:
    return json.dumps(res.outcomes[name].summary(res.population.segment_names, res.cell_ids), sort_keys=True)


@pytest.mark.parametrize("scalarization", ["weighted_sum", "epsilon_constraint"])
def test_direct_zot_equals_the_engine_on_the_bus(scalarization):
    cfg = cfg_small(policies=["zot", "equal_share"])
    cfg = cfg.model_copy(update={"objective": cfg.objective.model_copy(update={"scalarization": scalarization})})
    on_bus = run(cfg, ["zot", "equal_share"])
    direct = run(cfg, ["zot", "equal_share"], direct=True)
    assert direct.engine is None and on_bus.engine is not None
    assert outcome(direct, "zot") == outcome(on_bus, "zot")
    assert outcome(direct, "equal_share") == outcome(on_bus, "equal_share")
    # The learner learned (feedback changed the zones): not the prior everywhere.
    assert on_bus.engine.core.counters.feedback > 0


def test_direct_refuses_a_bus():
    from engine.bus import InProcessBus

    with pytest.raises(ValueError, match="without a bus"):
        run(cfg_small(), ["zot"], bus=InProcessBus(), direct=True)
