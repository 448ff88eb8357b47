"""Small fixes across the web pages (issue 12), through FastAPI's TestClient on SQLite and
PostgreSQL: the nav's unread badge (counted in the database, "999+" past its limit, the same
notifications as the inbox, updated out of band when one is read), the records list's link to
imports, a conflict's page, the query names the builder's paths keep, and the users an admin may
not deactivate."""

from __future__ import annotations

import re
from html import unescape

import pytest
from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError, InvalidInputError
from crmflow.services import enrollments, flows, notifications, queries, records, users
from crmflow.services.context import Context
from crmflow.store.tasks import NewNotification, insert_notifications
from crmflow.web import create_site
from crmflow.web.auth import web_router
from tests.acceptance.test_examples_end_to_end import _create_sample_record, _setup_like_the_demo
from tests.integration.test_web_tasks import FLOW, PRIVATE, Browser

_NAV_BADGE = re.compile(r'<span id="nav-unread"[^>]*>(.*?)</span>\s*</a>', re.S)


def _badge(page: str) -> str:
    """What the nav's unread badge says ("" when it shows nothing)."""
    found = _NAV_BADGE.search(page)
    assert found is not None, page
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def _notify(
    ctx: Context, username: str, count: int, record_id: int, run: int | None = None
) -> None:
    with ctx.engine.begin() as conn:
        insert_notifications(
            conn,
            [
                NewNotification("user", username, f"Note {n}", run, record_id, ctx.now())
                for n in range(count)
            ],
        )


def test_the_badge_says_999_plus_past_its_limit_on_every_page_and_the_dashboard(
    ctx: Context,
) -> None:
    system = _setup_like_the_demo(ctx)
    _, rid = _create_sample_record(ctx, system, FLOW)
    _notify(ctx, "maria", notifications.UNREAD_COUNT_LIMIT + 5, rid)
    _notify(ctx, "andrei", 3, rid)
    maria, andrei = Browser(ctx, "maria"), Browser(ctx, "andrei")
    dashboard = maria.get("/")
    assert _badge(dashboard) == "999+"
    assert 'id="unread-notifications">999+<' in dashboard
    assert _badge(maria.get("/records")) == "999+"
    assert "Unread (999+)" in re.sub(r"<[^>]+>", "", maria.get("/inbox"))
    assert _badge(andrei.get("/records")) == "3"


def test_the_badge_counts_what_the_inbox_lists_not_a_private_flows_news(ctx: Context) -> None:
    system = _setup_like_the_demo(ctx)
    _, rid = _create_sample_record(ctx, system, FLOW)
    alice = users.actor_by_username(ctx, "alice")
    flows.create_flow(ctx, alice, PRIVATE)  # members: maria only
    flows.change_status(ctx, alice, "hiring", LifecycleAction.START)
    run = enrollments.start_record(ctx, alice, "hiring", rid)
    # bogdan is told about a run of a flow he may not see (he was a member once), and of one
    # thing he may see.
    _notify(ctx, "bogdan", 2, rid, run=run.id)
    _notify(ctx, "bogdan", 1, rid)
    bogdan = users.actor_by_username(ctx, "bogdan")
    listed = notifications.list_page(ctx, bogdan, unread=True).items
    assert len(listed) == 1
    assert notifications.unread_count(ctx, bogdan) == 1
    assert _badge(Browser(ctx, "bogdan").get("/")) == "1"


def test_reading_one_in_the_inbox_updates_the_nav_badge_out_of_band(ctx: Context) -> None:
    system = _setup_like_the_demo(ctx)
    _, rid = _create_sample_record(ctx, system, FLOW)
    _notify(ctx, "maria", 2, rid)
    maria = Browser(ctx, "maria")
    page = maria.get("/inbox")
    assert _badge(page) == "2"
    ids = [int(i) for i in re.findall(r'id="notification-(\d+)"', page)]
    headers = {"HX-Request": "true", "X-CSRF-Token": maria.csrf}
    first = maria.client.post(f"/inbox/{ids[0]}/read", headers=headers).text
    assert re.search(r'<span id="nav-unread" hx-swap-oob="true"><span class="badge"[^>]*>1<', first)
    last = maria.client.post(f"/inbox/{ids[1]}/read", headers=headers).text
    assert '<span id="nav-unread" hx-swap-oob="true"></span>' in last  # no badge left
    assert _badge(maria.get("/records")) == ""


def test_the_records_list_links_to_imports_for_managers_and_admins_only(ctx: Context) -> None:
    _setup_like_the_demo(ctx)
    for username in ("alice", "maria"):
        assert '<a href="/imports" id="import-records">Import records</a>' in (
            Browser(ctx, username).get("/records")
        )
    assert 'href="/imports"' not in Browser(ctx, "andrei").get("/records")


def test_a_conflict_on_a_web_route_is_a_409_page_in_plain_words(ctx: Context) -> None:
    app = create_site(ctx)
    router = web_router()

    @router.get("/test-conflict")
    def conflict() -> None:
        raise ConflictError("flow 'welcome' is archived: restore it before starting it")

    app.include_router(router)
    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/test-conflict")
    assert page.status_code == 409
    assert "text/html" in page.headers["content-type"]
    text = unescape(page.text)
    assert "This conflicts with the current state" in text
    assert "flow 'welcome' is archived: restore it before starting it" in text
    assert "Nothing was changed. Go back, reload the page" in text
    assert "The server failed" not in text


def test_a_query_cannot_be_saved_under_a_name_the_builder_uses(ctx: Context) -> None:
    system = _setup_like_the_demo(ctx)
    maria = Browser(ctx, "maria")
    for name in ("new", "row", "preview"):
        with pytest.raises(InvalidInputError) as refused:
            queries.save_query(ctx, system, name=name, record_type="contact", filter={})
        assert [str(p) for p in refused.value.problems] == [
            f"name: '{name}' is reserved (the query pages use /queries/{name}) (choose another "
            f"name, e.g. {name}-clients; reserved: new, preview, row)"
        ]
        form = {"record_type": "contact", "name": name, "match": "all", "csrf_token": maria.csrf}
        answer = maria.client.post("/queries/new", data=form)
        assert answer.status_code == 422
        assert f"'{name}' is reserved" in unescape(answer.text)
    assert queries.save_query(ctx, system, name="new-ok", record_type="contact", filter={})


def test_an_admin_cannot_deactivate_themselves_nor_the_system_user(ctx: Context) -> None:
    _setup_like_the_demo(ctx)
    alice = Browser(ctx, "alice")
    said = alice.post("/admin/users/active", username="alice", active="false")
    assert said == (
        "error: you cannot deactivate yourself ('alice'): you would be signed out with no way "
        "back in; another admin may do it"
    )
    said = alice.post("/admin/users/active", username="system", active="false")
    assert said == (
        "error: the built-in user 'system' cannot be deactivated: the command line and the "
        "worker act as it"
    )
    assert users.get_user(ctx, "alice").active and users.get_user(ctx, "system").active
    assert alice.client.get("/").status_code == 200  # still signed in
    assert alice.post("/admin/users/active", username="andrei", active="false") == (
        "ok: andrei deactivated: their sessions have ended."
    )


def test_a_refused_page_lists_each_problem_once(ctx: Context) -> None:
    _setup_like_the_demo(ctx)
    alice = Browser(ctx, "alice")
    answer = alice.client.get("/messages", params={"kind": "bogus"})
    assert answer.status_code == 422
    page = unescape(answer.text)
    problems = re.findall(r"<li>(.*?)</li>", page, re.S)
    kind = [p for p in problems if "bogus" in p]
    assert len(kind) == 1, problems
    assert page.count(kind[0].strip()) == 1  # said in the list, not again in the headline
    assert "was refused (1 problem)" in page


def test_a_record_page_shows_user_fields_by_username(ctx: Context) -> None:
    system = _setup_like_the_demo(ctx)
    _, record_id = _create_sample_record(ctx, system, FLOW)
    page = Browser(ctx, "alice").get(f"/records/{record_id}")
    fields = dict(re.findall(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", page, re.S))
    # examples/types/candidate.yaml: requester and manager are user fields (ids stored).
    assert (fields["Requested by"], fields["Requester's manager"]) == ("andrei", "maria")


def test_a_record_page_links_a_reference_field_to_the_record_it_names(ctx: Context) -> None:
    system = _setup_like_the_demo(ctx)
    company = records.create_record(ctx, system, "company", {"name": "Acme"}).id
    contact = records.create_record(
        ctx, system, "contact", {"last_name": "Pop", "company": company}
    ).id
    page = Browser(ctx, "alice").get(f"/records/{contact}")
    assert f'<a href="/records/{company}">record {company}</a>' in page


def test_the_admin_link_is_offered_to_admins_only(ctx: Context) -> None:
    _setup_like_the_demo(ctx)
    nav = re.compile(r'<nav aria-label="Main".*?</nav>', re.S)
    for name, offered in (("alice", True), ("maria", False), ("andrei", False)):
        found = nav.search(Browser(ctx, name).get("/"))
        assert found is not None
        assert ('href="/admin"' in found.group()) is offered, name
