"""Pause and resume as a user meets them (seed 000), on SQLite and PostgreSQL with a frozen clock:
what changes on a record while its flow is paused is not lost, and on resume the catch-up
policy of the version the flow resumes on decides; no step ever runs before it is due."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction as A
from crmflow.services import enrollments as runs
from crmflow.services import flows, queries, records, run_views, triggers, users
from crmflow.services.context import Actor, Context
from crmflow.services.triggers import change_feed, record_changes
from crmflow.store.schema import enrollments, trigger_schedules
from crmflow.store.schema import flows as flows_table
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
    [view] = run_views.record_status(ctx, system, record_id).enrollments
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


# -- timed triggers while paused or draining, and on resume -------------------------------------


NOON = """\
schema_version: 1
key: noon
name: Noon digest
record_type: contact
owner: system
timezone: Europe/Paris
reentry: {{mode: always}}
catch_up: {{mode: {mode}}}
triggers:
  - {{type: schedule, time: "12:00", query: clients}}
steps:
  - key: hello
    actions: [{{type: history, message: "noon"}}]
"""


def _clients(ctx: Context, admin: Actor, *names: str) -> list[int]:
    queries.save_query(
        ctx,
        admin,
        name="clients",
        record_type="contact",
        filter={"all": [{"field": "status", "op": "=", "value": "client"}]},
    )
    return [
        records.create_record(
            ctx, admin, "contact", {"first_name": n, "last_name": "M", "status": "client"}
        ).id
        for n in names
    ]


def _next_at(ctx: Context, key: str) -> datetime:
    with ctx.engine.connect() as conn:
        value: datetime = conn.execute(
            sa.select(trigger_schedules.c.next_at)
            .join(flows_table, flows_table.c.id == trigger_schedules.c.flow_id)
            .where(flows_table.c.key == key)
        ).scalar_one()
    return value


def _entered_at(ctx: Context, record_id: int) -> list[datetime]:
    with ctx.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(enrollments.c.entered_at).where(enrollments.c.record_id == record_id)
            ).scalars()
        )


def _noon_paused_over_noon(ctx: Context, admin: Actor, clock: FrozenClock, mode: str) -> int:
    """The noon flow (12:00 Paris = 11:00 UTC) paused from 10:00 to 15:00 Paris on 24 Nov, a
    worker going by at 12:30: returns the client's id."""
    [claire] = _clients(ctx, admin, "Claire")
    clock.current = _at("2026-11-24T08:00:00+00:00")  # 09:00 Paris
    flows.create_flow(ctx, admin, NOON.format(mode=mode))
    flows.change_status(ctx, admin, "noon", A.START)
    run_once(ctx)  # the worker schedules the trigger: today at 12:00 Paris
    assert _next_at(ctx, "noon") == _at("2026-11-24T11:00:00+00:00")
    clock.current = _at("2026-11-24T09:00:00+00:00")
    flows.change_status(ctx, admin, "noon", A.PAUSE)
    clock.current = _at("2026-11-24T11:30:00+00:00")
    run_once(ctx)
    # Nobody entered, Claire is told why, and the run is over: the next one is tomorrow.
    assert _entered_at(ctx, claire) == []
    [decision] = triggers.entry_decisions_for(ctx, admin, flow_key="noon")
    assert (decision.record_id, decision.trigger) == (claire, "schedule")
    assert decision.reason.startswith("flow paused")
    assert _next_at(ctx, "noon") == _at("2026-11-25T11:00:00+00:00")
    clock.current = _at("2026-11-24T14:00:00+00:00")  # 15:00 Paris: paused for 5 hours
    flows.change_status(ctx, admin, "noon", A.RESUME)
    return claire


def test_a_paused_flow_s_schedule_enters_nobody_and_skip_missed_skips_the_run_at_resume(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    claire = _noon_paused_over_noon(ctx, admin, clock, "skip_missed")
    assert _next_at(ctx, "noon") == _at("2026-11-25T11:00:00+00:00")
    assert (
        "1 timed trigger(s) missed a run, skipped"
        in flows.flow_history(ctx, admin, "noon")[-1].note
    )
    run_once(ctx)
    assert _entered_at(ctx, claire) == []  # the missed noon run does not fire late
    clock.current = _at("2026-11-25T11:00:00+00:00")
    run_once(ctx)
    assert _entered_at(ctx, claire) == [clock()]


def test_run_late_runs_the_schedule_missed_while_paused_once_at_the_resume(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    claire = _noon_paused_over_noon(ctx, admin, clock, "run_late")
    resumed_at = clock()
    assert _next_at(ctx, "noon") == resumed_at
    run_once(ctx)
    assert _entered_at(ctx, claire) == [resumed_at]
    assert _next_at(ctx, "noon") == _at("2026-11-25T11:00:00+00:00")
    run_once(ctx)
    assert _entered_at(ctx, claire) == [resumed_at]  # once


def test_shift_delays_runs_the_missed_schedule_as_late_as_the_pause_was_long(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    claire = _noon_paused_over_noon(ctx, admin, clock, "shift_delays")
    shifted = _at("2026-11-24T16:00:00+00:00")  # 12:00 Paris + 5 hours
    assert _next_at(ctx, "noon") == shifted
    clock.current = shifted - timedelta(seconds=1)
    run_once(ctx)
    assert _entered_at(ctx, claire) == []
    clock.current = shifted
    run_once(ctx)
    assert _entered_at(ctx, claire) == [shifted]


def test_a_draining_flow_s_timed_triggers_say_flow_draining_per_record(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    claire, marc = _clients(ctx, admin, "Claire", "Marc")
    clock.current = _at("2026-11-24T08:00:00+00:00")
    flows.create_flow(ctx, admin, NOON.format(mode="run_late"))
    flows.change_status(ctx, admin, "noon", A.START)
    run_once(ctx)
    flows.change_status(ctx, admin, "noon", A.DRAIN)
    clock.current = _at("2026-11-24T11:00:00+00:00")
    run_once(ctx)
    assert _entered_at(ctx, claire) == [] and _entered_at(ctx, marc) == []
    found = triggers.entry_decisions_for(ctx, admin, flow_key="noon")
    assert sorted(d.record_id for d in found) == [claire, marc]
    assert {d.reason.split(":")[0] for d in found} == {"flow draining"}
    assert _next_at(ctx, "noon") == _at("2026-11-25T11:00:00+00:00")


BIRTHDAY = """\
schema_version: 1
key: birthday
name: Birthday
record_type: contact
owner: system
timezone: Europe/Paris
catch_up: {{mode: {mode}}}
triggers:
  - {{type: date_reached, field: birth_date, time: "09:00", ignore_year: true}}
steps:
  - key: wish
    actions: [{{type: history, message: "Happy birthday"}}]
"""


@pytest.mark.parametrize("mode", ["run_late", "skip_missed"])
def test_a_birthday_reached_while_paused_is_said_then_caught_up_by_the_policy(
    ctx: Context, admin: Actor, clock: FrozenClock, mode: str
) -> None:
    flows.create_flow(ctx, admin, BIRTHDAY.format(mode=mode))
    flows.change_status(ctx, admin, "birthday", A.START)
    ana = records.create_record(
        ctx, admin, "contact", {"first_name": "Ana", "last_name": "M", "birth_date": "1990-11-25"}
    ).id
    run_once(ctx)
    flows.change_status(ctx, admin, "birthday", A.PAUSE)
    clock.current = _at("2026-11-25T08:00:00+00:00")  # 09:00 Paris on Ana's birthday
    run_once(ctx)
    [decision] = triggers.entry_decisions_for(ctx, admin, record_id=ana)
    assert (decision.trigger, decision.reason.split(":")[0]) == ("date_reached", "flow paused")
    clock.current = _at("2026-11-26T10:00:00+00:00")
    flows.change_status(ctx, admin, "birthday", A.RESUME)
    run_once(ctx)
    if mode == "run_late":
        assert history(ctx, ana) == ["Happy birthday"]  # late, at the resume
        assert _entered_at(ctx, ana) == [clock()]
    else:
        assert history(ctx, ana) == []  # skipped: the day passed while paused
    assert len(triggers.entry_decisions_for(ctx, admin, record_id=ana)) == 1


# -- which changes a frozen flow did not hear ---------------------------------------------------
#
# The change feed reads the record changes a little after they are written and skips frozen
# flows. What the flow did not hear is what the feed passed between the freeze and the resume:
# told once at the resume, never twice, including a change made just before the freeze that
# the feed had not read yet.


CALLS = """\
schema_version: 1
key: calls
name: Calls
record_type: contact
owner: system
triggers:
  - type: manual
steps:
  - key: first_email
    type: wait
    fields: [email]
    timeout: {amount: 30, unit: days}
  - key: second_email
    type: wait
    fields: [email]
    timeout: {amount: 30, unit: days}
  - key: done
    actions:
      - type: history
        message: "Two emails"
"""


def _waiting_in_calls(ctx: Context, admin: Actor, data: dict[str, Any] | None = None) -> int:
    flows.create_flow(ctx, admin, CALLS)
    flows.change_status(ctx, admin, "calls", A.START)
    rid = records.create_record(
        ctx, admin, "contact", {"first_name": "Claire", "last_name": "M", **(data or {})}
    ).id
    runs.start_record(ctx, admin, "calls", rid)
    assert _enrollment(ctx, rid)["step"] == "first_email"
    return rid


def _paused_feed_position(ctx: Context, key: str) -> int | None:
    with ctx.engine.connect() as conn:
        value: int | None = conn.execute(
            sa.select(flows_table.c.paused_feed_position).where(flows_table.c.key == key)
        ).scalar_one()
    return value


@pytest.mark.parametrize("freeze", [A.PAUSE, A.ARCHIVE])
def test_a_change_made_just_before_the_freeze_and_read_by_the_feed_during_it_is_heard_at_resume(
    ctx: Context, admin: Actor, clock: FrozenClock, freeze: A
) -> None:
    flows.create_flow(ctx, admin, WAIT.format(extra=""))
    flows.change_status(ctx, admin, "onboarding", A.START)
    claire = records.create_record(
        ctx, admin, "contact", {"first_name": "Claire", "last_name": "M", "status": "lead"}
    ).id
    runs.start_record(ctx, admin, "onboarding", claire)
    run_once(ctx)  # the feed has read everything so far
    clock.advance(hours=1)
    records.update_record(ctx, admin, claire, {"status": "client"})
    clock.advance(seconds=1)
    # Frozen a second later, before any worker went by: the feed has not read the change.
    flows.change_status(ctx, admin, "onboarding", freeze, confirm_inside=1)
    run_once(ctx)  # the feed reads it now, and skips the frozen flow
    assert history(ctx, claire) == []
    assert _enrollment(ctx, claire)["step"] == "until_client"
    clock.advance(days=1)
    flows.change_status(ctx, admin, "onboarding", A.RESUME)
    assert history(ctx, claire) == ["Welcome aboard"]
    assert _enrollment(ctx, claire)["status"] == "finished"
    assert _paused_feed_position(ctx, "onboarding") is None  # forgotten at the resume


@pytest.mark.parametrize(
    ("before_freeze", "feed_before_freeze", "feed_while_frozen"),
    [
        (True, True, True),  # heard while running: not again at the resume
        (True, False, True),  # read by the feed during the freeze: told at the resume
        (True, False, False),  # still unread at the resume: left to the feed
        (False, None, True),  # made and read during the freeze: told at the resume
        (False, None, False),  # made during the freeze, unread at the resume: left to the feed
    ],
)
def test_a_change_is_heard_once_whenever_the_feed_reads_it(
    ctx: Context,
    admin: Actor,
    clock: FrozenClock,
    before_freeze: bool,
    feed_before_freeze: bool | None,
    feed_while_frozen: bool,
) -> None:
    # Each email change moves the record one wait on: heard twice, it would reach `done`.
    rid = _waiting_in_calls(ctx, admin)
    run_once(ctx)
    clock.advance(hours=1)
    if before_freeze:
        records.update_record(ctx, admin, rid, {"email": "claire@example.org"})
        if feed_before_freeze:
            run_once(ctx)
            assert _enrollment(ctx, rid)["step"] == "second_email"
        clock.advance(seconds=1)
    flows.change_status(ctx, admin, "calls", A.PAUSE, confirm_inside=1)
    if not before_freeze:
        clock.advance(hours=1)
        records.update_record(ctx, admin, rid, {"email": "claire@example.org"})
    if feed_while_frozen:
        run_once(ctx)
    clock.advance(days=1)
    flows.change_status(ctx, admin, "calls", A.RESUME)
    run_once(ctx)
    run_once(ctx)
    view = _enrollment(ctx, rid)
    assert (view["status"], view["step"]) == ("waiting", "second_email")
    assert history(ctx, rid) == []


def test_a_change_made_before_the_record_entered_is_not_news_at_the_resume(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # The record is created with its email and enters at once; the feed reads its creation
    # only during the pause. The resume tells the enrollment what changed after it entered,
    # as the feed does: nothing.
    rid = _waiting_in_calls(ctx, admin, {"email": "claire@example.org"})
    clock.advance(seconds=1)
    flows.change_status(ctx, admin, "calls", A.PAUSE, confirm_inside=1)
    run_once(ctx)
    clock.advance(days=1)
    flows.change_status(ctx, admin, "calls", A.RESUME)
    view = _enrollment(ctx, rid)
    assert (view["status"], view["step"]) == ("waiting", "first_email")
    assert "changed while frozen" not in flows.flow_history(ctx, admin, "calls")[-1].note


def test_a_flow_paused_without_a_feed_position_hears_the_changes_made_since_its_pause(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # Paused before the position was kept (migration 0006): the changes made since the pause,
    # and passed by the feed, are told at the resume, once.
    rid = _waiting_in_calls(ctx, admin)
    run_once(ctx)
    flows.change_status(ctx, admin, "calls", A.PAUSE, confirm_inside=1)
    assert _paused_feed_position(ctx, "calls") is not None
    with ctx.engine.begin() as conn:
        conn.execute(
            flows_table.update()
            .where(flows_table.c.key == "calls")
            .values(paused_feed_position=None)
        )
    clock.advance(hours=1)
    records.update_record(ctx, admin, rid, {"email": "claire@example.org"})
    run_once(ctx)
    clock.advance(days=1)
    flows.change_status(ctx, admin, "calls", A.RESUME)
    assert _enrollment(ctx, rid)["step"] == "second_email"
    run_once(ctx)
    assert _enrollment(ctx, rid)["step"] == "second_email"
    assert history(ctx, rid) == []


@pytest.mark.parametrize("told_first", [True, False], ids=["told-then-pause", "pause-then-told"])
def test_a_feed_batch_running_when_the_flow_is_paused_is_counted_as_heard(
    ctx: Context,
    admin: Actor,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    told_first: bool,
) -> None:
    # A feed batch has locked its cursor and read the change when the pause starts, and tells
    # the flow before (told_first) or while the pause is under way: either way the pause waits
    # for the batch and keeps the position after it, so the resume does not tell the change a
    # second time (it would move the record past both waits).
    rid = _waiting_in_calls(ctx, admin)
    run_once(ctx)
    clock.advance(hours=1)
    records.update_record(ctx, admin, rid, {"email": "claire@example.org"})
    # The function the feed calls (change_feed imports it from record_changes; the patch below
    # replaces change_feed's name for it).
    handle, in_batch = record_changes.handle_changes, threading.Event()
    errors: list[BaseException] = []

    def slow_handle(*args: Any, **kwargs: Any) -> None:
        if told_first:
            handle(*args, **kwargs)
        in_batch.set()
        time.sleep(0.5)  # the pause starts meanwhile
        if not told_first:
            handle(*args, **kwargs)

    def feed() -> None:
        try:
            change_feed.ingest_changes(ctx)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    monkeypatch.setattr(change_feed, "handle_changes", slow_handle)
    thread = threading.Thread(target=feed)
    thread.start()
    assert in_batch.wait(5)
    flows.change_status(ctx, admin, "calls", A.PAUSE, confirm_inside=1)
    thread.join(10)
    assert not errors
    assert _enrollment(ctx, rid)["step"] == "second_email"  # heard by the batch, flow running
    monkeypatch.undo()
    run_once(ctx)
    clock.advance(days=1)
    flows.change_status(ctx, admin, "calls", A.RESUME)
    run_once(ctx)
    view = _enrollment(ctx, rid)
    assert (view["status"], view["step"]) == ("waiting", "second_email")
    assert history(ctx, rid) == []
