"""`crmflow suppressions list/add/remove`: the addresses no flow emails any more (unsubscribed,
hard bounce, added by an admin); admins only."""

from __future__ import annotations

from typing import Annotated

import typer

from crmflow.cli.common import console, print_json, print_table, reports_errors, state

app = typer.Typer(
    help="The suppression list: addresses no flow emails any more (admins only).",
    no_args_is_help=True,
)

JsonOption = Annotated[
    bool, typer.Option("--json", metavar="", help="Print JSON instead of a summary.")
]
Address = Annotated[str, typer.Argument(metavar="ADDRESS", help="An email address.")]


@app.command("list")
@reports_errors
def list_suppressions(
    after: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Start after this address.")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="How many, by address.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """The suppressed addresses: why (unsubscribed, hard_bounce, admin), since when, and
    what put each there."""
    from crmflow.services.suppressions import list_page

    shown, next_after = list_page(state.context, state.actor, after=after, limit=limit)
    if as_json:
        print_json({"items": [s.as_dict() for s in shown], "next_after": next_after})
        return
    rows = ((s.address, s.reason, s.at.isoformat(), s.source) for s in shown)
    print_table("Suppressed addresses", ["address", "reason", "since (UTC)", "source"], rows)
    if next_after is not None:
        console.print(f"More: crmflow suppressions list --after {next_after}", highlight=False)


@app.command("add")
@reports_errors
def add_suppression(
    address: Address,
    note: Annotated[str, typer.Option(metavar="TEXT", help="Why, for the list.")] = "",
) -> None:
    """Stop every email to ADDRESS, transactional ones too (reason `admin`)."""
    from crmflow.services.suppressions import add

    done = add(state.context, state.actor, address, note=note)
    if done["added"]:
        console.print(f"{done['address']} is on the suppression list", highlight=False)
    else:
        console.print(f"{done['address']} was on the suppression list already", highlight=False)


@app.command("remove")
@reports_errors
def remove_suppression(address: Address) -> None:
    """Take ADDRESS off the list: flows email it again."""
    from crmflow.services.suppressions import remove

    done = remove(state.context, state.actor, address)
    console.print(f"{done['address']} is off the suppression list", highlight=False)
