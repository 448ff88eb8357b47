"""`crmflow flows ...`: validate, create, edit, inspect and move flows through their lifecycle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from crmflow.cli.common import (
    console,
    err_console,
    print_json,
    print_table,
    read_text_file,
    reports_errors,
    state,
)
from crmflow.engine.definition import FlowStatus
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.engine.validation import ValidationContext
from crmflow.errors import CrmflowError, InvalidInputError
from crmflow.services import flows, lifecycle

app = typer.Typer(help="Flows: definitions, versions and lifecycle.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]


def _format(path: Path) -> Literal["yaml", "json"] | None:
    return "json" if path.suffix.lower() == ".json" else None


def _validation_context_or_builtins() -> ValidationContext:
    """The database's names when it is set up; otherwise the built-in record types only, so
    that `validate` also works in a Git checkout with no database."""
    try:
        return flows.validation_context(state.context, state.actor)
    except Exception:  # no database, or not migrated
        from crmflow.engine.recordtypes import type_catalog

        err_console.print(
            "note: no usable database; checking against the built-in record types only "
            "(users, groups, saved queries and flows are not checked)",
            highlight=False,
        )
        return ValidationContext(record_types=type_catalog())


@app.command("validate")
def validate(files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Check flow files; print every problem with its file, line and path. Exit 1 on any."""
    from crmflow.engine.validation import parse_flow

    context = _validation_context_or_builtins()
    failed = 0
    for path in files:
        try:
            definition = parse_flow(
                read_text_file(path),
                context=context,
                source=str(path),
                fmt=_format(path),
                max_chars=state.settings.max_document_chars,
            )
        except InvalidInputError as exc:
            failed += 1
            count = len(exc.problems)
            err_console.print(f"[red]{path}: invalid ({count} problem{'s' * (count != 1)})[/red]")
            for problem in exc.problems:
                sys.stdout.write(f"{problem}\n")
            continue
        except CrmflowError as exc:  # not UTF-8, for instance
            failed += 1
            err_console.print(f"[red]{exc.message}[/red]", highlight=False)
            continue
        console.print(
            f"[green]{path}: valid[/green] "
            f"(flow {definition.key!r}, {len(definition.steps)} steps)",
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


@app.command("create")
@reports_errors
def create(
    file: FileArg,
    confirm: Annotated[
        int | None, typer.Option(help="When the file says status: active, the start-list count")
    ] = None,
) -> None:
    """Create a flow from a YAML or JSON file (admins only). It starts as a draft."""
    view = flows.create_flow(
        state.context,
        state.actor,
        read_text_file(file),
        fmt=_format(file),
        source=str(file),
        confirm_count=confirm,
    )
    console.print(f"created flow {view.key!r} ({view.status.value}, version {view.version})")


@app.command("edit")
@reports_errors
def edit(
    key: str,
    file: FileArg,
    if_revision: Annotated[
        int | None,
        typer.Option(
            help="Only if the flow is still at this revision (the `revision` show prints); "
            "otherwise nothing is written and the exit code is 1",
            min=1,
        ),
    ] = None,
) -> None:
    """Replace a flow's definition: a draft in place; a paused or archived flow gets a new
    version and keeps the old one; an active flow must be paused first."""
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
    status: Annotated[FlowStatus | None, typer.Option(help="Only flows in this status")] = None,
) -> None:
    """The flows you can see (private flows only for their members)."""
    rows = [
        (f.key, f.name, f.record_type, f.status.value, f.version, f.visibility.value, f.inside)
        for f in flows.list_flows(state.context, state.actor, status=status)
    ]
    print_table(
        "Flows", ["key", "name", "record type", "status", "version", "visibility", "inside"], rows
    )


@app.command("show")
@reports_errors
def show(key: str) -> None:
    """A flow with its current definition, and its failing triggers (each with its error and
    next retry; empty when all run), as JSON."""
    # Imported here: the triggers package is only needed by this command.
    from crmflow.services.triggers.failures import failing_triggers

    flow = flows.show_flow(state.context, state.actor, key)
    print_json({**flow.as_dict(), "failing_triggers": failing_triggers(state.context, flow.id)})


@app.command("export")
@reports_errors
def export(key: str, version: Annotated[int | None, typer.Option()] = None) -> None:
    """Print the source text (YAML or JSON) of the current or a given version."""
    flow = flows.get_flow(state.context, state.actor, key, with_document=False)
    found = flows.get_flow_version(state.context, state.actor, key, version or flow.version)
    sys.stdout.write(str(found["source"]))


@app.command("history")
@reports_errors
def history(key: str) -> None:
    """Every lifecycle change and edit: when, who, from, to."""
    rows = [
        (c.at.isoformat(timespec="seconds"), c.actor, c.from_status, c.to_status, c.version, c.note)
        for c in flows.flow_history(state.context, state.actor, key)
    ]
    print_table(f"History of {key}", ["at", "who", "from", "to", "version", "note"], rows)


@app.command("start")
@reports_errors
def start(
    key: str,
    confirm: Annotated[
        int | None, typer.Option(help="The number of start-list records you confirm")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm the count shown now")] = False,
) -> None:
    """Start a draft. A flow with a start list shows how many records will enter and needs
    that number confirmed (interactively, with --confirm N, or with --yes)."""
    ctx, actor = state.context, state.actor
    if confirm is None:
        count = flows.start_list_count(ctx, actor, key)
        if count is not None:
            if yes:
                confirm = count
            elif sys.stdin.isatty():
                if not typer.confirm(f"Starting {key!r} enters {count} record(s). Start?"):
                    raise typer.Exit(1)
                confirm = count
    view = flows.change_status(ctx, actor, key, LifecycleAction.START, confirm_count=confirm)
    console.print(f"flow {view.key!r} is {view.status.value}")


def _lifecycle(action: LifecycleAction, key: str, confirm_inside: int | None = None) -> None:
    view = flows.change_status(
        state.context, state.actor, key, action, confirm_inside=confirm_inside
    )
    console.print(f"flow {view.key!r} is {view.status.value} ({view.inside} record(s) inside)")


@app.command("pause")
@reports_errors
def pause(
    key: str,
    confirm_inside: Annotated[
        int | None, typer.Option(help="The number of records inside, which are frozen")
    ] = None,
) -> None:
    """Pause: records inside are frozen at their step; nobody enters."""
    _lifecycle(LifecycleAction.PAUSE, key, confirm_inside)


def _moves(values: list[str]) -> dict[str, str]:
    moves: dict[str, str] = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise typer.BadParameter(
                f"{value!r}: write OLD_STEP=NEW_STEP or OLD_STEP=end", param_hint="--move"
            )
        moves[old.strip()] = new.strip()
    return moves


@app.command("resume")
@reports_errors
def resume(
    key: str,
    move: Annotated[
        list[str] | None,
        typer.Option(
            "--move",
            help="OLD=NEW: where the records of a step the new version removed go "
            "(a step of the new version, or 'end'); repeat for each such step",
        ),
    ] = None,
) -> None:
    """Resume a paused, draining or archived flow where each record was. After an edit the
    records move to the new version by step key (see `crmflow flows impact KEY` first)."""
    view = flows.change_status(
        state.context, state.actor, key, LifecycleAction.RESUME, moves=_moves(move or [])
    )
    console.print(f"flow {view.key!r} is {view.status.value} ({view.inside} record(s) inside)")


@app.command("impact")
@reports_errors
def impact(key: str) -> None:
    """What resuming does to the records inside: per step of the older version, how many
    records are there and what happens to them."""
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
def drain(key: str) -> None:
    """Progressive stop: nobody new enters; the records inside finish."""
    _lifecycle(LifecycleAction.DRAIN, key)


@app.command("archive")
@reports_errors
def archive(
    key: str,
    confirm_inside: Annotated[
        int | None, typer.Option(help="The number of records inside, which stop where they are")
    ] = None,
) -> None:
    """Archive: everything stops where it is (resume restarts it where it was)."""
    _lifecycle(LifecycleAction.ARCHIVE, key, confirm_inside)


@app.command("delete")
@reports_errors
def delete(key: str) -> None:
    """Delete a flow that never ran (one that ran can only be archived)."""
    flows.delete_flow(state.context, state.actor, key)
    console.print(f"deleted flow {key!r}")


@app.command("add-member")
@reports_errors
def add_member(key: str, username: str) -> None:
    """Give a user access to a private flow."""
    view = flows.add_member(state.context, state.actor, key, username)
    console.print(f"members of {key!r}: {', '.join(view.members)}")


@app.command("remove-member")
@reports_errors
def remove_member(key: str, username: str) -> None:
    view = flows.remove_member(state.context, state.actor, key, username)
    console.print(f"members of {key!r}: {', '.join(view.members) or '(none)'}")
