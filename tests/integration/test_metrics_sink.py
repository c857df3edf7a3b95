"""TimeSeriesSink against a real VictoriaMetrics that is stopped and restarted mid-write.

The server is this test's own (its own port and data folder), so stopping it
never disturbs a server another session uses.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from engine import metrics
from engine.infra import VictoriaMetrics

ROOT = Path(__file__).resolve().parents[2]


def _own_port() -> int:
    base = int(os.environ.get("ZOT_TEST_VM_PORT", 8428)) + 11
    for port in range(base, base + 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def _count(url: str, run: str) -> int:
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    q = urllib.parse.urlencode({"match[]": f'{{__name__="zot_engine_lag",worker="{run}"}}'})
    with urllib.request.urlopen(f"{url}/api/v1/export?{q}", timeout=10) as resp:
        return sum(len(json.loads(line)["values"]) for line in resp.read().decode().splitlines() if line.strip())


def test_sink_survives_a_server_restart_and_loses_nothing(tmp_path):
    vm = VictoriaMetrics(ROOT, port=_own_port())
    vm.start()
    run = "w" + uuid.uuid4().hex[:8]
    now = int(time.time() * 1000) - 60_000

    def batch(k: int) -> list:
        tags = {"scenario": "restart", "worker": run}
        return [metrics.point("zot_engine", tags, {"lag": k * 100 + i}, now + k * 100 + i) for i in range(100)]

    sink = metrics.TimeSeriesSink(vm.url, "zot", "zot", None, batch_size=50, flush_ms=50, max_retries=60,
                                  max_backoff_s=0.5, close_timeout_s=20)
    try:
        for k in range(3):
            sink.write(batch(k))
        assert sink.flush(15)
        assert sink.connected is True
        vm.stop()
        t = time.perf_counter()
        for k in range(3, 8):
            sink.write(batch(k))
        assert time.perf_counter() - t < 0.5  # the caller never waits for the dead server
        deadline = time.monotonic() + 15
        while sink.connected is not False and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.connected is False
        assert sink.stats()["pending"] > 0
        vm.start()
        assert sink.flush(30)
        assert sink.connected is True
        stats = sink.close()
        assert stats == {"written": 800, "dropped": 0}
        deadline = time.monotonic() + 20
        while _count(vm.url, run) < 800 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _count(vm.url, run) == 800
    finally:
        sink.close_timeout_s = 1
        vm.stop()
        vm.purge()


def test_retries_exhausted_while_down_are_counted_then_writes_resume():
    vm = VictoriaMetrics(ROOT, port=_own_port())
    vm.start()
    run = "w" + uuid.uuid4().hex[:8]
    now = int(time.time() * 1000) - 60_000
    sink = metrics.TimeSeriesSink(vm.url, "zot", "zot", None, batch_size=100, flush_ms=20, max_retries=1,
                                  max_backoff_s=0.1, close_timeout_s=10)
    try:
        vm.stop()
        sink.write([metrics.point("zot_engine", {"scenario": "r", "worker": run}, {"lag": i}, now + i)
                    for i in range(100)])
        deadline = time.monotonic() + 10
        while sink.stats()["dropped"] < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.stats()["dropped"] == 100
        vm.start()
        sink.write([metrics.point("zot_engine", {"scenario": "r", "worker": run}, {"lag": i}, now + 1000 + i)
                    for i in range(100)])
        assert sink.flush(20)
        assert sink.close() == {"written": 100, "dropped": 100}
        deadline = time.monotonic() + 20
        while _count(vm.url, run) < 100 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _count(vm.url, run) == 100
    finally:
        vm.stop()
        vm.purge()
