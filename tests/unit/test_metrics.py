"""The metrics catalogue, the file sink, rebasing, and the time-series sink against a closed or silent port."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from engine import metrics
from engine.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _points(n: int, ts0: int = 1_700_000_000_000) -> list:
    return [metrics.point("zot_engine", {"scenario": "t", "worker": "w1"}, {"lag": i}, ts0 + i) for i in range(n)]


def test_point_rejects_names_outside_the_catalogue():
    with pytest.raises(KeyError, match="user_id"):
        metrics.point("zot_cell", {"scenario": "s", "policy": "p", "cell": "c", "user_id": "u1"}, {"users": 1}, 0)
    with pytest.raises(KeyError, match="bogus"):
        metrics.point("zot_policy", {"scenario": "s"}, {"bogus": 1.0}, 0)
    tags = {"scenario": "s", "policy": "zot", "cell": "c0"}
    line = metrics.point("zot_cell", tags, {"prb_used": 3}, 1234).to_line_protocol()
    assert line == "zot_cell,cell=c0,policy=zot,scenario=s prb_used=3 1234"


def test_catalogue_is_documented_in_one_place():
    doc = (ROOT / "docs" / "dashboards.md").read_text()
    for m, (tags, fields) in metrics.CATALOGUE.items():
        assert f"`{m}`" in doc, m
        for name in (*tags, *fields):
            assert f"`{name}`" in doc, (m, name)
    # No per-user tag apart from the sampled `user`.
    assert all("user_id" not in tags for tags, _ in metrics.CATALOGUE.values())


def test_file_sink_appends_line_protocol(tmp_path):
    sink = metrics.FileSink(tmp_path / "m.lp")
    sink.write(_points(3))
    assert sink.close() == {"written": 3, "dropped": 0}
    lines = (tmp_path / "m.lp").read_text().splitlines()
    assert lines[2] == "zot_engine,scenario=t,worker=w1 lag=2 1700000000002"


def test_rebase_moves_the_latest_point_to_the_end_and_keeps_spacing():
    lines = ["a x=1 1000", "a x=2 6000", "a,t=1 x=3 3000"]
    out = metrics.rebase_lines(lines, 100_000)
    assert [int(s.rsplit(" ", 1)[1]) for s in out] == [95_000, 100_000, 97_000]
    assert out[2].startswith("a,t=1 x=3 ")


def test_sink_for_picks_file_or_file_plus_server(tmp_path):
    cfg = load_config(ROOT / "configs" / "example.yaml")
    assert isinstance(metrics.sink_for(cfg, tmp_path), metrics.FileSink)
    ts_cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"metrics": "timeseries"}),
                                    "timeseries": cfg.timeseries.model_copy(
                                        update={"url": f"http://127.0.0.1:{_free_port()}"})})
    sink = metrics.sink_for(ts_cfg, tmp_path / "run", environ={})
    try:
        assert isinstance(sink, metrics.TeeSink)
        assert any(isinstance(s, metrics.TimeSeriesSink) for s in sink.sinks)
    finally:
        for s in sink.sinks:
            if isinstance(s, metrics.TimeSeriesSink):
                s.close_timeout_s = 0.5
        sink.close()
    assert (tmp_path / "run" / "metrics.lp").exists()


def test_closed_port_never_blocks_and_counts_every_point_dropped():
    sink = metrics.TimeSeriesSink(f"http://127.0.0.1:{_free_port()}", "zot", "zot", None, batch_size=100,
                                  flush_ms=50, max_retries=2, max_backoff_s=0.1, close_timeout_s=2.0)
    t = time.perf_counter()
    for _ in range(10):
        sink.write(_points(100))
    assert time.perf_counter() - t < 0.5  # enqueue only
    deadline = time.monotonic() + 10
    while sink.connected is not False and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.connected is False
    t = time.perf_counter()
    stats = sink.close()
    assert time.perf_counter() - t < 2.0 + 5.0
    assert stats == {"written": 0, "dropped": 1000}


def test_queue_overflow_drops_oldest_and_counts():
    sink = metrics.TimeSeriesSink(f"http://127.0.0.1:{_free_port()}", "zot", "zot", None, batch_size=10,
                                  flush_ms=10_000, max_pending=100, max_retries=0, close_timeout_s=0.5)
    sink.write(_points(500))
    assert sink.stats()["dropped"] >= 390
    stats = sink.close()
    assert stats["written"] == 0 and stats["dropped"] == 500


def test_silent_server_times_out_without_blocking_the_caller():
    """A server that accepts connections and never answers (a hung time-series DB)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        sink = metrics.TimeSeriesSink(f"http://127.0.0.1:{srv.getsockname()[1]}", "zot", "zot", "tok",
                                      batch_size=50, flush_ms=20, request_timeout_ms=300, max_retries=1,
                                      max_backoff_s=0.1, close_timeout_s=1.0)
        t = time.perf_counter()
        for _ in range(20):
            sink.write(_points(50))
        assert time.perf_counter() - t < 0.5
        time.sleep(1.0)
        assert sink.stats()["written"] == 0
        t = time.perf_counter()
        stats = sink.close()
        assert time.perf_counter() - t < 1.0 + 5.5
        assert stats == {"written": 0, "dropped": 1000}
    finally:
        stop.set()
        th.join(2)
        for c in held:
            c.close()
        srv.close()


def test_worker_meter_emits_rates_per_interval(tmp_path):
    now = [100.0]
    sink = metrics.FileSink(tmp_path / "w.lp")
    meter = metrics.WorkerMeter(sink, "w7", "live", interval_s=5.0, clock=lambda: now[0], wall_ms=lambda: 42)
    for _ in range(4):
        now[0] += 1.0
        meter.record(events=100, dead_letters=1, batch_ms=3.0, decisions=2, lag=7)
    assert sink.written == 0  # 4 s < interval
    now[0] += 1.0
    meter.record(events=50, batch_ms=9.5, lag=3)
    sink.close()
    line = (tmp_path / "w.lp").read_text().strip()
    assert line == ("zot_engine,scenario=live,worker=w7 batch_ms=9.5,dead_letters_per_s=0.8,decisions=8,"
                    "events_per_s=90,lag=3 42")


def test_idle_worker_meter_reports_its_last_counts_on_tick(tmp_path):
    now = [0.0]
    sink = metrics.FileSink(tmp_path / "w.lp")
    meter = metrics.WorkerMeter(sink, "w1", "live", interval_s=5.0, clock=lambda: now[0], wall_ms=lambda: 7)
    now[0] = 1.0
    meter.record(events=10, decisions=3)
    now[0] = 4.0
    meter.tick()
    assert sink.written == 0  # interval not over yet
    now[0] = 6.0
    meter.tick()  # no batch since: the timer closes the interval
    now[0] = 12.0
    meter.tick()  # idle interval: zero rates
    sink.close()
    lines = (tmp_path / "w.lp").read_text().splitlines()
    assert lines == ["zot_engine,scenario=live,worker=w1 batch_ms=0,dead_letters_per_s=0,decisions=3,"
                     "events_per_s=1.6666666666666667 7",
                     "zot_engine,scenario=live,worker=w1 batch_ms=0,dead_letters_per_s=0,decisions=0,"
                     "events_per_s=0 7"]
