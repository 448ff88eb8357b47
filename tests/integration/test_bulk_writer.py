"""`store.bulk.Writer`'s batched insert and update write what one statement per row would, on
both backends (on PostgreSQL a COPY and one UPDATE ... FROM a JSON array, see the module)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from crmflow.services.context import Context
from crmflow.store.bulk import ID, Writer
from crmflow.store.database import IntegrityError
from crmflow.store.schema import record_history, records, step_runs

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# What COPY's text format must escape, and what JSON must: they reach the row unchanged.
AWKWARD = 'tab\there, new\nline, back\\slash, \\N, "quoted", é, 🙂, %s ?'
RUN_COLUMNS = (
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


def _run_row(writer: Writer, enrollment: int, run: int, reason: str = "") -> tuple[object, ...]:
    actions = writer.json([{"index": 0, "detail": AWKWARD}])
    at = writer.time(AT)
    return (enrollment, run, "touch", "action", "done", reason, at, None, actions)


def test_insert_writes_every_value_as_it_was_given(ctx: Context) -> None:
    with ctx.engine.begin() as conn:
        writer = Writer(conn)
        writer.insert(
            step_runs, RUN_COLUMNS, [_run_row(writer, 1, 1, AWKWARD), _run_row(writer, 1, 2)]
        )
        writer.insert(
            record_history,
            ("record_id", "enrollment_id", "message", "at"),
            [(7, None, AWKWARD, writer.time(AT + timedelta(microseconds=1)))],
        )
        writer.insert(record_history, ("record_id", "message", "at"), [])  # nothing to write
    with ctx.engine.connect() as conn:
        runs = conn.execute(sa.select(step_runs).order_by(step_runs.c.run)).all()
        history = conn.execute(sa.select(record_history)).one()
    assert [(r.enrollment_id, r.run, r.reason, r.finished_at) for r in runs] == [
        (1, 1, AWKWARD, None),
        (1, 2, "", None),
    ]
    assert runs[0].started_at == AT
    assert runs[0].actions == [{"index": 0, "detail": AWKWARD}]
    assert (history.record_id, history.enrollment_id, history.message) == (7, None, AWKWARD)
    assert history.at == AT + timedelta(microseconds=1)


def test_insert_refused_by_a_unique_key_is_an_integrity_error_and_writes_nothing(
    ctx: Context,
) -> None:
    with ctx.engine.begin() as conn:
        writer = Writer(conn)
        writer.insert(step_runs, RUN_COLUMNS, [_run_row(writer, 1, 1)])
    with pytest.raises(IntegrityError), ctx.engine.begin() as conn:
        writer = Writer(conn)
        writer.insert(step_runs, RUN_COLUMNS, [_run_row(writer, 2, 1), _run_row(writer, 1, 1)])
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(step_runs.c.enrollment_id)).scalars().all() == [1]
        # The connection is usable again after the refused COPY.
        assert conn.execute(sa.select(sa.literal(1))).scalar_one() == 1


def _record(conn: sa.Connection, data: dict[str, object]) -> int:
    inserted = conn.execute(
        records.insert()
        .values(type="contact", data=data, created_at=AT, updated_at=AT)
        .returning(records.c.id)
    )
    return int(inserted.scalar_one())


def test_update_sets_each_row_its_values_and_counts_the_rows_changed(ctx: Context) -> None:
    with ctx.engine.begin() as conn:
        first, second, third = (_record(conn, {"n": i}) for i in range(3))
    later = AT + timedelta(hours=1)
    columns = (("data", "jsonb"), ("owner_id", "int8"), ("updated_at", "timestamptz"))
    with ctx.engine.begin() as conn:
        writer = Writer(conn)
        changed = writer.update(
            records,
            columns,
            [
                (writer.json({"text": AWKWARD}), None, writer.time(later), first, 1),
                # The same row twice: the last one is written, as row by row it would be.
                (writer.json({"n": "old"}), None, writer.time(later), second, 1),
                (writer.json({"n": "new"}), None, writer.time(later), second, 1),
                # Not at that version: left as it is, and not counted.
                (writer.json({"n": "stale"}), None, writer.time(later), third, 9),
            ],
            keys=(ID, ("version", "int4")),
            also="version = version + 1",
        )
    assert changed == 2
    with ctx.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(records))}
    assert rows[first].data == {"text": AWKWARD}
    assert (rows[first].version, rows[first].updated_at) == (2, later)
    assert (rows[second].data, rows[second].version) == ({"n": "new"}, 2)
    assert (rows[third].data, rows[third].version, rows[third].updated_at) == ({"n": 2}, 1, AT)


def test_update_tells_json_null_from_no_value(ctx: Context) -> None:
    """None is SQL NULL in a JSON column, the text "null" JSON null, as `?::jsonb` wrote them."""
    with ctx.engine.begin() as conn:
        blank, null = _record(conn, {"n": 1}), _record(conn, {"n": 2})
    with ctx.engine.begin() as conn:
        writer = Writer(conn)
        writer.update(
            records,
            (("external_id", "text"),),
            [(None, blank), ("x-1", null)],
        )
        assert writer.update(records, (("external_id", "text"),), []) == 0  # nothing to write
    with ctx.engine.connect() as conn:
        external = dict(conn.execute(sa.select(records.c.id, records.c.external_id)).all())
        conn.execute(
            sa.text("create temporary table json_nulls (id integer, doc text)")
            if conn.dialect.name == "sqlite"
            else sa.text("create temporary table json_nulls (id integer, doc jsonb)")
        )
        conn.execute(sa.text("insert into json_nulls values (1, '[]'), (2, '[]')"))
        temporary = sa.table("json_nulls", sa.column("id"), sa.column("doc"))
        Writer(conn).update(temporary, (("doc", "jsonb"),), [(None, 1), ("null", 2)])
        docs: dict[int, bool] = dict(
            conn.execute(sa.text("select id, doc is null from json_nulls order by id")).all()
        )
    assert external == {blank: None, null: "x-1"}
    assert docs == {1: True, 2: False}
