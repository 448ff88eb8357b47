"""`crmflow backup FILE`: a copy of the SQLite database taken while crmflow runs; on PostgreSQL,
the pg_dump command to use instead (docs/deploy.md, "Backups")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crmflow.cli.common import console, err_console, reports_errors, state


@reports_errors
def backup(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Where to write the copy (a new file).")
    ],
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            metavar="",
            help="Replace FILE if it exists (only once the new copy is complete and checked).",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Run PRAGMA integrity_check on the copy before keeping it (reads it all once).",
        ),
    ] = True,
) -> None:
    """Back up the database to FILE while crmflow keeps running.

    SQLite: one consistent snapshot, taken with SQLite's online backup API (the worker and the
    API go on writing meanwhile), written as one self-contained file readable by its owner only,
    checked, and renamed to FILE only when complete. To restore: stop crmflow, delete the
    database's -wal and -shm files, put FILE in the database's place.

    PostgreSQL: prints the pg_dump command that backs it up (and exits with 1: no copy made)."""
    from crmflow.cli.common import sqlite_file

    url = state.settings.database_url
    if sqlite_file(url) is None and url.split(":", 1)[0].startswith("postgresql"):
        _say_pg_dump(url, str(file))
        raise typer.Exit(1)
    from crmflow.store.backup import backup_sqlite

    done = backup_sqlite(state.context.engine, file, overwrite=overwrite, check=check)
    mib = done.size / 1_048_576
    console.print(
        f"backed up {done.source} to {done.path}: {mib:,.1f} MiB, {done.records:,} records, "
        f"migration {done.revision or 'none'}, integrity {done.integrity}, "
        f"in {done.seconds:.1f} s",
        highlight=False,
    )


def _say_pg_dump(url: str, file: str) -> None:
    from crmflow.store.backup import pg_dump_command, pg_restore_command

    err_console.print(
        f"the database is PostgreSQL ({state.database_label}): crmflow does not copy it itself; "
        "back it up with pg_dump, while crmflow runs (one consistent snapshot):",
        highlight=False,
    )
    # The command alone on stdout, so that a script can take it.
    console.print(pg_dump_command(url, file), highlight=False, markup=False)
    err_console.print(
        "pg_dump reads the password from PGPASSWORD or ~/.pgpass (it is left out here). "
        "To restore it (with crmflow stopped; it replaces what the database holds):\n"
        f"  {pg_restore_command(url, file)}",
        highlight=False,
        markup=False,
    )
