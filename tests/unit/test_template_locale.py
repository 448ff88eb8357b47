"""Templates format dates and numbers in the record's locale, and an empty field shows as empty
text or its default, never as "None" (issue 10)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.commands import EmailPayload
from crmflow.engine.recordtypes import RecordType, type_catalog
from crmflow.engine.runtime import RecordSnapshot
from crmflow.engine.steps.scope import EvaluationError, Scope
from crmflow.engine.templates import check_template
from crmflow.engine.validation import ValidationContext, flow_from_data
from crmflow.errors import InvalidInputError
from crmflow.services.templates import TemplateDocument, render_email, template_problems

EVENT = RecordType.from_dict(
    {
        "key": "event_guest",
        "name": "Event guest",
        "fields": [
            {"key": "first_name", "type": "text"},
            {"key": "last_name", "type": "text", "required": True},
            {"key": "locale", "type": "text"},
            {"key": "event_date", "type": "date"},
            {"key": "starts_at", "type": "datetime"},
            {"key": "amount", "type": "number"},
        ],
    }
)
CONTEXT = ValidationContext(record_types=type_catalog([EVENT]))
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def scope(flow_locale: str | None = None, **values: Any) -> Scope:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "key": "f",
        "name": "F",
        "record_type": "event_guest",
        "triggers": [{"type": "manual"}],
        "steps": [{"key": "s", "actions": [{"type": "history", "message": "x"}]}],
    }
    if flow_locale is not None:
        doc["locale"] = flow_locale
    flow = flow_from_data(doc, context=CONTEXT)
    record = {
        "first_name": None,
        "last_name": "Popescu",
        "locale": None,
        "event_date": "2026-03-01",
        "starts_at": "2026-03-01T17:30:00Z",
        "amount": 1234.5,
    }
    record.update(values)
    snapshot = RecordSnapshot(id=1, type="event_guest", values=record)
    return Scope(flow=flow, record=snapshot, now=NOW, zone=ZoneInfo("Europe/Paris"))


LINE = (
    "{{ record.event_date | date('long') }} / {{ record.starts_at | datetime('short') }} / "
    "{{ record.amount | number }} / {{ record.amount | currency('EUR') }}"
)


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("fr_FR", "1 mars 2026 / 01/03/2026 18:30 / 1\u202f234,5 / 1\u202f234,50\u00a0€"),
        ("de_DE", "1. März 2026 / 01.03.26, 18:30 / 1.234,5 / 1.234,50\u00a0€"),
        ("en_US", "March 1, 2026 / 3/1/26, 6:30\u202fPM / 1,234.5 / €1,234.50"),
    ],
)
def test_dates_and_numbers_follow_the_records_locale_and_the_flows_zone(
    locale: str, expected: str
) -> None:
    assert scope(locale=locale).render(LINE) == expected


def test_without_a_record_locale_the_flows_locale_then_english_is_used() -> None:
    assert scope("de_DE").render("{{ record.amount | number }}") == "1.234,5"
    assert scope().render("{{ record.event_date | date }}") == "Mar 1, 2026"


def test_an_unknown_locale_on_the_record_falls_back_instead_of_failing() -> None:
    assert scope("fr_FR", locale="klingon").render("{{ record.amount | number }}") == "1\u202f234,5"
    assert scope(locale="../../etc").render("{{ record.amount | number }}") == "1,234.5"


def test_an_explicit_locale_argument_wins() -> None:
    text = "{{ record.event_date | date('full', locale='de_DE') }}"
    assert scope(locale="fr_FR").render(text) == "Sonntag, 1. März 2026"


def test_an_empty_field_renders_as_empty_text_or_its_default_never_none() -> None:
    message = "Hire {{ record.first_name }} {{ record.last_name }}?"
    assert scope().render(message) == "Hire  Popescu?"
    named = "Hire {{ record.first_name | default('the candidate') }} {{ record.last_name }}?"
    assert scope().render(named) == "Hire the candidate Popescu?"
    assert scope(first_name="").render(named) == "Hire the candidate Popescu?"
    assert scope(first_name="Ana").render(named) == "Hire Ana Popescu?"
    assert scope(event_date=None, starts_at=None, amount=None).render(LINE) == " /  /  / "


def test_a_value_that_is_not_a_date_fails_with_a_clear_message() -> None:
    with pytest.raises(EvaluationError, match="'soon' is not a date"):
        scope(event_date="soon").render("{{ record.event_date | date }}")


def test_constant_mistakes_are_refused_when_the_flow_is_validated() -> None:
    def messages(text: str) -> list[str]:
        return [i.message for i in check_template(text, record_fields=EVENT.field_keys)]

    assert messages("{{ record.amount | currency('eur') }}") == [
        "| currency: 'eur' is not a currency code (three capital letters: EUR, USD...)"
    ]
    assert messages("{{ record.amount | number(locale='xx_YY') }}") == [
        "| number: 'xx_YY' is not a locale crmflow knows (write it as fr, fr_FR, de_DE, en_US...)"
    ]
    assert messages("{{ record.event_date | date('" + "y" * 65 + "') }}") == [
        "| date: the format pattern is longer than 64 characters (use short, medium, long, "
        "full or a shorter pattern)"
    ]
    assert messages("{{ record.event_date | dat }}") == ["unknown template filter 'dat'"]


def test_a_flow_with_an_unknown_locale_is_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        scope("english")
    [problem] = caught.value.problems
    assert problem.path == "locale"
    assert "'english' is not a locale crmflow knows" in problem.message


def test_a_stored_template_formats_in_the_records_language_else_its_own_locale() -> None:
    document = TemplateDocument.model_validate(
        {
            "name": "gala",
            "locale": "fr_FR",
            "text": "{{ record.first_name }}: {{ record.event_date | date('long') }}, "
            "{{ record.amount | currency('EUR') }}",
        }
    )
    payload = EmailPayload(
        message_id="<1@example.org>", to=("a@example.org",), subject="", template="gala"
    )
    record = {"first_name": "Ana", "event_date": "2026-03-01", "amount": 50}
    french = render_email(document, payload, record, now=NOW)
    assert french.payload.body == "Ana: 1 mars 2026, 50,00\u00a0€"
    german = render_email(document, payload, {**record, "language": "de"}, now=NOW)
    assert german.payload.body == "Ana: 1. März 2026, 50,00\u00a0€"


def test_a_stored_template_with_an_unknown_locale_is_refused() -> None:
    document = TemplateDocument.model_validate({"name": "gala", "locale": "xx", "text": "Hi"})
    [problem] = template_problems(document)
    assert (problem.path, problem.message) == (
        "locale",
        "'xx' is not a locale crmflow knows (write it as fr, fr_FR, de_DE, en_US...)",
    )
