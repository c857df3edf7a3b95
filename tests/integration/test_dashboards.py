"""Every Grafana panel query returns data of the expected shape from a real VictoriaMetrics.

A short simulation (zot and universal fit) writes its run folder; its
`metrics.lp` is replayed into VictoriaMetrics; then each dashboard's template
variables are resolved the way Grafana does (`label_values(...)` through the
label API) and every panel target runs through `/api/v1/query_range`. A target
must return at least one series with finite values, and every label its legend
names (`{{label}}`) must be on every series.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from engine import metrics
from engine.config import load_config
from simulators.loop import run
from simulators.run_dir import write_run

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
EPOCHS, EPOCH_S = 12, 5.0


def _get(url: str, path: str, **params) -> dict:
    q = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{url}{path}?{q}", timeout=30) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture(scope="module")
def loaded(victoria_url, tmp_path_factory):
    """A run's points in VictoriaMetrics, ending now; returns (scenario, start_s, end_s)."""
    base = load_config(ROOT / "configs" / "example.yaml")
    scenario = "dash" + uuid.uuid4().hex[:8]
    cfg = base.model_copy(update={
        "name": scenario,
        "population": base.population.model_copy(update={"users": 60}),
        "cells": base.cells.model_copy(update={"hex": base.cells.hex.model_copy(update={"sites": 1})}),
        "simulation": base.simulation.model_copy(update={"epochs": EPOCHS, "epoch_s": EPOCH_S,
                                                          "policies": ["zot", "universal_fit"]}),
    })
    out = tmp_path_factory.mktemp("run")
    write_run(run(cfg, ["zot", "universal_fit"]), out)
    end_ms = int(time.time() * 1000) - 2000
    stats = metrics.replay(out, victoria_url, end_ms=end_ms)
    n_lines = sum(1 for line in (out / "metrics.lp").read_text().splitlines() if line.strip())
    assert stats == {"written": n_lines, "dropped": 0}
    urllib.request.urlopen(f"{victoria_url}/internal/force_flush", timeout=30).read()
    start_s = (end_ms - EPOCHS * EPOCH_S * 1000) / 1000 - 30
    return scenario, start_s, end_ms / 1000 + 60


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return [p for p in out if p.get("targets")]


def _substitute(expr: str, values: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1h")
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    assert "$" not in expr, f"unresolved variable in {expr}"
    return expr


def _label_values(url: str, query: str, values: dict[str, str], start: float, end: float) -> list[str]:
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert m, f"variable query {query!r} is not label_values(selector, label)"
    selector = _substitute(m.group(1), values)
    return _get(url, f"/api/v1/label/{m.group(2)}/values", **{"match[]": selector, "start": int(start),
                                                              "end": int(end)})


def _resolve_variables(url: str, dash: dict, scenario: str, start: float, end: float) -> dict[str, str]:
    values: dict[str, str] = {}
    for v in dash["templating"]["list"]:
        assert v["type"] == "query" and v["datasource"]["uid"] == "zot-metrics"
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        found = _label_values(url, query, values, start, end)
        assert found, f"{dash['uid']}: variable {v['name']} has no values"
        if v["name"] == "scenario":
            assert scenario in found
            values["scenario"] = scenario
        elif v.get("includeAll"):
            values[v["name"]] = v.get("allValue") or "|".join(found)
        else:
            values[v["name"]] = sorted(found)[0]  # Grafana's default: the first value
    return values


def test_dashboards_are_provisioned_and_well_formed():
    assert {d.name for d in DASHBOARDS} == {"operator-overview.json", "engine-health.json", "user-drilldown.json"}
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/zot.yaml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/victoria.yaml").read_text())
    uid = ds["datasources"][0]["uid"]
    uids = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["uid"] not in uids
        uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for p in _panels(dash):
            assert p["datasource"]["uid"] == uid, (path.name, p["title"])
            for t in p["targets"]:
                # Every metric name a query uses is in the catalogue (no panel on a series nobody writes).
                names = set(re.findall(r"\b(zot_[a-z0-9_]+)\b", t["expr"]))
                assert names and names <= set(metrics.prometheus_names()), (p["title"], names)


@pytest.mark.parametrize("path", DASHBOARDS, ids=[d.stem for d in DASHBOARDS])
def test_every_panel_query_returns_data_of_the_expected_shape(path, loaded, victoria_url):
    scenario, start, end = loaded
    dash = json.loads(path.read_text())
    values = _resolve_variables(victoria_url, dash, scenario, start, end)
    for p in _panels(dash):
        for t in p["targets"]:
            expr = _substitute(t["expr"], values)
            if "scenario" not in expr:
                # Engine panels span scenarios: confine them to this run's.
                expr = re.sub(r"\b(zot_[a-z0-9_]+)\{", rf'\1{{scenario="{scenario}",', expr)
            data = _get(victoria_url, "/api/v1/query_range", query=expr, start=start, end=end, step="5s")
            where = f"{path.name} / {p['title']!r} / {t['refId']}: {expr}"
            assert data["resultType"] == "matrix", where
            assert data["result"], f"no data: {where}"
            wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
            for series in data["result"]:
                assert wanted <= set(series["metric"]), f"labels {wanted} missing in {series['metric']}: {where}"
                vals = [float(v) for _, v in series["values"]]
                assert vals and all(math.isfinite(v) for v in vals), where


def test_engine_metrics_timeseries_config_loads_the_run_into_the_server(victoria_url, tmp_path):
    """`engine.metrics: timeseries` sends the run's points to the configured server (token from the env)."""
    base = load_config(ROOT / "configs" / "example.yaml")
    scenario = "cfg" + uuid.uuid4().hex[:8]
    cfg = base.model_copy(update={
        "name": scenario,
        "population": base.population.model_copy(update={"users": 30}),
        "cells": base.cells.model_copy(update={"hex": base.cells.hex.model_copy(update={"sites": 1})}),
        "simulation": base.simulation.model_copy(update={"epochs": 4, "policies": ["zot"]}),
        "engine": base.engine.model_copy(update={"metrics": "timeseries"}),
        "timeseries": base.timeseries.model_copy(update={"url": victoria_url}),
    })
    write_run(run(cfg, ["zot"]), tmp_path)
    urllib.request.urlopen(f"{victoria_url}/internal/force_flush", timeout=30).read()
    deadline = time.monotonic() + 20
    while True:
        q = urllib.parse.urlencode({"match[]": f'zot_policy_prb_used{{scenario="{scenario}"}}'})
        with urllib.request.urlopen(f"{victoria_url}/api/v1/export?{q}", timeout=30) as resp:
            series = [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]
        # Points of the last second are hidden by VictoriaMetrics' -search.latencyOffset: wait for them.
        if (series and len(series[0]["values"]) >= 4) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(series) == 1 and len(series[0]["values"]) == 4
    # The same values as the run folder's file, timestamps shifted to end now.
    local = [float(line.split("prb_used=")[1].split(",")[0].split(" ")[0])
             for line in (tmp_path / "metrics.lp").read_text().splitlines() if line.startswith("zot_policy,")]
    assert series[0]["values"] == local
    assert abs(series[0]["timestamps"][-1] / 1000 - time.time()) < 120
