"""Migration 0010: records gain `external_id`, unique per record type where set; a downgrade
takes it away again and keeps 0008's version trigger. SQLite and PostgreSQL, each on a database
of its own."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from crmflow.store.migrate import alembic_config, upgrade
from tests.integration.test_migration_held import engine  # the fixture, shared

__all__ = ["engine"]

NOW = "2026-03-02 09:00:00"


def _insert(conn: sa.Connection, record_id: int, external_id: str | None) -> None:
    conn.execute(
        sa.text(
            "insert into records (id, type, data, created_at, updated_at, external_id)"
            " values (:id, 'contact', '{}', :now, :now, :ext)"
        ),
        {"id": record_id, "now": NOW, "ext": external_id},
    )


def test_external_ids_are_unique_per_type_and_a_downgrade_removes_them(engine: sa.Engine) -> None:
    upgrade(engine, "0010")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "insert into record_types (key, name, fields, created_at, updated_at)"
                " values ('contact', 'Contact', '[]', :now, :now)"
            ),
            {"now": NOW},
        )
        _insert(conn, 1, "crm-1")
        _insert(conn, 2, None)
        _insert(conn, 3, None)  # any number of records have none
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        _insert(conn, 4, "crm-1")

    command.downgrade(alembic_config(engine), "0009")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("records")}
    assert "external_id" not in columns and "version" in columns
    with engine.begin() as conn:
        conn.execute(sa.text("update records set data = '{\"a\": 1}' where id = 1"))
        version = conn.execute(sa.text("select version from records where id = 1")).scalar()
    assert version == 2  # 0008's trigger survived the downgrade
