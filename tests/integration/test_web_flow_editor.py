"""The flow editor's rules through FastAPI's TestClient (fast): /flows/validate answers the
problems at their lines, refuses a document past the size limit in words, a member may not
save, a started flow is locked until paused, and the step / action switches save a version."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmflow.engine.definition import FlowStatus
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError, NotFoundError
from crmflow.services import flows
from crmflow.services.context import Actor, Context
from crmflow.web import create_site
from crmflow.web.pages.flow_editor import switched_text
from tests.conftest import make_user

_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')

GOOD = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
owner: system
triggers:
  - type: manual
steps:
  # the first step says hello
  - key: hello
    actions:
      - type: history
        message: hi
      - type: history
        message: again
  - key: bye
    actions:
      - type: history
        message: bye
"""
# Line 12 names an action kind that does not exist.
BAD = GOOD.replace(
    "      - type: history\n        message: hi", "      - type: histry\n        message: hi"
)


@pytest.fixture
def ada(ctx: Context) -> Actor:
    return make_user(ctx, "ada", "admin")


@pytest.fixture
def andrei(ctx: Context) -> Actor:
    return make_user(ctx, "andrei", "member")


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx), follow_redirects=False) as client:
        yield client


def _sign_in(client: TestClient, username: str) -> str:
    token = _CSRF.search(client.get("/sign-in").text)
    assert token is not None
    form = {"username": username, "password": "password123", "csrf_token": token.group(1)}
    assert client.post("/sign-in", data={**form, "next": "/"}).status_code == 303
    found = _CSRF.search(client.get("/").text)
    assert found is not None
    return found.group(1)


def _validate(client: TestClient, token: str, text: str) -> dict[str, Any]:
    answer = client.post(
        "/flows/validate",
        content=text.encode(),
        headers={"X-CSRF-Token": token, "Content-Type": "text/plain; charset=utf-8"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert isinstance(body, dict)
    return body


def test_validate_answers_each_problem_at_its_line_as_the_cli_says_it(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    token = _sign_in(site, "ada")
    assert _validate(site, token, GOOD) == {
        "valid": True,
        "key": "welcome",
        "problems": [],
        "not_listed": 0,
        "warnings": [],
    }
    body = _validate(site, token, BAD)
    assert body["valid"] is False
    problems = body["problems"]
    assert isinstance(problems, list) and len(problems) == 1
    [problem] = problems
    assert problem["line"] == 12
    assert problem["column"] == 9  # `type:` after the dash, where the line's text begins
    assert problem["path"] == "steps[0].actions[0].type"
    assert "histry" in problem["message"]
    # The same words as the service's refusal (what `crmflow flows validate` prints).
    with pytest.raises(InvalidInputError) as refused:
        flows.check_flow_text(ctx, ada, BAD, source="editor")
    assert problem["message"] == refused.value.problems[0].message
    assert problem["hint"] == (refused.value.problems[0].hint or None)
    # Broken YAML: its line too.
    broken = _validate(site, token, "key: [unclosed\nname: x\n")
    assert broken["valid"] is False
    assert all(p["line"] for p in broken["problems"])


def test_validate_refuses_a_document_past_the_size_limit_in_words(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    token = _sign_in(site, "ada")
    limit = ctx.settings.max_document_chars
    huge = GOOD + "#" + "x" * limit + "\n"
    body = _validate(site, token, huge)
    assert body["valid"] is False
    [problem] = body["problems"]
    assert f"{limit:,}" in problem["message"] or str(limit) in problem["message"]


def test_validate_needs_the_csrf_token_and_a_session(site: TestClient, ada: Actor) -> None:
    assert site.post("/flows/validate", content=b"key: x").status_code in (303, 401, 403)
    _sign_in(site, "ada")
    refused = site.post("/flows/validate", content=b"key: x", headers={"X-CSRF-Token": "0" * 64})
    assert refused.status_code == 403


def test_an_admin_creates_a_flow_and_a_refused_one_comes_back_with_its_problems(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    token = _sign_in(site, "ada")
    page = site.get("/flows/new")
    assert page.status_code == 200
    assert '<script type="importmap">' in page.text
    refused = site.post("/flows/new", data={"csrf_token": token, "source": BAD})
    assert refused.status_code == 422
    assert "Line 12: steps[0].actions[0].type:" in refused.text
    assert "histry" in refused.text  # the text typed is kept, to fix
    with pytest.raises(NotFoundError):
        flows.get_flow(ctx, ada, "welcome")
    created = site.post("/flows/new", data={"csrf_token": token, "source": GOOD})
    assert created.status_code == 303
    assert created.headers["location"] == "/flows/welcome"
    assert flows.get_flow(ctx, ada, "welcome").status is FlowStatus.DRAFT
    again = site.post("/flows/new", data={"csrf_token": token, "source": GOOD})
    assert again.status_code == 409
    assert "already exists" in again.text


def test_a_member_may_not_open_the_editor_nor_save(
    site: TestClient, ctx: Context, ada: Actor, andrei: Actor
) -> None:
    flows.create_flow(ctx, ada, GOOD)
    token = _sign_in(site, "andrei")
    assert site.get("/flows/new").status_code == 403
    refused = site.post(
        "/flows/new", data={"csrf_token": token, "source": GOOD.replace("welcome", "w2")}
    )
    assert refused.status_code == 403
    assert "only admins may create flows" in refused.text
    assert site.get("/flows/welcome/edit").status_code == 403
    changed = GOOD.replace("name: Welcome", "name: Hijacked")
    saved = site.post("/flows/welcome/edit", data={"csrf_token": token, "source": changed})
    assert saved.status_code == 403
    assert flows.get_flow(ctx, ada, "welcome").name == "Welcome"
    # A private flow stays unknown to a non-member: 404, not 403.
    private = GOOD.replace("key: welcome", "key: secret") + "visibility: private\nmembers: [ada]\n"
    flows.create_flow(ctx, ada, private)
    assert site.get("/flows/secret/edit").status_code == 404


def test_a_started_flow_is_locked_until_paused_then_saves_a_new_version(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    flows.create_flow(ctx, ada, GOOD)
    flows.change_status(ctx, ada, "welcome", LifecycleAction.START)
    token = _sign_in(site, "ada")
    page = site.get("/flows/welcome/edit")
    assert page.status_code == 200
    assert "locked while it runs" in page.text
    assert 'href="/flows/welcome#lifecycle"' in page.text
    revision = flows.get_flow(ctx, ada, "welcome").revision
    changed = GOOD.replace("message: bye", "message: goodbye")
    form = {"csrf_token": token, "source": changed, "revision": str(revision)}
    locked = site.post("/flows/welcome/edit", data=form)
    assert locked.status_code == 409
    assert "pause it" in locked.text
    flows.change_status(ctx, ada, "welcome", LifecycleAction.PAUSE)
    stale = site.post("/flows/welcome/edit", data=form)  # the revision moved with the pause
    assert stale.status_code == 409
    form["revision"] = str(flows.get_flow(ctx, ada, "welcome").revision)
    saved = site.post("/flows/welcome/edit", data=form)
    assert saved.status_code == 303
    flow = flows.get_flow(ctx, ada, "welcome")
    assert flow.version == 2
    assert flow.document is not None
    assert flow.document["steps"][1]["actions"][0]["message"] == "goodbye"


def test_switching_an_action_and_a_step_off_keeps_the_text_and_saves(
    site: TestClient, ctx: Context, ada: Actor
) -> None:
    flows.create_flow(ctx, ada, GOOD)
    token = _sign_in(site, "ada")
    page = site.get("/flows/welcome/edit")
    assert 'aria-label="Action history #2 of step hello: active, switch off"' in page.text
    assert page.text.count('role="switch"') == 5  # two steps, three actions
    revision = str(flows.get_flow(ctx, ada, "welcome").revision)
    form = {"csrf_token": token, "step": "hello", "action": "1", "active": "false"}
    answer = site.post("/flows/welcome/switch", data={**form, "revision": revision})
    assert answer.status_code == 303
    flow = flows.get_flow(ctx, ada, "welcome")
    assert flow.document is not None
    assert flow.document["steps"][0]["actions"][1]["active"] is False
    assert "active" not in flow.document["steps"][0]["actions"][0]
    source = flows.get_flow_version(ctx, ada, "welcome", flow.version)["source"]
    assert "# the first step says hello" in source  # the comment is kept
    step_off = {"csrf_token": token, "step": "bye", "active": "false"}
    site.post("/flows/welcome/switch", data={**step_off, "revision": str(flow.revision)})
    flow = flows.get_flow(ctx, ada, "welcome")
    assert flow.document is not None
    assert flow.document["steps"][1]["active"] is False
    # A forged switch is refused in words, and changes nothing.
    forged = {"csrf_token": token, "step": "hello", "action": "first", "active": "false"}
    bad = site.post("/flows/welcome/switch", data={**forged, "revision": str(flow.revision)})
    assert bad.status_code == 422
    assert "is not a switch of this page" in bad.text
    assert flows.get_flow(ctx, ada, "welcome").revision == flow.revision
    # A running flow refuses the switch, saying to pause it.
    flows.change_status(ctx, ada, "welcome", LifecycleAction.START)
    on = {"csrf_token": token, "step": "bye", "active": "true"}
    refused = site.post("/flows/welcome/switch", data={**on, "revision": str(flow.revision)})
    assert refused.status_code == 303
    shown = site.get("/flows/welcome/edit")
    assert "was not switched" in shown.text and "pause it" in shown.text
    flow = flows.get_flow(ctx, ada, "welcome")
    assert flow.document is not None and flow.document["steps"][1]["active"] is False


def test_switched_text_refuses_a_step_or_action_not_in_the_flow() -> None:
    with pytest.raises(InvalidInputError, match="not in the flow"):
        switched_text(GOOD, "nowhere", None, False)
    with pytest.raises(InvalidInputError, match="not in the flow"):
        switched_text(GOOD, "bye", 5, False)
    assert "active: false" in switched_text(GOOD, "bye", 0, False)


def test_switched_text_keeps_a_json_document_json() -> None:
    document = {"key": "k", "steps": [{"key": "a", "actions": [{"type": "history"}]}]}
    out = switched_text(json.dumps(document), "a", 0, False)
    assert json.loads(out)["steps"][0]["actions"][0] == {"type": "history", "active": False}
    back_on = switched_text(out, "a", 0, True)
    assert json.loads(back_on) == document


def test_a_switch_changes_one_line_of_a_file_and_keeps_its_list_indentation() -> None:
    # examples/ indent their lists under a key by two spaces (`steps:\n  - key: ...`); ruamel's
    # default would rewrite every list line of the file.
    original = (Path(__file__).parents[2] / "examples" / "donor-thank-you.yaml").read_text()
    step = re.search(r"^  - key: (\S+)", original, re.MULTILINE)
    assert step is not None
    switched = switched_text(original, step.group(1), None, False)
    removed = [line for line in original.splitlines() if line not in switched.splitlines()]
    added = [line for line in switched.splitlines() if line not in original.splitlines()]
    assert removed == []
    assert [line.strip() for line in added] == ["active: false"]
