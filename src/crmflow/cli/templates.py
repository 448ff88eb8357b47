"""`crmflow templates load/list/show`: stored email templates, which a flow's send_email names
with `template:` (docs/delivery.md, "Templates")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crmflow.cli.common import console, print_json, print_table, reports_errors, state

app = typer.Typer(
    help="Stored email templates (a flow's send_email names one with `template:`).",
    no_args_is_help=True,
)

JsonOption = Annotated[
    bool, typer.Option("--json", metavar="", help="Print JSON instead of a summary.")
]


@app.command("load")
@reports_errors
def load_template(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="A template document, YAML or JSON.")
    ],
) -> None:
    """Create or replace the template a file describes (admins): name, text, and optionally
    subject, html, from, reply_to, locale, defaults, variables."""
    from crmflow.services.templates import load_template_file

    view, created = load_template_file(state.context, state.actor, file)
    console.print(f"{'created' if created else 'updated'} email template {view.name}")


@app.command("list")
@reports_errors
def list_templates(as_json: JsonOption = False) -> None:
    """Every stored template: name, subject, whether it has an HTML part, who loaded it when."""
    from crmflow.services.templates import list_templates as listed

    views = listed(state.context, state.actor)
    if as_json:
        print_json([v.summary() for v in views])
        return
    rows = (
        (
            v.name,
            v.document.subject or "",
            "yes" if v.document.html is not None else "no",
            v.updated_at.isoformat(),
            v.updated_by or "",
        )
        for v in views
    )
    print_table("Email templates", ["name", "subject", "html", "updated at", "by"], rows)


@app.command("show")
@reports_errors
def show_template(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The template's name.")],
    as_json: JsonOption = False,
) -> None:
    """One template's document, as it was loaded."""
    from crmflow.services.templates import get_template

    view = get_template(state.context, state.actor, name)
    if as_json:
        print_json(view.as_dict())
        return
    document = view.document.as_document()
    for key, value in document.items():
        if key in ("text", "html"):
            continue
        console.print(f"{key}: {value}", highlight=False, markup=False)
    for key in ("text", "html"):
        if key in document:
            console.print(f"--- {key}", highlight=False, markup=False)
            console.print(document[key], highlight=False, markup=False)
