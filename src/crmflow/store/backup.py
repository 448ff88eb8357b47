"""Backups: a SQLite database copied while it is in use (SQLite's online backup API), and the
pg_dump command that backs up a PostgreSQL one (`crmflow backup FILE`, docs/deploy.md).

The SQLite copy is one consistent snapshot: the backup reads every page in a single step of
one read transaction, which on a WAL database blocks no writer (the worker and the API go on
writing while it runs) and sees none of their later commits. It is written to a hidden file
beside FILE (mode 0600: it holds password hashes and the secret key), switched to the plain
rollback journal so that it is one self-contained file, checked with `PRAGMA integrity_check`,
synced to disk and only then renamed to FILE: a backup cut short leaves no FILE behind that
looks whole.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, Problem

__all__ = ["SqliteBackup", "backup_sqlite", "pg_dump_command", "pg_restore_command"]


@dataclass(frozen=True)
class SqliteBackup:
    """What a finished SQLite backup holds, read back from the copy itself."""

    path: Path
    source: Path
    size: int  # bytes
    seconds: float
    revision: str | None  # the copy's migration (alembic_version)
    records: int
    integrity: str  # 'ok', or 'not checked'


def backup_sqlite(
    engine: sa.Engine, target: Path, *, overwrite: bool = False, check: bool = True
) -> SqliteBackup:
    """Copy the SQLite database of `engine` to `target` while others keep writing to it.

    Refused, saying what to do: a database in memory, a target that is the database itself (or
    its -wal/-shm file), a folder that does not exist, a target that exists without
    `overwrite`. With `overwrite` the old file is replaced only once the new copy is complete
    and checked. A copy that fails its integrity check is deleted and reported."""
    source = _source_file(engine)
    target = Path(target)
    _check_target(source, target, overwrite=overwrite)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    started = time.perf_counter()
    try:
        # Made here, empty and readable by its owner only, before SQLite writes into it.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        raw = engine.raw_connection()
        try:
            source_connection = raw.driver_connection
            assert isinstance(source_connection, sqlite3.Connection)
            copy = sqlite3.connect(partial, isolation_level=None)
            try:
                # pages=-1: every page in one step, one read snapshot (see the module's text).
                source_connection.backup(copy, pages=-1)
            finally:
                copy.close()
        finally:
            raw.close()
        with contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as copy:
            copy.execute("PRAGMA journal_mode=DELETE")
            integrity = _integrity(copy) if check else "not checked"
            revision = _revision(copy)
            records = _records(copy)
        if integrity not in ("ok", "not checked"):
            raise ConflictError(
                f"the copy of {source} failed its integrity check ({integrity}); nothing was "
                f"written to {target}. Check the database itself: "
                f"sqlite3 {shlex.quote(str(source))} 'PRAGMA integrity_check'"
            )
        _sync(partial)
        os.replace(partial, target)
        _sync(target.parent)
    finally:
        for leftover in (partial, Path(f"{partial}-journal")):
            leftover.unlink(missing_ok=True)
    return SqliteBackup(
        path=target,
        source=source,
        size=target.stat().st_size,
        seconds=time.perf_counter() - started,
        revision=revision,
        records=records,
        integrity=integrity,
    )


def _source_file(engine: sa.Engine) -> Path:
    if engine.dialect.name != "sqlite":
        raise ConflictError("only a SQLite database is copied this way; use pg_dump")
    database = engine.url.database
    if not database or database == ":memory:":
        raise ConflictError("the database is in memory: there is no file to back up")
    source = Path(database)
    if not source.is_file():
        raise NotFoundError(f"there is no database at {source}")
    return source


def _check_target(source: Path, target: Path, *, overwrite: bool) -> None:
    own = source.resolve()
    if target.resolve() in (own, *(Path(f"{own}-{end}") for end in ("wal", "shm", "journal"))):
        _refuse(target, "this is the database itself: give another file to copy it to")
    if not target.parent.is_dir():
        folder = shlex.quote(str(target.parent))
        _refuse(target, f"the folder {target.parent} does not exist: mkdir -p {folder} first")
    if target.is_dir():
        _refuse(target, "this is a folder: give the name of a file in it")
    if target.exists() and not overwrite:
        _refuse(
            target,
            "the file exists: give a new name, or add --overwrite to replace it once the new "
            "copy is complete",
        )


def _refuse(target: Path, message: str) -> NoReturn:
    raise InvalidInputError("the backup", [Problem(str(target), message)])


def _integrity(copy: sqlite3.Connection) -> str:
    found = [str(row[0]) for row in copy.execute("PRAGMA integrity_check(10)")]
    return "ok" if found == ["ok"] else "; ".join(found)


def _revision(copy: sqlite3.Connection) -> str | None:
    try:
        row = copy.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # a database never migrated
        return None
    return None if row is None else str(row[0])


def _records(copy: sqlite3.Connection) -> int:
    try:
        return int(copy.execute("SELECT count(*) FROM records").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _sync(path: Path) -> None:
    """fsync a file, or a folder (so that a rename in it is on disk)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _libpq_url(database_url: str) -> str:
    """The PostgreSQL URL as libpq tools take it: no SQLAlchemy driver, no password."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ConflictError(f"not a PostgreSQL URL: {url.render_as_string(hide_password=True)}")
    bare = URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    return bare.render_as_string(hide_password=False)


def pg_dump_command(database_url: str, target: str) -> str:
    """The pg_dump command that backs up the database of `database_url` to `target` (custom
    format: compressed, restored with pg_restore), without the URL's password (pg_dump reads it
    from PGPASSWORD or ~/.pgpass)."""
    return shlex.join(["pg_dump", "--format=custom", f"--file={target}", _libpq_url(database_url)])


def pg_restore_command(database_url: str, source: str) -> str:
    """The pg_restore command that loads `source` (made by pg_dump_command) into the database of
    `database_url`, replacing what it holds."""
    return shlex.join(
        [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            f"--dbname={_libpq_url(database_url)}",
            source,
        ]
    )
