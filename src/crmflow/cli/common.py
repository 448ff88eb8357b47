"""What every command shares: the context, the acting user, output, and error reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from crmflow.errors import CrmflowError
from crmflow.services.context import Actor, Context
from crmflow.services.users import actor_by_username
from crmflow.settings import Settings, get_settings

__all__ = ["State", "console", "err_console", "print_json", "print_table", "reports_errors"]

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
        except sa.exc.OperationalError as exc:
            first = str(exc.orig or exc).splitlines()[0]
            err_console.print(
                f"[red]error:[/red] the database at {state.settings.database_url} is not "
                f"usable ({first}); run `crmflow db upgrade` first",
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

        def update(done: int, total_now: int) -> None:
            progress.update(task, completed=done, total=total_now or total)

        yield update
