"""Every seed flow of `examples/` runs end to end through the real system (store, triggers,
worker) on its sample record, with a frozen clock and approvals decided through the HTTP API,
on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.engine.simulation import sample_record
from crmflow.services import (
    enrollments,
    flows,
    queries,
    record_types,
    records,
    templates,
    users,
)
from crmflow.services.context import Actor, Context
from crmflow.services.demo import DEMO_GROUPS, DEMO_LOGINS, examples_dir
from crmflow.store.schema import enrollments as enrollments_table
from crmflow.store.schema import outbox, trigger_schedules
from crmflow.worker import run_once
from tests.conftest import FrozenClock

EXAMPLES = examples_dir()
ENDED = ("finished", "left", "cancelled")
HORIZON = timedelta(days=120)  # donor-thank-you waits 90 days after its call step


@dataclass(frozen=True)
class Case:
    flow: str  # the flow under test; its sample record is examples/<flow>.record.json
    steps: dict[str, list[str]]  # flow key -> steps that must have a "done" step run
    flows: tuple[str, ...] = ()  # every flow to create and start (default: just `flow`)
    emails: int = 0  # email messages the outbox must hold at the end
    start_at: datetime | None = None  # the clock when the test begins
    deciders: dict[str, str] = field(default_factory=dict)  # approval step -> username
    after_start: dict[str, Any] = field(default_factory=dict)  # a user's change once started
    # step -> the change a user makes to the record while it waits at that step
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def all_flows(self) -> tuple[str, ...]:
        return self.flows or (self.flow,)


CASES = [
    # The emails counted include the late notice to the controller of a task left undone.
    Case("donor-thank-you", {"donor-thank-you": ["thank", "call", "wait-three-months"]}, emails=3),
    Case("event-automations", {"event-automations": ["prepare", "close"]}, emails=2),
    Case(
        "property-sale-follow-up",
        {
            "property-sale-follow-up": ["paperwork", "keys-handover"],
            "property-after-sale": ["satisfaction-call", "referral"],
        },
        flows=("property-after-sale", "property-sale-follow-up"),
        after_start={"status": "sold"},  # the sale: status_changed to sold enters the chain
        emails=3,  # the late notices of its three tasks, left undone, to the controller
    ),
    Case(
        "recruitment-approval",
        {"recruitment-approval": ["manager-approval", "management-approval", "approved"]},
        emails=2,  # the approval emails: maria, then alice (management)
        deciders={"manager-approval": "maria", "management-approval": "alice"},
    ),
    Case(
        "sales-orders",
        {"sales-orders": ["supply", "pack", "deliver", "delivered"]},
        emails=1,
        changes={"pack": {"status": "packing"}, "delivered": {"status": "delivered"}},
    ),
    Case(
        "service-orders",
        {"service-orders": ["diagnosis", "repair", "testing", "done"]},
        after_start={"status": "diagnosis"},  # created before the flow: enters on the status
    ),
    Case(
        "six-month-promotion",
        {"six-month-promotion": ["promotion"]},
        emails=1,
        start_at=datetime(2026, 11, 23, 7, 0, tzinfo=UTC),  # 08:00 in Rome, before 09:30
    ),
]


def _setup_like_the_demo(ctx: Context) -> Actor:
    """The demo's users, groups, record types, saved queries and email templates, without its
    records."""
    system = users.ensure_system_user(ctx)
    for login in DEMO_LOGINS:
        users.create_user(
            ctx,
            system,
            username=login.username,
            role=login.role,
            display_name=login.display_name,
            email=f"{login.username}@example.org",
            password=login.password,
        )
    for group, members in DEMO_GROUPS.items():
        users.create_group(ctx, system, group, f"The {group} team")
        for member in members:
            users.add_group_member(ctx, system, group, member)
    alice = users.actor_by_username(ctx, "alice")
    for path in sorted((EXAMPLES / "types").glob("*.yaml")):
        record_types.load_record_type_file(ctx, alice, path)
    for path in sorted((EXAMPLES / "queries").glob("*.yaml")):
        queries.load_query_file(ctx, alice, path)
    for path in sorted((EXAMPLES / "templates").glob("*.yaml")):
        templates.load_template_file(ctx, alice, path)
    return system


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


def _create_sample_record(ctx: Context, system: Actor, flow_key: str) -> tuple[str, int]:
    data = orjson.loads((EXAMPLES / f"{flow_key}.record.json").read_bytes())
    flow_text = (EXAMPLES / f"{flow_key}.yaml").read_text(encoding="utf-8")
    timezone = re.search(r"^timezone: (\S+)$", flow_text, re.MULTILINE)
    zone = ZoneInfo(timezone.group(1)) if timezone else ctx.zone
    rtype = record_types.get_record_type(ctx, data["record_type"])
    snapshot = sample_record(data, rtype, now=ctx.now(), zone=zone)
    values = {k: _plain(v) for k, v in snapshot.values.items() if v is not None}
    record = records.create_record(ctx, system, rtype.key, values, owner=data["owner"])
    return rtype.key, record.id


def _create_and_start(ctx: Context, system: Actor, flow_key: str) -> None:
    path = EXAMPLES / f"{flow_key}.yaml"
    flows.create_flow(ctx, system, path.read_text(encoding="utf-8"), source=str(path))
    count = flows.start_list_count(ctx, system, flow_key)
    flows.change_status(ctx, system, flow_key, LifecycleAction.START, confirm_count=count)


def _next_due(ctx: Context, record_id: int) -> datetime | None:
    with ctx.engine.connect() as conn:
        due = conn.execute(
            sa.select(sa.func.min(enrollments_table.c.due_at)).where(
                enrollments_table.c.record_id == record_id,
                enrollments_table.c.status.not_in(ENDED),
            )
        ).scalar()
        schedule = conn.execute(sa.select(sa.func.min(trigger_schedules.c.next_at))).scalar()
    times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in (due, schedule) if t]
    return min(times) if times else None


def drive(
    ctx: Context,
    clock: FrozenClock,
    client: TestClient,
    case: Case,
    each_round: Callable[[], object] | None = None,
) -> list[dict[str, Any]]:
    """Run the case's flows on its sample record until they all ended (or HORIZON passed),
    deciding approvals and making the case's changes as people would; `each_round` runs after
    each round of the worker (the dispatcher, in the delivery test). The record's runs."""
    if case.start_at is not None:
        clock.current = case.start_at
    system = _setup_like_the_demo(ctx)
    tokens = {
        name: {"Authorization": f"Bearer {users.create_token(ctx, system, name).token}"}
        for name in ("alice", "maria")
    }
    maria = users.actor_by_username(ctx, "maria")
    type_key, record_id = _create_sample_record(ctx, system, case.flow)
    for key in case.all_flows:
        _create_and_start(ctx, system, key)
    if case.after_start:
        records.update_record(ctx, maria, record_id, case.after_start)
    runs_url = f"/api/records/{type_key}/{record_id}/runs"

    def runs() -> list[dict[str, Any]]:
        response = client.get(runs_url, headers=tokens["maria"])
        assert response.status_code == 200, response.text
        return list(response.json()["flows"])

    run_once(ctx, now=clock())
    flow_yaml = (EXAMPLES / f"{case.flow}.yaml").read_text(encoding="utf-8")
    if not runs() and "type: manual" in flow_yaml:
        enrollments.start_record(ctx, system, case.flow, record_id)

    end = clock() + HORIZON
    decisions: list[tuple[str, Any]] = []
    while clock() < end:
        run_once(ctx, now=clock())
        if each_round is not None:
            each_round()
        current = runs()
        waiting = [e for e in current if e["status"] not in ENDED and e["buttons"]]
        if waiting:
            enrollment = waiting[0]
            step = enrollment["step"]
            decider = case.deciders.get(step, "alice")
            response = client.post(
                f"/api/runs/{enrollment['id']}/decisions",
                json={"step": step, "button": enrollment["buttons"][0]},
                headers=tokens[decider],
            )
            assert response.status_code == 200, response.text
            decisions.append((step, enrollment["buttons"][0]))
            continue
        changed = False
        for enrollment in current:
            change = case.changes.get(enrollment["step"] or "")
            if (
                enrollment["status"] not in ENDED
                and change
                and (enrollment["step"], 0) not in decisions
            ):
                clock.advance(hours=1)  # a person makes the change a bit later
                records.update_record(ctx, maria, record_id, change)
                decisions.append((enrollment["step"], 0))
                changed = True
        if changed:
            continue
        entered = {e["flow"] for e in current}
        if entered >= set(case.steps) and all(e["status"] in ENDED for e in current):
            break
        due = _next_due(ctx, record_id)
        step_min = clock() + timedelta(minutes=1)
        clock.current = max(due, step_min) if due else clock() + timedelta(days=1)
    return runs()


def test_seed_flow_runs_end_to_end(
    ctx: Context, clock: FrozenClock, client: TestClient, case: Case
) -> None:
    current = drive(ctx, clock, client, case)
    by_flow = {e["flow"]: e for e in current}
    summary = [
        (
            e["flow"],
            e["status"],
            e["end_reason"],
            [(r["step"], r["status"], r["reason"]) for r in e["step_runs"]],
        )
        for e in current
    ]
    assert set(by_flow) == set(case.steps), summary
    for key, expected_steps in case.steps.items():
        enrollment = by_flow[key]
        assert enrollment["status"] == "finished", (key, enrollment["end_reason"], summary)
        done = [r["step"] for r in enrollment["step_runs"] if r["status"] == "done"]
        for step in expected_steps:
            assert step in done, (key, step, summary)
        failed = [r for r in enrollment["step_runs"] if r["status"] == "failed"]
        assert not failed, (key, failed)
    with ctx.engine.connect() as conn:
        emails = conn.execute(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.kind == "email")
        ).scalar_one()
    assert emails == case.emails, summary


@pytest.fixture(params=CASES, ids=[c.flow for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    assert isinstance(request.param, Case)
    return request.param


def test_every_seed_flow_has_a_case() -> None:
    covered = {key for c in CASES for key in c.all_flows}
    assert covered == {p.stem for p in Path(EXAMPLES).glob("*.yaml")}
