"""What the lifecycle of a flow does to the records running in it (seed 000), and start_at /
archive_at firing on time, on SQLite and PostgreSQL with a frozen clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from crmflow.api.app import create_app
from crmflow.cli.common import state as cli_state
from crmflow.cli.main import app
from crmflow.engine.definition import FlowStatus
from crmflow.engine.lifecycle import LifecycleAction as A
from crmflow.errors import ConflictError, InvalidInputError
from crmflow.services import enrollments as runs
from crmflow.services import flows, lifecycle, queries, records, run_views, users
from crmflow.services.context import Actor, Context
from crmflow.store.schema import enrollments, record_history
from crmflow.store.schema import flows as flows_table
from crmflow.store.schema import records as records_table
from crmflow.worker import run_once
from tests.conftest import FROZEN_NOW, FrozenClock

STEPS = """\
steps:
  - key: welcome
    actions:
      - type: history
        message: "Welcome"
  - key: remind
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: history
        message: "Reminder"
  - key: closing
    actions:
      - type: history
        message: "Closing"
"""


def _text(extra: str = "", steps: str = STEPS, key: str = "nurture") -> str:
    return (
        f"schema_version: 1\nkey: {key}\nname: Nurture\nrecord_type: contact\nowner: system\n"
        f"{extra}triggers:\n  - type: manual\n{steps}"
    )


def _started(ctx: Context, admin: Actor, text: str) -> None:
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, text.split("key: ", 1)[1].split("\n", 1)[0], A.START)


def _contact(ctx: Context, admin: Actor, name: str = "Claire") -> int:
    return records.create_record(ctx, admin, "contact", {"first_name": name, "last_name": "M"}).id


def _enter(ctx: Context, admin: Actor, name: str = "Claire", flow: str = "nurture") -> int:
    rid = _contact(ctx, admin, name)
    runs.start_record(ctx, admin, flow, rid)
    return rid


def _history(ctx: Context, record_id: int) -> list[tuple[str, datetime]]:
    with ctx.engine.connect() as conn:
        return [
            (r.message, r.at)
            for r in conn.execute(
                sa.select(record_history.c.message, record_history.c.at)
                .where(record_history.c.record_id == record_id)
                .order_by(record_history.c.id)
            )
        ]


def _said(ctx: Context, record_id: int) -> list[str]:
    return [m for m, _ in _history(ctx, record_id)]


def _enrollment(ctx: Context, record_id: int) -> dict[str, Any]:
    [view] = run_views.record_status(ctx, _system(ctx), record_id).enrollments
    return view.as_dict()


def _system(ctx: Context) -> Actor:
    return users.actor_by_username(ctx, "system")


def _paused_at(ctx: Context, key: str) -> datetime | None:
    with ctx.engine.connect() as conn:
        value: datetime | None = conn.execute(
            sa.select(flows_table.c.paused_at).where(flows_table.c.key == key)
        ).scalar_one()
    return value


def _last_change(ctx: Context, key: str) -> flows.StatusChange:
    return flows.flow_history(ctx, _system(ctx), key)[-1]


# -- pause and resume ---------------------------------------------------------------------------


def test_a_paused_flow_freezes_its_records_at_their_step(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _started(ctx, admin, _text())
    rid = _enter(ctx, admin)
    due = _enrollment(ctx, rid)["due_at"]
    flows.change_status(ctx, admin, "nurture", A.PAUSE, confirm_inside=1)
    assert _paused_at(ctx, "nurture") == FROZEN_NOW
    clock.advance(days=3)  # well past the reminder's due time
    assert run_once(ctx) == 0
    assert _said(ctx, rid) == ["Welcome"]
    frozen = _enrollment(ctx, rid)
    assert (frozen["step"], frozen["status"], frozen["due_at"]) == ("remind", "active", due)
    # Nobody enters a paused flow, and the refusal says why.
    with pytest.raises(ConflictError, match="paused"):
        runs.start_record(ctx, admin, "nurture", _contact(ctx, admin, "Ana"))


def test_run_late_runs_what_fell_due_at_the_resume(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _started(ctx, admin, _text("catch_up: {mode: run_late}\n"))
    rid = _enter(ctx, admin)
    clock.advance(days=1)
    flows.change_status(ctx, admin, "nurture", A.PAUSE, confirm_inside=1)
    clock.advance(days=2)  # the reminder fell due one day ago, while paused
    resumed_at = clock()
    flows.change_status(ctx, admin, "nurture", A.RESUME)
    assert _paused_at(ctx, "nurture") is None
    run_once(ctx)
    assert _history(ctx, rid)[1:] == [("Reminder", resumed_at), ("Closing", resumed_at)]


DAILY = """\
steps:
  - key: welcome
    actions:
      - type: history
        message: "Welcome"
  - key: digest
    timing: {type: at_time, time: "09:00"}
    actions:
      - type: history
        message: "Digest"
"""


def test_skip_missed_skips_the_daily_runs_missed_while_paused(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # Monday 23 Nov 2026, 11:00 in Paris: the digest is due on Tuesday at 09:00 Paris.
    _started(ctx, admin, _text("timezone: Europe/Paris\ncatch_up: {mode: skip_missed}\n", DAILY))
    rid = _enter(ctx, admin)
    assert _enrollment(ctx, rid)["due_at"] == "2026-11-24T08:00:00+00:00"
    clock.advance(hours=2)
    flows.change_status(ctx, admin, "nurture", A.PAUSE, confirm_inside=1)
    clock.advance(days=3)  # Thursday 13:00 Paris: Tuesday's, Wednesday's and Thursday's missed
    flows.change_status(ctx, admin, "nurture", A.RESUME)
    assert _enrollment(ctx, rid)["due_at"] == "2026-11-27T08:00:00+00:00"  # Friday 09:00 Paris
    assert "skip_missed: 1 record(s) rescheduled" in _last_change(ctx, "nurture").note
    assert run_once(ctx) == 0
    assert _said(ctx, rid) == ["Welcome"]
    clock.current = datetime.fromisoformat("2026-11-27T07:59:59+00:00")
    run_once(ctx)
    assert _said(ctx, rid) == ["Welcome"]
    clock.advance(seconds=1)
    run_once(ctx)
    assert _said(ctx, rid) == ["Welcome", "Digest"]


def test_shift_delays_moves_each_due_time_by_the_length_of_the_pause(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _started(ctx, admin, _text("catch_up: {mode: shift_delays}\n"))
    rid = _enter(ctx, admin)
    assert _enrollment(ctx, rid)["due_at"] == (FROZEN_NOW + timedelta(days=2)).isoformat()
    clock.advance(days=1)
    flows.change_status(ctx, admin, "nurture", A.PAUSE, confirm_inside=1)
    clock.advance(days=3, hours=5)  # paused for 3 days 5 hours; the reminder fell due meanwhile
    flows.change_status(ctx, admin, "nurture", A.RESUME)
    shifted = FROZEN_NOW + timedelta(days=5, hours=5)
    assert _enrollment(ctx, rid)["due_at"] == shifted.isoformat()
    assert run_once(ctx) == 0
    clock.current = shifted - timedelta(seconds=1)
    run_once(ctx)
    assert _said(ctx, rid) == ["Welcome"]
    clock.current = shifted
    run_once(ctx)
    assert _history(ctx, rid)[1] == ("Reminder", shifted)


# -- draining and archiving ---------------------------------------------------------------------


def test_a_drained_flow_is_archived_automatically_when_its_last_record_finishes(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _started(ctx, admin, _text("auto_archive_when_drained: true\n"))
    _started(ctx, admin, _text(key="manual-archive"))
    rid = _enter(ctx, admin)
    _enter(ctx, admin, "Ana", flow="manual-archive")
    flows.change_status(ctx, admin, "nurture", A.DRAIN)
    flows.change_status(ctx, admin, "manual-archive", A.DRAIN)
    with pytest.raises(ConflictError, match="draining"):
        runs.start_record(ctx, admin, "nurture", _contact(ctx, admin, "Ion"))
    run_once(ctx)
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.DRAINING  # one inside
    clock.advance(days=2)
    run_once(ctx)
    assert _said(ctx, rid) == ["Welcome", "Reminder", "Closing"]  # those inside finish
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.ARCHIVED
    change = _last_change(ctx, "nurture")
    assert (change.actor, change.from_status, change.to_status) == (
        "system",
        "draining",
        "archived",
    )
    assert "drained" in change.note and "auto_archive_when_drained" in change.note
    # Without the setting, a drained flow waits for a person to archive it.
    assert flows.get_flow(ctx, admin, "manual-archive").status is FlowStatus.DRAINING


def test_an_archived_flow_resumes_where_each_record_was_and_finished_ones_do_not_restart(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _started(ctx, admin, _text())
    done = _enter(ctx, admin, "Done")
    clock.advance(days=2)
    run_once(ctx)
    assert _enrollment(ctx, done)["status"] == "finished"
    finished = _enrollment(ctx, done)
    midway = _enter(ctx, admin, "Midway")  # at `remind`, due in two days
    flows.change_status(ctx, admin, "nurture", A.ARCHIVE, confirm_inside=1)
    clock.advance(days=5)
    assert run_once(ctx) == 0  # everything stops where it is
    assert _said(ctx, midway) == ["Welcome"]
    resumed_at = clock()
    flows.change_status(ctx, admin, "nurture", A.RESUME)
    run_once(ctx)
    assert _history(ctx, midway)[1:] == [("Reminder", resumed_at), ("Closing", resumed_at)]
    # The record that had finished did not start again: same single enrollment, same history.
    assert _said(ctx, done) == ["Welcome", "Reminder", "Closing"]
    assert _enrollment(ctx, done) == finished


# -- start_at and archive_at ----------------------------------------------------------------------


def test_start_at_starts_the_flow_on_time_once(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    start_at = FROZEN_NOW + timedelta(hours=1)
    flows.create_flow(ctx, admin, _text(f"start_at: {start_at.isoformat()}\n"))
    clock.current = start_at - timedelta(seconds=1)
    assert lifecycle.fire_lifecycle_schedule(ctx, now=clock()).started == []
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.DRAFT
    clock.current = start_at
    run_once(ctx)  # the worker fires the schedule
    view = flows.get_flow(ctx, admin, "nurture")
    assert (view.status, view.started_at) == (FlowStatus.ACTIVE, start_at)
    change = _last_change(ctx, "nurture")
    assert (change.actor, change.to_status, change.note, change.at) == (
        "system",
        "active",
        "start_at reached",
        start_at,
    )
    clock.advance(minutes=1)
    assert lifecycle.fire_lifecycle_schedule(ctx, now=clock()).started == []
    assert len(flows.flow_history(ctx, admin, "nurture")) == 2  # created, started: once


def test_start_at_with_a_start_list_records_the_count_taken_at_that_moment(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    queries.save_query(ctx, admin, name="everyone", record_type="contact", filter={})
    _contact(ctx, admin, "A")
    _contact(ctx, admin, "B")
    start_at = FROZEN_NOW + timedelta(days=1)
    text = _text(f"start_at: {start_at.isoformat()}\n").replace(
        "  - type: manual\n", "  - type: start_list\n    query: everyone\n"
    )
    flows.create_flow(ctx, admin, text)
    _contact(ctx, admin, "C")  # the list grows before the start: counted when it comes
    clock.current = start_at
    assert lifecycle.fire_lifecycle_schedule(ctx, now=clock()).started == ["nurture"]
    change = _last_change(ctx, "nurture")
    assert change.to_status == "active"
    assert change.note == "start_at reached; start list counted then: 3 record(s)"
    assert flows.get_flow(ctx, admin, "nurture").inside == 3  # the count taken is what entered


def test_a_flow_archived_as_a_draft_is_started_with_its_start_list_not_resumed(
    ctx: Context, admin: Actor
) -> None:
    queries.save_query(ctx, admin, name="everyone", record_type="contact", filter={})
    _contact(ctx, admin, "A")
    _contact(ctx, admin, "B")
    flows.create_flow(
        ctx,
        admin,
        _text().replace("  - type: manual\n", "  - type: start_list\n    query: everyone\n"),
    )
    flows.change_status(ctx, admin, "nurture", A.ARCHIVE)
    with pytest.raises(ConflictError, match="archived as a draft and has never run; use start"):
        flows.change_status(ctx, admin, "nurture", A.RESUME)
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.ARCHIVED
    flows.change_status(ctx, admin, "nurture", A.START, confirm_count=2)
    flow = flows.get_flow(ctx, admin, "nurture")
    assert (flow.status, flow.inside) == (FlowStatus.ACTIVE, 2)
    assert _last_change(ctx, "nurture").note == "start list confirmed: 2 record(s)"
    run_once(ctx)
    assert [_said(ctx, rid) for rid in _ids(ctx)] == [["Welcome"], ["Welcome"]]
    # Once it has run, archiving and resuming is the usual pair again.
    flows.change_status(ctx, admin, "nurture", A.ARCHIVE, confirm_inside=2)
    flows.change_status(ctx, admin, "nurture", A.RESUME)
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.ACTIVE


def _ids(ctx: Context) -> list[int]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(records_table.c.id).order_by("id")).scalars())


def test_archive_at_archives_on_time_once(ctx: Context, admin: Actor, clock: FrozenClock) -> None:
    archive_at = FROZEN_NOW + timedelta(days=1)
    _started(ctx, admin, _text(f"archive_at: {archive_at.isoformat()}\n"))
    rid = _enter(ctx, admin)
    clock.current = archive_at - timedelta(seconds=1)
    assert lifecycle.fire_lifecycle_schedule(ctx, now=clock()).archived == []
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.ACTIVE
    clock.current = archive_at
    result = lifecycle.fire_lifecycle_schedule(ctx, now=clock())
    assert result.archived == ["nurture"]
    change = _last_change(ctx, "nurture")
    assert (change.actor, change.to_status, change.at) == ("system", "archived", archive_at)
    assert change.note == "archive_at reached; 1 record(s) inside stopped where they were"
    clock.advance(days=2)
    run_once(ctx)
    assert _said(ctx, rid) == ["Welcome"]
    # Resumed by a person after its archive_at: archive_at has done its work, it stays active.
    flows.change_status(ctx, admin, "nurture", A.RESUME)
    run_once(ctx)
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.ACTIVE
    assert _said(ctx, rid) == ["Welcome", "Reminder", "Closing"]


# -- resuming after an edit -------------------------------------------------------------------


V1 = """\
steps:
  - key: welcome
    actions:
      - type: history
        message: "Welcome"
  - key: remind
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: history
        message: "Reminder"
  - key: followup
    timing: {type: after, amount: 5, unit: days}
    actions:
      - type: history
        message: "Follow-up"
"""

V2 = """\
steps:
  - key: welcome
    actions:
      - type: history
        message: "Welcome"
  - key: call
    timing: {type: after, amount: 1, unit: days}
    actions:
      - type: history
        message: "Call"
  - key: followup
    timing: {type: after, amount: 5, unit: days}
    actions:
      - type: history
        message: "Follow-up v2"
"""


def _edited_while_paused(ctx: Context, admin: Actor, clock: FrozenClock) -> dict[str, int]:
    """Ahead is at `followup` (due in 5 days); Ana and Ion are at `remind`, which v2 removes."""
    _started(ctx, admin, _text(steps=V1))
    ahead = _enter(ctx, admin, "Ahead")
    clock.advance(days=2)
    run_once(ctx)
    ana, ion = _enter(ctx, admin, "Ana"), _enter(ctx, admin, "Ion")
    flows.change_status(ctx, admin, "nurture", A.PAUSE, confirm_inside=3)
    flows.update_flow(ctx, admin, "nurture", _text(steps=V2))
    clock.advance(hours=3)
    return {"ahead": ahead, "ana": ana, "ion": ion}


def test_resuming_after_an_edit_previews_and_asks_where_records_of_removed_steps_go(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    who = _edited_while_paused(ctx, admin, clock)
    followup_due = _enrollment(ctx, who["ahead"])["due_at"]
    impact = {i.step: i for i in lifecycle.impact_preview(ctx, admin, "nurture")}
    assert {k: (i.records, i.fate) for k, i in impact.items()} == {
        "followup": (1, "stays"),
        "remind": (2, "removed"),
    }
    assert "version 2 has no step 'remind'" in impact["remind"].detail
    with pytest.raises(lifecycle.MovesRequiredError, match=r"2 record\(s\) are in step 'remind'"):
        flows.change_status(ctx, admin, "nurture", A.RESUME)
    with pytest.raises(InvalidInputError, match="no step 'nowhere'"):
        flows.change_status(ctx, admin, "nurture", A.RESUME, moves={"remind": "nowhere"})
    # Refused resumes changed nothing.
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.PAUSED
    assert _enrollment(ctx, who["ana"])["flow_version"] == 1
    resumed_at = clock()
    flows.change_status(ctx, admin, "nurture", A.RESUME, moves={"remind": "call"})
    assert lifecycle.impact_preview(ctx, admin, "nurture") == []
    for name in ("ana", "ion"):
        moved = _enrollment(ctx, who[name])
        assert (moved["flow_version"], moved["step"]) == (2, "call")
        assert moved["due_at"] == (resumed_at + timedelta(days=1)).isoformat()
    kept = _enrollment(ctx, who["ahead"])
    assert (kept["flow_version"], kept["step"], kept["due_at"]) == (2, "followup", followup_due)
    assert "3 record(s) moved to version 2" in _last_change(ctx, "nurture").note
    clock.advance(days=1)
    run_once(ctx)
    assert _said(ctx, who["ana"]) == ["Welcome", "Call"]
    clock.advance(days=5)
    run_once(ctx)
    assert _said(ctx, who["ahead"]) == ["Welcome", "Reminder", "Follow-up v2"]


def test_records_of_a_removed_step_can_be_ended_on_resume(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    who = _edited_while_paused(ctx, admin, clock)
    flows.change_status(ctx, admin, "nurture", A.RESUME, moves={"remind": "end"})
    ended = _enrollment(ctx, who["ana"])
    assert ended["status"] == "cancelled"
    assert "step 'remind' was removed in version 2" in ended["end_reason"]
    assert flows.get_flow(ctx, admin, "nurture").inside == 1
    clock.advance(days=10)
    run_once(ctx)
    assert _said(ctx, who["ana"]) == ["Welcome"]


def test_a_step_whose_timing_changed_starts_again_at_the_resume(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _started(ctx, admin, _text())
    rid = _enter(ctx, admin)  # at `remind`, due in two days
    flows.change_status(ctx, admin, "nurture", A.PAUSE, confirm_inside=1)
    flows.update_flow(ctx, admin, "nurture", _text(steps=STEPS.replace("amount: 2", "amount: 3")))
    clock.advance(hours=1)
    [impact] = lifecycle.impact_preview(ctx, admin, "nurture")
    assert (impact.step, impact.records, impact.fate) == ("remind", 1, "restarts")
    resumed_at = clock()
    flows.change_status(ctx, admin, "nurture", A.RESUME)
    moved = _enrollment(ctx, rid)
    assert (moved["flow_version"], moved["step"]) == (2, "remind")
    assert moved["due_at"] == (resumed_at + timedelta(days=3)).isoformat()


# -- the API and the command line ----------------------------------------------------------


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as test_client:
        yield test_client


def test_the_api_shows_the_impact_and_resumes_with_moves(
    ctx: Context, admin: Actor, clock: FrozenClock, client: TestClient
) -> None:
    who = _edited_while_paused(ctx, admin, clock)
    auth = {"Authorization": f"Bearer {users.create_token(ctx, admin, 'system').token}"}
    impact = client.get("/api/flows/nurture/impact", headers=auth)
    assert impact.status_code == 200
    assert [(i["step"], i["records"], i["fate"]) for i in impact.json()] == [
        ("followup", 1, "stays"),
        ("remind", 2, "removed"),
    ]
    refused = client.post("/api/flows/nurture/resume", headers=auth)
    assert refused.status_code == 409
    assert [(s["step"], s["records"]) for s in refused.json()["steps"]] == [("remind", 2)]
    resumed = client.post(
        "/api/flows/nurture/resume", headers=auth, json={"moves": {"remind": "end"}}
    )
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "active"
    assert _enrollment(ctx, who["ion"])["status"] == "cancelled"


def test_the_command_line_shows_the_impact_and_resumes_with_moves(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    who = _edited_while_paused(ctx, admin, clock)
    # In-process, on this test's database and frozen clock (the subprocess CLI is tested in
    # tests/acceptance).
    monkeypatch.setattr(cli_state, "_context", ctx)
    cli = CliRunner()
    base = ["--as", "system"]
    impact = cli.invoke(app, [*base, "flows", "impact", "nurture"])
    assert impact.exit_code == 0, impact.output
    assert "remind" in impact.output and "removed" in impact.output
    refused = cli.invoke(app, [*base, "flows", "resume", "nurture"])
    assert refused.exit_code == 1
    assert "--move remind=STEP|end" in refused.output
    bad = cli.invoke(app, [*base, "flows", "resume", "nurture", "--move", "remind"])
    assert bad.exit_code == 2
    twice = ["--move", "remind=call", "--move", "remind=end"]
    contradictory = cli.invoke(app, [*base, "flows", "resume", "nurture", *twice])
    assert contradictory.exit_code == 2
    assert "given twice (call and end)" in contradictory.output
    unknown = ["--move", "remind=call", "--move", "nosuch=call"]
    typo = cli.invoke(app, [*base, "flows", "resume", "nurture", *unknown])
    assert typo.exit_code == 1
    assert "no record is at a step 'nosuch'" in typo.output
    assert flows.get_flow(ctx, admin, "nurture").status is FlowStatus.PAUSED  # nothing changed
    done = cli.invoke(app, [*base, "flows", "resume", "nurture", "--move", "remind=call"])
    assert done.exit_code == 0, done.output
    assert _enrollment(ctx, who["ana"])["step"] == "call"


def test_a_record_deleted_while_frozen_is_not_moved_to_a_chosen_step(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    who = _edited_while_paused(ctx, admin, clock)
    with ctx.engine.begin() as conn:
        conn.execute(records_table.delete().where(records_table.c.id == who["ion"]))
    flows.change_status(ctx, admin, "nurture", A.RESUME, moves={"remind": "call"})
    with ctx.engine.connect() as conn:
        status = conn.execute(
            sa.select(enrollments.c.status).where(enrollments.c.record_id == who["ion"])
        ).scalar_one()
    assert status == "cancelled"
    assert _enrollment(ctx, who["ana"])["step"] == "call"
