"""The migration that adds the web sessions: upgrade makes the table (a session stored through
store.web_sessions reads back with its user, and is deleted), downgrade removes it; the
migrations have one head. On SQLite and PostgreSQL, each on a database of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from crmflow.store.users import insert_user
from crmflow.store.web_sessions import delete_session, find_session, insert_session
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_the_sessions_table_comes_with_its_migration_and_goes_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_web_sessions.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "web_sessions" not in sa.inspect(engine).get_table_names()
    upgrade(engine, script.revision)
    with engine.begin() as conn:
        user_id = insert_user(
            conn,
            username="maria",
            display_name="Maria",
            email=None,
            role="manager",
            password_hash=None,
            created_at=AT,
        )
        session_id = insert_session(conn, user_id, "a" * 64, at=AT)
    with engine.begin() as conn:
        found = find_session(conn, "a" * 64)
        assert found is not None
        assert (found.id, found.username, found.role, found.active) == (
            session_id,
            "maria",
            "manager",
            True,
        )
        assert found.created_at == AT == found.last_seen_at
        assert find_session(conn, "b" * 64) is None
        delete_session(conn, session_id)
        assert find_session(conn, "a" * 64) is None

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "web_sessions" not in sa.inspect(engine).get_table_names()
