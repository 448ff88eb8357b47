"""The engine's shortcuts give what Jinja and the CEL library give: a simple template rendered
without Jinja, and `record.<field> == '<text>'` compared without the library."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.budget import EvaluationLimits
from crmflow.engine.conditions import compile_condition, text_comparison
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.runtime import RecordSnapshot
from crmflow.engine.steps.scope import EvaluationError, Scope
from crmflow.engine.templates import render_template, simple_render
from crmflow.errors import LimitExceededError

VALUES: dict[str, Any] = {
    "first_name": "claire",
    "last_name": "  Dubois ",
    "city": "Straße",
    "empty": "",
    "none": None,
    "number": 42,
    "flag": True,
    "items": "a field named like a dict method",
}

TEMPLATES = [
    "Dear {{ record.first_name }}",
    "{{ record.first_name | upper }} {{ record.last_name|trim }}!",
    "{{ record.city | upper }} / {{ record.city | lower }}",
    "{{- record.first_name -}}\n  and {{ record.last_name }}\n",
    "a {# a comment #} b {{ record.empty }}c",
    "{{ record.none }}",
    "{{ record.number }}",
    "{{ record.flag }}",
    "{{ record.items }}",
    "{{ record.id }} {{ record.type }}",
    "{{ record.first_name | title }}",
    "{{ record.first_name | upper(1) }}",
    "{% if record.first_name %}yes{% endif %}",
    "{{ record['first_name'] }}",
    "{{ 'x' }}{{ record.first_name }}",
]


def _jinja(text: str, limits: EvaluationLimits = EvaluationLimits()) -> str:
    record = RecordSnapshot(7, "contact", VALUES)
    return render_template(text, {"record": record.variables()}, limits=limits)


@pytest.mark.parametrize("text", TEMPLATES)
def test_a_simple_render_is_jinjas_render_or_is_left_to_jinja(text: str) -> None:
    fast = simple_render(text, VALUES)
    if fast is not None:
        assert fast == _jinja(text)


def test_the_simple_templates_of_a_flow_are_rendered_without_jinja() -> None:
    assert simple_render(TEMPLATES[0], VALUES) == "Dear claire"
    assert simple_render(TEMPLATES[1], VALUES) == "CLAIRE Dubois!"
    assert simple_render(TEMPLATES[2], VALUES) == "STRASSE / straße"
    # A dict method's name, an empty or missing field, a number, the record's own fields, other
    # filters and any other construct go to Jinja.
    for text in TEMPLATES[5:]:
        assert simple_render(text, VALUES) is None, text
    assert simple_render("{{ record.missing }}", VALUES) is None


def test_a_simple_template_over_a_budget_is_left_to_jinja_which_refuses_it() -> None:
    small = EvaluationLimits(max_output_chars=5)
    assert simple_render("Dear {{ record.first_name }}", VALUES, limits=small) is None
    with pytest.raises(LimitExceededError):
        _jinja("Dear {{ record.first_name }}", small)
    tiny = EvaluationLimits(max_value_size=3)
    assert simple_render("{{ record.first_name | upper }}", VALUES, limits=tiny) is None
    with pytest.raises(LimitExceededError):
        _jinja("{{ record.first_name | upper }}", tiny)
    passed = time.monotonic() - 1
    assert simple_render("{{ record.first_name | upper }}", VALUES, deadline=passed) is None
    assert simple_render("{{ record.first_name }}", VALUES, deadline=passed) == "claire"


COMPARISONS = [
    "record.first_name == 'claire'",
    "record.first_name != 'claire'",
    ' record . last_name == "  Dubois " ',
    "record.city == 'Straße'",
    "record.empty == ''",
    "record.none == 'x'",
    "record.number == '42'",
    "record.missing == 'x'",
    "record.type == 'contact'",
    "record.first_name == 'cl\\'aire'",
    "record.first_name == 'claire' && true",
]


def _scope(values: dict[str, Any]) -> Scope:
    flow = FlowDefinition.model_validate(
        {
            "schema_version": 1,
            "key": "f",
            "name": "F",
            "record_type": "contact",
            "owner": "system",
            "steps": [{"key": "done", "type": "end"}],
        }
    )
    record = RecordSnapshot(7, "contact", values)
    return Scope(
        flow=flow, record=record, now=datetime(2026, 3, 2, tzinfo=UTC), zone=ZoneInfo("UTC")
    )


def _library(expression: str, values: dict[str, Any]) -> Any:
    record = RecordSnapshot(7, "contact", values).variables()
    return compile_condition(expression).execute({"record": record})


@pytest.mark.parametrize("expression", COMPARISONS)
def test_a_text_comparison_gives_the_librarys_answer(expression: str) -> None:
    comparison = text_comparison(expression)
    answer = comparison.value(VALUES) if comparison is not None else None
    if answer is not None:
        assert answer == _library(expression, VALUES)
    # Through the scope, with or without the shortcut, the same answer or the same failure.
    try:
        expected: Any = _library(expression, VALUES)
    except Exception:
        with pytest.raises(EvaluationError):
            _scope(VALUES).evaluate(expression)
    else:
        assert _scope(VALUES).evaluate(expression) == expected


def test_only_plain_comparisons_of_a_text_field_take_the_shortcut() -> None:
    shortcut = [e for e in COMPARISONS if text_comparison(e) is not None]
    assert shortcut == COMPARISONS[:8]
    assert text_comparison(COMPARISONS[0]).value(VALUES) is True  # type: ignore[union-attr]
    assert text_comparison(COMPARISONS[1]).value(VALUES) is False  # type: ignore[union-attr]
    for expression in COMPARISONS[5:8]:  # no text in the field: the library decides
        assert text_comparison(expression).value(VALUES) is None  # type: ignore[union-attr]
