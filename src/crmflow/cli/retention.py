"""`crmflow prune` and `crmflow archive export --before DATE FILE`: bounded history by hand
(the worker prunes in the background too; docs/retention.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crmflow.cli.common import console, err_console, reports_errors, state

archive_app = typer.Typer(
    help="The history older than a date, written out before pruning removes it.",
    no_args_is_help=True,
)


@reports_errors
def prune() -> None:
    """Remove the history older than each kind's retention setting now, in small batches
    (CRMFLOW_RETENTION_*_DAYS; 0 keeps a kind forever). The worker does the same in the
    background; run `crmflow archive export` first to keep a copy."""
    from crmflow.services.retention import prune as run_prune

    result = run_prune(state.context)
    for kind, rows in result.deleted.items():
        console.print(f"{kind}: {rows:,} rows removed", highlight=False)
    if result.busy:
        err_console.print("another worker is pruning: it goes on with the rest", highlight=False)


@archive_app.command("export")
@reports_errors
def export(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Where to write the JSON lines ('-': stdout).")
    ],
    before: Annotated[
        str,
        typer.Option(
            "--before",
            metavar="DATE",
            help="Rows older than this: a date (midnight in CRMFLOW_TIMEZONE) or an ISO time.",
        ),
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", metavar="", help="Replace FILE if it exists.")
    ] = False,
) -> None:
    """Write what pruning would remove of the history older than DATE to FILE, one JSON object
    a line with its kind (step_run, message, record_change, not_entered, webhook_receipt,
    notification). Kinds kept forever by their setting are left out."""
    import sys

    from crmflow.errors import ConflictError, InvalidInputError, Problem
    from crmflow.services.archive import export_history, parse_before

    ctx = state.context
    moment = parse_before(before, ctx)
    if str(file) == "-":
        result = export_history(ctx, moment, sys.stdout)
    else:
        if file.exists() and not overwrite:
            raise ConflictError(f"{file} exists: give another FILE, or --overwrite to replace it")
        partial = file.with_name(file.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8") as out:
                result = export_history(ctx, moment, out)
            partial.replace(file)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            problem = Problem("FILE", f"cannot write {file}: {exc.strerror or exc}")
            raise InvalidInputError("the archive export", [problem]) from None
    rows = ", ".join(f"{n:,} {kind}" for kind, n in result.rows.items())
    err_console.print(
        f"wrote {result.total:,} rows older than {moment.isoformat()} ({rows})"
        + (f"; kept forever, not written: {', '.join(result.skipped)}" if result.skipped else ""),
        highlight=False,
    )
