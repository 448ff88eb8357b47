"""Bulk import and export of records as CSV or JSONL, streamed and set-based.

Import policy. By default good rows are kept and every bad row is reported with its line number
(1-based; a CSV header is line 1) and the reason, field by field. Rows are written in batches, one
transaction per batch, so a crash loses at most the batch in progress and the report says how far
the import got. With `all_or_nothing=True` the whole file is one transaction and a single bad row
refuses the import: nothing is written, and every bad row is still reported. A row is bad also when
it cannot be read: a byte that is not UTF-8, a cell over `max_field_chars`, a line that is not JSON
(see `import_rows`, which reads the file as bytes, row by row, in bounded memory).

Per batch there is one query for the users the rows name, one for the records they reference, one
multi-row INSERT of the records and one INSERT ... SELECT of their `created` change events.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TextIO

import orjson

from crmflow.engine.recordtypes import RecordType
from crmflow.errors import CrmflowError, ImportInterruptedError, InvalidInputError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.import_rows import OWNER_COLUMN, Row, csv_rows, jsonl_rows
from crmflow.services.permissions import require_manager
from crmflow.services.record_types import record_type_in
from crmflow.services.records import LinkResolver
from crmflow.store import records as store
from crmflow.store.database import Connection, read_connection

__all__ = [
    "MAX_LISTED_ERRORS",
    "ImportInterruptedError",
    "ImportReport",
    "RowError",
    "export_records",
    "import_records",
]

Format = Literal["csv", "jsonl"]
ProgressCallback = Callable[[int, int], None]
# A file with a million bad rows must not fill memory with their reports: list the first ones
# and count the rest.
MAX_LISTED_ERRORS = 1000


@dataclass(frozen=True)
class RowError:
    """Why the row at `line` (1-based, in the file) was refused."""

    line: int
    problems: list[Problem]

    def __str__(self) -> str:
        return f"line {self.line}: " + "; ".join(str(p) for p in self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "problems": [p.as_dict() for p in self.problems]}


@dataclass
class ImportReport:
    """What an import did: rows read, imported and rejected, and why rows were rejected."""

    type_key: str
    source: str
    all_or_nothing: bool = False
    read: int = 0
    imported: int = 0
    rejected: int = 0
    last_line: int = 0  # the last line read: how far the import got
    errors: list[RowError] = field(default_factory=list)
    errors_not_listed: int = 0  # rejected rows past MAX_LISTED_ERRORS

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    @property
    def written(self) -> bool:
        """Whether anything was written (all-or-nothing imports write nothing on a bad row)."""
        return self.imported > 0

    def add_error(self, line: int, problems: list[Problem]) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(RowError(line, problems))
        else:
            self.errors_not_listed += 1

    def summary(self) -> str:
        if self.all_or_nothing and self.rejected:
            return (
                f"{self.source}: import refused, nothing written: {self.rejected} of "
                f"{self.read} rows are bad (all-or-nothing)"
            )
        return (
            f"{self.source}: {self.imported} {self.type_key} records imported, "
            f"{self.rejected} rows rejected, {self.read} read"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_key,
            "source": self.source,
            "all_or_nothing": self.all_or_nothing,
            "read": self.read,
            "imported": self.imported,
            "rejected": self.rejected,
            "last_line": self.last_line,
            "errors": [e.as_dict() for e in self.errors],
            "errors_not_listed": self.errors_not_listed,
        }


class _Source:
    """An open input, whether a path (opened and closed here) or a stream the caller owns."""

    def __init__(self, path_or_stream: str | Path | IO[Any], fmt: str | None) -> None:
        self.owned: IO[bytes] | None = None
        path = Path(path_or_stream) if isinstance(path_or_stream, str | Path) else None
        self.name = str(path) if path else str(getattr(path_or_stream, "name", "<stream>"))
        if fmt is None and path is not None:
            fmt = path.suffix.lower().lstrip(".")
        if fmt == "ndjson":
            fmt = "jsonl"
        if fmt not in ("csv", "jsonl"):
            raise InvalidInputError(
                f"the import {self.name}",
                [Problem("format", f"{fmt!r} is not csv or jsonl", "name the file .csv or .jsonl")],
            )
        self.fmt: Format = fmt  # type: ignore[assignment]
        if path is None:
            self.stream: IO[Any] = path_or_stream  # type: ignore[assignment]
            return
        try:
            self.owned = path.open("rb")
        except OSError as exc:
            raise InvalidInputError(
                f"the import file {path}", [Problem("", f"cannot be read: {exc.strerror}")]
            ) from None
        self.stream = self.owned

    def position(self) -> int | None:
        if self.owned is None:
            return None
        try:
            return self.owned.tell()
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.owned is not None:
            self.owned.close()


# Private control flow, raised and caught in `import_records`: not in errors.py.
class _RefusedError(Exception):
    """Rolls back an all-or-nothing import that met a bad row."""


class _Importer:
    def __init__(
        self,
        ctx: Context,
        actor: Actor,
        rtype: RecordType,
        report: ImportReport,
        *,
        from_text: bool,
    ) -> None:
        self.ctx = ctx
        self.actor = actor
        self.rtype = rtype
        self.report = report
        self.check = rtype.checker(zone=ctx.zone, from_text=from_text).check
        self.resolver = LinkResolver(rtype)
        self.insert = store.BulkInsert(
            ctx.engine.dialect, rtype.key, actor_id=actor.id, now=ctx.now()
        )

    def validate(
        self, rows: Iterator[Row], batch_size: int
    ) -> Iterator[list[tuple[int, Any, Any]]]:
        """Batches of (line, stored values, owner) for the rows that pass the per-row checks."""
        report = self.report
        check = self.check
        pending: list[tuple[int, Any, Any]] = []
        for line, values, unreadable in rows:
            report.read += 1
            report.last_line = line
            if values is None:
                report.add_error(line, unreadable)
                continue
            owner = values.pop(OWNER_COLUMN, None)
            data, problems = check(values)
            if problems:
                report.add_error(line, problems)
                continue
            if None in data.values():
                data = store.without_nulls(data)
            if type(owner) is str:
                owner = owner.strip() or None
            pending.append((line, data, owner))
            if len(pending) >= batch_size:
                yield pending
                pending = []
        if pending:
            yield pending

    def write(self, conn: Connection, batch: list[tuple[int, Any, Any]], *, insert: bool) -> None:
        """Check the batch's links, then (if `insert`) write its good rows and their events."""
        resolver = self.resolver
        report = self.report
        has_owner = any(owner is not None for _, _, owner in batch)
        if resolver.user_fields or resolver.ref_fields or has_owner:
            owners, problems = resolver.resolve(
                conn, [(data, owner) for _, data, owner in batch], self.actor.id
            )
            good = []
            for (line, data, _), owner_id, found in zip(batch, owners, problems, strict=True):
                if found:
                    report.add_error(line, found)
                else:
                    good.append((line, data, owner_id))
        else:
            good = [(line, data, self.actor.id) for line, data, _ in batch]
        if not insert or not good:
            return
        report.imported += self.insert.write(conn, self._encoded(good))

    def _encoded(self, good: list[tuple[int, Any, int | None]]) -> list[tuple[int | None, str]]:
        """(owner id, data as JSON text) of the rows to insert; a row whose values the database
        cannot store is rejected here, alone, rather than failing the whole batch's statement."""
        dumps = orjson.dumps
        rows: list[tuple[int | None, str]] = []
        for line, data, owner_id in good:
            try:
                encoded = dumps(data)
            except orjson.JSONEncodeError as exc:
                self.report.add_error(
                    line, [Problem("", f"a value cannot be stored: {exc}", "use a smaller number")]
                )
                continue
            if b"\\u0000" in encoded:
                nul = [k for k, v in data.items() if type(v) is str and "\x00" in v]
                if nul:
                    self.report.add_error(
                        line,
                        [
                            Problem(key, "contains a NUL character (U+0000)", "remove it")
                            for key in nul
                        ],
                    )
                    continue
            rows.append((owner_id, encoded.decode()))
        return rows


def import_records(
    ctx: Context,
    actor: Actor,
    type_key: str,
    path_or_stream: str | Path | IO[Any],
    *,
    fmt: Format | None = None,
    on_progress: ProgressCallback | None = None,
    all_or_nothing: bool = False,
    batch_size: int = 5000,
) -> ImportReport:
    """Import records of `type_key` from a CSV or JSONL file (or open stream); managers and admins.

    `fmt` defaults to the file's suffix. `on_progress(rows_read, position)` is called after each
    batch, `position` being the bytes read so far when the input is a path (compare it with the
    file's size) and the rows read otherwise.
    """
    require_manager(actor, "import records")
    if batch_size < 1:
        raise InvalidInputError(
            "the import", [Problem("batch_size", f"must be at least 1, got {batch_size}")]
        )
    with read_connection(ctx.engine) as conn:
        rtype = record_type_in(conn, type_key)
    source = _Source(path_or_stream, fmt)
    report = ImportReport(type_key=type_key, source=source.name, all_or_nothing=all_or_nothing)
    importer = _Importer(ctx, actor, rtype, report, from_text=source.fmt == "csv")
    try:
        max_chars = ctx.settings.max_field_chars
        rows = (
            jsonl_rows(source.stream, rtype, max_chars)
            if source.fmt == "jsonl"
            else csv_rows(source.stream, rtype, source.name, max_chars)
        )
        batches = importer.validate(rows, batch_size)

        def progress() -> None:
            if on_progress is not None:
                position = source.position()
                on_progress(report.read, report.read if position is None else position)

        try:
            if all_or_nothing:
                try:
                    with ctx.engine.begin() as conn:
                        for batch in batches:
                            importer.write(conn, batch, insert=report.rejected == 0)
                            progress()
                        if report.rejected:
                            raise _RefusedError
                except _RefusedError:
                    report.imported = 0
            else:
                for batch in batches:
                    with ctx.engine.begin() as conn:
                        importer.write(conn, batch, insert=True)
                    progress()
            progress()
        except CrmflowError:
            raise
        except Exception as exc:
            if all_or_nothing:
                report.imported = 0
            raise ImportInterruptedError(report, exc) from exc
    finally:
        source.close()
    return report


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def export_records(
    ctx: Context, type_key: str, out: TextIO, *, fmt: Format, page_size: int = 5000
) -> int:
    """Write every record of `type_key` to `out` as CSV or JSONL; returns the number written.

    Streams in keyset pages. Columns are the type's fields and `owner` (a username), which is
    exactly what `import_records` reads back.
    """
    if fmt not in ("csv", "jsonl"):
        raise InvalidInputError("the export", [Problem("format", f"{fmt!r} is not csv or jsonl")])
    count = 0
    with read_connection(ctx.engine) as conn:
        rtype = record_type_in(conn, type_key)
        keys = rtype.field_keys
        writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow([*keys, OWNER_COLUMN])
        after = 0
        while True:
            rows = store.export_page(conn, type_key, after=after, limit=page_size)
            if not rows:
                break
            for row in rows:
                data = row.data
                if writer is not None:
                    writer.writerow([*(_csv_cell(data.get(k)) for k in keys), row.username or ""])
                else:
                    document = dict(data)
                    if row.username:
                        document[OWNER_COLUMN] = row.username
                    out.write(orjson.dumps(document).decode())
                    out.write("\n")
            count += len(rows)
            after = rows[-1].id
    return count
