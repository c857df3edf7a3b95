"""Parse and validate a batch of raw messages: typed events, or dead letters with reasons.

Pure: bytes in, events and dead letters out. Checks the wire schema
(`engine.schemas.decode`) and what only the scenario knows: the application and
the cell an event names must exist. Nothing is dropped: every input comes out
either as an event or as a dead letter carrying its original bytes.
"""

from __future__ import annotations

import base64
import operator
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from engine import schemas
from engine.bus import Message


class FeedbackColumns:
    """The valid feedback events of a batch, in arrival order, as field dicts
    (`schemas.FeedbackFields`) and the position of each one's source message.

    Feedback is the bulk of the input: the learner reads it by column
    (`operators.satisfaction.batch_from_columns`) and never needs an event object.
    Iterating yields `schemas.Feedback` events (for tests and tools, not the hot path).
    """

    def __init__(self) -> None:
        self.fields: list[dict] = []
        self.index: list[int] = []

    def add(self, index: int, fields: dict) -> None:
        self.index.append(index)
        self.fields.append(fields)

    def column(self, name: str) -> list:
        return list(map(operator.itemgetter(name), self.fields))

    def ratings(self) -> list[int]:
        """0 where there is no rating (the batch layout's convention)."""
        return [d.get("rating") or 0 for d in self.fields]

    def __len__(self) -> int:
        return len(self.fields)

    def __bool__(self) -> bool:
        return bool(self.fields)

    def __iter__(self) -> Iterator[schemas.Feedback]:
        return (schemas.Feedback.model_construct(**d) for d in self.fields)


@dataclass
class Parsed:
    feedback: FeedbackColumns = field(default_factory=FeedbackColumns)
    context: list[schemas.Context] = field(default_factory=list)
    kpi: list[schemas.CellKpi] = field(default_factory=list)
    interaction: list[schemas.Interaction] = field(default_factory=list)
    dead: list[schemas.DeadLetter] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.feedback) + len(self.context) + len(self.kpi) + len(self.interaction)


def dead_letter(msg: Message, reason: str) -> schemas.DeadLetter:
    return schemas.DeadLetter(
        ts=msg.timestamp / 1000.0,
        reason=reason,
        source_topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key_b64=None if msg.key is None else base64.b64encode(msg.key).decode(),
        value_b64="" if msg.value is None else base64.b64encode(msg.value).decode(),
    )


def _semantic_error(ev: schemas._Event, apps: Collection[str], cells: Collection[str] | None) -> str | None:
    app = getattr(ev, "app", None)
    if app is not None and app not in apps:
        return f"app: unknown application {app!r}; allowed: {sorted(apps)}"
    if isinstance(ev, schemas.CellKpi):
        for u in ev.users:
            if u.app is not None and u.app not in apps:
                return f"users.{u.user_id}.app: unknown application {u.app!r}; allowed: {sorted(apps)}"
    cell = getattr(ev, "cell_id", None)
    if cells is not None and cell is not None and cell not in cells:
        return f"cell_id: unknown cell {cell!r}"
    return None


def parse_batch(
    messages: Iterable[Message],
    topic_types: dict[str, str],
    apps: Collection[str],
    cells: Collection[str] | None = None,
) -> Parsed:
    """Decode every message; route each valid event by type, each invalid one to a dead letter.

    `topic_types` maps a topic name to the event type it must carry (an event of
    another type on a topic is invalid: its key would be wrong for that type).
    `cells=None` accepts any cell id.
    """
    out = Parsed()
    buckets = {"context": out.context, "kpi": out.kpi, "interaction": out.interaction}
    expects = {topic: schemas.INPUT_TYPES.get(kind) for topic, kind in topic_types.items()}
    decode, DecodeError, Feedback = schemas.decode, schemas.DecodeError, schemas.Feedback
    fast = schemas.decode_feedback_fields
    feedback, dead = out.feedback, out.dead
    fb_index, fb_fields = feedback.index, feedback.fields  # FeedbackColumns.add, inlined on the hot path
    for i, msg in enumerate(messages):
        expect = expects.get(msg.topic)
        if expect is None:
            dead.append(dead_letter(msg, f"topic {msg.topic!r} carries no input events"))
            continue
        if msg.value is None:  # a tombstone (kcat -Z, a compacting producer): no event to read
            dead.append(dead_letter(msg, "null value: no event"))
            continue
        if expect is Feedback:
            # The bulk of the stream: fields validated without a model object, app and
            # cell checked inline; anything else takes the general path, which decides
            # and words the reason.
            d = fast(msg.value)
            if d is not None and d["app"] in apps and (cells is None or d["cell_id"] in cells):
                fb_index.append(i)
                fb_fields.append(d)
                continue
        try:
            ev = decode(msg.value, expect)
        except DecodeError as exc:
            dead.append(dead_letter(msg, exc.reason))
            continue
        problem = _semantic_error(ev, apps, cells)
        if problem is not None:
            dead.append(dead_letter(msg, problem))
            continue
        if isinstance(ev, Feedback):
            feedback.add(i, ev.model_dump(exclude_none=True))
        else:
            buckets[ev.type].append(ev)  # type: ignore[union-attr]
    return out
