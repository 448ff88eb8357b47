"""Records and saved queries in a real browser: find a record, open it, enter it into a flow
and read its timeline (and a refusal in plain words); build a saved query, watch its count and
preview change as the conditions change, and save it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, queries, records, users
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

WELCOME = """\
schema_version: 1
key: welcome
name: Welcome sequence
record_type: contact
controller: system
reentry: {mode: always}
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello"
        body: "Hi"
  - key: later
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: send_email
        subject: "Later"
        body: "Hi again"
"""


def test_find_a_record_open_it_and_enter_it_into_a_flow(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    alice = users.actor_by_username(site.ctx, "alice")
    flows.create_flow(site.ctx, alice, WELCOME)
    flows.change_status(site.ctx, alice, "welcome", LifecycleAction.START)
    contact = records.list_records(site.ctx, "contact", limit=1).items[0]
    signed_in(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Records").click()
    expect(page.get_by_role("heading", name="Contact records")).to_be_visible()
    expect(page.locator("#records-table tbody tr")).to_have_count(50)
    expect(page.get_by_role("link", name="Next page")).to_be_visible()
    assert_accessible(page)
    screenshot(page, "records-list")
    page.get_by_label("Search").fill(contact.data["email"])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#records-table tbody tr")).to_have_count(1)
    page.locator("#records-table tbody a").first.click()
    expect(page.get_by_role("heading", name="Fields")).to_be_visible()
    expect(page.locator(".record-fields")).to_contain_text(contact.data["email"])
    expect(page.get_by_text("has not been in any flow")).to_be_visible()
    # A flow that only starts records itself says so in plain words.
    page.get_by_label("Flow", exact=True).select_option(label="Six-month client promotion (active)")
    page.get_by_role("button", name="Enter into the flow").click()
    expect(page.get_by_role("alert")).to_contain_text("no manual trigger")
    page.get_by_label("Flow", exact=True).select_option("welcome")
    page.get_by_role("button", name="Enter into the flow").click()
    expect(page.get_by_role("status")).to_contain_text("Entered into welcome, at step later")
    run = page.locator(".timeline-run")
    expect(run).to_contain_text("welcome")
    expect(run).to_contain_text("step hello")
    expect(run).to_contain_text("send_email")
    expect(run).to_contain_text("now at step later")
    expect(run.locator(".progress-count")).to_have_text("0/2")
    expect(page.get_by_role("button", name="Restart from the first step")).to_be_visible()
    assert_accessible(page)
    screenshot(page, "record-page")


def test_build_a_saved_query_see_its_count_and_preview_and_save_it(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    signed_in(page, "maria")
    page.goto("/queries")
    page.get_by_role("link", name="New query").click()
    expect(page.get_by_role("heading", name="New query")).to_be_visible()
    page.get_by_label("Name").fill("recent-givers")
    page.get_by_label("Description").fill("Donors who gave in the last 90 days")
    page.get_by_label("Field of condition 1").select_option("status")
    page.get_by_label("Operator of condition 1").select_option("in")
    page.get_by_label("Value of condition 1").fill("donor, zzz")
    expect(page.locator("#query-preview")).to_contain_text("'zzz' is not a choice of 'status'")
    page.get_by_label("Value of condition 1").fill("donor")
    first = {"all": [{"field": "status", "op": "in", "value": ["donor"]}]}
    donors = queries.count_filter(site.ctx, "contact", first)
    assert donors > 0
    expect(page.locator("#query-count")).to_have_text(f"{donors:,}")
    page.get_by_role("button", name="Add a condition").click()
    page.get_by_label("Field of condition 2").select_option("last_donation_date")
    page.get_by_label("Operator of condition 2").select_option("in the last")
    page.get_by_label("Value of condition 2").fill("90")
    span = {"field": "last_donation_date", "op": "between", "value": ["today - 90 days", "today"]}
    both = queries.count_filter(site.ctx, "contact", {"all": [*first["all"], span]})
    assert 0 < both < donors
    expect(page.locator("#query-count")).to_have_text(f"{both:,}")
    expect(page.locator("#query-preview-table tbody tr")).to_have_count(min(both, 10))
    assert_accessible(page)
    screenshot(page, "query-builder")
    page.get_by_role("button", name="Save the query").click()
    expect(page.get_by_role("heading", name="Query recent-givers")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Saved the query recent-givers")
    expect(page.locator("#query-count")).to_have_text(f"{both:,}")
    assert queries.count_query(site.ctx, "recent-givers") == both
    page.get_by_role("link", name="See all its records").click()
    expect(page.locator("#records-table tbody tr")).to_have_count(min(both, 50))
    assert_accessible(page)
