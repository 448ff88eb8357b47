"""Bounded history on PostgreSQL (issue 14): the big history tables are partitioned by month
(migration 0030); a row of a month with no partition lands in the default one; pruning drops a
whole old month once nothing in it is to be kept, with the same counts as the row-by-row way,
and keeps a month holding a run still going. Finished jobs are pruned too (both backends)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments, flows
from crmflow.services.context import Actor, Context
from crmflow.services.retention import prune
from crmflow.store import jobs as job_store
from crmflow.store import migrate, partitions
from crmflow.store.database import create_db_engine
from crmflow.store.schema import jobs, notifications, step_runs
from crmflow.testing import FrozenClock
from crmflow.worker import run_once
from tests.conftest import PG_ADMIN_URL
from tests.integration.helpers import count_rows
from tests.integration.test_retention import (
    MAILING,
    _contact,
    _figures,
    _run_to_the_end,
    enrollment_view_of,
)

# A flow whose run stays inside for a long time after its first step.
LONG = """\
schema_version: 1
key: long
name: Long
record_type: contact
controller: system
triggers: [{type: manual}]
steps:
  - key: first
    actions:
      - type: send_email
        subject: "Hello"
        body: "Hi"
  - key: much-later
    timing: {type: after, amount: 1000, unit: days}
    actions:
      - type: send_email
        subject: "Later"
        body: "Hi again"
"""


@pytest.fixture
def pg(ctx: Context) -> Context:
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("partitions are PostgreSQL's")
    return ctx


def _partitions(ctx: Context, table: str) -> dict[str, int]:
    """Each partition of `table` with the rows it holds."""
    with ctx.engine.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = to_regclass(:t)"
            ),
            {"t": table},
        ).scalars()
        return {str(n): partitions.rows_in(conn, str(n)) for n in names}


def test_the_history_tables_are_partitioned_by_month_from_now_on(pg: Context) -> None:
    with pg.engine.connect() as conn:
        for table in partitions.PARTITIONED:
            assert partitions.is_partitioned(conn, table)
            assert f"{table}_pdefault" in _partitions(pg, table)
    # (the months made by the migration: test_the_partitioning_migration_round_trips_...)


def test_a_row_of_a_month_without_partition_lands_in_default_then_moves_to_its_month(
    pg: Context,
) -> None:
    long_ago = datetime(2019, 3, 14, 12, 0, tzinfo=UTC)
    with pg.engine.begin() as conn:
        conn.execute(
            notifications.insert().values(
                target_kind="user", target_ref="system", message="old", created_at=long_ago
            )
        )
    assert _partitions(pg, "notifications")["notifications_pdefault"] == 1
    try:
        with pg.engine.begin() as conn:
            made = partitions.ensure_months(conn, long_ago, ahead=0)
        assert made == [f"{t}_p201903" for t in partitions.PARTITIONED]
        have = _partitions(pg, "notifications")
        assert (have["notifications_pdefault"], have["notifications_p201903"]) == (0, 1)
        assert count_rows(pg, notifications) == 1
    finally:
        with pg.engine.begin() as conn:
            for table in partitions.PARTITIONED:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}_p201903")


@pytest.fixture
def months_of_the_clock(pg: Context, clock: FrozenClock) -> Iterator[None]:
    """The partitions a worker pruning at the frozen time would have made; dropped after."""
    before = {t: set(_partitions(pg, t)) for t in partitions.PARTITIONED}
    yield
    with pg.engine.begin() as conn:
        for table in partitions.PARTITIONED:
            for name in set(_partitions(pg, table)) - before[table]:
                conn.exec_driver_sql(f"DROP TABLE {name}")
        partitions.ensure_months(conn, datetime.now(UTC))  # what pruning may have dropped


def test_pruning_drops_an_old_month_and_the_figures_and_summaries_stay(
    pg: Context, clock: FrozenClock, admin: Actor, months_of_the_clock: None
) -> None:
    prune(pg)  # a pass at the start makes this month's partitions
    month = f"step_runs_p{clock():%Y%m}"
    flows.create_flow(pg, admin, MAILING)
    flows.change_status(pg, admin, "welcome", LifecycleAction.START)
    old = _run_to_the_end(pg, clock, admin, ["Ana", "Bob", "Cleo"])
    assert _partitions(pg, "step_runs")[month] == 5
    clock.advance(days=170)
    recent = _run_to_the_end(pg, clock, admin, ["Dan", "Eve"])
    clock.advance(days=20)  # the old runs ended 190 days ago: their month is past the cutoff
    ongoing = enrollments.start_record(pg, admin, "welcome", _contact(pg, admin, "Fay")).id
    run_once(pg)
    Dispatcher(pg).run_once()
    before = _figures(pg, admin)
    assert enrollment_view_of(pg, old[1]).emails == (2, 2)

    result = prune(pg)

    assert month in result.dropped
    assert month not in _partitions(pg, "step_runs")
    assert result.deleted["step_runs"] == 1 + 2 + 2  # as the row-by-row way counts them
    for eid in old:
        assert count_rows(pg, step_runs, enrollment_id=eid) == 0
    for eid in [*recent, ongoing]:
        assert count_rows(pg, step_runs, enrollment_id=eid) > 0
    assert _figures(pg, admin) == before
    pruned = enrollment_view_of(pg, old[1])
    assert pruned.step_runs == [] and pruned.emails == (2, 2)
    assert prune(pg).total == 0
    assert _figures(pg, admin) == before


def test_runs_across_two_months_are_counted_once_whole_and_both_months_dropped(
    pg: Context, clock: FrozenClock, admin: Actor, months_of_the_clock: None
) -> None:
    clock.advance(days=7, hours=13)  # the last evening of the month: runs end in the next one
    prune(pg)
    first, second = (f"step_runs_p{partitions.month_start(clock(), n):%Y%m}" for n in (0, 1))
    flows.create_flow(pg, admin, MAILING)
    flows.change_status(pg, admin, "welcome", LifecycleAction.START)
    old = _run_to_the_end(pg, clock, admin, ["Ana", "Bob", "Cleo"])
    assert (_partitions(pg, "step_runs")[first], _partitions(pg, "step_runs")[second]) == (3, 2)
    clock.advance(days=250)
    before = _figures(pg, admin)

    result = prune(pg)

    assert {first, second} <= set(result.dropped)
    assert result.deleted["step_runs"] == 1 + 2 + 2
    assert _figures(pg, admin) == before
    assert enrollment_view_of(pg, old[1]).emails == (2, 2)
    assert prune(pg).total == 0 and _figures(pg, admin) == before


def test_a_month_holding_a_run_still_going_is_not_dropped(
    pg: Context, clock: FrozenClock, admin: Actor, months_of_the_clock: None
) -> None:
    prune(pg)
    month = f"step_runs_p{clock():%Y%m}"
    for text, key in ((MAILING, "welcome"), (LONG, "long")):
        flows.create_flow(pg, admin, text)
        flows.change_status(pg, admin, key, LifecycleAction.START)
    going = enrollments.start_record(pg, admin, "long", _contact(pg, admin, "Zoe")).id
    old = _run_to_the_end(pg, clock, admin, ["Ana", "Bob"])
    clock.advance(days=200)
    before = _figures(pg, admin)

    result = prune(pg)

    assert month not in result.dropped
    assert _partitions(pg, "step_runs")[month] == 1  # the run still going keeps its step run
    assert count_rows(pg, step_runs, enrollment_id=going) == 1
    assert result.deleted["step_runs"] == 1 + 2  # the ended runs went row by row
    for eid in old:
        assert count_rows(pg, step_runs, enrollment_id=eid) == 0
    assert _figures(pg, admin) == before


def test_finished_jobs_go_after_their_days_running_ones_stay(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    ctx.settings.retention_jobs_days = 30
    with ctx.engine.begin() as conn:
        ids = [
            job_store.insert_job(
                conn,
                kind="import",
                subject=f"type:{n}",
                payload={},
                total=1,
                created_by=admin.id,
                now=clock() - timedelta(days=60),
            )
            for n in range(3)
        ]
        for job_id, days, state in ((ids[0], 40, "done"), (ids[1], 10, "failed")):
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(state=state, finished_at=clock() - timedelta(days=days))
            )

    result = prune(ctx)

    assert result.deleted["jobs"] == 1
    with ctx.engine.connect() as conn:
        left = set(conn.execute(sa.select(jobs.c.id)).scalars())
    assert left == {ids[1], ids[2]}  # finished 10 days ago; still waiting


def test_the_partitioning_migration_round_trips_on_a_database_with_rows() -> None:
    name = f"crmflow_test_parts_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = create_db_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    config = migrate.alembic_config(engine)
    old = "2025-03-10 08:00:00+00"
    try:
        command.upgrade(config, "0028")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO step_runs VALUES (1, 1, 'a', 'action', 'done', '',"
                f" '{old}', '{old}', '[]'), (1, 2, 'b', 'action', 'waiting', '', now(), NULL,"
                " '[]')"
            )
            conn.exec_driver_sql(
                "INSERT INTO record_changes (record_id, record_type, kind, at)"
                f" VALUES (1, 'contact', 'created', '{old}'), (1, 'contact', 'updated', now())"
            )
            conn.exec_driver_sql(
                "INSERT INTO notifications (target_kind, target_ref, message, created_at)"
                f" VALUES ('user', 'system', 'hi', '{old}')"
            )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert partitions.is_partitioned(conn, "step_runs")
            assert partitions.rows_in(conn, "step_runs_p202503") == 1
            assert partitions.rows_in(conn, "record_changes_p202503") == 1
            assert partitions.rows_in(conn, "notifications_p202503") == 1
            now = datetime.now(UTC)
            for table in partitions.PARTITIONED:
                # every month from the oldest row's to two months ahead, and the default
                starts = [m.start for m in partitions.months(conn, table)]
                oldest = now if table == "entry_decisions" else datetime(2025, 3, 1, tzinfo=UTC)
                month, last = partitions.month_start(oldest), None
                while month <= partitions.month_start(now, partitions.AHEAD):
                    assert month in starts, (table, month)
                    last, month = month, partitions.month_start(month, 1)
                assert last == max(starts)
                assert partitions.rows_in(conn, f"{table}_pdefault") == 0
        with engine.begin() as conn:  # ids go on from the same sequence
            new_id = conn.exec_driver_sql(
                "INSERT INTO record_changes (record_id, record_type, kind, at)"
                " VALUES (1, 'contact', 'updated', now()) RETURNING id"
            ).scalar()
        assert new_id == 3
        command.downgrade(config, "0028")
        with engine.connect() as conn:
            assert not partitions.is_partitioned(conn, "step_runs")
            counts = [
                conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
                for t in ("step_runs", "record_changes", "notifications", "entry_decisions")
            ]
            assert counts == [2, 3, 1, 0]
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert partitions.rows_in(conn, "record_changes_p202503") == 1
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
