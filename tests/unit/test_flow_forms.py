"""The forms generated from the flow's JSON Schema (services.flow_forms): every kind renders, a
step saved unchanged keeps the file's bytes, a changed field changes only its line."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from crmflow.services import flow_forms
from crmflow.services.flow_forms import FormField

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def _posted(fields: list[FormField]) -> dict[str, str]:
    """What a browser posts for the form as rendered (nothing touched)."""
    form: dict[str, str] = {}
    for top in fields:
        for each in top.walk():
            if each.widget in ("group", "items", "unsupported"):
                continue
            if each.widget == "checkbox":
                form[each.name] = "true" if each.checked else "false"
            else:
                form[each.name] = each.value
    return form


def _step_form(text: str, key: str) -> list[FormField]:
    document = flow_forms.load_document(text)
    _, step = flow_forms.find_step(document, key)
    schema = flow_forms.step_schema(step)
    assert schema is not None
    return flow_forms.form_fields(schema, step)


def test_every_trigger_step_and_action_kind_of_the_schema_renders() -> None:
    # A new kind in the schema needs no editor code, or this names it with the field it lacks.
    assert flow_forms.unsupported_kinds() == []
    kinds = {k.value for k in flow_forms.trigger_kinds()}
    assert {"record_created", "field_changed", "schedule", "date_reached"} <= kinds
    assert {k.value for k in flow_forms.step_kinds()} >= {"action", "wait", "decision", "approval"}
    assert {"send_email", "create_task", "update_record"} <= {
        k.value for k in flow_forms.action_kinds()
    }


def test_a_kind_s_fields_carry_label_required_mark_and_enum_choices() -> None:
    schema = flow_forms.kind_schema(flow_forms.trigger_kinds(), "date_reached")
    assert schema is not None
    fields = {f.path: f for f in flow_forms.form_fields(schema, None, pickers={"field": ["born"]})}
    assert fields["field"].required and fields["field"].widget == "select"
    assert ("born", "born") in fields["field"].options
    assert fields["direction"].widget == "select"
    assert [v for v, _ in fields["direction"].options] == ["before", "after"]
    assert fields["direction"].value == "after"  # the schema's default
    assert fields["days"].widget == "integer" and not fields["days"].required
    assert (
        fields["ignore_year"].widget == "checkbox" and fields["ignore_year"].label == "Ignore Year"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_opens_in_the_forms_and_saves_unchanged_byte_for_byte(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    steps = flow_forms.step_summaries(flow_forms.load_document(text))
    assert steps
    for step in steps:
        saved, problems = flow_forms.saved_step_text(
            text, step.key, _posted(_step_form(text, step.key))
        )
        assert problems == []
        assert saved == text, "".join(
            difflib.unified_diff(text.splitlines(True), saved.splitlines(True))
        )


def test_changing_one_field_of_an_example_changes_only_that_line() -> None:
    path = next(p for p in EXAMPLES if p.name == "six-month-promotion.yaml")
    text = path.read_text(encoding="utf-8")
    form = _posted(_step_form(text, "promotion"))
    assert form["f:actions[0].cc"] == "sales@example.org"
    form["f:actions[0].subject"] = "A gift for {{ record.first_name }}"
    form["f:name"] = "Promotion mail"
    saved, problems = flow_forms.saved_step_text(text, "promotion", form)
    assert problems == []
    changed = [
        line
        for line in difflib.unified_diff(text.splitlines(), saved.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        "-    name: Promotion email",
        "+    name: Promotion mail",
        "-        subject: \"{{ record.first_name | default('Dear client') }}, {{ discount }}% off"
        ' for six months with us"',
        '+        subject: "A gift for {{ record.first_name }}"',
    ]
    assert "# Seed 002" in saved  # the comment stays


def test_a_word_in_a_number_field_is_a_problem_at_that_field() -> None:
    path = next(p for p in EXAMPLES if p.name == "donor-thank-you.yaml")
    text = path.read_text(encoding="utf-8")
    form = _posted(_step_form(text, "call"))
    form["f:actions[0].due_days"] = "five"
    saved, problems = flow_forms.saved_step_text(text, "call", form)
    assert saved == text
    [problem] = problems
    assert problem.path.endswith("actions[0].due_days")
    assert "whole number" in problem.message


def test_a_json_flow_keeps_its_text_unless_a_field_changes_and_stays_json() -> None:
    text = (
        '{"schema_version": 1, "key": "k", "name": "K", "record_type": "contact",\n'
        ' "triggers": [{"type": "manual"}],\n'
        ' "steps": [{"key": "s", "actions": [{"type": "history", "message": "hi"}]}]}\n'
    )
    form = _posted(_step_form(text, "s"))
    assert flow_forms.saved_step_text(text, "s", form) == (text, [])
    form["f:actions[0].message"] = "hello"
    saved, problems = flow_forms.saved_step_text(text, "s", form)
    assert problems == []
    assert json.loads(saved)["steps"] == [
        {"key": "s", "actions": [{"type": "history", "message": "hello"}]}
    ]


def test_an_optional_part_the_step_leaves_out_is_folded_and_stays_out() -> None:
    path = next(p for p in EXAMPLES if p.name == "six-month-promotion.yaml")
    fields = {f.path: f for f in _step_form(path.read_text(encoding="utf-8"), "promotion")}
    assert fields["deadline"].folded and fields["timing"].folded
    assert not fields["actions"].folded and not fields["name"].folded


def test_a_new_flow_s_key_comes_from_its_name_and_is_never_a_page_s_path() -> None:
    assert flow_forms.slug("Six-month promotion!") == "six-month-promotion"
    assert flow_forms.slug("Été 2027") == "ete-2027"
    assert flow_forms.slug("New") == "new-flow"
    assert flow_forms.slug("!!!") == "flow"
