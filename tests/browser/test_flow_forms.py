"""The flow editor in forms in a real browser: an admin makes a new flow in three clicks (a
name, a record type, a trigger whose fields htmx swaps in), finds it in /flows, then edits a
field of its first step in the step's form and sees the change in the YAML view."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmflow.services import flows, users
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_an_admin_makes_a_flow_in_three_clicks_and_edits_a_step_in_its_form(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    signed_in(page, "alice")
    page.goto("/flows/new/form")
    expect(page.get_by_role("heading", name="New flow")).to_be_visible()
    page.get_by_label("Name").fill("Greet new contacts")
    page.get_by_label("Record type").select_option("contact")
    trigger = page.get_by_label("What makes a record enter")
    # A kind with fields of its own: htmx swaps them in, the field picker lists the type's fields.
    trigger.select_option("date_reached")
    field = page.locator("#trigger-fields").get_by_label("Field")
    expect(field).to_be_visible()
    expect(field.locator("option[value='birth_date']")).to_have_count(1)
    assert_accessible(page)
    screenshot(page, "flow-forms-new")
    trigger.select_option("record_created")
    expect(page.locator("#trigger-fields")).to_contain_text("no fields of its own")
    page.get_by_role("button", name="Create the flow").click()

    page.wait_for_url("**/flows/greet-new-contacts/form")
    expect(page.locator(".flash")).to_contain_text("created as a draft")
    expect(page.locator("#ff-steps")).to_contain_text("Start")
    alice = users.actor_by_username(site.ctx, "alice")
    document = flows.get_flow(site.ctx, alice, "greet-new-contacts").document or {}
    assert document["triggers"] == [{"type": "record_created"}]

    page.goto("/flows")
    expect(page.get_by_role("link", name="Greet new contacts")).to_be_visible()

    page.goto("/flows/greet-new-contacts/form")
    page.get_by_role("link", name="Edit step Start").click()
    message = page.get_by_label("Message")
    expect(message).to_have_value("Entered the flow")
    message.fill("Welcome, {{ record.first_name }}")
    assert_accessible(page)
    screenshot(page, "flow-forms")
    page.get_by_role("button", name="Save the step").click()
    expect(page.locator(".flash")).to_contain_text("Step 'start' saved")

    page.get_by_role("link", name="YAML view").click()
    page.wait_for_url("**/flows/greet-new-contacts/edit")
    expect(page.locator("#flow-editor .cm-content")).to_contain_text(
        "message: Welcome, {{ record.first_name }}"
    )
    expect(page.locator("#flow-editor .cm-content")).not_to_contain_text("Entered the flow")
    # And back: the YAML editor links to the forms.
    expect(page.get_by_role("link", name="Edit with forms")).to_have_attribute(
        "href", "/flows/greet-new-contacts/form"
    )
