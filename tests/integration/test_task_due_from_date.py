"""A task due from a date of the record follows that date: the worker moves its due time when
the date changes, and the task's history says so; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.engine.recordtypes import BUILTIN_TYPES
from crmflow.engine.validation import ValidationContext, check_flow_text
from crmflow.errors import InvalidInputError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.store.schema import task_events, tasks
from crmflow.worker import run_once
from tests.conftest import FrozenClock, make_user

FLOW = """\
schema_version: 1
key: badges
name: Badges
record_type: event
owner: maria
timezone: Europe/Bucharest
triggers: [{{type: manual}}]
steps:
  - key: print
    actions:
      - type: create_task
        title: "Print the badges for {{{{ record.title }}}}"
        {due}
"""


def _task(ctx: Context) -> Any:
    with ctx.engine.connect() as conn:
        return conn.execute(sa.select(tasks.c.due_at, tasks.c.status)).one()


def _events(ctx: Context) -> list[tuple[str, str]]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(task_events.c.action, task_events.c.detail))
        return [(r.action, r.detail) for r in rows]


def test_a_task_due_the_day_before_an_event_moves_with_the_event(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    make_user(ctx, "maria", "manager")
    flows.create_flow(ctx, admin, FLOW.format(due="due: {field: start, offset_days: -1}"))
    flows.change_status(ctx, admin, "badges", LifecycleAction.START)
    data = {"title": "Donor evening", "start": "2026-12-10T16:00:00Z"}
    rid = records.create_record(ctx, admin, "event", data).id
    runs.start_record(ctx, admin, "badges", rid)
    assert _task(ctx).due_at == datetime(2026, 12, 9, 16, 0, tzinfo=UTC)

    run_once(ctx)  # nothing moved: no history line
    assert _events(ctx) == []

    records.update_record(ctx, admin, rid, {"start": "2026-12-20T16:00:00Z"})
    clock.advance(seconds=30)
    run_once(ctx)
    assert _task(ctx) == (datetime(2026, 12, 19, 16, 0, tzinfo=UTC), "open")
    assert _events(ctx) == [("due", "due on 2026-12-19: start changed")]
    run_once(ctx)
    assert len(_events(ctx)) == 1


CONTEXT = ValidationContext(record_types=BUILTIN_TYPES)


@pytest.mark.parametrize(
    ("due", "message"),
    [
        ("due: {field: title}", "steps\\[0\\].actions\\[0\\].due.field"),
        ("due: {field: start}\n        due_days: 2", "either `due_days`"),
    ],
)
def test_a_due_date_from_a_field_that_is_not_a_date_is_refused(due: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_flow_text(FLOW.format(due=due), context=CONTEXT)
