"""The flow editor in a real browser: an admin pastes a flow into /flows/new, sees the
validation error marked at its line as they type and listed under the editor, fixes it, saves,
and the flow exists; then turns one of its steps off with its switch."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from crmflow.engine.definition import FlowStatus
from crmflow.services import flows, users
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

KEY = "welcome-call"
# Line 12 names an action kind that does not exist ("histry").
FLOW = """\
schema_version: 1
key: welcome-call
name: Welcome call
record_type: contact
owner: alice
triggers:
  - type: manual
steps:
  - key: call
    name: Call them
    actions:
      - type: histry
        message: Called
  - key: thanks
    name: Thank them
    actions:
      - type: history
        message: Thanked
"""


def test_an_admin_writes_a_flow_sees_its_error_at_its_line_fixes_it_and_saves(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    signed_in(page, "alice")
    page.goto("/flows/new")
    expect(page.get_by_role("heading", name="New flow")).to_be_visible()
    editor = page.locator("#flow-editor .cm-content")
    expect(editor).to_be_visible()  # CodeMirror replaced the textarea
    expect(page.locator("#flow-source")).to_be_hidden()
    expect(page.locator("#flow-editor")).to_have_attribute("data-checked", "valid")

    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(FLOW)  # as a paste: the checks run once the typing stops

    # The error is marked on line 12 (gutter and underline) and listed with its words.
    problems = page.locator("#flow-problems-list li")
    expect(problems).to_have_count(1)
    expect(problems.first).to_contain_text("Line 12: steps[0].actions[0].type:")
    expect(problems.first).to_contain_text("histry")
    marked = page.locator(".cm-line:has(.cm-lintRange-error)")
    expect(marked).to_have_count(1)
    expect(marked).to_have_text("      - type: histry")
    lines = page.locator(".cm-line")
    assert lines.nth(11).evaluate("(el, m) => el === m", marked.element_handle())
    gutter = page.locator(".cm-gutter-lint .cm-gutterElement:has(.cm-lint-marker-error)")
    expect(gutter).to_have_count(1)
    # The gutter's marker sits level with line 12.
    line_box, marker_box = lines.nth(11).bounding_box(), gutter.bounding_box()
    assert line_box is not None and marker_box is not None
    assert abs(line_box["y"] - marker_box["y"]) < 4
    expect(page.locator("#flow-editor")).to_have_attribute("data-checked", "invalid")
    assert_accessible(page)
    screenshot(page, "flow-editor")

    # Fix the word: the problem's button takes the cursor to its line; the marker and the list
    # empty, then save.
    problems.first.get_by_role("button").click()
    page.keyboard.press("End")
    page.keyboard.press("Control+Shift+ArrowLeft")
    page.keyboard.type("history")
    expect(page.locator("#flow-problems-status")).to_have_text(
        "No problems: the flow can be saved."
    )
    expect(page.locator(".cm-lintRange-error")).to_have_count(0)
    expect(page.locator(".cm-lint-marker-error")).to_have_count(0)
    page.get_by_role("button", name="Create the flow").click()
    page.wait_for_url(f"**/flows/{KEY}")
    expect(page.get_by_role("heading", name="Welcome call")).to_be_visible()
    alice = users.actor_by_username(site.ctx, "alice")
    flow = flows.get_flow(site.ctx, alice, KEY)
    assert flow.status is FlowStatus.DRAFT
    assert flow.document is not None
    assert flow.document["steps"][0]["actions"][0]["type"] == "history"

    # Its editor lists the steps with their switches: turn `thanks` off.
    page.goto(f"/flows/{KEY}/edit")
    expect(page.locator("#flow-editor .cm-content")).to_contain_text("message: Called")
    switch = page.get_by_role("switch", name="Step Thank them: active, switch off", exact=True)
    expect(switch).to_have_attribute("aria-checked", "true")
    assert_accessible(page)
    switch.click()
    expect(page.get_by_role("status")).to_contain_text("step 'thanks' is now inactive")
    assert urlsplit(page.url).path == f"/flows/{KEY}/edit"
    expect(
        page.get_by_role("switch", name="Step Thank them: inactive, switch on", exact=True)
    ).to_be_visible()
    flow = flows.get_flow(site.ctx, alice, KEY)
    assert flow.document is not None and flow.document["steps"][1]["active"] is False
