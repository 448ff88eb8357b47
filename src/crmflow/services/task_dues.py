"""A task's due time set from a date of the record (`create_task` with `due: {field,
offset_days}`) follows that date: when the date changes, the due time moves, as a step timed by
a record date is re-planned; the task's history says so ("due on 2026-12-09: start changed").

The deadline pass (`services.deadlines`) reads the tasks still to do page by page; for those
whose due time comes from a date it computes it again from the record as it is now and moves
the ones that changed, before it looks at which notices are due.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from crmflow.context import Context, flow_zone
from crmflow.engine.timing import field_date_due
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection, Row
from crmflow.store.deadlines import record_data
from crmflow.store.tasks import NewTaskEvent, insert_task_events, set_due_times

__all__ = ["DueMove", "moved_dues", "write_moved_dues"]

# (task id, new due time or None: the date was emptied, what to say in the task's history)
DueMove = tuple[int, datetime | None, str]


def moved_dues(
    conn: Connection,
    ctx: Context,
    tasks: Sequence[Row],
    infos: Mapping[tuple[int, int], repo.FlowInfo],
) -> list[DueMove]:
    """The tasks among `tasks` whose due time, set from a date of the record, is no longer
    what that date gives."""
    dated = [t for t in tasks if t.due_field is not None]
    if not dated:
        return []
    data = record_data(conn, {t.record_id for t in dated})
    out: list[DueMove] = []
    for task in dated:
        info = infos.get((task.flow_id, task.flow_version))
        values = data.get(task.record_id)
        if info is None or values is None:
            continue
        zone = flow_zone(ctx, info.definition)
        due = field_date_due(values.get(task.due_field), task.due_offset_days or 0, zone)
        if due == task.due_at:
            continue
        said = (
            f"due on {due.astimezone(zone).date().isoformat()}: {task.due_field} changed"
            if due is not None
            else f"no due date: {task.due_field} is empty"
        )
        out.append((task.id, due, said))
    return out


def write_moved_dues(ctx: Context, moves: Sequence[DueMove], *, now: datetime) -> None:
    """The due times moved, each with a line in its task's history, in one transaction."""
    if not moves:
        return
    with ctx.engine.begin() as conn:
        set_due_times(conn, [(tid, due) for tid, due, _ in moves])
        insert_task_events(
            conn, [NewTaskEvent(tid, now, None, "due", said) for tid, _, said in moves]
        )
