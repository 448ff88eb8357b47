"""`crmflow queries ...`: saved queries over records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from crmflow.cli.common import console, err_console, print_json, print_table, reports_errors, state
from crmflow.engine.source import parse_source
from crmflow.errors import InvalidInputError
from crmflow.services import queries

app = typer.Typer(
    help="Saved queries: filters over records, counted before use.", no_args_is_help=True
)


@app.command("list")
@reports_errors
def list_queries(after: int | None = None, limit: int = 50) -> None:
    page = queries.list_queries(state.context, after=after, limit=limit)
    rows = [(q.name, q.record_type, q.description) for q in page.items]
    print_table("Saved queries", ["name", "record type", "description"], rows)
    if page.next_after is not None:
        err_console.print(f"more: crmflow queries list --after {page.next_after}")


@app.command("show")
@reports_errors
def show(name: str) -> None:
    print_json(queries.get_query(state.context, name).as_dict())


@app.command("load")
@reports_errors
def load(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Create or update a saved query from a YAML or JSON file (managers and admins)."""
    view = queries.load_query_file(state.context, state.actor, file)
    count = queries.count_query(state.context, view.name)
    console.print(f"saved query {view.name!r} ({view.record_type}): {count} record(s) match now")


@app.command("count")
@reports_errors
def count(name: str) -> None:
    """How many records the saved query matches now."""
    print_json({"name": name, "count": queries.count_query(state.context, name)})


@app.command("try")
@reports_errors
def try_filter(
    record_type: str,
    filter_json: Annotated[str, typer.Argument(metavar="FILTER", help="The filter as JSON")],
) -> None:
    """Count an unsaved filter.

    Example: '{"all": [{"field": "status", "op": "=", "value": "client"}]}'
    """
    try:
        # Bounded like any document: a 100,000-digit number or deep nesting is refused clearly.
        data = parse_source(filter_json, source="FILTER", fmt="json").data
    except InvalidInputError as exc:
        problem = exc.problems[0]
        where = f" (line {problem.line})" if problem.line else ""
        err_console.print(
            f"[red]error:[/red] FILTER: {escape(problem.message)}{where}; {escape(problem.hint)}"
        )
        raise typer.Exit(1) from None
    print_json({"count": queries.count_filter(state.context, record_type, data)})


@app.command("preview")
@reports_errors
def preview(name: str, after: int | None = None, limit: int = 20) -> None:
    """The records the saved query matches now (a page)."""
    page = queries.preview_query(state.context, name, after=after, limit=limit)
    print_json([r.as_dict() for r in page.items])
    if page.next_after is not None:
        err_console.print(f"more: crmflow queries preview {name} --after {page.next_after}")


@app.command("delete")
@reports_errors
def delete(
    name: str,
    if_version: Annotated[
        int | None,
        typer.Option(
            help="Only if the query is still at this version (the `version` show prints)",
            min=1,
        ),
    ] = None,
) -> None:
    queries.delete_query(state.context, state.actor, name, if_version=if_version)
    console.print(f"deleted saved query {name!r}")
