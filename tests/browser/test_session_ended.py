"""A session that ends while one types in a form (idle too long: the live checks do not count as
use): the form keeps what was typed and says to sign in in another tab; once signed in again
there, the same form saves; a page where nothing was typed goes to the sign-in page."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from crmflow.services import flows, users
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect

if TYPE_CHECKING:
    from playwright.sync_api import Page

FLOW = """\
schema_version: 1
key: {key}
name: Before lunch
record_type: contact
triggers:
  - type: manual
steps:
  - key: hello
    name: Hello
    actions: [{{type: history, message: Hello}}]
  - key: bye
    name: Bye
    actions: [{{type: history, message: Bye}}]
"""


def _flow(site: Site, key: str) -> None:
    alice = users.actor_by_username(site.ctx, "alice")
    flows.create_flow(site.ctx, alice, FLOW.format(key=key), source="test")


def _stored(site: Site, key: str) -> str:
    alice = users.actor_by_username(site.ctx, "alice")
    flow = flows.get_flow(site.ctx, alice, key)
    return str(flows.get_flow_version(site.ctx, alice, key, flow.version)["source"])


def _idle(site: Site) -> None:
    """Move past the session's idle time: the session ends at its next request."""
    minutes = site.ctx.settings.web_session_idle_minutes
    site.clock.advance(timedelta(minutes=minutes + 1))


def test_typed_work_survives_an_ended_session_and_saves_once_signed_in_again(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    _flow(site, "lunch")
    signed_in(page, "alice")
    page.goto("/flows/lunch/form/settings")
    banner = page.locator("#session-ended")
    expect(banner).to_be_hidden()
    name = page.locator("#f-name")
    with page.expect_response("**/form/settings/check") as check:
        name.fill("Renamed before lunch")
    assert check.value.status == 200  # live: checked as one types

    _idle(site)
    with page.expect_response("**/form/settings/check") as check:
        name.fill("Renamed after lunch")  # the check finds the session ended
    assert check.value.status == 401
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Your session has ended")
    assert_accessible(page)
    # Saving now asks first, says it again, and does not leave: nothing typed is lost.
    with page.expect_response("**/session") as asked:
        page.get_by_role("button", name="Save the settings").click()
    assert asked.value.status == 401
    expect(banner).to_be_visible()
    assert page.url.endswith("/flows/lunch/form/settings")
    expect(name).to_have_value("Renamed after lunch")
    assert "Renamed" not in _stored(site, "lunch")

    # Signed in again in another tab of the same browser, from the banner's link.
    with page.context.expect_page() as opened:
        page.locator("#session-ended-sign-in").click()
    other = opened.value
    other.get_by_label("Username").fill("alice")
    other.get_by_label("Password").fill(site.passwords["alice"])
    other.get_by_role("button", name="Sign in").click()
    other.wait_for_url("**/signed-in")
    expect(other.locator("#signed-in-again")).to_contain_text("go back to its tab")
    other.close()

    # Back in the form: the same save now goes, with the new session's token.
    page.bring_to_front()
    with page.expect_navigation():
        page.get_by_role("button", name="Save the settings").click()
    expect(page.locator(".flash").first).to_contain_text("Settings saved")
    assert "name: Renamed after lunch" in _stored(site, "lunch")


def test_a_page_where_nothing_was_typed_goes_to_sign_in(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    _flow(site, "untouched")
    signed_in(page, "alice")
    page.goto("/flows/untouched/form")
    step = page.locator("#ff-steps > li[data-key='bye']")
    expect(step).to_be_visible()
    page.wait_for_function("() => typeof window.htmx !== 'undefined'")
    _idle(site)
    # Moving a step (an htmx request), nothing typed: to the sign-in page, back here after.
    step.get_by_role("button", name="Move Bye up").click()
    page.wait_for_url("**/sign-in?next=/flows/untouched/form")
    expect(page.get_by_label("Username")).to_be_visible()
    assert _stored(site, "untouched") == FLOW.format(key="untouched")
