"""The timed triggers' bookkeeping (`trigger_schedules`, the one place that writes the table):
the next run of each `schedule` and `date_reached` trigger of every active flow, and the records
whose date field is near a day (what a date trigger's run looks at).

`services.triggers.schedules` decides when each trigger runs (engine.timing) and what a run
enters; these are its statements.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store import trigger_failures as failures
from crmflow.store.schema import flows, records, trigger_schedules

__all__ = [
    "RECORD_TIMESTAMPS",
    "NextRun",
    "delete_schedules",
    "insert_schedules",
    "lock_due_schedules",
    "records_dated_near",
    "schedule_indexes",
    "scheduled_triggers",
    "set_next_runs",
]

# The date fields every record has, as columns of their own (the others are in `data`).
RECORD_TIMESTAMPS = ("created_at", "updated_at")

# (flow id, trigger index, next run, last run): what a run or a resume sets.
NextRun = tuple[int, int, datetime | None, datetime | None]


def _insert(conn: sa.Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(trigger_schedules)


def scheduled_triggers(conn: sa.Connection, flow_ids: Sequence[int]) -> set[tuple[int, int]]:
    """(flow id, trigger index) of the rows of the flows `flow_ids`."""
    t = trigger_schedules.c
    query = sa.select(t.flow_id, t.trigger_index).where(t.flow_id.in_(flow_ids))
    return {(r.flow_id, r.trigger_index) for r in conn.execute(query)}


def insert_schedules(conn: sa.Connection, rows: Sequence[tuple[int, int, datetime | None]]) -> None:
    """Rows (flow id, trigger index, first run), in one statement; a row another worker made
    meanwhile is kept."""
    if rows:
        conn.execute(
            _insert(conn).on_conflict_do_nothing(index_elements=["flow_id", "trigger_index"]),
            [{"flow_id": f, "trigger_index": i, "next_at": n} for f, i, n in rows],
        )


def delete_schedules(conn: sa.Connection, keys: Collection[tuple[int, int]]) -> None:
    """Delete the rows (flow id, trigger index) `keys`, and their failures: triggers that a new
    version removed."""
    failures.clear(conn, keys)
    t = trigger_schedules.c
    conn.execute(
        trigger_schedules.delete().where(sa.tuple_(t.flow_id, t.trigger_index).in_(sorted(keys)))
    )


def lock_due_schedules(
    conn: sa.Connection, now: datetime, *, statuses: Collection[str]
) -> list[sa.Row[Any]]:
    """The rows due at `now` of flows whose status is one of `statuses`, earliest first,
    locked; a trigger that failed and waits for its retry (backoff) is left out instead of
    failing on each loop, and so is a row another worker holds (it is firing that trigger:
    skipped rather than fired twice)."""
    t = trigger_schedules.c
    key = sa.tuple_(t.flow_id, t.trigger_index)
    return list(
        conn.execute(
            sa.select(trigger_schedules)
            .where(t.next_at <= now)
            .where(t.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(statuses))))
            .where(key.not_in(failures.blocked(now)))
            .order_by(t.next_at)
            .with_for_update(skip_locked=True)
        ).all()
    )


def set_next_runs(conn: sa.Connection, runs: Sequence[NextRun]) -> None:
    """Set the next and last run of each (flow id, trigger index) of `runs`, in one statement."""
    if not runs:
        return
    t = trigger_schedules.c
    conn.execute(
        trigger_schedules.update()
        .where(t.flow_id == sa.bindparam("f"), t.trigger_index == sa.bindparam("i"))
        .values(next_at=sa.bindparam("n"), last_at=sa.bindparam("l")),
        [{"f": f, "i": i, "n": n, "l": last} for f, i, n, last in runs],
    )


def schedule_indexes(conn: sa.Connection, flow_id: int) -> list[int]:
    """The trigger indexes of the rows of flow `flow_id`."""
    query = sa.select(trigger_schedules.c.trigger_index)
    return list(conn.execute(query.where(trigger_schedules.c.flow_id == flow_id)).scalars().all())


def _field_text(conn: sa.Connection, key: str) -> sa.ColumnElement[Any]:
    if key in RECORD_TIMESTAMPS:
        return records.c[key]
    if conn.dialect.name == "postgresql":
        return records.c.data.op("->>", return_type=sa.Text)(sa.literal_column(f"'{key}'"))
    return sa.func.json_extract(records.c.data, sa.literal_column(f"'$.{key}'"), type_=sa.Text)


def _month_day(conn: sa.Connection, key: str) -> sa.ColumnElement[str]:
    value = _field_text(conn, key)
    if key not in RECORD_TIMESTAMPS:
        return sa.func.substr(value, 6, 5)
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", value), "MM-DD")
    return sa.func.strftime("%m-%d", value)


def _days(first: date, last: date) -> Iterable[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def records_dated_near(
    conn: sa.Connection,
    record_type: str,
    key: str,
    *,
    first: date,
    last: date,
    ignore_year: bool,
) -> list[sa.Row[Any]]:
    """(id, value) of the `record_type` records whose date field `key` falls on a day from
    `first` to `last` (with `ignore_year`, on one of those days' month-day, any year), in id
    order: the few a date trigger's run then judges exactly. The value is the field's text (a
    datetime for the record's own timestamps)."""
    value = _field_text(conn, key)
    if ignore_year:
        month_days = {d.strftime("%m-%d") for d in _days(first, last)}
        if "02-28" in month_days:
            month_days.add("02-29")  # a leap-day birthday falls on 28 February in common years
        near: sa.ColumnElement[bool] = _month_day(conn, key).in_(sorted(month_days))
    elif key in RECORD_TIMESTAMPS:
        lo = datetime.combine(first, datetime.min.time(), UTC)
        hi = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
        near = sa.and_(value >= lo, value < hi)
    else:
        near = sa.and_(value >= first.isoformat(), value < (last + timedelta(days=1)).isoformat())
    query: sa.Select[Any] = (
        sa.select(records.c.id, value.label("value"))
        .where(records.c.type == record_type)
        .where(value.is_not(None))
        .where(near)
        .order_by(records.c.id)
    )
    return list(conn.execute(query).all())
