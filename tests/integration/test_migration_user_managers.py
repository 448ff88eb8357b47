"""The migration that adds users' managers: upgrade adds users.manager_id (a manager set through
store.users reads back), downgrade removes it; the migrations have one head."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from crmflow.store.users import insert_user, manager_of, set_manager
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("users")}


def test_users_manager_comes_with_its_migration_and_goes_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_user_managers.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "manager_id" not in _columns(engine)
    upgrade(engine, script.revision)
    with engine.begin() as conn:
        ids = [
            insert_user(
                conn,
                username=name,
                display_name=name,
                email=None,
                role="member",
                password_hash=None,
                created_at=AT,
            )
            for name in ("rita", "ana")
        ]
        set_manager(conn, ids[1], ids[0])
    with engine.connect() as conn:
        boss = manager_of(conn, ids[1])
    assert boss is not None and boss.username == "rita"

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "manager_id" not in _columns(engine)
