"""Baseline policies for the simulator (wrapping optimizer.baselines)."""

from __future__ import annotations

import numpy as np

from engine.config import Config
from simulators.population import Population


class BaselinePolicy:
    def __init__(self, name: str, cfg: Config, pop: Population, a_rate: np.ndarray, d_rate: np.ndarray) -> None:
        raise NotImplementedError(name)
