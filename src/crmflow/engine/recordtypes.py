"""Record types and their typed fields: the built-in CRM types and the checks on field values.

Values are normalised to the JSON shape they are stored in, chosen so that SQL comparisons work on
both backends: dates as `YYYY-MM-DD`, datetimes as UTC `YYYY-MM-DDTHH:MM:SSZ` (both compare
correctly as text), numbers as JSON numbers, booleans as JSON booleans, users and references as
integer ids.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from enum import StrEnum
from typing import Any

from email_validator import EmailNotValidError, validate_email

from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "BUILTIN_TYPES",
    "DEFAULT_MAX_FIELD_CHARS",
    "MAX_ROW_ID",
    "RESERVED_FIELD_KEYS",
    "Converter",
    "FieldChange",
    "FieldDef",
    "FieldType",
    "RecordType",
    "RowChecker",
    "compare_definitions",
    "field_converter",
    "format_datetime",
    "normalise_email",
    "normalise_value",
    "parse_date",
    "parse_datetime",
    "record_type_from_definition",
    "text_refusal",
    "type_catalog",
]

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Ids are 64-bit signed integers on both backends: a larger one names no row, and SQLite's driver
# cannot even bind it (OverflowError), so it is refused where it comes in.
MAX_ROW_ID = 2**63 - 1
# The longest text a field holds unless the caller says otherwise (settings.max_field_chars).
DEFAULT_MAX_FIELD_CHARS = 256_000
# Text no database stores the same way: NUL (PostgreSQL refuses it, SQLite keeps it) and lone
# UTF-16 surrogates (not characters: they cannot be encoded to UTF-8 at all).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
PHONE_PATTERN = re.compile(r"^\+?[0-9][0-9 ().\-]{3,30}$")
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on", "oui", "da", "si", "sì"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "off", "non", "nu"})
# Columns every record has, so no field may take their names (an import's `owner` column).
RESERVED_FIELD_KEYS = frozenset({"id", "owner", "owner_id", "created_at", "updated_at"})
FIELD_DEFINITION_KEYS = frozenset({"key", "type", "label", "required", "choices", "reference_type"})
_SIMPLE_EMAIL = re.compile(
    r"^([A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})$"
)
_SPECIAL_USE_DOMAINS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})

Converter = Callable[[Any], Any]


class FieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    CHOICE = "choice"
    EMAIL = "email"
    PHONE = "phone"
    USER = "user"
    REFERENCE = "reference"


@dataclass(frozen=True)
class FieldDef:
    key: str
    type: FieldType
    label: str = ""
    required: bool = False
    choices: tuple[str, ...] = ()
    reference_type: str | None = None  # for REFERENCE: the record type it points to

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "type": self.type.value, "label": self.label}
        if self.required:
            out["required"] = True
        if self.choices:
            out["choices"] = list(self.choices)
        if self.reference_type:
            out["reference_type"] = self.reference_type
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FieldDef:
        return cls(
            key=str(data["key"]),
            type=FieldType(data["type"]),
            label=str(data.get("label") or ""),
            required=bool(data.get("required", False)),
            choices=tuple(str(c) for c in data.get("choices") or ()),
            reference_type=data.get("reference_type"),
        )


@dataclass(frozen=True)
class RecordType:
    key: str
    name: str
    fields: tuple[FieldDef, ...]
    builtin: bool = False
    _by_key: dict[str, FieldDef] = field(default_factory=dict, compare=False, repr=False)
    _checkers: dict[tuple[str, bool, int], RowChecker] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self._by_key.update({f.key: f for f in self.fields})

    def field(self, key: str) -> FieldDef | None:
        return self._by_key.get(key)

    @property
    def field_keys(self) -> list[str]:
        return [f.key for f in self.fields]

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "builtin": self.builtin,
            "fields": [f.as_dict() for f in self.fields],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, builtin: bool = False) -> RecordType:
        return cls(
            key=str(data["key"]),
            name=str(data.get("name") or data["key"]),
            fields=tuple(FieldDef.from_dict(f) for f in data.get("fields") or ()),
            builtin=builtin,
        )

    def check_definition(self) -> list[Problem]:
        """Problems with the type definition itself (for user-defined types)."""
        problems: list[Problem] = []
        if not KEY_PATTERN.match(self.key):
            problems.append(
                Problem("key", f"{self.key!r} is not a valid type key", "use lower_snake_case")
            )
        seen: set[str] = set()
        for i, f in enumerate(self.fields):
            where = f"fields[{i}]"
            if not KEY_PATTERN.match(f.key):
                problems.append(
                    Problem(f"{where}.key", f"{f.key!r} is not a valid field key", "lower_snake")
                )
            if f.key in RESERVED_FIELD_KEYS:
                problems.append(
                    Problem(
                        f"{where}.key",
                        f"{f.key!r} is reserved (every record already has it)",
                        "choose another key",
                    )
                )
            if f.key in seen:
                problems.append(Problem(f"{where}.key", f"field {f.key!r} is defined twice"))
            seen.add(f.key)
            if f.type is FieldType.CHOICE and not f.choices:
                problems.append(
                    Problem(f"{where}.choices", "a choice field needs at least one choice")
                )
            if f.type is FieldType.REFERENCE and not f.reference_type:
                problems.append(
                    Problem(
                        f"{where}.reference_type",
                        "a reference field must name the record type it points to",
                    )
                )
        return problems

    def checker(
        self,
        *,
        zone: tzinfo,
        from_text: bool = False,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    ) -> RowChecker:
        """The compiled checker for this type (built once per zone, input form and text limit,
        then reused)."""
        cache_key = (str(zone), from_text, max_field_chars)
        found = self._checkers.get(cache_key)
        if found is None:
            found = RowChecker(self, zone=zone, from_text=from_text, max_chars=max_field_chars)
            self._checkers[cache_key] = found
        return found

    def normalise(
        self,
        values: Mapping[str, Any],
        *,
        zone: tzinfo,
        partial: bool = False,
        from_text: bool = False,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    ) -> dict[str, Any]:
        """Check `values` against this type and return them in stored form.

        Raises InvalidInputError listing every unknown field, wrong type and missing required field.
        `partial` is for updates (required fields may be absent); `from_text` accepts the string
        forms found in CSV files ("12.5", "yes") and treats empty strings as absent. An empty value
        comes back as None (for an update, None means "clear this field"). Text longer than
        `max_field_chars`, or holding a NUL or a lone surrogate, is refused in any field.
        """
        checker = self.checker(zone=zone, from_text=from_text, max_field_chars=max_field_chars)
        out, problems = checker.check(values, partial=partial)
        if problems:
            raise InvalidInputError(f"the {self.key} record", problems)
        return out


class RowChecker:
    """Checks and converts the values of one record type, with one converter per field.

    Bulk imports call `check` once per row, so the per-field work (which parser, which choices,
    which zone) is decided here once instead of being dispatched on the field type per value.
    """

    def __init__(
        self,
        rtype: RecordType,
        *,
        zone: tzinfo,
        from_text: bool,
        max_chars: int = DEFAULT_MAX_FIELD_CHARS,
    ) -> None:
        self.rtype = rtype
        self.from_text = from_text
        self.converters: dict[str, Converter] = {
            f.key: field_converter(f, zone=zone, from_text=from_text, max_chars=max_chars)
            for f in rtype.fields
        }
        self.required = frozenset(f.key for f in rtype.fields if f.required)
        self._unknown_hint = f"known fields: {', '.join(rtype.field_keys)}"

    def check(
        self, values: Mapping[str, Any], *, partial: bool = False
    ) -> tuple[dict[str, Any], list[Problem]]:
        """The stored form of `values` and every problem found (an empty list when all is well)."""
        out: dict[str, Any] = {}
        problems: list[Problem] = []
        converters = self.converters
        from_text = self.from_text
        for key, raw in values.items():
            convert = converters.get(key)
            if convert is None:
                problems.append(
                    Problem(
                        key, f"unknown field for record type {self.rtype.key!r}", self._unknown_hint
                    )
                )
                continue
            if raw is None or (from_text and type(raw) is str and not raw.strip()):
                if key in self.required:
                    problems.append(
                        Problem(
                            key,
                            "is required and may not be cleared"
                            if partial
                            else "is required and may not be empty",
                        )
                    )
                else:
                    out[key] = None
                continue
            try:
                out[key] = convert(raw)
            except ValueError as exc:
                problems.append(Problem(key, str(exc)))
        if not partial and self.required:
            for key in self.required:
                if key not in values:
                    problems.append(Problem(key, "is required", "give it a value"))
        return out, problems


def record_type_from_definition(data: object) -> RecordType:
    """A user-defined record type from its document (YAML/JSON), or every problem with it.

    The document is `{key, name, fields: [{key, type, label, required, choices, reference_type}]}`.
    """
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            "the record type", [Problem("", "expected a mapping with key, name and fields")]
        )
    for extra in sorted(set(map(str, data)) - {"key", "name", "fields", "builtin"}):
        problems.append(Problem(extra, "unknown key", "use key, name and fields"))
    key = data.get("key")
    if not isinstance(key, str):
        problems.append(Problem("key", "is required and must be text"))
        key = ""
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        problems.append(Problem("name", "must be text"))
        name = None
    raw_fields = data.get("fields")
    if raw_fields is None:
        raw_fields = []
    if not isinstance(raw_fields, list):
        problems.append(Problem("fields", "must be a list of fields"))
        raw_fields = []
    fields: list[FieldDef] = []
    positions: list[int] = []
    kinds = ", ".join(t.value for t in FieldType)
    for i, raw in enumerate(raw_fields):
        where = f"fields[{i}]"
        if not isinstance(raw, Mapping):
            problems.append(Problem(where, "must be a mapping with key and type"))
            continue
        for extra in sorted(set(map(str, raw)) - FIELD_DEFINITION_KEYS):
            problems.append(
                Problem(
                    f"{where}.{extra}",
                    "unknown key",
                    f"use {', '.join(sorted(FIELD_DEFINITION_KEYS))}",
                )
            )
        fkey = raw.get("key")
        if not isinstance(fkey, str):
            problems.append(Problem(f"{where}.key", "is required and must be text"))
            continue
        try:
            kind = FieldType(str(raw.get("type")))
        except ValueError:
            problems.append(
                Problem(f"{where}.type", f"{raw.get('type')!r} is not a field type", kinds)
            )
            continue
        choices = raw.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            problems.append(Problem(f"{where}.choices", "must be a list of text values"))
            choices = []
        if choices and kind is not FieldType.CHOICE:
            problems.append(Problem(f"{where}.choices", "only a choice field has choices"))
        ref = raw.get("reference_type")
        if ref is not None and not isinstance(ref, str):
            problems.append(Problem(f"{where}.reference_type", "must be a record type key"))
            ref = None
        if ref and kind is not FieldType.REFERENCE:
            problems.append(
                Problem(f"{where}.reference_type", "only a reference field has a reference_type")
            )
        required = raw.get("required", False)
        if not isinstance(required, bool):
            problems.append(Problem(f"{where}.required", "must be true or false"))
            required = False
        label = raw.get("label")
        positions.append(i)
        fields.append(
            FieldDef(
                key=fkey,
                type=kind,
                label=str(label) if label else fkey.replace("_", " ").capitalize(),
                required=required,
                choices=tuple(choices),
                reference_type=ref if kind is FieldType.REFERENCE else None,
            )
        )
    rtype = RecordType(key=key, name=name or key, fields=tuple(fields))
    # check_definition numbers the fields it was given; report the positions in the document.
    for found in rtype.check_definition():
        if found.path == "key" and not key:
            continue
        if found.path.startswith("fields["):
            index, rest = found.path[len("fields[") :].split("]", 1)
            found = Problem(  # noqa: PLW2901
                f"fields[{positions[int(index)]}]{rest}", found.message, found.hint
            )
        problems.append(found)
    if problems:
        raise InvalidInputError(f"the record type {key!r}" if key else "the record type", problems)
    return rtype


@dataclass(frozen=True)
class FieldChange:
    """How one field differs between two versions of a record type."""

    key: str
    change: str  # removed | retyped | choices_removed | now_required
    detail: str
    removed_choices: tuple[str, ...] = ()


def compare_definitions(old: RecordType, new: RecordType) -> list[FieldChange]:
    """The changes from `old` to `new` that existing records could contradict.

    Adding an optional field never contradicts a record, so additions are not listed.
    """
    changes: list[FieldChange] = []
    for before in old.fields:
        after = new.field(before.key)
        if after is None:
            changes.append(FieldChange(before.key, "removed", "is removed"))
            continue
        if after.type is not before.type or after.reference_type != before.reference_type:
            was = before.type.value + (
                f"->{before.reference_type}" if before.reference_type else ""
            )
            now = after.type.value + (f"->{after.reference_type}" if after.reference_type else "")
            changes.append(FieldChange(before.key, "retyped", f"changes type from {was} to {now}"))
            continue
        gone = tuple(c for c in before.choices if c not in after.choices)
        if gone:
            changes.append(
                FieldChange(
                    before.key,
                    "choices_removed",
                    f"loses the choices {', '.join(gone)}",
                    removed_choices=gone,
                )
            )
        if after.required and not before.required:
            changes.append(FieldChange(before.key, "now_required", "becomes required"))
    for added in new.fields:
        if added.required and old.field(added.key) is None:
            changes.append(FieldChange(added.key, "now_required", "is added as required"))
    return changes


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
    raise ValueError(f"expected a date as YYYY-MM-DD, got {_shown(raw)}")


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
            f"expected a date and time as YYYY-MM-DDTHH:MM[:SS][+HH:MM], got {_shown(raw)}"
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
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{_shown(raw)} is not a valid email address: {exc}") from None


def _shown(raw: object, width: int = 60) -> str:
    """`raw` as an error message quotes it: a value of thousands of characters is cut."""
    text = repr(raw)
    return text if len(text) <= width else f"{text[:width]}... ({len(text):,} characters)"


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
    kind = fdef.type
    if kind is FieldType.TEXT:

        def text(raw: Any) -> Any:
            if type(raw) is str:
                refusal = text_refusal(raw, max_chars)
                if refusal is not None:
                    raise ValueError(refusal)
                return raw
            if from_text or (isinstance(raw, int | float) and not isinstance(raw, bool)):
                return str(raw)
            raise ValueError(f"expected text, got {type(raw).__name__} {_shown(raw)}")

        return text
    if kind is FieldType.NUMBER:

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
            raise ValueError(f"expected a number, got {_shown(raw)}")

        return number
    if kind is FieldType.BOOL:

        def boolean(raw: Any) -> Any:
            if raw is True or raw is False:
                return raw
            if from_text and isinstance(raw, str | int):
                word = str(raw).strip().lower()
                if word in TRUE_WORDS:
                    return True
                if word in FALSE_WORDS:
                    return False
            raise ValueError(f"expected true or false, got {_shown(raw)}")

        return boolean
    if kind is FieldType.DATE:

        def a_date(raw: Any) -> Any:
            return parse_date(raw).isoformat()

        return a_date
    if kind is FieldType.DATETIME:

        def a_datetime(raw: Any) -> Any:
            return format_datetime(parse_datetime(raw, zone))

        return a_datetime
    if kind is FieldType.CHOICE:
        choices = frozenset(fdef.choices)
        listed = ", ".join(fdef.choices)

        def choice(raw: Any) -> Any:
            if type(raw) is str:
                if raw in choices:
                    return raw
                if from_text and raw.strip() in choices:
                    return raw.strip()
            raise ValueError(f"{_shown(raw)} is not one of the choices: {listed}")

        return choice
    if kind is FieldType.EMAIL:

        def email(raw: Any) -> Any:
            if type(raw) is not str:
                raise ValueError(f"expected an email address, got {_shown(raw)}")
            return normalise_email(raw)

        return email
    if kind is FieldType.PHONE:

        def phone(raw: Any) -> Any:
            if type(raw) is str:
                text = raw.strip()
                if PHONE_PATTERN.match(text):
                    return text
            raise ValueError(f"{_shown(raw)} is not a phone number (digits, spaces, + ( ) . -)")

        return phone
    is_user = kind is FieldType.USER
    what = "a user id or username" if is_user else f"the id of a {fdef.reference_type}"

    def link(raw: Any) -> Any:
        if type(raw) is int and 0 < raw <= MAX_ROW_ID:
            return raw
        if type(raw) is str:
            text = raw.strip()
            # 19 digits at most: int() of a long string is slow, and refused past 4,300 digits.
            if from_text and text.isdigit() and len(text) <= 19 and 0 < int(text) <= MAX_ROW_ID:
                return int(text)
            if is_user and text:
                # Usernames are resolved to ids by the service, which knows the users.
                return text
        if type(raw) is int:
            raise ValueError(f"expected {what}, got {raw} (ids run from 1 to {MAX_ROW_ID})")
        raise ValueError(f"expected {what}, got {_shown(raw)}")

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


def _fields(*specs: tuple[Any, ...]) -> tuple[FieldDef, ...]:
    out = []
    for spec in specs:
        key, kind, *rest = spec
        options: dict[str, Any] = rest[0] if rest else {}
        out.append(
            FieldDef(
                key=key,
                type=FieldType(kind),
                label=options.get("label", key.replace("_", " ").capitalize()),
                required=options.get("required", False),
                choices=tuple(options.get("choices", ())),
                reference_type=options.get("ref"),
            )
        )
    return tuple(out)


def _builtin(key: str, name: str, *specs: tuple[Any, ...]) -> RecordType:
    return RecordType(key=key, name=name, fields=_fields(*specs), builtin=True)


BUILTIN_TYPES: dict[str, RecordType] = {
    t.key: t
    for t in (
        _builtin(
            "contact",
            "Contact",
            ("first_name", "text"),
            ("last_name", "text", {"required": True}),
            ("email", "email"),
            ("phone", "phone"),
            ("language", "choice", {"choices": ["en", "fr", "ro", "it", "de", "es"]}),
            ("status", "choice", {"choices": ["lead", "prospect", "client", "donor", "inactive"]}),
            ("client_since", "date"),
            ("birth_date", "date"),
            ("company", "reference", {"ref": "company"}),
            ("manager", "user", {"label": "Manager (for approvals)"}),
            ("last_donation_date", "date"),
            ("last_donation_amount", "number"),
            ("total_donations", "number"),
            ("newsletter", "bool"),
        ),
        _builtin(
            "company",
            "Company",
            ("name", "text", {"required": True}),
            ("email", "email"),
            ("phone", "phone"),
            ("website", "text"),
            ("industry", "text"),
            ("status", "choice", {"choices": ["prospect", "client", "former_client"]}),
            ("client_since", "date"),
        ),
        _builtin(
            "event",
            "Event",
            ("title", "text", {"required": True}),
            ("start", "datetime", {"required": True}),
            ("end", "datetime"),
            ("location", "text"),
            (
                "status",
                "choice",
                {"choices": ["planned", "confirmed", "in_progress", "done", "cancelled"]},
            ),
            ("contact", "reference", {"ref": "contact"}),
            ("company", "reference", {"ref": "company"}),
        ),
        _builtin(
            "quote",
            "Quote",
            ("number", "text", {"required": True}),
            ("contact", "reference", {"ref": "contact"}),
            ("company", "reference", {"ref": "company"}),
            ("amount", "number"),
            ("status", "choice", {"choices": ["draft", "sent", "accepted", "refused", "expired"]}),
            ("valid_until", "date"),
        ),
        _builtin(
            "invoice",
            "Invoice",
            ("number", "text", {"required": True}),
            ("contact", "reference", {"ref": "contact"}),
            ("company", "reference", {"ref": "company"}),
            ("amount", "number"),
            ("status", "choice", {"choices": ["draft", "sent", "paid", "overdue", "cancelled"]}),
            ("due_date", "date"),
        ),
        _builtin(
            "order",
            "Order",
            ("number", "text", {"required": True}),
            ("kind", "choice", {"choices": ["sale", "service"]}),
            ("contact", "reference", {"ref": "contact"}),
            ("company", "reference", {"ref": "company"}),
            ("amount", "number"),
            (
                "status",
                "choice",
                {
                    "choices": [
                        "new",
                        "supplying",
                        "packing",
                        "delivered",
                        "diagnosis",
                        "repair",
                        "testing",
                        "done",
                        "cancelled",
                    ]
                },
            ),
            ("due_date", "date"),
        ),
        _builtin(
            "property",
            "Property",
            ("address", "text", {"required": True}),
            ("city", "text"),
            ("price", "number"),
            ("status", "choice", {"choices": ["available", "under_offer", "sold", "withdrawn"]}),
            ("seller", "reference", {"ref": "contact"}),
            ("buyer", "reference", {"ref": "contact"}),
            ("sale_date", "date"),
        ),
    )
}


def type_catalog(extra: Iterable[RecordType] = ()) -> dict[str, RecordType]:
    """The built-in types plus the organisation's own."""
    catalog = dict(BUILTIN_TYPES)
    catalog.update({t.key: t for t in extra})
    return catalog
