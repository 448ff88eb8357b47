"""A record type (its key, name and fields) and the compiled checker that turns a record's
values into their stored form, with every problem found in one pass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from crmflow.engine.recordtypes.fields import (
    DEFAULT_MAX_FIELD_CHARS,
    KEY_PATTERN,
    RESERVED_FIELD_KEYS,
    FieldDef,
    FieldType,
)
from crmflow.engine.recordtypes.values import Converter, field_converter
from crmflow.errors import InvalidInputError, Problem

__all__ = ["RecordType", "RowChecker"]


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
    # `converter`'s: (field key, zone, from text) -> the field's converter.
    _converters: dict[tuple[str, tzinfo, bool], Converter] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self._by_key.update({f.key: f for f in self.fields})

    def field(self, key: str) -> FieldDef | None:
        return self._by_key.get(key)

    def converter(self, fdef: FieldDef, *, zone: tzinfo, from_text: bool = False) -> Converter:
        """`field_converter` of `fdef`, one of this type's fields, made once per zone (an
        action that sets a field runs for every record of a batch)."""
        key = (fdef.key, zone, from_text)
        found = self._converters.get(key)
        if found is None:
            found = self._converters[key] = field_converter(fdef, zone=zone, from_text=from_text)
        return found

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
            if f.type is FieldType.FILE and f.required:
                problems.append(
                    Problem(
                        f"{where}.required",
                        "a file field cannot be required: its file is uploaded once the record "
                        "exists",
                        "remove `required: true`",
                    )
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
