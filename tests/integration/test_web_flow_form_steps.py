"""The step list's operations over HTTP (TestClient): htmx gets the list and a trigger for the
diagram, a form post a redirect; a started flow is locked, a paused one gets a new version;
bad input of every operation is said in words, never a 500."""

from __future__ import annotations

from html import unescape
from urllib.parse import urlencode

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flow_forms, flows, records, users
from crmflow.services.context import Actor, Context
from tests.acceptance.test_examples_end_to_end import _setup_like_the_demo
from tests.integration.test_web_flow_forms import _form
from tests.integration.test_web_tasks import Browser

FLOW = """\
schema_version: 1
key: steps-ops
name: Steps ops
record_type: contact
triggers:
  - type: manual
steps:
  - key: one
    name: One
    actions: [{type: history, message: one}]
  - key: two
    name: Two
    actions: [{type: history, message: two}]
"""


@pytest.fixture
def alice(ctx: Context) -> Actor:
    _setup_like_the_demo(ctx)
    actor = users.actor_by_username(ctx, "alice")
    flows.create_flow(ctx, actor, FLOW)
    return actor


def _source(ctx: Context, actor: Actor) -> str:
    flow = flows.get_flow(ctx, actor, "steps-ops")
    return str(flows.get_flow_version(ctx, actor, "steps-ops", flow.version)["source"])


def _post(browser: Browser, path: str, *, htmx: bool = False, **form: str) -> tuple[int, str]:
    headers = {"HX-Request": "true"} if htmx else {}
    answer = browser.client.post(path, data={**form, "csrf_token": browser.csrf}, headers=headers)
    return answer.status_code, unescape(answer.text)


def _send(browser: Browser, path: str, form: dict[str, str]) -> tuple[int, str]:
    answer = browser.client.post(path, data={**form, "csrf_token": browser.csrf})
    return answer.status_code, unescape(answer.text)


def test_htmx_gets_the_list_and_tells_the_diagram_a_form_post_is_redirected(
    ctx: Context, alice: Actor
) -> None:
    browser = Browser(ctx, "alice")
    answer = browser.client.post(
        "/flows/steps-ops/form/move",
        data={"step": "two", "direction": "up", "csrf_token": browser.csrf},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 200 and answer.headers["HX-Trigger"] == "ff-changed"
    assert answer.text.startswith('<div id="ff-editor"')  # the list alone, not the page
    assert "moved to position 1 of 2" in unescape(answer.text)
    assert _source(ctx, alice).index("key: two") < _source(ctx, alice).index("key: one")
    diagram = browser.get("/flows/steps-ops/form/diagram")
    assert diagram.index('"Two"') < diagram.index('"One"')
    status, _ = _post(browser, "/flows/steps-ops/form/move", step="two", to="2")
    assert status == 303
    assert _source(ctx, alice) == FLOW


def test_a_started_flow_is_locked_and_a_paused_one_gets_a_new_version(
    ctx: Context, alice: Actor
) -> None:
    flows.change_status(ctx, alice, "steps-ops", LifecycleAction.START)
    browser = Browser(ctx, "alice")
    page = browser.get("/flows/steps-ops/form")
    assert "Pause it on its page" in page and 'aria-label="Move Two up" disabled' in page
    for path, form in (
        ("move", {"step": "two", "direction": "up"}),
        ("active", {"step": "two", "active": "false"}),
        ("remove", {"step": "two"}),
        ("add", {"type": "end", "name": "Stop"}),
        ("trigger", {"index": "0", "trigger": "record_created"}),
    ):
        status, shown = _send(browser, f"/flows/steps-ops/form/{path}", form)
        assert status == 409 and "pause" in shown.lower(), path
    assert _source(ctx, alice) == FLOW
    flows.change_status(ctx, alice, "steps-ops", LifecycleAction.PAUSE)
    status, _ = _post(browser, "/flows/steps-ops/form/active", step="two", active="false")
    assert status == 303
    assert flows.get_flow(ctx, alice, "steps-ops").version == 2
    assert "    name: Two\n    active: false\n" in _source(ctx, alice)


def test_bad_input_to_every_operation_is_said_in_words_never_a_500(
    ctx: Context, alice: Actor
) -> None:
    browser = Browser(ctx, "alice")
    cases = [
        ("move", {"step": "two", "to": "first"}, "is not a position"),
        ("move", {"step": "two"}, "is not a position"),
        ("move", {"step": "nope", "direction": "up"}, "is not a step"),
        ("move", {"step": "two", "to": "9" * 40}, "is not a position"),
        ("active", {"step": "nope", "active": "false"}, "is not a step"),
        ("remove", {"step": "nope"}, "is not a step"),
        ("add", {"type": "teleport", "name": "X"}, "is not a step type"),
        ("add", {"type": "end", "name": ""}, "give the step a name"),
        ("add", {"type": "wait", "name": "W", "f:timeout.amount": "two"}, "is not a whole"),
        ("trigger", {"index": "0", "trigger": "teleport"}, "is not a trigger kind"),
        ("trigger", {"index": "7", "trigger": "manual"}, "the flow has no trigger 8"),
        ("try", {"record_id": "abc"}, "is not a record id"),
        ("try", {"record_id": ""}, "no record picked"),
        ("try", {"record_id": "1", "days": "many"}, "is not a number of days"),
        ("try", {"record_id": "1", "days": "999"}, "'999' is not a number of days between 1 and"),
        ("try", {"record_id": "1", "days": "²"}, "'²' is not a number of days between 1 and 366"),
    ]
    for path, form, words in cases:
        status, shown = _send(browser, f"/flows/steps-ops/form/{path}", form)
        assert status == 422, (path, form, status)
        assert words in shown, (path, form)
    status, shown = _post(browser, "/flows/steps-ops/form/try", record_id="99999")
    assert status == 404 and "pick another record" in shown
    assert (
        browser.client.get("/flows/steps-ops/form/remove", params={"step": "x"}).status_code == 404
    )
    assert _source(ctx, alice) == FLOW
    # The last step cannot go: the validator's words at the top of the list.
    _post(browser, "/flows/steps-ops/form/remove", step="one")
    status, shown = _post(browser, "/flows/steps-ops/form/remove", htmx=True, step="two")
    assert status == 422 and "would make the flow invalid" in shown


def test_try_it_finds_records_of_the_flow_s_type_and_simulates_one(
    ctx: Context, alice: Actor
) -> None:
    record = records.create_record(
        ctx, alice, "contact", {"first_name": "Ottilie", "last_name": "Brandt"}
    )
    browser = Browser(ctx, "alice")
    found = browser.get("/flows/steps-ops/form/records", q="ottil")
    assert f'value="{record.id}"' in found and "Ottilie" in found
    assert "No contact record matches" in browser.get("/flows/steps-ops/form/records", q="zzzq")
    status, shown = _post(
        browser, "/flows/steps-ops/form/try", htmx=True, record_id=str(record.id), days="3"
    )
    assert status == 200 and 'id="ff-try-timeline"' in shown and "one" in shown


def test_a_member_may_not_change_the_list(ctx: Context, alice: Actor) -> None:
    andrei = Browser(ctx, "andrei")
    status, _ = _post(andrei, "/flows/steps-ops/form/move", step="two", direction="up")
    assert status == 403
    assert andrei.client.get("/flows/steps-ops/form/add").status_code == 403
    assert _source(ctx, alice) == FLOW


def test_every_step_type_s_form_as_drawn_adds_the_step_or_says_what_to_fill(
    ctx: Context, alice: Actor
) -> None:
    browser = Browser(ctx, "alice")
    for kind in [k.value for k in flow_forms.step_kinds()]:
        fields = _form(browser.get("/flows/steps-ops/form/add", type=kind), "ff-add-form")
        fields = [
            (n, kind if n == "type" else f"New {kind}" if n == "name" else v) for n, v in fields
        ]
        before = _source(ctx, alice)
        answer = browser.client.post(
            "/flows/steps-ops/form/add",
            content=urlencode([*fields, ("csrf_token", browser.csrf)]),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        if kind in ("action", "merge", "end"):
            assert answer.status_code == 303, unescape(answer.text)
            assert f"key: new_{kind}" in _source(ctx, alice)
        else:  # a branch's condition and target, a wait's `until`, an approval's decider
            assert answer.status_code == 422, kind
            assert 'class="ff-problem"' in answer.text or 'id="forms-problems"' in answer.text
            assert _source(ctx, alice) == before
