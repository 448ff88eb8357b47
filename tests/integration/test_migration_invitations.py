"""The migration that adds the invitations of appointments: upgrade makes the table (an
invitation written through store.invitations reads back, and its SEQUENCE moves), downgrade
removes it; the migrations have one head. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.invitations import CANCELLED, active_invitations, add_invitations, set_sequences
from crmflow.store.migrate import alembic_config, upgrade
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
ROW = {
    "record_id": 5,
    "uid": "abc@crmflow",
    "sequence": 0,
    "status": "active",
    "attendee_record_id": 4,
    "attendee_email": "claire@example.org",
    "attendee_name": "Claire Martin",
    "organizer_email": "maria@example.org",
    "organizer_name": "Maria Pop",
    "enrollment_id": 1,
    "step_key": "book",
    "step_run": 1,
    "updated_at": AT,
}


def test_the_invitations_table_comes_with_its_migration_and_goes_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_invitations.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "invitations" not in sa.inspect(engine).get_table_names()
    upgrade(engine, script.revision)
    with engine.begin() as conn:
        add_invitations(conn, [ROW])
        [(rid, row)] = active_invitations(conn, [5, 6]).items()
        assert (rid, row.uid, row.sequence, row.organizer_name) == (
            5,
            "abc@crmflow",
            0,
            "Maria Pop",
        )
        set_sequences(conn, [(5, 1, CANCELLED)], now=AT)
        assert active_invitations(conn, [5]) == {}

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "invitations" not in sa.inspect(engine).get_table_names()
