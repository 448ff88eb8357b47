"""Statistics, messages and simulation in a real browser: a flow with records shows its funnel
as a table and a drawn chart; the email it sent is read in the mail catcher; a simulation of
seed 002's recruitment approval shows its timeline, which changes when another decision is
chosen."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments, flows, records, users
from crmflow.services.demo import examples_dir
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

WELCOME = """\
schema_version: 1
key: stats-welcome
name: Stats welcome
record_type: contact
controller: system
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Welcome {{ record.first_name }}"
        body: "Hello {{ record.first_name }}, glad to have you."
  - key: later
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: send_email
        subject: "Two days later"
        body: "Still there?"
"""


def _welcome_three(site: Site) -> None:
    ctx = site.ctx
    alice = users.actor_by_username(ctx, "alice")
    flows.create_flow(ctx, alice, WELCOME)
    flows.change_status(ctx, alice, "stats-welcome", LifecycleAction.START)
    for first in ("Ana", "Bogdan", "Chloé"):
        values = {"first_name": first, "last_name": "Stats", "email": f"{first[:3]}@example.org"}
        record = records.create_record(ctx, alice, "contact", values)
        enrollments.start_record(ctx, alice, "stats-welcome", record.id)
    Dispatcher(ctx).run_once()


def test_a_flows_funnel_chart_and_the_email_it_sent(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    _welcome_three(site)
    signed_in(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Statistics").click()
    row = page.locator("#automations tr", has_text="stats-welcome")
    expect(row.locator("td").nth(1)).to_have_text("3")  # pending: all three wait at `later`
    assert_accessible(page)
    screenshot(page, "stats-automations")
    row.get_by_role("link", name="Stats welcome").click()
    expect(page.get_by_role("heading", name="Statistics of stats-welcome")).to_be_visible()
    hello = page.locator("#funnel-table tbody tr", has_text="hello")
    expect(hello.locator("td").first).to_have_text("3")
    expect(page.locator("#messages-table tbody tr")).to_have_text("email 3 0 0".replace(" ", ""))
    funnel = page.locator('canvas[data-chart="chart-funnel"]')
    expect(funnel).to_have_attribute("data-drawn", "true")
    box = funnel.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100
    assert_accessible(page)
    screenshot(page, "stats-flow")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Messages").click()
    expect(page.locator("#message-list")).to_contain_text("Welcome Chloé")
    assert_accessible(page)
    screenshot(page, "messages")
    page.get_by_role("link", name="Welcome Chloé").click()
    expect(page.get_by_role("heading", name="Welcome Chloé")).to_be_visible()
    expect(page.locator("#message-text")).to_contain_text("Hello Chloé, glad to have you.")
    expect(page.locator("#message-headers")).to_contain_text("Chl@example.org")
    assert_accessible(page)
    screenshot(page, "message")


def test_a_simulation_changes_when_another_decision_is_chosen(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    sample = (Path(examples_dir()) / "recruitment-approval.record.json").read_text("utf-8")
    signed_in(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Simulate").click()
    page.get_by_label("Flow").select_option("recruitment-approval")
    page.get_by_label("Or paste a record (YAML or JSON)").fill(sample)
    page.get_by_role("button", name="Simulate", exact=True).click()
    timeline = page.locator("#simulate-timeline")
    expect(timeline).to_contain_text("management-approval")
    expect(timeline).to_contain_text("approved")
    assert_accessible(page)
    screenshot(page, "simulate")
    manager = page.get_by_role("group", name="At manager-approval, press")
    manager.get_by_role("button", name="Refuse").click()
    expect(timeline).not_to_contain_text("management-approval")
    expect(timeline).to_contain_text("refused")
    chosen = page.get_by_role("group", name="At manager-approval, press").get_by_role(
        "button", name="Refuse"
    )
    expect(chosen).to_have_attribute("aria-pressed", "true")
