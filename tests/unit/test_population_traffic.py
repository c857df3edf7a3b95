"""Simulated users and their sessions follow the config's distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.config import load_config
from simulators.population import draw_population, truth_table
from simulators.traffic import IDLE, Sessions, diurnal, step_sessions

CFG = load_config(Path(__file__).resolve().parents[2] / "configs" / "example.yaml")


def test_population_matches_segments_and_keeps_zones_ordered():
    cfg = CFG.model_copy(update={"population": CFG.population.model_copy(update={"users": 4000})})
    pop = draw_population(cfg, np.random.default_rng(0))
    shares = np.bincount(pop.segment, minlength=2) / pop.n
    assert abs(shares[0] - 0.7) < 0.03 and abs(shares[1] - 0.3) < 0.03
    video = pop.apps.index("video")
    casual = pop.segment == 0
    # Medians of the hidden levels follow the config (log-normal around the median).
    assert abs(np.median(pop.adequate[casual, video]) / 1.5 - 1) < 0.05
    assert abs(np.median(pop.desired[casual, video]) / 5.0 - 1) < 0.05
    # Throughput: D above A; latency (lower is better): D below A.
    assert np.all(pop.desired[:, video] > pop.adequate[:, video])
    gaming = pop.apps.index("gaming")
    g = ~np.isnan(pop.adequate[:, gaming])
    assert g.sum() == (pop.segment == 1).sum()
    assert np.all(pop.desired[g, gaming] < pop.adequate[g, gaming])
    assert np.all(pop.desired[g, gaming] > 20.0)  # never below the base latency
    # Interests only on apps of the segment's mix, rows sum to 1.
    np.testing.assert_allclose(pop.interest.sum(axis=1), 1.0)
    assert np.all(pop.interest[pop.segment == 1, pop.apps.index("web")] == 0)
    rows = truth_table(pop)
    assert len(rows) == int((~np.isnan(pop.adequate)).sum())


def test_same_seed_same_population():
    a = draw_population(CFG, np.random.default_rng(5))
    b = draw_population(CFG, np.random.default_rng(5))
    np.testing.assert_array_equal(a.adequate, b.adequate)
    np.testing.assert_array_equal(a.interest, b.interest)


def test_sessions_duty_cycle_and_app_choice_follow_interests():
    rng = np.random.default_rng(1)
    n = 3000
    interest = np.tile([0.7, 0.3, 0.0], (n, 1))
    activity = np.full(n, 0.4)
    mean_epochs = np.array([10.0, 30.0, 5.0])
    s = Sessions.steady(interest, activity, mean_epochs, rng)
    busy, apps = [], []
    for _ in range(300):
        s = step_sessions(s, interest, activity, mean_epochs, 8.0, rng)
        busy.append(np.mean(s.app != IDLE))
        apps.append(s.app[s.started])
    started = np.concatenate(apps)
    assert np.all(started != 2)  # zero interest: never chosen
    assert abs(np.mean(started == 0) - 0.7) < 0.03  # starts follow interests
    # Duty cycle at 08:00: start odds scaled by the diurnal factor (a trough hour).
    expected = 0.4 * diurnal(8.0) / 0.55
    odds = expected / (1 - 0.4)  # start-rate odds at this hour
    duty = odds / (1 + odds)
    assert abs(np.mean(busy[100:]) - duty) < 0.05
