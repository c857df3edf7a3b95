import math

import numpy as np
import pytest
from scipy import stats

from simulators import antenna as ant
from simulators import channel as ch
from simulators.layout import explicit_layout, hex_layout, sample_positions

# TS 38.214 Table 5.2.2.1-2 / 5.2.2.1-3, "efficiency" column as printed.
TABLE1_EFF = [0.1523, 0.2344, 0.3770, 0.6016, 0.8770, 1.1758, 1.4766, 1.9141, 2.4063,
              2.7305, 3.3223, 3.9023, 4.5234, 5.1152, 5.5547]  # fmt: skip
TABLE2_EFF = [0.1523, 0.3770, 0.8770, 1.4766, 1.9141, 2.4063, 2.7305, 3.3223, 3.9023,
              4.5234, 5.1152, 5.5547, 6.2266, 6.9141, 7.4063]  # fmt: skip


# ------------------------------------------------------------------ antenna


def test_sector_pattern_hand_values():
    p = ant.SectorPattern(vertical=False)
    assert ant.sector_gain_db(np.array([0.0]), None, p)[0] == 8.0
    assert ant.horizontal_gain_db(np.array([65.0]))[0] == pytest.approx(-12.0)  # 3 dB beamwidth edge x4
    assert ant.horizontal_gain_db(np.array([32.5]))[0] == pytest.approx(-3.0)  # half-power at phi_3dB/2
    assert ant.horizontal_gain_db(np.array([180.0, -150.0, 390.0 - 360.0 + 150.0]))[:2].tolist() == [-30.0, -30.0]
    assert ant.horizontal_gain_db(np.array([370.0]))[0] == pytest.approx(ant.horizontal_gain_db(np.array([10.0]))[0])
    full = ant.SectorPattern()
    # on boresight at the tilt angle: peak gain; far below: capped at 8 - 30
    assert ant.sector_gain_db(np.array([0.0]), np.array([102.0]), full)[0] == pytest.approx(8.0)
    assert ant.sector_gain_db(np.array([180.0]), np.array([170.0]), full)[0] == pytest.approx(-22.0)
    g = ant.sector_gain_db(np.array([0.0]), np.array([90.0]), full)[0]
    assert g == pytest.approx(8.0 - 12.0 * (12.0 / 65.0) ** 2)


def test_fast_atan2_is_accurate_everywhere():
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0, 1, 20000) * 10.0 ** rng.uniform(-6, 4, 20000), [0.0, 1.0, -1.0, 0.0]])
    x = np.concatenate([rng.normal(0, 1, 20000) * 10.0 ** rng.uniform(-6, 4, 20000), [1.0, 0.0, 0.0, -1.0]])
    got = np.array([ant.atan2_deg_scalar(a, b) for a, b in zip(y, x)])
    assert np.max(np.abs(got - np.degrees(np.arctan2(y, x)))) < 1e-7


# ------------------------------------------------------------------ link gain


def _setup(n=600, wrap=True, seed=5, scenario="UMa"):
    h_bs = 25.0 if scenario == "UMa" else 10.0
    L = hex_layout(2, 500.0 if scenario == "UMa" else 200.0, bs_height_m=h_bs, wrap_around=wrap)
    rng = np.random.default_rng(seed)
    xy = sample_positions(L, n, rng)
    h = rng.uniform(1.5, 22.5, n)
    zs, zl = ch.init_link_state(n, L.n_sites, rng)
    return L, xy, h, zs, zl


@pytest.mark.parametrize("scenario", ["UMa", "UMi"])
@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("vertical", [True, False])
def test_link_gain_kernel_matches_numpy_reference(scenario, wrap, vertical):
    L, xy, h, zs, zl = _setup(wrap=wrap, scenario=scenario)
    pat = ant.SectorPattern(vertical=vertical)
    g, los = ch.link_gain_db(xy, h, zs, zl, L, scenario, 3.5, pat)
    g_ref, los_ref = ch.link_gain_db_reference(xy, h, zs, zl, L, scenario, 3.5, pat)
    assert g.shape == (xy.shape[0], 57) and los.shape == (xy.shape[0], 19)
    assert np.array_equal(los, los_ref)
    # the kernel's polynomial atan2 is within 1e-7 deg of libm's: ~1e-7 dB of gain
    assert np.allclose(g, g_ref, atol=1e-6)
    assert 0.0 < los.mean() < 0.5


def test_link_gain_omni_and_mixed_explicit_layout_matches_reference():
    cells = np.array([[0, 0], [0, 0], [0, 0], [600, 100]], dtype=float)
    L = explicit_layout(cells, np.array([0.0, 120.0, 240.0, np.nan]), bs_height_m=25.0)
    rng = np.random.default_rng(1)
    xy = rng.uniform(-500, 900, (300, 2))
    zs, zl = ch.init_link_state(300, L.n_sites, rng)
    args = (xy, np.full(300, 1.5), zs, zl, L, "UMa", 2.0, ant.SectorPattern(), 2.0)
    g, los = ch.link_gain_db(*args)
    g_ref, los_ref = ch.link_gain_db_reference(*args)
    assert np.allclose(g, g_ref, atol=1e-6) and np.array_equal(los, los_ref)


def test_link_gain_end_to_end_against_the_formula():
    # One omni site, a user 100 m away forced LOS (z_los very low) without shadowing:
    # gain = omni gain - (28 + 22 log10 d3D + 20 log10 fc), by hand.
    L = explicit_layout(np.array([[0.0, 0.0]]), bs_height_m=25.0)
    xy = np.array([[100.0, 0.0], [0.0, 1000.0]])
    zl = np.array([[-40.0], [40.0]])  # LOS, NLOS
    g, los = ch.link_gain_db(xy, np.full(2, 1.5), np.zeros((2, 1)), zl, L, "UMa", 3.5, omni_gain_dbi=5.0)
    assert los[:, 0].tolist() == [True, False]
    d3 = math.hypot(100.0, 23.5)
    assert g[0, 0] == pytest.approx(5.0 - (28.0 + 22 * math.log10(d3) + 20 * math.log10(3.5)), abs=1e-9)
    d3 = math.hypot(1000.0, 23.5)
    assert g[1, 0] == pytest.approx(5.0 - (13.54 + 39.08 * math.log10(d3) + 20 * math.log10(3.5)), abs=1e-9)
    # shadowing adds sigma_NLOS * z in dB
    g2, _ = ch.link_gain_db(xy, np.full(2, 1.5), np.ones((2, 1)), zl, L, "UMa", 3.5, omni_gain_dbi=5.0)
    assert g[1, 0] - g2[1, 0] == pytest.approx(6.0)


def test_sector_facing_the_user_wins_by_the_pattern():
    L = hex_layout(0, 500.0)  # one site, sectors at 30/150/270 deg
    xy = np.array([[200 * math.cos(math.radians(30)), 200 * math.sin(math.radians(30))]])
    zero = np.zeros((1, 1))
    g, _ = ch.link_gain_db(xy, [1.5], zero, zero, L, "UMa", 3.5, ant.SectorPattern(vertical=False))
    assert g[0, 0] - g[0, 1] == pytest.approx(30.0)  # boresight vs 120 deg off (front-to-back cap)
    assert g[0, 1] == pytest.approx(g[0, 2])


def test_rsrp_and_noise_hand_values():
    assert ch.thermal_noise_dbm(20e6, 7.0) == pytest.approx(-93.9897, abs=1e-4)
    assert ch.occupied_bandwidth_hz(51, 30.0) == 51 * 12 * 30e3
    ch.validate_carrier(20.0, 30.0, 51)
    with pytest.raises(ValueError, match="occupy"):
        ch.validate_carrier(20.0, 30.0, 106)
    with pytest.raises(ValueError):
        ch.validate_carrier(20.0, 25.0, 10)
    g = np.array([[-100.0, -110.0]])
    assert ch.rsrp_dbm(g, 46.0, 273)[0, 0] == pytest.approx(46 - 100 - 10 * math.log10(12 * 273))
    assert ch.received_power_mw(g, 46.0)[0, 1] == pytest.approx(10 ** ((46 - 110) / 10))


# ------------------------------------------------------------ shadowing state


def test_gudmundson_latent_correlation_and_stationarity():
    rng = np.random.default_rng(2)
    n = 200_000
    z0 = rng.standard_normal((n, 1))
    z1 = ch.evolve_latent(z0, np.full(n, 20.0), 50.0, rng.standard_normal((n, 1)))
    assert np.corrcoef(z0[:, 0], z1[:, 0])[0, 1] == pytest.approx(math.exp(-20 / 50), abs=0.01)
    assert z1.std() == pytest.approx(1.0, abs=0.01)
    still = ch.evolve_latent(z0, np.zeros(n), 50.0, rng.standard_normal((n, 1)))
    assert np.array_equal(still, z0)  # a static user keeps its shadowing


def test_advance_link_state_is_deterministic_and_moves_only_movers():
    n, s = 50, 19
    z = ch.init_link_state(n, s, np.random.default_rng(0))
    los = np.zeros((n, s), dtype=bool)
    moved = np.where(np.arange(n) < 25, 0.0, 10.0)
    a = ch.advance_link_state(*z, los, moved, "UMi", np.random.default_rng(9))
    b = ch.advance_link_state(*z, los, moved, "UMi", np.random.default_rng(9))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[0][:25], z[0][:25])
    assert not np.allclose(a[0][25:], z[0][25:])


@pytest.mark.parametrize("wrap", [True, False])
def test_refresh_links_kernel_matches_reference_and_touches_only_its_rows(wrap):
    L, xy, h, _, _ = _setup(n=400, wrap=wrap, seed=12)
    tx = np.linspace(40.0, 46.0, L.n_cells)
    a = ch.init_links(xy, h, L, "UMa", 3.5, tx, 106, np.random.default_rng(1))
    b = a.copy()
    before = a.copy()
    rows = np.arange(0, 400, 3)
    moved = np.random.default_rng(2).uniform(0.0, 80.0, rows.size)
    new_xy = xy + np.random.default_rng(3).normal(0, 20, xy.shape)
    ch.refresh_links(a, rows, new_xy, h, moved, L, "UMa", 3.5, tx, 106, np.random.default_rng(4))
    ch.refresh_links_reference(b, rows, new_xy, h, moved, L, "UMa", 3.5, tx, 106, np.random.default_rng(4))
    assert np.allclose(a.z_sf, b.z_sf, atol=1e-12) and np.allclose(a.z_los, b.z_los, atol=1e-12)
    assert np.array_equal(a.los, b.los)
    assert np.allclose(a.gain_db, b.gain_db, atol=1e-6)
    assert np.allclose(a.rsrp_dbm, b.rsrp_dbm, atol=1e-6)
    assert np.allclose(a.rx_mw, b.rx_mw, rtol=1e-6, atol=0)
    others = np.setdiff1d(np.arange(400), rows)
    for f in ("z_sf", "z_los", "los", "gain_db", "rsrp_dbm", "rx_mw"):
        assert np.array_equal(getattr(a, f)[others], getattr(before, f)[others])
    assert not np.allclose(a.gain_db[rows], before.gain_db[rows])
    # consistent with the pure functions: RSRP per RE and received power from the gain
    assert np.allclose(a.rsrp_dbm, ch.rsrp_dbm(a.gain_db, tx, 106))
    assert np.allclose(a.rx_mw, ch.received_power_mw(a.gain_db, tx), rtol=1e-12)


def test_init_links_rejects_out_of_range_inputs():
    L = hex_layout(0, 500.0)
    with pytest.raises(ValueError, match="UT height"):
        ch.init_links(np.zeros((1, 2)), [0.5], L, "UMa", 3.5, 46.0, 51, np.random.default_rng(0))
    with pytest.raises(ValueError, match="carrier"):
        ch.init_links(np.zeros((1, 2)), [1.5], L, "UMa", 200.0, 46.0, 51, np.random.default_rng(0))


def test_shadowing_can_be_switched_off():
    L, xy, h, zs, zl = _setup(n=200, seed=14)
    on, los_on = ch.link_gain_db(xy, h, zs, zl, L, "UMa", 3.5)
    off, los_off = ch.link_gain_db(xy, h, zs, zl, L, "UMa", 3.5, shadowing=False)
    zero, _ = ch.link_gain_db(xy, h, np.zeros_like(zs), zl, L, "UMa", 3.5)
    assert np.array_equal(los_on, los_off)
    assert np.allclose(off, zero) and not np.allclose(on, off)
    ref, _ = ch.link_gain_db_reference(xy, h, zs, zl, L, "UMa", 3.5, shadowing=False)
    assert np.allclose(off, ref, atol=1e-6)
    a = ch.init_links(xy, h, L, "UMa", 3.5, 46.0, 51, np.random.default_rng(0), shadowing=False)
    rows = np.arange(200)
    ch.refresh_links(a, rows, xy, h, np.full(200, 30.0), L, "UMa", 3.5, 46.0, 51, np.random.default_rng(1), shadowing=False)
    again, _ = ch.link_gain_db(xy, h, np.zeros_like(zs), a.z_los, L, "UMa", 3.5)
    assert np.allclose(a.gain_db, again)


def test_static_refresh_keeps_shadowing():
    L, xy, h, _, _ = _setup(n=50, seed=13)
    a = ch.init_links(xy, h, L, "UMi", 3.5, 30.0, 51, np.random.default_rng(1))
    before = a.copy()
    ch.refresh_links(a, np.arange(50), xy, h, np.zeros(50), L, "UMi", 3.5, 30.0, 51, np.random.default_rng(2))
    assert np.array_equal(a.z_sf, before.z_sf) and np.allclose(a.gain_db, before.gain_db, atol=1e-9)


def test_refresh_due_accumulates_movement():
    acc = np.zeros(4)
    rows, dist, acc = ch.refresh_due(acc, np.array([0.0, 1.0, 6.0, 2.0]), 5.0)
    assert rows.tolist() == [2] and dist.tolist() == [6.0] and acc.tolist() == [0.0, 1.0, 0.0, 2.0]
    rows, dist, acc = ch.refresh_due(acc, np.array([0.0, 1.0, 1.0, 3.0]), 5.0)
    assert rows.tolist() == [3] and dist.tolist() == [5.0] and acc.tolist() == [0.0, 2.0, 1.0, 0.0]
    rows, _, _ = ch.refresh_due(np.zeros(3), np.array([0.0, 0.1, 0.0]), 0.0)
    assert rows.tolist() == [1]  # static users are never recomputed


# ------------------------------------------------------------ fading and SINR


def test_rayleigh_power_is_exponential_and_reproducible():
    h = ch.rayleigh_power_reference(12345, np.arange(4000), np.arange(57), 57)
    assert stats.kstest(h.ravel(), "expon").pvalue > 1e-3
    assert h.mean() == pytest.approx(1.0, abs=0.01)
    assert abs(np.corrcoef(h[:, 0], h[:, 1])[0, 1]) < 0.05
    again = ch.rayleigh_power_reference(12345, np.array([7]), np.array([3]), 57)
    assert again[0, 0] == h[7, 3]
    other = ch.rayleigh_power_reference(12346, np.arange(4000), np.arange(57), 57)
    assert abs(np.corrcoef(h.ravel(), other.ravel())[0, 1]) < 0.01
    assert ch.fading_key(np.random.default_rng(4)) == ch.fading_key(np.random.default_rng(4))


def test_sinr_hand_value_without_fading():
    rx = np.array([[1e-6, 1e-7, 1e-8]])
    got = ch.sinr_db(rx, np.array([0]), np.array([0.3, 0.5, 1.0]), 1e-9, None)
    assert got[0] == pytest.approx(10 * math.log10(1e-6 / (0.5e-7 + 1e-8 + 1e-9)))
    assert ch.sinr_db_reference(rx, np.array([0]), np.array([0.3, 0.5, 1.0]), 1e-9, None)[0] == pytest.approx(got[0])


def _radio(n=800):
    L, xy, h, zs, zl = _setup(n=n, wrap=True, seed=8)
    g, _ = ch.link_gain_db(xy, h, zs, zl, L, "UMa", 3.5)
    rx = ch.received_power_mw(g, 46.0)
    noise = ch.dbm_to_mw(ch.thermal_noise_dbm(ch.occupied_bandwidth_hz(273, 30.0), 7.0))
    return rx, np.argmax(g, axis=1), float(noise)


@pytest.mark.parametrize("floor", [30.0, 10.0, np.inf])
def test_sinr_kernel_matches_reference(floor):
    rx, serving, noise = _radio()
    load = np.random.default_rng(3).uniform(0, 1, (4, 57))
    got = ch.sinr_db(rx, serving, load, noise, 777, floor)
    ref = ch.sinr_db_reference(rx, serving, load, noise, 777, floor)
    assert got.shape == (4, rx.shape[0])
    assert np.allclose(got, ref, atol=1e-9)
    # evaluating policies together equals evaluating them one by one
    assert np.allclose(got[2], ch.sinr_db(rx, serving, load[2], noise, 777, floor))


def test_sinr_falls_as_neighbour_load_rises():
    rx, serving, noise = _radio()
    loads = np.array([[0.0] * 57, [0.2] * 57, [0.6] * 57, [1.0] * 57])
    s = ch.sinr_db(rx, serving, loads, noise, 99)
    assert np.all(np.diff(s, axis=0) < 0)  # same fading draws: strictly worse with more load
    # no neighbour load: SINR is the SNR, far above the fully loaded case
    assert np.median(s[0] - s[3]) > 10.0
    # the serving cell's own load does not interfere with itself
    one = np.full(57, 0.5)
    bumped = one.copy()
    bumped[serving[0]] = 1.0
    assert ch.sinr_db(rx[:1], serving[:1], bumped, noise, 99)[0] == pytest.approx(
        ch.sinr_db(rx[:1], serving[:1], one, noise, 99)[0]
    )


def test_fading_moves_sinr_around_its_mean():
    rx, serving, noise = _radio()
    flat = ch.sinr_db(rx, serving, np.full(57, 0.5), noise, None)
    faded = np.array([ch.sinr_db(rx, serving, np.full(57, 0.5), noise, k) for k in range(40)])
    assert np.all(faded.std(axis=0) > 1.0)  # Rayleigh: several dB of spread per user
    assert np.median(np.abs(np.median(faded, axis=0) - flat)) < 3.0
    with pytest.raises(ValueError):
        ch.sinr_db(rx, serving, np.full(57, 1.5), noise, 1)


# ------------------------------------------------------------ CQI, efficiency


def test_cqi_tables_match_ts38214():
    assert np.allclose(ch.cqi_efficiency(1)[1:], TABLE1_EFF, atol=6e-5)
    assert np.allclose(ch.cqi_efficiency(2)[1:], TABLE2_EFF, atol=6e-5)
    assert ch.cqi_efficiency(1)[0] == ch.cqi_efficiency(2)[0] == 0.0
    with pytest.raises(ValueError):
        ch.cqi_efficiency(3)


@pytest.mark.parametrize("table", [1, 2])
def test_cqi_boundaries_cap_and_out_of_range(table):
    th = ch.cqi_sinr_thresholds_db(table)
    eff = np.array(TABLE1_EFF if table == 1 else TABLE2_EFF)
    assert th.shape == (15,) and np.all(np.diff(th) > 0)
    # thresholds are where 0.75 log2(1 + SINR) reaches each CQI's efficiency
    assert np.allclose(0.75 * np.log2(1 + 10 ** (th / 10)), eff, atol=6e-5)
    cqi = ch.sinr_to_cqi(th, th)
    assert cqi.tolist() == list(range(1, 16))  # exactly at the threshold: that CQI
    assert ch.sinr_to_cqi(th - 1e-6, th).tolist() == list(range(0, 15))  # just below: one less
    e = ch.spectral_efficiency(np.array([-30.0, th[0] - 0.01, th[0], 60.0, 1e3]), table)
    assert e[0] == e[1] == 0.0  # CQI 0: out of range, nothing sent
    assert e[2] == pytest.approx(0.1523, abs=6e-5)
    assert e[3] == e[4] == pytest.approx(eff[-1], abs=6e-5)  # capped at the table maximum
    s = np.linspace(-20, 40, 500)
    assert np.all(np.diff(ch.spectral_efficiency(s, table)) >= 0)


def test_table2_reaches_higher_than_table1_only_at_high_sinr():
    assert ch.spectral_efficiency(np.array([40.0]), 2)[0] > ch.spectral_efficiency(np.array([40.0]), 1)[0] + 1.8
    assert ch.spectral_efficiency(np.array([-5.0]), 2)[0] <= ch.spectral_efficiency(np.array([-5.0]), 1)[0]
    custom = np.linspace(-6.0, 22.0, 15)
    assert ch.spectral_efficiency(np.array([-6.0]), 1, custom)[0] == pytest.approx(0.1523, abs=6e-5)
    with pytest.raises(ValueError):
        ch.sinr_to_cqi(np.zeros(3), custom[::-1])


def test_prb_rate_hand_value():
    # 12 subcarriers x 30 kHz x 14/15 symbols x (1 - 0.14) at 1 bit/s/Hz
    assert ch.prb_rate_bps(np.array([1.0]), 30.0)[0] == pytest.approx(12 * 30e3 * 14 / 15 * 0.86)


def test_whole_radio_epoch_is_deterministic_under_a_seed():
    from simulators import handover as ho
    from simulators import mobility as mob

    def run(seed):
        rng = np.random.default_rng(seed)
        L = hex_layout(1, 300.0, wrap_around=True)
        n = 300
        xy = sample_positions(L, n, rng)
        h = np.full(n, 1.5)
        model = np.array([mob.STATIC, mob.RANDOM_WAYPOINT, mob.GAUSS_MARKOV] * 100)
        speed = np.full(n, 5.0)
        st = mob.init_mobility(xy, speed, L.bounds, rng)
        links = ch.init_links(xy, h, L, "UMi", 3.5, 30.0, 51, rng)
        hs = ho.attach(links.rsrp_dbm)
        since = np.zeros(n)
        out = []
        for _ in range(5):
            st, moved = mob.step_mobility(st, model, speed, 1.0, L.bounds, rng)
            rows, dist, since = ch.refresh_due(since, moved, 3.0)
            ch.refresh_links(links, rows, st.xy, h, dist, L, "UMi", 3.5, 30.0, 51, rng)
            hs, _ = ho.handover_step(hs, links.rsrp_dbm, 2.0, 1)
            out.append(ch.sinr_db(links.rx_mw, hs.serving, np.full(21, 0.7), 1e-10, ch.fading_key(rng)))
        return np.array(out), links.gain_db

    a, ga = run(21)
    b, gb = run(21)
    c, _ = run(22)
    assert np.array_equal(a, b) and np.array_equal(ga, gb)
    assert not np.allclose(a, c)
