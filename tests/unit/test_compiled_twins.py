"""Each compiled twin that `simulators.compiled_run` strings together equals its NumPy step:
same results to the bit and the same random numbers drawn (generator states compared)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from engine.config import load_config
from simulators import channel as ch
from simulators import compiled_run as cr
from simulators import handover as ho
from simulators import mobility as mob
from simulators.catalog import drift, item_ends, pick_items, draw_catalog
from simulators.feedback import FeedbackBehaviour
from simulators.layout import explicit_layout, hex_layout, sample_positions
from simulators.world import zones_in_rate
from simulators.outcomes import Outcomes, pairwise_sum, record_nb
from simulators.policies import BaselinePolicy, _column_stat, allocate_nb
from simulators.population import draw_population
from simulators.traffic import Sessions, app_hour_weights, choice_interest, step_sessions

ROOT = Path(__file__).resolve().parents[2]


def _same_state(a: np.random.Generator, b: np.random.Generator) -> bool:
    return a.bit_generator.state == b.bit_generator.state


def _pair(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    return np.random.default_rng(seed), np.random.default_rng(seed)


def test_mobility_twin_moves_every_model_identically():
    b = (0.0, 0.0, 60.0, 40.0)  # a small area: waypoints arrive and walls reflect often
    n = 300
    r0 = np.random.default_rng(0)
    model = r0.choice([mob.STATIC, mob.RANDOM_WAYPOINT, mob.GAUSS_MARKOV], n)
    speed = r0.uniform(0.0, 15.0, n)
    st_a = st_b = mob.init_mobility(mob.uniform_points(n, b, r0), speed, b, r0)
    ra, rb = _pair(1)
    arrivals = 0
    for _ in range(60):
        st_a, moved_a = mob.step_mobility(st_a, model, speed, 2.0, b, ra, alpha=0.7)
        wp_before = st_b.waypoint.copy()
        st_b, moved_b = mob.step_mobility_nb(st_b, model, speed, 2.0, b, rb, alpha=0.7)
        arrivals += int(np.any(st_b.waypoint != wp_before, axis=1).sum())
        for f in ("xy", "waypoint", "speed", "heading", "mean_heading"):
            assert np.array_equal(getattr(st_a, f), getattr(st_b, f)), f
        assert np.array_equal(moved_a, moved_b)
        assert _same_state(ra, rb)
    assert arrivals > 100  # the multi-round waypoint path was exercised


def test_refresh_due_twin():
    r = np.random.default_rng(2)
    since, moved = r.uniform(0, 5, 500), np.where(r.random(500) < 0.2, 0.0, r.uniform(0, 3, 500))
    for refresh_m in (5.0, 0.0):
        for got, want in zip(ch.refresh_due_nb(since, moved, refresh_m), ch.refresh_due(since, moved, refresh_m)):
            assert np.array_equal(got, want)


def test_handover_twin_follows_a3_and_time_to_trigger():
    r = np.random.default_rng(3)
    n, c = 400, 7
    base = r.normal(-90, 6, (n, c))
    for ttt in (0, 2):
        a = b = ho.attach(base)
        total = 0
        for _ in range(40):
            rsrp = base + r.normal(0, 4, (n, c))
            a, went_a = ho.handover_step(a, rsrp, 3.0, ttt)
            b, went_b = ho.handover_step_nb(b, rsrp, 3.0, ttt)
            assert np.array_equal(went_a, went_b)
            for f in ("serving", "candidate", "held", "handovers", "ping_pongs", "previous", "since_handover"):
                assert np.array_equal(getattr(a, f), getattr(b, f)), f
            total += int(went_b.sum())
        assert total > 50 and b.ping_pongs.sum() > 0


@pytest.mark.parametrize("sectors", [3, 1])
def test_sinr_efficiency_twin(sectors):
    r = np.random.default_rng(4)
    L = hex_layout(1, 500.0, sectors)
    n = 2000
    xy = sample_positions(L, n, r)
    links = ch.init_links(xy, np.full(n, 1.5), L, "UMa", 3.5, 46.0, 51, r)
    serving = ho.attach(links.rsrp_dbm).serving
    loads = r.uniform(0, 1, (3, L.n_cells))
    noise = float(ch.dbm_to_mw(ch.thermal_noise_dbm(ch.occupied_bandwidth_hz(51, 30.0), 7.0)))
    for key, table, load in ((12345, 2, loads), (None, 1, loads[0]), (987654321, 1, loads[1:])):
        got = ch.sinr_efficiency(links.rx_mw, serving, load, noise, key, table, 0.14)
        want = ch.sinr_efficiency_reference(links.rx_mw, serving, load, noise, key, table, 0.14)
        assert got.shape == want.shape and np.array_equal(got, want)
        assert len(np.unique(got)) > 5  # many CQIs, not one saturated value


def test_links_kernel_skips_angles_only_for_all_omni_sites():
    # Site 0 has three sectors, site 1 one omni cell (two masts at different places).
    L = explicit_layout(np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [300.0, 0.0]]),
                        np.array([0.0, 120.0, 240.0, np.nan]), 25.0, site_id=np.array([0, 0, 0, 1]))
    omni = ch.links_kernel_constants(L, "UMa", 3.5)[-1]
    assert omni.tolist() == [False, True]
    r = np.random.default_rng(5)
    xy = r.uniform(-400, 700, (300, 2))
    z = r.standard_normal((2, 300, 2))
    got, los = ch.link_gain_db(xy, np.full(300, 1.5), z[0], z[1], L, "UMa", 3.5)
    want, los_ref = ch.link_gain_db_reference(xy, np.full(300, 1.5), z[0], z[1], L, "UMa", 3.5)
    assert np.array_equal(los, los_ref)
    assert np.allclose(got, want, atol=1e-9)


def _pop_and_zones():
    cfg = load_config(ROOT / "configs" / "example.yaml")
    cfg = cfg.model_copy(update={"population": cfg.population.model_copy(update={"users": 400})})
    pop = draw_population(cfg, np.random.default_rng(6))
    return cfg, pop, *zones_in_rate(cfg, pop)


@pytest.mark.parametrize("name", ["universal_fit", "equal_share", "proportional_fair", "max_rate"])
def test_allocate_twin(name):
    cfg, pop, a_rate, d_rate = _pop_and_zones()
    ref, twin = BaselinePolicy(name, cfg, pop, a_rate, d_rate), BaselinePolicy(name, cfg, pop, a_rate, d_rate)
    r = np.random.default_rng(7)
    prb_total = np.array([51, 51, 20, 80, 51, 51, 3], dtype=np.int64)
    for _ in range(15):
        serving = r.integers(0, 7, pop.n)
        app = np.where(r.random(pop.n) < 0.6, np.array([r.choice(np.flatnonzero(row > 0)) for row in pop.interest]),
                       -1)
        se = np.where(r.random(pop.n) < 0.05, 0.0, r.uniform(0.1, 6.0, pop.n))
        want = ref.allocate(serving, app, se, prb_total)
        got = allocate_nb(twin, serving, app, se, prb_total)
        assert np.array_equal(got, want)
        assert np.array_equal(twin.avg_rate, ref.avg_rate)
        assert np.all(np.bincount(serving, weights=got, minlength=7) <= prb_total)


def test_column_stat_is_nanmedian_and_nanpercentile():
    r = np.random.default_rng(8)
    for n in (5, 599, 601, 1500):
        x = r.lognormal(0, 1, (n, 4))
        x[r.random((n, 4)) < 0.5] = np.nan
        x[:, 2] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert np.array_equal(_column_stat(x, np.median), np.nanmedian(x, axis=0), equal_nan=True)
            assert np.array_equal(_column_stat(x, lambda v: np.percentile(v, 90)), np.nanpercentile(x, 90, axis=0),
                                  equal_nan=True)


def test_record_twin_and_pairwise_sum():
    r = np.random.default_rng(9)
    for n in (0, 3, 7, 8, 9, 127, 128, 129, 1000, 10007):
        x = r.random(n) * 10.0 ** r.uniform(-5, 5, n)
        assert pairwise_sum(x, n) == x.sum()
    n, segs, cells = 500, 3, 6
    a, b = (Outcomes(n, segs, cells, 51, 1.0, 0.05) for _ in range(2))
    seg = r.integers(0, segs, n)
    for _ in range(30):
        active = r.random(n) < 0.5
        cell = r.integers(0, cells, n)
        sat = np.where(r.random(n) < 0.1, r.choice([0.0, 1.0], n), r.random(n))
        ad, de = r.random(n) < 0.6, r.random(n) < 0.3
        used = r.integers(0, 52, cells).astype(float)
        a.record(active, seg, cell, sat, ad, de, used, 4)
        record_nb(b, active, seg, cell, sat, ad, de, used, 4)
    assert a.summary(["s0", "s1", "s2"], list("abcdef")) == b.summary(["s0", "s1", "s2"], list("abcdef"))
    for k in a.cell_epoch:
        assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a.cell_epoch[k], b.cell_epoch[k]))
    assert np.array_equal(a.user_sat, b.user_sat) and np.array_equal(a.sat_hist, b.sat_hist)
    assert a.sat_series == b.sat_series and a.prb_series == b.prb_series


def test_sessions_twin():
    _, pop, _, _ = _pop_and_zones()
    r = np.random.default_rng(10)
    activity = r.uniform(0.1, 0.9, pop.n)
    mean_epochs = np.array([0.5, 3.0, 40.0, 300.0])  # p >= 1/3 (search) and < 1/3 (inversion) geometric paths
    ra, rb = _pair(11)
    sa = sb = Sessions.steady(pop.interest, activity, mean_epochs, np.random.default_rng(12))
    starts = 0
    for epoch in range(50):
        hour = (epoch * 900.0 / 3600.0) % 24.0
        sa = step_sessions(sa, pop.interest, activity, mean_epochs, hour, ra)
        sb = cr.step_sessions_nb(sb, pop.interest, activity, mean_epochs, hour, rb)
        for f in ("app", "remaining", "started"):
            assert np.array_equal(getattr(sa, f), getattr(sb, f)), f
        assert _same_state(ra, rb)
        starts += int(sb.started.sum())
    assert starts > 100


def test_choice_interest_twin():
    _, pop, _, _ = _pop_and_zones()
    k = len(pop.apps)
    peaks, amps = [20.0, None, 8.5, 13.0][:k], [0.5, 0.5, 0.9, 0.2][:k]
    for hour in (0.0, 7.25, 13.0, 20.0, 23.9):
        want = choice_interest(pop.interest, app_hour_weights(peaks, amps, hour))
        got = cr.choice_interest_nb(pop.interest, peaks, amps, hour)
        assert np.array_equal(got, want)
        assert not np.array_equal(got, pop.interest)
    flat = [None] * k  # no peaks: the interests themselves
    assert cr.choice_interest_nb(pop.interest, flat, [0.5] * k, 3.0) is pop.interest


@pytest.mark.parametrize("k", [4, 8, 11])
def test_drift_twin(k):
    r = np.random.default_rng(13)
    w = r.dirichlet(np.ones(k), 300)
    w[r.random((300, k)) < 0.2] = 0.0  # apps a user never uses stay at zero
    w[:, 0] += 1e-3
    w /= w.sum(axis=1, keepdims=True)
    a, b = w.copy(), w.copy()
    ra, rb = _pair(14)
    for _ in range(20):
        drift(a, 0.3, 5.0, ra)
        cr.drift_nb(b, 0.3, 5.0, rb)
    assert np.array_equal(a, b) and _same_state(ra, rb)
    assert not np.array_equal(a, w) and np.array_equal(a == 0.0, w == 0.0)
    cr.drift_nb(b, 0.0, 5.0, rb)  # no drift: nothing drawn
    assert _same_state(ra, rb)


def test_item_ends_twin_and_item_draw_count():
    cfg, pop, _, _ = _pop_and_zones()
    r = np.random.default_rng(15)
    active = r.random(pop.n) < 0.6
    age = r.integers(0, 4, pop.n)
    app = np.where(active, r.integers(0, len(pop.apps), pop.n), -1)
    item_mean = np.array([0.5, 2.0, 10.0, 60.0])
    ra, rb = _pair(16)
    assert np.array_equal(item_ends(active, age, item_mean, app, ra), cr.item_ends_nb(active, age, item_mean, app, rb))
    assert _same_state(ra, rb)
    # pick_items draws PICK_ITEM_DRAWS uniforms per user, whatever the catalog.
    cat = draw_catalog(cfg, pop.n, np.random.default_rng(17))
    users = np.flatnonzero(active)
    pick_items(cat, users, app[users], ra)
    rb.random(cr.PICK_ITEM_DRAWS * users.size)
    assert _same_state(ra, rb)


def test_feedback_draws_per_event():
    ra, rb = _pair(18)
    r = np.random.default_rng(19)
    k = 37
    FeedbackBehaviour.default().emit(ra, r.uniform(0, 10, k), np.full(k, 2.0), np.full(k, 6.0))
    rb.random(cr.FEEDBACK_DRAWS_PER_EVENT * k)
    assert _same_state(ra, rb)
