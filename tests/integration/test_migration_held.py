"""Migration 0009: a start held by the loop guard, written before as `waiting` with no state,
becomes `held`; a downgrade gives the old rows back. On SQLite and PostgreSQL, each on a
database of its own (the session's migrated one is left alone)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from crmflow.store.database import create_db_engine
from crmflow.store.migrate import alembic_config, upgrade
from crmflow.store.schema import enrollments
from tests.conftest import PG_ADMIN_URL, skip_or_fail_without_postgres

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STATE = {"enrollment_id": 2, "flow_key": "f", "step_key": "ask", "status": "waiting"}


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
        yield engine
        engine.dispose()
        return
    skip_or_fail_without_postgres()
    name = f"crmflow_migration_{uuid.uuid4().hex[:10]}"
    admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = create_db_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _statuses(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        query = sa.select(enrollments.c.status).order_by(enrollments.c.id)
        return list(conn.execute(query).scalars())


def test_a_held_start_gets_its_own_status_and_a_downgrade_restores_it(engine: sa.Engine) -> None:
    upgrade(engine, "0008")
    rows = [
        # held by the loop guard, as 0008's code wrote it (no state: SQL NULL)
        {"id": 1, "status": "waiting", "state": sa.null()},
        {"id": 2, "status": "waiting", "state": STATE},  # at an approval: it stays waiting
        {"id": 3, "status": "active", "state": sa.null()},  # a follow-up not entered yet
        {"id": 4, "status": "cancelled", "state": sa.null()},
    ]
    with engine.begin() as conn:
        conn.execute(
            enrollments.insert(),
            [
                {"flow_id": 1, "flow_version": 1, "record_id": 7, "entered_at": AT, **row}
                for row in rows
            ],
        )

    upgrade(engine, "0009")
    assert _statuses(engine) == ["held", "waiting", "active", "cancelled"]

    command.downgrade(alembic_config(engine), "0008")
    assert _statuses(engine) == ["waiting", "waiting", "active", "cancelled"]
