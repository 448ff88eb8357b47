"""Record types and their typed fields: the built-in CRM types and the checks on field values.

Values are normalised to the JSON shape they are stored in, chosen so that SQL comparisons work on
both backends: dates as `YYYY-MM-DD`, datetimes as UTC `YYYY-MM-DDTHH:MM:SSZ` (both compare
correctly as text), numbers as JSON numbers, booleans as JSON booleans, users and references as
integer ids.

The modules, one per concern: `fields` (field types and definitions), `values` (one value to its
stored form), `recordtype` (a type and its compiled row checker), `document` (a user-defined type
read from its document, and what changes between two versions) and `builtin` (the built-in types
and the catalogue). This package re-exports their public names, so callers import from
`crmflow.engine.recordtypes`.
"""

from __future__ import annotations

from crmflow.engine.recordtypes.builtin import BUILTIN_TYPES, type_catalog
from crmflow.engine.recordtypes.document import (
    FieldChange,
    compare_definitions,
    record_type_from_definition,
)
from crmflow.engine.recordtypes.fields import (
    DEFAULT_MAX_FIELD_CHARS,
    MAX_ROW_ID,
    RESERVED_FIELD_KEYS,
    FieldDef,
    FieldType,
)
from crmflow.engine.recordtypes.recordtype import RecordType, RowChecker
from crmflow.engine.recordtypes.values import (
    Converter,
    field_converter,
    format_datetime,
    normalise_email,
    normalise_value,
    parse_date,
    parse_datetime,
    text_refusal,
)

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
