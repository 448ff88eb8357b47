"""The flow editor in forms through FastAPI's TestClient (fast): a new flow in three clicks
saves YAML equal in meaning to the hand-written one; a step's field edited in its form changes
only that line; every example opens and saves back unchanged as a browser posts its form;
problems show at their field in the validator's words; a started flow is locked; a member
may not use the forms."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import flows, users
from crmflow.services.context import Actor, Context
from tests.acceptance.test_examples_end_to_end import _setup_like_the_demo
from tests.integration.test_web_tasks import Browser

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


class _Form(HTMLParser):
    """What a browser posts for one form of a page, as rendered (nothing touched)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: list[tuple[str, str]] = []
        self._textarea: str | None = None
        self._text = ""
        self._select: str | None = None
        self._selected: str | None = None
        self._first: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
        if not self.inside:
            return
        name = a.get("name")
        if tag == "input" and name:
            if a.get("type") == "checkbox" and "checked" not in a:
                return
            self.fields.append((name, a.get("value", "")))
        elif tag == "textarea" and name:
            self._textarea, self._text = name, ""
        elif tag == "select" and name:
            self._select, self._selected, self._first = name, None, None
        elif tag == "option" and self._select is not None:
            if self._first is None:
                self._first = a.get("value", "")
            if "selected" in a:
                self._selected = a.get("value", "")

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.inside:
            self.inside = False
        elif tag == "textarea" and self._textarea is not None:
            # The HTML parser drops one newline right after <textarea>, as browsers do.
            text = self._text[1:] if self._text.startswith("\n") else self._text
            self.fields.append((self._textarea, text))
            self._textarea = None
        elif tag == "select" and self._select is not None:
            self.fields.append((self._select, self._selected or self._first or ""))
            self._select = None


def _form(page: str, form_id: str) -> list[tuple[str, str]]:
    parser = _Form(form_id)
    parser.feed(page)
    assert parser.fields, f"no form {form_id!r}"
    return parser.fields


def _post(browser: Browser, path: str, fields: list[tuple[str, str]]) -> tuple[int, str]:
    body = urlencode([*fields, ("csrf_token", browser.csrf)])
    answer = browser.client.post(
        path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    if answer.status_code == 303:
        return 303, unescape(browser.client.get(answer.headers["location"]).text)
    return answer.status_code, unescape(answer.text)


def _replace(fields: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    assert any(n == name for n, _ in fields), name
    return [(n, value if n == name else v) for n, v in fields]


@pytest.fixture
def alice(ctx: Context) -> Actor:
    _setup_like_the_demo(ctx)
    return users.actor_by_username(ctx, "alice")


EXPECTED_NEW = """\
schema_version: 1
key: welcome-new-contacts
name: Welcome new contacts
record_type: contact
triggers:
  - type: date_reached
    field: client_since
    days: 7
    direction: before
steps:
  - key: start
    name: Start
    actions:
      - type: history
        message: Entered the flow
"""


def test_a_new_flow_in_three_clicks_saves_yaml_that_reads_like_the_hand_written_one(
    ctx: Context, alice: Actor
) -> None:
    browser = Browser(ctx, "alice")
    page = browser.get("/flows/new/form")
    assert 'hx-get="/flows/new/form/trigger"' in page
    # Picking a kind swaps in its fields; the field picker lists the record type's fields.
    fragment = browser.get("/flows/new/form/trigger", trigger="date_reached", record_type="contact")
    assert '<option value="client_since"' in fragment and 'name="f:days"' in fragment
    assert '<option value="address"' not in fragment
    assert 'value="address"' in browser.get(
        "/flows/new/form/trigger", trigger="date_reached", record_type="property"
    )
    form = [
        ("name", "Welcome new contacts"),
        ("record_type", "contact"),
        ("trigger", "date_reached"),
        ("f:field", "client_since"),
        ("f:days", "7"),
        ("f:direction", "before"),
        ("f:time", ""),
        ("f:ignore_year", "false"),
    ]
    status, shown = _post(browser, "/flows/new/form", form)
    assert status == 303
    assert "Flow 'Welcome new contacts' created as a draft." in shown
    assert "Start" in shown  # the steps page of the new flow
    version = flows.get_flow_version(ctx, alice, "welcome-new-contacts", 1)
    saved = str(version["source"])
    assert saved == EXPECTED_NEW
    # The same meaning as the hand-written document (the validator's parsed form).
    by_hand = EXPECTED_NEW.replace(
        "    days: 7\n    direction: before\n", "    direction: before\n    days: 7\n"
    )
    assert flows.validate_flow_text(ctx, alice, saved).model_dump(mode="json") == (
        flows.validate_flow_text(ctx, alice, by_hand).model_dump(mode="json")
    )
    assert "welcome-new-contacts" in browser.get("/flows", inactive="1")


def test_a_new_flow_s_problems_show_at_their_field_in_the_validator_s_words(
    ctx: Context, alice: Actor
) -> None:
    browser = Browser(ctx, "alice")
    form = [
        ("name", "Bad"),
        ("record_type", "contact"),
        ("trigger", "field_changed"),
        ("f:field", "no_such_field"),
        ("f:from", ""),
        ("f:to", ""),
    ]
    status, page = _post(browser, "/flows/new/form", form)
    assert status == 422
    with pytest.raises(InvalidInputError) as refused:
        flows.check_flow_text(
            ctx,
            alice,
            "schema_version: 1\nkey: bad\nname: Bad\nrecord_type: contact\n"
            "triggers:\n  - type: field_changed\n    field: no_such_field\n"
            "steps:\n  - key: start\n    actions:\n      - type: history\n        message: x\n",
        )
    message = next(p.message for p in refused.value.problems if p.path == "triggers[0].field")
    found = re.search(r'<small class="ff-problem" id="f-field-problem">(.*?)</small>', page, re.S)
    assert found is not None and message in found.group(1)
    assert 'aria-invalid="true"' in page
    # A word in a number field, an unknown kind, no name: said in words, never a 500.
    status, page = _post(
        browser,
        "/flows/new/form",
        [
            ("name", "X"),
            ("record_type", "contact"),
            ("trigger", "date_reached"),
            ("f:field", "birth_date"),
            ("f:days", "seven"),
        ],
    )
    assert status == 422 and "is not a whole number: 'seven'" in page
    status, page = _post(browser, "/flows/new/form", [("name", ""), ("trigger", "nope")])
    assert status == 422 and "give the flow a name" in page and "is not a trigger kind" in page
    assert (
        browser.client.get("/flows/new/form/trigger", params={"trigger": "nope"}).status_code == 422
    )


def test_a_step_s_field_edited_in_its_form_changes_only_that_line(
    ctx: Context, alice: Actor
) -> None:
    text = (EXAMPLES[0].parent / "six-month-promotion.yaml").read_text(encoding="utf-8")
    flows.create_flow(ctx, alice, text)
    browser = Browser(ctx, "alice")
    listing = browser.get("/flows/six-month-promotion/form")
    assert "Promotion email" in listing and 'href="/flows/six-month-promotion/edit"' in listing
    page = browser.get("/flows/six-month-promotion/form", step="promotion")
    fields = _form(page, "step-edit-form")
    assert ("f:actions[0].cc", "sales@example.org") in fields
    changed = _replace(fields, "f:actions[0].subject", "A gift for {{ record.first_name }}")
    status, shown = _post(browser, "/flows/six-month-promotion/form", changed)
    assert status == 303 and "Step 'promotion' saved" in shown
    saved = str(flows.get_flow_version(ctx, alice, "six-month-promotion", 1)["source"])
    before, after = text.splitlines(), saved.splitlines()
    assert len(before) == len(after)
    assert [(a, b) for a, b in zip(before, after, strict=True) if a != b] == [
        (
            "        subject: \"{{ record.first_name | default('Dear client') }}, {{ discount }}%"
            ' off for six months with us"',
            '        subject: "A gift for {{ record.first_name }}"',
        )
    ]
    # The YAML view shows the change.
    assert 'subject: "A gift for {{ record.first_name }}"' in browser.get(
        "/flows/six-month-promotion/edit"
    )


def test_a_step_s_problem_shows_at_its_field_and_nothing_is_saved(
    ctx: Context, alice: Actor
) -> None:
    text = (EXAMPLES[0].parent / "six-month-promotion.yaml").read_text(encoding="utf-8")
    flows.create_flow(ctx, alice, text)
    browser = Browser(ctx, "alice")
    fields = _form(
        browser.get("/flows/six-month-promotion/form", step="promotion"), "step-edit-form"
    )
    status, page = _post(
        browser,
        "/flows/six-month-promotion/form",
        _replace(fields, "f:actions[0].subject", "{{ unclosed"),
    )
    assert status == 422
    broken = text.replace(
        "subject: \"{{ record.first_name | default('Dear client') }}, {{ discount }}% off for"
        ' six months with us"',
        'subject: "{{ unclosed"',
    )
    with pytest.raises(InvalidInputError) as refused:
        flows.check_flow_text(ctx, alice, broken)
    [problem] = [p for p in refused.value.problems if "subject" in p.path]
    found = re.search(r'id="f-actions-0--subject-problem">(.*?)</small>', page, re.S)
    assert found is not None, page
    assert problem.message in unescape(found.group(1))
    assert str(flows.get_flow_version(ctx, alice, "six-month-promotion", 1)["source"]) == text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_opens_in_the_forms_and_saves_back_unchanged(
    ctx: Context, alice: Actor, path: Path
) -> None:
    text = path.read_text(encoding="utf-8")
    # The flows it starts exist first (property-sale-follow-up starts property-after-sale).
    for started in re.findall(r"^\s+flow: ([\w-]+)$", text, re.MULTILINE):
        flows.create_flow(ctx, alice, (path.parent / f"{started}.yaml").read_text(encoding="utf-8"))
    key = flows.create_flow(ctx, alice, text).key
    browser = Browser(ctx, "alice")
    listing = browser.get(f"/flows/{key}/form")
    document = flows.get_flow(ctx, alice, key).document or {}
    step_keys = [str(s["key"]) for s in document["steps"]]
    for step in step_keys:
        assert f"?step={step}#step-form" in listing
        fields = _form(browser.get(f"/flows/{key}/form", step=step), "step-edit-form")
        status, shown = _post(browser, f"/flows/{key}/form", fields)
        assert status == 303, shown
        assert "Nothing changed" in shown, step
    assert str(flows.get_flow_version(ctx, alice, key, 1)["source"]) == text
    assert flows.get_flow(ctx, alice, key).version == 1


def test_a_started_flow_is_locked_until_paused(ctx: Context, alice: Actor) -> None:
    text = (EXAMPLES[0].parent / "six-month-promotion.yaml").read_text(encoding="utf-8")
    flows.create_flow(ctx, alice, text)
    flows.change_status(ctx, alice, "six-month-promotion", LifecycleAction.START)
    browser = Browser(ctx, "alice")
    page = browser.get("/flows/six-month-promotion/form", step="promotion")
    assert "Pause it on its page" in page and 'id="ff-save" disabled' in page
    fields = _replace(_form(page, "step-edit-form"), "f:name", "Changed")
    status, shown = _post(browser, "/flows/six-month-promotion/form", fields)
    assert status == 409 and "pause" in shown.lower()
    assert flows.get_flow(ctx, alice, "six-month-promotion").version == 1


def test_a_member_may_not_use_the_forms(ctx: Context, alice: Actor) -> None:
    text = (EXAMPLES[0].parent / "six-month-promotion.yaml").read_text(encoding="utf-8")
    flows.create_flow(ctx, alice, text)
    andrei = Browser(ctx, "andrei")
    assert andrei.client.get("/flows/new/form").status_code == 403
    assert andrei.client.get("/flows/six-month-promotion/form").status_code == 403
    refused = andrei.client.post(
        "/flows/six-month-promotion/form",
        data={"step": "promotion", "f:name": "x", "csrf_token": andrei.csrf},
    )
    assert refused.status_code == 403
    assert andrei.client.get("/flows/no-such-flow/form").status_code == 404


def test_a_new_timing_kind_shows_its_own_fields_to_fill_then_saves(
    ctx: Context, alice: Actor
) -> None:
    text = (EXAMPLES[0].parent / "six-month-promotion.yaml").read_text(encoding="utf-8")
    flows.create_flow(ctx, alice, text)
    browser = Browser(ctx, "alice")
    fields = _form(
        browser.get("/flows/six-month-promotion/form", step="promotion"), "step-edit-form"
    )
    assert ("f:timing", "") in fields  # no timing: immediately
    status, page = _post(
        browser, "/flows/six-month-promotion/form", _replace(fields, "f:timing", "after")
    )
    # Refused, the form shows the new kind's fields, the missing one marked.
    assert status == 422
    assert re.search(r'id="f-timing-amount-problem">[^<]*\S', page), page
    fields = _replace(_form(page, "step-edit-form"), "f:timing.amount", "2")
    status, shown = _post(browser, "/flows/six-month-promotion/form", fields)
    assert status == 303, shown
    saved = str(flows.get_flow_version(ctx, alice, "six-month-promotion", 1)["source"])
    assert "    timing:\n      type: after\n      amount: 2\n    actions:\n" in saved
    assert saved.replace("    timing:\n      type: after\n      amount: 2\n", "") == text


def test_bad_input_on_a_step_form_is_said_in_words_never_a_500(ctx: Context, alice: Actor) -> None:
    text = (EXAMPLES[0].parent / "six-month-promotion.yaml").read_text(encoding="utf-8")
    flows.create_flow(ctx, alice, text)
    browser = Browser(ctx, "alice")
    missing = browser.client.get("/flows/six-month-promotion/form", params={"step": "<nope>"})
    assert missing.status_code == 422
    assert (
        "is not in the flow&#39;s current version" in missing.text and "<nope>" not in missing.text
    )
    status, page = _post(
        browser, "/flows/six-month-promotion/form", [("step", "nope"), ("f:name", "x")]
    )
    assert status == 422
    fields = _form(
        browser.get("/flows/six-month-promotion/form", step="promotion"), "step-edit-form"
    )
    status, page = _post(
        browser, "/flows/six-month-promotion/form", _replace(fields, "f:actions[1].active", "maybe")
    )
    assert status == 303  # a checkbox is on only when it says "true"
    status, page = _post(
        browser, "/flows/six-month-promotion/form", _replace(fields, "f:order", "first")
    )
    assert status == 422
    found = re.search(r'id="f-order-problem">(.*?)</small>', page, re.S)
    assert found is not None and "is not a whole number: 'first'" in found.group(1)
    assert 'value="first"' in page  # shown again as typed
