"""The flow editor: `/flows/new` and `/flows/{key}/edit` (a YAML editor whose problems show at
their line as one types, through `POST /flows/validate`), and the switches that turn a step or
an action on and off (`POST /flows/{key}/switch`).

Everything goes through `services.flows`: the same validation as `crmflow flows validate`, the
same lifecycle rules as `crmflow flows edit` (a started flow is locked until paused; a paused
one gets a new version). Without JavaScript the editor is a textarea in a plain form, and a
refused save renders the page again with the problems.
"""

from __future__ import annotations

import io
import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ruamel.yaml.error import YAMLError
from starlette.datastructures import FormData

from crmflow.engine.lifecycle import edit_mode
from crmflow.engine.numbers import whole_number
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    PreconditionFailedError,
    Problem,
)
from crmflow.services import flows
from crmflow.services.context import Actor
from crmflow.services.flow_forms import round_trip_yaml
from crmflow.services.permissions import require_admin
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import flash, render, see_other
from crmflow.web.security import IMPORT_MAP

router = web_router()

SOURCE_NAME = "editor"
# What /flows/new opens with: a small flow that validates, to change rather than to invent.
NEW_FLOW = """\
schema_version: 1
key: my-flow
name: My flow
record_type: contact
triggers:
  - type: manual
steps:
  - key: welcome
    name: Welcome
    actions:
      - type: history
        message: "Entered {{ record.id }}"
"""


def _problem_dict(problem: Problem, lines: list[str], severity: str) -> dict[str, Any]:
    """A problem as the editor shows it: its 1-based line and column (where the text of
    that line begins, after a list dash: the validator knows lines, not columns), path,
    message and hint."""
    line = problem.line if problem.line is not None and 1 <= problem.line <= len(lines) else None
    column = None
    if line is not None:
        text = lines[line - 1]
        rest = text.lstrip()
        while rest.startswith("- "):  # a list item's key begins after its dash
            rest = rest[2:].lstrip()
        column = len(text) - len(rest) + 1
    return {
        "line": line,
        "column": column,
        "path": problem.path,
        "message": problem.message,
        "hint": problem.hint or None,
        "severity": severity,
        "text": str(Problem(problem.path, problem.message, problem.hint, problem.line)),
    }


def _problems(text: str, problems: list[Problem], severity: str = "error") -> list[dict[str, Any]]:
    lines = text.splitlines() or [""]
    return [_problem_dict(p, lines, severity) for p in problems]


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _revision(form: FormData) -> int | None:
    # ASCII and short: int() refuses '²' and numbers of more than 4,300 digits.
    return whole_number(_field(form, "revision"), max_digits=30)


def _editor(
    request: Request,
    *,
    text: str,
    flow: flows.FlowView | None = None,
    problems: list[dict[str, Any]] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    locked = None
    if flow is not None:
        try:
            edit_mode(flow.status)
        except ConflictError as exc:
            locked = str(exc)
    return render(
        request,
        "flow_editor.html",
        status_code=status_code,
        import_map=IMPORT_MAP,
        text=text,
        flow=flow,
        locked=locked,
        problems=problems or [],
        error=error,
        steps=_switches(flow) if flow is not None else [],
    )


# -- validation as one types ---------------------------------------------------------------------


@router.post("/flows/validate")
async def validate(request: Request, user: CurrentUser) -> Response:
    """The problems of a flow document (the request's body, or its `source` form field), as
    JSON: `{"valid": bool, "problems": [...], "warnings": [...]}`, each with its line. The
    service's size limit applies: a document too large is one problem saying so."""
    ctx = context_of(request)
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        text = _field(await request.form(), "source")
    else:
        text = (await request.body()).decode("utf-8", errors="replace")
    try:
        checked = flows.check_flow_text(ctx, user, text, source=SOURCE_NAME)
    except InvalidInputError as exc:
        body = {
            "valid": False,
            "problems": _problems(text, exc.problems),
            "not_listed": exc.not_listed,
            "warnings": [],
        }
    else:
        body = {
            "valid": True,
            "key": checked.definition.key,
            "problems": [],
            "not_listed": 0,
            "warnings": _problems(text, checked.warnings, "warning"),
        }
    return JSONResponse(body, headers={"cache-control": "no-store"})


# -- a new flow ----------------------------------------------------------------------------------


@router.get("/flows/new")
def new_flow(request: Request, user: CurrentUser) -> Response:
    require_admin(user, "create flows")
    return _editor(request, text=NEW_FLOW)


@router.post("/flows/new")
async def create(request: Request, user: CurrentUser) -> Response:
    ctx = context_of(request)
    text = _field(await request.form(), "source")
    try:
        created = flows.create_flow(ctx, user, text, source=SOURCE_NAME)
    except InvalidInputError as exc:
        return _editor(
            request,
            text=text,
            problems=_problems(text, exc.problems),
            error=f"The flow was not saved: {_count(exc)} to fix.",
            status_code=422,
        )
    except ConflictError as exc:
        return _editor(request, text=text, error=str(exc), status_code=409)
    response = see_other(f"/flows/{created.key}")
    flash(response, f"Flow {created.name!r} created as a draft.")
    return response


def _count(exc: InvalidInputError) -> str:
    count = len(exc.problems) + exc.not_listed
    return f"{count} problem" if count == 1 else f"{count} problems"


# -- editing a flow ------------------------------------------------------------------------------


def _current(request: Request, user: Actor, key: str) -> tuple[flows.FlowView, str]:
    """The flow (NotFoundError when `user` may not see it) and its current version's text.
    Only admins edit: a member is refused after the visibility check, so that a private flow
    stays unknown to them."""
    ctx = context_of(request)
    flow = flows.get_flow(ctx, user, key)
    require_admin(user, "change flows")
    version = flows.get_flow_version(ctx, user, key, flow.version)
    return flow, str(version["source"])


@router.get("/flows/{key}/edit")
def edit(request: Request, user: CurrentUser, key: str) -> Response:
    flow, text = _current(request, user, key)
    return _editor(request, text=text, flow=flow)


@router.post("/flows/{key}/edit")
async def save(request: Request, user: CurrentUser, key: str) -> Response:
    ctx = context_of(request)
    form = await request.form()
    text = _field(form, "source")
    flow = flows.get_flow(ctx, user, key)
    require_admin(user, "change flows")
    try:
        saved = flows.update_flow(
            ctx, user, key, text, source=SOURCE_NAME, if_revision=_revision(form)
        )
    except InvalidInputError as exc:
        return _editor(
            request,
            text=text,
            flow=flow,
            problems=_problems(text, exc.problems),
            error=f"The flow was not saved: {_count(exc)} to fix.",
            status_code=422,
        )
    except (ConflictError, PreconditionFailedError) as exc:
        return _editor(request, text=text, flow=flow, error=str(exc), status_code=409)
    response = see_other(f"/flows/{key}")
    flash(response, f"Flow {saved.name!r} saved (version {saved.version}).")
    return response


# -- step and action switches --------------------------------------------------------------------


def _switches(flow: flows.FlowView) -> list[dict[str, Any]]:
    """The flow's steps and their actions with their `active` flags, as the document says."""
    document = flow.document or {}
    steps = []
    for step in document.get("steps") or []:
        actions = [
            {
                "index": index,
                "label": action.get("name")
                or action.get("key")
                or f"{action.get('type', 'action')} #{index + 1}",
                "type": action.get("type", ""),
                "active": action.get("active", True) is not False,
            }
            for index, action in enumerate(step.get("actions") or [])
            if isinstance(action, dict)
        ]
        steps.append(
            {
                "key": step.get("key", ""),
                "label": step.get("name") or step.get("key", ""),
                "active": step.get("active", True) is not False,
                "actions": actions,
            }
        )
    return steps


def switched_text(text: str, step: str, action: int | None, active: bool) -> str:
    """`text` (a flow's YAML or JSON) with step `step`, or its action number `action`, set
    active or not: comments and layout are kept (round trip), only that `active` changes. An
    `active: true` is left out (it is the default). InvalidInputError when there is no such
    step or action."""
    is_json = text.lstrip().startswith("{")
    yaml = round_trip_yaml(text)  # the file's own list indentation, so one line changes
    try:
        # ruamel's round trip would write a JSON document back as neither JSON nor YAML.
        document = json.loads(text) if is_json else yaml.load(text)
    except (ValueError, YAMLError):
        document = None
    where = f"steps[{step}]" if action is None else f"steps[{step}].actions[{action}]"
    steps = document.get("steps") if isinstance(document, dict) else None
    found = next(
        (s for s in steps or [] if isinstance(s, dict) and s.get("key") == step),
        None,
    )
    target: Any = found
    if found is not None and action is not None:
        actions = found.get("actions") or []
        target = actions[action] if 0 <= action < len(actions) else None
    if not isinstance(target, dict):
        raise InvalidInputError(
            "the switch",
            [Problem(where, "is not in the flow's current version", "reload the page")],
        )
    if active:
        target.pop("active", None)
    else:
        target["active"] = False
    if is_json:
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


@router.post("/flows/{key}/switch")
async def switch(request: Request, user: CurrentUser, key: str) -> Response:
    """Turn a step (or one of its actions) on or off: a change of the flow's document, saved
    through the services as any edit (so a started flow must be paused first)."""
    ctx = context_of(request)
    form = await request.form()
    flow, text = _current(request, user, key)
    step = _field(form, "step")
    raw_action = _field(form, "action").strip()
    raw_active = _field(form, "active")
    # An action's index in ASCII digits ('²' is a digit to isdigit(), not to int()).
    action = whole_number(raw_action, max_digits=6) if raw_action else None
    reload = "reload the page and use its switches"
    forged = [
        Problem(name, f"{raw[:20]!r} is not a switch of this page", reload)
        for name, raw, bad in (
            ("action", raw_action, bool(raw_action) and action is None),
            ("active", raw_active, raw_active not in ("true", "false")),
        )
        if bad
    ]
    if forged:
        raise InvalidInputError("the switch", forged)
    active = raw_active == "true"
    what = f"step {step!r}" if action is None else f"action {action + 1} of step {step!r}"
    back = f"/flows/{key}/edit#switches"
    try:
        edit_mode(flow.status)
        changed = switched_text(text, step, action, active)
        flows.update_flow(ctx, user, key, changed, source=SOURCE_NAME, if_revision=_revision(form))
    except (ConflictError, PreconditionFailedError) as exc:
        response = see_other(back)
        flash(response, f"{what} was not switched: {exc}", kind="error")
        return response
    except InvalidInputError as exc:
        response = see_other(back)
        flash(response, f"{what} was not switched: {exc}", kind="error")
        return response
    response = see_other(back)
    flash(response, f"{what} is now {'active' if active else 'inactive'}.")
    return response
