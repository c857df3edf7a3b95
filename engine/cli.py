"""The `zot` command line.

Every command that reads a config reports a bad one as file:line:col, field, what is
wrong and what is allowed, and exits 2 without a traceback. Commands that are not
built yet say so and exit 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console

from engine import logs
from engine.config import Config, ConfigError, load_config, secrets_from_env

app = typer.Typer(
    name="zot",
    help="zot: streaming network-personalization engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
infra_app = typer.Typer(help="Start, stop and inspect the local Kafka broker and time-series server.", no_args_is_help=True)
app.add_typer(infra_app, name="infra")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True, width=120)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]zot:[/] {message}")
    raise typer.Exit(code)


def _not_yet(what: str, issue: int) -> NoReturn:
    _fail(f"{what} is not implemented yet (issue {issue}).", 1)


def _config(path: Path) -> Config:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        err.print(f"zot: {len(exc.problems)} problem(s) in {path}", markup=False)
        raise typer.Exit(2) from None
    # Whatever a command logs from here on, the credentials this config names are masked.
    logs.register_secrets(secrets_from_env(cfg))
    return cfg


ConfigArg = Annotated[Path, typer.Argument(help="Operator config file (YAML).", show_default=False)]


@app.command("check-config")
def check_config(config: ConfigArg) -> None:
    """Validate a config file; print every problem with file, line and field (exit 2 if any)."""
    cfg = _config(config)
    out.print(
        f"{config}: ok — scenario {cfg.name!r}: {cfg.population.users} users in "
        f"{len(cfg.population.segments)} segment(s), {len(cfg.applications)} application(s), "
        f"objective {cfg.objective.scalarization}, overload policy {cfg.overload.policy}",
        markup=False,
    )


@app.command()
def simulate(
    config: ConfigArg = Path("configs/example.yaml"),
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<name>-<time>).")] = None,
    policy: Annotated[str, typer.Option(help="Policies, comma-separated; 'all'; or 'config' (the config's list).")] = "config",
    kafka: Annotated[bool, typer.Option("--kafka", help="Use the Kafka bus from the config instead of the embedded one.")] = False,
    engine_workers: Annotated[int, typer.Option("--engine-workers", help="With --kafka: engine worker processes to "
                                                "start for the run (0: use workers already running).")] = 1,
    direct: Annotated[bool, typer.Option("--direct", help="zot decides in process on arrays (the engine's "
                                         "learner and solver, no events): for large runs.")] = False,
) -> None:
    """Run a simulation with the engine in the loop (embedded bus by default)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from simulators.loop import run
    from simulators.run_dir import write_run

    cfg = _config(config)
    names = list(cfg.simulation.policies) if policy == "config" else (
        ["zot", "universal_fit", "equal_share", "proportional_fair", "max_rate"] if policy == "all" else
        [p.strip() for p in policy.split(",")])
    allowed = {"zot", "universal_fit", "equal_share", "proportional_fair", "max_rate"}
    if not set(names) <= allowed:
        _fail(f"--policy {policy!r}: allowed {sorted(allowed)}, 'all' or 'config'", 2)
    run_dir = out_dir or PROJECT_ROOT / "runs" / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with Progress(TextColumn("[bold]simulate[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(f"{cfg.name}: {', '.join(names)}", total=cfg.simulation.epochs)
        if kafka and direct:
            _fail("--direct runs zot without a bus: it does not go with --kafka", 2)
        if not kafka:
            result = run(cfg, names, progress=lambda e: bar.update(task, completed=e), direct=direct)
        else:
            result = _simulate_on_kafka(cfg, config, names, engine_workers, run_dir,
                                        lambda e: bar.update(task, completed=e))
    summary = write_run(result, run_dir)
    _print_summary(summary)
    out.print(f"results: {run_dir}", markup=False)
    report(run_dir)


def _simulate_on_kafka(cfg: Config, config: Path, names: list[str], n_workers: int, run_dir: Path, progress):
    """The simulation with `zot engine` workers on the configured Kafka deciding for the zot policy."""
    import signal

    from engine.config import secrets_from_env
    from engine.faust_app import app_id
    from engine.kafka_client import KafkaSetupError, client_options, ensure_topics
    from engine.remote_engine import RemoteEngineBus, spawn_worker, wait_group_members
    from engine.state_changelog import ensure_changelog
    from simulators.loop import run

    if "zot" not in names:
        _fail("--kafka runs the engine: include the 'zot' policy", 2)
    try:
        options = client_options(cfg.kafka, secrets_from_env(cfg))
        ensure_topics(options, cfg.kafka)
        ensure_changelog(options, cfg.kafka)
    except KafkaSetupError as exc:
        _fail(str(exc), 2)
    except Exception as exc:  # noqa: BLE001 - no broker: say so, no traceback
        _fail(f"cannot reach Kafka at {cfg.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}", 1)
    run_dir.mkdir(parents=True, exist_ok=True)
    workers = [spawn_worker(config.resolve(), f"sim{i}", run_dir / f"engine-worker{i}.log") for i in range(n_workers)]
    try:
        if workers:
            wait_group_members(options, app_id(cfg), n_workers)
        bus = RemoteEngineBus(cfg, options, workers=workers)
        try:
            return run(cfg, names, bus=bus, progress=progress)
        finally:
            bus.close()
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    t = Table(title=f"{summary['scenario']}: {summary['users']} users, {summary['cells']} cells, "
                    f"{summary['epochs']} epochs (seed {summary['seed']})")
    for col in ("policy", "at adequate", "at desired", "mean S", "PRBs used", "bandwidth saved", "revenue",
                "Jain"):
        t.add_column(col, justify="right" if col != "policy" else "left")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    for name, pol in summary["policies"].items():
        o = pol["overall"]
        t.add_row(name, pct(o["frac_adequate"]), pct(o["frac_desired"]),
                  "-" if o["mean_satisfaction"] is None else f"{o['mean_satisfaction']:.3f}",
                  f"{o['prb_used']:.1f}", pct(o["bandwidth_saved_frac"]), f"{o['revenue']:.2f}",
                  "-" if o["jain"] is None else f"{o['jain']:.3f}")
    out.print(t)
    if "comparison" in summary:
        c = summary["comparison"]
        out.print(f"zot vs universal fit: bandwidth saving {pct(c['bandwidth_saving_vs_universal_fit'])}, "
                  f"at adequate {pct(c['frac_adequate_zot'])} vs {pct(c['frac_adequate_universal_fit'])}",
                  markup=False)


@app.command()
def engine(
    config: ConfigArg,
    worker_id: Annotated[str, typer.Option("--worker-id", help="Stable id of this worker (its transactional id); "
                                           "restart a dead worker with the same id.")] = "0",
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
    consumer: Annotated[str, typer.Option("--consumer", help="'batch' (default): aiokafka fetches whole batches "
                                          "(faster); 'faust': a Faust agent reads the inputs.")] = "batch",
) -> None:
    """Start an engine worker (Faust) on the Kafka cluster named in the config."""
    import logging

    from engine.config import secrets_from_env
    from engine.faust_app import run_worker
    from engine.kafka_client import KafkaSetupError, client_options, ensure_topics
    from engine.state_changelog import ensure_changelog
    from simulators.radio import build_layout

    cfg = _config(config)
    if consumer not in ("batch", "faust"):
        _fail(f"--consumer {consumer!r}: allowed 'batch' or 'faust'", 2)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        options = client_options(cfg.kafka, secrets_from_env(cfg))
    except KafkaSetupError as exc:
        _fail(str(exc), 2)
    try:
        ensure_topics(options, cfg.kafka)
        ensure_changelog(options, cfg.kafka)
    except Exception as exc:  # noqa: BLE001 - no broker: say so, no traceback
        _fail(f"cannot reach Kafka at {cfg.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}", 1)
    _, cell_ids = build_layout(cfg)
    run_worker(cfg, options, worker_id, cells=set(cell_ids), loglevel=log_level, consumer=consumer)


@app.command()
def optimize(
    config: ConfigArg,
    reference: Annotated[bool, typer.Option("--reference", help="Also solve each cell with cvxpy + CLARABEL.")] = False,
    pareto: Annotated[Optional[str], typer.Option(help="Cell id whose Pareto front to print ('busiest' for the busiest cell).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Solve the scenario's first epoch (users' zones from the population prior) and print the decisions."""
    import numpy as np

    from optimizer.pareto import pareto_front
    from optimizer.problem import objective_value
    from optimizer.reference import solve_reference
    from optimizer.solver import solve_epoch
    from simulators.snapshot import first_epoch

    cfg = _config(config)
    snap = first_epoch(cfg)
    prob = snap.problem
    obj = cfg.objective
    scal = "weighted_sum" if obj.scalarization == "pareto" else obj.scalarization
    target = obj.satisfaction_target if obj.target_level == "satisfaction" else None
    res = solve_epoch(prob, scal, price=obj.resource_price, target=target, overload=cfg.overload.policy,
                      weighted=cfg.overload.weighted)
    cells = []
    for i, cid in enumerate(snap.cell_ids):
        r = res.cell(i)
        row = {"cell": cid, "users": int(prob.offsets[i + 1] - prob.offsets[i]), "prb_used": r.prb_used,
               "prb_total": int(prob.n_prb[i]), "served": int(r.served.sum()),
               "mean_satisfaction": float(r.satisfaction.mean()) if r.satisfaction.size else None,
               "overload": r.overload, "objective": objective_value(prob.cell(i), scal, r.x, obj.resource_price)}
        if reference and row["users"]:
            ref = solve_reference(prob.cell(i), scal, price=obj.resource_price, target=target)
            row["reference_status"] = ref.status
            row["reference_objective"] = ref.objective
            denom = max(abs(ref.objective), 1e-12)
            row["reference_gap_rel"] = abs(row["objective"] - ref.objective) / denom
        cells.append(row)
    report = {"scenario": cfg.name, "scalarization": scal, "solve_ms": res.solve_ms, "cells": cells}
    if pareto is not None:
        sizes = np.diff(prob.offsets)
        idx = int(np.argmax(sizes)) if pareto == "busiest" else (snap.cell_ids.index(pareto)
                                                                  if pareto in snap.cell_ids else -1)
        if idx < 0:
            _fail(f"--pareto {pareto!r}: not a cell of this scenario; e.g. {snap.cell_ids[:3]} or 'busiest'", 2)
        front = pareto_front(prob.cell(idx), n_points=obj.pareto_points, target=target,
                             overload=cfg.overload.policy)
        report["pareto"] = {"cell": snap.cell_ids[idx], **front.as_dict()}
    if as_json:
        sys.stdout.write(json.dumps(report, default=float) + "\n")
        return
    from rich.table import Table

    t = Table(title=f"{cfg.name}: first epoch, {scal} ({res.solve_ms:.2f} ms for all cells)")
    cols = ["cell", "users", "PRBs", "served", "mean S", "overload"] + (["cvxpy gap"] if reference else [])
    for col in cols:
        t.add_column(col, justify="left" if col == "cell" else "right")
    for c in cells:
        extra = [f"{c['reference_gap_rel']:.1e}" if "reference_gap_rel" in c else "-"] if reference else []
        t.add_row(c["cell"], str(c["users"]), f"{c['prb_used']}/{c['prb_total']}", str(c["served"]),
                  "-" if c["mean_satisfaction"] is None else f"{c['mean_satisfaction']:.3f}",
                  "yes" if c["overload"] else "no", *extra)
    out.print(t)
    if "pareto" in report:
        p = Table(title=f"Pareto front, cell {report['pareto']['cell']} (PRBs used vs {report['pareto']['metric']})")
        for col in ("knob", "value", "PRBs", "mean S", "at target"):
            p.add_column(col, justify="right")
        for pt in report["pareto"]["front"]:
            p.add_row(pt["knob"], f"{pt['value']:.4g}", str(pt["prb_used"]), f"{pt['mean_satisfaction']:.3f}",
                      f"{100 * pt['fraction_at_target']:.0f}%")
        out.print(p)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder written by `zot simulate`.")]) -> None:
    """Write the HTML report of a run (report.html and report_files/ in the run folder)."""
    from engine.report import ReportError, write_report

    if not run_dir.is_dir():
        _fail(f"{run_dir}: no such run folder", 2)
    try:
        path = write_report(run_dir)
    except ReportError as exc:
        _fail(str(exc), 2)
    out.print(f"report: {path}", markup=False)


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="satisfaction, optimizer, simulator, stream or interest.")],
    quick: Annotated[bool, typer.Option("--quick", help="Short smoke version (CI).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run a benchmark; every target is measured in this run."""
    from engine.bench import BenchUnavailable, markdown_table, run_bench

    try:
        # Benchmarks run for minutes: a live spinner with elapsed time on stderr, the result on stdout.
        with err.status(f"zot bench {name}{' --quick' if quick else ''}: measuring (see BENCHMARKS.md for what)"):
            result = run_bench(name, quick=quick)
    except KeyError as exc:
        _fail(str(exc.args[0]), 2)
    except BenchUnavailable as exc:
        _fail(str(exc), 1)
    if as_json:
        sys.stdout.write(json.dumps(result, default=float) + "\n")
    else:
        out.print(markdown_table(result), markup=False)


@app.command()
def schemas(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the JSON Schema files.")] = PROJECT_ROOT / "schemas",
) -> None:
    """Export the JSON Schema of every event type (for producers in other languages)."""
    from engine.schemas import json_schemas

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out_dir / f"{name}.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    out.print(f"wrote {len(json_schemas())} schemas to {out_dir}", markup=False)


@app.command("config-reference")
def config_reference(
    out_file: Annotated[Path, typer.Option("--out")] = PROJECT_ROOT / "docs" / "config.md",
) -> None:
    """Regenerate the config reference (docs/config.md) from the schema."""
    from engine.config import reference_markdown

    out_file.write_text(reference_markdown())
    out.print(f"wrote {out_file}", markup=False)


@infra_app.command("up")
def infra_up(
    only: Annotated[Optional[str], typer.Option(help="Start only 'kafka' or 'victoria'.")] = None,
    kafka_port: Annotated[int, typer.Option()] = 9092,
    vm_port: Annotated[int, typer.Option()] = 8428,
) -> None:
    """Start Kafka (KRaft, 127.0.0.1) and VictoriaMetrics, and wait until they answer."""
    from engine import infra

    services = ("kafka", "victoria") if only is None else (only,)
    if not set(services) <= {"kafka", "victoria"}:
        _fail(f"--only {only!r}: allowed 'kafka' or 'victoria'", 2)
    try:
        status = infra.infra_up(PROJECT_ROOT, services=services, kafka_port=kafka_port, vm_port=vm_port)
    except infra.InfraError as exc:
        _fail(str(exc), 1)
    out.print(json.dumps(status, indent=2), markup=False)


@infra_app.command("down")
def infra_down() -> None:
    """Stop the servers `zot infra up` started."""
    from engine import infra

    out.print(json.dumps(infra.infra_down(PROJECT_ROOT), indent=2), markup=False)


@infra_app.command("status")
def infra_status() -> None:
    """Show whether the local servers are running and answering."""
    from engine import infra

    out.print(json.dumps(infra.infra_status(PROJECT_ROOT), indent=2), markup=False)


def main() -> None:
    # One structured line per event on stderr (logfmt; ZOT_LOG_FORMAT=json for JSON).
    import os

    fmt = os.environ.get("ZOT_LOG_FORMAT", "logfmt")
    level = os.environ.get("ZOT_LOG_LEVEL", "WARNING").upper()
    logs.configure(fmt=fmt if fmt in ("logfmt", "json") else "logfmt",
                   level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "WARNING")
    app()


if __name__ == "__main__":
    main()
