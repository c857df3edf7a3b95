"""The simulated user population and its hidden truth.

Users are drawn from the config's segments: each gets, per application, a hidden
adequate level A and desired level D (log-normal around the segment's medians,
in the app's own metric), hidden interests over applications (a Dirichlet draw
around the segment's app mix), a priority weight, a feedback propensity and a
mobility profile. The engine never sees any of it; `truth_table` writes it beside
a run so estimates can be scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import Config

# How strongly a user's A and D move together (log scale): people who are demanding
# about the floor tend to be demanding about the ceiling too.
AD_CORRELATION = 0.7
# Dirichlet concentration of a user's app interests around the segment mix.
INTEREST_CONCENTRATION = 8.0


@dataclass(frozen=True)
class Population:
    user_ids: list[str]
    segment: np.ndarray  # (n,) int index into segment_names
    segment_names: list[str]
    apps: list[str]
    metrics: list[str]  # per app
    adequate: np.ndarray  # (n, n_apps) hidden A, app metric units
    desired: np.ndarray  # (n, n_apps) hidden D, app metric units
    interest: np.ndarray  # (n, n_apps) hidden app preference, rows sum to 1 (0 = never uses it)
    weight: np.ndarray  # (n,) operator priority
    feedback_rate: np.ndarray  # (n,) probability of a signal per epoch in session
    speed_min: np.ndarray  # (n,) m/s
    speed_max: np.ndarray  # (n,) m/s
    mobility: list[str]  # per segment
    memory: np.ndarray  # per segment, Gauss-Markov alpha

    @property
    def n(self) -> int:
        return len(self.user_ids)


def draw_population(cfg: Config, rng: np.random.Generator) -> Population:
    """Draw `cfg.population.users` users; deterministic for a given generator state."""
    segs = cfg.population.segments
    apps = list(cfg.applications)
    n = cfg.population.users
    shares = np.array([s.share for s in segs], dtype=float)
    segment = rng.choice(len(segs), size=n, p=shares / shares.sum())

    adequate = np.full((n, len(apps)), np.nan)
    desired = np.full((n, len(apps)), np.nan)
    interest = np.zeros((n, len(apps)))
    weight = np.empty(n)
    feedback_rate = np.empty(n)
    speed_min = np.empty(n)
    speed_max = np.empty(n)
    for si, seg in enumerate(segs):
        idx = np.flatnonzero(segment == si)
        m = len(idx)
        weight[idx] = seg.weight
        feedback_rate[idx] = seg.feedback_rate
        speed_min[idx], speed_max[idx] = seg.mobility.speed_mps
        mix = np.array([seg.app_mix.get(a, 0.0) for a in apps])
        used = mix > 0
        alpha = INTEREST_CONCENTRATION * mix[used] / mix[used].sum()
        interest[np.ix_(idx, np.flatnonzero(used))] = rng.dirichlet(alpha, size=m) if m else np.empty((0, used.sum()))
        for ai, app in enumerate(apps):
            tol = seg.tolerance.get(app)
            if tol is None:
                continue
            common = rng.standard_normal(m)
            own_a = rng.standard_normal(m)
            own_d = rng.standard_normal(m)
            r = AD_CORRELATION
            za = r * common + np.sqrt(1 - r * r) * own_a
            zd = r * common + np.sqrt(1 - r * r) * own_d
            a = tol.adequate.median * np.exp(tol.adequate.log_sd * za)
            d = tol.desired.median * np.exp(tol.desired.log_sd * zd)
            spec = cfg.applications[app]
            if not spec.higher_is_better:
                # Delay below the rate-independent part (base_ms) is out of any network's
                # reach: nobody's tolerance can sit there. Keep levels 10% above it.
                floor = 1.1 * spec.base_ms / (1000.0 if spec.metric.value == "startup_delay_s" else 1.0)
                a = np.maximum(a, floor * 1.05 + 1e-9)
                d = np.maximum(d, floor)
            # Keep D on the better side of A by at least 5%: a zone of zero width is
            # not a tolerance, it is a threshold the curve cannot represent.
            if spec.higher_is_better:
                d = np.maximum(d, a * 1.05)
            else:
                d = np.minimum(d, a / 1.05)
            adequate[idx, ai] = a
            desired[idx, ai] = d
    return Population(
        user_ids=[f"u{i}" for i in range(n)],
        segment=segment,
        segment_names=[s.name for s in segs],
        apps=apps,
        metrics=[cfg.applications[a].metric.value for a in apps],
        adequate=adequate,
        desired=desired,
        interest=interest,
        weight=weight,
        feedback_rate=feedback_rate,
        speed_min=speed_min,
        speed_max=speed_max,
        mobility=[s.mobility.model for s in segs],
        memory=np.array([s.mobility.memory for s in segs]),
    )


def truth_table(pop: Population) -> list[dict[str, object]]:
    """The hidden truth, one row per (user, app) the user can use, for scoring."""
    rows = []
    for u in range(pop.n):
        for ai, app in enumerate(pop.apps):
            if np.isnan(pop.adequate[u, ai]):
                continue
            rows.append({
                "user_id": pop.user_ids[u],
                "segment": pop.segment_names[pop.segment[u]],
                "app": app,
                "metric": pop.metrics[ai],
                "adequate": float(pop.adequate[u, ai]),
                "desired": float(pop.desired[u, ai]),
                "interest": float(pop.interest[u, ai]),
            })
    return rows
