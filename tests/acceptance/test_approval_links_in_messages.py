"""An approval email's links are the capability of the person asked: whoever holds one decides
as them, without signing in. The recruitment approval (examples/recruitment-approval.yaml, the
mail catcher keeping its emails) asks maria (the requester andrei's manager), then management
(alice). On the Messages page (`/messages/{id}`) and through `GET /api/mail/{id}`, another
member (bogdan), the requester (andrei) and an admin see maria's email with its links' tokens
replaced by "[link for maria only]": no token in what they read, and posting the link they see
decides nothing. Maria sees her working links and decides with one; the email as kept (as it
would have been sent) still carries the real links; so does one not sent yet, shown as written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_string
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.services import users
from crmflow.services.context import Actor, Context
from crmflow.services.demo import DEMO_LOGINS
from crmflow.store.schema import outbox
from crmflow.web import create_site
from crmflow.worker import run_once
from tests.acceptance.test_examples_end_to_end import (
    _create_and_start,
    _create_sample_record,
    _setup_like_the_demo,
)
from tests.conftest import page_as

FLOW = "recruitment-approval"
PASSWORDS = {login.username: login.password for login in DEMO_LOGINS}
# "Validate: http://host/a/TOKEN" or, redacted, "Validate: http://host/a/[link for maria only]"
LINK = re.compile(r"^(Validate|Refuse): https?://[^/\s]+(/a/(?:\[[^\]\n]*\]|[\w.-]+))", re.M)


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), raise_server_exceptions=False) as client:
        yield client


def _text(rendered: str) -> str:
    """An email's text part, decoded."""
    parsed = message_from_string(rendered, policy=default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def _stored(ctx: Context, to: str) -> tuple[Any, dict[str, str]]:
    """The outbox row of the approval email to `to` and the links of its text as written."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.id, outbox.c.payload, outbox.c.rendered, outbox.c.status)
        ).all()
    (row,) = [r for r in rows if r.payload["to"] == [to]]
    return row, dict(LINK.findall(row.payload["body"]))


def _kept(ctx: Context, to: str) -> tuple[int, dict[str, str]]:
    """The id of the approval email kept for `to` and its links, as stored (as it would have
    been sent)."""
    row, _ = _stored(ctx, to)
    assert row.status == "caught"
    return row.id, dict(LINK.findall(_text(row.rendered)))


def _page(ctx: Context, site: TestClient, who: str, message_id: int) -> str:
    """The Messages page of `message_id` as `who` sees it, signed in, unescaped."""
    return page_as(ctx, site, who, PASSWORDS[who], f"/messages/{message_id}")


def _api(site: TestClient, token: str, message_id: int) -> str:
    """`GET /api/mail/{id}`'s message, decoded, as the owner of `token` reads it."""
    answer = site.get(f"/api/mail/{message_id}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return _text(answer.json()["message"])


def _step(site: TestClient, headers: dict[str, str], type_key: str, record_id: int) -> Any:
    answer = site.get(f"/api/records/{type_key}/{record_id}/runs", headers=headers)
    assert answer.status_code == 200, answer.text
    (only,) = answer.json()["flows"]
    return only["step"]


def test_only_the_person_asked_sees_a_working_approval_link(ctx: Context, site: TestClient) -> None:
    system: Actor = _setup_like_the_demo(ctx)
    tokens = {n: users.create_token(ctx, system, n).token for n in PASSWORDS}
    admin = {"Authorization": f"Bearer {tokens['alice']}"}
    type_key, record_id = _create_sample_record(ctx, system, FLOW)
    _create_and_start(ctx, system, FLOW)
    run_once(ctx, now=ctx.now())
    waiting, written = _stored(ctx, "maria@example.org")  # not sent yet: its text as written
    assert waiting.status == "pending"
    assert dict(LINK.findall(_page(ctx, site, "bogdan", waiting.id))) == {
        "Validate": "/a/[link for maria only]",
        "Refuse": "/a/[link for maria only]",
    }
    assert dict(LINK.findall(_page(ctx, site, "maria", waiting.id))) == written
    Dispatcher(ctx).run_once()  # no SMTP server: the mail catcher keeps the email

    to_maria, marias = _kept(ctx, "maria@example.org")
    assert marias == written
    assert set(marias) == {"Validate", "Refuse"}
    real = [link.removeprefix("/a/") for link in marias.values()]

    for who in ("bogdan", "andrei", "alice"):  # a member, the requester, an admin
        for text in (_page(ctx, site, who, to_maria), _api(site, tokens[who], to_maria)):
            assert not any(token in text for token in real), (who, text)
            shown = dict(LINK.findall(text))
            assert shown == {
                "Validate": "/a/[link for maria only]",
                "Refuse": "/a/[link for maria only]",
            }, (who, text)
            refused = site.post(shown["Validate"])
            assert refused.status_code == 400 and "not valid" in refused.text
    assert _step(site, admin, type_key, record_id) == "manager-approval"  # nothing decided

    for text in (_page(ctx, site, "maria", to_maria), _api(site, tokens["maria"], to_maria)):
        assert dict(LINK.findall(text)) == marias  # her own links, whole
    decided = site.post(marias["Validate"], data={"comment": "fine by me"})
    assert decided.status_code == 200 and "Recorded" in decided.text
    assert _step(site, admin, type_key, record_id) == "management-approval"

    # The management level: the requester reads alice's email, and cannot decide with it.
    run_once(ctx, now=ctx.now())
    Dispatcher(ctx).run_once()
    to_alice, alices = _kept(ctx, "alice@example.org")
    andrei_sees = dict(LINK.findall(_page(ctx, site, "andrei", to_alice)))
    assert andrei_sees["Validate"] == "/a/[link for alice only]"
    assert site.post(andrei_sees["Validate"]).status_code == 400
    assert _step(site, admin, type_key, record_id) == "management-approval"
    assert dict(LINK.findall(_page(ctx, site, "alice", to_alice))) == alices
    assert site.post(alices["Validate"]).status_code == 200
    status = site.get(f"/api/records/{type_key}/{record_id}", headers=admin).json()
    assert status["data"]["status"] == "approved"
