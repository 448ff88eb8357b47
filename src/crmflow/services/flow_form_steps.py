"""Operations on a flow's list of steps for the form editor (issue 13): add, remove, move,
switch active. Pure: a flow's text in, the changed text out; no SQL, no IO, no validation
(the page validates the whole flow with `services.flows`, as `crmflow flows validate` does).

Each operation is made on the ruamel round-trip document, whose meaning is the reference; the
text written keeps the bytes of every part the operation did not touch. ruamel keeps a comment
written between two steps on the deepest last value of the step above it, so moving or
removing an item of the document would carry the comments of its neighbour along. A step of a
block list is therefore moved or removed as its lines (with the comments and blank lines just
above it, which are about it), and the result is read back and compared with the document's:
when they differ (a JSON flow, a list written in flow style, an unusual layout) the document
itself is written instead, which keeps the meaning and may move a comment.

Steps run by `order` when a step has one (the engine's `FlowDefinition.ordered_steps`): the list
is shown and moved in run order, and when any step has an `order`, a move numbers every step's
`order` again (10, 20, ...) instead of moving lines.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from crmflow.errors import InvalidInputError, Problem
from crmflow.services import flow_forms

__all__ = [
    "MAX_STEPS",
    "OrderedStep",
    "add_step",
    "move_step",
    "new_step",
    "new_step_key",
    "ordered_steps",
    "problems_by_step",
    "remove_step",
    "set_active",
]

MAX_STEPS = 500
_STEP_ORDER_GAP = 10
_KEY_RE = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class OrderedStep:
    """A step as the list shows it: its place in run order (`position`) and in the document
    (`index`, the validator's `steps[index]`)."""

    position: int
    index: int
    key: str
    name: str
    type: str
    active: bool
    actions: int


def _steps(document: Mapping[str, Any]) -> CommentedSeq:
    steps = document.get("steps")
    if not isinstance(steps, CommentedSeq):
        raise InvalidInputError(
            "the flow", [Problem("steps", "is not a list of steps", "fix it in the YAML view")]
        )
    return steps


def _order_value(step: Any) -> int | None:
    value = step.get("order") if isinstance(step, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _run_order(steps: Sequence[Any]) -> list[int]:
    """Indices of `steps` in run order, as the engine sorts them: by `order`, a step without
    one keeping its place in the list."""
    keyed = [
        (_order_value(step) if _order_value(step) is not None else index, index)
        for index, step in enumerate(steps)
    ]
    return [index for _, index in sorted(keyed)]


def ordered_steps(document: Mapping[str, Any]) -> list[OrderedStep]:
    """The document's steps in run order."""
    steps = document.get("steps")
    if not isinstance(steps, list):
        return []
    summaries = {s.index: s for s in flow_forms.step_summaries(document)}
    out: list[OrderedStep] = []
    for index in _run_order(steps):
        summary = summaries.get(index)
        if summary is None:
            continue
        out.append(
            OrderedStep(
                position=len(out),
                index=index,
                key=summary.key,
                name=summary.name,
                type=summary.type,
                active=summary.active,
                actions=summary.actions,
            )
        )
    return out


def _find(steps: CommentedSeq, key: str) -> int:
    for index, step in enumerate(steps):
        if isinstance(step, Mapping) and str(step.get("key", "")) == key:
            return index
    raise InvalidInputError(
        "the step",
        [Problem("step", f"{key[:60]!r} is not a step of the flow's current version", "reload")],
    )


# -- text of a block list of steps ---------------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _chunks(text: str, document: CommentedMap) -> tuple[list[str], list[tuple[int, int]]] | None:
    """The lines of `text` and, for each step, the range of lines (start, end) that is its
    own: its comments and blank lines above it, its dash line, its content. None when the
    steps are not a block list the lines can be cut from."""
    if text.lstrip().startswith("{"):
        return None
    steps = document.get("steps")
    if not isinstance(steps, CommentedSeq) or not steps or steps.fa.flow_style():
        return None
    lines = text.splitlines(keepends=True)
    starts = []
    for index in range(len(steps)):
        try:
            line, column = steps.lc.item(index)
        except (KeyError, IndexError, TypeError):
            return None
        if line >= len(lines) or not lines[line][:column].strip().startswith("-"):
            return None  # `-` alone on its line, or a layout not expected: not cut by lines
        starts.append(line)
    dash = _indent(lines[starts[0]])
    if any(_indent(lines[s]) != dash for s in starts):
        return None

    def shallow(line: str) -> bool:
        stripped = line.strip()
        return not stripped or (stripped.startswith("#") and _indent(line) <= dash)

    leads = []
    for start in starts:
        first = start
        while first > 0 and shallow(lines[first - 1]) and first - 1 not in starts:
            first -= 1
        leads.append(first)
    # The last step ends before the first line back at the list's level or above it; the
    # comments and blank lines just before that line belong to what follows the list.
    end = starts[-1] + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and not line.strip().startswith("#") and _indent(line) <= dash:
            break
        end += 1
    while end > starts[-1] + 1 and shallow(lines[end - 1]):
        end -= 1
    if leads[0] > 0 and _indent(lines[leads[0] - 1]) > dash:
        return None
    ranges = [(leads[i], leads[i + 1]) for i in range(len(leads) - 1)]
    ranges.append((leads[-1], end))
    return lines, ranges


def _ensure_newline(chunk: list[str]) -> list[str]:
    if chunk and not chunk[-1].endswith("\n"):
        return [*chunk[:-1], chunk[-1] + "\n"]
    return chunk


def _spliced(text: str, document: CommentedMap, order: Sequence[int]) -> str | None:
    """`text` with its steps' lines in `order` (indices of the current list; an index left
    out is a removed step); None when the lines cannot be cut."""
    found = _chunks(text, document)
    if found is None:
        return None
    lines, ranges = found
    head = lines[: ranges[0][0]]
    tail = lines[ranges[-1][1] :]
    body: list[str] = []
    for index in order:
        start, end = ranges[index]
        body += _ensure_newline(lines[start:end])
    return "".join(head + body + tail)


def _same_meaning(text: str, expected: CommentedMap) -> bool:
    try:
        reread = flow_forms.load_document(text)
    except InvalidInputError:
        return False
    return bool(flow_forms.comparable(reread) == flow_forms.comparable(expected))


def _written(text: str, document: CommentedMap, candidate: str | None) -> str:
    """`candidate` (lines cut and pasted) when it reads as `document`, else `document`
    written by ruamel."""
    if candidate is not None and _same_meaning(candidate, document):
        return candidate
    return flow_forms.dump_document(document, text)


# -- operations ----------------------------------------------------------------------------------


def move_step(text: str, key: str, position: int) -> str:
    """`text` with step `key` at `position` (0-based) of the run order; the other steps keep
    their order. A position past either end is the end."""
    document = flow_forms.load_document(text)
    steps = _steps(document)
    index = _find(steps, key)
    order = _run_order(steps)
    position = max(0, min(position, len(order) - 1))
    new_order = [i for i in order if i != index]
    new_order.insert(position, index)
    if new_order == order:
        return text
    if any(_order_value(step) is not None for step in steps):
        for rank, i in enumerate(new_order):
            _set_key(steps[i], "order", (rank + 1) * _STEP_ORDER_GAP)
        return flow_forms.dump_document(document, text)
    moved = CommentedSeq([steps[i] for i in new_order])
    candidate = _spliced(text, document, new_order)
    for i, step in enumerate(moved):
        steps[i] = step
    return _written(text, document, candidate)


def remove_step(text: str, key: str) -> str:
    """`text` without step `key` (its lines and the comments just above it)."""
    document = flow_forms.load_document(text)
    steps = _steps(document)
    index = _find(steps, key)
    keep = [i for i in range(len(steps)) if i != index]
    candidate = _spliced(text, document, keep)
    del steps[index]
    return _written(text, document, candidate)


def set_active(text: str, key: str, active: bool) -> str:
    """`text` with step `key` switched on or off: `active: false` written where the schema
    lists it; back on, that line goes (on is the default)."""
    document = flow_forms.load_document(text)
    steps = _steps(document)
    step = steps[_find(steps, key)]
    if not isinstance(step, CommentedMap):
        return text
    current = step.get("active", True) is not False
    if current == active:
        return text
    if active and "active" in step:
        _drop_key(step, "active")  # on is the default: the line goes
    else:
        _set_key(step, "active", active)
    return flow_forms.dump_document(document, text)


def _drop_key(step: CommentedMap, name: str) -> None:
    """Delete `name` from `step`; when it is the last key, the lines ruamel keeps after it
    (the next step's comments) go to the key before it."""
    keys = list(step)
    slot = step.ca.items.get(name)
    token = slot[2] if slot and len(slot) > 2 else None
    value = getattr(token, "value", None)
    del step[name]
    if keys[-1] != name or len(keys) < 2 or token is None or not isinstance(value, str):
        return
    after = value[value.index("\n") + 1 :] if "\n" in value else ""
    if not after:
        return
    previous = keys[-2]
    before = step.ca.items.get(previous)
    kept = before[2] if before and len(before) > 2 else None
    own = getattr(kept, "value", None)
    if kept is not None and isinstance(own, str) and own.strip():
        kept.value = own[: own.index("\n") + 1] + after if "\n" in own else own + "\n" + after
        return
    moved = copy.copy(token)
    moved.value = "\n" + after
    if before:
        before[2] = moved
    else:
        step.ca.items[previous] = [None, None, moved, None]


def _set_key(step: CommentedMap, name: str, value: Any) -> None:
    """Set `name` in `step`: in place when it is there (its comments stay), else where the
    step's schema lists it among the keys present."""
    if name in step:
        step[name] = value
        return
    schema = flow_forms.step_schema(step) or {}
    names = list((schema.get("properties") or {}).keys())
    rank = {n: i for i, n in enumerate(names)}
    later = [k for k in step if rank.get(str(k), -1) > rank.get(name, len(names))]
    if later:
        step.insert(list(step).index(later[0]), name, value)
        return
    last = list(step)[-1] if step else None
    step[name] = value
    if last is not None:
        _carry_comment(step, last, name)


def _carry_comment(step: CommentedMap, last: Any, name: str) -> None:
    """ruamel keeps the lines after a map's last value (blank lines, the next step's
    comments) on that value: once `name` follows it, they follow `name`, and the last
    value keeps only its own end-of-line comment."""
    slot = step.ca.items.get(last)
    token = slot[2] if slot and len(slot) > 2 else None
    value = getattr(token, "value", None)
    if token is None or not isinstance(value, str) or "\n" not in value:
        return
    cut = value.index("\n") + 1
    own, after = value[:cut], value[cut:]
    if not after:
        return
    if own.strip():
        token.value = own
    else:
        slot[2] = None
    moved = copy.copy(token)
    moved.value = "\n" + after
    step.ca.items[name] = [None, None, moved, None]


# -- a new step ----------------------------------------------------------------------------------


def new_step_key(name: str, taken: Sequence[str]) -> str:
    """A step key from its name (`Send the offer` -> `send_the_offer`), not one of `taken`."""
    base = flow_forms.slug(name).replace("-", "_")
    base = _KEY_RE.sub("_", base).strip("_")[:50] or "step"
    if base in ("flow", "new_flow"):
        base = "step"
    key, number = base, 2
    while key in taken:
        key, number = f"{base}_{number}", number + 1
    return key


def new_step(step_type: str, key: str, name: str) -> CommentedMap:
    """A step of `step_type` with what it needs to be valid once its form is filled: an
    action step one history line, a decision one branch, a wait a timeout of one day, an
    approval two buttons."""
    step = CommentedMap()
    step["key"] = key
    if name:
        step["name"] = name
    if step_type != "action":
        step["type"] = step_type
    if step_type == "action":
        action = CommentedMap()
        action["type"] = "history"
        action["message"] = f"{name or key} done"
        step["actions"] = CommentedSeq([action])
    elif step_type == "decision":
        branch = CommentedMap()
        branch["if"] = ""
        branch["goto"] = ""
        step["branches"] = CommentedSeq([branch])
    elif step_type == "wait":
        timeout = CommentedMap()
        timeout["amount"] = 1
        timeout["unit"] = "days"
        step["timeout"] = timeout
    elif step_type == "approval":
        buttons = CommentedSeq()
        for button_key, label in (("approve", "Approve"), ("refuse", "Refuse")):
            button = CommentedMap()
            button["key"] = button_key
            button["label"] = label
            buttons.append(button)
        step["buttons"] = buttons
    return step


def add_step(
    text: str, step_type: str, name: str, form: Mapping[str, str]
) -> tuple[str, str, list[Problem]]:
    """`text` with a new step of `step_type` named `name` at the end of the run order, its
    fields as posted in `form` (`f:<path>` keys, as the step form posts them). Returns the
    new text, the new step's key and the problems of values that cannot be read (text
    unchanged then)."""
    schema = flow_forms.kind_schema(flow_forms.step_kinds(), step_type)
    if schema is None:
        kinds = ", ".join(k.value for k in flow_forms.step_kinds())
        problem = Problem("type", f"{step_type[:40]!r} is not a step type", f"pick one of {kinds}")
        return text, "", [problem]
    name = " ".join(name.split())
    if not name:
        return text, "", [Problem("name", "is empty", "give the step a name")]
    if len(name) > 200:
        return text, "", [Problem("name", f"has {len(name)} characters", "keep it under 200")]
    document = flow_forms.load_document(text)
    steps = _steps(document)
    if len(steps) >= MAX_STEPS:
        return text, "", [Problem("steps", f"has {MAX_STEPS} steps already", "remove one first")]
    taken = [str(s.get("key", "")) for s in steps if isinstance(s, Mapping)]
    key = new_step_key(name, taken)
    step = new_step(step_type, key, name)
    problems = flow_forms.apply_form(schema, step, form, where=f"steps[{len(steps)}].")
    if problems:
        return text, key, problems
    orders = [o for o in (_order_value(s) for s in steps) if o is not None]
    if orders:
        _set_key(step, "order", max(orders) + _STEP_ORDER_GAP)
    steps.append(step)
    return flow_forms.dump_document(document, text), key, []


def problems_by_step(
    problems: Sequence[Problem], document: Mapping[str, Any]
) -> tuple[dict[str, list[str]], list[str]]:
    """The validator's problems at the step they concern (by key, from `steps[i]...` paths
    of `document`, the text that was validated); the rest, worded with their path."""
    steps = document.get("steps")
    keys = [
        str(s.get("key", "")) if isinstance(s, Mapping) else ""
        for s in (steps if isinstance(steps, list) else [])
    ]
    at: dict[str, list[str]] = {}
    rest = []
    for problem in problems:
        text = problem.message + (f" ({problem.hint})" if problem.hint else "")
        found = re.match(r"^steps\[(\d+)\]\.?(.*)$", problem.path)
        if found and int(found.group(1)) < len(keys) and keys[int(found.group(1))]:
            where = found.group(2)
            at.setdefault(keys[int(found.group(1))], []).append(
                f"{where}: {text}" if where else text
            )
        else:
            rest.append(f"{problem.path}: {text}" if problem.path else text)
    return at, rest
