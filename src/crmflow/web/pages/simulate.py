"""Simulation (`/simulate`): pick a flow and a record (its id, or one pasted as YAML or JSON) and
see the timeline the simulation computes, as `crmflow simulate` prints it: in virtual time,
nothing stored or sent. Each approval step's buttons re-simulate with that decision chosen.
Input is bounded (a pasted record of at most 20,000 characters, 1 to 366 days)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.responses import Response

from crmflow.engine.numbers import whole_number
from crmflow.engine.recordtypes import MAX_ROW_ID
from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services import flows, simulation
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.pages.tasks import when
from crmflow.web.render import render

router = web_router()

MAX_DECISIONS = 50


def _page(
    request: Request,
    user: CurrentUser,
    *,
    flow: str,
    record_id: str,
    record_text: str,
    days: int,
    decisions: dict[str, str],
    result: Any = None,
    approvals: dict[str, list[tuple[str, str]]] | None = None,
    problems: list[Problem] | None = None,
    status_code: int = 200,
) -> Response:
    ctx = context_of(request)
    choices = flows.flows_page(ctx, user, limit=ctx.settings.page_size_max).items
    response = render(
        request,
        "simulate.html",
        when=when(ctx),
        flows=choices,
        flow=flow,
        record_id=record_id,
        record_text=record_text,
        days=days,
        max_days=simulation.MAX_DAYS,
        max_chars=simulation.MAX_RECORD_CHARS,
        decisions=decisions,
        result=result,
        approvals=approvals or {},
        problems=problems or [],
    )
    response.status_code = status_code
    return response


@router.get("/simulate")
def simulate_form(
    request: Request,
    user: CurrentUser,
    flow: Annotated[str, Query(max_length=100)] = "",
    record_id: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    return _page(
        request, user, flow=flow, record_id=record_id, record_text="", days=30, decisions={}
    )


def _decisions(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items[:MAX_DECISIONS]:
        step, sep, button = item.partition("=")
        if sep and step.strip() and button.strip():
            out[step.strip()] = button.strip()
    return out


@router.post("/simulate")
def simulate_run(
    request: Request,
    user: CurrentUser,
    flow: Annotated[str, Form(max_length=100)] = "",
    record_id: Annotated[str, Form(max_length=20)] = "",
    record_text: Annotated[str, Form(max_length=simulation.MAX_RECORD_CHARS)] = "",
    days: Annotated[str, Form(max_length=10)] = "30",
    decision: Annotated[list[str] | None, Form()] = None,
    choose: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    ctx = context_of(request)
    decisions = _decisions([*(decision or []), *([choose] if choose else [])])
    form: dict[str, Any] = {
        "flow": flow.strip(),
        "record_id": record_id.strip(),
        "record_text": record_text,
        "decisions": decisions,
    }
    problems: list[Problem] = []
    if not form["flow"]:
        problems.append(Problem("flow", "no flow chosen", hint="pick one in the list"))
    # ASCII digits only: '²' is a digit to str.isdigit(), which int() refuses.
    number = whole_number(form["record_id"], max_digits=20) if form["record_id"] else None
    if form["record_id"] and number is None:
        problems.append(
            Problem(
                "record",
                f"{form['record_id']!r} is not a record id",
                "type the record's id in digits, or paste the record below",
            )
        )
    elif number is not None and not 1 <= number <= MAX_ROW_ID:
        # Names no record, and SQLite cannot bind it: refused as the API refuses it.
        problems.append(
            Problem(
                "record",
                f"{number} is out of range: record ids are whole numbers from 1 to "
                f"{MAX_ROW_ID} (2^63-1)",
                "use one that a list or a create answered",
            )
        )
        number = None
    span = days.strip()
    found_days = whole_number(span, max_digits=10)
    if found_days is None or not 1 <= found_days <= simulation.MAX_DAYS:
        problems.append(
            Problem(
                "days",
                f"{span!r} is not a number of days between 1 and {simulation.MAX_DAYS}",
                hint="e.g. 30",
            )
        )
    span_days = found_days if found_days is not None else 30
    if problems:
        return _page(request, user, days=span_days, problems=problems, status_code=422, **form)
    try:
        definition = simulation.flow_definition(ctx, user, form["flow"])
        result = simulation.simulate_flow(
            ctx,
            user,
            form["flow"],
            record_id=number,
            record_text=None if number is not None else record_text,
            decisions=decisions,
            days=span_days,
        )
    except InvalidInputError as exc:
        return _page(request, user, days=span_days, problems=exc.problems, status_code=422, **form)
    except NotFoundError as exc:
        problems = [Problem("", str(exc))]
        return _page(request, user, days=span_days, problems=problems, status_code=404, **form)
    return _page(
        request,
        user,
        days=span_days,
        result=result,
        approvals=simulation.approvals(definition),
        **{**form, "decisions": dict(result.decisions)},
    )
