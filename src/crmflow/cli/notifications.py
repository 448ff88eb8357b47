"""`crmflow notifications list/read`: your inbox (docs/people.md, "Notifications inbox")."""

from __future__ import annotations

from typing import Annotated

import typer

from crmflow.cli.common import console, print_json, print_table, reports_errors, state

app = typer.Typer(
    help="Your inbox: notifications to you and to your groups, read or unread.",
    no_args_is_help=True,
)

JsonOption = Annotated[
    bool, typer.Option("--json", metavar="", help="Print JSON instead of a summary.")
]


@app.command("list")
@reports_errors
def list_notifications(
    unread: Annotated[bool, typer.Option("--unread", help="Only those you have not read.")] = False,
    after: Annotated[
        int | None, typer.Option(metavar="ID", help="Older than this id (the last shown).")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="How many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Your notifications, newest first."""
    from crmflow.services.notifications import list_page

    page = list_page(state.context, state.actor, unread=unread, after=after, limit=limit)
    if as_json:
        print_json(page.as_dict(lambda n: n.as_dict()))
        return
    rows = (
        (str(n.id), "" if n.read_at else "unread", n.created_at.isoformat(), n.to, n.message)
        for n in page.items
    )
    print_table("Notifications", ["id", "", "at (UTC)", "to", "message"], rows)
    if page.next_after is not None:
        more = state.command("notifications", "list", "--after", str(page.next_after))
        console.print(f"More: {more}", highlight=False, markup=False)


@app.command("read")
@reports_errors
def read(
    notification_id: Annotated[
        int | None, typer.Argument(metavar="ID", help="The notification to mark read.")
    ] = None,
    read_all: Annotated[bool, typer.Option("--all", help="Mark every one read.")] = False,
) -> None:
    """Mark a notification (or --all of them) read, for you."""
    from crmflow.errors import InvalidInputError, Problem
    from crmflow.services import notifications

    if read_all == (notification_id is not None):
        raise InvalidInputError(
            "the command", [Problem("ID", "give a notification's id or --all (one of the two)")]
        )
    if notification_id is None:
        count = notifications.read_all(state.context, state.actor)
        console.print(f"{count} notifications marked read", highlight=False)
        return
    view = notifications.read(state.context, state.actor, notification_id)
    console.print(f"notification {view.id} is read", highlight=False)
