"""What an import that updates records (`--upsert-by external_id|FIELD`) checks first: that the
key names one record per row, and the text a row's key is compared by."""

from __future__ import annotations

from crmflow.engine.recordtypes import FieldType, RecordType
from crmflow.errors import InvalidInputError, Problem
from crmflow.services.import_rows import EXTERNAL_ID_COLUMN
from crmflow.store import records as store
from crmflow.store.database import Connection

__all__ = ["check_upsert_by", "upsert_key"]


def upsert_key(value: object) -> str:
    """A field's stored value as the text the store compares it by (`find_by_field_values`)."""
    return value if isinstance(value, str) else str(value)


def check_upsert_by(conn: Connection, rtype: RecordType, upsert_by: str) -> None:
    """Refuse an `upsert_by` that cannot name one record per row: a field the type does not
    have, a yes/no field, or a field whose value several records of the type share."""
    where = "the import's upsert_by"
    if upsert_by == EXTERNAL_ID_COLUMN and rtype.field(EXTERNAL_ID_COLUMN) is None:
        return
    field = rtype.field(upsert_by)
    if field is None:
        raise InvalidInputError(
            where,
            [
                Problem(
                    "upsert_by",
                    f"{upsert_by!r} is not a field of record type {rtype.key!r}",
                    f"use external_id or one of: {', '.join(rtype.field_keys)}",
                )
            ],
        )
    if field.type is FieldType.BOOL:
        raise InvalidInputError(
            where, [Problem("upsert_by", f"{upsert_by!r} is a yes/no field: it names no record")]
        )
    shared = store.duplicated_field_values(conn, rtype.key, upsert_by, limit=3)
    if shared:
        said = "; ".join(f"{value!r} is held by {n} records" for value, n in shared)
        raise InvalidInputError(
            where,
            [
                Problem(
                    "upsert_by",
                    f"the values of {upsert_by!r} are not unique among the {rtype.key} "
                    f"records: {said}",
                    "make them unique first, or upsert by external_id",
                )
            ],
        )
