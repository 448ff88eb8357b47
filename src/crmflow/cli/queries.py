"""`crmflow queries ...`: saved queries over records.

The services are imported inside the commands (see cli/common.py): `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crmflow.cli.common import (
    console,
    print_json,
    print_more,
    print_table,
    reports_errors,
    state,
)
from crmflow.cli.records import json_object

app = typer.Typer(
    help="Saved queries: filters over records, counted before use.", no_args_is_help=True
)

QueryName = Annotated[str, typer.Argument(metavar="QUERY", help="The saved query's name.")]
After = Annotated[int | None, typer.Option(metavar="ID", help="Show records after this id")]
Limit = Annotated[int, typer.Option(metavar="N", help="At most this many")]


@app.command("list")
@reports_errors
def list_queries(
    after: Annotated[
        int | None, typer.Option(metavar="ID", help="Show queries after this id")
    ] = None,
    limit: Limit = 50,
) -> None:
    """The saved queries (a page)."""
    from crmflow.services import queries

    page = queries.list_queries(state.context, after=after, limit=limit)
    rows = [(q.name, q.record_type, q.description) for q in page.items]
    print_table("Saved queries", ["name", "record type", "description"], rows)
    if page.next_after is not None:
        print_more("queries", "list", "--after", str(page.next_after))


@app.command("show")
@reports_errors
def show(name: QueryName) -> None:
    """A saved query with its filter, as JSON."""
    from crmflow.services import queries

    print_json(queries.get_query(state.context, name).as_dict())


@app.command("load")
@reports_errors
def load(
    file: Annotated[Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False)],
) -> None:
    """Create or update a saved query from a YAML or JSON file (managers and admins)."""
    from crmflow.services import queries

    view = queries.load_query_file(state.context, state.actor, file)
    count = queries.count_query(state.context, view.name)
    console.print(f"saved query {view.name!r} ({view.record_type}): {count} record(s) match now")


@app.command("count")
@reports_errors
def count(name: QueryName) -> None:
    """How many records the saved query matches now."""
    from crmflow.services import queries

    print_json({"name": name, "count": queries.count_query(state.context, name)})


@app.command("try")
@reports_errors
def try_filter(
    record_type: Annotated[str, typer.Argument(metavar="TYPE", help="A record type's key.")],
    filter_json: Annotated[str, typer.Argument(metavar="FILTER", help="The filter as JSON")],
) -> None:
    """Count an unsaved filter.

    Example: '{"all": [{"field": "status", "op": "=", "value": "client"}]}'
    """
    from crmflow.services import queries

    data = json_object(filter_json, "FILTER")
    print_json({"count": queries.count_filter(state.context, record_type, data)})


@app.command("preview")
@reports_errors
def preview(name: QueryName, after: After = None, limit: Limit = 20) -> None:
    """The records the saved query matches now (a page)."""
    from crmflow.services import queries

    page = queries.preview_query(state.context, name, after=after, limit=limit)
    print_json([r.as_dict() for r in page.items])
    if page.next_after is not None:
        print_more("queries", "preview", name, "--after", str(page.next_after))


@app.command("delete")
@reports_errors
def delete(
    name: QueryName,
    if_version: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Only if the query is still at this version (the `version` show prints)",
            min=1,
        ),
    ] = None,
) -> None:
    """Delete a saved query."""
    from crmflow.services import queries

    queries.delete_query(state.context, state.actor, name, if_version=if_version)
    console.print(f"deleted saved query {name!r}")
