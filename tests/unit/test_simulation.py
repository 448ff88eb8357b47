"""`simulate`: every example flow runs in virtual time with its sample record, and the timelines
say what a user checks before going live."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.commands import CreateTask, EmailPayload, OutboxMessage, SetStatus
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.entry import PastEntry
from crmflow.engine.runtime import EnrollmentState, EnrollmentStatus
from crmflow.engine.simulation import Simulation, sample_record, simulate
from crmflow.engine.validation import parse_flow
from crmflow.errors import InvalidInputError
from tests.unit.test_examples import FLOW_FILES, example_context

START = datetime(2024, 5, 1, 7, 0, tzinfo=UTC)


def load(name: str) -> tuple[FlowDefinition, Path]:
    path = next(p for p in FLOW_FILES if p.stem == name)
    return parse_flow(path.read_text(), context=example_context(), source=str(path)), path


def run(
    path: Path,
    *,
    days: int = 60,
    decisions: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    **entry: Any,
) -> tuple[Simulation, ZoneInfo]:
    """The example at `path` simulated with its sample record (`values` changed), and `entry`:
    the flow's status and the record's past entries."""
    context = example_context()
    flow = parse_flow(path.read_text(), context=context, source=str(path))
    zone = ZoneInfo(flow.timezone or "Europe/Paris")
    record_type = context.record_types[flow.record_type]
    sample = json.loads(path.with_suffix(".record.json").read_text())
    sample["values"].update(values or {})
    record = sample_record(sample, record_type, now=START, zone=zone)
    sim = simulate(
        flow,
        record,
        start=START,
        until=START + timedelta(days=days),
        zone=zone,
        decisions=decisions,
        record_type=record_type,
        **entry,
    )
    return sim, zone


def final_state(sim: Simulation) -> EnrollmentState:
    """Where the record ended the simulation (it entered the flow)."""
    assert sim.state is not None, sim.stopped
    return sim.state


def email_payload(message: OutboxMessage) -> EmailPayload:
    """The payload of an email message (the test knows which messages are emails)."""
    assert isinstance(message.payload, EmailPayload)
    return message.payload


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.stem)
def test_every_example_simulates_over_60_days_without_failures(path: Path) -> None:
    sim, _ = run(path)
    assert sim.timeline, "the timeline is empty"
    assert sim.stopped
    failed = [e for e in sim.timeline if e.status == "failed"]
    assert not failed, failed
    assert all(START <= e.at <= sim.until for e in sim.timeline)
    assert [e.at for e in sim.timeline] == sorted(e.at for e in sim.timeline)
    json.dumps(sim.as_dict())  # the --json output


def test_event_preparation_happens_seven_days_before_the_start_at_nine() -> None:
    sim, zone = run(load("event-automations")[1])
    task = next(c for c in sim.commands if isinstance(c, CreateTask))
    # The sample's start is "today + 20 days + 18 hours": 18:00 local, 20 days after START.
    start_day = START.astimezone(zone).date() + timedelta(days=20)
    start = datetime.combine(start_day, time(18, 0), tzinfo=zone)
    assert sim.record.values["start"] == start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    prepared = next(e for e in sim.timeline if e.action == "create_task")
    when = prepared.at.astimezone(zone)
    assert when.date() == (start.astimezone(zone) - timedelta(days=7)).date()
    assert (when.hour, when.minute) == (9, 0)
    assert task.assignee.ref == "alice"  # the record's owner
    assert "Donor evening" in task.title
    email = next(c for c in sim.commands if isinstance(c, OutboxMessage))
    assert email_payload(email).to == ("events@example.org",)
    closed = next(c for c in sim.commands if isinstance(c, SetStatus))
    assert closed.status == "done"
    assert sim.record.values["status"] == "done"
    assert final_state(sim).status is EnrollmentStatus.FINISHED


def test_recruitment_goes_to_the_manager_then_management() -> None:
    sim, _ = run(load("recruitment-approval")[1])
    approvals = [c for c in sim.commands if isinstance(c, CreateTask) and c.buttons]
    assert [(a.step_key, a.assignee.kind, a.assignee.ref) for a in approvals] == [
        ("manager-approval", "user", "maria"),
        ("management-approval", "group", "management"),
    ]
    assert sim.decisions == (("manager-approval", "validate"), ("management-approval", "validate"))
    assert sim.record.values["status"] == "approved"


def test_a_refusal_by_the_manager_ends_the_recruitment() -> None:
    sim, _ = run(load("recruitment-approval")[1], decisions={"manager-approval": "refuse"})
    steps = [e.step for e in sim.timeline if e.action is None]
    assert "management-approval" not in steps
    assert "refused" in steps
    assert sim.record.values["status"] == "refused"
    assert final_state(sim).status is EnrollmentStatus.FINISHED


def test_an_unknown_decision_is_refused_before_anything_runs() -> None:
    _flow, path = load("recruitment-approval")
    with pytest.raises(InvalidInputError) as caught:
        run(path, decisions={"manager-approval": "maybe"})
    assert "has no button 'maybe'" in str(caught.value)
    with pytest.raises(InvalidInputError, match="not an approval step"):
        run(path, decisions={"approved": "validate"})


def test_the_donor_sequence_thanks_calls_and_writes_again_after_90_days() -> None:
    sim, _zone = run(load("donor-thank-you")[1], days=120)
    emails = [c for c in sim.commands if isinstance(c, OutboxMessage)]
    assert [email_payload(e).subject for e in emails] == [
        "Merci Claire !",
        "Claire, nos projets avancent grâce à vous",
    ]
    assert email_payload(emails[1]).template == "donor-news"
    assert (emails[1].not_before - emails[0].not_before).days == 90
    call = next(c for c in sim.commands if isinstance(c, CreateTask))
    assert call.assignee.ref == "maria"
    assert final_state(sim).emails_sent == 2

    short, _ = run(load("donor-thank-you")[1], days=60)
    assert "after the end of the simulation" in short.stopped
    assert len([c for c in short.commands if isinstance(c, OutboxMessage)]) == 1


def test_the_sales_order_goes_to_late_when_it_is_not_packed() -> None:
    sim, _zone = run(load("sales-orders")[1])
    late = next(e for e in sim.timeline if e.step == "late" and e.action == "notify")
    assert "still not packed" in late.text
    # 5 business days from Wednesday 1 May 2024 (no calendar: Monday to Friday, no holidays):
    # Thu 2, Fri 3, Mon 6, Tue 7, Wed 8.
    assert (late.at - START).days == 7


def test_a_record_the_entry_condition_keeps_out_would_not_enter() -> None:
    sim, _ = run(load("donor-thank-you")[1], values={"last_donation_amount": 0})

    assert sim.stopped == (
        "would not enter: entry condition false: "
        'record.last_donation_amount > 0 && record.email != ""'
    )
    assert sim.state is None and sim.commands == ()
    [line] = sim.timeline
    assert (line.at, line.status) == (START, "not entered")
    assert sim.as_dict()["status"] == "not entered"


def test_the_re_entry_policy_judges_the_given_past_entries() -> None:
    _flow, path = load("donor-thank-you")  # once per 30 days
    recently = [PastEntry("finished", None, START - timedelta(days=10))]
    long_ago = [PastEntry("finished", None, START - timedelta(days=40))]

    kept_out, _ = run(path, past=recently)
    let_in, _ = run(path, past=long_ago)

    assert kept_out.stopped == (
        "would not enter: re-entry: once per 30 days, last entered 2024-04-21 "
        "(may enter again from 2024-05-21 07:00 UTC)"
    )
    assert final_state(let_in).emails_sent == 1


@pytest.mark.parametrize("status", ["paused", "draining", "archived", "draft"])
def test_a_flow_that_admits_nobody_lets_no_record_in(status: str) -> None:
    sim, _ = run(load("recruitment-approval")[1], flow_status=status)
    assert sim.stopped.startswith(f"would not enter: flow {'is a ' if status == 'draft' else ''}")
    assert sim.state is None
