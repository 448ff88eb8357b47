"""The migration of test mode: upgrade adds enrollments.test_to and outbox.test (existing
messages are not tests), downgrade removes them; the migrations have one head. On SQLite and
PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)


def _columns(engine: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


def test_test_mode_columns_come_with_their_migration_and_go_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_test_mode.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "insert into outbox (enrollment_id, step_key, step_run, idempotency_key, kind,"
                " payload, status, not_before, attempts, created_at) values (1, 's', 1, 'k',"
                " 'email', '{}', 'pending', '2026-12-02 09:00:00', 0, '2026-12-02 09:00:00')"
            )
        )
    upgrade(engine, script.revision)
    assert "test_to" in _columns(engine, "enrollments")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select test from outbox")).scalar_one() in (False, 0)

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "test_to" not in _columns(engine, "enrollments")
    assert "test" not in _columns(engine, "outbox")
