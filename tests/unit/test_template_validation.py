"""The validator and templates (issue 10): a send_email naming a stored template that does not
exist is refused, and a field a template may show empty is a warning (with path and hint) that
does not make the flow invalid."""

from __future__ import annotations

from typing import Any

import pytest

from crmflow.engine.recordtypes import BUILTIN_TYPES
from crmflow.engine.stored_templates import TemplateDocument, template_catalog
from crmflow.engine.validation import CheckedFlow, ValidationContext, check_flow_text
from crmflow.errors import InvalidInputError

NEWS = TemplateDocument.model_validate(
    {
        "name": "donor-news",
        "subject": "Hello %ab_firstname%",
        "text": "Dear {{ record.first_name }} {{ record.last_name }}",
        "defaults": {"first_name": "friend"},
    }
)
GALA = TemplateDocument.model_validate(
    {
        "name": "gala",
        "text": "See you, {{ record.first_name }}, on {{ record.birth_date | date }}",
        "defaults": {"first_name": "friend"},
    }
)
WITH_TEMPLATES = ValidationContext(
    record_types=BUILTIN_TYPES, email_templates=template_catalog({"donor-news": NEWS, "gala": GALA})
)
OFFLINE = ValidationContext(record_types=BUILTIN_TYPES)


def flow_text(action: str) -> str:
    return f"""\
schema_version: 1
key: news
name: News
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: send
    actions:
      - {action}
"""


def checked(action: str, context: ValidationContext = WITH_TEMPLATES) -> CheckedFlow:
    return check_flow_text(flow_text(action), context=context, source="news.yaml")


def refused(action: str, context: ValidationContext = WITH_TEMPLATES) -> list[Any]:
    with pytest.raises(InvalidInputError) as caught:
        checked(action, context)
    return [(p.line, p.path, p.message, p.hint) for p in caught.value.problems]


def test_a_template_that_is_not_loaded_is_refused_with_the_names_known() -> None:
    assert refused('{type: send_email, subject: "", template: donor-newz}') == [
        (
            9,
            "steps[0].actions[0].template",
            "no email template 'donor-newz'",
            "did you mean 'donor-news'? Or load it with `crmflow templates load FILE`",
        )
    ]


def test_without_any_template_loaded_the_hint_says_so() -> None:
    empty = ValidationContext(record_types=BUILTIN_TYPES, email_templates=template_catalog({}))
    [(_, _, message, hint)] = refused('{type: send_email, subject: "", template: gala}', empty)
    assert message == "no email template 'gala'"
    assert hint.startswith("none is loaded yet")


def test_offline_without_templates_a_template_name_is_not_checked() -> None:
    done = checked('{type: send_email, subject: "", template: anything}', OFFLINE)
    assert done.definition.key == "news" and done.warnings == []


def test_an_unknown_variable_in_an_inline_template_is_refused_at_validation() -> None:
    [(_, path, message, _)] = refused('{type: send_email, subject: "Hi {{ nickname }}", body: x}')
    assert (path, message) == (
        "steps[0].actions[0].subject",
        "unknown template variable 'nickname'",
    )


def test_a_field_that_may_be_empty_is_a_warning_with_path_line_and_hint() -> None:
    done = checked(
        '{type: history, message: "Hire {{ record.first_name }} {{ record.last_name }}"}'
    )
    [warning] = done.warnings  # last_name is required: no warning
    assert (warning.line, warning.path) == (9, "steps[0].actions[0].message")
    assert warning.message == (
        "record.first_name may be empty (the contact record type does not require it) and then "
        "shows as empty text"
    )
    assert warning.hint == "write {{ record.first_name | default('...') }}"


@pytest.mark.parametrize(
    "message",
    [
        "Hire {{ record.first_name | default('the candidate') }}",
        "Hire {% if record.first_name %}{{ record.first_name }}{% endif %}",
        "Hire {{ record.first_name if record.first_name else 'them' }}",
    ],
)
def test_a_field_with_a_fallback_is_no_warning(message: str) -> None:
    assert checked(f'{{type: history, message: "{message}"}}').warnings == []


def test_a_stored_template_warns_about_fields_without_a_defaults_entry() -> None:
    assert checked('{type: send_email, subject: "", template: donor-news}').warnings == []
    [warning] = checked('{type: send_email, subject: "", template: gala}').warnings
    assert warning.path == "steps[0].actions[0].template"
    assert warning.message == (
        "the template 'gala': text: record.birth_date may be empty (the contact record type "
        "does not require it) and then shows as empty text"
    )
    assert "add birth_date: ... under defaults:" in warning.hint
