"""`crmflow types ...` and `crmflow records ...`.

The services are imported inside the commands (see cli/common.py): `--help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from crmflow.cli.common import (
    console,
    err_console,
    print_json,
    print_more,
    print_table,
    progress_bar,
    reports_errors,
    state,
)
from crmflow.errors import InvalidInputError, Problem

types_app = typer.Typer(help="Record types and their fields.", no_args_is_help=True)
if TYPE_CHECKING:
    from crmflow.services.imports import ImportReport
    from crmflow.services.record_sync import SyncReport

records_app = typer.Typer(help="Records: create, read, update, delete, import, export.")
Format = Literal["csv", "jsonl"]
IfVersion = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        help="Only if the record is still at this version (the `version` that get printed); "
        "otherwise nothing is written and the exit code is 1",
        min=1,
    ),
]
TypeKey = Annotated[str, typer.Argument(metavar="TYPE", help="A record type's key (contact...).")]
RecordId = Annotated[int, typer.Argument(metavar="ID", help="The record's id.")]
FileArg = Annotated[Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False)]
After = Annotated[int | None, typer.Option(metavar="ID", help="Show records after this id")]
Limit = Annotated[int, typer.Option(metavar="N", help="At most this many")]
Owner = Annotated[str | None, typer.Option(metavar="USER", help="Owner username (default: you)")]


def json_object(text: str, option: str) -> dict[str, Any]:
    """The JSON object an option holds, read within the document limits (a 100,000-digit
    number or deep nesting is refused clearly); InvalidInputError with every problem."""
    from crmflow.engine.source import parse_source

    value = parse_source(text, source=option, fmt="json").data
    if not isinstance(value, dict):
        raise InvalidInputError(option, [Problem("", "must be a JSON object {...}")])
    return value


@types_app.command("list")
@reports_errors
def list_types() -> None:
    """Every record type: the built-in ones and yours, with their fields."""
    from crmflow.services import record_types

    rows = [
        (t.key, t.name, "built-in" if t.builtin else "custom", ", ".join(t.field_keys))
        for t in record_types.list_record_types(state.context)
    ]
    print_table("Record types", ["key", "name", "kind", "fields"], rows)


@types_app.command("show")
@reports_errors
def show_type(key: TypeKey) -> None:
    """One record type with its fields, as JSON."""
    from crmflow.services import record_types

    print_json(record_types.get_record_type(state.context, key).as_dict())


@types_app.command("load")
@reports_errors
def load_type(file: FileArg) -> None:
    """Create or update a record type from a YAML or JSON file (admins only)."""
    from crmflow.services import record_types

    rtype = record_types.load_record_type_file(state.context, state.actor, file)
    console.print(f"record type {rtype.key!r}: {len(rtype.fields)} fields")


@records_app.command("list")
@reports_errors
def list_records(type_key: TypeKey, after: After = None, limit: Limit = 50) -> None:
    """One page of records (ids ascending); the last line says how to get the next page."""
    from crmflow.services import records

    page = records.list_records(state.context, type_key, after=after, limit=limit)
    print_json([r.as_dict() for r in page.items])
    if page.next_after is not None:
        print_more("records", "list", type_key, "--after", str(page.next_after))


@records_app.command("get")
@reports_errors
def get(record_id: RecordId) -> None:
    """One record, as JSON."""
    from crmflow.services import records

    print_json(records.get_record(state.context, record_id).as_dict())


@records_app.command("create")
@reports_errors
def create(
    type_key: TypeKey,
    data: Annotated[
        str, typer.Option(metavar="JSON", help='Field values as JSON: {"last_name": "Pop"}')
    ],
    owner: Owner = None,
) -> None:
    """Create a record; print it as JSON."""
    from crmflow.services import records

    record = records.create_record(
        state.context, state.actor, type_key, json_object(data, "--data"), owner=owner
    )
    print_json(record.as_dict())


@records_app.command("update")
@reports_errors
def update(
    record_id: RecordId,
    data: Annotated[
        str, typer.Option(metavar="JSON", help="The fields to change, as JSON (null clears one)")
    ] = "{}",
    owner: Annotated[str | None, typer.Option(metavar="USER", help="New owner username")] = None,
    if_version: IfVersion = None,
) -> None:
    """Change some fields or the owner of a record; print it as JSON."""
    from crmflow.services import records

    record = records.update_record(
        state.context,
        state.actor,
        record_id,
        json_object(data, "--data"),
        owner=owner,
        if_version=if_version,
    )
    print_json(record.as_dict())


@records_app.command("delete")
@reports_errors
def delete(record_id: RecordId, if_version: IfVersion = None) -> None:
    """Delete a record (its change events say who and when)."""
    from crmflow.services import records

    records.delete_record(state.context, state.actor, record_id, if_version=if_version)
    console.print(f"deleted record {record_id}")


@records_app.command("changes")
@reports_errors
def changes(record_id: RecordId) -> None:
    """The change events of one record (what triggers flows)."""
    from crmflow.services import records

    page = records.record_changes(state.context, record_id)
    print_json([c.as_dict() for c in page.items])


FormatOption = Annotated[
    Format | None,
    typer.Option("--format", metavar="csv|jsonl", help="Default: from the file's suffix"),
]


def _report_lines(command: str, report: ImportReport | SyncReport, file: Path) -> None:
    """Each refused line as `FILE:LINE: field: why` on stdout, the counts on stderr; exit 1
    when a line was refused."""
    for row_error in report.errors:
        for problem in row_error.problems:
            located = Problem(
                problem.path, problem.message, problem.hint, line=row_error.line, source=str(file)
            )
            sys.stdout.write(f"{located}\n")
    summary = report.as_dict()
    summary.pop("errors", None)
    err_console.print(f"{command}: {json.dumps(summary)}", highlight=False)
    if report.rejected:
        raise typer.Exit(1)


@records_app.command("import")
@reports_errors
def import_file(
    type_key: TypeKey,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False, readable=True)
    ],
    fmt: FormatOption = None,
    all_or_nothing: Annotated[
        bool,
        typer.Option(
            metavar="", help="Refuse the whole file if any row is bad (default: keep good rows)"
        ),
    ] = False,
    upsert_by: Annotated[
        str | None,
        typer.Option(
            "--upsert-by",
            metavar="external_id|FIELD",
            help="A row naming an existing record (by its external_id column, or by a field "
            "whose values are unique) updates it instead of adding a copy",
        ),
    ] = None,
) -> None:
    """Import a CSV (header of field keys, and optionally owner and external_id) or JSONL file.
    Good rows are kept and every bad row is reported with its line number, unless
    --all-or-nothing. With --upsert-by a second import of the same file updates, it does not
    duplicate."""
    from crmflow.services import imports

    total = file.stat().st_size
    with progress_bar(f"importing {file.name}", total) as update:
        report = imports.import_records(
            state.context,
            state.actor,
            type_key,
            file,
            fmt=fmt,
            on_progress=update,
            all_or_nothing=all_or_nothing,
            upsert_by=upsert_by,
        )
    _report_lines("import", report, file)


@records_app.command("sync")
@reports_errors
def sync(
    type_key: TypeKey,
    file: Annotated[
        Path, typer.Argument(metavar="FILE.jsonl", exists=True, dir_okay=False, readable=True)
    ],
) -> None:
    """Apply a batch of changes by external id, as POST /api/records/TYPE/changes does: one JSON
    object per line, {"op": "upsert"|"delete", "external_id": ..., "data": {...}, "owner": ...}
    (docs/integrations.md). Bad lines are reported with their number, the others applied."""
    from crmflow.services import record_sync

    limit = state.context.settings.max_request_bytes
    if file.stat().st_size > limit:
        raise InvalidInputError(
            f"the batch {file}",
            [
                Problem(
                    "",
                    f"is over {limit:,} bytes (CRMFLOW_MAX_REQUEST_BYTES), as the API would refuse",
                    "split it into several batches",
                )
            ],
        )
    report = record_sync.apply_changes(
        state.context, state.actor, type_key, file.read_bytes(), source=f"the batch {file}"
    )
    _report_lines("sync", report, file)


@records_app.command("export")
@reports_errors
def export(
    type_key: TypeKey,
    fmt: Annotated[Format, typer.Option("--format", metavar="csv|jsonl")] = "jsonl",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Default: standard output"),
    ] = None,
) -> None:
    """Export every record of a type as JSONL or CSV (to stdout or a file), with its owner and
    external id: importing it again with --upsert-by external_id updates the records that have
    an external id (a record without one is refused there, and added again without the
    option). In CSV a text a spreadsheet would run as a formula starts with ', which an import
    takes off."""
    from crmflow.services import imports

    if output is None:
        count = imports.export_records(state.context, type_key, sys.stdout, fmt=fmt)
    else:
        # Written beside the target and renamed at the end: a failed export (a misspelt type, a
        # lost database) never leaves an existing file empty or half written.
        partial = output.with_name(f".{output.name}.partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                count = imports.export_records(state.context, type_key, out, fmt=fmt)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    err_console.print(f"exported {count} {type_key} record(s)")


FieldArg = Annotated[str, typer.Argument(metavar="FIELD", help="The record type's file field.")]


@records_app.command("attach")
@reports_errors
def attach(
    record_id: RecordId,
    field: FieldArg,
    path: Annotated[Path, typer.Argument(metavar="PATH", exists=True, dir_okay=False)],
    name: Annotated[
        str | None, typer.Option(metavar="NAME", help="The file's name (default: PATH's)")
    ] = None,
) -> None:
    """Keep a file in a record's file field (replacing the one it had); print what was kept."""
    from crmflow.services import record_files

    ctx = state.context
    # Refused by its size before it is read: a huge file is not read whole.
    too_large = record_files.file_too_large(ctx, name or path.name, path.stat().st_size)
    if too_large is not None:
        raise too_large
    content = path.read_bytes()
    info, replaced = record_files.put_file(
        ctx, state.actor, record_id, field, name or path.name, content
    )
    print_json({**info.as_dict(), "replaced": replaced})


@records_app.command("file")
@reports_errors
def file(
    record_id: RecordId,
    field: FieldArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", metavar="PATH", dir_okay=False, help="Where to write it (- stdout)"
        ),
    ],
    force: Annotated[bool, typer.Option(help="Replace PATH if it exists")] = False,
) -> None:
    """Write the file of a record's file field to PATH."""
    from crmflow.services import record_files

    found = record_files.get_file(state.context, record_id, field)
    if str(output) == "-":
        sys.stdout.buffer.write(found.content)
        sys.stdout.buffer.flush()
        return
    if output.exists() and not force:
        raise InvalidInputError(
            "--output", [Problem(str(output), "exists already", "pass --force to replace it")]
        )
    output.write_bytes(found.content)
    info = found.info
    done = f"wrote {info.filename} ({info.size:,} bytes, {info.content_type}) to {output}"
    err_console.print(done, markup=False, highlight=False)


@records_app.command("files")
@reports_errors
def files(
    record_id: RecordId,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """List a record's files: field, name, size, content type, SHA-256, when uploaded."""
    from crmflow.services import record_files

    kept = record_files.list_files(state.context, record_id)
    if as_json:
        print_json([f.as_dict() for f in kept])
        return
    if not kept:
        err_console.print(
            f"record {record_id} keeps no file (upload one with `crmflow records attach "
            f"{record_id} FIELD PATH`)",
            markup=False,
            highlight=False,
        )
        return
    rows = [
        (f.field, f.filename, f"{f.size:,}", f.content_type, f.sha256, f.created_at.isoformat())
        for f in kept
    ]
    columns = ["field", "name", "bytes", "type", "sha256", "uploaded at"]
    print_table(f"Files of record {record_id}", columns, rows)


@records_app.command("detach")
@reports_errors
def detach(record_id: RecordId, field: FieldArg) -> None:
    """Delete the file of a record's file field."""
    from crmflow.services import record_files

    record_files.delete_file(state.context, state.actor, record_id, field)
    console.print(f"deleted the file of record {record_id}'s {field}", markup=False)
