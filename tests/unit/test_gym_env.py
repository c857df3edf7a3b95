"""The simulator as a Gymnasium environment: API, determinism, fidelity to the loop, no hidden truth."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from engine.config import Config, HexLayout, load_config
from simulators.gym_env import ENV_ID, ZotNetworkEnv
from simulators.loop import run
from simulators.population import Population, draw_population

ROOT = Path(__file__).resolve().parents[2]
BASE = load_config(ROOT / "configs" / "example.yaml")


def small(seed: int = 3, epochs: int = 12, users: int = 60) -> Config:
    """One site, three sectors, 60 users: seconds per episode.

    Interests drift as the example config says (the environment runs the loop's world).
    """
    pop: dict = {"users": users}
    sim: dict = {"epochs": epochs, "seed": seed}
    return BASE.model_copy(update={
        "population": BASE.population.model_copy(update=pop),
        "cells": BASE.cells.model_copy(update={"hex": HexLayout(sites=1, isd_m=400, sectors=3, wrap_around=False)}),
        "simulation": BASE.simulation.model_copy(update=sim),
    })


def episode(env: ZotNetworkEnv, policy, seed: int) -> tuple[list[dict], list[float], list[dict]]:
    """Observations (from reset on), rewards and infos of one episode; `policy(obs) -> action`."""
    obs, info = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    done = False
    while not done:
        obs, r, term, done, info = env.step(policy(obs))
        assert term is False
        observations.append(obs)
        rewards.append(r)
        infos.append(info)
    return observations, rewards, infos


def same_obs(a: dict, b: dict, keys=None) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in (keys or a))


def summary_of(res, policy: str) -> str:
    return json.dumps(res.outcomes[policy].summary(res.population.segment_names, res.cell_ids), sort_keys=True)


@pytest.mark.parametrize("mode", ["allocation", "weights"])
def test_check_env_passes_without_warnings(mode):
    env = gym.make(ENV_ID, config=small(), action_mode=mode, max_users_per_cell=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    obs, _ = env.reset(seed=1)
    assert obs["mask"].shape == (3, 8) and obs["app"].shape == (3, 8, len(BASE.applications))
    assert env.action_space.shape == ((3, 8) if mode == "allocation" else (3, 9))


def test_config_file_path_and_bad_arguments():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the example may set loop features the env does not model
        env = ZotNetworkEnv(ROOT / "configs" / "example.yaml")
    assert env.n_cells == 21 and env.epochs == BASE.simulation.epochs
    with pytest.raises(ValueError, match="action_mode"):
        ZotNetworkEnv(small(), "prices")
    env = ZotNetworkEnv(small())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.neutral_action())
    env.reset(seed=1)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(env.action_space.shape, np.nan, np.float32))


@pytest.mark.parametrize("mode", ["allocation", "weights"])
def test_same_seed_same_trajectory(mode):
    def run_once(seed: int):
        env = ZotNetworkEnv(small(), mode, max_users_per_cell=8)
        env.action_space.seed(11)
        return episode(env, lambda _obs: env.action_space.sample(), seed)

    o1, r1, i1 = run_once(5)
    o2, r2, i2 = run_once(5)
    assert len(o1) == len(o2) == 13
    assert all(same_obs(a, b) for a, b in zip(o1, o2))
    assert r1 == r2
    assert json.dumps(i1) == json.dumps(i2)
    o3, r3, _ = run_once(6)
    assert r3 != r1 and not same_obs(o3[0], o1[0])


def test_reset_without_seed_starts_from_config_seed_then_varies():
    env = ZotNetworkEnv(small(seed=4))
    first, info = env.reset()
    assert info["seed"] == 4
    again, _ = ZotNetworkEnv(small(seed=4)).reset(seed=4)
    assert same_obs(first, again)
    second, info2 = env.reset()
    assert info2["seed"] != 4 and not same_obs(first, second)


def test_equal_share_action_reproduces_the_equal_share_baseline():
    """All-ones shares are equal_share, decision for decision: the same summary as `zot simulate`'s."""
    cfg = small(epochs=15)
    res = run(cfg, ["equal_share"])
    env = ZotNetworkEnv(cfg, "allocation", max_users_per_cell=64)
    _, rewards, infos = episode(env, lambda _obs: env.equal_share_action(), cfg.simulation.seed)
    assert all(i["overflow_users"] == 0 for i in infos)
    assert json.dumps(env.summary(), sort_keys=True) == summary_of(res, "equal_share")
    series = res.outcomes["equal_share"].sat_series
    assert [i["mean_satisfaction"] for i in infos[1:]] == pytest.approx(series, abs=0, rel=1e-12)


def test_neutral_weights_reproduce_the_engine_in_the_loop():
    """Weights mode at the config's own weights and price decides what zot's engine decides over the bus."""
    cfg = small(epochs=15)
    res = run(cfg, ["zot"])
    env = ZotNetworkEnv(cfg, "weights", max_users_per_cell=64)
    _, _, infos = episode(env, lambda _obs: env.neutral_action(), cfg.simulation.seed)
    assert json.dumps(env.summary(), sort_keys=True) == summary_of(res, "zot")
    # ... learning from the same feedback signals; the engine has not consumed the last
    # epoch's yet (it would at its next epoch), the environment learns them at once.
    assert res.engine.core.counters.feedback > 0
    learned = int(env._world.learner.state.n_signals.sum())
    assert learned == res.engine.core.counters.feedback + infos[-1]["feedback_events"]


def test_weights_mode_beats_a_bad_allocation():
    cfg = small(epochs=20)
    alloc = ZotNetworkEnv(cfg, "allocation", max_users_per_cell=16)

    def everything_to_first_slot(_obs):
        a = np.zeros(alloc.action_space.shape, np.float32)
        a[:, 0] = 1.0
        return a

    _, bad, bad_info = episode(alloc, everything_to_first_slot, 3)
    weights = ZotNetworkEnv(cfg, "weights", max_users_per_cell=16)
    _, good, good_info = episode(weights, lambda _obs: weights.neutral_action(), 3)
    assert np.mean(good) > np.mean(bad) + 0.1
    assert np.mean([i["adequate_share"] for i in good_info[1:]]) > np.mean([i["adequate_share"] for i in bad_info[1:]])


def test_default_reward_is_satisfaction_minus_priced_bandwidth():
    env = ZotNetworkEnv(small(), "allocation", bandwidth_price=0.3)
    env.reset(seed=2)
    _, r, _, _, info = env.step(env.equal_share_action())
    assert r == pytest.approx(info["mean_satisfaction"] - 0.3 * info["bandwidth_used_frac"], abs=1e-15)
    custom = ZotNetworkEnv(small(), "allocation", reward_fn=lambda o: o.adequate_share)
    custom.reset(seed=2)
    _, r2, _, _, info2 = custom.step(custom.equal_share_action())
    assert r2 == info2["adequate_share"] == info["adequate_share"]


def test_allocation_shares_below_one_leave_prbs_unused_and_overflow_gets_nothing():
    env = ZotNetworkEnv(small(), "allocation", max_users_per_cell=2, include_hidden_truth=True)
    obs, info = env.reset(seed=3)
    assert info["overflow_users"] > 0  # 60 users, 3 cells, 2 slots each
    assert info["overflow_users"] == info["active_users"] - int(obs["mask"].sum())
    a = np.zeros(env.action_space.shape, np.float32)
    a[:, 0] = 0.5  # half of each cell to its first user, nothing to anyone else
    busy = obs["mask"][:, 0] == 1
    _, _, _, _, info = env.step(a)
    assert info["prb_used"] == 26 * int(busy.sum())  # x = 25.5 PRBs, rounded half up
    sat = info["hidden_truth"]["satisfaction"]
    assert (sat[busy, 0] > 0).all()
    # The next observation reports the loads this allocation caused (interference follows them).
    nxt = env.step(a)[0]
    assert np.allclose(nxt["cell"][busy, 1], 26 / 51)


def test_price_column_trades_bandwidth_for_satisfaction():
    def run_price(level: float):
        env = ZotNetworkEnv(small(), "weights", max_users_per_cell=16)
        act = env.neutral_action()
        act[:, -1] = level
        return episode(env, lambda _obs: act, 3)[2][1:]

    cheap, dear = run_price(0.0), run_price(1.0)
    used = lambda infos: np.mean([i["bandwidth_used_frac"] for i in infos])  # noqa: E731
    sat = lambda infos: np.mean([i["mean_satisfaction"] for i in infos])  # noqa: E731
    assert used(dear) < 0.8 * used(cheap)
    assert sat(dear) < sat(cheap)


def test_truncated_at_the_configs_epoch_count():
    env = ZotNetworkEnv(small(epochs=4))
    _, _, infos = episode(env, lambda _obs: env.equal_share_action(), 1)
    assert [i["epoch"] for i in infos] == [0, 0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="over"):
        env.step(env.equal_share_action())
    short = ZotNetworkEnv(small(epochs=4), epochs=2)
    assert len(episode(short, lambda _obs: short.equal_share_action(), 1)[1]) == 2


def permuted_truth(cfg: Config, rng: np.random.Generator) -> Population:
    """The same users, but each segment's hidden zones dealt out to other users of that segment."""
    pop = draw_population(cfg, rng)
    own = np.random.default_rng(99)  # not `rng`: every other draw stays the same
    perm = np.arange(pop.n)
    for s in range(len(pop.segment_names)):
        idx = np.flatnonzero(pop.segment == s)
        perm[idx] = own.permutation(idx)
    return dataclasses.replace(pop, adequate=pop.adequate[perm], desired=pop.desired[perm])


def test_observation_holds_no_hidden_truth():
    cfg = small(epochs=15)
    equal = lambda _obs: np.ones((3, 32), np.float32)  # noqa: E731
    kw = dict(max_users_per_cell=32, include_hidden_truth=True)

    # Without learning nothing in the observation may depend on the hidden zones, at any step.
    env_a = ZotNetworkEnv(cfg, "allocation", learn=False, **kw)
    env_b = ZotNetworkEnv(cfg, "allocation", learn=False, population=permuted_truth, **kw)
    oa, ra, ia = episode(env_a, equal, 3)
    ob, rb, ib = episode(env_b, equal, 3)
    assert not np.array_equal(env_a.population.adequate, env_b.population.adequate)
    assert not np.array_equal(ia[0]["hidden_truth"]["zone"], ib[0]["hidden_truth"]["zone"])
    assert ra != rb  # the truth matters for what users get out of it ...
    assert all(same_obs(a, b) for a, b in zip(oa, ob))  # ... but the agent cannot see it

    # With learning, only the learned zones may differ, and only through feedback.
    env_c = ZotNetworkEnv(cfg, "allocation", **kw)
    env_d = ZotNetworkEnv(cfg, "allocation", population=permuted_truth, **kw)
    oc, _, ic = episode(env_c, equal, 3)
    od, _, _ = episode(env_d, equal, 3)
    assert same_obs(oc[0], od[0])
    unlearned = ["mask", "se", "app", "segment", "n_signals", "cell", "hour"]
    assert all(same_obs(a, b, unlearned) for a, b in zip(oc, od))
    assert sum(i["feedback_events"] for i in ic[1:]) > 0
    assert not np.array_equal(oc[-1]["zone"], od[-1]["zone"])
    assert oc[-1]["n_signals"].max() > 0
    # And the observation never carries the hidden zones themselves.
    for o, i in zip(oc, ic):
        truth = i["hidden_truth"]["zone"]
        filled = o["mask"] == 1
        assert not np.allclose(o["zone"][filled], truth[filled].astype(np.float32))


def test_hidden_truth_only_on_request():
    env = ZotNetworkEnv(small())
    _, info = env.reset(seed=1)
    _, _, _, _, info2 = env.step(env.equal_share_action())
    assert "hidden_truth" not in info and "hidden_truth" not in info2


def test_apps_are_observed_only_once_the_network_names_them():
    cfg = small(epochs=20)
    late = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"app_detection_epochs": 2})})
    env = ZotNetworkEnv(late, learn=False)
    observations, _, _ = episode(env, lambda o: env.equal_share_action(), seed=4)
    unnamed = [((o["mask"] == 1) & (o["app"].sum(axis=2) == 0)).sum() for o in observations]
    assert sum(unnamed) > 0  # sessions in their first 2 epochs show no app
    env0 = ZotNetworkEnv(cfg, learn=False)
    observations0, _, _ = episode(env0, lambda o: env0.equal_share_action(), seed=4)
    assert all(((o["mask"] == 1) == (o["app"].sum(axis=2) == 1)).all() for o in observations0)
