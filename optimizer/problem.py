"""The optimizer's input: one cell's users (`CellProblem`) or a whole epoch (`EpochProblem`).

Everything is flat float64/int64 arrays, validated once here at the boundary so
that the solvers below never see a NaN, an inf, a negative rate or an empty zone.
A bad value raises `ProblemError` (a ValueError) naming the field, the first bad
index and what is allowed.

Model (PRODUCT.md point 4): a cell has `n_prb` resource blocks of `prb_bw_hz`
each. User u has spectral efficiency se_u (bit/s/Hz, may be 0), so x_u PRBs give
rate r_u = c_u x_u Mbps with c_u = se_u * prb_bw_hz / 1e6. Its zone of tolerance
in rate units is [A_u, D_u] (A_u < D_u, Mbps) and its weight w_u >= 0.

Per-user minimum/maximum shares are fractions of the cell's PRBs; they are
turned into whole-PRB bounds here (`lo_prb = ceil(min_share N)`,
`hi_prb = floor(max_share N)`) so that every solver and the rounding agree on
integer box constraints. Slices (groups of users with min/max shares of the
cell) are only honoured by the cvxpy reference (`optimizer.reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from optimizer.curves import DEFAULT_EPS, inverse, log_satisfaction, satisfaction, slope_centre

# Physical ceilings: beyond them the products k c overflow; no radio channel
# carries 1000 bit/s/Hz and no user needs a petabit.
MAX_SE = 1e3
MAX_RATE_MBPS = 1e9
MAX_PRB_BW_HZ = 1e9

# Zones narrower than this (relative to D) make the logistic a numerical step:
# k*c overflows the solver's marginals. The satisfaction learner never produces
# them; a caller that does gets a clear reason instead of a silent wrong answer.
MIN_REL_WIDTH = 1e-9


class ProblemError(ValueError):
    """Invalid optimizer input; `field` names the array, `reason` says what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _vec(name: str, value: object, n: int | None, *, lo: float | None = 0.0, hi: float | None = None) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ProblemError(name, f"not a numeric array ({exc})") from None
    if arr.ndim != 1:
        raise ProblemError(name, f"must be 1-D, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ProblemError(name, f"has {arr.size} entries, expected {n}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ProblemError(name, f"entry {i} is {arr[i]!r}; NaN and inf are not allowed")
    if lo is not None and (arr < lo).any():
        i = int(np.argmax(arr < lo))
        raise ProblemError(name, f"entry {i} is {arr[i]!r}; must be >= {lo}")
    if hi is not None and (arr > hi).any():
        i = int(np.argmax(arr > hi))
        raise ProblemError(name, f"entry {i} is {arr[i]!r}; must be <= {hi}")
    return arr


def _scalar(name: str, value: object, *, lo: float, hi: float | None = None, open_lo: bool = False, open_hi: bool = False) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProblemError(name, f"{value!r} is not a number") from None
    if not np.isfinite(v):
        raise ProblemError(name, f"{v!r}; NaN and inf are not allowed")
    if v < lo or (open_lo and v == lo):
        raise ProblemError(name, f"{v!r}; must be {'>' if open_lo else '>='} {lo}")
    if hi is not None and (v > hi or (open_hi and v == hi)):
        raise ProblemError(name, f"{v!r}; must be {'<' if open_hi else '<='} {hi}")
    return v


def _zones(adequate: np.ndarray, desired: np.ndarray, name: str = "desired") -> None:
    bad = ~(desired - adequate >= MIN_REL_WIDTH * np.maximum(desired, 1e-12))
    if bad.any():
        i = int(np.argmax(bad))
        raise ProblemError(
            name,
            f"entry {i}: desired {desired[i]!r} must exceed adequate {adequate[i]!r} "
            f"by at least {MIN_REL_WIDTH:g} x desired (zone of tolerance A < D in Mbps)",
        )


def share_bounds(n_prb: np.ndarray | int, min_share: np.ndarray, max_share: np.ndarray, cell_of_user: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whole-PRB box bounds from shares: lo = min(ceil(min N), hi), hi = floor(max N) (tolerant of 1e-9 rounding)."""
    n = np.asarray(n_prb, dtype=np.float64)
    if cell_of_user is not None:
        n = n[cell_of_user]
    lo = np.ceil(min_share * n - 1e-9)
    hi = np.maximum(np.floor(max_share * n + 1e-9), 0.0)
    # Rounding can cross them on small cells (0.03 and 0.9 of 1 PRB -> 1 and 0): the cap wins.
    return np.clip(lo, 0.0, hi), hi


def target_rates(adequate: np.ndarray, desired: np.ndarray, eps: float, target: float | None) -> np.ndarray:
    """Each user's target rate: S^-1(target) for a satisfaction target, else the adequate level A."""
    if target is None:
        return adequate.copy()
    t = _scalar("target", target, lo=0.0, hi=1.0, open_lo=True, open_hi=True)
    if adequate.size == 0:
        return np.zeros(0)
    return np.maximum(np.asarray(inverse(t, adequate, desired, eps), dtype=np.float64).reshape(-1), 0.0)


def _validate_users(obj: object, n: int | None, eps: float) -> int:
    """Validate and coerce the per-user fields both problem classes share, in place; returns the user count.

    se, adequate, desired (the zones), weight, min_share and max_share, then
    the curve constants k, m. `n` is the expected count (None: from se).
    """
    put = object.__setattr__
    se = _vec("se", getattr(obj, "se"), n, hi=MAX_SE)
    n = se.size
    put(obj, "se", se)
    adequate = _vec("adequate", getattr(obj, "adequate"), n, hi=MAX_RATE_MBPS)
    desired = _vec("desired", getattr(obj, "desired"), n, hi=MAX_RATE_MBPS)
    _zones(adequate, desired)
    put(obj, "adequate", adequate)
    put(obj, "desired", desired)
    weight = getattr(obj, "weight")
    put(obj, "weight", np.ones(n) if weight is None else _vec("weight", weight, n, hi=1e6))
    shares = {}
    for name in ("min_share", "max_share"):
        raw = np.broadcast_to(np.asarray(getattr(obj, name), dtype=np.float64), (n,))
        shares[name] = _vec(name, raw, n, hi=1.0)
        put(obj, name, shares[name])
    bad = shares["min_share"] > shares["max_share"]
    if bad.any():
        i = int(np.argmax(bad))
        raise ProblemError("min_share", f"entry {i} exceeds max_share ({shares['min_share'][i]} > {shares['max_share'][i]})")
    k, m = slope_centre(adequate, desired, eps)
    put(obj, "k", np.asarray(k, dtype=np.float64).reshape(-1))
    put(obj, "m", np.asarray(m, dtype=np.float64).reshape(-1))
    return n


@dataclass(frozen=True, eq=False)
class CellProblem:
    """One cell in one epoch. Arrays are per user; validated and coerced on construction."""

    n_prb: int
    prb_bw_hz: float
    se: np.ndarray
    adequate: np.ndarray
    desired: np.ndarray
    weight: np.ndarray | None = None
    min_share: np.ndarray | float = 0.0
    max_share: np.ndarray | float = 1.0
    eps: float = DEFAULT_EPS
    slice_id: np.ndarray | None = None  # int per user, -1 = no slice
    slice_min_share: np.ndarray | None = None
    slice_max_share: np.ndarray | None = None
    user_ids: Sequence[str] | None = None
    # Derived on construction.
    c: np.ndarray = field(init=False, repr=False)
    k: np.ndarray = field(init=False, repr=False)
    m: np.ndarray = field(init=False, repr=False)
    lo_prb: np.ndarray = field(init=False, repr=False)
    hi_prb: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if isinstance(self.n_prb, bool) or not isinstance(self.n_prb, (int, np.integer)) or self.n_prb < 0:
            raise ProblemError("n_prb", f"{self.n_prb!r}; must be a whole number >= 0")
        put(self, "n_prb", int(self.n_prb))
        put(self, "prb_bw_hz", _scalar("prb_bw_hz", self.prb_bw_hz, lo=0.0, hi=MAX_PRB_BW_HZ, open_lo=True))
        put(self, "eps", _scalar("eps", self.eps, lo=0.0, hi=0.5, open_lo=True, open_hi=True))
        n = _validate_users(self, None, self.eps)
        if self.slice_id is not None:
            sid = np.asarray(self.slice_id)
            if sid.shape != (n,) or not np.issubdtype(sid.dtype, np.integer):
                raise ProblemError("slice_id", f"must be {n} integers (-1 = no slice)")
            n_sl = int(sid.max(initial=-1)) + 1
            if (sid < -1).any():
                raise ProblemError("slice_id", "slice ids must be >= -1")
            smin = _vec("slice_min_share", np.zeros(n_sl) if self.slice_min_share is None else self.slice_min_share, None, hi=1.0)
            smax = _vec("slice_max_share", np.ones(n_sl) if self.slice_max_share is None else self.slice_max_share, None, hi=1.0)
            if smin.size < n_sl or smax.size < n_sl:
                raise ProblemError("slice_max_share", f"needs one entry per slice ({n_sl})")
            if smin.sum() > 1.0 + 1e-12 or (smin > smax).any():
                raise ProblemError("slice_min_share", "slice minimum shares must sum to <= 1 and not exceed the maximum shares")
            put(self, "slice_id", sid.astype(np.int64))
            put(self, "slice_min_share", smin)
            put(self, "slice_max_share", smax)
        if self.user_ids is not None and len(self.user_ids) != n:
            raise ProblemError("user_ids", f"has {len(self.user_ids)} entries, expected {n}")
        put(self, "c", self.se * (self.prb_bw_hz / 1e6))
        lo, hi = share_bounds(self.n_prb, self.min_share, self.max_share)
        put(self, "lo_prb", lo)
        put(self, "hi_prb", hi)

    @property
    def n_users(self) -> int:
        return int(self.se.size)

    @property
    def has_slices(self) -> bool:
        return self.slice_id is not None and bool((self.slice_id >= 0).any())

    def target_rate(self, target: float | None) -> np.ndarray:
        return target_rates(self.adequate, self.desired, self.eps, target)


@dataclass(frozen=True, eq=False)
class EpochProblem:
    """All cells of one epoch: users sorted by cell, `offsets[i]:offsets[i+1]` are cell i's users."""

    offsets: np.ndarray
    n_prb: np.ndarray
    prb_bw_hz: np.ndarray | float
    se: np.ndarray
    adequate: np.ndarray
    desired: np.ndarray
    weight: np.ndarray | None = None
    min_share: np.ndarray | float = 0.0
    max_share: np.ndarray | float = 1.0
    eps: float = DEFAULT_EPS
    c: np.ndarray = field(init=False, repr=False)
    k: np.ndarray = field(init=False, repr=False)
    m: np.ndarray = field(init=False, repr=False)
    lo_prb: np.ndarray = field(init=False, repr=False)
    hi_prb: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        off = np.asarray(self.offsets)
        if off.ndim != 1 or off.size < 1 or not np.issubdtype(off.dtype, np.integer):
            raise ProblemError("offsets", "must be a 1-D integer array of n_cells + 1 entries")
        off = off.astype(np.int64)
        if off[0] != 0 or (np.diff(off) < 0).any():
            raise ProblemError("offsets", "must start at 0 and be non-decreasing")
        n_cells = off.size - 1
        put(self, "offsets", off)
        nprb = np.asarray(self.n_prb)
        if nprb.shape != (n_cells,) or not np.issubdtype(nprb.dtype, np.integer) or (nprb < 0).any():
            raise ProblemError("n_prb", f"must be {n_cells} whole numbers >= 0")
        put(self, "n_prb", nprb.astype(np.int64))
        bw = _vec("prb_bw_hz", np.broadcast_to(np.asarray(self.prb_bw_hz, dtype=np.float64), (n_cells,)), n_cells,
                  hi=MAX_PRB_BW_HZ)
        if (bw <= 0).any():
            raise ProblemError("prb_bw_hz", "must be > 0")
        put(self, "prb_bw_hz", bw)
        put(self, "eps", _scalar("eps", self.eps, lo=0.0, hi=0.5, open_lo=True, open_hi=True))
        _validate_users(self, int(off[-1]), self.eps)
        cell_of_user = np.repeat(np.arange(n_cells), np.diff(off))
        put(self, "c", self.se * (bw[cell_of_user] / 1e6))
        lo, hi = share_bounds(self.n_prb, self.min_share, self.max_share, cell_of_user)
        put(self, "lo_prb", lo)
        put(self, "hi_prb", hi)

    @property
    def n_cells(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def n_users(self) -> int:
        return int(self.offsets[-1])

    def target_rate(self, target: float | None) -> np.ndarray:
        return target_rates(self.adequate, self.desired, self.eps, target)

    def cell(self, i: int) -> CellProblem:
        """Cell i as a `CellProblem` (copies; for tests, the reference and baselines)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return CellProblem(
            n_prb=int(self.n_prb[i]),
            prb_bw_hz=float(self.prb_bw_hz[i]),
            se=self.se[a:b].copy(),
            adequate=self.adequate[a:b].copy(),
            desired=self.desired[a:b].copy(),
            weight=self.weight[a:b].copy(),
            min_share=self.min_share[a:b].copy(),
            max_share=self.max_share[a:b].copy(),
            eps=self.eps,
        )

    @classmethod
    def from_cells(cls, cells: Sequence[CellProblem]) -> "EpochProblem":
        """Stack cells (all with the same eps) into one epoch."""
        if cells and len({c.eps for c in cells}) > 1:
            raise ProblemError("eps", "all cells of an epoch must share one eps")
        cat = lambda name: np.concatenate([getattr(c, name) for c in cells]) if cells else np.zeros(0)  # noqa: E731
        return cls(
            offsets=np.concatenate([[0], np.cumsum([c.n_users for c in cells], dtype=np.int64)]).astype(np.int64),
            n_prb=np.array([c.n_prb for c in cells], dtype=np.int64),
            prb_bw_hz=np.array([c.prb_bw_hz for c in cells], dtype=np.float64),
            se=cat("se"),
            adequate=cat("adequate"),
            desired=cat("desired"),
            weight=cat("weight"),
            min_share=cat("min_share"),
            max_share=cat("max_share"),
            eps=cells[0].eps if cells else DEFAULT_EPS,
        )


def objective_value(prob: CellProblem, scalarization: str, x: np.ndarray, price: float = 0.0) -> float:
    """The scalarization's objective at a continuous allocation x (the same evaluator for both solvers)."""
    rate = prob.c * x
    if scalarization == "weighted_sum":
        ls = np.asarray(log_satisfaction(rate, prob.adequate, prob.desired, prob.eps)).reshape(-1)
        return float(np.sum(np.where(prob.weight > 0, prob.weight * ls, 0.0)) - price * np.sum(x))
    if scalarization == "epsilon_constraint":
        return float(np.sum(x))
    if scalarization == "max_min":
        act = prob.c > 0
        if not act.any():
            return 1.0
        s = np.asarray(satisfaction(rate, prob.adequate, prob.desired, prob.eps)).reshape(-1)
        return float(np.min(s[act]))
    raise ProblemError("scalarization", f"{scalarization!r}; allowed: weighted_sum, epsilon_constraint, max_min")
