"""The last gaps of the form editor through FastAPI's TestClient (fast): the flow's own settings
in a form generated from the schema (every example saves back unchanged; a change writes only
its lines, where a developer would put them; a refusal shows at its field in the validator's
words); a step renamed in its form opens under its new key with the steps that went to it
following; the step pickers offer the document's step keys; form_widgets.js is loaded once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import flow_form_settings, flow_forms, flows, users
from crmflow.services.context import Actor, Context
from tests.acceptance.test_examples_end_to_end import _setup_like_the_demo
from tests.integration.test_web_flow_forms import _form, _post, _replace
from tests.integration.test_web_tasks import Browser

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.fixture
def alice(ctx: Context) -> Actor:
    _setup_like_the_demo(ctx)
    return users.actor_by_username(ctx, "alice")


def _create(ctx: Context, alice: Actor, name: str) -> tuple[str, str]:
    text = (EXAMPLES[0].parent / name).read_text(encoding="utf-8")
    for started in re.findall(r"^\s+flow: ([\w-]+)$", text, re.MULTILINE):
        flows.create_flow(ctx, alice, (EXAMPLES[0].parent / f"{started}.yaml").read_text("utf-8"))
    return flows.create_flow(ctx, alice, text).key, text


def _source(ctx: Context, alice: Actor, key: str) -> str:
    flow = flows.get_flow(ctx, alice, key)
    return str(flows.get_flow_version(ctx, alice, key, flow.version)["source"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_s_settings_open_in_the_form_and_save_back_unchanged(
    ctx: Context, alice: Actor, path: Path
) -> None:
    key, text = _create(ctx, alice, path.name)
    browser = Browser(ctx, "alice")
    assert f'href="/flows/{key}/form/settings"' in browser.get(f"/flows/{key}/form")
    fields = _form(browser.get(f"/flows/{key}/form/settings"), "ff-settings-form")
    names = {n for n, _ in fields}
    # Generated from the schema: the top level but the key, status, triggers and steps.
    assert {"f:name", "f:owner", "f:controller", "f:timezone", "f:entry_condition"} <= names
    assert {"f:reentry.mode", "f:catch_up.mode", "f:calendar.quiet_hours.start"} <= names
    assert {"f:test_recipients", "f:members"} <= names
    assert not {n for n in names if re.match(r"f:(key|status|steps|triggers|schema_version)", n)}
    status, shown = _post(browser, f"/flows/{key}/form/settings", fields)
    assert status == 303 and "Nothing changed" in shown
    assert _source(ctx, alice, key) == text


def test_changed_settings_write_only_their_lines_where_the_schema_puts_them(
    ctx: Context, alice: Actor
) -> None:
    key, text = _create(ctx, alice, "event-automations.yaml")
    browser = Browser(ctx, "alice")
    page = browser.get(f"/flows/{key}/form/settings")
    # Pickers: the users for the controller, the zones for the timezone, the builder for CEL.
    assert re.search(r'id="f-controller-list">.*<option value="maria">', page, re.S)
    assert '<option value="Europe/Rome">' in page
    assert 'id="f-entry_condition-cb"' in page
    fields = _form(page, "ff-settings-form")
    fields = _replace(fields, "f:controller", "maria")
    fields = _replace(fields, "f:locale", "ro")
    fields = _replace(fields, "f:calendar.quiet_hours.start", "21:00")
    fields = _replace(fields, "f:calendar.quiet_hours.end", "08:00")
    fields = _replace(fields, "f:test_recipients", "test@example.org\nqa@example.org")
    status, shown = _post(browser, f"/flows/{key}/form/settings", fields)
    assert status == 303 and "Settings saved" in shown
    saved = _source(ctx, alice, key)
    head = saved.split("steps:\n")[0]
    assert head == text.split("steps:\n")[0].replace(
        "controller: alice\n", "controller: maria\n"
    ).replace("timezone: Europe/Bucharest\n", "timezone: Europe/Bucharest\nlocale: ro\n").replace(
        "reentry: {mode: never}\n",
        "reentry: {mode: never}\n"
        'calendar:\n  quiet_hours:\n    start: "21:00"\n    end: "08:00"\n'
        "test_recipients:\n  - test@example.org\n  - qa@example.org\n",
    )
    assert saved.split("steps:\n")[1] == text.split("steps:\n")[1]  # comments and all
    document = flows.get_flow(ctx, alice, key).document or {}
    assert document["calendar"]["quiet_hours"] == {"start": "21:00", "end": "08:00"}


def test_a_refused_setting_shows_at_its_field_in_the_validator_s_words(
    ctx: Context, alice: Actor
) -> None:
    key, text = _create(ctx, alice, "event-automations.yaml")
    browser = Browser(ctx, "alice")
    fields = _form(browser.get(f"/flows/{key}/form/settings"), "ff-settings-form")
    status, page = _post(
        browser, f"/flows/{key}/form/settings", _replace(fields, "f:timezone", "Mars/Olympus")
    )
    assert status == 422 and "The settings were not saved" in page
    with pytest.raises(InvalidInputError) as refused:
        flows.check_flow_text(
            ctx, alice, text.replace("Europe/Bucharest", "Mars/Olympus"), fmt=None
        )
    [problem] = [p for p in refused.value.problems if p.path == "timezone"]
    found = re.search(r'id="f-timezone-problem">(.*?)</small>', page, re.S)
    assert found is not None and problem.message in found.group(1)
    assert 'value="Mars/Olympus"' in page  # the form as the user left it
    # A word in a number field: said at the field, nothing saved.
    status, page = _post(
        browser, f"/flows/{key}/form/settings", _replace(fields, "f:reentry.days", "ten")
    )
    assert status == 422 and re.search(r'id="f-reentry-days-problem">is not a whole number', page)
    # A crafted field of a step is not a setting: nothing changes.
    status, page = _post(
        browser, f"/flows/{key}/form/settings", [*fields, ("f:steps[0].name", "Hacked")]
    )
    assert status == 303 and "Nothing changed" in page
    assert _source(ctx, alice, key) == text


def test_settings_follow_the_lifecycle_and_are_for_admins(ctx: Context, alice: Actor) -> None:
    key, text = _create(ctx, alice, "six-month-promotion.yaml")
    flows.change_status(ctx, alice, key, LifecycleAction.START)
    browser = Browser(ctx, "alice")
    page = browser.get(f"/flows/{key}/form/settings")
    assert 'id="ff-settings-save" disabled' in page
    fields = _replace(_form(page, "ff-settings-form"), "f:timezone", "Europe/Paris")
    status, shown = _post(browser, f"/flows/{key}/form/settings", fields)
    assert status == 409 and "pause" in shown.lower()
    assert _source(ctx, alice, key) == text
    # Paused, a change is a new version (its impact is previewed on resume, on the flow's page).
    flows.change_status(ctx, alice, key, LifecycleAction.PAUSE)
    # The form read before the pause is of an older revision: refused, nothing written.
    status, shown = _post(browser, f"/flows/{key}/form/settings", fields)
    assert status == 409 and "changed since you read it" in shown
    page = browser.get(f"/flows/{key}/form/settings")
    fields = _replace(_form(page, "ff-settings-form"), "f:timezone", "Europe/Paris")
    status, shown = _post(browser, f"/flows/{key}/form/settings", fields)
    assert status == 303 and "Settings saved (version 2)" in shown
    assert "timezone: Europe/Paris\n" in _source(ctx, alice, key)
    andrei = Browser(ctx, "andrei")
    assert andrei.client.get(f"/flows/{key}/form/settings").status_code == 403
    refused = andrei.client.post(
        f"/flows/{key}/form/settings", data={"f:name": "x", "csrf_token": andrei.csrf}
    )
    assert refused.status_code == 403


def test_every_setting_of_the_schema_has_a_form_field() -> None:
    # A property added to the document's schema shows without editor code, or this names it.
    drawn = flow_form_settings.settings_fields({})
    assert [f.path for f in drawn] == list(flow_form_settings.settings_schema()["properties"])
    assert [f.path for top in drawn for f in top.walk() if f.widget == "unsupported"] == []


def test_a_renamed_step_opens_under_its_new_key_and_the_steps_going_to_it_follow(
    ctx: Context, alice: Actor
) -> None:
    key, text = _create(ctx, alice, "recruitment-approval.yaml")
    browser = Browser(ctx, "alice")
    page = browser.get(f"/flows/{key}/form", step="refused")
    assert "no reference is left pointing at the old key" in page
    fields = _replace(_form(page, "step-edit-form"), "f:key", "turned-down")
    answer = browser.client.post(
        f"/flows/{key}/form",
        data={k: v for k, v in fields} | {"csrf_token": browser.csrf},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/flows/{key}/form?step=turned-down"
    shown = browser.client.get(answer.headers["location"]).text
    assert "renamed &#39;turned-down&#39;" in shown and 'id="step-edit-form"' in shown
    saved = _source(ctx, alice, key)
    assert saved == text.replace("goto: refused", "goto: turned-down").replace(
        "  - key: refused\n", "  - key: turned-down\n"
    )


def test_a_step_renamed_to_a_key_taken_is_refused_at_its_key_field(
    ctx: Context, alice: Actor
) -> None:
    key, text = _create(ctx, alice, "recruitment-approval.yaml")
    browser = Browser(ctx, "alice")
    fields = _form(browser.get(f"/flows/{key}/form", step="refused"), "step-edit-form")
    status, page = _post(browser, f"/flows/{key}/form", _replace(fields, "f:key", "approved"))
    assert status == 422 and "The step was not saved" in page
    with pytest.raises(InvalidInputError) as refused:
        flows.check_flow_text(
            ctx, alice, text.replace("  - key: refused\n", "  - key: approved\n"), fmt=None
        )
    [problem] = [p for p in refused.value.problems if p.path.endswith(".key")]
    found = re.search(r'id="f-key-problem">(.*?)</small>', page, re.S)
    assert found is not None and problem.message in found.group(1), page
    # The form stays that of the step as saved, with what was typed: it can be fixed and sent.
    again = _form(page, "step-edit-form")
    assert ("step", "refused") in again and ("f:key", "approved") in again
    status, _ = _post(browser, f"/flows/{key}/form", _replace(again, "f:key", "declined"))
    assert status == 303
    assert "goto: declined" in _source(ctx, alice, key)


def test_where_a_step_goes_is_picked_from_the_document_s_step_keys(
    ctx: Context, alice: Actor
) -> None:
    key, _ = _create(ctx, alice, "recruitment-approval.yaml")
    browser = Browser(ctx, "alice")
    page = browser.get(f"/flows/{key}/form", step="approved")
    steps = re.search(r'id="f-next-list">(.*?)</datalist>', page, re.S)
    assert steps is not None
    offered = re.findall(r'<option value="([^"]+)">', steps.group(1))
    document = flows.get_flow(ctx, alice, key).document or {}
    assert offered == [s["key"] for s in document["steps"] if s["key"] != "approved"]
    buttons = re.search(r'id="f-buttons-0--goto-list">(.*?)</datalist>', page, re.S)
    assert buttons is None  # not an approval: no buttons here
    page = browser.get(f"/flows/{key}/form", step="manager-approval")
    assert re.search(r'id="f-buttons-0--goto-list">.*<option value="refused">', page, re.S)
    # The page loads the pickers' script once, not once per field that uses it.
    assert page.count('src="/static/web/form_widgets.js"') == 1
    add = browser.get(f"/flows/{key}/form/add", type="wait")
    assert re.search(r'id="f-on_timeout-list">.*<option value="approved">', add, re.S)


def test_rename_references_changes_only_the_references_to_the_step() -> None:
    text = (
        "steps:\n  - key: a\n    next: b\n  # a comment kept\n  - key: b\n    else: c\n"
        "    branches:\n      - goto: b\n        if: next\n"
    )
    document = flow_forms.load_document(text)
    assert flow_forms.rename_references(document, "b", "bee") == 2
    assert flow_forms.dump_document(document, text) == text.replace(
        "next: b\n", "next: bee\n"
    ).replace("goto: b\n", "goto: bee\n")  # the key is the step form's to change
