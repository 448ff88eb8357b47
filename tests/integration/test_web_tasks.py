"""The task pages and the inbox through FastAPI's TestClient (fast), on SQLite and PostgreSQL:
whose tasks a list shows and its filters (refused ones said in plain words), paging, a task's
page with its approval buttons for whoever may decide only, decisions and their refusals, the
other task actions, user text escaped; the inbox's pages, read marks (htmx and plain forms)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import pytest
from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments, flows, records, tasks, users
from crmflow.services.context import Actor, Context
from crmflow.services.demo import DEMO_LOGINS
from crmflow.store.tasks import NewNotification, insert_notifications
from crmflow.web import create_site
from crmflow.web.pages import tasks as task_pages
from crmflow.worker import run_once
from tests.acceptance.test_examples_end_to_end import (
    _create_and_start,
    _create_sample_record,
    _setup_like_the_demo,
)

FLOW = "recruitment-approval"
PASSWORDS = {login.username: login.password for login in DEMO_LOGINS}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A signed-in user's TestClient, with the CSRF token of their session."""

    def __init__(self, ctx: Context, username: str) -> None:
        self.client = TestClient(create_site(ctx), follow_redirects=False)
        page = self.client.get("/sign-in")
        token = _CSRF.search(page.text)
        assert token is not None
        form = {
            "username": username,
            "password": PASSWORDS[username],
            "csrf_token": token.group(1),
            "next": "/",
        }
        assert self.client.post("/sign-in", data=form).status_code == 303
        found = _CSRF.search(self.client.get("/").text)
        assert found is not None
        self.csrf = found.group(1)

    def get(self, path: str, **params: str) -> str:
        answer = self.client.get(path, params=params or None)
        assert answer.status_code == 200, answer.text
        return unescape(answer.text)

    def post(self, path: str, **form: str) -> str:
        """Post a form; the flash message the next page shows."""
        answer = self.client.post(path, data={**form, "csrf_token": self.csrf})
        assert answer.status_code == 303, answer.text
        page = unescape(self.client.get(answer.headers["location"]).text)
        found = re.search(r'<p class="flash flash-(\w+)"[^>]*>(.*?)</p>', page, re.S)
        assert found is not None, page
        return f"{found.group(1)}: {found.group(2)}"


@pytest.fixture
def hiring(ctx: Context) -> Iterator[tuple[int, int]]:
    """The demo's people (bogdan in management too), one recruitment request (andrei asks,
    maria is his manager) waiting for maria's approval: (its task id, its record id)."""
    system = _setup_like_the_demo(ctx)
    users.add_group_member(ctx, system, "management", "bogdan")
    _, record_id = _create_sample_record(ctx, system, FLOW)
    _create_and_start(ctx, system, FLOW)
    run_once(ctx, now=ctx.now())
    alice = users.actor_by_username(ctx, "alice")
    (task,) = tasks.list_page(ctx, alice, flow=FLOW).items
    yield task.id, record_id


def _text(page: str) -> str:
    """The page's text without its tags, on one line."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def _actor(ctx: Context, name: str) -> Actor:
    return users.actor_by_username(ctx, name)


def test_an_approval_is_decided_on_its_page_by_whoever_is_asked_only(
    ctx: Context, hiring: tuple[int, int]
) -> None:
    task_id, record_id = hiring
    maria, andrei = Browser(ctx, "maria"), Browser(ctx, "andrei")
    listed = maria.get("/tasks")
    assert f'href="/tasks/{task_id}"' in listed and "Hire Ioana Popescu" in listed

    # andrei (the requester, a member) sees the task but no button, and who decides.
    theirs = andrei.get(f"/tasks/{task_id}")
    assert 'name="button"' not in theirs
    assert "may not decide their own request" in theirs
    refused = andrei.post(f"/tasks/{task_id}/decide", button="validate")
    assert refused.startswith("error: ") and "may not decide their own request" in refused

    page = maria.get(f"/tasks/{task_id}")
    assert 'value="validate">Validate</button>' in page and 'value="refuse"' in page
    bare = maria.post(f"/tasks/{task_id}/decide", button="refuse")
    assert bare.startswith("error: ") and "needs a comment" in bare
    assert maria.post(f"/tasks/{task_id}/decide", button="validate", comment="good <b>fit</b>") == (
        "ok: Decision recorded: Validate."
    )
    again = maria.post(f"/tasks/{task_id}/decide", button="validate")
    assert again.startswith("error: decision refused")
    assert maria.post(f"/tasks/{task_id}/decide", button="hire-twice").startswith(
        "error: No button 'hire-twice'"
    )
    decided = maria.client.get(f"/tasks/{task_id}").text
    assert 'name="button"' not in decided
    assert "maria pressed Validate (good &lt;b&gt;fit&lt;/b&gt;)" in decided

    # The management step: bogdan (a member of management) decides; maria sees who may.
    alice = _actor(ctx, "alice")
    (second,) = tasks.list_page(ctx, alice, flow=FLOW, state="open").items
    assert second.step == "management-approval"
    assert 'name="button"' not in maria.get(f"/tasks/{second.id}")
    assert "a member of group 'management'" in maria.get(f"/tasks/{second.id}")
    bogdan = Browser(ctx, "bogdan")
    assert 'value="validate"' in bogdan.get(f"/tasks/{second.id}")
    assert bogdan.post(f"/tasks/{second.id}/decide", button="validate") == (
        "ok: Decision recorded: Validate."
    )
    assert records.get_record(ctx, record_id).data["status"] == "approved"


def test_task_actions_say_who_may_and_escape_what_people_write(
    ctx: Context, hiring: tuple[int, int]
) -> None:
    task_id, _ = hiring
    maria, bogdan = Browser(ctx, "maria"), Browser(ctx, "bogdan")
    assert "Only maria, their manager or an admin may act" in bogdan.get(f"/tasks/{task_id}")
    denied = bogdan.post(f"/tasks/{task_id}/comments", text="mine now")
    assert denied.startswith("error: only maria") and "'bogdan' may not" in denied
    assert maria.post(f"/tasks/{task_id}/comments", text="<script>x()</script>") == (
        "ok: Comment added."
    )
    raw = maria.client.get(f"/tasks/{task_id}").text
    assert "<script>x()</script>" not in raw and "&lt;script&gt;x()&lt;/script&gt;" in raw
    empty = maria.post(f"/tasks/{task_id}/comments", text="   ")
    assert empty.startswith("error: text: is empty")
    assert maria.post(f"/tasks/{task_id}/complete").startswith("error: task")  # an approval
    nobody = maria.post(f"/tasks/{task_id}/reassign", to_user="nobody")
    assert nobody == "error: no user 'nobody' (see `crmflow users list`)"
    both = maria.post(f"/tasks/{task_id}/reassign")
    assert both.startswith("error: user: give either a user or a group")
    assert maria.post(f"/tasks/{task_id}/reassign", to_user="alice", comment="on leave") == (
        "ok: Task given to alice."
    )
    history = _text(maria.get(f"/tasks/{task_id}"))
    assert "reassigned: from maria to alice: on leave" in history
    assert maria.client.get("/tasks/999999").status_code == 404


def test_the_list_filters_pages_and_refuses_bad_filters_in_plain_words(
    ctx: Context, hiring: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id, _ = hiring
    system = users.ensure_system_user(ctx)
    for _ in range(2):
        _create_sample_record(ctx, system, FLOW)
    run_once(ctx, now=ctx.now())
    alice, maria, andrei = Browser(ctx, "alice"), Browser(ctx, "maria"), Browser(ctx, "andrei")
    ids = re.findall(r'href="/tasks/(\d+)"', alice.get("/tasks", flow=FLOW))
    assert len(ids) == 3 and str(task_id) in ids
    assert "Everyone's tasks" in alice.get("/tasks")
    assert 'id="no-tasks"' in andrei.get("/tasks")  # none is his
    assert re.findall(r'href="/tasks/(\d+)"', alice.get("/tasks", state="done")) == []
    assert len(re.findall(r'href="/tasks/\d+"', maria.get("/tasks", user="maria"))) == 3
    assert re.findall(r'href="/tasks/(\d+)"', alice.get("/tasks", step="no-such-step")) == []
    chosen = alice.get("/tasks", flow=FLOW)
    assert '<option value="recruitment-approval" selected>' in chosen
    assert '<option value="management-approval">' in chosen  # the step filter's suggestions

    bad = alice.client.get("/tasks", params={"state": "sleeping"})
    assert bad.status_code == 422 and "unknown state &#39;sleeping&#39;" in bad.text
    nobody = alice.client.get("/tasks", params={"user": "nobody"})
    assert nobody.status_code == 422 and "no user &#39;nobody&#39;" in nobody.text
    others = andrei.client.get("/tasks", params={"user": "maria"})
    assert others.status_code == 403 and "not &#39;maria&#39;&#39;s" in others.text
    assert alice.client.get("/tasks", params={"after": "x"}).status_code == 422

    monkeypatch.setattr(task_pages, "PAGE_SIZE", 2)
    first = alice.get("/tasks", flow=FLOW)
    shown = re.findall(r'href="/tasks/(\d+)"', first)
    assert len(shown) == 2
    next_url = re.search(r'href="(/tasks\?[^"]*after=\d+)" rel="next"', first)
    assert next_url is not None and "flow=recruitment-approval" in next_url.group(1)
    second = alice.get(unescape(next_url.group(1)))
    rest = re.findall(r'href="/tasks/(\d+)"', second)
    assert sorted(shown + rest) == sorted(ids) and 'rel="next"' not in second


def test_the_inbox_pages_and_marks_read_one_by_one_or_all(ctx: Context) -> None:
    system = _setup_like_the_demo(ctx)
    _, rid = _create_sample_record(ctx, system, FLOW)
    with ctx.engine.begin() as conn:
        insert_notifications(
            conn,
            [
                NewNotification("user", "maria", f"Note {n} <i>hi</i>", None, rid, ctx.now())
                for n in range(3)
            ]
            + [NewNotification("user", "andrei", "For andrei only", None, rid, ctx.now())],
        )
    maria, andrei = Browser(ctx, "maria"), Browser(ctx, "andrei")
    page = maria.client.get("/inbox").text
    assert "Note 2 &lt;i&gt;hi&lt;/i&gt;" in page and "For andrei only" not in page
    assert page.index("Note 2") < page.index("Note 0")  # newest first
    assert f'href="/records/{rid}"' in page
    ids = [int(i) for i in re.findall(r'id="notification-(\d+)"', page)]
    assert len(ids) == 3

    fragment = maria.client.post(
        f"/inbox/{ids[0]}/read", headers={"HX-Request": "true", "X-CSRF-Token": maria.csrf}
    )
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and "is-read" in fragment.text
    assert "Mark read" not in fragment.text
    unread = maria.get("/inbox", unread="1")
    assert len(re.findall(r'id="notification-\d+"', unread)) == 2
    assert f'id="notification-{ids[0]}"' not in unread
    assert (
        andrei.client.post(f"/inbox/{ids[1]}/read", data={"csrf_token": andrei.csrf}).status_code
        == 404
    )
    assert '<span id="inbox-unread" hx-swap-oob="true">(2)</span>' in fragment.text
    assert maria.post("/inbox/read-all") == "ok: 2 notifications marked read."
    assert 'id="no-notifications"' in maria.get("/inbox", unread="1")
    assert maria.client.post(f"/inbox/{ids[1]}/read").status_code == 403  # no CSRF token


PRIVATE = """\
schema_version: 1
key: hiring
name: Secret hiring
record_type: candidate
visibility: private
members: [maria]
triggers: [{type: manual}]
steps:
  - key: interview
    actions:
      - type: create_task
        title: "Interview {{ record.last_name }}"
        assignee: {type: user, user: maria}
"""


def test_a_private_flows_tasks_stay_hidden_from_who_is_no_member(ctx: Context) -> None:
    system = _setup_like_the_demo(ctx)
    _, record_id = _create_sample_record(ctx, system, FLOW)
    alice = _actor(ctx, "alice")
    flows.create_flow(ctx, alice, PRIVATE)
    flows.change_status(ctx, alice, "hiring", LifecycleAction.START)
    enrollments.start_record(ctx, alice, "hiring", record_id)
    run_once(ctx, now=ctx.now())
    (task,) = tasks.list_page(ctx, alice, flow="hiring").items
    maria, bogdan = Browser(ctx, "maria"), Browser(ctx, "bogdan")
    assert "Interview Popescu" in maria.get("/tasks")
    assert "Secret hiring" in maria.get("/tasks")  # the flow drop-down
    listed = bogdan.get("/tasks")
    assert "Interview Popescu" not in listed and "Secret hiring" not in listed
    assert bogdan.client.get(f"/tasks/{task.id}").status_code == 404
    assert "Interview Popescu" not in bogdan.get("/tasks", flow="hiring")
    answer = bogdan.client.post(
        f"/tasks/{task.id}/comments", data={"text": "hi", "csrf_token": bogdan.csrf}
    )
    assert answer.status_code == 303  # back to the task, which says no more than a 404
    assert bogdan.client.get(answer.headers["location"]).status_code == 404

    # maria does hers: start, then done; the page says so and offers neither any more.
    assert maria.post(f"/tasks/{task.id}/start") == "ok: Task started."
    assert 'id="task-state">In progress<' in maria.get(f"/tasks/{task.id}")
    assert maria.post(f"/tasks/{task.id}/start").startswith("error: task")
    assert maria.post(f"/tasks/{task.id}/complete", comment="hired") == "ok: Task done."
    done = maria.get(f"/tasks/{task.id}")
    assert 'id="task-state">Done<' in done and "completed: hired" in _text(done)
    assert f'action="/tasks/{task.id}/complete"' not in done
    assert "Interview Popescu" in maria.get("/tasks", state="done")
