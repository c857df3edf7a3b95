"""Metrics sink: points in InfluxDB line protocol, to a run-folder file or a time-series server.

The catalogue below is the one place where measurement, tag and field names are
defined; tags are only ever of bounded cardinality (cell, policy, segment, app,
worker), never user ids (per-user series are sampled, see `USER`).

| measurement   | tags                         | fields |
|---------------|------------------------------|--------|
| `zot_cell`    | scenario, policy, cell       | users, prb_used, prb_total, prb_saved, frac_adequate, frac_desired, mean_satisfaction, revenue, solve_ms, overload |
| `zot_policy`  | scenario, policy             | users, prb_used, prb_saved_frac, frac_adequate, frac_desired, mean_satisfaction, revenue, jain |
| `zot_segment` | scenario, policy, segment    | users, frac_adequate, mean_satisfaction |
| `zot_zot`     | scenario, app                | mae_adequate_rel, mae_desired_rel, coverage90, slots, mean_signals |
| `zot_user`    | scenario, policy, user_slot  | satisfaction, adequate_est, adequate_sd, desired_est (sampled users; user_slot is 0..K-1) |
| `zot_engine`  | worker                       | events_per_s, lag, dead_letters, batch_ms, dropped_points |

The VictoriaMetrics/Prometheus name of a field is `<measurement>_<field>`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

from influxdb_client import Point, WritePrecision

log = logging.getLogger("zot.metrics")

CATALOGUE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "zot_cell": (
        ("scenario", "policy", "cell"),
        ("users", "prb_used", "prb_total", "prb_saved", "frac_adequate", "frac_desired", "mean_satisfaction",
         "revenue", "solve_ms", "overload"),
    ),
    "zot_policy": (
        ("scenario", "policy"),
        ("users", "prb_used", "prb_saved_frac", "frac_adequate", "frac_desired", "mean_satisfaction", "revenue",
         "jain"),
    ),
    "zot_segment": (("scenario", "policy", "segment"), ("users", "frac_adequate", "mean_satisfaction")),
    "zot_zot": (("scenario", "app"), ("mae_adequate_rel", "mae_desired_rel", "coverage90", "slots", "mean_signals")),
    "zot_user": (
        ("scenario", "policy", "user_slot"),
        ("satisfaction", "adequate_est", "adequate_sd", "desired_est"),
    ),
    "zot_engine": (("worker",), ("events_per_s", "lag", "dead_letters", "batch_ms", "dropped_points")),
}


def point(measurement: str, tags: dict[str, str], fields: dict[str, float], ts_ms: int) -> Point:
    """A point checked against the catalogue (unknown names are programming errors)."""
    allowed_tags, allowed_fields = CATALOGUE[measurement]
    bad = (set(tags) - set(allowed_tags)) | (set(fields) - set(allowed_fields))
    if bad:
        raise KeyError(f"{measurement}: names not in the metrics catalogue: {sorted(bad)}")
    p = Point(measurement)
    for k, v in tags.items():
        p = p.tag(k, v)
    for k, v in fields.items():
        p = p.field(k, float(v))
    return p.time(ts_ms, WritePrecision.MS)


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
        for p in points:
            self._fh.write(p.to_line_protocol() + "\n")
        self.written += len(points)

    def close(self) -> dict[str, int]:
        self._fh.close()
        return {"written": self.written, "dropped": 0}


class TimeSeriesSink:
    """influxdb-client's batching writer: asynchronous, never blocks or raises into the engine.

    Works against VictoriaMetrics' `/api/v2/write` and InfluxDB 2.x/3.x alike.
    Points that fail after the client's retries are counted as dropped and
    reported at close; a server that comes back is written to again.
    """

    def __init__(self, url: str, org: str, bucket: str, token: str | None, batch_size: int = 5000,
                 flush_ms: int = 1000) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import WriteOptions

        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.bucket = bucket
        self._client = InfluxDBClient(url=url, token=token or "", org=org, timeout=5_000)
        self._api = self._client.write_api(
            write_options=WriteOptions(batch_size=batch_size, flush_interval=flush_ms, retry_interval=500,
                                       max_retries=3, max_retry_delay=5_000, max_close_wait=10_000),
            success_callback=self._ok, error_callback=self._error, retry_callback=self._retry,
        )

    def _ok(self, conf: tuple, data: str | bytes) -> None:
        with self._lock:
            self.written += _count_lines(data)

    def _error(self, conf: tuple, data: str | bytes, exc: Exception) -> None:
        n = _count_lines(data)
        with self._lock:
            self.dropped += n
        log.warning("metrics: dropped %d point(s): %s", n, type(exc).__name__)

    def _retry(self, conf: tuple, data: str | bytes, exc: Exception) -> None:
        log.info("metrics: retrying a batch: %s", type(exc).__name__)

    def write(self, points: list[Point]) -> None:
        try:
            self._api.write(bucket=self.bucket, record=points)
        except Exception as exc:  # the batching writer only queues; never let metrics stop the engine
            with self._lock:
                self.dropped += len(points)
            log.warning("metrics: could not queue %d point(s): %s", len(points), type(exc).__name__)

    def close(self) -> dict[str, int]:
        try:
            self._api.close()
        finally:
            self._client.close()
        with self._lock:
            return {"written": self.written, "dropped": self.dropped}


def _count_lines(data: str | bytes) -> int:
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return sum(1 for line in data.split("\n") if line.strip())
