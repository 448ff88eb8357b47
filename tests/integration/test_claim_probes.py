"""The worker's claim (`store.enrollments.claims.due_ids`) takes what is due inside running flows,
due first, and does not read the overdue rows of a paused flow (issue 14): an administrator
who pauses a big campaign for a week does not slow every other flow down. Both backends; the
pages a claim reads are counted on PostgreSQL (EXPLAIN's buffers), where the claim once walked
every overdue row in due order and stopped only at its batch size.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.services.context import Context
from crmflow.store.enrollments import due_ids
from crmflow.store.enrollments.claims import CANDIDATES, due_select
from crmflow.store.enrollments.rows import RUNNING, RUNNING_FLOWS
from crmflow.store.schema import enrollments
from tests.integration.test_next_due_probes import STATUSES, _enroll, _flows

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)


def _expected(rows: list[dict[str, Any]], ids: list[int], running: set[int]) -> list[int]:
    """By definition: inside a running flow, due by NOW, not leased; due first."""
    due = [
        (row["due_at"], i)
        for i, row in zip(ids, rows, strict=True)
        if row["flow_id"] in running
        and row["status"] in RUNNING
        and row["due_at"] is not None
        and row["due_at"] <= NOW
        and (row.get("lease_until") is None or row["lease_until"] < NOW)
    ]
    return [i for _, i in sorted(due)]


def _all_ids(ctx: Context) -> list[int]:
    with ctx.engine.connect() as conn:
        return [int(i) for i in conn.execute(sa.select(enrollments.c.id).order_by("id")).scalars()]


def test_the_claim_takes_what_is_due_in_running_flows_due_first(ctx: Context) -> None:
    by_status = _flows(ctx)
    running = {by_status[s] for s in RUNNING_FLOWS}
    rng = random.Random(3)
    for round_ in range(6):
        rows: list[dict[str, Any]] = [
            {
                "flow_id": rng.choice(list(by_status.values())),
                "status": rng.choice(STATUSES),
                "due_at": T0 + timedelta(minutes=rng.randrange(240))
                if rng.random() < 0.9
                else None,
                "lease_until": T0 + timedelta(minutes=rng.randrange(240))
                if rng.random() < 0.1
                else None,
            }
            for _ in range(300)
        ]
        _enroll(ctx, rows)
        expected = _expected(rows, _all_ids(ctx), running)
        assert expected, round_
        with ctx.engine.begin() as conn:
            taken = due_ids(conn, now=NOW, limit=len(expected) + 10)
        assert sorted(taken) == sorted(expected), round_  # all of them, nothing else
        with ctx.engine.begin() as conn:
            first = due_ids(conn, now=NOW, limit=7)
        due_times = {i: rows[n]["due_at"] for n, i in enumerate(_all_ids(ctx))}
        # The 7 earliest (ties broken either way).
        assert sorted(due_times[i] for i in first) == [due_times[i] for i in expected[:7]]


def _pages_read(ctx: Context, limit: int) -> int:
    query = due_select("postgresql", NOW, limit)
    with ctx.engine.begin() as conn:
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        plan: Any = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}").scalar()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def test_a_paused_flows_overdue_rows_are_not_read(ctx: Context) -> None:
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("pages read are counted with PostgreSQL's EXPLAIN (BUFFERS)")
    by_status = _flows(ctx)
    active, paused = by_status["active"], by_status["paused"]
    _enroll(
        ctx,
        [
            {"flow_id": active, "status": "waiting", "due_at": T0 + timedelta(minutes=90 + n)}
            for n in range(20)
        ],
    )

    def pause_more(rows: int) -> None:
        with ctx.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO enrollments (flow_id, flow_version, record_id, status, step_key,"
                " entered_at, due_at) SELECT %(flow)s, 1, n, 'waiting', 's', %(t0)s,"
                " %(t0)s + n * interval '1 millisecond'"
                " FROM generate_series(%(start)s::int, %(start)s::int + %(rows)s::int - 1) AS n",
                {"flow": paused, "t0": T0, "start": 1000 + _count(ctx), "rows": rows},
            )
            conn.exec_driver_sql("ANALYZE enrollments")

    pause_more(25_000)
    with ctx.engine.begin() as conn:
        taken = due_ids(conn, now=NOW, limit=500)
    assert len(taken) == 20  # the running flow's, none of the paused rows due before them
    pages = _pages_read(ctx, 500)
    pause_more(25_000)  # twice the paused backlog: the claim reads no more
    with ctx.engine.begin() as conn:
        assert sorted(due_ids(conn, now=NOW, limit=500)) == sorted(taken)
    # (A walk in due order read every paused row before the running flow's: twice the pages.)
    assert _pages_read(ctx, 500) <= pages + 10, pages
    assert CANDIDATES >= 2  # a second worker finds rows beyond the first one's batch


def _count(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(enrollments)).scalar_one())
