"""The flow forms' pickers through FastAPI's TestClient (issue 13): what each picker offers in a
step's form, the saved query's live count, the conditions builder's fragment (rows -> CEL, CEL ->
rows, a CEL it cannot show kept by hand), and bad input said in words, never a 500."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest

from crmflow.services import flows, users
from crmflow.services.context import Actor, Context
from tests.acceptance.test_examples_end_to_end import _setup_like_the_demo
from tests.integration.test_web_flow_forms import _form, _post, _replace
from tests.integration.test_web_tasks import Browser

CONDITION = "/flows/new/form/widgets/condition"
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def alice(ctx: Context) -> Actor:
    _setup_like_the_demo(ctx)
    return users.actor_by_username(ctx, "alice")


def _load(ctx: Context, alice: Actor, *names: str) -> None:
    for name in names:
        text = (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
        flows.create_flow(ctx, alice, text, source=name)


def _get(browser: Browser, url: str, params: dict[str, str]) -> str:
    answer = browser.client.get(url, params=params)
    assert answer.status_code == 200, answer.text
    return unescape(answer.text)


def _datalist(page: str, field_id: str) -> list[str]:
    found = re.search(rf'<datalist id="{re.escape(field_id)}-list">(.*?)</datalist>', page, re.S)
    assert found is not None, f"no datalist for {field_id}"
    return re.findall(r'<option value="([^"]*)"', found.group(1))


def test_a_steps_form_offers_users_groups_flows_and_the_records_fields(
    ctx: Context, alice: Actor
) -> None:
    _load(ctx, alice, "recruitment-approval", "property-after-sale", "property-sale-follow-up")
    _load(ctx, alice, "donor-thank-you")
    browser = Browser(ctx, "alice")
    page = browser.get("/flows/recruitment-approval/form", step="approved")
    assert {"approved", "refused"} <= set(_datalist(page, "f-actions-0--status"))
    # notify: users and groups of the organisation, added one per line
    users = _datalist(page, "f-actions-1--users")
    assert {"alice", "maria", "andrei", "bogdan"} <= set(users) and "system" not in users
    assert _datalist(page, "f-actions-1--groups") == ["management", "sales", "service"]
    # a templated text: the record's fields, as flows write them and as stored templates do
    assert 'data-insert="{{ record.first_name }}"' in page
    assert "%ab_firstname% in stored templates" in page

    page = browser.get("/flows/property-sale-follow-up/form", step="keys-handover")
    assert "property-after-sale" in _datalist(page, "f-actions-1--flow")
    assert "andrei" in _datalist(page, "f-responsibility-user")

    page = browser.get("/flows/donor-thank-you/form", step="wait-three-months")
    assert _datalist(page, "f-actions-0--template") == ["donor-news"]
    # The step's condition opens in the builder, one row: newsletter is true.
    assert 'data-cb-mode="builder"' in page
    assert re.search(r'<option value="newsletter" selected>', page)
    assert 'value="true"' in page


def test_the_builder_writes_cel_and_reads_it_back_and_keeps_what_it_cannot_show(
    ctx: Context, alice: Actor
) -> None:
    browser = Browser(ctx, "alice")
    rows = {
        "path": "condition",
        "record_type": "contact",
        "cb-mode:condition": "builder",
        "cb-match:condition": "any",
        "cb-group:condition": "0",
        "cb-field:condition": "client_since",
        "cb-op:condition": "in the last",
        "cb-value:condition": "30",
    }
    page = _get(browser, CONDITION, rows)
    day = 'timestamp(record.client_since + "T00:00:00Z")'
    today = 'timestamp(today + "T00:00:00Z")'
    written = f'({day} >= {today} - duration("720h") && {day} <= {today})'
    assert f">\n{written}</textarea>" in page
    page = _get(browser, CONDITION, {**rows, "add": "group"})
    assert "Group 1" in page and "Add a condition to group 1" in page

    # A number of days that is not one is said at its row, and the CEL is left as it was.
    page = _get(
        browser, CONDITION, {**rows, "cb-value:condition": "soon", "f:condition": "record.id > 1"}
    )
    assert "condition 1: 'in the last' needs a whole number of days, got 'soon'" in page
    assert ">\nrecord.id > 1</textarea>" in page

    # CEL typed by hand opens in the builder when it can, else stays by hand, saying why.
    typed = {"path": "condition", "record_type": "contact", "source": "cel"}
    page = _get(
        browser, CONDITION, {**typed, "f:condition": 'record.status in ["client", "donor"]'}
    )
    assert 'data-cb-mode="builder"' in page and 'value="client, donor"' in page
    switched = {"path": "condition", "record_type": "contact", "cb-mode:condition": "builder"}
    page = _get(browser, CONDITION, {**switched, "f:condition": "size(record.email) > 3"})
    assert 'data-cb-mode="hand"' in page
    assert "The builder cannot show this condition (expected 'record', found 'size')" in page


def test_the_saved_querys_count_and_bad_input_are_said_in_words(ctx: Context, alice: Actor) -> None:
    browser = Browser(ctx, "alice")
    count = browser.get(
        "/flows/new/form/widgets/query-count", name="f:query", **{"f:query": "six-month-clients"}
    )
    assert re.search(r"\d+ records? match(es)? now\.", count)
    missing = browser.get(
        "/flows/new/form/widgets/query-count", name="f:query", **{"f:query": "nope"}
    )
    assert "No saved query named 'nope': pick one of the list." in missing
    answer = browser.client.get(CONDITION, params={"path": "<script>", "record_type": "contact"})
    assert answer.status_code == 422
    assert "is not the path of a form's field" in unescape(answer.text)
    # An unknown record type: nothing to build with, the CEL is kept by hand.
    page = _get(browser, CONDITION, {"path": "if", "record_type": "nope", "f:if": "record.x == 1"})
    assert "its fields are not either" in page and ">\nrecord.x == 1</textarea>" in page


def test_an_action_added_in_the_steps_form_is_saved_once_its_fields_are_filled(
    ctx: Context, alice: Actor
) -> None:
    _load(ctx, alice, "event-automations")
    browser = Browser(ctx, "alice")
    form = _form(browser.get("/flows/event-automations/form", step="close"), "step-edit-form")
    # A started flow is locked: the demo's flows are drafts.
    assert flows.get_flow(ctx, alice, "event-automations").status.value == "draft"
    status, page = _post(
        browser, "/flows/event-automations/form", _replace(form, "f:actions[+]", "notify")
    )
    assert status == 422, page
    assert 'name="f:actions[2].users"' in page
    again = _form(page, "step-edit-form")
    again = _replace(again, "f:actions[2].users", "maria")
    again = _replace(again, "f:actions[2].message", "{{ record.title }} is closed.")
    status, page = _post(browser, "/flows/event-automations/form", again)
    assert status == 303, page
    flow = flows.get_flow(ctx, alice, "event-automations")
    text = str(flows.get_flow_version(ctx, alice, "event-automations", flow.version)["source"])
    assert text.endswith(
        "      - type: notify\n        users:\n          - maria\n"
        "        message: '{{ record.title }} is closed.'\n"
    ), text
