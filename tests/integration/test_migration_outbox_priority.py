"""The migration that adds the outbox's priority lane: the rows already there are bulk
(priority 0), a new row may be transactional (1); downgrade removes the column; the migrations
have one head. On SQLite and PostgreSQL, each on a database of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
INSERT = (
    "insert into outbox (enrollment_id, step_key, step_run, idempotency_key, kind, payload,"
    " status, not_before, attempts, created_at{extra}) values (1, 'mail', 1, :key, 'email',"
    " '{{}}', 'pending', :at, 0, :at{value})"
)


def _columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("outbox")}


def test_outbox_priority_comes_with_its_migration_and_goes_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_outbox_priority.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "priority" not in _columns(engine)
    at = AT.isoformat() if engine.dialect.name == "sqlite" else AT
    with engine.begin() as conn:
        conn.execute(sa.text(INSERT.format(extra="", value="")), {"key": "old", "at": at})
    upgrade(engine, script.revision)
    with engine.begin() as conn:
        conn.execute(
            sa.text(INSERT.format(extra=", priority", value=", 1")), {"key": "new", "at": at}
        )
        query = sa.text("select idempotency_key, priority from outbox")
        rows = {str(key): int(priority) for key, priority in conn.execute(query)}
    assert rows == {"old": 0, "new": 1}
    assert "ix_outbox_priority" in {i["name"] for i in sa.inspect(engine).get_indexes("outbox")}

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "priority" not in _columns(engine)
