"""Bulk import of records as CSV or JSONL, streamed and set-based (the export, which writes
what this reads back, is `services.exports`).

Import policy. By default good rows are kept and every bad row is reported with its line number
(1-based; a CSV header is line 1) and the reason, field by field. Rows are written in batches, one
transaction per batch, so a crash loses at most the batch in progress and the report says how far
the import got. With `all_or_nothing=True` the whole file is one transaction and a single bad row
refuses the import: nothing is written, and every bad row is still reported. A row is bad also when
it cannot be read: a byte that is not UTF-8, a cell over `max_field_chars`, a line that is not JSON
(see `import_rows`, which reads the file as bytes, row by row, in bounded memory).

Per batch there is one query for the users the rows name, one for the records they reference, one
multi-row INSERT of the records and one INSERT ... SELECT of their `created` change events.

Upserting (`upsert_by`). A row may carry an `external_id` column, the id an existing CRM knows the
record by (unique per record type). With `upsert_by="external_id"` a row whose external id is
already a record's updates that record, the others are created: importing the same file twice
updates, it does not duplicate. With `upsert_by=FIELD` the record is found by that field's value,
which must be unique among the type's records (the import is refused up front if two records
share a value). An update sets the fields the row gives (an empty cell leaves a field as it is)
and the owner if the row names one; a row that changes nothing writes nothing. Per batch one
more query finds the records the rows name (locked), and one executemany updates them, through
the same write as every record change (`store.records.update_records`), so updates trigger flows.
Without `upsert_by`, a row whose external id is already taken is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from crmflow.engine.recordtypes import RecordType
from crmflow.errors import (
    CrmflowError,
    ImportInterruptedError,
    InvalidInputError,
    JobLeaseLostError,
    JobStoppedError,
    Problem,
)
from crmflow.services import invitations
from crmflow.services.context import Actor, Context
from crmflow.services.exports import Format, export_records
from crmflow.services.import_rows import (
    EXTERNAL_ID_COLUMN,
    OWNER_COLUMN,
    Row,
    csv_rows,
    external_id_of,
    jsonl_rows,
)
from crmflow.services.import_upsert import check_upsert_by, upsert_key
from crmflow.services.permissions import require_manager
from crmflow.services.record_types import record_type_in
from crmflow.services.records import LinkResolver, change_of
from crmflow.store import records as store
from crmflow.store.database import Connection, read_connection
from crmflow.store.records import RecordUpdate, StoredRecord

__all__ = [
    "MAX_LISTED_ERRORS",
    "ImportInterruptedError",
    "ImportReport",
    "RowError",
    "export_records",
    "import_records",
]

# A row past the per-row checks: its line, stored values, owner as given, and external id.
_Pending = tuple[int, dict[str, Any], Any, str | None]
ProgressCallback = Callable[[int, int], None]
BatchCallback = Callable[[Connection, "ImportReport", int], None]
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
    upsert_by: str | None = None
    read: int = 0
    imported: int = 0  # records created
    updated: int = 0  # records an upserting import changed
    unchanged: int = 0  # rows an upserting import found already as they are
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
        return self.imported > 0 or self.updated > 0

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
        updated = (
            f"{self.updated} updated, {self.unchanged} unchanged, "
            if self.upsert_by is not None
            else ""
        )
        return (
            f"{self.source}: {self.imported} {self.type_key} records imported, {updated}"
            f"{self.rejected} rows rejected, {self.read} read"
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImportReport:
        """The report `as_dict` wrote (a background import's, kept in its job)."""
        return cls(
            type_key=str(data["type"]),
            source=str(data["source"]),
            all_or_nothing=bool(data["all_or_nothing"]),
            upsert_by=data.get("upsert_by"),
            read=int(data["read"]),
            imported=int(data["imported"]),
            updated=int(data["updated"]),
            unchanged=int(data["unchanged"]),
            rejected=int(data["rejected"]),
            last_line=int(data["last_line"]),
            errors=[
                RowError(int(e["line"]), [_problem(p) for p in e["problems"]])
                for e in data["errors"]
            ],
            errors_not_listed=int(data["errors_not_listed"]),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_key,
            "source": self.source,
            "all_or_nothing": self.all_or_nothing,
            "upsert_by": self.upsert_by,
            "read": self.read,
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "last_line": self.last_line,
            "errors": [e.as_dict() for e in self.errors],
            "errors_not_listed": self.errors_not_listed,
        }


class _Source:
    """An open input, whether a path (opened and closed here) or a stream the caller owns."""

    def __init__(
        self, path_or_stream: str | Path | IO[Any], fmt: str | None, name: str | None = None
    ) -> None:
        self.owned: IO[bytes] | None = None
        path = Path(path_or_stream) if isinstance(path_or_stream, str | Path) else None
        # An uploaded file's stream is nameless (its `name` None or a temporary file's path):
        # the caller gives the name the user knows it by.
        self.name = name or (
            str(path) if path else str(getattr(path_or_stream, "name", None) or "<stream>")
        )
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


def _problem(data: Mapping[str, Any]) -> Problem:
    line = data.get("line")
    return Problem(
        path=str(data.get("path") or ""),
        message=str(data.get("message") or ""),
        hint=str(data.get("hint") or ""),
        line=int(line) if line is not None else None,
        source=data.get("source"),
    )


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
        upsert_by: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.actor = actor
        self.rtype = rtype
        self.report = report
        self.upsert_by = upsert_by
        self.check = rtype.checker(zone=ctx.zone, from_text=from_text).check
        self.resolver = LinkResolver(rtype)
        self.insert = store.BulkInsert(
            ctx.engine.dialect, rtype.key, actor_id=actor.id, now=ctx.now()
        )
        # A field of the type named `external_id` is a field, not the column of external ids.
        self.external_column = rtype.field(EXTERNAL_ID_COLUMN) is None

    def validate(self, rows: Iterator[Row], batch_size: int) -> Iterator[list[_Pending]]:
        """Batches of (line, stored values, owner, external id) for the rows that pass the
        per-row checks."""
        report = self.report
        check = self.check
        pending: list[_Pending] = []
        for line, values, unreadable in rows:
            report.read += 1
            report.last_line = line
            if values is None:
                report.add_error(line, unreadable)
                continue
            owner = values.pop(OWNER_COLUMN, None)
            external_id = values.pop(EXTERNAL_ID_COLUMN, None) if self.external_column else None
            data, problems = check(values)
            external_id, external_problems = external_id_of(external_id)
            problems = [*problems, *external_problems]
            if not problems:
                problems = self._key_problems(data, external_id)
            if problems:
                report.add_error(line, problems)
                continue
            if None in data.values():
                data = store.without_nulls(data)
            if type(owner) is str:
                owner = owner.strip() or None
            pending.append((line, data, owner, external_id))
            if len(pending) >= batch_size:
                yield pending
                pending = []
        if pending:
            yield pending

    def _key_problems(self, data: dict[str, Any], external_id: str | None) -> list[Problem]:
        """Why an upserting import cannot tell which record the row is (it lacks the key)."""
        if self.upsert_by is None:
            return []
        if self.upsert_by == EXTERNAL_ID_COLUMN and self.external_column:
            if external_id is None:
                return [Problem(EXTERNAL_ID_COLUMN, "is empty: --upsert-by external_id needs it")]
        elif data.get(self.upsert_by) is None:
            return [Problem(self.upsert_by, f"is empty: --upsert-by {self.upsert_by} needs it")]
        return []

    def _key(self, data: Mapping[str, Any], external_id: str | None) -> str | None:
        """The text the row's record is found by, when the import upserts."""
        if self.upsert_by is None:
            return None
        if self.upsert_by == EXTERNAL_ID_COLUMN and self.external_column:
            return external_id
        return upsert_key(data[self.upsert_by])

    def write(self, conn: Connection, batch: list[_Pending], *, insert: bool) -> None:
        """Check the batch's links, then (if `insert`) write its good rows and their events:
        new records, and with `upsert_by` updates of the records the rows name."""
        resolver = self.resolver
        report = self.report
        has_owner = any(owner is not None for _, _, owner, _ in batch)
        good: list[tuple[int, dict[str, Any], int | None, bool, str | None]] = []
        if resolver.user_fields or resolver.ref_fields or has_owner:
            owners, problems = resolver.resolve(
                conn, [(data, owner) for _, data, owner, _ in batch], self.actor.id
            )
            for (line, data, owner, external_id), owner_id, found in zip(
                batch, owners, problems, strict=True
            ):
                if found:
                    report.add_error(line, found)
                else:
                    good.append((line, data, owner_id, owner is not None, external_id))
        else:
            good = [(line, data, self.actor.id, False, ext) for line, data, _, ext in batch]
        if not insert or not good:
            return
        if self.upsert_by is None and not any(ext is not None for *_, ext in good):
            report.imported += self.insert.write(conn, self._encoded(good)[0])
            return
        self._upsert(conn, good)

    def _upsert(
        self, conn: Connection, good: list[tuple[int, dict[str, Any], int | None, bool, str | None]]
    ) -> None:
        """Write a batch whose rows carry keys: the rows naming a record update it (in order,
        each seeing the one before), the others are created (several rows with one new key make
        one record, with the values of them all).

        Long on purpose: one pass decides each row in file order against five running tallies
        (the records as updated so far, the new keys and external ids seen, what is created and
        updated); split, each part would take and give back all five."""
        report = self.report
        taken = store.find_by_external_ids(
            conn, self.rtype.key, {ext for *_, ext in good if ext is not None}
        )
        by_field: dict[str, list[StoredRecord]] = {}
        keys = [self._key(data, ext) for _, data, _, _, ext in good]
        if self.upsert_by is not None and not (
            self.upsert_by == EXTERNAL_ID_COLUMN and self.external_column
        ):
            by_field = store.find_by_field_values(
                conn, self.rtype.key, self.upsert_by, {k for k in keys if k is not None}
            )
        else:
            by_field = {ext: [record] for ext, record in taken.items()}
        current: dict[int, StoredRecord] = {}
        new: dict[str, int] = {}  # a new record's key (or external id) -> its place in `created`
        new_externals: dict[str, int] = {}  # a new record's external id -> its line
        created: list[tuple[int, dict[str, Any], int | None, str | None]] = []
        updates: list[tuple[int, RecordUpdate]] = []
        for (line, data, owner_id, owner_given, ext), key in zip(good, keys, strict=True):
            if key is None or key not in by_field:
                if ext is not None and ext in taken:
                    report.add_error(
                        line,
                        [
                            Problem(
                                EXTERNAL_ID_COLUMN,
                                f"{ext!r} is already record {taken[ext].id}",
                                "import with --upsert-by external_id to update it",
                            )
                        ],
                    )
                    continue
                # What ties rows of one new record: the key an upsert finds it by. Without
                # --upsert-by rows are never merged: a second row with a new record's
                # external id is refused below, at its line.
                ident = key if key is not None else (ext if self.upsert_by else None)
                place = new.get(ident) if ident is not None else None
                if place is not None:
                    line0, data0, owner0, ext0 = created[place]
                    merged_owner = owner_id if owner_given else owner0
                    created[place] = (line0, {**data0, **data}, merged_owner, ext0 or ext)
                    continue
                if ext is not None and ext in new_externals:
                    report.add_error(
                        line,
                        [
                            Problem(
                                EXTERNAL_ID_COLUMN,
                                f"{ext!r} is given to another new record, at line "
                                f"{new_externals[ext]}",
                                "give each record its own external id, or import with "
                                "--upsert-by external_id so that later rows update it",
                            )
                        ],
                    )
                    continue
                if ident is not None:
                    new[ident] = len(created)
                if ext is not None:
                    new_externals[ext] = line
                created.append((line, data, owner_id, ext))
                continue
            matches = by_field[key]
            if len(matches) > 1:
                ids = ", ".join(str(r.id) for r in matches[:5])
                report.add_error(
                    line,
                    [
                        Problem(
                            self.upsert_by or "",
                            f"{key!r} is the value of several records ({ids})",
                            "upsert by a field whose values are unique, or by external_id",
                        )
                    ],
                )
                continue
            record = current.get(matches[0].id, matches[0])
            owner = owner_id if owner_given else record.owner_id
            update = change_of(record, data, owner)
            if update is None:
                report.unchanged += 1
                continue
            if self._storable(line, update.data) is None:
                continue
            updates.append((line, update))
            current[record.id] = StoredRecord(
                record.id, record.type, owner, update.data, record.version
            )
        store.update_records(
            conn, [u for _, u in updates], actor_id=self.actor.id, now=self.insert.now
        )
        invitations.follow_updates(conn, [u for _, u in updates], now=self.insert.now)
        report.updated += len({u.record.id for _, u in updates})
        rows, external_ids = self._encoded(
            [(line, data, owner, True, ext) for line, data, owner, ext in created]
        )
        report.imported += self.insert.write(conn, rows, external_ids)

    def _storable(self, line: int, data: dict[str, Any]) -> bytes | None:
        """The values as JSON, or None (the row reported) when the database cannot store them."""
        try:
            encoded = orjson.dumps(data)
        except orjson.JSONEncodeError as exc:
            self.report.add_error(
                line, [Problem("", f"a value cannot be stored: {exc}", "use a smaller number")]
            )
            return None
        if b"\\u0000" in encoded:
            nul = [k for k, v in data.items() if type(v) is str and "\x00" in v]
            if nul:
                self.report.add_error(
                    line,
                    [Problem(key, "contains a NUL character (U+0000)", "remove it") for key in nul],
                )
                return None
        return encoded

    def _encoded(
        self, good: list[tuple[int, dict[str, Any], int | None, bool, str | None]]
    ) -> tuple[list[tuple[int | None, str]], list[str | None]]:
        """(owner id, data as JSON text) of the rows to insert, and their external ids; a row
        whose values the database cannot store is rejected here, alone, rather than failing the
        whole batch's statement."""
        rows: list[tuple[int | None, str]] = []
        external_ids: list[str | None] = []
        for line, data, owner_id, _, ext in good:
            encoded = self._storable(line, data)
            if encoded is not None:
                rows.append((owner_id, encoded.decode()))
                external_ids.append(ext)
        return rows, external_ids


def _position(source: _Source, report: ImportReport) -> int:
    """How far the import got: the bytes read from a file, the rows read from a stream."""
    position = source.position()
    return report.read if position is None else position


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
    upsert_by: str | None = None,
    on_batch: BatchCallback | None = None,
    resume: ImportReport | None = None,
    source_name: str | None = None,
) -> ImportReport:
    """Import records of `type_key` from a CSV or JSONL file (or open stream); managers and admins.

    `fmt` defaults to the file's suffix. `on_progress(rows_read, position)` is called after each
    batch, `position` being the bytes read so far when the input is a path (compare it with the
    file's size) and the rows read otherwise. `upsert_by` (`external_id` or a field key) makes
    rows that name an existing record update it (see the module's text). `source_name`: what
    the report and its problems call the input (an upload's file name), by default the path or
    the stream's name.

    Background imports (services.jobs): `on_batch(conn, report, position)` is called in each batch's
    transaction once its rows are written (in the single transaction of an all-or-nothing
    import, before it commits), so what it writes commits with the batch. `resume`, the report
    such a call saw last, continues an import that stopped: the rows up to its `last_line` are
    skipped (they were committed with it) and the counts go on from it.
    """
    require_manager(actor, "import records")
    if batch_size < 1:
        raise InvalidInputError(
            "the import", [Problem("batch_size", f"must be at least 1, got {batch_size}")]
        )
    with read_connection(ctx.engine) as conn:
        rtype = record_type_in(conn, type_key)
        if upsert_by is not None:
            check_upsert_by(conn, rtype, upsert_by)
    source = _Source(path_or_stream, fmt, source_name)
    report = ImportReport(
        type_key=type_key,
        source=source.name,
        all_or_nothing=all_or_nothing,
        upsert_by=upsert_by,
    )
    skip = 0
    if resume is not None and not all_or_nothing:  # all-or-nothing: nothing was committed
        report = ImportReport.from_dict({**resume.as_dict(), "source": source.name})
        skip = report.last_line
    importer = _Importer(
        ctx, actor, rtype, report, from_text=source.fmt == "csv", upsert_by=upsert_by
    )
    try:
        max_chars = ctx.settings.max_field_chars
        rows = (
            jsonl_rows(source.stream, rtype, max_chars)
            if source.fmt == "jsonl"
            else csv_rows(source.stream, rtype, source.name, max_chars)
        )
        if skip:
            rows = (row for row in rows if row[0] > skip)
        batches = importer.validate(rows, batch_size)

        def progress() -> None:
            if on_progress is not None:
                on_progress(report.read, _position(source, report))

        try:
            if all_or_nothing:
                try:
                    with ctx.engine.begin() as conn:
                        for batch in batches:
                            importer.write(conn, batch, insert=report.rejected == 0)
                            progress()
                        if report.rejected:
                            raise _RefusedError
                        if on_batch is not None:
                            on_batch(conn, report, _position(source, report))
                except _RefusedError:
                    report.imported = report.updated = report.unchanged = 0
            else:
                for batch in batches:
                    with ctx.engine.begin() as conn:
                        importer.write(conn, batch, insert=True)
                        if on_batch is not None:
                            on_batch(conn, report, _position(source, report))
                    progress()
            progress()
        except CrmflowError:
            raise
        except (JobLeaseLostError, JobStoppedError):
            raise
        except Exception as exc:
            if all_or_nothing:
                report.imported = report.updated = report.unchanged = 0
            raise ImportInterruptedError(report, exc) from exc
    finally:
        source.close()
    return report
