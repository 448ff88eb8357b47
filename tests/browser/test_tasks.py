"""Tasks and the inbox in a real browser: seed 002's two-level recruitment approval decided on
the task pages by two different people (maria, the requester's manager, then bogdan of the
management group), the requester seeing no button but who decides, the record ending on the
approved branch; then the inbox with what the flow said, marked read in place (htmx)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, records, tasks, users
from crmflow.services.demo import examples_dir
from crmflow.worker import run_once
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

FLOW = "recruitment-approval"
TITLE = "Hire Ioana Popescu as Service technician?"


def _request(site: Site) -> int:
    """Start the recruitment flow and make andrei's request (maria is his manager), with bogdan
    in management; the record's id once the worker moved it to maria's approval."""
    ctx = site.ctx
    alice = users.actor_by_username(ctx, "alice")
    users.add_group_member(ctx, alice, "management", "bogdan")
    count = flows.start_list_count(ctx, alice, FLOW)
    flows.change_status(ctx, alice, FLOW, LifecycleAction.START, confirm_count=count)
    sample = (Path(examples_dir()) / f"{FLOW}.record.json").read_text(encoding="utf-8")
    values = dict(json.loads(sample)["values"])
    record = records.create_record(ctx, alice, "candidate", values, owner="andrei")
    run_once(ctx, now=site.clock())
    return record.id


def _switch_to(page: Page, signed_in: SignedIn, username: str) -> None:
    page.get_by_role("button", name="Sign out").click()
    signed_in(page, username)


def test_a_two_level_approval_decided_by_two_people_then_read_in_the_inbox(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    record_id = _request(site)

    # maria, the requester's manager, finds the decision in her list and validates it.
    signed_in(page, "maria")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tasks").click()
    page.get_by_label("Flow").select_option(FLOW)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#task-list")).to_contain_text(TITLE)
    assert_accessible(page)
    screenshot(page, "tasks-list")
    page.get_by_role("link", name=TITLE).click()
    expect(page.get_by_role("heading", name=TITLE)).to_be_visible()
    page.get_by_label("Comment with your decision").fill("A good fit for the team")
    assert_accessible(page)
    screenshot(page, "task-approval")
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_role("status")).to_have_text("Decision recorded: Validate.")
    expect(page.locator("#decided")).to_contain_text(
        "maria pressed Validate (A good fit for the team)"
    )
    expect(page.locator("#run-status")).to_contain_text("at step management-approval")

    # andrei asked for it: he may see the management step's task, not decide it.
    alice = users.actor_by_username(site.ctx, "alice")
    (second,) = tasks.list_page(site.ctx, alice, flow=FLOW, state="open").items
    _switch_to(page, signed_in, "andrei")
    page.goto(f"/tasks/{second.id}")
    expect(page.locator("#who-decides")).to_contain_text("may not decide their own request")
    expect(page.get_by_role("button", name="Validate")).to_have_count(0)
    expect(page.get_by_role("button", name="Refuse")).to_have_count(0)
    assert_accessible(page)

    # bogdan, of the management group, has it in his list and validates it.
    _switch_to(page, signed_in, "bogdan")
    page.goto("/tasks?state=open")
    page.get_by_role("link", name=re.compile("approved by the manager")).click()
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_role("status")).to_have_text("Decision recorded: Validate.")
    expect(page.locator("#run-status")).to_contain_text("finished")
    assert records.get_record(site.ctx, record_id).data["status"] == "approved"

    # The flow told management; bogdan reads it in his inbox and marks it read in place.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Inbox").click()
    approved = page.locator(".notification", has_text="Recruitment of Ioana Popescu approved.")
    expect(approved).to_have_count(1)
    needed = page.locator(".notification", has_text="Decision needed")
    expect(needed).to_contain_text("step 'management-approval'")
    expect(approved.get_by_role("link", name=f"Record #{record_id}")).to_be_visible()
    assert_accessible(page)
    screenshot(page, "inbox")
    approved.get_by_role("button", name="Mark read").click()
    expect(approved.get_by_role("button", name="Mark read")).to_have_count(0)
    expect(approved).to_have_class(re.compile("is-read"))
    expect(page.locator("#inbox-unread")).to_have_text("(1)")  # the decision needed is left
    expect(page.locator("#nav-unread")).to_have_text("1")  # the menu's badge too (out of band)
    page.goto("/inbox?unread=1")
    expect(page.get_by_text("Recruitment of Ioana Popescu approved.")).to_have_count(0)
