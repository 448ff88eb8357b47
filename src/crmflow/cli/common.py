"""What every command shares: the context, the acting user, output, and error reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from crmflow.errors import CrmflowError
from crmflow.services.context import Actor, Context
from crmflow.services.users import actor_by_username
from crmflow.settings import Settings, get_settings

__all__ = [
    "State",
    "console",
    "err_console",
    "print_json",
    "print_table",
    "read_text_file",
    "reports_errors",
]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class State:
    """Set by the top-level callback: which user the command acts as."""

    acting_as: str | None = None
    _context: Context | None = None

    @property
    def settings(self) -> Settings:
        return get_settings()

    @property
    def database_label(self) -> str:
        """The database URL as it may be printed: without its password."""
        return make_url(self.settings.database_url).render_as_string(hide_password=True)

    @property
    def context(self) -> Context:
        if self._context is None:
            self._context = Context.from_settings(self.settings)
        return self._context

    @property
    def actor(self) -> Actor:
        return actor_by_username(self.context, self.acting_as or self.settings.cli_user)


state = State()


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print a CrmflowError (or a database that is not set up) clearly and exit with 1."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CrmflowError as exc:
            err_console.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
            confirm_with = getattr(exc, "confirm_with", None)
            if confirm_with:
                err_console.print(f"to confirm: {confirm_with}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
            first = str(exc.orig or exc).splitlines()[0]
            missing_table = "no such table" in first or "does not exist" in first
            advice = "; run `crmflow db upgrade` first" if missing_table else ""
            err_console.print(
                f"[red]error:[/red] the database at {state.database_label} answered: "
                f"{first}{advice}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def print_table(
    title: str, columns: Sequence[str], rows: Iterator[Sequence[Any]] | list[Any]
) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar over `total` bytes, and the callback that moves it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(_rows: int, position: int) -> None:
            # The import reports (rows read, bytes read); the bar runs over the file's bytes.
            progress.update(task, completed=position)

        yield update


def read_text_file(path: Path) -> str:
    """A document file as UTF-8 text within the server's document size, or InvalidInputError
    naming the file (and the offset of a byte that is not UTF-8), never a traceback."""
    from crmflow.services.documents import read_document

    return read_document(path, what=str(path), max_chars=state.settings.max_document_chars)
