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

from engine.config import Config, ConfigError, load_config

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
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        err.print(f"zot: {len(exc.problems)} problem(s) in {path}", markup=False)
        raise typer.Exit(2) from None


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
) -> None:
    """Run a simulation with the engine in the loop (embedded bus by default)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from simulators.loop import run
    from simulators.run_dir import write_run

    cfg = _config(config)
    if kafka:
        _not_yet("`zot simulate --kafka` (the engine on Kafka)", 6)
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
        result = run(cfg, names, progress=lambda e: bar.update(task, completed=e))
    summary = write_run(result, run_dir)
    _print_summary(summary)
    out.print(f"results: {run_dir}", markup=False)


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
def engine(config: ConfigArg) -> None:
    """Start an engine worker on the Kafka bus named in the config."""
    _config(config)
    _not_yet("`zot engine`", 6)


@app.command()
def optimize(config: ConfigArg) -> None:
    """Solve one epoch's allocation for a scenario and print the decisions."""
    _config(config)
    _not_yet("`zot optimize`", 4)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder written by `zot simulate`.")]) -> None:
    """Write the HTML report of a run."""
    _not_yet("`zot report`", 8)


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="satisfaction, optimizer, simulator, stream or interest.")],
    quick: Annotated[bool, typer.Option("--quick", help="Short smoke version (CI).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run a benchmark; every target is measured in this run."""
    from engine.bench import BenchUnavailable, markdown_table, run_bench

    try:
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
    app()


if __name__ == "__main__":
    main()
