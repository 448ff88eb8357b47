"""A flow's diagram as mermaid text, drawn from its steps (pure: no IO, no clock).

Each step is a node (a decision a rhombus, an end a stadium, an approval a hexagon) labelled
with its name and the records at it now; edges go where the step may lead (a branch with its
condition, else, a button, a timeout, a failed message) and fall through to the following step;
an edge into a timed step carries its timing ("after 90 days"). Node ids are generated (s0,
s1, ...), never taken from the document, and every label is escaped for mermaid, whose
`securityLevel: "strict"` then escapes it again for the page.
"""

from __future__ import annotations

from collections.abc import Mapping

from crmflow.engine.definition.common import Duration
from crmflow.engine.definition.flow import FlowDefinition
from crmflow.engine.definition.steps import (
    ApprovalStep,
    DecisionStep,
    EndStep,
    Step,
    WaitStep,
)
from crmflow.engine.definition.timing import Timing

__all__ = ["NOT_ENTERED", "label", "mermaid_text", "timing_text"]

NOT_ENTERED = "(not entered yet)"  # services.run_views' per-step key for records due to enter
_MAX_LABEL = 80
_ENTITIES = {"#": "#35;", "%": "#37;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}
_SHAPES = {"decision": ("{", "}"), "end": ("([", "])"), "approval": ("{{", "}}")}


def label(text: str, limit: int = _MAX_LABEL) -> str:
    """`text` as a quoted mermaid label: on one line, at most `limit` characters, and every
    character mermaid reads as syntax written as its entity code (`#` first, so that the
    entities themselves stay as written)."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    out = "".join(_ENTITIES.get(ch, ch) for ch in flat)
    # Backticks start mermaid's markdown strings; braces and brackets are safe inside quotes.
    out = out.replace("`", "#96;")
    return f'"{out}"'


def _duration(d: Duration) -> str:
    unit = d.unit if d.amount != 1 else d.unit.rstrip("s")
    business = " business" if d.business_days and d.unit == "days" else ""
    return f"{d.amount}{business} {unit}"


def timing_text(timing: Timing | None) -> str:
    """When a step starts, in a few words ("" when at once)."""
    if timing is None or timing.type == "immediately":
        return ""
    if timing.type == "after":
        unit = timing.unit if timing.amount != 1 else timing.unit.rstrip("s")
        business = " business" if timing.business_days and timing.unit == "days" else ""
        return f"after {timing.amount}{business} {unit}"
    if timing.type == "at_time":
        return f"at {timing.time}" + (" on business days" if timing.business_days else "")
    if timing.type == "date":
        when = "on" if timing.days == 0 else f"{timing.days} days {timing.direction}"
        at = f" at {timing.time}" if timing.time else ""
        return f"{when} {timing.field}{at}"
    # event
    return f"when the event comes, at most {_duration(timing.timeout)}"


def _kind(step: Step) -> str:
    if isinstance(step, DecisionStep):
        return "decision"
    if isinstance(step, EndStep):
        return "end"
    if isinstance(step, ApprovalStep):
        return "approval"
    return "step"


def _targets(definition: FlowDefinition, step: Step) -> list[tuple[str, str]]:
    """(edge text, target key) of every way out of `step`, in the order a reader expects."""
    out: list[tuple[str, str]] = []
    if isinstance(step, DecisionStep):
        out += [(f"if {b.if_}", b.goto) for b in step.branches]
        if step.else_ is not None:
            out.append(("else", step.else_))
    elif isinstance(step, ApprovalStep):
        following = definition.step_after(step.key)
        for b in step.buttons:
            target = b.goto or step.next or following
            if target is not None:
                out.append((b.label, target))
        return out
    for path, target in step.targets():
        if path.startswith(("branches[", "else")):
            continue
        if path == "next":
            out.append(("", target))
        elif "on_timeout" in path:
            out.append(("timeout", target))
        elif "on_failure" in path:
            out.append(("message failed", target))
        else:
            out.append(("", target))
    if step.falls_through:
        following = definition.step_after(step.key)
        if following is not None:
            out.append(("", following))
    return out


def mermaid_text(definition: FlowDefinition, counts: Mapping[str, int]) -> str:
    """The mermaid flowchart of `definition`, with `counts` (records at each step key now;
    NOT_ENTERED: due to enter) on the nodes."""
    ordered = definition.ordered_steps()
    ids = {step.key: f"s{i}" for i, step in enumerate(ordered)}
    lines = ["flowchart TD"]
    waiting = counts.get(NOT_ENTERED, 0)
    start_text = "start" + (f" · {waiting} due to enter" if waiting else "")
    lines.append(f"  start(({label(start_text)}))")
    unknown: dict[str, str] = {}
    for step in ordered:
        name = step.name or step.key
        inside = counts.get(step.key, 0)
        text = f"{name} · {inside} inside" if inside else name
        if not step.active:
            text += " · off"
        opening, closing = _SHAPES.get(_kind(step), ("[", "]"))
        lines.append(f"  {ids[step.key]}{opening}{label(text)}{closing}")
        classes = []
        if inside:
            classes.append("busy")
        if not step.active:
            classes.append("off")
        if classes:
            lines.append(f"  class {ids[step.key]} {','.join(classes)}")

    def node(key: str) -> str:
        if key in ids:
            return ids[key]
        if key not in unknown:  # a target the document names but does not have (refused
            unknown[key] = f"u{len(unknown)}"  # on load; drawn rather than hidden)
            lines.append(f"  {unknown[key]}[{label(key + ' (missing)')}]")
        return unknown[key]

    def edge(source: str, target_key: str, text: str) -> None:
        target = definition.step(target_key)
        timing = ""
        if target is not None:
            timing = timing_text(target.timing)
            if isinstance(target, WaitStep):
                timing = " ".join(p for p in (timing, f"wait ≤ {_duration(target.timeout)}") if p)
        words = " · ".join(p for p in (text, timing) if p)
        arrow = f"-->|{label(words, 60)}|" if words else "-->"
        lines.append(f"  {source} {arrow} {node(target_key)}")

    if ordered:
        edge("start", ordered[0].key, "")
    for step in ordered:
        for text, target_key in _targets(definition, step):
            edge(ids[step.key], target_key, text)
    lines.append("  classDef busy stroke-width:3px")
    lines.append("  classDef off stroke-dasharray:4 3")
    return "\n".join(lines) + "\n"
