"""Records (`/records`): the list by record type or by saved query, with a search, paged by id;
a record's page (`/records/{id}`) with its fields and files, a timeline of the flows it is or was
in (each step, action, message and decision), entering it into a flow and restarting a run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Form, Query, Request
from fastapi.responses import Response

from crmflow.api.deps import AfterId, RowId
from crmflow.engine.definition.flow import FlowStatus
from crmflow.engine.recordtypes.fields import FieldType
from crmflow.engine.recordtypes.recordtype import RecordType
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from crmflow.services import (
    enrollments,
    flows,
    queries,
    record_files,
    record_types,
    records,
    users,
)
from crmflow.services.paging import Page
from crmflow.services.records import RecordView
from crmflow.services.run_views import record_status
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import flash, render, see_other

__all__ = ["router", "search_filter"]

router = web_router()

PAGE_SIZE = 50
MAX_COLUMNS = 6
DEFAULT_TYPE = "contact"  # the list a CRM's people open most
# The field types a search looks into (text the person typed somewhere on the record).
_SEARCHED = (FieldType.TEXT, FieldType.EMAIL, FieldType.PHONE)
_RUNNING = ("active", "draining")


def columns_of(rtype: RecordType) -> list[tuple[str, str]]:
    """The columns a list of `rtype` shows: its first fields (files are never in values)."""
    shown = [f for f in rtype.fields if f.type is not FieldType.FILE]
    return [(f.key, f.label or f.key.replace("_", " ")) for f in shown[:MAX_COLUMNS]]


def search_filter(rtype: RecordType, text: str) -> dict[str, Any]:
    """A filter matching records of `rtype` whose text fields contain `text` (any case), or
    whose id it is."""
    words: list[dict[str, Any]] = [
        {"field": f.key, "op": "contains", "value": text}
        for f in rtype.fields
        if f.type in _SEARCHED
    ]
    if text.isascii() and text.isdigit() and len(text) < 16:  # not '²' (a digit int() refuses)
        words.append({"field": "id", "op": "=", "value": int(text)})
    return {"any": words} if words else {"all": [{"field": "id", "op": "=", "value": 0}]}


def shown(value: object) -> str:
    """A field's value as a person reads it."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(shown(v) for v in value)
    return str(value)


def title_of(rtype: RecordType, record: RecordView) -> str:
    """A record's name: its first two text fields with a value, else its type and id."""
    parts = [
        str(record.data[f.key])
        for f in rtype.fields
        if f.type is FieldType.TEXT and record.data.get(f.key) not in (None, "")
    ][:2]
    return " ".join(parts) if parts else f"{rtype.name} {record.id}"


@router.get("/records")
def record_list(
    request: Request,
    user: CurrentUser,
    type: Annotated[str | None, Query(max_length=100)] = None,
    query: Annotated[str | None, Query(max_length=100)] = None,
    q: Annotated[str, Query(max_length=200)] = "",
    after: AfterId | None = None,
) -> Response:
    ctx = context_of(request)
    types = record_types.list_record_types(ctx)
    saved = queries.list_queries(ctx, limit=ctx.settings.page_size_max).items
    problems: list[str] = []
    search = q.strip()
    page: Page[RecordView] = Page([], None)
    if query:
        chosen = queries.get_query(ctx, query)
        rtype = record_types.get_record_type(ctx, chosen.record_type)
        try:
            page = queries.preview_query(ctx, query, after=after, limit=PAGE_SIZE)
        except InvalidInputError as exc:
            problems = [exc.message, *(str(p) for p in exc.problems)]
    else:
        default = next((t for t in types if t.key == DEFAULT_TYPE), types[0])
        rtype = record_types.get_record_type(ctx, type) if type else default
        if search:
            page = queries.preview_filter(
                ctx, rtype.key, search_filter(rtype, search), after=after, limit=PAGE_SIZE
            )
        else:
            page = records.list_records(ctx, rtype.key, after=after, limit=PAGE_SIZE)
    here = {"query": query} if query else {"type": rtype.key, **({"q": search} if search else {})}
    next_url = (
        f"/records?{urlencode({**here, 'after': page.next_after})}"
        if page.next_after is not None
        else None
    )
    rows = [
        {
            "id": r.id,
            "title": title_of(rtype, r),
            "cells": [shown(r.data.get(key)) for key, _ in columns_of(rtype)],
            "owner": r.owner or "",
        }
        for r in page.items
    ]
    return render(
        request,
        "records.html",
        types=types,
        saved=saved,
        rtype=rtype,
        query=query or "",
        search=search,
        columns=columns_of(rtype),
        rows=rows,
        first_url=f"/records?{urlencode(here)}" if after is not None else None,
        next_url=next_url,
        problems=problems,
    )


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # flow | step | action | message | history
    state: str
    text: str
    detail: str = ""


def _action_text(action: dict[str, Any]) -> tuple[str, str, str]:
    """(state, what, why) of an action of a step run, as a person reads them."""
    what = str(action.get("type") or "action")
    if action.get("key"):
        what = f"{what} {action['key']}"
    state = str(action.get("status") or "")
    why = str(action.get("detail") or action.get("reason") or "")
    return state, what, why


def _message_text(message: dict[str, Any]) -> tuple[str, str]:
    state = str(message.get("status") or "")
    bits = [f"{message.get('kind', 'message')} {state}"]
    if message.get("attempts"):
        bits.append(f"{message['attempts']} attempt(s)")
    for key in ("last_error", "server_reply"):
        if message.get(key):
            bits.append(str(message[key]))
    return state, "; ".join(bits)


def _when(value: str | None, fallback: datetime) -> datetime:
    return datetime.fromisoformat(value) if value else fallback


@router.get("/records/{record_id}")
def record_page(request: Request, user: CurrentUser, record_id: RowId) -> Response:
    ctx = context_of(request)
    record = records.get_record(ctx, record_id)
    rtype = record_types.get_record_type(ctx, record.type)
    kept = {f.field: f for f in record_files.list_files(ctx, record_id)}
    # A user field holds a user's id: shown as their username.
    names = users.usernames(
        ctx,
        {
            v
            for f in rtype.fields
            if f.type is FieldType.USER and type(v := record.data.get(f.key)) is int
        },
    )
    fields = []
    for f in rtype.fields:
        label = f.label or f.key.replace("_", " ")
        if f.type is FieldType.FILE:
            info = kept.get(f.key)
            fields.append(
                {
                    "label": label,
                    "value": info.filename if info else "",
                    "href": f"/records/{record_id}/files/{quote(f.key)}" if info else None,
                    "download": True,
                }
            )
        elif f.type is FieldType.USER:
            value = record.data.get(f.key)
            name = names.get(value) if type(value) is int else None
            fields.append({"label": label, "value": name or shown(value), "href": None})
        elif f.type is FieldType.REFERENCE and type(record.data.get(f.key)) is int:
            other = record.data[f.key]
            fields.append({"label": label, "value": f"record {other}", "href": f"/records/{other}"})
        else:
            fields.append({"label": label, "value": shown(record.data.get(f.key)), "href": None})
    status = record_status(ctx, user, record_id)
    runs = []
    for e in status.enrollments:
        steps = []
        for s in e.step_runs:
            actions = []
            for a in s.actions:
                state, what, why = _action_text(a)
                message = a.get("message")
                mstate, mtext = _message_text(message) if isinstance(message, dict) else ("", "")
                actions.append(
                    {"state": state, "what": what, "why": why, "mstate": mstate, "mtext": mtext}
                )
            steps.append(
                {
                    "run": s.run,
                    "step": s.step,
                    "type": s.type,
                    "state": s.status,
                    "reason": s.reason,
                    "at": s.started_at,
                    "actions": actions,
                }
            )
        delivered, total = e.emails
        runs.append(
            {
                "id": e.id,
                "flow": e.flow,
                "version": e.flow_version,
                "state": e.status,
                "step": e.step,
                "waiting_for": e.waiting_for,
                "entered_at": e.entered_at,
                "finished_at": e.finished_at,
                "end_reason": e.end_reason,
                "progress": f"{delivered}/{total}" if total else "",
                "steps": steps,
                "restartable": e.status not in ("held",),
            }
        )
    history = [
        {"at": _when(h.get("at"), record.updated_at), "message": h.get("message", "")}
        for h in status.history
    ]
    enterable = [
        f
        for f in flows.list_flows(ctx, user, record_type=record.type)
        if f.status in (FlowStatus.ACTIVE, FlowStatus.DRAFT, FlowStatus.PAUSED)
    ]
    return render(
        request,
        "record.html",
        record=record,
        rtype=rtype,
        title=title_of(rtype, record),
        fields=fields,
        runs=runs,
        history=history,
        enterable=enterable,
    )


@router.get("/records/{record_id}/files/{field}")
def record_file(request: Request, user: CurrentUser, record_id: RowId, field: str) -> Response:
    found = record_files.get_file(context_of(request), record_id, field)
    name = found.info.filename
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
    return Response(
        found.content,
        media_type=found.info.content_type,
        headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
    )


_REFUSALS = (ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError)


def _refusal_text(
    exc: InvalidInputError | ConflictError | NotFoundError | PermissionDeniedError,
) -> str:
    if isinstance(exc, InvalidInputError) and exc.problems:
        return f"{exc.message}: " + "; ".join(str(p) for p in exc.problems)
    return exc.message


@router.post("/records/{record_id}/enter")
def enter_flow(
    request: Request,
    user: CurrentUser,
    record_id: RowId,
    flow: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    answer = see_other(f"/records/{record_id}")
    if not flow:
        flash(answer, "Choose a flow to enter this record into.", kind="error")
        return answer
    try:
        started = enrollments.start_record(context_of(request), user, flow, record_id)
    except _REFUSALS as exc:
        flash(answer, f"Not entered into {flow}: {_refusal_text(exc)}", kind="error")
        return answer
    where = f", at step {started.step}" if started.step else ""
    flash(answer, f"Entered into {started.flow}{where}.")
    return answer


@router.post("/records/{record_id}/restart")
def restart_run(
    request: Request,
    user: CurrentUser,
    record_id: RowId,
    enrollment: Annotated[RowId, Form()],
) -> Response:
    answer = see_other(f"/records/{record_id}")
    ctx = context_of(request)
    try:
        if enrollment not in {e.id for e in record_status(ctx, user, record_id).enrollments}:
            raise NotFoundError(f"record {record_id} has no run {enrollment} you can see")
        restarted = enrollments.restart_enrollment(ctx, user, enrollment)
    except _REFUSALS as exc:
        flash(answer, f"Not restarted: {_refusal_text(exc)}", kind="error")
        return answer
    flash(answer, f"Restarted in {restarted.flow} from its first step.")
    return answer
