"""Migration 0031: the enrollments' index by (flow, status) becomes (flow, status, due time),
with the partial indexes of leased rows and of rows inside a flow by due time; a downgrade
gives the old index back. Migration 0032: the two indexes by status and due time go, and come
back on a downgrade. On SQLite and PostgreSQL, each on a database of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from crmflow.store.database import create_db_engine
from crmflow.store.migrate import alembic_config, upgrade
from tests.conftest import PG_ADMIN_URL, skip_or_fail_without_postgres

NEW = {"ix_enrollments_flow_status_due", "ix_enrollments_leased", "ix_enrollments_inside_due"}


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


def _indexes(engine: sa.Engine) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(engine).get_indexes("enrollments")}


def test_the_indexes_are_made_and_a_downgrade_gives_the_old_one_back(engine: sa.Engine) -> None:
    upgrade(engine, "0030")
    assert "ix_enrollments_flow_status" in _indexes(engine)
    upgrade(engine, "0031")
    found = _indexes(engine)
    assert found >= NEW and "ix_enrollments_flow_status" not in found
    command.downgrade(alembic_config(engine), "0030")
    found = _indexes(engine)
    assert "ix_enrollments_flow_status" in found and not NEW & found


def test_0032_drops_the_indexes_by_status_and_due_time_and_a_downgrade_builds_them(
    engine: sa.Engine,
) -> None:
    dropped = {"ix_enrollments_status_due", "ix_enrollments_inside_due"}
    upgrade(engine, "0031")
    assert _indexes(engine) >= dropped
    upgrade(engine, "0032")
    found = _indexes(engine)
    assert not dropped & found
    assert {"ix_enrollments_flow_status_due", "ix_enrollments_leased"} <= found
    command.downgrade(alembic_config(engine), "0031")
    assert _indexes(engine) >= dropped
