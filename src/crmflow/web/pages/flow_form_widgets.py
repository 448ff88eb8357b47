"""The flow forms' pickers that ask the server as you go (issue 13), htmx fragments:

- `/flows/new/form/widgets/query-count?name=<input>&<input>=<query>`: how many records the saved
  query picked matches now, beside its select;
- `/flows/new/form/widgets/condition?path=...&record_type=...`: a condition's editor, the saved
  queries' filter builder (fields, operators, relative days, all/any groups) that writes the CEL
  into the condition's own input (`f:<path>`, the one the step form saves), with a switch to
  write the CEL by hand. A CEL the builder cannot show opens in the hand mode and says why.

The conversion is `services.condition_builder`'s; the page only reads the rows it posts. Paths
are under `/flows/new/form` ("new" is never a flow's key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services import condition_builder, form_pickers, queries, record_types
from crmflow.services.condition_builder import Builder, Row
from crmflow.services.flow_forms import FormField
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import environment, render

__all__ = ["router"]

router = web_router()

MAX_PATH = 200
MAX_CEL = 4_000
_PATH = re.compile(r"^[A-Za-z0-9_.\[\]]{1,200}$")


def _id_of(path: str) -> str:
    return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", path)


@router.get("/flows/new/form/widgets/query-count")
def query_count(request: Request, user: CurrentUser) -> Response:
    """ "N records match now" for the saved query picked in the input named `name`."""
    input_name = request.query_params.get("name", "")[:MAX_PATH]
    name = request.query_params.get(input_name, "").strip()[:100] if input_name else ""
    if not name:
        text, ok = "Pick a saved query: its count of records shows here.", True
    else:
        try:
            count = queries.count_query(context_of(request), name)
        except NotFoundError:
            text, ok = f"No saved query named {name!r}: pick one of the list.", False
        except InvalidInputError as exc:
            text, ok = f"The query {name!r} cannot run now: {exc.message}", False
        else:
            verb = "record matches" if count == 1 else "records match"
            text = f"{count:,} {verb} now."
            ok = True
    return render(request, "flow_form_query_count.html", text=text, ok=ok)


def _builder_from_query(request: Request, path: str) -> Builder | None:
    """The builder's rows as posted, or None when none were (a first load, a switch)."""
    params = request.query_params
    matches = params.getlist(f"cb-match:{path}")
    if not matches:
        return None
    return condition_builder.rows_from_form(
        [m[:10] for m in matches],
        [g[:5] for g in params.getlist(f"cb-group:{path}")],
        [f[:100] for f in params.getlist(f"cb-field:{path}")],
        [o[:20] for o in params.getlist(f"cb-op:{path}")],
        [v[:1000] for v in params.getlist(f"cb-value:{path}")],
    )


def _added(builder: Builder, add: str) -> Builder:
    """`builder` with one more row in group `add` ("row:0" the top, "row:2" the second group)
    or one more group ("group"), within the builder's bounds."""
    rows = sum(1 for _ in _rows(builder))
    if rows >= condition_builder.MAX_ROWS:
        return builder
    if add == "group":
        builder.items.append(Builder("all", [Row()]))
        return builder
    found = re.match(r"^row:(\d{1,3})$", add)
    if found is None:
        return builder
    number = int(found.group(1))
    groups = [i for i in builder.items if isinstance(i, Builder)]
    target = groups[number - 1] if 0 < number <= len(groups) else builder
    target.items.append(Row())
    return builder


def _rows(builder: Builder) -> Any:
    for item in builder.items:
        if isinstance(item, Builder):
            yield from _rows(item)
        else:
            yield item


def _depth(builder: Builder) -> int:
    inner = [_depth(i) for i in builder.items if isinstance(i, Builder)]
    return 1 + max(inner, default=0)


def _padded(builder: Builder) -> Builder:
    """At least one row to fill in, in the top group and in each group."""
    for item in builder.items:
        if isinstance(item, Builder) and not item.items:
            item.items.append(Row())
    if not any(isinstance(i, Row) for i in builder.items):
        builder.items.insert(0, Row())
    return builder


@dataclass
class ConditionEditor:
    """What `flow_form_condition.html`'s macro draws for one condition."""

    path: str
    id: str
    record_type: str
    mode: str  # builder | hand
    cel: str
    fields: list[tuple[str, str]]  # (key, words shown)
    builder: Builder | None = None
    why: str = ""
    problems: list[str] = field(default_factory=list)
    help: bool = False
    problem: bool = False
    operators: tuple[tuple[str, str], ...] = condition_builder.OPERATORS


def _editor(
    path: str,
    record_type: str,
    fields: Mapping[str, str],
    labels: Mapping[str, str],
    cel: str,
    *,
    mode: str = "",
    posted: Builder | None = None,
    add: str = "",
    help: bool = False,
    problem: bool = False,
) -> ConditionEditor:
    """The editor's state: the rows posted (`posted`, "builder" mode) written as CEL, or the
    CEL parsed into rows (a first view, a switch, a CEL typed by hand), or the CEL by hand."""
    builder: Builder | None = None
    why = ""
    problems: list[str] = []
    if mode == "hand":
        pass
    elif posted is not None:
        builder = _added(posted, add)
        written, found = condition_builder.builder_to_cel(builder, fields)
        if found:
            problems = [
                f"{p.path}: {p.message}" + (f" ({p.hint})" if p.hint else "") for p in found
            ]
        else:
            cel = written
    elif not fields:
        why = "the flow's record type is not known, so its fields are not either"
    else:
        builder, why = condition_builder.cel_to_builder(cel, fields)
        if builder is not None and _depth(builder) > 2:
            builder, why = None, "groups inside groups, which the builder shows one level deep"
    return ConditionEditor(
        path=path,
        id=_id_of(path),
        record_type=record_type,
        mode="builder" if builder is not None else "hand",
        cel=cel,
        fields=[(key, f"{labels.get(key) or key} ({key})") for key in fields],
        builder=_padded(builder) if builder is not None else None,
        why=why if mode != "hand" else "",
        problems=problems,
        help=help,
        problem=problem,
    )


def condition_editor(each: FormField, field_problems: Mapping[str, Any]) -> ConditionEditor:
    """The editor of a form's condition field as the page first shows it (a template
    global: the field carries the record type's fields and their types as its options)."""
    fields: dict[str, str] = {}
    labels: dict[str, str] = {}
    for key, about in each.options:
        kind, _, label = about.partition("|")
        fields[key], labels[key] = kind, label
    return _editor(
        each.path,
        each.picker_arg,
        fields,
        labels,
        each.value,
        help=bool(each.help),
        problem=bool(field_problems.get(each.path)),
    )


environment.globals["condition_editor"] = condition_editor


@router.get("/flows/new/form/widgets/condition")
def condition(request: Request, user: CurrentUser) -> Response:
    """The editor again after a switch, a row added, a row changed or a CEL typed by hand."""
    params = request.query_params
    path = params.get("path", "")[:MAX_PATH]
    if not _PATH.match(path):
        raise InvalidInputError(
            "the condition",
            [Problem("path", "is not the path of a form's field", "reload the page")],
        )
    record_type = params.get("record_type", "")[:100]
    ctx = context_of(request)
    try:
        rtype = record_types.get_record_type(ctx, record_type) if record_type else None
    except (NotFoundError, InvalidInputError):
        rtype = None
    mode = params.get(f"cb-mode:{path}", "")
    from_rows = mode == "builder" and params.get("source") != "cel"
    editor = _editor(
        path,
        record_type,
        form_pickers.condition_fields(rtype),
        {f.key: f.label for f in rtype.fields} if rtype is not None else {},
        params.get(f"f:{path}", "")[:MAX_CEL],
        mode="" if params.get("source") == "cel" else mode,
        posted=_builder_from_query(request, path) if from_rows else None,
        add=params.get("add", "")[:20],
        help=params.get("help") == "1",
        problem=params.get("problem") == "1",
    )
    return render(request, "flow_form_condition.html", editor=editor)
