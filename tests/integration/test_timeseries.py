"""influxdb-client writes to the real VictoriaMetrics and the points read back exactly."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS


def export(url: str, selector: str) -> list[dict]:
    q = urllib.parse.urlencode({"match[]": selector})
    with urllib.request.urlopen(f"{url}/api/v1/export?{q}", timeout=30) as resp:
        return [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]


def test_points_written_read_back_exactly(victoria_url):
    run = uuid.uuid4().hex[:8]
    t0_ms = (int(time.time()) - 600) * 1000  # VictoriaMetrics keeps millisecond timestamps
    points = []
    expected: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for cell in ("c1", "c2", "c3"):
        for i in range(50):
            ts = t0_ms + i * 1000
            sat = round(0.5 + 0.01 * i + (0.001 if cell == "c2" else 0.0), 6)
            prb = 10 + i
            points.append(
                Point("zot_it_cell").tag("run", run).tag("cell", cell)
                .field("mean_satisfaction", sat).field("prb_used", float(prb)).time(ts, WritePrecision.MS)
            )
            expected.setdefault(("zot_it_cell_mean_satisfaction", cell), []).append((ts, sat))
            expected.setdefault(("zot_it_cell_prb_used", cell), []).append((ts, float(prb)))
    with InfluxDBClient(url=victoria_url, token="unused", org="zot") as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket="zot", record=points)
    urllib.request.urlopen(f"{victoria_url}/internal/force_flush", timeout=30).read()

    deadline = time.monotonic() + 30
    while True:
        series = export(victoria_url, f'{{run="{run}"}}')
        if sum(len(s["values"]) for s in series) >= 300 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    got = {}
    for s in series:
        m = s["metric"]
        got[(m["__name__"], m["cell"])] = list(zip(s["timestamps"], s["values"]))
    assert got == expected
