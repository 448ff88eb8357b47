"""Step runs (`step_runs`): what each step run of an enrollment did, one row per (enrollment,
run). Written with the enrollments' states by `store.enrollments.save` (a run that waits, an
approval, is written when it starts and completed when it ends); read by the run views.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.engine.runtime import ActionLog, StepRunLog, StepStatus
from crmflow.store.bulk import Writer
from crmflow.store.idlists import among
from crmflow.store.schema import enrollments, step_runs

__all__ = [
    "StepRunRow",
    "count_gone_through",
    "delete_runs_history",
    "step_runs_of",
    "write_runs",
]


@dataclass(frozen=True)
class StepRunRow:
    """A step run as stored: the logs of one (enrollment, run) merged."""

    enrollment_id: int
    run: int
    step_key: str
    step_type: str
    status: str
    reason: str
    started_at: datetime
    finished_at: datetime | None
    actions: list[dict[str, Any]]


# The columns of a new row, in the order of the tuples `Writer.insert` is given.
_RUN_COLUMNS = (
    "enrollment_id",
    "run",
    "step_key",
    "step_type",
    "status",
    "reason",
    "started_at",
    "finished_at",
    "actions",
)


def write_runs(
    writer: Writer, logs: Sequence[StepRunLog], *, runs_before: Mapping[int, int] | None
) -> None:
    """Write the step-run logs of a batch, in bulk (see `store.enrollments.save`):

    `runs_before` maps an enrollment to the number of step runs its state had before this batch:
    a log of a later run is a new row for sure, and only the others (a waiting run that
    completes) are looked up and merged. Without it every log is looked up.
    """
    if not logs:
        return
    fresh: list[StepRunLog] = []
    merging: list[StepRunLog] = []
    for log in logs:
        before = None if runs_before is None else runs_before.get(log.enrollment_id)
        (fresh if before is not None and log.step_run > before else merging).append(log)
    _insert_fresh_runs(writer, fresh)
    if merging:
        pairs = {(log.enrollment_id, log.step_run) for log in merging}
        existing = _existing_runs(writer.conn, pairs)
        _upsert_runs(writer.conn, _fold(merging, existing))


def _insert_for(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _action_dict(action: ActionLog) -> dict[str, Any]:
    """An action's log as stored (what `model_dump(mode="json")` gives, built directly: a
    batch writes one per action run)."""
    return {
        "index": action.index,
        "key": action.key,
        "type": action.type,
        "status": action.status.value,
        "detail": action.detail,
    }


def _actions_json(writer: Writer, actions: tuple[ActionLog, ...]) -> str:
    """The JSON text of `[_action_dict(a) for a in actions]`, written by orjson straight from
    the slotted dataclasses (the same keys in the same order, the status as its value), without
    a dictionary per action run; what orjson refuses goes the way of every JSON column."""
    if not actions:
        return "[]"
    try:
        return orjson.dumps(actions).decode()
    except TypeError:
        return writer.json([_action_dict(a) for a in actions])


def _merge(old: StepRunRow | None, log: StepRunLog) -> StepRunRow:
    """Fold `log` into the run's row: a run that waited and then completed is one row."""
    actions = [_action_dict(a) for a in log.actions]
    finished = None if log.status is StepStatus.WAITING else log.at
    if old is None:
        return StepRunRow(
            enrollment_id=log.enrollment_id,
            run=log.step_run,
            step_key=log.step_key,
            step_type=log.step_type,
            status=log.status.value,
            reason=log.reason,
            started_at=log.at,
            finished_at=finished,
            actions=actions,
        )
    # The end of the enrollment is said on the enrollment; the step keeps its own outcome.
    status = old.status if log.status is StepStatus.ENDED else log.status.value
    reason = "; ".join(r for r in (old.reason, log.reason) if r)
    return StepRunRow(
        enrollment_id=old.enrollment_id,
        run=old.run,
        step_key=old.step_key,
        step_type=old.step_type,
        status=status,
        reason=reason,
        started_at=old.started_at,
        finished_at=finished or old.finished_at,
        actions=old.actions + actions,
    )


def _existing_runs(
    conn: sa.Connection, pairs: set[tuple[int, int]]
) -> dict[tuple[int, int], StepRunRow]:
    if not pairs:
        return {}
    found: dict[tuple[int, int], StepRunRow] = {}
    query = sa.select(step_runs).where(
        among(step_runs.c.enrollment_id, {e for e, _ in pairs}, conn),
        among(step_runs.c.run, {r for _, r in pairs}, conn),
    )
    for r in conn.execute(query):
        if (r.enrollment_id, r.run) in pairs:
            found[(r.enrollment_id, r.run)] = StepRunRow(
                enrollment_id=r.enrollment_id,
                run=r.run,
                step_key=r.step_key,
                step_type=r.step_type,
                status=r.status,
                reason=r.reason,
                started_at=r.started_at,
                finished_at=r.finished_at,
                actions=list(r.actions),
            )
    return found


def _fold(
    logs: Sequence[StepRunLog], existing: dict[tuple[int, int], StepRunRow]
) -> dict[tuple[int, int], StepRunRow]:
    """The rows the logs make, a run that waited and then went on being one row."""
    merged: dict[tuple[int, int], StepRunRow] = {}
    for log in logs:
        key = (log.enrollment_id, log.step_run)
        old = merged.get(key) or existing.get(key)
        merged[key] = _merge(old, log)
    return merged


def _insert_fresh_runs(writer: Writer, logs: Sequence[StepRunLog]) -> None:
    """Runs that have no row yet. Most have one log each (a step that ran and was done): their
    row is written straight from the log; a run with several logs (it ended the enrollment,
    say) is folded first."""
    counts = Counter((log.enrollment_id, log.step_run) for log in logs)
    several = [log for log in logs if counts[(log.enrollment_id, log.step_run)] > 1]
    time = writer.time
    rows = [
        (
            log.enrollment_id,
            log.step_run,
            log.step_key,
            log.step_type,
            str(log.status),  # its value (a StrEnum's str), without the enum's property
            log.reason,
            at := time(log.at),  # started, and finished unless it waits
            None if log.status is StepStatus.WAITING else at,
            _actions_json(writer, log.actions),
        )
        for log in logs
        if counts[(log.enrollment_id, log.step_run)] == 1
    ]
    writer.insert(step_runs, _RUN_COLUMNS, rows)
    if several:
        _insert_runs(writer, _fold(several, {}))


def _insert_runs(writer: Writer, rows: dict[tuple[int, int], StepRunRow]) -> None:
    time = writer.time
    writer.insert(
        step_runs,
        _RUN_COLUMNS,
        [
            (
                r.enrollment_id,
                r.run,
                r.step_key,
                r.step_type,
                r.status,
                r.reason,
                time(r.started_at),
                time(r.finished_at),
                writer.json(r.actions),
            )
            for r in rows.values()
        ],
    )


def _upsert_runs(conn: sa.Connection, rows: dict[tuple[int, int], StepRunRow]) -> None:
    """Runs that may already have a row: inserted, or their row brought up to date."""
    insert = _insert_for(conn, step_runs)
    # PostgreSQL by the primary key's name: partitioned by month (migration 0030), its key
    # holds `started_at` too, which a run that completes keeps.
    target: dict[str, Any] = (
        {"constraint": "pk_step_runs"}
        if conn.dialect.name == "postgresql"
        else {"index_elements": ["enrollment_id", "run"]}
    )
    conn.execute(
        insert.on_conflict_do_update(
            **target,
            set_={
                "status": insert.excluded.status,
                "reason": insert.excluded.reason,
                "finished_at": insert.excluded.finished_at,
                "actions": insert.excluded.actions,
            },
        ),
        [
            {
                "enrollment_id": r.enrollment_id,
                "run": r.run,
                "step_key": r.step_key,
                "step_type": r.step_type,
                "status": r.status,
                "reason": r.reason,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "actions": r.actions,
            }
            for r in rows.values()
        ],
    )


def step_runs_of(conn: sa.Connection, enrollment_ids: Sequence[int]) -> list[sa.Row[Any]]:
    """The step runs of these enrollments (every column), by enrollment and run."""
    query = (
        sa.select(step_runs)
        .where(step_runs.c.enrollment_id.in_(enrollment_ids))
        .order_by(step_runs.c.enrollment_id, step_runs.c.run)
    )
    return list(conn.execute(query))


def count_gone_through(conn: sa.Connection, flow_id: int) -> dict[str, int]:
    """For each step key of a flow, how many of its enrollments went through the step: it was
    done or failed, or it was an end step that ended the enrollment."""
    in_flow = sa.select(enrollments.c.id).where(enrollments.c.flow_id == flow_id)
    query = (
        sa.select(step_runs.c.step_key, sa.func.count(sa.distinct(step_runs.c.enrollment_id)))
        .where(step_runs.c.enrollment_id.in_(in_flow))
        .where(
            sa.or_(
                step_runs.c.status.in_(("done", "failed")),
                # An end step does nothing but end the enrollment: reaching it is going through
                # it (its run says "ended", not "done").
                sa.and_(step_runs.c.step_type == "end", step_runs.c.status == "ended"),
            )
        )
        .group_by(step_runs.c.step_key)
    )
    return {r[0]: int(r[1]) for r in conn.execute(query)}


def delete_runs_history(conn: sa.Connection, enrollment_ids: Sequence[int]) -> None:
    """Delete every step run of the runs `enrollment_ids` (pruning, services.retention)."""
    if enrollment_ids:
        conn.execute(step_runs.delete().where(step_runs.c.enrollment_id.in_(enrollment_ids)))
