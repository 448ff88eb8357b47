"""Template filters that format dates and numbers in the record's locale (Babel), and how an
empty value shows.

    {{ record.event_date | date }}            1 mars 2026            (fr_FR, "medium")
    {{ record.event_date | date('long') }}    1. März 2026           (de_DE)
    {{ record.starts_at | datetime }}         Mar 1, 2026, 6:30:00 PM (en_US, in the flow's zone)
    {{ record.amount | number }}              1 234,5
    {{ record.amount | currency('EUR') }}     1.234,50 €
    {{ record.first_name | default('ami') }}  the default when the field is empty

The locale is the first that Babel knows of: the `locale` argument of the filter, the record's
`locale` field, the template's or flow's `locale`, then `DEFAULT_LOCALE`. An unknown locale never
fails a render (it falls through to the next); one written in a flow or a template is refused
when it is validated. A format is short, medium, long, full or a Babel pattern of at most
`MAX_PATTERN_CHARS` characters. An empty value (None or "") formats as empty text.

Babel is imported by the filters that use it (babel.dates alone takes 150 ms to import, which
`crmflow flows validate` and every template without a date would pay otherwise).

Pure: the render passes its locale and time zone in (`formatting`); nothing here reads a clock
or a file other than Babel's own locale data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2.runtime import Undefined

if TYPE_CHECKING:
    from babel import Locale

__all__ = [
    "DEFAULT_LOCALE",
    "FORMAT_FILTERS",
    "MAX_PATTERN_CHARS",
    "check_currency",
    "check_format",
    "check_locale",
    "empty_as_text",
    "end_formatting",
    "is_empty",
    "locale_problem",
    "start_formatting",
]

DEFAULT_LOCALE = "en"
MAX_PATTERN_CHARS = 64
MAX_LOCALE_CHARS = 35
FORMAT_NAMES = ("short", "medium", "long", "full")
_LOCALE_SHAPE = re.compile(r"^[A-Za-z]{2,8}([_-][A-Za-z0-9]{1,8}){0,4}$")
_CURRENCY_SHAPE = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class _Formatting:
    locales: tuple[str | None, ...]
    zone: tzinfo


_CURRENT: ContextVar[_Formatting | None] = ContextVar("crmflow_formatting", default=None)


def start_formatting(locales: tuple[str | None, ...], zone: tzinfo | None) -> Token[Any]:
    """Until `end_formatting`: the filters format in the first of `locales` Babel knows (else
    the default), date-times in `zone` (else UTC). A render calls both, around its output."""
    return _CURRENT.set(_Formatting(locales, zone or UTC))


def end_formatting(token: Token[Any]) -> None:
    _CURRENT.reset(token)


def is_empty(value: Any) -> bool:
    return value is None or isinstance(value, Undefined) or value == ""


def empty_as_text(value: Any) -> Any:
    """The environment's `finalize`: an empty field shows as empty text, never as "None"."""
    return "" if value is None else value


@lru_cache(maxsize=256)
def _parsed_locale(name: str) -> Locale | None:
    if len(name) > MAX_LOCALE_CHARS or not _LOCALE_SHAPE.match(name):
        return None
    from babel import Locale, UnknownLocaleError  # noqa: PLC0415 - see the module docstring

    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def locale_problem(name: Any) -> str | None:
    """Why `name` is not a locale Babel knows (None: it is one)."""
    if not isinstance(name, str) or _parsed_locale(name) is None:
        return f"{name!r} is not a locale crmflow knows (write it as fr, fr_FR, de_DE, en_US...)"
    return None


def check_locale(name: Any) -> None:
    problem = locale_problem(name)
    if problem is not None:
        raise ValueError(problem)


def check_format(fmt: Any) -> None:
    if not isinstance(fmt, str) or not fmt.strip():
        raise ValueError(f"the format {fmt!r} is not one of {', '.join(FORMAT_NAMES)}")
    if fmt not in FORMAT_NAMES and len(fmt) > MAX_PATTERN_CHARS:
        raise ValueError(
            f"the format pattern is longer than {MAX_PATTERN_CHARS} characters "
            f"(use {', '.join(FORMAT_NAMES)} or a shorter pattern)"
        )


def check_currency(code: Any) -> None:
    if not isinstance(code, str) or not _CURRENCY_SHAPE.match(code):
        raise ValueError(f"{code!r} is not a currency code (three capital letters: EUR, USD...)")


def _locale(given: Any) -> Locale:
    if given is not None:
        check_locale(given)
    current = _CURRENT.get()
    candidates = (given, *(current.locales if current else ()), DEFAULT_LOCALE)
    for name in candidates:
        if isinstance(name, str) and name:
            found = _parsed_locale(name)
            if found is not None:
                return found
    raise ValueError("no locale")  # pragma: no cover - the default is always known


def _zone() -> tzinfo:
    current = _CURRENT.get()
    return current.zone if current else UTC


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a date or date-time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"{value!r} is not a date or date-time")


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.astimezone(_zone()).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date") from None
    return _as_datetime(value).astimezone(_zone()).date()


def _as_number(value: Any) -> int | float | Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, (int, float, Decimal)):
        return value
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
    raise ValueError(f"{value!r} is not a number")


def date_filter(value: Any, format: str = "medium", locale: str | None = None) -> str:
    if is_empty(value):
        return ""
    check_format(format)
    from babel.dates import format_date  # noqa: PLC0415 - see the module docstring

    return str(format_date(_as_date(value), format=format, locale=_locale(locale)))


def datetime_filter(value: Any, format: str = "medium", locale: str | None = None) -> str:
    if is_empty(value):
        return ""
    check_format(format)
    from babel.dates import format_datetime  # noqa: PLC0415 - see the module docstring

    moment = _as_datetime(value)
    return str(format_datetime(moment, format=format, tzinfo=_zone(), locale=_locale(locale)))


def time_filter(value: Any, format: str = "short", locale: str | None = None) -> str:
    if is_empty(value):
        return ""
    check_format(format)
    from babel.dates import format_time  # noqa: PLC0415 - see the module docstring

    moment = _as_datetime(value).astimezone(_zone())
    return str(format_time(moment, format=format, tzinfo=_zone(), locale=_locale(locale)))


def number_filter(value: Any, locale: str | None = None) -> str:
    if is_empty(value):
        return ""
    from babel.numbers import format_decimal  # noqa: PLC0415 - see the module docstring

    return str(format_decimal(_as_number(value), locale=_locale(locale)))


def currency_filter(value: Any, currency: str = "EUR", locale: str | None = None) -> str:
    if is_empty(value):
        return ""
    check_currency(currency)
    from babel.numbers import format_currency  # noqa: PLC0415 - see the module docstring

    return str(format_currency(_as_number(value), currency, locale=_locale(locale)))


def default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`, which also replaces an empty field (None or ""), not only a missing
    name; with `boolean=true`, any false value (0, an empty list) as Jinja's does."""
    if is_empty(value) or (boolean and not value):
        return default_value
    return value


FORMAT_FILTERS: dict[str, Callable[..., Any]] = {
    "date": date_filter,
    "datetime": datetime_filter,
    "time": time_filter,
    "number": number_filter,
    "currency": currency_filter,
    "default": default_filter,
    "d": default_filter,
}
