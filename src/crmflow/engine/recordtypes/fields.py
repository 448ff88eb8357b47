"""The field types a record type may declare, and one field's definition as stored and shown."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_MAX_FIELD_CHARS",
    "FIELD_DEFINITION_KEYS",
    "KEY_PATTERN",
    "MAX_ROW_ID",
    "RESERVED_FIELD_KEYS",
    "FieldDef",
    "FieldType",
]

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Ids are 64-bit signed integers on both backends: a larger one names no row, and SQLite's driver
# cannot even bind it (OverflowError), so it is refused where it comes in.
MAX_ROW_ID = 2**63 - 1
# The longest text a field holds unless the caller says otherwise (settings.max_field_chars).
DEFAULT_MAX_FIELD_CHARS = 256_000
# Columns every record has, so no field may take their names (an import's `owner` column).
RESERVED_FIELD_KEYS = frozenset({"id", "owner", "owner_id", "created_at", "updated_at"})
FIELD_DEFINITION_KEYS = frozenset({"key", "type", "label", "required", "choices", "reference_type"})


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
    # A file kept beside the record (store.record_files), uploaded and read on its own
    # (`crmflow records attach`, PUT /api/records/{id}/files/{field}): the record's own value
    # for the field stays empty, so a record's JSON never carries the bytes.
    FILE = "file"


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
