"""The flow diagram's mermaid text (a pure function): nodes with the records at each step,
branches, buttons and timings on the edges, and labels that cannot break out of mermaid."""

from __future__ import annotations

from typing import Any

from crmflow.engine.definition.flow import FlowDefinition
from crmflow.web.pages.flows_diagram import NOT_ENTERED, label, mermaid_text


def _flow(steps: list[dict[str, Any]], name: str = "F") -> FlowDefinition:
    return FlowDefinition.model_validate(
        {"schema_version": 1, "key": "f", "name": name, "record_type": "contact", "steps": steps}
    )


def test_steps_branches_timings_and_counts_are_drawn() -> None:
    flow = _flow(
        [
            {"key": "thank", "name": "Thank you", "actions": []},
            {
                "key": "big",
                "type": "decision",
                "branches": [{"if": "record.amount >= 500", "goto": "call"}],
                "else": "later",
            },
            {"key": "call", "name": "Call", "next": "done"},
            {"key": "later", "timing": {"type": "after", "amount": 90, "unit": "days"}},
            {"key": "done", "type": "end"},
        ]
    )
    text = mermaid_text(flow, {"thank": 3, "later": 1, NOT_ENTERED: 2})
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert '  start(("start · 2 due to enter"))' in lines
    assert '  s0["Thank you · 3 inside"]' in lines
    assert '  s1{"big"}' in lines  # a decision is a rhombus
    assert '  s3["later · 1 inside"]' in lines
    assert '  s4(["done"])' in lines  # an end is a stadium
    assert "  start --> s0" in lines
    assert "  s0 --> s1" in lines
    assert '  s1 -->|"if record.amount #gt;= 500"| s2' in lines
    assert '  s1 -->|"else · after 90 days"| s3' in lines
    assert "  s2 --> s4" in lines  # `next` instead of the following step
    assert "  s2 --> s3" not in lines
    assert "  s3 --> s4" in lines
    assert "  class s0 busy" in lines and "  class s1 busy" not in lines


def test_approval_buttons_and_wait_timeouts_label_their_edges() -> None:
    flow = _flow(
        [
            {
                "key": "ask",
                "type": "approval",
                "buttons": [
                    {"key": "ok", "label": "Validate"},
                    {"key": "no", "label": "Refuse", "goto": "no"},
                ],
            },
            {
                "key": "wait",
                "type": "wait",
                "until": "record.paid",
                "timeout": {"amount": 3, "unit": "days"},
                "on_timeout": "no",
            },
            {"key": "no", "type": "end", "active": False},
        ]
    )
    lines = mermaid_text(flow, {}).splitlines()
    assert '  s0{{"ask"}}' in lines
    assert '  s0 -->|"Validate · wait ≤ 3 days"| s1' in lines
    assert '  s0 -->|"Refuse"| s2' in lines
    assert '  s1 -->|"timeout"| s2' in lines
    assert '  s2(["no · off"])' in lines and "  class s2 off" in lines


def test_labels_cannot_close_their_quotes_or_inject_markup() -> None:
    assert (
        label('a "b" <script>#1 & `x`') == '"a #quot;b#quot; #lt;script#gt;#35;1 #amp; #96;x#96;"'
    )
    assert label("two\nlines\t here") == '"two lines here"'
    assert label("x" * 100, 10) == '"' + "x" * 9 + '…"'
    evil = _flow([{"key": "s", "name": '"]) --> click s0 call alert(1) %%'}], name="F")
    text = mermaid_text(evil, {})
    assert '  s0["#quot;]) --#gt; click s0 call alert(1) #37;#37;"]' in text.splitlines()
    assert "\n  click" not in text
