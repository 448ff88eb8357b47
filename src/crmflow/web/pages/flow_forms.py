"""The flow editor in forms (issue 13), for people who never write YAML: `/flows/new/form` makes
a new flow from a name, a record type and a trigger (whose own fields htmx swaps in when the
kind changes); `/flows/{key}/form` lists a flow's steps in run order beside its live diagram,
and edits one step at a time.

The list's operations (`/flows/{key}/form/add`, `move`, `active`, `remove`) are POSTs that change
the text with `services.flow_form_steps` and save the whole flow (validated as by `crmflow flows
validate`); a refusal shows each problem at its step. Asked by htmx they answer the list alone
and trigger `ff-changed`, on which the diagram fetches itself again; without JavaScript they
redirect to the page. `/flows/{key}/form/trigger` edits a trigger with the new flow's fields;
"Try it" (`/flows/{key}/form/records`, `/flows/{key}/form/try`) simulates the flow for a record
picked by name or id, as /simulate does.

The forms are generated from the flow's JSON Schema (`services.flow_forms`), and a save goes
through `services.flows` exactly as the YAML editor's does: the same validation (its problems
shown at their field, in the words of `crmflow flows validate`) and the same lifecycle (a
started flow is locked until paused). A step is written back with ruamel's round trip: only the
changed keys move, the rest of the file keeps its bytes and comments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import quote
from zoneinfo import available_timezones

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.lifecycle import edit_mode
from crmflow.engine.numbers import whole_number
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    Problem,
)
from crmflow.services import (
    flow_form_settings,
    flow_form_steps,
    flow_form_triggers,
    flow_forms,
    flows,
    form_pickers,
    queries,
    record_types,
    run_views,
    simulation,
)
from crmflow.services.context import Actor, Context
from crmflow.services.flow_forms import FormField
from crmflow.services.flow_validation import parse_flow_text
from crmflow.services.permissions import require_admin
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.pages.flows_diagram import mermaid_text
from crmflow.web.pages.records import search_filter, title_of
from crmflow.web.pages.tasks import when
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
    return whole_number(_text(form, "revision"), max_digits=30)


def _pickers(
    ctx: Context, record_type: str, user: Actor | None = None
) -> dict[str, list[tuple[str, str]]]:
    """What the pickers offer (services.form_pickers): the record type's fields, the saved
    queries of that type, users, groups, lists, record types; with `user`, also the flows
    and templates they may see."""
    return form_pickers.picker_data(ctx, user, record_type)


def _step_choices(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The document's step keys, for the pickers of `next`, `goto`, `else` and `on_timeout`."""
    return [(s.key, f"{s.name} ({s.type})") for s in flow_forms.step_summaries(document) if s.key]


KEY_HELP = (
    "Renaming a step also renames it where other steps go to it (next, goto, else, on timeout):"
    " no reference is left pointing at the old key."
)


def _trigger_fields(
    ctx: Context, kind: str, record_type: str, form: Mapping[str, str] | None = None
) -> list[FormField]:
    schema = flow_forms.kind_schema(flow_forms.trigger_kinds(), kind)
    if schema is None:
        return []
    fields = flow_forms.form_fields(schema, None, pickers=_pickers(ctx, record_type))
    return flow_forms.refilled(fields, form) if form else fields


# -- checked as one types -----------------------------------------------------------------------


def _validated(
    request: Request, user: Actor, text: str, *, excluding: str | None = None
) -> list[Problem]:
    """The problems of `text` as a save would find them (the validator of `crmflow flows
    validate`, against this organisation's names), without saving anything."""
    try:
        parse_flow_text(
            context_of(request), user, text, fmt=None, source=SOURCE_NAME, excluding_flow=excluding
        )
    except InvalidInputError as exc:
        return list(exc.problems)
    return []


def _changed(opened: Sequence[FormField], posted: Mapping[str, str]) -> set[str]:
    """The paths of the fields whose posted value is not the one the form opened with (a field
    the form did not have, as a new kind's, counts as changed)."""
    before: dict[str, str] = {}
    for top in opened:
        for f in top.walk():
            before[f.name] = (
                ("true" if f.checked else "false") if f.widget == "checkbox" else f.value
            )
    return {
        name[2:]
        for name, value in posted.items()
        if before.get(name) != value.replace("\r\n", "\n")
    }


def _live(
    request: Request,
    fields: Sequence[FormField],
    field_problems: Mapping[str, list[str]],
    problems: Sequence[str],
    slots: Sequence[tuple[str, list[str]]] = (),
    *,
    changed: set[str],
) -> Response:
    """The answer to a form checked as one types: each field's problem slot again (out of
    band), empty when the field is right; always 200, or htmx would not swap it. A field is
    only said wrong once changed (it or a field inside it): a new form's empty required
    fields are not red before one has typed anything; the save still says every problem."""
    shown = {
        path: errs
        for path, errs in field_problems.items()
        if any(c == path or c.startswith((f"{path}.", f"{path}[")) for c in changed)
    }
    return render(
        request,
        "flow_forms_check.html",
        headers={"cache-control": "no-store"},
        fields=fields,
        field_problems=shown,
        problems=problems,
        slots=slots,
    )


# -- saving a form -------------------------------------------------------------------------------

Show = Callable[..., Response]
"""A form of the editor again, as posted, with the keywords `problems`, `error` and
`status_code` (what the form's own page function takes besides the form's values)."""


def _commit(
    save: Callable[[], flows.FlowView], show: Show, *, invalid: str
) -> flows.FlowView | Response:
    """`save()` (the flow validated and saved through `services.flows`), or, when it is
    refused, the form again: the validator's problems at their fields under `invalid` (422),
    or why it conflicts (409: someone saved meanwhile, or the flow's status changed)."""
    try:
        return save()
    except InvalidInputError as exc:
        return show(problems=exc.problems, error=invalid, status_code=422)
    except (ConflictError, PreconditionFailedError) as exc:
        return show(error=str(exc), status_code=409)


def _save_form(
    request: Request,
    user: Actor,
    flow: flows.FlowView,
    text: str,
    form: FormData,
    *,
    edit: Callable[[], tuple[str, Sequence[Problem]]],
    show: Show,
    invalid: str,
    unchanged: str,
    refused_on: Callable[[str], Show] | None = None,
) -> flows.FlowView | Response:
    """Save a form of the editor on `flow` (whose current text is `text`): the flow as saved,
    or the answer to send instead. A started flow is locked (409, `edit` not run); `edit()`
    gives the text with the form applied and the problems of values it could not read (422,
    at their fields); an unchanged text is not saved (a redirect to `unchanged` saying so);
    then `_commit`. `refused_on(changed)`, when given, is the form that shows the problems the
    validator found in the text `changed` (by default `show`)."""
    locked = _locked(flow)
    if locked:
        return show(error=locked, status_code=409)
    changed, problems = edit()
    if problems:
        return show(problems=problems, status_code=422)
    if changed == text:
        response = see_other(unchanged)
        flash(response, "Nothing changed: the flow was not saved.")
        return response
    ctx = context_of(request)
    revision = _revision(form)

    def save() -> flows.FlowView:
        return flows.update_flow(
            ctx, user, flow.key, changed, source=SOURCE_NAME, if_revision=revision
        )

    return _commit(save, refused_on(changed) if refused_on else show, invalid=invalid)


def _saved_to(url: str, message: str) -> Response:
    response = see_other(url)
    flash(response, message)
    return response


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
    live: bool = False,
) -> Response:
    ctx = context_of(request)
    types = record_types.list_record_types(ctx)
    record_type = record_type or (types[0].key if types else "")
    opened = _trigger_fields(ctx, kind, record_type)
    fields = flow_forms.refilled(opened, posted) if posted else opened
    # The document's own fields show at their input; the trigger's at theirs; the rest above.
    top: dict[str, list[str]] = {"name": [], "record_type": [], "trigger": [], "key": []}
    below = [p for p in problems if p.path not in top]
    for problem in problems:
        if problem.path in top:
            top[problem.path].append(
                problem.message + (f" ({problem.hint})" if problem.hint else "")
            )
    at, other = flow_forms.problems_by_field(below, _TRIGGER_PREFIX, fields)
    if live:
        slots = [
            ("ff-name-problem", top["name"] + top["key"] if name else []),
            ("ff-record-type-problem", top["record_type"]),
            ("ff-trigger-problem", top["trigger"]),
        ]
        return _live(request, fields, at, other, slots, changed=_changed(opened, posted or {}))
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
    created = _commit(
        lambda: flows.create_flow(ctx, user, text, source=SOURCE_NAME),
        partial(_new_page, request, user, **page),
        invalid="The flow was not created: fix the fields marked below.",
    )
    if isinstance(created, Response):
        return created
    return _saved_to(f"/flows/{created.key}/form", f"Flow {created.name!r} created as a draft.")


@router.post("/flows/new/form/check")
async def check_new(request: Request, user: CurrentUser) -> Response:
    """The new-flow form checked as one types: its problems at their fields; nothing saved."""
    require_admin(user, "create flows")
    form = await request.form()
    name = _text(form, "name").strip()
    record_type = _text(form, "record_type").strip()
    kind = _text(form, "trigger").strip() or DEFAULT_TRIGGER
    posted = _posted_fields(form)
    problems: list[Problem] = []
    if not name:
        problems.append(Problem("name", "is empty", "give the flow a name"))
    if flow_forms.kind_schema(flow_forms.trigger_kinds(), kind) is None:
        problems.append(Problem("trigger", f"{kind[:40]!r} is not a trigger kind", "pick one"))
        kind = DEFAULT_TRIGGER
    else:
        # Without a name yet, the rest is still checked (under a stand-in name).
        key = flow_forms.slug(name or "new flow")
        text, found = flow_forms.new_flow_text(
            key=key, name=name or "New flow", record_type=record_type, trigger=kind, form=posted
        )
        problems += found or _validated(request, user, text)
    return _new_page(
        request,
        user,
        name=name,
        record_type=record_type,
        kind=kind,
        posted=posted,
        problems=problems,
        live=True,
    )


# -- a flow's steps ------------------------------------------------------------------------------


def _current(request: Request, user: Actor, key: str) -> tuple[flows.FlowView, str]:
    """The flow (NotFoundError when `user` may not see it: a private flow stays unknown),
    then the admin check, and its current version's text."""
    ctx = context_of(request)
    flow = flows.get_flow(ctx, user, key)
    require_admin(user, "change flows")
    version = flows.get_flow_version(ctx, user, key, flow.version)
    return flow, str(version["source"])


def _locked(flow: flows.FlowView) -> str | None:
    try:
        edit_mode(flow.status)
    except ConflictError as exc:
        return str(exc)
    return None


def _diagram(request: Request, user: Actor, flow: flows.FlowView) -> str:
    """The mermaid text of the flow's current version, with the records at each step."""
    ctx = context_of(request)
    try:
        definition = FlowDefinition.model_validate(flow.document or {})
    except ValueError:
        return ""  # a stored version always reads; the list still shows
    counts = run_views.flow_progress(ctx, user, flow.key).per_step
    return mermaid_text(definition, counts)


def _triggers(document: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    """(index, kind, title) of each of the flow's triggers."""
    titles = {k.value: k.title for k in flow_forms.trigger_kinds()}
    out = []
    for index, trigger in enumerate(document.get("triggers") or []):
        kind = str(trigger.get("type", "")) if isinstance(trigger, Mapping) else ""
        out.append((index, kind, titles.get(kind, kind or "?")))
    return out


def _editor(
    request: Request,
    user: Actor,
    flow: flows.FlowView,
    text: str,
    *,
    checked: str | None = None,
    problems: Sequence[Problem] = (),
    announce: str = "",
    focus: str = "",
) -> dict[str, Any]:
    """What the step list shows: the steps in run order, each with the problems the validator
    found at it in `checked` (the refused text; `text` when none)."""
    document = flow_forms.load_document(text)
    at, rest = flow_form_steps.problems_by_step(
        problems, flow_forms.load_document(checked) if checked is not None else document
    )
    return {
        "flow": flow,
        "locked": _locked(flow),
        "ordered": flow_form_steps.ordered_steps(document),
        "step_problems": at,
        "list_problems": rest,
        "announce": announce,
        "focus": focus,
        "kinds": flow_forms.step_kinds(),
    }


def _steps_page(
    request: Request,
    user: Actor,
    flow: flows.FlowView,
    text: str,
    *,
    step: str = "",
    posted: Mapping[str, str] | None = None,
    problems: Sequence[Problem] = (),
    list_problems: Sequence[Problem] = (),
    checked: str | None = None,
    error: str | None = None,
    status_code: int = 200,
    live: bool = False,
) -> Response:
    ctx = context_of(request)
    document = flow_forms.load_document(text)
    steps = flow_forms.step_summaries(document)
    fields: list[FormField] = []
    opened: list[FormField] = []
    chosen = None
    at: dict[str, list[str]] = {}
    rest: list[str] = [f"{p.path}: {p.message}" if p.path else p.message for p in problems]
    if step:
        index, node = flow_forms.find_step(document, step)
        chosen = steps[next(i for i, s in enumerate(steps) if s.index == index)]
        schema = flow_forms.step_schema(node)
        if schema is not None:
            pickers = _pickers(ctx, str(document.get("record_type") or ""), user)
            pickers["step"] = [c for c in _step_choices(document) if c[0] != step]
            fields = opened = [
                replace(f, help=KEY_HELP) if f.path == "key" else f
                for f in flow_forms.form_fields(schema, node, pickers=pickers)
            ]
            if posted:
                fields = flow_forms.refilled(fields, posted)
            at, rest = flow_forms.problems_by_field(problems, f"steps[{index}].", fields)
    if live:
        return _live(request, fields, at, rest, changed=_changed(opened, posted or {}))
    return render(
        request,
        "flow_forms.html",
        status_code=status_code,
        **_editor(request, user, flow, text, checked=checked, problems=list_problems),
        step=chosen,
        fields=fields,
        field_problems=at,
        problems=rest,
        error=error,
        mermaid=_diagram(request, user, flow),
        triggers=_triggers(document),
        record_type=str(document.get("record_type") or ""),
    )


@router.get("/flows/{key}/form")
def steps(request: Request, user: CurrentUser, key: str) -> Response:
    flow, text = _current(request, user, key)
    step = request.query_params.get("step", "")[:200]
    return _steps_page(request, user, flow, text, step=step)


@router.get("/flows/{key}/form/diagram")
def diagram(request: Request, user: CurrentUser, key: str) -> Response:
    """The live diagram (an htmx fragment, fetched again after each change of the list)."""
    flow, _ = _current(request, user, key)
    return render(
        request, "flow_forms_diagram.html", flow=flow, mermaid=_diagram(request, user, flow)
    )


@router.post("/flows/{key}/form")
async def save_step(request: Request, user: CurrentUser, key: str) -> Response:
    """Save one step's posted fields: only what changed is written back."""
    form = await request.form()
    flow, text = _current(request, user, key)
    step = _text(form, "step")
    posted = _posted_fields(form)
    # A renamed step is found under its new key (references to it were renamed too).
    renamed = posted.get("f:key", "").strip() or step
    show = partial(_steps_page, request, user, flow, text, step=step, posted=posted)
    saved = _save_form(
        request,
        user,
        flow,
        text,
        form,
        edit=lambda: flow_forms.saved_step_text(text, step, posted),
        show=show,
        invalid="The step was not saved: fix the fields marked below.",
        unchanged=f"/flows/{key}/form?step={quote(step)}",
        # A renamed step: the saved text has it under its old key, the form as posted on it.
        # Otherwise shown on the changed document, so that a new kind's own fields appear.
        refused_on=lambda changed: (
            show
            if renamed != step
            else partial(_steps_page, request, user, flow, changed, step=step)
        ),
    )
    if isinstance(saved, Response):
        return saved
    if renamed != step:
        done = (
            f"Step {step!r} renamed {renamed!r} and saved (version {saved.version}); the steps"
            " that went to it go to its new key."
        )
    else:
        done = f"Step {step!r} saved (version {saved.version})."
    return _saved_to(f"/flows/{key}/form?step={quote(renamed)}", done)


@router.post("/flows/{key}/form/check")
async def check_step(request: Request, user: CurrentUser, key: str) -> Response:
    """One step's form checked as one types: the posted fields applied to the document in
    memory and validated as a save would; each problem at its field; nothing saved."""
    form = await request.form()
    flow, text = _current(request, user, key)
    step = _text(form, "step")
    posted = _posted_fields(form)
    changed, problems = flow_forms.saved_step_text(text, step, posted)
    if not problems and changed != text:
        problems = _validated(request, user, changed, excluding=key)
    return _steps_page(
        request, user, flow, text, step=step, posted=posted, problems=problems, live=True
    )


# -- the list's operations -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    text: str  # the flow's text after the operation
    doing: str  # "moving step 'Bye' to position 2 of 3", for a refusal
    done: str  # "Step 'Bye' moved to position 2 of 3"
    focus: str  # the step to focus in the list after it


def _is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _refused(
    request: Request,
    user: Actor,
    flow: flows.FlowView,
    text: str,
    *,
    error: str,
    problems: Sequence[Problem] = (),
    checked: str | None = None,
    status_code: int,
) -> Response:
    """The list as it was, with why the operation was refused: each problem at its step."""
    if _is_htmx(request):
        context = _editor(
            request, user, flow, text, checked=checked, problems=problems, announce=error
        )
        return render(
            request, "flow_forms_editor.html", status_code=status_code, error=error, **context
        )
    return _steps_page(
        request,
        user,
        flow,
        text,
        list_problems=problems,
        checked=checked,
        error=error,
        status_code=status_code,
    )


async def _operate(
    request: Request,
    user: Actor,
    key: str,
    change: Callable[[str, FormData], _Change],
) -> Response:
    """Run one operation of the list: `change(text, form)` gives the new text, what to say
    and the step to focus. The whole flow is validated and saved through
    `services.flows` (a started flow is locked until paused); a refusal shows the list as it
    was, each problem at its step."""
    ctx = context_of(request)
    form = await request.form()
    flow, text = _current(request, user, key)
    locked = _locked(flow)
    if locked:
        return _refused(request, user, flow, text, error=locked, status_code=409)
    try:
        made = change(text, form)
        changed, done, focus = made.text, made.done, made.focus
    except InvalidInputError as exc:
        return _refused(
            request, user, flow, text, error=str(exc), problems=exc.problems, status_code=422
        )
    saved = flow
    if changed != text:
        committed = _commit(
            lambda: flows.update_flow(
                ctx, user, key, changed, source=SOURCE_NAME, if_revision=_revision(form)
            ),
            # A refusal: the list as it was, the validator's problems at the steps they concern
            # in the text it refused.
            partial(_refused, request, user, flow, text, checked=changed),
            invalid=f"Not saved: {made.doing} would make the flow invalid (see the step marked).",
        )
        if isinstance(committed, Response):
            return committed
        saved, text = committed, changed
    message = f"{done} (version {saved.version})." if saved is not flow else f"{done}."
    if _is_htmx(request):
        context = _editor(request, user, saved, text, announce=message, focus=focus)
        return render(
            request,
            "flow_forms_editor.html",
            headers={"HX-Trigger": "ff-changed"},
            error=None,
            **context,
        )
    response = see_other(f"/flows/{key}/form")
    flash(response, message)
    return response


def _position(form: FormData, text: str, step: str) -> int:
    """Where a move goes: `to` (a position, from drag and drop) or `direction` up / down."""
    direction = _text(form, "direction")
    if direction in ("up", "down"):
        ordered = flow_form_steps.ordered_steps(flow_forms.load_document(text))
        here = next((s.position for s in ordered if s.key == step), None)
        if here is None:
            raise InvalidInputError(
                "the move", [Problem("step", f"{step[:60]!r} is not a step of the flow", "reload")]
            )
        return here - 1 if direction == "up" else here + 1
    raw = _text(form, "to").strip()
    position = whole_number(raw, max_digits=6)
    if position is not None:
        return position - 1
    raise InvalidInputError(
        "the move",
        [Problem("to", f"{raw[:20]!r} is not a position", "give a number from 1, or up / down")],
    )


@router.post("/flows/{key}/form/move")
async def move(request: Request, user: CurrentUser, key: str) -> Response:
    def change(text: str, form: FormData) -> _Change:
        step = _text(form, "step")
        position = _position(form, text, step)
        changed = flow_form_steps.move_step(text, step, position)
        ordered = flow_form_steps.ordered_steps(flow_forms.load_document(changed))
        where = next((s for s in ordered if s.key == step), None)
        name = where.name if where else step
        at = f"position {where.position + 1 if where else position + 1} of {len(ordered)}"
        return _Change(
            changed, f"moving step {name!r} to {at}", f"Step {name!r} moved to {at}", step
        )

    return await _operate(request, user, key, change)


@router.post("/flows/{key}/form/active")
async def switch(request: Request, user: CurrentUser, key: str) -> Response:
    def change(text: str, form: FormData) -> _Change:
        step = _text(form, "step")
        active = _text(form, "active") == "true"
        changed = flow_form_steps.set_active(text, step, active)
        state = "on" if active else "off"
        return _Change(
            changed, f"switching step {step!r} {state}", f"Step {step!r} switched {state}", step
        )

    return await _operate(request, user, key, change)


@router.get("/flows/{key}/form/remove")
def remove_confirm(request: Request, user: CurrentUser, key: str) -> Response:
    flow, text = _current(request, user, key)
    step = request.query_params.get("step", "")[:200]
    ordered = flow_form_steps.ordered_steps(flow_forms.load_document(text))
    chosen = next((s for s in ordered if s.key == step), None)
    if chosen is None:
        raise NotFoundError(f"step {step[:60]!r} is not in flow {key!r}")
    return render(request, "flow_forms_remove.html", flow=flow, step=chosen, locked=_locked(flow))


@router.post("/flows/{key}/form/remove")
async def remove(request: Request, user: CurrentUser, key: str) -> Response:
    def change(text: str, form: FormData) -> _Change:
        step = _text(form, "step")
        changed = flow_form_steps.remove_step(text, step)
        return _Change(changed, f"removing step {step!r}", f"Step {step!r} removed", "")

    return await _operate(request, user, key, change)


# -- a new step ----------------------------------------------------------------------------------


def _new_step_fields(
    ctx: Context,
    kind: str,
    record_type: str,
    posted: Mapping[str, str] | None = None,
    steps: list[tuple[str, str]] | None = None,
) -> list[FormField]:
    schema = flow_forms.kind_schema(flow_forms.step_kinds(), kind)
    if schema is None:
        return []
    skeleton = flow_form_steps.new_step(kind, "new", "")
    pickers = _pickers(ctx, record_type)
    if steps is not None:
        pickers["step"] = steps
    fields = [
        f
        for f in flow_forms.form_fields(schema, skeleton, pickers=pickers)
        if f.path not in ("key", "name")
    ]
    return flow_forms.refilled(fields, posted) if posted else fields


def _add_page(
    request: Request,
    flow: flows.FlowView,
    text: str,
    *,
    kind: str = "action",
    name: str = "",
    posted: Mapping[str, str] | None = None,
    problems: Sequence[Problem] = (),
    error: str | None = None,
    status_code: int = 200,
    live: bool = False,
) -> Response:
    ctx = context_of(request)
    document = flow_forms.load_document(text)
    record_type = str(document.get("record_type") or "")
    opened = _new_step_fields(ctx, kind, record_type, steps=_step_choices(document))
    fields = flow_forms.refilled(opened, posted) if posted else opened
    count = len(document.get("steps") or [])
    top = {"name": [str(p) for p in problems if p.path == "name"]}
    rest = [p for p in problems if p.path not in ("name", f"steps[{count}]")]
    at, other = flow_forms.problems_by_field(rest, f"steps[{count}].", fields)
    # A problem of the new step as a whole ("a wait step needs `until` or `fields`").
    whole = [p for p in problems if p.path == f"steps[{count}]"]
    other = [f"This step: {p.message}" + (f" ({p.hint})" if p.hint else "") for p in whole] + other
    if live:
        slots = [("ff-step-name-problem", top["name"] if name.strip() else [])]
        return _live(request, fields, at, other, slots, changed=_changed(opened, posted or {}))
    kinds = flow_forms.step_kinds()
    return render(
        request,
        "flow_forms_add.html",
        status_code=status_code,
        flow=flow,
        locked=_locked(flow),
        kind=kind,
        kinds=kinds,
        about=next((k.description for k in kinds if k.value == kind), ""),
        step_name=name,
        fields=fields,
        field_problems=at,
        name_problems=top["name"],
        problems=other,
        error=error,
    )


def _step_kind(value: str) -> str:
    known = {k.value for k in flow_forms.step_kinds()}
    return value if value in known else "action"


@router.get("/flows/{key}/form/add")
def add_form(request: Request, user: CurrentUser, key: str) -> Response:
    flow, text = _current(request, user, key)
    kind = _step_kind(request.query_params.get("type", "action"))
    return _add_page(request, flow, text, kind=kind)


@router.get("/flows/{key}/form/add/fields")
def add_fields(request: Request, user: CurrentUser, key: str) -> Response:
    """The fields of the step type picked (an htmx fragment)."""
    _, text = _current(request, user, key)
    ctx = context_of(request)
    kind = _step_kind(request.query_params.get("type", "action"))
    document = flow_forms.load_document(text)
    record_type = str(document.get("record_type") or "")
    kinds = {k.value: k for k in flow_forms.step_kinds()}
    return render(
        request,
        "flow_forms_trigger.html",
        fields=_new_step_fields(ctx, kind, record_type, steps=_step_choices(document)),
        field_problems={},
        about=kinds[kind].description,
    )


@router.post("/flows/{key}/form/add/check")
async def check_add(request: Request, user: CurrentUser, key: str) -> Response:
    """The new step's form checked as one types (the step added in memory, not saved)."""
    form = await request.form()
    flow, text = _current(request, user, key)
    name = _text(form, "name")
    posted = _posted_fields(form)
    # Without a name yet, the step's fields are still checked (under a stand-in name).
    changed, _, problems = flow_form_steps.add_step(
        text, _text(form, "type").strip(), name or "New step", posted
    )
    if not problems:
        problems = _validated(request, user, changed, excluding=key)
    if not name.strip():
        problems = [Problem("name", "is empty", "give the step a name"), *problems]
    page: dict[str, Any] = {"name": name[:200], "posted": posted}
    kind = _step_kind(_text(form, "type").strip())
    return _add_page(request, flow, text, kind=kind, **page, problems=problems, live=True)


@router.post("/flows/{key}/form/add")
async def add(request: Request, user: CurrentUser, key: str) -> Response:
    form = await request.form()
    flow, text = _current(request, user, key)
    kind = _text(form, "type").strip()
    name = _text(form, "name")
    posted = _posted_fields(form)
    changed, step, problems = flow_form_steps.add_step(text, kind, name, posted)
    saved = _save_form(
        request,
        user,
        flow,
        text,
        form,
        edit=lambda: (changed, problems),
        show=partial(
            _add_page, request, flow, text, kind=_step_kind(kind), name=name[:200], posted=posted
        ),
        invalid="The step was not added: fix the fields marked below.",
        unchanged=f"/flows/{key}/form",
    )
    if isinstance(saved, Response):
        return saved
    return _saved_to(
        f"/flows/{key}/form?step={quote(step)}#step-form",
        f"Step {step!r} added (version {saved.version}).",
    )


# -- the trigger ---------------------------------------------------------------------------------


def _trigger_index(raw: str) -> int:
    return whole_number(raw, max_digits=3) or 0


def _trigger_page(
    request: Request,
    flow: flows.FlowView,
    text: str,
    *,
    index: int,
    kind: str | None = None,
    posted: Mapping[str, str] | None = None,
    problems: Sequence[Problem] = (),
    error: str | None = None,
    status_code: int = 200,
    live: bool = False,
) -> Response:
    ctx = context_of(request)
    document = flow_forms.load_document(text)
    trigger = flow_form_triggers.trigger_at(document, index)
    record_type = str(document.get("record_type") or "")
    kind = kind or str(trigger.get("type", "")) or DEFAULT_TRIGGER
    schema = flow_forms.kind_schema(flow_forms.trigger_kinds(), kind)
    same = str(trigger.get("type", "")) == kind
    fields = opened = (
        flow_forms.form_fields(
            schema, trigger if same else None, pickers=_pickers(ctx, record_type)
        )
        if schema is not None
        else []
    )
    if posted:
        fields = flow_forms.refilled(fields, posted)
    at, other = flow_forms.problems_by_field(problems, f"triggers[{index}].", fields)
    if live:
        return _live(request, fields, at, other, changed=_changed(opened, posted or {}))
    kinds = flow_forms.trigger_kinds()
    return render(
        request,
        "flow_forms_trigger_edit.html",
        status_code=status_code,
        flow=flow,
        locked=_locked(flow),
        index=index,
        count=len(document.get("triggers") or []),
        kind=kind,
        kinds=kinds,
        about=next((k.description for k in kinds if k.value == kind), ""),
        record_type=record_type,
        fields=fields,
        field_problems=at,
        problems=other,
        error=error,
    )


@router.get("/flows/{key}/form/trigger")
def trigger_form(request: Request, user: CurrentUser, key: str) -> Response:
    flow, text = _current(request, user, key)
    index = _trigger_index(request.query_params.get("index", "0"))
    return _trigger_page(request, flow, text, index=index)


@router.post("/flows/{key}/form/trigger/check")
async def check_trigger(request: Request, user: CurrentUser, key: str) -> Response:
    """The trigger's form checked as one types: applied in memory, validated, not saved."""
    form = await request.form()
    flow, text = _current(request, user, key)
    index = _trigger_index(_text(form, "index"))
    kind = _text(form, "trigger").strip()
    posted = _posted_fields(form)
    if flow_forms.kind_schema(flow_forms.trigger_kinds(), kind) is None:
        problem = Problem("trigger", f"{kind[:40]!r} is not a trigger kind", "pick one")
        return _live(request, [], {}, [str(problem)], changed=set())
    changed, problems = flow_form_triggers.saved_trigger_text(text, index, kind, posted)
    if not problems and changed != text:
        problems = _validated(request, user, changed, excluding=key)
    return _trigger_page(
        request, flow, text, index=index, kind=kind, posted=posted, problems=problems, live=True
    )


@router.post("/flows/{key}/form/trigger")
async def save_trigger(request: Request, user: CurrentUser, key: str) -> Response:
    form = await request.form()
    flow, text = _current(request, user, key)
    index = _trigger_index(_text(form, "index"))
    kind = _text(form, "trigger").strip()
    posted = _posted_fields(form)
    if flow_forms.kind_schema(flow_forms.trigger_kinds(), kind) is None:
        problem = Problem("trigger", f"{kind[:40]!r} is not a trigger kind", "pick one")
        return _trigger_page(request, flow, text, index=index, error=str(problem), status_code=422)
    saved = _save_form(
        request,
        user,
        flow,
        text,
        form,
        edit=lambda: flow_form_triggers.saved_trigger_text(text, index, kind, posted),
        show=partial(_trigger_page, request, flow, text, index=index, kind=kind, posted=posted),
        invalid="The trigger was not saved: fix the fields marked below.",
        unchanged=f"/flows/{key}/form",
    )
    if isinstance(saved, Response):
        return saved
    return _saved_to(f"/flows/{key}/form", f"Trigger saved (version {saved.version}).")


# -- the flow's own settings ---------------------------------------------------------------------


def _settings_page(
    request: Request,
    user: Actor,
    flow: flows.FlowView,
    text: str,
    *,
    posted: Mapping[str, str] | None = None,
    problems: Sequence[Problem] = (),
    error: str | None = None,
    status_code: int = 200,
    live: bool = False,
) -> Response:
    ctx = context_of(request)
    document = flow_forms.load_document(text)
    pickers = _pickers(ctx, str(document.get("record_type") or ""), user)
    pickers["timezone"] = [(z, z) for z in sorted(available_timezones())]
    fields = opened = flow_form_settings.settings_fields(document, pickers)
    if posted:
        fields = flow_forms.refilled(fields, posted)
    at, other = flow_forms.problems_by_field(problems, "", fields)
    # A problem of the document's own fields has no prefix: problems_by_field places those it
    # finds among the fields' paths; the rest (a step's, a trigger's) is said above the form.
    if live:
        return _live(request, fields, at, other, changed=_changed(opened, posted or {}))
    return render(
        request,
        "flow_forms_settings.html",
        status_code=status_code,
        flow=flow,
        locked=_locked(flow),
        record_type=str(document.get("record_type") or ""),
        fields=fields,
        field_problems=at,
        problems=other,
        error=error,
    )


@router.get("/flows/{key}/form/settings")
def settings_form(request: Request, user: CurrentUser, key: str) -> Response:
    flow, text = _current(request, user, key)
    return _settings_page(request, user, flow, text)


@router.post("/flows/{key}/form/settings")
async def save_settings(request: Request, user: CurrentUser, key: str) -> Response:
    """Save the flow's own settings (name, owner, timezone, entry condition, ...): only what
    changed is written back, validated and saved as any change of the flow."""
    form = await request.form()
    flow, text = _current(request, user, key)
    posted = _posted_fields(form)
    saved = _save_form(
        request,
        user,
        flow,
        text,
        form,
        edit=lambda: flow_form_settings.saved_settings_text(text, posted),
        show=partial(_settings_page, request, user, flow, text, posted=posted),
        invalid="The settings were not saved: fix the fields marked below.",
        unchanged=f"/flows/{key}/form",
    )
    if isinstance(saved, Response):
        return saved
    return _saved_to(f"/flows/{key}/form", f"Settings saved (version {saved.version}).")


@router.post("/flows/{key}/form/settings/check")
async def check_settings(request: Request, user: CurrentUser, key: str) -> Response:
    """The settings form checked as one types: applied in memory, validated, not saved."""
    form = await request.form()
    flow, text = _current(request, user, key)
    posted = _posted_fields(form)
    changed, problems = flow_form_settings.saved_settings_text(text, posted)
    if not problems and changed != text:
        problems = _validated(request, user, changed, excluding=key)
    return _settings_page(request, user, flow, text, posted=posted, problems=problems, live=True)


# -- try it --------------------------------------------------------------------------------------

TRY_RESULTS = 10


@router.get("/flows/{key}/form/records")
def try_records(request: Request, user: CurrentUser, key: str) -> Response:
    """Records of the flow's type whose text fields contain `q`, or whose id it is (an htmx
    fragment of at most TRY_RESULTS records to pick)."""
    ctx = context_of(request)
    flow, text = _current(request, user, key)
    search = request.query_params.get("q", "").strip()[:200]
    record_type = str(flow_forms.load_document(text).get("record_type") or "")
    found: list[tuple[int, str]] = []
    problem = ""
    if search:
        try:
            rtype = record_types.get_record_type(ctx, record_type)
            page = queries.preview_filter(
                ctx, rtype.key, search_filter(rtype, search), limit=TRY_RESULTS
            )
            found = [(r.id, title_of(rtype, r)) for r in page.items]
        except (NotFoundError, InvalidInputError) as exc:
            problem = str(exc)
    return render(
        request,
        "flow_forms_try_records.html",
        flow=flow,
        search=search,
        found=found,
        problem=problem,
        record_type=record_type,
    )


@router.post("/flows/{key}/form/try")
async def try_it(request: Request, user: CurrentUser, key: str) -> Response:
    """Simulate the flow's current version for the record picked (nothing stored or sent)."""
    ctx = context_of(request)
    form = await request.form()
    flow, _ = _current(request, user, key)
    raw = _text(form, "record_id").strip()
    days_raw = _text(form, "days").strip() or "30"
    problems: list[Problem] = []
    record_id = whole_number(raw, max_digits=15)
    if record_id is None:
        problems.append(
            Problem(
                "record",
                "no record picked" if not raw else f"{raw[:20]!r} is not a record id",
                "search a record by name or id and pick it",
            )
        )
    days = whole_number(days_raw, max_digits=3)
    if days is None or not 1 <= days <= simulation.MAX_DAYS:
        problems.append(
            Problem(
                "days",
                f"{days_raw[:10]!r} is not a number of days between 1 and {simulation.MAX_DAYS}",
                "e.g. 30",
            )
        )
    result = None
    status_code = 200
    if record_id is not None and days is not None and not problems:
        try:
            result = simulation.simulate_flow(ctx, user, key, record_id=record_id, days=days)
        except InvalidInputError as exc:
            problems, status_code = list(exc.problems), 422
        except NotFoundError as exc:
            problems, status_code = [Problem("record", str(exc), "pick another record")], 404
    else:
        status_code = 422
    return render(
        request,
        "flow_forms_try.html" if _is_htmx(request) else "flow_forms_try_page.html",
        status_code=status_code,
        flow=flow,
        result=result,
        problems=problems,
        when=when(ctx),
    )
