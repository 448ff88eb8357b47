"""SQLite's WAL checkpoints, run beside the writers rather than inside their commits.

On a WAL database every commit appends to the `-wal` file; a checkpoint copies those pages back
into the database file. By default SQLite runs one inside whichever commit takes the WAL past
1,000 pages, and that writer waits for it: a worker's batch writes hundreds of pages, so every
few batches one commit also copies the WAL into the database (a tenth of a busy worker's time).

Here each commit only pokes a thread of the process, which checkpoints a moment later on a
connection of its own (PASSIVE: it copies what no reader still needs and never waits for a
lock), while the writer goes on with its next batch. The thread ends after a while without
commits and starts again at the next one. SQLite's own checkpoint stays as a safety net, at a
far larger WAL (`INLINE_CHECKPOINT_PAGES`), should this thread ever fall behind.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT_EVERY",
    "IDLE_AFTER",
    "INLINE_CHECKPOINT_PAGES",
    "CheckpointedConnection",
    "WalCheckpointer",
    "checkpointed",
]

logger = logging.getLogger(__name__)

# Seconds between a commit and the checkpoint it asks for: the commits of that moment (a busy
# worker commits a batch every few tens of milliseconds) share one checkpoint.
CHECKPOINT_EVERY = 0.5
# Seconds without a commit after which the thread ends (a process that only reads keeps none).
IDLE_AFTER = 10.0
# The WAL size, in pages of 4 KiB, at which a commit still checkpoints by itself (SQLite's
# `wal_autocheckpoint`; its default is 1,000): 40 MB, reached only if this thread falls behind.
INLINE_CHECKPOINT_PAGES = 10_000


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite database at `path` in a thread of its own, a moment
    after each `poke` (one per commit)."""

    def __init__(self, path: str | Path) -> None:
        # Made absolute now, as SQLite opened it: a later change of directory changes nothing.
        self.path = Path(path).resolve()
        self.checkpoints = 0  # how many this process has run (tests, diagnostics)
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # The engine's connections that are open, and a lock that a checkpoint holds while it
        # runs: `closed` waits for it, so once the last connection is closed no checkpoint is
        # running and none starts (the database may be removed right after).
        self._open = 0
        self._using = threading.RLock()  # reentrant: a pool connection may be collected here

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def opened(self) -> None:
        """One more of the engine's connections is open."""
        with self._using:
            self._open += 1

    def closed(self) -> None:
        """One of the engine's connections was closed (after any checkpoint under way)."""
        with self._using:
            self._open = max(0, self._open - 1)

    def poke(self) -> None:
        """Ask for a checkpoint soon; starts the thread if it is not running."""
        self._wanted.set()
        if self.running:
            return
        with self._lock:
            if self.running:
                return
            self._thread = threading.Thread(
                target=self._run, name="crmflow-wal-checkpoints", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            if not self._wanted.wait(IDLE_AFTER):
                with self._lock:
                    # A poke between the wait and here found the thread alive and started none:
                    # look again under the lock, which `poke` takes before it starts a thread.
                    if not self._wanted.is_set():
                        self._thread = None
                        return
            time.sleep(CHECKPOINT_EVERY)
            self._wanted.clear()
            self._checkpoint()

    def _checkpoint(self) -> None:
        """One PASSIVE checkpoint, on a connection opened for it (the thread holds none between
        checkpoints, so nothing of it stays open when the process ends); none once the engine
        has closed its connections."""
        with self._using:
            if self._open:
                self._checkpoint_now()

    def _checkpoint_now(self) -> None:
        try:
            # mode=rw: never create the database if it was removed meanwhile.
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=rw", uri=True)
        except sqlite3.Error as exc:
            logger.debug("WAL checkpoint of %s not run: %s", self.path, exc)
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:
            # The next commit asks again; SQLite's own checkpoint remains the safety net.
            logger.debug("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()


class CheckpointedConnection(sqlite3.Connection):
    """A sqlite3 connection that pokes its database's checkpointer after each commit."""

    checkpointer: WalCheckpointer | None = None

    def commit(self) -> None:
        super().commit()
        if self.checkpointer is not None:
            self.checkpointer.poke()


def checkpointed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`create_engine` arguments whose connections are CheckpointedConnections."""
    connect_args = {**kwargs.get("connect_args", {}), "factory": CheckpointedConnection}
    return {**kwargs, "connect_args": connect_args}
