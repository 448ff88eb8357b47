"""The inbox links a task's notifications to the task's page (the task to do, given to someone
else), others to their record; the fragments a page polls on its own do not keep its session
alive. TestClient, SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from crmflow.services import tasks, users
from crmflow.services.context import Context
from crmflow.store.tasks import NewNotification, insert_notifications
from crmflow.testing import FrozenClock
from crmflow.worker import run_once
from tests.acceptance.test_examples_end_to_end import (
    _create_and_start,
    _create_sample_record,
    _setup_like_the_demo,
)
from tests.integration.test_web_tasks import FLOW, Browser

POLL = {"HX-Request": "true", "X-Crmflow-Poll": "1"}


@pytest.fixture
def hiring(ctx: Context) -> tuple[int, int]:
    """The demo's people and one recruitment request waiting for maria's approval: (its task
    id, its record id)."""
    system = _setup_like_the_demo(ctx)
    _, record_id = _create_sample_record(ctx, system, FLOW)
    _create_and_start(ctx, system, FLOW)
    run_once(ctx, now=ctx.now())
    alice = users.actor_by_username(ctx, "alice")
    (task,) = tasks.list_page(ctx, alice, flow=FLOW).items
    return task.id, record_id


def _links(page: str) -> list[str]:
    listed = page.rsplit('id="notifications"', maxsplit=1)[-1]
    return re.findall(r'<a href="(/(?:tasks|records)/\d+)">', listed)


def test_a_task_notification_links_to_the_task_and_others_to_their_record(
    ctx: Context, hiring: tuple[int, int]
) -> None:
    task_id, record_id = hiring
    maria = Browser(ctx, "maria")
    assert _links(maria.get("/inbox")) == [f"/tasks/{task_id}"]  # the approval she is asked
    task_page = maria.client.get(f"/tasks/{task_id}")
    assert task_page.status_code == 200

    alice = users.actor_by_username(ctx, "alice")
    tasks.reassign(ctx, alice, task_id, user="bogdan", note="maria is away")
    with ctx.engine.begin() as conn:  # a notification about a record and no task
        insert_notifications(
            conn, [NewNotification("user", "bogdan", "A word", None, record_id, ctx.now())]
        )
    bogdan = Browser(ctx, "bogdan")
    assert _links(bogdan.get("/inbox")) == [f"/records/{record_id}", f"/tasks/{task_id}"]
    api_token = users.create_token(ctx, alice, "bogdan").token
    listed = bogdan.client.get(
        "/api/notifications", headers={"Authorization": f"Bearer {api_token}"}
    ).json()["items"]
    assert [n["task_id"] for n in listed] == [None, task_id]


def test_polling_fragments_do_not_keep_a_session_alive(
    ctx: Context, hiring: tuple[int, int], clock: FrozenClock
) -> None:
    idle = timedelta(minutes=ctx.settings.web_session_idle_minutes)
    left_open, used = Browser(ctx, "maria"), Browser(ctx, "alice")
    counts = f"/flows/{FLOW}/counts"
    clock.advance(idle - timedelta(minutes=5))
    polled = left_open.client.get(counts, headers=POLL)
    assert polled.status_code == 200  # still signed in
    assert used.client.get("/inbox").status_code == 200  # a person's request: used again
    clock.advance(timedelta(minutes=10))  # idle + 5 min since maria's last own request
    expired = left_open.client.get(counts, headers=POLL)
    assert expired.status_code == 401  # the session ended: the page says so (web/errors.py)
    assert expired.headers["X-Crmflow-Sign-In"].startswith("/sign-in")
    assert left_open.client.get("/inbox").status_code == 303  # signed out for good
    assert used.client.get(counts, headers=POLL).status_code == 200
