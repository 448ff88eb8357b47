"""`crmflow lists ...`: lists of records (record groups), which flows fill with add_to_group.

Called lists here so that they are not confused with `crmflow groups` (groups of users)."""

from __future__ import annotations

from typing import Annotated

import typer

from crmflow.cli.common import err_console, print_json, print_table, reports_errors, state
from crmflow.services import record_groups

app = typer.Typer(
    help="Lists of records (a mailing list, 'Donors 2026'): what add_to_group fills.",
    no_args_is_help=True,
)


@app.command("list")
@reports_errors
def list_lists() -> None:
    """Every list with its number of records."""
    rows = [
        (g["name"], g["description"], g["members"])
        for g in record_groups.list_record_groups(state.context)
    ]
    print_table("Lists of records", ["name", "description", "records"], rows)


@app.command("create")
@reports_errors
def create(
    name: str,
    description: Annotated[str, typer.Option(help="What the list is for")] = "",
) -> None:
    """Create an empty list (managers and admins)."""
    print_json(record_groups.create_record_group(state.context, state.actor, name, description))


@app.command("members")
@reports_errors
def members(
    name: str,
    after: Annotated[int | None, typer.Option(help="Show records after this id")] = None,
    limit: int = 50,
) -> None:
    """One page of the list's records (ids ascending); the last line says how to get more."""
    page = record_groups.record_group_members_page(state.context, name, after=after, limit=limit)
    print_json([r.as_dict() for r in page.items])
    if page.next_after is not None:
        err_console.print(f"more: crmflow lists members {name} --after {page.next_after}")
