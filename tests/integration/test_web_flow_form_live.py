"""Validation as one types in the form editor (issue 13), through FastAPI's TestClient: each form
(a step's, a new step's, the settings, a new flow) posts its fields to a check route that applies
them to the document in memory, validates it as a save would, and answers each field's problem
slot out of band (the validator's words at the field; an empty slot once fixed); nothing is
saved, and a document over the size limit is one problem, not an error page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crmflow.errors import InvalidInputError
from crmflow.services import flows, users
from crmflow.services.context import Actor, Context
from tests.acceptance.test_examples_end_to_end import _setup_like_the_demo
from tests.integration.test_web_flow_forms import _form, _post, _replace
from tests.integration.test_web_tasks import Browser

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def alice(ctx: Context) -> Actor:
    _setup_like_the_demo(ctx)
    return users.actor_by_username(ctx, "alice")


def _slot(answer: str, slot: str) -> str | None:
    """The text of a problem slot in a check's answer (swapped out of band), None when the
    answer has no such slot; "" when the slot is empty (the field is right)."""
    found = re.search(
        rf'<small class="(ff-problem|ff-problem-slot)" id="{re.escape(slot)}" '
        r'hx-swap-oob="true">(.*?)</small>',
        answer,
        re.S,
    )
    if found is None:
        return None
    return found.group(2) if found.group(1) == "ff-problem" else ""


def _saved(ctx: Context, alice: Actor, key: str) -> tuple[int, str]:
    flow = flows.get_flow(ctx, alice, key)
    return flow.revision, str(flows.get_flow_version(ctx, alice, key, flow.version)["source"])


def _message(ctx: Context, alice: Actor, text: str, path: str) -> str:
    """What `crmflow flows validate` (the service it calls) says at `path` of `text`."""
    with pytest.raises(InvalidInputError) as refused:
        flows.check_flow_text(ctx, alice, text, fmt=None)
    [problem] = [p for p in refused.value.problems if p.path == path]
    return problem.message


def test_the_settings_form_says_a_wrong_value_at_its_field_as_typed_and_clears_it_when_fixed(
    ctx: Context, alice: Actor
) -> None:
    text = (EXAMPLES / "donor-thank-you.yaml").read_text(encoding="utf-8")
    key = flows.create_flow(ctx, alice, text).key
    before = _saved(ctx, alice, key)
    browser = Browser(ctx, "alice")
    page = browser.get(f"/flows/{key}/form/settings")
    # The form checks itself as one types; each field has its (empty) problem slot.
    assert f'hx-post="/flows/{key}/form/settings/check"' in page and "data-live-check" in page
    assert '<small class="ff-problem-slot" id="f-timezone-problem"></small>' in page
    fields = _form(page, "ff-settings-form")
    zone = dict(fields)["f:timezone"]
    wrong = _replace(fields, "f:timezone", "Mars/Olympus")
    status, answer = _post(browser, f"/flows/{key}/form/settings/check", wrong)
    assert status == 200
    said = _slot(answer, "f-timezone-problem")
    assert said, answer
    assert _message(ctx, alice, text.replace(zone, "Mars/Olympus"), "timezone") in said
    assert _slot(answer, "f-name-problem") == ""  # the other fields are right
    assert _saved(ctx, alice, key) == before  # nothing saved

    status, answer = _post(browser, f"/flows/{key}/form/settings/check", fields)
    assert status == 200 and _slot(answer, "f-timezone-problem") == ""
    # A word in a number field, in the words the save uses.
    status, answer = _post(
        browser, f"/flows/{key}/form/settings/check", _replace(fields, "f:reentry.days", "ten")
    )
    assert (_slot(answer, "f-reentry-days-problem") or "").startswith("is not a whole number")
    assert _saved(ctx, alice, key) == before


def test_a_step_form_says_a_taken_key_at_its_field_and_nothing_is_saved(
    ctx: Context, alice: Actor
) -> None:
    text = (EXAMPLES / "recruitment-approval.yaml").read_text(encoding="utf-8")
    key = flows.create_flow(ctx, alice, text).key
    before = _saved(ctx, alice, key)
    browser = Browser(ctx, "alice")
    page = browser.get(f"/flows/{key}/form", step="refused")
    assert f'hx-post="/flows/{key}/form/check"' in page
    fields = _form(page, "step-edit-form")
    status, answer = _post(
        browser, f"/flows/{key}/form/check", _replace(fields, "f:key", "approved")
    )
    assert status == 200
    index = next(
        i for i, line in enumerate(re.findall(r"^  - key: (\S+)$", text, re.M)) if line == "refused"
    )
    expected = _message(
        ctx,
        alice,
        text.replace("  - key: refused\n", "  - key: approved\n"),
        f"steps[{index}].key",
    )
    assert expected in (_slot(answer, "f-key-problem") or ""), answer
    assert _saved(ctx, alice, key) == before
    # As it was: every slot empty.
    status, answer = _post(browser, f"/flows/{key}/form/check", fields)
    assert status == 200 and _slot(answer, "f-key-problem") == ""
    assert 'class="ff-problem"' not in answer
    # A value over the document's size limit is a problem at the form, not an error page.
    ctx.settings.max_document_chars, limit = 2_000, ctx.settings.max_document_chars
    try:
        status, answer = _post(
            browser, f"/flows/{key}/form/check", _replace(fields, "f:name", "x" * 5_000)
        )
    finally:
        ctx.settings.max_document_chars = limit
    live = re.search(r'<div id="ff-live-problems"[^>]*>(.*?)</div>', answer, re.S)
    assert status == 200 and live is not None
    assert "more than the 2,000 allowed" in live.group(1), answer
    assert _saved(ctx, alice, key) == before


def test_the_new_flow_and_new_step_forms_say_a_field_wrong_once_changed_not_before(
    ctx: Context, alice: Actor
) -> None:
    browser = Browser(ctx, "alice")
    page = browser.get("/flows/new/form", kind="date_reached")
    fields = _form(page, "new-flow-form")
    # Just opened: the date field is required and empty, but nobody has typed yet.
    status, answer = _post(browser, "/flows/new/form/check", fields)
    assert status == 200 and _slot(answer, "f-field-problem") == "", answer
    assert _slot(answer, "ff-name-problem") == ""
    # A field picked that the record type does not have: said at it, in the validator's words.
    named = _replace(_replace(fields, "name", "Hello"), "record_type", "contact")
    wrong = _replace(named, "f:field", "shoe_size")
    status, answer = _post(browser, "/flows/new/form/check", wrong)
    assert _slot(answer, "ff-name-problem") == ""
    assert "shoe_size" in (_slot(answer, "f-field-problem") or ""), answer
    fixed = _replace(wrong, "f:field", "birth_date")
    status, answer = _post(browser, "/flows/new/form/check", fixed)
    assert status == 200 and _slot(answer, "f-field-problem") == ""
    assert 'class="ff-problem"' not in answer
    assert flows.list_flows(ctx, alice) == []  # nothing created

    text = (EXAMPLES / "donor-thank-you.yaml").read_text(encoding="utf-8")
    key = flows.create_flow(ctx, alice, text).key
    before = _saved(ctx, alice, key)
    fields = _form(browser.get(f"/flows/{key}/form/add"), "ff-add-form")
    status, answer = _post(browser, f"/flows/{key}/form/add/check", fields)
    assert status == 200 and _slot(answer, "ff-step-name-problem") == ""
    status, answer = _post(
        browser, f"/flows/{key}/form/add/check", _replace(fields, "name", "x" * 201)
    )
    assert "has 201 characters" in (_slot(answer, "ff-step-name-problem") or ""), answer
    status, answer = _post(
        browser, f"/flows/{key}/form/add/check", _replace(fields, "name", "Thank them")
    )
    assert status == 200 and _slot(answer, "ff-step-name-problem") == ""
    assert _saved(ctx, alice, key) == before


def test_the_trigger_form_checks_itself_and_the_checks_are_for_admins_only(
    ctx: Context, alice: Actor
) -> None:
    text = (EXAMPLES / "donor-thank-you.yaml").read_text(encoding="utf-8")
    key = flows.create_flow(ctx, alice, text).key
    before = _saved(ctx, alice, key)
    browser = Browser(ctx, "alice")
    page = browser.get(f"/flows/{key}/form/trigger", index="1")
    assert f'hx-post="/flows/{key}/form/trigger/check"' in page
    fields = _form(page, "ff-trigger-form")
    wrong = _replace(fields, "f:field", "shoe_size")
    status, answer = _post(browser, f"/flows/{key}/form/trigger/check", wrong)
    expected = _message(
        ctx,
        alice,
        text.replace("field: last_donation_date", "field: shoe_size"),
        "triggers[1].field",
    )
    assert status == 200 and expected in (_slot(answer, "f-field-problem") or ""), answer
    status, answer = _post(browser, f"/flows/{key}/form/trigger/check", fields)
    assert status == 200 and 'class="ff-problem"' not in answer
    # A kind that is not one: said above the fields, not an error page.
    status, answer = _post(
        browser, f"/flows/{key}/form/trigger/check", _replace(fields, "trigger", "telepathy")
    )
    assert status == 200 and "'telepathy' is not a trigger kind" in answer
    assert _saved(ctx, alice, key) == before
    # Someone who may not change flows gets no check either.
    andrei = Browser(ctx, "andrei")
    for path in ("form/check", "form/settings/check", "form/add/check", "form/trigger/check"):
        refused = andrei.client.post(
            f"/flows/{key}/{path}", data={"f:name": "x", "csrf_token": andrei.csrf}
        )
        assert refused.status_code == 403, path
    refused = andrei.client.post("/flows/new/form/check", data={"csrf_token": andrei.csrf})
    assert refused.status_code == 403
