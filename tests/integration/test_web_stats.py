"""The statistics, messages and simulation pages through FastAPI's TestClient (fast): the
automations' counts and a flow's funnel, days, actions and messages tables with their chart
data; a private flow's figures and messages hidden from a member; the messages list, filters,
paging and a message's page (its HTML only in a sandboxed frame); a simulation by record id or
pasted record, re-simulated with another decision, and its bad input in plain words."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments, flows, records, templates, web_sessions
from crmflow.services.context import Actor, Context
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.web import create_site
from crmflow.web.pages import messages as message_pages
from tests.conftest import make_user

REPO = Path(__file__).resolve().parents[2]

MAILING = """\
schema_version: 1
key: {key}
name: Flow {key}
record_type: contact
controller: system
reentry: {{mode: always}}
triggers: [{{type: manual}}]
{extra}steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello {{{{ record.first_name }}}}"
        body: "Hi {{{{ record.first_name }}}}, welcome."
  - key: later
    timing: {{type: after, amount: 1, unit: days}}
    actions:
      - type: send_email
        subject: "Later"
        body: "Hi again"
"""

APPROVAL = """\
schema_version: 1
key: approve
name: Approve a contact
record_type: contact
controller: system
triggers: [{type: manual}]
steps:
  - key: check
    type: approval
    responsibility: {type: user, user: alice}
    message: "Keep {{ record.first_name }}?"
    buttons:
      - {key: validate, label: Validate, goto: kept}
      - {key: refuse, label: Refuse, goto: dropped}
  - key: kept
    actions:
      - type: notify
        users: [alice]
        message: "Kept {{ record.first_name }}"
    next: finished
  - key: dropped
    actions:
      - type: notify
        users: [alice]
        message: "Dropped {{ record.first_name }}"
    next: finished
  - key: finished
    type: end
"""


def _flow(ctx: Context, admin: Actor, key: str, extra: str = "") -> None:
    flows.create_flow(ctx, admin, MAILING.format(key=key, extra=extra))
    flows.change_status(ctx, admin, key, LifecycleAction.START)


def _contact(ctx: Context, admin: Actor, first: str) -> int:
    values = {"first_name": first, "last_name": "Doe", "email": f"{first.lower()}@example.org"}
    return records.create_record(ctx, admin, "contact", values).id


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def alice(ctx: Context) -> Actor:
    return make_user(ctx, "alice", "admin")


def _signed_in(ctx: Context, client: TestClient, username: str) -> tuple[TestClient, str]:
    signed = web_sessions.sign_in(ctx, username, "password123")
    client.cookies.set(SESSION_COOKIE, signed.token)
    return client, signed.session.csrf_token


def _rows(html: str, table_id: str) -> list[list[str]]:
    """The cells' text of each body row of the table `table_id`."""
    found = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert found is not None, f"no table {table_id}"
    body = found.group(1).split("<tbody>")[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)
        ]
        for r in rows
    ]


def _chart(html: str, chart_id: str) -> dict[str, object]:
    found = re.search(rf'<script type="application/json" id="{chart_id}">(.*?)</script>', html)
    assert found is not None
    return dict(json.loads(found.group(1)))


def test_the_automations_page_counts_runs_and_a_flow_shows_its_figures(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    _flow(ctx, alice, "welcome")
    _flow(ctx, alice, "quiet")
    ids = [_contact(ctx, alice, name) for name in ("Ana", "Bob", "Cleo")]
    runs = [enrollments.start_record(ctx, alice, "welcome", rid) for rid in ids]
    enrollments.cancel_enrollment(ctx, alice, runs[0].id, reason="test")
    client, _ = _signed_in(ctx, site, "alice")

    page = client.get("/stats")
    assert page.status_code == 200
    rows = {r[0].split()[-1]: r[2:] for r in _rows(page.text, "automations")}
    assert rows["welcome"] == ["2", "0", "1"]  # pending, done, cancelled
    assert rows["quiet"] == ["0", "0", "0"]

    Dispatcher(ctx).run_once()
    flow = client.get("/stats/welcome")
    assert flow.status_code == 200
    funnel = _rows(flow.text, "funnel-table")
    assert funnel[0] == ["hello", "3", "0"]
    assert funnel[1][0] == "later" and funnel[1][2] == "2"
    assert _chart(flow.text, "chart-funnel")["labels"] == ["hello", "later"]
    days = _rows(flow.text, "over-time-table")
    assert len(days) == 30
    assert days[-1] == [ctx.clock().date().isoformat(), "3", "1"]  # entered, cancelled today
    assert ["done", "3"] in _rows(flow.text, "actions-table")
    # The cancelled run's email was not sent: two sent, none failed or waiting.
    assert _rows(flow.text, "messages-table") == [["email", "2", "0", "0"]]
    assert 'data-chart="chart-over-time"' in flow.text
    assert "<script>" not in flow.text  # only the data blocks and scripts by src


def test_a_member_sees_neither_a_private_flows_figures_nor_its_messages(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    make_user(ctx, "andrei", "member")
    _flow(ctx, alice, "secret", extra="visibility: private\nmembers: [alice, system]\n")
    _flow(ctx, alice, "open")
    enrollments.start_record(ctx, alice, "secret", _contact(ctx, alice, "Hidden"))
    enrollments.start_record(ctx, alice, "open", _contact(ctx, alice, "Shown"))
    Dispatcher(ctx).run_once()
    client, csrf = _signed_in(ctx, site, "andrei")
    assert "secret" not in client.get("/stats").text
    assert client.get("/stats/secret").status_code == 404
    listed = client.get("/messages").text
    assert "Hello Shown" in listed and "Hidden" not in listed
    admin, _ = _signed_in(ctx, TestClient(create_site(ctx)), "alice")
    everything = admin.get("/messages").text
    assert "Hello Hidden" in everything
    hidden_id = re.findall(r'<a href="/messages/(\d+)">Hello Hidden', everything)[0]
    assert client.get(f"/messages/{hidden_id}").status_code == 404
    tried = client.post(
        "/simulate", data={"flow": "secret", "record_text": "first_name: X", "csrf_token": csrf}
    )
    assert tried.status_code == 404 and "Hidden" not in tried.text


def test_messages_page_filter_and_show_an_email_with_its_html_sandboxed(
    ctx: Context, site: TestClient, alice: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flow(ctx, alice, "welcome")
    rid = records.create_record(
        ctx,
        alice,
        "contact",
        {"first_name": "<b>Eve</b>", "last_name": "Doe", "email": "eve@example.org"},
    ).id
    for name in ("Ana", "Bob"):
        enrollments.start_record(ctx, alice, "welcome", _contact(ctx, alice, name))
    enrollments.start_record(ctx, alice, "welcome", rid)
    client, _ = _signed_in(ctx, site, "alice")
    waiting = client.get("/messages", params={"state": "waiting"}).text
    assert waiting.count('<a href="/messages/') == 3
    Dispatcher(ctx).run_once()
    assert "No message matches" in client.get("/messages", params={"state": "waiting"}).text

    monkeypatch.setattr(message_pages, "PAGE_SIZE", 2)
    first = client.get("/messages", params={"kind": "email"}).text
    assert "Hello &lt;b&gt;Eve&lt;/b&gt;" in first and "<b>Eve</b>" not in first
    older = re.search(r'href="(/messages\?kind=email&amp;before=\d+)" rel="next"', first)
    assert older is not None
    second = client.get(unescape(older.group(1))).text
    assert "Hello Ana" in second and "Hello Eve" not in second

    eve_id = re.findall(r'<a href="/messages/(\d+)">Hello &lt;b&gt;Eve', first)[0]
    shown = client.get(f"/messages/{eve_id}")
    assert shown.status_code == 200
    assert "Hi &lt;b&gt;Eve&lt;/b&gt;, welcome." in shown.text
    assert "eve@example.org" in _rows(shown.text, "message-headers")[1][1] or any(
        "eve@example.org" in r[1] for r in _rows(shown.text, "message-headers")
    )
    for frame in re.findall(r"<iframe[^>]*>", shown.text):
        assert 'sandbox=""' in frame
    assert "<b>Eve</b>" not in shown.text

    bad = client.get("/messages", params={"state": "lost"})
    assert bad.status_code == 422 and "unknown state" in unescape(bad.text)
    assert client.get("/messages/99999").status_code == 404


def test_a_simulation_by_record_or_pasted_changes_with_the_decision(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    flows.create_flow(ctx, alice, APPROVAL)
    rid = _contact(ctx, alice, "Ana")
    client, csrf = _signed_in(ctx, site, "alice")
    assert re.search(r'<option value="approve"\s*>', client.get("/simulate").text)

    form = {"flow": "approve", "record_id": str(rid), "days": "30", "csrf_token": csrf}
    first = client.post("/simulate", data=form)
    assert first.status_code == 200, first.text
    timeline = " ".join(" ".join(r) for r in _rows(first.text, "simulate-timeline"))
    assert "Kept Ana" in timeline and "Dropped" not in timeline
    assert re.search(r'value="check=validate"\s+class="chosen"', first.text)

    again = client.post("/simulate", data={**form, "choose": "check=refuse"})
    timeline = " ".join(" ".join(r) for r in _rows(again.text, "simulate-timeline"))
    assert "Dropped Ana" in timeline and "Kept" not in timeline

    pasted = client.post(
        "/simulate",
        data={
            "flow": "approve",
            "record_text": "first_name: Zoe\nlast_name: Roe",
            "csrf_token": csrf,
        },
    )
    assert "Kept Zoe" in unescape(pasted.text)


BAD_SIMULATIONS = [
    ({"flow": "approve"}, "no record given"),
    ({"flow": "approve", "record_id": "abc"}, "'abc' is not a record id"),
    ({"flow": "approve", "record_id": "424242"}, "no record with id 424242"),
    ({"flow": "approve", "record_text": "first_name: [unclosed"}, "the pasted record"),
    ({"flow": "approve", "record_text": "just text"}, "is not a mapping"),
    ({"flow": "approve", "record_text": "first_name: A"}, "last_name: is required"),
    ({"flow": "approve", "record_text": "last_name: A", "days": "9999"}, "between 1 and 366"),
    ({"flow": "approve", "record_text": "last_name: A", "choose": "check=maybe"}, "no button"),
    ({"flow": "", "record_text": "last_name: A"}, "no flow chosen"),
    ({"flow": "nowhere", "record_text": "last_name: A"}, "nowhere"),
    ({"flow": "approve", "record_text": "x" * 20_001}, "record_text"),
]


def test_bad_simulation_input_is_said_in_plain_words(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    flows.create_flow(ctx, alice, APPROVAL)
    client, csrf = _signed_in(ctx, site, "alice")
    for form, said in BAD_SIMULATIONS:
        answer = client.post("/simulate", data={**form, "csrf_token": csrf})
        assert answer.status_code in (404, 422), (form, answer.text)
        assert said in unescape(answer.text), form
        assert "Traceback" not in answer.text


def test_a_test_mode_html_email_is_marked_and_its_html_kept_out_of_the_page(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    templates.load_template_file(ctx, alice, REPO / "examples" / "templates" / "donor-news.yaml")
    flow = MAILING.format(key="news", extra="test_recipients: [me@example.org]\n").replace(
        'body: "Hi {{ record.first_name }}, welcome."', "template: donor-news"
    )
    flows.create_flow(ctx, alice, flow)
    flows.change_status(ctx, alice, "news", LifecycleAction.START)
    rid = records.create_record(
        ctx,
        alice,
        "contact",
        {"first_name": "<script>alert(1)</script>", "last_name": "X", "email": "x@example.org"},
    ).id
    enrollments.start_record(ctx, alice, "news", rid, test=True)
    Dispatcher(ctx).run_once()
    client, _ = _signed_in(ctx, site, "alice")
    listed = client.get("/messages").text
    assert 'class="test-mode">test mode</mark>' in listed
    [message_id] = re.findall(r'<a href="/messages/(\d+)">', listed)
    shown = client.get(f"/messages/{message_id}").text
    assert "Test mode" in shown and "me@example.org" in shown
    assert "<script>alert" not in shown  # neither the record's value nor the HTML runs
    frames = re.findall(r"<iframe[^>]*>", shown)
    assert len(frames) == 1 and 'sandbox=""' in frames[0]
    assert "&lt;p&gt;Bonjour" in frames[0]  # the HTML, escaped into srcdoc
    assert "les nouveaux bancs du parc" in shown  # its text part, read as text


def test_the_sms_log_lists_a_flows_text_messages_with_their_text(
    ctx: Context, site: TestClient, alice: Actor
) -> None:
    flow = MAILING.format(key="texts", extra="").replace(
        """      - type: send_email
        subject: "Hello {{ record.first_name }}"
        body: "Hi {{ record.first_name }}, welcome."
""",
        """      - type: send_sms
        message: "Your order is ready, {{ record.first_name }}."
""",
    )
    flows.create_flow(ctx, alice, flow)
    flows.change_status(ctx, alice, "texts", LifecycleAction.START)
    rid = records.create_record(
        ctx,
        alice,
        "contact",
        {"first_name": "Ana", "last_name": "Doe", "phone": "+40 721 000 001"},
    ).id
    enrollments.start_record(ctx, alice, "texts", rid)
    Dispatcher(ctx).run_once()
    client, _ = _signed_in(ctx, site, "alice")
    listed = client.get("/messages", params={"kind": "sms"}).text
    [row] = _rows(listed, "message-list")
    assert row[1] == "sms" and "Your order is ready, Ana." in row[3]
    [message_id] = re.findall(r'<a href="/messages/(\d+)">', listed)
    shown = client.get(f"/messages/{message_id}").text
    assert "Your order is ready, Ana." in _text(shown, "message-text")
    assert client.get("/messages", params={"kind": "email"}).text.count("/messages/") == 0


def _text(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">(.*?)</', html, re.S)
    assert found is not None, f"no #{element_id}"
    return unescape(found.group(1))
