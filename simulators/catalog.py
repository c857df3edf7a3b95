"""Catalog items, users' hidden item tastes, the interaction events of sessions, interest drift.

Each application has a catalog (`catalog_items`, or DEFAULT_ITEMS when the config
gives none: sites, games, files). An item has a popularity (Zipf over a random
order) and one of N_TOPICS topics; a video item also has the top bitrate of its
ladder, which is the rate it needs at its best quality. Every user has hidden
tastes over the topics: a sparse Dirichlet draw, so a user likes a few topics,
not an average of all. Within a session of app a, the user moves through items:
each epoch after the first the current item ends with probability
epoch_s / item_mean_s, which emits an interaction with it, and the next item is
drawn with P(item | user, a) proportional to popularity x taste(topic). An
interaction is what a content platform logs when an item is watched or used,
so it reaches the bus as the item ends, never at a session's first epoch.

Interests drift slowly: every epoch each user's app interests and topic tastes
take a multiplicative log-normal step (`population.interest_drift` per
sqrt(hour)), renormalized; an app a user never uses stays at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import Config

DEFAULT_ITEMS = 20
N_TOPICS = 8
ZIPF_EXPONENT = 0.8
TASTE_CONCENTRATION = 0.3  # Dirichlet alpha per topic: small = a few topics per user


@dataclass(frozen=True)
class AppCatalog:
    item_ids: list[str]
    popularity: np.ndarray  # (items,) sums to 1
    topic: np.ndarray  # (items,) int topic index
    rate_mbps: np.ndarray  # (items,) rate the item needs at its best quality; nan = none


@dataclass(frozen=True)
class Catalog:
    apps: list[AppCatalog]  # in config application order
    taste: np.ndarray  # (users, N_TOPICS) hidden topic tastes, rows sum to 1


def draw_catalog(cfg: Config, n_users: int, rng: np.random.Generator) -> Catalog:
    """Every application's catalog and every user's hidden tastes; deterministic per generator state."""
    apps = []
    for name, app in cfg.applications.items():
        n = app.catalog_items or DEFAULT_ITEMS
        rank = rng.permutation(n) + 1
        pop = rank ** -ZIPF_EXPONENT
        ladder = np.asarray(app.bitrates_mbps, dtype=float)
        rate = rng.choice(ladder, size=n) if ladder.size else np.full(n, np.nan)
        apps.append(AppCatalog([f"{name}-{j}" for j in range(n)], pop / pop.sum(), rng.integers(0, N_TOPICS, n), rate))
    taste = rng.dirichlet(np.full(N_TOPICS, TASTE_CONCENTRATION), size=n_users)
    return Catalog(apps, taste)


def item_ends(active: np.ndarray, age: np.ndarray, item_mean_epochs: np.ndarray, app: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """(n,) bool: the user's current item ends this epoch (never in a session's first epoch)."""
    p = 1.0 / np.maximum(item_mean_epochs[np.where(active, app, 0)], 1.0)
    return active & (age > 0) & (rng.random(len(active)) < p)


def pick_items(cat: Catalog, users: np.ndarray, app: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(m,) the item index each user picks within its app's catalog (inverse CDF)."""
    out = np.empty(len(users), dtype=np.int64)
    u01 = rng.random(len(users))
    for a in np.unique(app):
        m = app == a
        c = cat.apps[int(a)]
        w = c.popularity[None, :] * cat.taste[users[m]][:, c.topic]
        cdf = np.cumsum(w, axis=1)
        out[m] = np.minimum((cdf < (u01[m] * cdf[:, -1])[:, None]).sum(axis=1), len(c.item_ids) - 1)
    return out


def drift(weights: np.ndarray, sigma_per_sqrt_h: float, dt_s: float, rng: np.random.Generator) -> None:
    """A log-normal step of every row in place, renormalized; zeros stay zero."""
    if sigma_per_sqrt_h <= 0:
        return
    step = np.exp(sigma_per_sqrt_h * np.sqrt(dt_s / 3600.0) * rng.standard_normal(weights.shape))
    weights *= step
    weights /= weights.sum(axis=1, keepdims=True)
