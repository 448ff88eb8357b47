"""The flows pages' rules through FastAPI's TestClient (fast): who sees which flow, the
confirmations a change needs, paging and the hide-inactive toggle, refusals in plain words."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crmflow.engine.definition import FlowStatus
from crmflow.engine.lifecycle import LifecycleAction as A
from crmflow.errors import ConflictError
from crmflow.services import enrollments, flows, jobs, queries, records
from crmflow.services.context import Actor, Context
from crmflow.web import create_site
from crmflow.web.pages import flows as flow_pages
from tests.conftest import make_user

_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def _text(key: str, name: str, extra: str = "") -> str:
    return (
        f"schema_version: 1\nkey: {key}\nname: {name!r}\nrecord_type: contact\nowner: system\n"
        f"{extra}triggers:\n  - type: manual\nsteps:\n  - key: hello\n    actions:\n"
        "      - type: history\n        message: hi\n"
    )


@pytest.fixture
def ada(ctx: Context) -> Actor:
    return make_user(ctx, "ada", "admin")


@pytest.fixture
def andrei(ctx: Context) -> Actor:
    return make_user(ctx, "andrei", "member")


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), follow_redirects=False) as client:
        yield client


def _sign_in(client: TestClient, username: str) -> str:
    token = _CSRF.search(client.get("/sign-in").text)
    assert token is not None
    form = {"username": username, "password": "password123", "csrf_token": token.group(1)}
    assert client.post("/sign-in", data={**form, "next": "/"}).status_code == 303
    found = _CSRF.search(client.get("/flows").text)
    assert found is not None
    return found.group(1)


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-flow="([^"]+)"', page)


def test_a_member_never_sees_a_private_flow_and_reads_the_others(
    site: TestClient, ctx: Context, ada: Actor, andrei: Actor
) -> None:
    private = "visibility: private\nmembers: [ada]\n"
    flows.create_flow(ctx, ada, _text("secret-plan", "Secret plan", private))
    flows.create_flow(ctx, ada, _text("open-plan", "Open plan"))
    token = _sign_in(site, "andrei")
    listed = site.get("/flows")
    assert _rows(listed.text) == ["open-plan"]
    assert "Secret plan" not in listed.text
    for path in ("/flows/secret-plan", "/flows/secret-plan/counts"):
        page = site.get(path)
        assert page.status_code == 404
        assert "Secret plan" not in page.text
    page = site.get("/flows/open-plan")
    assert page.status_code == 200
    assert "Only admins start, pause" in page.text
    assert 'action="/flows/open-plan/lifecycle"' not in page.text
    refused = site.post("/flows/open-plan/lifecycle", data={"csrf_token": token, "action": "start"})
    assert refused.status_code == 403
    assert flows.get_flow(ctx, ada, "open-plan").status is FlowStatus.DRAFT


def test_hide_inactive_keeps_running_flows_and_pages_by_key(
    site: TestClient, ctx: Context, ada: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("a-draft", "b-live", "c-live", "d-paused", "e-live"):
        flows.create_flow(ctx, ada, _text(key, key.title()))
    for key in ("b-live", "c-live", "d-paused", "e-live"):
        flows.change_status(ctx, ada, key, A.START)
    flows.change_status(ctx, ada, "d-paused", A.PAUSE)
    monkeypatch.setattr(flow_pages, "PAGE_SIZE", 2)
    _sign_in(site, "ada")
    first = site.get("/flows")
    assert _rows(first.text) == ["a-draft", "b-live"]
    assert 'href="/flows?after=b-live"' in first.text
    assert _rows(site.get("/flows?after=b-live").text) == ["c-live", "d-paused"]
    hidden = site.get("/flows?hide_inactive=1")
    assert _rows(hidden.text) == ["b-live", "c-live"]
    assert 'href="/flows?hide_inactive=1&amp;after=c-live"' in hidden.text
    # The switches come back to the page the user was on, filter and page kept.
    assert 'name="back" value="/flows?hide_inactive=1"' in hidden.text
    assert _rows(site.get("/flows?hide_inactive=1&after=c-live").text) == ["e-live"]


def test_a_switch_pauses_and_resumes_back_to_the_filtered_list(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    flows.create_flow(ctx, ada, _text("live", "Live"))
    flows.change_status(ctx, ada, "live", A.START)
    token = _sign_in(site, "ada")
    form = {"csrf_token": token, "back": "/flows?hide_inactive=1"}
    paused = site.post("/flows/live/lifecycle", data={**form, "action": "pause"})
    assert paused.status_code == 303
    assert paused.headers["location"] == "/flows?hide_inactive=1"
    assert flows.get_flow(ctx, ada, "live").status is FlowStatus.PAUSED
    assert _rows(site.get("/flows?hide_inactive=1").text) == []
    resumed = site.post("/flows/live/lifecycle", data={**form, "action": "resume"})
    assert resumed.status_code == 303
    assert flows.get_flow(ctx, ada, "live").status is FlowStatus.ACTIVE
    # Where to go back to is a path of this site, never another host.
    away = site.post(
        "/flows/live/lifecycle",
        data={**form, "action": "pause", "back": "https://evil.example/"},
    )
    assert away.headers["location"] == "/"


def test_a_start_list_start_asks_for_its_count_and_refuses_another(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    for i in range(3):
        records.create_record(ctx, ada, "contact", {"last_name": f"D{i}", "status": "lead"})
    queries.save_query(
        ctx,
        ada,
        name="leads",
        record_type="contact",
        filter={"field": "status", "op": "=", "value": "lead"},
    )
    extra = "triggers:\n  - type: start_list\n    query: leads\n"
    text = _text("donors", "Donors").replace("triggers:\n  - type: manual\n", extra)
    flows.create_flow(ctx, ada, text)
    token = _sign_in(site, "ada")
    page = site.get("/flows/donors")
    assert '<strong id="start-count">3</strong>' in page.text
    form = {"csrf_token": token, "action": "start"}
    asked = site.post("/flows/donors/lifecycle", data=form)
    assert asked.status_code == 200
    assert "Type the number of records (3) to confirm" in asked.text
    wrong = site.post("/flows/donors/lifecycle", data={**form, "confirm": "4"})
    assert wrong.status_code == 409
    assert "That number is not the one shown." in wrong.text
    garbled = site.post("/flows/donors/lifecycle", data={**form, "confirm": "three"})
    assert garbled.status_code == 422
    assert "&#39;three&#39; is not a number" in garbled.text
    assert flows.get_flow(ctx, ada, "donors").status is FlowStatus.DRAFT
    started = site.post("/flows/donors/lifecycle", data={**form, "confirm": "3"})
    assert started.status_code == 303
    view = flows.get_flow(ctx, ada, "donors")
    assert (view.status, view.inside) == (FlowStatus.ACTIVE, 3)


def test_delete_is_refused_with_its_reason_once_a_flow_ran(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    flows.create_flow(ctx, ada, _text("ran", "Ran"))
    flows.change_status(ctx, ada, "ran", A.START)
    flows.create_flow(ctx, ada, _text("never", "Never"))
    token = _sign_in(site, "ada")
    refused = site.post("/flows/ran/delete", data={"csrf_token": token})
    assert refused.headers["location"] == "/flows/ran"
    page = site.get("/flows/ran")
    assert "cannot be deleted: it has been started" in page.text
    assert "archive it instead" in page.text
    deleted = site.post("/flows/never/delete", data={"csrf_token": token})
    assert deleted.headers["location"] == "/flows"
    assert _rows(site.get("/flows").text) == ["ran"]


def test_hostile_names_and_versions_are_escaped_and_bad_versions_refused(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    evil = '<img src=x onerror=alert(1)> "quoted" #1'
    flows.create_flow(ctx, ada, _text("evil", evil))
    flows.change_status(ctx, ada, "evil", A.START)
    flows.change_status(ctx, ada, "evil", A.PAUSE)
    flows.update_flow(ctx, ada, "evil", _text("evil", evil).replace("message: hi", "message: <b>"))
    _sign_in(site, "ada")
    page = site.get("/flows/evil?old=1&new=2")
    assert page.status_code == 200
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert '<span class="diff-add">+        message: &lt;b&gt;</span>' in page.text
    assert '<span class="diff-del">-        message: hi</span>' in page.text
    assert "<img src=x" not in site.get("/flows").text
    for bad in ("0", "3", "two"):
        refused = site.get(f"/flows/evil?old={bad}")
        assert refused.status_code == 422
        assert "is not a version of this flow" in refused.text
        assert "choose from 1 to 2" in refused.text


def test_the_flow_page_says_why_records_did_not_enter(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    text = _text("vip", "VIP", 'entry_condition: record.status == "client"\n')
    flows.create_flow(ctx, ada, text)
    flows.change_status(ctx, ada, "vip", A.START)
    lead = records.create_record(ctx, ada, "contact", {"last_name": "<b>Lead</b>"}).id
    with pytest.raises(ConflictError):
        enrollments.start_record(ctx, ada, "vip", lead)
    _sign_in(site, "ada")
    page = site.get("/flows/vip")
    section = page.text.split('id="not-entered"', 1)[1]
    assert f'<a href="/records/{lead}">{lead}</a>' in section
    assert "<td>manual</td>" in section
    assert "entry condition" in section


def test_a_long_start_list_starts_in_the_background_and_the_page_follows_it(
    site: TestClient, ctx: Context, ada: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow_pages, "BACKGROUND_FROM", 2)
    for i in range(3):
        records.create_record(ctx, ada, "contact", {"last_name": f"D{i}", "status": "lead"})
    queries.save_query(
        ctx,
        ada,
        name="leads",
        record_type="contact",
        filter={"field": "status", "op": "=", "value": "lead"},
    )
    extra = "triggers:\n  - type: start_list\n    query: leads\n"
    flows.create_flow(ctx, ada, _text("big", "Big").replace("triggers:\n  - type: manual\n", extra))
    token = _sign_in(site, "ada")
    form = {"csrf_token": token, "action": "start"}
    wrong = site.post("/flows/big/lifecycle", data={**form, "confirm": "2"})
    assert wrong.status_code == 409
    assert "holds 3 record(s) now, not 2" in wrong.text
    assert jobs.flow_start_of(ctx, "big") is None
    answer = site.post("/flows/big/lifecycle", data={**form, "confirm": "3"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/flows/big"
    # The page answers at once: the start waits for a worker (a job in the database).
    fragment = site.get("/flows/big/start-progress").text
    assert 'hx-trigger="every 1s"' in fragment
    assert "Waiting for a worker to start it: 3 record(s)" in fragment
    again = site.post("/flows/big/lifecycle", data={**form, "confirm": "3"})
    assert again.status_code == 303  # a second press while it waits starts nothing more
    assert jobs.JobRunner(ctx, name="test-runner").run_once() == 1
    fragment = site.get("/flows/big/start-progress").text
    assert "hx-trigger" not in fragment
    assert "Started by ada: 3 record(s) entered Big" in fragment
    view = flows.get_flow(ctx, ada, "big")
    assert (view.status, view.inside) == (FlowStatus.ACTIVE, 3)
