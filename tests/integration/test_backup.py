"""`crmflow backup FILE`: a SQLite database copied while a writer writes; on PostgreSQL, the
pg_dump command (which works as printed)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from crmflow.errors import InvalidInputError
from crmflow.services.context import Context
from crmflow.services.setup import upgrade_database
from crmflow.settings import Settings
from crmflow.store.backup import backup_sqlite, pg_dump_command, pg_restore_command
from crmflow.store.database import create_db_engine
from tests.conftest import PG_ADMIN_URL

CRMFLOW = str(Path(sys.executable).parent / "crmflow")
BATCH = 10  # records the writer commits per transaction


@pytest.fixture(scope="module")
def migrated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, made once and copied by each test."""
    path = tmp_path_factory.mktemp("template") / "crmflow.db"
    ctx = Context.from_settings(Settings(database_url=f"sqlite:///{path}"))
    upgrade_database(ctx)
    ctx.engine.dispose()
    return path


@pytest.fixture
def database(migrated_file: Path, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "live" / "crmflow.db"
    path.parent.mkdir()
    shutil.copy(migrated_file, path)
    yield path


def _insert_records(conn: sa.Connection, start: int, count: int) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO records (type, data, created_at, updated_at) "
            "VALUES ('contact', :data, '2026-11-23 10:00:00', '2026-11-23 10:00:00')"
        ),
        [{"data": f'{{"last_name": "N{i}", "notes": "{"x" * 200}"}}'} for i in range(start, count)],
    )


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])


def test_a_backup_taken_while_a_writer_writes_is_one_whole_snapshot(
    database: Path, tmp_path: Path
) -> None:
    """The worker goes on committing while the copy is made: it is never refused for a lock,
    the copy passes integrity_check, is one file, and holds every batch committed before it
    began and none cut in half."""
    engine = create_db_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        _insert_records(conn, 0, 5_000)  # a few MB, so that the copy takes a moment
    commits = 0
    errors: list[BaseException] = []
    stop = threading.Event()
    committed = threading.Condition()

    def write() -> None:
        nonlocal commits
        writer = create_db_engine(f"sqlite:///{database}")
        try:
            while not stop.is_set():
                with writer.begin() as conn:
                    _insert_records(conn, 0, BATCH)
                with committed:
                    commits += 1
                    committed.notify_all()
        except BaseException as exc:
            errors.append(exc)
        finally:
            writer.dispose()

    def wait_for(count: int) -> int:
        with committed:
            assert committed.wait_for(lambda: commits >= count or bool(errors), timeout=30)
            return commits

    thread = threading.Thread(target=write)
    thread.start()
    try:
        before = 5_000 + BATCH * wait_for(3)
        done = backup_sqlite(engine, tmp_path / "copy.db")
        wait_for(commits + 3)  # the writer goes on after the backup too
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == []
    after = _count(database)

    copy = tmp_path / "copy.db"
    assert done.path == copy and done.integrity == "ok"
    with sqlite3.connect(copy) as lite:
        assert lite.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert lite.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        records = int(lite.execute("SELECT count(*) FROM records").fetchone()[0])
        ids = [row[0] for row in lite.execute("SELECT id FROM records ORDER BY id")]
    assert before <= records < after
    assert (records - 5_000) % BATCH == 0  # whole transactions only
    assert ids == list(range(1, records + 1))
    assert done.records == records and done.revision is not None
    assert not Path(f"{copy}-wal").exists()  # one self-contained file
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    engine.dispose()


def test_a_backup_refuses_to_overwrite_or_to_copy_onto_the_database(
    database: Path, tmp_path: Path
) -> None:
    engine = create_db_engine(f"sqlite:///{database}")
    target = tmp_path / "copy.db"
    target.write_text("yesterday's backup")
    for where, said in [
        (target, "add --overwrite"),
        (database, "the database itself"),
        (Path(f"{database}-wal"), "the database itself"),
        (tmp_path / "missing" / "copy.db", "does not exist"),
        (tmp_path, "is a folder"),
    ]:
        with pytest.raises(InvalidInputError) as refused:
            backup_sqlite(engine, where)
        assert said in refused.value.message
    assert target.read_text() == "yesterday's backup"
    assert backup_sqlite(engine, target, overwrite=True).integrity == "ok"
    assert _count(target) == 0
    engine.dispose()


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env["CRMFLOW_DATABASE_URL"] = url
    return env


def _crmflow_backup(
    target: Path, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRMFLOW, "backup", str(target)],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_crmflow_backup_copies_the_database_and_says_what_it_holds(
    database: Path, tmp_path: Path
) -> None:
    engine = create_db_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        _insert_records(conn, 0, 42)
    engine.dispose()
    env = _env(f"sqlite:///{database}")
    target = tmp_path / "backups" / "crm.db"
    target.parent.mkdir()

    done = _crmflow_backup(target, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "42 records" in done.stdout and "integrity ok" in done.stdout
    assert _count(target) == 42

    again = _crmflow_backup(target, env, tmp_path)
    assert again.returncode == 1
    assert "the file exists" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr


def test_crmflow_backup_on_postgresql_prints_pg_dump_and_pg_restore_commands_that_work(
    postgres_ctx: Context, tmp_path: Path
) -> None:
    """No copy is made (exit 1); the pg_dump command printed, without the URL's password, backs
    the database up, and the pg_restore command printed loads it into an empty database."""
    url = postgres_ctx.settings.database_url
    with postgres_ctx.engine.begin() as conn:
        _insert_records(conn, 0, 3)
    host_part = url.split("://", 1)[1]
    with_password = url.replace(host_part, "postgres:s3cret@" + host_part.split("@")[1])
    target = tmp_path / "crm.dump"

    shown = _crmflow_backup(target, _env(with_password), tmp_path)
    assert shown.returncode == 1
    assert not target.exists()
    command = shown.stdout.strip()
    assert command == pg_dump_command(with_password, str(target))
    assert command.startswith("pg_dump --format=custom") and "s3cret" not in command
    assert "s3cret" not in shown.stderr and "pg_restore" in shown.stderr
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump / pg_restore are not installed here: the commands were not run")
    # The test server trusts local connections: the command as printed (no password) works.
    subprocess.run(command, shell=True, check=True, cwd=tmp_path, capture_output=True)

    name = f"crmflow_restore_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    restored_url = url.rsplit("/", 1)[0] + f"/{name}"
    try:
        restore = pg_restore_command(restored_url, str(target))
        assert restore in shown.stderr.replace(url.rsplit("/", 1)[1], name)
        subprocess.run(restore, shell=True, check=True, cwd=tmp_path, capture_output=True)
        restored = create_db_engine(restored_url)
        with restored.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM records")).scalar_one() == 3
        restored.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
