"""The worker's Faust app without a broker: which rebalances make a step re-read the
changelog.

In batch mode (the default) the input partitions belong to the batch loop's own
consumers (engine/faust_app.py's _Lane, with their own rebalance listener); Faust's
consumer reads none of them and its group rebalances on its own schedule (for
example when its leader topic appears, about five minutes after the start). Such a
rebalance must not make the next step re-read the changelog: for a worker that owns
every user partition that read covers everything it wrote since its start (a
13-second stall after 150 s of load, seen in the stream bench's latency phase).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.config import load_config, secrets_from_env
from engine.faust_app import build_app
from engine.kafka_client import client_options

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("consumer, tails", [("batch", False), ("faust", True)])
def test_only_a_rebalance_of_the_input_consumer_makes_a_step_read_the_changelog(consumer, tails, tmp_path):
    cfg = load_config(ROOT / "configs" / "example.yaml")
    app, engine = build_app(cfg, client_options(cfg.kafka, secrets_from_env(cfg)), "w",
                            data_dir=tmp_path, consumer=consumer)
    engine.must_tail = False  # as after the recovery at start
    asyncio.run(app.on_partitions_assigned.send(assigned=set()))
    assert engine.must_tail is tails
    engine.must_tail = False
    asyncio.run(app.on_partitions_revoked.send(revoked=set()))
    assert engine.must_tail is tails
