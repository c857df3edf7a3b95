"""A worker warms its Numba kernels before its stream: every kernel a batch calls has
been called once (in a fresh process, so nothing else in the test run did it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json
from engine.config import load_config
from engine.models import cooccurrence
from operators import satisfaction_kernels as K
from optimizer import solver
from engine.warmup import warm_up

kernels = {"serial update": K.update_kernel, "parallel update": K.update_kernel_by_slot,
           "co-occurrence": cooccurrence._learn, "solver": solver._epoch_kernel}
before = {name: len(k.signatures) for name, k in kernels.items()}
cfg = load_config("configs/example.yaml")
took = warm_up(cfg)
again = warm_up(cfg)
print(json.dumps({"before": before, "after": {name: len(k.signatures) for name, k in kernels.items()},
                  "took": took, "again": again}))
"""


def test_warm_up_calls_every_kernel_a_batch_calls_once_per_process():
    res = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert all(n == 0 for n in out["before"].values()), out
    assert all(n >= 1 for n in out["after"].values()), out
    assert out["took"] > 0 and out["again"] == 0.0
