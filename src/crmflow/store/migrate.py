"""Applying Alembic migrations programmatically (`crmflow db upgrade`), on SQLite and PostgreSQL."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

__all__ = ["alembic_config", "current_revision", "head_revision", "is_known", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: sa.Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


@cache
def _scripts() -> ScriptDirectory:
    """The migrations this crmflow ships, read once per process: Alembic loads every migration
    file each time a ScriptDirectory is made (31 files: 10 ms, or 40 ms without bytecode)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str | None:
    return _scripts().get_current_head()


def is_known(revision: str) -> bool:
    """Whether this crmflow's migrations include `revision` (False: a newer crmflow wrote it)."""
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def has_tables(engine: sa.Engine) -> bool:
    """Whether the database holds any table at all (a new or empty one holds none)."""
    return bool(sa.inspect(engine).get_table_names())
