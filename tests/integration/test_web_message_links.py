"""A marketing email's unsubscribe link (`/u/TOKEN`, in its text and its List-Unsubscribe
header) unsubscribes the address it names, without signing in: the Messages page and
`GET /api/mail/{id}` show it only to the user whose email that address is, and to anyone else
(an admin included) as "/u/[link for claire@example.org only]"; the email as kept keeps it.
A changed token in a message is not shown either."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_string
from email.message import EmailMessage
from email.policy import default

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments, flows, records, users
from crmflow.services.context import Actor, Context
from crmflow.services.messages import redact_links
from crmflow.store.schema import outbox
from crmflow.web import create_site
from tests.conftest import make_user, page_as

NEWS = """\
schema_version: 1
key: news
name: News
record_type: contact
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        category: marketing
        subject: "News for {{ record.first_name }}"
        body: "Hello {{ record.first_name }}. Stop these emails: {{ unsubscribe_url }}"
"""
HIDDEN = "/u/[link for claire@example.org only]"


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), raise_server_exceptions=False) as client:
        yield client


def _page(ctx: Context, site: TestClient, who: str, message_id: int) -> str:
    return page_as(ctx, site, who, "password123", f"/messages/{message_id}")


def _parsed(rendered: str) -> EmailMessage:
    parsed = message_from_string(rendered, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_an_unsubscribe_link_shows_only_to_the_user_whose_address_it_names(
    ctx: Context, site: TestClient, admin: Actor
) -> None:
    alice = make_user(ctx, "alice", "admin")
    make_user(ctx, "claire", "member")
    users.update_user(ctx, admin, "claire", email="Claire@example.org")
    flows.create_flow(ctx, alice, NEWS)
    flows.change_status(ctx, alice, "news", LifecycleAction.START)
    values = {"first_name": "claire", "last_name": "Martin", "email": "claire@example.org"}
    rid = records.create_record(ctx, alice, "contact", values).id
    enrollments.start_record(ctx, alice, "news", rid)
    Dispatcher(ctx).run_once()  # the mail catcher keeps it
    with ctx.engine.connect() as conn:
        (message_id, rendered) = conn.execute(sa.select(outbox.c.id, outbox.c.rendered)).one()
    kept = _parsed(rendered)
    header = str(kept["List-Unsubscribe"])
    link = re.fullmatch(r"<https?://[^/]+(/u/[\w.-]+)>", header)
    assert link is not None, header  # the email as kept: the real link, in both places
    real = link.group(1)
    assert real in str(kept.get_content())

    page = _page(ctx, site, "alice", message_id)  # an admin
    assert real.removeprefix("/u/") not in page
    base = re.escape(link.string[1 : link.start(1)])  # the server's address
    assert re.search(rf"Stop these emails: {base}{re.escape(HIDDEN)}", page)
    assert re.search(rf"<{base}{re.escape(HIDDEN)}>", page)  # the header too
    token = users.create_token(ctx, admin, "alice").token
    answer = site.get(f"/api/mail/{message_id}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    seen = _parsed(answer.json()["message"])
    assert HIDDEN in str(seen.get_content()) and HIDDEN in str(seen["List-Unsubscribe"])
    assert real.removeprefix("/u/") not in answer.text
    assert site.post(HIDDEN).status_code == 400  # what an admin sees unsubscribes nobody

    own = _page(ctx, site, "claire", message_id)  # her address: her link
    assert re.search(rf"Stop these emails: {base}{re.escape(real)}(?![\w-])", own)


def test_a_changed_or_foreign_token_is_not_shown_either(ctx: Context) -> None:
    alice = make_user(ctx, "alice", "admin")
    text = "Validate: https://crm.example.org/a/bm90LW91cnM." + "x" * 43 + "\nSee /a/page.html"
    assert redact_links(ctx, alice, text) == (
        "Validate: https://crm.example.org/a/[link for its recipient only]\nSee /a/page.html"
    )
