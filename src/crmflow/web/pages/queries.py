"""Saved queries (`/queries`): the list, and a filter builder (`/queries/new`, `/queries/{name}`)
of conditions on a record type's fields, relative dates included ("in the last 30 days"), with
the live count and the first matching records (htmx) before saving through the services (the
same checks as `crmflow queries load` and the API)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Query, Request
from fastapi.responses import Response

from crmflow.api.deps import AfterId
from crmflow.engine.numbers import not_finite, whole_number
from crmflow.engine.recordtypes.fields import FieldType
from crmflow.engine.recordtypes.recordtype import RecordType
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Problem,
)
from crmflow.services import queries, record_types
from crmflow.services.condition_builder import LAST, NEXT, OPERATORS
from crmflow.services.context import Actor, Context
from crmflow.services.queries import QueryView
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.pages.records import columns_of, shown, title_of
from crmflow.web.render import flash, render, see_other

__all__ = ["router"]

router = web_router()

PAGE_SIZE = 50
PREVIEW_ROWS = 10
MIN_ROWS = 1
MAX_ROWS = 30
_NO_VALUE = ("is empty", "is not empty")
_LISTS = ("in", "not in")
_RELATIVE = re.compile(r"^today ([+-]) (\d+) days?$")
_ROW = re.compile(r"^filter\.(all|any)\[(\d+)\](.*)$")
_BUILTINS: tuple[tuple[str, str], ...] = (
    ("id", "id"),
    ("owner", "owner"),
    ("created_at", "created at"),
    ("updated_at", "updated at"),
)


@dataclass
class Row:
    """One condition of the builder, as the person wrote it."""

    field: str = ""
    op: str = "="
    value: str = ""


@dataclass
class Builder:
    """What the builder form shows: the query's identity, its conditions and any problems."""

    record_type: str
    name: str = ""
    description: str = ""
    match: str = "all"
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    complex_filter: dict[str, Any] | None = None  # nested groups: not editable here

    def padded(self) -> list[Row]:
        return [*self.rows, *(Row() for _ in range(max(MIN_ROWS - len(self.rows), 1)))]


def field_choices(rtype: RecordType) -> list[tuple[str, str]]:
    fields = [
        (f.key, f.label or f.key.replace("_", " "))
        for f in rtype.fields
        if f.type is not FieldType.FILE
    ]
    return [*fields, *_BUILTINS]


def _scalar(rtype: RecordType, key: str, text: str) -> object:
    """A value typed in a form, as the filter language takes it for this field."""
    text = text.strip()
    fdef = rtype.field(key)
    kind = fdef.type if fdef is not None else (FieldType.NUMBER if key == "id" else None)
    if kind is FieldType.NUMBER:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    if kind is FieldType.BOOL:
        lowered = text.lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
    return text


def to_filter(rtype: RecordType, builder: Builder) -> tuple[dict[str, Any], list[int], list[str]]:
    """The filter the builder's rows make, the form row number of each condition, and the
    problems found before the services see it (a relative number of days that is not one)."""
    conditions: list[dict[str, Any]] = []
    numbers: list[int] = []
    problems: list[str] = []
    for number, row in enumerate(builder.rows, start=1):
        if not row.field:
            continue
        value = row.value.strip()
        cond: dict[str, Any] = {"field": row.field, "op": row.op}
        if row.op in (LAST, NEXT):
            # ASCII digits: int() refuses '²' and numbers of more than 4,300 digits.
            days = whole_number(value, max_digits=30)
            if days is None or days < 1:
                problems.append(
                    f"condition {number}: '{row.op}' needs a whole number of days, got "
                    f"{value[:20]!r} (write e.g. 30)"
                )
                continue
            span = (
                [f"today - {days} days", "today"]
                if row.op == LAST
                else ["today", f"today + {days} days"]
            )
            cond = {"field": row.field, "op": "between", "value": span}
        elif row.op in _NO_VALUE:
            pass
        elif row.op in _LISTS:
            cond["value"] = [_scalar(rtype, row.field, v) for v in value.split(",") if v.strip()]
        elif row.op == "between":
            parts = [v for v in re.split(r",| and ", value) if v.strip()]
            cond["value"] = [_scalar(rtype, row.field, v) for v in parts]
        else:
            cond["value"] = _scalar(rtype, row.field, value)
        typed = cond.get("value")
        if any(not_finite(v) for v in (typed if isinstance(typed, list) else [typed])):
            # No stored filter holds NaN or an infinity (JSON has none: it would be saved as null).
            problems.append(
                f"condition {number}, value: {value[:20]!r} is not a finite number "
                "(write digits, e.g. 1000 or 12.5)"
            )
            continue
        conditions.append(cond)
        numbers.append(number)
    return {builder.match: conditions}, numbers, problems


def _value_text(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def from_filter(query: QueryView) -> Builder:
    """The builder of a saved query; a filter with nested groups is shown, not edited here."""
    built = Builder(query.record_type, name=query.name, description=query.description)
    data = query.filter
    keys = list(data)
    items = data.get(keys[0]) if len(keys) == 1 else None
    simple = (
        keys
        and keys[0] in ("all", "any")
        and isinstance(items, list)
        and all(isinstance(c, dict) and "field" in c for c in items)
    )
    if not simple or not isinstance(items, list):
        built.complex_filter = dict(data)
        return built
    built.match = keys[0]
    for c in items:
        op, value = str(c.get("op", "=")), c.get("value")
        if op == "between" and isinstance(value, list) and len(value) == 2:
            low, high = (_RELATIVE.match(str(v)) if v != "today" else None for v in value)
            if value[1] == "today" and low is not None and low.group(1) == "-":
                built.rows.append(Row(str(c["field"]), LAST, low.group(2)))
                continue
            if value[0] == "today" and high is not None and high.group(1) == "+":
                built.rows.append(Row(str(c["field"]), NEXT, high.group(2)))
                continue
        built.rows.append(Row(str(c["field"]), op, _value_text(value)))
    return built


def _problem_text(problem: Problem, numbers: Sequence[int]) -> str:
    """A service's problem with its path in the builder's words ("condition 2, value")."""
    found = _ROW.match(problem.path)
    if found is None:
        return str(problem)
    index = int(found.group(2))
    number = numbers[index] if index < len(numbers) else index + 1
    rest = found.group(3).lstrip(".")
    where = f"condition {number}" + (f", {rest}" if rest else "")
    text = f"{where}: {problem.message}"
    return f"{text} ({problem.hint})" if problem.hint else text


def _builder_from_form(
    record_type: str,
    match: str,
    fields: list[str],
    ops: list[str],
    values: list[str],
    *,
    name: str = "",
    description: str = "",
) -> Builder:
    rows = [
        Row(f.strip(), o.strip() or "=", v)
        for f, o, v in zip(fields[:MAX_ROWS], ops[:MAX_ROWS], values[:MAX_ROWS], strict=False)
    ]
    return Builder(
        record_type,
        name=name.strip(),
        description=description,
        match=match if match in ("all", "any") else "all",
        rows=rows,
    )


def _page(
    request: Request,
    user: Actor,
    builder: Builder,
    *,
    saved: QueryView | None = None,
    status_code: int = 200,
) -> Response:
    ctx = context_of(request)
    types = record_types.list_record_types(ctx)
    rtype = record_types.get_record_type(ctx, builder.record_type)
    return render(
        request,
        "query.html",
        status_code=status_code,
        types=types,
        rtype=rtype,
        builder=builder,
        rows=builder.padded(),
        fields=field_choices(rtype),
        operators=OPERATORS,
        saved=saved,
        may_save=user.is_manager_or_admin,
        preview=_preview(ctx, rtype, builder) if saved is not None or builder.rows else None,
    )


@dataclass
class Preview:
    count: int | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    more: bool = False


def _preview(ctx: Context, rtype: RecordType, builder: Builder) -> Preview:
    """The count and first records of the builder's filter now, or its problems."""
    if builder.complex_filter is not None:
        data: Mapping[str, Any] = builder.complex_filter
        numbers: list[int] = []
        problems: list[str] = []
    else:
        data, numbers, problems = to_filter(rtype, builder)
    try:
        count = queries.count_filter(ctx, rtype.key, data)
        page = queries.preview_filter(ctx, rtype.key, data, limit=PREVIEW_ROWS)
    except InvalidInputError as exc:
        found = [_problem_text(p, numbers) for p in exc.problems] or [exc.message]
        return Preview(problems=sorted([*problems, *found]))
    if problems:
        return Preview(problems=problems)
    columns = columns_of(rtype)
    rows = [
        {
            "id": r.id,
            "title": title_of(rtype, r),
            "cells": [shown(r.data.get(key)) for key, _ in columns],
        }
        for r in page.items
    ]
    return Preview(count, columns, rows, more=page.next_after is not None)


@router.get("/queries")
def query_list(request: Request, user: CurrentUser, after: AfterId | None = None) -> Response:
    ctx = context_of(request)
    page = queries.list_queries(ctx, after=after, limit=PAGE_SIZE)
    next_url = (
        f"/queries?{urlencode({'after': page.next_after})}" if page.next_after is not None else None
    )
    return render(
        request,
        "queries.html",
        items=page.items,
        next_url=next_url,
        first_url="/queries" if after is not None else None,
        may_save=user.is_manager_or_admin,
    )


@router.get("/queries/new")
def new_query(
    request: Request,
    user: CurrentUser,
    record_type: Annotated[str, Query(max_length=100)] = "contact",
) -> Response:
    ctx = context_of(request)
    known = [t.key for t in record_types.list_record_types(ctx)]
    if record_type not in known:
        raise NotFoundError(f"no record type {record_type!r} (known types: {', '.join(known)})")
    return _page(request, user, Builder(record_type))


@router.get("/queries/preview")
def preview_fragment(
    request: Request,
    user: CurrentUser,
    record_type: Annotated[str, Query(max_length=100)],
    match: Annotated[str, Query(max_length=10)] = "all",
    field: Annotated[list[str] | None, Query(max_length=100)] = None,
    op: Annotated[list[str] | None, Query(max_length=20)] = None,
    value: Annotated[list[str] | None, Query(max_length=1000)] = None,
) -> Response:
    ctx = context_of(request)
    rtype = record_types.get_record_type(ctx, record_type)
    builder = _builder_from_form(record_type, match, field or [], op or [], value or [])
    found = (
        _preview(ctx, rtype, builder)
        if any(r.field for r in builder.rows)
        else Preview(problems=["choose a field for at least one condition"])
    )
    return render(request, "query_preview.html", preview=found, rtype=rtype)


@router.get("/queries/row")
def condition_row(
    request: Request,
    user: CurrentUser,
    record_type: Annotated[str, Query(max_length=100)],
    field: Annotated[list[str] | None, Query(max_length=100)] = None,
) -> Response:
    """One more empty condition for the builder (htmx), numbered after those on the page."""
    rtype = record_types.get_record_type(context_of(request), record_type)
    shown_rows = len(field or [])
    if shown_rows >= MAX_ROWS:
        return Response(status_code=204)
    return render(
        request,
        "query_row.html",
        n=shown_rows + 1,
        row=Row(),
        fields=field_choices(rtype),
        operators=OPERATORS,
    )


def _save(
    request: Request,
    user: Actor,
    builder: Builder,
    existing: QueryView | None,
) -> Response:
    ctx = context_of(request)
    rtype = record_types.get_record_type(ctx, builder.record_type)
    if builder.complex_filter is not None:
        data: Mapping[str, Any] = builder.complex_filter
        numbers: list[int] = []
        problems: list[str] = []
    else:
        data, numbers, problems = to_filter(rtype, builder)
    if problems:
        try:  # every problem at once: the services' too
            queries.count_filter(ctx, rtype.key, data)
        except InvalidInputError as exc:
            problems += [_problem_text(p, numbers) for p in exc.problems]
        builder.problems = sorted(problems)
        return _page(request, user, builder, saved=existing, status_code=422)
    try:
        if existing is None:
            saved = queries.save_query(
                ctx,
                user,
                name=builder.name,
                record_type=builder.record_type,
                filter=data,
                description=builder.description,
            )
        else:
            saved = queries.update_query(
                ctx,
                user,
                existing.name,
                filter=data,
                description=builder.description,
                record_type=builder.record_type,
            )
    except InvalidInputError as exc:
        builder.problems = [_problem_text(p, numbers) for p in exc.problems] or [exc.message]
        return _page(request, user, builder, saved=existing, status_code=422)
    except (ConflictError, PermissionDeniedError) as exc:
        builder.problems = [exc.message]
        return _page(request, user, builder, saved=existing, status_code=exc.status_code)
    answer = see_other(f"/queries/{saved.name}")
    flash(answer, f"Saved the query {saved.name}.")
    return answer


FieldList = Annotated[list[str], Form(max_length=100)]


@router.post("/queries/new")
def create_query(
    request: Request,
    user: CurrentUser,
    record_type: Annotated[str, Form(max_length=100)],
    name: Annotated[str, Form(max_length=200)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    match: Annotated[str, Form(max_length=10)] = "all",
    field: FieldList | None = None,
    op: FieldList | None = None,
    value: Annotated[list[str] | None, Form(max_length=1000)] = None,
) -> Response:
    builder = _builder_from_form(
        record_type,
        match,
        field or [],
        op or [],
        value or [],
        name=name,
        description=description,
    )
    record_types.get_record_type(context_of(request), record_type)
    return _save(request, user, builder, None)


@router.get("/queries/{name}")
def query_page(request: Request, user: CurrentUser, name: str) -> Response:
    saved = queries.get_query(context_of(request), name)
    return _page(request, user, from_filter(saved), saved=saved)


@router.post("/queries/{name}")
def change_query(
    request: Request,
    user: CurrentUser,
    name: str,
    record_type: Annotated[str, Form(max_length=100)],
    description: Annotated[str, Form(max_length=2000)] = "",
    match: Annotated[str, Form(max_length=10)] = "all",
    field: FieldList | None = None,
    op: FieldList | None = None,
    value: Annotated[list[str] | None, Form(max_length=1000)] = None,
) -> Response:
    ctx = context_of(request)
    existing = queries.get_query(ctx, name)
    record_types.get_record_type(ctx, record_type)
    builder = _builder_from_form(
        record_type, match, field or [], op or [], value or [], description=description
    )
    builder.name = existing.name
    if existing.filter and not builder.rows and from_filter(existing).complex_filter is not None:
        builder.complex_filter = from_filter(existing).complex_filter
    return _save(request, user, builder, existing)
