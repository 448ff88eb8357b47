"""Opening the database: one SQLAlchemy engine per URL, with the per-backend settings we rely on."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from crmflow.store.wal_checkpoints import INLINE_CHECKPOINT_PAGES, WalCheckpointer, checkpointed

# The handles services pass around without building SQL themselves: services name these types
# (from here) and call the store's functions; only `crmflow.store` imports SQLAlchemy.
Connection = sa.Connection
Engine = sa.Engine
Row = sa.Row
# The errors services may catch from the store's statements: the database did not answer (or
# refused), and a unique index refused a row (a name taken already).
DatabaseError = sa.exc.SQLAlchemyError
IntegrityError = sa.exc.IntegrityError
# The database did not answer or went away for a moment (what a worker's round retries).
OperationalError = sa.exc.OperationalError
# A statement the database refused as wrong for its schema (a table missing: not migrated).
ProgrammingError = sa.exc.ProgrammingError

__all__ = [
    "Connection",
    "DatabaseError",
    "Engine",
    "IntegrityError",
    "OperationalError",
    "ProgrammingError",
    "Row",
    "as_text",
    "connection_lost",
    "create_db_engine",
    "data_version",
    "is_postgres",
    "is_sqlite",
    "json_text",
    "json_value",
    "printable_url",
    "read_connection",
    "read_transaction",
]


def as_text(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[str]:
    """A JSON column read as its text: pydantic and orjson parse text several times faster than
    the driver's json.loads followed by validating Python objects (a batch reads hundreds)."""
    if dialect == "postgresql":
        return sa.cast(column, sa.Text)
    return sa.type_coerce(column, sa.Text)


def json_text(value: Any) -> str:
    """JSON columns are written with orjson (several times faster than `json.dumps` for the
    documents a worker's batch writes); what orjson refuses (integers beyond 64 bits) falls back
    to the standard library, so that nothing that used to be stored is refused now. Keys that
    are not strings (rare) are written as `json.dumps` writes them, on a second try: the option
    that allows them costs a quarter more on every document."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        pass
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


# 19 digits or more in a row may be an integer beyond 64 bits, which orjson would read as a
# float. They are looked for in the UTF-8 bytes with every ASCII digit made a 9 and every other
# byte a space: a search for nineteen 9s, a third of the time of a regular expression (a worker
# reads a record's JSON for each record it moves).
_DIGITS_AS_NINES = bytes(ord("9") if chr(b) in "0123456789" else ord(" ") for b in range(256))
_LONG_NUMBER = b"9" * 19


def json_value(text: str | bytes) -> Any:
    """A JSON document read back: orjson, except for the rare document holding a number that
    orjson would round (the standard library keeps such integers exact)."""
    raw = text if isinstance(text, bytes) else text.encode(errors="surrogatepass")
    # `find` rather than `in`: bytes' `in` first tries its operand as an integer (a byte), and
    # raises and clears a TypeError for every document before it searches.
    if raw.translate(_DIGITS_AS_NINES).find(_LONG_NUMBER) != -1:
        return json.loads(raw)
    return orjson.loads(raw)


def _bound_as_null(value: None) -> None:
    """SQLite's adapter for None: the value itself, which the driver then binds as NULL."""
    return value


# The sqlite3 module binds an int, a float or a str as it is, but looks for an adapter for any
# other value, None included: it finds none, raises and clears two AttributeErrors (the
# protocol's `__adapt__`, the value's `__conform__`), then binds NULL: half a microsecond each.
# A batch binds thousands of NULLs (an owner nobody set, a run not finished); registered, the
# adapter is found at the first look. Process-wide, and the same NULL for every connection.
sqlite3.register_adapter(type(None), _bound_as_null)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module (which would only BEGIN at the first
    # write, leaving reads outside the transaction); _sqlite_begin issues BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the API) go on while the single writer commits; foreign keys are off by
    # default in SQLite; a busy timeout makes a second writer wait instead of failing at once.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # A commit checkpoints the WAL by itself only if the checkpointer's thread fell far behind
    # (store.wal_checkpoints; in-memory databases have neither WAL nor checkpointer).
    cursor.execute(f"PRAGMA wal_autocheckpoint={INLINE_CHECKPOINT_PAGES}")
    cursor.close()


# The execution option that marks a connection opened by `read_connection`.
_READ_ONLY = "crmflow_read_only"


def _sqlite_begin(conn: sa.Connection) -> None:
    options = conn.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":
        # Asked for: no transaction, each statement is its own (an idle worker's look at
        # `store.wakeups.work_signs`: one statement, atomic by itself).
        return
    if options.get(_READ_ONLY):
        # A deferred BEGIN on a WAL database is a read transaction: one consistent snapshot,
        # and no lock that a writer holds (a worker's batch) can make it wait.
        conn.exec_driver_sql("BEGIN")
        return
    # IMMEDIATE takes the write lock when the transaction starts, so a read-then-write
    # (update a record, edit a flow) cannot interleave with another writer and lose its update:
    # the second transaction waits (busy_timeout) and then reads what the first committed.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def read_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for reading only: what every GET, count and preview uses.

    On SQLite its transaction is a deferred BEGIN, which takes no lock, so readers are never
    blocked by a writer (while the worker's batch holds the write lock, the API still answers);
    the connection is also `query_only`, so a write slipped into a read path fails at once
    ("attempt to write a readonly database") instead of upgrading the snapshot to a write,
    which could lose an update that BEGIN IMMEDIATE would have serialised. On PostgreSQL
    readers never wait for writers anyway (MVCC): a plain connection."""
    with engine.connect() as conn, read_transaction(conn):
        yield conn


@contextmanager
def read_transaction(conn: sa.Connection) -> Iterator[None]:
    """One read transaction on `conn`, as `read_connection` has it; afterwards `conn` begins
    write transactions again (the worker reads, then writes, on one connection)."""
    if not is_sqlite(conn):
        with conn.begin():
            yield
        return
    conn.execution_options(**{_READ_ONLY: True})
    driver = conn.connection.driver_connection
    driver.execute("PRAGMA query_only=ON")  # type: ignore[union-attr]
    try:
        with conn.begin():
            yield
    finally:
        conn.execution_options(**{_READ_ONLY: False})
        # The connection goes back to the pool, where a writer may take it next.
        if not conn.invalidated:
            driver.execute("PRAGMA query_only=OFF")  # type: ignore[union-attr]


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the database went away (the connection was invalidated): nothing else
    will work either, so the caller stops and its loop retries, instead of carrying on with the
    next flow or trigger as it does when one of them fails."""
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def data_version(conn: sa.Connection) -> int | None:
    """SQLite: a number that differs from the one this connection read in an earlier
    transaction when, and only when, another connection has committed since (None elsewhere).
    Read it inside each transaction, after its first read."""
    if not is_sqlite(conn):
        return None
    return int(conn.exec_driver_sql("PRAGMA data_version").scalar_one())


def create_db_engine(url: str, **kwargs: Any) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        checkpointer = None
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            checkpointer = WalCheckpointer(database)
            kwargs = checkpointed(kwargs)
        engine = sa.create_engine(url, **_json_options(kwargs))
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        if checkpointer is not None:
            _checkpoint_beside(engine, checkpointer)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # We ship psycopg 3; accept plain postgresql:// URLs.
        url = str(parsed.set(drivername="postgresql+psycopg"))
    return sa.create_engine(url, pool_pre_ping=True, **_json_options(kwargs))


def _checkpoint_beside(engine: sa.Engine, checkpointer: WalCheckpointer) -> None:
    """Each connection of `engine` pokes `checkpointer` after its commits, and the checkpointer
    knows how many are open: once `engine.dispose()` has closed them all it opens the database
    no more (a caller may remove the file at once, as a test or a bench does)."""

    def give(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.checkpointer = checkpointer
        checkpointer.opened()

    def take_back(dbapi_connection: Any, _record: Any = None) -> None:
        if getattr(dbapi_connection, "checkpointer", None) is checkpointer:
            checkpointer.closed()

    sa.event.listen(engine, "connect", give)
    sa.event.listen(engine, "close", take_back)
    sa.event.listen(engine, "close_detached", take_back)


def _json_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"json_serializer": json_text, "json_deserializer": json_value, **kwargs}


def is_sqlite(engine: sa.Engine | sa.Connection) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgres(engine: sa.Engine | sa.Connection) -> bool:
    return engine.dialect.name == "postgresql"


def printable_url(url: str) -> str:
    """The database URL as it may be printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)
