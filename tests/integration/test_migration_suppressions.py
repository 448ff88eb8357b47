"""The migration that adds the suppression list and the signing keys: upgrade makes the tables
(an address written through store.suppressions reads back, normalised), downgrade removes them;
the migrations have one head. On SQLite and PostgreSQL, each on a database of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from crmflow.store.suppressions import add_suppression, find_suppressions, signing_key
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_the_suppression_tables_come_with_their_migration_and_go_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_suppressions.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "suppressions" not in sa.inspect(engine).get_table_names()
    upgrade(engine, script.revision)
    with engine.begin() as conn:
        assert add_suppression(conn, " Ana@Example.org", reason="admin", at=AT, source="x")
        assert not add_suppression(conn, "ana@example.org", reason="hard_bounce", at=AT, source="")
        assert signing_key(conn, "unsubscribe", "first", at=AT) == "first"
        assert signing_key(conn, "unsubscribe", "second", at=AT) == "first"
    with engine.connect() as conn:
        found = find_suppressions(conn, ["ANA@example.org", "bob@example.org"])
    assert [(s.address, s.reason, s.at) for s in found.values()] == [
        ("ana@example.org", "admin", AT)
    ]

    command.downgrade(alembic_config(engine), script.down_revision)
    names = sa.inspect(engine).get_table_names()
    assert "suppressions" not in names and "signing_keys" not in names
