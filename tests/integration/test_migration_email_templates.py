"""The migration that adds stored email templates: upgrade makes the table (a template written
through store.templates reads back), downgrade removes it; the migrations have one head. On
SQLite and PostgreSQL, each on a database of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from crmflow.store.templates import find_template, save_template
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_the_templates_table_comes_with_its_migration_and_goes_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_email_templates.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "email_templates" not in sa.inspect(engine).get_table_names()
    upgrade(engine, script.revision)
    with engine.begin() as conn:
        assert save_template(conn, "news", {"name": "news", "text": "Hi"}, at=AT, by="ana")
    with engine.connect() as conn:
        stored = find_template(conn, "news")
    assert stored is not None
    assert (stored.document, stored.updated_at, stored.updated_by) == (
        {"name": "news", "text": "Hi"},
        AT,
        "ana",
    )

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "email_templates" not in sa.inspect(engine).get_table_names()
