"""Operator config files: the typed schema of a scenario/engine config, and loading.

One YAML file per scenario (see `configs/`). Every section has defaults a newcomer
can run with; every field is checked, unknown fields are errors (a typo must not
silently fall back to a default). Secrets never live here: a config names the
environment variables that hold them (`*_env` fields), see `Secrets`.

`load_config(path)` raises `ConfigError`, whose `problems` each carry file, line,
column, field path, what is wrong and what is allowed; `zot check-config` prints
them and exits 2.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PosFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
EnvName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- radio and cells


class Radio(_Section):
    """Carrier, numerology and link budget shared by all cells."""

    carrier_ghz: Annotated[float, Field(ge=0.5, le=100.0)] = 3.5
    bandwidth_mhz: PosFloat = 20.0
    subcarrier_khz: Literal[15, 30, 60, 120] = 30
    prb_per_cell: Annotated[int, Field(ge=1, le=3300)] = 51
    tx_power_dbm: Annotated[float, Field(ge=0.0, le=60.0)] = 46.0
    noise_figure_db: Annotated[float, Field(ge=0.0, le=20.0)] = 7.0
    scenario: Literal["UMa", "UMi"] = "UMa"
    bs_height_m: PosFloat = 25.0
    ue_height_m: PosFloat = 1.5
    antenna: Literal["omni", "sector"] = "sector"
    shadowing: bool = True
    fast_fading: Literal["rayleigh", "none"] = "rayleigh"
    cqi_table: Literal[1, 2] = 1
    handover_hysteresis_db: NonNegFloat = 3.0
    # 3GPP time-to-trigger is 40-640 ms: a whole allocation epoch (~1 s) or more is
    # already longer, so the default hands over at the first epoch the A3 condition holds.
    handover_ttt_epochs: Annotated[int, Field(ge=0, le=100)] = 0

    @property
    def prb_bandwidth_hz(self) -> float:
        """One PRB is 12 subcarriers."""
        return 12 * self.subcarrier_khz * 1e3

    @model_validator(mode="after")
    def _prbs_fit(self) -> "Radio":
        if self.prb_per_cell * self.prb_bandwidth_hz > self.bandwidth_mhz * 1e6:
            raise ValueError(
                f"prb_per_cell={self.prb_per_cell} x {self.prb_bandwidth_hz / 1e3:.0f} kHz exceeds "
                f"bandwidth_mhz={self.bandwidth_mhz}"
            )
        return self


HEX_SITE_COUNTS = tuple(3 * r * (r + 1) + 1 for r in range(12))  # 1, 7, 19, 37, ...


class HexLayout(_Section):
    """Sites on a hexagonal grid in complete rings around a centre site."""

    sites: Annotated[int, Field(ge=1, le=HEX_SITE_COUNTS[-1])] = 7
    isd_m: PosFloat = 500.0
    sectors: Literal[1, 3] = 3
    wrap_around: bool = True  # measure distances on a torus so edge cells see interference too

    @model_validator(mode="after")
    def _complete_rings(self) -> "HexLayout":
        if self.sites not in HEX_SITE_COUNTS:
            raise ValueError(f"sites={self.sites} is not a complete hexagonal layout; allowed: {HEX_SITE_COUNTS[:6]}...")
        return self

    @property
    def rings(self) -> int:
        return HEX_SITE_COUNTS.index(self.sites)


class ExplicitCell(_Section):
    id: Name
    x_m: float
    y_m: float
    azimuth_deg: Annotated[float, Field(ge=0.0, lt=360.0)] | None = None
    prb: Annotated[int, Field(ge=1, le=3300)] | None = None


class Cells(_Section):
    """Where the cells are: a hexagonal layout generator, or an explicit list."""

    layout: Literal["hex", "explicit"] = "hex"
    hex: HexLayout = HexLayout()
    explicit: list[ExplicitCell] = []

    @model_validator(mode="after")
    def _explicit_given(self) -> "Cells":
        if self.layout == "explicit":
            if not self.explicit:
                raise ValueError("layout 'explicit' needs a non-empty 'explicit' list of cells")
            ids = [c.id for c in self.explicit]
            if len(ids) != len(set(ids)):
                raise ValueError("cell ids in 'explicit' must be unique")
        return self


# ---------------------------------------------------------------- applications


class Metric(str, Enum):
    THROUGHPUT = "throughput_mbps"
    LATENCY = "latency_ms"
    STARTUP = "startup_delay_s"
    STALL = "stall_ratio"


class Application(_Section):
    """An application, the QoS metric its users judge it by, and how that maps to rate.

    latency_ms: q = base_ms + payload_kbit / rate_mbps; startup_delay_s: the same in
    seconds; stall_ratio: q = max(0, 1 - rate / bitrate_mbps); throughput: q = rate.
    """

    metric: Metric
    base_ms: NonNegFloat = 0.0
    payload_kbit: NonNegFloat = 0.0
    bitrate_mbps: NonNegFloat = 0.0
    bitrates_mbps: list[PosFloat] = Field(default=[], description="Catalog bitrate ladder (video).")
    catalog_items: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        default=0, description="Items in the app's catalog (0: a default of 20, e.g. sites or games).")
    session_mean_s: PosFloat = 300.0
    item_mean_s: PosFloat = Field(default=60.0, description="Mean time a user spends on one item in a session.")
    peak_hour: Annotated[float, Field(ge=0.0, lt=24.0)] | None = Field(
        default=None, description="Hour of day the app is most chosen (None: the same at every hour).")
    hour_amplitude: Fraction = Field(
        default=0.5, description="With peak_hour: choice weight 1 + amplitude x cos(2 pi (hour - peak) / 24).")

    @model_validator(mode="after")
    def _mapping_complete(self) -> "Application":
        if self.metric in (Metric.LATENCY, Metric.STARTUP) and self.payload_kbit <= 0:
            raise ValueError(f"metric {self.metric.value} needs payload_kbit > 0 to map latency to rate")
        if self.metric is Metric.STALL and self.bitrate_mbps <= 0:
            raise ValueError("metric stall_ratio needs bitrate_mbps > 0")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.metric is Metric.THROUGHPUT

    def metric_params(self) -> dict[str, float]:
        """The parameters `optimizer.qos` needs to map this app's metric to rate."""
        if self.metric in (Metric.LATENCY, Metric.STARTUP):
            return {"base_ms": self.base_ms, "payload_kbit": self.payload_kbit}
        if self.metric is Metric.STALL:
            return {"bitrate_mbps": self.bitrate_mbps}
        return {}


# ---------------------------------------------------------------- population


class Level(_Section):
    """A log-normal distribution of a QoS level over users: median and log-sd."""

    median: PosFloat
    log_sd: NonNegFloat = 0.3


class Tolerance(_Section):
    """Adequate (least accepted) and desired levels of an app's metric in a segment."""

    adequate: Level
    desired: Level


class Mobility(_Section):
    model: Literal["static", "random_waypoint", "gauss_markov"] = "random_waypoint"
    speed_mps: tuple[NonNegFloat, NonNegFloat] = (0.5, 1.5)
    memory: Fraction = 0.8  # Gauss-Markov alpha

    @model_validator(mode="after")
    def _ordered(self) -> "Mobility":
        if self.speed_mps[0] > self.speed_mps[1]:
            raise ValueError("speed_mps must be [min, max] with min <= max")
        return self


class Segment(_Section):
    name: Name
    share: PosFloat
    mobility: Mobility = Mobility()
    app_mix: dict[Name, PosFloat] = Field(description="Relative preference for each application.")
    tolerance: dict[Name, Tolerance]
    feedback_rate: Fraction = 0.2  # probability a user in session emits a signal per epoch
    activity: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5  # long-run fraction of time in a session
    weight: PosFloat = 1.0  # operator priority (e.g. premium subscribers)


class Population(_Section):
    users: Annotated[int, Field(ge=1, le=10_000_000)] = 200
    segments: list[Segment] = Field(min_length=1)
    interest_drift: NonNegFloat = Field(
        default=0.1, description="Log-scale drift of hidden interests per sqrt(hour) (0: fixed interests).")

    @model_validator(mode="after")
    def _unique(self) -> "Population":
        names = [s.name for s in self.segments]
        if len(names) != len(set(names)):
            raise ValueError("segment names must be unique")
        return self


# ---------------------------------------------------------------- decisions


class Slice(_Section):
    name: Name
    apps: list[Name] = Field(min_length=1)
    min_share: Fraction = 0.0
    max_share: Fraction = 1.0


class Objective(_Section):
    """How the optimizer trades satisfaction, resources and fairness."""

    scalarization: Literal["weighted_sum", "epsilon_constraint", "max_min", "pareto"] = "weighted_sum"
    resource_price: NonNegFloat = 0.01  # log-satisfaction units per PRB
    satisfaction_target: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    target_level: Literal["satisfaction", "adequate"] = "satisfaction"
    eps: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.1  # S(A)=eps, S(D)=1-eps
    pareto_points: Annotated[int, Field(ge=2, le=1000)] = 21
    min_share: Fraction = 0.0
    max_share: Fraction = 1.0
    slices: list[Slice] = []


class Overload(_Section):
    """What happens when targets cannot all be met within a cell's PRBs."""

    policy: Literal["max_served", "degrade_evenly"] = "max_served"
    weighted: bool = False


class Pricing(_Section):
    currency: Annotated[str, Field(min_length=1, max_length=8)] = "EUR"
    prb_hour: NonNegFloat = 0.05  # revenue of one PRB sold for an hour


class Satisfaction(_Section):
    """The online (A, D) learner."""

    forgetting: Annotated[float, Field(gt=0.0, le=1.0)] = 0.999
    prior_strength: PosFloat = 1.0


class Interests(_Section):
    """The online interest models, recommendations and proactive allocation."""

    enabled: bool = True
    model: Literal["cooccurrence", "popularity", "net"] = Field(
        default="cooccurrence", description="Model that ranks the live recommendations.")
    top_k: Annotated[int, Field(ge=1, le=1000)] = 10
    network_aware: bool = Field(
        default=False, description="Demote items the user's last allocated rate cannot deliver.")
    margin: PosFloat = Field(default=1.0, description="Network-aware: deliverable when item rate <= margin x rate.")
    unnamed_app: Literal["predicted", "last", "default"] = Field(
        default="predicted",
        description="A session whose app the network has not named yet is served for: the app the interest "
                    "model predicts (proactive), the user's last app, or the population's most common app.")
    long_half_life_s: PosFloat = 30 * 86400.0
    short_half_life_s: PosFloat = 3600.0
    prior_strength: PosFloat = Field(default=5.0, description="Pseudo-events of the segment's app mix.")
    short_share: Fraction = Field(default=0.5, description="Weight of short-term interests in next-app prediction.")
    visit_gap_s: PosFloat = Field(
        default=180.0, description="App interests count visits: a user's interaction more than this after "
                                   "the previous one (or in another app) opens a new visit.")


class Baselines(_Section):
    universal_fit_percentile: Annotated[float, Field(ge=0.0, le=100.0)] = 90.0
    pf_window_epochs: Annotated[int, Field(ge=1, le=10_000)] = 20


# ---------------------------------------------------------------- connections


class Kafka(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._\-]*$")] = "zot."
    partitions: Annotated[int, Field(ge=1, le=10_000)] = 6
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username_env: EnvName = "ZOT_KAFKA_USERNAME"
    sasl_password_env: EnvName = "ZOT_KAFKA_PASSWORD"


class TimeSeries(_Section):
    url: str = "http://127.0.0.1:8428"
    org: str = "zot"
    bucket: str = "zot"
    token_env: EnvName = "ZOT_TS_TOKEN"


class Engine(_Section):
    bus: Literal["embedded", "kafka"] = "embedded"
    metrics: Literal["file", "timeseries"] = "file"
    epoch_trigger: Literal["kpi", "timer"] = "kpi"
    epoch_s: PosFloat = 1.0
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    profile_interval_s: Annotated[float, Field(ge=0.0, le=3600.0, allow_inf_nan=False)] = Field(
        default=1.0, description="A Kafka worker publishes a user's changed profile this long after the "
                                 "change that first marked it, with everything learned meanwhile: at most "
                                 "one profile per user per interval, in transactions of their own (0: one "
                                 "per touched user in every batch). The embedded runner publishes once per "
                                 "step.")
    kpi_check_every: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1000, description="A Kafka worker's step over user events takes them from its consumer "
                                   "this many at a time and checks for waiting KPI reports after each "
                                   "chunk; if there are, it decides them and commits what it has done so "
                                   "far, so a decision never waits for a whole batch. Each chunk costs a "
                                   "little: at 500, ~10% of the events/s of a backlog.")
    kpi_fetch_max_wait_ms: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=10, description="A Kafka worker's KPI consumer long-polls this long. aiokafka keeps one "
                                "fetch per broker in flight, so a KPI partition a step has just drained "
                                "is fetched again only when the poll for the others returns: a report "
                                "can wait up to this long after it arrived (at 100: p99 +~100 ms). Idle "
                                "polls cost the broker ~1000/this requests a second.")
    fetch_min_bytes: Annotated[int, Field(ge=1, le=64 << 20)] = Field(
        default=256 << 10, description="A Kafka worker fetches user events (feedback, context, "
                                       "interactions) in responses of at least this many bytes, or after "
                                       "fetch_max_wait_ms: fewer, larger fetches cost the broker less CPU.")
    fetch_max_wait_ms: Annotated[int, Field(ge=0, le=10_000)] = 20


class Simulation(_Section):
    seed: Annotated[int, Field(ge=0)] = 1
    epochs: Annotated[int, Field(ge=1, le=10_000_000)] = 60
    epoch_s: PosFloat = 1.0
    policies: list[Literal["zot", "universal_fit", "equal_share", "proportional_fair", "max_rate"]] = [
        "zot",
        "universal_fit",
    ]
    app_detection_epochs: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=0, description="Epochs after a session starts before the network names its app (traffic "
                               "classification); until then context and KPIs carry no app.")


class Config(_Section):
    """A scenario: the network, its users, the operator's objective and connections."""

    name: Name
    description: str = ""
    radio: Radio = Radio()
    cells: Cells = Cells()
    applications: dict[Name, Application] = Field(min_length=1)
    population: Population
    objective: Objective = Objective()
    overload: Overload = Overload()
    pricing: Pricing = Pricing()
    satisfaction: Satisfaction = Satisfaction()
    baselines: Baselines = Baselines()
    interests: Interests = Interests()
    simulation: Simulation = Simulation()
    engine: Engine = Engine()
    kafka: Kafka = Kafka()
    timeseries: TimeSeries = TimeSeries()

    @model_validator(mode="after")
    def _apps_known(self) -> "Config":
        apps = set(self.applications)
        for seg in self.population.segments:
            for field, names in (("app_mix", seg.app_mix), ("tolerance", seg.tolerance)):
                unknown = sorted(set(names) - apps)
                if unknown:
                    raise ValueError(
                        f"segment {seg.name!r} {field} names unknown application(s) {unknown}; "
                        f"allowed: {sorted(apps)}"
                    )
            missing = sorted(set(seg.app_mix) - set(seg.tolerance))
            if missing:
                raise ValueError(f"segment {seg.name!r} uses {missing} in app_mix without a tolerance for them")
            for app, tol in seg.tolerance.items():
                better = self.applications[app].higher_is_better
                a, d = tol.adequate.median, tol.desired.median
                if (d <= a) if better else (d >= a):
                    word = "above" if better else "below"
                    raise ValueError(
                        f"segment {seg.name!r} app {app!r}: desired median must be {word} adequate median "
                        f"(metric {self.applications[app].metric.value})"
                    )
        for sl in self.objective.slices:
            unknown = sorted(set(sl.apps) - apps)
            if unknown:
                raise ValueError(f"slice {sl.name!r} names unknown application(s) {unknown}; allowed: {sorted(apps)}")
        return self


# ---------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Secrets:
    """Credentials read from the environment variables a config names.

    `repr` never shows values, so a logged Secrets leaks nothing.
    """

    kafka_username: str | None
    kafka_password: str | None
    ts_token: str | None

    def __repr__(self) -> str:
        def mark(v: str | None) -> str:
            return "unset" if v is None else "set"

        return (
            f"Secrets(kafka_username={mark(self.kafka_username)}, kafka_password={mark(self.kafka_password)}, "
            f"ts_token={mark(self.ts_token)})"
        )

    __str__ = __repr__


def secrets_from_env(cfg: Config, environ: typing.Mapping[str, str] | None = None) -> Secrets:
    env = os.environ if environ is None else environ
    return Secrets(
        kafka_username=env.get(cfg.kafka.sasl_username_env),
        kafka_password=env.get(cfg.kafka.sasl_password_env),
        ts_token=env.get(cfg.timeseries.token_env),
    )


# ---------------------------------------------------------------- loading and errors


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    allowed: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        text = f"{where}: {self.field}: {self.message}"
        return text + (f" (allowed: {self.allowed})" if self.allowed else "")


class ConfigError(Exception):
    """A config file that cannot be used; `problems` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error location (for its line)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(part):
                    nxt = v
                    break
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last field of a location, if any."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                return None
            model = _inner_model(field.annotation)
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(ann: Any) -> Any:
    for arg in (ann, *typing.get_args(ann)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        for sub in typing.get_args(arg):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                return sub
    return None


def _allowed(err: dict[str, Any]) -> str | None:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(tuple(err["loc"]))
        if model is not None:
            return "fields " + ", ".join(sorted(model.model_fields))
    if "expected" in ctx:
        return str(ctx["expected"])
    for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            return f"{word} {ctx[key]}"
    if "pattern" in ctx:
        return f"text matching {ctx['pattern']}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "a whole number"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return "a finite number"
    if kind in ("bool_type", "bool_parsing"):
        return "true or false"
    if kind == "too_short" and "min_length" in ctx:
        return f"at least {ctx['min_length']} item(s)"
    return None


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind in ("literal_error", "enum"):
        return f"{got!r} is not an allowed value"
    msg = err["msg"].removeprefix("Value error, ")
    if kind != "value_error" and not isinstance(got, (dict, list)):
        msg += f", got {got!r}"
    return msg


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raise `ConfigError` with every problem found."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(name, None, None, "<file>", f"cannot read: {exc}")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        msg = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(name, line, col, "<yaml>", f"not valid YAML: {msg}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(name, 1, 1, "<root>", "the config must be a mapping of sections", "a YAML mapping")])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            node = _node_at(root, loc)
            line = node.start_mark.line + 1 if node is not None else None
            col = node.start_mark.column + 1 if node is not None else None
            field = ".".join(str(p) for p in loc) or "<root>"
            msg = _message(err)
            problems.append(Problem(name, line, col, field, msg, _allowed(err)))
        raise ConfigError(problems) from None


def reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the schema."""
    lines = [
        "# Config reference",
        "",
        "Generated from `engine/config.py` by `zot config-reference`; do not edit by hand.",
        "Unknown fields are errors. Secrets are never in a config: `*_env` fields name the",
        "environment variables that hold them.",
        "",
    ]

    def describe(model: type[BaseModel], prefix: str, seen: set[type]) -> None:
        if model in seen:
            return
        seen.add(model)
        lines.append(f"## `{prefix or '<root>'}` ({model.__name__})")
        lines.append("")
        if model.__doc__:
            lines.append(" ".join(model.__doc__.split()))
            lines.append("")
        lines.append("| field | type | default | notes |")
        lines.append("|---|---|---|---|")
        nested = []
        for fname, f in model.model_fields.items():
            ann = f.annotation
            tname = _type_name(ann) + _bounds(f.metadata)
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            if isinstance(f.get_default(call_default_factory=True), BaseModel):
                default = "(section defaults)"
            lines.append(f"| `{fname}` | {tname} | {default} | {f.description or ''} |")
            inner = _inner_model(ann)
            if inner is not None:
                nested.append((inner, f"{prefix}.{fname}" if prefix else fname))
        lines.append("")
        for inner, p in nested:
            describe(inner, p, seen)

    describe(Config, "", set())
    return "\n".join(lines) + "\n"


def _bounds(metadata: list[Any]) -> str:
    found = []
    for c in metadata:
        for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length")):
            if getattr(c, key, None) is not None:
                found.append(f"{word} {getattr(c, key)}")
    return f" ({', '.join(found)})" if found else ""


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin is Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(ann))
    if origin is Annotated:
        base, *meta = typing.get_args(ann)
        bounds = []
        for m in meta:
            for attr in ("metadata",):
                for c in getattr(m, attr, []):
                    for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                        if hasattr(c, key):
                            bounds.append(f"{word} {getattr(c, key)}")
        return _type_name(base) + (f" ({', '.join(bounds)})" if bounds else "")
    if isinstance(ann, type) and issubclass(ann, Enum):
        return " \\| ".join(repr(m.value) for m in ann)
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(ann))
        oname = getattr(origin, "__name__", str(origin))
        if oname == "UnionType" or origin is typing.Union:
            return " or ".join(_type_name(a) for a in typing.get_args(ann))
        return f"{oname}[{args}]"
    return getattr(ann, "__name__", str(ann))
