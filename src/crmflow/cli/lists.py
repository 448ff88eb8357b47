"""`crmflow lists ...`: lists of records (record groups), which flows fill with add_to_group.

Called lists here so that they are not confused with `crmflow groups` (groups of users).
The services are imported inside the commands (see cli/common.py): `--help` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from crmflow.cli.common import print_json, print_more, print_table, reports_errors, state

app = typer.Typer(
    help="Lists of records (a mailing list, 'Donors 2026'): what add_to_group fills.",
    no_args_is_help=True,
)

ListName = Annotated[str, typer.Argument(metavar="NAME", help="The list's name.")]


@app.command("list")
@reports_errors
def list_lists() -> None:
    """Every list with its number of records."""
    from crmflow.services import record_groups

    rows = [
        (g["name"], g["description"], g["members"])
        for g in record_groups.list_record_groups(state.context)
    ]
    print_table("Lists of records", ["name", "description", "records"], rows)


@app.command("create")
@reports_errors
def create(
    name: ListName,
    description: Annotated[str, typer.Option(metavar="TEXT", help="What the list is for")] = "",
) -> None:
    """Create an empty list (managers and admins)."""
    from crmflow.services import record_groups

    print_json(record_groups.create_record_group(state.context, state.actor, name, description))


@app.command("members")
@reports_errors
def members(
    name: ListName,
    after: Annotated[
        int | None, typer.Option(metavar="ID", help="Show records after this id")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="At most this many")] = 50,
) -> None:
    """One page of the list's records (ids ascending); the last line says how to get more."""
    from crmflow.services import record_groups

    page = record_groups.record_group_members_page(state.context, name, after=after, limit=limit)
    print_json([r.as_dict() for r in page.items])
    if page.next_after is not None:
        print_more("lists", "members", name, "--after", str(page.next_after))
