"""Event schemas: the one wire format every producer and consumer of zot speaks.

Wire format (version 1): one event per Kafka message, the value a UTF-8 JSON
object with a `type` discriminator and a schema version `v`; the key is the
user id (user-state topics) or the cell id (cell topics), see `engine.topics`.
Every field is validated at the boundary: non-finite numbers, negative rates,
unknown enum values, unknown fields and missing fields are errors with a reason.
JSON Schema files for producers in other languages are exported to `schemas/`
by `zot schemas` (and checked in tests to match these models).
"""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import Annotated, Any, Literal, Union

from typing_extensions import NotRequired, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

SCHEMA_VERSION = 1


class Signal(str, Enum):
    """Implicit (and occasional explicit) feedback a user gives about a session.

    Each is evidence about where the user's zone of tolerance lies, read together
    with the QoS the user was getting when it was emitted.
    """

    ABANDON = "abandon"  # left the session early
    RETRY = "retry"  # retried or reloaded
    DOWNGRADE = "downgrade"  # lowered quality by hand
    APP_SWITCH = "app_switch"  # switched away to another app
    COMPLAINT = "complaint"  # contacted support / reported a problem
    RATING = "rating"  # explicit ordinal rating, 1..5, in `rating`
    KEPT = "kept"  # kept using it: weak positive evidence


# Dense integer codes for the batched operators (order is part of the wire
# contract of the numpy batch layout: append only).
SIGNAL_CODES: dict[Signal, int] = {s: i for i, s in enumerate(Signal)}


class Action(str, Enum):
    """What a user did with a catalog item."""

    PLAY = "play"
    VIEW = "view"
    CLICK = "click"
    SKIP = "skip"
    LIKE = "like"
    COMPLETE = "complete"


class OverloadReason(str, Enum):
    """Why a user did not get its target in an allocation decision."""

    NONE = "none"
    CAPACITY = "capacity"  # the cell could not serve everyone at target
    NO_CHANNEL = "no_channel"  # spectral efficiency 0: unreachable
    ADMISSION = "admission"  # dropped by the max-served overload policy


Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Ident = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    v: Literal[1] = SCHEMA_VERSION
    event_id: Ident
    ts: NonNeg = Field(description="Event time, seconds since the Unix epoch (or simulation time).")


# ---------------------------------------------------------------- inputs


class Feedback(_Event):
    """A user's QoS feedback signal, with the QoS it was getting at that moment."""

    type: Literal["feedback"] = "feedback"
    user_id: Ident
    cell_id: Ident
    app: Ident
    signal: Signal
    qos: NonNeg = Field(description="The app's QoS metric at the time, in the metric's unit (see config).")
    rating: int | None = Field(default=None, ge=1, le=5, description="Required iff signal is 'rating'.")

    @model_validator(mode="after")
    def _rating_iff_signal(self) -> "Feedback":
        if (self.signal is Signal.RATING) != (self.rating is not None):
            raise ValueError("'rating' (1..5) is required when signal is 'rating' and forbidden otherwise")
        return self


class FeedbackFields(TypedDict):
    """A `Feedback` event's fields as a plain dict: the engine's hot path validates
    the bulk of its input into these (in Rust, no model object per event). Same
    fields and constraints as `Feedback` (tests/unit/test_schemas.py checks both
    accept the same payloads); `decode_feedback_fields` adds the rating rule."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    v: NotRequired[Literal[1]]
    type: Literal["feedback"]
    event_id: Ident
    ts: NonNeg
    user_id: Ident
    cell_id: Ident
    app: Ident
    signal: Signal
    qos: NonNeg
    rating: NotRequired[Annotated[int, Field(ge=1, le=5)] | None]


class Context(_Event):
    """Where the user is and what it is doing."""

    type: Literal["context"] = "context"
    user_id: Ident
    cell_id: Ident
    app: Ident | None = Field(default=None, description="App in the foreground, if any.")
    segment: Ident | None = None
    x_m: Finite | None = None
    y_m: Finite | None = None
    speed_mps: NonNeg | None = None


class UserChannel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: Ident
    spectral_efficiency: NonNeg = Field(description="Achievable bit/s/Hz on this cell's PRBs now.")
    cqi: int | None = Field(default=None, ge=0, le=15)
    app: Ident | None = Field(default=None, description="App the user is running this epoch, if known.")


class CellKpi(_Event):
    """A cell's KPI report for one epoch, with each attached user's channel quality."""

    type: Literal["kpi"] = "kpi"
    cell_id: Ident
    epoch: int = Field(ge=0)
    prb_total: int = Field(ge=0)
    load: NonNeg | None = Field(default=None, le=1.0, description="Fraction of PRBs used last epoch.")
    users: list[UserChannel]

    @model_validator(mode="after")
    def _unique_users(self) -> "CellKpi":
        ids = [u.user_id for u in self.users]
        if len(ids) != len(set(ids)):
            raise ValueError("duplicate user_id in users")
        return self


class Interaction(_Event):
    """A user's interaction with a catalog item."""

    type: Literal["interaction"] = "interaction"
    user_id: Ident
    item_id: Ident
    app: Ident
    action: Action
    dwell_s: NonNeg = 0.0
    item_rate_mbps: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = Field(
        default=None, description="Rate the item needs at its best quality (e.g. a video's top bitrate), if known.")
    cell_id: Ident | None = Field(
        default=None, description="Cell the user was in, if known (else the engine takes its latest context).")


# ---------------------------------------------------------------- outputs


class UserAllocation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: Ident
    prb: int = Field(ge=0)
    rate_mbps: NonNeg
    satisfaction: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    served: bool = Field(description="Reached its target (or adequate level) under the policy.")
    reason: OverloadReason = OverloadReason.NONE


class Allocation(_Event):
    """The optimizer's decision for one cell and epoch."""

    type: Literal["allocation"] = "allocation"
    cell_id: Ident
    epoch: int = Field(ge=0)
    policy: Ident
    prb_total: int = Field(ge=0)
    prb_used: int = Field(ge=0)
    overload: bool = False
    solve_ms: NonNeg = 0.0
    users: list[UserAllocation]

    @model_validator(mode="after")
    def _within_cell(self) -> "Allocation":
        if self.prb_used > self.prb_total:
            raise ValueError("prb_used exceeds prb_total")
        if sum(u.prb for u in self.users) != self.prb_used:
            raise ValueError("prb_used is not the sum of the users' PRBs")
        return self


class ZotEstimate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    app: Ident
    adequate: NonNeg
    adequate_sd: NonNeg
    desired: NonNeg
    desired_sd: NonNeg
    n_signals: int = Field(ge=0)


class Interest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Ident = Field(description="Item, genre or app the interest is about.")
    weight: NonNeg
    horizon: Literal["long", "short"]


class ProfileUpdate(_Event):
    """A user's current profile: ZoT estimates and interests (compacted topic)."""

    type: Literal["profile"] = "profile"
    user_id: Ident
    # default_factory, not `= []`: pydantic deep-copies a mutable default for every
    # instance (~7 us, one profile per touched user per batch); the exported JSON
    # Schema keeps its `"default": []`.
    zot: list[ZotEstimate] = Field(default_factory=list, json_schema_extra={"default": []})
    interests: list[Interest] = Field(default_factory=list, json_schema_extra={"default": []})
    next_app: Ident | None = None


class RecommendedItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: Ident
    score: Finite


class Recommendation(_Event):
    """Top-K items for a user, ranked by interest (and deliverability, if enabled)."""

    type: Literal["recommendation"] = "recommendation"
    user_id: Ident
    model: Ident
    items: list[RecommendedItem]


class DeadLetter(BaseModel):
    """An input the engine could not accept, kept whole with the reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["dead_letter"] = "dead_letter"
    v: Literal[1] = SCHEMA_VERSION
    ts: NonNeg
    reason: str
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key_b64: str | None = None
    value_b64: str = Field(description="The original message bytes, base64.")


InputEvent = Annotated[Union[Feedback, Context, CellKpi, Interaction], Field(discriminator="type")]
OutputEvent = Annotated[Union[Allocation, ProfileUpdate, Recommendation], Field(discriminator="type")]

INPUT_TYPES: dict[str, type[_Event]] = {
    "feedback": Feedback,
    "context": Context,
    "kpi": CellKpi,
    "interaction": Interaction,
}
OUTPUT_TYPES: dict[str, type[BaseModel]] = {
    "allocation": Allocation,
    "profile": ProfileUpdate,
    "recommendation": Recommendation,
    "dead_letter": DeadLetter,
}
ALL_TYPES: dict[str, type[BaseModel]] = {**INPUT_TYPES, **OUTPUT_TYPES}

_input_adapter: TypeAdapter[Any] = TypeAdapter(InputEvent)
_feedback_fields: TypeAdapter[FeedbackFields] = TypeAdapter(FeedbackFields)
_feedback_validator = _feedback_fields.validator.validate_json  # the core validator, without the adapter's wrapper


class DecodeError(ValueError):
    """A payload that is not a valid event; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "<event>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def _reject_constants(name: str) -> float:
    # JSON has no NaN/Infinity; Python's json accepts them, we do not.
    raise DecodeError(f"non-finite number {name} is not valid JSON")


def decode(payload: bytes | str, expect: type[_Event] | None = None) -> _Event:
    """Decode and validate one wire payload into a typed event.

    Raises `DecodeError` with a one-line reason for bad bytes, bad JSON, a schema
    violation, or an event of another type than `expect`.

    Fast path: pydantic-core parses and validates the bytes in one pass (Rust;
    about 5x `json.loads` + `model_validate`). The tagged union needs the `type`
    key (the models' default would otherwise stand in for a missing one), and an
    event it accepts is one the reference path accepts, with equal fields
    (tests/unit/test_schemas.py checks that on mutated payloads). Anything it
    rejects goes through the reference path (`decode_reference`), which decides
    and gives the reason: so reasons, and what is accepted, are unchanged.
    pydantic-core parses NaN/Infinity literals (the reference path rejects them
    anywhere, even under a duplicate key a later one overrides): a payload that
    holds either word takes the reference path.
    """
    words = _NON_FINITE_BYTES if isinstance(payload, bytes) else _NON_FINITE_STR
    if words[0] not in payload and words[1] not in payload:  # type: ignore[operator]
        try:
            event = _input_adapter.validate_json(payload)
        except ValidationError:
            pass
        else:
            if expect is None or type(event) is expect:
                return event
    return decode_reference(payload, expect)


_NON_FINITE_BYTES = (b"NaN", b"Infinity")  # -Infinity contains Infinity


def decode_feedback_fields(payload: bytes) -> dict[str, Any] | None:
    """The fields of a Feedback payload that `decode(payload, Feedback)` accepts, as
    a dict (`FeedbackFields`), or None: then `decode` decides, and words the reason.

    About half the cost of `decode` (no model instance, no Python validator):
    feedback is most of the engine's input.
    """
    nan, inf = _NON_FINITE_BYTES  # as in decode: pydantic-core would parse them
    # bytes.find, not `in`: half the cost here (0.35 against 0.65 us a word on 150 bytes).
    if not isinstance(payload, bytes) or payload.find(nan) >= 0 or payload.find(inf) >= 0:
        return None
    try:
        d = _feedback_validator(payload)
    except ValidationError:
        return None
    if (d["signal"] is _RATING) != (d.get("rating") is not None):
        return None  # the model's rating rule; decode gives its reason
    return d


_RATING = Signal.RATING  # an enum member through its class costs ~0.2 us on Python 3.11
_NON_FINITE_STR = ("NaN", "Infinity")


def decode_reference(payload: bytes | str, expect: type[_Event] | None = None) -> _Event:
    """`decode` by the reference path (json.loads, then model validation); the reasons come from here."""
    if isinstance(payload, bytes):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: {exc}") from None
    else:
        text = payload
    try:
        obj = json.loads(text, parse_constant=_reject_constants)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    except RecursionError:
        raise DecodeError("not JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise DecodeError("not a JSON object")
    if obj.get("v", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise DecodeError(f"unsupported schema version {obj.get('v')!r} (this engine reads v{SCHEMA_VERSION})")
    try:
        if expect is not None:
            if obj.get("type") != expect.model_fields["type"].default:
                raise DecodeError(f"type {obj.get('type')!r} where {expect.model_fields['type'].default!r} was expected")
            return expect.model_validate(obj)
        return _input_adapter.validate_python(obj)
    except ValidationError as exc:
        raise DecodeError(_reason(exc)) from None
    except RecursionError:
        raise DecodeError("nested too deeply") from None


def encode(event: BaseModel) -> bytes:
    """Encode an event to its wire bytes (compact UTF-8 JSON)."""
    # The serializer straight to bytes: what model_dump_json does, without its
    # Python wrapper and the str -> bytes round trip (a few us per output event).
    return type(event).__pydantic_serializer__.to_json(event, exclude_none=True)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type, keyed by type name."""
    out = {}
    for name, model in ALL_TYPES.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://zot.invalid/schemas/v{SCHEMA_VERSION}/{name}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[name] = schema
    return out


def is_finite(x: float) -> bool:
    return math.isfinite(x)
