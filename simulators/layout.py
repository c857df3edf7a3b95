"""Where the cells are: hexagonal multi-site layouts and explicit cell lists.

A `Layout` holds sites (masts) and cells (sectors, or one omni cell per site).
Coordinates in metres, azimuths in degrees counter-clockwise from +x (east).

Hexagonal layouts follow the usual 3GPP system-simulation geometry (TR 38.901
Sec. 7.8 calibration, ITU-R M.2412): sites on a hexagonal lattice with
inter-site distance ISD, ring k holding 6k sites (1, 7, 19, 37 ... in total),
three sectors per site with boresights 30, 150 and 270 deg, each pointing at a
neighbouring site. Optional wrap-around makes the cluster a torus: every
distance is the shortest one over the cluster and its six translated copies,
so edge users see as much interference as centre users.

Lattice maths uses axial coordinates (q, r) with basis vectors a1 = ISD at 30
deg and a2 = ISD at 90 deg; the hex distance of (q, r) from the centre is
(|q| + |r| + |q + r|) / 2, which is the site's ring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THREE_SECTOR_AZIMUTHS_DEG = (30.0, 150.0, 270.0)

_SQRT3 = np.sqrt(3.0)
# Lattice basis (unit ISD): a1 at 30 deg, a2 at 90 deg.
_BASIS = np.array([[_SQRT3 / 2.0, 0.0], [0.5, 1.0]])  # columns a1, a2
_BASIS_INV = np.linalg.inv(_BASIS)


@dataclass(frozen=True, eq=False)
class Layout:
    """Sites and cells of one network.

    site_xy (S, 2) m; site_height_m (S,); cell_site (C,) index into the sites;
    cell_azimuth_deg (C,) boresight, NaN for an omni cell; wrap_shifts (K, 2)
    translations tried for every distance (row 0 is (0, 0); K = 1 without
    wrap-around); bounds (xmin, ymin, xmax, ymax) of the area users live in;
    n_rings and isd_m set for hexagonal layouts only.
    """

    site_xy: np.ndarray
    site_height_m: np.ndarray
    cell_site: np.ndarray
    cell_azimuth_deg: np.ndarray
    wrap_shifts: np.ndarray
    bounds: tuple[float, float, float, float]
    isd_m: float | None = None
    n_rings: int | None = None

    @property
    def n_sites(self) -> int:
        return int(self.site_xy.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.cell_site.shape[0])

    @property
    def cell_xy(self) -> np.ndarray:
        return self.site_xy[self.cell_site]

    @property
    def cell_omni(self) -> np.ndarray:
        return np.isnan(self.cell_azimuth_deg)

    @property
    def wrap_around(self) -> bool:
        return self.wrap_shifts.shape[0] > 1


def hex_sites_axial(n_rings: int) -> np.ndarray:
    """Axial lattice coordinates (S, 2) of the sites of rings 0..n_rings.

    Ordered by ring, then counter-clockwise by angle from +x, so site 0 is the
    centre and the numbering is the same for every ISD.
    """
    if n_rings < 0:
        raise ValueError(f"n_rings must be >= 0, got {n_rings}")
    rng_ = np.arange(-n_rings, n_rings + 1)
    q, r = np.meshgrid(rng_, rng_, indexing="ij")
    q, r = q.ravel(), r.ravel()
    ring = (np.abs(q) + np.abs(r) + np.abs(q + r)) // 2
    keep = ring <= n_rings
    q, r, ring = q[keep], r[keep], ring[keep]
    xy = np.stack([q, r], axis=1) @ _BASIS.T
    angle = np.mod(np.arctan2(xy[:, 1], xy[:, 0]), 2 * np.pi)
    order = np.lexsort((np.round(angle, 9), ring))
    return np.stack([q[order], r[order]], axis=1)


def axial_to_xy(axial: np.ndarray, isd_m: float) -> np.ndarray:
    """Lattice coordinates -> metres."""
    return isd_m * (np.asarray(axial, dtype=float) @ _BASIS.T)


def hex_site_positions(n_rings: int, isd_m: float) -> np.ndarray:
    """Site coordinates (S, 2) in metres of a hexagonal layout, centre site at 0."""
    return axial_to_xy(hex_sites_axial(n_rings), isd_m)


def n_hex_sites(n_rings: int) -> int:
    """1, 7, 19, 37 ... sites for 0, 1, 2, 3 ... rings."""
    return 3 * n_rings * (n_rings + 1) + 1


def _superlattice_axial(n_rings: int) -> np.ndarray:
    """The six translations (axial) that tile the plane with copies of the cluster.

    (N+1, N) has squared lattice norm 3N^2 + 3N + 1 = number of sites, so the
    cluster and its translates by this vector and its 60-degree rotations tile
    the lattice; rotating by 60 deg maps (q, r) to (-r, q + r) in this basis.
    """
    v = np.array([n_rings + 1, n_rings])
    out = []
    for _ in range(6):
        out.append(v.copy())
        v = np.array([-v[1], v[0] + v[1]])
    return np.array(out)


def wrap_shift_vectors(n_rings: int, isd_m: float) -> np.ndarray:
    """(7, 2) translations in metres for wrap-around: (0, 0) and the six copies."""
    return np.vstack([np.zeros((1, 2)), axial_to_xy(_superlattice_axial(n_rings), isd_m)])


def _hex_bounds(site_xy: np.ndarray, isd_m: float) -> tuple[float, float, float, float]:
    # A site's lattice (Voronoi) hexagon has vertices at 0, 60, ... deg at ISD/sqrt(3)
    # and flat sides at +-ISD/2 in y.
    hx, hy = isd_m / _SQRT3, isd_m / 2.0
    return (
        float(site_xy[:, 0].min() - hx),
        float(site_xy[:, 1].min() - hy),
        float(site_xy[:, 0].max() + hx),
        float(site_xy[:, 1].max() + hy),
    )


def hex_layout(
    n_rings: int = 2,
    isd_m: float = 500.0,
    sectors_per_site: int = 3,
    bs_height_m: float = 25.0,
    wrap_around: bool = False,
    azimuths_deg: tuple[float, ...] = THREE_SECTOR_AZIMUTHS_DEG,
) -> Layout:
    """Hexagonal layout: n_rings rings of sites, 1 (omni) or 3 sectors each.

    Cells are numbered site-major: cell = 3 * site + sector for 3 sectors.
    """
    if isd_m <= 0:
        raise ValueError(f"isd_m must be positive, got {isd_m}")
    if sectors_per_site not in (1, 3):
        raise ValueError(f"sectors_per_site must be 1 (omni) or 3, got {sectors_per_site}")
    if sectors_per_site == 3 and len(azimuths_deg) != 3:
        raise ValueError("3 sectors need 3 azimuths")
    site_xy = hex_site_positions(n_rings, isd_m)
    n_sites = site_xy.shape[0]
    if sectors_per_site == 1:
        cell_site = np.arange(n_sites)
        az = np.full(n_sites, np.nan)
    else:
        cell_site = np.repeat(np.arange(n_sites), 3)
        az = np.tile(np.asarray(azimuths_deg, dtype=float), n_sites)
    shifts = wrap_shift_vectors(n_rings, isd_m) if wrap_around and n_rings > 0 else np.zeros((1, 2))
    return Layout(
        site_xy=site_xy,
        site_height_m=np.full(n_sites, float(bs_height_m)),
        cell_site=cell_site.astype(np.int64),
        cell_azimuth_deg=az,
        wrap_shifts=shifts,
        bounds=_hex_bounds(site_xy, isd_m),
        isd_m=float(isd_m),
        n_rings=int(n_rings),
    )


def explicit_layout(
    cell_xy: np.ndarray,
    azimuth_deg: np.ndarray | None = None,
    bs_height_m: float | np.ndarray = 25.0,
    site_id: np.ndarray | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    margin_m: float = 250.0,
) -> Layout:
    """Layout from a list of cells: positions (C, 2), azimuths (NaN = omni).

    Cells sharing a site (same `site_id`, or when not given the same position)
    share its mast, so they also share shadowing and LOS state. Without
    `bounds` the area is the cells' bounding box grown by `margin_m`.
    """
    cell_xy = np.asarray(cell_xy, dtype=float)
    if cell_xy.ndim != 2 or cell_xy.shape[1] != 2 or cell_xy.shape[0] == 0:
        raise ValueError(f"cell_xy must have shape (C, 2) with C >= 1, got {cell_xy.shape}")
    n = cell_xy.shape[0]
    az = np.full(n, np.nan) if azimuth_deg is None else np.asarray(azimuth_deg, dtype=float)
    if az.shape != (n,):
        raise ValueError(f"azimuth_deg must have shape ({n},), got {az.shape}")
    h = np.broadcast_to(np.asarray(bs_height_m, dtype=float), (n,))
    if site_id is None:
        _, first, cell_site = np.unique(cell_xy, axis=0, return_index=True, return_inverse=True)
    else:
        sid = np.asarray(site_id)
        if sid.shape != (n,):
            raise ValueError(f"site_id must have shape ({n},), got {sid.shape}")
        _, first, cell_site = np.unique(sid, return_index=True, return_inverse=True)
    cell_site = cell_site.ravel().astype(np.int64)
    site_xy = cell_xy[first]
    site_h = h[first]
    if not np.allclose(site_xy[cell_site], cell_xy) or not np.allclose(site_h[cell_site], h):
        raise ValueError("cells of one site must share its position and height")
    if bounds is None:
        lo, hi = cell_xy.min(axis=0) - margin_m, cell_xy.max(axis=0) + margin_m
        bounds = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    if not (bounds[0] < bounds[2] and bounds[1] < bounds[3]):
        raise ValueError(f"bounds must be (xmin, ymin, xmax, ymax) with min < max, got {bounds}")
    return Layout(
        site_xy=site_xy,
        site_height_m=site_h.copy(),
        cell_site=cell_site,
        cell_azimuth_deg=az,
        wrap_shifts=np.zeros((1, 2)),
        bounds=tuple(float(b) for b in bounds),
    )


def site_offsets(layout: Layout, user_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (dx, dy), each (n, S), from every site to every user.

    With wrap-around each is the shortest over the site's translated copies.
    """
    u = np.asarray(user_xy, dtype=float)
    # (n, 1, 1) - (1, S, K): all copies, then keep the nearest.
    sx = layout.site_xy[:, 0][:, None] + layout.wrap_shifts[:, 0][None, :]
    sy = layout.site_xy[:, 1][:, None] + layout.wrap_shifts[:, 1][None, :]
    dx = u[:, 0][:, None, None] - sx[None]
    dy = u[:, 1][:, None, None] - sy[None]
    k = np.argmin(dx * dx + dy * dy, axis=2)[..., None]
    return np.take_along_axis(dx, k, 2)[..., 0], np.take_along_axis(dy, k, 2)[..., 0]


def _round_axial(qr: np.ndarray) -> np.ndarray:
    """Nearest lattice point of fractional axial coordinates (cube rounding)."""
    q, r = qr[:, 0], qr[:, 1]
    s = -q - r
    rq, rr, rs = np.round(q), np.round(r), np.round(s)
    dq, dr, ds = np.abs(rq - q), np.abs(rr - r), np.abs(rs - s)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    rq = np.where(fix_q, -rr - rs, rq)
    rr = np.where(fix_r, -rq - rs, rr)
    return np.stack([rq, rr], axis=1).astype(np.int64)


def nearest_lattice_site(xy: np.ndarray, isd_m: float) -> np.ndarray:
    """Axial coordinates (n, 2) of the lattice site whose hexagon holds each point."""
    frac = (np.asarray(xy, dtype=float) / isd_m) @ _BASIS_INV.T
    return _round_axial(frac)


def _hex_ring(axial: np.ndarray) -> np.ndarray:
    q, r = axial[:, 0], axial[:, 1]
    return (np.abs(q) + np.abs(r) + np.abs(q + r)) // 2


def in_area(layout: Layout, xy: np.ndarray) -> np.ndarray:
    """Whether each point lies in the layout's area.

    Hexagonal layouts: inside the union of the sites' lattice hexagons;
    explicit layouts: inside `bounds`.
    """
    xy = np.asarray(xy, dtype=float)
    if layout.n_rings is None:
        x0, y0, x1, y1 = layout.bounds
        return (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    return _hex_ring(nearest_lattice_site(xy, layout.isd_m)) <= layout.n_rings


def wrap_positions(layout: Layout, xy: np.ndarray) -> np.ndarray:
    """Map points to their copy inside the cluster (wrap-around layouts only).

    Without wrap-around the points are returned unchanged.
    """
    xy = np.asarray(xy, dtype=float)
    if not layout.wrap_around:
        return xy.copy()
    n = layout.n_rings
    site = nearest_lattice_site(xy, layout.isd_m)
    sup = _superlattice_axial(n)[:2].T.astype(float)  # columns v1, v2
    coef = site @ np.linalg.inv(sup).T
    base = np.floor(coef).astype(np.int64)
    best = np.zeros_like(site)
    found = np.zeros(site.shape[0], dtype=bool)
    # The residue of a lattice site is unique; it is among the nearby combinations.
    for i in (-1, 0, 1, 2):
        for j in (-1, 0, 1, 2):
            k = base + np.array([i, j])
            cand = site - k @ sup.T.astype(np.int64)
            ok = ~found & (_hex_ring(cand) <= n)
            best[ok] = (k @ sup.T.astype(np.int64))[ok]
            found |= ok
    return xy - axial_to_xy(best, layout.isd_m)


def sample_positions(layout: Layout, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points uniform over the layout's area (`in_area`), by rejection."""
    x0, y0, x1, y1 = layout.bounds
    out = np.empty((0, 2))
    while out.shape[0] < n:
        m = max(16, int(1.5 * (n - out.shape[0])))
        pts = np.column_stack([rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)])
        out = np.vstack([out, pts[in_area(layout, pts)]])
    return out[:n]
