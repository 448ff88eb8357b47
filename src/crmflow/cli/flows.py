"""`crmflow flows ...`: validate, create, edit, inspect and move flows through their lifecycle.

The services and the engine are imported inside the commands (see cli/common.py): `--help` and
`flows validate` do not load the database layer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from crmflow.cli.common import (
    TYPE_FILE_SUFFIXES,
    confirmed,
    console,
    err_console,
    print_json,
    print_table,
    read_record_type_files,
    read_text_file,
    reports_errors,
    sqlite_file,
    state,
    without_pydantic_plugins,
)
from crmflow.errors import CrmflowError, InvalidInputError, Problem

if TYPE_CHECKING:
    from crmflow.engine.definition import FlowDefinition
    from crmflow.engine.definition.context_checks import TemplateCheck
    from crmflow.engine.lifecycle import LifecycleAction
    from crmflow.engine.validation import ValidationContext

app = typer.Typer(help="Flows: definitions, versions and lifecycle.", no_args_is_help=True)

FileArg = Annotated[
    Path,
    typer.Argument(
        metavar="FILE", exists=True, dir_okay=False, readable=True, help="A YAML or JSON flow."
    ),
]
FlowKey = Annotated[str, typer.Argument(metavar="KEY", help="The flow's key.")]
ConfirmCount = Annotated[
    int | None,
    typer.Option(
        "--confirm",
        metavar="N",
        help="The number of records inside, which you confirm (asked for in a terminal)",
    ),
]
# The flag's name before --confirm was the one name for every confirmation; still accepted.
ConfirmInside = Annotated[int | None, typer.Option("--confirm-inside", hidden=True)]


def _format(path: Path) -> Literal["yaml", "json"] | None:
    return "json" if path.suffix.lower() == ".json" else None


def _offline_context(
    types: list[Path], why: str, templates: TemplateCheck | None = None
) -> ValidationContext:
    """The built-in record types and those of `types` files; nothing from a database."""
    from crmflow.engine.recordtypes import type_catalog
    from crmflow.engine.validation import ValidationContext

    if why:
        typer.echo(
            f"note: {why}; checking against the built-in record types"
            f"{' and --types' if types else ''} only (users, groups, saved queries and flows "
            "are not checked)",
            err=True,
        )
    return ValidationContext(
        record_types=type_catalog(read_record_type_files(types)),
        allow_sql=state.offline.allow_sql_actions,
        email_templates=templates,
    )


def _template_files(paths: list[Path]) -> TemplateCheck:
    """The email templates that files (or the template files in folders) define, as `crmflow
    templates load` reads them; a file that is not a valid template is refused, located."""
    from crmflow.engine.source import parse_source
    from crmflow.engine.stored_templates import template_catalog, template_document

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in TYPE_FILE_SUFFIXES))
        else:
            files.append(path)
    documents = {}
    problems: list[Problem] = []
    for file in files:
        try:
            parsed = parse_source(
                read_text_file(file),
                source=str(file),
                fmt=_format(file),
                max_chars=state.offline.max_document_chars,
            )
            document = template_document(
                parsed.data, f"the email template file {file}", parsed.line_of, str(file)
            )
        except InvalidInputError as exc:
            problems.extend(exc.problems)
            continue
        documents[document.name] = document
    if problems:
        raise InvalidInputError("the email template files", problems)
    return template_catalog(documents)


def _validation_context(types: list[Path], templates: list[Path]) -> ValidationContext:
    """What flows are checked against. With --types: the built-in types and those files, and no
    database is opened (a Git checkout, CI). Without: the database's names when it exists and
    is set up, otherwise the built-in types. Never creates a database. With --templates: the
    stored email templates are those files (else the database's, else not checked)."""
    from_files = _template_files(templates) if templates else None
    if types:
        return _offline_context(types, "", from_files)
    if not state.database_may_exist:
        path = sqlite_file(state.offline.database_url)
        return _offline_context(
            [], f"no database at {path} (give --types FILE for your types)", from_files
        )
    from dataclasses import replace

    from crmflow.services import flows

    try:
        context = flows.validation_context(state.context, state.actor)
    except Exception:  # not migrated, not reachable, no such user
        return _offline_context([], "no usable database", from_files)
    return context if from_files is None else replace(context, email_templates=from_files)


@app.command("validate")
@reports_errors
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", exists=True, dir_okay=False, help="Flow files."),
    ],
    types: Annotated[
        list[Path] | None,
        typer.Option(
            "--types",
            metavar="FILE",
            exists=True,
            help="A record-type file (YAML or JSON, as for `crmflow types load`) or a folder of "
            "them; repeat for more. The flows are then checked against these and the built-in "
            "types, without any database (CI in Git).",
        ),
    ] = None,
    templates: Annotated[
        list[Path] | None,
        typer.Option(
            "--templates",
            metavar="DIR",
            exists=True,
            help="A folder of email template files (as for `crmflow templates load`) or one "
            "file; repeat for more. A send_email naming a template is checked against these "
            "instead of the database's (without a database and this option: not checked).",
        ),
    ] = None,
) -> None:
    """Check flow files; print every problem with its file, line and path. Exit 1 on any.
    Warnings (a field a template may show empty) are printed too, and do not fail.

    Never creates a database: without --types the flows are checked against the database's
    record types, users, groups, saved queries and email templates if it exists, else the
    built-in types.
    """
    with without_pydantic_plugins():  # the flow document's ~85 models are built here
        from crmflow.engine.validation import check_flow_text

    context = _validation_context(types or [], templates or [])
    failed = 0
    for path in files:
        try:
            checked = check_flow_text(
                read_text_file(path),
                context=context,
                source=str(path),
                fmt=_format(path),
                max_chars=state.offline.max_document_chars,
            )
        except InvalidInputError as exc:
            failed += 1
            count = len(exc.problems)
            verdict = f"{path}: invalid ({count} problem{'s' * (count != 1)})"
            typer.secho(verdict, fg="red", err=True)
            for problem in exc.problems:
                sys.stdout.write(f"{problem}\n")
            continue
        except CrmflowError as exc:  # not UTF-8, for instance
            failed += 1
            typer.secho(exc.message, fg="red", err=True)
            continue
        definition = checked.definition
        count = len(checked.warnings)
        warned = f", {count} warning{'s' * (count != 1)}" if count else ""
        typer.secho(f"{path}: valid", fg="green", nl=False)
        typer.echo(f" (flow {definition.key!r}, {len(definition.steps)} steps{warned})")
        for warning in checked.warnings:
            sys.stdout.write(f"warning: {warning}\n")
        if context.email_templates is None and _names_a_template(definition):
            typer.echo(
                f"note: {path}: the stored email templates it names are not checked "
                "(no database: give --templates DIR)",
                err=True,
            )
    if failed:
        raise typer.Exit(1)


def _names_a_template(definition: FlowDefinition) -> bool:
    actions = (a for step in definition.steps for a in getattr(step, "actions", ()))
    return any(getattr(action, "template", None) for action in actions)


@app.command("create")
@reports_errors
def create(
    file: FileArg,
    confirm: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="When the file says status: active, the start-list count "
            "(asked for in a terminal)",
        ),
    ] = None,
) -> None:
    """Create a flow from a YAML or JSON file (admins only). It starts as a draft."""
    from crmflow.services import flows

    ctx, actor, text = state.context, state.actor, read_text_file(file)
    view = confirmed(
        lambda count: flows.create_flow(
            ctx, actor, text, fmt=_format(file), source=str(file), confirm_count=count
        ),
        confirm,
        prompt=lambda n: (
            f"{file} starts its flow: its start list enters {n} record(s). Type {n} to confirm"
        ),
        command=["flows", "create", str(file)],
    )
    console.print(f"created flow {view.key!r} ({view.status.value}, version {view.version})")


@app.command("edit")
@reports_errors
def edit(
    key: FlowKey,
    file: FileArg,
    if_revision: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Only if the flow is still at this revision (the `revision` show prints); "
            "otherwise nothing is written and the exit code is 1",
            min=1,
        ),
    ] = None,
) -> None:
    """Replace a flow's definition: a draft in place; a paused or archived flow gets a new
    version and keeps the old one; an active flow must be paused first."""
    from crmflow.services import flows

    view = flows.update_flow(
        state.context,
        state.actor,
        key,
        read_text_file(file),
        fmt=_format(file),
        source=str(file),
        if_revision=if_revision,
    )
    console.print(f"flow {view.key!r} is at version {view.version} ({view.status.value})")


@app.command("list")
@reports_errors
def list_flows(
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATUS",
            help="Only flows in this status: draft, active, paused, draining or archived",
        ),
    ] = None,
) -> None:
    """The flows you can see (private flows only for their members)."""
    from crmflow.engine.definition import FlowStatus
    from crmflow.services import flows

    try:
        wanted = FlowStatus(status) if status is not None else None
    except ValueError:
        known = ", ".join(s.value for s in FlowStatus)
        raise typer.BadParameter(
            f"{status!r} is not one of {known}", param_hint="--status"
        ) from None
    rows = [
        (f.key, f.name, f.record_type, f.status.value, f.version, f.visibility.value, f.inside)
        for f in flows.list_flows(state.context, state.actor, status=wanted)
    ]
    print_table(
        "Flows", ["key", "name", "record type", "status", "version", "visibility", "inside"], rows
    )


@app.command("show")
@reports_errors
def show(key: FlowKey) -> None:
    """A flow with its current definition, and its failing triggers (each with its error and
    next retry; empty when all run), as JSON."""
    from crmflow.services import flows

    # Imported here: the triggers package is only needed by this command.
    from crmflow.services.triggers.failures import failing_triggers

    flow = flows.show_flow(state.context, state.actor, key)
    print_json({**flow.as_dict(), "failing_triggers": failing_triggers(state.context, flow.id)})


@app.command("export")
@reports_errors
def export(
    key: FlowKey,
    version: Annotated[
        int | None, typer.Option(metavar="N", help="This version (default: the current one)")
    ] = None,
) -> None:
    """Print the source text (YAML or JSON) of the current or a given version."""
    from crmflow.services import flows

    flow = flows.get_flow(state.context, state.actor, key, with_document=False)
    found = flows.get_flow_version(state.context, state.actor, key, version or flow.version)
    sys.stdout.write(str(found["source"]))


@app.command("history")
@reports_errors
def history(key: FlowKey) -> None:
    """Every lifecycle change and edit: when, who, from, to."""
    from crmflow.services import flows

    rows = [
        (c.at.isoformat(timespec="seconds"), c.actor, c.from_status, c.to_status, c.version, c.note)
        for c in flows.flow_history(state.context, state.actor, key)
    ]
    print_table(f"History of {key}", ["at", "who", "from", "to", "version", "note"], rows)


@app.command("start")
@reports_errors
def start(
    key: FlowKey,
    confirm: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="The number of start-list records you confirm (asked for in a terminal)",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", metavar="", help="Confirm the count, whatever it is now")
    ] = False,
) -> None:
    """Start a draft. A flow with a start list shows how many records will enter and needs
    that number confirmed (typed in a terminal, with --confirm N, or with --yes)."""
    from crmflow.engine.lifecycle import LifecycleAction
    from crmflow.services import flows

    ctx, actor = state.context, state.actor
    if yes and confirm is None:
        confirm = flows.start_list_count(ctx, actor, key)
    view = confirmed(
        lambda count: flows.change_status(
            ctx, actor, key, LifecycleAction.START, confirm_count=count
        ),
        confirm,
        prompt=lambda n: (
            f"Starting {key!r} enters the {n} record(s) of its start list. Type {n} to confirm"
        ),
        command=["flows", "start", key],
    )
    console.print(f"flow {view.key!r} is {view.status.value}")


def _stop_records(
    action: LifecycleAction,
    key: str,
    confirm: int | None,
    confirm_inside: int | None,
    *,
    doing: str,
) -> None:
    """Pause or archive: the records inside stop where they are, so their number is confirmed
    (`doing` begins the question: "Pausing 'x' freezes")."""
    from crmflow.services import flows

    if confirm_inside is not None:
        err_console.print("note: --confirm-inside is now --confirm", highlight=False)
    ctx, actor = state.context, state.actor
    view = confirmed(
        lambda count: flows.change_status(ctx, actor, key, action, confirm_inside=count),
        confirm if confirm is not None else confirm_inside,
        prompt=lambda n: f"{doing} the {n} record(s) inside. Type {n} to confirm",
        command=["flows", action.value, key],
    )
    _print_status(view.key, view.status.value, view.inside)


def _print_status(key: str, status: str, inside: int) -> None:
    console.print(f"flow {key!r} is {status} ({inside} record(s) inside)")


@app.command("pause")
@reports_errors
def pause(key: FlowKey, confirm: ConfirmCount = None, confirm_inside: ConfirmInside = None) -> None:
    """Pause: records inside are frozen at their step; nobody enters. With records inside,
    their number is confirmed (typed in a terminal, or --confirm N)."""
    from crmflow.engine.lifecycle import LifecycleAction

    doing = f"Pausing {key!r} freezes"
    _stop_records(LifecycleAction.PAUSE, key, confirm, confirm_inside, doing=doing)


def _moves(values: list[str]) -> dict[str, str]:
    moves: dict[str, str] = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise typer.BadParameter(
                f"{value!r}: write OLD_STEP=NEW_STEP or OLD_STEP=end", param_hint="--move"
            )
        old, new = old.strip(), new.strip()
        if moves.get(old, new) != new:
            raise typer.BadParameter(
                f"step {old!r} is given twice ({moves[old]} and {new}): give it once",
                param_hint="--move",
            )
        moves[old] = new
    return moves


@app.command("resume")
@reports_errors
def resume(
    key: FlowKey,
    move: Annotated[
        list[str] | None,
        typer.Option(
            "--move",
            metavar="OLD=NEW",
            help="Where the records of a step the new version removed go "
            "(a step of the new version, or 'end'); repeat for each such step",
        ),
    ] = None,
) -> None:
    """Resume a paused, draining or archived flow where each record was. After an edit the
    records move to the new version by step key (see `crmflow flows impact KEY` first)."""
    from crmflow.engine.lifecycle import LifecycleAction
    from crmflow.services import flows

    view = flows.change_status(
        state.context, state.actor, key, LifecycleAction.RESUME, moves=_moves(move or [])
    )
    _print_status(view.key, view.status.value, view.inside)


@app.command("impact")
@reports_errors
def impact(key: FlowKey) -> None:
    """What resuming does to the records inside: per step of the older version, how many
    records are there and what happens to them."""
    from crmflow.services import lifecycle

    rows = [
        (
            i.step,
            i.records,
            ", ".join(map(str, i.versions)),
            i.fate,
            i.detail,
        )
        for i in lifecycle.impact_preview(state.context, state.actor, key)
    ]
    if not rows:
        console.print(f"every record inside {key!r} is on its current version: nothing moves")
        return
    print_table(
        f"Resuming {key}", ["step", "records", "on version", "what happens", "detail"], rows
    )


@app.command("drain")
@reports_errors
def drain(key: FlowKey) -> None:
    """Progressive stop: nobody new enters; the records inside finish."""
    from crmflow.engine.lifecycle import LifecycleAction
    from crmflow.services import flows

    view = flows.change_status(state.context, state.actor, key, LifecycleAction.DRAIN)
    _print_status(view.key, view.status.value, view.inside)


@app.command("archive")
@reports_errors
def archive(
    key: FlowKey, confirm: ConfirmCount = None, confirm_inside: ConfirmInside = None
) -> None:
    """Archive: everything stops where it is (resume restarts it where it was). With records
    inside, their number is confirmed (typed in a terminal, or --confirm N)."""
    from crmflow.engine.lifecycle import LifecycleAction

    doing = f"Archiving {key!r} stops"
    _stop_records(LifecycleAction.ARCHIVE, key, confirm, confirm_inside, doing=doing)


@app.command("delete")
@reports_errors
def delete(key: FlowKey) -> None:
    """Delete a flow that never ran (one that ran can only be archived)."""
    from crmflow.services import flows

    flows.delete_flow(state.context, state.actor, key)
    console.print(f"deleted flow {key!r}")


Username = Annotated[str, typer.Argument(metavar="USER", help="A username.")]


@app.command("add-member")
@reports_errors
def add_member(key: FlowKey, username: Username) -> None:
    """Give a user access to a private flow."""
    from crmflow.services import flows

    view = flows.add_member(state.context, state.actor, key, username)
    console.print(f"members of {key!r}: {', '.join(view.members)}")


@app.command("remove-member")
@reports_errors
def remove_member(key: FlowKey, username: Username) -> None:
    """Take a user's access to a private flow away."""
    from crmflow.services import flows

    view = flows.remove_member(state.context, state.actor, key, username)
    console.print(f"members of {key!r}: {', '.join(view.members) or '(none)'}")
