"""Warm a worker's Numba kernels before its stream starts.

The first call of a cached Numba kernel in a process loads it, and with it Numba's
registries and runtime: ~0.7 s on an idle process here, 4-6 s in a Faust agent
worker whose event loop competes for the GIL, and all of it inside the first
batch (its KPI reports waited that long for their decisions). `warm_up` pays it
at start, on a throwaway core, so the first real batch runs at speed.
"""

from __future__ import annotations

import gc
import threading
import time

from engine import schemas
from engine import topics as registry
from engine.bus import Message
from engine.config import Application, Config
from operators.satisfaction import PARALLEL_MIN_EVENTS
from optimizer.qos import qos_for_rate

_lock = threading.Lock()
_warm = False


def warm_up(cfg: Config, cells: set[str] | None = None) -> float:
    """Run every Numba path of the operators once on a throwaway `EngineCore`: the
    posterior update's serial and parallel kernels (a batch below and one above
    `PARALLEL_MIN_EVENTS`), the interest models (interactions, if enabled) and the
    solver (one KPI report per cell). Once per process; return the seconds it took
    (0.0 when already warm). Nothing it does is visible outside the throwaway core."""
    global _warm
    with _lock:
        if _warm:
            return 0.0
        from engine.runner import EngineCore
        from simulators.radio import build_layout

        t0 = time.perf_counter()
        cell = sorted(cells)[0] if cells else build_layout(cfg)[1][0]
        apps = list(cfg.applications)
        core = EngineCore(cfg, cells={cell}, prefix=cfg.kafka.topic_prefix)
        users = [f"warm-up-{i}" for i in range(8)]
        signals = list(schemas.Signal)

        qos = {name: _plausible_qos(app) for name, app in cfg.applications.items()}

        def feedback(n: int, start: int) -> list[Message]:
            out = []
            for i in range(start, start + n):
                s, app = signals[i % len(signals)], apps[i % len(apps)]
                ev = schemas.Feedback(event_id=f"warm-up-f{i}", ts=float(i), user_id=users[i % len(users)],
                                      cell_id=cell, app=app, signal=s, qos=qos[app],
                                      rating=3 if s is schemas.Signal.RATING else None)
                out.append(Message(core.topic(registry.FEEDBACK), 0, i, None, schemas.encode(ev), 0))
            return out

        core.handle(feedback(8, 0), now=0.0)
        core.handle(feedback(2 * PARALLEL_MIN_EVENTS, 8), now=0.0)  # enough accepted for the parallel one
        if core.interests is not None:
            ix = [schemas.Interaction(event_id=f"warm-up-i{i}", ts=float(i), user_id=users[i % len(users)],
                                      item_id=f"warm-up-item{i % 3}", app=apps[0], action=schemas.Action.VIEW)
                  for i in range(8)]
            core.handle([Message(core.topic(registry.INTERACTIONS), 0, i, None, schemas.encode(e), 0)
                         for i, e in enumerate(ix)], now=0.0)
        kpi = schemas.CellKpi(event_id="warm-up-k", ts=0.0, cell_id=cell, epoch=0, prb_total=cfg.radio.prb_per_cell,
                              users=[schemas.UserChannel(user_id=u, spectral_efficiency=2.0, app=apps[0])
                                     for u in users])
        core.handle([Message(core.topic(registry.KPI), 0, 0, None, schemas.encode(kpi), 0)], now=0.0)
        # Free the throwaway core's reference cycles now: recovery ends with gc.freeze(),
        # which would keep them for the life of the process.
        del core
        gc.collect()
        _warm = True
        return time.perf_counter() - t0



def _plausible_qos(app: Application) -> float:
    """The QoS the app gets at 5 Mbps: one its metric reaches (an unreachable one is dead-lettered)."""
    return float(qos_for_rate(app.metric.value, 5.0, **app.metric_params()))
