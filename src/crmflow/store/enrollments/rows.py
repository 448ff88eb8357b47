"""What the modules of `store.enrollments` share: which statuses are still inside a flow and
which flows move, an enrollment as the batch runner reads it, and a JSON column read as text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import FlowStatus
from crmflow.engine.entry import INSIDE
from crmflow.engine.runtime import EnrollmentState

__all__ = ["IDS_CHUNK", "RUNNING", "RUNNING_FLOWS", "EnrollmentRow", "as_text", "enrollment_row"]

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


def as_text(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[str]:
    """A JSON column read as its text: pydantic and orjson parse text several times faster than
    the driver's json.loads followed by validating Python objects (a batch reads hundreds)."""
    if dialect == "postgresql":
        return sa.cast(column, sa.Text)
    return sa.type_coerce(column, sa.Text)


def enrollment_row(r: sa.Row[Any]) -> EnrollmentRow:
    """The row read with its state as JSON text (`as_text`), as an `EnrollmentRow`."""
    return EnrollmentRow(
        id=r.id,
        flow_id=r.flow_id,
        flow_version=r.flow_version,
        record_id=r.record_id,
        status=r.status,
        step_key=r.step_key,
        due_at=r.due_at,
        entered_at=r.entered_at,
        state=EnrollmentState.model_validate_json(r.state) if r.state is not None else None,
    )
