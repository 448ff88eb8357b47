"""Records entering flows through their triggers, and the reasons kept when they do not, on
SQLite and PostgreSQL, with a frozen clock driven by the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from crmflow.api.app import create_app
from crmflow.cli.common import state
from crmflow.cli.main import app as cli
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, queries, records, run_views, triggers, users
from crmflow.services.context import Actor, Context
from crmflow.store.schema import enrollments
from crmflow.worker import run_once
from tests.conftest import FrozenClock, make_user
from tests.integration.helpers import history as _history


def _flow(
    ctx: Context,
    admin: Actor,
    key: str,
    trigger: str,
    *,
    extra: str = "",
    steps: str = "",
    confirm: int | None = None,
) -> None:
    text = f"""\
schema_version: 1
key: {key}
name: {key}
record_type: contact
triggers:
  - {trigger}
{extra}steps:
{steps or _HELLO}"""
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, key, LifecycleAction.START, confirm_count=confirm)


_HELLO = """\
  - key: hello
    actions:
      - type: history
        message: "hello {{ record.first_name }}"
"""


def _contact(ctx: Context, admin: Actor, name: str = "Claire", **data: Any) -> int:
    values = {"first_name": name, "last_name": "X", **data}
    return records.create_record(ctx, admin, "contact", values).id


def _inside(ctx: Context, admin: Actor, key: str) -> int:
    return run_views.flow_progress(ctx, admin, key).entered


def _reasons(ctx: Context, admin: Actor, key: str) -> list[str]:
    return [d.reason for d in triggers.entry_decisions_for(ctx, admin, flow_key=key)]


def test_a_created_contact_enters_a_record_created_flow_and_its_first_step_runs(
    ctx: Context, admin: Actor
) -> None:
    _flow(ctx, admin, "welcome", "type: record_created")
    rid = _contact(ctx, admin, "Claire")
    run_once(ctx)
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    assert (view.flow, view.status) == ("welcome", "finished")
    assert [r.step for r in view.step_runs] == ["hello"]
    assert _history(ctx, rid) == ["hello Claire"]
    # The change is consumed once: running again enters nobody twice.
    run_once(ctx)
    assert _inside(ctx, admin, "welcome") == 1


def test_a_change_before_the_flow_started_does_not_trigger_it(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    rid = _contact(ctx, admin)
    clock.advance(minutes=1)
    _flow(ctx, admin, "welcome", "type: record_created")
    run_once(ctx)
    assert run_views.record_status(ctx, admin, rid).enrollments == []


def test_field_changed_from_to_enters_only_on_that_transition(ctx: Context, admin: Actor) -> None:
    trigger = "{type: field_changed, field: status, from: prospect, to: client}"
    _flow(ctx, admin, "converted", trigger)
    rid = _contact(ctx, admin, status="lead")
    records.update_record(ctx, admin, rid, {"status": "client"})  # from lead: not this trigger
    records.update_record(ctx, admin, rid, {"email": "c@example.org"})  # another field
    run_once(ctx)
    assert _inside(ctx, admin, "converted") == 0
    records.update_record(ctx, admin, rid, {"status": "prospect"})
    records.update_record(ctx, admin, rid, {"status": "client"})
    run_once(ctx)
    assert _inside(ctx, admin, "converted") == 1
    # Nothing matched a trigger before: no reason to keep either.
    assert _reasons(ctx, admin, "converted") == []


def test_status_changed_to_a_value(ctx: Context, admin: Actor) -> None:
    _flow(ctx, admin, "donors", "{type: status_changed, to: donor}")
    one = _contact(ctx, admin, "One", status="lead")
    two = _contact(ctx, admin, "Two", status="lead")
    records.update_record(ctx, admin, one, {"status": "donor"})
    records.update_record(ctx, admin, two, {"status": "client"})
    run_once(ctx)
    entered = {e.record_id for e in _enrollments(ctx)}
    assert entered == {one}


def test_record_updated_with_fields_ignores_other_updates(ctx: Context, admin: Actor) -> None:
    _flow(ctx, admin, "emails", "{type: record_updated, fields: [email]}")
    rid = _contact(ctx, admin)
    records.update_record(ctx, admin, rid, {"phone": "+33 1 23 45 67 89"})
    run_once(ctx)
    assert _inside(ctx, admin, "emails") == 0
    records.update_record(ctx, admin, rid, {"email": "claire@example.org"})
    run_once(ctx)
    assert _inside(ctx, admin, "emails") == 1


def _enrollments(ctx: Context) -> list[Any]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(enrollments).order_by(enrollments.c.id)).all())


def test_a_false_entry_condition_keeps_the_record_out_and_says_why(
    ctx: Context, admin: Actor
) -> None:
    _flow(
        ctx,
        admin,
        "thanks",
        "type: record_created",
        extra="entry_condition: record.status == 'donor' && change.kind == 'created'\n",
    )
    donor = _contact(ctx, admin, "Dora", status="donor")
    lead = _contact(ctx, admin, "Leo", status="lead")
    run_once(ctx)
    assert {e.record_id for e in _enrollments(ctx)} == {donor}
    [decision] = triggers.entry_decisions_for(ctx, admin, record_id=lead)
    assert decision.flow == "thanks"
    assert decision.trigger == "record_created"
    assert decision.reason == (
        "entry condition false: record.status == 'donor' && change.kind == 'created'"
    )
    assert decision.change_id is not None


def test_a_draining_or_paused_flow_admits_nobody_and_says_so(ctx: Context, admin: Actor) -> None:
    _flow(ctx, admin, "drained", "type: record_created")
    _flow(ctx, admin, "held", "type: record_created")
    flows.change_status(ctx, admin, "drained", LifecycleAction.DRAIN)
    flows.change_status(ctx, admin, "held", LifecycleAction.PAUSE)
    rid = _contact(ctx, admin)
    run_once(ctx)
    assert _enrollments(ctx) == []
    reasons = {d.flow: d.reason for d in triggers.entry_decisions_for(ctx, admin, record_id=rid)}
    assert reasons["drained"].startswith("flow draining")
    assert reasons["held"].startswith("flow paused")


def test_reentry_never_keeps_a_record_that_went_through_out(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "once", "type: record_updated", extra="reentry: {mode: never}\n")
    rid = _contact(ctx, admin)
    records.update_record(ctx, admin, rid, {"status": "lead"})
    run_once(ctx)
    clock.advance(days=3)
    records.update_record(ctx, admin, rid, {"status": "client"})
    run_once(ctx)
    assert _inside(ctx, admin, "once") == 1
    [reason] = _reasons(ctx, admin, "once")
    assert reason == (
        "re-entry: never, and the record already went through this flow (entered 2026-11-23)"
    )


def test_two_changes_in_one_batch_enter_once_and_the_second_is_already_inside(
    ctx: Context, admin: Actor
) -> None:
    steps = """\
  - key: hello
    actions: [{type: history, message: hi}]
  - key: later
    timing: {type: after, amount: 1, unit: days}
    actions: [{type: history, message: later}]
"""
    _flow(ctx, admin, "busy", "type: record_updated", steps=steps)
    rid = _contact(ctx, admin)
    records.update_record(ctx, admin, rid, {"status": "lead"})
    records.update_record(ctx, admin, rid, {"status": "client"})
    run_once(ctx)
    assert _inside(ctx, admin, "busy") == 1
    # "... at step 'later'" when the feed handled the second change in a later chunk.
    [reason] = _reasons(ctx, admin, "busy")
    assert reason.startswith("already inside this flow")


def test_a_start_list_enters_set_based_on_start_with_the_confirmed_count(
    ctx: Context, admin: Actor
) -> None:
    for i in range(25):
        _contact(ctx, admin, f"D{i}", status="donor" if i % 5 else "lead")
    queries.save_query(
        ctx,
        admin,
        name="donors",
        record_type="contact",
        filter={"all": [{"field": "status", "op": "=", "value": "donor"}]},
    )
    with pytest.raises(flows.ConfirmationRequiredError) as refused:
        _flow(ctx, admin, "campaign", "{type: start_list, query: donors}")
    count = refused.value.count
    assert count == 20
    assert _enrollments(ctx) == []  # a refused start leaves nobody inside
    flows.change_status(ctx, admin, "campaign", LifecycleAction.START, confirm_count=count)
    assert len(_enrollments(ctx)) == count
    run_once(ctx)
    progress = run_views.flow_progress(ctx, admin, "campaign")
    assert (progress.entered, progress.finished) == (count, count)


def test_a_daily_schedule_runs_once_a_day_across_a_dst_change(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # Paris leaves summer time on Sunday 25 October 2026: 09:30 is 07:30 UTC before, 08:30 after.
    clock.current = datetime(2026, 10, 23, 6, 0, tzinfo=UTC)
    rid = _contact(ctx, admin, status="client")
    queries.save_query(
        ctx,
        admin,
        name="clients",
        record_type="contact",
        filter={"all": [{"field": "status", "op": "=", "value": "client"}]},
    )
    _flow(
        ctx,
        admin,
        "daily",
        "{type: schedule, time: '09:30', query: clients}",
        extra="timezone: Europe/Paris\nreentry: {mode: always}\n",
    )
    runs_at: list[datetime] = []
    # Each day, just before and at 09:30 in both of Paris's offsets, and later on.
    for day in range(23, 28):
        for hour, minute in ((7, 29), (7, 30), (8, 29), (8, 30), (8, 31), (18, 0)):
            clock.current = datetime(2026, 10, day, hour, minute, tzinfo=UTC)
            before = len(_enrollments(ctx))
            run_once(ctx)
            if len(_enrollments(ctx)) > before:
                runs_at.append(clock.current)
    utc = [(t.day, t.hour, t.minute) for t in runs_at]
    assert utc == [(23, 7, 30), (24, 7, 30), (25, 8, 30), (26, 8, 30), (27, 8, 30)]
    assert {e.record_id for e in _enrollments(ctx)} == {rid}


def test_a_birthday_enters_every_year_on_the_day_at_nine(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(
        ctx,
        admin,
        "birthday",
        "{type: date_reached, field: birth_date, time: '09:00', ignore_year: true}",
        extra="timezone: Europe/Paris\n",
    )
    today = _contact(ctx, admin, "Ana", birth_date="1990-11-24")
    _contact(ctx, admin, "Bob", birth_date="1985-12-02")
    leap = _contact(ctx, admin, "Lea", birth_date="2000-02-29")
    clock.advance(hours=22)  # 2026-11-24 08:00 UTC = 09:00 in Paris
    run_once(ctx)
    assert {e.record_id for e in _enrollments(ctx)} == {today}
    assert _enrollments(ctx)[0].entered_at == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    # 2027 is a common year: the leap-day birthday is kept on 28 February.
    clock.current = datetime(2027, 2, 28, 8, 0, tzinfo=UTC)
    run_once(ctx)
    assert leap in {e.record_id for e in _enrollments(ctx)}


def test_a_change_to_an_enrolled_record_wakes_its_wait_step(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    steps = """\
  - key: wait_for_email
    type: wait
    fields: [email]
    timeout: {amount: 7, unit: days}
  - key: thanks
    actions: [{type: history, message: "email given"}]
"""
    _flow(ctx, admin, "nudge", "type: record_created", steps=steps)
    rid = _contact(ctx, admin)
    run_once(ctx)
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    assert (view.status, view.step) == ("waiting", "wait_for_email")
    clock.advance(hours=1)
    records.update_record(ctx, admin, rid, {"email": "claire@example.org"})
    run_once(ctx)
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    assert view.status == "finished"
    assert _history(ctx, rid) == ["email given"]


def test_not_entered_hides_private_flows_from_non_members(ctx: Context, admin: Actor) -> None:
    _flow(
        ctx,
        admin,
        "secret",
        "type: record_created",
        extra="visibility: private\nmembers: [system]\nentry_condition: record.status == 'x'\n",
    )
    rid = _contact(ctx, admin)
    run_once(ctx)
    outsider = make_user(ctx, "andrei", "member")
    assert len(triggers.entry_decisions_for(ctx, admin, record_id=rid)) == 1
    assert triggers.entry_decisions_for(ctx, outsider, record_id=rid) == []


def test_not_entered_is_listed_per_record_with_its_type(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "held", "type: record_created")
    flows.change_status(ctx, admin, "held", LifecycleAction.PAUSE)
    rid = _contact(ctx, admin)
    run_once(ctx)
    found = triggers.entry_decisions_for(ctx, admin, record_id=rid, record_type="contact")
    assert [d.as_dict()["flow"] for d in found] == ["held"]
    with pytest.raises(Exception, match="no company record"):
        triggers.entry_decisions_for(ctx, admin, record_id=rid, record_type="company")
    assert timedelta(0) == found[0].at - clock.current


def test_not_entered_from_the_api_and_the_cli(
    ctx: Context, admin: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:

    _flow(ctx, admin, "held", "type: record_created")
    flows.change_status(ctx, admin, "held", LifecycleAction.PAUSE)
    rid = _contact(ctx, admin)
    run_once(ctx)
    auth = {"Authorization": f"Bearer {users.create_token(ctx, admin, 'system').token}"}
    with TestClient(create_app(ctx)) as client:
        by_flow = client.get("/api/flows/held/not-entered", headers=auth)
        by_record = client.get(f"/api/records/contact/{rid}/not-entered", headers=auth)
        wrong_type = client.get(f"/api/records/company/{rid}/not-entered", headers=auth)
    assert by_flow.status_code == 200
    [item] = by_flow.json()["items"]
    assert (item["record_id"], item["trigger"]) == (rid, "record_created")
    assert item["reason"].startswith("flow paused")
    assert by_record.json()["items"] == [item]
    assert wrong_type.status_code == 404

    monkeypatch.setattr(state, "_context", ctx)
    result = CliRunner().invoke(cli, ["runs", "not-entered", "--flow", "held", "--json"])
    assert result.exit_code == 0, result.output
    assert '"flow paused' in result.output


def test_a_start_list_with_an_entry_condition_still_needs_the_confirmed_count(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    for i in range(6):
        _contact(ctx, admin, f"D{i}", status="donor", language="fr" if i % 2 else "it")
    queries.save_query(
        ctx,
        admin,
        name="donors",
        record_type="contact",
        filter={"all": [{"field": "status", "op": "=", "value": "donor"}]},
    )
    text = """\
schema_version: 1
key: french
name: French donors
record_type: contact
triggers: [{type: start_list, query: donors}]
entry_condition: record.language == 'fr'
steps:
  - key: hello
    actions: [{type: history, message: hi}]
"""
    flows.create_flow(ctx, admin, text)
    with ctx.engine.connect() as conn:
        flow_id = conn.execute(sa.text("select id from flows where key = 'french'")).scalar_one()
    # The user confirmed 5, but the list holds 6 when the start's transaction runs (a donor
    # arrived between the count and the start): refused, with the number to confirm instead.
    with pytest.raises(flows.ConfirmationRequiredError) as refused, ctx.engine.begin() as conn:
        triggers.enter_start_lists(conn, ctx, flow_id, expected=5, now=clock.current)
    assert refused.value.count == 6
    assert "holds 6 record(s) now, not 5" in str(refused.value)
    assert _enrollments(ctx) == []
    assert _reasons(ctx, admin, "french") == []
    # Confirming the number the list holds starts the flow; the condition keeps the others out.
    flows.change_status(ctx, admin, "french", LifecycleAction.START, confirm_count=6)
    assert len(_enrollments(ctx)) == 3
    assert _reasons(ctx, admin, "french") == ["entry condition false: record.language == 'fr'"] * 3


def test_a_daily_schedule_keeps_out_the_records_still_inside_and_says_why(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    clock.current = datetime(2026, 10, 23, 6, 0, tzinfo=UTC)
    first = _contact(ctx, admin, "First", status="client")
    queries.save_query(
        ctx,
        admin,
        name="clients",
        record_type="contact",
        filter={"all": [{"field": "status", "op": "=", "value": "client"}]},
    )
    steps = """\
  - key: hello
    actions: [{type: history, message: hi}]
  - key: later
    timing: {type: after, amount: 10, unit: days}
    actions: [{type: history, message: later}]
"""
    _flow(ctx, admin, "daily", "{type: schedule, time: '09:00', query: clients}", steps=steps)
    clock.current = datetime(2026, 10, 23, 9, 0, tzinfo=UTC)
    run_once(ctx)
    assert {e.record_id for e in _enrollments(ctx)} == {first}
    assert _reasons(ctx, admin, "daily") == []
    second = _contact(ctx, admin, "Second", status="client")
    clock.current = datetime(2026, 10, 24, 9, 0, tzinfo=UTC)
    run_once(ctx)
    # The next day: the new client enters, the first one is still inside and is told so.
    assert [e.record_id for e in _enrollments(ctx)] == [first, second]
    [decision] = triggers.entry_decisions_for(ctx, admin, flow_key="daily")
    assert (decision.record_id, decision.trigger) == (first, "schedule")
    assert decision.reason == "already inside this flow"


def test_an_archived_flow_keeps_one_reason_per_record_the_latest(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "retired", "type: record_updated")
    flows.change_status(ctx, admin, "retired", LifecycleAction.ARCHIVE)
    claire = _contact(ctx, admin, "Claire")
    marc = _contact(ctx, admin, "Marc")
    for day in range(3):  # Claire changes every day, twice in one batch, for as long as she likes
        clock.advance(days=1)
        records.update_record(ctx, admin, claire, {"status": "lead"})
        records.update_record(ctx, admin, claire, {"phone": f"+33 1 00 00 00 0{day}"})
        run_once(ctx)
    last_seen = clock.current
    clock.advance(hours=1)
    records.update_record(ctx, admin, marc, {"status": "client"})
    run_once(ctx)
    found = triggers.entry_decisions_for(ctx, admin, flow_key="retired")
    # One reason per record, newest first, telling the latest change and when it was seen.
    assert [(d.record_id, d.reason) for d in found] == [
        (marc, "flow archived: no record enters"),
        (claire, "flow archived: no record enters"),
    ]
    assert found[1].at == last_seen
    with ctx.engine.connect() as conn:
        latest = conn.execute(
            sa.text("select max(id) from record_changes where record_id = :r"), {"r": claire}
        ).scalar_one()
    assert found[1].change_id == latest
    assert len(triggers.entry_decisions_for(ctx, admin, record_id=claire)) == 1


_WAIT_FOR_EMAIL = """\
  - key: wait_for_email
    type: wait
    fields: [email]
    timeout: {amount: 7, unit: days}
  - key: thanks
    actions: [{type: history, message: "email given"}]
"""

_A_WEEK_LATER = """\
  - key: hello
    actions: [{type: history, message: hi}]
  - key: later
    timing: {type: after, amount: 7, unit: days}
    actions: [{type: history, message: later}]
"""


def _feed_position(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        found = conn.execute(
            sa.text("select position from feed_cursors where name = :n"), {"n": triggers.FEED}
        ).scalar()
    return int(found or 0)


def _last_change(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.text("select max(id) from record_changes")).scalar_one())


def test_without_change_triggers_the_records_inside_still_hear_their_changes(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # Manual flows only: one waits for an email, one a week; nobody listens to changes otherwise.
    _flow(ctx, admin, "nudge", "type: manual", steps=_WAIT_FOR_EMAIL)
    _flow(ctx, admin, "weekly", "type: manual", steps=_A_WEEK_LATER)
    waiting, timed, gone = (_contact(ctx, admin, n) for n in ("Wanda", "Tim", "Gus"))
    runs.start_record(ctx, admin, "nudge", waiting)
    runs.start_record(ctx, admin, "weekly", timed)
    runs.start_record(ctx, admin, "weekly", gone)
    run_once(ctx)
    clock.advance(hours=1)
    records.update_record(ctx, admin, waiting, {"email": "wanda@example.org"})
    records.update_record(ctx, admin, timed, {"phone": "+33 1 23 45 67 89"})
    records.delete_record(ctx, admin, gone)
    run_once(ctx)
    # The wait step heard the email; the deleted record left; the timed step still waits.
    status = {
        r: run_views.record_status(ctx, admin, r).enrollments[0] for r in (waiting, timed, gone)
    }
    assert status[waiting].status == "finished"
    assert _history(ctx, waiting) == ["email given"]
    assert (status[timed].status, status[timed].step) == ("active", "later")
    assert status[gone].status == "left"
    assert _feed_position(ctx) == _last_change(ctx)


def test_changes_nobody_listens_to_are_passed_over(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "weekly", "type: manual", steps=_A_WEEK_LATER)
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "weekly", rid)
    run_once(ctx)
    clock.advance(hours=1)
    for i in range(3):
        records.update_record(ctx, admin, rid, {"phone": f"+33 1 00 00 00 0{i}"})
    assert triggers.ingest_changes(ctx, limit=2) == 3  # consumed, in two batches
    assert _feed_position(ctx) == _last_change(ctx)
    assert triggers.ingest_changes(ctx) == 0  # caught up: nothing read again
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    assert (view.status, view.step) == ("active", "later")
    assert triggers.entry_decisions_for(ctx, admin, record_id=rid) == []
