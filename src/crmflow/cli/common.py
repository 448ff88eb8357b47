"""What every command shares: the context, the acting user, output, and error reporting.

Start-up cost: this module and every command module import only typer and the standard
library at the top; rich, services, SQLAlchemy, settings and the engine are imported inside the
functions that use them, so that `crmflow --help` and `crmflow flows validate FILE` start at
once instead of loading the whole server first (bench/bench_cli_start.py measures it).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import typer
import typer.core

from crmflow.errors import (
    ConfirmationRequiredError,
    CrmflowError,
    InvalidInputError,
    NotFoundError,
    Problem,
)

if TYPE_CHECKING:
    from rich.console import Console

    from crmflow.cli.offline_settings import OfflineSettings
    from crmflow.engine.recordtypes import RecordType
    from crmflow.services.context import Actor, Context
    from crmflow.settings import Settings

__all__ = [
    "LazyConsole",
    "State",
    "confirmed",
    "console",
    "err_console",
    "print_json",
    "print_more",
    "print_table",
    "read_record_type_files",
    "read_text_file",
    "reports_errors",
    "without_pydantic_plugins",
]


def _help_shows_metavars_not_python_types() -> None:
    """`--help` names what to give (FILE, KEY, N), not the Python type behind it.

    This typer prints a parameter's Python type beside it (`KEY <str>`, `FILE <list[Path]>`,
    `--help <bool>`), with no setting to turn it off: an argument's metavar is already in its first
    column, and a flag takes no value, so for those the type column is left empty. An option
    keeps its metavar (every option here names one)."""
    option_type = typer.core.TyperOption.display_type_rich

    def argument(self: typer.core.TyperArgument, ctx: Any) -> str | None:
        return None

    def option(self: typer.core.TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag or self.count else option_type(self, ctx)

    typer.core.TyperArgument.display_type_rich = argument  # type: ignore[method-assign,assignment]
    typer.core.TyperOption.display_type_rich = option  # type: ignore[method-assign]


_help_shows_metavars_not_python_types()


class LazyConsole:
    """A rich Console on stdout or stderr, made at its first use.

    Importing rich takes about 25 ms, which a command whose output is plain lines (`flows
    validate`, with typer.echo) need not pay. The console is made with the same settings as
    before, when the first thing is printed (rich reads the terminal's size and colours then)."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, soft_wrap=True)
        return self._console

    def print(self, *objects: Any, **options: Any) -> None:
        """rich's Console.print (markup, highlight=..., markup=...)."""
        self.rich.print(*objects, **options)


def escape(text: str) -> str:
    """`text` with its rich markup escaped, to print as it is written."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


console = LazyConsole()
err_console = LazyConsole(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (`sqlite:///var/crmflow.db` -> var/crmflow.db), or None
    for another backend or an in-memory database.

    Read without SQLAlchemy (whose import alone takes longer than `flows validate` may), in the
    URL form SQLAlchemy reads: `sqlite[+driver]://[host]/path[?query]`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.partition("+")[0] != "sqlite":
        return None
    database = rest.partition("?")[0].partition("/")[2]
    if not database or database == ":memory:":
        return None
    return Path(database)


@dataclass
class State:
    """Set by the top-level callback: which user the command acts as."""

    acting_as: str | None = None
    _context: Context | None = None
    # Set by the commands that make a new database (`db upgrade`, `serve`); any other command
    # refuses a SQLite file that is not there rather than leave an empty one behind.
    creates_database: bool = False

    @property
    def settings(self) -> Settings:
        from crmflow.settings import get_settings

        try:
            return get_settings()
        except ValueError as exc:  # pydantic's ValidationError: a setting with a wrong value
            raise _settings_refused(exc) from None

    @property
    def offline(self) -> OfflineSettings:
        """The database URL and document limits, read without building Settings when they are
        plainly given (cli/offline_settings.py): what `flows validate` needs."""
        from crmflow.cli.offline_settings import OfflineSettings, read_offline_settings

        if self._context is None and (found := read_offline_settings()) is not None:
            return found
        return OfflineSettings.of(self.settings)

    @property
    def database_label(self) -> str:
        """The database URL as it may be printed: without its password."""
        from crmflow.store.database import printable_url

        return printable_url(self.settings.database_url)

    @property
    def database_may_exist(self) -> bool:
        """False when the database is a SQLite file that is not there: opening it would create
        it, which a command that only reads (`flows validate`) must not do."""
        if self._context is not None:
            return True
        path = sqlite_file(self.offline.database_url)
        return path is None or path.is_file()

    @property
    def context(self) -> Context:
        if self._context is None:
            from crmflow.services.context import Context

            if not self.creates_database and not self.database_may_exist:
                raise NotFoundError(
                    f"there is no database at {sqlite_file(self.offline.database_url)}: "
                    "`crmflow db upgrade` creates it (or set CRMFLOW_DATABASE_URL to yours)"
                )
            self._context = Context.from_settings(self.settings)
        return self._context

    @property
    def actor(self) -> Actor:
        from crmflow.services.users import actor_by_username

        return actor_by_username(self.context, self.acting_as or self.settings.cli_user)

    def command(self, *words: str) -> str:
        """`crmflow WORDS...` as the user can paste it: with their `--as USER`, shell-quoted."""
        acting = ["--as", self.acting_as] if self.acting_as else []
        return shlex.join(["crmflow", *acting, *words])


def _settings_refused(exc: ValueError) -> InvalidInputError:
    """The settings' ValidationError as a refusal naming each variable (CRMFLOW_PORT) and what
    it takes, instead of pydantic's traceback. Never the value given (pydantic's own text has
    it): it may be a password or a key, and this goes to logs."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):  # not pydantic's: its own words
        return InvalidInputError("the settings (environment or .env)", [Problem("", str(exc))])
    problems = [
        Problem(
            "CRMFLOW_" + "_".join(str(part) for part in error["loc"]).upper()
            if error.get("loc")
            else "settings",
            str(error["msg"]).removeprefix("Value error, "),
        )
        for error in errors()
    ]
    return InvalidInputError("the settings (environment or .env)", problems)


state = State()


def print_problems(refusal: InvalidInputError) -> None:
    """Every problem of a refused input, one a line, as many as the error lists (its first
    InvalidInputError.MAX_LISTED), then how many more there were."""
    count = len(refusal.problems)
    noun = "problem" if count == 1 else "problems"
    err_console.print(
        f"[red]error:[/red] {escape(refusal.what)} was refused ({count} {noun}):", highlight=False
    )
    listed = refusal.problems[: refusal.MAX_LISTED]
    for problem in listed:
        err_console.print(f"  - {escape(str(problem))}", highlight=False)
    if count > len(listed):
        err_console.print(f"  ... and {count - len(listed)} more", highlight=False)


def _database_error(exc: Exception) -> str | None:
    """The first line of what the database answered, when `exc` is a database error that a
    user can act on (a missing table, a refused connection); None for anything else."""
    if "sqlalchemy" not in sys.modules:  # no database was opened: not a database error
        return None
    from crmflow.store.database import OperationalError, ProgrammingError

    if not isinstance(exc, (OperationalError, ProgrammingError)):
        return None
    return str(exc.orig or exc).splitlines()[0]


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print a CrmflowError (or a database that is not set up) clearly and exit with 1."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except InvalidInputError as exc:
            print_problems(exc)
            raise typer.Exit(1) from None
        except CrmflowError as exc:
            err_console.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
            if isinstance(exc, ConfirmationRequiredError):
                # The service's suggestion, as this user would type it (their --as kept).
                words = shlex.split(exc.confirm_with)[1:]
                err_console.print(f"to confirm: {escape(state.command(*words))}", highlight=False)
            raise typer.Exit(1) from None
        except Exception as exc:
            first = _database_error(exc)
            if first is None:
                raise
            missing_table = "no such table" in first or "does not exist" in first
            advice = "; run `crmflow db upgrade` first" if missing_table else ""
            err_console.print(
                f"[red]error:[/red] the database at {escape(state.database_label)} answered: "
                f"{escape(first)}{advice}",
                highlight=False,
            )
            raise typer.Exit(1) from None

    return wrapper


def confirmed(
    change: Callable[[int | None], T],
    given: int | None,
    *,
    prompt: Callable[[int], str],
    command: Sequence[str],
) -> T:
    """Make `change`, which a service may refuse until the user confirms a number they have
    seen (ConfirmationRequiredError: records in a start list, records inside a flow).

    `given` is the user's --confirm N. Without it, in a terminal, the user is asked to type the
    number (`prompt(count)` asks); elsewhere (a script, a pipe) the change is
    refused with the exact command that confirms it: `command` (the words after `crmflow`),
    the user's --as, and `--confirm N`.
    """
    try:
        return change(given)
    except ConfirmationRequiredError as exc:
        suggestion = state.command(*command, "--confirm", str(exc.count))
        if given is not None or not sys.stdin.isatty():
            err_console.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
            err_console.print(f"to confirm: {escape(suggestion)}", highlight=False)
            raise typer.Exit(1) from None
        answer = typer.prompt(prompt(exc.count), default="", show_default=False)
        if answer.strip() != str(exc.count):
            err_console.print(f"not confirmed: nothing changed (or run: {escape(suggestion)})")
            raise typer.Exit(1) from None
        return change(exc.count)


@contextmanager
def without_pydantic_plugins() -> Iterator[None]:
    """Pydantic models built inside run without pydantic plugins (PYDANTIC_DISABLE_PLUGINS).

    The first model pydantic builds looks for plugins in the entry points of every installed
    package: about 20 ms, which `flows validate` (an offline check that only prints a verdict)
    need not pay. typer builds its own parameter validators the same way. A user's own
    PYDANTIC_DISABLE_PLUGINS setting is restored on the way out; models built later (a
    database's services) see the plugins as usual."""
    name = "PYDANTIC_DISABLE_PLUGINS"
    before = os.environ.get(name)
    os.environ[name] = "__all__"
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def print_more(*words: str) -> None:
    """The command that shows the next page (`more: crmflow ... --after N`), on stderr."""
    err_console.print(f"more: {state.command(*words)}", highlight=False, markup=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def print_table(
    title: str, columns: Sequence[str], rows: Iterator[Sequence[Any]] | list[Any]
) -> None:
    """A table; in a terminal it fits the window, and through a pipe or into a file it is as
    wide as its longest row, so that no value is cut or wrapped (rich would wrap at 80)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out = console.rich
    if out.is_terminal:
        out.print(table)
        return
    # Console.print(width=) cannot go past the console's own width: a console as wide as the table.
    unbounded = out.options.update_width(sys.maxsize)
    width = table.__rich_measure__(out, unbounded).maximum
    Console(width=max(width, len(title)), soft_wrap=True).print(table)


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
        console=err_console.rich,
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

    return read_document(path, what=str(path), max_chars=state.offline.max_document_chars)


TYPE_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def read_record_type_files(paths: Sequence[Path]) -> list[RecordType]:
    """The record types that files (or the type files in folders) define, without a database:
    what `flows validate --types` and `simulate` check flows against. A file that is not a
    valid type is refused with every problem, located in that file."""
    from crmflow.engine.recordtypes import record_type_from_definition
    from crmflow.engine.source import parse_source

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in TYPE_FILE_SUFFIXES))
        else:
            files.append(path)
    found: list[RecordType] = []
    problems: list[Problem] = []
    for file in files:
        fmt: Literal["json"] | None = "json" if file.suffix.lower() == ".json" else None
        try:
            parsed = parse_source(
                read_text_file(file),
                source=str(file),
                fmt=fmt,
                max_chars=state.offline.max_document_chars,
            )
        except InvalidInputError as exc:  # not YAML, not UTF-8, too large: already located
            problems.extend(exc.problems)
            continue
        try:
            found.append(record_type_from_definition(parsed.data))
        except InvalidInputError as exc:
            problems.extend(
                Problem(p.path, p.message, p.hint, parsed.line_of(p.path), str(file))
                for p in exc.problems
            )
    if problems:
        raise InvalidInputError("the record type files", problems)
    return found
