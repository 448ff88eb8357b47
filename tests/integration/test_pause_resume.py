"""Pause and resume as a user meets them (seed 000), on SQLite and PostgreSQL with a frozen clock:
what changes on a record while its flow is paused is not lost, and on resume the catch-up
policy of the version the flow resumes on decides; no step ever runs before it is due."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crmflow.engine.lifecycle import LifecycleAction as A
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, users
from crmflow.services.context import Actor, Context
from crmflow.worker import run_once
from tests.conftest import FrozenClock
from tests.integration.helpers import history

GALA = """\
schema_version: 1
key: gala
name: Gala reminders
record_type: event
owner: system
timezone: Europe/Paris
{extra}triggers:
  - type: manual
steps:
  - key: registered
    actions:
      - type: history
        message: "Registered"
  - key: remind
    timing: {{type: date, field: start, days: 1, direction: before}}
    actions:
      - type: history
        message: "See you tomorrow"
"""


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _enrollment(ctx: Context, record_id: int) -> dict[str, Any]:
    system = users.actor_by_username(ctx, "system")
    [view] = runs.record_status(ctx, system, record_id).enrollments
    return view.as_dict()


def _gala(ctx: Context, admin: Actor, start: str, extra: str = "") -> int:
    flows.create_flow(ctx, admin, GALA.format(extra=extra))
    flows.change_status(ctx, admin, "gala", A.START)
    rid = records.create_record(ctx, admin, "event", {"title": "Gala", "start": start}).id
    runs.start_record(ctx, admin, "gala", rid)
    return rid


def test_a_date_moved_while_paused_is_seen_at_the_resume_and_the_step_never_runs_early(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    rid = _gala(ctx, admin, "2026-12-03T18:00:00Z")
    assert _enrollment(ctx, rid)["due_at"] == "2026-12-02T18:00:00+00:00"
    flows.change_status(ctx, admin, "gala", A.PAUSE, confirm_inside=1)
    clock.advance(days=1)
    records.update_record(ctx, admin, rid, {"start": "2026-12-20T18:00:00Z"})
    run_once(ctx)  # a worker goes by while the flow is paused: the change is passed over
    assert _enrollment(ctx, rid)["due_at"] == "2026-12-02T18:00:00+00:00"  # frozen
    clock.advance(days=1)
    flows.change_status(ctx, admin, "gala", A.RESUME)
    # As in a flow that kept running: one day before the new start.
    assert _enrollment(ctx, rid)["due_at"] == "2026-12-19T18:00:00+00:00"
    note = flows.flow_history(ctx, admin, "gala")[-1].note
    assert "1 record(s) changed while frozen looked at again" in note
    clock.current = _at("2026-12-02T18:00:00+00:00")
    run_once(ctx)
    assert history(ctx, rid) == ["Registered"]  # not on the 2nd any more
    clock.current = _at("2026-12-19T17:59:59+00:00")
    run_once(ctx)
    assert history(ctx, rid) == ["Registered"]
    clock.current = _at("2026-12-19T18:00:00+00:00")
    run_once(ctx)
    assert history(ctx, rid) == ["Registered", "See you tomorrow"]
    assert _enrollment(ctx, rid)["status"] == "finished"


def test_a_date_change_not_yet_heard_when_the_timer_fires_does_not_make_the_step_early(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # The change was made while paused but no worker went by before the resume: the feed still
    # holds it, so the resume leaves it to the feed. Whichever the worker meets first at the old
    # due time, the feed's news or the timer (which looks at the record's date again before
    # running the step), the step waits for the new date.
    rid = _gala(ctx, admin, "2026-12-03T18:00:00Z")
    flows.change_status(ctx, admin, "gala", A.PAUSE, confirm_inside=1)
    records.update_record(ctx, admin, rid, {"start": "2026-12-20T18:00:00Z"})
    flows.change_status(ctx, admin, "gala", A.RESUME)  # no worker went by: the feed still has it
    assert _enrollment(ctx, rid)["due_at"] == "2026-12-02T18:00:00+00:00"
    clock.current = _at("2026-12-02T18:00:00+00:00")
    run_once(ctx)
    assert history(ctx, rid) == ["Registered"]
    assert _enrollment(ctx, rid)["due_at"] == "2026-12-19T18:00:00+00:00"


WAIT = """\
schema_version: 1
key: onboarding
name: Onboarding
record_type: contact
owner: system
goal: 'record.status == "inactive"'
{extra}triggers:
  - type: manual
steps:
  - key: until_client
    type: wait
    until: 'record.status == "client"'
    timeout: {{amount: 30, unit: days}}
  - key: thanks
    actions:
      - type: history
        message: "Welcome aboard"
"""


def test_a_condition_met_or_a_goal_reached_while_paused_takes_effect_at_the_resume(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    flows.create_flow(ctx, admin, WAIT.format(extra=""))
    flows.change_status(ctx, admin, "onboarding", A.START)
    ids = []
    for name in ("Claire", "Ana", "Ion"):
        rid = records.create_record(
            ctx, admin, "contact", {"first_name": name, "last_name": "M", "status": "lead"}
        ).id
        runs.start_record(ctx, admin, "onboarding", rid)
        ids.append(rid)
    claire, ana, ion = ids
    flows.change_status(ctx, admin, "onboarding", A.PAUSE, confirm_inside=3)
    clock.advance(days=1)
    records.update_record(ctx, admin, claire, {"status": "client"})
    records.update_record(ctx, admin, ana, {"status": "inactive"})
    run_once(ctx)
    assert history(ctx, claire) == []  # paused: nothing runs
    clock.advance(days=1)
    resumed_at = clock()
    flows.change_status(ctx, admin, "onboarding", A.RESUME)
    assert history(ctx, claire) == ["Welcome aboard"]
    assert _enrollment(ctx, claire)["status"] == "finished"
    left = _enrollment(ctx, ana)
    assert left["status"] == "left" and "goal" in left["end_reason"]
    assert _at(left["finished_at"]) == resumed_at
    still = _enrollment(ctx, ion)  # unchanged: still waiting
    assert (still["status"], still["step"]) == ("waiting", "until_client")


DAILY = """\
schema_version: 1
key: digest
name: Digest
record_type: contact
owner: system
timezone: Europe/Paris
catch_up: {{mode: {mode}}}
triggers:
  - type: manual
steps:
  - key: digest
    timing: {{type: at_time, time: "09:00"}}
    actions:
      - type: history
        message: "{message}"
"""


def test_resuming_after_an_edit_applies_the_new_versions_catch_up_policy(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # Monday 23 Nov 2026, 11:00 Paris: the digest is due on Tuesday at 09:00 Paris.
    flows.create_flow(ctx, admin, DAILY.format(mode="run_late", message="Digest"))
    flows.change_status(ctx, admin, "digest", A.START)
    rid = records.create_record(
        ctx, admin, "contact", {"first_name": "Claire", "last_name": "M"}
    ).id
    runs.start_record(ctx, admin, "digest", rid)
    assert _enrollment(ctx, rid)["due_at"] == "2026-11-24T08:00:00+00:00"
    flows.change_status(ctx, admin, "digest", A.PAUSE, confirm_inside=1)
    # The edit changes only the policy and the action: each record keeps its place.
    flows.update_flow(ctx, admin, "digest", DAILY.format(mode="skip_missed", message="Digest v2"))
    clock.advance(days=3)  # Thursday 11:00 Paris: three runs missed
    flows.change_status(ctx, admin, "digest", A.RESUME)
    view = _enrollment(ctx, rid)
    assert view["due_at"] == "2026-11-27T08:00:00+00:00"  # skipped to Friday 09:00 Paris
    assert (
        "skip_missed: 1 record(s) rescheduled" in flows.flow_history(ctx, admin, "digest")[-1].note
    )
    assert run_once(ctx) == 0
    assert history(ctx, rid) == []
    clock.current = _at("2026-11-27T08:00:00+00:00")
    run_once(ctx)
    assert history(ctx, rid) == ["Digest v2"]
