"""Task lists and the notifications inbox, as users see them over the API (issue 11): whose tasks
each one lists (own, group's, team's, everyone's for an admin), the `late` state and the
filters, what each may do to a task (start, complete, comment, reassign) and its history, an
approval refused to `complete`, and the inbox read per user for a group's notification."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.services.users import add_group_member, create_group, update_user
from tests.acceptance.conftest import auth_headers
from tests.conftest import FrozenClock, make_user

FLOW = """\
schema_version: 1
key: onboarding
name: Onboarding
record_type: contact
triggers: [{type: manual}]
steps:
  - key: prepare
    actions:
      - type: create_task
        title: "Call {{ record.first_name }}"
        assignee: {type: user, user: andrei}
        due_days: 2
      - type: create_task
        title: "Send the welcome pack to {{ record.first_name }}"
        assignee: {type: group, group: sales}
      - type: create_task
        title: "File {{ record.first_name }}'s papers"
        assignee: {type: user, user: ion}
      - type: notify
        groups: [sales]
        message: "{{ record.first_name }} joined"
  - key: ask
    type: approval
    responsibility: {type: user, user: maria}
    buttons:
      - {key: ok, label: OK}
"""


def _setup(ctx: Context, admin: Actor) -> dict[str, dict[str, str]]:
    """Maria manages Andrei; Andrei and Ion are in `sales`; Ana's run made the tasks. The
    headers of each user's calls."""
    make_user(ctx, "maria", "manager")
    make_user(ctx, "andrei", "member")
    make_user(ctx, "ion", "member")
    make_user(ctx, "eva", "member")
    update_user(ctx, admin, "andrei", manager="maria")
    create_group(ctx, admin, "sales")
    add_group_member(ctx, admin, "sales", "andrei")
    add_group_member(ctx, admin, "sales", "ion")
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "onboarding", LifecycleAction.START)
    data = {"first_name": "Ana", "last_name": "Pop", "email": "ana@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    assert runs.start_record(ctx, admin, "onboarding", rid).step == "ask"
    names = ("maria", "andrei", "ion", "eva", admin.username)
    return {name: auth_headers(ctx, admin, name) for name in names}


def _titles(client: TestClient, headers: dict[str, str], query: str = "") -> list[str]:
    answer = client.get(f"/api/tasks{query}", headers=headers)
    assert answer.status_code == 200, answer.text
    return sorted(t["title"] for t in answer.json()["items"])


def _task(client: TestClient, headers: dict[str, str], title: str) -> dict[str, Any]:
    items = client.get("/api/tasks", headers=headers).json()["items"]
    return next(t for t in items if t["title"] == title)


CALL, PACK, PAPERS, DECIDE = "Call Ana", "Send the welcome pack to Ana", "File Ana's papers", ""


def test_each_user_lists_their_own_their_groups_and_their_teams_tasks(
    ctx: Context, admin: Actor, client: TestClient, clock: FrozenClock
) -> None:
    h = _setup(ctx, admin)
    decide = "Decide: ask"
    assert _titles(client, h["andrei"]) == [CALL, PACK]
    assert _titles(client, h["ion"]) == sorted([PAPERS, PACK])
    assert _titles(client, h["eva"]) == []
    # Maria's own approval, and her team's (Andrei's) tasks; not Ion's, who is not in her team.
    assert _titles(client, h["maria"]) == [CALL, decide]
    assert _titles(client, h["maria"], "?user=andrei") == [CALL, PACK]
    refused = client.get("/api/tasks?user=ion", headers=h["maria"])
    assert refused.status_code == 403 and "your team's" in refused.json()["message"]
    assert _titles(client, h["system"]) == sorted([CALL, PAPERS, decide, PACK])

    # Filters: state, flow, step, and `late` (still to do, past the due date).
    assert _titles(client, h["system"], "?step=ask") == [decide]
    assert _titles(client, h["system"], "?flow=other") == []
    assert _titles(client, h["system"], "?state=late") == []
    clock.advance(timedelta(days=3))
    assert _titles(client, h["andrei"], "?state=late") == [CALL]
    assert _task(client, h["andrei"], CALL)["late"] is True
    bad = client.get("/api/tasks?state=lost", headers=h["andrei"])
    assert bad.status_code == 422
    nobody = client.get("/api/tasks?user=zoe", headers=h["system"])
    assert nobody.status_code == 422 and "no user 'zoe'" in nobody.text

    # Paged by id, like every list.
    first = client.get("/api/tasks?limit=2", headers=h["system"]).json()
    assert len(first["items"]) == 2 and first["next_after"] == first["items"][-1]["id"]
    rest = client.get(f"/api/tasks?limit=2&after={first['next_after']}", headers=h["system"])
    assert len(rest.json()["items"]) == 2 and rest.json()["next_after"] is None


def test_start_comment_complete_and_who_may(
    ctx: Context, admin: Actor, client: TestClient, clock: FrozenClock
) -> None:
    h = _setup(ctx, admin)
    call = _task(client, h["andrei"], CALL)["id"]

    refused = client.post(f"/api/tasks/{call}/start", headers=h["ion"])
    assert refused.status_code == 403
    message = refused.json()["message"]
    assert "andrei (the assignee), their manager maria or an admin" in message

    started = client.post(f"/api/tasks/{call}/start", headers=h["andrei"])
    assert started.status_code == 200 and started.json()["status"] == "in_progress"
    clock.advance(timedelta(minutes=5))
    said = client.post(
        f"/api/tasks/{call}/comments", json={"text": "no answer"}, headers=h["maria"]
    )
    assert said.status_code == 200
    done = client.post(
        f"/api/tasks/{call}/complete", json={"comment": "she called back"}, headers=h["andrei"]
    )
    assert done.status_code == 200 and done.json()["status"] == "done"
    again = client.post(f"/api/tasks/{call}/complete", headers=h["andrei"])
    assert again.status_code == 409 and "is done" in again.json()["message"]

    shown = client.get(f"/api/tasks/{call}", headers=h["ion"]).json()
    lines = [(e["by"], e["action"], e["detail"]) for e in shown["history"]]
    assert lines == [
        (None, "created", "given to andrei"),
        ("andrei", "started", ""),
        ("maria", "commented", "no answer"),
        ("andrei", "completed", "she called back"),
    ]
    assert shown["history"][2]["at"] > shown["history"][1]["at"]

    # A group's task: any member acts on it.
    pack = _task(client, h["ion"], PACK)["id"]
    assert client.post(f"/api/tasks/{pack}/complete", headers=h["ion"]).status_code == 200

    # An approval's task is decided, not completed.
    decide = _task(client, h["maria"], "Decide: ask")
    refused = client.post(f"/api/tasks/{decide['id']}/complete", headers=h["maria"])
    assert refused.status_code == 409
    assert f"crmflow runs decide {decide['enrollment_id']} ask BUTTON" in refused.json()["message"]


def test_reassign_to_a_user_or_a_group_notifies_them(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    h = _setup(ctx, admin)
    papers = _task(client, h["ion"], PAPERS)["id"]
    nobody = client.post(f"/api/tasks/{papers}/reassign", json={"user": "zoe"}, headers=h["ion"])
    assert nobody.status_code == 404 and "no user 'zoe'" in nobody.json()["message"]
    moved = client.post(
        f"/api/tasks/{papers}/reassign",
        json={"user": "eva", "comment": "on leave"},
        headers=h["ion"],
    )
    assert moved.status_code == 200 and moved.json()["assignee"] == "eva"
    assert _titles(client, h["eva"]) == [PAPERS]
    assert PAPERS not in _titles(client, h["ion"])
    history = client.get(f"/api/tasks/{papers}", headers=h["eva"]).json()["history"]
    assert (history[-1]["by"], history[-1]["action"], history[-1]["detail"]) == (
        "ion",
        "reassigned",
        "from ion to eva: on leave",
    )
    inbox = client.get("/api/notifications", headers=h["eva"]).json()["items"]
    assert [n["message"] for n in inbox] == [
        f'Task "File Ana\'s papers" (#{papers}, flow onboarding) was given to you by ion'
    ]
    # Ion gave it away: he may no longer act on it.
    assert client.post(f"/api/tasks/{papers}/start", headers=h["ion"]).status_code == 403
    to_group = client.post(
        f"/api/tasks/{papers}/reassign", json={"group": "sales"}, headers=h["eva"]
    )
    assert to_group.json()["assignee"] == "group:sales"
    assert PAPERS in _titles(client, h["andrei"])


def test_the_inbox_is_read_per_user_for_a_groups_notification(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    h = _setup(ctx, admin)
    inbox = client.get("/api/notifications?unread=true", headers=h["andrei"]).json()
    [joined] = [n for n in inbox["items"] if n["message"] == "Ana joined"]
    assert (joined["to"], joined["read"]) == ("group:sales", False)
    assert client.get("/api/notifications", headers=h["eva"]).json()["items"] == []

    read = client.post(f"/api/notifications/{joined['id']}/read", headers=h["andrei"])
    assert read.status_code == 200 and read.json()["read"] is True
    unread = client.get("/api/notifications?unread=true", headers=h["andrei"]).json()["items"]
    assert len(unread) == 2 and joined["id"] not in [n["id"] for n in unread]  # the new tasks
    # Still unread for Ion, the other member of the group.
    ion = client.get("/api/notifications?unread=true", headers=h["ion"]).json()["items"]
    assert joined["id"] in [n["id"] for n in ion]
    assert (
        client.post(f"/api/notifications/{joined['id']}/read", headers=h["eva"]).status_code == 404
    )

    done = client.post("/api/notifications/read-all", headers=h["ion"])
    assert done.json() == {"marked_read": 3}  # "Ana joined" and the two new tasks
    assert client.get("/api/notifications?unread=true", headers=h["ion"]).json()["items"] == []
    assert client.get("/api/notifications", headers=h["ion"]).json()["items"][0]["read"] is True


def test_a_new_task_and_a_decision_needed_are_in_the_inbox_of_whoever_is_given_them(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    h = _setup(ctx, admin)

    def inbox(name: str) -> list[tuple[str, str]]:
        items = client.get("/api/notifications", headers=h[name]).json()["items"]
        return sorted((n["to"], n["message"]) for n in items)

    [rid] = {
        n["record_id"] for n in client.get("/api/notifications", headers=h["maria"]).json()["items"]
    }
    where = f"(flow onboarding, record {rid}, step 'prepare')"
    assert inbox("andrei") == [
        ("andrei", f"New task: 'Call Ana' {where}, due 2026-11-25 10:00 UTC"),
        ("group:sales", "Ana joined"),
        ("group:sales", f"New task: 'Send the welcome pack to Ana' {where}"),
    ]
    assert inbox("ion") == [
        ("group:sales", "Ana joined"),
        ("group:sales", f"New task: 'Send the welcome pack to Ana' {where}"),
        ("ion", f'New task: "File Ana\'s papers" {where}'),
    ]
    assert inbox("maria") == [
        ("maria", f"Decision needed: 'Decide: ask' (flow onboarding, record {rid}, step 'ask'): OK")
    ]
    assert inbox("eva") == []


PRIVATE = """\
schema_version: 1
key: hiring
name: Hiring
record_type: contact
visibility: private
members: [maria, andrei]
triggers: [{type: manual}]
steps:
  - key: interview
    actions:
      - type: create_task
        title: "Interview {{ record.first_name }}"
        assignee: {type: user, user: andrei}
"""


def test_a_private_flows_tasks_are_for_its_members_and_go_to_none_else(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    h = _setup(ctx, admin)
    flows.create_flow(ctx, admin, PRIVATE)
    flows.change_status(ctx, admin, "hiring", LifecycleAction.START)
    data = {"first_name": "Ion", "last_name": "Rus", "email": "ion@example.org"}
    runs.start_record(ctx, admin, "hiring", records.create_record(ctx, admin, "contact", data).id)
    task = _task(client, h["andrei"], "Interview Ion")

    # Eva is not a member: the task is not hers to see, in a list or by its id.
    assert "Interview Ion" in _titles(client, h["system"])
    assert client.get(f"/api/tasks/{task['id']}", headers=h["eva"]).status_code == 404
    refused = client.post(
        f"/api/tasks/{task['id']}/reassign", json={"user": "eva"}, headers=h["andrei"]
    )
    assert refused.status_code == 409
    message = refused.json()["message"]
    assert "'eva' is not a member of the private flow 'hiring'" in message
    assert "crmflow flows add-member hiring eva" in message
    assert _task(client, h["andrei"], "Interview Ion")["assignee"] == "andrei"
    moved = client.post(
        f"/api/tasks/{task['id']}/reassign", json={"user": "maria"}, headers=h["andrei"]
    )
    assert moved.status_code == 200 and moved.json()["assignee"] == "maria"


def test_a_private_flows_notifications_leave_the_inbox_of_who_is_no_longer_a_member(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    h = _setup(ctx, admin)
    flows.create_flow(ctx, admin, PRIVATE)
    flows.change_status(ctx, admin, "hiring", LifecycleAction.START)
    data = {"first_name": "Ion", "last_name": "Rus", "email": "ion@example.org"}
    runs.start_record(ctx, admin, "hiring", records.create_record(ctx, admin, "contact", data).id)
    task = _task(client, h["andrei"], "Interview Ion")
    client.post(f"/api/tasks/{task['id']}/reassign", json={"user": "maria"}, headers=h["andrei"])

    def hiring(name: str) -> list[dict[str, Any]]:
        items = client.get("/api/notifications", headers=h[name]).json()["items"]
        return [n for n in items if "hiring" in n["message"]]

    [given] = hiring("maria")
    assert given["message"].startswith("Task 'Interview Ion'")
    flows.remove_member(ctx, admin, "hiring", "maria")
    assert hiring("maria") == []  # neither in the list nor by its id
    gone = client.post(f"/api/notifications/{given['id']}/read", headers=h["maria"])
    assert gone.status_code == 404
    assert client.post("/api/notifications/read-all", headers=h["maria"]).json() == {
        "marked_read": 1  # the onboarding flow's decision, not hiring's
    }
    flows.add_member(ctx, admin, "hiring", "maria")  # a member again: hers again, unread
    assert [(n["id"], n["read"]) for n in hiring("maria")] == [(given["id"], False)]


WAITING = """\
schema_version: 1
key: intake
name: Intake
record_type: contact
triggers: [{type: manual}]
steps:
  - key: call
    actions:
      - type: create_task
        title: "Call {{ record.first_name }} back"
        assignee: {type: user, user: andrei}
        wait: true
  - key: thanks
    actions:
      - type: history
        message: "called back"
"""


def test_a_step_waits_for_its_task_and_goes_on_when_it_is_done(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    h = _setup(ctx, admin)
    flows.create_flow(ctx, admin, WAITING)
    flows.change_status(ctx, admin, "intake", LifecycleAction.START)
    data = {"first_name": "Dan", "last_name": "Ene", "email": "dan@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    run = runs.start_record(ctx, admin, "intake", rid)
    assert (run.status, run.step) == ("waiting", "call")
    assert run.waiting_for == "waiting for the task 'Call Dan back' to be done"
    task = _task(client, h["andrei"], "Call Dan back")["id"]

    # While its flow is paused the record could not go on: completing is refused, nothing moves.
    flows.change_status(ctx, admin, "intake", LifecycleAction.PAUSE, confirm_inside=1)
    paused = client.post(f"/api/tasks/{task}/complete", headers=h["andrei"])
    assert paused.status_code == 409 and "flow 'intake' is paused" in paused.json()["message"]
    assert _task(client, h["andrei"], "Call Dan back")["status"] == "open"
    flows.change_status(ctx, admin, "intake", LifecycleAction.RESUME)

    done = client.post(f"/api/tasks/{task}/complete", headers=h["andrei"])
    assert done.status_code == 200, done.text
    shown = client.get(f"/api/records/contact/{rid}/runs", headers=h["andrei"]).json()
    [intake] = [f for f in shown["flows"] if f["flow"] == "intake"]
    assert (intake["status"], intake["end_reason"]) == ("finished", "went through the last step")
    [call] = [r for r in intake["step_runs"] if r["step"] == "call"]
    assert call["status"] == "done"
    assert call["reason"].endswith("; task 'Call Dan back' done by andrei")
    assert [a["type"] for a in call["actions"]] == ["create_task"]
    assert any(h["message"] == "called back" for h in shown["history"])


def test_a_started_approval_is_done_when_it_is_decided(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    h = _setup(ctx, admin)
    decide = _task(client, h["maria"], "Decide: ask")
    started = client.post(f"/api/tasks/{decide['id']}/start", headers=h["maria"])
    assert started.json()["status"] == "in_progress"
    pressed = client.post(
        f"/api/runs/{decide['enrollment_id']}/decisions",
        json={"step": "ask", "button": "ok"},
        headers=h["maria"],
    )
    assert pressed.status_code == 200, pressed.text
    shown = client.get(f"/api/tasks/{decide['id']}", headers=h["maria"]).json()
    assert (shown["status"], shown["late"]) == ("done", False)
