"""`flows validate` reads the database URL and the document limits without building Settings
(cli/offline_settings.py): it must read what Settings reads, from the environment and .env,
or leave a value it does not plainly understand to Settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crmflow.cli.offline_settings import DEFAULTS, OfflineSettings, read_offline_settings
from crmflow.settings import Settings

NAMES = ("CRMFLOW_DATABASE_URL", "CRMFLOW_ALLOW_SQL_ACTIONS", "CRMFLOW_MAX_DOCUMENT_CHARS")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CRMFLOW_ variable of the test run, and a folder without .env."""
    for name in list(os.environ):
        if name.upper().startswith("CRMFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _as_settings_read_them() -> OfflineSettings:
    return OfflineSettings.of(Settings())


def test_the_defaults_are_those_of_settings() -> None:
    assert _as_settings_read_them() == DEFAULTS
    assert read_offline_settings() == DEFAULTS


@pytest.mark.parametrize(
    "given",
    [
        {"CRMFLOW_DATABASE_URL": "postgresql+psycopg://u@db/crm"},
        {"crmflow_database_url": "sqlite:///lower/case.db"},
        {"CRMFLOW_ALLOW_SQL_ACTIONS": "true", "CRMFLOW_MAX_DOCUMENT_CHARS": "42"},
        {"CRMFLOW_ALLOW_SQL_ACTIONS": "1", "CRMFLOW_MAX_DOCUMENT_CHARS": "0010"},
        {"CRMFLOW_ALLOW_SQL_ACTIONS": "off", "CRMFLOW_DATABASE_URL": "sqlite:///x.db"},
        {"CRMFLOW_ALLOW_SQL_ACTIONS": "yes", "CRMFLOW_TIMEZONE": "Nowhere/Land"},
    ],
)
def test_plain_values_from_the_environment_read_as_settings_reads_them(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str]
) -> None:
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    found = read_offline_settings()
    monkeypatch.delenv("CRMFLOW_TIMEZONE", raising=False)  # Settings would refuse it
    assert found == _as_settings_read_them() != DEFAULTS


def test_the_env_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "# local settings\n"
        "CRMFLOW_DATABASE_URL=sqlite:///from-dotenv.db\n"
        "export CRMFLOW_MAX_DOCUMENT_CHARS='77'\n"
        "CRMFLOW_ALLOW_SQL_ACTIONS=true\n"
        "OTHER=1\n"
    )
    monkeypatch.setenv("CRMFLOW_ALLOW_SQL_ACTIONS", "false")
    expected = OfflineSettings("sqlite:///from-dotenv.db", False, 77)
    assert read_offline_settings() == expected == _as_settings_read_them()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CRMFLOW_ALLOW_SQL_ACTIONS", "TRUE"),
        ("CRMFLOW_ALLOW_SQL_ACTIONS", "maybe"),
        ("CRMFLOW_MAX_DOCUMENT_CHARS", "0"),
        ("CRMFLOW_MAX_DOCUMENT_CHARS", "1_000"),
        ("CRMFLOW_MAX_DOCUMENT_CHARS", " 12"),
        ("CRMFLOW_MAX_DOCUMENT_CHARS", "9" * 5000),
    ],
)
def test_anything_else_is_left_to_settings(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Settings accepts some of these (TRUE, 1_000) and refuses others with its own message;
    the command line then builds Settings (State.offline)."""
    monkeypatch.setenv(name, value)
    assert read_offline_settings() is None


def test_a_dotenv_name_without_a_value_is_left_to_settings(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CRMFLOW_DATABASE_URL\n")
    assert read_offline_settings() is None
