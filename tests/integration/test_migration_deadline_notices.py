"""The migration that adds the deadline notices: upgrade makes the table (a notice kept through
store.deadlines is kept once), downgrade removes it; the migrations have one head. On SQLite and
PostgreSQL, each on a database of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.deadlines import keep_notice, notices_sent
from crmflow.store.migrate import alembic_config, upgrade
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_the_deadline_notices_come_with_their_migration_and_go_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_deadline_notices.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "deadline_notices" not in sa.inspect(engine).get_table_names()
    upgrade(engine, script.revision)
    with engine.begin() as conn:
        assert keep_notice(conn, "task:4:late", 4, "late", now=AT)
        assert not keep_notice(conn, "task:4:late", 4, "late", now=AT)  # once
        assert keep_notice(conn, "task:4:reminder:1", 4, "reminder", now=AT)
    with engine.connect() as conn:
        assert notices_sent(conn, [4, 5]) == {"task:4:late", "task:4:reminder:1"}

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "deadline_notices" not in sa.inspect(engine).get_table_names()
