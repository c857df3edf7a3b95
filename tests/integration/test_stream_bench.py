"""The stream benchmark's smoke run on the session's broker: one JSON object whose
targets were all measured in that run (the CI's short version of `zot bench stream`)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_stream_bench_measures_every_target(kafka_bootstrap, kcat_bin):
    port = kafka_bootstrap.rsplit(":", 1)[1]
    env = dict(os.environ, ZOT_BENCH_KAFKA_PORT=port)  # the session's broker, not a second one
    res = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "stream", "--quick", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, "exactly one JSON object on stdout"
    out = json.loads(lines[0])
    assert out["bench"] == "stream" and out["quick"] is True
    names = {t["name"] for t in out["targets"]}
    assert {"engine / bare consumer (feedback events/s)", "engine feedback events/s (one worker)",
            "engine feedback events/s (two workers)", "KPI -> decision latency p99 at half load",
            "KPI -> decision latency p50 at half load"} == names
    for t in out["targets"]:
        assert t["op"] in (">=", "<=") and math.isfinite(t["value"]) and t["value"] > 0, t
        assert t["met"] == (t["value"] >= t["goal"] if t["op"] == ">=" else t["value"] <= t["goal"])
    one, two = out["engine_batch_consumer"], out["engine_batch_consumer_two_workers"]
    assert one["fraction_done"] == 1.0 and two["fraction_done"] == 1.0, "every loaded event was processed"
    lat = one["latency"]
    assert lat["missing"] == 0 and lat["decisions"] > 0, "every KPI report got its decision"
    assert lat["reports_not_delivered"] == 0, "the broker acknowledged every report"
    assert lat["feedback_rate"] > 0.9 * lat["offered_feedback_rate"], "the feedback load was offered at its rate"
