"""Decisions from an approval email, against a real SMTP server (aiosmtpd on 127.0.0.1): the
recruitment approval (examples/recruitment-approval.yaml) emails the requester's manager, then
each member of management, one link per button. A link read from the received message shows a
confirmation page (a GET decides nothing), and its POST decides: the run moves. The same link
again, another button of a decided step, a changed link and an expired one (frozen clock) are
refused with a page saying which, status 4xx, and nothing changes."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.services import users
from crmflow.services.context import Context
from crmflow.store.schema import approval_link_uses, record_history, step_runs, tasks
from crmflow.worker import run_once
from tests.acceptance.test_examples_end_to_end import (
    _create_and_start,
    _create_sample_record,
    _setup_like_the_demo,
)
from tests.conftest import FrozenClock
from tests.integration.test_delivery_smtp import Received, SmtpServer, with_smtp

FLOW = "recruitment-approval"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _links(received: Received) -> dict[str, str]:
    """The message's links by button label: {"Validate": "/a/TOKEN", ...}."""
    body = received.message.get_body(preferencelist=("plain",))
    assert body is not None
    text = str(body.get_content())
    found = dict(re.findall(r"^(\w+): https?://[^/\s]+(/a/[\w.-]+)", text, re.MULTILINE))
    assert set(found) == {"Validate", "Refuse"}, text
    return found


def test_a_decision_from_the_email_link_and_the_links_that_are_refused(
    ctx: Context, clock: FrozenClock, client: TestClient, smtp: SmtpServer
) -> None:
    system = _setup_like_the_demo(ctx)
    users.create_user(
        ctx, system, username="dana", role="member", display_name="Dana", email="dana@example.org"
    )
    users.add_group_member(ctx, system, "management", "dana")
    users.create_user(ctx, system, username="eve", role="member", display_name="Eve")  # no email
    users.add_group_member(ctx, system, "management", "eve")
    headers = {"Authorization": f"Bearer {users.create_token(ctx, system, 'alice').token}"}
    type_key, record_id = _create_sample_record(ctx, system, FLOW)
    _create_and_start(ctx, system, FLOW)
    dispatcher = Dispatcher(with_smtp(ctx, smtp.url))

    def deliver() -> None:
        run_once(ctx, now=ctx.now())
        dispatcher.run_once()

    def run() -> dict[str, object]:
        response = client.get(f"/api/records/{type_key}/{record_id}/runs", headers=headers)
        assert response.status_code == 200, response.text
        (only,) = response.json()["flows"]
        return dict(only)

    deliver()
    (to_maria,) = smtp.received
    assert set(to_maria.rcpt_tos) == {"maria@example.org"}
    links = _links(to_maria)

    page = client.get(links["Validate"])
    assert page.status_code == 200, page.text
    assert "Validate" in page.text and f"record {record_id}" in page.text
    assert "maria" in page.text and "manager-approval" in page.text
    assert run()["step"] == "manager-approval"  # opening the link decides nothing
    refuse_page = client.get(links["Refuse"])
    assert refuse_page.status_code == 200 and "required" in refuse_page.text

    decided = client.post(links["Validate"], data={"comment": "fine by me"})
    assert decided.status_code == 200, decided.text
    assert "Recorded" in decided.text
    assert run()["step"] == "management-approval"
    (manager_run,) = [r for r in run()["step_runs"] if r["step"] == "manager-approval"]  # type: ignore[attr-defined]
    assert "maria pressed Validate (fine by me)" in manager_run["reason"]

    replayed = client.post(links["Validate"])
    assert replayed.status_code == 409
    said = html.unescape(replayed.text)
    assert "already used" in said and "maria pressed 'validate' with it" in said
    other_button = client.post(links["Refuse"], data={"comment": "changed my mind"})
    assert other_button.status_code == 409
    assert "already decided" in other_button.text
    token = links["Validate"].removeprefix("/a/")
    forged = client.post("/a/" + token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert forged.status_code == 400 and "not valid" in forged.text
    assert client.get("/a/not-a-token").status_code == 400
    assert run()["step"] == "management-approval"

    deliver()
    management = {r.rcpt_tos[0]: _links(r) for r in smtp.received[1:]}
    assert set(management) == {"alice@example.org", "dana@example.org"}  # each member
    with ctx.engine.connect() as conn:  # whoever could not be emailed is named in the history
        lines = conn.execute(
            sa.select(record_history.c.message).where(record_history.c.record_id == record_id)
        ).scalars()
        assert any("no approval email to eve (no email)" in line for line in lines)
    dana = management["dana@example.org"]
    no_comment = client.post(dana["Refuse"])  # the button needs a comment: refused, not used
    assert no_comment.status_code == 409 and "needs a comment" in no_comment.text
    assert run()["step"] == "management-approval"

    clock.advance(timedelta(days=ctx.settings.approval_link_days, minutes=1))
    expired = client.post(dana["Validate"])
    assert expired.status_code == 409 and "expired" in expired.text
    assert client.get(dana["Refuse"]).status_code == 409
    assert run()["step"] == "management-approval"


def test_the_same_link_pressed_twice_at_once_decides_once(
    ctx: Context, client: TestClient, smtp: SmtpServer, backend: str
) -> None:
    """Two requests with one link at the same moment (a double click, a mail scanner): one
    decides, the other is refused, on PostgreSQL where they truly run together."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    system = _setup_like_the_demo(ctx)
    _create_sample_record(ctx, system, FLOW)
    _create_and_start(ctx, system, FLOW)
    run_once(ctx, now=ctx.now())
    Dispatcher(with_smtp(ctx, smtp.url)).run_once()
    (to_maria,) = smtp.received
    link = _links(to_maria)["Validate"]
    start = threading.Barrier(2)

    def press() -> int:
        start.wait()
        return int(client.post(link).status_code)

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(lambda _: press(), range(2)))
    assert codes == [200, 409], codes
    with ctx.engine.connect() as conn:
        uses = conn.execute(sa.select(sa.func.count()).select_from(approval_link_uses)).scalar()
        steps = conn.execute(
            sa.select(step_runs.c.step_key).where(step_runs.c.step_key == "management-approval")
        ).all()
    assert uses == 1 and len(steps) == 1  # decided once: the next level asked once


def test_a_reassigned_approval_emails_its_new_decider_and_the_old_links_stop_working(
    ctx: Context, client: TestClient, smtp: SmtpServer
) -> None:
    system = _setup_like_the_demo(ctx)
    users.create_user(ctx, system, username="dana", role="member", email="dana@example.org")
    headers = {"Authorization": f"Bearer {users.create_token(ctx, system, 'alice').token}"}
    type_key, record_id = _create_sample_record(ctx, system, FLOW)
    _create_and_start(ctx, system, FLOW)
    dispatcher = Dispatcher(with_smtp(ctx, smtp.url))
    run_once(ctx, now=ctx.now())
    dispatcher.run_once()
    (to_maria,) = smtp.received
    marias = _links(to_maria)
    with ctx.engine.connect() as conn:
        task_id = conn.scalars(
            sa.select(tasks.c.id).where(
                tasks.c.record_id == record_id, tasks.c.step_key == "manager-approval"
            )
        ).one()

    moved = client.post(f"/api/tasks/{task_id}/reassign", json={"user": "dana"}, headers=headers)
    assert moved.status_code == 200, moved.text
    dispatcher.run_once()
    (to_dana,) = smtp.received[1:]
    assert set(to_dana.rcpt_tos) == {"dana@example.org"}
    danas = _links(to_dana)
    assert set(danas.values()).isdisjoint(marias.values())  # links of her own

    for old in (client.get(marias["Validate"]), client.post(marias["Validate"])):
        assert old.status_code == 409
        said = html.unescape(old.text)
        assert "this link was sent to maria" in said and "given to 'dana'" in said, said
    steps = client.get(f"/api/records/{type_key}/{record_id}/runs", headers=headers).json()
    assert steps["flows"][0]["step"] == "manager-approval"  # nothing changed
    decided = client.post(danas["Validate"])
    assert decided.status_code == 200, decided.text
    steps = client.get(f"/api/records/{type_key}/{record_id}/runs", headers=headers).json()
    assert steps["flows"][0]["step"] == "management-approval"
