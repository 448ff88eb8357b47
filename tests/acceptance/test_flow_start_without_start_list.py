"""Starting a flow with no start list from its page, with a number typed anyway: it starts at
once and says how many records are inside (none), never a background start of records that do
not exist."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crmflow.engine.definition import FlowStatus
from crmflow.services import flows, jobs
from crmflow.services.context import Actor, Context
from crmflow.web import create_site
from tests.conftest import make_user

_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
MANUAL = """\
schema_version: 1
key: by-hand
name: By hand
record_type: contact
owner: system
triggers:
  - type: manual
steps:
  - key: hello
    actions:
      - type: history
        message: hi
"""


@pytest.fixture
def alice(ctx: Context) -> Actor:
    return make_user(ctx, "alice", "admin")


@pytest.fixture
def site(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_site(ctx)) as client:
        yield client


def _sign_in(site: TestClient, username: str) -> str:
    found = _CSRF.search(site.get("/sign-in").text)
    assert found is not None
    form = {"username": username, "password": "password123", "csrf_token": found.group(1)}
    site.post("/sign-in", data={**form, "next": "/"})
    token = _CSRF.search(site.get("/flows").text)
    assert token is not None
    return token.group(1)


def test_a_flow_without_a_start_list_starts_at_once_with_nobody_inside(
    site: TestClient, ctx: Context, alice: Actor
) -> None:
    flows.create_flow(ctx, alice, MANUAL)
    token = _sign_in(site, "alice")
    form = {"csrf_token": token, "action": "start", "confirm": "10000"}
    page = site.post("/flows/by-hand/lifecycle", data=form)
    assert page.status_code == 200
    assert str(page.url).endswith("/flows/by-hand")
    assert "(0 record(s) inside)" in page.text
    assert "10000" not in page.text and "10,000" not in page.text
    assert "in the background" not in page.text
    view = flows.get_flow(ctx, alice, "by-hand")
    assert (view.status, view.inside) == (FlowStatus.ACTIVE, 0)
    assert jobs.flow_start_of(ctx, "by-hand") is None
    fragment = site.get("/flows/by-hand/start-progress").text
    assert "record(s) entered" not in fragment


def test_a_start_job_of_a_flow_without_a_start_list_reports_what_entered(
    site: TestClient, ctx: Context, alice: Actor
) -> None:
    flows.create_flow(ctx, alice, MANUAL)
    job, new = jobs.submit_flow_start(ctx, alice, "by-hand", 12345, None)
    assert new and job.total == 0
    assert jobs.JobRunner(ctx, name="test-runner").run_once() == 1
    done = jobs.get_job(ctx, alice, job.id)
    assert (done.state, done.done, done.total, done.result) == ("done", 0, 0, {"started": 0})
    _sign_in(site, "alice")
    fragment = site.get("/flows/by-hand/start-progress").text
    assert "Started by alice: 0 record(s) entered By hand" in fragment
    assert "12345" not in fragment
    assert flows.get_flow(ctx, alice, "by-hand").status is FlowStatus.ACTIVE
