"""The flows pages: `/flows` (the list, a switch per flow, hide the inactive ones) and
`/flows/{key}` (its diagram with the records at each step, the lifecycle buttons with the
confirmations the command line asks, resume with the impact preview and the step mapping, its
versions with a diff, delete, and why records did not enter).

The services decide everything: who sees a private flow (others get the 404 page), who may
change a flow (admins; the buttons are shown to them only, and a member's POST gets the
service's 403), which change is allowed now, and which number must be confirmed. A refused
confirmation (ConfirmationRequiredError) becomes a page asking for the number, as the command
line's prompt does; a resume that needs a step mapping (MovesRequiredError) sends the user to
the flow's resume form.

Starting a start list is one INSERT ... SELECT in the start's transaction (100,000 records
through `change_status`: 0.6 to 3 s on SQLite, 2 to 3.6 s on PostgreSQL, on a shared machine),
so a start of BACKGROUND_FROM records or more becomes a job (`services.jobs`, run by the worker
or the server's inline one) once its count was checked: the page answers at once and polls
`/flows/{key}/start-progress`, which reads the job's row, until the start committed or failed
(nothing started then). A restart loses nothing: the next runner starts the flow, once. The
worker then moves the records, which the flow page shows by polling its counts
(`/flows/{key}/counts`) while the flow runs. The editor (`/flows/new`, `/flows/{key}/edit`)
is `pages/flow_editor.py`'s.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from crmflow.engine.definition.flow import FlowDefinition, FlowStatus
from crmflow.engine.lifecycle import LifecycleAction, next_status
from crmflow.errors import (
    ConfirmationRequiredError,
    ConflictError,
    InvalidInputError,
    MovesRequiredError,
    Problem,
)
from crmflow.services import flow_test_mode, flows, jobs, lifecycle, run_views, triggers
from crmflow.services.context import Actor, Context
from crmflow.web.auth import CurrentUser, context_of, safe_next, web_router
from crmflow.web.pages.flows_diagram import NOT_ENTERED, mermaid_text, timing_text
from crmflow.web.render import flash, render, see_other

router = web_router()
log = logging.getLogger(__name__)

PAGE_SIZE = 25
BACKGROUND_FROM = 10_000  # a start list this long starts in the background
NOT_ENTERED_SHOWN = 50
RUNNING = (FlowStatus.ACTIVE, FlowStatus.DRAINING)
_ACTION_WORDS = {
    LifecycleAction.START: "Start",
    LifecycleAction.PAUSE: "Pause",
    LifecycleAction.RESUME: "Resume",
    LifecycleAction.DRAIN: "Stop progressively",
    LifecycleAction.ARCHIVE: "Archive",
}
_DONE_WORDS = {
    LifecycleAction.START: "started",
    LifecycleAction.PAUSE: "paused",
    LifecycleAction.RESUME: "resumed",
    LifecycleAction.DRAIN: "stopping progressively: nobody new enters, those inside finish",
    LifecycleAction.ARCHIVE: "archived",
}


def _allowed(status: FlowStatus, *, started: bool) -> list[LifecycleAction]:
    out = []
    for action in LifecycleAction:
        try:
            next_status(status, action, started=started)
        except ConflictError:
            continue
        out.append(action)
    return out


def _bad_parameter(name: str, message: str, hint: str) -> InvalidInputError:
    return InvalidInputError("the page's address", [Problem(name, message, hint)])


# -- starts in the background ---------------------------------------------------------------------


@router.get("/flows/{key}/start-progress")
def start_progress(request: Request, user: CurrentUser, key: str) -> Response:
    """Where the background start of `key` is (htmx polls it until it is over)."""
    ctx = context_of(request)
    flow = flows.get_flow(ctx, user, key, with_document=False)
    job = jobs.flow_start_of(ctx, key)
    return render(
        request, "flows_start_progress.html", job=job, flow=flow, seconds=_seconds(ctx, job)
    )


def _seconds(ctx: Context, job: jobs.JobView | None) -> int:
    return job.seconds(ctx.now()) if job is not None else 0


# -- the list ------------------------------------------------------------------------------------


@router.get("/flows")
def flow_list(
    request: Request,
    user: CurrentUser,
    hide_inactive: str = "",
    after: str | None = None,
) -> Response:
    ctx = context_of(request)
    hiding = hide_inactive in ("1", "on", "true", "yes")
    page = flows.flows_page(
        ctx, user, statuses=RUNNING if hiding else None, after=after, limit=PAGE_SIZE
    )
    keep = {"hide_inactive": "1"} if hiding else {}
    query = urlencode({**keep, "after": after} if after else keep)
    here = f"/flows?{query}" if query else "/flows"
    return render(
        request,
        "flows.html",
        page=page,
        hiding=hiding,
        here=here,
        toggle_url="/flows" + ("" if hiding else "?hide_inactive=1"),
        next_url=(
            "/flows?" + urlencode({**keep, "after": page.next_after})
            if page.next_after is not None
            else None
        ),
        first_url=("/flows?" + urlencode(keep)).rstrip("?") if after else None,
        running=RUNNING,
        can_change=user.is_admin,
    )


# -- a flow --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRow:
    key: str
    name: str
    kind: str
    timing: str
    inside: int
    active: bool


@dataclass(frozen=True)
class DiffLine:
    kind: str  # add | del | hunk | same
    text: str


def _definition(document: dict[str, Any]) -> FlowDefinition:
    return FlowDefinition.model_validate(document)


def _diagram(request: Request, user: Actor, key: str) -> dict[str, Any]:
    ctx = context_of(request)
    flow = flows.show_flow(ctx, user, key)
    assert flow.document is not None
    definition = _definition(flow.document)
    progress = run_views.flow_progress(ctx, user, key)
    counts = progress.per_step
    steps = [
        StepRow(
            s.key, s.name or s.key, s.type, timing_text(s.timing), counts.get(s.key, 0), s.active
        )
        for s in definition.ordered_steps()
    ]
    return {
        "flow": flow,
        "definition": definition,
        "progress": progress,
        "waiting": counts.get(NOT_ENTERED, 0),
        "steps": steps,
        "mermaid": mermaid_text(definition, counts),
        "polling": flow.status in RUNNING,
    }


def _version(value: str | None, name: str, last: int, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= last:
        raise _bad_parameter(
            name, f"{value!r} is not a version of this flow", f"choose from 1 to {last}"
        )
    return number


def _diff(request: Request, user: Actor, key: str, old: int, new: int) -> list[DiffLine]:
    ctx = context_of(request)
    before = str(flows.get_flow_version(ctx, user, key, old)["source"])
    after = str(flows.get_flow_version(ctx, user, key, new)["source"])
    lines = []
    for line in difflib.unified_diff(
        before.splitlines(),
        after.splitlines(),
        f"version {old}",
        f"version {new}",
        lineterm="",
    ):
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        lines.append(DiffLine(kind, line))
    return lines


@router.get("/flows/{key}")
def flow_page(
    request: Request,
    user: CurrentUser,
    key: str,
    old: str | None = None,
    new: str | None = None,
) -> Response:
    ctx = context_of(request)
    shown = _diagram(request, user, key)
    flow = shown["flow"]
    last = flow.version
    old_v = _version(old, "old", last, max(1, last - 1))
    new_v = _version(new, "new", last, last)
    diff = _diff(request, user, key, old_v, new_v) if old_v != new_v else []
    allowed = _allowed(flow.status, started=flow.started_at is not None) if user.is_admin else []
    start_count = (
        flows.start_list_count(ctx, user, key) if LifecycleAction.START in allowed else None
    )
    impact = lifecycle.impact_preview(ctx, user, key) if LifecycleAction.RESUME in allowed else []
    new_steps = [s.key for s in shown["definition"].ordered_steps()]
    job = jobs.flow_start_of(ctx, key)
    return render(
        request,
        "flow.html",
        **shown,
        test_mode=flow_test_mode.flow_test_mode(ctx, user, key),
        job=job,
        seconds=_seconds(ctx, job),
        allowed=allowed,
        words=_ACTION_WORDS,
        start_count=start_count,
        impact=impact,
        new_steps=new_steps,
        versions=list(range(1, last + 1)),
        old=old_v,
        new=new_v,
        diff=diff,
        not_entered=triggers.entry_decisions_for(ctx, user, flow_key=key, limit=NOT_ENTERED_SHOWN),
        not_entered_limit=NOT_ENTERED_SHOWN,
        can_change=user.is_admin,
    )


@router.get("/flows/{key}/counts")
def flow_counts(request: Request, user: CurrentUser, key: str) -> Response:
    """The diagram and the records at each step (htmx polls it while the flow runs)."""
    return render(request, "flows_counts.html", **_diagram(request, user, key))


# -- changes -------------------------------------------------------------------------------------


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _number(form: FormData, name: str, what: str) -> int | None:
    raw = _field(form, name)
    if raw == "":
        return None
    try:
        return int(raw.replace(",", "").replace(" ", "").replace("\u202f", ""))
    except ValueError:
        raise InvalidInputError(
            what, [Problem(name, f"{raw!r} is not a number", "type the number shown, in digits")]
        ) from None


def _confirm_page(
    request: Request,
    key: str,
    action: LifecycleAction,
    *,
    message: str,
    count: int | None,
    back: str,
    problems: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "flows_confirm.html",
        status_code=status_code,
        key=key,
        action=action.value,
        action_words=_ACTION_WORDS[action],
        message=message,
        count=count,
        back=back,
        problems=problems or [],
    )


@router.post("/flows/{key}/lifecycle")
async def change(request: Request, user: CurrentUser, key: str) -> Response:
    """One lifecycle change (the switches of the list and the buttons of the flow page)."""
    ctx = context_of(request)
    form = await request.form()
    back = safe_next(_field(form, "back") or f"/flows/{key}")
    try:
        action = LifecycleAction(_field(form, "action"))
    except ValueError:
        known = ", ".join(a.value for a in LifecycleAction)
        raise InvalidInputError(
            "the change", [Problem("action", "unknown change", f"one of {known}")]
        ) from None
    try:
        confirm = _number(form, "confirm", f"the confirmation to {action.value} {key!r}")
    except InvalidInputError as exc:
        return _confirm_page(
            request,
            key,
            action,
            message="Type the number of records, in digits.",
            count=None,
            back=back,
            problems=[p.message for p in exc.problems],
            status_code=422,
        )
    revision = _number(form, "revision", "the page's revision")
    moves = {
        name.removeprefix("move:"): value
        for name, value in form.multi_items()
        if name.startswith("move:") and isinstance(value, str) and value
    }
    if action is LifecycleAction.START and confirm is not None and confirm >= BACKGROUND_FROM:
        background = _start_in_background(request, user, key, confirm, revision, back)
        if background is not None:
            return background
    try:
        view = flows.change_status(
            ctx,
            user,
            key,
            action,
            confirm_count=confirm if action is LifecycleAction.START else None,
            confirm_inside=confirm if action is not LifecycleAction.START else None,
            moves=moves or None,
            if_revision=revision,
        )
    except ConfirmationRequiredError as exc:
        return _confirm_page(
            request,
            key,
            action,
            message=str(exc),
            count=exc.count,
            back=back,
            problems=["That number is not the one shown."] if confirm is not None else [],
            status_code=409 if confirm is not None else 200,
        )
    except MovesRequiredError as exc:
        response = see_other(f"/flows/{key}#resume")
        flash(response, f"{exc} — choose where their records go below.", "error")
        return response
    response = see_other(back)
    flash(response, f"{view.name}: {_DONE_WORDS[action]} ({view.inside} record(s) inside).")
    return response


def _start_in_background(
    request: Request, user: Actor, key: str, confirm: int, revision: int | None, back: str
) -> Response | None:
    """A long start list: its count checked now, its start run in the background. None for a
    flow with no start list: nobody enters at its start, whatever number was typed, so it
    starts at once (the caller's direct start, which says how many are inside)."""
    ctx = context_of(request)
    flows.get_flow(ctx, user, key, with_document=False)  # 404 for who may not see it
    now = flows.start_list_count(ctx, user, key)
    if now is None:
        return None
    if now != confirm:
        return _confirm_page(
            request,
            key,
            LifecycleAction.START,
            message=(
                f"the start list of {key!r} holds {now} record(s) now, not {confirm}; "
                f"check the list and confirm {now} to start"
            ),
            count=now,
            back=back,
            problems=["That number is not the one shown."],
            status_code=409,
        )
    _job, new = jobs.submit_flow_start(ctx, user, key, confirm, revision)
    response = see_other(f"/flows/{key}")
    if not new:
        flash(response, f"A start of {key} is already running; this page shows when it ends.")
    else:
        flash(response, f"Starting {key}: {confirm} record(s) are entering in the background.")
    return response


@router.post("/flows/{key}/delete")
async def delete(request: Request, user: CurrentUser, key: str) -> Response:
    ctx = context_of(request)
    form = await request.form()
    revision = _number(form, "revision", "the page's revision")
    try:
        flows.delete_flow(ctx, user, key, if_revision=revision)
    except ConflictError as exc:
        response = see_other(f"/flows/{key}")
        flash(response, str(exc), "error")
        return response
    response = see_other("/flows")
    flash(response, f"Flow {key} deleted.")
    return response
