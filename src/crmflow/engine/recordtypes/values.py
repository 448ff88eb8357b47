"""One field value checked and turned into its stored form, or a ValueError saying why not.

Values are normalised to the JSON shape they are stored in, chosen so that SQL comparisons work on
both backends: dates as `YYYY-MM-DD`, datetimes as UTC `YYYY-MM-DDTHH:MM:SSZ` (both compare
correctly as text), numbers as JSON numbers, booleans as JSON booleans, users and references as
integer ids.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from crmflow.engine.numbers import whole_number
from crmflow.engine.recordtypes.fields import (
    DEFAULT_MAX_FIELD_CHARS,
    MAX_ROW_ID,
    FieldDef,
    FieldType,
)
from crmflow.errors import shown

__all__ = [
    "Converter",
    "field_converter",
    "format_datetime",
    "normalise_email",
    "normalise_value",
    "parse_date",
    "parse_datetime",
    "text_refusal",
]

# Text no database stores the same way: NUL (PostgreSQL refuses it, SQLite keeps it) and lone
# UTF-16 surrogates (not characters: they cannot be encoded to UTF-8 at all).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
PHONE_PATTERN = re.compile(r"^\+?[0-9][0-9 ().\-]{3,30}$")
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on", "oui", "da", "si", "sì"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "off", "non", "nu"})
_SIMPLE_EMAIL = re.compile(
    r"^([A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})$"
)
_SPECIAL_USE_DOMAINS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})

Converter = Callable[[Any], Any]


def format_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime(DATETIME_FORMAT)


def parse_date(raw: object) -> date:
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a date as YYYY-MM-DD, got {shown(raw)}")


def parse_datetime(raw: object, zone: tzinfo) -> datetime:
    """A datetime from ISO text; one without an offset is read in `zone` (the organisation's)."""
    value: datetime | None = None
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            value = None
    if value is None:
        raise ValueError(
            f"expected a date and time as YYYY-MM-DDTHH:MM[:SS][+HH:MM], got {shown(raw)}"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def normalise_email(raw: str) -> str:
    """The stored form of an email address (domain lower-cased), or ValueError.

    email-validator takes ~40 us per address, which dominates a million-row import; plain ASCII
    addresses that match a strict pattern are normalised here the way email-validator would
    (a unit test checks they agree) and everything else goes to email-validator.
    """
    text = raw.strip()
    match = _SIMPLE_EMAIL.match(text)
    if match is not None and len(text) <= 254:
        local, domain = match.group(1), match.group(2).lower()
        tld = domain.rsplit(".", 1)[1]
        # The special-use names are all single labels, so checking the last label is enough.
        if len(local) <= 64 and "--" not in domain and tld not in _SPECIAL_USE_DOMAINS:
            return f"{local}@{domain}"
    # Imported here: email-validator compiles its patterns on import (25 ms), which every
    # command reading a record type (`crmflow flows validate`) would pay for otherwise.
    from email_validator import EmailNotValidError, validate_email  # noqa: PLC0415

    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{shown(raw)} is not a valid email address: {exc}") from None


def text_refusal(raw: str, max_chars: int = DEFAULT_MAX_FIELD_CHARS) -> str | None:
    """Why `raw` may not be stored as a field's text (too long, a NUL, a lone surrogate), or
    None. The common case costs two C-level scans: `isascii` is constant time, `in` a memchr."""
    if len(raw) > max_chars:
        return (
            f"is {len(raw):,} characters long; a field holds at most {max_chars:,} "
            "(the server's max_field_chars): shorten it or keep the text in a file elsewhere"
        )
    if "\x00" not in raw and (raw.isascii() or _UNSTORABLE.search(raw) is None):
        return None
    found = _UNSTORABLE.search(raw)
    assert found is not None
    char, at = found.group(), found.start() + 1
    if char == "\x00":
        return f"contains a NUL character (\\u0000) at character {at}: remove it"
    return (
        f"contains a lone UTF-16 surrogate (\\u{ord(char):04x}) at character {at}, which is not "
        "a character: send the text as valid UTF-8"
    )


def field_converter(
    fdef: FieldDef,
    *,
    zone: tzinfo,
    from_text: bool = False,
    max_chars: int = DEFAULT_MAX_FIELD_CHARS,
) -> Converter:
    """The function turning one non-empty value of `fdef` into its stored form (or ValueError).

    Text of any field is checked first (`text_refusal`): a choice, an email or a username that
    holds a NUL would otherwise reach the database, and a 60 MB value would be quoted whole in
    the error that refuses it."""
    convert = _converter(fdef, zone=zone, from_text=from_text, max_chars=max_chars)
    if fdef.type is FieldType.TEXT:
        return convert  # checks its text itself: the most common field, one call less

    def checked(raw: Any) -> Any:
        if type(raw) is str:
            refusal = text_refusal(raw, max_chars)
            if refusal is not None:
                raise ValueError(refusal)
        return convert(raw)

    return checked


def _converter(fdef: FieldDef, *, zone: tzinfo, from_text: bool, max_chars: int) -> Converter:
    """The bare converter of one field type (one small factory per type, decided once per field,
    so a bulk import does not dispatch on the type for every value)."""
    kind = fdef.type
    if kind is FieldType.TEXT:
        return _text_converter(from_text=from_text, max_chars=max_chars)
    if kind is FieldType.NUMBER:
        return _number_converter(from_text=from_text)
    if kind is FieldType.BOOL:
        return _bool_converter(from_text=from_text)
    if kind is FieldType.DATE:
        return _to_date
    if kind is FieldType.DATETIME:
        return _datetime_converter(zone)
    if kind is FieldType.CHOICE:
        return _choice_converter(fdef.choices, from_text=from_text)
    if kind is FieldType.EMAIL:
        return _to_email
    if kind is FieldType.PHONE:
        return _to_phone
    if kind is FieldType.FILE:
        return _file_converter(fdef)
    return _link_converter(fdef, from_text=from_text)


def _text_converter(*, from_text: bool, max_chars: int) -> Converter:
    def text(raw: Any) -> Any:
        if type(raw) is str:
            refusal = text_refusal(raw, max_chars)
            if refusal is not None:
                raise ValueError(refusal)
            return raw
        if from_text or (isinstance(raw, int | float) and not isinstance(raw, bool)):
            return str(raw)
        raise ValueError(f"expected text, got {type(raw).__name__} {shown(raw)}")

    return text


def _number_converter(*, from_text: bool) -> Converter:
    def number(raw: Any) -> Any:
        kind_of = type(raw)
        if kind_of is int:
            return raw
        if kind_of is float:
            if math.isfinite(raw):
                return raw
        elif kind_of is str and from_text:
            cleaned = raw.strip().replace(" ", "")
            try:
                return int(cleaned)
            except ValueError:
                try:
                    value = float(cleaned)
                except ValueError:
                    pass
                else:
                    if math.isfinite(value):
                        return value
        raise ValueError(f"expected a number, got {shown(raw)}")

    return number


def _bool_converter(*, from_text: bool) -> Converter:
    def boolean(raw: Any) -> Any:
        if raw is True or raw is False:
            return raw
        if from_text and isinstance(raw, str | int):
            word = str(raw).strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        raise ValueError(f"expected true or false, got {shown(raw)}")

    return boolean


def _to_date(raw: Any) -> Any:
    return parse_date(raw).isoformat()


def _datetime_converter(zone: tzinfo) -> Converter:
    def a_datetime(raw: Any) -> Any:
        return format_datetime(parse_datetime(raw, zone))

    return a_datetime


def _choice_converter(choices: tuple[str, ...], *, from_text: bool) -> Converter:
    allowed = frozenset(choices)
    listed = ", ".join(choices)

    def choice(raw: Any) -> Any:
        if type(raw) is str:
            if raw in allowed:
                return raw
            if from_text and raw.strip() in allowed:
                return raw.strip()
        raise ValueError(f"{shown(raw)} is not one of the choices: {listed}")

    return choice


def _to_email(raw: Any) -> Any:
    if type(raw) is not str:
        raise ValueError(f"expected an email address, got {shown(raw)}")
    return normalise_email(raw)


def _to_phone(raw: Any) -> Any:
    if type(raw) is str:
        text = raw.strip()
        if PHONE_PATTERN.match(text):
            return text
    raise ValueError(f"{shown(raw)} is not a phone number (digits, spaces, + ( ) . -)")


def _file_converter(fdef: FieldDef) -> Converter:
    def a_file(raw: Any) -> Any:
        raise ValueError(
            f"is a file field: it takes no value here; upload the file with `crmflow records "
            f"attach RECORD {fdef.key} PATH` or PUT /api/records/{{id}}/files/{fdef.key}"
        )

    return a_file


def _link_converter(fdef: FieldDef, *, from_text: bool) -> Converter:
    """A user or a reference: an id in 1..MAX_ROW_ID; a user may also be named by username."""
    is_user = fdef.type is FieldType.USER
    what = "a user id or username" if is_user else f"the id of a {fdef.reference_type}"

    def link(raw: Any) -> Any:
        if type(raw) is int and 0 < raw <= MAX_ROW_ID:
            return raw
        if type(raw) is str:
            text = raw.strip()
            # 19 ASCII digits at most: int() of a long string is slow ('²' is no digit to it).
            number = whole_number(text, max_digits=19) if from_text else None
            if number is not None and 0 < number <= MAX_ROW_ID:
                return number
            if is_user and text:
                # Usernames are resolved to ids by the service, which knows the users.
                return text
        if type(raw) is int:
            raise ValueError(f"expected {what}, got {raw} (ids run from 1 to {MAX_ROW_ID})")
        raise ValueError(f"expected {what}, got {shown(raw)}")

    return link


def normalise_value(
    fdef: FieldDef,
    raw: object,
    *,
    zone: tzinfo,
    from_text: bool = False,
    max_chars: int = DEFAULT_MAX_FIELD_CHARS,
) -> Any:
    """One value in stored form (ValueError says what is wrong); None is not accepted here."""
    return field_converter(fdef, zone=zone, from_text=from_text, max_chars=max_chars)(raw)
