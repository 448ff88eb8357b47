"""Stored email templates: saved and read by name (admins write), checked when loaded, and
rendered for a record: the seed syntax %ab_firstname%, an empty field as its default or as
empty text (never "None"), an undefined name refused by name, the output budget. On SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.commands import EmailPayload
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import (
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
)
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, templates
from crmflow.services.context import Actor, Context
from crmflow.services.templates import TemplateDocument, render_email
from crmflow.store.schema import outbox
from tests.integration.test_delivery_smtp import with_smtp

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
NEWS = {
    "name": "news",
    "subject": "Hello %ab_firstname%",
    "text": "Dear {{ record.first_name }} {{ record.last_name }}, code {{ vars.code }}",
    "html": "<p>Dear %ab_FirstName%</p>",
    "defaults": {"first_name": "friend"},
    "variables": ["code"],
}


def _payload(subject: str = "", **variables: str) -> EmailPayload:
    return EmailPayload(
        message_id="<1@example.org>",
        to=("ana@example.org",),
        subject=subject,
        template="news",
        variables=variables,
        record_id=1,
    )


def _render(document: dict[str, Any], record: dict[str, Any], **variables: str) -> Any:
    return render_email(
        TemplateDocument.model_validate(document), _payload(**variables), record, now=NOW
    )


def test_a_template_is_saved_listed_and_shown_by_name(ctx: Context, admin: Actor) -> None:
    _, created = templates.save_template(ctx, admin, "news", NEWS)
    assert created
    _, created = templates.save_template(ctx, admin, "news", {**NEWS, "subject": "Hi"})
    assert not created
    [listed] = templates.list_templates(ctx, admin)
    assert (listed.name, listed.document.subject, listed.updated_by) == (
        "news",
        "Hi",
        admin.username,
    )
    shown = templates.get_template(ctx, admin, "news").as_dict()
    assert shown["document"]["defaults"] == {"first_name": "friend"}
    with pytest.raises(NotFoundError, match=r"no email template 'newz'.*did you mean 'news'"):
        templates.get_template(ctx, admin, "newz")


def test_only_admins_change_templates(ctx: Context, member: Actor) -> None:
    with pytest.raises(PermissionDeniedError, match="only admins"):
        templates.save_template(ctx, member, "news", NEWS)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Dear {{ record.first_name", "does not parse"),
        ("From {{ flow.name }}", "'flow' is not available in a stored template"),
        ("Code {{ vars.coupon }}", "vars has no attribute 'coupon'"),
        ("{{ 'x' * 10**9 }}", "budget"),
    ],
)
def test_a_template_that_cannot_render_is_refused_when_loaded(
    ctx: Context, admin: Actor, text: str, why: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        templates.save_template(ctx, admin, "news", {**NEWS, "text": text})
    assert any(p.path == "text" and why in p.message for p in refused.value.problems), (
        refused.value.problems
    )
    assert templates.list_templates(ctx, admin) == []


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("from", "Les Amis <dons-at-example.org>", "is not an email address"),
        ("reply_to", "dons@example.org, office@example.org", "is not one email address"),
        ("from", "dons@example.org\r\nBcc: all@example.org", "line break"),
    ],
)
def test_a_template_whose_sender_is_not_an_address_is_refused_when_loaded(
    ctx: Context, admin: Actor, key: str, value: str, why: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        templates.save_template(ctx, admin, "news", {**NEWS, key: value})
    [problem] = refused.value.problems
    assert (problem.path, why in problem.message) == (key, True), problem
    assert "dons@example.org" in problem.hint
    assert templates.list_templates(ctx, admin) == []


def test_a_template_files_bad_reply_to_is_shown_at_its_line(
    ctx: Context, admin: Actor, tmp_path: Any
) -> None:
    file = tmp_path / "news.yaml"
    head = "name: news\ntext: Hello\nfrom: Les Amis <dons@example.org>\n"
    file.write_text(head + "reply_to: nobody\n")
    with pytest.raises(InvalidInputError) as refused:
        templates.load_template_file(ctx, admin, file)
    [problem] = refused.value.problems
    assert (problem.path, problem.line) == ("reply_to", 4)
    assert "'nobody' is not an email address" in problem.message
    file.write_text(head + "reply_to: r@example.org\n")
    assert templates.load_template_file(ctx, admin, file)[1] is True


def test_the_seed_syntax_names_a_record_field() -> None:
    done = _render(NEWS, {"first_name": "Ana", "last_name": "Pop"}, code="X1")
    assert done.payload.subject == "Hello Ana"  # the action gave none: the template's
    assert done.payload.body == "Dear Ana Pop, code X1"
    assert done.html == "<p>Dear Ana</p>"  # case and underscores ignored


def test_an_empty_field_renders_as_its_default_or_as_empty_text() -> None:
    done = _render(NEWS, {"first_name": None, "last_name": ""}, code="X1")
    assert done.payload.subject == "Hello friend"
    assert done.payload.body == "Dear friend , code X1"
    assert "None" not in done.payload.body


def test_the_flows_subject_wins_over_the_templates() -> None:
    document = TemplateDocument.model_validate(NEWS)
    record = {"first_name": "Ana", "last_name": "Pop"}
    done = render_email(document, _payload("Yours, Ana", code="1"), record, now=NOW)
    assert done.payload.subject == "Yours, Ana"


def test_an_undefined_name_is_refused_by_its_name() -> None:
    with pytest.raises(Exception, match="nickname"):
        _render({**NEWS, "text": "Hi {{ record.nickname }}"}, {"first_name": "Ana"}, code="1")


def test_a_render_over_the_output_budget_stops() -> None:
    text = "{% for i in range(1000) %}{{ record.notes }}{% endfor %}"
    with pytest.raises(LimitExceededError, match="output budget"):
        _render({**NEWS, "text": text}, {"first_name": "Ana", "notes": "x" * 1000}, code="1")


def _flow_naming(template: str, variables: str = "") -> str:
    return f"""
schema_version: 1
key: news
name: News
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: send
    actions:
      - type: send_email
        subject: ""
        template: {template}
{variables}
"""


def test_a_flow_naming_a_template_is_checked_against_its_record_type_and_variables(
    ctx: Context, admin: Actor
) -> None:
    templates.save_template(ctx, admin, "news", NEWS)
    given = '        variables: {code: "X-{{ record.id }}"}'
    flows.validate_flow_text(ctx, admin, _flow_naming("news", given))  # %ab_firstname% is a field

    with pytest.raises(InvalidInputError) as refused:
        flows.validate_flow_text(ctx, admin, _flow_naming("news"))
    [problem, *_] = refused.value.problems
    assert problem.path == "steps[0].actions[0].template"
    assert "the template 'news': variables: the template 'news' needs the variable 'code'" in (
        problem.message
    )

    templates.save_template(ctx, admin, "nick", {"name": "nick", "text": "Hi %ab_nickname%"})
    with pytest.raises(InvalidInputError) as refused:
        flows.validate_flow_text(ctx, admin, _flow_naming("nick"))
    assert [p.message for p in refused.value.problems] == [
        "the template 'nick': text: the record type has no field 'nickname' (record.nickname)"
    ]


def test_a_template_email_that_cannot_render_at_send_fails_at_once_saying_why(
    ctx: Context, admin: Actor
) -> None:
    # The template is changed after the flow was validated against it (a template knows no
    # record type), so only sending can find the mistake.
    templates.save_template(ctx, admin, "nick", {"name": "nick", "text": "Hi %ab_firstname%"})
    flows.create_flow(ctx, admin, _flow_naming("nick"))
    flows.change_status(ctx, admin, "news", LifecycleAction.START)
    templates.save_template(ctx, admin, "nick", {"name": "nick", "text": "Hi %ab_nickname%"})
    data = {"first_name": "Ana", "last_name": "Pop", "email": "ana@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, "news", rid)

    result = Dispatcher(with_smtp(ctx, None)).run_once()
    assert (result.delivered, result.retrying, result.failed) == (0, 0, 1)
    with ctx.engine.connect() as conn:
        [(status, error)] = conn.execute(sa.select(outbox.c.status, outbox.c.last_error))
    assert status == "failed"
    assert "the template 'nick' did not render" in error
    assert "nickname" in error
