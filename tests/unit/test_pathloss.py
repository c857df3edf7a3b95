"""TR 38.901 path loss, LOS probability and shadowing constants.

The expected numbers below were evaluated by hand from the equations of TR
38.901 Tables 7.4.1-1 and 7.4.2-1 (3D distance from the 2D distance and the
height difference, d'_BP = 4 (h_BS - 1)(h_UT - 1) f_c / c with f_c in Hz).
"""

import math

import numpy as np
import pytest

from simulators import pathloss as pl

C = 299_792_458.0


@pytest.mark.parametrize(
    "scenario, los, d2d, fc, hbs, hut, expected",
    [
        # UMa, 3.5 GHz, 25 m / 1.5 m: d'_BP = 560.39 m
        ("UMa", True, 100.0, 3.5, 25.0, 1.5, 83.1382),  # PL1
        ("UMa", True, 1000.0, 3.5, 25.0, 1.5, 109.4065),  # PL2 beyond breakpoint
        ("UMa", False, 500.0, 3.5, 25.0, 1.5, 129.9158),  # PL'_NLOS dominates
        # UMi, 10 m / 1.5 m: d'_BP = 1681 m at 28 GHz, 210.1 m at 3.5 GHz
        ("UMi", True, 50.0, 28.0, 10.0, 1.5, 97.1514),
        ("UMi", True, 300.0, 3.5, 10.0, 1.5, 98.2386),
        ("UMi", False, 200.0, 3.5, 10.0, 1.5, 115.2288),
    ],
)
def test_pathloss_matches_hand_evaluated_points(scenario, los, d2d, fc, hbs, hut, expected):
    got = pl.pathloss_db(scenario, np.array([d2d]), hbs, hut, fc, np.array([los]))[0]
    assert got == pytest.approx(expected, abs=1e-3)


def test_breakpoint_distance_hand_values():
    assert pl.breakpoint_distance_m(3.5, 25.0, 1.5) == pytest.approx(560.388, abs=1e-2)
    assert pl.breakpoint_distance_m(28.0, 10.0, 1.5) == pytest.approx(1681.163, abs=1e-2)


@pytest.mark.parametrize("scenario, hbs, fc", [("UMa", 25.0, 3.5), ("UMi", 10.0, 3.5), ("UMi", 10.0, 2.0)])
def test_los_formula_is_continuous_at_breakpoint(scenario, hbs, fc):
    dbp = float(pl.breakpoint_distance_m(fc, hbs, 1.5))
    below = pl.pathloss_los_db(scenario, np.array([dbp * (1 - 1e-9)]), hbs, 1.5, fc)[0]
    above = pl.pathloss_los_db(scenario, np.array([dbp * (1 + 1e-9)]), hbs, 1.5, fc)[0]
    assert above == pytest.approx(below, abs=1e-6)
    # and the slope really changes there (22 or 21 -> 40 dB/decade)
    d = np.array([dbp / 2, dbp, 2 * dbp, 4 * dbp])
    p = pl.pathloss_los_db(scenario, d, hbs, 1.5, fc)
    assert (p[3] - p[2]) > (p[1] - p[0]) + 5.0


@pytest.mark.parametrize("scenario, hbs", [("UMa", 25.0), ("UMi", 10.0)])
@pytest.mark.parametrize("fc", [0.7, 3.5, 28.0])
def test_pathloss_grows_with_distance_and_nlos_is_worse(scenario, hbs, fc):
    d = np.linspace(10.0, 5000.0, 3000)
    los = pl.pathloss_los_db(scenario, d, hbs, 1.5, fc)
    nlos = pl.pathloss_nlos_db(scenario, d, hbs, 1.5, fc)
    assert np.all(np.diff(los) > 0)
    assert np.all(np.diff(nlos) > 0)
    assert np.all(nlos >= los)
    assert np.any(nlos > los + 10.0)


def test_higher_carrier_loses_more():
    d = np.array([50.0, 500.0])
    assert np.all(pl.pathloss_los_db("UMa", d, 25, 1.5, 28.0) > pl.pathloss_los_db("UMa", d, 25, 1.5, 3.5))


def test_below_minimum_distance_is_evaluated_at_10m():
    a = pl.pathloss_nlos_db("UMi", np.array([1.0, 5.0, 10.0]), 10.0, 1.5, 3.5)
    assert a[0] == a[1] == a[2]


def test_los_probability_hand_values_and_limits():
    assert pl.los_probability("UMi", np.array([100.0]))[0] == pytest.approx(0.230985, abs=1e-6)
    assert pl.los_probability("UMa", np.array([100.0]), 1.5)[0] == pytest.approx(0.347671, abs=1e-6)
    # tall users (C'(h_UT) > 0) see more LOS in UMa
    assert pl.los_probability("UMa", np.array([100.0]), 20.0)[0] == pytest.approx(0.478347, abs=1e-6)
    for s in ("UMa", "UMi"):
        d = np.linspace(0.5, 5000, 5000)
        p = pl.los_probability(s, d)
        assert np.all(p[d <= 18.0] == 1.0)
        assert np.all((p > 0) & (p <= 1))
        assert np.all(np.diff(p) <= 1e-15)
        assert p[-1] < 0.005  # ~18/d far away


def test_shadowing_constants():
    los = np.array([True, False])
    assert pl.shadowing_sigma_db("UMa", los).tolist() == [4.0, 6.0]
    assert pl.shadowing_sigma_db("UMi", los).tolist() == [4.0, 7.82]
    assert pl.shadowing_decorrelation_m("UMa", los).tolist() == [37.0, 50.0]
    assert pl.shadowing_decorrelation_m("UMi", los).tolist() == [10.0, 13.0]


def test_validation_errors():
    with pytest.raises(ValueError, match="unknown path-loss scenario"):
        pl.scenario_params("RMa-typo")
    with pytest.raises(ValueError, match="carrier"):
        pl.validate_inputs("UMa", 0.3, 25.0, 1.5)
    with pytest.raises(ValueError, match="UT height"):
        pl.validate_inputs("UMi", 3.5, 10.0, np.array([1.5, 30.0]))
    pl.validate_inputs("UMa", 3.5, 25.0, np.array([1.5, 22.5]))


@pytest.mark.parametrize("scenario", ["UMa", "UMi"])
def test_scalar_twins_match_numpy(scenario):
    rng = np.random.default_rng(7)
    code = pl.SCENARIO_CODES[scenario]
    d = rng.uniform(1.0, 6000.0, 400)
    hut = rng.uniform(1.5, 22.5, 400)
    los = rng.random(400) < 0.5
    fc = 3.5 if scenario == "UMa" else 28.0
    hbs = 25.0 if scenario == "UMa" else 10.0
    ref_pl = pl.pathloss_db(scenario, d, hbs, hut, fc, los)
    ref_p = pl.los_probability(scenario, d, hut)
    for i in range(d.size):
        assert pl.pathloss_scalar(code, d[i], hbs, hut[i], fc, los[i]) == pytest.approx(ref_pl[i], abs=1e-9)
        assert pl.los_probability_scalar(code, d[i], hut[i]) == pytest.approx(ref_p[i], abs=1e-12)


def test_free_space_sanity_near_the_mast():
    # LOS UMa PL1 = 28 + 22 log d + 20 log f stays within a few dB of free space at 10-50 m.
    d = np.array([10.0, 30.0, 50.0])
    d3 = np.sqrt(d**2 + 23.5**2)
    fspl = 20 * np.log10(d3) + 20 * np.log10(3.5e9) + 20 * math.log10(4 * math.pi / C)
    got = pl.pathloss_los_db("UMa", d, 25.0, 1.5, 3.5)
    assert np.all(np.abs(got - fspl) < 6.0)
