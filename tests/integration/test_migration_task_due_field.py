"""The migration that lets a task's due time follow a date of the record: upgrade adds
tasks.due_field and tasks.due_offset_days (a task written through store.tasks keeps them),
downgrade removes them; the migrations have one head. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from crmflow.store.schema import tasks
from crmflow.store.tasks import NewTask, insert_tasks
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("tasks")}


def test_the_due_field_comes_with_its_migration_and_goes_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [
        s for s in scripts.walk_revisions() if s.path.endswith("_task_due_from_record_date.py")
    ]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "due_field" not in _columns(engine)
    upgrade(engine, script.revision)
    task = NewTask(1, 2, "print", 1, "Print", "", "user", "maria", AT, [], AT, "start", -1)
    with engine.begin() as conn:
        insert_tasks(conn, [task])
    with engine.connect() as conn:
        row = conn.execute(sa.select(tasks.c.due_field, tasks.c.due_offset_days)).one()
    assert tuple(row) == ("start", -1)

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "due_field" not in _columns(engine)
