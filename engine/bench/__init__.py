"""Benchmarks run from the CLI: `zot bench NAME [--quick] [--json]`.

Each benchmark is a module here with `run(quick: bool = False) -> dict` returning
`{"bench": NAME, "targets": [{"name", "value", "op", "goal", "unit"}, ...], ...}`,
every value measured in that run. This package only finds and judges them.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

# name -> (module, issue that owns it)
BENCHES: dict[str, tuple[str, int]] = {
    "satisfaction": ("engine.bench.satisfaction", 3),
    "optimizer": ("engine.bench.optimizer", 4),
    "simulator": ("engine.bench.simulator", 5),
    "stream": ("engine.bench.stream", 6),
    "interest": ("engine.bench.interest", 7),
}


class BenchUnavailable(Exception):
    """The benchmark is not built yet."""


def run_bench(name: str, quick: bool = False) -> dict[str, Any]:
    """Run one benchmark and annotate each target with whether it was met."""
    if name not in BENCHES:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHES))}")
    module_name, issue = BENCHES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise BenchUnavailable(f"benchmark {name!r} is not implemented yet (issue {issue})") from None
    result = module.run(quick=quick)
    result.setdefault("bench", name)
    result["quick"] = quick
    for target in result["targets"]:
        target["met"] = target_met(target)
    return result


def target_met(target: dict[str, Any]) -> bool:
    value = float(target["value"])
    if not math.isfinite(value):
        return False
    if target["op"] == ">=":
        return value >= float(target["goal"])
    if target["op"] == "<=":
        return value <= float(target["goal"])
    raise ValueError(f"target {target['name']!r} has op {target['op']!r}; allowed: '>=', '<='")


def markdown_table(result: dict[str, Any]) -> str:
    """The targets of a result as a Markdown table, for BENCHMARKS.md."""
    rows = ["| target | measured | goal | met |", "|---|---|---|---|"]
    for t in result["targets"]:
        rows.append(
            f"| {t['name']} | {_fmt(t['value'])} {t['unit']} | {t['op']} {_fmt(t['goal'])} {t['unit']} "
            f"| {'yes' if t.get('met') else 'no'} |"
        )
    return "\n".join(rows)


def _fmt(x: Any) -> str:
    x = float(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"
