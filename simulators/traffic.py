"""Application sessions: when users are active and with which application.

A user alternates between idle spells and sessions. Session lengths are geometric
with each application's mean duration; an idle user starts a session at the rate
that makes its long-run share of time in session equal its segment's `activity`,
modulated by time of day. The application is drawn from the user's hidden
interests weighted by the hour (`app_hour_weights`: an app's `peak_hour`), so what
users run reveals their interests, and the hour's part in them, to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IDLE = -1


def diurnal(hour: np.ndarray | float) -> np.ndarray | float:
    """Relative activity by hour of day: a night trough near 04:00, a peak near 20:00."""
    return 0.55 + 0.45 * np.cos(2 * np.pi * (np.asarray(hour) - 20.0) / 24.0)


@dataclass
class Sessions:
    app: np.ndarray  # (n,) app index, IDLE when not in a session
    remaining: np.ndarray  # (n,) epochs left in the current session
    started: np.ndarray  # (n,) bool: the session began this epoch

    @classmethod
    def idle(cls, n: int) -> "Sessions":
        return cls(np.full(n, IDLE, np.int64), np.zeros(n, np.int64), np.zeros(n, bool))

    @classmethod
    def steady(cls, interest: np.ndarray, activity: np.ndarray, mean_epochs: np.ndarray,
               rng: np.random.Generator) -> "Sessions":
        """A start in the long-run regime: each user in session with probability `activity`.

        By memorylessness, a session in progress has a geometric remaining length
        with the same mean, so no warm-up epochs are needed.
        """
        n = interest.shape[0]
        busy = rng.random(n) < activity
        chosen = _pick(interest, rng)
        lengths = rng.geometric(1.0 / np.maximum(mean_epochs[chosen], 1.0))
        return cls(np.where(busy, chosen, IDLE).astype(np.int64), np.where(busy, lengths, 0).astype(np.int64),
                   busy.copy())


def app_hour_weights(peak_hour: list[float | None], amplitude: list[float], hour: float) -> np.ndarray:
    """(n_apps,) how much more (or less) each app is chosen at `hour` than on average."""
    w = np.ones(len(peak_hour))
    for a, (peak, amp) in enumerate(zip(peak_hour, amplitude)):
        if peak is not None:
            w[a] = 1.0 + amp * np.cos(2 * np.pi * (hour - peak) / 24.0)
    return w


def choice_interest(interest: np.ndarray, hour_weights: np.ndarray) -> np.ndarray:
    """The app distribution a user picks from now: hidden interests x the hour's weights."""
    if np.all(hour_weights == 1.0):
        return interest
    w = interest * hour_weights[None, :]
    s = w.sum(axis=1, keepdims=True)
    return np.where(s > 0, w / np.where(s > 0, s, 1.0), interest)


def _pick(interest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One app per user, drawn from its interests (inverse CDF)."""
    cdf = np.cumsum(interest, axis=1)
    u = rng.random(interest.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), interest.shape[1] - 1)


def step_sessions(
    s: Sessions,
    interest: np.ndarray,
    activity: np.ndarray,
    mean_epochs: np.ndarray,
    hour: float,
    rng: np.random.Generator,
) -> Sessions:
    """Advance every user one epoch. `mean_epochs[a]` is app a's mean session length."""
    n, n_apps = interest.shape
    remaining = s.remaining - 1
    app = np.where(remaining > 0, s.app, IDLE)
    idle = app == IDLE
    # Start rate for the target duty cycle: a/(1-a) = E[session]/E[idle spell].
    mean_len = interest @ mean_epochs
    p_start = np.clip(activity / (1.0 - activity) / np.maximum(mean_len, 1.0) * diurnal(hour) / 0.55, 0.0, 1.0)
    u = rng.random(n)
    start = idle & (u < p_start)
    chosen = _pick(interest, rng)
    lengths = rng.geometric(1.0 / np.maximum(mean_epochs[chosen], 1.0))
    app = np.where(start, chosen, app)
    remaining = np.where(start, lengths, np.maximum(remaining, 0))
    return Sessions(app.astype(np.int64), remaining.astype(np.int64), start)
