"""Export of records as CSV or JSONL: every record of a type, streamed in keyset pages, in
exactly the form `services.imports` reads back (the type's fields, `owner`, a username, and
`external_id`, the id an existing CRM knows the record by)."""

from __future__ import annotations

import csv
from typing import Any, Literal, TextIO

import orjson

from crmflow.errors import InvalidInputError, Problem
from crmflow.services.context import Context
from crmflow.services.import_rows import EXTERNAL_ID_COLUMN, OWNER_COLUMN, guarded_cell
from crmflow.services.record_types import record_type_in
from crmflow.store import records as store
from crmflow.store.database import read_connection

__all__ = ["Format", "export_records"]

Format = Literal["csv", "jsonl"]


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return guarded_cell(str(value))


def export_records(
    ctx: Context, type_key: str, out: TextIO, *, fmt: Format, page_size: int = 5000
) -> int:
    """Write every record of `type_key` to `out` as CSV or JSONL; returns the number written.

    Streams in keyset pages. Columns are the type's fields, `owner` (a username) and
    `external_id` (empty when the record has none; left out when the type has a field of that
    name), which is exactly what `import_records` reads back: importing the file again with
    `upsert_by="external_id"` updates the records that have one instead of duplicating them.
    A CSV text cell that a spreadsheet would run as a formula is written with a `'` before it
    (`guarded_cell`), which the import takes off again.
    """
    if fmt not in ("csv", "jsonl"):
        raise InvalidInputError("the export", [Problem("format", f"{fmt!r} is not csv or jsonl")])
    count = 0
    with read_connection(ctx.engine) as conn:
        rtype = record_type_in(conn, type_key)
        keys = rtype.field_keys
        # A field named external_id is the type's own: the import reads that column as the field.
        external = rtype.field(EXTERNAL_ID_COLUMN) is None
        writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow([*keys, OWNER_COLUMN, *([EXTERNAL_ID_COLUMN] if external else [])])
        after = 0
        while True:
            rows = store.export_page(conn, type_key, after=after, limit=page_size)
            if not rows:
                break
            for row in rows:
                data = row.data
                if writer is not None:
                    cells = [*(_csv_cell(data.get(k)) for k in keys), _csv_cell(row.username)]
                    if external:
                        cells.append(_csv_cell(row.external_id))
                    writer.writerow(cells)
                else:
                    document = dict(data)
                    if row.username:
                        document[OWNER_COLUMN] = row.username
                    if external and row.external_id is not None:
                        document[EXTERNAL_ID_COLUMN] = row.external_id
                    out.write(orjson.dumps(document).decode())
                    out.write("\n")
            count += len(rows)
            after = rows[-1].id
    return count
