"""The flow editor in forms (issue 13), for people who never write YAML: `/flows/new/form` makes
a new flow from a name, a record type and a trigger (whose own fields htmx swaps in when the
kind changes); `/flows/{key}/form` lists a flow's steps and edits one step at a time.

The forms are generated from the flow's JSON Schema (`services.flow_forms`), and a save goes
through `services.flows` exactly as the YAML editor's does: the same validation (its problems
shown at their field, in the words of `crmflow flows validate`) and the same lifecycle (a
started flow is locked until paused). A step is written back with ruamel's round trip: only the
changed keys move, the rest of the file keeps its bytes and comments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from crmflow.engine.lifecycle import edit_mode
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    Problem,
)
from crmflow.services import flow_forms, flows, queries, record_types
from crmflow.services.context import Actor, Context
from crmflow.services.flow_forms import FormField
from crmflow.services.permissions import require_admin
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import flash, render, see_other

router = web_router()

SOURCE_NAME = "forms"
DEFAULT_TRIGGER = "manual"
_TRIGGER_PREFIX = "triggers[0]."


def _text(form: FormData | Mapping[str, str], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _posted_fields(form: FormData) -> dict[str, str]:
    """The generated fields of a posted form (`f:<path>`); a checkbox posts a hidden `false`
    before its `true`, so the last value counts."""
    out = {}
    for name in form:
        if name.startswith("f:"):
            values = [v for v in form.getlist(name) if isinstance(v, str)]
            if values:
                out[name] = values[-1]
    return out


def _revision(form: FormData) -> int | None:
    raw = _text(form, "revision").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 30 else None


def _pickers(ctx: Context, record_type: str) -> dict[str, list[str]]:
    """Names to pick from: the record type's fields, and the saved queries of that type (the
    first page; a query further on can still be typed in the YAML view)."""
    out: dict[str, list[str]] = {}
    try:
        rtype = record_types.get_record_type(ctx, record_type) if record_type else None
    except (NotFoundError, InvalidInputError):
        rtype = None  # a type not known has no fields to offer; the validator says so
    if rtype is not None:
        out["field"] = rtype.field_keys
    page = queries.list_queries(ctx, limit=ctx.settings.page_size_max)
    out["query"] = [q.name for q in page.items if not record_type or q.record_type == record_type]
    return out


def _trigger_fields(
    ctx: Context, kind: str, record_type: str, form: Mapping[str, str] | None = None
) -> list[FormField]:
    schema = flow_forms.kind_schema(flow_forms.trigger_kinds(), kind)
    if schema is None:
        return []
    fields = flow_forms.form_fields(schema, None, pickers=_pickers(ctx, record_type))
    return flow_forms.refilled(fields, form) if form else fields


# -- a new flow in three clicks ------------------------------------------------------------------


def _new_page(
    request: Request,
    user: Actor,
    *,
    name: str = "",
    record_type: str = "",
    kind: str = DEFAULT_TRIGGER,
    posted: Mapping[str, str] | None = None,
    problems: Sequence[Problem] = (),
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    ctx = context_of(request)
    types = record_types.list_record_types(ctx)
    record_type = record_type or (types[0].key if types else "")
    fields = _trigger_fields(ctx, kind, record_type, posted)
    # The document's own fields show at their input; the trigger's at theirs; the rest above.
    top: dict[str, list[str]] = {"name": [], "record_type": [], "trigger": [], "key": []}
    below = [p for p in problems if p.path not in top]
    for problem in problems:
        if problem.path in top:
            top[problem.path].append(
                problem.message + (f" ({problem.hint})" if problem.hint else "")
            )
    at, other = flow_forms.problems_by_field(below, _TRIGGER_PREFIX, fields)
    return render(
        request,
        "flow_forms_new.html",
        status_code=status_code,
        flow_name=name,
        record_type=record_type,
        record_types=types,
        kind=kind,
        kinds=flow_forms.trigger_kinds(),
        fields=fields,
        field_problems=at,
        top_problems=top,
        problems=other,
        error=error,
        key=flow_forms.slug(name) if name else "",
    )


@router.get("/flows/new/form")
def new_form(request: Request, user: CurrentUser) -> Response:
    require_admin(user, "create flows")
    kind = request.query_params.get("kind", DEFAULT_TRIGGER)
    if flow_forms.kind_schema(flow_forms.trigger_kinds(), kind) is None:
        kind = DEFAULT_TRIGGER
    return _new_page(
        request,
        user,
        name=request.query_params.get("name", "")[:200],
        record_type=request.query_params.get("record_type", "")[:100],
        kind=kind,
    )


@router.get("/flows/new/form/trigger")
def trigger_fields(request: Request, user: CurrentUser) -> Response:
    """The trigger's own fields for the kind and record type picked (an htmx fragment)."""
    require_admin(user, "create flows")
    ctx = context_of(request)
    kind = request.query_params.get("trigger", DEFAULT_TRIGGER)
    record_type = request.query_params.get("record_type", "")[:100]
    schema = flow_forms.kind_schema(flow_forms.trigger_kinds(), kind)
    if schema is None:
        raise InvalidInputError(
            "the trigger", [Problem("trigger", f"{kind[:40]!r} is not a trigger kind", "pick one")]
        )
    kinds = {k.value: k for k in flow_forms.trigger_kinds()}
    return render(
        request,
        "flow_forms_trigger.html",
        fields=_trigger_fields(ctx, kind, record_type),
        field_problems={},
        about=kinds[kind].description,
    )


@router.post("/flows/new/form")
async def create(request: Request, user: CurrentUser) -> Response:
    require_admin(user, "create flows")
    ctx = context_of(request)
    form = await request.form()
    name = _text(form, "name").strip()
    record_type = _text(form, "record_type").strip()
    kind = _text(form, "trigger").strip() or DEFAULT_TRIGGER
    posted = _posted_fields(form)
    page: dict[str, Any] = {
        "name": name,
        "record_type": record_type,
        "kind": kind,
        "posted": posted,
    }
    problems: list[Problem] = []
    if not name:
        problems.append(Problem("name", "is empty", "give the flow a name"))
    if flow_forms.kind_schema(flow_forms.trigger_kinds(), kind) is None:
        problems.append(Problem("trigger", f"{kind[:40]!r} is not a trigger kind", "pick one"))
        page["kind"] = DEFAULT_TRIGGER
    if problems:
        return _new_page(request, user, **page, problems=problems, status_code=422)
    text, problems = flow_forms.new_flow_text(
        key=flow_forms.slug(name), name=name, record_type=record_type, trigger=kind, form=posted
    )
    if problems:
        return _new_page(request, user, **page, problems=problems, status_code=422)
    try:
        created = flows.create_flow(ctx, user, text, source=SOURCE_NAME)
    except InvalidInputError as exc:
        return _new_page(
            request,
            user,
            **page,
            problems=exc.problems,
            error="The flow was not created: fix the fields marked below.",
            status_code=422,
        )
    except ConflictError as exc:
        return _new_page(request, user, **page, error=str(exc), status_code=409)
    response = see_other(f"/flows/{created.key}/form")
    flash(response, f"Flow {created.name!r} created as a draft.")
    return response


# -- a flow's steps ------------------------------------------------------------------------------


def _current(request: Request, user: Actor, key: str) -> tuple[flows.FlowView, str]:
    """The flow (NotFoundError when `user` may not see it: a private flow stays unknown),
    then the admin check, and its current version's text."""
    ctx = context_of(request)
    flow = flows.get_flow(ctx, user, key)
    require_admin(user, "change flows")
    version = flows.get_flow_version(ctx, user, key, flow.version)
    return flow, str(version["source"])


def _steps_page(
    request: Request,
    flow: flows.FlowView,
    text: str,
    *,
    step: str = "",
    posted: Mapping[str, str] | None = None,
    problems: Sequence[Problem] = (),
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    ctx = context_of(request)
    locked = None
    try:
        edit_mode(flow.status)
    except ConflictError as exc:
        locked = str(exc)
    document = flow_forms.load_document(text)
    steps = flow_forms.step_summaries(document)
    fields: list[FormField] = []
    chosen = None
    at: dict[str, list[str]] = {}
    rest: list[str] = [f"{p.path}: {p.message}" if p.path else p.message for p in problems]
    if step:
        index, node = flow_forms.find_step(document, step)
        chosen = steps[next(i for i, s in enumerate(steps) if s.index == index)]
        schema = flow_forms.step_schema(node)
        if schema is not None:
            fields = flow_forms.form_fields(
                schema, node, pickers=_pickers(ctx, str(document.get("record_type") or ""))
            )
            if posted:
                fields = flow_forms.refilled(fields, posted)
            at, rest = flow_forms.problems_by_field(problems, f"steps[{index}].", fields)
    return render(
        request,
        "flow_forms.html",
        status_code=status_code,
        flow=flow,
        locked=locked,
        steps=steps,
        step=chosen,
        fields=fields,
        field_problems=at,
        problems=rest,
        error=error,
    )


@router.get("/flows/{key}/form")
def steps(request: Request, user: CurrentUser, key: str) -> Response:
    flow, text = _current(request, user, key)
    step = request.query_params.get("step", "")[:200]
    return _steps_page(request, flow, text, step=step)


@router.post("/flows/{key}/form")
async def save_step(request: Request, user: CurrentUser, key: str) -> Response:
    """Save one step's posted fields: only what changed is written back."""
    ctx = context_of(request)
    form = await request.form()
    flow, text = _current(request, user, key)
    step = _text(form, "step")
    posted = _posted_fields(form)
    page: dict[str, Any] = {"step": step, "posted": posted}
    try:
        edit_mode(flow.status)
    except ConflictError as exc:
        return _steps_page(request, flow, text, **page, error=str(exc), status_code=409)
    changed, problems = flow_forms.saved_step_text(text, step, posted)
    if problems:
        return _steps_page(request, flow, text, **page, problems=problems, status_code=422)
    if changed == text:
        response = see_other(f"/flows/{key}/form?step={quote(step)}")
        flash(response, "Nothing changed: the flow was not saved.")
        return response
    try:
        saved = flows.update_flow(
            ctx, user, key, changed, source=SOURCE_NAME, if_revision=_revision(form)
        )
    except InvalidInputError as exc:
        # Shown on the changed document, so that a new kind's own fields appear to fill in.
        return _steps_page(
            request,
            flow,
            changed,
            step=step,
            problems=exc.problems,
            error="The step was not saved: fix the fields marked below.",
            status_code=422,
        )
    except (ConflictError, PreconditionFailedError) as exc:
        return _steps_page(request, flow, text, **page, error=str(exc), status_code=409)
    response = see_other(f"/flows/{key}/form?step={quote(step)}")
    flash(response, f"Step {step!r} saved (version {saved.version}).")
    return response
