"""The network simulator as a Gymnasium environment, for training allocators against it.

`ZotNetworkEnv(config, action_mode)` runs one scenario of an operator config file
(`configs/*.yaml` or an `engine.config.Config`), one step per allocation epoch,
with the simulator's own parts: `RadioNetwork` (movement, links, serving cells,
SINR from the last epoch's loads), `traffic` sessions, the hidden-truth
population, `FeedbackBehaviour`, and `Outcomes`, through `simulators.world.World`.
The random streams are the simulation loop's (`world.Streams`), so `reset(seed=cfg.simulation.seed)` replays
the same users, movement, sessions and feedback draws as `zot simulate`.

Observation (a `spaces.Dict`; `gymnasium.wrappers.FlattenObservation` makes it
one vector). Each cell has `max_users_per_cell` user slots, filled with the
cell's users in session in user order; users past the last slot are
"overflow" (counted in `info["overflow_users"]`):

    mask       (C, K)     int8   1 where the slot holds a user in session
    se         (C, K)     f32    spectral efficiency (bit/s/Hz after overhead), this epoch
    app        (C, K, A)  int8   one-hot application the user runs
    segment    (C, K, S)  int8   one-hot segment (operators know it; it picks the prior)
    zone       (C, K, 2)  f32    estimated adequate and desired level (Mbps) for that app
    zone_sd    (C, K, 2)  f32    their posterior standard deviations
    n_signals  (C, K)     f32    feedback signals behind the estimate
    cell       (C, 3)     f32    PRBs, last epoch's load (used / PRBs), users in session
    hour       (1,)       f32    hour of day

The zone estimates are the engine's learner (`operators.satisfaction`): the
config's population prior per segment and app, updated with every feedback
signal of users in session, exactly as the engine does (`learn=False` keeps the
prior). The hidden truth (each user's real zone, its satisfaction) never enters
the observation; with `include_hidden_truth=True` it is in `info["hidden_truth"]`
for evaluation only.

Actions (`action_mode`, fixed at construction; both a Box in [0, 1]):

    "allocation"  (C, K): PRB shares per slot. Shares of users in session are
                  scaled by 1 / max(1, their sum) (so summing past 1 uses the
                  whole cell, less leaves PRBs unused), turned into x = share x N
                  and into whole PRBs by the optimizer's largest-remainder rounding
                  (`optimizer.rounding.round_prbs`, total round(sum x)). Empty
                  slots' entries are ignored; overflow users get no PRBs. All ones
                  is the equal-share baseline (`equal_share_action`).
    "weights"     (C, K + 1): the weighted-sum scalarization solved by zot's Numba
                  optimizer (`optimizer.solver`) on the estimated zones. Column j < K
                  sets slot j's weight to 2 a x its segment's priority (overflow users
                  keep their priority); column K sets the cell's price per PRB to
                  p0 x price_span^(2 a - 1), p0 = objective.resource_price (0.01 if 0).
                  All 0.5 (`neutral_action`) is the config's own objective, what
                  the engine decides.

Reward (per epoch, default): mean hidden-truth satisfaction of the users in
session (0 when nobody is) minus `bandwidth_price` x the share of all cells'
PRBs used. `reward_fn(EpochOutcome) -> float` replaces it. `info` carries the
epoch's outcomes (adequate and desired shares, mean satisfaction, PRBs used...).

An episode is the config's `simulation.epochs` epochs (or `epochs=`); the last
step returns `truncated=True` (a time limit: the network itself never ends, so
value estimates should bootstrap there), never `terminated`.

The world is `simulators.world.World`, the one `zot simulate` runs: interests
drift, apps are chosen by interest and hour, and with
`simulation.app_detection_epochs` a session's app is unknown (no one-hot, the
segment's most likely app for the zone estimate) until the network names it.
Catalog items and their interaction events happen in the world but only reach
an engine over the bus, which this environment does not use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from engine.config import Config, load_config
from operators import satisfaction as zot
from operators.epoch import EpochInput, build_problem
from optimizer.problem import MAX_RATE_MBPS
from optimizer.rounding import round_prbs
from optimizer.solver import solve_arrays
from simulators.channel import cqi_efficiency
from simulators.layout import Layout
from simulators.direct_engine import DirectEnginePolicy
from simulators.world import Streams, World
from simulators.outcomes import Outcomes
from simulators.policies import by_cell
from simulators.population import Population, draw_population
from simulators.radio import DL_OVERHEAD, build_layout
from simulators.traffic import Sessions

ENV_ID = "zot/Network-v0"
ACTION_MODES: tuple[str, ...] = ("allocation", "weights")
# The price base when the config's resource_price is 0 (the config's default).
DEFAULT_PRICE = 0.01
# Observation ceilings: the optimizer refuses zones above MAX_RATE_MBPS; counts are clipped.
MAX_SIGNALS = 1e9

PopulationFn = Callable[[Config, np.random.Generator], Population]


@dataclass(frozen=True)
class EpochOutcome:
    """What one epoch achieved, over the users in session (hidden truth)."""

    epoch: int
    active_users: int
    adequate_share: float  # share at or above their adequate level (0 if nobody in session)
    desired_share: float
    mean_satisfaction: float
    prb_used: int  # all cells
    prb_total: int
    bandwidth_used_frac: float
    handovers: int
    overflow_users: int  # in session but past the last slot of their cell
    feedback_events: int


RewardFn = Callable[[EpochOutcome], float]


def default_reward(bandwidth_price: float) -> RewardFn:
    """Mean hidden-truth satisfaction minus `bandwidth_price` x share of PRBs used."""

    def reward(o: EpochOutcome) -> float:
        return o.mean_satisfaction - bandwidth_price * o.bandwidth_used_frac

    return reward


class ZotNetworkEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """The zot network simulator, one allocation epoch per step (see the module doc)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        config: str | Path | Config,
        action_mode: str = "allocation",
        *,
        max_users_per_cell: int = 32,
        bandwidth_price: float = 0.1,
        reward_fn: RewardFn | None = None,
        learn: bool = True,
        epochs: int | None = None,
        price_span: float = 100.0,
        include_hidden_truth: bool = False,
        population: PopulationFn = draw_population,
    ) -> None:
        self.cfg = config if isinstance(config, Config) else load_config(config)
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode {action_mode!r}; allowed: {', '.join(ACTION_MODES)}")
        if max_users_per_cell < 1:
            raise ValueError(f"max_users_per_cell must be >= 1, got {max_users_per_cell}")
        if not (math.isfinite(price_span) and price_span >= 1.0):
            raise ValueError(f"price_span must be finite and >= 1, got {price_span}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.action_mode = action_mode
        self.max_users_per_cell = int(max_users_per_cell)
        self.reward_fn = reward_fn if reward_fn is not None else default_reward(bandwidth_price)
        self.learn = learn
        self.epochs = int(epochs if epochs is not None else self.cfg.simulation.epochs)
        self.price_span = float(price_span)
        self.base_price = self.cfg.objective.resource_price or DEFAULT_PRICE
        self.include_hidden_truth = include_hidden_truth
        self._population_fn = population
        self.prb_bandwidth_hz = self.cfg.radio.prb_bandwidth_hz

        cfg = self.cfg
        layout, self.cell_ids = build_layout(cfg)
        self.apps = list(cfg.applications)
        self.segment_names = [s.name for s in cfg.population.segments]
        c, k, a, s = layout.n_cells, self.max_users_per_cell, len(self.apps), len(self.segment_names)
        self.n_cells = c
        max_prb = _max_prb(cfg, layout)
        se_max = float(cqi_efficiency(cfg.radio.cqi_table).max() * (1.0 - DL_OVERHEAD))
        f32 = np.float32
        self.observation_space = spaces.Dict({
            "mask": spaces.MultiBinary((c, k)),
            "se": spaces.Box(0.0, se_max, (c, k), f32),
            "app": spaces.MultiBinary((c, k, a)),
            "segment": spaces.MultiBinary((c, k, s)),
            "zone": spaces.Box(0.0, MAX_RATE_MBPS, (c, k, 2), f32),
            "zone_sd": spaces.Box(0.0, MAX_RATE_MBPS, (c, k, 2), f32),
            "n_signals": spaces.Box(0.0, MAX_SIGNALS, (c, k), f32),
            "cell": spaces.Box(np.zeros((c, 3), f32),
                               np.tile(np.array([max_prb, 1.0, cfg.population.users], f32), (c, 1)), (c, 3), f32),
            "hour": spaces.Box(0.0, 24.0, (1,), f32),
        })
        width = k if action_mode == "allocation" else k + 1
        self.action_space = spaces.Box(0.0, 1.0, (c, width), f32)
        self._world: _World | None = None

    # ------------------------------------------------------------------ helpers for agents

    def equal_share_action(self) -> np.ndarray:
        """Allocation mode: every user in session gets the same share (the equal-share baseline)."""
        if self.action_mode != "allocation":
            raise ValueError("equal_share_action is an allocation-mode action")
        return np.ones(self.action_space.shape, dtype=np.float32)

    def neutral_action(self) -> np.ndarray:
        """The config's own policy: equal share (allocation) or the config's objective (weights)."""
        if self.action_mode == "allocation":
            return self.equal_share_action()
        return np.full(self.action_space.shape, 0.5, dtype=np.float32)

    @property
    def outcomes(self) -> Outcomes:
        """Outcomes accumulated over the current episode (the simulator's own accumulator)."""
        return self._w().outcomes

    @property
    def population(self) -> Population:
        """This episode's users, hidden truth included: for evaluation, never for the agent."""
        return self._w().pop

    def summary(self) -> dict:
        """The episode so far, with the keys of a policy in `summary.json` (docs/simulator.md)."""
        w = self._w()
        return w.outcomes.summary(w.pop.segment_names, self.cell_ids)

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode. The first reset without a seed uses the config's seed;
        later ones draw a seed from the environment's generator."""
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; none are supported")
        if seed is None and self._np_random is None:
            seed = self.cfg.simulation.seed
        super().reset(seed=seed)
        episode_seed = seed if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        self._world = _World(self.cfg, Streams.from_seed(episode_seed), self._population_fn, self.learn,
                             self.max_users_per_cell)
        self._world.advance()
        info: dict[str, Any] = {"epoch": 0, "seed": episode_seed, **self._slot_counts()}
        obs = self._observe()
        if self.include_hidden_truth:
            info["hidden_truth"] = {"zone": self._hidden_zone()}
        return obs, info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        w = self._w()
        if w.epoch >= self.epochs:
            raise RuntimeError("the episode is over (truncated); call reset()")
        act = np.asarray(action, dtype=np.float64)
        if act.shape != self.action_space.shape:
            raise ValueError(f"action has shape {act.shape}, expected {self.action_space.shape}")
        if not np.isfinite(act).all():
            raise ValueError("action has NaN or infinite entries")
        act = np.clip(act, 0.0, 1.0)
        if self.action_mode == "allocation":
            prb = self._allocate_shares(act)
        else:
            prb = self._allocate_weights(act)
        slots_played = w.slot_user.copy()
        counts = self._slot_counts()
        outcome, sat = w.apply(prb, counts["overflow_users"])
        reward = float(self.reward_fn(outcome))
        w.epoch += 1
        truncated = w.epoch >= self.epochs
        # The next epoch's state, also after the last step (gymnasium wants a real next observation).
        w.advance()
        info: dict[str, Any] = asdict(outcome)
        if self.include_hidden_truth:
            info["hidden_truth"] = {
                "satisfaction": np.where(slots_played >= 0, sat[np.maximum(slots_played, 0)], 0.0),
                "zone": self._hidden_zone(),
            }
        return self._observe(), reward, False, truncated, info

    # ------------------------------------------------------------------ internals

    def _w(self) -> "_World":
        if self._world is None:
            raise RuntimeError("call reset() first")
        return self._world

    def _slot_counts(self) -> dict[str, int]:
        w = self._w()
        return {"active_users": int(w.active.sum()), "overflow_users": int(w.active.sum() - (w.slot_user >= 0).sum())}

    def _observe(self) -> dict[str, np.ndarray]:
        w = self._w()
        c, k = self.n_cells, self.max_users_per_cell
        su = w.slot_user
        filled = su >= 0
        u = su[filled]
        f32 = np.float32
        obs = {
            "mask": filled.astype(np.int8),
            "se": np.zeros((c, k), f32),
            "app": np.zeros((c, k, len(self.apps)), np.int8),
            "segment": np.zeros((c, k, len(self.segment_names)), np.int8),
            "zone": np.zeros((c, k, 2), f32),
            "zone_sd": np.zeros((c, k, 2), f32),
            "n_signals": np.zeros((c, k), f32),
        }
        obs["se"][filled] = w.se[u]
        ci, ki = np.nonzero(filled)
        named = w.now.named[u]  # the app as the network has classified it (none in a session's first epochs)
        obs["app"][ci[named >= 0], ki[named >= 0], named[named >= 0]] = 1
        obs["segment"][ci, ki, w.pop.segment[u]] = 1
        est = w.estimates
        pos = w.est_pos[u]
        obs["zone"][filled] = np.clip(np.stack([est.a_mean[pos], est.d_mean[pos]], axis=1), 0.0, MAX_RATE_MBPS)
        obs["zone_sd"][filled] = np.clip(np.stack([est.a_sd[pos], est.d_sd[pos]], axis=1), 0.0, MAX_RATE_MBPS)
        obs["n_signals"][filled] = np.minimum(est.n_signals[pos], MAX_SIGNALS)
        users_in_session = np.bincount(w.ep.serving[w.active], minlength=c)
        obs["cell"] = np.stack([w.radio.prb_per_cell, w.loads[0], users_in_session], axis=1).astype(f32)
        obs["hour"] = np.array([w.hour], f32)
        return obs

    def _hidden_zone(self) -> np.ndarray:
        w = self._w()
        su = w.slot_user
        out = np.zeros(su.shape + (2,))
        filled = su >= 0
        u = su[filled]
        out[filled] = np.stack([w.a_u[u], w.d_u[u]], axis=1)
        return out

    def _allocate_shares(self, act: np.ndarray) -> np.ndarray:
        """Shares -> x = share / max(1, sum) x N -> whole PRBs by largest remainder."""
        w = self._w()
        prb = np.zeros(w.pop.n, dtype=np.int64)
        for c in range(self.n_cells):
            users = w.slot_user[c][w.slot_user[c] >= 0]
            if users.size == 0:
                continue
            share = act[c, :users.size]
            total = float(share.sum())
            if total <= 0.0:
                continue
            n_prb = int(w.radio.prb_per_cell[c])
            x = share * (n_prb / max(total, 1.0))
            budget = min(n_prb, int(math.floor(float(x.sum()) + 0.5)))
            prb[users] = round_prbs(x, np.zeros(users.size), np.full(users.size, float(n_prb)), budget)
        return prb

    def _allocate_weights(self, act: np.ndarray) -> np.ndarray:
        """Weighted sum on the estimated zones, per cell at the action's price and weights."""
        w = self._w()
        cfg, obj = self.cfg, self.cfg.objective
        k = self.max_users_per_cell
        order, offsets = w.order, w.offsets
        pos_in_cell = np.arange(order.size) - offsets[w.ep.serving[order]]
        mult = np.ones(order.size)
        slotted = pos_in_cell < k
        mult[slotted] = 2.0 * act[w.ep.serving[order][slotted], pos_in_cell[slotted]]
        price = self.base_price * self.price_span ** (2.0 * act[:, k] - 1.0)
        est = w.estimates
        pos = w.est_pos[order]
        inp = EpochInput(cell_ids=self.cell_ids, epochs=[w.epoch] * self.n_cells, prb_total=w.radio.prb_per_cell,
                         offsets=offsets, user_ids=[w.pop.user_ids[u] for u in order],
                         apps=[self.apps[a] for a in w.sessions.app[order]], se=w.se[order])
        problem = build_problem(inp, est.a_mean[pos], est.d_mean[pos], w.pop.weight[order] * mult,
                                self.prb_bandwidth_hz, obj.eps, obj.min_share, obj.max_share)
        target = problem.target_rate(obj.satisfaction_target if obj.target_level == "satisfaction" else None)
        got = np.zeros(order.size, dtype=np.int64)
        # One solve per cell: the solver takes one price per call, and cells are independent.
        for c in range(self.n_cells):
            a, b = int(offsets[c]), int(offsets[c + 1])
            if a == b:
                continue
            res = solve_arrays(np.array([0, b - a], np.int64), problem.n_prb[c:c + 1], problem.c[a:b],
                               problem.k[a:b], problem.m[a:b], problem.weight[a:b], problem.lo_prb[a:b],
                               problem.hi_prb[a:b], target[a:b], "weighted_sum", price=float(price[c]),
                               overload=cfg.overload.policy, weighted=cfg.overload.weighted)
            got[a:b] = res.prb
        prb = np.zeros(w.pop.n, dtype=np.int64)
        prb[order] = got
        return prb


def _max_prb(cfg: Config, layout: Layout) -> int:
    """The largest cell's PRBs (explicit cells may override the radio's count)."""
    prb = [cfg.radio.prb_per_cell]
    if cfg.cells.layout == "explicit":
        prb += [c.prb for c in cfg.cells.explicit if c.prb is not None]
    return int(max(prb))


class _World:
    """One episode: the simulator's `World` for one policy, plus the engine's learner
    and the slot layout the observation and actions use."""

    def __init__(self, cfg: Config, rs: Streams, population: PopulationFn, learn: bool, slots: int) -> None:
        self.cfg = cfg
        self.learn = learn
        self.k = slots
        self.world = World(cfg, n_policies=1, population=population, rs=rs)
        self.pop, self.radio = self.world.pop, self.world.radio
        self.a_rate, self.d_rate = self.world.a_rate, self.world.d_rate
        self.loads = self.world.loads
        self.outcomes = Outcomes(self.pop.n, len(self.pop.segment_names), self.radio.n_cells,
                                 cfg.radio.prb_per_cell, cfg.simulation.epoch_s, cfg.pricing.prb_hour)
        # The engine's learner, from the operator's prior (the config), never from the drawn users.
        self.learner = DirectEnginePolicy(cfg, self.pop, self.radio.cell_ids)
        self._segment_app = np.array([self.pop.apps.index(max(s.app_mix, key=s.app_mix.__getitem__))
                                      for s in cfg.population.segments])
        self.epoch = 0

    def advance(self) -> None:
        """Move to the next epoch: radio, sessions, efficiency, who gives feedback, slots, estimates."""
        self.now = now = self.world.advance()
        self.hour, self.ep = now.hour, now.radio
        self.active, self.a_u, self.d_u = now.active, now.a_u, now.d_u
        self.se = self.world.efficiency(now)[0]
        # Users in session by serving cell (the order every baseline and the engine's KPI use).
        self.order, self.offsets = by_cell(self.ep.serving, self.active, self.radio.n_cells)
        # Slot j of a cell holds its j-th user in session; the rest overflow.
        pos = np.arange(self.order.size) - self.offsets[self.ep.serving[self.order]]
        keep = pos < self.k
        self.slot_user = np.full((self.radio.n_cells, self.k), -1, dtype=np.int64)
        self.slot_user[self.ep.serving[self.order][keep], pos[keep]] = self.order[keep]
        self._estimate()

    @property
    def sessions(self) -> Sessions:
        return self.world.sessions

    def _estimate(self) -> None:
        """The learner's zone of every user in session for its current app (cold start: the prior)."""
        pop = self.pop
        users = self.order
        # Not yet classified: the segment's most likely app (the network knows no better).
        named = self.now.named[users]
        app = np.where(named >= 0, named, self._segment_app[pop.segment[users]])
        if self.learn:
            self.estimates = zot.estimates(self.learner.state, self.learner.rows(users, app))
        else:
            self.estimates = zot.estimates_for_keys(
                self.learner.state, [pop.user_ids[u] for u in users], [pop.apps[a] for a in app],
                [pop.segment_names[s] for s in pop.segment[users]])
        self.est_pos = np.full(pop.n, -1, dtype=np.int64)
        self.est_pos[users] = np.arange(users.size)

    def apply(self, prb: np.ndarray, overflow: int) -> tuple[EpochOutcome, np.ndarray]:
        """Deliver `prb`, record the outcomes, draw the feedback and learn from it (as loop.run)."""
        now, pop = self.now, self.pop
        got = self.world.deliver(0, now, prb, self.se)
        active, used = now.active, got.used
        handovers = int(self.ep.handed_over.sum())
        self.outcomes.record(active, pop.segment, self.ep.serving, got.sat, got.at_adequate, got.at_desired, used,
                             handovers)
        who, signal, rating = self.world.feedback(now, got.rate)
        if self.learn and who.size:
            self._learn(who, got.rate, signal, rating)
        n_act = int(active.sum())
        total = int(self.radio.prb_per_cell.sum())
        out = EpochOutcome(
            epoch=self.epoch, active_users=n_act,
            adequate_share=float(got.at_adequate.sum() / n_act) if n_act else 0.0,
            desired_share=float(got.at_desired.sum() / n_act) if n_act else 0.0,
            mean_satisfaction=float(got.sat[active].mean()) if n_act else 0.0,
            prb_used=int(used.sum()), prb_total=total, bandwidth_used_frac=float(used.sum() / total),
            handovers=handovers, overflow_users=overflow, feedback_events=int(who.size),
        )
        return out, got.sat

    def _learn(self, who: np.ndarray, rate: np.ndarray, signal: np.ndarray, rating: np.ndarray) -> None:
        """The engine's update for these feedback events, with the QoS as it travels on the bus."""
        app = self.sessions.app
        self.learner.learn(who, app, self.world.qos_on_the_wire(who, app, rate), signal, rating)


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="simulators.gym_env:ZotNetworkEnv")
