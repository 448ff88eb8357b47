"""The migration that adds task histories and per-user read marks: upgrade makes the tables (a
history line and a read mark written through the store read back), downgrade removes them; the
migrations have one head. On SQLite and PostgreSQL, each on a database of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from crmflow.store.notifications import Reader, inbox, mark_read
from crmflow.store.task_lists import task_events_of
from crmflow.store.tasks import (
    NewNotification,
    NewTaskEvent,
    insert_notifications,
    insert_task_events,
)
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
NEW_TABLES = {"task_events", "notification_reads"}


def test_task_history_and_read_marks_come_with_their_migration_and_go_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_inbox_reads.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert not NEW_TABLES & set(sa.inspect(engine).get_table_names())
    upgrade(engine, script.revision)
    assert set(sa.inspect(engine).get_table_names()) >= NEW_TABLES
    # The store writes the tables as they are at the head (later migrations add columns, such
    # as notifications.task_id): read and write them there, then come all the way back down.
    upgrade(engine, "heads")
    with engine.begin() as conn:
        insert_task_events(conn, [NewTaskEvent(7, AT, "ana", "commented", "called her")])
        insert_notifications(conn, [NewNotification("group", "sales", "Hi", None, 3, AT)])
        [note] = inbox(conn, Reader(5, "ion", ["sales"]), unread=False, before=None, limit=5)
        mark_read(conn, 5, [note.id], at=AT)
    with engine.connect() as conn:
        [line] = task_events_of(conn, 7)
        [seen] = inbox(conn, Reader(5, "ion", ["sales"]), unread=False, before=None, limit=5)
        [unseen] = inbox(conn, Reader(6, "eva", ["sales"]), unread=True, before=None, limit=5)
    assert (line.by, line.action, line.detail, line.at) == ("ana", "commented", "called her", AT)
    assert (seen.read_by_me_at, unseen.read_by_me_at) == (AT, None)

    command.downgrade(alembic_config(engine), script.down_revision)
    assert not NEW_TABLES & set(sa.inspect(engine).get_table_names())
