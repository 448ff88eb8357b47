"""Unsubscribe and suppression (issue 10), with a real SMTP server (aiosmtpd on 127.0.0.1) on
SQLite and PostgreSQL: a marketing email carries List-Unsubscribe (one click, RFC 8058) and the
link in its text; a one-click POST of that link unsubscribes the address, and the next email of
any flow to it is not sent (`suppressed`, with a history line); a changed link is refused with
400; a 5xx at RCPT puts the address on the list; a transactional email carries no link and is
still sent to an address that unsubscribed, not to one that bounced; admins manage the list."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.delivery.dispatcher import Dispatcher
from crmflow.delivery.email import DeliveryError
from crmflow.delivery.suppression import note_hard_bounce, note_refused_recipients
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import CrmflowError, PermissionDeniedError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views, suppressions, templates, users
from crmflow.services.context import Actor, Context
from crmflow.store.outbox import ClaimedMessage
from tests.conftest import make_user
from tests.integration.test_delivery_smtp import SmtpServer, with_smtp

NEWS = """\
schema_version: 1
key: {key}
name: {key}
record_type: contact
reentry: {{mode: always}}
triggers: [{{type: manual}}]
steps:
  - key: hello
    actions:
      - type: send_email
        category: {category}
        subject: "News for {{{{ record.first_name }}}}"
        body: "Hello {{{{ record.first_name }}}}. Stop these emails: {{{{ unsubscribe_url }}}}"
"""


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sending(ctx: Context, smtp: SmtpServer) -> Context:
    return with_smtp(ctx, smtp.url, public_url="https://crm.example.org/")


@pytest.fixture
def client(sending: Context) -> Iterator[TestClient]:
    with TestClient(create_app(sending)) as test_client:
        yield test_client


def _flow(ctx: Context, admin: Actor, key: str, category: str = "marketing") -> None:
    flows.create_flow(ctx, admin, NEWS.format(key=key, category=category))
    flows.change_status(ctx, admin, key, LifecycleAction.START)


def _contact(ctx: Context, admin: Actor, name: str) -> int:
    data = {"first_name": name, "last_name": "Martin", "email": f"{name}@example.org"}
    return records.create_record(ctx, admin, "contact", data).id


def _send(ctx: Context, admin: Actor, flow: str, rid: int) -> None:
    runs.start_record(ctx, admin, flow, rid)
    Dispatcher(ctx).run_once()


def _last_email(ctx: Context, admin: Actor, rid: int) -> dict[str, Any]:
    status = run_views.record_status(ctx, admin, rid)
    actions = [
        a
        for view in status.enrollments
        for run in view.step_runs
        for a in run.actions
        if a["type"] == "send_email"
    ]
    message = actions[-1]["message"]
    assert isinstance(message, dict)
    return message


def _history(ctx: Context, admin: Actor, rid: int) -> list[str]:
    return [h["message"] for h in run_views.record_status(ctx, admin, rid).history]


def _link(smtp: SmtpServer) -> str:
    header = str(smtp.received[-1].message["List-Unsubscribe"])
    assert header.startswith("<https://crm.example.org/u/") and header.endswith(">")
    return header[1:-1]


def test_one_click_unsubscribes_and_no_flow_emails_the_address_again(
    sending: Context, admin: Actor, smtp: SmtpServer, client: TestClient
) -> None:
    _flow(sending, admin, "news")
    _flow(sending, admin, "promo")
    rid = _contact(sending, admin, "claire")
    _send(sending, admin, "news", rid)

    [got] = smtp.received
    mail = got.message
    link = _link(smtp)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content().strip() == f"Hello claire. Stop these emails: {link}"
    path = link.removeprefix("https://crm.example.org")

    page = client.get(path)  # what a person sees: a button, nothing changed yet
    assert page.status_code == 200
    assert "claire@example.org" in page.text and "<button" in page.text
    assert suppressions.list_page(sending, admin)[0] == []

    answer = client.post(
        path,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert "claire@example.org will receive no more" in answer.text

    _send(sending, admin, "promo", rid)  # another flow
    assert len(smtp.received) == 1
    message = _last_email(sending, admin, rid)
    assert message["status"] == "suppressed"
    assert message["last_error"] == "claire@example.org unsubscribed on 2026-11-23"
    assert _history(sending, admin, rid)[-1] == (
        "Email to claire@example.org not sent: claire@example.org unsubscribed on 2026-11-23"
    )
    other = _contact(sending, admin, "paul")  # the others still get theirs
    _send(sending, admin, "promo", other)
    assert len(smtp.received) == 2


_FORGERIES: list[Callable[[str], str]] = [
    lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"),  # the signature changed
    lambda t: "cGF1bEBleGFtcGxlLm9yZw" + t[t.index(".") :],  # another address, same signature
    lambda t: t.split(".")[0],  # cut short
    lambda t: "not-a-token!",
    lambda t: t.replace(".", "!."),  # a character the decoder would skip: another spelling
    lambda t: t + "==",  # padding the decoder would ignore
    lambda t: "A" * 5000 + t,  # far longer than any link of ours: not even decoded
]


def test_a_changed_link_is_refused_with_400_and_unsubscribes_nobody(
    sending: Context, admin: Actor, client: TestClient
) -> None:
    token = suppressions.unsubscribe_token(sending, "claire@example.org")
    for change in _FORGERIES:
        forged = change(token)
        for method in (client.get, client.post):
            answer = method(f"/u/{forged}")
            assert answer.status_code == 400, forged
            assert "this unsubscribe link is not valid" in answer.text
        with pytest.raises(CrmflowError, match="not valid"):
            suppressions.address_of_token(sending, forged)
    assert suppressions.list_page(sending, admin)[0] == []


def test_a_hard_bounce_suppresses_even_transactional_emails(
    sending: Context, admin: Actor, smtp: SmtpServer
) -> None:
    _flow(sending, admin, "news")
    _flow(sending, admin, "receipt", category="transactional")
    rid = _contact(sending, admin, "gone")
    smtp.refuse.add("gone@example.org")
    _send(sending, admin, "news", rid)
    assert _last_email(sending, admin, rid)["status"] == "failed"
    [entry], _ = suppressions.list_page(sending, admin)
    assert (entry.address, entry.reason) == ("gone@example.org", "hard_bounce")
    assert entry.source.startswith("550 5.1.1 no such user here")

    smtp.refuse.clear()
    _send(sending, admin, "receipt", rid)
    assert smtp.received == []
    message = _last_email(sending, admin, rid)
    assert message["status"] == "suppressed"
    assert message["last_error"].startswith("gone@example.org bounced on 2026-11-23 (550")


def test_a_transactional_email_has_no_link_and_still_goes_after_unsubscribing(
    sending: Context, admin: Actor, smtp: SmtpServer
) -> None:
    _flow(sending, admin, "receipt", category="transactional")
    rid = _contact(sending, admin, "ana")
    suppressions.unsubscribe(sending, suppressions.unsubscribe_token(sending, "Ana@Example.org"))
    _send(sending, admin, "receipt", rid)
    [got] = smtp.received
    assert got.message["List-Unsubscribe"] is None
    assert got.message["List-Unsubscribe-Post"] is None
    assert _last_email(sending, admin, rid)["status"] == "delivered"


def test_admins_manage_the_list_from_the_api(
    sending: Context, admin: Actor, smtp: SmtpServer, client: TestClient
) -> None:
    auth = {"Authorization": f"Bearer {users.create_token(sending, admin, admin.username).token}"}
    added = client.post(
        "/api/suppressions", json={"address": "Boss@Example.org", "note": "asked"}, headers=auth
    )
    assert added.status_code == 201, added.text
    assert added.json()["address"] == "boss@example.org"
    listed = client.get("/api/suppressions", headers=auth).json()
    [item] = listed["items"]
    assert (item["reason"], item["source"]) == ("admin", "added by system: asked")
    assert listed["next_after"] is None

    bad = client.post("/api/suppressions", json={"address": "nobody"}, headers=auth)
    assert bad.status_code == 422
    assert "'nobody' is not an email address" in bad.text

    _flow(sending, admin, "news")
    rid = _contact(sending, admin, "boss")
    _send(sending, admin, "news", rid)
    assert smtp.received == []
    assert "was put on the suppression list" in _last_email(sending, admin, rid)["last_error"]

    assert client.delete("/api/suppressions/boss@example.org", headers=auth).status_code == 200
    gone = client.delete("/api/suppressions/boss@example.org", headers=auth)
    assert gone.status_code == 404 and "not on the suppression list" in gone.text
    _send(sending, admin, "news", rid)
    assert len(smtp.received) == 1

    maria = make_user(sending, "maria", "manager")
    with pytest.raises(PermissionDeniedError, match="only admins"):
        suppressions.list_page(sending, maria)


def test_the_unsubscribe_key_is_made_once_and_kept_without_a_secret_setting(
    ctx: Context,
) -> None:
    token = suppressions.unsubscribe_token(ctx, "a@example.org")
    assert suppressions.address_of_token(ctx, token) == "a@example.org"
    keyed = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"secret_key": "another-secret-of-16+"})
    )
    with pytest.raises(CrmflowError, match="not valid"):
        suppressions.address_of_token(keyed, token)


STORED = """\
schema_version: 1
key: stored
name: stored
record_type: contact
reentry: {mode: always}
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: ""
        template: spring
"""


def test_a_stored_template_shows_the_link_in_its_text_and_html_parts(
    sending: Context, admin: Actor, smtp: SmtpServer
) -> None:
    document = {
        "subject": "Spring news",
        "text": "Hi {{ record.first_name }}. Unsubscribe: {{ unsubscribe_url }}",
        "html": '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    }
    templates.save_template(sending, admin, "spring", document)
    flows.create_flow(sending, admin, STORED)
    flows.change_status(sending, admin, "stored", LifecycleAction.START)
    _send(sending, admin, "stored", _contact(sending, admin, "lea"))

    link = _link(smtp)
    mail = smtp.received[-1].message
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == f"Hi lea. Unsubscribe: {link}"
    assert f'<a href="{link}">' in html.get_content()


def test_a_cc_refused_for_good_is_listed_while_the_email_goes_to_the_others(
    sending: Context, admin: Actor, smtp: SmtpServer
) -> None:
    flow = NEWS.format(key="copy", category="marketing").replace(
        "        category:", "        cc: [old-office@example.org]\n        category:"
    )
    flows.create_flow(sending, admin, flow)
    flows.change_status(sending, admin, "copy", LifecycleAction.START)
    smtp.refuse.add("old-office@example.org")
    rid = _contact(sending, admin, "noe")
    _send(sending, admin, "copy", rid)
    assert [r.rcpt_tos for r in smtp.received] == [["noe@example.org"]]
    assert _last_email(sending, admin, rid)["status"] == "delivered"
    [entry], _ = suppressions.list_page(sending, admin)
    assert (entry.address, entry.reason) == ("old-office@example.org", "hard_bounce")
    assert entry.source.startswith("550 at RCPT TO, message ")


def test_a_delivery_is_recorded_even_when_its_refused_cc_cannot_be_listed(
    sending: Context, admin: Actor, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server took the email: a failure to write the suppression list after that (the
    database away for a moment) must not leave it `sending`, to go again when its lease ends."""
    flow = NEWS.format(key="copy2", category="marketing").replace(
        "        category:", "        cc: [old-office@example.org]\n        category:"
    )
    flows.create_flow(sending, admin, flow)
    flows.change_status(sending, admin, "copy2", LifecycleAction.START)
    smtp.refuse.add("old-office@example.org")
    rid = _contact(sending, admin, "ines")

    def database_away(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("the database is away")

    monkeypatch.setattr("crmflow.delivery.suppression.add_suppression", database_away)
    with pytest.raises(RuntimeError, match="away"):
        _send(sending, admin, "copy2", rid)
    assert [r.rcpt_tos for r in smtp.received] == [["ines@example.org"]]
    assert _last_email(sending, admin, rid)["status"] == "delivered"


def test_a_refusal_lists_only_the_message_s_own_recipients(sending: Context, admin: Actor) -> None:
    """The server's reply text is part of the error the addresses are read from: an address
    it happens to name (or a hostile server slips in) is not put on the list."""
    message = ClaimedMessage(1, "k", "email", {"to": ["Ana <Ana@example.org>"]}, attempts=1)
    reply = "ana@example.org: 550 no such user; boss@example.org: 550 gone"
    note_hard_bounce(
        sending, message, DeliveryError(f"RCPT TO refused: 550 {reply}", permanent=True)
    )
    # The DATA reply comes first in a partly refused message's reply.
    note_refused_recipients(sending, message, "250 queued; refused: jo@example.org 550; refused: ")
    entries, _ = suppressions.list_page(sending, admin)
    assert [(e.address, e.reason) for e in entries] == [("ana@example.org", "hard_bounce")]


def test_a_marketing_email_to_several_people_goes_to_each_with_their_own_link(
    sending: Context, admin: Actor, smtp: SmtpServer
) -> None:
    flow = NEWS.format(key="many", category="marketing").replace(
        "        category:",
        "        to: ['{{ record.email }}', 'partner@example.org']\n"
        "        cc: [office@example.org]\n"
        "        bcc: [archive@example.org]\n"
        "        category:",
    )
    flows.create_flow(sending, admin, flow)
    flows.change_status(sending, admin, "many", LifecycleAction.START)
    rid = _contact(sending, admin, "lea")
    _send(sending, admin, "many", rid)
    everyone = [
        "archive@example.org",
        "lea@example.org",
        "office@example.org",
        "partner@example.org",
    ]
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == everyone
    assert all(len(r.rcpt_tos) == 1 for r in smtp.received)
    assert len({str(r.message["Message-ID"]) for r in smtp.received}) == 1
    assert _last_email(sending, admin, rid)["status"] == "delivered"
    links = {}
    for received in smtp.received:
        mail = received.message
        assert (mail["To"], mail["Cc"], mail["Bcc"]) == (
            "lea@example.org, partner@example.org",
            "office@example.org",
            None,
        )
        header = str(mail["List-Unsubscribe"])[1:-1]
        assert header in mail.get_content()  # the same link in the text
        links[received.rcpt_tos[0]] = header
    # The partner's link unsubscribes the partner, not Léa.
    assert len(set(links.values())) == 4
    token = links["partner@example.org"].rsplit("/u/", 1)[1]
    assert suppressions.address_of_token(sending, token) == "partner@example.org"
