"""The few settings a command that opens nothing reads (`crmflow flows validate`), without
building `crmflow.settings.Settings`.

Building Settings imports pydantic-settings, which imports asyncio and ssl: about 50 ms, a
tenth of what `flows validate` may take (bench/bench_cli_start.py). These three values are
read here from the same places, in the same order: the environment (`CRMFLOW_...`, any case)
first, then the `.env` file of the current folder (python-dotenv's parser, as pydantic-settings
uses), then the defaults of Settings. A value that is not plainly valid (`yes` for a flag,
digits for a number) is not interpreted here: `read_offline_settings` answers None, and the
caller builds Settings, which accepts it or refuses it with its own message.
tests/unit/test_offline_settings.py checks that both read the same.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crmflow.database_url import checked_database_url

if TYPE_CHECKING:
    from crmflow.settings import Settings

__all__ = ["OfflineSettings", "read_offline_settings"]

PREFIX = "crmflow_"
ENV_FILE = Path(".env")
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class OfflineSettings:
    database_url: str
    allow_sql_actions: bool
    max_document_chars: int

    @classmethod
    def of(cls, settings: Settings) -> OfflineSettings:
        return cls(settings.database_url, settings.allow_sql_actions, settings.max_document_chars)


# Settings' defaults (a unit test compares them with Settings()).
DEFAULTS = OfflineSettings(
    database_url="sqlite:///var/crmflow.db", allow_sql_actions=False, max_document_chars=1_000_000
)


def _given() -> dict[str, str | None]:
    """The CRMFLOW_ values of the .env file and of the environment (which wins), by lower-case
    name without the prefix, as pydantic-settings reads them (case_sensitive=False)."""
    given: dict[str, str | None] = {}
    if ENV_FILE.is_file():
        # python-dotenv comes with pydantic-settings, which reads .env files with it.
        from dotenv import dotenv_values

        given.update(
            (key.lower()[len(PREFIX) :], value)
            for key, value in dotenv_values(ENV_FILE).items()
            if key.lower().startswith(PREFIX)
        )
    given.update(
        (key.lower()[len(PREFIX) :], value)
        for key, value in os.environ.items()
        if key.lower().startswith(PREFIX)
    )
    return given


def read_offline_settings() -> OfflineSettings | None:
    """The settings as Settings would read them, or None when one is not plainly valid."""
    given = _given()
    url = given.get("database_url", DEFAULTS.database_url)
    flag = given.get("allow_sql_actions", str(DEFAULTS.allow_sql_actions).lower())
    chars = given.get("max_document_chars", str(DEFAULTS.max_document_chars))
    if url is None or flag is None or chars is None:  # a .env line without `=`
        return None
    if flag not in _TRUE | _FALSE or not _DIGITS.fullmatch(chars) or int(chars) <= 0:
        return None
    try:
        url = checked_database_url(url)
    except ValueError:  # Settings refuses it, with its message
        return None
    return OfflineSettings(url, flag in _TRUE, int(chars))
