"""What the modules of `store.enrollments` share: which statuses are still inside a flow and
which flows move, an enrollment as the batch runner reads it, and a JSON column read as text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
import sqlalchemy as sa
from pydantic import BaseModel

from crmflow.engine.definition import FlowStatus
from crmflow.engine.entry import INSIDE
from crmflow.engine.runtime import EnrollmentState
from crmflow.store.database import as_text
from crmflow.store.schema import enrollments

__all__ = [
    "IDS_CHUNK",
    "RUNNING",
    "RUNNING_FLOWS",
    "EnrollmentRow",
    "enrollment_columns",
    "enrollment_row",
    "state_json",
]

# Statuses of an enrollment that is still inside its flow (a start held by the loop guard too).
RUNNING = INSIDE
# Only these flows move; a paused or archived flow's records wait where they are, frozen.
RUNNING_FLOWS = (FlowStatus.ACTIVE.value, FlowStatus.DRAINING.value)

# Record ids per `IN (...)` list of the queries that take one chunk of records at a time: well
# below SQLite's parameter limit.
IDS_CHUNK = 5_000


# A value, never changed once read (`dataclasses.replace` makes another), but not frozen: a
# batch reads hundreds, and a frozen dataclass sets each field through `object.__setattr__`
# (three times the cost of building one); `unsafe_hash` keeps it hashable as it was.
@dataclass(slots=True, unsafe_hash=True)
class EnrollmentRow:
    id: int
    flow_id: int
    flow_version: int
    record_id: int
    status: str
    step_key: str | None
    due_at: datetime | None
    entered_at: datetime
    state: EnrollmentState | None  # None: not entered yet (a follow-up due at `due_at`)


def enrollment_columns(dialect: str) -> list[sa.ColumnElement[Any]]:
    """What `enrollment_row` reads, in its order: only what EnrollmentRow holds (every
    date-time column read is a conversion per row), the state as JSON text (`as_text`)."""
    e = enrollments.c
    return [
        e.id,
        e.flow_id,
        e.flow_version,
        e.record_id,
        e.status,
        e.step_key,
        e.due_at,
        e.entered_at,
        as_text(e.state, dialect).label("state"),
    ]


def enrollment_row(r: sa.Row[Any]) -> EnrollmentRow:
    """A row of `enrollment_columns` as an `EnrollmentRow`. Unpacked rather than read by name:
    a row's attribute costs a quarter of a microsecond, and a batch reads thousands."""
    eid, flow_id, version, record_id, status, step_key, due_at, entered_at, state = cast(
        "tuple[Any, ...]", r
    )
    return EnrollmentRow(
        eid,
        flow_id,
        version,
        record_id,
        status,
        step_key,
        due_at,
        entered_at,
        EnrollmentState.model_validate_json(state) if state is not None else None,
    )


def state_json(state: EnrollmentState) -> str:
    """The state's JSON as stored: what `state.model_dump_json()` writes, the same text, written
    by orjson from the models' fields (a batch writes one per record it moves, in half the
    time). What orjson refuses (an integer beyond 64 bits) goes through pydantic."""
    try:
        return orjson.dumps(state.__dict__, default=_fields, option=orjson.OPT_UTC_Z).decode()
    except TypeError:
        return state.model_dump_json()


def _fields(value: object) -> dict[str, Any]:
    """A model inside the state (its `waiting`, their buttons and votes) as its fields."""
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"{type(value).__name__} is not JSON")
