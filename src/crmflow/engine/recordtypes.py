"""Record types and their typed fields: the built-in CRM types and the checks on field values.

Values are normalised to the JSON shape they are stored in, chosen so that SQL comparisons work on
both backends: dates as `YYYY-MM-DD`, datetimes as UTC `YYYY-MM-DDTHH:MM:SSZ` (both compare
correctly as text), numbers as JSON numbers, booleans as JSON booleans, users and references as
integer ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from enum import StrEnum
from typing import Any

from email_validator import EmailNotValidError, validate_email

from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "BUILTIN_TYPES",
    "FieldDef",
    "FieldType",
    "RecordType",
    "format_datetime",
    "parse_date",
    "parse_datetime",
]

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PHONE_PATTERN = re.compile(r"^\+?[0-9][0-9 ().\-]{3,30}$")
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on", "oui", "da", "si", "sì"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "off", "non", "nu"})


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

    def normalise(
        self,
        values: Mapping[str, Any],
        *,
        zone: tzinfo,
        partial: bool = False,
        from_text: bool = False,
    ) -> dict[str, Any]:
        """Check `values` against this type and return them in stored form.

        Raises InvalidInputError listing every unknown field, wrong type and missing required field.
        `partial` is for updates (required fields may be absent); `from_text` accepts the string
        forms found in CSV files ("12.5", "yes") and treats empty strings as absent.
        """
        out: dict[str, Any] = {}
        problems: list[Problem] = []
        for key, raw in values.items():
            fdef = self.field(key)
            if fdef is None:
                problems.append(
                    Problem(
                        key,
                        f"unknown field for record type {self.key!r}",
                        f"known fields: {', '.join(self.field_keys)}",
                    )
                )
                continue
            if raw is None or (from_text and isinstance(raw, str) and raw.strip() == ""):
                if fdef.required and not partial:
                    problems.append(Problem(key, "is required and may not be empty"))
                elif partial and fdef.required:
                    problems.append(Problem(key, "is required and may not be cleared"))
                else:
                    out[key] = None
                continue
            try:
                out[key] = normalise_value(fdef, raw, zone=zone, from_text=from_text)
            except ValueError as exc:
                problems.append(Problem(key, str(exc)))
        if not partial:
            for fdef in self.fields:
                if fdef.required and fdef.key not in values:
                    problems.append(Problem(fdef.key, "is required", "give it a value"))
        if problems:
            raise InvalidInputError(f"the {self.key} record", problems)
        return out


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
    raise ValueError(f"expected a date as YYYY-MM-DD, got {raw!r}")


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
        raise ValueError(f"expected a date and time as YYYY-MM-DDTHH:MM[:SS][+HH:MM], got {raw!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def normalise_value(fdef: FieldDef, raw: object, *, zone: tzinfo, from_text: bool = False) -> Any:
    kind = fdef.type
    if kind is FieldType.TEXT:
        if isinstance(raw, str):
            return raw
        if from_text or (isinstance(raw, int | float) and not isinstance(raw, bool)):
            return str(raw)
        raise ValueError(f"expected text, got {type(raw).__name__} {raw!r}")
    if kind is FieldType.NUMBER:
        if isinstance(raw, bool):
            raise ValueError(f"expected a number, got {raw!r}")
        if isinstance(raw, int | float):
            return raw
        if isinstance(raw, str) and from_text:
            text = raw.strip().replace(" ", "")
            try:
                return int(text)
            except ValueError:
                try:
                    return float(text)
                except ValueError:
                    pass
        raise ValueError(f"expected a number, got {raw!r}")
    if kind is FieldType.BOOL:
        if isinstance(raw, bool):
            return raw
        if from_text and isinstance(raw, str | int):
            word = str(raw).strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind is FieldType.DATE:
        return parse_date(raw).isoformat()
    if kind is FieldType.DATETIME:
        return format_datetime(parse_datetime(raw, zone))
    if kind is FieldType.CHOICE:
        if isinstance(raw, str) and raw in fdef.choices:
            return raw
        raise ValueError(f"{raw!r} is not one of the choices: {', '.join(fdef.choices)}")
    if kind is FieldType.EMAIL:
        if not isinstance(raw, str):
            raise ValueError(f"expected an email address, got {raw!r}")
        try:
            return validate_email(raw.strip(), check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"{raw!r} is not a valid email address: {exc}") from None
    if kind is FieldType.PHONE:
        if isinstance(raw, str) and PHONE_PATTERN.match(raw.strip()):
            return raw.strip()
        raise ValueError(f"{raw!r} is not a phone number (digits, spaces, + ( ) . -)")
    if kind in (FieldType.USER, FieldType.REFERENCE):
        what = "a user id" if kind is FieldType.USER else f"the id of a {fdef.reference_type}"
        if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
            return raw
        if isinstance(raw, str) and from_text and raw.strip().isdigit():
            return int(raw.strip())
        if isinstance(raw, str) and kind is FieldType.USER:
            # Usernames are resolved to ids by the service, which knows the users.
            return raw
        raise ValueError(f"expected {what}, got {raw!r}")
    raise ValueError(f"unsupported field type {kind}")  # pragma: no cover


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
