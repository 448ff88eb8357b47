"""The migration that adds the delivery columns to the outbox: the messages already there stay
pending (or cancelled) with no delivery state, and a downgrade removes the columns and keeps
the messages. On SQLite and PostgreSQL, each on a database of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DELIVERY_COLUMNS = {
    "next_attempt_at",
    "lease_owner",
    "lease_until",
    "delivered_at",
    "last_error",
    "server_reply",
    "rendered",
}


def _delivery_revision() -> tuple[str, str]:
    """(the delivery migration, the one before it), found by its file name."""
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_outbox_delivery.py")]
    assert isinstance(script.down_revision, str)
    return script.revision, script.down_revision


def _columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("outbox")}


def test_the_outbox_gets_its_delivery_columns_and_loses_them_on_downgrade(
    engine: sa.Engine,
) -> None:
    revision, before = _delivery_revision()
    upgrade(engine, before)
    assert not _columns(engine) & DELIVERY_COLUMNS
    row = {
        "enrollment_id": 1,
        "step_key": "hello",
        "step_run": 1,
        "idempotency_key": "1:1:welcome",
        "kind": "email",
        "payload": "{}",
        "status": "pending",
        "not_before": AT,
        "attempts": 0,
        "created_at": AT,
    }
    table = sa.table("outbox", *(sa.column(name) for name in row))
    with engine.begin() as conn:
        conn.execute(table.insert(), [row])

    upgrade(engine, revision)
    assert _columns(engine) >= DELIVERY_COLUMNS
    with engine.connect() as conn:
        [got] = conn.execute(sa.text("select status, attempts, delivered_at from outbox"))
    assert tuple(got) == ("pending", 0, None)

    command.downgrade(alembic_config(engine), before)
    assert not _columns(engine) & DELIVERY_COLUMNS
    with engine.connect() as conn:
        assert conn.execute(sa.text("select status from outbox")).scalars().all() == ["pending"]
