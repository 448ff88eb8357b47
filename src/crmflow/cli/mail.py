"""`crmflow mail list/show`: the emails the mail catcher kept (no CRMFLOW_SMTP_URL set), as
they would have gone."""

from __future__ import annotations

from typing import Annotated

import typer

from crmflow.cli.common import console, print_json, print_table, reports_errors, state

app = typer.Typer(
    help="The emails the mail catcher kept (when no CRMFLOW_SMTP_URL is set).",
    no_args_is_help=True,
)

JsonOption = Annotated[
    bool, typer.Option("--json", metavar="", help="Print JSON instead of a summary.")
]


@app.command("list")
@reports_errors
def list_mail(
    limit: Annotated[int, typer.Option(metavar="N", help="How many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The newest emails the mail catcher kept: id, when, to, subject, flow and record."""
    from crmflow.services.mail import list_caught

    mails = list_caught(state.context, state.actor, limit=limit)
    if as_json:
        print_json([m.summary() for m in mails])
        return
    rows = (
        (
            m.id,
            m.caught_at and m.caught_at.isoformat(),
            ", ".join(m.to),
            m.subject,
            m.flow_key,
            m.record_id,
        )
        for m in mails
    )
    print_table("Caught emails", ["id", "caught at (UTC)", "to", "subject", "flow", "record"], rows)


@app.command("show")
@reports_errors
def show_mail(
    mail_id: Annotated[int, typer.Argument(metavar="ID", help="The id `crmflow mail list` shows.")],
    as_json: JsonOption = False,
) -> None:
    """One email the mail catcher kept: its headers and its text, decoded (`--json`: the
    message as it would have been sent). A signed link in it (an approval's, an unsubscribe)
    is shown only to the person it is for; others see it as [link for maria only]."""
    from crmflow.services.mail import caught, readable

    mail = caught(state.context, state.actor, mail_id)
    if as_json:
        print_json(mail.as_dict())
        return
    console.print(readable(mail.rendered), highlight=False, markup=False, end="")
