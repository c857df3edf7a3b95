import numpy as np
import pytest

from simulators import layout as lay


def _pairwise(xy):
    d = xy[:, None, :] - xy[None, :, :]
    return np.hypot(d[..., 0], d[..., 1])


@pytest.mark.parametrize("rings, sites", [(0, 1), (1, 7), (2, 19), (3, 37)])
def test_ring_counts_and_spacing(rings, sites):
    xy = lay.hex_site_positions(rings, 500.0)
    assert xy.shape == (sites, 2) == (lay.n_hex_sites(rings), 2)
    assert np.allclose(xy[0], 0.0)
    if sites > 1:
        d = _pairwise(xy)
        np.fill_diagonal(d, np.inf)
        assert np.allclose(d.min(axis=1), 500.0)  # nearest neighbour at ISD everywhere
        # ring k sites are at hex-distance k: ring 1 all exactly at ISD from the centre
        assert np.allclose(np.hypot(*xy[1:7].T), 500.0)
        assert np.all(np.hypot(*xy[7:].T) > 500.0 + 1e-6)


def test_three_sector_layout_cells_and_azimuths():
    L = lay.hex_layout(2, 500.0)
    assert (L.n_sites, L.n_cells) == (19, 57)
    assert L.cell_azimuth_deg[:6].tolist() == [30.0, 150.0, 270.0, 30.0, 150.0, 270.0]
    assert L.cell_site[:6].tolist() == [0, 0, 0, 1, 1, 1]
    assert not L.cell_omni.any()
    # each boresight of the centre site points straight at a ring-1 neighbour
    for az in (30.0, 150.0, 270.0):
        target = 500.0 * np.array([np.cos(np.radians(az)), np.sin(np.radians(az))])
        assert np.min(np.hypot(*(L.site_xy - target).T)) < 1e-6
    omni = lay.hex_layout(1, 200.0, sectors_per_site=1)
    assert omni.n_cells == 7 and omni.cell_omni.all()
    with pytest.raises(ValueError):
        lay.hex_layout(1, 200.0, sectors_per_site=2)
    with pytest.raises(ValueError):
        lay.hex_layout(1, -5.0)


@pytest.mark.parametrize("rings", [1, 2, 3])
def test_wrap_around_makes_every_site_look_like_the_centre(rings):
    L = lay.hex_layout(rings, 500.0, wrap_around=True)
    profiles = []
    for s in range(L.n_sites):
        dx, dy = lay.site_offsets(L, L.site_xy[s : s + 1])
        profiles.append(np.sort(np.hypot(dx, dy)[0]))
    profiles = np.array(profiles)
    assert np.allclose(profiles, profiles[0], atol=1e-6)
    assert np.sum(np.isclose(profiles[0], 500.0)) == 6  # six neighbours at ISD, on a torus
    # without wrap-around the corner sites have fewer neighbours
    flat = lay.hex_layout(rings, 500.0)
    d = _pairwise(flat.site_xy)
    assert np.sum(np.isclose(d[-1], 500.0)) < 6


def test_wrap_positions_preserves_distances_and_lands_in_area():
    L = lay.hex_layout(2, 500.0, wrap_around=True)
    rng = np.random.default_rng(3)
    pts = rng.uniform(-6000, 6000, (3000, 2))
    w = lay.wrap_positions(L, pts)
    assert lay.in_area(L, w).all()
    inside = lay.sample_positions(L, 500, rng)
    assert np.allclose(lay.wrap_positions(L, inside), inside)  # identity inside
    # moved by a lattice translation: wrapped distances to every site unchanged
    near = inside + L.wrap_shifts[2]
    a = lay.site_offsets(L, inside)
    b = lay.site_offsets(L, lay.wrap_positions(L, near))
    assert np.allclose(a[0], b[0]) and np.allclose(a[1], b[1])
    # a layout without wrap-around leaves points alone
    flat = lay.hex_layout(2, 500.0)
    assert np.array_equal(lay.wrap_positions(flat, pts), pts)


def test_area_and_uniform_sampling():
    L = lay.hex_layout(2, 500.0)
    assert lay.in_area(L, L.site_xy).all()
    assert not lay.in_area(L, np.array([[5000.0, 0.0], [L.bounds[0] + 1, L.bounds[1] + 1]])).any()
    p1 = lay.sample_positions(L, 20000, np.random.default_rng(11))
    p2 = lay.sample_positions(L, 20000, np.random.default_rng(11))
    assert np.array_equal(p1, p2)
    assert lay.in_area(L, p1).all()
    x0, y0, x1, y1 = L.bounds
    assert p1[:, 0].min() >= x0 and p1[:, 0].max() <= x1 and p1[:, 1].min() >= y0 and p1[:, 1].max() <= y1
    # uniform over 19 equal site hexagons: about 1/19 lands in the centre one
    own = lay.nearest_lattice_site(p1, 500.0)
    frac = np.mean((own[:, 0] == 0) & (own[:, 1] == 0))
    assert frac == pytest.approx(1 / 19, abs=0.006)


def test_explicit_layout_groups_sites():
    cells = np.array([[0, 0], [0, 0], [0, 0], [800, 0], [0, 900]], dtype=float)
    az = np.array([0, 120, 240, np.nan, 90])
    L = lay.explicit_layout(cells, az, bs_height_m=np.array([25, 25, 25, 10, 30.0]))
    assert L.n_sites == 3 and L.n_cells == 5
    assert len(set(L.cell_site[:3].tolist())) == 1
    assert np.allclose(L.cell_xy, cells)
    assert L.cell_omni.tolist() == [False, False, False, True, False]
    assert L.bounds == (-250.0, -250.0, 1050.0, 1150.0)
    assert not L.wrap_around
    with pytest.raises(ValueError, match="share"):
        lay.explicit_layout(cells, az, bs_height_m=np.array([25, 20, 25, 10, 30.0]))
    with pytest.raises(ValueError):
        lay.explicit_layout(np.zeros((0, 2)))
    sid = lay.explicit_layout(cells[[0, 3]], site_id=np.array(["a", "b"]))
    assert sid.n_sites == 2 and sid.cell_omni.all()
