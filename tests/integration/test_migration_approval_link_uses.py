"""The migration that adds the used approval links: upgrade makes the table (a link marked used
through store.approval_links reads back, and a second use is refused), downgrade removes it; the
migrations have one head. On SQLite and PostgreSQL, each on a database of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.approval_links import LinkUse, find_link_use, use_link
from crmflow.store.migrate import alembic_config, upgrade
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_the_used_links_table_comes_with_its_migration_and_goes_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_approval_link_uses.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "approval_link_uses" not in sa.inspect(engine).get_table_names()
    upgrade(engine, script.revision)
    use = LinkUse(enrollment_id=7, step_run=3, button="validate", username="maria", used_at=AT)
    with engine.begin() as conn:
        assert use_link(conn, "token-1", use)
        assert not use_link(conn, "token-1", use)  # a link decides once
    with engine.connect() as conn:
        assert find_link_use(conn, "token-1") == use
        assert find_link_use(conn, "token-2") is None

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "approval_link_uses" not in sa.inspect(engine).get_table_names()
