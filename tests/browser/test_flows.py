"""The flows pages in a real browser: an admin lists the flows, hides the inactive ones, flips a
flow's switch, opens the donor flow (seed 000), sees its diagram with the records at each step,
starts it by confirming its start list's count, watches its records move as the clock moves
(the worker's tick), pauses it, and resumes it after an edit with the impact preview and the
step mapping; a member never sees a private flow."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from crmflow.engine.definition import FlowStatus
from crmflow.services import flows, run_views, users
from crmflow.services.demo import examples_dir
from crmflow.worker import run_once
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

DONORS = "donor-thank-you"


def _row(page: Page, key: str):  # type: ignore[no-untyped-def]
    return page.locator(f'tr[data-flow="{key}"]')


def _step_count(page: Page, step: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#flow-diagram tr[data-step="{step}"] .step-count')


def test_the_list_hides_inactive_flows_and_a_switch_pauses_one(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    signed_in(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Flows").click()
    expect(page.get_by_role("heading", name="Flows", exact=True)).to_be_visible()
    expect(_row(page, DONORS)).to_contain_text("draft")
    expect(_row(page, "six-month-promotion")).to_contain_text("active")
    expect(page.get_by_role("button", name="New flow")).to_have_attribute("href", "/flows/new")
    assert_accessible(page)
    screenshot(page, "flows-list")

    page.get_by_role("button", name="Hide inactive flows").click()
    assert page.url.endswith("/flows?hide_inactive=1")
    expect(_row(page, DONORS)).to_have_count(0)
    expect(_row(page, "six-month-promotion")).to_be_visible()

    # The switch pauses the flow through the lifecycle service and comes back to this filter.
    alice = users.actor_by_username(site.ctx, "alice")
    inside = flows.get_flow(site.ctx, alice, "six-month-promotion").inside
    switch = _row(page, "six-month-promotion").get_by_role("switch")
    expect(switch).to_have_attribute("aria-checked", "true")
    switch.click()
    if inside:  # records inside: their number is confirmed, as `crmflow flows pause` asks
        page.get_by_label(f"Type the number of records ({inside}) to confirm").fill(str(inside))
        page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Six-month client promotion: paused")
    assert page.url.endswith("/flows?hide_inactive=1")
    expect(_row(page, "six-month-promotion")).to_have_count(0)
    assert flows.get_flow(site.ctx, alice, "six-month-promotion").status is FlowStatus.PAUSED

    page.get_by_role("button", name="Show inactive flows").click()
    off = _row(page, "six-month-promotion").get_by_role("switch")
    expect(off).to_have_attribute("aria-checked", "false")
    off.click()
    expect(page.get_by_role("status")).to_contain_text("Six-month client promotion: resumed")
    expect(_row(page, "six-month-promotion")).to_contain_text("active")


def test_start_confirm_watch_records_move_pause_and_resume_after_an_edit(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    alice = users.actor_by_username(site.ctx, "alice")
    count = flows.start_list_count(site.ctx, alice, DONORS)
    assert count  # the demo's recent donors
    signed_in(page, "alice")
    page.goto("/flows")
    page.get_by_role("link", name="Donor thank-you process").click()
    expect(page.get_by_role("heading", name="Donor thank-you process")).to_be_visible()
    # The diagram is drawn by mermaid (an svg with every step) and its counts are in a table.
    diagram = page.locator(".flow-diagram svg")
    expect(diagram).to_be_visible(timeout=15000)
    expect(diagram).to_contain_text("Thank-you email")
    expect(diagram).to_contain_text("after 90 days")
    expect(_step_count(page, "wait-three-months")).to_have_text("0")
    assert_accessible(page)

    # Start: the start list's count is shown and must be typed to confirm it (seed 000).
    expect(page.locator("#start-count")).to_have_text(str(count))
    page.get_by_label(f"Type {count} to confirm").fill(str(count + 1))
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("alert")).to_contain_text("That number is not the one shown")
    page.get_by_label(f"Type the number of records ({count}) to confirm").fill(str(count))
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("status")).to_contain_text("Donor thank-you process: started")
    expect(page.locator("#flow-status")).to_have_text("active")
    expect(page.locator("#flow-diagram")).to_contain_text(f"{count} due to enter")

    # The worker's tick: the records enter and wait three months; the page polls its counts.
    run_once(site.ctx, now=site.clock())
    expect(_step_count(page, "wait-three-months")).to_have_text(str(count), timeout=8000)
    expect(diagram).to_contain_text(f"{count} inside")
    screenshot(page, "flow-page")

    # Pause: the records inside are frozen, their number confirmed.
    page.reload()
    page.get_by_label(f"Type {count} to confirm").first.fill(str(count))
    page.locator("#form-pause").get_by_role("button", name="Pause").click()
    expect(page.locator("#flow-status")).to_have_text("paused")

    # Edited while paused (the editor is another page): the three-month wait becomes a step
    # one hour later, under another key, so its records need a step to go to.
    text = Path(examples_dir() / f"{DONORS}.yaml").read_text(encoding="utf-8")
    edited = text.replace("wait-three-months", "wait-an-hour").replace(
        "amount: 90, unit: days", "amount: 1, unit: hours"
    )
    assert edited.count("wait-an-hour") == 2 and "unit: hours" in edited
    flows.update_flow(site.ctx, alice, DONORS, edited)
    page.reload()
    impact = page.locator("#impact")
    expect(impact.locator('tr[data-step="wait-three-months"]')).to_contain_text(str(count))
    expect(impact).to_contain_text("removed")
    page.get_by_label("Where the records of wait-three-months go").select_option("wait-an-hour")
    assert_accessible(page)
    page.locator("#resume").get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Donor thank-you process: resumed")
    expect(_step_count(page, "wait-an-hour")).to_have_text(str(count))
    expect(diagram).to_contain_text("after 1 hour")

    # An hour later the worker moves them on: the page sees them leave without a reload.
    site.clock.advance(timedelta(minutes=61))
    run_once(site.ctx, now=site.clock())
    expect(_step_count(page, "wait-an-hour")).to_have_text("0", timeout=8000)
    progress = run_views.flow_progress(site.ctx, alice, DONORS)
    assert progress.inside == 0 and progress.finished == count


def test_a_member_cannot_see_a_private_flow(page: Page, site: Site, signed_in: SignedIn) -> None:
    alice = users.actor_by_username(site.ctx, "alice")
    text = (Path(examples_dir()) / "event-automations.yaml").read_text(encoding="utf-8")
    private = text.replace("key: event-automations", "key: board-only", 1).replace(
        "\nname: ", "\nvisibility: private\nmembers: [alice, maria]\nname: Board only — ", 1
    )
    flows.create_flow(site.ctx, alice, private)
    signed_in(page, "bogdan")
    page.goto("/flows")
    expect(_row(page, "event-automations")).to_be_visible()
    expect(_row(page, "board-only")).to_have_count(0)
    expect(page.get_by_role("switch")).to_have_count(0)  # members read, admins change
    answer = page.goto("/flows/board-only")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("Board only")
    assert_accessible(page)
