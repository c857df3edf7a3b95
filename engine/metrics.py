"""Metrics sink: points in InfluxDB line protocol, to a run-folder file or a time-series server.

`CATALOGUE` below is the one place where measurement, tag and field names are
defined (docs/dashboards.md explains each). Tags are only ever of bounded
cardinality: scenario, policy, cell, segment, app, worker, and `user` only for
the K users a run samples for the drill-down (K = `USER_SAMPLE`), never every
user id. The VictoriaMetrics/Prometheus name of a field is
`<measurement>_<field>` (e.g. `zot_cell_prb_used`).

Sinks:
- `FileSink`: line protocol appended to `metrics.lp` in the run folder (the
  embedded default; millisecond timestamps).
- `TimeSeriesSink`: influxdb-client over `/api/v2/write` (VictoriaMetrics,
  InfluxDB 2.x/3.x). Writes go to a bounded in-memory queue drained by one
  background thread; a slow or unreachable server never blocks or raises into
  the caller. Points that overflow the queue, exhaust their retries or are left
  when `close` times out are counted as dropped; after an outage the next batch
  simply goes out again (each attempt opens a new connection if needed).
- `sink_for(cfg, run_dir)` picks per `engine.metrics`; `replay(run_dir, ...)`
  loads a finished run's `metrics.lp` into a server.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Protocol

from influxdb_client import Point, WritePrecision

from engine import logs

if TYPE_CHECKING:
    from engine.config import Config

log = logs.get("zot.metrics")

# How many users a run samples for per-user series (bounded `user` tag cardinality).
USER_SAMPLE = 12

CATALOGUE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # Per cell and epoch, per policy.
    "zot_cell": (
        ("scenario", "policy", "cell"),
        ("users", "prb_used", "prb_total", "prb_saved", "frac_adequate", "frac_desired", "mean_satisfaction",
         "revenue", "solve_ms", "overload"),
    ),
    # Per policy and epoch, all cells together.
    "zot_policy": (
        ("scenario", "policy"),
        ("users", "prb_used", "prb_saved_frac", "frac_adequate", "frac_desired", "mean_satisfaction", "revenue",
         "jain"),
    ),
    # Per segment and policy (whole run).
    "zot_segment": (("scenario", "policy", "segment"),
                    ("user_epochs", "frac_adequate", "frac_desired", "mean_satisfaction")),
    # The engine's ZoT learning, per application and epoch.
    "zot_zot": (("scenario", "app"),
                ("slots", "learned_frac", "err_adequate_rel", "err_desired_rel", "coverage90", "mean_signals")),
    # Sampled users (user in a fixed sample of USER_SAMPLE ids), per epoch.
    "zot_user": (("scenario", "policy", "user"), ("prb", "rate_mbps", "satisfaction")),
    # Sampled users' ZoT posterior per application, beside the hidden truth in simulations.
    "zot_user_zot": (("scenario", "user", "app"),
                     ("adequate_est", "adequate_sd", "desired_est", "desired_sd", "n_signals", "adequate_true",
                      "desired_true")),
    # Per engine worker.
    "zot_engine": (("scenario", "worker"),
                   ("events_per_s", "lag", "dead_letters_per_s", "batch_ms", "decisions", "dropped_points")),
}


def point(measurement: str, tags: dict[str, str], fields: dict[str, float], ts_ms: int) -> Point:
    """A point checked against the catalogue (unknown names are programming errors)."""
    allowed_tags, allowed_fields = CATALOGUE[measurement]
    bad = (set(tags) - set(allowed_tags)) | (set(fields) - set(allowed_fields))
    if bad:
        raise KeyError(f"{measurement}: names not in the metrics catalogue: {sorted(bad)}")
    if not fields:
        raise ValueError(f"{measurement}: a point needs at least one field")
    p = Point(measurement)
    for k, v in tags.items():
        p = p.tag(k, v)
    for k, v in fields.items():
        p = p.field(k, float(v))
    return p.time(int(ts_ms), WritePrecision.MS)


def prometheus_names() -> list[str]:
    """Every series name a Prometheus-style reader (VictoriaMetrics, Grafana) sees."""
    return [f"{m}_{f}" for m, (_, fields) in CATALOGUE.items() for f in fields]


class Sink(Protocol):
    def write(self, points: list[Point]) -> None: ...

    def close(self) -> dict[str, int]: ...


class FileSink:
    """Line protocol appended to a file: the embedded default (`metrics.lp` in the run folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self.written = 0

    def write(self, points: list[Point]) -> None:
        self._fh.write("".join(p.to_line_protocol() + "\n" for p in points))
        self.written += len(points)

    def close(self) -> dict[str, int]:
        self._fh.close()
        return {"written": self.written, "dropped": 0}


class TeeSink:
    """The same points to several sinks (the run folder and a server)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def write(self, points: list[Point]) -> None:
        for s in self.sinks:
            s.write(points)

    def stats(self) -> dict[str, int]:
        found = [s.stats() for s in self.sinks if hasattr(s, "stats")]
        return {"written": min((f["written"] for f in found), default=0),
                "dropped": max((f["dropped"] for f in found), default=0)}

    def close(self) -> dict[str, int]:
        stats = [s.close() for s in self.sinks]
        return {"written": min(s["written"] for s in stats), "dropped": max(s["dropped"] for s in stats)}


class _Rejected(Exception):
    """The server refused a batch (4xx): retrying cannot help."""


class TimeSeriesSink:
    """influxdb-client writer behind a bounded queue: never blocks or raises into the engine.

    `write` serialises and enqueues (O(points), no I/O). One daemon thread sends
    batches of up to `batch_size` lines every `flush_ms`; a failed batch is
    retried with exponential backoff (capped at `max_backoff_s`) up to
    `max_retries` times, then dropped; a batch the server rejects (4xx) is
    dropped at once. The queue holds at most `max_pending` lines; overflow drops
    the oldest. `close` sends what it can within `close_timeout_s` and counts the
    rest as dropped, so written + dropped == points given, always.
    """

    def __init__(self, url: str, org: str, bucket: str, token: str | None, batch_size: int = 5000,
                 flush_ms: int = 500, max_pending: int = 200_000, max_retries: int = 5,
                 max_backoff_s: float = 5.0, request_timeout_ms: int = 5000, close_timeout_s: float = 10.0,
                 name: str = "timeseries") -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.url, self.bucket, self.org, self.name = url, bucket, org, name
        self.batch_size, self.flush_s, self.max_pending = batch_size, flush_ms / 1000.0, max_pending
        self.max_retries, self.max_backoff_s, self.close_timeout_s = max_retries, max_backoff_s, close_timeout_s
        self.written = 0
        self.dropped = 0
        self.accepted = 0
        self.connected: bool | None = None  # unknown until the first attempt
        self._queue: collections.deque[str] = collections.deque()
        self._inflight = 0  # lines taken off the queue and not yet written or dropped
        self._cv = threading.Condition()
        self._closing = False
        self._abandoned = False
        self._flushing = 0  # callers waiting in flush(): send without waiting for a full batch
        self._deadline = float("inf")
        # retries=False: our loop does the retrying, so a dead server costs one attempt per backoff step.
        self._client = InfluxDBClient(url=url, token=token or "", org=org, timeout=request_timeout_ms,
                                      retries=False)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._thread = threading.Thread(target=self._run, name=f"zot-metrics-{name}", daemon=True)
        self._thread.start()

    # ---- caller side

    def write(self, points: list[Point]) -> None:
        try:
            lines = [p.to_line_protocol() for p in points]
        except Exception as exc:  # a bad point must not stop the engine either
            self._count_drop(len(points), "serialise", exc)
            return
        self.write_lines(lines)

    def write_lines(self, lines: Iterable[str]) -> None:
        """Enqueue line-protocol lines (millisecond timestamps) as they are."""
        overflow = 0
        with self._cv:
            if self._closing:
                n = sum(1 for _ in lines)
                self.accepted += n
                self.dropped += n
                return
            for line in lines:
                self._queue.append(line)
                self.accepted += 1
            while len(self._queue) > self.max_pending:
                self._queue.popleft()
                overflow += 1
            self.dropped += overflow
            if len(self._queue) >= self.batch_size:
                self._cv.notify()
        if overflow:
            logs.event(log, "metrics_queue_overflow", sink=self.name, dropped=overflow, level="warning")

    def stats(self) -> dict[str, int]:
        with self._cv:
            return {"written": self.written, "dropped": self.dropped, "pending": len(self._queue) + self._inflight}

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty (True) or `timeout_s` passes (False); for tests and replay."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._flushing += 1
            self._cv.notify_all()
            try:
                while self._queue or self._inflight:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cv.wait(min(left, 0.1))
            finally:
                self._flushing -= 1
        return True

    def close(self) -> dict[str, int]:
        with self._cv:
            self._closing = True
            self._deadline = time.monotonic() + self.close_timeout_s
            self._cv.notify_all()
        self._thread.join(self.close_timeout_s + 5.0)
        with self._cv:
            # A request still hanging past the deadline is given up: its points count as dropped, never twice.
            self._abandoned = self._thread.is_alive()
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left + self._inflight  # a thread stuck in a request past the deadline
            self._inflight = 0
        try:
            self._client.close()
        except Exception:  # closing a pool to a dead server must not fail the caller
            pass
        out = {"written": self.written, "dropped": self.dropped}
        logs.event(log, "metrics_sink_closed", sink=self.name, url=self.url, **out,
                   level="warning" if self.dropped else "info")
        return out

    # ---- writer thread

    def _count_drop(self, n: int, why: str, exc: BaseException | None = None) -> None:
        with self._cv:
            if self._abandoned:
                return
            self.dropped += n
        logs.event(log, "metrics_dropped", sink=self.name, points=n, reason=why,
                   error=type(exc).__name__ if exc else None, level="warning")

    def _run(self) -> None:
        while True:
            with self._cv:
                if not (self._closing or self._flushing) and len(self._queue) < self.batch_size:
                    # A full batch, flush() or close() wakes us early.
                    self._cv.wait(self.flush_s)
                if self._closing and (not self._queue or time.monotonic() >= self._deadline):
                    return
                if not self._queue:
                    continue
                n = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                self._inflight = n
            self._send(batch)
            with self._cv:
                self._inflight = 0
                self._cv.notify_all()

    def _send(self, batch: list[str]) -> None:
        body = "\n".join(batch)
        backoff = 0.2
        for attempt in range(self.max_retries + 1):
            try:
                self._post(body)
            except _Rejected as exc:
                self._count_drop(len(batch), "rejected", exc.__cause__ or exc)
                return
            except Exception as exc:
                self._set_connected(False, exc)
                with self._cv:
                    if self._closing:
                        if time.monotonic() + backoff >= self._deadline:
                            break
                        self._cv.wait(backoff)
                    else:
                        # Sleep the backoff, but wake at once if close() is called.
                        self._cv.wait_for(lambda: self._closing, timeout=backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self._set_connected(True)
            with self._cv:
                if not self._abandoned:
                    self.written += len(batch)
            return
        self._count_drop(len(batch), "unreachable")

    def _post(self, body: str) -> None:
        from influxdb_client.rest import ApiException

        try:
            self._api.write(bucket=self.bucket, org=self.org, record=body, write_precision=WritePrecision.MS)
        except ApiException as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                raise _Rejected(f"HTTP {exc.status}") from exc
            raise

    def _set_connected(self, up: bool, exc: BaseException | None = None) -> None:
        # One log line per change of state, not one per retry.
        if self.connected is up:
            return
        self.connected = up
        if up:
            logs.event(log, "metrics_server_up", sink=self.name, url=self.url)
        else:
            logs.event(log, "metrics_server_down", sink=self.name, url=self.url,
                       error=type(exc).__name__ if exc else None, level="warning")


class WorkerMeter:
    """A worker's `zot_engine` series: counts per batch in, one point per `interval_s` out.

    Call `record` after every batch the worker handles (cheap: additions only);
    every `interval_s` it writes one point with rates over the interval, the
    slowest batch, the last lag seen and the sink's dropped points so far.
    """

    def __init__(self, sink: Sink, worker: str, scenario: str, interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.sink, self.tags, self.interval_s = sink, {"scenario": scenario, "worker": worker}, interval_s
        self._clock, self._wall_ms = clock, wall_ms
        self._start = clock()
        self._events = self._dead = self._decisions = 0
        self._batch_ms = 0.0
        self._lag: int | None = None

    def record(self, events: int, dead_letters: int = 0, batch_ms: float = 0.0, decisions: int = 0,
               lag: int | None = None) -> None:
        self._events += events
        self._dead += dead_letters
        self._decisions += decisions
        self._batch_ms = max(self._batch_ms, batch_ms)
        if lag is not None:
            self._lag = lag
        self.tick()

    def tick(self) -> None:
        """Write the interval's point if `interval_s` has passed: call it on a timer too,
        so an idle worker still reports (zero rates, and its last batch's counts)."""
        if self._clock() - self._start >= self.interval_s:
            self.emit()

    def emit(self) -> None:
        now = self._clock()
        elapsed = max(now - self._start, 1e-9)
        fields = {"events_per_s": self._events / elapsed, "dead_letters_per_s": self._dead / elapsed,
                  "batch_ms": self._batch_ms, "decisions": self._decisions}
        if self._lag is not None:
            fields["lag"] = self._lag
        stats = getattr(self.sink, "stats", None)
        if stats is not None:
            fields["dropped_points"] = stats()["dropped"]
        self.sink.write([point("zot_engine", self.tags, fields, self._wall_ms())])
        self._start = now
        self._events = self._dead = self._decisions = 0
        self._batch_ms = 0.0


def sink_for(cfg: Config, run_dir: Path | None, environ: Mapping[str, str] | None = None) -> Sink:
    """The sink a config asks for: the run folder's `metrics.lp`, plus the time-series server if configured.

    The server's token comes from the environment variable `timeseries.token_env` names.
    """
    from engine.config import secrets_from_env

    sinks: list[Sink] = []
    if run_dir is not None:
        sinks.append(FileSink(Path(run_dir) / "metrics.lp"))
    if cfg.engine.metrics == "timeseries":
        ts = cfg.timeseries
        token = secrets_from_env(cfg, environ).ts_token
        logs.register_secrets([token])
        sinks.append(TimeSeriesSink(ts.url, ts.org, ts.bucket, token))
    if not sinks:
        raise ValueError("engine.metrics is 'file' but no run folder was given")
    return sinks[0] if len(sinks) == 1 else TeeSink(*sinks)


def rebase_lines(lines: list[str], end_ms: int) -> list[str]:
    """Shift line-protocol timestamps (ms) so the latest is `end_ms` (a run's fixed origin to now)."""
    stamps = [int(line.rsplit(" ", 1)[1]) for line in lines]
    if not stamps:
        return []
    shift = end_ms - max(stamps)
    return [f"{line.rsplit(' ', 1)[0]} {ts + shift}" for line, ts in zip(lines, stamps)]


def replay(run_dir: Path, url: str, org: str = "zot", bucket: str = "zot", token: str | None = None,
           end_ms: int | None = None, timeout_s: float = 60.0) -> dict[str, int]:
    """Load a run folder's `metrics.lp` into a time-series server (`/api/v2/write`).

    Timestamps are shifted so the run ends at `end_ms` (default: now), since a
    run's points sit at a fixed origin that a server's retention may refuse and
    that dashboards showing "the last hour" would not show. Returns written/dropped.
    """
    logs.register_secrets([token])
    lines = [ln for ln in (Path(run_dir) / "metrics.lp").read_text(encoding="utf-8").splitlines() if ln.strip()]
    lines = rebase_lines(lines, int(time.time() * 1000) if end_ms is None else end_ms)
    sink = TimeSeriesSink(url, org, bucket, token, close_timeout_s=timeout_s, name="replay",
                          max_pending=max(len(lines), 1))  # the whole file is queued at once
    sink.write_lines(lines)
    sink.flush(timeout_s)
    return sink.close()
