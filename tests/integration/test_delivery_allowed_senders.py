"""CRMFLOW_EMAIL_ALLOWED_FROM: the senders emails may have (addresses, @domains). A flow whose
send_email `from` is another is refused when it is loaded, at that action's line, saying which
senders are allowed and how to add one; the dispatcher refuses an email from another sender
too (a flow loaded before the setting, a `from` made from the record), failing it unsent. Unset,
any sender goes."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.settings import Settings
from tests.integration.test_delivery_smtp import (
    FLOW,
    SmtpServer,
    _email_message,
    _welcome,
    smtp,
    with_smtp,
)

__all__ = ["smtp"]  # the fixture, used by name


def _allowing(ctx: Context, allowed: str | None) -> Context:
    settings = ctx.settings.model_copy(update={"email_allowed_from": allowed})
    return dataclasses.replace(ctx, settings=settings)


def test_a_flow_sending_from_a_sender_not_allowed_is_refused_at_that_actions_line(
    ctx: Context, admin: Actor
) -> None:
    strict = _allowing(ctx, "news@example.com, @example.net")
    with pytest.raises(InvalidInputError) as refused:
        flows.create_flow(strict, admin, FLOW)
    [problem] = refused.value.problems
    assert problem.path == "steps[0].actions[0].from"
    assert (
        problem.line
        == FLOW.splitlines().index('        from: "Les Amis du Parc <dons@example.org>"') + 1
    )
    assert "'Les Amis du Parc <dons@example.org>' is not one this server allows" in (
        problem.message
    )
    assert "CRMFLOW_EMAIL_ALLOWED_FROM: @example.net, news@example.com" in problem.message
    assert "CRMFLOW_EMAIL_ALLOWED_FROM" in problem.hint
    # Validating says the same, without saving.
    with pytest.raises(InvalidInputError):
        flows.check_flow_text(strict, admin, FLOW)
    assert flows.list_flows(strict, admin) == []


@pytest.mark.parametrize(
    "allowed",
    ["dons@example.org", "DONS@Example.org", "@example.org", "x@example.com, @EXAMPLE.ORG", None],
)
def test_an_allowed_address_or_domain_any_case_or_no_setting_loads(
    ctx: Context, admin: Actor, allowed: str | None
) -> None:
    flows.create_flow(_allowing(ctx, allowed), admin, FLOW)


def test_a_domain_does_not_allow_its_subdomains(ctx: Context, admin: Actor) -> None:
    sub = FLOW.replace("dons@example.org", "dons@mail.example.org")
    with pytest.raises(InvalidInputError) as refused:
        flows.create_flow(_allowing(ctx, "@example.org"), admin, sub)
    [problem] = refused.value.problems
    assert "<dons@mail.example.org>' is not one this server allows" in problem.message


def test_the_dispatcher_fails_an_email_from_a_sender_not_allowed_without_sending_it(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    [rid] = _welcome(ctx, admin, "Claire")  # loaded before the setting was made stricter
    strict = with_smtp(_allowing(ctx, "@example.net"), smtp.url)
    result = Dispatcher(strict).run_once()
    assert (result.claimed, result.delivered, result.failed) == (1, 0, 1)
    assert smtp.received == []
    message = _email_message(ctx, admin, rid)
    assert message["status"] == "failed"
    assert message["attempts"] == 1  # not retried: the next attempt would be refused too
    assert (
        "'Les Amis du Parc <dons@example.org>' is not one this server allows"
        in (message["last_error"])
    )
    assert "CRMFLOW_EMAIL_ALLOWED_FROM" in message["last_error"]


def _started(ctx: Context, admin: Actor, flow: str, *people: tuple[str, str]) -> list[int]:
    """The flow loaded and started for a new contact of each (first name, email)."""
    flows.create_flow(ctx, admin, flow)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    ids = []
    for name, email in people:
        data = {"first_name": name, "last_name": "Martin", "email": email}
        rid = records.create_record(ctx, admin, "contact", data).id
        runs.start_record(ctx, admin, "welcome", rid)
        ids.append(rid)
    return ids


def test_a_sender_made_from_the_record_loads_and_is_checked_when_the_email_goes(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    templated = FLOW.replace(
        'from: "Les Amis du Parc <dons@example.org>"', 'from: "{{ record.email }}"'
    )
    strict = _allowing(ctx, "@example.org")
    ana, bob = _started(
        strict, admin, templated, ("Ana", "ana@example.org"), ("Bob", "bob@elsewhere.com")
    )
    assert Dispatcher(with_smtp(strict, smtp.url)).run_once().delivered == 1
    assert [r.mail_from for r in smtp.received] == ["ana@example.org"]
    assert _email_message(ctx, admin, ana)["status"] == "delivered"
    refused = _email_message(ctx, admin, bob)
    assert refused["status"] == "failed"
    assert "'bob@elsewhere.com' is not one this server allows" in refused["last_error"]


def test_the_servers_default_sender_is_checked_when_an_action_names_none(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    plain = FLOW.replace('        from: "Les Amis du Parc <dons@example.org>"\n', "")
    assert "from:" not in plain
    strict = _allowing(ctx, "@example.org")
    [rid] = _started(strict, admin, plain, ("Ana", "ana@example.org"))
    sending = with_smtp(strict, smtp.url, mail_from="crmflow@localhost")
    assert Dispatcher(sending).run_once().failed == 1
    assert smtp.received == []
    assert "'crmflow@localhost' is not one" in _email_message(ctx, admin, rid)["last_error"]
    # The default sender allowed: the next email goes from it.
    data = {"first_name": "Eve", "last_name": "Martin", "email": "eve@example.org"}
    eve = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, "welcome", eve)
    allowed = with_smtp(strict, smtp.url, mail_from="CRM <crm@example.org>")
    assert Dispatcher(allowed).run_once().delivered == 1
    assert [r.mail_from for r in smtp.received] == ["crm@example.org"]


def test_an_entry_that_is_neither_an_address_nor_a_domain_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match=r"'example\.org' is neither an address"):
        Settings(email_allowed_from="news@example.org, example.org")
