"""The simulation loop for baseline policies, many epochs per Numba call.

`simulators.loop.run` advances one epoch at a time from Python: at mobile-env's
size (30 users, 13 cells) almost all of its ~100 us per epoch is the overhead of
a few hundred small NumPy calls, not arithmetic. `run_compiled` runs the same
model for policy lists without `zot` (the engine stays in Python, on the bus)
with every epoch's work in one Numba kernel, `_run_epochs`, called once per
chunk of epochs (a chunk is ~0.2 s of work, so the progress bar still moves).

It gives the same `RunResult` as `loop.run(cfg, policies)` on the same seed:
`summarize` of both is identical (tests/unit/test_compiled_run.py), because

- the set-up is `simulators.world.World` itself (population, radio network,
  zones, first sessions, catalog, `Streams`), as in `loop.run`; the kernel does
  what `World.advance`, `World.deliver` and `World.feedback` do;
- every per-epoch random number is drawn inside the kernel from the same
  `numpy.random.Generator` objects (Numba draws through the generator's own bit
  generator, with NumPy's algorithms), in the same order: radio (mobility, link
  innovations, fading key), interests (drift of app interests and topic
  tastes, item ends, item picks), traffic (session starts, app picks, lengths),
  feedback (who gives feedback). Draws whose results baselines never use are
  still made, so the streams stay in step: the topic tastes' normals, one
  uniform per item pick, the 4 uniforms per feedback event of
  `FeedbackBehaviour.emit`;
- each step is a compiled twin of the NumPy step, tested equal to it:
  `mobility.mobility_kernel`, `channel.refresh_due_kernel`,
  `channel._links_kernel` (the kernel the NumPy path uses too),
  `handover.handover_kernel`, `channel.efficiency_kernel`,
  `policies.allocate_kernel` (the optimizer's own batched kernels),
  `outcomes.record_kernel`, and `sessions_kernel` here (a mirror of
  `traffic.step_sessions`, which is not ours to change) with the same
  floating-point operations in the same order.

One place can differ in the last bit: the interference sum of the SINR, a BLAS
product in NumPy and a loop here. The SINR only matters through its CQI, so a
run differs only if some SINR lands within ~1e-15 dB of a CQI threshold. (The
sessions' `interest @ mean_epochs` is Numba's `np.dot`, the same BLAS dgemv,
bit-equal for more than one user.)

Mirrors `loop.run` as it is: baselines ignore feedback events, items and the app
detection delay, and only the session-start window counts. If the loop changes,
the equality test (tests/unit/test_compiled_run.py) says so.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from numba import njit

from engine.config import Config
from simulators import channel as ch
from simulators.channel import _links_kernel, efficiency_kernel, refresh_due_kernel
from simulators.handover import HandoverState, handover_kernel
from simulators.loop import RunResult
from simulators.mobility import MobilityState, mobility_kernel
from simulators.outcomes import SAT_BINS, Outcomes, outcomes_from_arrays, pairwise_sum, record_kernel
from simulators.policies import BaselinePolicy, allocate_kernel
from simulators.radio import DL_OVERHEAD, L3_A, L3_PERIOD_S, REFRESH_M
from simulators.traffic import IDLE, Sessions
from simulators.world import World

ProgressFn = Callable[[int], None]

# Work per kernel call, in user-policy-epochs: about 0.2 s, so progress moves.
CHUNK_WORK = 400_000
# The feedback uniforms `FeedbackBehaviour.emit` draws per event (satisfied, rated,
# signal, rating); tested against `emit` itself.
FEEDBACK_DRAWS_PER_EVENT = 4
PING_PONG_EPOCHS = 5  # handover_step's default, which RadioNetwork uses

# ------------------------------------------------------------ stale-cache guard
# Numba's cache is keyed on the file of the cached function only: a kernel that
# calls (and so embeds) kernels of other modules is not recompiled when those
# change. Before compiling, drop the cached code of this module and of the
# modules it embeds whenever any of their sources changed.
_HERE = Path(__file__).resolve().parent
_DEPS = [_HERE / f"{m}.py" for m in ("compiled_run", "channel", "mobility", "handover", "outcomes", "policies",
                                      "pathloss", "antenna")]
_DEPS += [_HERE.parent / "optimizer" / f"{m}.py" for m in ("solver", "baselines_epoch", "rounding", "overload",
                                                           "curves")]


def _guard_numba_cache() -> None:
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in _DEPS if p.exists())).hexdigest()
    stamp = _HERE / "__pycache__" / "compiled_run.deps"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    for p in _DEPS:
        for f in (p.parent / "__pycache__").glob(f"{p.stem}.*.nb[ic]"):
            f.unlink(missing_ok=True)
    try:
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass


_guard_numba_cache()


# ------------------------------------------------------------ sessions (mirror of traffic.step_sessions)


@njit(cache=True, error_model="numpy")
def sessions_kernel(app, remaining, started, interest, activity, mean_len, mean_epochs, hour, rng, draws, chosen):
    """`traffic.step_sessions` in place on (app, remaining, started).

    mean_len = interest @ mean_epochs is passed in (computed once while
    interests are fixed); draws, chosen: scratch (n,). Draws n uniforms
    (starts), n uniforms (app picks), n geometric lengths, in that order.
    """
    n, n_apps = interest.shape
    diurnal = 0.55 + 0.45 * math.cos(2 * np.pi * (hour - 20.0) / 24.0)
    for u in range(n):
        r = remaining[u] - 1
        remaining[u] = r
        if r <= 0:
            app[u] = IDLE
    for u in range(n):
        draws[u] = rng.random()
    for u in range(n):
        total = 0.0
        for j in range(n_apps):
            total += interest[u, j]
        x = rng.random() * total
        k = 0
        cdf = 0.0
        for j in range(n_apps):  # the inverse CDF of _pick, cumsum in the same order
            cdf += interest[u, j]
            if cdf < x:
                k += 1
        chosen[u] = min(k, n_apps - 1)
    for u in range(n):
        length = np.int64(rng.geometric(1.0 / max(mean_epochs[chosen[u]], 1.0)))
        p = activity[u] / (1.0 - activity[u]) / max(mean_len[u], 1.0) * diurnal / 0.55
        p = min(max(p, 0.0), 1.0)
        start = app[u] == IDLE and draws[u] < p
        started[u] = start
        if start:
            app[u] = chosen[u]
            remaining[u] = length
        else:
            remaining[u] = max(remaining[u], 0)


def step_sessions_nb(s: Sessions, interest: np.ndarray, activity: np.ndarray, mean_epochs: np.ndarray, hour: float,
                     rng: np.random.Generator) -> Sessions:
    """`traffic.step_sessions` through `sessions_kernel`: same signature, draws and result."""
    n = interest.shape[0]
    out = Sessions(np.array(s.app, np.int64), np.array(s.remaining, np.int64), np.zeros(n, np.bool_))
    sessions_kernel(out.app, out.remaining, out.started, np.ascontiguousarray(interest, np.float64),
                    np.ascontiguousarray(activity, np.float64), np.ascontiguousarray(interest @ mean_epochs),
                    np.ascontiguousarray(mean_epochs, np.float64), float(hour), rng, np.empty(n),
                    np.empty(n, np.int64))
    return out


@njit(cache=True)
def hour_weights_kernel(peak, amplitude, hour, out):
    """`traffic.app_hour_weights` into out (n_apps,): peak NaN = no peak. Returns True
    when every weight is 1 (then `choice_interest` is the interests themselves)."""
    ones = True
    for a in range(peak.shape[0]):
        w = 1.0
        if not np.isnan(peak[a]):
            w = 1.0 + amplitude[a] * math.cos(2 * np.pi * (hour - peak[a]) / 24.0)
        out[a] = w
        ones = ones and w == 1.0
    return ones


@njit(cache=True)
def choice_interest_kernel(interest, hour_weights, out):
    """`traffic.choice_interest` into out (n, n_apps), for weights not all 1."""
    n, k = interest.shape
    for u in range(n):
        for j in range(k):
            out[u, j] = interest[u, j] * hour_weights[j]
        total = pairwise_sum(out[u], k)
        if not total > 0:
            for j in range(k):
                out[u, j] = interest[u, j]
        else:
            for j in range(k):
                out[u, j] = out[u, j] / total


def choice_interest_nb(interest: np.ndarray, peak_hour: list[float | None], amplitude: list[float],
                       hour: float) -> np.ndarray:
    """`traffic.choice_interest(interest, traffic.app_hour_weights(peak_hour, amplitude, hour))` in Numba."""
    w = np.empty(len(peak_hour))
    peaks = np.array([np.nan if p is None else p for p in peak_hour], dtype=np.float64)
    if hour_weights_kernel(peaks, np.asarray(amplitude, np.float64), float(hour), w):
        return interest
    out = np.empty(interest.shape)
    choice_interest_kernel(np.ascontiguousarray(interest, np.float64), w, out)
    return out


# ------------------------------------------------------------ interests and items (mirrors of catalog.py)


@njit(cache=True)
def drift_kernel(weights, scale, rng, apply):
    """`catalog.drift` in place with scale = sigma sqrt(dt / 1 h): row-major normals,
    times exp(scale z), rows renormalized (NumPy's pairwise row sums). With apply
    False the normals are drawn and nothing else is done (the stream moves the same)."""
    n, k = weights.shape
    for u in range(n):
        for j in range(k):
            z = rng.standard_normal()
            if apply:
                weights[u, j] *= math.exp(scale * z)
    if apply:
        for u in range(n):
            total = pairwise_sum(weights[u], k)
            for j in range(k):
                weights[u, j] /= total


def drift_nb(weights: np.ndarray, sigma_per_sqrt_h: float, dt_s: float, rng: np.random.Generator) -> None:
    """`catalog.drift` through `drift_kernel` (same signature and effect)."""
    if sigma_per_sqrt_h <= 0:
        return
    drift_kernel(weights, float(sigma_per_sqrt_h * np.sqrt(dt_s / 3600.0)), rng, True)


@njit(cache=True)
def item_ends_kernel(active, age, item_mean_epochs, app, rng, out):
    """`catalog.item_ends` into out (n,): n uniforms, one per user."""
    for u in range(active.shape[0]):
        a = app[u] if active[u] else 0
        p = 1.0 / max(item_mean_epochs[a], 1.0)
        out[u] = rng.random() < p and active[u] and age[u] > 0


def item_ends_nb(active: np.ndarray, age: np.ndarray, item_mean_epochs: np.ndarray, app: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """`catalog.item_ends` through `item_ends_kernel` (same signature and result)."""
    out = np.zeros(len(active), np.bool_)
    item_ends_kernel(np.ascontiguousarray(active, np.bool_), np.ascontiguousarray(age, np.int64),
                     np.ascontiguousarray(item_mean_epochs, np.float64), np.ascontiguousarray(app, np.int64), rng, out)
    return out


# `catalog.pick_items` draws one uniform per user who starts an item; baselines never
# look at items, so the compiled loop draws those uniforms and skips the rest (tested).
PICK_ITEM_DRAWS = 1


# ------------------------------------------------------------ the epoch loop


@njit(cache=True, error_model="numpy")
def _run_epochs(e0, e1, epoch_s, mob, radio, links_consts, ho, sess, pol, acc, rng_radio, rng_traffic,
                rng_feedback, rng_interests):  # fmt: skip
    """Epochs e0..e1-1 of `loop.run` for baseline policies, all state in place."""
    (model, mean_s, x0, y0, x1, y1, alpha, heading_std, xy, waypoint, speed, heading, mean_heading,
     moved, rest, fresh) = mob  # fmt: skip
    (since, refresh_m, rows, dist, innov, ux, uy, uh, z_sf, z_los, los, gain, rsrp, rx, tx, rsrp_off,
     l3_a, rsrp_f, use_fading, floor_lin, noise_mw, thresholds, eff_table, faded) = radio  # fmt: skip
    serving, candidate, held, handovers, ping_pongs, previous, since_ho, went, hyst, ttt = ho
    (app, remaining, started, interest, activity, mean_len, mean_epochs, draws, chosen, feedback_rate,
     drift_scale, taste, age, prev_app, cond, ends, item_mean, window, in_window, peaks, amps, hw,
     choose) = sess  # fmt: skip
    (codes, loads, n_prb, prb_bw_mhz, prb_bw, avg_rate, pf_window, app_k, app_m, app_level, ovl,
     sat_k, sat_m, a_rate, d_rate, segment, se_all, prb, order, offsets, cbuf, used, sat, at_a, at_d,
     start_counts) = pol  # fmt: skip
    (seg_count, seg_adequate, seg_desired, seg_sat, cell_count, cell_adequate, cell_sat, cell_prb, user_sat,
     user_count, sat_hist, bins, ce_users, ce_prb, ce_sat, ce_adequate, ce_desired, prb_series, sat_series,
     ho_series, ep_seg, buf) = acc  # fmt: skip
    n = model.shape[0]
    n_sites = z_sf.shape[1]
    n_cells = n_prb.shape[0]
    n_pol = codes.shape[0]
    active = np.zeros(n, dtype=np.bool_)
    for e in range(e0, e1):
        # 1. radio: move, refresh the links of users due, L3-filter RSRP, hand over, fading key
        mobility_kernel(model, mean_s, epoch_s, x0, y0, x1, y1, alpha, heading_std, xy, waypoint, speed, heading,
                        mean_heading, moved, rest, fresh, rng_radio)
        m = refresh_due_kernel(since, moved, refresh_m, rows, dist)
        if m > 0:
            for j in range(2):
                for i in range(m):
                    for s in range(n_sites):
                        innov[j, i, s] = rng_radio.standard_normal()
            for u in range(n):
                ux[u] = xy[u, 0]
                uy[u] = xy[u, 1]
            _links_kernel(rows[:m], ux, uy, uh, dist[:m], innov, True, z_sf, z_los, los, gain, rsrp, rx, True, tx,
                          rsrp_off, *links_consts)
        for u in range(n):
            for c in range(n_cells):
                rsrp_f[u, c] = (1.0 - l3_a) * rsrp_f[u, c] + l3_a * rsrp[u, c]
        handover_kernel(rsrp_f, hyst, ttt, PING_PONG_EPOCHS, serving, candidate, held, handovers, ping_pongs,
                        previous, since_ho, went)
        n_ho = 0
        for u in range(n):
            if went[u]:
                n_ho += 1
        ho_series[e] = n_ho
        key = np.uint64(0)
        if use_fading:
            key = np.uint64(rng_radio.integers(0, 9223372036854775807, dtype=np.int64))
        # 2. interests drift (app interests, then topic tastes, which baselines never read)
        if drift_scale > 0.0:
            drift_kernel(interest, drift_scale, rng_interests, True)
            drift_kernel(taste, drift_scale, rng_interests, False)
        # 3. sessions, the app drawn from interests x the hour's weights; items end and
        # new ones start (their uniforms only: baselines ignore items)
        for u in range(n):
            prev_app[u] = app[u]
        hour = (e * epoch_s / 3600.0) % 24.0
        if hour_weights_kernel(peaks, amps, hour, hw):
            ch_i = interest
        else:
            choice_interest_kernel(interest, hw, choose)
            ch_i = choose
        mean_len[:] = np.dot(ch_i, mean_epochs)  # the same BLAS product as step_sessions' `interest @ mean_epochs`
        sessions_kernel(app, remaining, started, ch_i, activity, mean_len, mean_epochs, hour, rng_traffic, draws,
                        chosen)
        for u in range(n):
            active[u] = app[u] >= 0
            age[u] = 0 if started[u] else age[u] + 1
            cond[u] = active[u] and prev_app[u] == app[u]
        item_ends_kernel(cond, age, item_mean, app, rng_interests, ends)
        n_in_window = 0
        for u in range(n):
            if ends[u] or started[u]:
                for _ in range(PICK_ITEM_DRAWS):
                    rng_interests.random()
            in_window[u] = active[u] and age[u] < window
            if in_window[u]:
                n_in_window += 1
        # 3. every policy's efficiency under its own last loads
        efficiency_kernel(rx, serving, loads, noise_mw, key, use_fading, floor_lin, thresholds, eff_table, se_all,
                          faded)
        # 4. who gives feedback this epoch (the same uniforms for every policy)
        n_who = 0
        for u in range(n):
            if rng_feedback.random() < feedback_rate[u] and active[u]:
                n_who += 1
        # 5. decide, deliver, record
        for p in range(n_pol):
            allocate_kernel(codes[p], serving, app, se_all[p], n_prb, prb_bw_mhz, avg_rate[p], pf_window, app_k,
                            app_m, app_level, ovl, prb, order, offsets, cbuf)
            used[:] = 0.0
            for u in range(n):
                if not active[u]:
                    prb[u] = 0
                    sat[u] = 0.0
                    at_a[u] = False
                    at_d[u] = False
                    continue
                rate = prb[u] * se_all[p, u] * prb_bw / 1e6
                ai = app[u]
                z = sat_k[u, ai] * (rate - sat_m[u, ai])
                ez = math.exp(-abs(z))
                sat[u] = 1.0 / (1.0 + ez) if z >= 0.0 else ez / (1.0 + ez)
                at_a[u] = rate >= a_rate[u, ai]
                at_d[u] = rate >= d_rate[u, ai]
                used[serving[u]] += prb[u]
            for c in range(n_cells):
                loads[p, c] = used[c] / n_prb[c]
            start_counts[p, 0] += n_in_window
            for u in range(n):
                if in_window[u] and at_a[u]:
                    start_counts[p, 1] += 1
            total, mean = record_kernel(
                active, segment, serving, sat, at_a, at_d, used, seg_count[p], seg_adequate[p], seg_desired[p],
                seg_sat[p], cell_count[p], cell_adequate[p], cell_sat[p], cell_prb[p], user_sat[p], user_count[p],
                sat_hist[p], bins, ce_users[p, e], ce_prb[p, e], ce_sat[p, e], ce_adequate[p, e], ce_desired[p, e],
                ep_seg, buf)  # fmt: skip
            prb_series[p, e] = total
            sat_series[p, e] = mean
        # 6. the uniforms the feedback behaviour would draw for the events baselines discard
        for _ in range(FEEDBACK_DRAWS_PER_EVENT * n_who):
            rng_feedback.random()


def run_compiled(cfg: Config, policies: list[str], progress: ProgressFn | None = None,
                 chunk_epochs: int | None = None) -> RunResult:
    """`loop.run(cfg, policies)` for baseline-only policy lists, compiled (same result)."""
    if not policies or "zot" in policies:
        raise ValueError("run_compiled runs baseline policies only; zot needs the engine (simulators.loop.run)")
    t0 = time.perf_counter()
    sim = cfg.simulation
    world = World(cfg, n_policies=len(policies))  # the same set-up and draws as loop.run
    rs, pop, radio = world.rs, world.pop, world.radio
    a_rate, d_rate = world.a_rate, world.d_rate
    mean_epochs, activity, sessions = world.mean_epochs, world.activity, world.sessions
    deciders = [BaselinePolicy(p, cfg, pop, a_rate, d_rate) for p in policies]
    item_mean, window = world.item_mean, world.window
    sigma = cfg.population.interest_drift
    drift_scale = float(sigma * np.sqrt(sim.epoch_s / 3600.0)) if sigma > 0 else 0.0

    n, n_cells, n_pol, n_epochs = pop.n, radio.n_cells, len(policies), sim.epochs
    r = cfg.radio
    n_seg = len(pop.segment_names)
    ms = radio.mobility
    x0, y0, x1, y1 = (float(b) for b in radio.layout.bounds)
    alpha = float(np.mean(radio.memory)) if radio.memory.size else 0.85
    mob = (radio.model.astype(np.int64), np.ascontiguousarray(radio.mean_speed, np.float64), x0, y0, x1, y1, alpha,
           float(np.pi / 4), ms.xy.copy(), ms.waypoint.copy(), ms.speed.copy(), ms.heading.copy(),
           ms.mean_heading.copy(), np.zeros(n), np.empty(n), np.empty((2, n)))  # fmt: skip
    lk = radio.links
    th, eff = ch.efficiency_table(r.cqi_table, DL_OVERHEAD)
    radio_t = (
        radio.since_refresh.copy(), float(REFRESH_M), np.empty(n, np.int64), np.empty(n),
        np.empty((2, n, radio.layout.n_sites)), np.empty(n), np.empty(n),
        np.ascontiguousarray(radio.ue_height, np.float64), lk.z_sf, lk.z_los, lk.los, lk.gain_db, lk.rsrp_dbm, lk.rx_mw,
        np.ascontiguousarray(np.broadcast_to(np.asarray(r.tx_power_dbm, dtype=float), (n_cells,))),
        10.0 * math.log10(12.0 * r.prb_per_cell), 1.0 - (1.0 - L3_A) ** max(sim.epoch_s / L3_PERIOD_S, 1.0),
        radio.rsrp.copy(), r.fast_fading == "rayleigh", 10.0 ** (-20.0 / 10.0), float(radio.noise_mw), th, eff,
        np.empty(n_cells),
    )  # fmt: skip
    consts = ch.links_kernel_constants(radio.layout, r.scenario, r.carrier_ghz, shadowing=r.shadowing)
    hs = radio.handover
    ho = tuple(np.array(a, np.int64) for a in (hs.serving, hs.candidate, hs.held, hs.handovers, hs.ping_pongs,
                                               hs.previous, hs.since_handover))
    ho = ho + (np.zeros(n, np.bool_), float(r.handover_hysteresis_db), int(r.handover_ttt_epochs))
    if not pop.interest.flags.c_contiguous:
        raise ValueError("population interests must be C-contiguous (they drift in place)")
    sess = (sessions.app.astype(np.int64), sessions.remaining.astype(np.int64), sessions.started.copy(),
            pop.interest, np.ascontiguousarray(activity, np.float64),
            np.ascontiguousarray(pop.interest @ mean_epochs), mean_epochs, np.empty(n), np.empty(n, np.int64),
            np.ascontiguousarray(pop.feedback_rate, np.float64), drift_scale, np.empty(world.catalog.taste.shape),
            world.age.astype(np.int64), np.empty(n, np.int64), np.zeros(n, np.bool_), np.zeros(n, np.bool_),
            np.ascontiguousarray(item_mean, np.float64), int(window), np.zeros(n, np.bool_),
            np.array([np.nan if p is None else p for p in world.peaks], dtype=np.float64),
            np.asarray(world.amps, dtype=np.float64), np.empty(len(pop.apps)), np.empty(pop.interest.shape))  # fmt: skip
    d0 = next((d for d in deciders if d.name == "universal_fit"), deciders[0])  # the per-app targets' owner
    sat_k, sat_m = (np.ascontiguousarray(np.asarray(v, float).reshape(a_rate.shape))
                    for v in _slope_centre(a_rate, d_rate, cfg.objective.eps))
    pol = (
        np.array([d.code for d in deciders], np.int64), np.zeros((n_pol, n_cells)), radio.prb_per_cell.astype(np.int64),
        float(d0.prb_bw_mhz), float(r.prb_bandwidth_hz), np.zeros((n_pol, n)), int(cfg.baselines.pf_window_epochs),
        d0.app_k, d0.app_m, np.ascontiguousarray(d0.app_level, np.float64), int(d0.ovl), sat_k, sat_m,
        np.ascontiguousarray(a_rate), np.ascontiguousarray(d_rate), pop.segment.astype(np.int64),
        np.empty((n_pol, n)), np.zeros(n, np.int64), np.empty(n, np.int64), np.empty(n_cells + 1, np.int64),
        np.empty(n), np.zeros(n_cells), np.zeros(n), np.zeros(n, np.bool_), np.zeros(n, np.bool_),
        np.zeros((n_pol, 2), np.int64),
    )  # fmt: skip
    z = np.zeros
    acc = (z((n_pol, n_seg)), z((n_pol, n_seg)), z((n_pol, n_seg)), z((n_pol, n_seg)),
           z((n_pol, n_cells)), z((n_pol, n_cells)), z((n_pol, n_cells)), z((n_pol, n_cells)),
           z((n_pol, n)), z((n_pol, n)), z((n_pol, SAT_BINS.size - 1), np.int64), SAT_BINS,
           z((n_pol, n_epochs, n_cells), np.int64), z((n_pol, n_epochs, n_cells)), z((n_pol, n_epochs, n_cells)),
           z((n_pol, n_epochs, n_cells)), z((n_pol, n_epochs, n_cells)), z((n_pol, n_epochs), np.int64),
           z((n_pol, n_epochs)), z(n_epochs, np.int64), z((4, n_seg)), np.empty(n))  # fmt: skip

    step = chunk_epochs or max(1, CHUNK_WORK // max(n * n_pol, 1))
    for e0 in range(0, n_epochs, step):
        e1 = min(n_epochs, e0 + step)
        _run_epochs(e0, e1, float(sim.epoch_s), mob, radio_t, consts, ho, sess, pol, acc, rs.radio, rs.traffic,
                    rs.feedback, rs.interests)
        if progress is not None:
            progress(e1)

    # Leave the radio as loop.run leaves it (final positions, links, serving cells).
    radio.mobility = MobilityState(xy=mob[8], waypoint=mob[9], speed=mob[10], heading=mob[11], mean_heading=mob[12])
    radio.since_refresh = radio_t[0]
    radio.rsrp = radio_t[17]
    radio.handover = HandoverState(*ho[:7])
    names = ("seg_count", "seg_adequate", "seg_desired", "seg_sat", "cell_count", "cell_adequate", "cell_sat",
             "cell_prb", "user_sat", "user_count", "sat_hist", None, "ce_users", "ce_prb_used", "ce_sat_sum",
             "ce_adequate", "ce_desired", "prb_series", "sat_series")
    handovers = int(acc[19].sum())
    outcomes = {}
    for p, name in enumerate(policies):
        arrays = {k: acc[i][p] for i, k in enumerate(names) if k is not None}
        out = Outcomes(n, n_seg, n_cells, r.prb_per_cell, sim.epoch_s, cfg.pricing.prb_hour)
        outcomes[name] = outcomes_from_arrays(out, arrays, n_epochs, handovers)
    start_counts = pol[-1]
    extra = {"session_start": {p: {"epochs": window, "user_epochs": int(start_counts[i, 0]),
                                   "adequate_share": int(start_counts[i, 1]) / max(int(start_counts[i, 0]), 1)}
                               for i, p in enumerate(policies)}}
    return RunResult(cfg, pop, radio.cell_ids, radio.layout.cell_xy, radio.xy.copy(), outcomes, None,
                     time.perf_counter() - t0, extra=extra)


def _slope_centre(a: np.ndarray, d: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """optimizer.curves.slope_centre over the (user, app) zones, NaN (unused apps) allowed."""
    from optimizer.curves import slope_centre

    with np.errstate(invalid="ignore"):
        return slope_centre(a, d, eps)
