"""Signing in and out of the web application in a real browser, the dashboard's counts, the
error pages, and that the pages are accessible and ask for nothing outside the server."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from crmflow.engine.definition.flow import FlowStatus
from crmflow.services import flows, notifications, tasks, users
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.store.tasks import NewNotification, insert_notifications
from tests.browser.conftest import (
    SignedIn,
    Site,
    assert_accessible,
    expect,
    screenshot,
    watch_foreign_requests,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def test_signing_in_opens_the_dashboard_with_its_counts(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    page.goto("/sign-in")
    assert_accessible(page)
    screenshot(page, "sign-in")
    with site.ctx.engine.begin() as conn:  # two notifications for alice, as a flow leaves them
        insert_notifications(
            conn,
            [
                NewNotification("user", "alice", text, None, 1, site.clock())
                for text in ("Quote Q-17 waits for your approval", "Event E-3 starts tomorrow")
            ],
        )
    signed_in(page, "alice")
    assert urlsplit(page.url).path == "/"
    expect(page.get_by_role("heading", name="Hello, alice")).to_be_visible()
    alice = users.actor_by_username(site.ctx, "alice")
    running = flows.list_flows(site.ctx, alice, status=FlowStatus.ACTIVE)
    assert len(running) == 2  # the demo starts two flows
    expect(page.locator("#running-flows")).to_have_text("2")
    for flow in running:
        expect(page.get_by_role("link", name=flow.name)).to_be_visible()
    mine = [
        task
        for state in ("open", "in_progress")
        for task in tasks.list_page(site.ctx, alice, state=state, user="alice", limit=1000).items
    ]
    expect(page.locator("#open-tasks")).to_have_text(str(len(mine)))
    assert notifications.unread_count(site.ctx, alice) == 2
    expect(page.locator("#unread-notifications")).to_have_text("2")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Inbox")).to_contain_text("2")
    assert_accessible(page)
    screenshot(page, "dashboard")


def test_a_wrong_password_says_so_and_signs_nobody_in(page: Page) -> None:
    page.goto("/sign-in")
    page.get_by_label("Username").fill("andrei")
    page.get_by_label("Password").fill("not-his-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    expect(page.get_by_label("Username")).to_have_value("andrei")
    page.goto("/")
    assert urlsplit(page.url).path == "/sign-in"


def test_too_many_failures_say_when_to_try_again(page: Page, site: Site) -> None:
    try:
        for _ in range(site.ctx.settings.login_attempts):
            page.goto("/sign-in")
            page.get_by_label("Username").fill("bogdan")
            page.get_by_label("Password").fill("guess")
            page.get_by_role("button", name="Sign in").click()
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("Too many failed sign-ins. Try again in 60 seconds")
        expect(alert).to_contain_text("at 09:01:00 UTC")
    finally:
        # The lock holds this address too: the next tests of the module sign in after it.
        site.clock.advance(timedelta(hours=1))


def test_signing_out_ends_the_session_and_its_cookie_no_longer_works(
    page: Page, signed_in: SignedIn
) -> None:
    signed_in(page, "andrei")
    [cookie] = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    old = {"name": SESSION_COOKIE, "value": cookie["value"], "url": page.url}
    page.context.add_cookies([old])  # type: ignore[list-item]  # the old cookie, put back
    page.goto("/")
    assert urlsplit(page.url).path == "/sign-in"


def test_a_form_without_its_token_is_refused_with_a_page_saying_to_reload(
    page: Page, signed_in: SignedIn
) -> None:
    signed_in(page, "andrei")
    answer = page.request.post("/sign-out", form={"csrf_token": "stale"})
    assert answer.status == 403
    assert "reload the page" in answer.text()
    page.goto("/")
    expect(page.get_by_role("heading", name="Hello, andrei")).to_be_visible()


def test_next_leads_back_to_the_page_but_never_to_another_site(page: Page, site: Site) -> None:
    page.goto("/sign-in?next=//evil.example/steal")
    page.get_by_label("Username").fill("maria")
    page.get_by_label("Password").fill("maria-demo")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: urlsplit(url).path != "/sign-in")
    assert page.url == site.base_url + "/"
    expect(page.get_by_role("heading", name="Hello, maria")).to_be_visible()


def test_an_unknown_page_is_a_404_page_in_plain_words(page: Page, signed_in: SignedIn) -> None:
    signed_in(page, "andrei")
    answer = page.goto("/no-such-page")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_text("There is no page at /no-such-page")).to_be_visible()
    assert_accessible(page)


def test_a_page_sends_to_sign_in_and_back_after(page: Page, signed_in: SignedIn) -> None:
    page.goto("/?from=test")
    assert urlsplit(page.url).path == "/sign-in"
    expect(page.locator('input[name="next"]')).to_have_value("/?from=test")
    page.get_by_label("Username").fill("andrei")
    page.get_by_label("Password").fill("andrei-demo")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: urlsplit(url).query == "from=test")
    expect(page.get_by_role("heading", name="Hello, andrei")).to_be_visible()


def test_a_request_to_another_host_is_caught(browser: Browser, site: Site) -> None:
    context = browser.new_context(base_url=site.base_url)
    try:
        foreign = watch_foreign_requests(context, site.host)
        page = context.new_page()
        # A blank page (no CSP of ours to stop it first) that loads an image from elsewhere.
        page.set_content('<img src="http://cdn.example.invalid/logo.png" alt="">')
    finally:
        context.close()
    assert foreign == ["http://cdn.example.invalid/logo.png"]
