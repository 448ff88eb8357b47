"""Shared fixtures: a migrated database on SQLite and on PostgreSQL, a frozen clock, actors.

PostgreSQL tests use the server on 127.0.0.1:5432 (user postgres, trust auth). Each test session
creates its own throw-away database there, so parallel runs do not collide. When no server answers
the tests skip with the reason; with CRMFLOW_REQUIRE_POSTGRES=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import html
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from crmflow.services import users, web_sessions
from crmflow.services.context import Actor, Context
from crmflow.services.setup import upgrade_database
from crmflow.services.users import actor_by_username, create_user
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.settings import Settings
from crmflow.store.database import create_db_engine
from crmflow.store.schema import metadata
from crmflow.testing import FrozenClock as FrozenClock  # noqa: PLC0414 (tests import it here)

PG_ADMIN_URL = os.environ.get(
    "CRMFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("CRMFLOW_REQUIRE_POSTGRES") == "1"
FROZEN_NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def postgres_unavailable_reason() -> str | None:
    try:
        engine = create_db_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} does not answer: {type(exc).__name__}: {exc}"
    return None


def skip_or_fail_without_postgres() -> None:
    reason = postgres_unavailable_reason()
    if reason is None:
        return
    if REQUIRE_POSTGRES:
        pytest.fail(f"CRMFLOW_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session; dropped at the end."""
    skip_or_fail_without_postgres()
    name = f"crmflow_test_{uuid.uuid4().hex[:10]}"
    admin = create_db_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# Argon2 with its real cost takes ~0.2 s of CPU per hash and per check; the suite makes hundreds
# (users in fixtures, sign-ins, the browser's demo users). Tests hash with the same algorithm at
# the lowest cost instead, except those marked `real_password_hash` (they check the hashing).
_CHEAP_PASSWORD_HASH = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1),))


def _use_password_hash(hasher: PasswordHash) -> None:
    users._password_hash = hasher
    users._dummy_hash.cache_clear()  # the dummy hash must have the same cost as real ones


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hash() -> Iterator[None]:
    real = users._password_hash
    _use_password_hash(_CHEAP_PASSWORD_HASH)
    yield
    _use_password_hash(real)


@pytest.fixture(autouse=True)
def real_password_hash(request: pytest.FixtureRequest) -> Iterator[None]:
    """The services' own argon2 cost, for tests marked `real_password_hash`."""
    if request.node.get_closest_marker("real_password_hash") is None:
        yield
        return
    _use_password_hash(PasswordHash.recommended())
    yield
    _use_password_hash(_CHEAP_PASSWORD_HASH)


def _database_url(backend: str, request: pytest.FixtureRequest, tmp: Path) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp / 'crmflow.db'}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def migrated_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database migrated once per session per backend (tests clean it after themselves)."""
    backend = str(request.param)
    url = _database_url(backend, request, tmp_path_factory.mktemp(backend))
    settings = Settings(database_url=url, timezone="Europe/Paris")
    ctx = Context.from_settings(settings)
    upgrade_database(ctx)
    ctx.engine.dispose()
    yield url


# Sequences used since the last wipe start again from their first value, as after a migration.
_RESTART_USED_SEQUENCES = """
SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, start_value, false)
FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL
"""


def _wipe(engine: sa.Engine) -> None:
    # DELETE, children first, rather than TRUNCATE: PostgreSQL's TRUNCATE of every table took
    # 0.7-0.8 s per test (new files for each table), DELETE of a test's few rows a few ms.
    # Plain SQL: a test's engine is new, so SQLAlchemy would compile each DELETE again (7 of 15 ms).
    with engine.begin() as conn:
        for t in reversed(metadata.sorted_tables):
            conn.exec_driver_sql(f'DELETE FROM "{t.name}"')
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(_RESTART_USED_SEQUENCES))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(FROZEN_NOW)


@pytest.fixture
def ctx(migrated_url: str, clock: FrozenClock) -> Iterator[Context]:
    """A Context on a clean, migrated database (SQLite and PostgreSQL), with a frozen clock."""
    settings = Settings(database_url=migrated_url, timezone="Europe/Paris")
    context = Context.from_settings(settings)
    context.clock = clock
    _wipe(context.engine)
    upgrade_database(context)  # built-in types and the system user again
    yield context
    context.engine.dispose()


@pytest.fixture
def postgres_ctx(postgres_url: str, clock: FrozenClock) -> Iterator[Context]:
    """Like `ctx`, on PostgreSQL only: for what needs many writers at once."""
    context = Context.from_settings(Settings(database_url=postgres_url, timezone="Europe/Paris"))
    context.clock = clock
    upgrade_database(context)
    _wipe(context.engine)
    upgrade_database(context)
    yield context
    context.engine.dispose()


@pytest.fixture
def backend(ctx: Context) -> str:
    return ctx.engine.dialect.name


@pytest.fixture
def admin(ctx: Context) -> Actor:
    return actor_by_username(ctx, "system")


def make_user(ctx: Context, username: str, role: str) -> Actor:
    system = actor_by_username(ctx, "system")
    create_user(ctx, system, username=username, role=role, password="password123")
    return actor_by_username(ctx, username)


def page_as(ctx: Context, client: TestClient, username: str, password: str, path: str) -> str:
    """The web page `path` as `username` sees it, signed in for this one request: its text,
    unescaped (the client's cookies are cleared again)."""
    signed = web_sessions.sign_in(ctx, username, password)
    client.cookies.set(SESSION_COOKIE, signed.token)
    try:
        page = client.get(path)
    finally:
        client.cookies.clear()
    assert page.status_code == 200, page.text
    return html.unescape(page.text)


@pytest.fixture
def manager(ctx: Context) -> Actor:
    return make_user(ctx, "maria", "manager")


@pytest.fixture
def member(ctx: Context) -> Actor:
    return make_user(ctx, "andrei", "member")
