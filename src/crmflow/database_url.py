"""CRMFLOW_DATABASE_URL checked before anything opens it: a mistyped URL is refused with the
forms crmflow takes, not a traceback from SQLAlchemy. Its own module, free of pydantic, so that
`crmflow.cli.offline_settings` (commands that must start fast) checks it the same way."""

from __future__ import annotations

import re

__all__ = ["checked_database_url"]

_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_FORMS = "sqlite:///path/to/crmflow.db or postgresql://user:password@host:5432/database"
_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg", "psycopg2")}


def checked_database_url(value: str) -> str:
    """CRMFLOW_DATABASE_URL checked: a SQLite or PostgreSQL URL SQLAlchemy can open with the
    drivers crmflow ships. `postgres://` (as many hosts spell it) is read as `postgresql://`.
    ValueError says which forms are taken, never the value (it may hold a password)."""
    value = value.strip()
    found = _URL_SCHEME.match(value)
    if found is None:
        if value.endswith((".db", ".sqlite", ".sqlite3")):
            raise ValueError(
                f"a path is not a database URL: write sqlite:/// before it (four slashes for "
                f"an absolute path, sqlite:////var/lib/crmflow.db); the forms are {_URL_FORMS}"
            )
        raise ValueError(f"is not a database URL; use {_URL_FORMS}")
    backend, _, driver = found.group(1).lower().partition("+")
    if backend == "postgres":
        backend = "postgresql"
        value = "postgresql" + (f"+{driver}" if driver else "") + value[found.end(1) :]
    if backend not in _DRIVERS:
        raise ValueError(f"crmflow runs on SQLite or PostgreSQL, not {backend!r}; use {_URL_FORMS}")
    if driver not in _DRIVERS[backend]:
        raise ValueError(
            f"the driver {driver!r} is not one crmflow ships for {backend}: leave it out "
            f"(a URL that starts {backend}://) or use {backend}+{_DRIVERS[backend][1]}"
        )
    return value
