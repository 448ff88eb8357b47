"""CRMFLOW_DATABASE_URL is checked before anything opens it: the forms crmflow takes, and a
refusal that says which forms those are (never echoing the URL, which may hold a password)."""

from __future__ import annotations

import pytest

from crmflow.database_url import checked_database_url
from crmflow.settings import Settings


@pytest.mark.parametrize(
    ("given", "taken"),
    [
        ("sqlite:///var/crmflow.db", "sqlite:///var/crmflow.db"),
        ("sqlite:////abs/path.db", "sqlite:////abs/path.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///x.db"),
        ("postgresql://u:p@h:5432/d", "postgresql://u:p@h:5432/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgres://u:p@h/d", "postgresql://u:p@h/d"),  # as many hosts spell it
        ("postgres+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("  sqlite:///x.db\n", "sqlite:///x.db"),
    ],
)
def test_the_urls_crmflow_opens(given: str, taken: str) -> None:
    assert checked_database_url(given) == taken


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("/tmp/crm.db", "a path is not a database URL: write sqlite:/// before it"),
        ("not a url", "is not a database URL; use sqlite:///"),
        ("mysql://root:secret@localhost/crm", "runs on SQLite or PostgreSQL, not 'mysql'"),
        ("postgresql+asyncpg://u:secret@h/d", "the driver 'asyncpg' is not one crmflow ships"),
        ("sqlite+foo:///x.db", "the driver 'foo' is not one crmflow ships for sqlite"),
    ],
)
def test_a_mistyped_url_is_refused_with_the_forms_taken(given: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        checked_database_url(given)
    assert says in str(caught.value)
    assert "secret" not in str(caught.value)


def test_settings_take_the_checked_url() -> None:
    assert Settings(database_url="postgres://u@h/d").database_url == "postgresql://u@h/d"
    with pytest.raises(ValueError, match="runs on SQLite or PostgreSQL"):
        Settings(database_url="mysql://root@localhost/crm")
