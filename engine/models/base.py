"""The one interface every stateful model in zot follows.

Like River's estimators: a model learns from a batch, answers queries, and can be
snapshotted to plain data and restored bit-for-bit. Operators stay pure by taking
and returning the state these models wrap; the models are the convenient handle
the embedded runner, the Faust agents and the benchmarks share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class OnlineModel(ABC):
    """A model updated online from batches of events."""

    @abstractmethod
    def update(self, batch: Any) -> None:
        """Learn from one batch of events, in the order given.

        Must be equivalent to updating with each event of the batch in turn
        (batching is a speed device, never a change of meaning). Invalid rows are
        rejected before any state changes, so a bad batch never corrupts state.
        """

    @abstractmethod
    def predict(self, query: Any) -> Any:
        """Answer a query from the current state without changing it."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """Return the full state as plain data (numpy arrays, numbers, strings).

        `restore(snapshot())` on a fresh instance gives a model whose every later
        `update` and `predict` is identical to this one's.
        """

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with one returned by `snapshot`."""
