"""The next due enrollment by index probes (issue 14) says what the min over every row said.

`store.enrollments.claims.next_due_select` finds the earliest free time of an enrollment inside
a running flow by a probe per (running flow, status) and the leased rows apart. Compared here,
case by case and on a mixed table, with the definition it replaced: min(CASE WHEN lease_until >
due_at THEN lease_until ELSE due_at END) over every row inside a running flow. Both backends;
`next_due` and `work_signs` (the idle worker's look) give the same answer.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.services.context import Context
from crmflow.store.enrollments import next_due
from crmflow.store.enrollments.rows import RUNNING, RUNNING_FLOWS
from crmflow.store.heartbeats import Beat
from crmflow.store.observability import oldest_due_select
from crmflow.store.schema import enrollments, flows
from crmflow.store.wakeups import RestLooks, work_signs

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FLOW_STATUSES = ("active", "draining", "paused", "draft", "archived")
STATUSES = ("active", "waiting", "held", "finished", "left", "cancelled")


def _old_next_due(conn: sa.Connection) -> datetime | None:
    """The definition before issue 14's probes: a scan of every row inside a running flow."""
    e = enrollments.c
    free_at = sa.case((e.lease_until > e.due_at, e.lease_until), else_=e.due_at)
    value: datetime | None = conn.execute(
        sa.select(sa.func.min(sa.type_coerce(free_at, e.due_at.type))).where(
            e.status.in_(RUNNING),
            e.due_at.is_not(None),
            e.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))),
        )
    ).scalar_one()
    return value


def _flows(ctx: Context) -> dict[str, int]:
    """One flow in each status: its id by status."""
    ids = {}
    with ctx.engine.begin() as conn:
        for status in FLOW_STATUSES:
            ids[status] = int(
                conn.execute(
                    flows.insert()
                    .values(
                        key=f"f-{status}",
                        name=status,
                        record_type="contact",
                        status=status,
                        current_version=1,
                        visibility="public",
                        created_at=T0,
                        updated_at=T0,
                    )
                    .returning(flows.c.id)
                ).scalar_one()
            )
    return ids


def _enroll(ctx: Context, rows: list[dict[str, Any]]) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(sa.delete(enrollments))
        for n, row in enumerate(rows):
            values = {
                "flow_version": 1,
                "record_id": n + 1,
                "step_key": "s",
                "entered_at": T0,
                "due_at": None,
                "lease_owner": None,
                "lease_until": None,
                **row,
            }
            if values["lease_until"] is not None:
                values["lease_owner"] = "w"
            conn.execute(enrollments.insert().values(**values))


def _answers(ctx: Context) -> tuple[datetime | None, datetime | None, datetime | None]:
    with ctx.engine.connect() as conn:
        old = _old_next_due(conn)
    return old, next_due(ctx.engine), work_signs(ctx.engine).next_due


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_each_kind_of_row_counts_as_before(ctx: Context) -> None:
    ids = _flows(ctx)
    active, paused = ids["active"], ids["paused"]
    cases: list[tuple[str, list[dict[str, Any]], datetime | None]] = [
        ("nothing inside", [], None),
        ("due rows", [{"flow_id": active, "status": "waiting", "due_at": _at(5)}], _at(5)),
        (
            "the earliest of the statuses inside",
            [
                {"flow_id": active, "status": "active", "due_at": _at(7)},
                {"flow_id": active, "status": "waiting", "due_at": _at(6)},
                {"flow_id": active, "status": "held", "due_at": _at(4)},
            ],
            _at(4),
        ),
        (
            "no due time: not pending",
            [{"flow_id": active, "status": "waiting"}],
            None,
        ),
        (
            "a paused flow's earlier row does not count",
            [
                {"flow_id": paused, "status": "waiting", "due_at": _at(1)},
                {"flow_id": ids["draft"], "status": "waiting", "due_at": _at(1)},
                {"flow_id": ids["archived"], "status": "waiting", "due_at": _at(1)},
                {"flow_id": ids["draining"], "status": "waiting", "due_at": _at(3)},
            ],
            _at(3),
        ),
        (
            "finished rows do not count",
            [
                {"flow_id": active, "status": s, "due_at": _at(1)}
                for s in ("finished", "left", "cancelled")
            ]
            + [{"flow_id": active, "status": "waiting", "due_at": _at(9)}],
            _at(9),
        ),
        (
            "a leased row is free when its lease ends",
            [
                {"flow_id": active, "status": "waiting", "due_at": _at(1), "lease_until": _at(8)},
                {"flow_id": active, "status": "waiting", "due_at": _at(9)},
            ],
            _at(8),
        ),
        (
            "a lease that ended before the due time: the due time",
            [{"flow_id": active, "status": "active", "due_at": _at(5), "lease_until": _at(2)}],
            _at(5),
        ),
        (
            "a leased row of a paused flow, a leased finished row: not counted",
            [
                {"flow_id": paused, "status": "waiting", "due_at": _at(1), "lease_until": _at(2)},
                {"flow_id": active, "status": "finished", "due_at": _at(1), "lease_until": _at(2)},
                {"flow_id": active, "status": "held", "due_at": _at(6), "lease_until": _at(3)},
            ],
            _at(6),
        ),
        (
            "a leased row without a due time: not pending",
            [{"flow_id": active, "status": "waiting", "lease_until": _at(2)}],
            None,
        ),
    ]
    for name, rows, expected in cases:
        _enroll(ctx, rows)
        assert _answers(ctx) == (expected, expected, expected), name


def test_a_mixed_table_gives_the_same_answer(ctx: Context) -> None:
    ids = list(_flows(ctx).values())
    rng = random.Random(14)
    for round_ in range(8):
        rows: list[dict[str, Any]] = []
        for _ in range(60):
            due = _at(rng.uniform(0, 60)) if rng.random() < 0.9 else None
            leased = rng.random() < 0.2
            rows.append(
                {
                    "flow_id": rng.choice(ids),
                    "status": rng.choice(STATUSES),
                    "due_at": due,
                    "lease_until": _at(rng.uniform(0, 60)) if leased else None,
                }
            )
        _enroll(ctx, rows)
        old, new, signs = _answers(ctx)
        assert old is not None, round_  # 60 rows: some are pending
        assert new == old and signs == old, round_
        # The due backlog's oldest row (/metrics): the probes against the min over every row.
        now = _at(rng.uniform(0, 60))
        with ctx.engine.connect() as conn:
            assert conn.execute(oldest_due_select(now)).scalar() == _old_oldest_due(conn, now)


def _old_oldest_due(conn: sa.Connection, now: datetime) -> datetime | None:
    """The due backlog's oldest row as it was read up to migration 0032: a min over every due
    row inside a running flow."""
    e = enrollments.c
    value: datetime | None = conn.execute(
        sa.select(sa.func.min(e.due_at)).where(
            e.status.in_(RUNNING),
            e.due_at <= now,
            e.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))),
        )
    ).scalar()
    return value


@pytest.mark.parametrize("beat", [False, True])
def test_the_rest_look_gives_it_too(ctx: Context, beat: bool) -> None:
    """`RestLooks` (one statement, the heartbeat written in it on request: an UPSERT ...
    RETURNING on SQLite) carries the same next due time."""
    ids = _flows(ctx)
    _enroll(
        ctx,
        [
            {"flow_id": ids["paused"], "status": "waiting", "due_at": _at(1)},
            {
                "flow_id": ids["active"],
                "status": "waiting",
                "due_at": _at(2),
                "lease_until": _at(4),
            },
            {"flow_id": ids["active"], "status": "active", "due_at": _at(5)},
        ],
    )
    looks = RestLooks(ctx.engine)
    try:
        signs = looks.look(beat=Beat("w1", "worker", T0) if beat else None)
    finally:
        looks.close()
    assert signs.next_due == _at(4)


def _plan(conn: sa.Connection, query: sa.Select[Any]) -> str:
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "postgresql":
        # A few rows: the planner would read the table; what is checked is that the indexes
        # answer these statements (their predicates implied), as they do at a million rows.
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        return "\n".join(str(r[0]) for r in conn.execute(sa.text(f"EXPLAIN {sql}")))
    return "\n".join(str(r[-1]) for r in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}")))


def test_the_statements_read_indexes_not_the_table(ctx: Context) -> None:
    from crmflow.store.enrollments.claims import (  # noqa: PLC0415
        _due,
        due_select,
        next_due_select,
    )

    ids = _flows(ctx)
    _enroll(
        ctx, [{"flow_id": ids["active"], "status": "waiting", "due_at": _at(n)} for n in range(50)]
    )
    e = enrollments.c
    with ctx.engine.begin() as conn:
        plan = _plan(conn, sa.select(next_due_select()))
        assert "ix_enrollments_flow_status_due" in plan and "ix_enrollments_leased" in plan
        assert "SCAN enrollments" not in plan and "Seq Scan on enrollments" not in plan
        plan = _plan(conn, oldest_due_select(_at(30)))
        assert "ix_enrollments_flow_status_due" in plan, plan
        assert "SCAN enrollments" not in plan and "Seq Scan on enrollments" not in plan
        claim = sa.select(e.id).where(_due(_at(30))).order_by(e.due_at).limit(10)
        if ctx.engine.dialect.name == "postgresql":
            # The claim probes each running flow's rows by due time and stops at its candidates
            # (tests/integration/test_claim_probes.py), then locks them by primary key.
            plan = _plan(conn, due_select("postgresql", _at(30), 10))
            assert "ix_enrollments_flow_status_due" in plan and "pk_enrollments" in plan, plan
            assert "Seq Scan on enrollments" not in plan, plan
        else:
            # One probe of the running flows' due rows per status (the statuses are literals in
            # the claim's text), then those due sorted: no index by due time alone is left.
            plan = _plan(conn, due_select("sqlite", _at(30), 10))
            assert "ix_enrollments_flow_status_due" in plan and "SCAN enrollments" not in plan
            assert len(conn.execute(claim).scalars().all()) == 10
