"""SQLite's WAL checkpoints run beside the writers (store.wal_checkpoints): a commit returns
without copying the WAL into the database file, a thread of the process copies it a moment
later, and that thread ends when nothing is committed for a while."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from crmflow.store import wal_checkpoints
from crmflow.store.database import create_db_engine
from crmflow.store.wal_checkpoints import WalCheckpointer
from tests.integration.helpers import eventually

PAGE = 4096
ROWS = 2_000  # rows of about 4 KB: some 2,000 pages, twice SQLite's default checkpoint size


def _pages(path: Path) -> int:
    """The size of the database file itself (not its WAL), in pages."""
    return path.stat().st_size // PAGE


def _checkpointer(engine: sa.Engine) -> WalCheckpointer:
    with engine.connect() as conn:
        found = conn.connection.driver_connection.checkpointer  # type: ignore[union-attr]
    assert isinstance(found, WalCheckpointer)
    return found


def _write(engine: sa.Engine, first: int, count: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("insert into notes (id, body) values (:id, :body)"),
            [{"id": i, "body": "x" * 4000} for i in range(first, first + count)],
        )


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "crmflow.db"
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("create table notes (id integer primary key, body text)"))
    engine.dispose()
    return path


def test_a_large_commit_returns_before_the_checkpoint_which_follows_soon(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit of 2,000 pages would make SQLite copy the WAL into the database inside that
    commit; here the database file has not grown when the commit returns, and holds every row
    once the checkpointer has run."""
    monkeypatch.setattr(wal_checkpoints, "CHECKPOINT_EVERY", 2.0)
    engine = create_db_engine(f"sqlite:///{database}")
    before = _pages(database)
    _write(engine, 0, ROWS)
    assert _pages(database) == before, "the commit checkpointed the WAL itself"
    assert Path(f"{database}-wal").stat().st_size > ROWS * PAGE
    checkpointer = _checkpointer(engine)
    assert eventually(lambda: checkpointer.checkpoints >= 1, 10), "no checkpoint followed"
    assert _pages(database) >= before + ROWS
    engine.dispose()
    with sqlite3.connect(database) as conn:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        assert conn.execute("select count(*) from notes").fetchone() == (ROWS,)


def test_the_thread_ends_at_rest_and_starts_again_at_the_next_commit(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_checkpoints, "CHECKPOINT_EVERY", 0.05)
    monkeypatch.setattr(wal_checkpoints, "IDLE_AFTER", 0.3)
    engine = create_db_engine(f"sqlite:///{database}")
    checkpointer = _checkpointer(engine)
    assert not checkpointer.running, "started before anything was committed"
    _write(engine, 0, 10)
    assert checkpointer.running
    assert eventually(lambda: checkpointer.checkpoints == 1, 10)
    assert eventually(lambda: not checkpointer.running, 10), "the thread did not end at rest"
    _write(engine, 10, 10)
    assert checkpointer.running
    assert eventually(lambda: checkpointer.checkpoints == 2, 10)
    engine.dispose()


def test_a_database_removed_meanwhile_is_not_made_again(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpointer opens the database only if it exists: a file removed after the last
    commit (a test's temporary database, an operator's cleanup) is not created anew, empty."""
    monkeypatch.setattr(wal_checkpoints, "CHECKPOINT_EVERY", 0.3)
    engine = create_db_engine(f"sqlite:///{database}")
    checkpointer = _checkpointer(engine)
    _write(engine, 0, 10)
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    time.sleep(1.0)  # the checkpoint the commit asked for is due after 0.3 s
    assert not database.exists()
    assert checkpointer.checkpoints == 0


def test_once_the_engine_is_disposed_its_database_is_not_opened_again(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit's checkpoint still pending when the engine is disposed does not run: SQLite
    emptied the WAL as the last connection closed, and the folder can be removed at once (a
    checkpoint then would open the database again and leave `-wal` and `-shm` files in it)."""
    monkeypatch.setattr(wal_checkpoints, "CHECKPOINT_EVERY", 0.3)
    engine = create_db_engine(f"sqlite:///{database}")
    checkpointer = _checkpointer(engine)
    _write(engine, 0, 10)
    engine.dispose()
    time.sleep(1.0)  # the checkpoint the commit asked for was due after 0.3 s
    assert checkpointer.checkpoints == 0
    assert sorted(p.name for p in database.parent.iterdir()) == [database.name]
