"""Issue 13's proof for the pickers, in a real browser: seed 002's six-month promotion (daily at
09:30, a saved query picked with its live count, a templated email with Cc and Bcc, its owner,
zone, re-entry and catch-up in the settings form) and seed 001's event reminder (a task 7 days
before the event's start, an email whose subject takes the record's title from the variable
picker, an entry condition made with the filter builder in the settings form, and its `close`
step added, renamed and filled in forms) are built with the forms only, then compared with
`examples/`: the validator's reading of the whole document (the definition with its defaults)
is the same, but for the flow's key (the demo already holds the examples under theirs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmflow.services import flows, users
from crmflow.services.flow_validation import parse_flow_text
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

EXAMPLES = Path(__file__).parents[2] / "examples"
# The one difference: the demo loaded the examples under their keys, so the flows built here
# take the key of their name.
DIFFERENT = ("key",)


def _input(page: Page, path: str) -> Locator:
    return page.locator(f'[name="f:{path}"]')


def _save(page: Page) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name="Save the step").click()


def _unfold(page: Page, field_id: str) -> None:
    """Open an optional part the step leaves out (shown folded, 'not set')."""
    summary = page.locator(f"details:has(#{field_id}) > summary")
    if summary.count() and not summary.locator("xpath=..").evaluate("d => d.open"):
        summary.click()


def _saved(page: Page) -> None:
    """The step was saved; else the problems the page shows, to say why."""
    shown = page.locator(".ff-problem, #forms-problems li").all_inner_texts()
    assert page.locator("#forms-error").count() == 0, shown
    expect(page.locator("[role=status], .flash").first).to_contain_text("saved")


def _normalised(site: Site, text: str) -> dict[str, Any]:
    alice = users.actor_by_username(site.ctx, "alice")
    definition = parse_flow_text(site.ctx, alice, text, fmt=None, source="<test>")
    data: dict[str, Any] = definition.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def _compare(site: Site, key: str, example: str) -> None:
    """The whole normalised document equals the example's, but for DIFFERENT; on a difference,
    each top-level property and step that differs is named."""
    alice = users.actor_by_username(site.ctx, "alice")
    flow = flows.get_flow(site.ctx, alice, key)
    version = flows.get_flow_version(site.ctx, alice, key, flow.version)
    made = _normalised(site, str(version["source"]))
    wanted = _normalised(site, (EXAMPLES / example).read_text(encoding="utf-8"))
    assert made["key"] == key and wanted["key"] == example.removesuffix(".yaml")
    for name in DIFFERENT:
        del made[name], wanted[name]
    differs = {n: (made.get(n), wanted.get(n)) for n in made.keys() | wanted.keys()}
    differs = {n: pair for n, pair in differs.items() if pair[0] != pair[1]}
    assert not differs, differs


def _settings(page: Page) -> None:
    """Save the settings form; else the problems the page shows, to say why."""
    with page.expect_navigation():
        page.get_by_role("button", name="Save the settings").click()
    shown = page.locator(".ff-problem, #forms-problems li").all_inner_texts()
    assert page.locator("#forms-error").count() == 0, shown
    expect(page.locator(".flash").first).to_contain_text("Settings saved")


def test_seed_002s_six_month_promotion_is_built_with_forms_and_pickers(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    signed_in(page, "alice")
    page.goto("/flows/new/form")
    page.get_by_label("Name").fill("Six-month client promotion")
    page.get_by_label("Record type").select_option("contact")
    page.get_by_label("What makes a record enter").select_option("schedule")
    _input(page, "time").fill("09:30")
    query = _input(page, "query")
    # The saved-query picker lists the contact queries and counts the one picked, live.
    expect(query.locator("option[value='recent-donors']")).to_have_count(1)
    query.select_option("six-month-clients")
    expect(page.locator("#f-query-count")).to_contain_text(" now.")
    expect(page.locator("#f-query-count")).not_to_contain_text("Pick a saved query")
    assert_accessible(page)
    page.get_by_role("button", name="Create the flow").click()
    page.wait_for_url("**/flows/six-month-client-promotion/form")

    page.goto("/flows/six-month-client-promotion/form?step=start")
    # The first step's history line becomes the email; an "update record" is added after it.
    _input(page, "actions[0]").select_option("send_email")
    _input(page, "actions[+]").select_option("update_record")
    _save(page)
    expect(page.locator("#forms-error")).to_contain_text("not saved")
    _input(page, "actions[0].from").fill("Shop <offers@example.org>")
    _input(page, "actions[0].cc").fill("sales@example.org")
    _input(page, "actions[0].bcc").fill("archive@example.org")
    _input(page, "actions[0].subject").fill(
        "{{ record.first_name | default('Dear client') }}, {{ discount }}% off for six months"
        " with us"
    )
    _input(page, "actions[0].body").fill(
        "Dear {{ record.first_name | default('') }} {{ record.last_name }},\n\n"
        "Thank you for being our client{% if record.client_since %} since"
        " {{ record.client_since | date }}{% endif %}. Use the code {{ vars.code }}\n"
        "for {{ discount }}% off your next order.\n"
    )
    _input(page, "actions[0].variables").fill('discount: "15"\ncode: "SIX-{{ record.id }}"\n')
    page.locator("#f-actions-0--archive").check()
    page.locator("#f-actions-1--active").uncheck()
    _input(page, "actions[1].values").fill("status: client\n")
    assert_accessible(page)
    _save(page)
    _saved(page)

    _input(page, "key").fill("promotion")
    _input(page, "name").fill("Promotion email")
    _save(page)

    # The flow's own settings: its manager, her zone, once per client, no catching up.
    page.goto("/flows/six-month-client-promotion/form")
    page.get_by_role("link", name="Settings of the flow").click()
    _input(page, "owner").fill("maria")
    _input(page, "controller").fill("maria")
    _input(page, "timezone").fill("Europe/Rome")
    _unfold(page, "f-reentry")
    _input(page, "reentry.mode").select_option("never")
    _unfold(page, "f-catch_up")
    _input(page, "catch_up.mode").select_option("skip_missed")
    assert_accessible(page)
    _settings(page)
    _compare(site, "six-month-client-promotion", "six-month-promotion.yaml")


def test_seed_001s_event_reminder_is_built_with_forms_the_variable_picker_and_the_builder(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    signed_in(page, "alice")
    page.goto("/flows/new/form")
    page.get_by_label("Name").fill("Event preparation and closing")
    page.get_by_label("Record type").select_option("event")
    page.get_by_label("What makes a record enter").select_option("record_created")
    page.get_by_role("button", name="Create the flow").click()
    page.wait_for_url("**/flows/event-preparation-and-closing/form")
    key = "event-preparation-and-closing"

    # The flow's own settings, the entry condition made with the builder.
    page.goto(f"/flows/{key}/form/settings")
    _input(page, "owner").fill("alice")
    _input(page, "controller").fill("alice")
    _input(page, "timezone").fill("Europe/Bucharest")
    entry = page.locator("#f-entry_condition-cb")
    entry.get_by_label("Condition 1: field").select_option("status")
    entry.get_by_label("operator").select_option("!=")
    entry.get_by_label("value").fill("cancelled")
    entry.get_by_label("value").press("Tab")
    expect(_input(page, "entry_condition")).to_have_value('record.status != "cancelled"')
    _unfold(page, "f-reentry")
    _input(page, "reentry.mode").select_option("never")
    _settings(page)

    page.goto(f"/flows/{key}/form?step=start")
    _unfold(page, "f-timing")
    _input(page, "timing").select_option("date")
    _unfold(page, "f-responsibility")
    _input(page, "responsibility").select_option("record_owner")
    _input(page, "actions[0]").select_option("create_task")
    _input(page, "actions[+]").select_option("send_email")
    _save(page)
    expect(page.locator("#forms-error")).to_contain_text("not saved")
    # The date field is picked from the event's fields.
    _input(page, "timing.field").select_option("start")
    _input(page, "timing.days").fill("7")
    _input(page, "timing.direction").select_option("before")
    _input(page, "timing.time").fill("09:00")
    _unfold(page, "f-deadline")
    _input(page, "deadline.days").fill("3")
    _input(page, "actions[0].title").fill(
        "Prepare {{ record.title }} ({{ record.location | default('place to be confirmed') }})"
    )
    _input(page, "actions[0].description").fill(
        "Check the room, the material and the list of participants."
    )
    _input(page, "actions[0].due_days").fill("3")
    _input(page, "actions[1].category").select_option("transactional")
    _input(page, "actions[1].to").fill("events@example.org")
    _input(page, "actions[1].cc").fill("logistics@example.org")
    # The variable picker inserts the record's field at the cursor, and shows its seed alias.
    subject = _input(page, "actions[1].subject")
    subject.fill("In 7 days: ")
    subject.press("End")
    picker = page.locator("#f-actions-1--subject-variables")
    picker.locator("summary").click()
    expect(picker).to_contain_text("%ab_title%")
    picker.get_by_role("button", name="Title", exact=True).click()
    expect(subject).to_have_value("In 7 days: {{ record.title }}")
    _input(page, "actions[1].body").fill(
        "{{ record.title }} starts on {{ record.start }} at"
        " {{ record.location | default('a place to be confirmed') }}."
    )
    page.locator("#f-actions-1--archive").check()
    assert_accessible(page)
    _save(page)
    _saved(page)

    # A condition made with the builder, as a saved query's filter: it writes the CEL.
    page.goto(f"/flows/{key}/form?step=start")
    builder = page.locator("#f-condition-cb")
    expect(builder.get_by_label("With the builder")).to_be_checked()
    builder.get_by_label("Condition 1: field").select_option("status")
    builder.get_by_label("operator").select_option("!=")
    builder.get_by_label("value").fill("cancelled")
    builder.get_by_label("value").press("Tab")
    expect(_input(page, "condition")).to_have_value('record.status != "cancelled"')
    assert_accessible(page)
    _save(page)
    _saved(page)
    # Reopened, the condition shows in the builder; a CEL it cannot show opens by hand.
    page.goto(f"/flows/{key}/form?step=start")
    expect(builder.get_by_label("Condition 1: field")).to_have_value("status")
    builder.get_by_label("In CEL, by hand").check()
    expect(page.locator("#f-condition-cb")).to_have_attribute("data-cb-mode", "hand")
    expect(page.locator("#f-condition-cb .cb-builder")).to_have_count(0)
    _input(page, "condition").fill('size(record.title) > 3 && record.status != "cancelled"')
    builder.get_by_label("With the builder").check()
    expect(page.locator("#f-condition-why")).to_contain_text("cannot show this condition")
    expect(builder.get_by_label("In CEL, by hand")).to_be_checked()
    _input(page, "condition").fill("")
    _save(page)

    _input(page, "key").fill("prepare")
    _input(page, "name").fill("One week before")
    _save(page)
    page.wait_for_url("**/form?step=prepare")  # renamed: its form opens under its new key

    # The `close` step: added last, its actions and timing picked, then renamed.
    page.goto(f"/flows/{key}/form/add")
    page.locator("#ff-step-name").fill("After the event")
    page.get_by_role("button", name="Add the step").click()
    page.wait_for_url("**/form?step=after_the_event#step-form")
    _unfold(page, "f-timing")
    _input(page, "timing").select_option("date")
    _input(page, "actions[0]").select_option("set_status")
    _input(page, "actions[+]").select_option("history")
    _save(page)
    expect(page.locator("#forms-error")).to_contain_text("not saved")
    _input(page, "timing.field").select_option("end")
    _input(page, "timing.days").fill("1")
    _input(page, "timing.direction").select_option("after")
    _input(page, "actions[0].status").fill("done")
    _input(page, "actions[1].message").fill("The event is over and was closed automatically.")
    builder.get_by_label("Condition 1: field").select_option("status")
    builder.get_by_label("operator").select_option("!=")
    builder.get_by_label("value").fill("cancelled")
    builder.get_by_label("value").press("Tab")
    expect(_input(page, "condition")).to_have_value('record.status != "cancelled"')
    _save(page)
    _saved(page)
    _input(page, "key").fill("close")
    _save(page)
    page.wait_for_url("**/form?step=close")
    _saved(page)
    _compare(site, key, "event-automations.yaml")
