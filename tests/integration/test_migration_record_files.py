"""The migration that keeps records' files: upgrade creates record_files (a file written
through store.record_files is read back byte for byte), downgrade drops it; the migrations have
one head. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from crmflow.store.migrate import alembic_config, upgrade
from crmflow.store.record_files import FileInfo, read_file, save_file
from crmflow.store.record_types import insert_record_type
from crmflow.store.records import NewRecord, insert_records
from tests.integration.test_migration_held import engine as engine  # noqa: PLC0414 (fixture)

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_record_files_come_with_their_migration_and_go_with_its_downgrade(
    engine: sa.Engine,
) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    [script] = [s for s in scripts.walk_revisions() if s.path.endswith("_record_files.py")]
    assert isinstance(script.down_revision, str)
    assert len(scripts.get_heads()) == 1

    upgrade(engine, script.down_revision)
    assert "record_files" not in _tables(engine)
    upgrade(engine, script.revision)
    content = bytes(range(256)) * 4  # every byte value, NUL included
    with engine.begin() as conn:
        fields = [{"key": "cv", "type": "file", "label": "CV"}]
        insert_record_type(conn, key="person", name="Person", builtin=False, fields=fields, now=AT)
        [record_id] = insert_records(conn, "person", [NewRecord({}, None)], actor_id=None, now=AT)
        info = FileInfo(record_id, "cv", "cv.pdf", "application/pdf", 1024, "0" * 64, AT, None)
        save_file(conn, info, content)
    with engine.connect() as conn:
        found = read_file(conn, record_id, "cv")
    assert found is not None
    assert found.content == content
    assert found.info.filename == "cv.pdf"

    command.downgrade(alembic_config(engine), script.down_revision)
    assert "record_files" not in _tables(engine)
